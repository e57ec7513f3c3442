//! The server side of the workflow: `petrel deploy` to a running server (changed pipes swap,
//! data stays, destructive changes need a flag), `petrel dev` (saved edits go live), and
//! `petrel local status|stop`.

mod common;

use std::time::{Duration, Instant};

use common::{client, get, petrel, Server, ADMIN};

/// `petrel` with success as a flag.
fn run(args: &[&str]) -> (bool, String, String) {
    let (code, out, err) = petrel(args);
    (code == 0, out, err)
}
use serde_json::{json, Value};

const SEED: &str = include_str!("../dataflows/clicks/fixtures/clicks.ndjson");

const NEW_PIPE: &str = "NODE n\nSQL >\n    %\n    SELECT user_id, sum(click_count) AS clicks, count() AS events\n    FROM clicks\n    WHERE country = {{ String(country, 'US') }}\n    GROUP BY user_id\n    ORDER BY user_id\n\nTYPE endpoint\n";

#[test]
fn deploy_swaps_changed_pipes_and_keeps_data() {
    let server = Server::start("dataflows/clicks", &[]);
    let r = client()
        .post(format!("{}/v0/events?name=clicks&wait=true", server.url))
        .bearer_auth(ADMIN)
        .body(SEED)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let before: Vec<Value> = get(&server, "/v0/views")["views"]
        .as_array()
        .unwrap()
        .clone();
    let top_before = before
        .iter()
        .find(|v| v["label"] == "top_countries")
        .unwrap()["id"]
        .clone();

    let dir = common::copy_project_files("dataflows/clicks", "deploy");
    std::fs::write(dir.join("endpoints/clicks_by_user.pipe"), NEW_PIPE).unwrap();
    std::fs::write(
        dir.join("endpoints/users.pipe"),
        "NODE n\nSQL >\n    SELECT uniqExact(user_id) AS users FROM clicks\n\nTYPE endpoint\n",
    )
    .unwrap();
    let d = dir.to_str().unwrap();

    // --check reports without changing anything.
    let (ok, out, err) = run(&[
        "deploy",
        d,
        "--host",
        &server.url,
        "--token",
        ADMIN,
        "--check",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("changed pipe clicks_by_user") && out.contains("new pipe users"),
        "{out}"
    );
    assert_eq!(
        get(&server, "/v0/pipes/clicks_by_user.json?country=DE")["meta"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let (ok, out, err) = run(&["deploy", d, "--host", &server.url, "--token", ADMIN]);
    assert!(ok, "{out}{err}");
    let changed = get(&server, "/v0/pipes/clicks_by_user.json?country=DE");
    assert_eq!(
        changed["data"],
        json!([{"user_id": 2, "clicks": 22, "events": 4}])
    );
    assert_eq!(
        get(&server, "/v0/pipes/users.json")["data"],
        json!([{"users": 3}])
    );
    // The unchanged pipe kept its view (and its state).
    let after: Vec<Value> = get(&server, "/v0/views")["views"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        after
            .iter()
            .find(|v| v["label"] == "top_countries")
            .unwrap()["id"],
        top_before
    );

    // Changing a column's type of a datasource with data is destructive.
    let ds = dir.join("datasources/clicks.datasource");
    let text = std::fs::read_to_string(&ds)
        .unwrap()
        .replace("`click_count` UInt32", "`click_count` Int64");
    std::fs::write(&ds, text).unwrap();
    let (ok, _, err) = run(&["deploy", d, "--host", &server.url, "--token", ADMIN]);
    assert!(!ok, "a destructive deploy needs the flag");
    assert!(err.contains("destructive"), "{err}");
    assert_eq!(get(&server, "/v0/datasources/clicks")["row_count"], 8);
    let (ok, out, err) = run(&[
        "deploy",
        d,
        "--host",
        &server.url,
        "--token",
        ADMIN,
        "--allow-destructive-operations",
    ]);
    assert!(ok, "{out}{err}");
    assert_eq!(get(&server, "/v0/datasources/clicks")["row_count"], 0);
    assert_eq!(
        get(&server, "/v0/datasources/clicks")["columns"][1]["type"],
        "Int64"
    );

    // A broken project is refused with its errors and the running one is untouched.
    std::fs::write(
        dir.join("endpoints/broken.pipe"),
        "NODE n\nSQL >\n    SELECT nope FROM clicks\n\nTYPE endpoint\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["deploy", d, "--host", &server.url, "--token", ADMIN]);
    assert!(!ok);
    assert!(err.contains("broken.pipe") && err.contains("nope"), "{err}");
    assert_eq!(get(&server, "/v0/pipes/users.json")["rows"], 1);

    // local status and stop.
    let (ok, out, _) = run(&["local", "status", "--host", &server.url]);
    assert!(ok && out.contains("running"), "{out}");
    let (ok, _, err) = run(&["local", "stop", "--host", &server.url, "--token", ADMIN]);
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while run(&["local", "status", "--host", &server.url]).0 {
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dev_loads_fixtures_and_serves_saved_edits_keeping_data() {
    let dir = common::copy_project_files("dataflows/clicks", "dev");
    let server = Server::run(&["dev"], dir.clone(), &[]);
    // Fixtures were loaded into the empty datasource.
    assert_eq!(
        get(&server, "/v0/pipes/clicks_by_user.json?country=DE")["data"],
        json!([{"user_id": 2, "clicks": 22}])
    );
    std::fs::write(dir.join("endpoints/clicks_by_user.pipe"), NEW_PIPE).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = get(&server, "/v0/pipes/clicks_by_user.json?country=DE");
        if v["data"] == json!([{"user_id": 2, "clicks": 22, "events": 4}]) {
            break;
        }
        assert!(Instant::now() < deadline, "the edit never went live: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The data was kept, not reloaded twice.
    assert_eq!(get(&server, "/v0/datasources/clicks")["row_count"], 8);
}

/// Names become storage paths and table names: a deploy naming a datafile outside Tinybird's
/// rule (`[A-Za-z_][A-Za-z0-9_]*`) is refused with the reason, and nothing changes.
#[test]
fn deploy_refuses_invalid_resource_names() {
    let server = Server::start("dataflows/clicks", &[]);
    for path in ["datasources/...datasource", "pipes/top-users.pipe"] {
        let body = json!({"files": {path: "SCHEMA >\n    `a` String\n"}});
        let r = client()
            .post(format!("{}/v1/deploy", server.url))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let answer: Value = r.json().unwrap();
        assert!(
            answer["errors"][0]
                .as_str()
                .unwrap()
                .contains("not a valid resource name"),
            "{answer}"
        );
    }
    let datasources = get(&server, "/v0/datasources");
    assert!(!datasources.to_string().contains("\"..\""), "{datasources}");
}
