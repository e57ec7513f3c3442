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
fn run(mut command: Command, dir: &Path, args: &[&str]) -> String {
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
    assert!(out.status.success(), "tb {args:?} failed:\n{text}");
    text
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

/// Runs the Forward CLI's `tb ARGS` in local mode against `server` (found through
/// `TB_LOCAL_PORT`, as Tinybird Local on its port), in the project folder `dir`.
fn tb_forward(server: &Server, dir: &Path, args: &[&str]) -> String {
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
    run(command, dir, args)
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
    let out = tb_forward(&server, &dir, &["datasource", "ls"]);
    assert!(out.contains("row_count: 8"), "{out}");
    let out = tb_forward(&server, &dir, &["endpoint", "ls"]);
    assert!(out.contains("top_countries"), "{out}");
    assert!(out.contains("/v0/pipes/top_countries.json"), "{out}");
    let out = tb_forward(&server, &dir, &["sql", "SELECT count() AS n FROM clicks"]);
    assert!(out.lines().any(|l| l.trim() == "8"), "{out}");
    let out = tb_forward(
        &server,
        &dir,
        &["endpoint", "data", "clicks_by_user", "--country", "DE"],
    );
    assert!(out.contains("22"), "{out}");
}
