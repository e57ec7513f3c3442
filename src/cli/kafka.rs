//! `petrel connection create kafka` and `petrel datasource create --kafka`: the seed's
//! workflow for Kafka sources: write a connection file, then sample a topic and write a
//! datasource whose schema fits its JSON messages.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use petrel_value::{time, ColumnType};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{project_dir, CliError};
use crate::project::{KafkaConnection, Project};

/// Options of `petrel connection create kafka NAME`.
#[derive(Args, Debug)]
pub struct ConnectionArgs {
    /// The connection's name (the file is `connections/NAME.connection`).
    name: String,
    /// The project folder.
    #[arg(long)]
    project: Option<PathBuf>,
    /// `host:port[,host:port]`.
    #[arg(long)]
    bootstrap_servers: String,
    /// PLAINTEXT, SASL_PLAINTEXT or SASL_SSL.
    #[arg(long, default_value = "PLAINTEXT")]
    security_protocol: String,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long)]
    sasl_mechanism: Option<String>,
    /// The SASL user, stored as `tb_secret("KAFKA_KEY")`.
    #[arg(long)]
    key: bool,
}

/// Writes a `.connection` file; secrets are referenced with `tb_secret`, never written.
pub fn create_connection(args: ConnectionArgs) -> Result<(), CliError> {
    let dir = project_dir(args.project).join("connections");
    let file = dir.join(format!("{}.connection", args.name));
    if file.exists() {
        return Err(CliError::Failed(format!(
            "{} already exists",
            file.display()
        )));
    }
    let protocol = args.security_protocol.to_ascii_uppercase();
    if !matches!(
        protocol.as_str(),
        "PLAINTEXT" | "SASL_PLAINTEXT" | "SASL_SSL"
    ) {
        return Err(CliError::Failed(format!(
            "unknown security protocol {protocol}"
        )));
    }
    let mut text = format!(
        "TYPE kafka\nKAFKA_BOOTSTRAP_SERVERS {{{{ tb_secret(\"KAFKA_SERVERS\", \"{}\") }}}}\nKAFKA_SECURITY_PROTOCOL {protocol}\n",
        args.bootstrap_servers
    );
    if let Some(m) = args.sasl_mechanism {
        text.push_str(&format!("KAFKA_SASL_MECHANISM {m}\n"));
    }
    if args.key || protocol.starts_with("SASL") {
        text.push_str("KAFKA_KEY {{ tb_secret(\"KAFKA_KEY\") }}\nKAFKA_SECRET {{ tb_secret(\"KAFKA_SECRET\") }}\n");
    }
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&file, text))
        .map_err(|e| CliError::Failed(e.to_string()))?;
    println!("✓ {} created", file.display());
    Ok(())
}

/// Options of `petrel datasource create --kafka`.
#[derive(Args, Debug)]
pub struct DatasourceCreateArgs {
    /// Read a Kafka topic.
    #[arg(long, required = true)]
    kafka: bool,
    /// The connection to use.
    #[arg(long)]
    connection: String,
    /// The topic to sample.
    #[arg(long)]
    topic: String,
    /// The datasource's name (default: the topic).
    #[arg(long)]
    name: Option<String>,
    /// The project folder.
    #[arg(long)]
    project: Option<PathBuf>,
    /// How many messages to sample.
    #[arg(long, default_value_t = 100)]
    sample: usize,
}

/// The narrowest type that fits every sampled value of a JSON path.
fn infer(values: &[&serde_json::Value]) -> ColumnType {
    use serde_json::Value as J;
    let nullable = values.iter().any(|v| v.is_null());
    let present: Vec<&&J> = values.iter().filter(|v| !v.is_null()).collect();
    let base = if present.iter().all(|v| v.is_boolean()) && !present.is_empty() {
        ColumnType::Bool
    } else if present.iter().all(|v| v.is_u64()) && !present.is_empty() {
        ColumnType::UInt(64)
    } else if present.iter().all(|v| v.is_i64() || v.is_u64()) && !present.is_empty() {
        ColumnType::Int(64)
    } else if present.iter().all(|v| v.is_number()) && !present.is_empty() {
        ColumnType::Float64
    } else if present.iter().all(|v| {
        v.as_str()
            .is_some_and(|s| time::parse_datetime(s, 0).is_some() && s.len() >= 19)
    }) && !present.is_empty()
    {
        ColumnType::DateTime
    } else if present.iter().all(|v| v.is_array()) && !present.is_empty() {
        ColumnType::Array(Box::new(ColumnType::String))
    } else {
        ColumnType::String
    };
    if nullable {
        ColumnType::Nullable(Box::new(base))
    } else {
        base
    }
}

/// Samples the topic and writes `datasources/NAME.datasource`.
pub fn create_datasource(args: DatasourceCreateArgs) -> Result<(), CliError> {
    let root = project_dir(args.project);
    let project = Project::load(&root).map_err(|e| CliError::Failed(e.join("\n")))?;
    let conn: &KafkaConnection = project.connections.get(&args.connection).ok_or_else(|| {
        CliError::Failed(format!(
            "no Kafka connection '{}' in the project",
            args.connection
        ))
    })?;
    let consumer: BaseConsumer = conn
        .client_config()
        .set("group.id", "petrel-sample")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let metadata = consumer
        .fetch_metadata(Some(&args.topic), Duration::from_secs(10))
        .map_err(|e| CliError::Failed(format!("cannot reach the brokers: {e}")))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.name() == args.topic) {
        for p in t.partitions() {
            tpl.add_partition_offset(&args.topic, p.id(), Offset::Beginning)
                .map_err(|e| CliError::Failed(e.to_string()))?;
        }
    }
    if tpl.count() == 0 {
        return Err(CliError::Failed(format!(
            "topic '{}' not found",
            args.topic
        )));
    }
    consumer
        .assign(&tpl)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let mut samples: Vec<serde_json::Map<String, serde_json::Value>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while samples.len() < args.sample && Instant::now() < deadline {
        let Some(Ok(msg)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        if let Some(Ok(serde_json::Value::Object(obj))) = msg.payload().map(serde_json::from_slice)
        {
            samples.push(obj);
        }
    }
    if samples.is_empty() {
        return Err(CliError::Failed(format!(
            "no JSON object messages in '{}' to infer a schema from",
            args.topic
        )));
    }
    let mut paths: BTreeMap<String, Vec<&serde_json::Value>> = BTreeMap::new();
    let null = serde_json::Value::Null;
    let keys: std::collections::BTreeSet<&String> = samples.iter().flat_map(|s| s.keys()).collect();
    for k in keys {
        paths.insert(
            k.clone(),
            samples.iter().map(|s| s.get(k).unwrap_or(&null)).collect(),
        );
    }
    let columns: Vec<String> = paths
        .iter()
        .map(|(k, values)| {
            let ty = infer(values);
            let path = if matches!(ty.base(), ColumnType::Array(_)) {
                format!("$.{k}[:]")
            } else {
                format!("$.{k}")
            };
            format!("    `{k}` {} `json:{path}`", ty.name())
        })
        .collect();
    let name = args
        .name
        .unwrap_or_else(|| args.topic.replace(['-', '.'], "_"));
    let text = format!(
        "DESCRIPTION >\n    Read from the Kafka topic {topic}; schema inferred from {n} messages.\n\nSCHEMA >\n{cols},\n    `__partition` Int16,\n    `__offset` Int64,\n    `__timestamp` DateTime\n\nKAFKA_CONNECTION_NAME {conn}\nKAFKA_TOPIC {topic}\nKAFKA_GROUP_ID petrel_{name}\nKAFKA_AUTO_OFFSET_RESET earliest\n",
        topic = args.topic,
        n = samples.len(),
        cols = columns.join(",\n"),
        conn = args.connection,
    );
    let dir = root.join("datasources");
    let file = dir.join(format!("{name}.datasource"));
    if file.exists() {
        return Err(CliError::Failed(format!(
            "{} already exists",
            file.display()
        )));
    }
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&file, text))
        .map_err(|e| CliError::Failed(e.to_string()))?;
    println!(
        "✓ {} created ({} columns from {} messages)",
        file.display(),
        paths.len(),
        samples.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_the_narrowest_type() {
        let j = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        let (a, b, c) = (j("1"), j("2"), j("-3"));
        assert_eq!(infer(&[&a, &b]), ColumnType::UInt(64));
        assert_eq!(infer(&[&a, &c]), ColumnType::Int(64));
        let (f, n) = (j("1.5"), j("null"));
        assert_eq!(infer(&[&a, &f]), ColumnType::Float64);
        assert_eq!(
            infer(&[&f, &n]),
            ColumnType::Nullable(Box::new(ColumnType::Float64))
        );
        let (t, s) = (j("\"2024-01-01 10:00:00\""), j("\"x\""));
        assert_eq!(infer(&[&t]), ColumnType::DateTime);
        assert_eq!(infer(&[&t, &s]), ColumnType::String);
    }
}
