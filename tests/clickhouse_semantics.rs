//! ClickHouse semantics a server must keep, each found different by the corpus conformance
//! harness (`scripts/conformance.py`): engine rules on materialized targets, and template
//! parameters converted to the column types they are compared with.

mod common;

use serde_json::json;

fn write(dir: &std::path::Path, file: &str, text: &str) {
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn send(server: &common::Server, datasource: &str, body: &str) {
    let r = common::client()
        .post(format!(
            "{}/v0/events?name={datasource}&wait=true",
            server.url
        ))
        .bearer_auth(common::ADMIN)
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
}

#[test]
fn materialized_targets_and_parameters_read_as_clickhouse_reads_them() {
    let dir = common::temp_dir("ch_semantics");
    write(
        &dir,
        "datasources/events.datasource",
        "SCHEMA >\n    `id` Int32 `json:$.id`,\n    `v` UInt32 `json:$.v`,\n    `t` DateTime `json:$.t`\n",
    );
    // A ReplacingMergeTree target keeps the newest row per key (read as FINAL) ...
    write(
        &dir,
        "datasources/latest.datasource",
        "SCHEMA >\n    `id` Int32,\n    `v` UInt32,\n    `t` DateTime\n\nENGINE \"ReplacingMergeTree\"\nENGINE_SORTING_KEY \"id\"\nENGINE_VER \"t\"\n",
    );
    write(
        &dir,
        "materializations/latest_mv.pipe",
        "NODE n\nSQL >\n    SELECT id, v, t FROM events\n\nTYPE materialized\nDATASOURCE latest\n",
    );
    // ... and a TTL target only the rows its TTL keeps.
    write(
        &dir,
        "datasources/recent.datasource",
        "SCHEMA >\n    `id` Int32,\n    `t` DateTime\n\nENGINE \"MergeTree\"\nENGINE_SORTING_KEY \"id\"\nENGINE_TTL \"t + toIntervalDay(1)\"\n",
    );
    write(
        &dir,
        "materializations/recent_mv.pipe",
        "NODE n\nSQL >\n    SELECT id, t FROM events\n\nTYPE materialized\nDATASOURCE recent\n",
    );
    write(
        &dir,
        "endpoints/latest_rows.pipe",
        "NODE n\nSQL >\n    SELECT id, v FROM latest ORDER BY id\n\nTYPE endpoint\n",
    );
    write(
        &dir,
        "endpoints/recent_rows.pipe",
        "NODE n\nSQL >\n    SELECT count() AS c FROM recent\n\nTYPE endpoint\n",
    );
    write(
        &dir,
        "endpoints/by_id.pipe",
        "NODE n\nSQL >\n    %\n    SELECT count() AS c FROM events WHERE id = {{String(id, '7')}}\n\nTYPE endpoint\n",
    );
    write(
        &dir,
        "endpoints/in_ids.pipe",
        "NODE n\nSQL >\n    %\n    SELECT count() AS c FROM events WHERE id IN {{Array(ids, 'String', '7,8')}}\n\nTYPE endpoint\n",
    );
    write(
        &dir,
        "endpoints/buckets.pipe",
        "NODE n\nSQL >\n    %\n    SELECT toStartOfInterval(t, INTERVAL {{String(minutes, '30')}} minute) AS b, count() AS c\n    FROM events WHERE t < toDateTime('2024-01-02 00:00:00') GROUP BY b ORDER BY b\n\nTYPE endpoint\n",
    );
    // Two materialized pipes writing one target (a pipe and its backfill) both add rows.
    write(
        &dir,
        "datasources/split.datasource",
        "SCHEMA >\n    `id` Int32,\n    `v` UInt32\n",
    );
    write(
        &dir,
        "materializations/split_new.pipe",
        "NODE n\nSQL >\n    SELECT id, v FROM events WHERE v > 4\n\nTYPE materialized\nDATASOURCE split\n",
    );
    write(
        &dir,
        "materializations/split_backfill.pipe",
        "NODE n\nSQL >\n    SELECT id, v FROM events WHERE v <= 4\n\nTYPE materialized\nDATASOURCE split\n",
    );
    write(
        &dir,
        "endpoints/split_rows.pipe",
        "NODE n\nSQL >\n    SELECT count() AS c, sum(v) AS s FROM split\n\nTYPE endpoint\n",
    );
    // The same parameter with a different default in two nodes: each node keeps its own.
    write(
        &dir,
        "endpoints/defaults.pipe",
        "NODE a\nSQL >\n    %\n    SELECT arrayJoin(range(0, {{Int32(n, 3)}})) AS x\n\nNODE b\nSQL >\n    %\n    SELECT {{Int32(n, 100)}} AS y\n\nNODE c\nSQL >\n    SELECT count() AS c FROM a\n\nTYPE endpoint\n",
    );
    // JSON_VALUE reads a scalar at a JSONPath.
    write(
        &dir,
        "endpoints/json_value.pipe",
        "NODE n\nSQL >\n    SELECT JSON_VALUE('{\"a\": {\"b\": \"x\"}, \"n\": 3}', '$.a.b') AS ab, JSON_VALUE('{\"n\": 3}', '$.n') AS n\n\nTYPE endpoint\n",
    );
    let server = common::Server::start_in(dir, &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let recent = petrel_value::time::format_datetime(now - 3600);
    let old = petrel_value::time::format_datetime(now - 3 * 86_400);
    send(
        &server,
        "events",
        &format!(
            "{{\"id\":7,\"v\":1,\"t\":\"2024-01-01 10:07:00\"}}\n\
             {{\"id\":7,\"v\":2,\"t\":\"2024-01-01 10:47:00\"}}\n\
             {{\"id\":8,\"v\":5,\"t\":\"2024-01-01 10:20:00\"}}\n\
             {{\"id\":9,\"v\":6,\"t\":\"{recent}\"}}\n\
             {{\"id\":9,\"v\":3,\"t\":\"{old}\"}}\n"
        ),
    );
    let latest = common::get(&server, "/v0/pipes/latest_rows.json");
    assert_eq!(
        latest["data"],
        json!([{"id": 7, "v": 2}, {"id": 8, "v": 5}, {"id": 9, "v": 6}]),
        "{latest}"
    );
    let recent_rows = common::get(&server, "/v0/pipes/recent_rows.json");
    assert_eq!(recent_rows["data"], json!([{"c": 1}]), "{recent_rows}");
    // `id = {{String(id)}}` on an Int32 column compares numbers, as ClickHouse does.
    let by_id = common::get(&server, "/v0/pipes/by_id.json");
    assert_eq!(by_id["data"], json!([{"c": 2}]), "{by_id}");
    let in_ids = common::get(&server, "/v0/pipes/in_ids.json?ids=7,9");
    assert_eq!(in_ids["data"], json!([{"c": 4}]), "{in_ids}");
    // `INTERVAL '30' minute` from a String parameter buckets by 30 minutes.
    let buckets = common::get(&server, "/v0/pipes/buckets.json");
    assert_eq!(
        buckets["data"],
        json!([{"b": "2024-01-01 10:00:00", "c": 2}, {"b": "2024-01-01 10:30:00", "c": 1}]),
        "{buckets}"
    );
    let split = common::get(&server, "/v0/pipes/split_rows.json");
    assert_eq!(split["data"], json!([{"c": 5, "s": 17}]), "{split}");
    let defaults = common::get(&server, "/v0/pipes/defaults.json");
    assert_eq!(defaults["data"], json!([{"c": 3}]), "{defaults}");
    let defaults = common::get(&server, "/v0/pipes/defaults.json?n=5");
    assert_eq!(defaults["data"], json!([{"c": 5}]), "{defaults}");
    let json_value = common::get(&server, "/v0/pipes/json_value.json");
    assert_eq!(
        json_value["data"],
        json!([{"ab": "x", "n": "3"}]),
        "{json_value}"
    );
    server.stop();
}
