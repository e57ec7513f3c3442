//! How projects load: `petrel build` on a folder of broken files reports every error, each with
//! its file:line:column, and exits 1 (a good project exits 0); a server still serves what
//! loads; Classic and Forward rules for untyped pipes.

mod common;

use std::process::Command;

#[test]
fn build_reports_every_error_with_its_location() {
    let dir = common::temp_dir("broken");
    std::fs::create_dir_all(dir.join("datasources")).unwrap();
    std::fs::create_dir_all(dir.join("pipes")).unwrap();
    std::fs::write(
        dir.join("datasources/events.datasource"),
        "SCHEMA >\n    `id` UInt64 `json:$.id`,\n    `name` String `json:$.name`\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("datasources/bad_type.datasource"),
        "SCHEMA >\n    `a` Int,\n    `b` String\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("datasources/bad_keyword.datasource"),
        "SCHEMA >\n    `a` String\n\nFROBNICATE yes\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("pipes/unknown_column.pipe"),
        "NODE n\nSQL >\n    SELECT id,\n        nope\n    FROM events\n\nTYPE endpoint\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("pipes/unclosed_if.pipe"),
        "NODE n\nSQL >\n    %\n    SELECT id FROM events\n    {% if defined(x) %}\n    WHERE id = {{UInt64(x)}}\n\nTYPE endpoint\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("pipes/window.pipe"),
        "NODE n\nSQL >\n    SELECT id, sum(id) OVER (ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS r FROM events\n\nTYPE endpoint\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("pipes/good.pipe"),
        "NODE n\nSQL >\n    SELECT count() AS c FROM events\n\nTYPE endpoint\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .arg("build")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let d = dir.display();
    for want in [
        format!("{d}/datasources/bad_type.datasource:2:9: Precision is mandatory for Int types"),
        format!("{d}/datasources/bad_keyword.datasource:4:1"),
        format!("{d}/pipes/unknown_column.pipe:4:9: unknown column 'nope'"),
        format!("{d}/pipes/unclosed_if.pipe:6:1"),
        "Missing {% end %} block for if".to_string(),
        format!("{d}/pipes/window.pipe:3:"),
        "window frames".to_string(),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
    assert!(stdout.contains("✓ endpoint good"), "{stdout}");
    // Each error shows its line with a caret under the spot.
    assert!(
        stderr.contains("    4 |         nope\n                ^"),
        "{stderr}"
    );
    assert_eq!(stderr.matches('✗').count(), 5, "{stderr}");
}

/// A project with errors still starts: the pipes that plan are served, and each one that does
/// not answers 400 with its cause (a path relative to the project, not the server's).
#[test]
fn a_project_with_errors_serves_what_builds() {
    let dir = common::temp_dir("partly_broken");
    std::fs::create_dir_all(dir.join("datasources")).unwrap();
    std::fs::create_dir_all(dir.join("pipes")).unwrap();
    std::fs::write(
        dir.join("datasources/events.datasource"),
        "SCHEMA >\n    `id` UInt64 `json:$.id`\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("datasources/bad.datasource"),
        "SCHEMA >\n    `a` Int\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("pipes/good.pipe"),
        "NODE n\nSQL >\n    SELECT count() AS c FROM events\n\nTYPE endpoint\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("pipes/reads_bad.pipe"),
        "NODE n\nSQL >\n    SELECT count() AS c FROM bad\n\nTYPE endpoint\n",
    )
    .unwrap();
    let server = common::Server::start_in(dir.clone(), &[]);
    let c = common::client();
    let r = c
        .post(format!("{}/v0/events?name=events&wait=true", server.url))
        .bearer_auth(common::ADMIN)
        .body("{\"id\":1}\n{\"id\":2}\n")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let good = common::get(&server, "/v0/pipes/good.json");
    assert_eq!(good["data"][0]["c"], 2, "{good}");
    let r = c
        .get(format!("{}/v0/pipes/reads_bad.json", server.url))
        .bearer_auth(common::ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("The pipe 'reads_bad' is not served: pipes/reads_bad.pipe:3:"),
        "{error}"
    );
    assert!(error.contains("unknown table 'bad'"), "{error}");
    assert!(!error.contains(&dir.display().to_string()), "{error}");
    let pipes = common::get(&server, "/v0/pipes");
    let listed = pipes["pipes"].as_array().unwrap();
    let broken: Vec<&str> = listed
        .iter()
        .filter(|p| !p["error"].is_null())
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(broken, ["reads_bad"], "{pipes}");
    server.stop();
}

/// A Tinybird Classic project (pipes without `TYPE`, `ENGINE` settings in materialized pipes,
/// `TOKEN .. CREATE`) publishes each untyped pipe's last node, as `tb push` does.
#[test]
fn classic_untyped_pipes_are_endpoints() {
    let dir = common::temp_dir("classic");
    std::fs::create_dir_all(dir.join("datasources")).unwrap();
    std::fs::create_dir_all(dir.join("pipes")).unwrap();
    std::fs::write(
        dir.join("datasources/logs.datasource"),
        "TOKEN app APPEND\nTOKEN app CREATE\n\nSCHEMA >\n    `level` String `json:$.level`\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("datasources/per_level.datasource"),
        "SCHEMA >\n    `level` String,\n    `total` AggregateFunction(count)\n\nENGINE \"AggregatingMergeTree\"\nENGINE_SORTING_KEY \"level\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("pipes/per_level_mv.pipe"),
        "NODE mv\nSQL >\n    SELECT level, countState() AS total FROM logs GROUP BY level\n\nTYPE materialized\nDATASOURCE per_level\nENGINE \"AggregatingMergeTree\"\nENGINE_SORTING_KEY \"level\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("pipes/levels.pipe"),
        "TOKEN app READ\n\nNODE merged\nSQL >\n    SELECT level, countMerge(total) AS total FROM per_level GROUP BY level\n\nNODE ordered\nSQL >\n    SELECT * FROM merged ORDER BY total DESC\n",
    )
    .unwrap();
    let server = common::Server::start_in(dir, &[]);
    let r = common::client()
        .post(format!("{}/v0/events?name=logs&wait=true", server.url))
        .bearer_auth(common::ADMIN)
        .body("{\"level\":\"ERROR\"}\n{\"level\":\"INFO\"}\n{\"level\":\"INFO\"}\n")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let levels = common::get(&server, "/v0/pipes/levels.json");
    assert_eq!(
        levels["data"],
        serde_json::json!([{"level": "INFO", "total": 2}, {"level": "ERROR", "total": 1}]),
        "{levels}"
    );
    let described = common::get(&server, "/v0/pipes/levels");
    assert_eq!(described["type"], "endpoint", "{described}");
    server.stop();
}

/// A Forward pipe without `TYPE` is not published but other pipes read it as a table, rendered
/// with the request's parameters (as Tinybird passes them through).
#[test]
fn untyped_pipes_read_as_tables_with_the_request_parameters() {
    let dir = common::temp_dir("pipe_tables");
    std::fs::create_dir_all(dir.join("datasources")).unwrap();
    std::fs::create_dir_all(dir.join("pipes")).unwrap();
    std::fs::write(
        dir.join("datasources/events.datasource"),
        "SCHEMA >\n    `kind` String `json:$.kind`,\n    `n` Int64 `json:$.n`\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("pipes/of_kind.pipe"),
        "NODE n\nSQL >\n    %\n    SELECT n FROM events WHERE kind = {{String(kind, 'a')}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("pipes/total.pipe"),
        "NODE n\nSQL >\n    SELECT sum(n) AS s, count() AS c FROM of_kind\n\nTYPE endpoint\n",
    )
    .unwrap();
    let server = common::Server::start_in(dir, &[]);
    let r = common::client()
        .post(format!("{}/v0/events?name=events&wait=true", server.url))
        .bearer_auth(common::ADMIN)
        .body("{\"kind\":\"a\",\"n\":1}\n{\"kind\":\"b\",\"n\":10}\n{\"kind\":\"b\",\"n\":20}\n")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let a = common::get(&server, "/v0/pipes/total.json");
    assert_eq!(a["data"], serde_json::json!([{"s": 1, "c": 1}]), "{a}");
    let b = common::get(&server, "/v0/pipes/total.json?kind=b");
    assert_eq!(b["data"], serde_json::json!([{"s": 30, "c": 2}]), "{b}");
    // Asked again, the first answer is still the one for its own parameter.
    let a = common::get(&server, "/v0/pipes/total.json?kind=a");
    assert_eq!(a["data"], serde_json::json!([{"s": 1, "c": 1}]), "{a}");
    let pipes = common::get(&server, "/v0/pipes");
    let of_kind = pipes["pipes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "of_kind")
        .unwrap();
    assert_eq!(of_kind["endpoint"], false, "{pipes}");
    server.stop();
}

/// Pipes that read the clock outside temporal filters are served with the request's time
/// written in: by the day (`today()`, a maintained view per day) or by the second (`now()`,
/// recomputed per request and not subscribable).
#[test]
fn pipes_reading_the_clock_are_served_pinned_to_the_request_time() {
    let dir = common::temp_dir("clock");
    std::fs::create_dir_all(dir.join("datasources")).unwrap();
    std::fs::create_dir_all(dir.join("pipes")).unwrap();
    std::fs::write(
        dir.join("datasources/events.datasource"),
        "SCHEMA >\n    `d` Date `json:$.d`\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("pipes/week.pipe"),
        "NODE bounds\nSQL >\n    WITH today() AS e SELECT e - 6 AS s, e\n\nNODE n\nSQL >\n    SELECT (SELECT s FROM bounds) AS since, count() AS c FROM events WHERE d >= (SELECT s FROM bounds) AND d <= (SELECT e FROM bounds)\n\nTYPE endpoint\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("pipes/daily.pipe"),
        "NODE n\nSQL >\n    SELECT toStartOfDay(toDateTime(d)) AS day, count() AS c FROM events GROUP BY day\n    ORDER BY day DESC\n    WITH FILL FROM toStartOfDay(now()) TO toStartOfDay(now() - INTERVAL 7 DAY) STEP INTERVAL -1 DAY\n\nTYPE endpoint\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("pipes/ago.pipe"),
        "NODE n\nSQL >\n    SELECT dateDiff('day', d, toDate(now())) AS days_ago, count() AS c FROM events GROUP BY days_ago ORDER BY days_ago\n\nTYPE endpoint\n",
    )
    .unwrap();
    // Not across midnight: the server's today and the test's must be the same day.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = 86_400 - secs % 86_400;
    if left < 30 {
        std::thread::sleep(std::time::Duration::from_secs(left + 1));
    }
    let server = common::Server::start_in(dir, &[]);
    let today = chrono_free_today();
    let day = |n: i64| petrel_value::time::format_date(today - n);
    let body: String = [0, 3, 6, 7, 30]
        .iter()
        .map(|n| format!("{{\"d\":\"{}\"}}\n", day(*n)))
        .collect();
    let r = common::client()
        .post(format!("{}/v0/events?name=events&wait=true", server.url))
        .bearer_auth(common::ADMIN)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let week = common::get(&server, "/v0/pipes/week.json");
    assert_eq!(
        week["data"],
        serde_json::json!([{"since": day(6), "c": 3}]),
        "{week}"
    );
    let ago = common::get(&server, "/v0/pipes/ago.json");
    let days: Vec<i64> = ago["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["days_ago"].as_i64().unwrap())
        .collect();
    assert_eq!(days, [0, 3, 6, 7, 30], "{ago}");
    // WITH FILL: a row for each of the last 7 days, 0 where no event fell.
    let daily = common::get(&server, "/v0/pipes/daily.json");
    let counts: Vec<(String, i64)> = daily["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["day"].as_str().unwrap().to_string(),
                r["c"].as_i64().unwrap(),
            )
        })
        .collect();
    // Days 7 and 30 are outside the fill's range: their rows stay, nothing is made there.
    let expected: Vec<(String, i64)> = (0..7)
        .chain([7, 30])
        .map(|n| {
            let c = if [0, 3, 6, 7, 30].contains(&n) { 1 } else { 0 };
            (format!("{} 00:00:00", day(n)), c)
        })
        .collect();
    assert_eq!(counts, expected, "{daily}");
    let r = common::client()
        .get(format!("{}/v0/pipes/ago.sse", server.url))
        .bearer_auth(common::ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let error: serde_json::Value = r.json().unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("cannot be subscribed to"),
        "{error}"
    );
    server.stop();
}

/// Today as days since the epoch (UTC).
fn chrono_free_today() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    secs.div_euclid(86_400)
}

/// `petrel build` plans each endpoint with every literal its templates compare a parameter
/// with and with an example of each typed parameter: a branch whose SQL does not plan is an
/// error, so a green build means every branch answers.
#[test]
fn build_plans_every_template_branch() {
    let dir = common::temp_dir("branches");
    std::fs::create_dir_all(dir.join("datasources")).unwrap();
    std::fs::create_dir_all(dir.join("pipes")).unwrap();
    std::fs::write(
        dir.join("datasources/events.datasource"),
        "SCHEMA >\n    `kind` String `json:$.kind`\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("pipes/by.pipe"),
        "NODE n\nSQL >\n    %\n    SELECT count() AS c FROM events\n    {% if groupBy == 'kinds' %} GROUP BY nope {% end %}\n    {% if defined(k) %} WHERE kind = {{String(k)}} {% end %}\n\nTYPE endpoint\n",
    )
    .unwrap();
    let (code, _, stderr) = common::petrel(&["build", &dir.display().to_string()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("unknown column 'nope'"), "{stderr}");
    assert!(stderr.contains("(with groupBy=kinds)"), "{stderr}");
    assert_eq!(stderr.matches('✗').count(), 1, "{stderr}");
}
