//! `petrel init [DIR]`: a new project with a datasource, an endpoint, a fixture and a test
//! that pass, Tinybird's folder layout, and a CI workflow running `petrel test run`.

use std::path::PathBuf;

use clap::Args;

use super::{project_dir, CliError};

/// Options of `petrel init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Where to create the project (default: the current directory).
    dir: Option<PathBuf>,
}

const FILES: [(&str, &str); 6] = [
    (
        "datasources/events.datasource",
        "DESCRIPTION >\n    Events sent to the Events API.\n\nSCHEMA >\n    `timestamp` DateTime `json:$.timestamp` DEFAULT now(),\n    `user_id` String `json:$.user_id`,\n    `action` LowCardinality(String) `json:$.action`\n\nTOKEN \"events_append\" APPEND\n",
    ),
    (
        "endpoints/actions.pipe",
        "DESCRIPTION >\n    Events per action, for one user or for everyone.\n\nTOKEN \"actions_read\" READ\n\nNODE actions_node\nSQL >\n    %\n    SELECT action, count() AS events\n    FROM events\n    {% if defined(user_id) %}\n    WHERE user_id = {{ String(user_id, description=\"Only this user\") }}\n    {% end %}\n    GROUP BY action\n    ORDER BY events DESC, action\n\nTYPE endpoint\n",
    ),
    (
        "fixtures/events.ndjson",
        "{\"timestamp\":\"2024-01-01 10:00:00\",\"user_id\":\"u1\",\"action\":\"view\"}\n{\"timestamp\":\"2024-01-01 10:01:00\",\"user_id\":\"u1\",\"action\":\"click\"}\n{\"timestamp\":\"2024-01-01 10:02:00\",\"user_id\":\"u2\",\"action\":\"view\"}\n",
    ),
    (
        "tests/actions.yaml",
        "- name: all_users\n  description: every action\n  parameters: ''\n  expected_result: |\n    {\"action\":\"view\",\"events\":2}\n    {\"action\":\"click\",\"events\":1}\n\n- name: one_user\n  description: only u2\n  parameters: user_id=u2\n  expected_result: |\n    {\"action\":\"view\",\"events\":1}\n",
    ),
    (".gitignore", ".petrel/\n.env.local\n"),
    (
        ".github/workflows/petrel.yml",
        "name: petrel\non: [push, pull_request]\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - run: cargo install --git https://github.com/petrel-dev/petrel petrel\n      - run: petrel build .\n      - run: petrel test run\n",
    ),
];

const FOLDERS: [&str; 9] = [
    "datasources",
    "endpoints",
    "materializations",
    "copies",
    "sinks",
    "connections",
    "fixtures",
    "tests",
    ".github/workflows",
];

/// Creates the project; refuses to overwrite any existing file.
pub fn run(args: InitArgs) -> Result<(), CliError> {
    let root = project_dir(args.dir);
    for (path, _) in FILES {
        if root.join(path).exists() {
            return Err(CliError::Failed(format!(
                "{} already exists; nothing was written",
                root.join(path).display()
            )));
        }
    }
    let fail = |e: std::io::Error| CliError::Failed(e.to_string());
    for f in FOLDERS {
        std::fs::create_dir_all(root.join(f)).map_err(fail)?;
    }
    for (path, text) in FILES {
        std::fs::write(root.join(path), text).map_err(fail)?;
        println!("✓ {path}");
    }
    println!("Next: petrel dev {}", root.display());
    Ok(())
}
