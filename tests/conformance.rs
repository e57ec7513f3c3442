//! The corpus conformance check in the suite: `scripts/conformance.py` loads generated rows
//! into Petrel and into ClickHouse (chdb) for four real Tinybird projects of the shared
//! corpus, renders every endpoint with Tinybird's own template engine, runs it in ClickHouse
//! and compares Petrel's answer. Every endpoint must answer what ClickHouse answers, except
//! the differences docs/from-tinybird.md documents as deliberate. The full run over the
//! whole corpus is `scripts/conformance.py` itself.

mod common;

use std::process::Command;

/// Endpoints whose answers differ from ClickHouse's by a documented choice (see
/// docs/from-tinybird.md): `any`/`anySimpleState` pick the smallest value where ClickHouse
/// picks whichever row it reads first; so does `LIMIT 1` without `ORDER BY` (web-analytics
/// `domain` falls back to one when the last hour of the generated rows has no domain, which
/// depends on the hour the test runs at).
const DELIBERATE: &[(&str, &str)] = &[
    ("tinybirdco__web-analytics-starter-kit", "actions"),
    ("tinybirdco__web-analytics-starter-kit", "domain"),
];

const PROJECTS: &[&str] = &[
    "tinybirdco__web-analytics-starter-kit",
    "openstatusHQ__openstatus",
    "polarsource__polar",
    "tinybirdco__logs-explorer-template",
];

#[test]
fn corpus_endpoints_answer_what_clickhouse_answers() {
    let corpus = common::repo().join("../shared/corpus");
    if !corpus.is_dir() {
        eprintln!("skipped: no shared corpus at {}", corpus.display());
        return;
    }
    let out_file = common::temp_dir("conformance").join("result.json");
    let out = Command::new("python3")
        .arg(common::repo().join("scripts/conformance.py"))
        .args(["--projects", &PROJECTS.join(","), "--rows", "500"])
        .arg("--petrel")
        .arg(env!("CARGO_BIN_EXE_petrel"))
        .arg("--json")
        .arg(&out_file)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    let mut different = Vec::new();
    let mut not_served = Vec::new();
    let mut checked = 0;
    let mut equal = 0;
    for project in result["projects"].as_array().unwrap() {
        let name = project["project"].as_str().unwrap();
        for e in project["endpoints"].as_array().unwrap() {
            let pipe = e["pipe"].as_str().unwrap();
            match e["status"].as_str().unwrap() {
                "equal" | "equal-empty" => {
                    equal += 1;
                    checked += 1;
                }
                "different" if !DELIBERATE.contains(&(name, pipe)) => {
                    checked += 1;
                    different.push(format!("{name}/{pipe}: {}", e["diff"]));
                }
                "different" => checked += 1,
                "not served" => {
                    checked += 1;
                    not_served.push(format!("{name}/{pipe}: {}", e["petrel_error"]));
                }
                _ => {}
            }
        }
    }
    assert!(different.is_empty(), "{}\n{stdout}", different.join("\n"));
    // The endpoints left unserved are the documented unsupported features (an OFFSET computed
    // from a scalar subquery, in logs-explorer).
    assert!(not_served.len() <= 1, "{}\n{stdout}", not_served.join("\n"));
    assert!(
        checked >= 125 && equal * 100 >= checked * 97,
        "{equal} of {checked} equal\n{stdout}"
    );
}
