//! Kafka datasources: a consumer per datasource turns JSON messages into rows and appends
//! them to the runtime.
//!
//! Exactly once into Petrel: each batch of rows is written to the datasource's log in one
//! record together with the next offset of every partition, and synced, before the offsets
//! are committed to the consumer group (which is only for monitoring). On start the consumer
//! resumes from the offsets in the log, so after a crash no message is lost and none counts
//! twice. A message that does not fit the schema goes to `NAME_quarantine` with its topic,
//! partition and offset, and consumption goes on. Backpressure: the next batch is read only
//! once the previous one is visible in every view, so a slow engine slows consumption and
//! memory does not grow.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use petrel_value::{Row, Value};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::ingest::quarantine_row;
use crate::project::{KafkaConnection, KafkaSource};
use crate::runtime::Runtime;

/// Most messages read into one batch.
const BATCH: usize = 10_000;

/// A running consumer: its thread, and the switch that stops it.
pub struct Consumer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Consumer {
    /// Starts a consumer thread for Kafka datasource `datasource`: it reads `source`'s topic
    /// through `conn` and retries (every second) whatever fails, until stopped.
    pub fn start(
        runtime: &Arc<Runtime>,
        datasource: &str,
        source: KafkaSource,
        conn: KafkaConnection,
    ) -> std::io::Result<Consumer> {
        let stop = Arc::new(AtomicBool::new(false));
        let (rt, name, stopped) = (runtime.clone(), datasource.to_string(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("kafka-{name}"))
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    if let Err(e) = consume(&rt, &name, &source, &conn, &stopped) {
                        tracing::warn!(datasource = %name, error = %e, "Kafka consumer restarting");
                    }
                    for _ in 0..10 {
                        if stopped.load(Ordering::Relaxed) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })?;
        Ok(Consumer { stop, thread })
    }

    /// Stops the consumer and waits for its thread: a batch it was writing is either in the
    /// log with its offsets or not at all, and no batch follows.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Offsets as stored in the log: partition → next offset to read.
type Offsets = BTreeMap<i32, i64>;

fn consume(
    runtime: &Runtime,
    datasource: &str,
    source: &KafkaSource,
    conn: &KafkaConnection,
    stopped: &AtomicBool,
) -> Result<(), String> {
    // Consumer threads are not the server's: a small runtime of their own waits for views.
    let waiter = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let consumer: BaseConsumer = conn
        .client_config()
        .set("group.id", &source.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // Fetches return as soon as data is there: latency, not batching, is the goal here.
        .set("fetch.wait.max.ms", "10")
        .create()
        .map_err(|e| e.to_string())?;
    let metadata = consumer
        .fetch_metadata(Some(&source.topic), Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == source.topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(format!("topic '{}' has no partitions yet", source.topic));
    }
    // In a cluster, process i of n reads partitions p with p mod n = i, and keeps their
    // offsets in its own log with their rows.
    let partitions: Vec<i32> = match runtime.cluster() {
        Some(role) => partitions
            .into_iter()
            .filter(|p| (*p as usize) % role.members.len() == role.process)
            .collect(),
        None => partitions,
    };
    if partitions.is_empty() {
        // More processes than partitions: this one has none to read.
        while !stopped.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
        return Ok(());
    }
    let mut offsets: Offsets = runtime
        .source_meta(datasource)
        .and_then(|m| serde_json::from_slice(&m).ok())
        .unwrap_or_default();
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        let start = match offsets.get(p) {
            Some(o) => Offset::Offset(*o),
            None if source.auto_offset_reset.eq_ignore_ascii_case("earliest") => Offset::Beginning,
            None => Offset::End,
        };
        assignment
            .add_partition_offset(&source.topic, *p, start)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&assignment).map_err(|e| e.to_string())?;
    let columns = runtime.table_columns(datasource).unwrap_or_default();
    let meta_column = |name: &str| columns.iter().position(|c| c.name == name);
    let meta_at = [
        meta_column("__topic"),
        meta_column("__partition"),
        meta_column("__offset"),
        meta_column("__timestamp"),
        meta_column("__key"),
        meta_column("__value"),
        meta_column("__headers"),
    ];
    while !stopped.load(Ordering::Relaxed) {
        let mut rows: Vec<Row> = Vec::new();
        let mut bad: Vec<Row> = Vec::new();
        let import_id = runtime.next_import_id();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut wait = Duration::from_millis(100);
        while rows.len() + bad.len() < BATCH {
            let Some(result) = consumer.poll(wait) else {
                break;
            };
            wait = Duration::from_millis(5);
            let msg = result.map_err(|e| e.to_string())?;
            offsets.insert(msg.partition(), msg.offset() + 1);
            let payload = msg
                .payload()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let located = format!(
                "topic {} partition {} offset {}",
                msg.topic(),
                msg.partition(),
                msg.offset()
            );
            match runtime.decode(datasource, &payload) {
                Ok(mut row) => {
                    let key = msg
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default();
                    let headers: Vec<(Value, Value)> = msg
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| {
                                    let v = h
                                        .value
                                        .map(|v| String::from_utf8_lossy(v).into_owned())
                                        .unwrap_or_default();
                                    (Value::from(h.key), Value::from(v))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let values = [
                        Value::from(msg.topic()),
                        Value::Int(msg.partition() as i64),
                        Value::Int(msg.offset()),
                        Value::DateTime(msg.timestamp().to_millis().unwrap_or(0) / 1000),
                        Value::from(key),
                        Value::from(payload.as_ref()),
                        Value::Map(headers.into()),
                    ];
                    for (at, v) in meta_at.iter().zip(values) {
                        if let Some(i) = at {
                            row[*i] = columns[*i].ty.coerce(&v).unwrap_or(v);
                        }
                    }
                    rows.push(row);
                }
                Err(mut rejected) => {
                    for e in &mut rejected.errors {
                        e.message = format!("{} ({located})", e.message);
                    }
                    if rejected.raw.len() < columns.len() {
                        rejected.raw.resize(columns.len(), None);
                    }
                    bad.push(quarantine_row(&rejected, &import_id, now));
                }
            }
        }
        if rows.is_empty() && bad.is_empty() {
            continue;
        }
        let meta = serde_json::to_vec(&offsets).map_err(|e| e.to_string())?;
        let ts = runtime
            .append_rows(datasource, rows, bad, &meta)
            .map_err(|e| e.to_string())?;
        // Durable and visible before the group hears of it, and before the next batch.
        waiter
            .block_on(runtime.wait_durable_and_visible(datasource, ts))
            .map_err(|e| e.to_string())?;
        let mut commit = TopicPartitionList::new();
        for (p, o) in &offsets {
            let _ = commit.add_partition_offset(&source.topic, *p, Offset::Offset(*o));
        }
        let _ = consumer.commit(&commit, CommitMode::Async);
    }
    Ok(())
}
