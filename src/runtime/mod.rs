//! The running project: datasource logs and decoders, and the maintained views behind every
//! endpoint, installed per query shape and parameter binding and shared by everyone who asks
//! for the same one. Serving (and later sinks) read results here; this is where Principle 4
//! happens:
//!
//! - a pipe's templates render to SQL with `$param` placeholders; each distinct rendered text
//!   (the *shape*) is planned once and cached;
//! - equality parameters are lifted into lookup keys of the view (see `project::lift`), so
//!   one view serves every value;
//! - the other parameters inside the plan are bound, and each distinct binding is its own view,
//!   installed on first use;
//! - top-level `ORDER BY`, `LIMIT` and `OFFSET` are applied when the view is read.
//!
//! One concern per file: `views` (the registry of planned shapes and installed views),
//! `finish` (ORDER BY/OFFSET/LIMIT per request), `stream` (the subscription driver every
//! push transport uses), `queries` (pulls, subscriptions, ad-hoc SQL), `ingest` (writes),
//! `deploy`, `copy` (copy pipes), `describe` (datasource listings), `placement` (where the
//! helper pool's threads run); this file starts the runtime and holds what they share.

mod admission;
mod copy;
mod deploy;
mod describe;
mod finish;
mod ingest;
mod placement;
mod queries;
pub mod stream;
mod views;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use petrel_engine::{Engine, EngineConfig, SourceLog};
use petrel_sql::{Plan, PlanNode};
use petrel_value::{Column, Row};
use petrel_view::Ts;

use crate::cluster::ClusterRole;
use crate::ingest::{quarantine_row, RowDecoder};
use crate::project::quarantine_columns;
use crate::project::{PipeDescription, Project, ProjectError};
use crate::storage::{
    ClusterLog, MemoryLog, Storage, StorageConfig, TableFigures, TableLog, TableRules,
};

pub use deploy::DeployReport;
pub use describe::{ColumnInfo, DatasourceInfo};
pub use ingest::IngestReport;
use queries::SubscriptionCounts;
pub use queries::{SubscriberBuffers, SubscriptionSlot};
pub use views::{LimitCounters, PreparedSql, QueryResult, Subscription, ViewInfo};

/// Failures of runtime operations, as the API maps them to statuses.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// An unknown pipe or datasource (404).
    #[error("{0}")]
    NotFound(String),
    /// A bad parameter, template or query (400).
    #[error("{0}")]
    BadRequest(String),
    /// A template's `error()`/`custom_error()` with its own status.
    #[error("{message}")]
    Custom {
        /// The HTTP status the template asked for.
        status: u16,
        /// The message.
        message: String,
    },
    /// Something broke on the server (500).
    #[error("{0}")]
    Internal(String),
    /// An ad-hoc query ran past its time limit and was dropped (408).
    #[error("{0}")]
    Timeout(String),
    /// A server limit is reached and nothing can be freed now (429).
    #[error("{0}")]
    Exhausted(String),
    /// The server cannot take this now: its cluster lost a process (503).
    #[error("{0}")]
    Unavailable(String),
    /// An ad-hoc query needed more rows than `--query-max-rows` allows and was dropped (422).
    #[error("{0}")]
    TooLarge(String),
}

impl From<ProjectError> for RuntimeError {
    fn from(e: ProjectError) -> RuntimeError {
        match e {
            ProjectError::NotFound(m) => RuntimeError::NotFound(m),
            ProjectError::Custom { status, message } => RuntimeError::Custom { status, message },
            other => RuntimeError::BadRequest(other.to_string()),
        }
    }
}

/// How to run a project.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Engine workers and tick.
    pub engine: EngineConfig,
    /// How much change history each view keeps for resuming subscribers, in milliseconds.
    pub retention_ms: u64,
    /// The most bytes of change history each view keeps: a view that changes fast keeps
    /// less than `retention_ms`, so its memory does not follow the ingest rate.
    pub change_log_bytes: usize,
    /// A view that no subscriber holds and no request reads for this long is dropped.
    pub view_idle_ms: u64,
    /// Follow another server's datasource logs read-only (a read replica) instead of
    /// writing them.
    pub replica: bool,
    /// With `replica`: the processes of the cluster whose storage it follows (each share
    /// under `STORAGE/process-I`); 1 for a single server's storage.
    pub replica_processes: usize,
    /// Group commit, compaction and merge settings.
    pub storage: StorageConfig,
    /// How often views are snapshotted to storage (0: never): a restarted server or a
    /// replica serves reads from the snapshots while its dataflows replay history.
    pub snapshot_interval_ms: u64,
    /// How long an ad-hoc query (`/v0/sql`, `q=`, `petrel sql`) may take before it is
    /// dropped and answers 408.
    pub query_timeout_ms: u64,
    /// How many rows an ad-hoc query's joins and `ARRAY JOIN`s may produce before it is
    /// dropped and answers 422: the bound on the memory one query can take.
    pub query_max_rows: u64,
    /// How many ad-hoc queries may run at once; more answer 429 at once.
    pub max_concurrent_queries: usize,
    /// The most views maintained at once: past it the least recently used view without
    /// subscribers is dropped (a later request installs it again); when subscribers hold
    /// every view, a request that needs a new one answers 429.
    pub max_views: usize,
    /// Bytes of frames one subscriber may have queued and not yet written to its socket;
    /// past it the subscriber falls behind and gets a resync (or is closed, as it asked).
    pub subscriber_buffer_bytes: usize,
    /// Bytes of queued frames all subscribers together may hold.
    pub subscribers_buffer_bytes: usize,
    /// How many change batches a live subscriber may fall behind a view before it has to
    /// catch up (a resync snapshot, or closed with `overflow=close`).
    pub change_ring_batches: usize,
    /// Open subscriptions one token may hold at once.
    pub max_subscriptions_per_token: usize,
    /// Rows accepted by the Events API that the views have not read or the storage has not
    /// stored yet: past it, a new request waits for them (and answers 429 if they do not
    /// catch up in time), so a client writing faster than the views fold, or during a storage
    /// outage, cannot queue rows in memory without limit.
    pub max_waiting_rows: u64,
    /// This process's place in a cluster, if it runs in one.
    pub cluster: Option<ClusterRole>,
    /// Keep each helper thread on a core of its own (when there is one helper per core the
    /// process may use); see `runtime::placement`.
    pub pin_helpers: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            engine: EngineConfig::default(),
            retention_ms: 5 * 60 * 1000,
            change_log_bytes: petrel_view::CHANGE_LOG_BYTES,
            view_idle_ms: 10 * 60 * 1000,
            replica: false,
            replica_processes: 1,
            storage: StorageConfig::default(),
            snapshot_interval_ms: 30_000,
            query_timeout_ms: 10_000,
            query_max_rows: 10_000_000,
            max_concurrent_queries: 16,
            max_views: 256,
            subscriber_buffer_bytes: 1 << 20,
            subscribers_buffer_bytes: 256 << 20,
            change_ring_batches: petrel_view::CHANGE_RING,
            max_subscriptions_per_token: 1_000,
            max_waiting_rows: 2_000_000,
            cluster: None,
            pin_helpers: true,
        }
    }
}

struct Source {
    log: Arc<TableLog>,
    /// On a replica of a cluster: every process's share, process 0's (`log`) first.
    shares: Option<Arc<ClusterLog>>,
    decoder: Option<RowDecoder>,
    columns: Vec<Column>,
}

/// A loaded project running on an engine.
pub struct Runtime {
    /// The deployed project; connectors watch it to follow deploys.
    project: tokio::sync::watch::Sender<Arc<Project>>,
    engine: Arc<Engine>,
    sources: RwLock<BTreeMap<String, Arc<Source>>>,
    storage: Arc<Storage>,
    /// On a replica of a cluster: the other processes' storages, in process order.
    other_storages: Vec<Arc<Storage>>,
    replica: bool,
    /// The durable frontier the previous run stored (every change below it survived it).
    stored_frontier: Option<Ts>,
    cluster: Option<ClusterRole>,
    views: views::Views,
    ready: AtomicBool,
    next_import: AtomicU64,
    buffers: SubscriberBuffers,
    subscriptions: Arc<SubscriptionCounts>,
    admission: Arc<admission::Admission>,
}

/// Opens a datasource's table and its quarantine's, and registers both with the engine (on
/// a replica of a cluster, every process's share of each, as one log).
fn open_sources(
    engine: &Engine,
    storage: &Arc<Storage>,
    others: &[Arc<Storage>],
    ds: &crate::project::Datasource,
) -> Result<Vec<(String, Arc<Source>)>, RuntimeError> {
    let name = &ds.name;
    let open = |storage: &Arc<Storage>, table: &str, columns: &[Column], rules: TableRules| {
        let names = columns.iter().map(|c| c.name.clone()).collect();
        storage
            .table(table, names, rules)
            .map_err(|e| RuntimeError::Internal(format!("cannot open the table '{table}': {e}")))
    };
    let row_fn = |e: &Option<petrel_sql::Expr>| -> Option<crate::storage::RowFn> {
        let e = e.clone()?;
        Some(Arc::new(move |row: &Row| e.eval(row)))
    };
    let rules = || TableRules {
        partition: row_fn(&ds.partition_key),
        expiry: row_fn(&ds.expiry),
    };
    let columns = ds.schema();
    let qname = format!("{name}_quarantine");
    let qcolumns = quarantine_columns(&columns);
    let mut out = Vec::new();
    for (table, columns, rules, decoder) in [
        (
            name.clone(),
            columns.clone(),
            rules(),
            Some(RowDecoder::new(&ds.columns)),
        ),
        (qname, qcolumns, TableRules::default(), None),
    ] {
        let log = open(storage, &table, &columns, rules.clone())?;
        let shares = if others.is_empty() {
            engine.register_source(&table, log.clone());
            None
        } else {
            let mut all = vec![log.clone()];
            for other in others {
                all.push(open(other, &table, &columns, rules.clone())?);
            }
            let shares = Arc::new(ClusterLog::new(all));
            engine.register_source(&table, shares.clone());
            Some(shares)
        };
        out.push((
            table,
            Arc::new(Source {
                log,
                shares,
                decoder,
                columns,
            }),
        ));
    }
    Ok(out)
}

/// The durable frontier of a writer's storage, or the least of a cluster's processes'
/// (every change below it is stored by every process).
fn read_frontiers(storage: &Storage, others: &[Arc<Storage>]) -> Result<Option<Ts>, RuntimeError> {
    let internal = |e: crate::storage::StorageError| RuntimeError::Internal(e.to_string());
    let mut least = storage.read_frontier().map_err(internal)?;
    for other in others {
        least = match (least, other.read_frontier().map_err(internal)?) {
            (Some(a), Some(b)) => Some(a.min(b)),
            _ => None,
        };
    }
    Ok(least)
}

/// Runs a request's blocking step (a body's decode, the log's flush) from an async handler.
/// On a multi-threaded runtime it runs on the handler's own thread
/// ([`tokio::task::block_in_place`]; the thread's other tasks move to another worker): a
/// `wait=true` write made two such steps, and handing each to a thread of the blocking pool
/// woke another thread, which the kernel often queued behind a busy one while the body's
/// bytes sat in the handler's cache. Elsewhere (a single-threaded runtime, as in tests) the
/// step goes to the blocking pool as before. A panic in `step` becomes an error either way.
pub async fn run_blocking<T: Send + 'static>(
    step: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RuntimeError> {
    let multi_threaded = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_threaded {
        tokio::task::block_in_place(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)))
            .map_err(|_| RuntimeError::Internal("a blocking step panicked".into()))
    } else {
        tokio::task::spawn_blocking(step)
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))
    }
}

/// Starts the helper pool (rayon's global pool) that decodes large bodies and folds large
/// batches into views on every core: its threads are named, so that profiles and `top -H`
/// tell them apart, and with `pin` each is kept on a core of its own when there is one
/// helper per core the process may use ([`placement`]). Only the first call
/// starts it (the pool lives as long as the process).
fn start_helper_pool(pin: bool) {
    let allowed = if pin {
        placement::allowed_cpus()
    } else {
        Vec::new()
    };
    let _ = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("petrel-help-{i}"))
        .start_handler(move |i| {
            // A helper belongs to the pool when this runs: the count is the pool's own
            // (rayon's default, or `RAYON_NUM_THREADS`).
            let threads = rayon::current_num_threads();
            if let Some(cpu) = placement::helper_cpu(i, threads, &allowed) {
                placement::pin_current_thread(cpu);
            }
        })
        .build_global();
}

impl Runtime {
    /// Opens the storage at `storage_url` (a folder, or `s3://BUCKET/PREFIX`) and every
    /// datasource's table in it, starts the engine, and installs the default view of every
    /// endpoint whose parameters all have defaults; returns once those views have caught up
    /// with the stored history (then [`Runtime::is_ready`]).
    pub async fn start(
        project: Project,
        storage_url: &str,
        config: RuntimeConfig,
    ) -> Result<Arc<Runtime>, RuntimeError> {
        start_helper_pool(config.pin_helpers);
        let engine_config = petrel_engine::EngineConfig {
            history_ms: config.retention_ms,
            cluster: config.cluster.as_ref().map(|role| petrel_engine::Cluster {
                process: role.process,
                addresses: role.addresses(),
            }),
            ..config.engine.clone()
        };
        // Timely connects the processes here: this waits until every one has started.
        let engine = tokio::task::spawn_blocking(move || Engine::start(engine_config))
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))?
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        let (url, replica, storage_config) = (
            storage_url.to_string(),
            config.replica,
            config.storage.clone(),
        );
        // A replica of a cluster opens every process's share; process 0's holds the views'
        // snapshots.
        let shares = if config.replica {
            config.replica_processes.max(1)
        } else {
            1
        };
        let mut storages = Vec::new();
        for process in 0..shares {
            let url = if shares > 1 {
                format!("{}/process-{process}", url.trim_end_matches('/'))
            } else {
                url.clone()
            };
            let storage_config = storage_config.clone();
            storages.push(
                tokio::task::spawn_blocking(move || Storage::open(&url, replica, storage_config))
                    .await
                    .map_err(|e| RuntimeError::Internal(e.to_string()))?
                    .map_err(|e| RuntimeError::Internal(e.to_string()))?,
            );
        }
        let storage = storages.remove(0);
        let other_storages = storages;
        if config.replica {
            let frontier = read_frontiers(&storage, &other_storages)?;
            engine.hold_clock(frontier.unwrap_or(0));
        }
        let mut sources = BTreeMap::new();
        for ds in project.datasources.values() {
            let (engine, storage, ds) = (engine.clone(), storage.clone(), ds.clone());
            let others = other_storages.clone();
            let opened =
                tokio::task::spawn_blocking(move || open_sources(&engine, &storage, &others, &ds))
                    .await
                    .map_err(|e| RuntimeError::Internal(e.to_string()))??;
            sources.extend(opened);
        }
        let stored_frontier = if config.replica {
            None
        } else {
            storage
                .read_frontier()
                .map_err(|e| RuntimeError::Internal(e.to_string()))?
        };
        // Process 0 of a cluster waits for every follower to open its datasources (their
        // stored rows must be there when views replay history) and learns what survived
        // there.
        let followers = match config.cluster.as_ref().filter(|c| c.leads_followers()) {
            Some(role) => role.wait_for_followers().await,
            None => Vec::new(),
        };
        // Subscribers that resume from a frontier the previous run sent after what survived of
        // the tables their view reads may hold changes its crash erased: they get a fresh
        // snapshot instead.
        let erased = if config.replica {
            None
        } else if followers.is_empty() {
            Some(views::Erased::after_restart(
                stored_frontier.unwrap_or(0),
                sources
                    .iter()
                    .map(|(name, s)| (name.clone(), s.log.last_ts())),
                engine.open_ts(),
            ))
        } else {
            // Every process stored every change below the least of their frontiers; each
            // table's own last batch is known only here, so it does not count.
            let least = followers
                .iter()
                .map(|f| f.stored_frontier.unwrap_or(0))
                .chain([stored_frontier.unwrap_or(0)])
                .min()
                .unwrap_or(0);
            Some(views::Erased::after_restart(
                least,
                sources.keys().map(|name| (name.clone(), 0)),
                engine.open_ts(),
            ))
        };
        let clock = engine.clone();
        storage.start_background(Arc::new(move || clock.open_ts()));
        let runtime = Arc::new(Runtime {
            project: tokio::sync::watch::Sender::new(Arc::new(project)),
            engine: engine.clone(),
            sources: RwLock::new(sources),
            storage: storage.clone(),
            other_storages,
            replica: config.replica,
            stored_frontier,
            cluster: config.cluster.clone(),
            views: views::Views::new(
                engine,
                storage.clone(),
                petrel_view::Retention {
                    ms: config.retention_ms,
                    bytes: config.change_log_bytes,
                    ring: config.change_ring_batches,
                },
                views::QueryLimits {
                    timeout: std::time::Duration::from_millis(config.query_timeout_ms.max(1)),
                    max_rows: config.query_max_rows.max(1),
                    concurrent: config.max_concurrent_queries.max(1),
                },
                config.max_views,
                erased,
            ),
            ready: AtomicBool::new(false),
            next_import: AtomicU64::new(1),
            admission: admission::Admission::new(config.max_waiting_rows.max(1)),
            subscriptions: Arc::new(SubscriptionCounts {
                max_per_token: config.max_subscriptions_per_token.max(1),
                by_token: Default::default(),
            }),
            buffers: {
                let capacity = config
                    .subscribers_buffer_bytes
                    .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
                SubscriberBuffers {
                    per_subscriber: config.subscriber_buffer_bytes.max(1),
                    capacity,
                    total: Arc::new(tokio::sync::Semaphore::new(capacity)),
                }
            },
        });
        if config.replica {
            runtime.follow_logs();
        }
        let follower = runtime.following().is_some();
        if !follower {
            runtime.warm_default_views().await;
        }
        if !config.replica && !follower {
            runtime.schedule_copies();
            if config.snapshot_interval_ms > 0 {
                runtime.snapshot_views(config.snapshot_interval_ms);
            }
        }
        runtime.ready.store(true, Ordering::SeqCst);
        let weak = Arc::downgrade(&runtime);
        let idle = config.view_idle_ms;
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_millis(
                (idle / 4).clamp(100, 30_000),
            ));
            loop {
                every.tick().await;
                match weak.upgrade() {
                    Some(rt) => {
                        let dropped = rt.views.evict_idle(idle);
                        if dropped > 0 {
                            tracing::info!(dropped, "dropped idle views");
                        }
                    }
                    None => return,
                }
            }
        });
        Ok(runtime)
    }

    /// Installs the default view of every endpoint; pipes with required parameters wait
    /// for a request.
    async fn warm_default_views(&self) {
        let project = self.project();
        for pipe in project.pipes.values().filter(|p| p.is_endpoint()) {
            if let Err(e) = self.query_pipe(&pipe.name, &BTreeMap::new()).await {
                tracing::debug!(pipe = %pipe.name, error = %e, "no default view installed");
            }
        }
    }

    /// A replica's tailer: reads the writer's durable frontier, then the batches it added
    /// (all those below the frontier are stored by then), feeds them to the engine at their
    /// own timestamps and lets the clock advance to the frontier. The replica's views are
    /// then at every timestamp what the writer's were.
    fn follow_logs(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_millis(50));
            loop {
                every.tick().await;
                let Some(rt) = weak.upgrade() else { return };
                let followed = tokio::task::spawn_blocking(move || rt.follow_once()).await;
                if let Ok(Err(e)) = followed {
                    tracing::warn!(error = %e, "replica cannot follow the storage");
                }
            }
        });
    }

    fn follow_once(&self) -> Result<(), RuntimeError> {
        let internal = |e: crate::storage::StorageError| RuntimeError::Internal(e.to_string());
        let frontier = read_frontiers(&self.storage, &self.other_storages)?;
        let sources: Vec<(String, Arc<Source>)> = self
            .sources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        for (name, source) in sources {
            match &source.shares {
                Some(shares) => {
                    for share in shares.shares() {
                        share.prefetch().map_err(internal)?;
                    }
                }
                None => source.log.prefetch().map_err(internal)?,
            }
            self.engine
                .pull(&name)
                .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        }
        if let Some(ts) = frontier {
            self.engine.hold_clock(ts);
        }
        Ok(())
    }

    /// True when this server follows another's logs and takes no writes.
    pub fn is_replica(&self) -> bool {
        self.replica
    }

    fn refuse_on_replica(&self) -> Result<(), RuntimeError> {
        if self.replica {
            return Err(RuntimeError::BadRequest(
                "this server is a read-only replica: send writes to the primary".into(),
            ));
        }
        if let Some(failure) = self.engine.failure() {
            return Err(RuntimeError::Unavailable(format!(
                "this server takes no writes until its cluster is restarted: {failure}"
            )));
        }
        Ok(())
    }

    /// This process's place in its cluster, if it runs in one.
    pub fn cluster(&self) -> Option<&ClusterRole> {
        self.cluster.as_ref()
    }

    /// This process's role when it is process 0 of a cluster with other processes.
    pub fn leading(&self) -> Option<&ClusterRole> {
        self.cluster.as_ref().filter(|c| c.leads_followers())
    }

    /// This process's role when it is a follower (a cluster process other than 0).
    pub fn following(&self) -> Option<&ClusterRole> {
        self.cluster.as_ref().filter(|c| !c.is_coordinator())
    }

    /// Why this server's engine stopped (its cluster lost a process), if it did.
    pub fn failure(&self) -> Option<String> {
        self.engine.failure()
    }

    /// What `GET /v0/cluster/local` says of this process.
    pub fn process_status(&self) -> crate::cluster::ProcessStatus {
        let (process, _) = self.engine.process();
        crate::cluster::ProcessStatus {
            process,
            workers: self.engine.workers(),
            frontier: self.engine.open_ts(),
            ready: self.is_ready(),
            failure: self.engine.failure(),
            stored_frontier: self.stored_frontier,
        }
    }

    /// Waits until every view that reads `tables` has passed `ts`: process 0's views
    /// answer for a whole cluster.
    pub async fn wait_visible(&self, tables: &[String], ts: Ts) {
        for t in tables {
            self.views.wait_for_readers(t, ts).await;
        }
    }

    /// A clean stop's last step: writes every waiting batch and then the durable frontier,
    /// so rows acknowledged without `wait=true` survive and resuming subscribers need no
    /// resync. Appends after it are refused by the storage.
    pub async fn stop_durably(&self) -> Result<(), RuntimeError> {
        if self.replica {
            return Ok(());
        }
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || storage.stop())
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))?
            .map_err(|e| RuntimeError::Internal(format!("storage write failed: {e}")))
    }

    /// The project as currently deployed.
    pub fn project(&self) -> Arc<Project> {
        self.project.borrow().clone()
    }

    /// The deployed project now and after every deploy: what connectors (Kafka consumers
    /// and sinks) follow to start and stop with the datafiles that declare them.
    pub fn watch_project(&self) -> tokio::sync::watch::Receiver<Arc<Project>> {
        self.project.subscribe()
    }

    fn source(&self, name: &str) -> Option<Arc<Source>> {
        self.sources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// True once start-up has installed the default views.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// True when `name` is a pipe with an endpoint.
    pub fn has_endpoint(&self, name: &str) -> bool {
        self.project()
            .pipes
            .get(name)
            .is_some_and(|p| p.is_endpoint())
    }

    /// Every pipe with its endpoint flag and parameters.
    pub fn describe_pipes(&self) -> Vec<PipeDescription> {
        let project = self.project();
        project
            .pipes
            .values()
            .map(|p| {
                let mut d = p.describe();
                d.error = d.error.map(|e| project.relative_message(&e));
                d
            })
            .collect()
    }

    /// The columns of a datasource or quarantine table.
    pub fn table_columns(&self, name: &str) -> Option<Vec<Column>> {
        self.source(name).map(|s| s.columns.clone())
    }

    /// Rows stored in a datasource.
    pub fn row_count(&self, name: &str) -> Option<u64> {
        self.source(name).map(|s| match &s.shares {
            Some(shares) => shares.figures().rows,
            None => s.log.row_count(),
        })
    }

    /// The storage the datasources live in.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// The engine, for components that install their own views.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Writes view snapshots every `every_ms`, until the runtime goes away, on a thread of
    /// background priority: copying and encoding a large view takes a core for a while, and
    /// the engine's workers, which decide ingest and push latency, should get the cores first.
    fn snapshot_views(self: &Arc<Self>, every_ms: u64) {
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("petrel-snapshot".into())
            .spawn(move || {
                crate::storage::background_priority();
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(every_ms));
                    let Some(rt) = weak.upgrade().filter(|rt| !rt.storage.is_stopped()) else {
                        return;
                    };
                    rt.views.write_snapshots();
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the view snapshot writer");
        }
    }
}

fn wall_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Renames every scan of `from` to `to` (used to give a `q=` input a private source name).
fn rename_scans(plan: &mut Plan, from: &str, to: &str) {
    if let PlanNode::Scan { table } = &mut plan.node {
        if table == from {
            *table = to.to_string();
        }
    }
    for input in plan.inputs_mut() {
        rename_scans(input, from, to);
    }
}
