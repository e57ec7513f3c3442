//! Commands that talk to a running server's admin API: `petrel deploy`, `petrel local
//! status` and `petrel local stop`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;

use super::client::{runtime, HostArgs};
use super::{project_dir, CliError};

/// Options of `petrel deploy`.
#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The project folder.
    dir: Option<PathBuf>,
    #[command(flatten)]
    host: HostArgs,
    /// Only validate: report what would change.
    #[arg(long)]
    check: bool,
    /// Allow replacing the data of datasources whose schema changed or that are removed.
    #[arg(long)]
    allow_destructive_operations: bool,
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<(), CliError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", dir.display())))?;
    for e in entries.flatten() {
        let path = e.path();
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, out)?;
        } else if matches!(
            path.extension().and_then(|x| x.to_str()),
            Some("datasource" | "pipe" | "connection")
        ) {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", path.display())))?;
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            out.insert(rel, text);
        }
    }
    Ok(())
}

/// Sends every datafile of the project to `POST /v1/deploy` and prints what changed.
pub fn run(args: DeployArgs) -> Result<(), CliError> {
    let root = project_dir(args.dir);
    let mut files = BTreeMap::new();
    collect(&root, &root, &mut files)?;
    runtime()?.block_on(async move {
        let client = reqwest::Client::new();
        let token = args.host.token(&client).await?;
        let host = args.host.base();
        let response = client
            .post(format!("{host}/v1/deploy"))
            .bearer_auth(token)
            .query(&[
                ("check", args.check.to_string()),
                (
                    "allow_destructive_operations",
                    args.allow_destructive_operations.to_string(),
                ),
            ])
            .json(&serde_json::json!({ "files": files }))
            .send()
            .await
            .map_err(|e| CliError::Failed(format!("cannot reach {host}: {e}")))?;
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| CliError::Failed(format!("bad answer from {host}: {e}")))?;
        match body["result"].as_str() {
            Some("success") | Some("no_changes") => {
                let build = &body["build"];
                for (key, what) in [
                    ("new_datasource_names", "new datasource"),
                    ("changed_datasource_names", "changed datasource"),
                    ("deleted_datasource_names", "deleted datasource"),
                    ("new_pipe_names", "new pipe"),
                    ("changed_pipe_names", "changed pipe"),
                    ("deleted_pipe_names", "deleted pipe"),
                ] {
                    for n in build[key].as_array().into_iter().flatten() {
                        println!("✓ {what} {}", n.as_str().unwrap_or_default());
                    }
                }
                let verb = if args.check {
                    "would deploy"
                } else {
                    "deployed"
                };
                match body["result"].as_str() {
                    Some("no_changes") => println!("no changes"),
                    _ => println!("{verb} {} files to {host}", files.len()),
                }
                Ok(())
            }
            _ => {
                for e in body["errors"].as_array().into_iter().flatten() {
                    eprintln!("✗ {}", e.as_str().unwrap_or_default());
                }
                if let Some(e) = body["error"].as_str() {
                    eprintln!("✗ {e}");
                }
                Err(CliError::Failed("deploy failed".into()))
            }
        }
    })
}

/// `petrel local status`: whether a server answers and is ready.
pub fn status(args: HostArgs) -> Result<(), CliError> {
    runtime()?.block_on(async move {
        let host = args.base();
        let response = reqwest::get(format!("{host}/v0/health"))
            .await
            .map_err(|_| CliError::Failed(format!("no server at {host}")))?;
        let ready = response.status().is_success();
        println!("{host}: {}", if ready { "running" } else { "starting" });
        Ok(())
    })
}

/// `petrel local stop`: asks the server on this machine to stop.
pub fn stop(args: HostArgs) -> Result<(), CliError> {
    runtime()?.block_on(async move {
        let client = reqwest::Client::new();
        let token = args.token(&client).await?;
        let host = args.base();
        let response = client
            .post(format!("{host}/v0/admin/shutdown"))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|_| CliError::Failed(format!("no server at {host}")))?;
        if !response.status().is_success() {
            return Err(CliError::Failed(format!(
                "the server refused: {}",
                response.status()
            )));
        }
        println!("stopped {host}");
        Ok(())
    })
}
