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

pub mod stream;
mod views;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use petrel_engine::{Engine, EngineConfig, SourceLog};
use petrel_sql::{Plan, PlanNode};
use petrel_value::{Column, Row};
use petrel_view::Ts;

use crate::ingest::{quarantine_row, RowDecoder};
use crate::project::quarantine_columns;
use crate::project::{PipeDescription, Project, ProjectError};
use crate::storage::{MemoryLog, Storage, StorageConfig, TableFigures, TableLog, TableRules};

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
    /// A view that no subscriber holds and no request reads for this long is dropped.
    pub view_idle_ms: u64,
    /// Follow another server's datasource logs read-only (a read replica) instead of
    /// writing them.
    pub replica: bool,
    /// Group commit, compaction and merge settings.
    pub storage: StorageConfig,
    /// How often views are snapshotted to storage (0: never): a restarted server or a
    /// replica serves reads from the snapshots while its dataflows replay history.
    pub snapshot_interval_ms: u64,
    /// How long an ad-hoc query (`/v0/sql`, `q=`, `petrel sql`) may take before it is
    /// dropped and answers 408.
    pub query_timeout_ms: u64,
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
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            engine: EngineConfig::default(),
            retention_ms: 5 * 60 * 1000,
            view_idle_ms: 10 * 60 * 1000,
            replica: false,
            storage: StorageConfig::default(),
            snapshot_interval_ms: 30_000,
            query_timeout_ms: 10_000,
            max_views: 256,
            subscriber_buffer_bytes: 1 << 20,
            subscribers_buffer_bytes: 256 << 20,
            change_ring_batches: petrel_view::CHANGE_RING,
            max_subscriptions_per_token: 1_000,
        }
    }
}

/// What one ingest request did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestReport {
    /// Rows that landed in the datasource.
    pub successful_rows: usize,
    /// Rows that went to `NAME_quarantine`.
    pub quarantined_rows: usize,
    /// The timestamp the rows landed at.
    pub ts: Ts,
}

struct Source {
    log: Arc<TableLog>,
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
    replica: bool,
    views: views::Views,
    ready: AtomicBool,
    next_import: AtomicU64,
    buffers: SubscriberBuffers,
    subscriptions: Arc<SubscriptionCounts>,
}

/// Open subscriptions by token, within a cap per token.
struct SubscriptionCounts {
    max_per_token: usize,
    by_token: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// One open subscription of a token: the token's count goes down when it is dropped.
pub struct SubscriptionSlot {
    counts: Arc<SubscriptionCounts>,
    token: String,
}

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        let mut by_token = self
            .counts
            .by_token
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by_token.get_mut(&self.token) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_token.remove(&self.token);
            }
        }
    }
}

/// The byte budgets of subscribers' queued frames: one per subscriber, one for all.
#[derive(Clone)]
pub struct SubscriberBuffers {
    /// Bytes one subscriber may have queued.
    pub per_subscriber: usize,
    /// All subscribers' budget, in bytes.
    pub capacity: usize,
    /// What all subscribers together may still queue.
    pub total: Arc<tokio::sync::Semaphore>,
}

impl SubscriberBuffers {
    /// Bytes of frames queued for subscribers now (made, not yet written to their sockets).
    pub fn queued_bytes(&self) -> usize {
        self.capacity.saturating_sub(self.total.available_permits())
    }
}

/// What a deploy changed, by resource kind.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DeployReport {
    /// Datasources added.
    pub new_datasource_names: Vec<String>,
    /// Datasources whose schema changed.
    pub changed_datasource_names: Vec<String>,
    /// Datasources removed.
    pub deleted_datasource_names: Vec<String>,
    /// Pipes added.
    pub new_pipe_names: Vec<String>,
    /// Pipes whose nodes changed.
    pub changed_pipe_names: Vec<String>,
    /// Pipes removed.
    pub deleted_pipe_names: Vec<String>,
}

impl DeployReport {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.new_datasource_names.is_empty()
            && self.changed_datasource_names.is_empty()
            && self.deleted_datasource_names.is_empty()
            && self.new_pipe_names.is_empty()
            && self.changed_pipe_names.is_empty()
            && self.deleted_pipe_names.is_empty()
    }
}

/// Opens a datasource's table and its quarantine's, and registers both with the engine.
fn open_sources(
    engine: &Engine,
    storage: &Arc<Storage>,
    ds: &crate::project::Datasource,
) -> Result<Vec<(String, Arc<Source>)>, RuntimeError> {
    let name = &ds.name;
    let open = |table: &str, columns: &[Column], rules: TableRules| {
        let names = columns.iter().map(|c| c.name.clone()).collect();
        storage
            .table(table, names, rules)
            .map_err(|e| RuntimeError::Internal(format!("cannot open the table '{table}': {e}")))
    };
    let row_fn = |e: &Option<petrel_sql::Expr>| -> Option<crate::storage::RowFn> {
        let e = e.clone()?;
        Some(Arc::new(move |row: &Row| e.eval(row)))
    };
    let rules = TableRules {
        sort_key: ds.sort_key.clone(),
        partition: row_fn(&ds.partition_key),
        expiry: row_fn(&ds.expiry),
    };
    let columns = ds.schema();
    let log = open(name, &columns, rules)?;
    engine.register_source(name, log.clone());
    let qname = format!("{name}_quarantine");
    let qcolumns = quarantine_columns(&columns);
    let qlog = open(&qname, &qcolumns, TableRules::default())?;
    engine.register_source(&qname, qlog.clone());
    Ok(vec![
        (
            name.clone(),
            Arc::new(Source {
                log,
                decoder: Some(RowDecoder::new(&ds.columns)),
                columns,
            }),
        ),
        (
            qname,
            Arc::new(Source {
                log: qlog,
                decoder: None,
                columns: qcolumns,
            }),
        ),
    ])
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
        let engine_config = petrel_engine::EngineConfig {
            history_ms: config.retention_ms,
            ..config.engine.clone()
        };
        let engine =
            Engine::start(engine_config).map_err(|e| RuntimeError::Internal(e.to_string()))?;
        let (url, replica, storage_config) = (
            storage_url.to_string(),
            config.replica,
            config.storage.clone(),
        );
        let storage =
            tokio::task::spawn_blocking(move || Storage::open(&url, replica, storage_config))
                .await
                .map_err(|e| RuntimeError::Internal(e.to_string()))?
                .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        if config.replica {
            let frontier = storage
                .read_frontier()
                .map_err(|e| RuntimeError::Internal(e.to_string()))?;
            engine.hold_clock(frontier.unwrap_or(0));
        }
        let mut sources = BTreeMap::new();
        for ds in project.datasources.values() {
            let (engine, storage, ds) = (engine.clone(), storage.clone(), ds.clone());
            let opened = tokio::task::spawn_blocking(move || open_sources(&engine, &storage, &ds))
                .await
                .map_err(|e| RuntimeError::Internal(e.to_string()))??;
            sources.extend(opened);
        }
        // Subscribers that resume from a frontier the previous run sent after what survived of
        // the tables their view reads may hold changes its crash erased: they get a fresh
        // snapshot instead.
        let erased = if config.replica {
            None
        } else {
            let frontier = storage
                .read_frontier()
                .map_err(|e| RuntimeError::Internal(e.to_string()))?
                .unwrap_or(0);
            Some(views::Erased::after_restart(
                frontier,
                sources
                    .iter()
                    .map(|(name, s)| (name.clone(), s.log.last_ts())),
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
            replica: config.replica,
            views: views::Views::new(
                engine,
                storage.clone(),
                config.retention_ms,
                std::time::Duration::from_millis(config.query_timeout_ms.max(1)),
                config.max_views,
                config.change_ring_batches,
                erased,
            ),
            ready: AtomicBool::new(false),
            next_import: AtomicU64::new(1),
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
        runtime.warm_default_views().await;
        if !config.replica {
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
        let frontier = self.storage.read_frontier().map_err(internal)?;
        let sources: Vec<(String, Arc<Source>)> = self
            .sources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        for (name, source) in sources {
            source.log.prefetch().map_err(internal)?;
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
        Ok(())
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

    /// Replaces the running project with `new` (Principle: unchanged views keep their state).
    /// New datasources start empty; a datasource whose schema changed or that is removed while
    /// it holds rows is a destructive change, refused unless `allow_destructive` (then its old
    /// data is set aside as `NAME.log.replaced-<ts>`). With `check`, only reports what would change.
    pub async fn deploy(
        &self,
        new: Project,
        allow_destructive: bool,
        check: bool,
    ) -> Result<DeployReport, RuntimeError> {
        self.refuse_on_replica()?;
        let old = self.project();
        let mut report = DeployReport::default();
        for (name, ds) in &new.datasources {
            match old.datasources.get(name) {
                None => report.new_datasource_names.push(name.clone()),
                Some(o) if o.columns != ds.columns => {
                    report.changed_datasource_names.push(name.clone())
                }
                Some(_) => {}
            }
        }
        for name in old
            .datasources
            .keys()
            .filter(|n| !new.datasources.contains_key(*n))
        {
            report.deleted_datasource_names.push(name.clone());
        }
        for (name, pipe) in &new.pipes {
            match old.pipes.get(name) {
                None => report.new_pipe_names.push(name.clone()),
                Some(o) if !o.same_definition(pipe) => report.changed_pipe_names.push(name.clone()),
                Some(_) => {}
            }
        }
        for name in old.pipes.keys().filter(|n| !new.pipes.contains_key(*n)) {
            report.deleted_pipe_names.push(name.clone());
        }
        let destructive: Vec<&String> = report
            .changed_datasource_names
            .iter()
            .chain(&report.deleted_datasource_names)
            .filter(|n| self.row_count(n).unwrap_or(0) > 0)
            .collect();
        if !destructive.is_empty() && !allow_destructive {
            return Err(RuntimeError::BadRequest(format!(
                "destructive changes to datasources that hold data: {}; deploy with allow_destructive_operations=true to replace their data",
                destructive.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        if check {
            return Ok(report);
        }
        let replaced: Vec<String> = report
            .changed_datasource_names
            .iter()
            .chain(&report.deleted_datasource_names)
            .cloned()
            .collect();
        {
            let mut sources = self.sources.write().unwrap_or_else(|e| e.into_inner());
            for name in &replaced {
                for table in [name.clone(), format!("{name}_quarantine")] {
                    sources.remove(&table);
                    self.engine.unregister_source(&table);
                    self.views.drop_readers(&table);
                    self.storage
                        .set_aside(&table, &wall_secs().to_string())
                        .and_then(|()| self.storage.delete_view_snapshots())
                        .map_err(|e| {
                            RuntimeError::Internal(format!("cannot set aside {table}: {e}"))
                        })?;
                }
            }
            for name in report
                .new_datasource_names
                .iter()
                .chain(&report.changed_datasource_names)
            {
                if let Some(ds) = new.datasources.get(name) {
                    sources.extend(open_sources(&self.engine, &self.storage, ds)?);
                }
            }
        }
        self.project.send_replace(Arc::new(new));
        // Plans are re-made from the new project; views whose plan is unchanged are found
        // again by their shape and keep their state.
        self.views.forget_plans();
        self.warm_default_views().await;
        Ok(report)
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
        self.project()
            .pipes
            .values()
            .map(|p| p.describe())
            .collect()
    }

    /// The columns of a datasource or quarantine table.
    pub fn table_columns(&self, name: &str) -> Option<Vec<Column>> {
        self.source(name).map(|s| s.columns.clone())
    }

    /// Rows stored in a datasource.
    pub fn row_count(&self, name: &str) -> Option<u64> {
        self.source(name).map(|s| s.log.row_count())
    }

    /// Decodes an NDJSON body into `datasource`: good rows land, rows that do not fit go to
    /// `datasource_quarantine` with the reason. Blocking (decoding and the log write).
    pub fn ingest_ndjson(
        &self,
        datasource: &str,
        body: &[u8],
    ) -> Result<IngestReport, RuntimeError> {
        self.refuse_on_replica()?;
        let source = self.source(datasource);
        let Some(decoder) = source.as_ref().and_then(|s| s.decoder.as_ref()) else {
            return Err(RuntimeError::NotFound(format!(
                "Data Source '{datasource}' not found"
            )));
        };
        let now = wall_secs();
        let import_id = format!("{:x}", self.next_import.fetch_add(1, Ordering::Relaxed));
        let crate::ingest::DecodedBody { good, bad } =
            crate::ingest::decode_ndjson_body(decoder, body, now, &import_id);
        let mut report = IngestReport {
            successful_rows: good.len(),
            quarantined_rows: bad.len(),
            ts: self.engine.open_ts(),
        };
        if !bad.is_empty() {
            report.ts = self
                .engine
                .insert(&format!("{datasource}_quarantine"), bad)
                .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        }
        if !good.is_empty() {
            report.ts = self
                .engine
                .insert(datasource, good)
                .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        }
        Ok(report)
    }

    /// Decodes one JSON document into a row of `datasource`, or says why it does not fit.
    pub fn decode(&self, datasource: &str, json: &str) -> Result<Row, crate::ingest::Rejected> {
        let reject = |message: String| crate::ingest::Rejected {
            errors: vec![crate::ingest::ColumnError {
                column: String::new(),
                message,
            }],
            raw: Vec::new(),
        };
        let source = self
            .source(datasource)
            .ok_or_else(|| reject(format!("unknown datasource '{datasource}'")))?;
        let decoder = source
            .decoder
            .as_ref()
            .ok_or_else(|| reject(format!("'{datasource}' takes no rows")))?;
        decoder.decode(json, wall_secs())
    }

    /// Appends decoded rows (and quarantined ones) with `meta` (a source position such as
    /// Kafka offsets) written atomically with the rows; returns the timestamp they land at.
    pub fn append_rows(
        &self,
        datasource: &str,
        rows: Vec<Row>,
        quarantined: Vec<Row>,
        meta: &[u8],
    ) -> Result<Ts, RuntimeError> {
        let internal = |e: petrel_engine::EngineError| RuntimeError::Internal(e.to_string());
        if !quarantined.is_empty() {
            self.engine
                .insert(
                    &format!("{datasource}_quarantine"),
                    quarantined.into_iter().map(|r| (r, 1)).collect(),
                )
                .map_err(internal)?;
        }
        self.engine
            .insert_with_meta(
                datasource,
                rows.into_iter().map(|r| (r, 1)).collect(),
                Some(meta),
            )
            .map_err(internal)
    }

    /// The metadata last written with a datasource's rows (see [`Runtime::append_rows`]).
    pub fn source_meta(&self, datasource: &str) -> Option<Vec<u8>> {
        self.source(datasource).and_then(|s| s.log.last_meta())
    }

    /// A new import id for quarantined rows.
    pub fn next_import_id(&self) -> String {
        format!("{:x}", self.next_import.fetch_add(1, Ordering::Relaxed))
    }

    /// The columns of a datasource that takes rows, or 404.
    fn ingest_columns(&self, datasource: &str) -> Result<Vec<Column>, RuntimeError> {
        self.refuse_on_replica()?;
        self.source(datasource)
            .filter(|s| s.decoder.is_some())
            .map(|s| s.columns.clone())
            .ok_or_else(|| RuntimeError::NotFound(format!("Data Source '{datasource}' not found")))
    }

    /// Decodes CSV rows (columns in schema order; a first line naming the columns is skipped)
    /// into `datasource`; rows that do not fit go to its quarantine table. Blocking.
    pub fn ingest_csv(&self, datasource: &str, body: &[u8]) -> Result<IngestReport, RuntimeError> {
        let columns = self.ingest_columns(datasource)?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(body);
        let mut rows = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let record =
                record.map_err(|e| RuntimeError::BadRequest(format!("malformed CSV: {e}")))?;
            if i == 0 && record.iter().zip(&columns).all(|(f, c)| f == c.name) {
                continue;
            }
            let cells = (0..columns.len())
                .map(|j| crate::ingest::Cell::Text(record.get(j).unwrap_or("").to_string()))
                .collect();
            rows.push(crate::ingest::typed_row(&columns, cells));
        }
        self.insert_checked(datasource, rows)
    }

    /// Reads a Parquet file into `datasource`: its columns are matched to the datasource's by
    /// name and cast to their types; missing columns take their defaults; rows with a value
    /// that does not fit go to the quarantine table. Blocking.
    pub fn ingest_parquet(
        &self,
        datasource: &str,
        body: bytes::Bytes,
    ) -> Result<IngestReport, RuntimeError> {
        let columns = self.ingest_columns(datasource)?;
        let rows = crate::ingest::parquet::read_cells(body, &columns)
            .map_err(RuntimeError::BadRequest)?
            .into_iter()
            .map(|cells| crate::ingest::typed_row(&columns, cells))
            .collect();
        self.insert_checked(datasource, rows)
    }

    /// Inserts checked rows: the good ones into `datasource`, the rejected ones into its
    /// quarantine table.
    fn insert_checked(
        &self,
        datasource: &str,
        rows: Vec<Result<Row, crate::ingest::Rejected>>,
    ) -> Result<IngestReport, RuntimeError> {
        let now = wall_secs();
        let import_id = self.next_import_id();
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for row in rows {
            match row {
                Ok(row) => good.push((row, 1isize)),
                Err(rejected) => bad.push((quarantine_row(&rejected, &import_id, now), 1isize)),
            }
        }
        let report = IngestReport {
            successful_rows: good.len(),
            quarantined_rows: bad.len(),
            ts: self.engine.open_ts(),
        };
        let internal = |e: petrel_engine::EngineError| RuntimeError::Internal(e.to_string());
        let mut ts = report.ts;
        if !bad.is_empty() {
            ts = self
                .engine
                .insert(&format!("{datasource}_quarantine"), bad)
                .map_err(internal)?;
        }
        if !good.is_empty() {
            ts = self.engine.insert(datasource, good).map_err(internal)?;
        }
        Ok(IngestReport { ts, ..report })
    }

    /// Waits until rows ingested into `datasource` at `ts` are on stable storage and visible
    /// in every view that reads the datasource (or its quarantine table).
    pub async fn wait_durable_and_visible(
        &self,
        datasource: &str,
        ts: Ts,
    ) -> Result<(), RuntimeError> {
        // The views start on the rows while the log is flushed.
        self.engine.close(ts);
        for name in [datasource.to_string(), format!("{datasource}_quarantine")] {
            if let Some(source) = self.source(&name) {
                let log = source.log.clone();
                tokio::task::spawn_blocking(move || log.flush())
                    .await
                    .map_err(|e| RuntimeError::Internal(e.to_string()))?
                    .map_err(|e| RuntimeError::Internal(format!("storage write failed: {e}")))?;
            }
            self.views.wait_for_readers(&name, ts).await;
        }
        Ok(())
    }

    /// Answers an endpoint request: renders the pipe with `params`, finds (or installs) its
    /// view, and reads the key the parameters select.
    pub async fn query_pipe(
        &self,
        pipe: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<QueryResult, RuntimeError> {
        let project = self.project();
        let rendered = project.render_pipe(pipe, params)?;
        let prepared = self.views.prepare(pipe, &rendered.shape, || {
            project.plan_rendered(pipe, &rendered)
        })?;
        self.views.read(&prepared, &rendered.values).await
    }

    /// Subscribes to an endpoint with the request's parameters (validated as for a pull).
    pub async fn subscribe(
        &self,
        pipe: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<Subscription, RuntimeError> {
        let project = self.project();
        let rendered = project.render_pipe(pipe, params)?;
        let prepared = self.views.prepare(pipe, &rendered.shape, || {
            project.plan_rendered(pipe, &rendered)
        })?;
        self.views.subscribe(&prepared, &rendered.values).await
    }

    /// The maintained views, for operators (`GET /v0/views`).
    pub fn describe_views(&self) -> Vec<ViewInfo> {
        self.views.describe()
    }

    /// How often each server limit acted since start (for metrics).
    pub fn limit_counters(&self) -> LimitCounters {
        self.views.limit_counters()
    }

    /// Plans an ad-hoc query over datasources and endpoint pipes (Principle 1: it will run as a
    /// short-lived dataflow).
    pub fn prepare_sql(
        &self,
        sql: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<PreparedSql, RuntimeError> {
        let (query, values, named) = self.project().plan_sql(sql, params)?;
        let mut tables = BTreeSet::new();
        petrel_engine::scanned_tables(&query.plan, &mut tables);
        Ok(PreparedSql::new(query, values, tables, named))
    }

    /// Runs a prepared ad-hoc query: installs its dataflow, reads the result once it has
    /// caught up, and drops it.
    pub async fn run_sql(&self, prepared: PreparedSql) -> Result<QueryResult, RuntimeError> {
        self.views.run_once(prepared).await
    }

    /// Runs `sql` over a result, which it reads as the table `_` (the endpoints' `q=`).
    pub async fn query_over(
        &self,
        result: QueryResult,
        sql: &str,
    ) -> Result<QueryResult, RuntimeError> {
        let name = format!("__q{}", self.next_import.fetch_add(1, Ordering::Relaxed));
        let (mut query, values) = self
            .project()
            .plan_sql_over(sql, &result.columns)
            .map_err(RuntimeError::from)?;
        rename_scans(&mut query.plan, "_", &name);
        self.engine
            .register_source(&name, Arc::new(MemoryLog::with_rows(result.rows)));
        let mut tables = BTreeSet::new();
        tables.insert(name.clone());
        let out = self
            .views
            .run_once(PreparedSql::new(query, values, tables, BTreeSet::new()))
            .await;
        self.engine.unregister_source(&name);
        out
    }

    /// Takes one of `token`'s subscription slots (429 when it holds its cap): it is given back
    /// when the returned slot is dropped, that is when the subscription ends.
    pub fn subscription_slot(&self, token: &str) -> Result<SubscriptionSlot, RuntimeError> {
        let counts = &self.subscriptions;
        let mut by_token = counts.by_token.lock().unwrap_or_else(|e| e.into_inner());
        let n = by_token.entry(token.to_string()).or_insert(0);
        if *n >= counts.max_per_token {
            return Err(RuntimeError::Exhausted(format!(
                "this token holds {} open subscriptions (--max-subscriptions-per-token); close some first",
                counts.max_per_token
            )));
        }
        *n += 1;
        Ok(SubscriptionSlot {
            counts: counts.clone(),
            token: token.to_string(),
        })
    }

    /// The byte budgets subscribers' queued frames share.
    pub fn subscriber_buffers(&self) -> &SubscriberBuffers {
        &self.buffers
    }

    /// The storage the datasources live in.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// The engine, for components that install their own views.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The rows of a table read straight from its log, consolidated (for tests and tools).
    pub fn read_table(&self, name: &str) -> Option<Vec<Row>> {
        let source = self.source(name)?;
        let mut counts: std::collections::HashMap<Row, i64> = std::collections::HashMap::new();
        source
            .log
            .replay(source.log.len(), 0, 1, &mut |r, _, d| {
                *counts.entry(r).or_insert(0) += d as i64
            })
            .ok()?;
        let mut rows = Vec::new();
        for (row, n) in counts {
            for _ in 0..n.max(0) {
                rows.push(row.clone());
            }
        }
        Some(rows)
    }

    /// Removes every row of a datasource: the rows are retracted, so every view that reads
    /// it updates (and subscribers receive the retractions). Returns the rows removed and the
    /// timestamp of the retraction.
    pub fn truncate(&self, datasource: &str) -> Result<(usize, Ts), RuntimeError> {
        self.refuse_on_replica()?;
        if !self.project().datasources.contains_key(datasource) {
            return Err(RuntimeError::NotFound(format!(
                "Data Source '{datasource}' not found"
            )));
        }
        let rows = self
            .read_table(datasource)
            .ok_or_else(|| RuntimeError::Internal(format!("cannot read '{datasource}'")))?;
        let n = rows.len();
        let ts = self
            .engine
            .insert(datasource, rows.into_iter().map(|r| (r, -1)).collect())
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        Ok((n, ts))
    }

    /// Removes the rows of a datasource for which `condition` (SQL) holds: they are found by a
    /// short-lived dataflow over the stored rows and retracted from every view. With
    /// `dry_run`, only counts them. Returns the count and the retraction's timestamp.
    pub async fn delete_where(
        &self,
        datasource: &str,
        condition: &str,
        dry_run: bool,
    ) -> Result<(usize, Ts), RuntimeError> {
        self.refuse_on_replica()?;
        let query = self.project().plan_raw(
            datasource,
            &format!("SELECT * FROM `{datasource}` WHERE {condition}"),
        )?;
        let tables = BTreeSet::from([datasource.to_string()]);
        let found = self
            .views
            .run_once(PreparedSql::new(
                query,
                BTreeMap::new(),
                tables,
                BTreeSet::new(),
            ))
            .await?;
        let n = found.rows.len();
        if dry_run || n == 0 {
            return Ok((n, self.engine.open_ts()));
        }
        let ts = self
            .engine
            .insert(
                datasource,
                found.rows.into_iter().map(|r| (r, -1)).collect(),
            )
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        Ok((n, ts))
    }

    /// Runs a `TYPE copy` pipe once: its query over the data as it is now (a short-lived
    /// dataflow), the result appended to the target datasource (after retracting the target's
    /// rows, with `COPY_MODE replace`), durably and visibly. Result columns are matched to the
    /// target's by name; target columns the result lacks take their defaults. Returns the rows
    /// copied and the timestamp they landed at.
    pub async fn copy_pipe(&self, pipe: &str) -> Result<(usize, Ts), RuntimeError> {
        self.refuse_on_replica()?;
        let project = self.project();
        let job = project
            .pipes
            .get(pipe)
            .ok_or_else(|| RuntimeError::NotFound(format!("The pipe '{pipe}' does not exist")))?
            .copy
            .clone()
            .ok_or_else(|| {
                RuntimeError::BadRequest(format!(
                    "the pipe '{pipe}' is not a copy pipe (TYPE copy)"
                ))
            })?;
        let target = project.datasources.get(&job.target).ok_or_else(|| {
            RuntimeError::BadRequest(format!(
                "the copy pipe '{pipe}' targets '{}', which is not a datasource",
                job.target
            ))
        })?;
        let rendered = project.render_pipe(pipe, &BTreeMap::new())?;
        let query = project.plan_rendered(pipe, &rendered)?;
        let mut tables = BTreeSet::new();
        petrel_engine::scanned_tables(&query.plan, &mut tables);
        let result = self
            .views
            .run_once(PreparedSql::new(
                query,
                rendered.values,
                tables,
                BTreeSet::new(),
            ))
            .await?;
        let columns = target.schema();
        let positions: Vec<Option<usize>> = columns
            .iter()
            .map(|c| result.columns.iter().position(|r| r.name == c.name))
            .collect();
        if positions.iter().all(Option::is_none) && !columns.is_empty() {
            return Err(RuntimeError::BadRequest(format!(
                "the copy pipe '{pipe}' has no column of '{}'",
                job.target
            )));
        }
        let rows = result
            .rows
            .iter()
            .map(|r| {
                let row = columns
                    .iter()
                    .zip(&positions)
                    .map(|(c, p)| match p {
                        Some(i) => c.ty.coerce(&r[*i]).ok_or_else(|| {
                            RuntimeError::BadRequest(format!(
                                "the copy pipe '{pipe}' gives column '{}' a value that is not {}: {}",
                                c.name,
                                c.ty.name(),
                                r[*i].to_text()
                            ))
                        }),
                        None => Ok(c.ty.default_value()),
                    })
                    .collect::<Result<Row, RuntimeError>>()?;
                Ok((row, 1isize))
            })
            .collect::<Result<Vec<_>, RuntimeError>>()?;
        let n = rows.len();
        let mut ts = self.engine.open_ts();
        if job.replace {
            ts = tokio::task::block_in_place(|| self.truncate(&job.target))?.1;
        }
        if !rows.is_empty() {
            ts = self
                .engine
                .insert(&job.target, rows)
                .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        }
        self.wait_durable_and_visible(&job.target, ts).await?;
        Ok((n, ts))
    }

    /// Writes view snapshots every `every_ms`, until the runtime goes away.
    fn snapshot_views(self: &Arc<Self>, every_ms: u64) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_millis(every_ms));
            every.tick().await;
            loop {
                every.tick().await;
                let Some(rt) = weak.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || rt.views.write_snapshots()).await;
            }
        });
    }

    /// Runs each copy pipe with a `COPY_SCHEDULE` every so many minutes, until the runtime
    /// goes away.
    fn schedule_copies(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last_run: BTreeMap<String, std::time::Instant> = BTreeMap::new();
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                every.tick().await;
                let Some(rt) = weak.upgrade() else { return };
                let project = rt.project();
                for pipe in project.pipes.values() {
                    let Some(minutes) = pipe.copy.as_ref().and_then(|c| c.every_minutes) else {
                        continue;
                    };
                    let due = last_run.get(&pipe.name).is_none_or(|t| {
                        t.elapsed() >= std::time::Duration::from_secs(minutes * 60)
                    });
                    if !due {
                        continue;
                    }
                    last_run.insert(pipe.name.clone(), std::time::Instant::now());
                    match rt.copy_pipe(&pipe.name).await {
                        Ok((rows, _)) => tracing::info!(pipe = %pipe.name, rows, "copy ran"),
                        Err(e) => tracing::warn!(pipe = %pipe.name, error = %e, "copy failed"),
                    }
                }
            }
        });
    }

    /// Every datasource with its columns and row counts.
    pub fn describe_datasources(&self) -> Vec<DatasourceInfo> {
        self.project()
            .datasources
            .values()
            .map(|ds| DatasourceInfo {
                name: ds.name.clone(),
                columns: ds
                    .schema()
                    .iter()
                    .map(|c| ColumnInfo {
                        name: c.name.clone(),
                        ty: c.ty.name(),
                    })
                    .collect(),
                row_count: self.row_count(&ds.name).unwrap_or(0),
                quarantine_rows: self
                    .row_count(&format!("{}_quarantine", ds.name))
                    .unwrap_or(0),
                storage: self
                    .source(&ds.name)
                    .map(|s| s.log.figures())
                    .unwrap_or_default(),
            })
            .collect()
    }
}

/// What `GET /v0/datasources` shows of a datasource.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DatasourceInfo {
    /// The name.
    pub name: String,
    /// The columns.
    pub columns: Vec<ColumnInfo>,
    /// Rows stored.
    pub row_count: u64,
    /// Rows in its quarantine table.
    pub quarantine_rows: u64,
    /// How its rows are stored: parts, segments, bytes.
    pub storage: TableFigures,
}

/// A column as the API lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ColumnInfo {
    /// The name.
    pub name: String,
    /// The ClickHouse type.
    #[serde(rename = "type")]
    pub ty: String,
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
