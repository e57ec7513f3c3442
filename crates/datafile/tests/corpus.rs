//! Every datafile of the shared corpus of real Tinybird projects must parse, except the few Classic-era
//! files listed in `EXPECTED_FAILURES`, which use syntax that the Tinybird reference rejects.

use std::fs;
use std::path::{Path, PathBuf};

use petrel_datafile::{parse_file, render_secrets, Datafile};

/// The shared corpus, beside the checkout; read from where the tests run (cargo sets the
/// variable at run time), not where they were built.
fn corpus() -> std::path::PathBuf {
    std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("../../../shared/corpus")
}

/// Classic-era files that fail under the reference's (Tinybird Forward CLI's) rules: the path, the
/// reason, and a piece of the error message that must be among the reported errors.
const EXPECTED_FAILURES: &[(&str, &str, &str)] = &[
    (
        "tinybirdco__use-case-examples/add_column_BQ_ds/datasources/bq_nullable.datasource",
        "Classic BigQuery import: IMPORT_STRATEGY was removed, IMPORT_QUERY may not be a block",
        "IMPORT_STRATEGY has been deprecated",
    ),
    (
        "tinybirdco__use-case-examples/add_column_BQ_ds/datasources/bq_pypi_data.datasource",
        "Classic BigQuery import: IMPORT_STRATEGY was removed, IMPORT_QUERY may not be a block",
        "IMPORT_STRATEGY has been deprecated",
    ),
    (
        "tinybirdco__use-case-examples/add_column_kafka_data_source/datasources/my_kafka_ds.datasource",
        "KAFKA_KEY_AVRO_DESERIALIZATION was removed (KAFKA_KEY_FORMAT avro replaces it)",
        "KAFKA_KEY_AVRO_DESERIALIZATION has been deprecated",
    ),
    (
        "tinybirdco__use-case-examples/add_column_snowflake_ds/datasources/stock_prices.datasource",
        "Classic Snowflake import: IMPORT_STRATEGY was removed, no IMPORT_BUCKET_URI",
        "IMPORT_STRATEGY has been deprecated",
    ),
    (
        "tinybirdco__use-case-examples/add_column_to_s3_ds/datasources/analytics_events.datasource",
        "IMPORT_STRATEGY was removed (imports always append)",
        "IMPORT_STRATEGY has been deprecated",
    ),
    (
        "tinybirdco__use-case-examples/change_sorting_key_kafka_data_source/datasources/product_events.datasource",
        "KAFKA_KEY_AVRO_DESERIALIZATION was removed (KAFKA_KEY_FORMAT avro replaces it)",
        "KAFKA_KEY_AVRO_DESERIALIZATION has been deprecated",
    ),
    (
        "tinybirdco__use-case-examples/create_s3_datasource/datasources/s3_sample.datasource",
        "IMPORT_STRATEGY was removed (imports always append)",
        "IMPORT_STRATEGY has been deprecated",
    ),
    (
        "tinybirdco__use-case-examples/delete_column_snowflake_ds/datasources/stock_prices.datasource",
        "Classic Snowflake import: IMPORT_STRATEGY was removed, no IMPORT_BUCKET_URI",
        "IMPORT_STRATEGY has been deprecated",
    ),
    (
        "tinybirdco__use-case-examples/delete_column_snowflake_ds/datasources/stock_prices_new.datasource",
        "Classic Snowflake import: IMPORT_STRATEGY was removed, no IMPORT_BUCKET_URI",
        "IMPORT_STRATEGY has been deprecated",
    ),
    (
        "tinybirdco__use-case-examples/iterate_snowflake/datasources/stock_prices.datasource",
        "Classic Snowflake import: IMPORT_STRATEGY was removed, no IMPORT_BUCKET_URI",
        "IMPORT_STRATEGY has been deprecated",
    ),
];

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("datasource" | "pipe" | "connection")
        ) {
            out.push(path);
        }
    }
}

/// Renders `tb_secret` calls with their defaults, or empty when they have none.
fn render(text: &str) -> String {
    render_secrets(text, &|_| None)
        .or_else(|_| render_secrets(text, &|_| Some(String::new())))
        .unwrap_or_else(|e| panic!("secrets: {e}"))
}

#[test]
fn corpus_files_parse() {
    let root = corpus();
    let root = root.as_path();
    if !root.is_dir() {
        println!("corpus folder {} is absent: skipping", root.display());
        return;
    }
    let mut files = Vec::new();
    walk(root, &mut files);
    files.sort();
    let (mut datasources, mut pipes, mut connections) = (0, 0, 0);
    let mut unexpected = Vec::new();
    let mut failed = Vec::new();
    for path in &files {
        let rel = path
            .strip_prefix(root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        let bytes = fs::read(path).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let text = String::from_utf8_lossy(&bytes);
        let text = if rel.ends_with(".pipe") {
            text.into_owned()
        } else {
            render(&text)
        };
        match parse_file(path, &text) {
            Ok(Datafile::Datasource(_)) => datasources += 1,
            Ok(Datafile::Pipe(_)) => pipes += 1,
            Ok(Datafile::Connection(_)) => connections += 1,
            Err(errors) => {
                failed.push(rel.clone());
                let expected = EXPECTED_FAILURES
                    .iter()
                    .find(|(f, _, _)| *f == rel)
                    .is_some_and(|(_, _, needle)| {
                        errors.iter().any(|e| e.message.contains(needle))
                    });
                if !expected {
                    let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    unexpected.push(format!("{rel}:\n    {}", rendered.join("\n    ")));
                }
            }
        }
    }
    println!(
        "corpus: {} files; parsed {datasources} datasources, {pipes} pipes, {connections} connections; {} failed as expected",
        files.len(),
        failed.len()
    );
    assert!(
        unexpected.is_empty(),
        "{} unexpected failures:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    let stale: Vec<&str> = EXPECTED_FAILURES
        .iter()
        .map(|(f, _, _)| *f)
        .filter(|f| !failed.iter().any(|x| x == f))
        .collect();
    assert!(
        stale.is_empty(),
        "expected failures that now parse: {stale:?}"
    );
}
