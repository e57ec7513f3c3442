//! Kafka ingest rows/s into the demo pipe, and produce-to-sink latency, against a real Tansu
//! broker on loopback.
//!
//! `PETREL_TANSU=/path/to/tansu cargo bench --bench kafka` (env: ROWS, PROBES). The test script
//! installs the broker; `scripts/test.sh` prints its path in `PETREL_TANSU`.

#[path = "support.rs"]
mod support;

use support::env;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

fn main() {
    let Ok(tansu) = std::env::var("PETREL_TANSU") else {
        eprintln!("kafka bench: set PETREL_TANSU to the Tansu broker binary");
        return;
    };
    let rows = env::<u64>("ROWS", 500_000);
    let probes = env::<u64>("PROBES", 200);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let mut broker = Command::new(&tansu)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu starts");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (topic, partitions) in [("clicks", "2"), ("clicks_by_country", "1")] {
        Command::new(&tansu)
            .args([
                "topic",
                "create",
                topic,
                "--partitions",
                partitions,
                "--broker",
                &url,
            ])
            .status()
            .unwrap();
    }
    let address = format!("127.0.0.1:{port}");
    // The demo's connection reads the brokers from KAFKA_SERVERS.
    std::env::set_var("KAFKA_SERVERS", &address);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &address)
            .set("linger.ms", "5")
            .create()
            .unwrap();
        let countries = ["US", "DE", "VN", "FR", "ES", "IT", "JP", "BR"];
        let started = Instant::now();
        let mut pending = Vec::new();
        for i in 0..rows {
            let body = format!("{{\"user_id\":{},\"click_count\":1,\"country\":\"{}\"}}", i % 10_000, countries[(i % 8) as usize]);
            pending.push(producer.send_result(FutureRecord::<(), _>::to("clicks").payload(&body)).unwrap());
            if pending.len() >= 10_000 {
                for p in pending.drain(..) {
                    p.await.unwrap().unwrap();
                }
            }
        }
        for p in pending.drain(..) {
            p.await.unwrap().unwrap();
        }
        println!("kafka: produced {rows} messages in {:.2}s", started.elapsed().as_secs_f64());

        let dir = support::project_copy("dataflows/clicks_kafka");
        let config = petrel::runtime::RuntimeConfig {
            engine: petrel_engine::EngineConfig { workers: 2, ..Default::default() },
            ..Default::default()
        };
        let (_url, runtime) = support::start(&dir, config).await;
        let consuming = Instant::now();
        petrel::host::follow_connectors(&runtime);
        loop {
            let total: u64 = runtime.row_count("clicks").unwrap_or(0);
            if total >= rows {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secs = consuming.elapsed().as_secs_f64();
        println!("kafka ingest: {rows} messages consumed into the demo (3 views) in {secs:.2}s = {:.0} rows/s", rows as f64 / secs);

        // Produce-to-sink latency: each probe is a new country, so the sink's message for it
        // is unambiguous.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &address)
            .set("group.id", "bench")
            .set("fetch.wait.max.ms", "5")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("clicks_by_country", 0, Offset::End).unwrap();
        consumer.assign(&tpl).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut sent: HashMap<String, Instant> = HashMap::new();
        let mut latencies = Vec::new();
        for p in 0..probes {
            let country = format!("P{p}");
            let body = format!("{{\"user_id\":1,\"click_count\":1,\"country\":\"{country}\"}}");
            sent.insert(country, Instant::now());
            producer.send(FutureRecord::<(), _>::to("clicks").payload(&body), Duration::from_secs(5)).await.unwrap();
            let deadline = Instant::now() + Duration::from_millis(10);
            while Instant::now() < deadline || (p + 1 == probes && !sent.is_empty()) {
                let Some(Ok(msg)) = consumer.poll(Duration::from_millis(1)) else {
                    if p + 1 == probes && Instant::now() > deadline + Duration::from_secs(5) {
                        break;
                    }
                    continue;
                };
                let v: serde_json::Value = serde_json::from_slice(msg.payload().unwrap_or_default()).unwrap_or_default();
                if let Some(c) = v["row"]["country"].as_str() {
                    if let Some(t) = sent.remove(c) {
                        latencies.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
        }
        latencies.sort_by(|a, b| a.total_cmp(b));
        println!(
            "kafka produce-to-sink latency: {} probes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            latencies.len(),
            support::percentile(&latencies, 0.5),
            support::percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(0.0)
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
    let _ = broker.kill();
    let _ = broker.wait();
}
