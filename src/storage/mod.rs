//! Where datasource rows live: object storage (`--storage URL`), a local folder by default or
//! an S3-compatible bucket, through `object_store`.
//!
//! Each datasource is a [`TableLog`]: appended batches wait in memory until a group commit
//! writes them as one log segment object (so `wait=true` costs one write for every request
//! that arrived meanwhile); segments compact into Parquet parts (one per partition) listed in
//! a manifest that changes atomically, and background merges keep the parts few and drop rows
//! whose TTL passed. Replays for views read
//! parts, segments and the batches not yet written, so the engine's memory follows view state
//! (Principle 3), not raw rows.
//!
//! Layout under the storage's prefix:
//!
//! ```text
//! tables/NAME/manifest/VERSION.json      the parts and where the log continues
//! tables/NAME/log/FIRST-END.seg          batches FIRST..END (bincode), written once
//! tables/NAME/parts/FIRST-END.parquet    batches FIRST..END as a Parquet part
//! frontier                               every batch below this timestamp is durable
//! views/KEY.json, views/KEY-UPPER.parquet a view's rows at a timestamp (see view_snapshot)
//! ```

mod cluster_log;
mod compactor_priority;
mod manifest;
mod memory_log;
mod part;
mod part_merge;
mod segment_codec;
mod table;
mod view_snapshot;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use petrel_view::Ts;

use compactor_priority::CompactorPriority;

pub use cluster_log::ClusterLog;
pub use manifest::{Manifest, PartInfo};
pub use memory_log::MemoryLog;
pub use part::ColumnStats;
pub use table::{RowFn, TableFigures, TableLog, TableRules};

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage URL cannot be used.
    #[error("bad storage URL '{url}': {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// The object store failed.
    #[error("object storage: {0}")]
    Store(#[from] object_store::Error),
    /// Stored data cannot be read back.
    #[error("corrupt storage: {0}")]
    Corrupt(String),
    /// A write to a replica's read-only storage.
    #[error("this storage is read-only (a replica)")]
    ReadOnly,
}

impl From<StorageError> for std::io::Error {
    fn from(e: StorageError) -> std::io::Error {
        std::io::Error::other(e.to_string())
    }
}

/// How the background work runs.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// Batches that nobody waits for are written at least this often.
    pub flush_interval: Duration,
    /// Segments compact into a part once they hold this many rows, or once there are
    /// `compact_segments` of them.
    pub compact_rows: u64,
    /// See `compact_rows`.
    pub compact_segments: usize,
    /// The most rows one compaction puts into a part (a backlog compacts run after run).
    pub compact_max_rows: u64,
    /// Background merges keep at most this many parts per table (parts larger than
    /// `merge_max_rows` are left alone). Parts are read only by replays, so a few more small
    /// parts cost little, and each merge rewrites rows the ingest already paid for.
    pub max_parts: usize,
    /// The largest part a merge writes, in rows.
    pub merge_max_rows: u64,
    /// Rows of a table with a TTL stay in parts this long after they expired (so history a
    /// subscriber may resume from keeps them); compactions and merges drop them afterwards.
    pub keep_expired: Duration,
}

impl StorageConfig {
    /// True when a table's segments, of `segment_rows` rows each, make a part.
    pub(crate) fn compaction_due(&self, segment_rows: impl ExactSizeIterator<Item = u64>) -> bool {
        let segments = segment_rows.len();
        segment_rows.sum::<u64>() >= self.compact_rows || segments >= self.compact_segments
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            flush_interval: Duration::from_millis(100),
            compact_rows: 200_000,
            compact_segments: 16,
            compact_max_rows: 250_000,
            max_parts: 16,
            merge_max_rows: 2_000_000,
            keep_expired: Duration::from_secs(300),
        }
    }
}

/// An object store with a prefix, and the I/O threads that talk to it.
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
    read_only: bool,
    config: StorageConfig,
    /// Always `Some` until dropped.
    io: Option<tokio::runtime::Runtime>,
    tables: Mutex<Vec<Weak<TableLog>>>,
    stopped: AtomicBool,
    /// The last frontier the flusher wrote: every batch below it is durable.
    durable: AtomicU64,
    /// The same frontier, for writers that wait for their rows to be stored.
    durable_watch: tokio::sync::watch::Sender<Ts>,
    /// Set when a segment is written (by the flusher or by a request that waits for its
    /// rows): the flusher then writes the frontier on its next round.
    segment_written: AtomicBool,
    /// Rows of written segments every table keeps in memory for its next compaction (at
    /// most [`Storage::held_rows_max`] in all).
    held_rows: Arc<AtomicU64>,
    /// The compactor's thread, woken when a table's segments reach the compaction threshold.
    compactor: std::sync::OnceLock<std::thread::Thread>,
    /// The compactor's thread priority: idle while it keeps up, nice 10 when behind.
    pub(crate) compactor_priority: CompactorPriority,
    /// The engine's open tick, once the writer's background threads run: the frontier a
    /// flush makes durable is the tick read before it.
    clock: Mutex<Option<Clock>>,
}

/// Reads the engine's open tick.
type Clock = Arc<dyn Fn() -> Ts + Send + Sync>;

impl Drop for Storage {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which is not allowed inside async code.
        if let Some(io) = self.io.take() {
            io.shutdown_background();
        }
    }
}

/// An S3 client for `bucket` from the usual AWS environment variables (credentials, region,
/// `AWS_ENDPOINT_URL`; plain `http://` endpoints are allowed for S3-compatible servers; the
/// region defaults to us-east-1).
pub fn s3_builder(bucket: &str) -> object_store::aws::AmazonS3Builder {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .ok();
    let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = endpoint {
        builder = builder
            .with_allow_http(endpoint.starts_with("http://"))
            .with_endpoint(endpoint);
    }
    if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
        builder = builder.with_region("us-east-1");
    }
    builder
}

impl Storage {
    /// Opens `url`: `s3://BUCKET[/PREFIX]` (credentials, region and `AWS_ENDPOINT_URL` from
    /// the usual AWS environment variables; plain `http://` endpoints are allowed for
    /// S3-compatible servers), `file:///PATH`, or a folder path.
    pub fn open(
        url: &str,
        read_only: bool,
        config: StorageConfig,
    ) -> Result<Arc<Storage>, StorageError> {
        let bad = |reason: String| StorageError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let (store, prefix): (Arc<dyn ObjectStore>, Path) =
            if let Some(rest) = url.strip_prefix("s3://") {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad("no bucket".into()));
                }
                let store = s3_builder(bucket)
                    .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
                (Arc::new(store), Path::from(prefix.trim_matches('/')))
            } else {
                let dir = url.strip_prefix("file://").unwrap_or(url);
                if dir.contains("://") {
                    return Err(bad("use s3://BUCKET/PREFIX or a folder".into()));
                }
                if !read_only {
                    std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
                }
                let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| bad(e.to_string()))?
                    .with_fsync(true);
                (Arc::new(store), Path::default())
            };
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("petrel-storage-io")
            .enable_all()
            .build()
            .map_err(|e| bad(format!("cannot start I/O threads: {e}")))?;
        Ok(Arc::new(Storage {
            store,
            prefix,
            url: url.to_string(),
            read_only,
            config,
            io: Some(io),
            tables: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            durable: AtomicU64::new(0),
            durable_watch: tokio::sync::watch::Sender::new(0),
            segment_written: AtomicBool::new(false),
            held_rows: Arc::default(),
            compactor: std::sync::OnceLock::new(),
            compactor_priority: CompactorPriority::default(),
            clock: Mutex::new(None),
        }))
    }

    /// The URL this storage was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True for a replica's storage: nothing is ever written.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Runs an object-store call to completion from any thread (workers, blocking tasks or
    /// async handlers alike) on the storage's own I/O threads.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StorageError>> + Send + 'static,
    ) -> Result<T, StorageError> {
        self.start(fut).wait()
    }

    /// Starts an object-store call on the storage's I/O threads and returns at once: the
    /// caller works while it runs, and [`Started::wait`]s for it.
    fn start<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StorageError>> + Send + 'static,
    ) -> Started<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if let Some(io) = &self.io {
            io.spawn(async move {
                let _ = tx.send(fut.await);
            });
        }
        Started(rx)
    }

    pub(crate) fn path(&self, key: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in key.split('/') {
            p = p.clone().join(part);
        }
        p
    }

    pub(crate) fn get(&self, path: &Path) -> Result<bytes::Bytes, StorageError> {
        let (store, path) = (self.store.clone(), path.clone());
        self.run(async move { Ok(store.get(&path).await?.bytes().await?) })
    }

    pub(crate) fn put(&self, path: &Path, bytes: bytes::Bytes) -> Result<(), StorageError> {
        self.start_put(path, bytes)?.wait()
    }

    /// [`Storage::put`], started on the I/O threads while the caller goes on.
    pub(crate) fn start_put(
        &self,
        path: &Path,
        bytes: bytes::Bytes,
    ) -> Result<Started<()>, StorageError> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        let (store, path) = (self.store.clone(), path.clone());
        Ok(self.start(async move {
            store.put(&path, PutPayload::from(bytes)).await?;
            Ok(())
        }))
    }

    /// Writes an object that must not exist yet (a manifest version): two writers racing for
    /// the same version cannot both win.
    pub(crate) fn put_new(&self, path: &Path, bytes: bytes::Bytes) -> Result<(), StorageError> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        let (store, path) = (self.store.clone(), path.clone());
        self.run(async move {
            store
                .put_opts(
                    &path,
                    PutPayload::from(bytes),
                    object_store::PutMode::Create.into(),
                )
                .await?;
            Ok(())
        })
    }

    pub(crate) fn delete(&self, path: &Path) -> Result<(), StorageError> {
        let (store, path) = (self.store.clone(), path.clone());
        self.run(async move {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// The objects under `dir` (names after the last `/`) with their sizes, sorted, starting
    /// after `offset` when given.
    pub(crate) fn list(
        &self,
        dir: &Path,
        offset: Option<&Path>,
    ) -> Result<Vec<(String, u64)>, StorageError> {
        use futures::TryStreamExt;
        let (store, dir, offset) = (self.store.clone(), dir.clone(), offset.cloned());
        let mut out: Vec<(String, u64)> = self.run(async move {
            let stream = match &offset {
                Some(o) => store.list_with_offset(Some(&dir), o),
                None => store.list(Some(&dir)),
            };
            let metas: Vec<object_store::ObjectMeta> = stream.try_collect().await?;
            Ok(metas
                .into_iter()
                .filter_map(|m| Some((m.location.filename()?.to_string(), m.size)))
                .collect())
        })?;
        out.sort();
        Ok(out)
    }

    /// Opens (or creates) the table `name` with its column names and part rules.
    pub fn table(
        self: &Arc<Self>,
        name: &str,
        columns: Vec<String>,
        rules: TableRules,
    ) -> Result<Arc<TableLog>, StorageError> {
        let table = Arc::new(TableLog::open(self.clone(), name, columns, rules)?);
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        tables.retain(|t| t.strong_count() > 0);
        tables.push(Arc::downgrade(&table));
        Ok(table)
    }

    /// Moves a table's objects aside under `replaced/NAME-SUFFIX/` (a destructive deploy keeps
    /// the old data rather than deleting it).
    pub fn set_aside(&self, name: &str, suffix: &str) -> Result<(), StorageError> {
        use futures::TryStreamExt;
        let from = self.path(&format!("tables/{name}"));
        let to = self.path(&format!("replaced/{name}-{suffix}"));
        let store = self.store.clone();
        self.run(async move {
            let objects: Vec<object_store::ObjectMeta> =
                store.list(Some(&from)).try_collect().await?;
            for o in objects {
                let rel: Vec<_> = o
                    .location
                    .prefix_match(&from)
                    .into_iter()
                    .flatten()
                    .collect();
                let mut dest = to.clone();
                for part in rel {
                    dest = dest.join(part);
                }
                store.rename(&o.location, &dest).await?;
            }
            Ok(())
        })
    }

    /// True once [`Storage::stop`] ran: background work that writes through this storage
    /// (view snapshots) ends.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Stops the background threads after writing every waiting batch and letting a running
    /// compaction finish: the storage can then be opened by another writer (a restart within
    /// the same process, as benchmarks do).
    /// The durable frontier is written last (every batch appended before the stop is then
    /// stored), so a clean stop leaves no window that resuming subscribers must resync over.
    pub fn stop(&self) -> Result<(), StorageError> {
        self.stopped.store(true, Ordering::SeqCst);
        let clock = self.clock.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let frontier = clock.map(|c| c());
        for table in self.tables() {
            table.flush()?;
            table.wait_for_compaction();
        }
        if let Some(frontier) = frontier.filter(|f| *f > self.durable_frontier()) {
            self.write_frontier(frontier)?;
        }
        // Writers waiting for their rows to be stored: they are (the flushes above).
        self.durable_watch.send_modify(|_| {});
        Ok(())
    }

    /// Stores `frontier` as the durable frontier: every batch below it is written.
    fn write_frontier(&self, frontier: Ts) -> Result<(), StorageError> {
        let body = serde_json::json!({ "ts": frontier }).to_string();
        self.put(&self.path("frontier"), body.into())?;
        self.durable.store(frontier, Ordering::SeqCst);
        self.durable_watch.send_replace(frontier);
        Ok(())
    }

    /// Returns once every batch at `ts` or earlier is durable (the durable frontier passed
    /// it), or once the storage is stopped (its last flush wrote every batch); while the
    /// storage refuses writes, that is never: the rows are only in memory.
    pub async fn wait_durable_past(&self, ts: Ts) {
        let mut frontier = self.durable_watch.subscribe();
        // The sender lives as long as the storage, which the caller holds.
        let _ = frontier.wait_for(|f| *f > ts || self.is_stopped()).await;
    }

    /// The frontier this writer last stored: every batch below it is durable.
    pub fn durable_frontier(&self) -> Ts {
        self.durable.load(Ordering::SeqCst)
    }

    /// Writes every waiting batch and compacts every table's segments into parts now (then
    /// merges), instead of waiting for the thresholds.
    pub fn compact_now(&self) -> Result<(), StorageError> {
        for table in self.tables() {
            table.flush()?;
            table.compact(true)?;
        }
        Ok(())
    }

    /// The writer's durable frontier: every batch below it, in every table, is stored.
    pub fn read_frontier(&self) -> Result<Option<Ts>, StorageError> {
        match self.get(&self.path("frontier")) {
            Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["ts"].as_u64())
                .map(Some)
                .ok_or_else(|| StorageError::Corrupt("unreadable frontier".into())),
            Err(StorageError::Store(object_store::Error::NotFound { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Starts a compaction round now: a table's segments reach the compaction threshold
    /// (`compact_rows` or `compact_segments`). They are then compacted while the storage still
    /// holds them in memory, instead of up to half a second later, when more have arrived
    /// (past [`Storage::held_rows_max`], a compaction reads segments back and decodes them).
    pub(crate) fn wake_compactor(&self) {
        if let Some(thread) = self.compactor.get() {
            thread.unpark();
        }
    }

    /// The most rows of written segments the storage keeps in memory for their compaction:
    /// the part being compacted and the next one, arriving meanwhile.
    pub(crate) fn held_rows_max(&self) -> u64 {
        self.config.compact_max_rows.saturating_mul(2)
    }

    /// The most uncompacted rows the compactor takes only idle time for
    /// ([`CompactorPriority`]): three parts (a part being compacted counts until it is
    /// written). At a part and a half, an ingest of 1.2M rows/s brought the compactor to
    /// nice 10 a third of the time (a part's compaction, on idle time, took long enough for
    /// more than half a part to arrive), and at nice 10 it held its core for a whole
    /// scheduler slice while a woken helper of the ingest waited (session 37). Past the
    /// rows kept in memory ([`Storage::held_rows_max`]) a compaction reads segments back: a
    /// deep backlog costs a decode, not memory.
    pub(crate) fn idle_backlog_max(&self) -> u64 {
        self.config.compact_max_rows.saturating_mul(3)
    }

    fn tables(&self) -> Vec<Arc<TableLog>> {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        tables.retain(|t| t.strong_count() > 0);
        tables.iter().filter_map(Weak::upgrade).collect()
    }

    /// Starts the writer's background threads: a flusher that writes waiting batches every
    /// `flush_interval` and then the durable frontier (the clock's open tick read before the
    /// flush: every batch below it was appended before and is now written), and a compactor
    /// that turns segments into parts and merges parts. They stop with the storage.
    pub fn start_background(self: &Arc<Self>, clock: Clock) {
        if self.read_only {
            return;
        }
        *self.clock.lock().unwrap_or_else(|e| e.into_inner()) = Some(clock.clone());
        let weak = Arc::downgrade(self);
        let every = self.config.flush_interval;
        let spawned = std::thread::Builder::new()
            .name("petrel-flush".into())
            .spawn(move || {
                let mut last_written = 0;
                let mut idle = Duration::ZERO;
                loop {
                    std::thread::sleep(every);
                    let Some(storage) = weak.upgrade().filter(|s| !s.is_stopped()) else {
                        return;
                    };
                    // Taken before the clock is read: a segment written since then is
                    // seen next round.
                    let mut wrote = storage.segment_written.swap(false, Ordering::SeqCst);
                    let frontier = clock();
                    let mut ok = true;
                    for table in storage.tables() {
                        match table.flush() {
                            Ok(n) => {
                                wrote |= n > 0;
                                if n > 0 {
                                    table.build_held_columns();
                                }
                            }
                            Err(e) => {
                                ok = false;
                                tracing::warn!(table = %table.name(), error = %e, "flush failed; retrying");
                            }
                        }
                    }
                    // A table whose writes paused would keep the segments held for its
                    // next compaction until they resume: that compaction reads them back.
                    for table in storage.tables() {
                        table.release_held_if_idle();
                    }
                    idle += every;
                    if ok && frontier > last_written && (wrote || idle >= Duration::from_secs(1))
                    {
                        match storage.write_frontier(frontier) {
                            Ok(()) => {
                                last_written = frontier;
                                idle = Duration::ZERO;
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot write the frontier"),
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the flusher");
        }
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("petrel-compact".into())
            .spawn(move || compact_forever(weak));
        match spawned {
            Ok(handle) => {
                let _ = self.compactor.set(handle.thread().clone());
            }
            Err(e) => tracing::error!(error = %e, "cannot start the compactor"),
        }
    }
}

/// An object-store call running on the storage's I/O threads ([`Storage::start_put`]).
pub(crate) struct Started<T>(std::sync::mpsc::Receiver<Result<T, StorageError>>);

impl<T> Started<T> {
    /// Waits for the call's result.
    pub(crate) fn wait(self) -> Result<T, StorageError> {
        self.0
            .recv()
            .map_err(|_| StorageError::Corrupt("the storage's I/O threads have stopped".into()))?
    }
}

/// Lowers the calling thread's CPU priority (nice 10 on Linux): view snapshots are background
/// work, and on a busy machine the engine's workers, which decide ingest and push latency,
/// should get the cores first. (The compactor's priority is paced by its backlog,
/// [`CompactorPriority`].)
pub(crate) fn background_priority() {
    compactor_priority::set_low(compactor_priority::current_tid());
}

/// Compacts every table when woken ([`Storage::wake_compactor`]) and at least every half
/// second, until the storage is gone; each round at the priority its backlog calls for
/// ([`CompactorPriority`]).
fn compact_forever(weak: std::sync::Weak<Storage>) {
    if let Some(storage) = weak.upgrade() {
        storage.compactor_priority.register_current_thread();
    }
    loop {
        std::thread::park_timeout(Duration::from_millis(500));
        let Some(storage) = weak.upgrade().filter(|s| !s.is_stopped()) else {
            return;
        };
        let tables = storage.tables();
        let backlog = tables.iter().map(|t| t.uncompacted_rows()).sum();
        (storage.compactor_priority).pace(backlog, storage.idle_backlog_max());
        for table in tables {
            if let Err(e) = table.compact(false) {
                tracing::warn!(table = %table.name(), error = %e, "compaction failed");
            }
        }
    }
}
