//! The published Tinybird Classic CLI (`tinybird-cli` 6.5.5 from PyPI, installed by
//! `scripts/test.sh`) against a running Petrel server, unchanged: authenticate, show the
//! workspace, list datasources and pipes, run SQL and read an endpoint with a parameter.

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
    let out = Command::new(bin)
        .args(["--host", &server.url, "--token", ADMIN])
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
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
