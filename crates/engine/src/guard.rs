//! Failure isolation: a panic while evaluating one view's SQL fails that view, and only it.
//!
//! Every operator closure that runs a view's expressions or aggregate states runs through the
//! view's [`Guard`]. A panic (a bug, or `throwIf`) is caught on the worker thread, recorded
//! as the view's error (readers get it as an HTTP 500, subscribers as an `error` frame), and
//! from then on the view's operators pass nothing on, so its dataflow goes quiet while the
//! worker keeps running every other view.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use petrel_view::View;

/// A view's failure switch, shared by its operators on one worker.
#[derive(Clone)]
pub(crate) struct Guard {
    view: Arc<View>,
    failed: Arc<AtomicBool>,
}

impl Guard {
    /// The guard of `view`'s dataflow.
    pub fn new(view: Arc<View>) -> Guard {
        Guard {
            view,
            failed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True once the view failed: its operators drop their input.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
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
