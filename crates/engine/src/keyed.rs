//! Per-key state maintained in time order: the operator behind GROUP BY and top-k.
//!
//! Petrel's timestamps are totally ordered milliseconds, so a key's result at time `t` is a
//! fold of the key's updates up to `t`. This operator exchanges updates by key and applies
//! them to the key's state in time order: updates at the input frontier's own time are folded
//! as they arrive (that time is the next to complete), later ones wait for their time. When
//! a time completes, it emits, for every key the time touched, the retraction of the key's
//! old output rows and the insertion of its new ones (consolidated). The work per
//! time is proportional to the updates and the touched keys' outputs, never to the keys'
//! whole history: there is no arrangement to merge and no group to re-read, only a hash
//! table of small states (accumulators, ordered maps of distinct values, ordered rows).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, ExchangeData, VecCollection};
use hashbrown::hash_table::{self, HashTable};
use petrel_value::{Row, Value};
use smallvec::SmallVec;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Capability;

use crate::guard::Guard;
use crate::render::Rows;

/// One key's state: updates fold into it, and it says what rows the key outputs.
pub trait KeyedState: 'static {
    /// What one input record carries for the key.
    type Update: ExchangeData;
    /// Applies `update` with multiplicity `diff` (negative for retractions).
    fn apply(&mut self, update: Self::Update, diff: isize);
    /// When the state knows exactly how applying `update` changes its output rows, applies
    /// it and appends that change to `delta`, so the key's output is never re-read (a top-k
    /// whose window holds all its rows). Otherwise applies nothing and gives `update` back.
    fn apply_delta(
        &mut self,
        update: Self::Update,
        _diff: isize,
        _delta: &mut Vec<(Row, isize)>,
    ) -> Result<(), Self::Update> {
        Err(update)
    }
    /// A time the key's updates came at is complete: every update of it was applied, so
    /// the state's multiplicities are the rows' own (none negative) and it may compact.
    fn settle(&mut self) {}
    /// Appends the key's output rows (none when the key has no result).
    fn output(&self, key: &[Value], out: &mut Vec<Row>);
    /// True when the state holds nothing, so the key can be forgotten.
    fn is_empty(&self) -> bool;
}

/// An update with its key and the key's hash ([`route`]), computed once: the exchange sends
/// it by the hash, and the fold finds the key's state by it.
type Routed<U> = (u64, Row, U);

/// Updates waiting for their time to complete, by time, with a capability to emit at it.
type Pending<U> = BTreeMap<u64, (Capability<u64>, Vec<(Routed<U>, isize)>)>;

/// How a key touched in the time being folded will say what changed.
enum Touched {
    /// Its output rows' changes so far, as its state reported them.
    Delta(Vec<(Row, isize)>),
    /// Its output rows before the time, `len` of them from `start` in [`States::before`]:
    /// the new ones are diffed against them.
    Before { start: usize, len: usize },
}

/// A key as its slot keeps it: up to two values inline (the usual `GROUP BY a, b`), so a
/// probe that finds the key's slot compares its values there, without a second cache miss
/// behind a pointer.
pub(crate) type Key = SmallVec<[Value; 2]>;

/// A key's entry in [`States::slots`]: its hash, the key, its slot.
pub(crate) type Entry<S> = (u64, Key, Slot<S>);

/// One key's state, and, when the time being folded touched the key, its place in
/// [`States::touched`] plus one (0: not touched). What the time changed in the key's output is
/// kept there, not in the slot: the slot is copied each time its table grows, and most keys
/// are not touched by a given time.
pub(crate) struct Slot<S> {
    state: S,
    touched: usize,
}

/// Keys' states in a hash table, and the keys the time being folded touched (in first-touch
/// order, by hash): an update hashes its key once, and draining a time finds each touched key
/// by its hash and its place in `touched`, without hashing, comparing or cloning keys again.
struct States<S> {
    /// Each key with its hash: the table rehashes as it grows by the stored hash, without
    /// hashing each key's values again (reading them behind their pointer, a cache miss
    /// each), and a probe compares keys only where the hashes are equal.
    slots: HashTable<Entry<S>>,
    /// Each touched key's hash and what the time changed in its output so far.
    touched: Vec<(u64, Touched)>,
    /// The touched keys' output rows before the time, one run per key: one vector for the
    /// time, not one per key.
    before: Vec<Row>,
    /// A key's output rows after the time, while its changes are made.
    after: Vec<Row>,
}

impl<S: KeyedState> States<S> {
    fn new() -> Self {
        States {
            slots: HashTable::new(),
            touched: Vec::new(),
            before: Vec::new(),
            after: Vec::new(),
        }
    }

    fn clear(&mut self) {
        self.slots.clear();
        self.touched.clear();
        self.before.clear();
    }

    /// Folds one update into its key's state, keeping what the time changed in its output:
    /// the state's own delta when it can give one, else its output rows before the time.
    fn fold(
        &mut self,
        fresh: &impl Fn() -> S,
        (hash, key, update): Routed<S::Update>,
        diff: isize,
    ) {
        let States {
            slots,
            touched,
            before,
            ..
        } = self;
        let entry = match slots.entry(hash, |(h, k, _)| *h == hash && **k == *key, |e| e.0) {
            hash_table::Entry::Occupied(o) => o.into_mut(),
            hash_table::Entry::Vacant(v) => v
                .insert((
                    hash,
                    Key::from_vec(key),
                    Slot {
                        state: fresh(),
                        touched: 0,
                    },
                ))
                .into_mut(),
        };
        let (key, slot) = (&entry.1, &mut entry.2);
        let update = match slot.touched.checked_sub(1).and_then(|i| touched.get_mut(i)) {
            Some((_, change)) => match change {
                Touched::Before { .. } => update,
                Touched::Delta(delta) => match slot.state.apply_delta(update, diff, delta) {
                    Ok(()) => return,
                    Err(update) => {
                        // The output before the time: the output now, less the delta so far.
                        let delta = std::mem::take(delta);
                        let mut rows = Vec::new();
                        slot.state.output(key, &mut rows);
                        let mut was: Vec<(Row, isize)> = rows.into_iter().map(|r| (r, 1)).collect();
                        was.extend(delta.into_iter().map(|(r, n)| (r, -n)));
                        consolidate(&mut was);
                        let start = before.len();
                        before.extend(
                            was.into_iter()
                                .flat_map(|(r, n)| std::iter::repeat_n(r, n.max(0) as usize)),
                        );
                        let len = before.len() - start;
                        *change = Touched::Before { start, len };
                        update
                    }
                },
            },
            None => {
                let mut delta = Vec::new();
                match slot.state.apply_delta(update, diff, &mut delta) {
                    Ok(()) => {
                        touched.push((hash, Touched::Delta(delta)));
                        slot.touched = touched.len();
                        return;
                    }
                    Err(update) => {
                        let start = before.len();
                        slot.state.output(key, before);
                        let len = before.len() - start;
                        touched.push((hash, Touched::Before { start, len }));
                        slot.touched = touched.len();
                        update
                    }
                }
            }
        };
        slot.state.apply(update, diff);
    }

    /// Appends, for every key the time touched, its output's changes (consolidated per key),
    /// and forgets the keys whose state is empty.
    fn drain_changes(&mut self, mut emit: impl FnMut(&mut Vec<(Row, isize)>)) {
        let States {
            slots,
            touched,
            before,
            after,
        } = self;
        let mut changes: Vec<(Row, isize)> = Vec::new();
        for (index, (hash, change)) in touched.drain(..).enumerate() {
            // The touched key with this hash is the one that recorded this place.
            let is_it = |(_, _, slot): &Entry<S>| slot.touched == index + 1;
            let Ok(mut found) = slots.find_entry(hash, is_it) else {
                continue;
            };
            let (_, key, slot) = found.get_mut();
            slot.touched = 0;
            match change {
                Touched::Delta(delta) => changes.extend(delta),
                Touched::Before { start, len } => {
                    slot.state.settle();
                    // Each key's run is taken once: the rows move out, leaving empty ones.
                    let old = before[start..start + len].iter_mut().map(std::mem::take);
                    changes.extend(old.map(|r| (r, -1)));
                    slot.state.output(key, after);
                    changes.extend(after.drain(..).map(|r| (r, 1)));
                }
            }
            if slot.state.is_empty() {
                found.remove();
            }
            consolidate(&mut changes);
            emit(&mut changes);
            changes.clear();
        }
        before.clear();
    }
}

/// A key's worker: a hash that is the same on every worker and in every process.
fn route(key: &Row) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    key.hash(&mut h);
    h.finish()
}

/// Folds `input`'s updates into one state per key (made by `fresh`), in time order, and
/// outputs each key's rows as they change.
pub fn fold_by_key<'s, S, F>(
    input: VecCollection<'s, u64, (Row, S::Update), isize>,
    guard: Guard,
    fresh: F,
) -> Rows<'s>
where
    S: KeyedState,
    F: Fn() -> S + 'static,
{
    let pact = Exchange::new(|(d, _, _): &(Routed<S::Update>, u64, isize)| d.0);
    input
        .inner
        .map(|((key, update), time, diff)| ((route(&key), key, update), time, diff))
        .unary_frontier::<CapacityContainerBuilder<Vec<(Row, u64, isize)>>, _, _, _>(
            pact,
            "FoldByKey",
            move |_, _| {
                let mut pending: Pending<S::Update> = BTreeMap::new();
                let mut states: States<S> = States::new();
                // The time being folded early, if any (see below), with a capability for it.
                let mut early: Option<(u64, Capability<u64>)> = None;
                move |(input, frontier), output| {
                    // A failed or dropped view's fold holds nothing back: its input is dropped
                    // and its capabilities released, so the dataflow goes quiet.
                    if guard.stopped() {
                        input.for_each(|_, data| data.clear());
                        pending.clear();
                        early = None;
                        states.clear();
                        return;
                    }
                    let _ = guard.run(|| {
                        // The input frontier's time: no update before it can arrive any more.
                        let at = frontier.frontier().first().copied();
                        input.for_each(|cap, data| {
                            // A container's updates mostly share one time: look the time up
                            // once per run of equal times, not once per update.
                            let mut drained = data.drain(..).peekable();
                            while let Some((d, t, r)) = drained.next() {
                                // Updates at the frontier's own time, with nothing earlier still
                                // pending, are folded as they come: their time is the next to
                                // complete, so the fold's order stays the times' order, and a
                                // large time (a replay) costs its state, not a buffer of updates.
                                let first_pending = pending.first_key_value().map(|(k, _)| *k);
                                let foldable = at == Some(t)
                                    && first_pending.is_none_or(|k| k >= t)
                                    && early.as_ref().is_none_or(|(e, _)| *e == t);
                                if foldable {
                                    if early.is_none() {
                                        early = Some((t, cap.delayed(&t, 0)));
                                    }
                                    states.fold(&fresh, d, r);
                                    while let Some((d, _, r)) =
                                        drained.next_if(|(_, t2, _)| *t2 == t)
                                    {
                                        states.fold(&fresh, d, r);
                                    }
                                    continue;
                                }
                                let (_, updates) = pending
                                    .entry(t)
                                    .or_insert_with(|| (cap.delayed(&t, 0), Vec::new()));
                                updates.reserve(drained.size_hint().0 + 1);
                                updates.push((d, r));
                                while let Some((d, _, r)) = drained.next_if(|(_, t2, _)| *t2 == t) {
                                    updates.push((d, r));
                                }
                            }
                        });
                        // Complete times, in order: the early one (always the earliest), then the
                        // pending ones.
                        loop {
                            let next = match (&early, pending.first_key_value()) {
                                (Some((t, _)), _) => *t,
                                (None, Some((t, _))) => *t,
                                (None, None) => break,
                            };
                            if frontier.less_equal(&next) {
                                break;
                            }
                            let cap = match early.take() {
                                Some((_, cap)) => cap,
                                None => match pending.pop_first() {
                                    Some((_, (cap, updates))) => {
                                        for (d, r) in updates {
                                            states.fold(&fresh, d, r);
                                        }
                                        cap
                                    }
                                    None => break,
                                },
                            };
                            // Updates at the same time that arrived before it was foldable.
                            if pending.first_key_value().is_some_and(|(t, _)| *t == next) {
                                if let Some((_, (_, updates))) = pending.pop_first() {
                                    for (d, r) in updates {
                                        states.fold(&fresh, d, r);
                                    }
                                }
                            }
                            let mut session = output.session(&cap);
                            states.drain_changes(|changes| {
                                for (row, diff) in changes.drain(..) {
                                    session.give((row, next, diff));
                                }
                            });
                        }
                    });
                }
            },
        )
        .as_collection()
}
