//! Maintained results outside the dataflow.
//!
//! The engine's workers publish each view's consolidated changes here, one [`ChangeBatch`]
//! per advance of the view's frontier. This crate folds them into an index that HTTP handlers
//! read concurrently (a pull request never waits on the dataflow), keeps a bounded log of recent
//! batches that subscriptions resume from, and wakes everyone who waits for a timestamp.
//!
//! The index keeps each key's rows in the order its query reads them (a [`RowOrder`]), so a
//! request for `LIMIT n` walks n entries instead of copying and sorting the whole group.

mod groups;
mod order;
mod prefetch;
pub mod slot_table;
mod window;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use order::{add_multiplicity, RowOrder, SortDirection, SortValues, SortedRow};
pub use prefetch::prefetch;

use petrel_value::{Column, Row, Value};
use rustc_hash::FxHashMap;
use tokio::sync::{broadcast, watch};

/// How many change batches a live subscriber may fall behind by default.
pub const CHANGE_RING: usize = 1024;

/// How many batches (ticks) may wait while long copies of a view hold its read lock before
/// the publisher waits for the lock instead.
const MAX_DEFERRED: usize = 64;

/// How many rows a snapshot copies per hold of a view's lock.
const COPY_CHUNK_ROWS: usize = 8_192;

/// How many bytes of change history a view keeps by default for subscribers that resume.
pub const CHANGE_LOG_BYTES: usize = 64 << 20;

/// How much change history a view keeps: subscribers resume from it after a reconnect, and
/// live subscribers read it as they fall behind. Both bounds hold: a view that changes fast
/// keeps less than `ms` of history, so its memory follows its bytes, not its ingest rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Batches older than this (in milliseconds behind the newest) leave the log.
    pub ms: u64,
    /// The most bytes the log's changes may take; the oldest batches leave first.
    pub bytes: usize,
    /// How many batches a live subscriber may fall behind before it must catch up from a
    /// snapshot.
    pub ring: usize,
}

impl Retention {
    /// Keeps `ms` of history, within the default byte bound and ring.
    pub fn for_ms(ms: u64) -> Retention {
        Retention {
            ms,
            bytes: CHANGE_LOG_BYTES,
            ring: CHANGE_RING,
        }
    }
}

/// About how many bytes a batch's changes take: measured on at most 64 of them, spread over
/// the batch, and scaled to its length (rows of one view are alike), so a large batch is not
/// read a second time just to be counted.
fn batch_bytes(changes: &[(Row, i64)]) -> usize {
    let step = (changes.len() / 64).max(1);
    let (counted, bytes) = changes
        .iter()
        .step_by(step)
        .fold((0, 0), |(n, b), (row, _)| (n + 1, b + change_bytes(row)));
    (bytes * changes.len()).checked_div(counted).unwrap_or(0)
}

/// About how many bytes a change takes in memory: the row's values, what its strings and
/// nested values keep on the heap, and the multiplicity.
fn change_bytes(row: &Row) -> usize {
    const CHANGE: usize = std::mem::size_of::<(Row, i64)>();
    CHANGE + row.iter().map(Value::footprint).sum::<usize>()
}

pub use petrel_log::Ts;

/// The consolidated changes of one view for all times in `[lower, upper)`.
#[derive(Clone, Debug)]
pub struct ChangeBatch {
    /// Inclusive lower bound of the changes' times.
    pub lower: Ts,
    /// Exclusive upper bound: the view is complete for every time below it.
    pub upper: Ts,
    /// Rows with their signed multiplicity change, consolidated (no zero, no duplicates).
    pub changes: Vec<(Row, i64)>,
    /// Where each key's changes are, for the key columns it was built with: made by the
    /// first subscriber that asks ([`ChangeBatch::of_key`]) and shared by the others.
    by_key: OnceLock<KeyIndex>,
}

/// The key columns an index was built with, and each key's places among a batch's changes.
type KeyIndex = (Vec<usize>, FxHashMap<Row, Vec<usize>>);

impl PartialEq for ChangeBatch {
    fn eq(&self, other: &Self) -> bool {
        (self.lower, self.upper, &self.changes) == (other.lower, other.upper, &other.changes)
    }
}

/// A batch leaving the change log frees each row's cells through [`petrel_value::clear_row`]:
/// the drop glue's call and jump by kind per cell did nothing for almost all of them.
impl Drop for ChangeBatch {
    fn drop(&mut self) {
        for (row, _) in &mut self.changes {
            petrel_value::clear_row(row);
        }
    }
}

/// Below this many changes a subscriber scans a batch for its key instead of indexing it.
const INDEX_MIN_CHANGES: usize = 64;

impl ChangeBatch {
    /// The changes in `[lower, upper)`.
    pub fn new(lower: Ts, upper: Ts, changes: Vec<(Row, i64)>) -> ChangeBatch {
        ChangeBatch {
            lower,
            upper,
            changes,
            by_key: OnceLock::new(),
        }
    }

    /// The changes of the rows whose `columns` hold `key`. A large batch is indexed by key
    /// once, on the first call, so that each of many subscribers to distinct keys pays for
    /// its own changes, not for a scan of the whole batch.
    pub fn of_key(&self, columns: &[usize], key: &[Value]) -> Vec<&(Row, i64)> {
        match self.index(columns) {
            Some(places) => places
                .get(key)
                .into_iter()
                .flatten()
                .map(|&n| &self.changes[n])
                .collect(),
            None => {
                let selected =
                    |row: &Row| columns.iter().zip(key).all(|(&c, k)| row.get(c) == Some(k));
                self.changes.iter().filter(|(r, _)| selected(r)).collect()
            }
        }
    }

    /// Each key's places among the changes, by `columns`: built on the first call, `None`
    /// for a small batch, no key columns, or columns other than the index was built with.
    fn index(&self, columns: &[usize]) -> Option<&FxHashMap<Row, Vec<usize>>> {
        if columns.is_empty() || self.changes.len() < INDEX_MIN_CHANGES {
            return None;
        }
        let (indexed, places) = self.by_key.get_or_init(|| {
            let mut places: FxHashMap<Row, Vec<usize>> = FxHashMap::default();
            for (n, (row, _)) in self.changes.iter().enumerate() {
                let key: Row = columns
                    .iter()
                    .map(|&c| row.get(c).cloned().unwrap_or(Value::Null))
                    .collect();
                places.entry(key).or_default().push(n);
            }
            (columns.to_vec(), places)
        });
        (indexed.as_slice() == columns).then_some(places)
    }
}

/// Where a view's rows are grouped: the columns that lifted equality parameters read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyColumns(pub Vec<usize>);

impl KeyColumns {
    /// The key of `row`: its values in the key columns.
    pub(crate) fn key_of(&self, row: &Row) -> Row {
        self.0.iter().filter_map(|&i| row.get(i).cloned()).collect()
    }
}

/// A view's rows for one key at one timestamp.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The view holds every change below this time (the result is "as of" `upper - 1`).
    pub upper: Ts,
    /// The rows, each repeated by its multiplicity, in the view's order.
    pub rows: Vec<Row>,
}

/// A window of one key's rows in the view's order: what a pull with OFFSET/LIMIT reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// The view holds every change below this time.
    pub upper: Ts,
    /// The rows of the window, each repeated by its multiplicity.
    pub rows: Vec<Row>,
    /// How many rows the key holds in all (before OFFSET and LIMIT).
    pub total: usize,
}

/// A maintained result: index by key, recent change log, and notifications.
pub struct View {
    columns: Vec<Column>,
    keys: KeyColumns,
    /// The columns that tell the view's rows apart.
    identity: Identity,
    order: RowOrder,
    retention: Retention,
    state: RwLock<State>,
    /// How many of each key's first rows are kept in the view's order ([`groups::Group`]):
    /// at least [`groups::ORDERED_ROWS_MIN`], raised by reads that walk further.
    ordered_rows: AtomicUsize,
    /// How many long copies (a whole view or a whole key) hold the read lock now. While any
    /// does, the engine's batches wait in `deferred` instead of blocking the worker that
    /// publishes them (and every other view it serves) until the copy ends.
    copies: AtomicUsize,
    /// Set when the view failed because its dataflow lost track of its result: the server
    /// installs it again from its history.
    rebuild: AtomicBool,
    /// Batches published during a long copy, applied in order before the publisher's next
    /// batch once no copy holds the lock.
    deferred: Mutex<Vec<ChangeBatch>>,
    /// The windows of this view that subscriptions with a LIMIT read ([`View::window`]),
    /// kept up to date with each batch this view folds.
    windows: Mutex<Vec<window::Window>>,
    /// For a window: the view it is a window of, and its bounds (a subscriber resuming from
    /// before the window existed catches up from that view's log).
    source: Option<(Arc<View>, window::Bounds)>,
    upper_tx: watch::Sender<Ts>,
    changes_tx: broadcast::Sender<Arc<ChangeBatch>>,
}

/// Rows with their multiplicities: a view's state, as snapshots store it.
pub type CountedRows = Vec<(Row, i64)>;

use groups::{Group, Groups, Identity};

#[derive(Default)]
struct State {
    upper: Ts,
    groups: Groups,
    /// True once the engine published its first batch.
    started: bool,
    /// While a view restored from a snapshot catches up: the engine's batches fold here,
    /// and readers keep the snapshot, until the engine's frontier passes the snapshot's.
    catching_up: Option<(Groups, Ts)>,
    /// Recent batches, each with about how many bytes its changes take.
    log: VecDeque<(Arc<ChangeBatch>, usize)>,
    /// The bytes of the batches in `log`.
    log_bytes: usize,
    /// Changes below this time may have left the log.
    trimmed_upto: Ts,
    /// Frontiers strictly between these two that no subscriber may resume from: a previous
    /// run of the server may have sent changes there that its crash erased.
    unresumable: Option<(Ts, Ts)>,
    failed: Option<String>,
}

impl State {
    /// True when a crash of the previous run may have erased changes a subscriber holding
    /// `since` was sent ([`View::refuse_resume_between`]).
    fn erases(&self, since: Ts) -> bool {
        self.unresumable
            .is_some_and(|(durable, restarted)| since > durable && since < restarted)
    }
}

/// The outcome of asking for the changes after a timestamp.
#[derive(Debug)]
pub enum Resume {
    /// The log still covers the time: these batches follow it, in order.
    Changes(Vec<Arc<ChangeBatch>>),
    /// The time is older than the retained log: the caller needs a fresh snapshot.
    TooOld,
}

impl View {
    /// Creates an empty view with the given output columns, grouped by `keys`, keeping
    /// up to `retention_ms` of change history for resuming subscribers. Rows are kept in
    /// their natural order; see [`View::ordered`].
    pub fn new(columns: Vec<Column>, keys: KeyColumns, retention_ms: u64) -> Arc<View> {
        View::ordered(
            columns,
            keys,
            RowOrder::natural(),
            Retention::for_ms(retention_ms),
        )
    }

    /// As [`View::new`], keeping each key's rows in `order` (the query's ORDER BY), so reads
    /// of the first rows cost what they return, and keeping `retention` of change history.
    pub fn ordered(
        columns: Vec<Column>,
        keys: KeyColumns,
        order: RowOrder,
        retention: Retention,
    ) -> Arc<View> {
        View::identified(columns, (keys, None), order, retention)
    }

    /// As [`View::ordered`], for a query whose rows the `identity` columns tell apart (a
    /// `GROUP BY`'s keys, see `Plan::identity`): a group's row that changes is then folded
    /// with one probe instead of two.
    pub fn identified(
        columns: Vec<Column>,
        (keys, identity): (KeyColumns, Option<Vec<usize>>),
        order: RowOrder,
        retention: Retention,
    ) -> Arc<View> {
        let identity = Identity::new(identity, columns.len());
        View::with_source(columns, (keys, identity), order, retention, None)
    }

    fn with_source(
        columns: Vec<Column>,
        (keys, identity): (KeyColumns, Identity),
        order: RowOrder,
        retention: Retention,
        source: Option<(Arc<View>, window::Bounds)>,
    ) -> Arc<View> {
        let (upper_tx, _) = watch::channel(0);
        let (changes_tx, _) = broadcast::channel(retention.ring.max(1));
        Arc::new(View {
            columns,
            keys,
            identity,
            order,
            retention,
            state: RwLock::new(State::default()),
            ordered_rows: AtomicUsize::new(groups::ORDERED_ROWS_MIN),
            copies: AtomicUsize::new(0),
            rebuild: AtomicBool::new(false),
            deferred: Mutex::new(Vec::new()),
            windows: Mutex::new(Vec::new()),
            source,
            upper_tx,
            changes_tx,
        })
    }

    /// The view's output columns (including key columns).
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The columns the view is grouped by.
    pub fn keys(&self) -> &KeyColumns {
        &self.keys
    }

    /// Consolidates changes (sums the multiplicities of equal rows, drops zeros), leaving a
    /// group's old row next to its new one, so that [`View::apply`] folds the pair with one
    /// probe (it puts each key's changes together itself).
    pub fn consolidate(&self, changes: &mut Vec<(Row, i64)>) {
        groups::consolidate(&self.keys, &self.identity, changes);
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the state for a copy whose cost grows with the view (every row, or a chunk of
    /// them): batches published meanwhile are deferred, not blocked on the lock. The copy
    /// runs on a background thread that the scheduler may pause while it holds the lock, so
    /// the engine's worker never waits for it: it applies the deferred batches itself with
    /// its next batch, one tick later at most.
    fn copy<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.copies.fetch_add(1, Ordering::SeqCst);
        let state = self.read();
        let out = f(&state);
        // Counted out before the lock is released: a publisher that gets the lock next sees
        // no copy and applies its batch instead of leaving it for a later one.
        self.copies.fetch_sub(1, Ordering::SeqCst);
        drop(state);
        out
    }

    /// Between two chunks of a copy: waits (a few ticks at most) until the publisher has
    /// applied the batches it deferred during the last chunk, which it does with its next
    /// batch. Back-to-back chunks would otherwise keep deferring them to the copy's end.
    fn let_publisher_in(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(50);
        while !self
            .deferred
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Applies one batch of changes published by the engine. Batches arrive in time order;
    /// an empty batch only advances the frontier. During a long copy of the view the batch
    /// is deferred, and applied (in order) with the first batch published after the copy.
    pub fn apply(&self, batch: ChangeBatch) {
        if self.copies.load(Ordering::SeqCst) > 0 {
            let mut deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
            if deferred.len() >= MAX_DEFERRED {
                // Copies that overlap without end must not starve the view: wait for the lock
                // (which lets a waiting writer in before new readers).
                drop(deferred);
                self.apply_deferred(Some(batch));
                return;
            }
            deferred.push(batch);
            drop(deferred);
            // The copy may have ended after the check and before the push: then nobody else
            // will apply the batch.
            if self.copies.load(Ordering::SeqCst) == 0 {
                self.apply_deferred(None);
            }
            return;
        }
        self.apply_deferred(Some(batch));
    }

    /// Applies the deferred batches, then `batch`, under one write lock, and announces the
    /// new frontier. The batches that left the change log are freed after the announcement,
    /// by a thread of the helper pool: neither a writer waiting for its rows to be visible
    /// nor the publisher's next batch waits for that.
    fn apply_deferred(&self, batch: Option<ChangeBatch>) {
        let mut trimmed = Vec::new();
        let published_upper = {
            let mut state = self.write();
            let deferred =
                std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|e| e.into_inner()));
            if deferred.is_empty() && batch.is_none() {
                return;
            }
            for b in deferred.into_iter().chain(batch) {
                self.apply_locked(&mut state, b, &mut trimmed);
            }
            state.upper
        };
        self.upper_tx.send_if_modified(|u| {
            let advanced = published_upper > *u;
            *u = (*u).max(published_upper);
            advanced
        });
        if !trimmed.is_empty() {
            rayon::spawn(move || drop(trimmed));
        }
    }

    /// Folds one batch into the state and its change log, and sends it to subscribers. The
    /// batches the log no longer keeps go to `trimmed`.
    fn apply_locked(
        &self,
        state: &mut State,
        batch: ChangeBatch,
        trimmed: &mut Vec<Arc<ChangeBatch>>,
    ) {
        let upper = batch.upper;
        if !state.started {
            // The first batch is the view's starting state: the changes below its upper
            // are not known one by one, so no subscriber can resume from before it.
            state.started = true;
            state.trimmed_upto = state.trimmed_upto.max(upper);
        }
        // Windows exist only once the view has caught up ([`View::window`]), so they follow
        // the groups readers see.
        let windows = match state.catching_up {
            None => window::live(&mut self.windows.lock().unwrap_or_else(|e| e.into_inner())),
            Some(_) => Vec::new(),
        };
        let bounds: Vec<window::Bounds> = windows.iter().map(|(b, _)| *b).collect();
        let deltas = (!windows.is_empty() && !batch.changes.is_empty())
            .then(|| window::Deltas::before(&self.keys, &state.groups, &batch.changes, &bounds));
        let groups = match &mut state.catching_up {
            Some((groups, _)) => groups,
            None => &mut state.groups,
        };
        // A window keeps no rows: its source holds them.
        if self.source.is_none() {
            let ordered = self.ordered_rows.load(Ordering::Relaxed);
            let by = (&self.keys, &self.identity);
            groups.fold(by, &self.order, &batch.changes, ordered);
        }
        match state.catching_up.take() {
            Some((groups, restored)) if upper > restored => {
                state.groups = groups;
                state.upper = upper;
            }
            Some(still) => state.catching_up = Some(still),
            None => state.upper = state.upper.max(upper),
        }
        let mut window_changes = match deltas {
            Some(d) => d.after(&state.groups, &batch.changes, &bounds),
            None => vec![Vec::new(); windows.len()],
        };
        for ((_, view), changes) in windows.iter().zip(&mut window_changes) {
            view.consolidate(changes);
            view.apply(ChangeBatch::new(
                batch.lower,
                upper,
                std::mem::take(changes),
            ));
        }
        // The log keeps the batch in the order it came, not the fold's: its rows were made in
        // that order, so they lie in memory in it and are freed in it when the log lets them
        // go. Putting each key's changes in one run moved every change on the publishing
        // worker, and the batch's rows, freed in another order, were then scattered.
        let batch = Arc::new(batch);
        if !batch.changes.is_empty() {
            let bytes = batch_bytes(&batch.changes);
            state.log.push_back((batch.clone(), bytes));
            state.log_bytes += bytes;
            let horizon = upper.saturating_sub(self.retention.ms);
            while state.log.len() > 1
                && state.log.front().is_some_and(|(b, _)| {
                    b.upper < horizon || state.log_bytes > self.retention.bytes
                })
            {
                if let Some((old, bytes)) = state.log.pop_front() {
                    state.trimmed_upto = old.upper;
                    state.log_bytes -= bytes;
                    trimmed.push(old);
                }
            }
            // Sent under the lock so that a subscriber that snapshots under the read lock
            // receives exactly the batches after its snapshot.
            let _ = self.changes_tx.send(batch);
        }
    }

    /// Starts a view from a snapshot of its rows at `upper` (written by an earlier run):
    /// readers see it at once, while the engine's batches fold aside until its frontier
    /// passes `upper`; then the view is the engine's, and carries on from there. Subscribers
    /// resume from `upper` on (the changes before it are not known one by one).
    pub fn restore(&self, mut rows: CountedRows, upper: Ts) {
        self.consolidate(&mut rows);
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            if state.started || state.upper > 0 {
                return;
            }
            let ordered = self.ordered_rows.load(Ordering::Relaxed);
            let by = (&self.keys, &self.identity);
            state.groups.fold(by, &self.order, &rows, ordered);
            state.upper = upper;
            state.trimmed_upto = upper;
            state.catching_up = Some((Groups::default(), upper));
        }
        self.upper_tx.send_if_modified(|u| {
            let advanced = upper > *u;
            *u = (*u).max(upper);
            advanced
        });
    }

    /// Every row with its multiplicity and the frontier they are at: what a snapshot of the
    /// view stores. A large view is copied a chunk at a time ([`View::counted_rows_in_chunks`]),
    /// so neither the engine nor this view's subscribers wait for the whole copy.
    pub fn counted_rows(&self) -> (CountedRows, Ts) {
        self.counted_rows_in_chunks(COPY_CHUNK_ROWS, &mut || {})
    }

    /// [`View::counted_rows`], reading at most `chunk` rows per hold of the lock (calling
    /// `between` after each, where tests publish batches). Each chunk is a range of one key's
    /// rows in the view's order, copied at the frontier of that moment; the batches published
    /// since (still in the change log) are then applied to the chunks they fall in, so the
    /// result is the view at one frontier. If the log no longer reaches back to the first
    /// chunk, or the view is still catching up, the view is copied at once instead.
    fn counted_rows_in_chunks(&self, chunk: usize, between: &mut dyn FnMut()) -> (CountedRows, Ts) {
        let whole = || {
            self.copy(|state| {
                let rows = state
                    .groups
                    .iter()
                    .flat_map(|(_, g)| g.entries().map(|(r, n)| (r.row().to_vec(), n)))
                    .collect();
                (rows, state.upper)
            })
        };
        let (keys, started) = {
            let state = self.read();
            if state.catching_up.is_some() {
                drop(state);
                return whole();
            }
            let keys: Vec<Row> = state.groups.iter().map(|(k, _)| k.clone()).collect();
            (keys, state.upper)
        };
        // Each key's chunks: (the last entry copied, the frontier at the copy, the rows).
        let mut copied: HashMap<Row, Vec<(Option<SortedRow>, Ts, CountedRows)>> = HashMap::new();
        for key in keys {
            let mut chunks = Vec::new();
            let mut after: Option<SortedRow> = None;
            loop {
                let (rows, last, upper, done) = self.copy(|state| {
                    let mut rows = Vec::new();
                    let mut last = None;
                    // Rows past the ordered ones are found by a pass over all of them:
                    // a few large chunks there, not many small ones.
                    let mut take = chunk;
                    if let Some(group) = state.groups.get(&key) {
                        take = take.max(group.unordered() / 8);
                        for (entry, n) in group.after(after.as_ref(), take) {
                            rows.push((entry.row().to_vec(), n));
                            last = Some(entry);
                        }
                    }
                    let done = rows.len() < take;
                    (rows, last.cloned(), state.upper, done)
                });
                // The last chunk reaches to the end of the order.
                chunks.push((if done { None } else { last.clone() }, upper, rows));
                between();
                self.let_publisher_in();
                if done {
                    break;
                }
                after = last;
            }
            copied.insert(key, chunks);
        }
        let (batches, upper) = {
            let state = self.read();
            let oldest = copied
                .values()
                .flat_map(|c| c.iter().map(|(_, u, _)| *u))
                .min()
                .unwrap_or(started)
                .min(started);
            if state.trimmed_upto > oldest {
                drop(state);
                return whole();
            }
            let batches: Vec<Arc<ChangeBatch>> = state
                .log
                .iter()
                .filter(|(b, _)| b.upper > oldest)
                .map(|(b, _)| b.clone())
                .collect();
            (batches, state.upper)
        };
        // Changes made after a chunk was copied, by key and chunk; keys that appeared
        // after the copy began have none, and take every change after its start.
        let mut late: HashMap<(Row, usize), Vec<(Row, i64)>> = HashMap::new();
        for batch in &batches {
            for (row, diff) in &batch.changes {
                let key = self.keys.key_of(row);
                let (place, copied_at) = match copied.get(&key) {
                    Some(chunks) => {
                        let entry = self.order.entry(row);
                        // The chunks' last entries ascend, and the last chunk has none.
                        let place = chunks
                            .partition_point(|(last, _, _)| {
                                last.as_ref().is_some_and(|l| *l < entry)
                            })
                            .min(chunks.len() - 1);
                        (place, chunks[place].1)
                    }
                    None => (0, started),
                };
                if batch.upper > copied_at {
                    late.entry((key, place))
                        .or_default()
                        .push((row.clone(), *diff));
                }
            }
        }
        let mut out = CountedRows::new();
        for (key, chunks) in copied {
            for (place, (_, _, mut rows)) in chunks.into_iter().enumerate() {
                if let Some(changes) = late.remove(&(key.clone(), place)) {
                    rows.extend(changes);
                    consolidate_counted(&mut rows);
                }
                out.extend(rows);
            }
        }
        for (_, mut changes) in late {
            consolidate_counted(&mut changes);
            out.extend(changes);
        }
        (out, upper)
    }

    /// The view of this view's rows `offset .. offset + limit` for every key, in its order:
    /// what a subscription with a LIMIT reads. It keeps no rows: reads of it read this view's
    /// rows in the window, and as this view folds each batch it publishes to the window (its
    /// change log, its subscribers) what the batch changed there, so a window needs no
    /// dataflow and no copy of its own. Subscriptions with the same bounds share one window;
    /// it lives as long as someone holds it. `None` while the view catches up from a restored
    /// snapshot, and once it has failed.
    pub fn window(self: &Arc<Self>, offset: usize, limit: Option<usize>) -> Option<Arc<View>> {
        // Read, not write: the publisher needs the write lock, so no batch is folded while
        // the window is made, and readers are not held up.
        let state = self.read();
        if state.failed.is_some() || state.catching_up.is_some() {
            return None;
        }
        let bounds = window::Bounds::new(offset, limit);
        if let Some(limit) = limit {
            self.keep_ordered(offset.saturating_add(limit));
        }
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, view)) = window::live(&mut windows)
            .into_iter()
            .find(|(b, _)| *b == bounds)
        {
            return Some(view);
        }
        let view = View::with_source(
            self.columns.clone(),
            (self.keys.clone(), self.identity.clone()),
            self.order.detached(),
            self.retention,
            Some((self.clone(), bounds)),
        );
        // Frontiers a crash may have erased are unresumable in the window too.
        view.write().unresumable = state.unresumable;
        view.apply(ChangeBatch::new(0, state.upper, Vec::new()));
        windows.push(window::Window {
            bounds,
            view: Arc::downgrade(&view),
        });
        Some(view)
    }

    /// True when a window with these bounds exists: asking for it again shares it.
    pub fn has_window(&self, offset: usize, limit: Option<usize>) -> bool {
        let bounds = window::Bounds::new(offset, limit);
        window::live(&mut self.windows.lock().unwrap_or_else(|e| e.into_inner()))
            .iter()
            .any(|(b, _)| *b == bounds)
    }

    /// How many windows of this view someone holds.
    pub fn window_count(&self) -> usize {
        window::live(&mut self.windows.lock().unwrap_or_else(|e| e.into_inner())).len()
    }

    /// True while a view restored from a snapshot has not caught up yet.
    pub fn is_catching_up(&self) -> bool {
        self.read().catching_up.is_some()
    }

    /// Marks the view as failed: reads return the error from now on, here and in its
    /// windows.
    pub fn fail(&self, error: String) {
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            state.failed = Some(error.clone());
        }
        let windows = window::live(&mut self.windows.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, view) in windows {
            view.fail(error.clone());
        }
        // Whoever waits for a timestamp wakes up and finds the failure.
        self.upper_tx.send_modify(|_| {});
    }

    /// Fails the view because its dataflow lost track of its result (deletes removed what a
    /// bounded aggregate state kept): readers and subscribers get the error, and the server
    /// installs the view again from its history ([`View::needs_rebuild`]).
    pub fn fail_to_rebuild(&self, reason: String) {
        self.rebuild.store(true, Ordering::SeqCst);
        self.fail(format!(
            "{reason}; the view is being rebuilt from its history: read or subscribe again"
        ));
    }

    /// True when the view failed with [`View::fail_to_rebuild`].
    pub fn needs_rebuild(&self) -> bool {
        self.rebuild.load(Ordering::SeqCst)
    }

    /// The error that stopped the view, if any.
    pub fn failure(&self) -> Option<String> {
        self.read().failed.clone()
    }

    /// The rows for one key value (one value per key column; empty for an unkeyed view).
    pub fn snapshot(&self, key: &[Value]) -> Snapshot {
        self.read_rows(key, |upper, rows| Snapshot { upper, rows })
    }

    /// Reads one key's rows (a window's from the view it is a window of, which holds them)
    /// with `f`, given the frontier they are at.
    fn read_rows<R>(&self, key: &[Value], f: impl FnOnce(Ts, Vec<Row>) -> R) -> R {
        match &self.source {
            Some((source, bounds)) => source.read_group(key, |state| {
                f(
                    state.upper,
                    expand(window::rows_in(state.groups.get(key), *bounds)),
                )
            }),
            None => self.read_group(key, |state| f(state.upper, rows_of(state.groups.get(key)))),
        }
    }

    /// Reads one key's rows with `f`: a key holding many rows is read as a long copy
    /// ([`View::copy`]), so the engine's worker does not wait for it.
    fn read_group<R>(&self, key: &[Value], f: impl FnOnce(&State) -> R) -> R {
        let large = self
            .read()
            .groups
            .get(key)
            .is_some_and(|g| g.len() > COPY_CHUNK_ROWS);
        if large {
            self.copy(f)
        } else {
            f(&self.read())
        }
    }

    /// The rows `offset..offset + limit` of one key in the view's order, and the key's row
    /// count: the cost is the window's size (plus a walk past `offset`), not the group's.
    pub fn page(&self, key: &[Value], offset: usize, limit: Option<usize>) -> Page {
        if let Some((source, bounds)) = &self.source {
            let state = source.read();
            let rows = expand(window::rows_in(state.groups.get(key), *bounds));
            return Page {
                upper: state.upper,
                total: rows.len(),
                rows: rows
                    .into_iter()
                    .skip(offset)
                    .take(limit.unwrap_or(usize::MAX))
                    .collect(),
            };
        }
        if let Some(limit) = limit {
            self.keep_ordered(offset.saturating_add(limit));
        }
        let state = self.read();
        let group = state.groups.get(key);
        Page {
            upper: state.upper,
            rows: expand(window::rows_in(group, window::Bounds::new(offset, limit))),
            total: group.map_or(0, |g| g.total.max(0) as usize),
        }
    }

    /// Keeps at least each key's first `rows` rows in order from the next batch on, for reads
    /// of that many rows: they walk the ordered index instead of sorting the rows past it.
    /// (A read of all of a key's rows is not asked for: it costs a sort of what it returns,
    /// and keeping every row in order would cost each change a search of the ordered index.)
    fn keep_ordered(&self, rows: usize) {
        self.ordered_rows.fetch_max(rows, Ordering::Relaxed);
    }

    /// Keeps exactly each key's first `rows` rows in order (until a read asks for more):
    /// tests make most of a small view's rows unordered with it.
    #[cfg(test)]
    fn keep_ordered_exactly(&self, rows: usize) {
        self.ordered_rows.store(rows, Ordering::Relaxed);
    }

    /// A consistent snapshot of one key plus a receiver for every batch published after it.
    pub fn subscribe(&self, key: &[Value]) -> (Snapshot, broadcast::Receiver<Arc<ChangeBatch>>) {
        // A window's batches are published under its source's lock, which `read_rows` holds.
        self.read_rows(key, |upper, rows| {
            (Snapshot { upper, rows }, self.changes_tx.subscribe())
        })
    }

    /// For a client that holds every change below `since` (a frontier it was sent): the
    /// retained batches after it, and a receiver for the ones published later; `TooOld` when
    /// the log no longer reaches back to `since`.
    ///
    /// `key` is the key the subscriber reads: a window ([`View::window`]) made after `since`
    /// gives that key's changes since then, batch by batch, worked out from its view's log.
    pub fn resume(
        &self,
        since: Ts,
        key: &[Value],
    ) -> (Resume, Ts, broadcast::Receiver<Arc<ChangeBatch>>) {
        if let Some((source, bounds)) = &self.source {
            // The source's lock first, as its publisher takes them: while it is held, no
            // batch reaches this window. Held as a long copy (it reads the source's log),
            // so the publisher sets its batches aside meanwhile instead of waiting.
            let caught_up = source.copy(|base| {
                let state = self.read();
                let from_source = since < state.trimmed_upto
                    && since >= base.trimmed_upto
                    && since <= base.upper
                    && !base.erases(since)
                    && base.catching_up.is_none();
                from_source.then(|| {
                    let log: Vec<&ChangeBatch> = base.log.iter().map(|(b, _)| &**b).collect();
                    let batches = window::catch_up(
                        (&self.keys, &self.identity, &self.order),
                        base.groups.get(key),
                        &log,
                        (key, since),
                        *bounds,
                    );
                    let rx = self.changes_tx.subscribe();
                    let batches = batches.into_iter().map(Arc::new).collect();
                    (Resume::Changes(batches), base.upper, rx)
                })
            });
            if let Some(resumed) = caught_up {
                return resumed;
            }
        }
        let state = self.read();
        let rx = self.changes_tx.subscribe();
        let resume = if state.erases(since) || since < state.trimmed_upto || since > state.upper {
            Resume::TooOld
        } else {
            Resume::Changes(
                state
                    .log
                    .iter()
                    .filter(|(b, _)| b.upper > since)
                    .map(|(b, _)| b.clone())
                    .collect(),
            )
        };
        (resume, state.upper, rx)
    }

    /// Refuses resuming from frontiers strictly between `durable` and `restarted` (they get a
    /// fresh snapshot instead): after a crash, every batch below `durable` survived, but a
    /// subscriber that was sent a later frontier by the crashed run may hold changes of
    /// batches that were lost, and only a snapshot takes them back.
    pub fn refuse_resume_between(&self, durable: Ts, restarted: Ts) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.unresumable = Some((durable, restarted));
    }

    /// The frontier: every change at a time below it has been applied.
    pub fn upper(&self) -> Ts {
        *self.upper_tx.borrow()
    }

    /// A receiver that changes whenever the frontier advances.
    pub fn watch_upper(&self) -> watch::Receiver<Ts> {
        self.upper_tx.subscribe()
    }

    /// Waits until the view holds every change at or before `ts`.
    /// Returns early if the view fails.
    pub async fn wait_for(&self, ts: Ts) {
        let mut rx = self.upper_tx.subscribe();
        let _ = rx
            .wait_for(|u| *u > ts || self.read().failed.is_some())
            .await;
    }

    /// Number of distinct rows held, for metrics.
    pub fn distinct_rows(&self) -> usize {
        self.read().groups.iter().map(|(_, g)| g.len()).sum()
    }
}

/// Sums the multiplicities of equal rows and drops the rows that reach zero.
fn consolidate_counted(rows: &mut CountedRows) {
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    *rows = groups::merge_adjacent(std::mem::take(rows).into_iter());
}

/// Rows with multiplicities, each repeated that many times.
fn expand(counted: Vec<(Row, i64)>) -> Vec<Row> {
    counted
        .into_iter()
        .flat_map(|(row, n)| std::iter::repeat_n(row, n.max(0) as usize))
        .collect()
}

fn rows_of(group: Option<&Group>) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Some(group) = group {
        for (entry, count) in group.ordered() {
            rows.extend(
                std::iter::repeat_n(entry.row(), count.max(0) as usize).map(<[Value]>::to_vec),
            );
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_value::ColumnType;
    use std::collections::BTreeMap;

    fn view() -> Arc<View> {
        View::new(
            vec![
                Column {
                    name: "k".into(),
                    ty: ColumnType::String,
                },
                Column {
                    name: "n".into(),
                    ty: ColumnType::Int(64),
                },
            ],
            KeyColumns(vec![0]),
            1_000,
        )
    }

    fn row(k: &str, n: i64) -> Row {
        vec![Value::str(k), Value::Int(n)]
    }

    /// Consolidating sums equal rows, drops the ones that cancel, and leaves one run per
    /// key; folding the result gives what folding the raw changes one by one gives. Both
    /// sizes: a small batch (done on the calling thread) and a large one (on every core).
    #[test]
    fn consolidation_groups_changes_by_key_and_cancels() {
        let mut next = crate::order::xorshift(0x1234_5678_9abc_def1u64);
        for size in [500, 20_000] {
            let v = view();
            let mut raw = Vec::new();
            for _ in 0..size {
                let k = format!("k{}", next() % 97);
                let diff = if next().is_multiple_of(3) { -1 } else { 1 };
                raw.push((row(&k, (next() % 6) as i64), diff));
            }
            let mut expected: BTreeMap<Row, i64> = BTreeMap::new();
            for (r, d) in &raw {
                *expected.entry(r.clone()).or_default() += d;
            }
            expected.retain(|_, d| *d != 0);
            let mut changes = raw.clone();
            v.consolidate(&mut changes);
            let got: BTreeMap<Row, i64> = changes.iter().cloned().collect();
            assert_eq!(got.len(), changes.len(), "each row once");
            assert_eq!(got, expected);
            let runs = 1 + changes
                .windows(2)
                .filter(|w| w[0].0[0] != w[1].0[0])
                .count();
            let keys: std::collections::BTreeSet<&Value> =
                changes.iter().map(|(r, _)| &r[0]).collect();
            assert_eq!(runs, keys.len(), "one run per key");

            let one_by_one = view();
            for (r, d) in raw {
                one_by_one.apply(ChangeBatch::new(0, 1, vec![(r, d)]));
            }
            v.apply(ChangeBatch::new(0, 1, changes));
            for k in 0..100 {
                let key = [Value::str(&format!("k{k}"))];
                assert_eq!(
                    v.snapshot(&key).rows,
                    one_by_one.snapshot(&key).rows,
                    "key {k}"
                );
            }
            assert_eq!(v.distinct_rows(), one_by_one.distinct_rows());
        }
    }

    /// A whole-view copy (a snapshot being written) does not hold up the engine's batches:
    /// they wait aside, are applied in order when the copy ends, and subscribers receive each
    /// once; copies that never end let at most `MAX_DEFERRED` batches wait, then the
    /// publisher waits for the lock.
    #[test]
    fn batches_published_during_a_long_copy_wait_aside_in_order() {
        let v = view();
        let (_, mut rx) = v.subscribe(&[Value::str("a")]);
        let batch = |t: u64| {
            ChangeBatch::new(
                t - 1,
                t,
                vec![(row("a", t as i64), 1), (row("a", t as i64 - 1), -1)],
            )
        };
        v.apply(ChangeBatch::new(0, 1, vec![(row("a", 1), 1)]));
        // On the copying thread itself: the old code would deadlock here.
        let copied = v.copy(|state| {
            v.apply(batch(2));
            v.apply(batch(3));
            state.upper
        });
        assert_eq!(
            copied, 1,
            "the copy sees the view as it was when it started"
        );
        assert_eq!(
            v.upper(),
            1,
            "the copier leaves deferred batches to the publisher"
        );
        // The publisher's next batch (at least a frontier advance every tick) applies them.
        v.apply(batch(4));
        assert_eq!(
            v.upper(),
            4,
            "deferred batches are applied before the next one"
        );
        assert_eq!(v.snapshot(&[Value::str("a")]).rows, vec![row("a", 4)]);
        let uppers: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok().map(|b| b.upper)).collect();
        assert_eq!(uppers, vec![1, 2, 3, 4]);

        // A copy that lasts: the publisher (another thread) defers up to the bound, then
        // waits; everything lands in order once the copy ends.
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let copying = v.clone();
            let copier = scope.spawn(move || {
                copying.copy(|_| {
                    started_tx.send(()).unwrap();
                    end_rx.recv().unwrap();
                })
            });
            started_rx.recv().unwrap();
            let publisher = scope.spawn(|| {
                for t in 5..5 + MAX_DEFERRED as u64 + 2 {
                    v.apply(batch(t));
                }
            });
            while v.deferred.lock().unwrap().len() < MAX_DEFERRED {
                std::thread::yield_now();
            }
            assert_eq!(
                v.upper(),
                4,
                "nothing is applied while the copy holds the view"
            );
            end_tx.send(()).unwrap();
            copier.join().unwrap();
            publisher.join().unwrap();
        });
        let last = 5 + MAX_DEFERRED as i64 + 1;
        assert_eq!(v.upper(), last as u64);
        assert_eq!(v.snapshot(&[Value::str("a")]).rows, vec![row("a", last)]);
        let uppers: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok().map(|b| b.upper)).collect();
        assert_eq!(uppers, (5..=last as u64).collect::<Vec<_>>());
    }

    /// A snapshot copied a few rows at a time, with batches published between the chunks
    /// (inserts, retractions, keys appearing and vanishing), equals the view at the frontier
    /// it reports: the same rows as a view fed the same batches up to that frontier.
    #[test]
    fn a_chunked_copy_is_the_view_at_one_frontier() {
        let mut random = crate::order::xorshift(0x2545_f491_4f6c_dd1d);
        let mut next = move |n: u64| random() % n;
        for round in 0..20 {
            let v = view();
            let mut held: HashMap<Row, i64> = HashMap::new();
            let mut batches: Vec<ChangeBatch> = Vec::new();
            let mut publish =
                |v: &View, held: &mut HashMap<Row, i64>, next: &mut dyn FnMut(u64) -> u64| {
                    let t = batches.len() as u64 + 1;
                    let mut changes = Vec::new();
                    for _ in 0..1 + next(6) {
                        let existing: Vec<Row> = held.keys().cloned().collect();
                        if !existing.is_empty() && next(3) == 0 {
                            let r = existing[next(existing.len() as u64) as usize].clone();
                            changes.push((r, -1));
                        } else {
                            let k = ["a", "b", "c", "d", "e", "f"][next(6) as usize];
                            changes.push((row(k, next(40) as i64), 1 + next(2) as i64));
                        }
                    }
                    consolidate_counted(&mut changes);
                    for (r, n) in &changes {
                        let m = held.entry(r.clone()).or_default();
                        *m += n;
                        if *m == 0 {
                            held.remove(r);
                        }
                    }
                    let batch = ChangeBatch::new(t - 1, t, changes);
                    batches.push(batch.clone());
                    v.apply(batch);
                };
            for _ in 0..10 {
                publish(&v, &mut held, &mut next);
            }
            let chunk = 1 + round % 4;
            let (mut rows, upper) =
                v.counted_rows_in_chunks(chunk, &mut || publish(&v, &mut held, &mut next));
            let reference = view();
            for b in batches.iter().filter(|b| b.upper <= upper) {
                reference.apply(b.clone());
            }
            let (mut expected, expected_upper) =
                reference.counted_rows_in_chunks(usize::MAX, &mut || {});
            assert_eq!(upper, expected_upper);
            consolidate_counted(&mut rows);
            consolidate_counted(&mut expected);
            assert_eq!(rows, expected, "round {round}, chunks of {chunk}");
            assert!(upper > 10, "batches landed during the copy");
        }
    }

    /// Rows by their number's quarter, largest first: an order computed from the row, with
    /// ties (four numbers share a quarter) settled by the whole row.
    fn quarters_descending() -> RowOrder {
        RowOrder::by(
            vec![SortDirection {
                desc: true,
                nulls_first: false,
            }],
            Arc::new(|r: &Row| vec![Value::Int(r[1].as_i64().unwrap_or(0) / 4)]),
        )
    }

    /// True when one of `keys` keeps some of its rows out of order.
    fn keeps_rows_unordered(view: &View, keys: &[&str]) -> bool {
        let state = view.read();
        keys.iter().any(|k| {
            state
                .groups
                .get(&[Value::str(k)])
                .is_some_and(|g| g.unordered() > 0)
        })
    }

    /// `count` random changes to `held` (rows `row(key, 0..values)` over `keys`): inserts of
    /// one or two copies, and retractions of some of a held row's copies.
    fn random_changes(
        next: &mut impl FnMut() -> u64,
        held: &mut BTreeMap<Row, i64>,
        keys: &[&str],
        count: u64,
        values: u64,
    ) -> Vec<(Row, i64)> {
        let mut changes = Vec::new();
        for _ in 0..count {
            let key = keys[(next() % keys.len() as u64) as usize];
            let candidate = row(key, (next() % values) as i64);
            let held_now = held.get(&candidate).copied().unwrap_or(0);
            let diff = if held_now > 0 && next().is_multiple_of(3) {
                -((next() % held_now as u64) as i64 + 1)
            } else {
                (next() % 2) as i64 + 1
            };
            *held.entry(candidate.clone()).or_default() += diff;
            changes.push((candidate, diff));
        }
        held.retain(|_, n| *n != 0);
        changes
    }

    /// A window's offset and limit.
    type Bounds = (usize, Option<usize>);

    /// A window, a receiver of its batches, and the rows they add up to.
    type Mirrored = (
        Bounds,
        Arc<View>,
        broadcast::Receiver<Arc<ChangeBatch>>,
        BTreeMap<Row, i64>,
    );

    /// Windows (what subscriptions with a LIMIT read) equal the pages of the whole view after
    /// every batch: random inserts and deletes over a few keys, rows held more than once, ties
    /// in the sort value, windows made at different times, with and without an offset or a
    /// limit. Each batch a window publishes is consolidated and moves it to the view's frontier.
    #[test]
    fn windows_equal_the_pages_of_the_view_after_every_batch() {
        let mut next = crate::order::xorshift(0x5eed_0f01_2345_6789_u64);
        let order = quarters_descending();
        let base = View::ordered(
            view().columns().to_vec(),
            KeyColumns(vec![0]),
            order.clone(),
            Retention::for_ms(1_000_000),
        );
        // The view's rows after each frontier: history[s] is what a subscriber at `s` holds.
        let mut history: Vec<BTreeMap<Row, i64>> = vec![BTreeMap::new()];
        let page_at =
            |rows: &BTreeMap<Row, i64>, key: &str, offset: usize, limit: Option<usize>| {
                let all: Vec<Row> = rows
                    .iter()
                    .filter(|(r, _)| r[0] == Value::str(key))
                    .flat_map(|(r, n)| std::iter::repeat_n(r.clone(), *n as usize))
                    .collect();
                order
                    .sort(all)
                    .into_iter()
                    .skip(offset)
                    .take(limit.unwrap_or(usize::MAX))
                    .collect::<Vec<Row>>()
            };
        let keys = ["a", "b", "c", "d"];
        let all_bounds = [
            (0, Some(3)),
            (2, Some(3)),
            (0, None),
            (1, None),
            (0, Some(1)),
            (5, Some(10)),
        ];
        let mut windows: Vec<Mirrored> = Vec::new();
        let mut held: BTreeMap<Row, i64> = BTreeMap::new();
        for t in 0..400u64 {
            let count = next() % 12;
            let mut changes = random_changes(&mut next, &mut held, &keys, count, 24);
            base.consolidate(&mut changes);
            base.apply(ChangeBatch::new(t, t + 1, changes));
            history.push(held.clone());
            if t % 60 == 0 && windows.len() < all_bounds.len() {
                let (offset, limit) = all_bounds[windows.len()];
                let w = base
                    .window(offset, limit)
                    .expect("a healthy view has windows");
                let again = base.window(offset, limit).expect("the same window");
                assert!(Arc::ptr_eq(&w, &again), "equal bounds share one window");
                // A subscriber that holds the window as it was before the window existed
                // resumes with one batch that brings it to now.
                let since = t.saturating_sub(7).max(1);
                for key in keys {
                    let mut then = page_at(&history[since as usize], key, offset, limit);
                    let Resume::Changes(batches) = w.resume(since, &[Value::str(key)]).0 else {
                        panic!("the view's log reaches back to {since}");
                    };
                    for b in batches {
                        for (row, diff) in b.changes.iter().filter(|(r, _)| r[0] == Value::str(key))
                        {
                            for _ in 0..diff.abs() {
                                if *diff > 0 {
                                    then.push(row.clone());
                                } else {
                                    let at = then.iter().position(|r| r == row);
                                    then.remove(at.expect("a retraction of a held row"));
                                }
                            }
                        }
                    }
                    assert_eq!(
                        order.sort(then),
                        w.snapshot(&[Value::str(key)]).rows,
                        "resumed window {offset}+{limit:?} of key {key} from {since}"
                    );
                }
                let (_, rx) = w.subscribe(&[]);
                let mut mirror = BTreeMap::new();
                for key in keys {
                    for row in w.snapshot(&[Value::str(key)]).rows {
                        *mirror.entry(row).or_default() += 1;
                    }
                }
                windows.push(((offset, limit), w, rx, mirror));
            }
            for ((offset, limit), w, rx, mirror) in &mut windows {
                assert_eq!(w.upper(), base.upper());
                // What a subscriber holds: the window at its making, plus every batch since.
                while let Ok(b) = rx.try_recv() {
                    assert!(b.changes.iter().all(|(_, d)| *d != 0));
                    let mut rows: Vec<&Row> = b.changes.iter().map(|(r, _)| r).collect();
                    rows.sort();
                    assert!(rows.windows(2).all(|p| p[0] != p[1]), "consolidated");
                    for (row, diff) in &b.changes {
                        *mirror.entry(row.clone()).or_default() += diff;
                    }
                    mirror.retain(|_, n| *n != 0);
                }
                for key in keys {
                    let k = [Value::str(key)];
                    let page = base.page(&k, *offset, *limit).rows;
                    let mirrored = page_at(mirror, key, 0, None);
                    assert_eq!(
                        mirrored, page,
                        "window {offset}+{limit:?} of key {key} after batch {t}"
                    );
                    assert_eq!(w.snapshot(&k).rows, page);
                }
            }
        }
        assert_eq!(windows.len(), all_bounds.len());
        // Frontiers a crash of the previous run may have erased stay unresumable through a
        // window made afterwards.
        base.refuse_resume_between(390, 450);
        let late = base.window(0, Some(2)).expect("a window");
        for t in 400..410u64 {
            base.apply(ChangeBatch::new(t, t + 1, vec![(row("a", t as i64), 1)]));
        }
        assert!(matches!(
            late.resume(405, &[Value::str("a")]).0,
            Resume::TooOld
        ));
        base.fail("boom".into());
        for (_, w, _, _) in &windows {
            assert_eq!(w.failure().as_deref(), Some("boom"));
        }
        assert!(
            base.window(0, Some(3)).is_none(),
            "a failed view makes no window"
        );
    }

    /// A view that keeps only each key's first rows in order reads exactly as one that keeps
    /// them all in order: pages (within and past the ordered rows), snapshots, windows and a
    /// chunked copy, after every batch of random inserts and retractions over keys of a few
    /// hundred rows (held several times, tied on the sort value).
    #[test]
    fn a_view_kept_partly_in_order_reads_as_one_kept_in_order() {
        let mut next = crate::order::xorshift(0x0dd_ba11_cafe_f00d_u64);
        let order = quarters_descending();
        let make = || {
            View::ordered(
                view().columns().to_vec(),
                KeyColumns(vec![0]),
                order.clone(),
                Retention::for_ms(1_000_000),
            )
        };
        let (partly, fully) = (make(), make());
        partly.keep_ordered_exactly(2);
        let keys = ["a", "b", "c"];
        let bounds = [(0, Some(3)), (4, Some(5)), (0, None)];
        let windows: Vec<_> = bounds
            .iter()
            .map(|&(offset, limit)| {
                let w = partly.window(offset, limit).expect("a window");
                let (_, rx) = w.subscribe(&[]);
                ((offset, limit), w, rx, BTreeMap::<Row, i64>::new())
            })
            .collect();
        let mut windows = windows;
        let mut held: BTreeMap<Row, i64> = BTreeMap::new();
        let mut batches = Vec::new();
        let mut batch = |held: &mut BTreeMap<Row, i64>, t: u64| {
            let count = 10 + next() % 50;
            let mut changes = random_changes(&mut next, held, &keys, count, 200);
            partly.consolidate(&mut changes);
            ChangeBatch::new(t, t + 1, changes)
        };
        for t in 0..150u64 {
            let b = batch(&mut held, t);
            batches.push(b.clone());
            partly.apply(b.clone());
            fully.apply(b);
            for key in keys {
                let k = [Value::str(key)];
                for (offset, limit) in [(0, Some(3)), (20, Some(5)), (0, None), (150, None)] {
                    assert_eq!(
                        partly.page(&k, offset, limit),
                        fully.page(&k, offset, limit),
                        "key {key} rows {offset}+{limit:?} after batch {t}"
                    );
                }
                assert_eq!(partly.snapshot(&k), fully.snapshot(&k));
            }
            for ((offset, limit), w, rx, mirror) in &mut windows {
                while let Ok(b) = rx.try_recv() {
                    for (row, diff) in &b.changes {
                        *mirror.entry(row.clone()).or_default() += diff;
                    }
                    mirror.retain(|_, n| *n != 0);
                }
                for key in keys {
                    let k = [Value::str(key)];
                    let mirrored: Vec<Row> = order.sort(
                        mirror
                            .iter()
                            .filter(|(r, _)| r[0] == Value::str(key))
                            .flat_map(|(r, n)| std::iter::repeat_n(r.clone(), *n as usize))
                            .collect(),
                    );
                    assert_eq!(mirrored, fully.page(&k, *offset, *limit).rows);
                    assert_eq!(w.snapshot(&k).rows, mirrored);
                }
            }
        }
        assert!(
            keeps_rows_unordered(&partly, &keys),
            "rows were kept out of order"
        );
        // A copy a few rows at a time, with batches landing between the chunks.
        let mut t = 150;
        let (mut rows, upper) = partly.counted_rows_in_chunks(7, &mut || {
            let b = batch(&mut held, t);
            t += 1;
            batches.push(b.clone());
            partly.apply(b);
        });
        let reference = make();
        for b in batches.iter().filter(|b| b.upper <= upper) {
            reference.apply(b.clone());
        }
        let (mut expected, _) = reference.counted_rows_in_chunks(usize::MAX, &mut || {});
        consolidate_counted(&mut rows);
        consolidate_counted(&mut expected);
        assert_eq!(rows, expected);
        assert!(upper > 160, "batches landed during the copy");
    }

    /// A view that tells rows apart by a group's keys (and folds a group's retraction and
    /// insertion with one probe) holds and publishes what a view telling them apart by the
    /// whole row does: random batches of group rows changing value (some into and out of the
    /// ordered rows), groups appearing and vanishing, rows held twice, and changes that cancel.
    #[test]
    fn rows_told_apart_by_group_keys_read_as_rows_told_apart_whole() {
        let mut next = crate::order::xorshift(0x1234_5678_9abc_def1_u64);
        let columns = vec![
            Column {
                name: "k".into(),
                ty: ColumnType::String,
            },
            Column {
                name: "user".into(),
                ty: ColumnType::Int(64),
            },
            Column {
                name: "total".into(),
                ty: ColumnType::Int(64),
            },
        ];
        let desc = SortDirection {
            desc: true,
            nulls_first: false,
        };
        let make = |identity: Option<Vec<usize>>| {
            let order = RowOrder::by_columns(vec![desc], vec![2]);
            let keys = (KeyColumns(vec![0]), identity);
            View::identified(columns.clone(), keys, order, Retention::for_ms(1_000_000))
        };
        let (by_keys, whole) = (make(Some(vec![0, 1])), make(None));
        by_keys.keep_ordered_exactly(3);
        let group_row = |k: &str, user: i64, total: i64| {
            vec![Value::str(k), Value::Int(user), Value::Int(total)]
        };
        // Each group's rows: one (its total, held once or twice), or two once a change
        // moved one copy of a row held twice.
        let mut held: BTreeMap<(usize, i64), Vec<(i64, i64)>> = BTreeMap::new();
        let keys = ["a", "b"];
        for t in 0..300u64 {
            let mut changes = Vec::new();
            for _ in 0..5 + next() % 40 {
                let k = (next() % 2) as usize;
                let user = (next() % 120) as i64;
                let change = next() % 10;
                let rows = held.get(&(k, user)).cloned().unwrap_or_default();
                match rows.as_slice() {
                    [(total, 2)] if change == 1 => {
                        // One of two copies changes: the other keeps the old total.
                        let now = total + 1 + (next() % 20) as i64;
                        changes.push((group_row(keys[k], user, *total), -1));
                        changes.push((group_row(keys[k], user, now), 1));
                        held.insert((k, user), vec![(*total, 1), (now, 1)]);
                    }
                    [(total, copies)] if change != 0 => {
                        // Mostly up, sometimes down, sometimes no change at all.
                        let now = total + (next() % 30) as i64 - 5;
                        changes.push((group_row(keys[k], user, *total), -copies));
                        changes.push((group_row(keys[k], user, now), *copies));
                        held.insert((k, user), vec![(now, *copies)]);
                    }
                    [] => {
                        let copies = 1 + (change == 1) as i64;
                        let total = (next() % 100) as i64;
                        changes.push((group_row(keys[k], user, total), copies));
                        held.insert((k, user), vec![(total, copies)]);
                    }
                    [(first, 1), (second, 1)] if change % 2 == 1 => {
                        // The changed copy comes back to the other's total: a change
                        // whose new row is already held.
                        changes.push((group_row(keys[k], user, *first), -1));
                        changes.push((group_row(keys[k], user, *second), 1));
                        held.insert((k, user), vec![(*second, 2)]);
                    }
                    rows => {
                        for (total, copies) in rows {
                            changes.push((group_row(keys[k], user, *total), -copies));
                        }
                        held.remove(&(k, user));
                    }
                }
            }
            let (mut a, mut b) = (changes.clone(), changes);
            by_keys.consolidate(&mut a);
            whole.consolidate(&mut b);
            let (mut sa, mut sb) = (a.clone(), b.clone());
            sa.sort();
            sb.sort();
            assert_eq!(sa, sb, "the same consolidated changes at {t}");
            by_keys.apply(ChangeBatch::new(t, t + 1, a));
            whole.apply(ChangeBatch::new(t, t + 1, b));
            for k in keys {
                let key = [Value::str(k)];
                assert_eq!(
                    by_keys.snapshot(&key),
                    whole.snapshot(&key),
                    "key {k} at {t}"
                );
                for (offset, limit) in [(0, Some(3)), (2, Some(4)), (0, None)] {
                    assert_eq!(
                        by_keys.page(&key, offset, limit),
                        whole.page(&key, offset, limit)
                    );
                }
            }
            assert_eq!(by_keys.distinct_rows(), whole.distinct_rows());
        }
        assert!(
            keeps_rows_unordered(&by_keys, &keys),
            "rows were kept out of order"
        );
    }

    /// A subscriber's share of a batch is the batch's changes of its key, whether the batch is
    /// small (scanned) or large (indexed once, then shared), and for other key columns than
    /// the index was built with.
    #[test]
    fn a_batch_gives_each_key_its_changes() {
        for size in [10, 500] {
            let changes: Vec<(Row, i64)> = (0..size)
                .map(|i| {
                    (
                        row(["a", "b", "c", "d"][i % 4], i as i64),
                        1 - 2 * (i as i64 % 2),
                    )
                })
                .collect();
            let batch = ChangeBatch::new(0, 1, changes.clone());
            for key in ["a", "b", "c", "d", "zz"] {
                let want: Vec<&(Row, i64)> = changes
                    .iter()
                    .filter(|(r, _)| r[0] == Value::str(key))
                    .collect();
                let got = batch.of_key(&[0], &[Value::str(key)]);
                assert_eq!(got, want, "key {key}, {size} changes");
            }
            let by_n = batch.of_key(&[1], &[Value::Int(7)]);
            assert_eq!(by_n, vec![&changes[7]]);
            assert_eq!(batch.of_key(&[], &[]).len(), size);
        }
    }

    /// A key with more rows than a copy chunk is read as a long copy: its subscriber gets
    /// every row and then every later batch once.
    #[test]
    fn a_large_key_is_subscribed_whole() {
        let v = view();
        let n = COPY_CHUNK_ROWS as i64 + 10;
        v.apply(ChangeBatch::new(
            0,
            1,
            (0..n).map(|i| (row("a", i), 1)).collect(),
        ));
        let (snapshot, mut rx) = v.subscribe(&[Value::str("a")]);
        assert_eq!(snapshot.upper, 1);
        assert_eq!(snapshot.rows.len(), n as usize);
        v.apply(ChangeBatch::new(1, 2, vec![(row("a", n), 1)]));
        assert_eq!(rx.try_recv().map(|b| b.upper).ok(), Some(2));
        assert_eq!(v.snapshot(&[Value::str("a")]).rows.len(), n as usize + 1);
    }

    #[test]
    fn folds_changes_by_key() {
        let v = view();
        v.apply(ChangeBatch::new(
            0,
            10,
            vec![(row("a", 1), 1), (row("b", 2), 2)],
        ));
        v.apply(ChangeBatch::new(
            10,
            20,
            vec![(row("a", 1), -1), (row("a", 5), 1)],
        ));
        assert_eq!(v.snapshot(&[Value::str("a")]).rows, vec![row("a", 5)]);
        assert_eq!(v.snapshot(&[Value::str("b")]).rows.len(), 2);
        assert_eq!(v.snapshot(&[Value::str("zz")]).rows, Vec::<Row>::new());
        assert_eq!(v.upper(), 20);
    }

    #[test]
    fn a_restored_view_serves_its_snapshot_until_the_engine_catches_up() {
        let v = view();
        v.restore(vec![(row("a", 5), 1)], 50);
        assert_eq!(v.snapshot(&[Value::str("a")]).rows, vec![row("a", 5)]);
        assert_eq!(v.upper(), 50);
        // The engine replays history below the snapshot: readers keep the snapshot.
        v.apply(ChangeBatch::new(10, 11, vec![(row("a", 1), 1)]));
        v.apply(ChangeBatch::new(
            30,
            31,
            vec![(row("a", 1), -1), (row("a", 5), 1)],
        ));
        assert!(v.is_catching_up());
        assert_eq!(v.snapshot(&[Value::str("a")]).rows, vec![row("a", 5)]);
        assert_eq!(v.upper(), 50);
        // Past the snapshot's frontier the engine's state takes over.
        v.apply(ChangeBatch::new(
            60,
            61,
            vec![(row("a", 5), -1), (row("a", 7), 1)],
        ));
        assert!(!v.is_catching_up());
        assert_eq!(v.snapshot(&[Value::str("a")]).rows, vec![row("a", 7)]);
        assert_eq!(v.upper(), 61);
        // Subscribers resume from the snapshot's frontier on, not from before it.
        match v.resume(50, &[]).0 {
            Resume::Changes(b) => assert_eq!(b.len(), 1),
            Resume::TooOld => panic!("the log covers 50"),
        }
        assert!(matches!(v.resume(20, &[]).0, Resume::TooOld));
    }

    #[test]
    fn pages_walk_the_order_and_count_the_whole_key() {
        let v = View::ordered(
            view().columns().to_vec(),
            KeyColumns(vec![0]),
            RowOrder::by(
                vec![SortDirection {
                    desc: true,
                    nulls_first: false,
                }],
                Arc::new(|r: &Row| vec![r[1].clone()]),
            ),
            Retention::for_ms(1_000),
        );
        let mut changes: Vec<(Row, i64)> = (0..100).map(|i| (row("a", i), 1)).collect();
        changes.push((row("a", 50), 1));
        changes.push((row("b", 1000), 1));
        v.apply(ChangeBatch::new(0, 1, changes));
        let page = v.page(&[Value::str("a")], 0, Some(3));
        assert_eq!(page.rows, vec![row("a", 99), row("a", 98), row("a", 97)]);
        assert_eq!(page.total, 101);
        // A row held twice counts twice, and a window may start inside it.
        let page = v.page(&[Value::str("a")], 49, Some(3));
        assert_eq!(page.rows, vec![row("a", 50), row("a", 50), row("a", 49)]);
        v.apply(ChangeBatch::new(
            1,
            2,
            vec![(row("a", 99), -1), (row("a", 50), -1), (row("a", 120), 1)],
        ));
        let page = v.page(&[Value::str("a")], 0, Some(2));
        assert_eq!(page.rows, vec![row("a", 120), row("a", 98)]);
        assert_eq!(page.total, 100);
        assert_eq!(page.upper, 2);
        assert_eq!(v.page(&[Value::str("zz")], 0, None).total, 0);
        assert_eq!(v.page(&[Value::str("b")], 5, None).rows, Vec::<Row>::new());
    }

    /// A batch's changes, interleaved across keys as the engine's workers send them, reach
    /// the change log all of them, in the order they came (their rows are freed in it); a
    /// subscriber to one key gets that key's changes in their order; and the view holds
    /// each key's rows. Small batches fold on one thread, large ones on every core.
    #[test]
    fn a_batch_is_logged_in_its_order_and_each_keys_changes_found_in_theirs() {
        let mut next = crate::order::xorshift(0x10_9e);
        for len in [7usize, 300, 6_000] {
            let v = view();
            // The first batch is the view's starting state, which no subscriber resumes from.
            v.apply(ChangeBatch::new(0, 1, Vec::new()));
            let changes: Vec<(Row, i64)> = (0..len)
                .map(|n| {
                    let key = format!("k{}", next() % 13);
                    (row(&key, n as i64), 1)
                })
                .collect();
            v.apply(ChangeBatch::new(1, 2, changes.clone()));
            let Resume::Changes(batches) = v.resume(1, &[]).0 else {
                panic!("the log holds the batch");
            };
            let logged: Vec<(Row, i64)> = batches.iter().flat_map(|b| b.changes.clone()).collect();
            assert_eq!(logged, changes, "len {len}: the batch logged as it came");
            let mut keys: Vec<&Value> = changes.iter().map(|(r, _)| &r[0]).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let own: Vec<&(Row, i64)> = changes.iter().filter(|(r, _)| r[0] == *key).collect();
                let found: Vec<&(Row, i64)> = batches
                    .iter()
                    .flat_map(|b| b.of_key(&[0], std::slice::from_ref(key)))
                    .collect();
                assert_eq!(
                    own, found,
                    "len {len}: key {key:?}'s changes in their order"
                );
                let mut held: Vec<Row> = own.iter().map(|(r, _)| r.clone()).collect();
                let mut rows = v.snapshot(std::slice::from_ref(key)).rows;
                held.sort();
                rows.sort();
                assert_eq!(rows, held, "len {len}: key {key:?} holds its rows");
            }
        }
    }

    #[test]
    fn resume_within_and_beyond_retention() {
        let v = view();
        for i in 0..100u64 {
            v.apply(ChangeBatch::new(
                i * 100,
                (i + 1) * 100,
                vec![(row("a", i as i64), 1)],
            ));
        }
        match v.resume(9_900, &[]).0 {
            Resume::Changes(b) => assert_eq!(b.len(), 1),
            Resume::TooOld => panic!("recent time must resume"),
        }
        assert!(matches!(v.resume(100, &[]).0, Resume::TooOld));
    }

    /// A view that changes fast keeps the newest batches that fit its byte bound, whatever
    /// its time retention: resuming within them works, resuming before them needs a snapshot.
    #[test]
    fn the_change_log_keeps_to_its_byte_bound() {
        let per_batch = 10 * change_bytes(&row("a", 0));
        let v = View::ordered(
            view().columns().to_vec(),
            KeyColumns(vec![0]),
            RowOrder::natural(),
            Retention {
                ms: 3_600_000,
                bytes: 5 * per_batch,
                ring: CHANGE_RING,
            },
        );
        for i in 0..100u64 {
            v.apply(ChangeBatch::new(
                i,
                i + 1,
                (0..10)
                    .map(|n| (row("a", (i * 10 + n) as i64), 1))
                    .collect(),
            ));
        }
        match v.resume(95, &[]).0 {
            Resume::Changes(b) => assert_eq!(b.len(), 5, "the five newest batches fit"),
            Resume::TooOld => panic!("the newest batches must resume"),
        }
        assert!(matches!(v.resume(94, &[]).0, Resume::TooOld));
        assert!(matches!(v.resume(10, &[]).0, Resume::TooOld));
        // The index itself keeps every row.
        assert_eq!(v.snapshot(&[Value::str("a")]).rows.len(), 1_000);
    }
}
