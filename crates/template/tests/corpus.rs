//! Every templated node SQL of the shared corpus of real Tinybird projects must parse, and
//! render with no parameters either succeeds or fails only because required parameters are
//! missing or the template raised its own `error()`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use petrel_template::{ParamType, Params, Template, TemplateError};

/// The shared corpus, beside the checkout; read from where the tests run (cargo sets the
/// variable at run time), not where they were built.
fn corpus() -> std::path::PathBuf {
    std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("../../../shared/corpus")
}

/// Nodes that legitimately fail to render without parameters, by file suffix and node name,
/// with the reason.
const EXPECTED_FAILURES: &[(&str, &str, &str)] = &[(
    "log_timeseries.pipe",
    "error_monitoring_node",
    "its first statement is `date_diff_in_hours(start_date, end_date)` with no typed use of \
     the parameters before it; Tinybird raises the same date_format error when they are missing",
)];

/// Datafile keywords that end an unindented `SQL >` block.
fn is_keyword(word: &str) -> bool {
    let w = word.to_ascii_uppercase();
    matches!(
        w.as_str(),
        "NODE"
            | "SQL"
            | "TYPE"
            | "DATASOURCE"
            | "DESCRIPTION"
            | "TOKEN"
            | "TAGS"
            | "INCLUDE"
            | "TARGET_DATASOURCE"
            | "MODE"
            | "DEPLOYMENT_METHOD"
            | "ON_DEMAND_COMPUTE"
            | "FORWARD_QUERY"
            | "VERSION"
            | "SCHEMA"
            | "INDEXES"
            | "SHARED_WITH"
    ) || ["COPY_", "EXPORT_", "ENGINE", "KAFKA_"]
        .iter()
        .any(|p| w.starts_with(p))
}

/// The `(node name, SQL)` blocks of a `.pipe` file: the lines after `SQL >` up to the next
/// unindented line that starts with a datafile keyword, dedented.
fn sql_blocks(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut node = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.eq_ignore_ascii_case("NODE") && !line.starts_with(char::is_whitespace) {
            node = words.next().unwrap_or("").to_string();
        }
        if line.trim().eq_ignore_ascii_case("SQL >") {
            let mut block = Vec::new();
            i += 1;
            while i < lines.len() {
                let l = lines[i];
                let unindented = !l.is_empty() && !l.starts_with(char::is_whitespace);
                if unindented && is_keyword(l.split_whitespace().next().unwrap_or("")) {
                    break;
                }
                block.push(l);
                i += 1;
            }
            let indent = block
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.len() - l.trim_start().len())
                .min()
                .unwrap_or(0);
            let sql: Vec<&str> = block
                .iter()
                .map(|l| {
                    if l.len() >= indent {
                        &l[indent..]
                    } else {
                        l.trim_start()
                    }
                })
                .collect();
            out.push((node.clone(), sql.join("\n")));
            continue;
        }
        i += 1;
    }
    out
}

fn pipe_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            pipe_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "pipe") {
            out.push(p);
        }
    }
}

/// A plausible value for a declared parameter, to drive the `defined(..)` branches.
fn sample(ty: &ParamType) -> Option<String> {
    Some(match ty {
        ParamType::String => "x".into(),
        ParamType::Boolean => "1".into(),
        ParamType::Int(_) | ParamType::UInt(_) => "1".into(),
        ParamType::Float32 | ParamType::Float64 => "1.5".into(),
        ParamType::Date => "2024-01-01".into(),
        ParamType::DateTime => "2024-01-01 00:00:00".into(),
        ParamType::DateTime64 => "2024-01-01 00:00:00.000".into(),
        ParamType::Array(elem) => format!("{0},{0}", sample(elem)?),
        ParamType::Json => return None,
    })
}

#[test]
fn corpus_templates_parse_and_render() {
    let root = corpus();
    let root = root.as_path();
    if !root.is_dir() {
        eprintln!("note: corpus not found at {}; skipping", root.display());
        return;
    }
    let mut files = Vec::new();
    pipe_files(root, &mut files);
    let (mut nodes, mut templated) = (0, 0);
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut with_params: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut shapes = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let rel = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        for (node, sql) in sql_blocks(&text) {
            nodes += 1;
            if !sql.trim_start().starts_with('%') {
                continue;
            }
            templated += 1;
            let t = match Template::parse(&sql) {
                Ok(t) => t,
                Err(e) => {
                    failures.push(format!("{rel} node {node}: parse: {e}"));
                    continue;
                }
            };
            let outcome = match t.render(&Params::new()) {
                Ok(_) => "ok",
                Err(TemplateError::RequiredParams { .. }) => "required parameters missing",
                Err(TemplateError::Custom { .. }) => "error() raised",
                Err(e) => {
                    let expected = EXPECTED_FAILURES
                        .iter()
                        .any(|(f, n, _)| rel.ends_with(f) && *n == node);
                    if !expected {
                        failures.push(format!("{rel} node {node}: render: {e}"));
                    }
                    "expected failure"
                }
            };
            *outcomes.entry(outcome).or_default() += 1;

            // Again with a plausible value for every declared parameter: this takes the
            // `defined(..)` branches. Values are made up, so only the kinds of errors that
            // point at Petrel are failures.
            let mut params = Params::new();
            for d in t.declared_params() {
                if let Some(v) = sample(&d.ty) {
                    params.insert(d.name.clone(), v);
                }
            }
            let second = t.render(&params);
            let kind = match &second {
                Ok(_) => "ok",
                Err(TemplateError::RequiredParams { .. }) => "required parameters missing",
                Err(TemplateError::Custom { .. }) => "error() raised",
                Err(TemplateError::InvalidValue { .. }) => "invalid sample value",
                Err(TemplateError::Eval { .. }) => "template logic failed on samples",
                Err(e) => {
                    failures.push(format!("{rel} node {node}: render with samples: {e}"));
                    "petrel failure"
                }
            };
            *with_params.entry(kind).or_default() += 1;
            // The same parameters with other values must give the same shape.
            if let Ok(first) = second {
                let mut other = Params::new();
                for (k, v) in &params.values {
                    let v = match v.as_str() {
                        "x" => "y".to_string(),
                        "1" => "2".to_string(),
                        "x,x" => "y,y,y".to_string(),
                        "1,1" => "2,2,2".to_string(),
                        other => other.to_string(),
                    };
                    other.insert(k.clone(), v);
                }
                if let Ok(again) = t.render(&other) {
                    let typed_only = first.values.keys().all(|k| params.values.contains_key(k));
                    if typed_only && again.sql == first.sql {
                        shapes += 1;
                    }
                }
            }
        }
    }
    println!(
        "corpus: {} pipe files, {nodes} nodes, {templated} templated",
        files.len()
    );
    println!("render without parameters: {outcomes:?}");
    println!("render with sample parameters: {with_params:?}");
    println!("same shape for other typed values: {shapes}");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
