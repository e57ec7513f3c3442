//! Windows of a view: the rows `OFFSET .. OFFSET + LIMIT` of every key, in the view's order,
//! kept as views of their own. A subscription with a LIMIT reads one. The view that holds
//! every row works out, as it folds each batch, what the batch changed in each window, so a
//! window costs what the batch touched in it: it needs no dataflow (no second copy of the
//! pipe's groups and their top-k) and no re-read of a key's rows beyond the window.

use std::sync::{Arc, Weak};

use petrel_value::{Row, Value};
use rustc_hash::FxHashMap;

use crate::groups::{Group, Groups};
use crate::order::{add_multiplicity, RowOrder};
use crate::{ChangeBatch, KeyColumns, View};

/// Where a window starts in each key's rows and how many rows it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub(crate) offset: usize,
    pub(crate) limit: usize,
}

/// A window and the view that holds it; the view is dropped with its last subscriber.
pub(crate) struct Window {
    pub(crate) bounds: Bounds,
    pub(crate) view: Weak<View>,
}

/// A touched key's window before the batch.
enum Before {
    /// The window held every row of the key (no offset, no more rows than the limit): the
    /// batch's changes to the key are then the window's own, if it still does after.
    Whole,
    /// The window's rows and their multiplicities.
    Rows(Vec<(Row, i64)>),
}

/// The rows of `group` inside the window, each with how many times it is there (a row held
/// several times may straddle either end).
pub(crate) fn rows_in(group: Option<&Group>, bounds: Bounds) -> Vec<(Row, i64)> {
    let mut out = Vec::new();
    let Some(group) = group else {
        return out;
    };
    let mut skip = bounds.offset;
    let mut room = bounds.limit;
    for (entry, &count) in &group.rows {
        if room == 0 {
            break;
        }
        let mut n = count.max(0) as usize;
        let skipped = skip.min(n);
        skip -= skipped;
        n -= skipped;
        let n = n.min(room);
        if n > 0 {
            room -= n;
            out.push((entry.row().clone(), n as i64));
        }
    }
    out
}

/// True when the window holds every row of a key with `total` rows.
fn whole(bounds: Bounds, total: i64) -> bool {
    bounds.offset == 0 && total.max(0) as usize <= bounds.limit
}

/// What a batch changes in a view's windows: taken from the groups before the batch folds
/// ([`Deltas::before`]), finished from them after it ([`Deltas::after`]).
pub(crate) struct Deltas {
    /// Each touched key and the places of its changes in the batch.
    keys: Vec<(Row, Vec<usize>)>,
    /// For each window, each touched key's window before the batch.
    before: Vec<Vec<Before>>,
}

impl Deltas {
    /// Notes each touched key's windows as they are before `changes` fold into `groups`.
    pub(crate) fn before(
        keys: &KeyColumns,
        groups: &Groups,
        changes: &[(Row, i64)],
        windows: &[Bounds],
    ) -> Deltas {
        let mut places: FxHashMap<Row, usize> = FxHashMap::default();
        let mut touched: Vec<(Row, Vec<usize>)> = Vec::new();
        for (n, (row, _)) in changes.iter().enumerate() {
            let key: Row = keys.0.iter().filter_map(|&i| row.get(i).cloned()).collect();
            let place = *places.entry(key.clone()).or_insert_with(|| {
                touched.push((key, Vec::new()));
                touched.len() - 1
            });
            touched[place].1.push(n);
        }
        let before = windows
            .iter()
            .map(|&bounds| {
                touched
                    .iter()
                    .map(|(key, _)| {
                        let group = groups.get(key);
                        if whole(bounds, group.map_or(0, |g| g.total)) {
                            Before::Whole
                        } else {
                            Before::Rows(rows_in(group, bounds))
                        }
                    })
                    .collect()
            })
            .collect();
        Deltas {
            keys: touched,
            before,
        }
    }

    /// Each window's changes (not consolidated), from `groups` after `changes` folded.
    pub(crate) fn after(
        self,
        groups: &Groups,
        changes: &[(Row, i64)],
        windows: &[Bounds],
    ) -> Vec<Vec<(Row, i64)>> {
        windows
            .iter()
            .zip(self.before)
            .map(|(&bounds, before)| {
                let mut delta = Vec::new();
                for ((key, places), before) in self.keys.iter().zip(before) {
                    let group = groups.get(key);
                    let total = group.map_or(0, |g| g.total);
                    match before {
                        // Every row was in the window and still is: its changes are the
                        // window's.
                        Before::Whole if whole(bounds, total) => {
                            delta.extend(places.iter().map(|&n| changes[n].clone()));
                        }
                        // Every row was in the window, and now some are past its end: the
                        // rows before are the rows after less the changes.
                        Before::Whole => {
                            delta.extend(rows_in(group, bounds));
                            if let Some(g) = group {
                                delta.extend(g.rows.iter().map(|(e, &c)| (e.row().clone(), -c)));
                            }
                            delta.extend(places.iter().map(|&n| changes[n].clone()));
                        }
                        Before::Rows(old) => {
                            delta.extend(rows_in(group, bounds));
                            delta.extend(old.into_iter().map(|(row, c)| (row, -c)));
                        }
                    }
                }
                delta
            })
            .collect()
    }
}

/// The windows still held, pruning the ones whose last subscriber has gone.
pub(crate) fn live(windows: &mut Vec<Window>) -> Vec<(Bounds, Arc<View>)> {
    windows.retain(|w| w.view.strong_count() > 0);
    windows
        .iter()
        .filter_map(|w| w.view.upgrade().map(|v| (w.bounds, v)))
        .collect()
}

/// One key's window changes from `since` to now, for a subscriber that resumes from a
/// frontier older than the window itself: the key's rows now, less the changes the view's
/// log holds after `since`, are its rows then. `log` is the view's retained batches; `None`
/// when they do not reach back to `since`. Costs the key's rows and the log's changes to it.
pub(crate) fn catch_up<'a>(
    (keys, order): (&KeyColumns, &RowOrder),
    now: Option<&Group>,
    log: impl Iterator<Item = &'a ChangeBatch>,
    (key, since, upper): (&[Value], u64, u64),
    bounds: Bounds,
) -> ChangeBatch {
    let mut then = Group {
        rows: now.map(|g| g.rows.clone()).unwrap_or_default(),
        total: 0,
    };
    let of_key = |row: &Row| keys.0.iter().zip(key).all(|(&i, k)| row.get(i) == Some(k));
    for batch in log.filter(|b| b.upper > since) {
        for (row, diff) in batch.changes.iter().filter(|(row, _)| of_key(row)) {
            add_multiplicity(&mut then.rows, order.entry(row), -diff);
        }
    }
    let mut changes = rows_in(now, bounds);
    changes.extend(
        rows_in(Some(&then), bounds)
            .into_iter()
            .map(|(row, c)| (row, -c)),
    );
    crate::groups::consolidate(keys, &mut changes);
    ChangeBatch {
        lower: since,
        upper,
        changes,
    }
}
