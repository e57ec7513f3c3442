//! Failure isolation: a panic while evaluating one view's SQL fails that view, and only it.
//!
//! Every operator closure that runs a view's expressions or aggregate states runs through the
//! view's [`Guard`]. A panic (a bug, or `throwIf`) is caught on the worker thread, recorded
//! as the view's error (readers get it as an HTTP 500, subscribers as an `error` frame), and
//! from then on the view's operators pass nothing on, so its dataflow goes quiet while the
//! worker keeps running every other view.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use petrel_view::View;

/// How many rows an ad-hoc query's joins and `ARRAY JOIN`s may produce, shared by its
/// operators on every worker: the operators that multiply rows are where one short query can
/// grow the server's memory by gigabytes before any time limit acts.
#[derive(Debug)]
pub struct RowBudget {
    limit: u64,
    used: AtomicU64,
    exceeded: AtomicBool,
}

impl RowBudget {
    /// A budget of `limit` rows.
    pub fn new(limit: u64) -> Arc<RowBudget> {
        Arc::new(RowBudget {
            limit,
            used: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
        })
    }

    /// True once the query produced more rows than its budget (and its view failed).
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// The budget in rows.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// A view's failure switch, shared by its operators on every worker of this process.
#[derive(Clone)]
pub(crate) struct Guard {
    view: Arc<View>,
    failed: Arc<AtomicBool>,
    budget: Option<Arc<RowBudget>>,
    /// Set by the engine when the view is dropped, before its workers get to free the
    /// dataflow: work still running for it (a join's pairs) can end early.
    dropped: Arc<AtomicBool>,
}

impl Guard {
    /// The guard of `view`'s dataflow, bounded by `budget` if it has one. `failed` is shared
    /// by the view's operators on every worker of this process (one worker's failure stops
    /// them all); `dropped` is set once the view is dropped.
    pub fn new(
        view: Arc<View>,
        budget: Option<Arc<RowBudget>>,
        failed: Arc<AtomicBool>,
        dropped: Arc<AtomicBool>,
    ) -> Guard {
        Guard {
            view,
            failed,
            budget,
            dropped,
        }
    }

    /// True when the view's joins are bounded by a row budget.
    pub fn has_budget(&self) -> bool {
        self.budget.is_some()
    }

    /// Counts one row a join produced; false (and the view fails) once the budget is spent.
    pub fn charge(&self) -> bool {
        let Some(budget) = &self.budget else {
            return true;
        };
        if self.failed() {
            return false;
        }
        if budget.used.fetch_add(1, Ordering::Relaxed) < budget.limit {
            return true;
        }
        self.failed.store(true, Ordering::Relaxed);
        if !budget.exceeded.swap(true, Ordering::Relaxed) {
            self.view.fail(format!(
                "the query's joins produced more than {} rows (the server's --query-max-rows) and it was cancelled",
                budget.limit
            ));
        }
        false
    }

    /// True once the view failed: its operators drop their input.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// True once the view failed or was dropped: nothing it still makes will be read.
    pub fn stopped(&self) -> bool {
        self.failed() || self.dropped.load(Ordering::Relaxed)
    }

    /// A guard of a view of its own, for unit tests of the states that report to it.
    #[cfg(test)]
    pub fn for_tests() -> Guard {
        let view = View::new(Vec::new(), petrel_view::KeyColumns(Vec::new()), 0);
        Guard::new(
            view,
            None,
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        )
    }

    /// Fails the view so that the server rebuilds it from its history: an aggregate's bounded
    /// state no longer knows its result (see `aggregate::Extreme`).
    pub fn lose_track(&self, reason: String) {
        if !self.failed.swap(true, Ordering::Relaxed) {
            self.view.fail_to_rebuild(reason);
        }
    }

    /// Runs `f`, or gives `None` if it panics (failing the view) or the view already failed.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        if self.failed() {
            return None;
        }
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(v) => Some(v),
            Err(payload) => {
                self.failed.store(true, Ordering::Relaxed);
                self.view.fail(format!(
                    "evaluating the query failed: {}",
                    panic_message(payload.as_ref())
                ));
                None
            }
        }
    }
}

/// The message a panic carries: an evaluation error's own text, or the panic's.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(e) = payload.downcast_ref::<petrel_sql::EvalError>() {
        e.0.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        format!("internal error: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("internal error: {s}")
    } else {
        "internal error".into()
    }
}
