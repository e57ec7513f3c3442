//! The whole developer workflow in a temporary folder: init → build → dev (an edit goes live,
//! data stays) → test run (passing and failing, exit codes) → test update → deploy to a
//! second server → endpoint, token and datasource commands against it.

mod common;

use std::time::{Duration, Instant};

use common::{client, get, petrel, Server, ADMIN};
use serde_json::{json, Value};

#[test]
fn init_build_dev_test_deploy() {
    let dir = common::temp_dir("workflow");
    let d = dir.to_str().unwrap();
    let (code, out, _) = petrel(&["init", d]);
    assert_eq!(code, 0);
    assert!(out.contains("tests/actions.yaml"), "{out}");
    assert!(dir.join(".github/workflows/petrel.yml").is_file());
    assert_eq!(petrel(&["init", d]).0, 1, "init never overwrites");

    // Add a datasource and an endpoint of our own; build checks them.
    std::fs::write(
        dir.join("datasources/sales.datasource"),
        "SCHEMA >\n    `item` String `json:$.item`,\n    `amount` Float64 `json:$.amount`\n",
    )
    .unwrap();
    std::fs::write(dir.join("endpoints/revenue.pipe"), "NODE n\nSQL >\n    SELECT item, sum(amount) AS revenue FROM sales GROUP BY item ORDER BY item\n\nTYPE endpoint\n").unwrap();
    let (code, out, err) = petrel(&["build", d]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("✓ endpoint revenue"), "{out}");

    // dev: fixtures load; an edit goes live and the data stays.
    {
        let server = Server::run(&["dev"], dir.clone(), &[]);
        assert_eq!(get(&server, "/v0/pipes/actions.json")["rows"], 2);
        let r = client()
            .post(format!("{}/v0/events?name=sales&wait=true", server.url))
            .bearer_auth(ADMIN)
            .body("{\"item\":\"a\",\"amount\":2.5}\n{\"item\":\"a\",\"amount\":1}\n")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        std::fs::write(dir.join("endpoints/revenue.pipe"), "NODE n\nSQL >\n    SELECT item, sum(amount) AS revenue, count() AS sales FROM sales GROUP BY item ORDER BY item\n\nTYPE endpoint\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(&server, "/v0/pipes/revenue.json")["data"]
            != json!([{"item": "a", "revenue": 3.5, "sales": 2}])
        {
            assert!(Instant::now() < deadline, "the edit never went live");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // test run: passing, then failing with a diff and exit 1, then update fixes it.
    let (code, out, _) = petrel(&["test", "run", "--project", d]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("✓ 2/2 passed"), "{out}");
    let tests = dir.join("tests/actions.yaml");
    let text = std::fs::read_to_string(&tests)
        .unwrap()
        .replace("\"events\":2", "\"events\":7");
    std::fs::write(&tests, text).unwrap();
    let (code, out, _) = petrel(&["test", "run", "--project", d]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("✗ actions/all_users failed")
            && out.contains("- {\"action\":\"view\",\"events\":7}")
            && out.contains("+ {\"action\":\"view\",\"events\":2}"),
        "{out}"
    );
    assert_eq!(petrel(&["test", "update", "--project", d]).0, 0);
    let (code, out, _) = petrel(&["test", "run", "--project", d]);
    assert_eq!(code, 0, "{out}");

    // deploy to a second, running server.
    let other = Server::start("dataflows/clicks", &[]);
    let (code, out, err) = petrel(&[
        "deploy",
        d,
        "--host",
        &other.url,
        "--token",
        ADMIN,
        "--allow-destructive-operations",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("new pipe revenue") && out.contains("deleted pipe clicks_by_user"),
        "{out}"
    );

    // datasource, endpoint and token commands against it.
    let host = ["--host", other.url.as_str(), "--token", ADMIN];
    let file = dir.join("sales.ndjson");
    std::fs::write(
        &file,
        "{\"item\":\"b\",\"amount\":4}\n{\"item\":\"b\",\"amount\":\"x\"}\n",
    )
    .unwrap();
    let (code, out, err) = petrel(
        &[
            &["datasource", "append", "sales", file.to_str().unwrap()],
            &host[..],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("✓ 1 rows appended") && out.contains("✗ 1 rows went to quarantine"),
        "{out}"
    );
    let (_, out, _) = petrel(&[&["datasource", "ls", "--output", "csv"], &host[..]].concat());
    assert!(out.contains("\"sales\",\"1\",\"1\""), "{out}");
    let (_, out, _) = petrel(&[&["endpoint", "ls"], &host[..]].concat());
    assert!(
        out.contains("revenue") && out.contains("actions  user_id:String"),
        "{out}"
    );
    let (_, out, _) = petrel(&["endpoint", "url", "revenue", "--host", &other.url]);
    assert_eq!(out.trim(), format!("{}/v0/pipes/revenue.json", other.url));
    let (code, out, _) = petrel(
        &[
            &["endpoint", "data", "revenue", "--format", "ndjson"],
            &host[..],
        ]
        .concat(),
    );
    assert_eq!(code, 0);
    assert_eq!(out, "{\"item\":\"b\",\"revenue\":4,\"sales\":1}\n");
    let fixture = dir.join("fixtures/events.ndjson");
    let appended = petrel(
        &[
            &["datasource", "append", "events", fixture.to_str().unwrap()],
            &host[..],
        ]
        .concat(),
    );
    assert_eq!(appended.0, 0, "{appended:?}");
    let (code, out, _) = petrel(
        &[
            &[
                "endpoint",
                "data",
                "actions",
                "--param",
                "user_id=u1",
                "--format",
                "csv",
            ],
            &host[..],
        ]
        .concat(),
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("\"view\",1") && out.contains("\"click\",1"),
        "{out}"
    );
    let (_, reader, _) = petrel(&[&["endpoint", "token", "actions"], &host[..]].concat());
    let r = client()
        .get(format!(
            "{}/v0/pipes/actions.json?token={}",
            other.url,
            reader.trim()
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "the endpoint's READ token reads it");
    let (code, jwt, _) = petrel(
        &[
            &[
                "token",
                "create",
                "jwt",
                "u1_only",
                "--resource",
                "actions",
                "--fixed-params",
                "user_id=u2",
                "--ttl",
                "10m",
            ],
            &host[..],
        ]
        .concat(),
    );
    assert_eq!(code, 0);
    let v: Value = client()
        .get(format!("{}/v0/pipes/actions.json?user_id=u1", other.url))
        .bearer_auth(jwt.trim())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        v["data"],
        json!([{"action": "view", "events": 1}]),
        "the JWT's fixed user wins"
    );
    let (_, out, _) = petrel(&[&["token", "ls", "--output", "json"], &host[..]].concat());
    let tokens: Value = serde_json::from_str(&out).unwrap();
    assert!(
        tokens
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "actions_read"),
        "{out}"
    );
    let (code, out, _) = petrel(&[&["datasource", "truncate", "sales"], &host[..]].concat());
    assert_eq!(code, 0);
    assert!(out.contains("1 rows removed"), "{out}");
    assert_eq!(
        petrel(&["endpoint", "data", "nope", "--host", &other.url, "--token", ADMIN]).0,
        1
    );
    assert_eq!(petrel(&["no-such-command"]).0, 2);

    // A static token created over the API reads its pipe, survives in the token list, and
    // nothing else.
    let (code, token, err) = petrel(
        &[
            &[
                "token",
                "create",
                "static",
                "rev_reader",
                "--scope",
                "PIPES:READ",
                "--resource",
                "revenue",
            ],
            &host[..],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");
    let read = |pipe: &str| {
        client()
            .get(format!("{}/v0/pipes/{pipe}.json", other.url))
            .bearer_auth(token.trim())
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(read("revenue"), 200);
    assert_eq!(read("actions"), 403);
    let (code, _, err) = petrel(
        &[
            &[
                "token",
                "create",
                "static",
                "bad",
                "--scope",
                "PIPES:WRITE",
                "--resource",
                "x",
            ],
            &host[..],
        ]
        .concat(),
    );
    assert_eq!(code, 1);
    assert!(err.contains("unknown scope"), "{err}");
}

#[test]
fn tests_can_append_events_and_expect_subscription_changes() {
    // The demo's tests include a case that appends clicks and states the changes a
    // subscriber to DE must receive.
    let (code, out, err) = petrel(&[
        "test",
        "run",
        "--project",
        common::repo().join("dataflows/clicks").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("✓ clicks_by_user/live_update passed"), "{out}");
    // The same case with a wrong expectation fails and shows what arrived.
    let dir = common::copy_project_files("dataflows/clicks", "live-test");
    let yaml = dir.join("tests/clicks_by_user.yaml");
    let text = std::fs::read_to_string(&yaml)
        .unwrap()
        .replace("\"clicks\":25", "\"clicks\":26");
    std::fs::write(&yaml, text).unwrap();
    let (code, out, _) = petrel(&["test", "run", "--project", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("✗ clicks_by_user/live_update failed")
            && out.contains("+ {\"diff\":1,\"row\":{\"clicks\":25,\"user_id\":2}}"),
        "{out}"
    );
}
