//! Ingest admission: the rows accepted but not yet read by the views, or not yet stored, are
//! bounded.
//!
//! An append is acknowledged once its rows are in the log's memory, before the views have
//! read them and before the storage has written them (without `wait=true`). A client that
//! writes faster than the views fold, or while the storage refuses writes, would otherwise
//! queue rows in memory without limit, until the process runs out of it. Each accepted batch
//! counts its rows as waiting until every view that reads its datasource has passed its
//! timestamp and the storage holds it; a new append waits while more than the limit wait, and
//! is refused with 429 (nothing of it written, so a retry is safe) if they do not catch up in
//! time.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::RuntimeError;

/// The count of rows waiting for the views or the storage, and the limit appends wait on.
pub(crate) struct Admission {
    waiting: AtomicU64,
    max: u64,
    freed: Notify,
}

impl Admission {
    /// Admits appends while at most `max` rows wait.
    pub(crate) fn new(max: u64) -> Arc<Admission> {
        Arc::new(Admission {
            waiting: AtomicU64::new(0),
            max,
            freed: Notify::new(),
        })
    }

    /// Rows accepted that some view has not read or the storage has not stored yet.
    pub(crate) fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Returns once at most the limit of rows wait; after `patience`, refuses the append
    /// with 429.
    pub(crate) async fn admit(&self, patience: Duration) -> Result<(), RuntimeError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            // Registered before the check, so a release between the check and the wait
            // still wakes this append.
            let freed = self.freed.notified();
            if self.waiting() <= self.max {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(RuntimeError::Exhausted(format!(
                    "{} rows are waiting for the views to read them or the storage to store them \
                     (the limit is {}, --max-waiting-rows): nothing of this request was \
                     written; retry later",
                    self.waiting(),
                    self.max
                )));
            }
        }
    }

    /// Counts `rows` as waiting until `settled` (the views passing the rows' timestamp, the
    /// storage storing them) is done.
    pub(crate) fn hold(
        self: &Arc<Self>,
        rows: u64,
        settled: impl Future<Output = ()> + Send + 'static,
    ) {
        if rows == 0 {
            return;
        }
        self.waiting.fetch_add(rows, Ordering::Relaxed);
        let admission = self.clone();
        tokio::spawn(async move {
            settled.await;
            admission.waiting.fetch_sub(rows, Ordering::Relaxed);
            admission.freed.notify_waiters();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An append waits while more rows than the limit wait, goes on once they are read, and
    /// is refused with 429 when they are not read in time.
    #[tokio::test]
    async fn appends_wait_while_the_views_are_behind() {
        let admission = Admission::new(10);
        admission.admit(Duration::from_millis(10)).await.unwrap();
        let (read_tx, read_rx) = tokio::sync::oneshot::channel::<()>();
        admission.hold(25, async move {
            let _ = read_rx.await;
        });
        assert_eq!(admission.waiting(), 25);
        let refused = admission.admit(Duration::from_millis(50)).await;
        assert!(
            matches!(refused, Err(RuntimeError::Exhausted(ref m)) if m.contains("25 rows")),
            "{refused:?}"
        );
        let waiting = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit(Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "the append waits for the views");
        read_tx.send(()).unwrap();
        waiting.await.unwrap().unwrap();
        assert_eq!(admission.waiting(), 0);
    }
}
