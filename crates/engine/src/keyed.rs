//! Per-key state maintained in time order: the operator behind GROUP BY and top-k.
//!
//! Petrel's timestamps are totally ordered milliseconds, so a key's result at time `t` is a
//! fold of the key's updates up to `t`. This operator exchanges updates by key, holds them
//! until the input frontier passes their time, applies each complete time's updates to the
//! key's state in time order, and emits, for every key the time touched, the retraction of
//! the key's old output rows and the insertion of its new ones (consolidated). The work per
//! time is proportional to the updates and the touched keys' outputs, never to the keys'
//! whole history: there is no arrangement to merge and no group to re-read, only a hash
//! table of small states (accumulators, ordered maps of distinct values, ordered rows).

use std::collections::hash_map::Entry;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, ExchangeData, VecCollection};
use petrel_value::Row;
use rustc_hash::FxHashMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use crate::render::Rows;

/// One key's state: updates fold into it, and it says what rows the key outputs.
pub trait KeyedState: 'static {
    /// What one input record carries for the key.
    type Update: ExchangeData;
    /// Applies `update` with multiplicity `diff` (negative for retractions).
    fn apply(&mut self, update: Self::Update, diff: isize);
    /// Appends the key's output rows (none when the key has no result).
    fn output(&self, key: &Row, out: &mut Vec<Row>);
    /// True when the state holds nothing, so the key can be forgotten.
    fn is_empty(&self) -> bool;
}

/// Updates waiting for their time to complete, by time, with a capability to emit at it.
type Pending<U> = BTreeMap<u64, (Capability<u64>, Vec<((Row, U), isize)>)>;

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
    fresh: F,
) -> Rows<'s>
where
    S: KeyedState,
    F: Fn() -> S + 'static,
{
    let pact = Exchange::new(|(d, _, _): &((Row, S::Update), u64, isize)| route(&d.0));
    input
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<(Row, u64, isize)>>, _, _, _>(
            pact,
            "FoldByKey",
            move |_, _| {
                let mut pending: Pending<S::Update> = BTreeMap::new();
                let mut states: FxHashMap<Row, S> = FxHashMap::default();
                let mut before: FxHashMap<Row, Vec<Row>> = FxHashMap::default();
                let mut changes: Vec<(Row, isize)> = Vec::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        // A container's updates mostly share one time: look the time up
                        // once per run of equal times, not once per update.
                        let mut drained = data.drain(..).peekable();
                        while let Some((d, t, r)) = drained.next() {
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
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let time = *entry.key();
                        let (cap, updates) = entry.remove();
                        for ((key, update), diff) in updates {
                            let state = match states.get_mut(&key) {
                                Some(state) => state,
                                None => states.entry(key.clone()).or_insert_with(&fresh),
                            };
                            if let Entry::Vacant(e) = before.entry(key) {
                                let mut rows = Vec::new();
                                state.output(e.key(), &mut rows);
                                e.insert(rows);
                            }
                            state.apply(update, diff);
                        }
                        let mut session = output.session(&cap);
                        for (key, old) in before.drain() {
                            changes.extend(old.into_iter().map(|r| (r, -1)));
                            if let Some(state) = states.get(&key) {
                                let mut rows = Vec::new();
                                state.output(&key, &mut rows);
                                changes.extend(rows.into_iter().map(|r| (r, 1)));
                                if state.is_empty() {
                                    states.remove(&key);
                                }
                            }
                            consolidate(&mut changes);
                            for (row, diff) in changes.drain(..) {
                                session.give((row, time, diff));
                            }
                        }
                    }
                }
            },
        )
        .as_collection()
}
