//! `petrel local start`: a server for a project folder, on embedded defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{project_dir, CliError};
use crate::project::Project;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::serve::{self, AppState, Tokens};

/// Options of `petrel local start`.
#[derive(Args, Debug, Clone)]
pub struct StartArgs {
    /// The project folder (datasources, pipes, fixtures).
    #[arg(long, short = 'p')]
    project: Option<PathBuf>,
    /// The project folder, as a positional argument.
    #[arg(value_name = "DIR", conflicts_with = "project")]
    dir: Option<PathBuf>,
    /// The port to listen on.
    #[arg(long, default_value_t = 7181)]
    pub port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Timely worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// The clock's tick (flush interval) in milliseconds.
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
    /// Where datasource data lives: a folder, or `s3://BUCKET/PREFIX` (AWS environment
    /// variables; `AWS_ENDPOINT_URL` for S3-compatible servers). Default: PROJECT/.petrel/data.
    #[arg(long, env = "PETREL_STORAGE")]
    storage: Option<String>,
    /// A folder to keep datasource data in (the same as `--storage FOLDER`).
    #[arg(long, conflicts_with = "storage")]
    data: Option<PathBuf>,
    /// How often rows written without `wait=true` are stored (group commit), in
    /// milliseconds: the most such rows a crash can lose. Subscribers may have been sent them;
    /// after a crash those that resume get a fresh snapshot (docs/subscriptions.md).
    #[arg(long, default_value_t = 100)]
    flush_interval_ms: u64,
    /// How much change history views keep for resuming subscribers, in milliseconds.
    #[arg(long, default_value_t = 300_000)]
    retention_ms: u64,
    /// The most bytes of change history each view keeps: a view that changes faster keeps
    /// less than `--retention-ms`, and subscribers resuming before it get a fresh snapshot.
    #[arg(long, default_value_t = petrel_view::CHANGE_LOG_BYTES)]
    change_log_bytes: usize,
    /// How often views are snapshotted to storage, in milliseconds (0: never): a restart
    /// serves reads from the snapshots at once.
    #[arg(long, default_value_t = 30_000)]
    snapshot_interval_ms: u64,
    /// Drop a view no subscriber holds and no request read for this long (milliseconds).
    #[arg(long, default_value_t = 600_000)]
    view_idle_ms: u64,
    /// Cancel an ad-hoc query (`/v0/sql`, `q=`) that takes longer than this (milliseconds):
    /// it answers 408 and its dataflow is dropped.
    #[arg(long, default_value_t = 10_000)]
    query_timeout_ms: u64,
    /// Cancel an ad-hoc query whose joins (and ARRAY JOINs) produce more rows than this: it
    /// answers 422 and its dataflow is dropped. Bounds the memory one query can take.
    #[arg(long, default_value_t = 10_000_000)]
    query_max_rows: u64,
    /// How many ad-hoc queries (`/v0/sql`, `q=`) may run at once; more answer 429 at once.
    #[arg(long, default_value_t = 16)]
    max_concurrent_queries: usize,
    /// The most views maintained at once: past it the least recently used view without
    /// subscribers is dropped; when subscribers hold all of them, new ones answer 429.
    #[arg(long, default_value_t = 256)]
    max_views: usize,
    /// Bytes of frames one subscriber may have queued and not yet written; past it a slow
    /// subscriber gets a resync snapshot (or is closed, with `overflow=close`).
    #[arg(long, default_value_t = 1 << 20)]
    subscriber_buffer_bytes: usize,
    /// Bytes of queued frames all subscribers together may hold.
    #[arg(long, default_value_t = 256 << 20)]
    subscribers_buffer_bytes: usize,
    /// How many change batches a live subscriber may fall behind a view before it has to
    /// catch up (a resync snapshot, or closed with `overflow=close`).
    #[arg(long, default_value_t = 1024)]
    change_ring_batches: usize,
    /// Open WebSocket/SSE subscriptions one token may hold at once; past it, 429.
    #[arg(long, default_value_t = 1_000)]
    max_subscriptions_per_token: usize,
    /// Rows accepted by the Events API that the views have not read or the storage has not
    /// stored yet; past it, requests wait for them (429 after 30 s).
    #[arg(long, default_value_t = 2_000_000)]
    max_waiting_rows: u64,
    /// Keep each helper thread (the decode of large bodies, the fold of large batches into
    /// views) on a core of its own, when there is one helper per core the process may use.
    /// `--pin-helpers false` lets the kernel move them, for a server sharing its cores.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pin_helpers: bool,
    /// Connections served at once; further ones wait in the listen backlog.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Close a connection that has not sent a whole request head within this time
    /// (milliseconds; a new connection, or an idle keep-alive one).
    #[arg(long, default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// Serve as a read-only replica of the server whose storage is `--storage` (or `--data`):
    /// follow its writes, answer reads and subscriptions, refuse writes.
    #[arg(long)]
    replica: bool,
    /// With `--replica`: the storage is a cluster's, of this many processes (each share under
    /// `STORAGE/process-I`); the replica follows all of them as one.
    #[arg(long, default_value_t = 1, requires = "replica")]
    cluster_processes: usize,
    /// Load `fixtures/NAME.ndjson` into datasources that are empty.
    #[arg(long)]
    pub fixtures: bool,
    /// Accept a `PETREL_ADMIN_TOKEN` shorter than 32 characters (development only: the admin
    /// token signs JWTs, and a short one can be guessed from a JWT).
    #[arg(long)]
    pub insecure_dev_token: bool,
}

/// The shortest admin token accepted without `--insecure-dev-token`: the admin token also
/// signs JWTs (as in Tinybird), and a short key can be recovered from one issued JWT.
const MIN_ADMIN_TOKEN_CHARS: usize = 32;

/// The admin token: `PETREL_ADMIN_TOKEN`, else the one saved in `.petrel/admin_token`, else a
/// new one (saved, so it survives restarts). A given token shorter than 32 characters is
/// refused unless `insecure` (a development server).
fn admin_token(state_dir: &std::path::Path, insecure: bool) -> Result<String, CliError> {
    if let Ok(t) = std::env::var("PETREL_ADMIN_TOKEN") {
        if !t.is_empty() {
            if t.chars().count() < MIN_ADMIN_TOKEN_CHARS && !insecure {
                return Err(CliError::Failed(format!(
                    "PETREL_ADMIN_TOKEN has {} characters; use at least {MIN_ADMIN_TOKEN_CHARS} (it also signs JWTs), or pass --insecure-dev-token on a development machine",
                    t.chars().count()
                )));
            }
            return Ok(t);
        }
    }
    let file = state_dir.join("admin_token");
    if let Ok(t) = std::fs::read_to_string(&file) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let t = serve::new_token_value("admin");
    std::fs::create_dir_all(state_dir)
        .and_then(|_| serve::write_private(&file, t.as_bytes()))
        .map_err(|e| CliError::Failed(format!("cannot save the admin token: {e}")))?;
    Ok(t)
}

/// Starts the server and serves until the process is stopped. With `watch` (`petrel dev`),
/// changes to the project's files are deployed into the running server as they are saved.
pub fn start(args: StartArgs, watch: bool) -> Result<(), CliError> {
    start_process(args, watch, None)
}

/// A cluster process's place: its index and every process of the cluster file.
pub struct Place {
    /// This process's index.
    pub process: usize,
    /// Every process, in order.
    pub members: Vec<crate::cluster::Member>,
    /// Exit (non-zero, after storing what it holds) once the cluster lost a process, so a
    /// supervisor restarts it, instead of staying up to report the failure.
    pub exit_on_failure: bool,
}

impl StartArgs {
    /// The project folder these options name.
    pub fn project_dir(&self) -> PathBuf {
        project_dir(self.project.clone().or(self.dir.clone()))
    }
}

/// As [`start`], as one process of a cluster when `place` is given: it listens on its
/// cluster-file URL's port, keeps its data under `process-I` of the storage, and takes the
/// admin token every process shares from `PETREL_ADMIN_TOKEN`.
pub fn start_process(args: StartArgs, watch: bool, place: Option<Place>) -> Result<(), CliError> {
    let dir = args.project_dir();
    // A project with errors still starts: what loads is served, and each pipe or datasource
    // that does not is listed here (and by `GET /v0/pipes`), as a migrating user needs.
    let (project, errors) = Project::load_with_errors(&dir);
    for w in &project.warnings {
        eprintln!("warning: {w}");
    }
    for e in &errors {
        eprintln!("✗ {e}");
    }
    if project.datasources.is_empty() && project.pipes.is_empty() && !errors.is_empty() {
        return Err(CliError::Project(errors.len()));
    }
    if !errors.is_empty() {
        eprintln!(
            "warning: {} error(s): the resources above are not served; everything else is",
            errors.len()
        );
    }
    let state_dir = dir.join(".petrel");
    if args.replica && args.storage.is_none() && args.data.is_none() {
        return Err(CliError::Failed(
            "--replica needs the primary's --storage URL (or --data folder)".into(),
        ));
    }
    let mut storage = args
        .storage
        .or_else(|| args.data.map(|d| d.to_string_lossy().into_owned()))
        .unwrap_or_else(|| state_dir.join("data").to_string_lossy().into_owned());
    let mut port = args.port;
    if let Some(place) = &place {
        if place.members.len() > 1 && std::env::var("PETREL_ADMIN_TOKEN").is_err() {
            return Err(CliError::Failed(
                "a cluster's processes call each other with the admin token: set PETREL_ADMIN_TOKEN to the same value on every process".into(),
            ));
        }
        storage = format!(
            "{}/process-{}",
            storage.trim_end_matches('/'),
            place.process
        );
        port = place.members[place.process]
            .http_url
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .ok_or_else(|| CliError::Failed("the cluster file's HTTP URL needs a port".into()))?;
    }
    let admin = admin_token(&state_dir, args.insecure_dev_token)?;
    let wanted = project
        .declared_tokens()
        .into_iter()
        .map(|(name, grants)| (name, grants.into_iter().map(Into::into).collect()))
        .collect();
    let tokens = Tokens::load(&state_dir.join("tokens.json"), &admin, wanted)
        .map_err(|e| CliError::Failed(format!("cannot save tokens: {e}")))?;
    // A cluster loads fixtures once, through process 0.
    let first = place.as_ref().is_none_or(|p| p.process == 0);
    let exit_on_failure = place.as_ref().is_some_and(|p| p.exit_on_failure);
    let fixtures = (args.fixtures && first).then(|| project.fixtures());
    let cluster = place
        .map(|p| crate::cluster::ClusterRole::new(p.process, p.members, admin.clone()))
        .transpose()
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let addr: SocketAddr = format!("{}:{}", args.host, port)
        .parse()
        .map_err(|e| CliError::Failed(format!("bad listen address: {e}")))?;
    let config = RuntimeConfig {
        engine: petrel_engine::EngineConfig {
            workers: args.workers.max(1),
            tick: Duration::from_millis(args.tick_ms.max(1)),
            ..Default::default()
        },
        retention_ms: args.retention_ms,
        change_log_bytes: args.change_log_bytes,
        view_idle_ms: args.view_idle_ms,
        replica: args.replica,
        replica_processes: args.cluster_processes,
        snapshot_interval_ms: args.snapshot_interval_ms,
        query_timeout_ms: args.query_timeout_ms,
        query_max_rows: args.query_max_rows,
        max_concurrent_queries: args.max_concurrent_queries,
        max_views: args.max_views,
        subscriber_buffer_bytes: args.subscriber_buffer_bytes,
        subscribers_buffer_bytes: args.subscribers_buffer_bytes,
        change_ring_batches: args.change_ring_batches,
        max_subscriptions_per_token: args.max_subscriptions_per_token,
        max_waiting_rows: args.max_waiting_rows,
        pin_helpers: args.pin_helpers,
        cluster: cluster.clone(),
        storage: crate::storage::StorageConfig {
            flush_interval: Duration::from_millis(args.flush_interval_ms.max(1)),
            ..Default::default()
        },
    };
    let limits = serve::ConnectionLimits {
        max_connections: args.max_connections,
        header_timeout: Duration::from_millis(args.header_timeout_ms.max(1)),
    };
    let rt = tokio::runtime::Runtime::new().map_err(|e| CliError::Failed(e.to_string()))?;
    rt.block_on(async move {
        let runtime = Runtime::start(project, &storage, config)
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        if let Some(fixtures) = fixtures {
            load_fixtures(&runtime, fixtures).await?;
        }
        crate::host::follow_connectors(&runtime);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| CliError::Failed(format!("cannot listen on {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| CliError::Failed(e.to_string()))?;
        println!("Petrel is listening on http://{local}");
        if let Some(role) = &cluster {
            println!(
                "cluster process {} of {} (process 0: {})",
                role.process,
                role.members.len(),
                role.coordinator_url()
            );
        }
        println!("admin token: {admin}");
        for pipe in runtime.describe_pipes().iter().filter(|p| p.endpoint) {
            println!("endpoint: http://{local}/v0/pipes/{}.json", pipe.name);
        }
        println!("live page: http://{local}/");
        if watch {
            tokio::spawn(watch_project(runtime.clone(), dir.clone()));
        }
        let state = AppState {
            runtime: runtime.clone(),
            tokens: Arc::new(tokens),
            admin_token: admin,
            requests: Default::default(),
            jobs: Default::default(),
            workspace_names: Default::default(),
            deployments: Arc::new(serve::Deployments::load(
                dir.join(".petrel").join("deployments.json"),
            )),
        };
        // SIGTERM or Ctrl-C stop cleanly: rows still in memory are written first.
        tokio::select! {
            served = serve::serve_with(listener, state, limits) => {
                served.map_err(|e| CliError::Failed(e.to_string()))
            }
            () = stop_signal() => {
                runtime
                    .stop_durably()
                    .await
                    .map_err(|e| CliError::Failed(e.to_string()))
            }
            failure = cluster_failure(&runtime), if exit_on_failure => {
                runtime
                    .stop_durably()
                    .await
                    .map_err(|e| CliError::Failed(e.to_string()))?;
                Err(CliError::Failed(format!("stopping: {failure}")))
            }
        }
    })
}

/// Resolves with the engine's failure once the cluster lost a process.
async fn cluster_failure(runtime: &Runtime) -> String {
    loop {
        if let Some(f) = runtime.failure() {
            return f;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Resolves on SIGTERM (how service managers stop a server) or Ctrl-C.
pub(super) async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// What the watcher compares: every datafile and fixture with its modification time and size.
fn signature(dir: &Path) -> Vec<(PathBuf, Option<std::time::SystemTime>, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(meta) = e.metadata() {
                out.push((path, meta.modified().ok(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

/// `petrel dev`: polls the project folder and deploys each saved change into the running
/// server; datasource data is kept (a datasource whose schema changed starts over), and
/// fixtures load into new empty datasources. A project with errors is reported and the
/// previous version keeps serving.
async fn watch_project(runtime: Arc<Runtime>, dir: PathBuf) {
    let mut last = signature(&dir);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = signature(&dir);
        if now == last {
            continue;
        }
        last = now;
        let (project, errors) = Project::load_with_errors(&dir);
        if !errors.is_empty() {
            for e in &errors {
                eprintln!("✗ {e}");
            }
            continue;
        }
        match runtime.deploy(project, true, false).await {
            Ok(report) if report.is_empty() => {}
            Ok(report) => {
                let list = |what: &str, names: &[String]| {
                    for n in names {
                        println!("✓ {what} {n}");
                    }
                };
                list("new datasource", &report.new_datasource_names);
                list("changed datasource", &report.changed_datasource_names);
                list("deleted datasource", &report.deleted_datasource_names);
                list("new pipe", &report.new_pipe_names);
                list("changed pipe", &report.changed_pipe_names);
                list("deleted pipe", &report.deleted_pipe_names);
                if let Err(e) = load_fixtures(&runtime, runtime.project().fixtures()).await {
                    eprintln!("✗ {e}");
                }
            }
            Err(e) => eprintln!("✗ {e}"),
        }
    }
}

/// Appends each fixture to its datasource when the datasource is empty.
async fn load_fixtures(
    runtime: &Arc<Runtime>,
    fixtures: Vec<(String, PathBuf)>,
) -> Result<(), CliError> {
    for (ds, path) in fixtures {
        if runtime.row_count(&ds).unwrap_or(1) > 0 {
            continue;
        }
        let body = std::fs::read(&path)
            .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", path.display())))?;
        let report = runtime
            .ingest_ndjson(&ds, &body)
            .map_err(|e| CliError::Failed(format!("fixture {}: {e}", path.display())))?;
        runtime
            .wait_durable_and_visible(&ds, report.ts)
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        println!(
            "fixture {}: {} rows, {} quarantined",
            path.display(),
            report.successful_rows,
            report.quarantined_rows
        );
    }
    Ok(())
}
