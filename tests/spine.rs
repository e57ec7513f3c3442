//! The spine end to end, against a real server process: ingest over the Events API, pull
//! every format, parameters, quarantine, tokens, `q=` and `/v0/sql`.

mod common;

use std::collections::BTreeMap;

use common::{client, jwt, Server, ADMIN};
use serde_json::{json, Value};

const SEED: &str = include_str!("../dataflows/clicks/fixtures/clicks.ndjson");

fn ingest(server: &Server, ds: &str, body: &str) -> Value {
    let r = client()
        .post(format!("{}/v0/events?name={ds}&wait=true", server.url))
        .bearer_auth(ADMIN)
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "ingest answered {:?}", r.text());
    r.json().unwrap()
}

fn get_json(server: &Server, path: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{}{path}", server.url))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

#[test]
fn seed_demo_gives_the_seed_numbers() {
    let server = Server::start("dataflows/clicks", &[]);
    let report = ingest(&server, "clicks", SEED);
    assert_eq!(report["successful_rows"], 8);
    assert_eq!(report["quarantined_rows"], 0);

    for (country, user, clicks) in [("US", 1, 5), ("DE", 2, 22), ("VN", 3, 10)] {
        let (status, body) = get_json(
            &server,
            &format!("/v0/pipes/clicks_by_user.json?country={country}"),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["data"],
            json!([{"user_id": user, "clicks": clicks}]),
            "{country}"
        );
        assert_eq!(body["rows"], 1);
        assert_eq!(
            body["meta"],
            json!([{"name":"user_id","type":"UInt32"},{"name":"clicks","type":"UInt64"}])
        );
        assert!(body["statistics"]["elapsed"].is_number());
        assert!(body["rows_before_limit_at_least"].is_number());
    }
    // The default country is US.
    let (_, body) = get_json(&server, "/v0/pipes/clicks_by_user.json");
    assert_eq!(body["data"], json!([{"user_id": 1, "clicks": 5}]));

    // The top-N and the time bucket.
    let (_, body) = get_json(&server, "/v0/pipes/top_countries.json?limit=2");
    assert_eq!(
        body["data"],
        json!([{"country":"DE","clicks":22,"users":1},{"country":"VN","clicks":10,"users":1}])
    );
    let (_, body) = get_json(&server, "/v0/pipes/clicks_per_minute.json?country=DE");
    assert_eq!(body["rows"], 1);
    assert_eq!(body["data"][0]["clicks"], 22);
    assert_eq!(body["data"][0]["events"], 4);
}

#[test]
fn formats_csv_and_ndjson() {
    let server = Server::start("dataflows/clicks", &[]);
    ingest(&server, "clicks", SEED);
    let text = |path: &str| {
        client()
            .get(format!("{}{path}", server.url))
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    assert_eq!(
        text("/v0/pipes/top_countries.csv"),
        "\"country\",\"clicks\",\"users\"\n\"DE\",22,1\n\"VN\",10,1\n\"US\",5,1\n"
    );
    assert_eq!(
        text("/v0/pipes/clicks_by_user.ndjson?country=DE"),
        "{\"user_id\":2,\"clicks\":22}\n"
    );
}

#[test]
fn parameters_keys_ranges_and_errors() {
    let server = Server::start("tests/projects/shop", &[]);
    let orders = [
        json!({"id": 1, "customer": {"name": "ann", "country": "ES"}, "amount": 10.5, "items": ["a", "b"], "created_at": "2024-01-01 10:00:00"}),
        json!({"id": 2, "customer": {"name": "bob", "country": "FR"}, "amount": 20.0, "items": ["c"], "created_at": "2024-02-01 10:00:00"}),
        json!({"id": 3, "customer": {"name": "ann", "country": "ES"}, "amount": 5.25, "items": [], "created_at": "2024-03-01 10:00:00", "note": "gift"}),
    ];
    let body: String = orders.iter().map(|o| format!("{o}\n")).collect();
    assert_eq!(ingest(&server, "orders", &body)["successful_rows"], 3);

    // An equality parameter is a key: each customer reads its own rows.
    let (status, body) = get_json(&server, "/v0/pipes/customer_orders.json?customer=ann");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        json!([{"order_id":1,"amount":10.5,"item_count":2},{"order_id":3,"amount":5.25,"item_count":0}])
    );
    // LIMIT applies when the view is read.
    let (_, body) = get_json(
        &server,
        "/v0/pipes/customer_orders.json?customer=ann&limit=1",
    );
    assert_eq!(body["rows"], 1);
    assert_eq!(body["rows_before_limit_at_least"], 2);

    // A range parameter below the aggregation gets its own view per value.
    let (_, all) = get_json(&server, "/v0/pipes/sales_by_country.json");
    assert_eq!(
        all["data"][0],
        json!({"country":"FR","orders":1,"revenue":20,"avg_amount":20,"biggest":20})
    );
    assert_eq!(all["data"][1]["orders"], 2);
    let (_, since) = get_json(
        &server,
        "/v0/pipes/sales_by_country.json?since=2024-01-15%2000:00:00",
    );
    assert_eq!(
        since["data"],
        json!([{"country":"FR","orders":1,"revenue":20,"avg_amount":20,"biggest":20},
               {"country":"ES","orders":1,"revenue":5.25,"avg_amount":5.25,"biggest":5.25}])
    );

    // Wrong type and missing required parameters are 400 with an error body.
    let (status, body) = get_json(
        &server,
        "/v0/pipes/customer_orders.json?customer=ann&limit=abc",
    );
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Error validating 'abc' to type Int32"),
        "{body}"
    );
    assert!(body["documentation"].is_string());
    let (status, body) = get_json(&server, "/v0/pipes/customer_orders.json");
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Required parameter is not defined"),
        "{body}"
    );
    let (status, _) = get_json(&server, "/v0/pipes/sales_by_country.json?since=yesterday");
    assert_eq!(status, 400);

    // Unknown pipes are 404.
    let (status, body) = get_json(&server, "/v0/pipes/nope.json");
    assert_eq!(status, 404);
    assert!(body["error"].is_string());
}

#[test]
fn bad_rows_go_to_quarantine_and_good_rows_land() {
    let server = Server::start("dataflows/clicks", &[]);
    let body = concat!(
        "{\"user_id\":7,\"click_count\":1,\"country\":\"FR\"}\n",
        "{\"user_id\":\"seven\",\"click_count\":1,\"country\":\"FR\"}\n",
        "this is not json\n",
        "{\"user_id\":8,\"click_count\":-3,\"country\":\"FR\"}\n",
        "{\"user_id\":9,\"click_count\":2,\"country\":\"FR\"}\n",
    );
    let report = ingest(&server, "clicks", body);
    assert_eq!(report["successful_rows"], 2);
    assert_eq!(report["quarantined_rows"], 3);
    let (_, body) = get_json(&server, "/v0/pipes/clicks_by_user.json?country=FR");
    assert_eq!(
        body["data"],
        json!([{"user_id":9,"clicks":2},{"user_id":7,"clicks":1}])
    );
    let (status, q) = get_json(
        &server,
        "/v0/sql?q=SELECT%20c__error_column,%20c__error,%20user_id%20FROM%20clicks_quarantine%20ORDER%20BY%20user_id",
    );
    assert_eq!(status, 200, "{q}");
    assert_eq!(q["rows"], 3);
    let errors: Vec<String> = q["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["c__error"].to_string())
        .collect();
    assert!(errors.iter().any(|e| e.contains("user_id")), "{errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("click_count")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("invalid JSON")),
        "{errors:?}"
    );
}

#[test]
fn tokens_guard_every_route() {
    let server = Server::start("dataflows/clicks", &[]);
    let (_, tokens) = get_json(&server, "/v0/tokens");
    let find = |name: &str| {
        tokens["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (dashboard, append) = (find("dashboard"), find("clicks_append"));
    let c = client();
    let post = |token: Option<&str>| {
        let mut r = c
            .post(format!("{}/v0/events?name=clicks", server.url))
            .body(SEED);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().unwrap().status().as_u16()
    };
    assert_eq!(post(None), 403);
    assert_eq!(post(Some("wrong")), 403);
    assert_eq!(post(Some(&dashboard)), 403);
    assert_eq!(post(Some(&append)), 202);
    let read = |token: &str| {
        c.get(format!(
            "{}/v0/pipes/clicks_by_user.json?token={token}",
            server.url
        ))
        .send()
        .unwrap()
        .status()
        .as_u16()
    };
    assert_eq!(read(&dashboard), 200);
    assert_eq!(read(&append), 403);
    let r = c
        .get(format!("{}/v0/pipes/clicks_by_user.json", server.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().unwrap();
    assert!(body["error"].as_str().unwrap().contains("token"));
    // GET /tokens answers on loopback with the admin token.
    let local: Value = c
        .get(format!("{}/tokens", server.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(local["admin_token"], ADMIN);
    // Not to a request that names another host (DNS rebinding, a proxy on this host) or
    // comes from a page of another origin.
    for (name, value) in [
        ("host", "evil.example:7181"),
        ("origin", "http://evil.example"),
        ("origin", "null"),
    ] {
        let r = c
            .get(format!("{}/tokens", server.url))
            .header(name, value)
            .send()
            .unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
        let body: Value = r.json().unwrap();
        assert!(body.get("admin_token").is_none(), "{body}");
    }
    let r = c
        .get(format!("{}/tokens", server.url))
        .header("origin", "http://localhost:3000")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Token files are readable by their owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(server.dir.join(".petrel/tokens.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
}

#[test]
fn ndjson_lines_that_are_not_utf8_are_quarantined_one_by_one() {
    let server = Server::start("dataflows/clicks", &[]);
    let mut body = b"{\"user_id\":1,\"click_count\":2,\"country\":\"US\"}\n".to_vec();
    body.extend_from_slice(b"{\"user_id\":2,\"click_count\":1,\"country\":\"D\xff\"}\n");
    body.extend_from_slice(b"{\"user_id\":3,\"click_count\":4,\"country\":\"VN\"}\r\n");
    let r = client()
        .post(format!("{}/v0/events?name=clicks&wait=true", server.url))
        .bearer_auth(ADMIN)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().unwrap();
    assert_eq!(report["successful_rows"], 2, "{report}");
    assert_eq!(report["quarantined_rows"], 1, "{report}");
    let (_, q) = get_json(
        &server,
        "/v0/sql?q=SELECT%20c__error%20FROM%20clicks_quarantine",
    );
    let errors = q["data"][0]["c__error"].to_string();
    assert!(errors.contains("not valid UTF-8"), "{q}");
}

/// `GET /v0/pipes/NAME` with no extension describes the pipe as Tinybird does (clients such as
/// verdin's `get_information` read it), instead of answering its data.
#[test]
fn a_pipe_without_extension_is_described() {
    let server = Server::start("dataflows/clicks", &[]);
    let (status, body) = get_json(&server, "/v0/pipes/clicks_by_user");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "clicks_by_user");
    assert_eq!(body["type"], "endpoint");
    assert!(body["id"].as_str().unwrap().starts_with("t_"), "{body}");
    let node = &body["nodes"][0];
    assert_eq!(node["name"], "clicks_by_user_node");
    assert_eq!(node["node_type"], "endpoint");
    assert_eq!(body["endpoint"], node["id"]);
    assert!(
        node["sql"].as_str().unwrap().contains("SELECT user_id"),
        "{body}"
    );
    assert!(
        body["params"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "country"),
        "{body}"
    );
    let stamp = body["updated_at"].as_str().unwrap();
    assert_eq!(stamp.len(), "2026-12-02 19:58:25.123456".len(), "{stamp}");
    assert!(body.get("data").is_none(), "no data: {body}");
    let (status, body) = get_json(&server, "/v0/pipes/no_such_pipe");
    assert_eq!(status, 404, "{body}");
}

/// `GET /v0/pipes/openapi.json` describes the endpoints the token may read, with their typed
/// parameters and answered columns; a request built from the document gets rows with
/// exactly the documented columns.
#[test]
fn openapi_describes_the_endpoints_a_token_reads() {
    let server = Server::start("dataflows/clicks", &[]);
    common::ingest_clicks(&server, SEED);
    let (status, doc) = get_json(&server, "/v0/pipes/openapi.json");
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    for pipe in ["clicks_by_user", "top_countries", "clicks_per_minute"] {
        assert!(
            paths.contains_key(&format!("/v0/pipes/{pipe}.json")),
            "{pipe}: {doc}"
        );
    }
    let op = &doc["paths"]["/v0/pipes/clicks_by_user.json"]["get"];
    let param = |name: &str| -> Value {
        op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no parameter {name}: {op}"))
    };
    assert_eq!(param("country")["schema"]["type"], "string");
    assert_eq!(param("country")["schema"]["default"], "US");
    assert_eq!(param("limit")["schema"]["type"], "integer");
    assert_eq!(param("limit")["schema"]["default"], 100);
    let row = &op["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
        ["data"]["items"]["properties"];
    assert_eq!(row["user_id"]["type"], "integer", "{op}");
    assert_eq!(row["clicks"]["type"], "integer", "{op}");
    // A request made from the document answers the documented columns.
    let (status, answer) = get_json(&server, "/v0/pipes/clicks_by_user.json?country=DE&limit=2");
    assert_eq!(status, 200, "{answer}");
    let documented: Vec<&String> = row.as_object().unwrap().keys().collect();
    for r in answer["data"].as_array().unwrap() {
        let got: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert_eq!(got, documented, "{answer}");
    }
    assert!(!answer["data"].as_array().unwrap().is_empty(), "{answer}");
    // A token that reads one pipe sees only that pipe.
    let token = jwt(
        ADMIN,
        &json!({"exp": 4_000_000_000i64, "scopes": [
            {"type": "PIPES:READ", "resource": "top_countries"}
        ]}),
    );
    let doc: Value = client()
        .get(format!("{}/v0/pipes/openapi.json", server.url))
        .bearer_auth(token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert!(!paths.is_empty());
    assert!(
        paths
            .iter()
            .all(|p| p.starts_with("/v0/pipes/top_countries.")),
        "{paths:?}"
    );
    let anonymous = client()
        .get(format!("{}/v0/pipes/openapi.json", server.url))
        .send()
        .unwrap();
    assert_eq!(anonymous.status(), 403);
}

/// `q=` without an ORDER BY of its own reads the result in the pipe's order, so paging with
/// LIMIT/OFFSET (as verdin's `pipe.pages()` does) returns every row once, in order.
#[test]
fn q_pages_keep_the_pipe_order() {
    let server = Server::start("dataflows/clicks", &[]);
    let body: String = (0..23u32)
        .map(|u| {
            format!(
                "{{\"user_id\":{u},\"click_count\":{},\"country\":\"DE\"}}\n",
                (u * 7) % 5 + 1
            )
        })
        .collect();
    ingest(&server, "clicks", &body);
    let (status, full) = get_json(
        &server,
        "/v0/pipes/clicks_by_user.json?country=DE&limit=1000",
    );
    assert_eq!(status, 200, "{full}");
    let full = full["data"].as_array().unwrap().clone();
    assert_eq!(full.len(), 23);
    let mut paged = Vec::new();
    for page in 0..8 {
        let (status, body) = get_json(
            &server,
            &format!(
                "/v0/pipes/clicks_by_user.json?country=DE&limit=1000&q=SELECT%20*%20FROM%20_%20LIMIT%203%20OFFSET%20{}",
                page * 3
            ),
        );
        assert_eq!(status, 200, "{body}");
        paged.extend(body["data"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(paged, full);
}

#[test]
fn q_runs_sql_over_the_endpoint_result_and_sql_runs_ad_hoc() {
    let server = Server::start("dataflows/clicks", &[]);
    ingest(&server, "clicks", SEED);
    let (status, body) = get_json(
        &server,
        "/v0/pipes/top_countries.json?limit=10&q=SELECT%20sum(clicks)%20AS%20total%20FROM%20_",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!([{"total": 37}]));
    let (status, body) = get_json(
        &server,
        "/v0/sql?q=SELECT%20country,%20count()%20AS%20n%20FROM%20clicks%20GROUP%20BY%20country%20ORDER%20BY%20country",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        json!([{"country":"DE","n":4},{"country":"US","n":2},{"country":"VN","n":2}])
    );
    // Queries that read no table answer at once (their result is final).
    let (status, body) = get_json(&server, "/v0/sql?q=SELECT%201%20AS%20x");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!([{"x": 1}]));
    // Its frontier is the clock's (a final result holds now), not the end of time: clients in
    // JavaScript read it as a number.
    let upper = body["statistics"]["upper"].as_u64().unwrap();
    assert!(upper < 1 << 53, "{body}");
    let (status, body) = get_json(
        &server,
        "/v0/pipes/top_countries.json?q=SELECT%201%20AS%20x",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!([{"x": 1}]));
    let (status, body) = get_json(&server, "/v0/sql?q=SELECT%20nope%20FROM%20clicks");
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("nope"), "{body}");

    // `petrel sql` runs on the same server.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args([
            "sql",
            "SELECT sum(click_count) AS total FROM clicks",
            "--host",
            &server.url,
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "\"total\"\n37\n");
}

#[test]
fn gzip_bodies_are_accepted() {
    use std::io::Write;
    let server = Server::start("dataflows/clicks", &[]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(SEED.as_bytes()).unwrap();
    let r = client()
        .post(format!("{}/v0/events?name=clicks&wait=true", server.url))
        .bearer_auth(ADMIN)
        .header("Content-Encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["successful_rows"], 8);
}

#[test]
fn data_survives_a_restart() {
    let server = Server::start("dataflows/clicks", &[]);
    ingest(&server, "clicks", SEED);
    let dir = server.stop();
    let server = Server::start_in(dir, &[]);
    let (_, body) = get_json(&server, "/v0/pipes/clicks_by_user.json?country=DE");
    assert_eq!(body["data"], json!([{"user_id": 2, "clicks": 22}]));
}

#[test]
fn idle_views_are_dropped_and_come_back_on_demand() {
    let server = Server::start("tests/projects/shop", &["--view-idle-ms", "300"]);
    let order = json!({"id": 1, "customer": {"name": "ann", "country": "ES"}, "amount": 2.5, "items": [], "created_at": "2024-02-01 10:00:00"});
    ingest(&server, "orders", &format!("{order}\n"));
    let path = "/v0/pipes/sales_by_country.json?since=2024-01-15%2000:00:00";
    let (status, body) = get_json(&server, path);
    assert_eq!(status, 200, "{body}");
    let labels = |server: &Server| -> Vec<String> {
        let (_, v) = get_json(server, "/v0/views");
        v["views"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["label"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        labels(&server)
            .iter()
            .any(|l| l.contains("since=2024-01-15")),
        "{:?}",
        labels(&server)
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        !labels(&server).iter().any(|l| l.contains("since=")),
        "idle view still there: {:?}",
        labels(&server)
    );
    let (_, again) = get_json(&server, path);
    assert_eq!(again["data"], body["data"]);
}

#[test]
fn datasources_list_counts_and_truncate_retracts_from_views() {
    let server = Server::start("dataflows/clicks", &[]);
    ingest(&server, "clicks", SEED);
    ingest(&server, "clicks", "{\"user_id\":\"bad\"}\n");
    let (status, list) = get_json(&server, "/v0/datasources");
    assert_eq!(status, 200);
    let clicks = &list["datasources"][0];
    assert_eq!(clicks["name"], "clicks");
    assert_eq!(clicks["row_count"], 8);
    assert_eq!(clicks["quarantine_rows"], 1);
    assert_eq!(
        clicks["columns"][0],
        json!({"name": "user_id", "type": "UInt32", "jsonpath": "$.user_id", "nullable": false})
    );
    // Tinybird's fields, as its clients read them.
    assert!(clicks["id"].as_str().unwrap().starts_with("t_"), "{clicks}");
    assert_eq!(
        clicks["description"].as_str().unwrap().trim(),
        "Click events: who clicked, how many times, and from which country."
    );
    assert_eq!(clicks["engine"]["engine"], "MergeTree");
    assert_eq!(clicks["engine"]["sorting_key"], "country, user_id");
    assert_eq!(clicks["statistics"]["row_count"], 8);
    assert!(clicks["statistics"]["bytes"].as_u64().is_some(), "{clicks}");
    assert_eq!(clicks["schema"]["columns"], clicks["columns"]);
    let stamp = clicks["updated_at"].as_str().unwrap();
    assert_eq!(stamp.len(), "2026-12-02 19:58:25.123456".len(), "{stamp}");
    let r = client()
        .post(format!("{}/v0/datasources/clicks/truncate", server.url))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["truncated_rows"], 8);
    let (_, body) = get_json(&server, "/v0/pipes/clicks_by_user.json?country=DE");
    assert_eq!(body["rows"], 0);
    let (_, one) = get_json(&server, "/v0/datasources/clicks");
    assert_eq!(one["row_count"], 0);
    // New data after a truncate counts from zero.
    ingest(
        &server,
        "clicks",
        "{\"user_id\":2,\"click_count\":4,\"country\":\"DE\"}\n",
    );
    let (_, body) = get_json(&server, "/v0/pipes/clicks_by_user.json?country=DE");
    assert_eq!(body["data"], json!([{"user_id": 2, "clicks": 4}]));
}

#[test]
fn jwt_tokens_scope_pipes_and_fix_parameters() {
    let server = Server::start("dataflows/clicks", &[]);
    ingest(&server, "clicks", SEED);
    let claims = json!({"workspace_id": "petrel", "name": "vn_only", "exp": 4_000_000_000i64,
        "scopes": [{"type": "PIPES:READ", "resource": "clicks_by_user", "fixed_params": {"country": "VN"}}]});
    let token = jwt(ADMIN, &claims);
    let get = |path: &str, token: &str| {
        let r = client()
            .get(format!("{}{path}", server.url))
            .bearer_auth(token)
            .send()
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap_or(Value::Null),
        )
    };
    // The fixed parameter wins over the request's.
    let (status, body) = get("/v0/pipes/clicks_by_user.json?country=DE", &token);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!([{"user_id": 3, "clicks": 10}]));
    assert_eq!(get("/v0/pipes/top_countries.json", &token).0, 403);
    // `q=` reads the pipe's own result `_` (with the fixed parameter applied) and no other
    // table: raw rows, quarantine tables and other pipes stay out of reach.
    let (status, body) = get(
        "/v0/pipes/clicks_by_user.json?country=DE&q=SELECT%20*%20FROM%20_",
        &token,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!([{"user_id": 3, "clicks": 10}]));
    for q in [
        "SELECT%20*%20FROM%20clicks",
        "SELECT%20*%20FROM%20clicks_quarantine",
        "SELECT%20*%20FROM%20top_countries",
        "SELECT%20*%20FROM%20_%20WHERE%20user_id%20IN%20(SELECT%20user_id%20FROM%20clicks)",
        "SELECT%20*%20FROM%20_%20UNION%20ALL%20SELECT%20user_id,%20click_count%20FROM%20clicks",
    ] {
        let (status, body) = get(&format!("/v0/pipes/clicks_by_user.json?q={q}"), &token);
        assert_eq!(status, 400, "q={q}: {body}");
        assert!(body.get("data").is_none(), "q={q} leaked rows: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("reads only the table _"),
            "{body}"
        );
    }
    let forged = jwt("not-the-admin-token", &claims);
    assert_eq!(get("/v0/pipes/clicks_by_user.json", &forged).0, 403);
    let expired = jwt(
        ADMIN,
        &json!({"exp": 1, "scopes": [{"type": "PIPES:READ", "resource": "clicks_by_user"}]}),
    );
    assert_eq!(get("/v0/pipes/clicks_by_user.json", &expired).0, 403);
}

#[test]
fn materialized_views_with_state_and_merge_equal_the_direct_query() {
    use rand::{Rng, SeedableRng};
    let server = Server::start("tests/projects/mv", &[]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut body = String::new();
    for i in 0..2000 {
        let day = rng.random_range(1..20);
        body.push_str(&format!(
            "{{\"ts\":\"2024-01-{day:02} 10:00:00\",\"page\":\"/p{}\",\"session\":\"s{}\",\"ms\":{}}}\n",
            rng.random_range(0..7),
            rng.random_range(0..300),
            // distinct latencies, so argMax has no ties
            i as f64 + rng.random_range(0..1000) as f64 * 10_000.0
        ));
    }
    assert_eq!(ingest(&server, "hits", &body)["successful_rows"], 2000);
    for since in ["2024-01-01", "2024-01-10"] {
        let (s1, mv) = get_json(&server, &format!("/v0/pipes/top_pages.json?since={since}"));
        let (s2, raw) = get_json(
            &server,
            &format!("/v0/pipes/top_pages_raw.json?since={since}"),
        );
        assert_eq!((s1, s2), (200, 200), "{mv} {raw}");
        assert_eq!(mv["rows"], 7);
        let rows = |v: &Value| -> Vec<String> {
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    format!(
                        "{} {} {} {:.6} {}",
                        r["page"],
                        r["hits"],
                        r["sessions"],
                        r["avg_ms"].as_f64().unwrap(),
                        r["slowest"]
                    )
                })
                .collect()
        };
        assert_eq!(rows(&mv), rows(&raw), "since {since}");
    }
}

#[test]
fn delete_by_condition_retracts_matching_rows_everywhere() {
    let server = Server::start("dataflows/clicks", &[]);
    ingest(&server, "clicks", SEED);
    let delete = |query: &str| -> Value {
        let r = client()
            .post(format!(
                "{}/v0/datasources/clicks/delete?{query}",
                server.url
            ))
            .bearer_auth(ADMIN)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().unwrap();
        assert_eq!(status, 200, "{v}");
        v
    };
    let dry = delete("delete_condition=click_count%20%3E%205&dry_run=true");
    assert_eq!(dry["deleted_rows"], 3);
    assert_eq!(
        get_json(&server, "/v0/datasources/clicks").1["row_count"],
        8,
        "a dry run deletes nothing"
    );
    let done = delete("delete_condition=click_count%20%3E%205");
    assert_eq!(done["deleted_rows"], 3);
    let (_, de) = get_json(&server, "/v0/pipes/clicks_by_user.json?country=DE");
    assert_eq!(de["data"], json!([{"user_id": 2, "clicks": 2}]));
    let (_, vn) = get_json(&server, "/v0/pipes/clicks_by_user.json?country=VN");
    assert_eq!(vn["data"], json!([{"user_id": 3, "clicks": 4}]));
    let r = client()
        .post(format!(
            "{}/v0/datasources/clicks/delete?delete_condition=nope%20%3D%201",
            server.url
        ))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// A server for the clicks project with one more endpoint, `name`, whose pipe file is `pipe`.
fn clicks_server_with_pipe(name: &str, pipe: &str) -> Server {
    let dir = common::copy_project_files("dataflows/clicks", name);
    std::fs::write(dir.join(format!("endpoints/{name}.pipe")), pipe).unwrap();
    Server::start_in(dir, &[])
}

/// Deletes the clicks for which `condition` holds, through the datasources API.
fn delete_clicks(server: &Server, condition: &str) {
    let r = client()
        .post(format!("{}/v0/datasources/clicks/delete", server.url))
        .query(&[("delete_condition", condition)])
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text());
}

/// `min`/`max` over an append-only datasource keep only the most extreme values. Deletes that
/// remove every kept value while the group still has rows make the server rebuild the view
/// from its history; the next read answers exactly, and the rebuilt view follows later
/// inserts and deletes.
#[test]
fn extremes_stay_exact_when_deletes_remove_every_kept_value() {
    let server = clicks_server_with_pipe(
        "click_range",
        "NODE click_range_node\nSQL >\n    SELECT country, min(click_count) AS least, max(click_count) AS most, count() AS n\n    FROM clicks\n    GROUP BY country\n    ORDER BY country\n\nTYPE endpoint\n",
    );
    let row = |country: &str, clicks: u32| {
        format!("{{\"user_id\":{clicks},\"click_count\":{clicks},\"country\":\"{country}\"}}\n")
    };
    let mut body: String = (1..=40).map(|c| row("DE", c)).collect();
    body.push_str(&row("FR", 7));
    ingest(&server, "clicks", &body);
    let delete = |condition: &str| delete_clicks(&server, condition);
    let range = || -> Value {
        let (status, v) = get_json(&server, "/v0/pipes/click_range.json");
        assert_eq!(status, 200, "{v}");
        v["data"].clone()
    };
    let fr = json!({"country": "FR", "least": 7, "most": 7, "n": 1});
    assert_eq!(
        range(),
        json!([{"country": "DE", "least": 1, "most": 40, "n": 40}, fr])
    );
    // The kept values still hold the new minimum.
    delete("country = 'DE' AND click_count <= 3");
    assert_eq!(
        range(),
        json!([{"country": "DE", "least": 4, "most": 40, "n": 37}, fr])
    );
    // Every kept minimum is gone: the view is rebuilt.
    delete("country = 'DE' AND click_count <= 23");
    assert_eq!(
        range(),
        json!([{"country": "DE", "least": 24, "most": 40, "n": 17}, fr])
    );
    ingest(&server, "clicks", &row("DE", 2));
    delete("country = 'DE' AND click_count >= 30");
    assert_eq!(
        range(),
        json!([{"country": "DE", "least": 2, "most": 29, "n": 7}, fr])
    );
}

/// A top-k inside a pipe over an append-only datasource keeps only its window and a few rows
/// more. Deletes that empty what it kept while the datasource still has rows make the server
/// rebuild the view; the next read answers exactly.
#[test]
fn a_top_k_stays_exact_when_deletes_remove_every_kept_row() {
    let server = clicks_server_with_pipe(
        "top_clicks",
        "NODE best\nSQL >\n    SELECT user_id, click_count FROM clicks ORDER BY click_count DESC LIMIT 3\n\nNODE top_clicks_node\nSQL >\n    SELECT user_id, click_count FROM best ORDER BY click_count DESC\n\nTYPE endpoint\n",
    );
    let body: String = (1..=40)
        .map(|c| format!("{{\"user_id\":{c},\"click_count\":{c},\"country\":\"DE\"}}\n"))
        .collect();
    ingest(&server, "clicks", &body);
    let delete = |condition: &str| delete_clicks(&server, condition);
    let top = || -> Vec<u64> {
        let (status, v) = get_json(&server, "/v0/pipes/top_clicks.json");
        assert_eq!(status, 200, "{v}");
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["click_count"].as_u64())
            .collect()
    };
    assert_eq!(top(), [40, 39, 38]);
    // The rows kept past the window fill it again.
    delete("click_count >= 30");
    assert_eq!(top(), [29, 28, 27]);
    // Every kept row is gone: the view is rebuilt.
    delete("click_count >= 15");
    assert_eq!(top(), [14, 13, 12]);
    ingest(
        &server,
        "clicks",
        "{\"user_id\":99,\"click_count\":13,\"country\":\"FR\"}\n",
    );
    assert_eq!(top(), [14, 13, 13]);
}

#[test]
fn csv_and_ndjson_bodies_append_through_the_datasources_api() {
    let server = Server::start("dataflows/clicks", &[]);
    let post = |query: &str, body: &str| -> (u16, Value) {
        let r = client()
            .post(format!("{}/v0/datasources?{query}", server.url))
            .bearer_auth(ADMIN)
            .body(body.to_string())
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    };
    let csv = "user_id,click_count,country,timestamp\n2,5,DE,2024-01-01 10:00:00\n\"2\",\"x\",DE,\n4,1,\"D,E\",2024-01-01 10:00:00\n";
    let (status, v) = post("name=clicks&mode=append&format=csv", csv);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            v["successful_rows"].as_u64(),
            v["quarantined_rows"].as_u64()
        ),
        (Some(2), Some(1))
    );
    let (status, v) = post(
        "name=clicks&mode=append&format=ndjson",
        "{\"user_id\":2,\"click_count\":1,\"country\":\"DE\"}\n",
    );
    assert_eq!((status, v["successful_rows"].as_u64()), (200, Some(1)));
    let (_, de) = get_json(&server, "/v0/pipes/clicks_by_user.json?country=DE");
    assert_eq!(de["data"], json!([{"user_id": 2, "clicks": 6}]));
    let (_, quoted) = get_json(&server, "/v0/pipes/clicks_by_user.json?country=D,E");
    assert_eq!(quoted["data"], json!([{"user_id": 4, "clicks": 1}]));
    assert_eq!(post("name=clicks&mode=replace", "").0, 400);
    assert_eq!(post("name=nope&format=csv", "1,2,3\n").0, 404);
}

/// A Parquet file as other tools write one: Int64 and Utf8 columns, a column the datasource
/// lacks, and (with `with_ts`) a nanosecond timestamp.
fn parquet_file(user_ids: &[i64], clicks: &[i64], countries: &[&str], with_ts: bool) -> Vec<u8> {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray};
    use std::sync::Arc;
    let mut columns: Vec<(&str, ArrayRef)> = vec![
        ("user_id", Arc::new(Int64Array::from(user_ids.to_vec()))),
        ("click_count", Arc::new(Int64Array::from(clicks.to_vec()))),
        ("country", Arc::new(StringArray::from(countries.to_vec()))),
        ("ignored", Arc::new(StringArray::from(countries.to_vec()))),
    ];
    if with_ts {
        let ts = vec![1_704_103_200_000_000_000i64; user_ids.len()];
        columns.push(("timestamp", Arc::new(TimestampNanosecondArray::from(ts))));
    }
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out
}

#[test]
fn parquet_bodies_append_through_the_datasources_api() {
    let server = Server::start("dataflows/clicks", &[]);
    let post = |query: &str, body: Vec<u8>| -> (u16, Value) {
        let r = client()
            .post(format!("{}/v0/datasources?{query}", server.url))
            .bearer_auth(ADMIN)
            .body(body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    };
    // A negative user id does not fit UInt32: that row goes to quarantine, the others land.
    let file = parquet_file(&[2, 2, -1], &[5, 4, 1], &["DE", "DE", "US"], true);
    let (status, v) = post("name=clicks&mode=append&format=parquet", file);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            v["successful_rows"].as_u64(),
            v["quarantined_rows"].as_u64()
        ),
        (Some(2), Some(1))
    );
    let (_, de) = get_json(&server, "/v0/pipes/clicks_by_user.json?country=DE");
    assert_eq!(de["data"], json!([{"user_id": 2, "clicks": 9}]));
    let (_, stored) = get_json(
        &server,
        "/v0/sql?q=SELECT+toString(timestamp)+AS+t+FROM+clicks+LIMIT+1+FORMAT+JSON",
    );
    assert_eq!(stored["data"][0]["t"], "2024-01-01 10:00:00");
    // Found by its magic bytes without `format`; a missing column takes its default.
    let (status, v) = post("name=clicks", parquet_file(&[7], &[3], &["VN"], false));
    assert_eq!(
        (status, v["successful_rows"].as_u64()),
        (200, Some(1)),
        "{v}"
    );
    let (_, vn) = get_json(&server, "/v0/pipes/clicks_by_user.json?country=VN");
    assert_eq!(vn["data"], json!([{"user_id": 7, "clicks": 3}]));
    // Not Parquet at all: a clear 400, nothing stored.
    let (status, v) = post("name=clicks&format=parquet", b"PAR1 not really".to_vec());
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("Parquet"), "{v}");
}

#[test]
fn copy_pipes_append_or_replace_their_result_on_demand() {
    let server = Server::start("tests/projects/mv", &[]);
    let mut body = String::new();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..300u64 {
        let page = format!("/p{}", i % 4);
        *expected.entry(page.clone()).or_default() += 1;
        body.push_str(&format!(
            "{{\"ts\":\"2024-01-02 10:00:00\",\"page\":\"{page}\",\"session\":\"s{i}\",\"ms\":1}}\n"
        ));
    }
    ingest(&server, "hits", &body);
    let copy = |pipe: &str| -> (u16, Value) {
        let r = client()
            .post(format!("{}/v0/pipes/{pipe}/copy", server.url))
            .bearer_auth(ADMIN)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    };
    let stored = || -> BTreeMap<String, Vec<u64>> {
        let (_, v) = get_json(
            &server,
            "/v0/sql?q=SELECT+page,+hits,+note+FROM+page_counts+FORMAT+JSON",
        );
        let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for r in v["data"].as_array().unwrap() {
            assert_eq!(r["note"], "", "a column the copy lacks takes its default");
            out.entry(r["page"].as_str().unwrap().to_string())
                .or_default()
                .push(r["hits"].as_u64().unwrap());
        }
        out
    };
    let (status, v) = copy("page_counts_copy");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rows"], 4);
    let once: BTreeMap<String, Vec<u64>> = expected
        .iter()
        .map(|(k, n)| (k.clone(), vec![*n]))
        .collect();
    assert_eq!(stored(), once);
    // Append mode appends again; replace mode swaps the target's rows for the result.
    assert_eq!(copy("page_counts_copy").0, 200);
    assert!(stored().values().all(|v| v.len() == 2));
    ingest(
        &server,
        "hits",
        "{\"ts\":\"2024-01-02 10:00:00\",\"page\":\"/p0\",\"session\":\"x\",\"ms\":1}\n",
    );
    assert_eq!(copy("page_counts_replace").0, 200);
    let mut now = once.clone();
    now.insert("/p0".into(), vec![expected["/p0"] + 1]);
    assert_eq!(stored(), now);
    // Not a copy pipe, or no such pipe: clear errors.
    let (status, v) = copy("top_pages");
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("not a copy pipe"),
        "{v}"
    );
    assert_eq!(copy("nope").0, 404);
}

#[test]
fn a_short_admin_token_is_refused_unless_insecure_dev() {
    let dir = common::temp_dir("short_admin");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_petrel"))
            .args(["local", "start", "--port", "0", "--project"])
            .arg(common::repo().join("dataflows/clicks"))
            .args(["--storage"])
            .arg(&dir)
            .args(extra)
            .env("PETREL_ADMIN_TOKEN", "abc")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = run(&[]).wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 32"), "{err}");
    // A development server may use one, when it says so.
    let mut dev = run(&["--insecure-dev-token"]);
    let stdout = dev.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let _ = dev.kill();
    let _ = dev.wait();
    assert!(line.starts_with("Petrel is listening on "), "{line}");
}

/// Browsers on other origins may call the token-authenticated API (preflight answered, CORS
/// headers on answers), long parameter lists come as a JSON body in a POST, and routing
/// errors carry the usual JSON error body.
#[test]
fn browsers_and_clients_reach_the_api() {
    let server = Server::start("dataflows/clicks", &[]);
    ingest(&server, "clicks", SEED);
    let c = client();
    let preflight = c
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v0/events?name=clicks", server.url),
        )
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let methods = preflight.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(methods.contains("POST"), "{methods}");
    let r = c
        .get(format!(
            "{}/v0/pipes/clicks_by_user.json?country=DE",
            server.url
        ))
        .bearer_auth(ADMIN)
        .header("origin", "https://shop.example")
        .send()
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    // The admin token is never handed to another origin.
    let r = c
        .get(format!("{}/tokens", server.url))
        .header("origin", "https://shop.example")
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    // Parameters in a JSON body.
    let r = c
        .post(format!("{}/v0/pipes/clicks_by_user.json", server.url))
        .bearer_auth(ADMIN)
        .json(&json!({"country": "DE", "limit": 5}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().unwrap();
    assert_eq!(body["data"], json!([{"user_id": 2, "clicks": 22}]));
    let r = c
        .post(format!("{}/v0/pipes/clicks_by_user.json", server.url))
        .bearer_auth(ADMIN)
        .body("[1,2]")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    // Parameters as a form (the Classic CLI's long `pipe data` requests), token included.
    let r = c
        .post(format!("{}/v0/pipes/clicks_by_user.json", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("country=DE&limit=5&token={ADMIN}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().unwrap();
    assert_eq!(body["data"], json!([{"user_id": 2, "clicks": 22}]));
    // Routing errors are JSON too.
    let (status, body) = get_json(&server, "/v0/nothing-here");
    assert_eq!(status, 404);
    assert!(body["error"].is_string(), "{body}");
    let r = c
        .delete(format!("{}/v0/events", server.url))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 405);
    let body: Value = r.json().unwrap();
    assert!(body["error"].is_string(), "{body}");
}
