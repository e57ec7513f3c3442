//! Kafka sinks: a `TYPE sink` pipe with `EXPORT_KAFKA_TOPIC` writes its changes to the topic
//! continuously, as data lands.
//!
//! Each message is `{"ts": T, "diff": ±n, "row": {..}}`, keyed by the JSON of the row's
//! GROUP BY columns (so a compacted topic keeps one message per key's latest change). The
//! sink starts with the whole current result as `"snapshot": true` messages (`diff` 1), then
//! sends changes. Delivery is at least once: each batch is acknowledged by the brokers before
//! the next one is read; after a restart (or if the sink falls behind the view's change ring)
//! the whole result is sent again as a snapshot, so consumers that keep state reset on
//! `"snapshot": true`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use petrel_value::Row;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::broadcast::error::RecvError;

use crate::ingest::kafka::client_config;
use crate::project::{KafkaConnection, KafkaSink};
use crate::runtime::{Runtime, Subscription};

/// Starts a task for every Kafka sink pipe of the project.
pub fn start_sinks(runtime: &Arc<Runtime>) {
    let project = runtime.project();
    for pipe in project.pipes.values().filter(|p| p.broken.is_none()) {
        let Some(sink) = pipe.sink.clone() else {
            continue;
        };
        let Some(conn) = project.connections.get(&sink.connection).cloned() else {
            tracing::error!(pipe = %pipe.name, connection = %sink.connection, "unknown Kafka connection");
            continue;
        };
        let (rt, name) = (runtime.clone(), pipe.name.clone());
        tokio::spawn(async move {
            loop {
                if let Err(e) = run(&rt, &name, &sink, &conn).await {
                    tracing::warn!(pipe = %name, error = %e, "Kafka sink restarting");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

fn message(sub: &Subscription, ts: u64, row: &Row, diff: i64, snapshot: bool) -> (String, String) {
    let mut obj = serde_json::Map::new();
    for (c, v) in sub.columns.iter().zip(row) {
        obj.insert(c.name.clone(), v.to_json());
    }
    let mut key = serde_json::Map::new();
    for &i in sub.upsert_key() {
        key.insert(sub.columns[i].name.clone(), row[i].to_json());
    }
    let mut body = serde_json::json!({"ts": ts, "diff": diff, "row": obj});
    if snapshot {
        body["snapshot"] = serde_json::Value::Bool(true);
    }
    (serde_json::Value::Object(key).to_string(), body.to_string())
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    messages: Vec<(String, String)>,
) -> Result<(), String> {
    let deliveries: Vec<_> = messages
        .iter()
        .map(|(k, v)| {
            producer.send(
                FutureRecord::to(topic).key(k).payload(v),
                Duration::from_secs(10),
            )
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
    let producer: FutureProducer = client_config(conn)
        .set("message.timeout.ms", "10000")
        .set("linger.ms", "1")
        .create()
        .map_err(|e| e.to_string())?;
    let sub = runtime
        .subscribe(pipe, &BTreeMap::new())
        .await
        .map_err(|e| e.to_string())?;
    let snapshot = |sub: &Subscription| {
        let (snap, rx) = sub.view.subscribe(sub.key());
        let rows = sub.rows(snap.rows);
        let messages = rows
            .iter()
            .map(|r| message(sub, snap.upper, r, 1, true))
            .collect();
        (messages, rx)
    };
    let (messages, mut rx) = snapshot(&sub);
    send(&producer, &sink.topic, messages).await?;
    loop {
        match rx.recv().await {
            Ok(batch) => {
                let messages = sub
                    .changes(&batch)
                    .iter()
                    .map(|(r, d)| message(&sub, batch.upper, r, *d, false))
                    .collect();
                send(&producer, &sink.topic, messages).await?;
            }
            Err(RecvError::Lagged(_)) => {
                let (messages, fresh) = snapshot(&sub);
                rx = fresh;
                send(&producer, &sink.topic, messages).await?;
            }
            Err(RecvError::Closed) => return Err("the view was dropped".into()),
        }
    }
}
