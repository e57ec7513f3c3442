//! Windows of a view: the rows `OFFSET .. OFFSET + LIMIT` of every key, in the view's order.
//! A subscription with a LIMIT reads one. A window is a view that keeps no rows (reads of it
//! read the rows of the view it is a window of), only its change log and subscribers: that
//! view works out, as it folds each batch, what the batch changed in each window, so a window
//! costs what the batch touched in it. It needs no dataflow (no second copy of the pipe's
//! groups and their top-k) and no re-read of a key's rows beyond the window.

use std::sync::{Arc, Weak};

use petrel_value::{Row, Value};
use rustc_hash::FxHashMap;

use crate::groups::{Group, Groups, Identity};
use crate::order::RowOrder;
use crate::{ChangeBatch, KeyColumns, View};

/// Where a window starts in each key's rows and how many rows it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub(crate) offset: usize,
    pub(crate) limit: usize,
}

impl Bounds {
    /// From an OFFSET and a LIMIT (none: every row past the offset).
    pub(crate) fn new(offset: usize, limit: Option<usize>) -> Bounds {
        Bounds {
            offset,
            limit: limit.unwrap_or(usize::MAX),
        }
    }
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
    for (entry, count) in group.ordered() {
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
            out.push((entry.row().to_vec(), n as i64));
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
            let key = keys.key_of(row);
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
                    .map(|(key, _)| before_of(groups.get(key), bounds))
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
                    let key_changes = places.iter().map(|&n| &changes[n]);
                    key_delta(before, groups.get(key), key_changes, bounds, &mut delta);
                }
                delta
            })
            .collect()
    }
}

/// A key's window before a batch, from its group then.
fn before_of(group: Option<&Group>, bounds: Bounds) -> Before {
    if whole(bounds, group.map_or(0, |g| g.total)) {
        Before::Whole
    } else {
        Before::Rows(rows_in(group, bounds))
    }
}

/// Appends to `delta` what `changes` (one key's, in a batch) changed in the key's window, from
/// the window before them and the key's group after them.
fn key_delta<'a>(
    before: Before,
    group: Option<&Group>,
    changes: impl Iterator<Item = &'a (Row, i64)>,
    bounds: Bounds,
    delta: &mut Vec<(Row, i64)>,
) {
    match before {
        // Every row was in the window and still is: the key's changes are the window's.
        Before::Whole if whole(bounds, group.map_or(0, |g| g.total)) => {
            delta.extend(changes.cloned());
        }
        // Every row was in the window, and now some are past its end: the rows before are
        // the rows after less the changes.
        Before::Whole => {
            delta.extend(rows_in(group, bounds));
            if let Some(g) = group {
                delta.extend(g.entries().map(|(e, c)| (e.row().to_vec(), -c)));
            }
            delta.extend(changes.cloned());
        }
        Before::Rows(old) => {
            delta.extend(rows_in(group, bounds));
            delta.extend(old.into_iter().map(|(row, c)| (row, -c)));
        }
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

/// One key's window changes after `since`, batch by batch, for a subscriber that resumes
/// from a frontier older than the window itself: the key's rows now, less the changes the
/// view's `log` holds after `since`, are its rows then; the log's batches are then replayed
/// on them, each giving what it changed in the window, at the times it first happened. The
/// caller checks that the log reaches back to `since`. Costs the key's rows and the log's
/// changes to it.
pub(crate) fn catch_up(
    (keys, identity, order): (&KeyColumns, &Identity, &RowOrder),
    now: Option<&Group>,
    log: &[&ChangeBatch],
    (key, since): (&[Value], u64),
    bounds: Bounds,
) -> Vec<ChangeBatch> {
    let after_since: Vec<(&ChangeBatch, Vec<&(Row, i64)>)> = log
        .iter()
        .filter(|b| b.upper > since)
        .map(|b| (*b, b.of_key(&keys.0, key)))
        .collect();
    let mut then = now.cloned().unwrap_or_default();
    for (row, diff) in after_since.iter().flat_map(|(_, changes)| changes.iter()) {
        then.add((order, identity), row, -diff);
    }
    then.total = then.entries().map(|(_, c)| c.max(0)).sum();
    let mut out = Vec::new();
    for (batch, changes) in after_since {
        if changes.is_empty() {
            continue;
        }
        let before = before_of(Some(&then), bounds);
        for (row, diff) in &changes {
            let (was, is) = then.add((order, identity), row, *diff);
            then.total += is.max(0) - was.max(0);
        }
        let mut delta = Vec::new();
        key_delta(before, Some(&then), changes.into_iter(), bounds, &mut delta);
        crate::groups::consolidate(keys, identity, &mut delta);
        if !delta.is_empty() {
            out.push(ChangeBatch::new(batch.lower.max(since), batch.upper, delta));
        }
    }
    out
}
