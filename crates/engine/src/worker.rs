//! One timely worker's loop: apply commands in order, then step the dataflows.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use differential_dataflow::input::Input as _;
use petrel_value::Row;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::core::input::Handle;
use timely::dataflow::operators::core::Input as _;
use timely::worker::Worker;

use crate::control::{Control, ControlPort};
use crate::guard::Guard;
use crate::render::{render, Sources};
use crate::source::Slice;
use crate::{Command, InstallSpec, ViewId};

/// One datasource's input to a view's dataflow: slices of its batches, not copies of rows.
type SliceInput = Handle<u64, CapacityContainerBuilder<Vec<Slice>>>;

/// An installed view's inputs on this worker.
struct Installed {
    inputs: BTreeMap<String, SliceInput>,
    dataflow: usize,
    /// The view's dropped flag (see [`InstallSpec::dropped`]).
    dropped: Arc<AtomicBool>,
}

/// Moves `input` to `ts` (never back) and lets the dataflow see what it was sent.
fn advance(input: &mut SliceInput, ts: u64) {
    if *input.time() < ts {
        input.advance_to(ts);
    }
    input.flush();
}

/// Runs until told to shut down (or until the engine is gone). `local` is this worker's
/// index among its process's workers and their number: each replays its share of this
/// process's logs. `apply` takes the commands process 0 sent, handing one back while the
/// engine is not ready for them.
pub(crate) fn run(
    worker: &mut Worker,
    commands: Receiver<Command>,
    mut control: ControlPort,
    local: (usize, usize),
    apply: &dyn Fn(Control) -> Result<(), Control>,
) {
    let mut installed: HashMap<ViewId, Installed> = HashMap::new();
    let mut unapplied: VecDeque<Control> = VecDeque::new();
    loop {
        loop {
            match commands.try_recv() {
                Ok(Command::Install(spec)) => {
                    let inst = install(worker, &spec, local);
                    installed.insert(spec.id, inst);
                }
                Ok(Command::Insert {
                    datasource,
                    updates,
                    range,
                    ts,
                }) => {
                    for inst in installed.values_mut() {
                        if let Some(input) = inst.inputs.get_mut(&*datasource) {
                            input.send(Slice {
                                rows: updates.clone(),
                                range: range.clone(),
                                ts,
                            });
                        }
                    }
                }
                Ok(Command::Control(command)) => control.send(command),
                Ok(Command::Advance(ts)) => {
                    control.advance_to(ts);
                    for inst in installed.values_mut() {
                        for input in inst.inputs.values_mut() {
                            advance(input, ts);
                        }
                    }
                }
                Ok(Command::Drop(id)) => {
                    if let Some(inst) = installed.remove(&id) {
                        drop(inst.inputs);
                        worker.drop_dataflow(inst.dataflow);
                    }
                }
                Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => {
                    // Dropped rather than completed: in a cluster, completing would wait for
                    // every other process to stop too.
                    drop(installed);
                    for dataflow in worker.installed_dataflows() {
                        worker.drop_dataflow(dataflow);
                    }
                    return;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        worker.step_or_park(Some(Duration::from_millis(20)));
        for id in control.take_dropping() {
            if let Some(inst) = installed.get(&id) {
                inst.dropped.store(true, Ordering::Relaxed);
            }
        }
        unapplied.extend(control.take_ready());
        while let Some(command) = unapplied.pop_front() {
            if let Err(command) = apply(command) {
                unapplied.push_front(command);
                break;
            }
        }
    }
}

/// How many history rows a worker feeds a view being installed before it steps the
/// dataflows once.
const REPLAY_STEP_ROWS: usize = 16_384;

/// Builds the view's dataflow, then replays this worker's share of the datasources' history:
/// batches older than the floor at the floor, later ones at their own timestamps.
fn install(worker: &mut Worker, spec: &InstallSpec, local: (usize, usize)) -> Installed {
    let index = worker.index();
    let (local_index, local_peers) = local;
    let dataflow = worker.next_dataflow_index();
    let (mut inputs, mut unit_input) = worker.dataflow::<u64, _, _>(|scope| {
        let mut inputs = BTreeMap::new();
        let mut tables = BTreeMap::new();
        for (name, _) in &spec.history {
            let (input, slices) = scope.new_input::<Vec<Slice>>();
            inputs.insert(name.clone(), input);
            tables.insert(name.clone(), slices);
        }
        let (unit_input, unit) = scope.new_collection::<Row, isize>();
        let guard = Guard::new(
            spec.view.clone(),
            spec.budget.clone(),
            spec.failed.clone(),
            spec.dropped.clone(),
        );
        let sources = Sources {
            tables,
            unit,
            guard: guard.clone(),
            bounded_states: spec.bounded_states,
            single_process: spec.single_process,
        };
        let output = render(&spec.plan, &sources);
        let consolidated = crate::render::emits_consolidated(&spec.plan);
        crate::sink::publish(output, spec.view.clone(), guard, (index == 0, consolidated));
        (inputs, unit_input)
    });
    unit_input.advance_to(spec.floor);
    if index == 0 {
        unit_input.insert(Vec::new());
    }
    drop(unit_input);
    for (name, history) in &spec.history {
        if let Some(input) = inputs.get_mut(name) {
            advance(input, spec.floor);
            let floor = spec.floor;
            // Rows of one time, sent as one slice of their own batch.
            let mut batch: Vec<(Row, isize)> = Vec::with_capacity(REPLAY_STEP_ROWS);
            let mut batch_ts = floor;
            let send = |input: &mut SliceInput, batch: &mut Vec<(Row, isize)>, ts: u64| {
                let rows = std::mem::replace(batch, Vec::with_capacity(REPLAY_STEP_ROWS));
                let range = 0..rows.len();
                input.send(Slice {
                    rows: Arc::new(rows),
                    range,
                    ts,
                });
            };
            let replayed = history.replay(local_index, local_peers, &mut |row, ts, diff| {
                let ts = ts.max(floor);
                if ts != batch_ts && !batch.is_empty() {
                    send(input, &mut batch, batch_ts);
                }
                batch_ts = ts;
                batch.push((row, diff));
                // The dataflow folds the history as it comes, while its rows are still in
                // cache, instead of queueing all of it in its channels first.
                if batch.len() == REPLAY_STEP_ROWS {
                    send(input, &mut batch, batch_ts);
                    input.flush();
                    worker.step();
                }
            });
            if !batch.is_empty() {
                send(input, &mut batch, batch_ts);
            }
            if let Err(e) = replayed {
                spec.view
                    .fail(format!("replaying datasource '{name}' failed: {e}"));
            }
            advance(input, spec.as_of);
        }
    }
    Installed {
        inputs,
        dataflow,
        dropped: spec.dropped.clone(),
    }
}
