//! `petrel cluster start` and `petrel cluster status`: one Petrel over several processes
//! (docs/cluster.md).

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use clap::Args;

use super::client::{self, HostArgs};
use super::local::{self, Place, StartArgs};
use super::CliError;
use crate::cluster::parse_members;

/// Options of `petrel cluster start`.
#[derive(Args, Debug)]
pub struct ClusterStartArgs {
    /// The cluster file: one process per line, `CLUSTER_ADDRESS HTTP_URL` (for instance
    /// `10.0.0.1:7300 http://10.0.0.1:7181`), the same file on every process.
    #[arg(long, conflicts_with = "local", requires = "process")]
    hosts: Option<PathBuf>,
    /// This process's line in the cluster file, from 0. Process 0 is the coordinator.
    #[arg(long)]
    process: Option<usize>,
    /// Start a cluster of this many processes on this machine, to try it out: process i
    /// answers HTTP on `--port` + i and connects to the others on `--cluster-port` + i.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    local: Option<u16>,
    /// The first cluster port of `--local`.
    #[arg(long, default_value_t = 7300)]
    cluster_port: u16,
    /// Exit (with an error, after storing what the process holds) once the cluster lost a
    /// process, for a supervisor that restarts every process (systemd `Restart=always`);
    /// without it, the process stays up, answers health with 503 and refuses writes.
    #[arg(long)]
    exit_on_cluster_failure: bool,
    #[command(flatten)]
    start: StartArgs,
}

/// Runs `petrel cluster start`.
pub fn start(args: ClusterStartArgs) -> Result<(), CliError> {
    if let Some(n) = args.local {
        return start_local(&args, n as usize);
    }
    let (Some(hosts), Some(process)) = (args.hosts, args.process) else {
        return Err(CliError::Failed(
            "pass --hosts FILE --process I (one process of a cluster) or --local N".into(),
        ));
    };
    let text = std::fs::read_to_string(&hosts)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", hosts.display())))?;
    let members = parse_members(&text).map_err(|e| CliError::Failed(e.to_string()))?;
    if process >= members.len() {
        return Err(CliError::Failed(format!(
            "--process {process}: {} lists {} process(es)",
            hosts.display(),
            members.len()
        )));
    }
    let place = Place {
        process,
        members,
        exit_on_failure: args.exit_on_cluster_failure,
    };
    local::start_process(args.start, false, Some(place))
}

/// `--local N`: writes a cluster file for N processes on loopback and runs each as a child
/// of this one, until one of them stops or this one is stopped (then it stops them all).
fn start_local(args: &ClusterStartArgs, n: usize) -> Result<(), CliError> {
    let dir = args.start.project_dir();
    let state = dir.join(".petrel");
    std::fs::create_dir_all(&state).map_err(|e| CliError::Failed(e.to_string()))?;
    let port = args.start.port;
    let text: String = (0..n)
        .map(|i| {
            format!(
                "127.0.0.1:{} http://127.0.0.1:{}\n",
                args.cluster_port as usize + i,
                port as usize + i
            )
        })
        .collect();
    let file = state.join("cluster-local.txt");
    std::fs::write(&file, &text).map_err(|e| CliError::Failed(e.to_string()))?;
    // Every process must share one admin token.
    let token = match std::env::var("PETREL_ADMIN_TOKEN") {
        Ok(t) if !t.is_empty() => t,
        _ => {
            let saved = state.join("admin_token");
            match std::fs::read_to_string(&saved) {
                Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
                _ => {
                    let t = crate::serve::new_token_value("admin");
                    crate::serve::write_private(&saved, t.as_bytes())
                        .map_err(|e| CliError::Failed(e.to_string()))?;
                    t
                }
            }
        }
    };
    let exe = std::env::current_exe().map_err(|e| CliError::Failed(e.to_string()))?;
    // The children get this command line without `--local N`, and their place.
    let mut passed: Vec<String> = Vec::new();
    let mut given = std::env::args().skip(1).peekable();
    while let Some(a) = given.next() {
        if a == "--local" {
            given.next();
        } else if !a.starts_with("--local=") {
            passed.push(a);
        }
    }
    let mut children: Vec<Child> = Vec::new();
    for i in 0..n {
        let child = Command::new(&exe)
            .args(&passed)
            .arg("--hosts")
            .arg(&file)
            .arg("--process")
            .arg(i.to_string())
            .env("PETREL_ADMIN_TOKEN", &token)
            .spawn();
        match child {
            Ok(c) => children.push(c),
            Err(e) => {
                stop_all(&mut children);
                return Err(CliError::Failed(format!("cannot start process {i}: {e}")));
            }
        }
    }
    println!(
        "a {n}-process cluster on this machine (cluster file {}):",
        file.display()
    );
    for i in 0..n {
        println!("  process {i}: http://127.0.0.1:{}", port as usize + i);
    }
    let failed = client::runtime()?.block_on(async {
        let stop = local::stop_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break None,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            if let Some(exited) = children
                .iter_mut()
                .enumerate()
                .find_map(|(i, c)| c.try_wait().ok().flatten().map(|s| (i, s)))
            {
                break Some(exited);
            }
        }
    });
    stop_all(&mut children);
    match failed {
        Some((i, status)) if !status.success() => Err(CliError::Failed(format!(
            "process {i} stopped ({status}); the others were stopped too"
        ))),
        _ => Ok(()),
    }
}

/// Stops every child (SIGTERM, so each stores what it holds) and waits for them.
fn stop_all(children: &mut [Child]) {
    for c in children.iter() {
        // SAFETY: kill(2) with a child's pid has no memory effects.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    for c in children.iter_mut() {
        let _ = c.wait();
    }
}

/// `petrel cluster status`: every process, its workers, frontier and lag (`GET /v0/cluster`).
pub fn status(args: HostArgs) -> Result<(), CliError> {
    client::runtime()?.block_on(async {
        let http = reqwest::Client::new();
        let token = args.token(&http).await?;
        let body = client::json(
            http.get(format!("{}/v0/cluster", args.base()))
                .bearer_auth(token),
        )
        .await?;
        println!(
            "{:<8} {:<28} {:>7} {:>16} {:>8}  state",
            "process", "url", "workers", "frontier", "lag_ms"
        );
        for p in body["processes"].as_array().into_iter().flatten() {
            let state = match (
                p["error"].as_str(),
                p["failure"].as_str(),
                p["ready"].as_bool(),
            ) {
                (Some(e), _, _) => format!("unreachable: {e}"),
                (_, Some(f), _) => format!("failed: {f}"),
                (_, _, Some(true)) => "ok".to_string(),
                _ => "starting".to_string(),
            };
            println!(
                "{:<8} {:<28} {:>7} {:>16} {:>8}  {state}",
                p["process"],
                p["url"].as_str().unwrap_or("-"),
                p["workers"],
                p["frontier"],
                p["lag_ms"],
            );
        }
        if body["healthy"].as_bool() == Some(true) {
            Ok(())
        } else {
            Err(CliError::Failed("the cluster is not healthy".into()))
        }
    })
}
