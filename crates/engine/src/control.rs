//! The cluster's control stream: how process 0's installs and drops reach every other process
//! in the order process 0 made them.
//!
//! Timely's rule is that every worker builds the same dataflows in the same order. In one
//! process the engine sends each worker the same commands; across processes the commands
//! travel as data of a small dataflow built first on every worker. Process 0's first worker
//! feeds it, one copy per other process addressed to that process's first worker, which
//! applies the commands once the control input's frontier (every worker's clock) has passed
//! them, in (time, sequence) order: the order process 0 issued them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use petrel_sql::Plan;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Input;
use timely::dataflow::InputHandleVec;
use timely::worker::Worker;

use crate::{Ts, ViewId};

/// A command process 0 sends to every other process.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum Control {
    /// Build this view's dataflow, replaying history before `floor` at `floor`.
    Install {
        id: ViewId,
        plan: Box<Plan>,
        floor: Ts,
        /// The rows its joins may produce (ad-hoc queries), if bounded.
        budget: Option<u64>,
    },
    /// Drop this view's dataflow.
    Drop(ViewId),
}

/// `(target worker, time sent at, sequence number, command)`.
type Envelope = (u64, u64, u64, Control);

/// A worker's end of the control stream.
pub(crate) struct ControlPort {
    input: InputHandleVec<u64, Envelope>,
    /// Commands whose time every worker has passed, in order, not yet applied.
    ready: Rc<RefCell<Vec<Control>>>,
    /// Views whose drop arrived here, before it is in order: their operators can stop their
    /// work at once (a flag needs no order), while the drop itself waits for the frontier,
    /// which a worker stuck in a long step holds back.
    dropping: Rc<RefCell<Vec<ViewId>>>,
    /// The first worker of each other process (on process 0's first worker; else empty).
    targets: Vec<u64>,
    next_seq: u64,
}

impl ControlPort {
    /// Builds the control dataflow; every worker calls this before building any view.
    /// `followers` are the first workers of processes 1.. when this is process 0's first
    /// worker.
    pub(crate) fn build(worker: &mut Worker, followers: Vec<u64>) -> ControlPort {
        let ready: Rc<RefCell<Vec<Control>>> = Rc::new(RefCell::new(Vec::new()));
        let out = ready.clone();
        let dropping: Rc<RefCell<Vec<ViewId>>> = Rc::new(RefCell::new(Vec::new()));
        let early = dropping.clone();
        let input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Envelope>();
            let mut pending: BTreeMap<(u64, u64), Control> = BTreeMap::new();
            stream.sink(
                Exchange::new(|e: &Envelope| e.0),
                "Control",
                move |(handle, frontier)| {
                    handle.for_each(|_, data| {
                        for (_, time, seq, command) in data.drain(..) {
                            if let Control::Drop(id) = &command {
                                early.borrow_mut().push(*id);
                            }
                            pending.insert((time, seq), command);
                        }
                    });
                    let upper = frontier.frontier().iter().min().copied();
                    let upper = upper.unwrap_or(u64::MAX);
                    let later = pending.split_off(&(upper, 0));
                    let done = std::mem::replace(&mut pending, later);
                    out.borrow_mut().extend(done.into_values());
                },
            );
            input
        });
        ControlPort {
            input,
            ready,
            dropping,
            targets: followers,
            next_seq: 0,
        }
    }

    /// Sends `command` to every other process (process 0's first worker only).
    pub(crate) fn send(&mut self, command: Control) {
        for &target in &self.targets {
            let time = *self.input.time();
            self.input
                .send((target, time, self.next_seq, command.clone()));
            self.next_seq += 1;
        }
    }

    /// Moves the control input to `ts` with every other input.
    pub(crate) fn advance_to(&mut self, ts: Ts) {
        if *self.input.time() < ts {
            self.input.advance_to(ts);
            self.input.flush();
        }
    }

    /// The views whose drop has arrived, ready to apply or not.
    pub(crate) fn take_dropping(&self) -> Vec<ViewId> {
        std::mem::take(&mut *self.dropping.borrow_mut())
    }

    /// The commands ready to apply, in order.
    pub(crate) fn take_ready(&self) -> Vec<Control> {
        std::mem::take(&mut *self.ready.borrow_mut())
    }
}
