//! Push: WebSocket (`NAME.ws`) and Server-Sent Events (`NAME.sse`) subscriptions to an
//! endpoint. The full contract is in `docs/subscriptions.md`.
//!
//! The runtime's one subscription driver (`runtime::stream`) turns one view's published
//! batches into events for one subscriber; this transport encodes them as JSON frames
//! (snapshot, changes, progress, error). Frames go through a small bounded channel to the
//! transport, and each frame holds its size in bytes from two budgets (the subscriber's and
//! all subscribers') until the transport has written it. A subscriber that does not drain
//! makes its driver wait; when the view's broadcast ring then overwrites batches it has not
//! taken, its pending changes collapse into a fresh snapshot marked `"resync": true` (or, with
//! `overflow=close`, it gets an error frame with its resume point and is closed). Memory per
//! subscriber and in all stays bounded in bytes, and the engine never waits for one.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use petrel_value::Row;
use petrel_view::Ts;
use std::sync::Arc;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;

use super::format::write_object;
use crate::runtime::stream::{self, EventSink, StreamEvent, StreamOptions};
use crate::runtime::{SubscriberBuffers, Subscription, SubscriptionSlot};

/// How often a quiet subscription gets a progress frame.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Frames buffered between the driver and a slow transport.
const FRAME_BUFFER: usize = 64;

/// One message to a subscriber.
#[derive(Debug)]
pub struct Frame {
    /// `snapshot`, `changes`, `progress` or `error`.
    pub kind: &'static str,
    /// The frontier the frame brings the subscriber to (the SSE `id:`).
    pub upper: Ts,
    /// The JSON text.
    pub json: String,
    /// The frame's bytes, held from the subscriber's and the global budget until it is
    /// written (dropping the frame gives them back).
    budget: Vec<OwnedSemaphorePermit>,
}

/// What the subscriber asked for.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Resume after this frontier instead of starting with a snapshot.
    pub since: Option<Ts>,
    /// Send the initial snapshot.
    pub snapshot: bool,
    /// `envelope=upsert`: changes as the new row (or null) per key, not as signed rows.
    pub upsert: bool,
    /// `overflow=close`: a subscriber that falls behind is closed with its resume point
    /// instead of getting a resync snapshot.
    pub close_on_overflow: bool,
}

fn rows_json(sub: &Subscription, rows: &[Row]) -> String {
    let mut out = String::from("[");
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_object(&sub.columns, r, &mut out);
    }
    out.push(']');
    out
}

fn snapshot_frame(sub: &Subscription, upper: Ts, rows: Vec<Row>, resync: bool) -> Frame {
    let meta: Vec<serde_json::Value> = sub
        .columns
        .iter()
        .map(|c| serde_json::json!({"name": c.name, "type": c.ty.name()}))
        .collect();
    let json = format!(
        "{{\"type\":\"snapshot\",\"ts\":{upper},{}\"meta\":{},\"data\":{}}}",
        if resync { "\"resync\":true," } else { "" },
        serde_json::Value::Array(meta),
        rows_json(sub, &rows)
    );
    Frame {
        kind: "snapshot",
        upper,
        json,
        budget: Vec::new(),
    }
}

/// `envelope=upsert`: per changed key, the row it now has, or `null` when it has none.
fn upsert_frame(sub: &Subscription, lower: Ts, upper: Ts, changes: &[(Row, i64)]) -> Frame {
    let key_of = |row: &Row| -> Row { sub.upsert_key().iter().map(|&c| row[c].clone()).collect() };
    let mut latest: std::collections::BTreeMap<Row, Option<&Row>> =
        std::collections::BTreeMap::new();
    for (row, diff) in changes {
        let entry = latest.entry(key_of(row)).or_insert(None);
        if *diff > 0 {
            *entry = Some(row);
        }
    }
    let key_columns: Vec<petrel_value::Column> = sub
        .upsert_key()
        .iter()
        .map(|&c| sub.columns[c].clone())
        .collect();
    let mut json = format!("{{\"type\":\"changes\",\"lower\":{lower},\"upper\":{upper},\"data\":[");
    for (i, (key, row)) in latest.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str("{\"key\":");
        write_object(&key_columns, key, &mut json);
        json.push_str(",\"row\":");
        match row {
            Some(r) => write_object(&sub.columns, r, &mut json),
            None => json.push_str("null"),
        }
        json.push('}');
    }
    json.push_str("]}");
    Frame {
        kind: "changes",
        upper,
        json,
        budget: Vec::new(),
    }
}

fn changes_frame(
    sub: &Subscription,
    lower: Ts,
    upper: Ts,
    changes: &[(Row, i64)],
    upsert: bool,
) -> Frame {
    if upsert {
        return upsert_frame(sub, lower, upper, changes);
    }
    let mut json = format!("{{\"type\":\"changes\",\"lower\":{lower},\"upper\":{upper},\"data\":[");
    for (i, (row, diff)) in changes.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!("{{\"diff\":{diff},\"row\":"));
        write_object(&sub.columns, row, &mut json);
        json.push('}');
    }
    json.push_str("]}");
    Frame {
        kind: "changes",
        upper,
        json,
        budget: Vec::new(),
    }
}

fn progress_frame(upper: Ts) -> Frame {
    Frame {
        kind: "progress",
        upper,
        json: format!("{{\"type\":\"progress\",\"ts\":{upper}}}"),
        budget: Vec::new(),
    }
}

/// Sends frames to a transport, each holding its bytes from the byte budgets until written.
struct Outbox {
    tx: mpsc::Sender<Frame>,
    own: Arc<Semaphore>,
    own_bytes: usize,
    total: Arc<Semaphore>,
}

impl Outbox {
    /// Waits for room (in frames and in bytes), then queues the frame. Err: the subscriber
    /// went away. A frame larger than a whole budget takes the whole budget.
    async fn send(&self, mut frame: Frame) -> Result<(), ()> {
        let bytes = frame.json.len().clamp(1, self.own_bytes) as u32;
        let own = self
            .own
            .clone()
            .acquire_many_owned(bytes)
            .await
            .map_err(|_| ())?;
        let total = self
            .total
            .clone()
            .acquire_many_owned(bytes)
            .await
            .map_err(|_| ())?;
        frame.budget = vec![own, total];
        self.tx.send(frame).await.map_err(|_| ())
    }
}

/// Starts the driver for `sub`; frames arrive on the returned receiver until the subscriber
/// goes away (the receiver is dropped). The driver holds the token's `slot` while it runs.
pub fn start(
    sub: Subscription,
    options: Options,
    buffers: &SubscriberBuffers,
    slot: SubscriptionSlot,
) -> mpsc::Receiver<Frame> {
    let (tx, rx) = mpsc::channel(FRAME_BUFFER);
    let own_bytes = buffers
        .per_subscriber
        .min(Semaphore::MAX_PERMITS)
        .min(u32::MAX as usize);
    let outbox = Outbox {
        tx,
        own: Arc::new(Semaphore::new(own_bytes)),
        own_bytes,
        total: buffers.total.clone(),
    };
    let stream_options = StreamOptions {
        since: options.since,
        snapshot: options.snapshot,
        close_on_overflow: options.close_on_overflow,
        progress_every: PROGRESS_EVERY,
    };
    tokio::spawn(async move {
        let mut sink = FrameSink {
            sub: &sub,
            upsert: options.upsert,
            outbox,
        };
        // Ends when the subscriber goes away or the stream does.
        let _ = stream::drive(&sub, stream_options, &mut sink).await;
        // The token's subscription slot is free once the subscriber is gone.
        drop(slot);
    });
    rx
}

/// The WebSocket/SSE side of a stream: events become frames in the outbox.
struct FrameSink<'a> {
    sub: &'a Subscription,
    upsert: bool,
    outbox: Outbox,
}

impl EventSink for FrameSink<'_> {
    async fn send(&mut self, event: StreamEvent) -> Result<(), String> {
        let frame = match event {
            StreamEvent::Snapshot {
                upper,
                rows,
                resync,
            } => snapshot_frame(self.sub, upper, rows, resync),
            StreamEvent::Changes {
                lower,
                upper,
                changes,
            } => changes_frame(self.sub, lower, upper, &changes, self.upsert),
            StreamEvent::Progress(upper) => progress_frame(upper),
            StreamEvent::Overflow(resume) => overflow_frame(resume),
            StreamEvent::Error(e) => error_frame(&e),
        };
        self.outbox
            .send(frame)
            .await
            .map_err(|()| "the subscriber went away".to_string())
    }
}

/// Closes a subscriber that fell behind (`overflow=close`), with the frontier it holds: it
/// resumes with `since=RESUME`.
fn overflow_frame(resume: Ts) -> Frame {
    Frame {
        kind: "error",
        upper: 0,
        json: serde_json::json!({
            "type": "error",
            "error": "the subscriber fell behind its buffer; resume with since",
            "resume": resume,
        })
        .to_string(),
        budget: Vec::new(),
    }
}

fn error_frame(message: &str) -> Frame {
    Frame {
        kind: "error",
        upper: 0,
        json: serde_json::json!({"type": "error", "error": message}).to_string(),
        budget: Vec::new(),
    }
}

/// Serves a subscription over an upgraded WebSocket. Client messages are ignored; a close
/// or a failed send ends it.
pub async fn websocket(mut socket: WebSocket, mut frames: mpsc::Receiver<Frame>) {
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let Some(frame) = frame else { break };
                if socket.send(Message::Text(frame.json.into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    }
}

/// Serves a subscription as Server-Sent Events: `event:` is the frame type, `id:` its
/// frontier (so `Last-Event-ID` resumes).
pub fn sse(frames: mpsc::Receiver<Frame>) -> Response {
    let stream = ReceiverStream::new(frames).map(|f| {
        let mut event = Event::default().event(f.kind).data(f.json);
        if f.kind != "error" {
            event = event.id(f.upper.to_string());
        }
        Ok::<_, Infallible>(event)
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
