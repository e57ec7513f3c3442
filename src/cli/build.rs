//! `petrel build [DIR]`: checks a project without a server. Every file is parsed and every
//! endpoint planned; each error is printed with its `file:line:column`, and each endpoint
//! shows which parameters are view keys and which are applied when the view is read.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Args;

use super::{project_dir, CliError};
use crate::project::{lift_keys, Project};

/// Options of `petrel build`.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The project folder.
    dir: Option<PathBuf>,
}

/// Checks the project; fails when any file or pipe has an error.
pub fn run(args: BuildArgs) -> Result<(), CliError> {
    let dir = project_dir(args.dir);
    let (project, errors) = Project::load_with_errors(&dir);
    for w in &project.warnings {
        println!("warning: {w}");
    }
    for ds in project.datasources.values() {
        println!("✓ datasource {} ({} columns)", ds.name, ds.columns.len());
    }
    for pipe in project.pipes.values().filter(|p| p.broken.is_none()) {
        if pipe.endpoint.is_none() {
            println!("✓ pipe {} (not an endpoint)", pipe.name);
            continue;
        }
        println!(
            "✓ endpoint {}{}",
            pipe.name,
            describe_params(&project, &pipe.name)
        );
    }
    for e in &errors {
        eprintln!("✗ {e}");
        if let Some(excerpt) = excerpt(e) {
            eprintln!("{excerpt}");
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Project(errors.len()))
    }
}

/// The source line an error points at (`path:line:column: message`), with a caret under the
/// column.
fn excerpt(error: &str) -> Option<String> {
    let mut parts = error.splitn(4, ':');
    let (path, line, column) = (parts.next()?, parts.next()?, parts.next()?);
    let (line, column): (usize, usize) = (line.parse().ok()?, column.parse().ok()?);
    let text = std::fs::read_to_string(path).ok()?;
    let source = text.lines().nth(line.checked_sub(1)?)?;
    let gutter = format!("{line:>5} | ");
    let pad: String = source
        .chars()
        .take(column.saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    Some(format!(
        "{gutter}{source}\n{}{pad}^",
        " ".repeat(gutter.len())
    ))
}

/// `: key country; read-time limit; bound start` for an endpoint planned with its defaults.
fn describe_params(project: &Project, pipe: &str) -> String {
    let Ok(rendered) = project.render_pipe(pipe, &Default::default()) else {
        return String::new();
    };
    let Ok(query) = project.plan_rendered(pipe, &rendered) else {
        return String::new();
    };
    let (query, keys) = lift_keys(query);
    let mut bound = BTreeSet::new();
    query.plan.params(&mut bound);
    let mut read_time = BTreeSet::new();
    for e in query.limit.iter().chain(query.offset.iter()) {
        e.params(&mut read_time);
    }
    let mut parts = Vec::new();
    if !keys.is_empty() {
        parts.push(format!(
            "keys {}",
            keys.iter()
                .map(|k| k.param.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !read_time.is_empty() {
        parts.push(format!(
            "read-time {}",
            read_time.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if !bound.is_empty() {
        parts.push(format!(
            "one view per value of {}",
            bound.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    match project.pipes.get(pipe).and_then(|p| p.time_pin) {
        Some(crate::project::TimePin::Day) => {
            parts.push("reads today(): one view per day".to_string())
        }
        Some(crate::project::TimePin::Second) => {
            parts.push("reads now(): recomputed per request, not subscribable".to_string())
        }
        None => {}
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join("; "))
    }
}
