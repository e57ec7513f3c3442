//! GROUP BY: every aggregate maintained in time proportional to the change.
//!
//! Each input row becomes its group key and a contribution: the accumulable aggregates'
//! integers (`count`, `sum`, `avg`, and the group's row count, see `accum`), one cell per
//! distinct-count or extreme aggregate, and the arguments of the aggregates that need the
//! whole group. A [`GroupState`] per key folds contributions in time order (see `keyed`):
//! - **accumulable**: added up; a group costs a few integers whatever its row count;
//! - **distinct counts** (`uniq`, `uniqExact`, `count(DISTINCT)`): a map from value to
//!   multiplicity; the count is its size, exact under retraction;
//! - **extremes** (`min`, `max`, `argMin`, `argMax`, `any`, `anyLast`): an ordered map of the
//!   distinct (ordering value, returned value) pairs; the result is its first or last entry,
//!   found in O(log n) and exact when the current extreme is retracted. Over an append-only
//!   input (a datasource's rows through filters and projections, which only an explicit delete
//!   retracts), only the best [`EXTREME_KEPT`] pairs are kept ([`Extreme`]), so a group costs
//!   the same whatever its number of distinct values; if deletes retract all of them while the
//!   group still has rows, the view is rebuilt from its history ([`Guard::lose_track`]);
//! - **quantiles** (`quantile*`, `median*`): the group's numbers in sorted blocks with their
//!   counts ([`Ranked`]), so a change costs O(√n) and the k-th value is found without sorting;
//! - **whole-group** (`groupArray`, `groupUniqArray`): an ordered map of their arguments,
//!   evaluated for a group when it changes (their result is every value).
//!
//! So a change costs its own updates plus one output row per touched group, never a re-read
//! of the group, except for the whole-group aggregates.

use std::collections::hash_map::Entry;
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use differential_dataflow::difference::{IsZero, Multiply, Semigroup};
use differential_dataflow::AsCollection;
use differential_dataflow::VecCollection;
use hashbrown::hash_table::{self, HashTable};
use petrel_sql::{AggFunc, Aggregate, Expr};
use petrel_value::{Row, Value, F64};
use rustc_hash::FxHashMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::accum::{Accum, AccumLayout};
use crate::guard::Guard;
use crate::keyed::{fold_by_key, fold_scanned_by_key, CacheLine, KeyedState};
use crate::render::Rows;
use crate::source::Feed;
use crate::values::ValuesLayout;

/// How a distinct-count or extreme aggregate keeps its state.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Part {
    /// Distinct values (each cell is a tuple of the arguments).
    Distinct,
    /// Distinct array elements (`uniqExactArray`: each cell is an array).
    DistinctElements,
    /// The smallest (ordering, value) pair.
    Least,
    /// The largest (ordering, value) pair.
    Greatest,
    /// The interpolated quantile at this level of the numbers.
    Quantile(f64),
}

/// Where an aggregate's result comes from.
#[derive(Clone, Copy, Debug)]
enum Source {
    Accumulated(usize),
    Part(usize),
    WholeGroup(usize),
}

/// An aggregation's plan: which aggregates go where, and how a row contributes.
struct GroupLayout {
    /// Set when extremes keep only their best pairs (the input is append-only): the guard
    /// told when such a state loses track of its extreme.
    bounded_extremes: Option<Guard>,
    aggregates: Vec<Aggregate>,
    keys: Vec<Expr>,
    accumulated: AccumLayout,
    /// The distinct-count and extreme aggregates with their kind.
    parts: Vec<(Aggregate, Part)>,
    whole: ValuesLayout,
    sources: Vec<Source>,
    /// The columns of a group's row (its keys, then its aggregates) that the projection
    /// over the aggregation reads, in its order, when it reads nothing but distinct columns:
    /// the row's values then move into that order, with no projection operator after.
    projected: Option<Vec<usize>>,
}

impl GroupLayout {
    fn new(
        keys: &[Expr],
        aggregates: &[Aggregate],
        bounded_extremes: Option<Guard>,
    ) -> GroupLayout {
        let (mut acc, mut parts, mut whole, mut sources) = (vec![], vec![], vec![], vec![]);
        for agg in aggregates {
            let part = match agg.func {
                AggFunc::Count | AggFunc::Sum | AggFunc::Avg => None,
                AggFunc::Uniq | AggFunc::UniqExact => Some(Part::Distinct),
                AggFunc::UniqExactArray => Some(Part::DistinctElements),
                AggFunc::Min | AggFunc::Any | AggFunc::ArgMin => Some(Part::Least),
                AggFunc::Max | AggFunc::AnyLast | AggFunc::ArgMax => Some(Part::Greatest),
                AggFunc::Quantile => Some(Part::Quantile(
                    agg.params.first().and_then(Value::as_f64).unwrap_or(0.5),
                )),
                AggFunc::GroupArray | AggFunc::GroupUniqArray => {
                    sources.push(Source::WholeGroup(whole.len()));
                    whole.push(agg.clone());
                    continue;
                }
            };
            match part {
                None => {
                    sources.push(Source::Accumulated(acc.len()));
                    acc.push(agg.clone());
                }
                Some(part) => {
                    sources.push(Source::Part(parts.len()));
                    parts.push((agg.clone(), part));
                }
            }
        }
        GroupLayout {
            bounded_extremes,
            aggregates: aggregates.to_vec(),
            keys: keys.to_vec(),
            accumulated: AccumLayout::new(&acc),
            parts,
            whole: ValuesLayout::new(&whole),
            sources,
            projected: None,
        }
    }

    /// True when every aggregate accumulates (the contributions can be pre-summed).
    fn only_accumulated(&self) -> bool {
        self.parts.is_empty()
            && self
                .sources
                .iter()
                .all(|s| matches!(s, Source::Accumulated(_)))
    }

    /// One cell per distinct/extreme aggregate (NULL: the row does not contribute), then the
    /// whole-group aggregates' arguments.
    fn cells(&self, row: &[Value]) -> Row {
        let mut out = Vec::with_capacity(self.parts.len());
        for (agg, part) in &self.parts {
            let included = agg.filter.as_ref().is_none_or(|f| f.eval(row).is_true());
            let cell = if !included {
                Value::Null
            } else {
                match part {
                    // One argument is counted as itself (no tuple to allocate, hash and
                    // compare through), several as their tuple.
                    Part::Distinct => match agg.args.as_slice() {
                        [arg] => arg.eval(row),
                        args => {
                            let args: Row = args.iter().map(|a| a.eval(row)).collect();
                            if args.first().is_some_and(Value::is_null) {
                                Value::Null
                            } else {
                                Value::Tuple(args.into())
                            }
                        }
                    },
                    Part::DistinctElements => agg.args[0].eval(row),
                    Part::Quantile(_) => match agg.args[0].eval(row).as_f64() {
                        Some(x) => Value::Float(F64(x)),
                        None => Value::Null,
                    },
                    // `min`-like aggregates order by the value itself: the bare value (no
                    // pair is allocated for a row the extreme forgets at once).
                    Part::Least | Part::Greatest if !is_paired(agg.func) => agg.args[0].eval(row),
                    Part::Least | Part::Greatest => {
                        let order = agg.args[1].eval(row);
                        if order.is_null() {
                            Value::Null
                        } else {
                            Value::Tuple(vec![order, agg.args[0].eval(row)].into())
                        }
                    }
                }
            };
            out.push(cell);
        }
        out.extend(self.whole.cut(row));
        out
    }
}

/// A value ordered as SQL orders it where that is defined, and naturally elsewhere (so the
/// order is total).
#[derive(Clone, Debug, PartialEq, Eq)]
struct SqlOrdered(Value);

impl Ord for SqlOrdered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        sql_order(&self.0, &other.0)
    }
}

/// SQL's order where it is defined, the natural order elsewhere.
fn sql_order(x: &Value, y: &Value) -> std::cmp::Ordering {
    x.sql_cmp(y).unwrap_or_else(|| x.cmp(y))
}

impl PartialOrd for SqlOrdered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// An extreme's (ordering value, returned value) pair.
type Pair = (SqlOrdered, SqlOrdered);

/// True for the extremes ordered by another argument than the one they return (`argMin`,
/// `argMax`): their cells are (ordering, returned) pairs; the others' cells are the bare
/// value, which orders itself.
fn is_paired(func: AggFunc) -> bool {
    matches!(func, AggFunc::ArgMin | AggFunc::ArgMax)
}

/// The state of one distinct-count, extreme or quantile aggregate for one group.
enum PartState {
    Distinct(DistinctValues),
    Extreme(Extreme),
    Ranked(Ranked),
}

impl PartState {
    fn is_empty(&self) -> bool {
        match self {
            PartState::Distinct(m) => m.is_empty(),
            PartState::Extreme(e) => e.is_empty(),
            PartState::Ranked(r) => r.blocks.is_empty(),
        }
    }
}

/// How many distinct numbers a [`Ranked`] block holds before it splits in two.
const RANKED_BLOCK: usize = 512;

/// A multiset of numbers in sorted blocks of (number, count), each with its total: adding a
/// number costs a search and a shift within one block, and the k-th smallest is found by
/// walking the blocks' totals, then one block: O(√n) each, where sorting the group was
/// O(n log n) per change.
#[derive(Default)]
struct Ranked {
    blocks: Vec<RankedBlock>,
    /// The count of all numbers.
    total: i64,
}

#[derive(Default)]
struct RankedBlock {
    /// Numbers as [`Ranked::key`]s, sorted, with their counts (never zero).
    entries: Vec<(u64, i64)>,
    total: i64,
}

impl Ranked {
    /// A key whose unsigned order is `f64::total_cmp`'s.
    fn key(x: f64) -> u64 {
        let bits = x.to_bits();
        if bits >> 63 == 1 {
            !bits
        } else {
            bits | (1 << 63)
        }
    }

    fn number(key: u64) -> f64 {
        f64::from_bits(if key >> 63 == 1 {
            key & !(1 << 63)
        } else {
            !key
        })
    }

    fn add(&mut self, x: f64, diff: i64) {
        let key = Ranked::key(x);
        self.total += diff;
        if self.blocks.is_empty() {
            self.blocks.push(RankedBlock::default());
        }
        // The first block whose last key is at or after `key`, else the last block.
        let at = self
            .blocks
            .partition_point(|b| b.entries.last().is_some_and(|(k, _)| *k < key))
            .min(self.blocks.len() - 1);
        let block = &mut self.blocks[at];
        block.total += diff;
        match block.entries.binary_search_by_key(&key, |(k, _)| *k) {
            Ok(i) => {
                block.entries[i].1 += diff;
                if block.entries[i].1 == 0 {
                    block.entries.remove(i);
                }
            }
            Err(i) => block.entries.insert(i, (key, diff)),
        }
        if block.entries.is_empty() {
            self.blocks.remove(at);
        } else if block.entries.len() > 2 * RANKED_BLOCK {
            let entries = block.entries.split_off(RANKED_BLOCK);
            let total: i64 = entries.iter().map(|(_, n)| n).sum();
            block.total -= total;
            self.blocks.insert(at + 1, RankedBlock { entries, total });
        }
    }

    /// The `k`-th smallest number (from 0), at a completed time (no negative counts).
    fn nth(&self, mut k: i64) -> Option<f64> {
        for block in &self.blocks {
            if k >= block.total {
                k -= block.total;
                continue;
            }
            for &(key, n) in &block.entries {
                if k < n {
                    return Some(Ranked::number(key));
                }
                k -= n;
            }
        }
        None
    }

    /// ClickHouse's interpolating quantile at level `p`, exactly (see `values::quantile`);
    /// `None` over no numbers.
    fn quantile(&self, p: f64) -> Option<f64> {
        if self.total <= 0 {
            return None;
        }
        let pos = p.clamp(0.0, 1.0) * (self.total - 1) as f64;
        let lo = pos.floor() as i64;
        let hi = (lo + 1).min(self.total - 1);
        let frac = pos - lo as f64;
        Some(self.nth(lo)? * (1.0 - frac) + self.nth(hi)? * frac)
    }
}

/// How many distinct pairs an [`Extreme`] keeps.
const EXTREME_KEPT: usize = 8;

/// An extreme: its best `keep` distinct pairs (every pair, where retractions are part of
/// normal operation; [`EXTREME_KEPT`] over an append-only input) with their exact
/// multiplicities, and the boundary from which pairs are no longer kept. Every pair better
/// than the boundary is kept, so the best kept pair is the extreme; the boundary only moves
/// towards better pairs, so a pair kept now was kept at each of its updates. Only when
/// retractions remove every kept pair while rows remain is the extreme unknown.
struct Extreme {
    /// `max`-like (the greatest pair wins) rather than `min`-like.
    greatest: bool,
    keep: usize,
    kept: BTreeMap<Pair, isize>,
    /// Pairs at the boundary or worse are not kept; `None` until a pair was forgotten.
    boundary: Option<Box<Pair>>,
    /// The rows that contribute a pair, so an empty `kept` is told apart from no rows.
    present: isize,
}

/// The extreme of an [`Extreme`] is not known: retractions removed every kept pair.
#[derive(Debug, PartialEq)]
struct LostTrack;

impl Extreme {
    fn new(greatest: bool, keep: usize) -> Extreme {
        Extreme {
            greatest,
            keep,
            kept: BTreeMap::new(),
            boundary: None,
            present: 0,
        }
    }

    /// Applies one row's pair. Pairs past the boundary are not kept; others are, even past
    /// `keep` until the time completes ([`Extreme::settle`]): within a time, a
    /// row's retraction may come before its insertion, and forgetting a pair then could lose
    /// the insertion that makes it the extreme.
    fn apply(&mut self, pair: Pair, diff: isize) {
        self.present += diff;
        let forgotten = self.boundary.as_ref().is_some_and(|b| {
            if self.greatest {
                pair <= **b
            } else {
                pair >= **b
            }
        });
        if !forgotten {
            bump(&mut self.kept, pair, diff);
        }
    }

    /// [`Extreme::apply`] of a value that orders itself (`min`, `max`, `any`, `anyLast`): its
    /// pair is made only when it is kept. A kept boundary is such a pair too, so comparing
    /// the value with the boundary's ordering value says what comparing the pairs would.
    fn apply_value(&mut self, value: Value, diff: isize) {
        let forgotten = self.boundary.as_ref().is_some_and(|b| {
            let o = sql_order(&value, &b.0 .0);
            if self.greatest {
                o.is_le()
            } else {
                o.is_ge()
            }
        });
        if forgotten {
            self.present += diff;
        } else {
            self.apply((SqlOrdered(value.clone()), SqlOrdered(value)), diff);
        }
    }

    /// At a completed time: forgets the pairs beyond the best `keep`.
    fn settle(&mut self) {
        while self.kept.len() > self.keep {
            let worst = if self.greatest {
                self.kept.pop_first()
            } else {
                self.kept.pop_last()
            };
            self.boundary = worst.map(|(pair, _)| Box::new(pair));
        }
    }

    /// The extreme's returned value (`None` over no rows), at a completed time.
    fn result(&self) -> Result<Option<&Value>, LostTrack> {
        let best = if self.greatest {
            self.kept.last_key_value()
        } else {
            self.kept.first_key_value()
        };
        match best {
            Some(((_, value), _)) => Ok(Some(&value.0)),
            None if self.present > 0 => Err(LostTrack),
            None => Ok(None),
        }
    }

    fn is_empty(&self) -> bool {
        self.kept.is_empty() && self.present == 0
    }
}

/// Adds `diff` to `key`'s multiplicity, forgetting it at zero.
fn bump<K: Ord>(map: &mut BTreeMap<K, isize>, key: K, diff: isize) {
    match map.entry(key) {
        std::collections::btree_map::Entry::Occupied(mut e) => {
            *e.get_mut() += diff;
            if *e.get() == 0 {
                e.remove();
            }
        }
        std::collections::btree_map::Entry::Vacant(e) => {
            e.insert(diff);
        }
    }
}

/// A distinct-count part's values with their multiplicities. Integers (the usual
/// `uniqExact(user_id)`) are kept as plain integers, by their bits: an entry a third of a
/// value's size, hashed and compared inline, and found by hash alone when the fold fetches it
/// ahead ([`DistinctValues::prefetch`]). A value of another kind never equals an integer of
/// these variants, so the count is the sum of the tables'.
#[derive(Default)]
struct DistinctValues {
    /// `UInt`s and `Int`s (apart: -1 and 2^64 - 1 have the same bits), with their counts.
    uints: HashTable<(u64, isize)>,
    ints: HashTable<(u64, isize)>,
    others: FxHashMap<Value, isize>,
}

/// The hash of an integer kept in [`DistinctValues`].
fn integer_hash(bits: u64) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(bits)
}

impl DistinctValues {
    fn bump(&mut self, value: Value, diff: isize) {
        match value {
            Value::UInt(u) => bump_integer(&mut self.uints, u, diff),
            Value::Int(i) => bump_integer(&mut self.ints, i as u64, diff),
            other => bump_hashed(&mut self.others, other, diff),
        }
    }

    /// Fetches into the cache the entry `value` would be counted at (see
    /// [`KeyedState::prefetch`]).
    fn prefetch(&self, value: &Value) {
        let (table, bits) = match value {
            Value::UInt(u) => (&self.uints, *u),
            Value::Int(i) => (&self.ints, *i as u64),
            _ => return,
        };
        if let Some(entry) = table.find(integer_hash(bits), |_| true) {
            petrel_view::prefetch(std::slice::from_ref(entry));
        }
    }

    fn len(&self) -> usize {
        self.uints.len() + self.ints.len() + self.others.len()
    }

    fn is_empty(&self) -> bool {
        self.uints.is_empty() && self.ints.is_empty() && self.others.is_empty()
    }
}

/// Adds `diff` to the count of the integer `bits`, forgetting it at zero.
fn bump_integer(table: &mut HashTable<(u64, isize)>, bits: u64, diff: isize) {
    let hash = integer_hash(bits);
    match table.entry(hash, |(b, _)| *b == bits, |(b, _)| integer_hash(*b)) {
        hash_table::Entry::Occupied(mut e) => {
            e.get_mut().1 += diff;
            if e.get().1 == 0 {
                e.remove();
            }
        }
        hash_table::Entry::Vacant(e) => {
            e.insert((bits, diff));
        }
    }
}

fn bump_hashed<K: std::hash::Hash + Eq>(map: &mut FxHashMap<K, isize>, key: K, diff: isize) {
    match map.entry(key) {
        Entry::Occupied(mut e) => {
            *e.get_mut() += diff;
            if *e.get() == 0 {
                e.remove();
            }
        }
        Entry::Vacant(e) => {
            e.insert(diff);
        }
    }
}

/// One group's state.
struct GroupState {
    layout: Arc<GroupLayout>,
    accumulated: Accum,
    /// A boxed slice, 16 bytes and no allocation where the aggregation has no such part (as
    /// `whole` is boxed): a group's state is a slot of its worker's hash table, copied whole
    /// each time the table grows.
    parts: Box<[PartState]>,
    /// The whole-group aggregates' arguments, once the group has any. Boxed although a map
    /// keeps its entries on the heap already: the box is 8 bytes of the slot, the map 24.
    #[allow(clippy::box_collection)]
    whole: Option<Box<BTreeMap<Row, isize>>>,
}

impl GroupState {
    fn new(layout: Arc<GroupLayout>) -> GroupState {
        let parts = layout
            .parts
            .iter()
            .map(|(_, p)| match p {
                Part::Distinct | Part::DistinctElements => {
                    PartState::Distinct(DistinctValues::default())
                }
                Part::Least | Part::Greatest => {
                    let keep = match layout.bounded_extremes {
                        Some(_) => EXTREME_KEPT,
                        None => usize::MAX,
                    };
                    PartState::Extreme(Extreme::new(*p == Part::Greatest, keep))
                }
                Part::Quantile(_) => PartState::Ranked(Ranked::default()),
            })
            .collect();
        GroupState {
            layout,
            accumulated: Accum::default(),
            parts,
            whole: None,
        }
    }

    /// Writes the `i`-th aggregate's value into `place` (`whole`: the whole-group
    /// aggregates' values). `None` when deletes removed every extreme value it kept while
    /// the group still has rows: then the group has no right row, and the view is told.
    #[inline]
    fn write_aggregate(&self, i: usize, whole: &[Value], place: &mut Value) -> Option<()> {
        let layout = &self.layout;
        let (agg, source) = (&layout.aggregates[i], layout.sources[i]);
        match source {
            Source::Accumulated(a) => {
                let acc = &self.accumulated.0;
                let get = |i: usize| acc.get(i).copied().unwrap_or(0);
                layout.accumulated.write_value(get, a, place)
            }
            Source::WholeGroup(w) => place.set(whole.get(w).map_or(Value::Null, Value::clone)),
            Source::Part(p) => {
                let value = match (&self.parts[p], layout.parts[p].1) {
                    (PartState::Distinct(m), _) => Value::UInt(m.len() as u64),
                    (PartState::Ranked(r), Part::Quantile(q)) => match r.quantile(q) {
                        Some(q) => Value::Float(F64(q)),
                        // Over no values: NULL for a Nullable argument, NaN otherwise.
                        None if agg.ty.is_nullable() => Value::Null,
                        None => Value::Float(F64(f64::NAN)),
                    },
                    (PartState::Ranked(_), _) => Value::Null,
                    (PartState::Extreme(e), _) => match e.result() {
                        Ok(v) => v.cloned().unwrap_or(Value::Null),
                        Err(LostTrack) => {
                            if let Some(guard) = &layout.bounded_extremes {
                                guard.lose_track(format!(
                                    "deletes removed the {EXTREME_KEPT} most extreme values of a \
                                     {:?} in a group that still has rows",
                                    layout.parts[p].0.func
                                ));
                            }
                            return None;
                        }
                    },
                };
                place.set(value);
            }
        }
        if place.is_null() && !agg.ty.is_nullable() {
            place.set(agg.ty.default_value());
        }
        Some(())
    }
}

impl KeyedState for GroupState {
    type Update = (Accum, Row);
    type Alignment = ();

    fn apply(&mut self, (accumulated, cells): (Accum, Row), diff: isize) {
        self.accumulated.plus_equals(&accumulated.multiply(&diff));
        // The cells are the update's own: each moves into the state that keeps it.
        let mut cells = cells.into_iter();
        let parts = self.parts.iter_mut().zip(&self.layout.parts);
        for ((state, (agg, part)), cell) in parts.zip(cells.by_ref()) {
            match (state, cell) {
                (_, Value::Null) => {}
                (PartState::Distinct(m), Value::Array(items))
                    if *part == Part::DistinctElements =>
                {
                    for item in items {
                        m.bump(item, diff);
                    }
                }
                (PartState::Distinct(m), v) => m.bump(v, diff),
                (PartState::Extreme(e), value) if !is_paired(agg.func) => {
                    e.apply_value(value, diff)
                }
                (PartState::Extreme(e), Value::Tuple(pair)) if pair.len() == 2 => {
                    let mut pair = Vec::from(pair).into_iter();
                    if let (Some(order), Some(value)) = (pair.next(), pair.next()) {
                        e.apply((SqlOrdered(order), SqlOrdered(value)), diff);
                    }
                }
                (PartState::Ranked(r), Value::Float(x)) => r.add(x.0, diff as i64),
                (PartState::Extreme(_) | PartState::Ranked(_), _) => {}
            }
        }
        let whole: Row = cells.collect();
        if !whole.is_empty() {
            let kept = self.whole.get_or_insert_with(Box::default);
            bump(kept, whole, diff);
            if kept.is_empty() {
                self.whole = None;
            }
        }
    }

    fn prefetch(&self, (_, cells): &(Accum, Row)) {
        for (state, cell) in self.parts.iter().zip(cells) {
            if let PartState::Distinct(m) = state {
                m.prefetch(cell);
            }
        }
    }

    fn reads_inside((_, cells): &(Accum, Row)) -> bool {
        !cells.is_empty()
    }

    fn settle(&mut self) {
        for part in self.parts.iter_mut() {
            if let PartState::Extreme(e) = part {
                e.settle();
            }
        }
    }

    fn output(&self, key: &[Value], out: &mut Vec<Row>) {
        let acc = &self.accumulated.0;
        let exists = acc.first().is_some_and(|n| *n > 0) || acc.get(1).is_some_and(|n| *n > 0);
        if !exists {
            return;
        }
        let layout = &self.layout;
        let mut whole = Vec::new();
        if !layout.whole_is_empty() {
            let group: Vec<(&Row, isize)> = self
                .whole
                .iter()
                .flat_map(|w| w.iter())
                .map(|(r, n)| (r, *n))
                .collect();
            layout.whole.finish(&group, &mut whole);
        }
        layout.push_row(key, |i, place| self.write_aggregate(i, &whole, place), out);
    }

    fn is_empty(&self) -> bool {
        self.accumulated.is_zero()
            && self.parts.iter().all(PartState::is_empty)
            && self.whole.is_none()
    }
}

impl GroupLayout {
    /// Appends a group's row: the key's columns, then the aggregates, each written by
    /// `aggregate` (which gives `None` when the group has no right row: then no row). Only
    /// the columns output are made, each where it lies in the one row (made at its final
    /// size, NULL): a cell made apart and moved in was read back whole before the stores that
    /// made it were done.
    #[inline]
    fn push_row(
        &self,
        key: &[Value],
        mut aggregate: impl FnMut(usize, &mut Value) -> Option<()>,
        out: &mut Vec<Row>,
    ) {
        let width = key.len() + self.aggregates.len();
        let projected = self.projected.as_deref();
        let cells = projected.map_or(width, <[usize]>::len);
        let mut row = Vec::with_capacity(cells);
        row.resize_with(cells, || Value::Null);
        for (n, place) in row.iter_mut().enumerate() {
            let c = projected.map_or(n, |columns| columns[n]);
            match c.checked_sub(key.len()) {
                None => place.set(key[c].clone()),
                Some(i) if i < self.aggregates.len() => {
                    if aggregate(i, place).is_none() {
                        return;
                    }
                }
                Some(_) => {}
            }
        }
        out.push(row);
    }

    /// Whether a group of this layout is a [`SumState`]: at most three accumulators (its row
    /// count, the presence marker, one `sum` or `count`), no part, no whole-group aggregate.
    fn fits_sum_state(&self) -> bool {
        self.accumulated.width() <= 3 && self.only_accumulated() && self.whole_is_empty()
    }

    fn whole_is_empty(&self) -> bool {
        !self
            .sources
            .iter()
            .any(|s| matches!(s, Source::WholeGroup(_)))
    }
}

/// The state of a group of one accumulated aggregate (`sum`, `count`; a top-k's `GROUP BY`),
/// [`GroupState`] without what such a group never holds: its hash-table slot, with the slot's
/// hash and key, is two cache lines instead of three ([`crate::keyed::Slot`]), and the fold
/// reads one line less for each of the group's rows.
struct SumState {
    layout: Arc<GroupLayout>,
    /// Accumulator slots 0 and 1 (the group's row count, a keyless aggregation's presence
    /// marker): sums of multiplicities, which fit 64 bits.
    counts: [i64; 2],
    /// Accumulator slot 2, the aggregate's, as an `i128`'s low and high halves: an `i128`
    /// field would align the state to 16 bytes and pad the slot to three lines.
    first: [u64; 2],
}

impl SumState {
    fn new(layout: Arc<GroupLayout>) -> SumState {
        SumState {
            layout,
            counts: [0; 2],
            first: [0; 2],
        }
    }

    /// Accumulator slot `i` (0 past the three).
    #[inline]
    fn accumulator(&self, i: usize) -> i128 {
        match i {
            0 | 1 => self.counts[i] as i128,
            2 => ((self.first[1] as i128) << 64) | self.first[0] as i128,
            _ => 0,
        }
    }
}

impl KeyedState for SumState {
    type Update = (Accum, Row);
    type Alignment = CacheLine;

    fn apply(&mut self, (contribution, cells): (Accum, Row), diff: isize) {
        // Each of the (at most three) slots is added whether or not it is zero: no loop and
        // no branch per slot. No layout this state is chosen for has more slots.
        let slot = |i: usize| contribution.0.get(i).copied().unwrap_or(0) * diff as i128;
        self.counts[0] += slot(0) as i64;
        self.counts[1] += slot(1) as i64;
        let add = slot(2);
        if add != 0 {
            let sum = self.accumulator(2) + add;
            self.first = [sum as u64, (sum >> 64) as u64];
        }
        // Such a group has no cells: the empty row (no allocation) is forgotten, not dropped
        // through the drop code's call.
        if cells.capacity() == 0 {
            std::mem::forget(cells);
        }
    }

    fn output(&self, key: &[Value], out: &mut Vec<Row>) {
        if self.counts[0] <= 0 && self.counts[1] <= 0 {
            return;
        }
        let layout = &self.layout;
        // Every aggregate of such a layout is accumulated, and no accumulated value is NULL.
        let write = |i: usize, place: &mut Value| {
            if let Source::Accumulated(a) = layout.sources[i] {
                let get = |s: usize| self.accumulator(s);
                layout.accumulated.write_value(get, a, place);
            }
            Some(())
        };
        layout.push_row(key, write, out);
    }

    fn is_empty(&self) -> bool {
        self.counts == [0; 2] && self.first == [0; 2]
    }
}

/// The most workers that each read every row of a batch to fold the groups that are their
/// own ([`fold_scanned_by_key`]): a row costs its key (the hash of its columns, or the key's
/// expressions after the scan's filters) on every worker, and beyond this many workers those
/// costs exceed making the row into a record and exchanging it (a few hashes' worth, about
/// 100 ns).
const IN_PLACE_MAX_WORKERS: usize = 8;

/// Renders `GROUP BY keys` with `aggregates` over `input`; `unit` holds one empty row, which
/// gives a keyless aggregation its row over empty input. `append_only`: only explicit deletes
/// retract the input's rows (see [`Extreme`]). `projected`: the distinct columns of the
/// group's row a projection over the aggregation reads, which the rows are then made of.
/// `single_process`: the workers share one process, so a keyed aggregation over a datasource
/// folds its rows where they lie ([`fold_scanned_by_key`]) instead of exchanging them.
pub fn render<'s>(
    input: Feed<'s>,
    (keys, aggregates): (&[Expr], &[Aggregate]),
    unit: &Rows<'s>,
    guard: &Guard,
    append_only: bool,
    projected: Option<Vec<usize>>,
    single_process: bool,
) -> Rows<'s> {
    let bounded = append_only.then(|| guard.clone());
    let layout = Arc::new(GroupLayout {
        projected,
        ..GroupLayout::new(keys, aggregates, bounded)
    });
    let input = match input {
        Feed::Scan(scan, slices, scan_guard)
            if single_process
                && !keys.is_empty()
                && slices.scope().peers() <= IN_PLACE_MAX_WORKERS =>
        {
            let u = layout.clone();
            let update_of = move |row: &Row| (u.accumulated.contribution(row), u.cells(row));
            let scanned = (scan, slices, scan_guard);
            return if layout.fits_sum_state() {
                fold_scanned_by_key(scanned, keys.to_vec(), update_of, move || {
                    SumState::new(layout.clone())
                })
            } else {
                fold_scanned_by_key(scanned, keys.to_vec(), update_of, move || {
                    GroupState::new(layout.clone())
                })
            };
        }
        other => other,
    };
    let presence = {
        let l = layout.clone();
        (keys.is_empty()).then(|| {
            unit.clone()
                .map(move |_| (Vec::new(), (l.accumulated.presence(), Vec::new())))
        })
    };
    let updates = if layout.only_accumulated() {
        // Pre-summed per key and batch before the exchange (a combiner).
        let (l, g) = (layout.clone(), guard.clone());
        let contributions = input.map(move |row, diff| {
            g.run(|| {
                let key: Row = l.keys.iter().map(|e| e.eval(&row)).collect();
                (key, l.accumulated.contribution(&row).multiply(&diff))
            })
        });
        combine(contributions)
    } else {
        let (l, g) = (layout.clone(), guard.clone());
        input.map(move |row, diff| {
            g.run(|| {
                let key: Row = l.keys.iter().map(|e| e.eval(&row)).collect();
                (
                    (key, (l.accumulated.contribution(&row), l.cells(&row))),
                    diff,
                )
            })
        })
    };
    let updates = match presence {
        Some(p) => updates.concat(p),
        None => updates,
    };
    if layout.fits_sum_state() {
        fold_by_key(updates, guard.clone(), move || {
            SumState::new(layout.clone())
        })
    } else {
        fold_by_key(updates, guard.clone(), move || {
            GroupState::new(layout.clone())
        })
    }
}

/// Adds up the contributions of each key within each batch before they are exchanged, so
/// one record per key and batch travels instead of one per row (a combiner, as in
/// MapReduce).
fn combine<'s>(
    contributions: VecCollection<'s, u64, Row, Accum>,
) -> VecCollection<'s, u64, (Row, (Accum, Row)), isize> {
    contributions
        .inner
        .unary::<CapacityContainerBuilder<Vec<((Row, (Accum, Row)), u64, isize)>>, _, _, _>(
            Pipeline,
            "Combine",
            |_, _| {
                let mut sums: FxHashMap<(Row, u64), Accum> = FxHashMap::default();
                move |input, output| {
                    input.for_each(|cap, data| {
                        for (key, time, acc) in data.drain(..) {
                            match sums.entry((key, time)) {
                                Entry::Occupied(mut e) => e.get_mut().plus_equals(&acc),
                                Entry::Vacant(e) => {
                                    e.insert(acc);
                                }
                            }
                        }
                        let mut session = output.session(&cap);
                        for ((key, time), acc) in sums.drain() {
                            if !acc.is_zero() {
                                session.give(((key, (acc, Vec::new())), time, 1));
                            }
                        }
                    });
                }
            },
        )
        .as_collection()
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_value::ColumnType;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    /// Distinct integers are counted by value and kind: an `Int` and a `UInt` with the same
    /// bits (-1 and 2^64 - 1) are two values, a value held twice is one until both copies
    /// are retracted, and values of other kinds count beside them.
    #[test]
    fn distinct_integers_count_by_value_and_kind() {
        let mut m = DistinctValues::default();
        for (v, diff) in [
            (Value::Int(-1), 1),
            (Value::UInt(u64::MAX), 1),
            (Value::UInt(u64::MAX), 1),
            (Value::str("-1"), 1),
            (Value::UInt(7), 1),
        ] {
            m.prefetch(&v);
            m.bump(v, diff);
        }
        assert_eq!(m.len(), 4);
        m.bump(Value::UInt(u64::MAX), -1);
        assert_eq!(m.len(), 4, "one copy of two is left");
        m.bump(Value::UInt(u64::MAX), -1);
        m.bump(Value::Int(-1), -1);
        assert_eq!(m.len(), 2);
        m.bump(Value::UInt(7), -1);
        m.bump(Value::str("-1"), -1);
        assert!(m.is_empty());
    }

    /// A group's slot in its worker's hash table stays at 192 bytes, three cache lines (272
    /// before what a time changed moved out of it and the rarely used parts were boxed, 224
    /// before a value shrank to 24 bytes), and a group of one accumulated aggregate's at 128,
    /// two: the table copies every slot each time it grows, into memory the process faults
    /// in, and a probe reads the slot it lands on. Each lies on whole lines.
    #[test]
    fn a_group_slot_stays_small() {
        use crate::keyed::Entry;
        assert_eq!(std::mem::size_of::<Entry<GroupState>>(), 192);
        assert_eq!(std::mem::size_of::<Entry<SumState>>(), 128);
        assert_eq!(std::mem::align_of::<Entry<SumState>>(), 64);
    }

    /// A group of one accumulated aggregate kept in two cache lines answers as the general
    /// state does: after every random insert and retraction (sums past 64 bits either way,
    /// floats in fixed point, a keyless aggregation's row over no rows), the same row or
    /// none, and empty exactly when the general state is.
    #[test]
    fn a_sum_state_answers_as_the_general_state() {
        let x = Expr::Column(0);
        let layouts = [
            (
                agg(AggFunc::Sum, vec![x.clone()], ColumnType::Int(64)),
                false,
            ),
            (
                agg(AggFunc::Sum, vec![x.clone()], ColumnType::UInt(64)),
                false,
            ),
            (
                agg(AggFunc::Sum, vec![x.clone()], ColumnType::Float64),
                false,
            ),
            (agg(AggFunc::Count, vec![], ColumnType::UInt(64)), false),
            (
                agg(AggFunc::Count, vec![x.clone()], ColumnType::UInt(64)),
                true,
            ),
        ];
        for (n, (aggregate, keyless)) in layouts.into_iter().enumerate() {
            let layout = Arc::new(GroupLayout::new(&[], &[aggregate], None));
            assert!(layout.fits_sum_state());
            let (mut sum, mut general) = (
                SumState::new(layout.clone()),
                GroupState::new(layout.clone()),
            );
            if keyless {
                sum.apply((layout.accumulated.presence(), Vec::new()), 1);
                general.apply((layout.accumulated.presence(), Vec::new()), 1);
            }
            let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
            let mut live: Vec<Row> = Vec::new();
            for step in 0..2_000 {
                let (row, diff) = if !live.is_empty() && rng.random_range(0..3) == 0 {
                    let i = rng.random_range(0..live.len());
                    (live.swap_remove(i), -1)
                } else {
                    let v = match rng.random_range(0..4) {
                        0 => Value::Int(i64::MIN + rng.random_range(0..10)),
                        1 => Value::UInt(u64::MAX - rng.random_range(0..10)),
                        2 => Value::Float(F64(rng.random_range(-1e6..1e6))),
                        _ => Value::Null,
                    };
                    live.push(vec![v.clone()]);
                    (vec![v], 1)
                };
                let update = || (layout.accumulated.contribution(&row), layout.cells(&row));
                sum.apply(update(), diff);
                general.apply(update(), diff);
                let (mut a, mut b) = (Vec::new(), Vec::new());
                sum.output(&[], &mut a);
                general.output(&[], &mut b);
                assert_eq!(a, b, "layout {n} step {step}");
                assert_eq!(sum.is_empty(), general.is_empty(), "layout {n} step {step}");
            }
            for row in live {
                let update = (layout.accumulated.contribution(&row), layout.cells(&row));
                sum.apply(update, -1);
            }
            assert_eq!(sum.is_empty(), !keyless, "layout {n}: every row taken back");
        }
    }

    fn agg(func: AggFunc, args: Vec<Expr>, ty: ColumnType) -> Aggregate {
        Aggregate {
            func,
            args,
            params: Vec::new(),
            filter: None,
            ty,
        }
    }

    /// Every family's state, after random inserts and retractions (the current extreme
    /// among them), equals the whole-group reference evaluation of the surviving rows.
    #[test]
    fn group_state_equals_the_whole_group_evaluation_under_retractions() {
        let (x, y) = (Expr::Column(0), Expr::Column(1));
        let mut only_positive = agg(AggFunc::Min, vec![y.clone()], ColumnType::Int(64));
        only_positive.filter = Some(Expr::Column(2));
        let aggregates = vec![
            agg(AggFunc::Count, vec![], ColumnType::UInt(64)),
            agg(AggFunc::Sum, vec![x.clone()], ColumnType::Int(64)),
            agg(AggFunc::UniqExact, vec![y.clone()], ColumnType::UInt(64)),
            agg(AggFunc::Min, vec![x.clone()], ColumnType::Int(64)),
            agg(AggFunc::Max, vec![y.clone()], ColumnType::Int(64)),
            agg(
                AggFunc::ArgMax,
                vec![x.clone(), y.clone()],
                ColumnType::Int(64),
            ),
            agg(
                AggFunc::ArgMin,
                vec![y.clone(), x.clone()],
                ColumnType::Int(64),
            ),
            only_positive,
            agg(AggFunc::Quantile, vec![x.clone()], ColumnType::Float64),
        ];
        let layout = Arc::new(GroupLayout::new(&[], &aggregates, None));
        let reference = ValuesLayout::new(&aggregates);
        for seed in 0..20u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut state = GroupState::new(layout.clone());
            let mut live: Vec<Row> = Vec::new();
            for step in 0..400 {
                let retract = !live.is_empty() && rng.random_range(0..3) == 0;
                let (row, diff) = if retract {
                    // Often the row holding the current minimum of x.
                    let at = if rng.random_bool(0.5) {
                        (0..live.len())
                            .min_by_key(|&i| live[i][0].clone())
                            .unwrap_or(0)
                    } else {
                        rng.random_range(0..live.len())
                    };
                    (live.swap_remove(at), -1)
                } else {
                    let row = vec![
                        Value::Int(rng.random_range(-50..50)),
                        Value::Int(rng.random_range(0..20)),
                        Value::Bool(rng.random_bool(0.5)),
                    ];
                    live.push(row.clone());
                    (row, 1)
                };
                state.apply(
                    (layout.accumulated.contribution(&row), layout.cells(&row)),
                    diff,
                );
                let mut got = Vec::new();
                state.output(&Vec::new(), &mut got);
                if live.is_empty() {
                    assert!(got.is_empty(), "seed {seed} step {step}: {got:?}");
                    assert!(state.is_empty());
                    continue;
                }
                let cut: Vec<Row> = live.iter().map(|r| reference.cut(r)).collect();
                let group: Vec<(&Row, isize)> = cut.iter().map(|r| (r, 1)).collect();
                let mut want = Vec::new();
                reference.finish(&group, &mut want);
                assert_eq!(got, vec![want], "seed {seed} step {step}");
            }
        }
    }

    /// Over an append-only input, extremes keep at most `EXTREME_KEPT` pairs and equal the
    /// whole-group evaluation at every completed time, whatever the order of a time's updates
    /// (a row's retraction may come before its insertion). Only deletes can make the state
    /// lose track, and then it says so instead of answering.
    #[test]
    fn bounded_extremes_equal_the_whole_group_evaluation_or_say_they_lost_track() {
        let (x, y) = (Expr::Column(0), Expr::Column(1));
        let aggregates = vec![
            agg(AggFunc::Count, vec![], ColumnType::UInt(64)),
            agg(AggFunc::Min, vec![x.clone()], ColumnType::Int(64)),
            agg(AggFunc::Max, vec![x.clone()], ColumnType::Int(64)),
            agg(
                AggFunc::ArgMin,
                vec![y.clone(), x.clone()],
                ColumnType::Int(64),
            ),
            agg(
                AggFunc::ArgMax,
                vec![y.clone(), x.clone()],
                ColumnType::Int(64),
            ),
        ];
        let layout = Arc::new(GroupLayout::new(&[], &aggregates, Some(Guard::for_tests())));
        let reference = ValuesLayout::new(&aggregates);
        let (mut lost_seeds, mut deleting_seeds) = (0, 0);
        for seed in 0..60u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let deletes = seed % 2 == 1;
            deleting_seeds += usize::from(deletes);
            let mut state = GroupState::new(layout.clone());
            let mut settled = GroupState::new(layout.clone());
            let mut live: Vec<Row> = Vec::new();
            for time in 0..60 {
                let mut updates: Vec<(Row, isize)> = Vec::new();
                for _ in 0..rng.random_range(1..40) {
                    let row = vec![
                        Value::Int(rng.random_range(-1000..1000)),
                        Value::Int(rng.random_range(0..5)),
                    ];
                    live.push(row.clone());
                    updates.push((row, 1));
                }
                // A row inserted and deleted within the time: the deletion may come first.
                if deletes && rng.random_bool(0.5) {
                    let row = vec![Value::Int(rng.random_range(-1200..1200)), Value::Int(9)];
                    updates.push((row.clone(), 1));
                    updates.push((row, -1));
                }
                if deletes && time % 4 == 3 {
                    // Delete the rows holding the smallest or largest x, as a range delete.
                    let by_x = |r: &Row| r[0].as_i64().unwrap_or(0);
                    live.sort_by_key(by_x);
                    let n = rng.random_range(0..live.len().min(4) + 1);
                    let gone: Vec<Row> = if rng.random_bool(0.5) {
                        live.drain(..n).collect()
                    } else {
                        live.drain(live.len() - n..).collect()
                    };
                    updates.extend(gone.into_iter().map(|r| (r, -1)));
                }
                // The same time's updates consolidated: a row inserted and deleted within the
                // time never reaches this state.
                let mut consolidated = updates.clone();
                differential_dataflow::consolidation::consolidate(&mut consolidated);
                for (row, diff) in consolidated {
                    settled.apply(
                        (layout.accumulated.contribution(&row), layout.cells(&row)),
                        diff,
                    );
                }
                settled.settle();
                updates.shuffle(&mut rng);
                for (row, diff) in updates {
                    state.apply(
                        (layout.accumulated.contribution(&row), layout.cells(&row)),
                        diff,
                    );
                }
                state.settle();
                for part in &state.parts {
                    if let PartState::Extreme(e) = part {
                        assert!(e.kept.len() <= EXTREME_KEPT, "seed {seed} time {time}");
                    }
                }
                let lost_track = |state: &GroupState| {
                    state
                        .parts
                        .iter()
                        .any(|p| matches!(p, PartState::Extreme(e) if e.result() == Err(LostTrack)))
                };
                let lost = lost_track(&state);
                // The order within a time never makes the state lose track.
                assert_eq!(lost, lost_track(&settled), "seed {seed} time {time}");
                if lost {
                    assert!(
                        deletes,
                        "seed {seed} time {time}: lost track without deletes"
                    );
                    lost_seeds += 1;
                    break;
                }
                let mut got = Vec::new();
                state.output(&Vec::new(), &mut got);
                if live.is_empty() {
                    assert!(got.is_empty(), "seed {seed} time {time}: {got:?}");
                    continue;
                }
                let cut: Vec<Row> = live.iter().map(|r| reference.cut(r)).collect();
                let group: Vec<(&Row, isize)> = cut.iter().map(|r| (r, 1)).collect();
                let mut want = Vec::new();
                reference.finish(&group, &mut want);
                assert_eq!(got, vec![want], "seed {seed} time {time}");
            }
        }
        // The deleting seeds exercise both outcomes: answers kept exact through deletes, and
        // deletes that removed every kept pair.
        assert!(
            lost_seeds > 0 && lost_seeds < deleting_seeds,
            "{lost_seeds} of {deleting_seeds}"
        );
    }

    /// A ranked multiset answers every k-th value and quantile as sorting its numbers does,
    /// through block splits and merges-by-removal, over numbers of both signs, zeros of both
    /// signs and repeats.
    #[test]
    fn ranked_numbers_answer_as_sorting_them() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut ranked = Ranked::default();
        let mut live: Vec<f64> = Vec::new();
        for step in 0..6000 {
            let remove = !live.is_empty() && rng.random_bool(if step < 4000 { 0.2 } else { 0.7 });
            if remove {
                let x = live.swap_remove(rng.random_range(0..live.len()));
                ranked.add(x, -1);
            } else {
                let x = match rng.random_range(0..10) {
                    0 => -0.0,
                    1 => 0.0,
                    2 => 1.5,
                    _ => rng.random_range(-2000..2000) as f64 / 4.0,
                };
                live.push(x);
                ranked.add(x, 1);
            }
            if step % 97 != 0 {
                continue;
            }
            let mut sorted = live.clone();
            sorted.sort_by(|a, b| a.total_cmp(b));
            assert_eq!(ranked.total, sorted.len() as i64);
            for k in [0, sorted.len() / 3, sorted.len().saturating_sub(1)] {
                assert_eq!(
                    ranked.nth(k as i64).map(f64::to_bits),
                    sorted.get(k).map(|x| x.to_bits()),
                    "step {step} k {k}"
                );
            }
            for p in [0.0, 0.25, 0.5, 0.9, 0.99, 1.0] {
                let want = match crate::values::quantile(&mut sorted.clone(), p) {
                    Value::Float(F64(q)) if !sorted.is_empty() => Some(q.to_bits()),
                    _ => None,
                };
                assert_eq!(
                    ranked.quantile(p).map(f64::to_bits),
                    want,
                    "step {step} p {p}"
                );
            }
        }
        assert!(ranked.blocks.len() > 1, "the blocks split");
    }
}
