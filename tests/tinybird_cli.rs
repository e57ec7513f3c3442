//! The published Tinybird CLIs against a running Petrel server, unchanged (both installed from
//! PyPI by `scripts/test.sh`): Classic (`tinybird-cli` 6.5.5) authenticates, shows the
//! workspace, lists datasources and pipes, runs SQL and reads an endpoint with a parameter;
//! Forward (`tinybird` 5.0.3) in local mode appends a file, lists, runs SQL and reads.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Server, ADMIN};

const SEED: &str = include_str!("../dataflows/clicks/fixtures/clicks.ndjson");

/// Runs `tb --host URL --token ADMIN ARGS` in `dir` (its `.tinyb` and `HOME`), without
/// telemetry or version checks (no network besides the server); returns its output.
fn tb(server: &Server, dir: &Path, args: &[&str]) -> String {
    let bin = std::env::var("PETREL_TB_CLASSIC")
        .expect("PETREL_TB_CLASSIC is not set: run the tests through scripts/test.sh, which installs tinybird-cli");
    let mut command = Command::new(bin);
    command
        .args(["--host", &server.url, "--token", ADMIN])
        .args(args)
        .env("HOME", dir);
    run(command, dir, args)
}

/// Runs a tb command in `dir` without telemetry or version checks (no network besides the
/// server) and with no input; its output, after checking it succeeded.
fn run(command: Command, dir: &Path, args: &[&str]) -> String {
    let (ok, text) = run_status(command, dir);
    assert!(ok, "tb {args:?} failed:\n{text}");
    text
}

/// Runs a tb command as [`run`] does; whether it succeeded, and its output.
fn run_status(mut command: Command, dir: &Path) -> (bool, String) {
    let out = command
        .current_dir(dir)
        .env("TB_CLI_TELEMETRY_OPTOUT", "1")
        .env("TB_VERSION_WARNING", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("tb runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_classic_cli_works_unchanged() {
    let server = Server::start("dataflows/clicks", &[]);
    common::ingest_clicks(&server, SEED);
    let dir = server.dir.join("tb-cli");
    std::fs::create_dir_all(&dir).unwrap();

    let out = tb(&server, &dir, &["auth"]);
    assert!(out.contains("Auth successful"), "{out}");
    assert!(!out.contains("not an admin token"), "{out}");
    let out = tb(&server, &dir, &["workspace", "current"]);
    assert!(out.contains("admin") && out.contains("True"), "{out}");

    let out = tb(&server, &dir, &["datasource", "ls"]);
    assert!(out.contains("clicks"), "{out}");
    assert!(out.contains("row_count: 8"), "{out}");

    let out = tb(&server, &dir, &["pipe", "ls"]);
    for pipe in ["clicks_by_user", "clicks_per_minute", "top_countries"] {
        assert!(out.contains(pipe), "{pipe}: {out}");
    }

    let out = tb(&server, &dir, &["sql", "SELECT count() AS n FROM clicks"]);
    assert!(out.contains("| 8 |"), "{out}");

    let out = tb(
        &server,
        &dir,
        &["pipe", "data", "clicks_by_user", "--country", "DE"],
    );
    // The fixtures' one DE user, with its clicks summed.
    assert!(out.contains("user_id") && out.contains("22"), "{out}");
}

/// The Forward CLI's `tb ARGS` in local mode against `server` (found through `TB_LOCAL_PORT`,
/// as Tinybird Local on its port), in the project folder `dir`, ready to run.
fn tb_forward_command(server: &Server, dir: &Path, args: &[&str]) -> Command {
    let bin = std::env::var("PETREL_TB_FORWARD")
        .expect("PETREL_TB_FORWARD is not set: run the tests through scripts/test.sh, which installs tinybird");
    let port = server
        .url
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut command = Command::new(bin);
    command
        .args(args)
        .env("HOME", dir.join(".home"))
        .env("TB_LOCAL_HOST", "localhost")
        .env("TB_LOCAL_PORT", port);
    command
}

/// Runs the Forward CLI's `tb ARGS` (see [`tb_forward_command`]) and checks it succeeded.
fn tb_forward(server: &Server, dir: &Path, args: &[&str]) -> String {
    run(tb_forward_command(server, dir, args), dir, args)
}

#[test]
fn the_forward_cli_works_unchanged_in_local_mode() {
    let server = Server::start("dataflows/clicks", &[]);
    // The CLI runs in a copy of the project, as a developer would.
    let dir = server.dir.join("tb-forward");
    std::fs::create_dir_all(dir.join(".home")).unwrap();
    std::fs::create_dir_all(dir.join("fixtures")).unwrap();
    std::fs::write(dir.join("fixtures/clicks.ndjson"), SEED).unwrap();

    // It finds the server, makes its build workspace (by the folder's hash) and appends.
    let out = tb_forward(
        &server,
        &dir,
        &[
            "datasource",
            "append",
            "clicks",
            "--file",
            "fixtures/clicks.ndjson",
        ],
    );
    assert!(out.contains("Rows appended"), "{out}");
    // Events, and a URL the server fetches.
    let out = tb_forward(
        &server,
        &dir,
        &[
            "datasource",
            "append",
            "clicks",
            "--events",
            r#"{"user_id":500,"click_count":2,"country":"JP","timestamp":"2026-01-01 00:00:00"}"#,
        ],
    );
    assert!(!out.to_lowercase().contains("error"), "{out}");
    let files = common::file_server(vec![(
        "/more.ndjson",
        br#"{"user_id":501,"click_count":3,"country":"JP","timestamp":"2026-01-01 00:00:00"}"#
            .to_vec(),
    )]);
    let out = tb_forward(
        &server,
        &dir,
        &[
            "datasource",
            "append",
            "clicks",
            "--url",
            &format!("{files}/more.ndjson"),
        ],
    );
    assert!(!out.to_lowercase().contains("error"), "{out}");
    let body = common::get(
        &server,
        "/v0/sql?q=SELECT+sum(click_count)+AS+n+FROM+clicks+WHERE+country+%3D+%27JP%27",
    );
    assert_eq!(body["data"][0]["n"], 5, "{body}");
    let out = tb_forward(&server, &dir, &["datasource", "ls"]);
    assert!(out.contains("row_count: 10"), "{out}");
    let out = tb_forward(&server, &dir, &["endpoint", "ls"]);
    assert!(out.contains("top_countries"), "{out}");
    assert!(out.contains("/v0/pipes/top_countries.json"), "{out}");
    let out = tb_forward(&server, &dir, &["sql", "SELECT count() AS n FROM clicks"]);
    assert!(out.lines().any(|l| l.trim() == "10"), "{out}");
    let out = tb_forward(
        &server,
        &dir,
        &["endpoint", "data", "clicks_by_user", "--country", "DE"],
    );
    assert!(out.contains("22"), "{out}");
}

/// A datasource, its fixture and an endpoint over it that a developer adds to the project.
const VISITS_DATASOURCE: &str = "SCHEMA >\n    `page` String `json:$.page`,\n    `ms` UInt32 `json:$.ms`\n\nENGINE \"MergeTree\"\nENGINE_SORTING_KEY \"page\"\n";
const VISITS_FIXTURE: &str =
    "{\"page\":\"/a\",\"ms\":10}\n{\"page\":\"/b\",\"ms\":30}\n{\"page\":\"/a\",\"ms\":20}\n";
const VISITS_PIPE: &str = "NODE per_page\nSQL >\n    SELECT page, count() AS visits, sum(ms) AS total_ms FROM visits GROUP BY page ORDER BY page\n\nTYPE endpoint\n";

#[test]
fn the_forward_cli_builds_and_deploys_a_project_in_local_mode() {
    let server = Server::start("dataflows/clicks", &[]);
    // The developer's checkout of the project (apart from the server's folder), with a new
    // datasource, fixture and endpoint.
    let dir = common::temp_dir("tb-forward-project");
    for sub in ["datasources", "endpoints", "fixtures"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for e in std::fs::read_dir(common::repo().join("dataflows/clicks").join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(sub).join(e.file_name())).unwrap();
        }
    }
    std::fs::create_dir_all(dir.join(".home")).unwrap();
    std::fs::write(dir.join("datasources/visits.datasource"), VISITS_DATASOURCE).unwrap();
    std::fs::write(dir.join("fixtures/visits.ndjson"), VISITS_FIXTURE).unwrap();
    std::fs::write(dir.join("endpoints/visits_per_page.pipe"), VISITS_PIPE).unwrap();

    // `tb build` creates what is new and loads the fixtures of the empty datasources.
    let out = tb_forward(&server, &dir, &["build"]);
    assert!(out.contains("visits.datasource created"), "{out}");
    assert!(out.contains("visits_per_page.pipe created"), "{out}");
    assert!(out.contains("Build completed"), "{out}");
    let body = common::get(&server, "/v0/pipes/visits_per_page.json");
    assert_eq!(
        body["data"],
        serde_json::json!([
            {"page": "/a", "visits": 2, "total_ms": 30},
            {"page": "/b", "visits": 1, "total_ms": 30}
        ]),
        "{body}"
    );
    // Building again with nothing changed changes nothing.
    let out = tb_forward(&server, &dir, &["build"]);
    assert!(out.contains("No changes"), "{out}");

    // `tb deploy` of a changed endpoint: the deployment goes live and is listed.
    std::fs::write(
        dir.join("endpoints/visits_per_page.pipe"),
        VISITS_PIPE.replace("sum(ms)", "max(ms)"),
    )
    .unwrap();
    let out = tb_forward(&server, &dir, &["deploy"]);
    assert!(
        out.contains("modified") && out.contains("visits_per_page"),
        "{out}"
    );
    assert!(out.contains("Deployment #1 is live"), "{out}");
    let body = common::get(&server, "/v0/pipes/visits_per_page.json");
    assert_eq!(body["data"][0]["total_ms"], 20, "{body}");
    let out = tb_forward(&server, &dir, &["deployment", "ls"]);
    assert!(
        out.lines().any(|l| l.contains(" 1 ") && l.contains("Live")),
        "{out}"
    );
    // The deployed files are the project's now: a restart serves them.
    let text = std::fs::read_to_string(server.dir.join("endpoints/visits_per_page.pipe")).unwrap();
    assert!(text.contains("max(ms)"), "{text}");

    // A broken datafile fails the deploy, names the file and changes nothing.
    std::fs::write(
        dir.join("endpoints/broken.pipe"),
        "NODE n\nSQL >\n    SELECT count( AS c FROM visits\n\nTYPE endpoint\n",
    )
    .unwrap();
    let (ok, out) = run_status(tb_forward_command(&server, &dir, &["deploy"]), &dir);
    assert!(!ok, "{out}");
    assert!(out.contains("endpoints/broken.pipe"), "{out}");
    let body = common::get(&server, "/v0/pipes/visits_per_page.json");
    assert_eq!(body["data"][0]["total_ms"], 20, "{body}");
    let out = tb_forward(&server, &dir, &["deployment", "ls"]);
    assert!(!out.lines().any(|l| l.contains(" 2 ")), "{out}");
}

#[test]
fn the_classic_cli_pushes_resources_and_appends_files() {
    let server = Server::start("dataflows/clicks", &[]);
    let dir = common::temp_dir("tb-classic-push");
    std::fs::create_dir_all(dir.join("datasources")).unwrap();
    std::fs::create_dir_all(dir.join("pipes")).unwrap();
    std::fs::write(dir.join("datasources/visits.datasource"), VISITS_DATASOURCE).unwrap();
    // A Classic pipe: no TYPE, published by `tb push`, readable with the token it names.
    std::fs::write(
        dir.join("pipes/visits_per_page.pipe"),
        format!(
            "TOKEN \"visits_reader\" READ\n\n{}",
            VISITS_PIPE.replace("\nTYPE endpoint\n", "")
        ),
    )
    .unwrap();
    std::fs::write(dir.join("visits.ndjson"), VISITS_FIXTURE).unwrap();
    std::fs::write(dir.join("visits.csv"), "page,ms\n/c,5\n/a,1\n").unwrap();

    tb(&server, &dir, &["auth"]);
    let out = tb(
        &server,
        &dir,
        &[
            "push",
            "datasources/visits.datasource",
            "pipes/visits_per_page.pipe",
        ],
    );
    assert!(out.contains("'visits' created"), "{out}");
    assert!(out.contains("'visits_per_page' created"), "{out}");
    // Pushed resources are the server's datafiles now: a restart serves them.
    assert!(server.dir.join("datasources/visits.datasource").is_file());
    let pushed = std::fs::read_to_string(server.dir.join("pipes/visits_per_page.pipe")).unwrap();
    assert!(pushed.contains("TYPE endpoint"), "{pushed}");

    // File appends are multipart uploads, NDJSON and CSV.
    let out = tb(
        &server,
        &dir,
        &["datasource", "append", "visits", "visits.ndjson"],
    );
    assert!(out.contains("Total rows in visits: 3"), "{out}");
    let out = tb(
        &server,
        &dir,
        &["datasource", "append", "visits", "visits.csv"],
    );
    assert!(out.contains("Total rows in visits: 5"), "{out}");
    // And a URL the server fetches, followed as a job.
    let files = common::file_server(vec![(
        "/more.ndjson",
        b"{\"page\":\"/d\",\"ms\":2}\n".to_vec(),
    )]);
    let out = tb(
        &server,
        &dir,
        &[
            "datasource",
            "append",
            "visits",
            &format!("{files}/more.ndjson"),
        ],
    );
    assert!(out.contains("Total rows in visits: 6"), "{out}");
    let out = tb(&server, &dir, &["datasource", "ls"]);
    assert!(out.contains("visits"), "{out}");
    let out = tb(&server, &dir, &["pipe", "data", "visits_per_page"]);
    assert!(out.contains("/c") && out.contains("31"), "{out}");

    // The token the pipe names reads it (and only it).
    let tokens = common::get(&server, "/v0/tokens");
    let reader = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "visits_reader")
        .unwrap_or_else(|| panic!("no visits_reader token: {tokens}"))["token"]
        .as_str()
        .unwrap()
        .to_string();
    let read = |pipe: &str| {
        common::client()
            .get(format!("{}/v0/pipes/{pipe}.json", server.url))
            .bearer_auth(&reader)
            .send()
            .unwrap()
    };
    let body: serde_json::Value = read("visits_per_page").json().unwrap();
    assert_eq!(
        body["data"],
        serde_json::json!([
            {"page": "/a", "visits": 3, "total_ms": 31},
            {"page": "/b", "visits": 1, "total_ms": 30},
            {"page": "/c", "visits": 1, "total_ms": 5},
            {"page": "/d", "visits": 1, "total_ms": 2}
        ]),
        "{body}"
    );
    assert_eq!(read("top_countries").status(), 403);

    // Pushing a changed pipe over it (`--force`) replaces it; it stays published.
    std::fs::write(
        dir.join("pipes/visits_per_page.pipe"),
        format!(
            "TOKEN \"visits_reader\" READ\n\n{}",
            VISITS_PIPE
                .replace("\nTYPE endpoint\n", "")
                .replace("sum(ms)", "max(ms)")
        ),
    )
    .unwrap();
    tb(
        &server,
        &dir,
        &[
            "push",
            "pipes/visits_per_page.pipe",
            "--force",
            "--no-check",
        ],
    );
    let body: serde_json::Value = read("visits_per_page").json().unwrap();
    assert_eq!(body["data"][0]["total_ms"], 20, "{body}");
}

#[test]
fn classic_resource_calls_refuse_bad_input_and_change_nothing() {
    let server = Server::start("dataflows/clicks", &[]);
    let post = |path: &str, body: Option<serde_json::Value>| {
        let mut req = common::client()
            .post(format!("{}{path}", server.url))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().unwrap();
        let status = res.status().as_u16();
        (status, res.json::<serde_json::Value>().unwrap())
    };
    let (status, body) = post("/v0/sql_tables?q=SELECT+count()+FROM+clicks", None);
    assert_eq!(
        (status, &body["tables"]),
        (200, &serde_json::json!([["", "clicks"]]))
    );
    let (status, body) = post("/v0/sql_tables?q=SELECT+FROM+WHERE&raising=true", None);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("cannot parse"),
        "{body}"
    );

    let (status, body) = post("/v0/datasources?mode=create&name=events", None);
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("schema"), "{body}");
    let (status, body) = post(
        "/v0/datasources?mode=create&name=bad-name&schema=%60a%60+String",
        None,
    );
    assert_eq!(status, 400, "{body}");
    // A setting over two lines would write a further directive into the datafile.
    let (status, body) = post(
        "/v0/datasources?mode=create&name=events&schema=%60a%60+String&engine_sorting_key=a%0ATOKEN+%22x%22+READ",
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert!(!server.dir.join("datasources/events.datasource").exists());

    let (status, body) = post(
        "/v0/pipes",
        Some(serde_json::json!({
            "name": "orphan",
            "nodes": [{"name": "n", "sql": "SELECT count() FROM nowhere"}]
        })),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("nowhere"),
        "{body}"
    );
    let pipes = common::get(&server, "/v0/pipes");
    assert!(!pipes.to_string().contains("orphan"), "{pipes}");
    assert!(!server.dir.join("pipes/orphan.pipe").exists());

    let res = common::client()
        .put(format!(
            "{}/v0/tokens/reader?scope=PIPES:WRITE:x",
            server.url
        ))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[test]
fn the_classic_cli_pushes_a_materialized_pipe_and_pipes_are_deleted() {
    let server = Server::start("dataflows/clicks", &[]);
    let dir = common::temp_dir("tb-classic-mv");
    let write = |file: &str, text: &str| {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "datasources/ev.datasource",
        "SCHEMA >\n    `k` String `json:$.k`,\n    `v` Int64 `json:$.v`\n\nENGINE \"MergeTree\"\nENGINE_SORTING_KEY \"k\"\n",
    );
    write(
        "datasources/ev_totals.datasource",
        "SCHEMA >\n    `k` String,\n    `total` AggregateFunction(sum, Int64)\n\nENGINE \"AggregatingMergeTree\"\nENGINE_SORTING_KEY \"k\"\n",
    );
    write(
        "pipes/ev_mv.pipe",
        "NODE m\nSQL >\n    SELECT k, sumState(v) AS total FROM ev GROUP BY k\n\nTYPE materialized\nDATASOURCE ev_totals\n",
    );
    write(
        "pipes/ev_read.pipe",
        "NODE r\nSQL >\n    SELECT k, sumMerge(total) AS total FROM ev_totals GROUP BY k ORDER BY k\n",
    );
    write(
        "ev.ndjson",
        "{\"k\":\"a\",\"v\":1}\n{\"k\":\"b\",\"v\":5}\n{\"k\":\"a\",\"v\":7}\n",
    );

    tb(&server, &dir, &["auth"]);
    // The CLI checks the materialized pipe over a temporary copy (analysis, then DELETE).
    let out = tb(&server, &dir, &["push"]);
    assert!(out.contains("Materialized pipe 'ev_mv'"), "{out}");
    assert!(out.contains("'ev_read' created"), "{out}");
    assert!(!out.contains("Warning"), "{out}");
    assert!(!server.dir.join("pipes/ev_mv__checker.pipe").exists());
    tb(&server, &dir, &["datasource", "append", "ev", "ev.ndjson"]);
    let body = common::get(&server, "/v0/pipes/ev_read.json");
    assert_eq!(
        body["data"],
        serde_json::json!([{"k": "a", "total": 8}, {"k": "b", "total": 5}]),
        "{body}"
    );

    // A pipe is deleted with its datafile; an unknown one is a 404.
    let delete = |name: &str| {
        common::client()
            .delete(format!("{}/v0/pipes/{name}", server.url))
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(delete("ev_read"), 204);
    assert!(!server.dir.join("pipes/ev_read.pipe").exists());
    assert_eq!(
        common::client()
            .get(format!("{}/v0/pipes/ev_read.json", server.url))
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .status(),
        404
    );
    assert_eq!(delete("nowhere"), 404);
}

#[test]
fn concurrent_pushes_all_land() {
    let server = Server::start("dataflows/clicks", &[]);
    let url = server.url.clone();
    let pushes: Vec<_> = (0..6)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                common::client()
                    .post(format!("{url}/v0/pipes"))
                    .bearer_auth(ADMIN)
                    .json(&serde_json::json!({
                        "name": format!("per_country_{i}"),
                        "nodes": [{"name": "n", "sql": format!("SELECT country, count() + {i} AS c FROM clicks GROUP BY country")}]
                    }))
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for p in pushes {
        assert_eq!(p.join().unwrap(), 200);
    }
    let pipes = common::get(&server, "/v0/pipes").to_string();
    for i in 0..6 {
        assert!(pipes.contains(&format!("per_country_{i}")), "{pipes}");
        assert!(server
            .dir
            .join(format!("pipes/per_country_{i}.pipe"))
            .is_file());
    }
}
