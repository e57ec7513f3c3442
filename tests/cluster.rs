//! A three-process cluster on loopback (one worker each) over a real S3-compatible server and
//! a real Kafka-protocol broker, against a single-process server given the same rows and
//! against ClickHouse: every endpoint on every process answers as one process does; a
//! subscription on one process sees rows written through another; a deploy sent to a
//! follower changes what every process answers; and after one process is SIGKILLed during
//! `wait=true` ingest, the others report it, and the restarted cluster holds every
//! acknowledged row exactly once; a read replica follows the cluster's storage.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client, unused_port, Broker, S3Server, Server, ADMIN};
use serde_json::{json, Value};

/// The id of the one row in country `ZZ`, written while a subscriber watches.
const ZZ: u64 = 9_999_999;

/// The row with id `id`: skewed users (a few hundred heavy ones among 20k), five countries.
fn row(id: u64) -> Value {
    if id == ZZ {
        return json!({"id": ZZ, "user_id": 1, "country": "ZZ", "amount": 5});
    }
    let r = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33;
    let user = if r.is_multiple_of(4) {
        r % 300
    } else {
        r % 20_000
    };
    let country = ["DE", "US", "VN", "FR", "BR"][(r % 5) as usize];
    json!({"id": id, "user_id": user, "country": country, "amount": (r % 97) as i64 - 20})
}

fn ndjson(ids: impl Iterator<Item = u64>) -> String {
    ids.map(|i| row(i).to_string() + "\n").collect()
}

const BY_COUNTRY: &str = "NODE n\nSQL >\n    SELECT country, count() AS events, sum(amount) AS amount, uniqExact(user_id) AS users\n    FROM events GROUP BY country ORDER BY country\n\nTYPE endpoint\n";

const BY_COUNTRY_V2: &str = "NODE n\nSQL >\n    SELECT country, count() AS events, sum(amount) AS total, max(amount) AS top\n    FROM events GROUP BY country ORDER BY country\n\nTYPE endpoint\n";

fn project_files(broker: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "connections/local_kafka.connection".to_string(),
            format!("TYPE kafka\nKAFKA_BOOTSTRAP_SERVERS {broker}\nKAFKA_SECURITY_PROTOCOL PLAINTEXT\n"),
        ),
        (
            "datasources/events.datasource".to_string(),
            "SCHEMA >\n    `id` UInt64 `json:$.id`,\n    `user_id` UInt32 `json:$.user_id`,\n    `country` String `json:$.country`,\n    `amount` Int64 `json:$.amount`\n".to_string(),
        ),
        (
            "datasources/kclicks.datasource".to_string(),
            "SCHEMA >\n    `user_id` UInt32 `json:$.user_id`,\n    `click_count` UInt32 `json:$.click_count`,\n    `country` String `json:$.country`,\n    `__partition` Int16,\n    `__offset` Int64\n\nKAFKA_CONNECTION_NAME local_kafka\nKAFKA_TOPIC clicks\nKAFKA_GROUP_ID petrel_cluster\nKAFKA_AUTO_OFFSET_RESET earliest\n".to_string(),
        ),
        ("endpoints/by_country.pipe".to_string(), BY_COUNTRY.to_string()),
        (
            "endpoints/top_users.pipe".to_string(),
            "NODE n\nSQL >\n    %\n    SELECT user_id, sum(amount) AS total, count() AS events\n    FROM events WHERE country = {{String(country, 'DE')}}\n    GROUP BY user_id ORDER BY total DESC, user_id LIMIT 7\n\nTYPE endpoint\n".to_string(),
        ),
        (
            "endpoints/kafka_by_country.pipe".to_string(),
            "NODE n\nSQL >\n    SELECT country, sum(click_count) AS clicks, count() AS events\n    FROM kclicks GROUP BY country ORDER BY country\n\nTYPE endpoint\n".to_string(),
        ),
    ])
}

fn write_project(dir: &std::path::Path, files: &BTreeMap<String, String>) {
    for (path, text) in files {
        let target = dir.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, text).unwrap();
    }
}

/// Writes `hosts`: three processes on loopback, each with a cluster port and an HTTP port
/// ([`common::unused_port`]).
fn write_hosts(hosts: &std::path::Path) {
    let lines: String = (0..3)
        .map(|_| {
            format!(
                "127.0.0.1:{} http://127.0.0.1:{}\n",
                unused_port(),
                unused_port()
            )
        })
        .collect();
    std::fs::write(hosts, lines).unwrap();
}

/// Starts the three processes of `hosts` over `dir` and `storage`; returns them in order. A
/// port picked free can be taken by another program before its process binds it; that
/// process then exits and the others wait for it, so a start that does not complete within a
/// minute is stopped and tried again on new ports (`hosts` rewritten).
fn start_cluster(
    dir: &std::path::Path,
    hosts: &std::path::Path,
    storage: &str,
    env: &[(String, String)],
) -> Vec<Server> {
    for _ in 0..3 {
        let starts: Vec<_> = (0..3)
            .map(|i| {
                let (dir, hosts, storage, env) = (
                    dir.to_path_buf(),
                    hosts.to_string_lossy().into_owned(),
                    storage.to_string(),
                    env.to_vec(),
                );
                std::thread::spawn(move || {
                    let process = i.to_string();
                    Server::try_run_env(
                        &["cluster", "start"],
                        dir,
                        &[
                            "--hosts",
                            &hosts,
                            "--process",
                            &process,
                            "--storage",
                            &storage,
                            "--workers",
                            "1",
                        ],
                        &env,
                        Duration::from_secs(60),
                    )
                })
            })
            .collect();
        let started: Vec<Option<Server>> = starts.into_iter().map(|s| s.join().unwrap()).collect();
        if started.iter().all(Option::is_some) {
            return started.into_iter().flatten().collect();
        }
        for server in started.into_iter().flatten() {
            server.stop();
        }
        write_hosts(hosts);
    }
    panic!("the cluster did not start in three attempts");
}

fn post_events(url: &str, body: String) -> reqwest::Result<reqwest::blocking::Response> {
    client()
        .post(format!("{url}/v0/events?name=events&wait=true"))
        .bearer_auth(ADMIN)
        .body(body)
        .send()
}

fn read(url: &str, pipe: &str, query: &str) -> Value {
    let r = client()
        .get(format!("{url}/v0/pipes/{pipe}.json?{query}"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{pipe} on {url}");
    r.json().unwrap()
}

fn sql(url: &str, q: &str) -> Value {
    let r = client()
        .get(format!("{url}/v0/sql"))
        .query(&[("q", format!("{q} FORMAT JSON"))])
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{q} on {url}");
    r.json().unwrap()
}

/// Waits until `pipe`'s `events` column sums to `n` on `url`.
fn wait_for_events(url: &str, pipe: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let total: u64 = read(url, pipe, "")["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["events"].as_u64().unwrap())
            .sum();
        if total == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{pipe} on {url}: {total} of {n} events"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// by_country (after the deploy) recomputed from the rows themselves.
fn recompute(ids: &BTreeSet<u64>) -> Vec<Value> {
    let mut by: BTreeMap<String, (u64, i64, i64)> = BTreeMap::new();
    for &id in ids {
        let r = row(id);
        let amount = r["amount"].as_i64().unwrap();
        let e = by
            .entry(r["country"].as_str().unwrap().to_string())
            .or_insert((0, 0, i64::MIN));
        e.0 += 1;
        e.1 += amount;
        e.2 = e.2.max(amount);
    }
    by.into_iter()
        .map(|(c, (n, s, m))| json!({"country": c, "events": n, "total": s, "top": m}))
        .collect()
}

#[test]
fn a_three_process_cluster_answers_as_one_process_and_survives_a_lost_process() {
    let s3 = S3Server::start("petrel-cluster");
    let env = s3.env();
    let broker = Broker::start();
    broker.create_topic("clicks", 3);
    let files = project_files(&broker.address);
    let dir = common::temp_dir("cluster");
    write_project(&dir, &files);
    let hosts = dir.join("cluster.txt");
    write_hosts(&hosts);
    let storage = s3.url("cluster");
    let mut cluster = start_cluster(&dir, &hosts, &storage, &env);
    let single_dir = common::temp_dir("cluster-single");
    write_project(&single_dir, &files);
    let single = Server::run_env(
        &["local", "start"],
        single_dir,
        &["--storage", &s3.url("single"), "--workers", "2"],
        &env,
    );

    // Every process lists the whole cluster, ready and healthy.
    let status = common::get(&cluster[2], "/v0/cluster");
    assert_eq!(status["healthy"], true, "{status}");
    let listed = status["processes"].as_array().unwrap();
    assert_eq!(listed.len(), 3);
    for (i, p) in listed.iter().enumerate() {
        assert_eq!(p["process"], i);
        assert_eq!(p["ready"], true);
        assert_eq!(p["workers"], 1);
        assert_eq!(p["url"], cluster[i].url.as_str());
    }
    let (code, out, err) = common::petrel(&[
        "cluster",
        "status",
        "--host",
        &cluster[1].url,
        "--token",
        ADMIN,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.ends_with(" ok")).count(),
        3,
        "{out}"
    );

    // Rows through every process of the cluster, the same rows into the single server.
    for b in 0..10u64 {
        let body = ndjson(b * 300..(b + 1) * 300);
        let through = &cluster[(b % 3) as usize];
        assert_eq!(
            post_events(&through.url, body.clone()).unwrap().status(),
            200
        );
        assert_eq!(post_events(&single.url, body).unwrap().status(), 200);
    }
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(common::produce_clicks(&broker.address, 0, 900));
    wait_for_events(&cluster[0].url, "kafka_by_country", 900);
    wait_for_events(&single.url, "kafka_by_country", 900);
    wait_for_events(&cluster[2].url, "by_country", 3000);
    // Datasource listings count every process's rows, whichever process is asked.
    for p in &cluster {
        let described = common::get(p, "/v0/datasources/events");
        assert_eq!(described["row_count"], 3000, "{described}");
        let listed = common::get(p, "/v0/datasources");
        let events = listed["datasources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "events")
            .cloned()
            .unwrap();
        assert_eq!(events["statistics"]["row_count"], 3000, "{events}");
    }
    for (pipe, query) in [
        ("by_country", ""),
        ("top_users", "country=DE"),
        ("top_users", "country=VN"),
        ("kafka_by_country", ""),
    ] {
        let want = read(&single.url, pipe, query)["data"].clone();
        assert!(!want.as_array().unwrap().is_empty(), "{pipe}: rows");
        for (i, p) in cluster.iter().enumerate() {
            assert_eq!(
                read(&p.url, pipe, query)["data"],
                want,
                "{pipe}?{query} on process {i}"
            );
        }
    }
    // Every process's Kafka partitions were read: one of three each.
    let partitions = sql(
        &cluster[1].url,
        "SELECT DISTINCT __partition AS p FROM kclicks ORDER BY p",
    );
    assert_eq!(partitions["data"], json!([{"p": 0}, {"p": 1}, {"p": 2}]));
    // And ClickHouse computes the same from the same rows.
    let file = dir.join("events.ndjson");
    std::fs::write(&file, ndjson(0..3000)).unwrap();
    let spec = json!({
        "tables": {"events": "id UInt64, user_id UInt32, country String, amount Int64"},
        "checkpoints": [{
            "files": {"events": file},
            "queries": ["SELECT country, count() AS events, sum(amount) AS amount, uniqExact(user_id) AS users FROM events GROUP BY country ORDER BY country"],
        }],
    });
    let clickhouse: Value =
        serde_json::from_slice(&common::chdb_script("chdb_oracle.py", &spec)).unwrap();
    assert_eq!(
        read(&cluster[1].url, "by_country", "")["data"],
        clickhouse[0][0]
    );

    // A subscription on process 1 sees a row written through process 2.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!(
            "{}/v0/pipes/by_country.ws?token={ADMIN}",
            cluster[1].url.replace("http", "ws")
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("subscribes");
        let first = common::next_json(&mut ws).await;
        assert!(
            first.to_string().contains("\"DE\""),
            "a snapshot first: {first}"
        );
        let zz = ndjson([ZZ].into_iter());
        let through = cluster[2].url.clone();
        tokio::task::spawn_blocking(move || post_events(&through, zz).unwrap())
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let frame = common::next_json(&mut ws).await;
            if frame.to_string().contains("\"ZZ\"") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the change reached the subscriber"
            );
        }
    });
    // So does an SSE stream on process 2 (its first event is the snapshot).
    let mut sse = client()
        .get(format!(
            "{}/v0/pipes/by_country.sse?token={ADMIN}",
            cluster[2].url
        ))
        .send()
        .unwrap();
    assert_eq!(sse.status(), 200);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("ZZ") {
        let n = std::io::Read::read(&mut sse, &mut buf).unwrap();
        assert!(n > 0, "the stream stays open");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(sse);
    let mut acked: BTreeSet<u64> = (0..3000).chain([ZZ]).collect();

    // A token created through process 0's API after the followers started: a follower that
    // does not know it passes the write to process 0, which checks it and takes the rows;
    // a token without the scope is refused.
    let created: Value = client()
        .post(format!(
            "{}/v0/tokens?name=writer&scope=DATASOURCES:APPEND:events",
            cluster[1].url
        ))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let writer = created["token"].as_str().expect("a token").to_string();
    let write = |token: &str| {
        client()
            .post(format!(
                "{}/v0/events?name=events&wait=true",
                cluster[2].url
            ))
            .bearer_auth(token)
            .body(ndjson(3000..3010))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(write(&writer), 200);
    assert_eq!(write("not-a-token"), 403);
    acked.extend(3000..3010);

    // A deploy sent to a follower changes every process's answer.
    let mut changed = files.clone();
    changed.insert("endpoints/by_country.pipe".into(), BY_COUNTRY_V2.into());
    let r = client()
        .post(format!("{}/v1/deploy", cluster[1].url))
        .bearer_auth(ADMIN)
        .json(&json!({ "files": changed }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    for (i, p) in cluster.iter().enumerate() {
        assert_eq!(
            read(&p.url, "by_country", "")["data"],
            json!(recompute(&acked)),
            "process {i}"
        );
    }

    // A delete sent to a follower removes the matching rows from every process's share.
    let france: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|id| row(*id)["country"] == "FR")
        .collect();
    assert!(!france.is_empty());
    let deleted: Value = client()
        .post(format!("{}/v0/datasources/events/delete", cluster[2].url))
        .bearer_auth(ADMIN)
        .form(&[("delete_condition", "country = 'FR'")])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(deleted["deleted_rows"], france.len(), "{deleted}");
    for id in &france {
        acked.remove(id);
    }
    for (i, p) in cluster.iter().enumerate() {
        assert_eq!(
            read(&p.url, "by_country", "")["data"],
            json!(recompute(&acked)),
            "process {i}"
        );
    }

    // Sustained wait=true ingest through every process; process 1 is SIGKILLed meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let confirmed = Arc::new(Mutex::new(Vec::<u64>::new()));
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let (url, stop, confirmed) = (
                cluster[w as usize].url.clone(),
                stop.clone(),
                confirmed.clone(),
            );
            std::thread::spawn(move || {
                let mut next = 1_000_000 * (w + 1);
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<u64> = (next..next + 50).collect();
                    next += 50;
                    match post_events(&url, ndjson(ids.iter().copied())) {
                        Ok(r) if r.status() == 200 => confirmed.lock().unwrap().extend(ids),
                        _ => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let killed = cluster.remove(1);
    killed.stop();
    // The survivors notice within seconds and say so; they refuse writes.
    for p in &cluster {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = client().get(format!("{}/v0/health", p.url)).send().unwrap();
            if r.status() == 503 {
                let body: Value = r.json().unwrap();
                assert_eq!(body["status"], "failed");
                assert!(body["error"].as_str().unwrap().contains("lost a process"));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} reports the lost process",
                p.url
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let refused = post_events(&p.url, ndjson(5_000_000..5_000_001)).unwrap();
        assert_eq!(refused.status(), 503);
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let during = confirmed.lock().unwrap().clone();
    assert!(
        !during.is_empty(),
        "some writes were acknowledged before the kill"
    );
    acked.extend(during);
    for p in cluster.drain(..) {
        p.stop();
    }

    // The operator restarts the whole cluster: it recovers from the shared storage. Each
    // process says what its previous run stored (process 0 takes the least of these as
    // what survived everywhere, for subscribers that resume).
    let cluster = start_cluster(&dir, &hosts, &storage, &env);
    for p in &cluster {
        let local = common::get(p, "/v0/cluster/local");
        assert!(
            local["stored_frontier"].as_u64().unwrap_or(0) > 0,
            "{local}"
        );
    }
    let counts = sql(
        &cluster[2].url,
        "SELECT id, count() AS c FROM events GROUP BY id",
    );
    let mut present = BTreeSet::new();
    for r in counts["data"].as_array().unwrap() {
        assert_eq!(r["c"], 1, "row {} stored exactly once", r["id"]);
        present.insert(r["id"].as_u64().unwrap());
    }
    let lost: Vec<&u64> = acked.difference(&present).take(5).collect();
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
    for (i, p) in cluster.iter().enumerate() {
        assert_eq!(
            read(&p.url, "by_country", "")["data"],
            json!(recompute(&present)),
            "by_country after the restart, process {i}"
        );
    }
    wait_for_events(&cluster[1].url, "kafka_by_country", 900);

    // A read replica follows the cluster's storage, every process's share as one, and keeps
    // following rows written through any process.
    let replica = Server::run_env(
        &["local", "start"],
        dir.clone(),
        &[
            "--replica",
            "--cluster-processes",
            "3",
            "--storage",
            &storage,
        ],
        &env,
    );
    let more: Vec<u64> = (7_000_000..7_000_300).collect();
    for (i, chunk) in more.chunks(100).enumerate() {
        let r = post_events(&cluster[i].url, ndjson(chunk.iter().copied())).unwrap();
        assert_eq!(r.status(), 200);
    }
    present.extend(more);
    let want = json!(recompute(&present));
    assert_eq!(read(&cluster[0].url, "by_country", "")["data"], want);
    let deadline = Instant::now() + Duration::from_secs(30);
    while read(&replica.url, "by_country", "")["data"] != want {
        assert!(
            Instant::now() < deadline,
            "the replica caught up with the cluster"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for_events(&replica.url, "kafka_by_country", 900);

    // A truncate sent to a follower empties every process's share, and the replica follows.
    let truncated: Value = client()
        .post(format!("{}/v0/datasources/events/truncate", cluster[1].url))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(truncated["truncated_rows"], present.len(), "{truncated}");
    for p in cluster.iter().chain([&replica]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while read(&p.url, "by_country", "")["data"] != json!([]) {
            assert!(
                Instant::now() < deadline,
                "{} is empty after the truncate",
                p.url
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `petrel cluster start --local 2` on this machine: it prints each process's URL, the
/// processes form one cluster (rows written through process 1 are read on process 0), and
/// stopping the command stops both.
#[test]
fn a_local_cluster_starts_serves_and_stops_together() {
    use std::io::{BufRead, BufReader};
    let dir = common::copy_project_files("dataflows/clicks", "cluster-local");
    // `--local 2` takes `port` and `port + 1`, and the cluster's ports likewise.
    let port = common::unused_ports(2);
    let cluster_port = common::unused_ports(2);
    let log_path = std::env::temp_dir().join(format!("petrel-cluster-local-{port}.log"));
    let mut parent = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args([
            "cluster",
            "start",
            "--local",
            "2",
            "--workers",
            "1",
            "--project",
        ])
        .arg(&dir)
        .args([
            "--port",
            &port.to_string(),
            "--cluster-port",
            &cluster_port.to_string(),
        ])
        .env("PETREL_ADMIN_TOKEN", ADMIN)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut lines = BufReader::new(parent.stdout.take().unwrap()).lines();
    let mut urls = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some((_, url)) = line.trim().split_once(": http") {
            if line.trim().starts_with("process ") {
                urls.push(format!("http{url}"));
            }
        }
        if urls.len() == 2 {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    assert_eq!(
        urls,
        vec![
            format!("http://127.0.0.1:{port}"),
            format!("http://127.0.0.1:{}", port + 1)
        ]
    );
    // The processes listen once they are connected.
    let deadline = Instant::now() + Duration::from_secs(60);
    for url in &urls {
        while client()
            .get(format!("{url}/v0/health"))
            .send()
            .map(|r| r.status())
            .ok()
            != Some(reqwest::StatusCode::OK)
        {
            assert!(
                Instant::now() < deadline,
                "{url} serves; its log:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let r = client()
        .post(format!("{}/v0/events?name=clicks&wait=true", urls[1]))
        .bearer_auth(ADMIN)
        .body("{\"user_id\":7,\"click_count\":5,\"country\":\"DE\"}\n")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer = read(&urls[0], "clicks_by_user", "country=DE");
    assert!(
        answer["data"]
            .as_array()
            .unwrap()
            .contains(&json!({"user_id": 7, "clicks": 5})),
        "{answer}"
    );
    // SIGTERM to the command stops both processes.
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(parent.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = parent.wait().unwrap();
    assert!(status.success(), "{status}");
    for url in &urls {
        assert!(
            client().get(format!("{url}/v0/health")).send().is_err(),
            "{url} stopped"
        );
    }
}
