//! A view's rows by key, split into shards by the key's hash, so that a large batch of
//! changes is consolidated and folded on every core at once: the engine's worker that
//! publishes a view would otherwise fold each change alone while the other cores wait for it.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use petrel_value::{Row, Value};
use rustc_hash::{FxHashMap, FxHasher};

use crate::order::{add_multiplicity, RowOrder, SortedRow};
use crate::KeyColumns;

/// How many shards the keys are spread over: enough that a few heavy keys still leave
/// the threads evenly loaded.
const SHARDS: usize = 64;

/// Below this many changes a batch folds on the calling thread: starting threads would
/// cost more than they save.
const PARALLEL_MIN_CHANGES: usize = 4_096;

/// One key's rows in the view's order, each with its multiplicity.
#[derive(Default)]
pub(crate) struct Group {
    pub(crate) rows: BTreeMap<SortedRow, i64>,
    /// The sum of the positive multiplicities: the key's row count.
    pub(crate) total: i64,
}

/// Rows by key, in shards.
pub(crate) struct Groups {
    shards: Vec<FxHashMap<Row, Group>>,
    /// Each shard's copy of the view's order (made at the first fold): the threads that fold
    /// shards at once count their entries' references on different copies.
    orders: Vec<RowOrder>,
}

impl Default for Groups {
    fn default() -> Self {
        Groups {
            shards: (0..SHARDS).map(|_| FxHashMap::default()).collect(),
            orders: Vec::new(),
        }
    }
}

/// The shard of a key, from its values in order (the same for a key and for the key
/// columns of a row).
fn shard_of<'a>(values: impl Iterator<Item = Option<&'a Value>>) -> usize {
    (hash_values(values) >> 32) as usize % SHARDS
}

/// The shard of a row's key.
fn row_shard(keys: &KeyColumns, row: &Row) -> usize {
    shard_of(keys.0.iter().map(|&i| row.get(i)))
}

/// How many threads large batches use: the cores, at most 8.
fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8)
    })
}

/// Runs `work` on each item. With `parallel`, the items are spread over the threads by
/// weight (heaviest first, each to the least loaded thread) and the calling thread takes one
/// share itself; otherwise they run here, in order.
fn run_weighted<T: Send>(parallel: bool, items: Vec<(usize, T)>, work: impl Fn(T) + Sync) {
    let lanes = if parallel {
        threads().min(items.len()).max(1)
    } else {
        1
    };
    if lanes == 1 {
        items.into_iter().for_each(|(_, item)| work(item));
        return;
    }
    let mut items = items;
    items.sort_by_key(|(weight, _)| std::cmp::Reverse(*weight));
    let mut shares: Vec<(usize, Vec<T>)> = (0..lanes).map(|_| (0, Vec::new())).collect();
    for (weight, item) in items {
        if let Some(share) = shares.iter_mut().min_by_key(|(load, _)| *load) {
            share.0 += weight;
            share.1.push(item);
        }
    }
    let work = &work;
    std::thread::scope(|scope| {
        let mut shares = shares.into_iter();
        let own = shares.next();
        for (_, share) in shares {
            scope.spawn(move || share.into_iter().for_each(work));
        }
        if let Some((_, share)) = own {
            share.into_iter().for_each(work);
        }
    });
}

/// A hash of a row's values in order (the key's hash when given its key columns' values).
fn hash_values<'a>(values: impl Iterator<Item = Option<&'a Value>>) -> u64 {
    let mut h = FxHasher::default();
    for v in values {
        v.hash(&mut h);
    }
    h.finish()
}

/// Sums the multiplicities of equal rows and drops the ones that cancel, leaving each key's
/// rows together (a key whose hash collides with another's may take several runs). Rows are
/// ordered by their key's hash and their own hash,
/// integers compared at once; values are compared only where both hashes tie, so a batch costs
/// a hash per row and a sort of integers, not a sort comparing rows value by value.
fn consolidate_run(keys: &KeyColumns, changes: &mut Vec<(Row, i64)>) {
    let mut order: Vec<(u64, u64, usize)> = changes
        .iter()
        .enumerate()
        .map(|(n, (row, _))| {
            let key = hash_values(keys.0.iter().map(|&i| row.get(i)));
            (key, hash_values(row.iter().map(Some)), n)
        })
        .collect();
    order.sort_unstable_by(|a, b| {
        (a.0, a.1).cmp(&(b.0, b.1)).then_with(|| {
            let (ra, rb) = (&changes[a.2].0, &changes[b.2].0);
            keys.0
                .iter()
                .map(|&i| ra.get(i).cmp(&rb.get(i)))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| ra.cmp(rb))
        })
    });
    let mut taken: Vec<Option<(Row, i64)>> =
        std::mem::take(changes).into_iter().map(Some).collect();
    *changes = merge_adjacent_hashed(
        order
            .into_iter()
            .filter_map(|(_, hash, n)| taken[n].take().map(|(row, diff)| (hash, row, diff))),
    );
}

/// Sums the multiplicities of equal rows that come one after another, dropping the rows
/// that reach zero: consolidation once equal rows are next to each other.
pub(crate) fn merge_adjacent(rows: impl Iterator<Item = (Row, i64)>) -> Vec<(Row, i64)> {
    merge_adjacent_hashed(rows.map(|(row, diff)| (0, row, diff)))
}

/// [`merge_adjacent`] of rows with their hashes: rows whose hashes differ are told apart
/// without comparing their values.
fn merge_adjacent_hashed(rows: impl Iterator<Item = (u64, Row, i64)>) -> Vec<(Row, i64)> {
    let mut out: Vec<(Row, i64)> = Vec::with_capacity(rows.size_hint().0);
    let mut last_hash = None;
    for (hash, row, diff) in rows {
        match out.last_mut() {
            Some((last, sum)) if last_hash == Some(hash) && *last == row => *sum += diff,
            _ => {
                if out.last().is_some_and(|(_, sum)| *sum == 0) {
                    out.pop();
                }
                out.push((row, diff));
                last_hash = Some(hash);
            }
        }
    }
    if out.last().is_some_and(|(_, sum)| *sum == 0) {
        out.pop();
    }
    out
}

/// Consolidates changes (see [`consolidate_run`]), large batches on every core: the
/// result holds each key's changes in one run, shard after shard.
pub(crate) fn consolidate(keys: &KeyColumns, changes: &mut Vec<(Row, i64)>) {
    if changes.len() < PARALLEL_MIN_CHANGES || threads() == 1 {
        consolidate_run(keys, changes);
        return;
    }
    let mut buckets: Vec<Vec<(Row, i64)>> = (0..SHARDS).map(|_| Vec::new()).collect();
    for change in changes.drain(..) {
        buckets[row_shard(keys, &change.0)].push(change);
    }
    let items = buckets
        .iter_mut()
        .filter(|b| !b.is_empty())
        .map(|b| (b.len(), b))
        .collect();
    run_weighted(true, items, |bucket| consolidate_run(keys, bucket));
    changes.extend(buckets.into_iter().flatten());
}

impl Groups {
    /// The group of one key.
    pub(crate) fn get(&self, key: &[Value]) -> Option<&Group> {
        self.shards[shard_of(key.iter().map(Some))].get(key)
    }

    /// Every key with its group, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Row, &Group)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    /// Folds consolidated changes into their keys' groups, dropping rows and groups that
    /// reach zero; large batches fold on every core, one shard per task.
    pub(crate) fn fold(&mut self, keys: &KeyColumns, order: &RowOrder, changes: &[(Row, i64)]) {
        // Most batches only advance the frontier (one per tick and view): nothing to fold.
        if changes.is_empty() {
            return;
        }
        if self.orders.len() != SHARDS {
            self.orders = (0..SHARDS).map(|_| order.detached()).collect();
        }
        let mut picks: Vec<Vec<usize>> = (0..SHARDS).map(|_| Vec::new()).collect();
        for (n, (row, _)) in changes.iter().enumerate() {
            picks[row_shard(keys, row)].push(n);
        }
        let items = self
            .shards
            .iter_mut()
            .zip(&self.orders)
            .zip(picks)
            .filter(|(_, picked)| !picked.is_empty())
            .map(|(shard, picked)| (picked.len(), (shard, picked)))
            .collect();
        let parallel = changes.len() >= PARALLEL_MIN_CHANGES;
        run_weighted(parallel, items, |((shard, order), picked)| {
            fold_shard(shard, keys, order, picked.iter().map(|&n| &changes[n]));
        });
    }
}

/// Folds one shard's changes, finding each group once per run of changes with the same key.
fn fold_shard<'a>(
    shard: &mut FxHashMap<Row, Group>,
    keys: &KeyColumns,
    order: &RowOrder,
    changes: impl Iterator<Item = &'a (Row, i64)>,
) {
    let same_key = |a: &Row, b: &Row| keys.0.iter().all(|&i| a.get(i) == b.get(i));
    let mut changes = changes.peekable();
    while let Some(first) = changes.next() {
        let group = shard.entry(keys.key_of(&first.0)).or_default();
        let mut change = Some(first);
        while let Some((row, diff)) = change {
            let (before, after) = add_multiplicity(&mut group.rows, order.entry(row), *diff);
            group.total += after.max(0) - before.max(0);
            change = changes.next_if(|(next, _)| same_key(next, &first.0));
        }
        if group.rows.is_empty() {
            shard.remove(&keys.key_of(&first.0));
        }
    }
}
