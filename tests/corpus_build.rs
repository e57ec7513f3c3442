//! A green `petrel build` means every endpoint answers: for the real projects of the shared
//! corpus, each endpoint the build reports without error is asked, on a running engine, with
//! every parameter set the build planned it with (its defaults, then each literal its
//! templates compare a parameter with and an example of each typed parameter).

mod common;

use std::sync::Arc;

use petrel::project::{Project, ProjectError};
use petrel::runtime::{Runtime, RuntimeConfig};

/// The projects the suite asks; `PETREL_CORPUS_BUILD_ALL=1` adds the two large ones (dub and
/// openstatus, several minutes more).
const PROJECTS: &[&str] = &[
    "tinybirdco__web-analytics-starter-kit",
    "polarsource__polar/server/tinybird",
    "tinybirdco__logs-explorer-template",
    "tinybirdco__log-analytics-starter-kit",
];

#[test]
fn every_endpoint_of_a_green_build_answers_each_branch() {
    let corpus = common::repo().join("../shared/corpus");
    if !corpus.is_dir() {
        eprintln!("skipped: no shared corpus at {}", corpus.display());
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut asked = 0;
    let mut failures = Vec::new();
    let mut projects = PROJECTS.to_vec();
    if std::env::var_os("PETREL_CORPUS_BUILD_ALL").is_some() {
        projects.extend(["dubinc__dub", "openstatusHQ__openstatus"]);
    }
    for name in projects {
        let dir = corpus.join(name);
        let (project, errors) = Project::load_with_errors(&dir);
        let green: Vec<String> = project
            .pipes
            .values()
            .filter(|p| p.is_endpoint())
            .filter(|p| {
                let file = p.file.display().to_string();
                !errors.iter().any(|e| e.starts_with(&file))
            })
            .map(|p| p.name.clone())
            .collect();
        assert!(!green.is_empty(), "{name}: no green endpoint");
        let sets: Vec<(String, Vec<_>)> = green
            .iter()
            .map(|p| (p.clone(), project.build_parameter_sets(p)))
            .collect();
        let data = common::temp_dir(&format!("corpus-build-{}", name.replace('/', "_")));
        let runtime: Arc<Runtime> = rt
            .block_on(Runtime::start(
                project.clone(),
                &data.to_string_lossy(),
                RuntimeConfig::default(),
            ))
            .unwrap();
        for (pipe, sets) in sets {
            for params in sets {
                // A template's own error() is a deliberate 400, not a failed build.
                if let Err(ProjectError::Custom { .. }) = project.render_pipe(&pipe, &params) {
                    continue;
                }
                asked += 1;
                if let Err(e) = rt.block_on(runtime.query_pipe(&pipe, &params)) {
                    failures.push(format!("{name}/{pipe} with {params:?}: {e}"));
                }
            }
        }
        rt.block_on(runtime.stop_durably()).unwrap();
    }
    assert!(asked > 40, "only {asked} requests");
    assert!(
        failures.is_empty(),
        "{} of {asked} requests failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
