//! A view's rows by key, split into shards by the key's hash, so that a large batch of
//! changes is consolidated and folded on every core at once: the engine's worker that
//! publishes a view would otherwise fold each change alone while the other cores wait for it.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::OnceLock;

use petrel_value::{Row, Value};
use rustc_hash::{FxHashMap, FxHasher};

use crate::order::{add_multiplicity, RowOrder, SortedRow};
use crate::slot_table::SlotTable;
use crate::KeyColumns;

/// How many shards the keys are spread over: enough that a few heavy keys still leave
/// the threads evenly loaded.
const SHARDS: usize = 64;

/// Below this many changes a batch folds on the calling thread: starting threads would
/// cost more than they save.
const PARALLEL_MIN_CHANGES: usize = 4_096;

/// The fewest rows a large group keeps in the view's order ([`Group`]): reads of a key's
/// first rows up to this many walk its ordered index. Reads that go further raise it for their
/// view ([`crate::View::page`]). Few: under skewed keys the rows that change most (a top-k's
/// heaviest users) are the first ones, and each of their changes costs a search of the order.
pub(crate) const ORDERED_ROWS_MIN: usize = 64;

/// One key's rows, each with its multiplicity: the first ones in the view's order, the others
/// (past what reads walk) in no order. A change to a row past the ordered ones costs a hash
/// probe instead of a search of an ordered index on each side (its retraction and its
/// insertion): a top-k view over many users keeps its readers' first rows in order and every
/// other user's row where a change finds it at once.
#[derive(Clone, Default)]
pub(crate) struct Group {
    /// The key's first rows, in the view's order.
    head: BTreeMap<SortedRow, i64>,
    /// The key's other rows, each after every row of `head`, in no order, found by their
    /// identity's hash ([`Identity`]) without making an entry of the row looked for. Empty
    /// while the group holds few rows, or when its view's reads walk all of it. A table whose
    /// lookups are fetched ahead by the hash alone ([`SlotTable`]): a `hashbrown` table had to
    /// read its control bytes to fetch an entry ahead, a miss the fold waited for (a third of
    /// the fold's own samples, session 37).
    tail: SlotTable<SortedRow, i64>,
    /// The sum of the positive multiplicities: the key's row count.
    pub(crate) total: i64,
}

/// The columns that tell a view's rows apart (a `GROUP BY`'s keys; every column when the
/// query names none). A group's unordered rows are found by their hash, and consolidation
/// puts a row's retraction next to the insertion of its new version, so the pair is folded
/// with one probe ([`Group::replace`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    columns: Vec<usize>,
    /// Every column: a row's identity hash is then its own hash.
    whole: bool,
}

impl Identity {
    /// Rows told apart by `columns`; by all `width` of their columns when `columns` is `None`
    /// or empty (a query with no group keys has one row).
    pub(crate) fn new(columns: Option<Vec<usize>>, width: usize) -> Identity {
        match columns {
            Some(columns) if !columns.is_empty() => Identity {
                columns,
                whole: false,
            },
            _ => Identity {
                columns: (0..width).collect(),
                whole: true,
            },
        }
    }

    /// The hash of a row's identity columns.
    fn hash(&self, row: &[Value]) -> u64 {
        hash_values(self.columns.iter().map(|&i| row.get(i)))
    }

    /// True when two rows have the same identity.
    fn same(&self, a: &[Value], b: &[Value]) -> bool {
        self.columns.iter().all(|&i| a.get(i) == b.get(i))
    }
}

impl Group {
    /// How many distinct rows the key holds.
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_empty() && self.tail.is_empty()
    }

    /// Every row with its multiplicity, in no particular order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&SortedRow, i64)> {
        let tail = self.tail.entries().iter().map(|(_, e, n)| (e, *n));
        self.head.iter().map(|(e, &n)| (e, n)).chain(tail)
    }

    /// Every row with its multiplicity in the view's order: the unordered rows are sorted
    /// only if the walk reaches them.
    pub(crate) fn ordered(&self) -> impl Iterator<Item = (&SortedRow, i64)> {
        let tail = &self.tail;
        let tail = std::iter::once(())
            .flat_map(move |()| sorted(tail.entries().iter().map(|(_, e, n)| (e, *n)), usize::MAX));
        self.head.iter().map(|(e, &n)| (e, n)).chain(tail)
    }

    /// At most `n` rows after `after` (from the first when `None`), in the view's order.
    pub(crate) fn after(&self, after: Option<&SortedRow>, n: usize) -> Vec<(&SortedRow, i64)> {
        let head = match after {
            Some(a) => self.head.range((Excluded(a), Unbounded)),
            None => self.head.range::<SortedRow, _>(..),
        };
        let mut out: Vec<(&SortedRow, i64)> = head.take(n).map(|(e, &c)| (e, c)).collect();
        if out.len() < n && !self.tail.is_empty() {
            let later = self
                .tail
                .entries()
                .iter()
                .filter(|(_, e, _)| after.is_none_or(|a| e > a))
                .map(|(_, e, c)| (e, *c));
            out.extend(sorted(later, n - out.len()));
        }
        out
    }

    /// How many rows are past the ordered ones.
    pub(crate) fn unordered(&self) -> usize {
        self.tail.len()
    }

    /// True when `row` falls among the unordered rows.
    fn past_head(&self, order: &RowOrder, row: &Row) -> bool {
        !self.tail.is_empty()
            && self
                .head
                .last_key_value()
                .is_none_or(|(last, _)| order.is_after(row, last))
    }

    /// Adds `diff` copies of `row` with one search (of the ordered rows or of the others, by
    /// where the row falls in `order`); returns its multiplicity before and after.
    pub(crate) fn add(&mut self, by: (&RowOrder, &Identity), row: &Row, diff: i64) -> (i64, i64) {
        self.add_hashed(by, row, diff, None)
    }

    /// [`Group::add`] given the row's identity hash when the caller has it already.
    fn add_hashed(
        &mut self,
        (order, identity): (&RowOrder, &Identity),
        row: &Row,
        diff: i64,
        hash: Option<u64>,
    ) -> (i64, i64) {
        if !self.past_head(order, row) {
            return add_multiplicity(&mut self.head, order.entry(row), diff);
        }
        let hash = hash.unwrap_or_else(|| identity.hash(row));
        match self.tail.position(hash, |e| e.row() == row.as_slice()) {
            Some(position) => {
                let Some((_, _, held)) = self.tail.get_mut(position) else {
                    return (0, 0);
                };
                let before = *held;
                let after = before + diff;
                *held = after;
                if after == 0 {
                    self.tail.remove(position);
                }
                (before, after)
            }
            None => {
                if diff != 0 {
                    self.tail.insert_new(hash, order.entry(row), diff);
                }
                (0, diff)
            }
        }
    }

    /// Replaces the `count` copies of `old` by as many of `new`, a row with the same identity,
    /// with one probe, when both fall among the unordered rows, `old` is held exactly `count`
    /// times and `new` not at all: the common change of a group's row. Returns false (having
    /// changed nothing) otherwise; the caller then adds the two changes one by one. `hash`:
    /// the rows' identity hash, when the caller has it already. One walk of the rows with
    /// that hash finds `old` and makes sure `new` is not there.
    pub(crate) fn replace(
        &mut self,
        (order, identity): (&RowOrder, &Identity),
        (old, new): (&Row, &Row),
        count: i64,
        hash: Option<u64>,
    ) -> bool {
        if count <= 0 || !self.past_head(order, old) || !self.past_head(order, new) {
            return false;
        }
        let hash = hash.unwrap_or_else(|| identity.hash(old));
        let mut found = None;
        for position in self.tail.positions(hash) {
            let Some((_, entry, held)) = self.tail.get(position) else {
                continue;
            };
            let row = entry.row();
            if row == new.as_slice() {
                return false;
            }
            if found.is_none() && row == old.as_slice() && *held == count {
                found = Some(position);
            }
        }
        match found.and_then(|p| self.tail.get_mut(p)) {
            Some((_, entry, _)) => {
                order.replace_entry(entry, new);
                true
            }
            None => false,
        }
    }

    /// Fetches into the cache the index cell a row of identity hash `hash` is looked up at
    /// first, ahead of its change ([`fold_shard`]): its place is a function of the hash.
    fn prefetch_cell(&self, hash: u64) {
        self.tail.prefetch_cell(hash);
    }

    /// Fetches into the cache the unordered entry that cell points at (the first whose
    /// fingerprint matches; the cell itself fetched a few changes before).
    fn prefetch_entry(&self, hash: u64) {
        if let Some(position) = self.tail.likely_position(hash) {
            self.tail.prefetch_position(position);
        }
    }

    /// Fetches into the cache the values of that entry's row, which finding the row compares
    /// (the entry itself fetched a few changes before).
    fn prefetch_row(&self, hash: u64) {
        let entry = self
            .tail
            .likely_position(hash)
            .and_then(|p| self.tail.get(p));
        if let Some((_, e, _)) = entry {
            crate::prefetch(e.row());
        }
    }

    /// After a key's changes: keeps between `ordered` and four times `ordered` rows in order
    /// (every row when the group holds fewer), moving rows between the two sides in bulk, so
    /// neither move happens again before about `ordered` more changes.
    pub(crate) fn settle(&mut self, ordered: usize, identity: &Identity) {
        if !self.tail.is_empty() && self.head.len() < ordered {
            let room = ordered.saturating_mul(2).saturating_sub(self.head.len());
            let mut rest = std::mem::take(&mut self.tail).into_entries();
            if room < rest.len() {
                rest.select_nth_unstable_by(room, |a, b| a.1.cmp(&b.1));
                for (hash, e, n) in rest.drain(room..) {
                    self.tail.insert_new(hash, e, n);
                }
            }
            self.head.extend(rest.into_iter().map(|(_, e, n)| (e, n)));
        } else if self.head.len() > ordered.saturating_mul(4) {
            let keep = ordered.saturating_mul(2);
            if let Some(first_later) = self.head.keys().nth(keep).cloned() {
                for (e, n) in self.head.split_off(&first_later) {
                    self.tail.insert_new(identity.hash(e.row()), e, n);
                }
            }
        }
    }
}

/// The `n` first of `rows` in the view's order, sorted (a selection, then a sort of those).
fn sorted<'a>(
    rows: impl Iterator<Item = (&'a SortedRow, i64)>,
    n: usize,
) -> impl Iterator<Item = (&'a SortedRow, i64)> {
    let mut rows: Vec<(&SortedRow, i64)> = rows.collect();
    if rows.len() > n {
        rows.select_nth_unstable_by(n, |a, b| a.0.cmp(b.0));
        rows.truncate(n);
    }
    rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
    rows.into_iter()
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
    hash_shard(hash_values(values))
}

/// The shard of a row's key.
fn row_shard(keys: &KeyColumns, row: &Row) -> usize {
    hash_shard(key_hash(keys, row))
}

/// The shard of a key of this [`key_hash`].
fn hash_shard(hash: u64) -> usize {
    (hash >> 32) as usize % SHARDS
}

/// The hash of a row's key columns: [`hash_values`] of the key, as [`shard_of`] takes it.
fn key_hash(keys: &KeyColumns, row: &Row) -> u64 {
    hash_values(keys.0.iter().map(|&i| row.get(i)))
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

/// Runs `work` on each item. With `parallel`, each item is a task of the process's helper
/// pool (rayon's), which lives as long as the process: a thread woken there goes to a core
/// the rest of the process leaves free (one running only background work at idle priority,
/// as Petrel's compactor does), where a thread started for the batch was queued behind the
/// one starting it. Each helper takes the next item when it is done with one (the helper
/// that spawns them from the heaviest down, the others from the lightest up), so the helpers
/// finish together: items spread beforehand in equal shares of weight left one helper
/// working alone whenever its share ran slower (a share's weight counts its changes, not
/// what they cost, and a helper may start late). Otherwise they run here, in order.
fn run_weighted<T: Send>(parallel: bool, items: Vec<(usize, T)>, work: impl Fn(T) + Sync) {
    if !parallel || threads() == 1 || items.len() <= 1 {
        items.into_iter().for_each(|(_, item)| work(item));
        return;
    }
    let mut items = items;
    // The helper that runs the scope takes its own tasks last-spawned first, the others
    // first-spawned first: spawned lightest first, the largest are started first.
    items.sort_by_key(|(weight, _)| *weight);
    let work = &work;
    rayon::scope(|scope| {
        for (_, item) in items {
            scope.spawn(move |_| work(item));
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
/// rows together (a key whose hash collides with another's may take several runs), and within
/// a key the rows of one identity together (a group's old and new row next to each other).
/// Rows are ordered by their key's hash, their identity's hash and their own hash, integers
/// compared at once; values are compared only where the hashes tie, so a batch costs a few
/// hashes per row and a sort of integers, not a sort comparing rows value by value.
fn consolidate_run(keys: &KeyColumns, identity: &Identity, changes: &mut Vec<(Row, i64)>) {
    let mut order: Vec<(u64, u64, u64, usize)> = changes
        .iter()
        .enumerate()
        .map(|(n, (row, _))| {
            let key = key_hash(keys, row);
            let id = identity.hash(row);
            // A whole-row identity's hash is a hash of the row: not taken twice.
            let own = if identity.whole {
                id
            } else {
                hash_values(row.iter().map(Some))
            };
            (key, id, own, n)
        })
        .collect();
    order.sort_unstable_by(|a, b| {
        (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)).then_with(|| {
            let (ra, rb) = (&changes[a.3].0, &changes[b.3].0);
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
            .filter_map(|(_, _, hash, n)| taken[n].take().map(|(row, diff)| (hash, row, diff))),
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
pub(crate) fn consolidate(keys: &KeyColumns, identity: &Identity, changes: &mut Vec<(Row, i64)>) {
    if changes.len() < PARALLEL_MIN_CHANGES || threads() == 1 {
        consolidate_run(keys, identity, changes);
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
    run_weighted(true, items, |bucket| {
        consolidate_run(keys, identity, bucket)
    });
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
    /// reach zero, and keeping at least `ordered` of each key's first rows in order ([`Group`]);
    /// large batches fold on every core, one shard per task.
    pub(crate) fn fold(
        &mut self,
        (keys, identity): (&KeyColumns, &Identity),
        order: &RowOrder,
        changes: &[(Row, i64)],
        ordered: usize,
    ) {
        // Most batches only advance the frontier (one per tick and view): nothing to fold.
        if changes.is_empty() {
            return;
        }
        if self.orders.len() != SHARDS {
            self.orders = (0..SHARDS).map(|_| order.detached()).collect();
        }
        // Each change's key hash, taken once: it picks the shard, and sorting a shard's
        // changes by it (then by place) puts each key's changes in one run, in their order.
        let mut picks: Vec<Vec<(u64, usize)>> = (0..SHARDS).map(|_| Vec::new()).collect();
        for (n, (row, _)) in changes.iter().enumerate() {
            let hash = key_hash(keys, row);
            picks[hash_shard(hash)].push((hash, n));
        }
        let items = self
            .shards
            .iter_mut()
            .zip(&self.orders)
            .zip(picks.iter_mut())
            .filter(|(_, picked)| !picked.is_empty())
            .map(|(shard, picked)| (picked.len(), (shard, picked)))
            .collect();
        let parallel = changes.len() >= PARALLEL_MIN_CHANGES;
        run_weighted(parallel, items, |((shard, order), picked)| {
            picked.sort_unstable();
            let changes = picked.iter().map(|&(_, n)| &changes[n]);
            fold_shard(shard, (keys, identity, order, ordered), changes);
        });
    }
}

/// Folds one shard's changes, finding each group once per run of changes with the same key.
/// A retraction and an insertion of the same identity, one after the other, are a group's
/// row changing: folded together with one probe where they can be ([`Group::replace`]).
fn fold_shard<'a>(
    shard: &mut FxHashMap<Row, Group>,
    (keys, identity, order, ordered): (&KeyColumns, &Identity, &RowOrder, usize),
    changes: impl Iterator<Item = &'a (Row, i64)>,
) {
    let same_key = |a: &Row, b: &Row| keys.0.iter().all(|&i| a.get(i) == b.get(i));
    let changes: Vec<&(Row, i64)> = changes.collect();
    let mut start = 0;
    while let Some(&(first, _)) = changes.get(start) {
        // The key's run; this is where each change's row is first read, so each is asked for
        // a few changes ahead.
        let mut end = start + 1;
        while let Some(&(row, _)) = changes.get(end) {
            if let Some(&(ahead, _)) = changes.get(end + PREFETCH_AHEAD) {
                crate::prefetch(ahead.as_slice());
            }
            if !same_key(row, first) {
                break;
            }
            end += 1;
        }
        let run = &changes[start..end];
        let group = shard.entry(keys.key_of(first)).or_default();
        // A large group's rows past the ordered ones are fetched ahead: each change's index
        // cell `3 * AHEAD` changes before it, its entry `2 * AHEAD` and the entry's row
        // `AHEAD` changes before it.
        let hashes: Vec<u64> = if group.tail.len() >= PREFETCH_MIN_ROWS {
            // The changes' rows were made by the engine's workers, on other cores: each is
            // asked for a few changes before it is hashed.
            (0..run.len())
                .map(|n| {
                    if let Some((ahead, _)) = run.get(n + PREFETCH_AHEAD) {
                        crate::prefetch(ahead.as_slice());
                    }
                    identity.hash(&run[n].0)
                })
                .collect()
        } else {
            Vec::new()
        };
        let ahead = |n: usize, group: &Group| {
            if let Some(&hash) = hashes.get(n + 3 * PREFETCH_AHEAD) {
                group.prefetch_cell(hash);
            }
            if let Some(&hash) = hashes.get(n + 2 * PREFETCH_AHEAD) {
                group.prefetch_entry(hash);
            }
            if let Some(&hash) = hashes.get(n + PREFETCH_AHEAD) {
                group.prefetch_row(hash);
            }
        };
        let mut n = 0;
        while let Some(&(row, diff)) = run.get(n) {
            ahead(n, group);
            if let Some(&(next_row, next_diff)) = run.get(n + 1) {
                if *diff == -*next_diff && identity.same(row, next_row) {
                    let (old, new) = if *diff < 0 {
                        (row, next_row)
                    } else {
                        (next_row, row)
                    };
                    let hash = hashes.get(n).copied();
                    if group.replace((order, identity), (old, new), diff.abs(), hash) {
                        ahead(n + 1, group);
                        n += 2;
                        continue;
                    }
                }
            }
            let hash = hashes.get(n).copied();
            let (before, after) = group.add_hashed((order, identity), row, *diff, hash);
            group.total += after.max(0) - before.max(0);
            n += 1;
        }
        group.settle(ordered, identity);
        if group.is_empty() {
            shard.remove(&keys.key_of(first));
        }
        start = end;
    }
}

/// How many changes ahead [`fold_shard`] fetches a row past a group's ordered rows.
const PREFETCH_AHEAD: usize = 8;

/// The fewest unordered rows a group has for its fold to fetch them ahead: a smaller table
/// stays in the cache.
const PREFETCH_MIN_ROWS: usize = 16_384;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::{xorshift, SortDirection};

    /// A row `[key, n, tag]`, ordered by `n DESC` (many rows tie on it) then by the whole row.
    fn row(n: u64, tag: u64) -> Row {
        vec![Value::str("k"), Value::UInt(n), Value::UInt(tag)]
    }

    /// The order of the tests' rows: by their second column, descending, then the whole row.
    fn by_n_desc() -> RowOrder {
        let desc = SortDirection {
            desc: true,
            nulls_first: false,
        };
        RowOrder::by_columns(vec![desc], vec![1])
    }

    /// Rows with their multiplicities, as owned rows to compare.
    fn held<'a>(rows: impl Iterator<Item = (&'a SortedRow, i64)>) -> Vec<(Row, i64)> {
        rows.map(|(e, n)| (e.row().to_vec(), n)).collect()
    }

    /// A group kept partly in order reads as one ordered index: after every run of random
    /// inserts and retractions (rows held several times, ties in the sort value, runs that
    /// empty the ordered rows and refill them, runs that overflow them), its rows in order,
    /// its rows after any row, its count and its unordered rows' place (each after every
    /// ordered row) agree with an ordered map of the same changes. Rows go through both sides.
    #[test]
    fn a_group_kept_partly_in_order_reads_as_one_ordered_index() {
        let order = by_n_desc();
        let identity = Identity::new(None, 3);
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for ordered in [1, 3, 8] {
            let mut group = Group::default();
            let mut oracle: BTreeMap<SortedRow, i64> = BTreeMap::new();
            let mut went_unordered = false;
            for run in 0..300 {
                // Some runs mostly take rows back, so the ordered rows empty and refill.
                let retracting = run % 7 < 2;
                for _ in 0..next() % 40 {
                    let held: Vec<Row> = oracle.keys().map(|e| e.row().to_vec()).collect();
                    let (r, diff) = if !held.is_empty() && (retracting || next().is_multiple_of(3))
                    {
                        (held[(next() % held.len() as u64) as usize].clone(), -1)
                    } else {
                        (row(next() % 30, next() % 5), 1 + (next() % 2) as i64)
                    };
                    let expected = add_multiplicity(&mut oracle, order.entry(&r), diff);
                    assert_eq!(group.add((&order, &identity), &r, diff), expected);
                }
                group.settle(ordered, &identity);
                went_unordered |= group.unordered() > 0;
                let want = held(oracle.iter().map(|(e, &n)| (e, n)));
                assert_eq!(held(group.ordered()), want, "ordered {ordered}, run {run}");
                assert_eq!(group.len(), oracle.len());
                if let (Some((last, _)), Some(first_later)) = (
                    group.head.last_key_value(),
                    group.tail.entries().iter().map(|(_, e, _)| e).min(),
                ) {
                    assert!(
                        last < first_later,
                        "every unordered row after the ordered ones"
                    );
                }
                for (at, n) in [(None, 4), (Some(0), 2), (Some(want.len() / 2), 7)] {
                    let after = at.and_then(|i| oracle.keys().nth(i));
                    let expected: Vec<(Row, i64)> = oracle
                        .iter()
                        .filter(|(e, _)| after.is_none_or(|a| *e > a))
                        .take(n)
                        .map(|(e, &c)| (e.row().to_vec(), c))
                        .collect();
                    let got: Vec<(Row, i64)> = group
                        .after(after, n)
                        .into_iter()
                        .map(|(e, c)| (e.row().to_vec(), c))
                        .collect();
                    assert_eq!(got, expected, "after {at:?}, {n} rows");
                }
            }
            assert!(
                went_unordered,
                "ordered {ordered}: rows were kept out of order"
            );
        }
    }

    /// A key with enough unordered rows for its fold to fetch them ahead (entries, then
    /// their rows), whose table grows in the middle of a run, folds each run of changes as an
    /// ordered map of them says: groups' rows replaced (a retraction next to its new row),
    /// added and taken back.
    #[test]
    fn a_large_key_folds_its_changes_fetched_ahead() {
        let order = by_n_desc();
        let identity = Identity::new(Some(vec![0, 2]), 3);
        let keys = KeyColumns(vec![0]);
        let mut shard: FxHashMap<Row, Group> = FxHashMap::default();
        let mut oracle: BTreeMap<SortedRow, i64> = BTreeMap::new();
        // Each user's row (its total, by user): user `u` is `[k, total, u]`.
        let mut totals: Vec<Option<u64>> = vec![None; 40_000];
        let mut next = xorshift(0x51_7cc1_b727_220a);
        // Run 0 adds 20k users; run 1 20k more (the table, sized for the first 20k, grows
        // while the run is fetched ahead) and changes 10k of the first; run 2 changes or takes
        // back 15k users.
        let runs: [(std::ops::Range<usize>, usize); 3] =
            [(0..20_000, 0), (20_000..40_000, 10_000), (0..0, 15_000)];
        let mut seen = 0;
        for (run, (added, changed)) in runs.into_iter().enumerate() {
            let mut changes: Vec<(Row, i64)> = Vec::new();
            let mut touched = std::collections::HashSet::new();
            let picked: Vec<usize> = (0..changed)
                .map(|_| (next() % seen.max(1) as u64) as usize)
                .collect();
            seen = seen.max(added.end);
            for user in added.chain(picked) {
                if !touched.insert(user) {
                    continue;
                }
                let old = totals[user];
                let new = match old {
                    Some(_) if next().is_multiple_of(9) => None,
                    Some(t) => Some(t + 1 + next() % 50),
                    None => Some(next() % 1_000),
                };
                for (total, diff) in [(old, -1), (new, 1)] {
                    if let Some(total) = total {
                        let r = vec![
                            Value::str("k"),
                            Value::UInt(total),
                            Value::UInt(user as u64),
                        ];
                        add_multiplicity(&mut oracle, order.entry(&r), diff);
                        changes.push((r, diff));
                    }
                }
                totals[user] = new;
            }
            fold_shard(&mut shard, (&keys, &identity, &order, 64), changes.iter());
            let group = shard
                .get(&vec![Value::str("k")])
                .expect("the key holds rows");
            assert!(group.unordered() >= PREFETCH_MIN_ROWS, "run {run}");
            let want = held(oracle.iter().map(|(e, &n)| (e, n)));
            assert_eq!(held(group.ordered()), want, "run {run}");
            assert_eq!(group.len(), oracle.len(), "run {run}");
        }
    }
}
