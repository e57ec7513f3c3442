//! Petrel's engine: plans compiled to differential dataflow on a pool of timely workers, fed
//! by datasource inputs and driven by one clock.
//!
//! - **Time** (Principle 2): one clock ticks every `tick` (milliseconds since the Unix epoch).
//!   Each ingested batch is stamped with the open tick; when the clock ticks, every input
//!   advances, and each view publishes the consolidated changes of the closed times.
//! - **Views**: each maintained result is its own dataflow, installed on every worker in the
//!   same order (timely's rule). It starts at the open tick with the datasources' history
//!   replayed from their [`SourceLog`]s, then follows live inserts. Its output is exchanged to
//!   worker 0, which publishes [`petrel_view::ChangeBatch`]es into the [`petrel_view::View`];
//!   serving reads the view, never the workers.
//! - **Many processes later**: inputs enter on any worker and are exchanged by key inside the
//!   dataflow, and the clock reaches workers only as input frontiers, so timely's cluster mode
//!   is a configuration change, not a rewrite.

mod accum;
mod aggregate;
mod guard;
mod keyed;
mod render;
mod sink;
mod values;
mod window;
mod worker;

use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::Thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use petrel_sql::{Plan, PlanNode};
use petrel_value::Row;
use petrel_view::View;

pub use petrel_log::{History, SourceLog, TimedBatch, Ts};

pub use guard::RowBudget;
pub use render::row_order;

/// Engine failures a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The plan reads a datasource that is not registered.
    #[error("unknown datasource '{0}'")]
    UnknownDatasource(String),
    /// Writing to a datasource's log failed; nothing was inserted.
    #[error("storage error on datasource '{datasource}': {source}")]
    Storage {
        /// The datasource.
        datasource: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The worker pool could not start or has stopped.
    #[error("engine is not running: {0}")]
    Stopped(String),
}

/// Identifies an installed view's dataflow.
pub type ViewId = u64;

/// How the worker pool and the clock run.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Timely worker threads.
    pub workers: usize,
    /// The clock's tick (the flush interval): how often inputs advance and views publish.
    pub tick: Duration,
    /// How far back a newly installed view keeps the history's own timestamps (older history
    /// is collapsed at the start of this window). Within it, a view installed after a restart
    /// publishes the same changes at the same times as before, so subscribers resume exactly.
    pub history_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: 1,
            tick: Duration::from_millis(10),
            history_ms: 5 * 60 * 1000,
        }
    }
}

/// What a worker is told to do, in the same order on every worker.
pub(crate) enum Command {
    Install(Arc<InstallSpec>),
    Drop(ViewId),
    /// `updates[range]` enter this worker's inputs at `ts`.
    Insert {
        datasource: Arc<str>,
        updates: Arc<Vec<(Row, isize)>>,
        range: std::ops::Range<usize>,
        ts: Ts,
    },
    Advance(Ts),
    Shutdown,
}

/// A view to build on every worker.
pub(crate) struct InstallSpec {
    pub id: ViewId,
    pub plan: Plan,
    pub view: Arc<View>,
    /// The open tick at install: live inserts come at or after it.
    pub as_of: Ts,
    /// History before this time is replayed at this time; later history at its own times.
    pub floor: Ts,
    /// Each scanned datasource with its history up to the install.
    pub history: Vec<(String, Arc<dyn History>)>,
    /// The rows its joins may produce (ad-hoc queries), if bounded.
    pub budget: Option<Arc<RowBudget>>,
}

struct Clock {
    open: Ts,
    /// A replica's cap on the open tick: the writer's durable frontier.
    hold: Option<Ts>,
    history_ms: u64,
    next_worker: usize,
    next_view: ViewId,
    senders: Vec<Sender<Command>>,
    sources: HashMap<String, Arc<dyn SourceLog>>,
    views: HashMap<ViewId, BTreeSet<String>>,
}

/// The running engine: a timely worker pool and its clock. Cheap to share behind an `Arc`.
pub struct Engine {
    clock: Mutex<Clock>,
    threads: Arc<Mutex<Vec<Thread>>>,
    guards: Mutex<Option<timely::communication::WorkerGuards<()>>>,
}

fn wall_ms() -> Ts {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Ts)
        .unwrap_or(0)
}

impl Engine {
    /// Starts the workers and the clock.
    pub fn start(config: EngineConfig) -> Result<Arc<Engine>, EngineError> {
        let workers = config.workers.max(1);
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = std::sync::mpsc::channel();
            senders.push(tx);
            receivers.push(Some(rx));
        }
        let receivers = Arc::new(Mutex::new(receivers));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let worker_threads = threads.clone();
        let guards = timely::execute(timely::Config::process(workers), move |worker| {
            let index = worker.index();
            let rx = lock(&receivers)[index].take();
            lock(&worker_threads).push(std::thread::current());
            if let Some(rx) = rx {
                worker::run(worker, rx);
            }
        })
        .map_err(EngineError::Stopped)?;
        let engine = Arc::new(Engine {
            clock: Mutex::new(Clock {
                open: wall_ms(),
                hold: None,
                history_ms: config.history_ms,
                next_worker: 0,
                next_view: 1,
                senders,
                sources: HashMap::new(),
                views: HashMap::new(),
            }),
            threads,
            guards: Mutex::new(Some(guards)),
        });
        let weak = Arc::downgrade(&engine);
        std::thread::Builder::new()
            .name("petrel-clock".into())
            .spawn(move || run_clock(weak, config.tick))
            .map_err(|e| EngineError::Stopped(e.to_string()))?;
        Ok(engine)
    }

    fn wake(&self) {
        for t in lock(&self.threads).iter() {
            t.unpark();
        }
    }

    /// Closes the open tick and opens the next: every input advances, views publish.
    fn tick(&self) {
        let mut clock = lock(&self.clock);
        let mut next = wall_ms().max(clock.open + 1);
        if let Some(hold) = clock.hold {
            next = next.min(hold);
        }
        if next <= clock.open {
            return;
        }
        clock.open = next;
        for tx in &clock.senders {
            let _ = tx.send(Command::Advance(next));
        }
        drop(clock);
        self.wake();
    }

    /// Closes the tick `ts` now if it is still open, instead of at the clock's next tick: a
    /// writer waiting for its rows to be visible pays no tick. Every batch that landed in the
    /// same tick shares the step; a tick already closed costs nothing.
    pub fn close(&self, ts: Ts) {
        if lock(&self.clock).open <= ts {
            self.tick();
        }
    }

    /// The open tick: the timestamp the next inserted batch gets.
    pub fn open_ts(&self) -> Ts {
        lock(&self.clock).open
    }

    /// Registers a datasource and its log; views installed afterwards may scan it. The clock
    /// moves past the log's latest timestamp if it is not there yet (a restart after the wall
    /// clock went back), so new batches never land before old ones.
    pub fn register_source(&self, name: &str, log: Arc<dyn SourceLog>) {
        let mut clock = lock(&self.clock);
        clock.open = clock.open.max(log.last_ts() + 1);
        clock.sources.insert(name.to_string(), log);
    }

    /// Forgets a source registered for a short-lived query; views already installed keep
    /// the history they replayed.
    pub fn unregister_source(&self, name: &str) {
        lock(&self.clock).sources.remove(name);
    }

    /// Appends row updates to a datasource: written to its log, then sent to one worker at the
    /// open tick, all under the clock's lock so that installs see a consistent history.
    /// Returns the timestamp the rows land at.
    pub fn insert(&self, datasource: &str, updates: Vec<(Row, isize)>) -> Result<Ts, EngineError> {
        self.insert_with_meta(datasource, updates, None)
    }

    /// As [`Engine::insert`], writing `meta` into the same log record as the rows.
    pub fn insert_with_meta(
        &self,
        datasource: &str,
        updates: Vec<(Row, isize)>,
        meta: Option<&[u8]>,
    ) -> Result<Ts, EngineError> {
        let mut clock = lock(&self.clock);
        let log = clock
            .sources
            .get(datasource)
            .cloned()
            .ok_or_else(|| EngineError::UnknownDatasource(datasource.to_string()))?;
        let updates = Arc::new(updates);
        log.append(clock.open, &updates, meta)
            .map_err(|source| EngineError::Storage {
                datasource: datasource.to_string(),
                source,
            })?;
        let open = clock.open;
        let ts = send_insert(&mut clock, datasource, updates, open);
        drop(clock);
        self.wake();
        ts
    }

    /// Feeds a followed log's new batches to the workers (a replica), under the clock's lock
    /// so that installs see a consistent history. Each batch lands at the timestamp the
    /// writer gave it when the clock has not passed it yet, else at the open tick. Returns the
    /// latest timestamp used, if there were any batches.
    pub fn pull(&self, datasource: &str) -> Result<Option<Ts>, EngineError> {
        let mut clock = lock(&self.clock);
        let Some(log) = clock.sources.get(datasource).cloned() else {
            return Ok(None);
        };
        let batches = log.poll_new().map_err(|source| EngineError::Storage {
            datasource: datasource.to_string(),
            source,
        })?;
        let mut last = None;
        for (ts, updates) in batches {
            last = Some(send_insert(&mut clock, datasource, Arc::new(updates), ts)?);
        }
        drop(clock);
        self.wake();
        Ok(last)
    }

    /// Holds the clock at `ts` at most (a replica following a writer's durable frontier):
    /// ticks open no time above it until a later call raises it. Before any view is
    /// installed, the clock also moves back below `ts`, so the writer's batches from `ts` on
    /// land at their own timestamps.
    pub fn hold_clock(&self, ts: Ts) {
        let mut clock = lock(&self.clock);
        clock.hold = Some(ts);
        if clock.views.is_empty() {
            clock.open = clock.open.min(ts.saturating_sub(1));
        }
    }

    /// Installs a dataflow maintaining `plan` into `view`. The view's first batch holds the
    /// result over all data inserted before this call.
    pub fn install(&self, plan: Plan, view: Arc<View>) -> Result<ViewId, EngineError> {
        self.install_from(plan, view, None, None)
    }

    /// As [`Engine::install`], for an ad-hoc query whose joins may produce at most
    /// `budget`'s rows: past it the view fails and [`RowBudget::exceeded`] says why.
    pub fn install_bounded(
        &self,
        plan: Plan,
        view: Arc<View>,
        budget: Arc<RowBudget>,
    ) -> Result<ViewId, EngineError> {
        self.install_from(plan, view, None, Some(budget))
    }

    /// As [`Engine::install`], for a view restored from a snapshot of its rows at `restored`:
    /// the history below it is replayed collapsed (the snapshot stands for it; subscribers
    /// resume from `restored` on), so a restart replays at fine grain only what came after
    /// the last snapshot.
    pub fn install_restored(
        &self,
        plan: Plan,
        view: Arc<View>,
        restored: Ts,
    ) -> Result<ViewId, EngineError> {
        self.install_from(plan, view, Some(restored.saturating_sub(1)), None)
    }

    fn install_from(
        &self,
        plan: Plan,
        view: Arc<View>,
        floor: Option<Ts>,
        budget: Option<Arc<RowBudget>>,
    ) -> Result<ViewId, EngineError> {
        let mut tables = BTreeSet::new();
        scanned_tables(&plan, &mut tables);
        let mut clock = lock(&self.clock);
        let mut history = Vec::new();
        for t in &tables {
            let log = clock
                .sources
                .get(t)
                .cloned()
                .ok_or_else(|| EngineError::UnknownDatasource(t.clone()))?;
            // Taken here, once for every worker: each replays its share of the same units.
            let upto = log.len();
            history.push((t.clone(), log.history(upto)));
        }
        let id = clock.next_view;
        clock.next_view += 1;
        let spec = Arc::new(InstallSpec {
            id,
            plan,
            view,
            as_of: clock.open,
            floor: clock
                .open
                .saturating_sub(clock.history_ms)
                .max(floor.unwrap_or(0))
                .min(clock.open),
            history,
            budget,
        });
        for tx in &clock.senders {
            tx.send(Command::Install(spec.clone()))
                .map_err(|e| EngineError::Stopped(e.to_string()))?;
        }
        clock.views.insert(id, tables);
        drop(clock);
        self.wake();
        Ok(id)
    }

    /// Stops maintaining a view and frees its dataflow on every worker.
    pub fn drop_view(&self, id: ViewId) {
        let mut clock = lock(&self.clock);
        if clock.views.remove(&id).is_some() {
            for tx in &clock.senders {
                let _ = tx.send(Command::Drop(id));
            }
        }
        drop(clock);
        self.wake();
    }

    /// Stops the workers and waits for them.
    pub fn shutdown(&self) {
        {
            let clock = lock(&self.clock);
            for tx in &clock.senders {
                let _ = tx.send(Command::Shutdown);
            }
        }
        self.wake();
        if let Some(guards) = lock(&self.guards).take() {
            drop(guards.join());
        }
    }
}

/// Below this many updates per worker a batch enters on one worker: splitting it would cost
/// more in messages than it saves.
const SPLIT_MIN_ROWS: usize = 2_048;

/// Sends updates at `ts`, or at the open tick if the clock has passed `ts`; the caller holds
/// the lock. A large batch is split evenly over the workers, so the operators before the first
/// exchange (projections, filters, pre-aggregation) run on every core; a small one goes to
/// one worker, round robin. Returns the timestamp used.
fn send_insert(
    clock: &mut Clock,
    datasource: &str,
    updates: Arc<Vec<(Row, isize)>>,
    ts: Ts,
) -> Result<Ts, EngineError> {
    let ts = ts.max(clock.open);
    let workers = clock.senders.len();
    let shares = (updates.len() / SPLIT_MIN_ROWS).clamp(1, workers);
    let per_share = updates.len().div_ceil(shares);
    let datasource: Arc<str> = Arc::from(datasource);
    for share in 0..shares {
        let range =
            (share * per_share).min(updates.len())..((share + 1) * per_share).min(updates.len());
        let worker = clock.next_worker % workers;
        clock.next_worker = clock.next_worker.wrapping_add(1);
        clock.senders[worker]
            .send(Command::Insert {
                datasource: datasource.clone(),
                updates: updates.clone(),
                range,
                ts,
            })
            .map_err(|e| EngineError::Stopped(e.to_string()))?;
    }
    Ok(ts)
}

fn run_clock(engine: Weak<Engine>, tick: Duration) {
    loop {
        std::thread::sleep(tick);
        match engine.upgrade() {
            Some(engine) => engine.tick(),
            None => return,
        }
    }
}

/// Locks a mutex, recovering from poisoning (a panicked holder leaves consistent data here:
/// every critical section only pushes to channels or swaps whole values).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The datasources a plan scans.
pub fn scanned_tables(plan: &Plan, out: &mut BTreeSet<String>) {
    if let PlanNode::Scan { table } = &plan.node {
        out.insert(table.clone());
    }
    for input in plan.inputs() {
        scanned_tables(input, out);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}
