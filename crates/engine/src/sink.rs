//! The view sink: gathers a view's output on one worker and publishes consolidated change
//! batches each time the output's frontier advances.

use std::sync::Arc;

use differential_dataflow::consolidation::consolidate;
use petrel_value::Row;
use petrel_view::{ChangeBatch, View};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::render::Rows;

/// Sends all of `output` to worker 0, which publishes into `view` (`publisher` is true there).
pub(crate) fn publish(output: Rows<'_>, view: Arc<View>, publisher: bool) {
    let mut pending: Vec<(Row, u64, isize)> = Vec::new();
    let mut lower: u64 = 0;
    output.inner.sink(
        Exchange::new(|_: &(Row, u64, isize)| 0u64),
        "ViewSink",
        move |(input, frontier)| {
            input.for_each(|_, data| pending.append(data));
            if !publisher {
                return;
            }
            // An empty frontier means the dataflow is shutting down: publish nothing more.
            let Some(upper) = frontier.frontier().iter().min().copied() else {
                return;
            };
            if upper <= lower {
                return;
            }
            let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut pending)
                .into_iter()
                .partition(|(_, time, _)| *time < upper);
            pending = later;
            let mut ready: Vec<(Row, i64)> = ready
                .into_iter()
                .map(|(row, _, diff)| (row, diff as i64))
                .collect();
            consolidate(&mut ready);
            view.apply(ChangeBatch {
                lower,
                upper,
                changes: ready,
            });
            lower = upper;
        },
    );
}
