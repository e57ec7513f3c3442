//! `petrel test run|update`: Tinybird's `tests/PIPE.yaml` cases against a fresh, isolated
//! instance of the project loaded with its fixtures; results are compared exactly.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use clap::Args;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::{project_dir, CliError};

/// Options of `petrel test run|update`.
#[derive(Args, Debug)]
pub struct TestArgs {
    /// Only these tests: a pipe name, or `pipe/test`.
    names: Vec<String>,
    /// The project folder.
    #[arg(long)]
    project: Option<PathBuf>,
}

/// One case of a `tests/PIPE.yaml` file.
#[derive(Debug, Clone, Deserialize, Serialize)]
struct Case {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<String>,
    #[serde(default)]
    expected_result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected_http_status: Option<u16>,
    /// Petrel's addition: NDJSON rows to append, by datasource, after subscribing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    append: Option<std::collections::BTreeMap<String, String>>,
    /// Petrel's addition: the changes (`{"diff":..,"row":{..}}` lines, in any order) the
    /// subscription must receive once the appended rows land.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected_changes: Option<String>,
}

/// Subscribes over SSE, appends the case's rows, and returns the consolidated changes the
/// subscription received up to the rows' timestamp, one JSON line each, sorted.
fn subscription_changes(
    base: &str,
    token: &str,
    pipe: &str,
    params: &str,
    append: &std::collections::BTreeMap<String, String>,
) -> Result<String, CliError> {
    use std::io::BufRead;
    let fail = |e: String| CliError::Failed(format!("subscription: {e}"));
    let client = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut url = format!("{base}/v0/pipes/{pipe}.sse");
    if !params.is_empty() {
        url.push('?');
        url.push_str(params);
    }
    let response = client
        .get(url)
        .bearer_auth(token)
        .send()
        .map_err(|e| fail(e.to_string()))?;
    if !response.status().is_success() {
        return Err(fail(format!("status {}", response.status())));
    }
    let mut lines = std::io::BufReader::new(response).lines();
    let mut next_data = || -> Result<serde_json::Value, CliError> {
        for line in lines.by_ref() {
            let line = line.map_err(|e| fail(e.to_string()))?;
            if let Some(data) = line.strip_prefix("data:") {
                return serde_json::from_str(data.trim()).map_err(|e| fail(e.to_string()));
            }
        }
        Err(fail("the stream ended".into()))
    };
    let first = next_data()?;
    if first["type"] != "snapshot" {
        return Err(fail(format!("expected a snapshot first, got {first}")));
    }
    let mut ts = 0u64;
    for (ds, rows) in append {
        let r = reqwest::blocking::Client::new()
            .post(format!("{base}/v0/events?name={ds}&wait=true"))
            .bearer_auth(token)
            .body(rows.clone())
            .send()
            .map_err(|e| fail(e.to_string()))?;
        let v: serde_json::Value = r.json().map_err(|e| fail(e.to_string()))?;
        ts = ts.max(
            v["ts"]
                .as_u64()
                .ok_or_else(|| fail(format!("append to {ds} failed: {v}")))?,
        );
    }
    let mut changes: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    loop {
        let v = next_data()?;
        let upper = v["upper"].as_u64().or(v["ts"].as_u64()).unwrap_or(0);
        if v["type"] == "changes" {
            for c in v["data"].as_array().into_iter().flatten() {
                *changes.entry(c["row"].to_string()).or_insert(0) +=
                    c["diff"].as_i64().unwrap_or(0);
            }
        }
        if upper > ts {
            break;
        }
    }
    let mut out: Vec<String> = changes
        .into_iter()
        .filter(|(_, d)| *d != 0)
        .map(|(row, diff)| format!("{{\"diff\":{diff},\"row\":{row}}}"))
        .collect();
    out.sort();
    Ok(out.into_iter().map(|l| l + "\n").collect())
}

/// A JSON document's text with object keys sorted at every level.
fn canonical(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::Value::String(k.clone()),
                        canonical(&map[k])
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        serde_json::Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(canonical).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}

/// Sorted lines, each JSON document in a canonical form (keys sorted), for a comparison
/// that ignores the order of lines and of keys.
fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .map(|v| canonical(&v))
                .unwrap_or_else(|_| l.to_string())
        })
        .collect();
    lines.sort();
    lines
}

/// A server process for the tests, stopped on drop.
struct Instance {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn copy_project(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if e.path().is_dir() {
            copy_project(&e.path(), &to.join(&name))?;
        } else {
            std::fs::copy(e.path(), to.join(&name))?;
        }
    }
    Ok(())
}

fn start(root: &Path, token: &str) -> Result<Instance, CliError> {
    let fail = |e: std::io::Error| CliError::Failed(format!("cannot start a test instance: {e}"));
    let dir = std::env::temp_dir().join(format!(
        "petrel-test-run-{}-{}",
        std::process::id(),
        rand::rng().next_u32()
    ));
    copy_project(root, &dir).map_err(fail)?;
    let exe = std::env::current_exe().map_err(fail)?;
    let mut child = Command::new(exe)
        .args(["local", "start", "--port", "0", "--fixtures", "--project"])
        .arg(&dir)
        .env("PETREL_ADMIN_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(fail)?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| CliError::Failed("no output from the test instance".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut url = None;
    for line in lines.by_ref() {
        let line = line.map_err(fail)?;
        if let Some(rest) = line.strip_prefix("Petrel is listening on ") {
            url = Some(rest.trim().to_string());
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let url = url.ok_or_else(|| {
        CliError::Failed("the test instance did not start (does `petrel build` pass?)".into())
    })?;
    Ok(Instance { child, url, dir })
}

/// What one case returned: status and the text compared with `expected_result`.
fn call(
    client: &reqwest::blocking::Client,
    base: &str,
    token: &str,
    pipe: &str,
    case: &Case,
) -> Result<(u16, String), CliError> {
    let params = case.parameters.clone().unwrap_or_default();
    let params = params
        .rsplit_once('?')
        .map(|(_, p)| p.to_string())
        .unwrap_or(params);
    let mut url = format!("{base}/v0/pipes/{pipe}.ndjson");
    if !params.is_empty() {
        url.push('?');
        url.push_str(&params);
    }
    let r = client
        .get(url)
        .bearer_auth(token)
        .send()
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let status = r.status().as_u16();
    let text = r.text().map_err(|e| CliError::Failed(e.to_string()))?;
    if status >= 400 {
        let error = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(text);
        return Ok((status, error));
    }
    Ok((status, text))
}

/// Runs the tests (or, with `update`, rewrites their expectations).
pub fn run(args: TestArgs, update: bool) -> Result<(), CliError> {
    let root = project_dir(args.project);
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("tests"))
        .map_err(|e| CliError::Failed(format!("no tests folder in {}: {e}", root.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    let wanted = |pipe: &str, case: &str| {
        args.names.is_empty()
            || args
                .names
                .iter()
                .any(|n| n == pipe || *n == format!("{pipe}/{case}"))
    };
    let mut token = [0u8; 16];
    rand::rng().fill_bytes(&mut token);
    let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
    let instance = start(&root, &token)?;
    let client = reqwest::blocking::Client::new();
    let (mut passed, mut failed) = (0, 0);
    for file in files {
        let pipe = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&file).map_err(|e| CliError::Failed(e.to_string()))?;
        let mut cases: Vec<Case> = serde_yaml_ng::from_str(&text)
            .map_err(|e| CliError::Failed(format!("{}: {e}", file.display())))?;
        let mut changed = false;
        for case in cases.iter_mut().filter(|c| wanted(&pipe, &c.name)) {
            if let Some(append) = case.append.clone() {
                let params = case.parameters.clone().unwrap_or_default();
                let params = params
                    .rsplit_once('?')
                    .map(|(_, p)| p.to_string())
                    .unwrap_or(params);
                let actual = subscription_changes(&instance.url, &token, &pipe, &params, &append)?;
                if update {
                    case.expected_changes = Some(actual);
                    changed = true;
                    println!("✓ {pipe}/{} updated", case.name);
                    continue;
                }
                let expected = case.expected_changes.clone().unwrap_or_default();
                if sorted_lines(&expected) == sorted_lines(&actual) {
                    passed += 1;
                    println!("✓ {pipe}/{} passed", case.name);
                } else {
                    failed += 1;
                    println!("✗ {pipe}/{} failed: the subscription received", case.name);
                    for line in sorted_lines(&actual) {
                        println!("  + {line}");
                    }
                    for line in sorted_lines(&expected) {
                        println!("  - {line}");
                    }
                }
                continue;
            }
            let (status, actual) = call(&client, &instance.url, &token, &pipe, case)?;
            if update {
                case.expected_result = Some(actual);
                case.expected_http_status = (status >= 400).then_some(status);
                changed = true;
                println!("✓ {pipe}/{} updated", case.name);
                continue;
            }
            let expected_status = case.expected_http_status.unwrap_or(200);
            let expected = case.expected_result.clone().unwrap_or_default();
            let result_ok = if status >= 400 {
                expected.trim().is_empty() || expected.trim() == actual.trim()
            } else {
                expected == actual
            };
            if status == expected_status && result_ok {
                passed += 1;
                println!("✓ {pipe}/{} passed", case.name);
            } else {
                failed += 1;
                println!("✗ {pipe}/{} failed", case.name);
                if status != expected_status {
                    println!("  expected status {expected_status}, got {status}");
                }
                for line in expected
                    .lines()
                    .filter(|l| !actual.lines().any(|a| a == *l))
                {
                    println!("  - {line}");
                }
                for line in actual
                    .lines()
                    .filter(|l| !expected.lines().any(|e| e == *l))
                {
                    println!("  + {line}");
                }
            }
        }
        if changed {
            let yaml =
                serde_yaml_ng::to_string(&cases).map_err(|e| CliError::Failed(e.to_string()))?;
            std::fs::write(&file, yaml).map_err(|e| CliError::Failed(e.to_string()))?;
        }
    }
    drop(instance);
    if update {
        return Ok(());
    }
    let total = passed + failed;
    if failed == 0 {
        println!("✓ {passed}/{total} passed");
        Ok(())
    } else {
        println!("✗ {failed}/{total} failed");
        Err(CliError::Failed(format!("{failed} test(s) failed")))
    }
}
