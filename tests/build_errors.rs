//! `petrel build` on a folder of broken files reports every error, each with its
//! file:line:column, and exits 1; a good project exits 0.

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
        "NODE n\nSQL >\n    SELECT id, row_number() OVER (ORDER BY id) AS r FROM events\n\nTYPE endpoint\n",
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
        format!("{d}/pipes/window.pipe:3:16"),
        "window functions (OVER)".to_string(),
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
