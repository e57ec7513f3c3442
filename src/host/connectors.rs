//! Connectors follow deploys: one consumer per Kafka datasource, one producer task per Kafka
//! sink pipe, reconciled with the project every time it changes (at start, `deploy`, `dev`).
//!
//! A connector whose declaration is unchanged keeps running (its offsets and its
//! subscription stay where they are); one whose datasource, pipe or connection changed is
//! stopped and started again on the new declaration; one whose datafile is gone is stopped.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::kafka_consumer::Consumer;
use crate::project::{KafkaConnection, KafkaSink, KafkaSource, Pipe, Project};
use crate::runtime::Runtime;

/// What a consumer was started from: a change to any of it restarts the consumer.
#[derive(PartialEq)]
struct ConsumerSpec {
    source: KafkaSource,
    conn: KafkaConnection,
    columns: Vec<petrel_value::Column>,
}

/// What a sink was started from.
struct SinkSpec {
    sink: KafkaSink,
    conn: KafkaConnection,
    pipe: Pipe,
}

impl PartialEq for SinkSpec {
    fn eq(&self, other: &SinkSpec) -> bool {
        self.sink == other.sink && self.conn == other.conn && self.pipe.same_definition(&other.pipe)
    }
}

/// The connectors running now.
#[derive(Default)]
struct Running {
    consumers: BTreeMap<String, (ConsumerSpec, Consumer)>,
    sinks: BTreeMap<String, (SinkSpec, tokio::task::JoinHandle<()>)>,
}

/// Starts the project's connectors and keeps them in step with every later deploy, until the
/// runtime is gone. A replica runs none (the writer consumes and produces).
pub fn follow_connectors(runtime: &Arc<Runtime>) {
    if runtime.is_replica() {
        return;
    }
    let mut projects = runtime.watch_project();
    let weak = Arc::downgrade(runtime);
    tokio::spawn(async move {
        let mut running = Running::default();
        loop {
            let project = projects.borrow_and_update().clone();
            let Some(runtime) = weak.upgrade() else {
                break;
            };
            running = reconcile(&runtime, running, &project).await;
            drop(runtime);
            if projects.changed().await.is_err() {
                break;
            }
        }
        stop_all(running).await;
    });
}

fn consumer_specs(project: &Project) -> BTreeMap<String, ConsumerSpec> {
    let mut out = BTreeMap::new();
    for ds in project.datasources.values() {
        let Some(source) = ds.kafka.clone() else {
            continue;
        };
        let Some(conn) = project.connections.get(&source.connection).cloned() else {
            tracing::error!(datasource = %ds.name, connection = %source.connection, "unknown Kafka connection");
            continue;
        };
        let columns = ds.columns.iter().map(|c| c.column.clone()).collect();
        out.insert(
            ds.name.clone(),
            ConsumerSpec {
                source,
                conn,
                columns,
            },
        );
    }
    out
}

fn sink_specs(project: &Project) -> BTreeMap<String, SinkSpec> {
    let mut out = BTreeMap::new();
    for pipe in project.pipes.values().filter(|p| p.broken.is_none()) {
        let Some(sink) = pipe.sink.clone() else {
            continue;
        };
        let Some(conn) = project.connections.get(&sink.connection).cloned() else {
            tracing::error!(pipe = %pipe.name, connection = %sink.connection, "unknown Kafka connection");
            continue;
        };
        out.insert(
            pipe.name.clone(),
            SinkSpec {
                sink,
                conn,
                pipe: pipe.clone(),
            },
        );
    }
    out
}

/// Stops what the project no longer declares (or declares differently), starts what it
/// declares and is not running.
async fn reconcile(runtime: &Arc<Runtime>, mut running: Running, project: &Project) -> Running {
    let mut wanted = consumer_specs(project);
    let mut stopping = Vec::new();
    for (name, (spec, consumer)) in std::mem::take(&mut running.consumers) {
        match wanted.remove(&name) {
            Some(new) if new == spec => {
                running.consumers.insert(name, (spec, consumer));
            }
            new => {
                tracing::info!(datasource = %name, "Kafka consumer stops (deploy)");
                stopping.push(consumer);
                if let Some(new) = new {
                    wanted.insert(name, new);
                }
            }
        }
    }
    // A restarted consumer starts only once the old one has stopped, so the two never write
    // offsets for the same datasource at once.
    if !stopping.is_empty() {
        let _ = tokio::task::spawn_blocking(move || stopping.into_iter().for_each(Consumer::stop))
            .await;
    }
    for (name, spec) in wanted {
        match Consumer::start(runtime, &name, spec.source.clone(), spec.conn.clone()) {
            Ok(consumer) => {
                tracing::info!(datasource = %name, topic = %spec.source.topic, "Kafka consumer starts");
                running.consumers.insert(name, (spec, consumer));
            }
            Err(e) => {
                tracing::error!(datasource = %name, error = %e, "cannot start the Kafka consumer")
            }
        }
    }

    // A cluster's views are published on process 0: its sinks run there alone.
    let follower = runtime.following().is_some();
    let mut wanted = if follower {
        BTreeMap::new()
    } else {
        sink_specs(project)
    };
    for (name, (spec, task)) in std::mem::take(&mut running.sinks) {
        match wanted.remove(&name) {
            Some(new) if new == spec => {
                running.sinks.insert(name, (spec, task));
            }
            new => {
                tracing::info!(pipe = %name, "Kafka sink stops (deploy)");
                task.abort();
                let _ = task.await;
                if let Some(new) = new {
                    wanted.insert(name, new);
                }
            }
        }
    }
    for (name, spec) in wanted {
        tracing::info!(pipe = %name, topic = %spec.sink.topic, "Kafka sink starts");
        let task = crate::sink::kafka::start(runtime, &name, spec.sink.clone(), spec.conn.clone());
        running.sinks.insert(name, (spec, task));
    }
    running
}

async fn stop_all(running: Running) {
    for (_, (_, task)) in running.sinks {
        task.abort();
    }
    let consumers: Vec<Consumer> = running.consumers.into_values().map(|(_, c)| c).collect();
    let _ =
        tokio::task::spawn_blocking(move || consumers.into_iter().for_each(Consumer::stop)).await;
}
