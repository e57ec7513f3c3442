//! Kafka in and out against a real Kafka-protocol broker (Tansu, installed by
//! scripts/test.sh): a Kafka datasource feeds an endpoint and a WebSocket subscriber,
//! malformed messages land in quarantine with their partition and offset, a sink pipe's topic
//! equals the view's changes, and after a crash every message counts exactly once.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{client, Broker, Server, ADMIN};
use futures_util::StreamExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

fn project(broker: &Broker) -> std::path::PathBuf {
    let dir = common::temp_dir("kafka");
    for sub in ["connections", "datasources", "endpoints", "sinks"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(
        dir.join("connections/local_kafka.connection"),
        format!(
            "TYPE kafka\nKAFKA_BOOTSTRAP_SERVERS {}\nKAFKA_SECURITY_PROTOCOL PLAINTEXT\n",
            broker.address
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("datasources/kclicks.datasource"),
        "SCHEMA >\n    `user_id` UInt32 `json:$.user_id`,\n    `click_count` UInt32 `json:$.click_count`,\n    `country` String `json:$.country`,\n    `__partition` Int16,\n    `__offset` Int64\n\nKAFKA_CONNECTION_NAME local_kafka\nKAFKA_TOPIC clicks\nKAFKA_GROUP_ID petrel_test\nKAFKA_AUTO_OFFSET_RESET earliest\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("endpoints/by_country.pipe"),
        "NODE n\nSQL >\n    SELECT country, sum(click_count) AS clicks, count() AS events FROM kclicks GROUP BY country\n\nTYPE endpoint\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("sinks/country_sink.pipe"),
        "NODE n\nSQL >\n    SELECT country, sum(click_count) AS clicks FROM kclicks GROUP BY country\n\nTYPE sink\nEXPORT_CONNECTION_NAME local_kafka\nEXPORT_KAFKA_TOPIC country_changes\nEXPORT_SCHEDULE @on-demand\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("sinks/country_upserts.pipe"),
        "NODE n\nSQL >\n    SELECT country, count() AS events FROM kclicks GROUP BY country\n\nTYPE sink\nEXPORT_CONNECTION_NAME local_kafka\nEXPORT_KAFKA_TOPIC country_upserts\nEXPORT_SCHEDULE @on-demand\nEXPORT_KAFKA_ENVELOPE upsert\n",
    )
    .unwrap();
    dir
}

fn expected(total: u64) -> BTreeMap<String, (u64, u64)> {
    let mut m = BTreeMap::new();
    for i in 0..total {
        let e = m
            .entry(["DE", "US", "VN"][(i % 3) as usize].to_string())
            .or_insert((0, 0));
        e.0 += i % 3 + 1;
        e.1 += 1;
    }
    m
}

fn endpoint(server: &Server) -> BTreeMap<String, (u64, u64)> {
    let v: Value = client()
        .get(format!("{}/v0/pipes/by_country.json", server.url))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["country"].as_str().unwrap().to_string(),
                (r["clicks"].as_u64().unwrap(), r["events"].as_u64().unwrap()),
            )
        })
        .collect()
}

fn wait_for(server: &Server, want: &BTreeMap<String, (u64, u64)>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = endpoint(server);
        if &got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the endpoint never reached {want:?}; it has {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_in_and_out_exactly_once() {
    let broker = Broker::start();
    broker.create_topic("clicks", 2);
    broker.create_topic("country_changes", 1);
    broker.create_topic("country_upserts", 1);
    let dir = project(&broker);
    let server = tokio::task::spawn_blocking(move || Server::start_in(dir, &[]))
        .await
        .unwrap();

    common::produce_clicks(&broker.address, 0, 1000).await;
    let s = &server;
    tokio::task::block_in_place(|| wait_for(s, &expected(1000)));

    // The CLI writes a connection, samples the topic and infers a datasource that builds.
    let fresh = common::temp_dir("kafka-cli");
    let petrel = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "petrel {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let fresh_dir = fresh.to_str().unwrap();
    tokio::task::block_in_place(|| {
        petrel(&[
            "connection",
            "create",
            "kafka",
            "k2",
            "--project",
            fresh_dir,
            "--bootstrap-servers",
            &broker.address,
        ]);
        let out = petrel(&[
            "datasource",
            "create",
            "--kafka",
            "--connection",
            "k2",
            "--topic",
            "clicks",
            "--project",
            fresh_dir,
        ]);
        assert!(out.contains("3 columns"), "{out}");
        let ds = std::fs::read_to_string(fresh.join("datasources/clicks.datasource")).unwrap();
        assert!(ds.contains("`user_id` UInt64 `json:$.user_id`"), "{ds}");
        assert!(ds.contains("`country` String `json:$.country`"), "{ds}");
        assert!(ds.contains("KAFKA_TOPIC clicks"), "{ds}");
        petrel(&["build", fresh_dir]);
    });

    // A WebSocket subscriber sees the next messages land.
    let url = format!(
        "{}/v0/pipes/by_country.ws?token={ADMIN}",
        server.url.replace("http", "ws")
    );
    let mut ws = tokio_tungstenite::connect_async(url).await.unwrap().0;
    let snapshot: Value =
        serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    common::produce_clicks(&broker.address, 1000, 3).await;
    let changes = loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        if v["type"] == "changes" {
            break v;
        }
    };
    assert!(
        changes["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["diff"] == 1),
        "{changes}"
    );

    // A malformed message goes to quarantine with its partition and offset; consumption goes on.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to("clicks")
                .key("bad")
                .payload("{\"user_id\":\"x\"}")
                .partition(0),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    common::produce_clicks(&broker.address, 1003, 1997).await;
    tokio::task::block_in_place(|| wait_for(s, &expected(3000)));
    let q: Value = tokio::task::block_in_place(|| {
        client()
            .get(format!("{}/v0/sql", server.url))
            .bearer_auth(ADMIN)
            .query(&[("q", "SELECT c__error FROM kclicks_quarantine")])
            .send()
            .unwrap()
            .json()
            .unwrap()
    });
    let err = q["data"][0]["c__error"].to_string();
    assert!(err.contains("partition 0") && err.contains("offset"), "{q}");

    // The sink topic, folded as a client would, equals the view.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("group.id", "sink_reader")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("country_changes", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let want: BTreeMap<String, u64> = expected(3000).into_iter().map(|(k, v)| (k, v.0)).collect();
    let mut state: BTreeMap<String, u64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while state != want {
        assert!(
            Instant::now() < deadline,
            "sink topic folds to {state:?}, not {want:?}"
        );
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg.unwrap();
        let v: Value = serde_json::from_slice(msg.payload().unwrap()).unwrap();
        let country = v["row"]["country"].as_str().unwrap().to_string();
        assert_eq!(
            msg.key(),
            Some(json!({"country": country}).to_string().as_bytes())
        );
        if v["diff"].as_i64().unwrap() > 0 {
            state.insert(country, v["row"]["clicks"].as_u64().unwrap());
        } else if state.get(&country) == v["row"]["clicks"].as_u64().as_ref() {
            state.remove(&country);
        }
    }

    // The upsert sink, folded by key (a compacted topic's view), also equals the view.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("country_upserts", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let want: BTreeMap<String, u64> = expected(3000).into_iter().map(|(k, v)| (k, v.1)).collect();
    let mut latest: BTreeMap<String, u64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while latest != want {
        assert!(
            Instant::now() < deadline,
            "upsert topic folds to {latest:?}, not {want:?}"
        );
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg.unwrap();
        let key: Value = serde_json::from_slice(msg.key().unwrap()).unwrap();
        let country = key["country"].as_str().unwrap().to_string();
        match msg.payload() {
            Some(p) => {
                let row: Value = serde_json::from_slice(p).unwrap();
                latest.insert(country, row["events"].as_u64().unwrap());
            }
            None => {
                latest.remove(&country);
            }
        }
    }

    // Crash during consumption: after the restart every message counts exactly once.
    let producing = {
        let address = broker.address.clone();
        tokio::spawn(async move { common::produce_clicks(&address, 3000, 5000).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = tokio::task::block_in_place(|| server.stop());
    producing.await.unwrap();
    let server = tokio::task::spawn_blocking(move || Server::start_in(dir, &[]))
        .await
        .unwrap();
    let s = &server;
    tokio::task::block_in_place(|| wait_for(s, &expected(8000)));
}

/// Every message of partition 0 of `topic` from its beginning (until the topic is quiet).
fn topic_messages(address: &str, topic: &str) -> Vec<Value> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("group.id", "topic_counter")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(2) {
        if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
            let msg = msg.unwrap();
            out.push(serde_json::from_slice(msg.payload().unwrap_or(b"null")).unwrap());
            quiet_since = Instant::now();
        }
    }
    out
}

/// Deploys follow connectors without a restart: a deploy that adds a Kafka datasource starts
/// consuming its topic, and one that removes a sink pipe stops producing to its topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_start_consumers_and_stop_sinks() {
    let broker = Broker::start();
    broker.create_topic("clicks", 2);
    broker.create_topic("events_changes", 1);
    let dir = project(&broker);
    // The first version: an HTTP datasource with a sink, and no Kafka datasource yet.
    let kafka_ds = std::fs::read_to_string(dir.join("datasources/kclicks.datasource")).unwrap();
    for f in [
        "datasources/kclicks.datasource",
        "endpoints/by_country.pipe",
        "sinks/country_sink.pipe",
        "sinks/country_upserts.pipe",
    ] {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    std::fs::write(
        dir.join("datasources/events.datasource"),
        "SCHEMA >\n    `country` String `json:$.country`\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("sinks/events_sink.pipe"),
        "NODE n\nSQL >\n    SELECT country, count() AS events FROM events GROUP BY country\n\nTYPE sink\nEXPORT_CONNECTION_NAME local_kafka\nEXPORT_KAFKA_TOPIC events_changes\nEXPORT_SCHEDULE @on-demand\n",
    )
    .unwrap();
    let server = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || Server::start_in(dir, &[])
    })
    .await
    .unwrap();
    let post = |body: &str| {
        let r = client()
            .post(format!("{}/v0/events?name=events&wait=true", server.url))
            .bearer_auth(ADMIN)
            .body(body.to_string())
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().unwrap());
    };
    let address = broker.address.clone();
    tokio::task::block_in_place(|| {
        post("{\"country\": \"DE\"}\n{\"country\": \"US\"}");
        // The sink is running: its topic gets the result.
        let deadline = Instant::now() + Duration::from_secs(60);
        while topic_messages(&address, "events_changes").len() < 2 {
            assert!(Instant::now() < deadline, "the sink never produced");
        }
    });

    // The second version adds the Kafka datasource and its endpoint, and removes the sink.
    std::fs::write(dir.join("datasources/kclicks.datasource"), kafka_ds).unwrap();
    std::fs::write(
        dir.join("endpoints/by_country.pipe"),
        "NODE n\nSQL >\n    SELECT country, sum(click_count) AS clicks, count() AS events FROM kclicks GROUP BY country\n\nTYPE endpoint\n",
    )
    .unwrap();
    std::fs::remove_file(dir.join("sinks/events_sink.pipe")).unwrap();
    tokio::task::block_in_place(|| {
        let (code, out, err) = common::petrel(&[
            "deploy",
            dir.to_str().unwrap(),
            "--host",
            &server.url,
            "--token",
            ADMIN,
        ]);
        assert_eq!(code, 0, "deploy: {out} {err}");
    });

    // The new datasource consumes its topic without a restart.
    common::produce_clicks(&broker.address, 0, 300).await;
    let s = &server;
    tokio::task::block_in_place(|| wait_for(s, &expected(300)));

    // The removed sink produces no more: new rows change the result it used to publish, and
    // its topic stays as it was.
    tokio::task::block_in_place(|| {
        let before = topic_messages(&address, "events_changes");
        post("{\"country\": \"VN\"}\n{\"country\": \"DE\"}");
        std::thread::sleep(Duration::from_secs(1));
        let after = topic_messages(&address, "events_changes");
        assert_eq!(after, before, "a removed sink kept producing");
    });
}
