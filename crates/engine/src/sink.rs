//! The view sink: gathers a view's output on one worker and publishes consolidated change
//! batches each time the output's frontier advances. Large batches are consolidated and
//! folded into the view on every core (the view's keys are sharded), not on that worker alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use petrel_value::Row;
use petrel_view::{ChangeBatch, View};
use timely::communication::Push;
use timely::dataflow::channels::pact::DistributorPact;
use timely::dataflow::channels::pushers::exchange::Distributor;
use timely::dataflow::channels::Message;
use timely::dataflow::operators::generic::Operator;
use timely::progress::Stamp;

use crate::guard::Guard;
use crate::render::Rows;

/// A container of a view's output: changes with their times.
type Container = Vec<(Row, u64, isize)>;

/// Sends all of `output` to worker 0, which publishes into `view` (`publisher` is true there).
/// A failure while folding into the view (its ORDER BY is evaluated there) fails the view.
/// `consolidated`: the output's changes of a time never hold a row twice
/// ([`crate::render::emits_consolidated`]), so they go to the view as they are.
pub(crate) fn publish(
    output: Rows<'_>,
    view: Arc<View>,
    guard: Guard,
    (publisher, consolidated): (bool, bool),
) {
    // Updates not yet complete, by time, in the containers they came in: a frontier advance
    // splits off the complete ones without touching the rest (a replay can hold many times at
    // once), and each time's changes are copied once, into a vector of their exact size (grown
    // change by change, a time's vector was copied again at each doubling).
    let mut pending: BTreeMap<u64, Vec<Container>> = BTreeMap::new();
    let mut lower: u64 = 0;
    output.inner.sink(
        DistributorPact(|_peers: usize| ToPublisher),
        "ViewSink",
        move |(input, frontier)| {
            input.for_each(|_, data| {
                // A fold's container holds one time's changes: it is kept whole.
                if let Some(&(_, time, _)) = data.first() {
                    if data.iter().all(|(_, t, _)| *t == time) {
                        pending.entry(time).or_default().push(std::mem::take(data));
                        return;
                    }
                }
                // Otherwise a run of equal times at a time.
                let mut drained = data.drain(..).peekable();
                while let Some(&(_, time, _)) = drained.peek() {
                    let run = std::iter::from_fn(|| drained.next_if(|(_, t, _)| *t == time));
                    pending.entry(time).or_default().push(run.collect());
                }
            });
            if !publisher || guard.stopped() {
                pending.clear();
                return;
            }
            // An empty frontier: no input will ever change the result again. Either the
            // dataflow reads no table (a constant query such as `SELECT 1`), whose result is
            // final, or it is being dropped, and nobody reads its view any more.
            let upper = frontier
                .frontier()
                .iter()
                .min()
                .copied()
                .unwrap_or(u64::MAX);
            if upper <= lower {
                return;
            }
            let later = pending.split_off(&upper);
            let ready = std::mem::replace(&mut pending, later);
            // One batch `[t, t + 1)` per distinct time t, so the change log keeps each time's
            // changes apart and says exactly when they happened: a view installed again
            // (after a restart) publishes the same batches, and a subscriber resuming from a
            // frontier gets exactly the batches at or after it.
            for (time, containers) in ready {
                let mut changes = Vec::with_capacity(containers.iter().map(Vec::len).sum());
                for container in containers {
                    changes.extend(
                        container
                            .into_iter()
                            .map(|(row, _, diff)| (row, diff as i64)),
                    );
                }
                // Consolidated changes go to the view as they are: its fold puts each key's
                // changes together.
                if !consolidated {
                    view.consolidate(&mut changes);
                }
                let batch = ChangeBatch::new(time, time + 1, changes);
                if guard.run(|| view.apply(batch)).is_none() {
                    return;
                }
                lower = time + 1;
            }
            if lower < upper {
                view.apply(ChangeBatch::new(lower, upper, Vec::new()));
            }
            lower = upper;
        },
    );
}

/// Hands each container of a view's output whole to worker 0, the view's publisher. Every
/// change goes there, so timely's `Exchange`, which copies each item into a new container for
/// its worker, would copy every change for nothing.
struct ToPublisher;

impl<D> Distributor<Vec<D>> for ToPublisher {
    fn partition<T: Clone, P: Push<Message<T, Vec<D>>>>(
        &mut self,
        container: &mut Vec<D>,
        stamp: &Stamp<T>,
        pushers: &mut [P],
    ) {
        if container.is_empty() {
            return;
        }
        if let Some(publisher) = pushers.first_mut() {
            Message::push_at(container, stamp.clone(), publisher);
            // What the channel hands back, if anything, is a spent container.
            container.clear();
        }
    }

    fn flush<T: Clone, P: Push<Message<T, Vec<D>>>>(&mut self, _: &Stamp<T>, _: &mut [P]) {}
}
