//! The one subscription driver: a view's published batches turned into the typed events one
//! subscriber receives. WebSocket and SSE (`serve::subscribe`) and Kafka sinks (`sink`) are
//! transports over it: each encodes [`StreamEvent`]s its own way.
//!
//! The stream starts with a snapshot of the subscriber's rows at the view's frontier (or
//! resumes after `since` when the view's change log still covers it, else resyncs with a
//! snapshot), then sends each batch's changes for the subscriber's key, and progress at least
//! every [`StreamOptions::progress_every`] while quiet. A subscriber that falls behind the
//! view's broadcast ring gets a fresh snapshot marked `resync` (or, with
//! [`StreamOptions::close_on_overflow`], an overflow event with its resume point). A view
//! that fails or is dropped ends the stream with an error event.

use std::future::Future;
use std::time::Duration;

use petrel_value::Row;
use petrel_view::{Resume, Ts};
use tokio::sync::broadcast;

use super::Subscription;

/// What a subscriber is sent, in order.
#[derive(Debug)]
pub enum StreamEvent {
    /// The subscriber's rows (visible columns, in the query's order) at `upper`; `resync`
    /// when it replaces rows the subscriber holds (it fell behind, or resumed too late).
    Snapshot {
        /// The frontier the rows are at.
        upper: Ts,
        /// The rows.
        rows: Vec<Row>,
        /// True when it replaces what the subscriber had.
        resync: bool,
    },
    /// The changes of the subscriber's rows from `lower` to `upper`.
    Changes {
        /// The frontier the subscriber had.
        lower: Ts,
        /// The frontier the changes bring it to.
        upper: Ts,
        /// Rows (visible columns) with their multiplicity changes.
        changes: Vec<(Row, i64)>,
    },
    /// Nothing changed for the subscriber below this frontier.
    Progress(Ts),
    /// The subscriber fell behind with `close_on_overflow`: it resumes from this frontier.
    Overflow(Ts),
    /// The view failed or was dropped; the stream ends.
    Error(String),
}

/// How a stream starts and what it does when its subscriber falls behind.
#[derive(Clone, Copy, Debug)]
pub struct StreamOptions {
    /// Resume after this frontier instead of starting with a snapshot.
    pub since: Option<Ts>,
    /// Start with a snapshot (else with a progress event at the view's frontier).
    pub snapshot: bool,
    /// A subscriber that falls behind ends with [`StreamEvent::Overflow`] instead of getting
    /// a resync snapshot.
    pub close_on_overflow: bool,
    /// How often a quiet stream sends progress (and checks its view for failure).
    pub progress_every: Duration,
}

/// A transport's side of a stream: it takes each event in order. An error ends the stream
/// (the subscriber went away, or the transport failed).
pub trait EventSink {
    /// Delivers one event; waits while the transport has no room.
    fn send(&mut self, event: StreamEvent) -> impl Future<Output = Result<(), String>> + Send;
}

/// Runs `sub`'s stream into `out` until the transport fails (its error) or the stream ends
/// with an error or overflow event (`Ok`).
pub async fn drive(
    sub: &Subscription,
    options: StreamOptions,
    out: &mut impl EventSink,
) -> Result<(), String> {
    let view = sub.view.clone();
    let mut upper_rx = view.watch_upper();
    let snapshot = |resync: bool| {
        let (snap, rx) = view.subscribe(sub.key());
        let event = StreamEvent::Snapshot {
            upper: snap.upper,
            rows: sub.rows(snap.rows),
            resync,
        };
        (event, snap.upper, rx)
    };
    let (mut batches, mut sent_upper) = match options.since {
        Some(since) => match view.resume(since, sub.key()) {
            (Resume::Changes(missed), _, rx) => {
                let mut at = since;
                for b in missed {
                    let changes = sub.changes(&b);
                    if !changes.is_empty() {
                        out.send(StreamEvent::Changes {
                            lower: b.lower.max(since),
                            upper: b.upper,
                            changes,
                        })
                        .await?;
                    }
                    at = b.upper;
                }
                (rx, at.max(since))
            }
            (Resume::TooOld, _, rx) => {
                drop(rx);
                let (event, upper, rx) = snapshot(true);
                out.send(event).await?;
                (rx, upper)
            }
        },
        None if options.snapshot => {
            let (event, upper, rx) = snapshot(false);
            out.send(event).await?;
            (rx, upper)
        }
        None => {
            let (snap, rx) = view.subscribe(sub.key());
            out.send(StreamEvent::Progress(snap.upper)).await?;
            (rx, snap.upper)
        }
    };
    let mut ticker = tokio::time::interval(options.progress_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sent = tokio::time::Instant::now();
    loop {
        tokio::select! {
            batch = batches.recv() => match batch {
                Ok(b) => {
                    if b.upper <= sent_upper {
                        continue;
                    }
                    let changes = sub.changes(&b);
                    if !changes.is_empty() {
                        let lower = b.lower.max(sent_upper);
                        out.send(StreamEvent::Changes { lower, upper: b.upper, changes }).await?;
                        sent_upper = b.upper;
                        last_sent = tokio::time::Instant::now();
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if options.close_on_overflow {
                        return out.send(StreamEvent::Overflow(sent_upper)).await;
                    }
                    // Too slow: what it missed collapses into a fresh snapshot.
                    let (event, upper, rx) = snapshot(true);
                    batches = rx;
                    out.send(event).await?;
                    sent_upper = upper;
                    last_sent = tokio::time::Instant::now();
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return out.send(StreamEvent::Error("the view was dropped".into())).await;
                }
            },
            _ = ticker.tick() => {
                if last_sent.elapsed() >= options.progress_every {
                    let upper = *upper_rx.borrow_and_update();
                    // Changes below `upper` may still be queued in `batches`; progress only
                    // claims what has been sent.
                    let claim = if batches.is_empty() { upper.max(sent_upper) } else { sent_upper };
                    out.send(StreamEvent::Progress(claim)).await?;
                    sent_upper = claim;
                    last_sent = tokio::time::Instant::now();
                }
                if let Some(e) = view.failure() {
                    return out.send(StreamEvent::Error(e)).await;
                }
            }
        }
    }
}
