//! The equi-join of two arrangements that stops as soon as its view fails or is dropped.
//!
//! Differential's own join makes every pair of one key's values in a single pass and counts
//! its fuel in output records only. A key matched by many rows on both sides (a `CROSS JOIN`
//! has one key) therefore holds the worker until all its pairs are made, even when the join's
//! closure makes nothing: the view was dropped (its query timed out, its client left), but
//! the worker frees a dataflow only between steps, so every other view on that worker waits
//! too. This join walks the same pairs, but looks at its view's [`Guard`] between keys and
//! every [`PAIRS_PER_CHECK`] pairs: once the view failed (a panic, its row budget spent) or
//! was dropped, it makes nothing more and ends, and the worker gets on with the drop.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use differential_dataflow::consolidation::{consolidate_updates, ConsolidatingContainerBuilder};
use differential_dataflow::operators::arrange::Arranged;
use differential_dataflow::operators::join::{join_with_tactic, Fresh, JoinTactic};
use differential_dataflow::trace::cursor::cursor_list;
use differential_dataflow::trace::{Cursor, Navigable, TraceReader};
use differential_dataflow::{AsCollection, VecCollection};
use petrel_value::Row;
use timely::container::{ContainerBuilder, PushInto};

use crate::guard::Guard;

/// How many pairs the join makes between two looks at its view's guard: small enough that a
/// dropped view's join ends within microseconds, large enough that the look costs nothing.
const PAIRS_PER_CHECK: usize = 4096;

/// The rows of the join's output, consolidated per container as differential's join does.
type Output = Vec<(Row, u64, isize)>;
type Builder = ConsolidatingContainerBuilder<Output>;

/// Joins `left` and `right` on their keys: `logic` makes the output row of each matched pair
/// (or none), at the later of the pair's times and with the product of their multiplicities.
pub(crate) fn join_stopping<'s, Tr1, Tr2, L>(
    left: Arranged<'s, Tr1>,
    right: Arranged<'s, Tr2>,
    guard: Guard,
    logic: L,
) -> VecCollection<'s, u64, Row, isize>
where
    Tr1: TraceReader<Time = u64, Batch: Navigable> + 'static,
    Tr2: TraceReader<Time = u64, Batch: Navigable> + 'static,
    <Tr1::Batch as Navigable>::Cursor: Cursor<Time = u64, Diff = isize>,
    <Tr2::Batch as Navigable>::Cursor: for<'a> Cursor<
        Key<'a> = <<Tr1::Batch as Navigable>::Cursor as Cursor>::Key<'a>,
        Time = u64,
        Diff = isize,
    >,
    L: for<'a> FnMut(
            <<Tr1::Batch as Navigable>::Cursor as Cursor>::Key<'a>,
            <<Tr1::Batch as Navigable>::Cursor as Cursor>::Val<'a>,
            <<Tr2::Batch as Navigable>::Cursor as Cursor>::Val<'a>,
        ) -> Option<Row>
        + 'static,
{
    let tactic = Stopping {
        logic: Rc::new(RefCell::new(logic)),
        guard,
    };
    join_with_tactic(left, right, "JoinStopping", tactic).as_collection()
}

/// The join's way through each pair of batch lists: all pairs of each common key, in key
/// order, with a look at the guard between keys and every few thousand pairs.
struct Stopping<L> {
    logic: Rc<RefCell<L>>,
    guard: Guard,
}

impl<B0, B1, L> JoinTactic<u64, B0, B1, Output> for Stopping<L>
where
    B0: Navigable + 'static,
    B1: Navigable + 'static,
    B0::Cursor: Cursor<Time = u64, Diff = isize>,
    B1::Cursor: for<'a> Cursor<Key<'a> = <B0::Cursor as Cursor>::Key<'a>, Time = u64, Diff = isize>,
    L: for<'a> FnMut(
            <B0::Cursor as Cursor>::Key<'a>,
            <B0::Cursor as Cursor>::Val<'a>,
            <B1::Cursor as Cursor>::Val<'a>,
        ) -> Option<Row>
        + 'static,
{
    fn prep(
        &mut self,
        input0: Vec<B0>,
        input1: Vec<B1>,
        fresh: Fresh,
        meet: u64,
    ) -> Box<dyn Iterator<Item = Output>> {
        let (cursor0, storage0) = cursor_list(input0);
        let (cursor1, storage1) = cursor_list(input1);
        // The side that did not bring the fresh batch is the accumulated trace: its times
        // before `meet` can be advanced to it (no output time is earlier), which consolidates
        // its history before the pairs are made, as differential's join does.
        let (advance0, advance1) = match fresh {
            Fresh::Input0 => (None, Some(meet)),
            Fresh::Input1 => (Some(meet), None),
        };
        Box::new(Pairs {
            cursor0,
            storage0,
            cursor1,
            storage1,
            advance0,
            advance1,
            logic: self.logic.clone(),
            guard: self.guard.clone(),
            builder: Builder::default(),
            ready: VecDeque::new(),
            done: false,
        })
    }
}

/// One unit of the join's work: the pairs of two batch lists, made a container at a time.
struct Pairs<C0: Cursor, C1: Cursor, L> {
    cursor0: C0,
    storage0: C0::Storage,
    cursor1: C1,
    storage1: C1::Storage,
    advance0: Option<u64>,
    advance1: Option<u64>,
    logic: Rc<RefCell<L>>,
    guard: Guard,
    builder: Builder,
    ready: VecDeque<Output>,
    done: bool,
}

impl<C0, C1, L> Iterator for Pairs<C0, C1, L>
where
    C0: Cursor<Time = u64, Diff = isize>,
    C1: for<'a> Cursor<Key<'a> = C0::Key<'a>, Time = u64, Diff = isize>,
    L: for<'a> FnMut(C0::Key<'a>, C0::Val<'a>, C1::Val<'a>) -> Option<Row>,
{
    type Item = Output;

    fn next(&mut self) -> Option<Output> {
        if let Some(container) = self.ready.pop_front() {
            return Some(container);
        }
        if self.done {
            return None;
        }
        let (storage0, storage1) = (&self.storage0, &self.storage1);
        let (cursor0, cursor1) = (&mut self.cursor0, &mut self.cursor1);
        let mut logic = self.logic.borrow_mut();
        let mut edits0 = Vec::new();
        let mut edits1 = Vec::new();
        let mut stopped = false;
        while self.ready.is_empty() && !stopped {
            if self.guard.stopped() {
                stopped = true;
                break;
            }
            let (Some(key0), Some(key1)) = (cursor0.get_key(storage0), cursor1.get_key(storage1))
            else {
                self.done = true;
                while let Some(container) = self.builder.finish() {
                    self.ready.push_back(std::mem::take(container));
                }
                break;
            };
            match key0.cmp(&key1) {
                std::cmp::Ordering::Less => cursor0.seek_key(storage0, key1),
                std::cmp::Ordering::Greater => cursor1.seek_key(storage1, key0),
                std::cmp::Ordering::Equal => {
                    load(&mut edits0, cursor0, storage0, self.advance0);
                    load(&mut edits1, cursor1, storage1, self.advance1);
                    let (builder, guard) = (&mut self.builder, &self.guard);
                    let made_all = pairs(
                        &mut edits0,
                        &mut edits1,
                        |val0, val1, time, diff| {
                            if let Some(row) = (*logic)(key0, val0, val1) {
                                builder.push_into((row, time, diff));
                            }
                        },
                        || guard.stopped(),
                    );
                    if !made_all {
                        stopped = true;
                        break;
                    }
                    cursor0.step_key(storage0);
                    cursor1.step_key(storage1);
                    while let Some(container) = self.builder.extract() {
                        self.ready.push_back(std::mem::take(container));
                    }
                }
            }
        }
        if stopped {
            // Nothing made for a failed or dropped view is read: end at once.
            self.done = true;
            self.ready.clear();
            return None;
        }
        self.ready.pop_front()
    }
}

/// Makes the pairs of one key's edits: `pair(val0, val1, time, diff)` for each, at the later
/// of the two times with the product of the multiplicities. Few edits on either side: every
/// edit with every edit. Many on both: in time order, each edit paired with the other side's
/// values live at that time, so an insert and its later retraction cancel before any pair is
/// made (a key updated many times costs edits × live rows, not edits × edits), as
/// differential's own join does. Looks at `stop` every [`PAIRS_PER_CHECK`] pairs; false if
/// it said to stop.
fn pairs<V0: Copy + Ord, V1: Copy + Ord>(
    edits0: &mut [(V0, u64, isize)],
    edits1: &mut [(V1, u64, isize)],
    mut pair: impl FnMut(V0, V1, u64, isize),
    stop: impl Fn() -> bool,
) -> bool {
    let mut made = 0usize;
    let mut count = || {
        made += 1;
        !(made.is_multiple_of(PAIRS_PER_CHECK) && stop())
    };
    if edits0.len() < TIME_ORDER_MIN_EDITS || edits1.len() < TIME_ORDER_MIN_EDITS {
        for &(val0, time0, diff0) in edits0.iter() {
            for &(val1, time1, diff1) in edits1.iter() {
                pair(val0, val1, time0.max(time1), diff0 * diff1);
                if !count() {
                    return false;
                }
            }
        }
        return true;
    }
    edits0.sort_by_key(|e| e.1);
    edits1.sort_by_key(|e| e.1);
    let mut live0: BTreeMap<V0, isize> = BTreeMap::new();
    let mut live1: BTreeMap<V1, isize> = BTreeMap::new();
    let mut emit = |val0, val1, time, diff| {
        pair(val0, val1, time, diff);
        count()
    };
    let (mut i, mut j) = (0, 0);
    while i < edits0.len() || j < edits1.len() {
        // Side 0 first at equal times: each pair is made once, when the later of its two
        // edits comes, and then at that edit's time.
        let made_all = if j == edits1.len() || (i < edits0.len() && edits0[i].1 <= edits1[j].1) {
            i += 1;
            meet(edits0[i - 1], &live1, &mut live0, &mut emit)
        } else {
            j += 1;
            meet(edits1[j - 1], &live0, &mut live1, |v1, v0, t, d| {
                emit(v0, v1, t, d)
            })
        };
        if !made_all {
            return false;
        }
    }
    true
}

/// One edit of one side in the walk: paired with each of the other side's live values at
/// the edit's time (`emit` answers false to stop), then added to its own side's live values.
fn meet<A: Copy + Ord, B: Copy>(
    (val, time, diff): (A, u64, isize),
    others: &BTreeMap<B, isize>,
    own: &mut BTreeMap<A, isize>,
    mut emit: impl FnMut(A, B, u64, isize) -> bool,
) -> bool {
    for (&other, &other_diff) in others {
        if !emit(val, other, time, diff * other_diff) {
            return false;
        }
    }
    add_live(own, val, diff);
    true
}

/// From how many edits on each side [`pairs`] walks them in time order.
const TIME_ORDER_MIN_EDITS: usize = 10;

/// Adds `diff` to a value's live multiplicity, forgetting it at zero.
fn add_live<V: Copy + Ord>(live: &mut BTreeMap<V, isize>, val: V, diff: isize) {
    let count = live.entry(val).or_insert(0);
    *count += diff;
    if *count == 0 {
        live.remove(&val);
    }
}

/// The current key's values with their times and multiplicities, each time advanced to
/// `advance` (when given) and the result consolidated.
fn load<'a, C>(
    edits: &mut Vec<(C::Val<'a>, u64, isize)>,
    cursor: &mut C,
    storage: &'a C::Storage,
    advance: Option<u64>,
) where
    C: Cursor<Time = u64, Diff = isize>,
{
    edits.clear();
    while let Some(val) = cursor.get_val(storage) {
        cursor.map_times(storage, |time, diff| {
            let time = C::owned_time(time);
            edits.push((
                val,
                advance.map_or(time, |at| time.max(at)),
                C::owned_diff(diff),
            ));
        });
        cursor.step_val(storage);
    }
    if advance.is_some() {
        consolidate_updates(edits);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use differential_dataflow::consolidation::consolidate_updates;
    use differential_dataflow::input::Input;
    use petrel_value::Value;
    use petrel_view::{KeyColumns, View};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    type Keyed = ((Row, Row), u64, isize);
    type Update = (Row, u64, isize);

    fn guard(dropped: &Arc<AtomicBool>) -> Guard {
        Guard::new(
            View::new(Vec::new(), KeyColumns(Vec::new()), 0),
            None,
            Arc::new(AtomicBool::new(false)),
            dropped.clone(),
        )
    }

    /// Joins `left` and `right` (updates fed in time order, the dataflow stepped after each
    /// time or only at the end) with `join_stopping` and with differential's own join;
    /// returns both outputs.
    fn both_joins(
        left: Vec<Keyed>,
        right: Vec<Keyed>,
        step_each_time: bool,
        guard: Guard,
        on_pair: impl Fn() + Send + Sync + 'static,
    ) -> (Vec<Update>, Vec<Update>) {
        let ours = Arc::new(Mutex::new(Vec::new()));
        let theirs = Arc::new(Mutex::new(Vec::new()));
        let (o, t) = (ours.clone(), theirs.clone());
        timely::execute_directly(move |worker| {
            let (mut l, mut r) = worker.dataflow::<u64, _, _>(|scope| {
                let (l_in, l) = scope.new_collection::<(Row, Row), isize>();
                let (r_in, r) = scope.new_collection::<(Row, Row), isize>();
                let (la, ra) = (l.arrange_by_key(), r.arrange_by_key());
                let concat = |_k: &Row, a: &Row, b: &Row| {
                    let mut row = a.clone();
                    row.extend(b.iter().cloned());
                    row
                };
                let o = o.clone();
                join_stopping(la.clone(), ra.clone(), guard.clone(), move |k, a, b| {
                    on_pair();
                    Some(concat(k, a, b))
                })
                .inspect(move |u| o.lock().unwrap().push(u.clone()));
                let t = t.clone();
                la.join_core(ra, move |k, a: &Row, b: &Row| Some(concat(k, a, b)))
                    .inspect(move |u| t.lock().unwrap().push(u.clone()));
                (l_in, r_in)
            });
            let mut times: Vec<u64> = left.iter().chain(&right).map(|u| u.1).collect();
            times.sort_unstable();
            times.dedup();
            for time in times {
                l.advance_to(time);
                r.advance_to(time);
                for (row, _, diff) in left.iter().filter(|u| u.1 == time) {
                    l.update(row.clone(), *diff);
                }
                for (row, _, diff) in right.iter().filter(|u| u.1 == time) {
                    r.update(row.clone(), *diff);
                }
                l.flush();
                r.flush();
                if step_each_time {
                    worker.step_while(|| l.time() < &time);
                }
            }
            l.close();
            r.close();
        });
        let take = |v: Arc<Mutex<Vec<_>>>| std::mem::take(&mut *v.lock().unwrap());
        (take(ours), take(theirs))
    }

    /// The collection `updates` describe at `time`.
    fn at(updates: &[Update], time: u64) -> Vec<(Row, isize)> {
        let mut rows: Vec<Update> = updates
            .iter()
            .filter(|u| u.1 <= time)
            .map(|(r, _, d)| (r.clone(), 0, *d))
            .collect();
        consolidate_updates(&mut rows);
        rows.into_iter().map(|(r, _, d)| (r, d)).collect()
    }

    fn keyed(key: i64, val: i64, time: u64, diff: isize) -> Keyed {
        ((vec![Value::Int(key)], vec![Value::Int(val)]), time, diff)
    }

    /// A seeded stream of inserts and retractions over 16 skewed keys and 40 times, per side
    /// (the busiest keys gather dozens of edits per side: enough for the walk in time order).
    fn random_sides() -> [Vec<Keyed>; 2] {
        let mut rng = StdRng::seed_from_u64(7);
        let mut sides: [Vec<Keyed>; 2] = [Vec::new(), Vec::new()];
        for time in 1..=40u64 {
            for side in &mut sides {
                for _ in 0..rng.random_range(0..12) {
                    let key = rng.random_range(0..16).min(rng.random_range(0..16));
                    let val = rng.random_range(0..5);
                    side.push(keyed(key, val, time, 1));
                }
                // Retract an earlier insert now and then.
                if rng.random_ratio(1, 3) && !side.is_empty() {
                    let i = rng.random_range(0..side.len());
                    let ((k, v), _, d) = side[i].clone();
                    side.push(((k, v), time, -d));
                }
            }
        }
        sides
    }

    #[test]
    fn the_join_equals_differentials_at_every_time_over_inserts_and_retractions() {
        // Stepped after each time (few edits per batch: every edit with every edit) and only
        // at the end (each side's batch holds every time: the walk in time order).
        for step_each_time in [true, false] {
            let [left, right] = random_sides();
            let dropped = Arc::new(AtomicBool::new(false));
            let (ours, theirs) = both_joins(left, right, step_each_time, guard(&dropped), || {});
            assert!(!ours.is_empty());
            for time in 1..=40 {
                assert_eq!(
                    at(&ours, time),
                    at(&theirs, time),
                    "at time {time}, stepped each time: {step_each_time}"
                );
            }
        }
    }

    #[test]
    fn a_key_updated_many_times_costs_its_live_rows_not_its_edits() {
        // One key, one batch per side: 200 rows on the left and 100 on the right, each
        // inserted and retracted before the next comes (at most one live per side). Every
        // edit with every edit would be 400 x 200 pairs; in time order each edit meets the
        // other side's one live row at most.
        let mut left = Vec::new();
        for v in 0..200u64 {
            left.push(keyed(1, v as i64, 4 * v + 1, 1));
            left.push(keyed(1, v as i64, 4 * v + 3, -1));
        }
        let mut right = Vec::new();
        for w in 0..100u64 {
            right.push(keyed(1, w as i64, 4 * w + 2, 1));
            right.push(keyed(1, w as i64, 4 * w + 4, -1));
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let pairs = Arc::new(AtomicUsize::new(0));
        let count = pairs.clone();
        let (ours, theirs) = both_joins(left, right, false, guard(&dropped), move || {
            count.fetch_add(1, Ordering::Relaxed);
        });
        let pairs = pairs.load(Ordering::Relaxed);
        assert!(pairs <= 600, "{pairs} pairs made");
        assert!(!ours.is_empty());
        for time in 1..=800 {
            assert_eq!(at(&ours, time), at(&theirs, time), "at time {time}");
        }
    }

    #[test]
    fn a_dropped_view_stops_its_join_within_one_check_of_pairs() {
        // One key matched by 3,000 rows on each side: 9M pairs. The view is dropped while the
        // first pairs are made; the join makes at most one more check's worth.
        let left = (0..3000).map(|v| keyed(1, v, 1, 1)).collect();
        let right = (0..3000).map(|v| keyed(1, v, 1, 1)).collect();
        let dropped = Arc::new(AtomicBool::new(false));
        let pairs = Arc::new(AtomicUsize::new(0));
        let (flag, count) = (dropped.clone(), pairs.clone());
        let (ours, theirs) = both_joins(left, right, true, guard(&dropped), move || {
            if count.fetch_add(1, Ordering::Relaxed) == 10 {
                flag.store(true, Ordering::Relaxed);
            }
        });
        let pairs = pairs.load(Ordering::Relaxed);
        assert!(pairs <= PAIRS_PER_CHECK, "{pairs} pairs made");
        assert!(ours.is_empty(), "a dropped view's join sends nothing");
        assert_eq!(theirs.len(), 9_000_000);
    }
}
