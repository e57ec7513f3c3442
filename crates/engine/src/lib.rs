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
//! - **Many processes** ([`Cluster`]): inputs enter on the workers of the process that received
//!   them and are exchanged by key inside the dataflow; each process's clock reaches its
//!   workers as input frontiers, so a view's frontier is the slowest clock's. Process 0 alone
//!   installs and drops views (the other processes forward what would install one) and sends
//!   each command through the `control` stream, so every worker builds the same dataflows
//!   in the same order. A view's rows are published on process 0.

mod accum;
mod aggregate;
mod control;
mod guard;
mod join;
mod keyed;
mod render;
mod sink;
mod source;
mod values;
mod window;
mod worker;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// The processes of a cluster and which one this is; `None` for a single process.
    pub cluster: Option<Cluster>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: 1,
            tick: Duration::from_millis(10),
            history_ms: 5 * 60 * 1000,
            cluster: None,
        }
    }
}

/// One process of a timely cluster: every process runs `workers` threads and connects to
/// every other over TCP.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// This process's index in `addresses`.
    pub process: usize,
    /// Every process's cluster address (`host:port`), in process order.
    pub addresses: Vec<String>,
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
    /// Send a command to the other processes (process 0's first worker).
    Control(control::Control),
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
    /// Whether extremes and top-k over append-only inputs keep only their best values and
    /// rows (single process; not for a view rebuilt because such a state lost track).
    pub bounded_states: bool,
    /// Whether every worker runs in this process (no cluster).
    pub single_process: bool,
    /// Set when the view is dropped, so that its operators' long work can end before the
    /// workers free the dataflow.
    pub dropped: Arc<AtomicBool>,
    /// Set once the view failed on any worker of this process: its operators stop.
    pub failed: Arc<AtomicBool>,
}

struct Clock {
    /// This process and how many there are (1 and 0 for a single process).
    processes: usize,
    process: usize,
    open: Ts,
    /// A replica's cap on the open tick: the writer's durable frontier.
    hold: Option<Ts>,
    history_ms: u64,
    next_worker: usize,
    next_view: ViewId,
    senders: Vec<Sender<Command>>,
    sources: HashMap<String, Arc<dyn SourceLog>>,
    /// The installed views, each with the flag its operators read to learn it was dropped.
    views: HashMap<ViewId, Arc<AtomicBool>>,
}

/// The running engine: a timely worker pool and its clock. Cheap to share behind an `Arc`.
pub struct Engine {
    clock: Mutex<Clock>,
    threads: Arc<Mutex<Vec<Thread>>>,
    guards: Mutex<Option<timely::communication::WorkerGuards<()>>>,
    /// Why the workers stopped (a lost cluster peer, a panic), once they have.
    failure: Arc<Mutex<Option<String>>>,
}

fn wall_ms() -> Ts {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Ts)
        .unwrap_or(0)
}

impl Engine {
    /// Starts the workers and the clock. In a cluster this returns once every process is
    /// connected.
    pub fn start(config: EngineConfig) -> Result<Arc<Engine>, EngineError> {
        let workers = config.workers.max(1);
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = std::sync::mpsc::channel();
            senders.push(tx);
            receivers.push(Some(rx));
        }
        let (process, processes) = match &config.cluster {
            Some(c) => (c.process, c.addresses.len().max(1)),
            None => (0, 1),
        };
        let timely_config = match &config.cluster {
            Some(c) if processes > 1 => timely::Config {
                communication: timely::CommunicationConfig::Cluster {
                    threads: workers,
                    process: c.process,
                    addresses: c.addresses.clone(),
                    report: false,
                    zerocopy: false,
                },
                worker: timely::WorkerConfig::default(),
            },
            _ => timely::Config::process(workers),
        };
        let failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        if processes > 1 {
            record_worker_panics(failure.clone());
        }
        let receivers = Arc::new(Mutex::new(receivers));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let worker_threads = threads.clone();
        let engine_cell: Arc<std::sync::OnceLock<Weak<Engine>>> = Arc::default();
        let cell = engine_cell.clone();
        let guards = timely::execute(timely_config, move |worker| {
            let local = worker.index() % workers;
            let rx = lock(&receivers)[local].take();
            lock(&worker_threads).push(std::thread::current());
            let followers = if worker.index() == 0 {
                (1..processes).map(|p| (p * workers) as u64).collect()
            } else {
                Vec::new()
            };
            let port = control::ControlPort::build(worker, followers);
            let cell = cell.clone();
            let apply = move |command: control::Control| match cell.get().and_then(Weak::upgrade) {
                Some(engine) => {
                    engine.apply(command);
                    Ok(())
                }
                None => Err(command),
            };
            if let Some(rx) = rx {
                worker::run(worker, rx, port, (local, workers), &apply);
            }
        })
        .map_err(EngineError::Stopped)?;
        let engine = Arc::new(Engine {
            clock: Mutex::new(Clock {
                processes,
                process,
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
            failure,
        });
        let _ = engine_cell.set(Arc::downgrade(&engine));
        let weak = Arc::downgrade(&engine);
        std::thread::Builder::new()
            .name("petrel-clock".into())
            .spawn(move || run_clock(weak, config.tick))
            .map_err(|e| EngineError::Stopped(e.to_string()))?;
        Ok(engine)
    }

    /// Why the workers stopped, once they have: in a cluster, a lost peer stops every
    /// process's workers (timely cannot lose a process mid-computation), and the server
    /// reports it and refuses writes until the cluster is restarted.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// This process's worker threads.
    pub fn workers(&self) -> usize {
        lock(&self.clock).senders.len()
    }

    /// This process's index and the number of processes (0 and 1 outside a cluster).
    pub fn process(&self) -> (usize, usize) {
        let clock = lock(&self.clock);
        (clock.process, clock.processes)
    }

    /// Applies a command process 0 sent (on the other processes' first workers).
    fn apply(&self, command: control::Control) {
        match command {
            control::Control::Install {
                id,
                plan,
                floor,
                budget,
            } => {
                let budget = budget.map(RowBudget::new);
                let view = View::new(plan.columns.clone(), petrel_view::KeyColumns(Vec::new()), 0);
                if let Err(e) = self.install_spec(Some(id), *plan, view, Some(floor), budget, false)
                {
                    tracing::error!(view = id, error = %e, "installing a view process 0 sent failed");
                }
            }
            control::Control::Drop(id) => self.drop_view(id),
        }
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
        self.install_spec(None, plan, view, None, None, true)
    }

    /// As [`Engine::install`], with extreme aggregates keeping every distinct value and top-k
    /// every row: for a view rebuilt because deletes removed all that such a bounded state
    /// kept ([`View::needs_rebuild`]), so the rebuild cannot lose track again.
    pub fn install_exact(&self, plan: Plan, view: Arc<View>) -> Result<ViewId, EngineError> {
        self.install_spec(None, plan, view, None, None, false)
    }

    /// As [`Engine::install`], for an ad-hoc query whose joins may produce at most
    /// `budget`'s rows: past it the view fails and [`RowBudget::exceeded`] says why. Its
    /// extremes are exact (it runs once, and could not be rebuilt).
    pub fn install_bounded(
        &self,
        plan: Plan,
        view: Arc<View>,
        budget: Arc<RowBudget>,
    ) -> Result<ViewId, EngineError> {
        self.install_spec(None, plan, view, None, Some(budget), false)
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
        self.install_spec(
            None,
            plan,
            view,
            Some(restored.saturating_sub(1)),
            None,
            true,
        )
    }

    /// Installs a view on this process's workers: with `id` `None` a view of this process's
    /// own (process 0 then sends it to the others), else one process 0 sent, whose history
    /// before `floor` is replayed at `floor` exactly as process 0 does. A datasource this
    /// process does not know yet has no history here. `bounded_states`: see
    /// [`InstallSpec::bounded_states`]; a cluster never bounds them, since a group's state
    /// may live in a process whose view nobody reads, and could not ask for a rebuild.
    fn install_spec(
        &self,
        id: Option<ViewId>,
        plan: Plan,
        view: Arc<View>,
        floor: Option<Ts>,
        budget: Option<Arc<RowBudget>>,
        bounded_states: bool,
    ) -> Result<ViewId, EngineError> {
        let remote = id.is_some();
        let mut tables = BTreeSet::new();
        scanned_tables(&plan, &mut tables);
        let mut clock = lock(&self.clock);
        if !remote && clock.process != 0 {
            return Err(EngineError::Stopped(
                "views are installed by process 0 of the cluster".into(),
            ));
        }
        let mut history = Vec::new();
        for t in &tables {
            match clock.sources.get(t).cloned() {
                Some(log) => {
                    // Taken here, once for every worker: each replays its share of the units.
                    let upto = log.len();
                    history.push((t.clone(), log.history(upto)));
                }
                None if remote => history.push((t.clone(), Arc::new(NoHistory) as _)),
                None => return Err(EngineError::UnknownDatasource(t.clone())),
            }
        }
        let id = id.unwrap_or_else(|| {
            let id = clock.next_view;
            clock.next_view += 1;
            id
        });
        let floor = match (remote, floor) {
            (true, Some(floor)) => floor.min(clock.open),
            (_, floor) => clock
                .open
                .saturating_sub(clock.history_ms)
                .max(floor.unwrap_or(0))
                .min(clock.open),
        };
        let limit = budget.as_ref().map(|b| b.limit());
        let spec = Arc::new(InstallSpec {
            id,
            plan,
            view,
            as_of: clock.open,
            floor,
            history,
            budget,
            bounded_states: bounded_states && clock.processes == 1,
            single_process: clock.processes == 1,
            dropped: Arc::new(AtomicBool::new(false)),
            failed: Arc::new(AtomicBool::new(false)),
        });
        for tx in &clock.senders {
            tx.send(Command::Install(spec.clone()))
                .map_err(|e| EngineError::Stopped(e.to_string()))?;
        }
        if clock.processes > 1 && !remote {
            let command = control::Control::Install {
                id,
                plan: Box::new(spec.plan.clone()),
                floor,
                budget: limit,
            };
            clock.senders[0]
                .send(Command::Control(command))
                .map_err(|e| EngineError::Stopped(e.to_string()))?;
        }
        clock.views.insert(id, spec.dropped.clone());
        drop(clock);
        self.wake();
        Ok(id)
    }

    /// Stops maintaining a view and frees its dataflow on every worker (of every process,
    /// when process 0 drops it).
    pub fn drop_view(&self, id: ViewId) {
        let mut clock = lock(&self.clock);
        if let Some(dropped) = clock.views.remove(&id) {
            dropped.store(true, Ordering::Relaxed);
            for tx in &clock.senders {
                let _ = tx.send(Command::Drop(id));
            }
            if clock.processes > 1 && clock.process == 0 {
                let _ = clock.senders[0].send(Command::Control(control::Control::Drop(id)));
            }
        }
        drop(clock);
        self.wake();
    }

    /// Stops the workers and waits for them.
    pub fn shutdown(&self) {
        {
            let clock = lock(&self.clock);
            for dropped in clock.views.values() {
                dropped.store(true, Ordering::Relaxed);
            }
            for tx in &clock.senders {
                let _ = tx.send(Command::Shutdown);
            }
        }
        self.wake();
        let single = lock(&self.clock).processes == 1;
        if let Some(guards) = lock(&self.guards).take() {
            if single {
                drop(guards.join());
            } else {
                // Joining would wait for timely's network threads, which run until every
                // other process closes its connections: a process stops on its own, and its
                // peers see it go.
                std::mem::forget(guards);
            }
        }
    }
}

/// Below this many updates per worker a batch enters on one worker: splitting it would cost
/// more in messages than it saves.
const SPLIT_MIN_ROWS: usize = 2_048;

/// Sends updates at `ts`, or at the open tick if the clock has passed `ts`; the caller holds
/// the lock. A large batch is split evenly over the workers, so the operators before the first
/// exchange (projections, filters) run on every core; a small one goes to one worker, round
/// robin. (A `GROUP BY` over the batch in a single process reads all of it on every worker
/// instead, each folding its own keys.) Returns the timestamp used.
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

/// The history of a datasource this process does not know yet: nothing.
struct NoHistory;

impl History for NoHistory {
    fn replay(&self, _: usize, _: usize, _: &mut dyn FnMut(Row, Ts, isize)) -> std::io::Result<()> {
        Ok(())
    }
}

/// Records the first panic of timely's network threads as the engine's failure (the panic
/// still prints as usual): in a cluster a lost peer panics the threads that talk to it, and
/// the server must say so instead of going quiet.
fn record_worker_panics(failure: Arc<Mutex<Option<String>>>) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let name = std::thread::current().name().unwrap_or("").to_string();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        // Only the network's panics: a view's own panic on a worker is caught by its guard.
        if message.contains("timely communication error")
            || name.starts_with("timely:send")
            || name.starts_with("timely:recv")
        {
            let mut f = lock(&failure);
            if f.is_none() {
                *f = Some(format!("the cluster lost a process: {message}"));
            }
        }
        previous(info);
    }));
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}
