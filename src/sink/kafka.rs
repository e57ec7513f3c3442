//! Kafka sinks: a `TYPE sink` pipe with `EXPORT_KAFKA_TOPIC` writes its changes to the topic
//! continuously, as data lands.
//!
//! Envelopes (`EXPORT_KAFKA_ENVELOPE`, Petrel's extension): `changes` (the default) sends
//! `{"ts": T, "diff": ±n, "row": {..}}` per changed row; `upsert` sends the key's current row,
//! or a tombstone when it has none, for compacted topics; `debezium` sends
//! `{"before", "after", "ts"}`. Messages are keyed by the JSON of the row's GROUP BY columns,
//! so a key's changes stay in order in one partition. The sink starts with the whole current result as `"snapshot": true` messages (`diff` 1), then
//! sends changes. Delivery is at least once: each batch is acknowledged by the brokers before
//! the next one is read; after a restart (or if the sink falls behind the view's change ring)
//! the whole result is sent again as a snapshot, so consumers that keep state reset on
//! `"snapshot": true`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use petrel_value::Row;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::project::{KafkaConnection, KafkaSink, SinkEnvelope};
use crate::runtime::stream::{self, EventSink, StreamEvent, StreamOptions};
use crate::runtime::{Runtime, Subscription};

/// Starts the task that keeps sink pipe `pipe` producing to its topic through `conn`; it
/// retries (every second) whatever fails. Aborting the task stops the sink.
pub fn start(
    runtime: &Arc<Runtime>,
    pipe: &str,
    sink: KafkaSink,
    conn: KafkaConnection,
) -> tokio::task::JoinHandle<()> {
    let (rt, name) = (runtime.clone(), pipe.to_string());
    tokio::spawn(async move {
        loop {
            if let Err(e) = run(&rt, &name, &sink, &conn).await {
                tracing::warn!(pipe = %name, error = %e, "Kafka sink restarting");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

fn row_json(sub: &Subscription, row: &Row) -> serde_json::Value {
    let mut obj = serde_json::Map::new();
    for (c, v) in sub.columns.iter().zip(row) {
        obj.insert(c.name.clone(), v.to_json());
    }
    serde_json::Value::Object(obj)
}

fn key_json(sub: &Subscription, row: &Row) -> String {
    let mut key = serde_json::Map::new();
    for &i in sub.upsert_key() {
        key.insert(sub.columns[i].name.clone(), row[i].to_json());
    }
    serde_json::Value::Object(key).to_string()
}

/// A Kafka message: key, and value (`None` is a tombstone).
type Outgoing = (String, Option<String>);

/// The messages for a batch of changes (or, with `snapshot`, for the whole result).
fn messages(
    sub: &Subscription,
    envelope: SinkEnvelope,
    ts: u64,
    changes: &[(Row, i64)],
    snapshot: bool,
) -> Vec<Outgoing> {
    if envelope == SinkEnvelope::Changes {
        return changes
            .iter()
            .map(|(row, diff)| {
                let mut body =
                    serde_json::json!({"ts": ts, "diff": diff, "row": row_json(sub, row)});
                if snapshot {
                    body["snapshot"] = serde_json::Value::Bool(true);
                }
                (key_json(sub, row), Some(body.to_string()))
            })
            .collect();
    }
    // Per key: the row it had before the batch and the row it has after.
    let mut per_key: BTreeMap<String, (Option<&Row>, Option<&Row>)> = BTreeMap::new();
    for (row, diff) in changes {
        let entry = per_key.entry(key_json(sub, row)).or_insert((None, None));
        if *diff > 0 {
            entry.1 = Some(row);
        } else {
            entry.0 = Some(row);
        }
    }
    per_key
        .into_iter()
        .map(|(key, (before, after))| {
            let value = match envelope {
                SinkEnvelope::Upsert => after.map(|r| row_json(sub, r).to_string()),
                _ => Some(
                    serde_json::json!({
                        "before": before.map(|r| row_json(sub, r)),
                        "after": after.map(|r| row_json(sub, r)),
                        "ts": ts,
                    })
                    .to_string(),
                ),
            };
            (key, value)
        })
        .collect()
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    messages: Vec<Outgoing>,
) -> Result<(), String> {
    let deliveries: Vec<_> = messages
        .iter()
        .map(|(k, v)| {
            let mut record = FutureRecord::to(topic).key(k);
            if let Some(v) = v {
                record = record.payload(v);
            }
            producer.send(record, Duration::from_secs(10))
        })
        .collect();
    for d in deliveries {
        d.await.map_err(|(e, _)| e.to_string())?;
    }
    Ok(())
}

async fn run(
    runtime: &Runtime,
    pipe: &str,
    sink: &KafkaSink,
    conn: &KafkaConnection,
) -> Result<(), String> {
    let producer: FutureProducer = conn
        .client_config()
        .set("message.timeout.ms", "10000")
        .set("linger.ms", "1")
        .create()
        .map_err(|e| e.to_string())?;
    let sub = runtime
        .subscribe(pipe, &BTreeMap::new())
        .await
        .map_err(|e| e.to_string())?;
    let options = StreamOptions {
        since: None,
        snapshot: true,
        close_on_overflow: false,
        progress_every: Duration::from_secs(1),
    };
    let mut out = TopicSink {
        sub: &sub,
        producer,
        topic: &sink.topic,
        envelope: sink.envelope,
    };
    stream::drive(&sub, options, &mut out).await?;
    Err("the sink's stream ended".into())
}

/// The Kafka side of a stream: snapshots and changes become messages on the topic, each
/// batch acknowledged by the brokers before the next is taken; progress needs no message.
struct TopicSink<'a> {
    sub: &'a Subscription,
    producer: FutureProducer,
    topic: &'a str,
    envelope: SinkEnvelope,
}

impl EventSink for TopicSink<'_> {
    async fn send(&mut self, event: StreamEvent) -> Result<(), String> {
        let out = match event {
            StreamEvent::Snapshot { upper, rows, .. } => {
                let rows: Vec<(Row, i64)> = rows.into_iter().map(|r| (r, 1)).collect();
                messages(self.sub, self.envelope, upper, &rows, true)
            }
            StreamEvent::Changes { upper, changes, .. } => {
                messages(self.sub, self.envelope, upper, &changes, false)
            }
            StreamEvent::Progress(_) => return Ok(()),
            StreamEvent::Overflow(_) => return Err("the sink fell behind".into()),
            StreamEvent::Error(e) => return Err(e),
        };
        send(&self.producer, self.topic, out).await
    }
}
