//! The scope matrix: every route against every kind of token, on a real server. Each cell
//! is what a user relies on: a token reads and writes what its scopes name and nothing else.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{client, jwt, Server, ADMIN};
use serde_json::{json, Value};

/// The tokens of the matrix, by name.
fn tokens(server: &Server) -> Vec<(&'static str, Option<String>)> {
    let r = client()
        .post(format!(
            "{}/v0/tokens?name=reader&scope=DATASOURCES:READ:clicks",
            server.url
        ))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let listed = common::get(server, "/v0/tokens");
    // Each token has a stable, distinct id, as Tinybird lists them.
    let ids: std::collections::BTreeSet<&str> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        ids.len(),
        listed["tokens"].as_array().unwrap().len(),
        "{listed}"
    );
    assert!(ids.iter().all(|id| id.starts_with("t_")), "{listed}");
    let named = |name: &str| {
        listed["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no token {name}: {listed}"))["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let scoped = |fixed: Option<Value>| {
        let mut scope = json!({"type": "PIPES:READ", "resource": "clicks_by_user"});
        if let Some(f) = fixed {
            scope["fixed_params"] = f;
        }
        jwt(
            ADMIN,
            &json!({"name": "u", "exp": 4_000_000_000i64, "scopes": [scope]}),
        )
    };
    let none_alg = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(
            json!({"exp": 4_000_000_000i64, "scopes": [{"type": "PIPES:READ", "resource": "clicks_by_user"}]})
                .to_string()
        )
    );
    vec![
        ("admin", Some(ADMIN.to_string())),
        ("append", Some(named("clicks_append"))),
        ("ds_read", Some(named("reader"))),
        ("pipe_read", Some(named("dashboard"))),
        ("jwt", Some(scoped(None))),
        ("jwt_fixed", Some(scoped(Some(json!({"country": "VN"}))))),
        (
            "jwt_expired",
            Some(jwt(
                ADMIN,
                &json!({"exp": 1, "scopes": [{"type": "PIPES:READ", "resource": "clicks_by_user"}]}),
            )),
        ),
        (
            "jwt_forged",
            Some(jwt(
                "not-the-admin-token-but-just-as-long!!",
                &json!({"exp": 4_000_000_000i64, "scopes": [{"type": "PIPES:READ", "resource": "clicks_by_user"}]}),
            )),
        ),
        ("jwt_alg_none", Some(none_alg)),
        ("garbage", Some("p.not-a-token".to_string())),
        ("none", None),
    ]
}

#[test]
fn every_route_against_every_token() {
    let server = Server::start("dataflows/clicks", &[]);
    common::ingest_clicks(
        &server,
        include_str!("../dataflows/clicks/fixtures/clicks.ndjson"),
    );
    let tokens = tokens(&server);
    // (method, path, body, tokens that may pass; every other token must get 403). Passing
    // means any status but 401/403.
    let row = "{\"user_id\":9,\"click_count\":1,\"country\":\"US\"}\n";
    let matrix: Vec<(&str, &str, &str, &[&str])> = vec![
        ("POST", "/v0/events?name=clicks", row, &["admin", "append"]),
        (
            "POST",
            "/v0/datasources?mode=append&name=clicks&format=ndjson",
            row,
            &["admin", "append"],
        ),
        (
            "GET",
            "/v0/pipes/clicks_by_user.json?country=DE",
            "",
            &["admin", "pipe_read", "jwt", "jwt_fixed"],
        ),
        (
            "GET",
            "/v0/pipes/top_countries.json",
            "",
            &["admin", "pipe_read"],
        ),
        (
            "GET",
            "/v0/pipes/clicks_by_user.csv",
            "",
            &["admin", "pipe_read", "jwt", "jwt_fixed"],
        ),
        (
            "GET",
            "/v0/pipes",
            "",
            &[
                "admin",
                "append",
                "ds_read",
                "pipe_read",
                "jwt",
                "jwt_fixed",
            ],
        ),
        (
            "GET",
            "/v0/sql?q=SELECT%20count()%20AS%20n%20FROM%20clicks",
            "",
            &["admin", "ds_read"],
        ),
        (
            "GET",
            "/v0/sql?q=SELECT%20*%20FROM%20clicks_by_user",
            "",
            &["admin", "pipe_read", "jwt"],
        ),
        (
            "GET",
            "/v0/sql?q=SELECT%20*%20FROM%20clicks_quarantine",
            "",
            &["admin"],
        ),
        (
            "GET",
            "/v0/datasources",
            "",
            &[
                "admin",
                "append",
                "ds_read",
                "pipe_read",
                "jwt",
                "jwt_fixed",
            ],
        ),
        ("GET", "/v0/datasources/clicks", "", &["admin", "ds_read"]),
        (
            "POST",
            "/v0/datasources/clicks/delete?delete_condition=user_id%3D0&dry_run=true",
            "",
            &["admin"],
        ),
        ("GET", "/v0/tokens", "", &["admin"]),
        ("GET", "/v0/views", "", &["admin"]),
        ("GET", "/metrics", "", &["admin"]),
        (
            "POST",
            "/v1/deploy?check=true",
            "{\"files\":{}}",
            &["admin"],
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, body, allowed) in &matrix {
        for (name, token) in &tokens {
            let mut request = match *method {
                "POST" => client()
                    .post(format!("{}{path}", server.url))
                    .body(body.to_string()),
                _ => client().get(format!("{}{path}", server.url)),
            };
            if path.starts_with("/v1/deploy") {
                request = request.header("content-type", "application/json");
            }
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            let status = request.send().unwrap().status().as_u16();
            let passed = status != 401 && status != 403;
            if passed != allowed.contains(name) {
                failures.push(format!("{method} {path} with {name}: {status}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "scope matrix:\n{}",
        failures.join("\n")
    );

    // A datasource scope with a row filter (`filter` SQL or `fixed_params`) reads only the
    // rows it allows, wherever the query reads the datasource; without one, every row.
    let count = |token: &str, sql: &str| -> (u16, Value) {
        let r = client()
            .get(format!("{}/v0/sql", server.url))
            .query(&[("q", sql)])
            .bearer_auth(token)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    };
    let all_rows = count(ADMIN, "SELECT count() AS n FROM clicks").1["data"][0]["n"].clone();
    let vn_rows = count(
        ADMIN,
        "SELECT count() AS n FROM clicks WHERE country = 'VN'",
    )
    .1["data"][0]["n"]
        .clone();
    assert!(
        vn_rows.as_u64().unwrap() > 0 && vn_rows != all_rows,
        "{vn_rows} {all_rows}"
    );
    for (scope, expected) in [
        (
            json!({"type": "DATASOURCES:READ", "resource": "clicks", "fixed_params": {"country": "VN"}}),
            &vn_rows,
        ),
        (
            json!({"type": "DATASOURCES:READ", "resource": "clicks", "filter": "country = 'VN'"}),
            &vn_rows,
        ),
        (
            json!({"type": "DATASOURCES:READ", "resource": "clicks"}),
            &all_rows,
        ),
    ] {
        let token = jwt(ADMIN, &json!({"exp": 4_000_000_000i64, "scopes": [scope]}));
        let (status, body) = count(&token, "SELECT count() AS n FROM clicks");
        assert_eq!(status, 200, "{scope}: {body}");
        assert_eq!(&body["data"][0]["n"], expected, "{scope}: {body}");
        // Also through a subquery and a self-join: every scan is filtered.
        let (status, body) = count(
            &token,
            "SELECT count() AS n FROM (SELECT DISTINCT country FROM clicks) a \
             JOIN clicks b ON a.country = b.country WHERE a.country != 'VN'",
        );
        assert_eq!(status, 200, "{scope}: {body}");
        let others = body["data"][0]["n"].as_u64().unwrap();
        if expected == &vn_rows {
            assert_eq!(others, 0, "{scope}: other countries leak: {body}");
        } else {
            assert!(others > 0, "{scope}: {body}");
        }
    }
    // A filter that is not a condition on the datasource's columns reads nothing.
    let token = jwt(
        ADMIN,
        &json!({"exp": 4_000_000_000i64, "scopes": [
            {"type": "DATASOURCES:READ", "resource": "clicks", "filter": "no_such_column = 1"}
        ]}),
    );
    let (status, body) = count(&token, "SELECT count() AS n FROM clicks");
    assert_eq!(status, 400, "{body}");
    let token = jwt(
        ADMIN,
        &json!({"exp": 4_000_000_000i64, "scopes": [
            {"type": "DATASOURCES:READ", "resource": "clicks", "fixed_params": {"a b": 1}}
        ]}),
    );
    assert_eq!(count(&token, "SELECT count() AS n FROM clicks").0, 403);

    // Row-level security: the JWT's fixed parameter wins, in pulls and through q=.
    let fixed = tokens
        .iter()
        .find(|(n, _)| *n == "jwt_fixed")
        .unwrap()
        .1
        .clone()
        .unwrap();
    for path in [
        "/v0/pipes/clicks_by_user.json?country=DE",
        "/v0/pipes/clicks_by_user.json?country=DE&q=SELECT%20*%20FROM%20_",
    ] {
        let body: Value = client()
            .get(format!("{}{path}", server.url))
            .bearer_auth(&fixed)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            body["data"],
            json!([{"user_id": 3, "clicks": 10}]),
            "{path}: {body}"
        );
    }
}
