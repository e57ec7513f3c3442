//! The maintained views of a running project: planned shapes, installed bindings, reads.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use petrel_engine::{row_order, Engine, RowBudget, ViewId};
use petrel_sql::{Expr, Query};
use petrel_value::{Column, Row, Value};
use petrel_view::{KeyColumns, Retention, RowOrder, Ts, View};

use super::finish::{bind_order, finish, read_page};
use super::RuntimeError;
use crate::project::{lift_keys, LiftedKey, ProjectError};
use crate::storage::Storage;

/// A planned query shape: the maintained plan with its equality parameters lifted into keys.
pub struct Prepared {
    name: String,
    shape: String,
    query: Query,
    keys: Vec<LiftedKey>,
    /// Parameters the maintained plan still reads: each binding is its own view.
    bound: Vec<String>,
    /// True when the top-level ORDER BY reads only parameters the view is bound to, so each
    /// view keeps its rows in that order and a read walks only its LIMIT.
    ordered: bool,
    tables: BTreeSet<String>,
}

/// The answer to a read: visible columns and rows, sorted and limited.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    /// The result's columns.
    pub columns: Vec<Column>,
    /// The rows.
    pub rows: Vec<Row>,
    /// How many rows there were before LIMIT and OFFSET.
    pub rows_before_limit: usize,
    /// How many rows were read from the view.
    pub rows_read: usize,
    /// The result is consistent as of every change below this time.
    pub upper: Ts,
    /// The order the rows are in, by result column (name, DESC, NULLS FIRST), when the query
    /// sorts by its visible columns: `q=` over the result keeps it.
    pub order_by: Vec<(String, bool, bool)>,
}

/// An ad-hoc query ready to run, with what it reads.
pub struct PreparedSql {
    query: Query,
    values: BTreeMap<String, Value>,
    tables: BTreeSet<String>,
    named: BTreeSet<String>,
}

impl PreparedSql {
    /// Puts `predicate` (over the table's columns) right over every scan of `table`.
    pub(super) fn filter_scans(&mut self, table: &str, predicate: &Expr) {
        fn walk(plan: &mut petrel_sql::Plan, table: &str, predicate: &Expr) {
            if matches!(&plan.node, petrel_sql::PlanNode::Scan { table: t } if t == table) {
                let scan = std::mem::replace(
                    &mut plan.node,
                    petrel_sql::PlanNode::Values { rows: Vec::new() },
                );
                let columns = plan.columns.clone();
                plan.node = petrel_sql::PlanNode::Filter {
                    input: Box::new(petrel_sql::Plan {
                        node: scan,
                        columns,
                    }),
                    predicate: predicate.clone(),
                };
                return;
            }
            for input in plan.inputs_mut() {
                walk(input, table, predicate);
            }
        }
        walk(&mut self.query.plan, table, predicate);
    }

    /// Bundles a planned query with its parameter values, the datasources its dataflow
    /// scans, and the datasources and pipes its SQL names (for token checks).
    pub fn new(
        query: Query,
        values: BTreeMap<String, Value>,
        tables: BTreeSet<String>,
        named: BTreeSet<String>,
    ) -> Self {
        PreparedSql {
            query,
            values,
            tables,
            named,
        }
    }

    /// The datasources and pipes the query's SQL names: a token needs to read each.
    pub fn named(&self) -> &BTreeSet<String> {
        &self.named
    }
}

/// A subscriber's window on a view: the key it reads and how to show its rows.
pub struct Subscription {
    /// The maintained view.
    pub view: Arc<View>,
    _lease: Lease,
    key: Row,
    key_columns: Vec<usize>,
    /// The visible columns.
    pub columns: Vec<Column>,
    order: RowOrder,
    upsert_key: Vec<usize>,
}

impl Subscription {
    /// The visible columns that identify a row for `envelope=upsert`: the GROUP BY keys
    /// shown in the result, or every column when the result is not grouped.
    pub fn upsert_key(&self) -> &[usize] {
        &self.upsert_key
    }

    fn visible(&self, row: &Row) -> Row {
        row[..self.columns.len()].to_vec()
    }

    /// The subscriber's rows of a snapshot, sorted by the pipe's ORDER BY.
    pub fn rows(&self, snapshot: Vec<Row>) -> Vec<Row> {
        self.order
            .sort(snapshot)
            .iter()
            .map(|r| self.visible(r))
            .collect()
    }

    /// The subscriber's share of a change batch: its key's rows, visible columns, consolidated.
    pub fn changes(&self, batch: &petrel_view::ChangeBatch) -> Vec<(Row, i64)> {
        let mut out: Vec<(Row, i64)> = batch
            .of_key(&self.key_columns, &self.key)
            .into_iter()
            .map(|(r, d)| (self.visible(r), *d))
            .collect();
        out.sort();
        out.dedup_by(|b, a| {
            if a.0 == b.0 {
                a.1 += b.1;
                true
            } else {
                false
            }
        });
        out.retain(|(_, d)| *d != 0);
        out
    }

    /// The key the subscriber reads.
    pub fn key(&self) -> &[Value] {
        &self.key
    }
}

/// True when a view of `query` sorts each key's rows on read: its ORDER BY reads a parameter
/// the view is not bound to (`ordered` false), so it keeps no order of its own.
fn sorts_on_read(ordered: bool, query: &Query) -> bool {
    !ordered && !query.order_by.is_empty()
}

/// The key of the view that serves `prepared` for a request's `values`: its shape and the
/// values of the parameters the view is bound to.
fn view_key(
    prepared: &Prepared,
    values: &BTreeMap<String, Value>,
) -> Result<ViewKey, RuntimeError> {
    let bound: Vec<(String, Value)> = prepared
        .bound
        .iter()
        .map(|p| {
            values
                .get(p)
                .map(|v| (p.clone(), v.clone()))
                .ok_or_else(|| bad(format!("parameter '{p}' has no value")))
        })
        .collect::<Result<_, _>>()?;
    Ok(ViewKey {
        shape: prepared.shape.clone(),
        bound,
    })
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ViewKey {
    shape: String,
    bound: Vec<(String, Value)>,
}

impl ViewKey {
    /// The name its snapshots are stored under: the same across restarts for the same
    /// planned shape and bound parameters.
    fn snapshot_name(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{}\u{0}{:?}", self.shape, self.bound).as_bytes());
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

struct Live {
    id: ViewId,
    view: Arc<View>,
    /// True when the query has an ORDER BY the view cannot keep (it reads a request
    /// parameter the view is not bound to): reads sort the key's rows.
    sorts_on_read: bool,
    as_of: Ts,
    /// Where its snapshots go (ad-hoc queries have none).
    snapshot: Option<String>,
    /// The timestamp of the snapshot it was restored from, if any.
    restored_from: Option<Ts>,
    /// The frontier of the last snapshot written.
    snapshotted: AtomicU64,
    tables: BTreeSet<String>,
    /// Who asked for it: the pipe and the bound parameters.
    label: String,
    subscribers: AtomicUsize,
    last_used: AtomicU64,
}

impl Live {
    fn touch(&self) {
        self.last_used.store(wall_ms(), Ordering::Relaxed);
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Drops an ad-hoc query's dataflow when its request ends, however it ends.
struct DropView<'a> {
    views: &'a Views,
    id: ViewId,
    /// False while the query runs: dropped then, its request was abandoned.
    ended: bool,
}

impl Drop for DropView<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.views
                .counters
                .queries_abandoned
                .fetch_add(1, Ordering::Relaxed);
        }
        lock(&self.views.adhoc).remove(&self.id);
        self.views.engine.drop_view(self.id);
    }
}

/// Keeps a view alive while a subscriber holds it.
struct Lease(Arc<Live>);

impl Lease {
    fn new(live: Arc<Live>) -> Lease {
        live.subscribers.fetch_add(1, Ordering::SeqCst);
        Lease(live)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// What `GET /v0/views` shows of a maintained view.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ViewInfo {
    /// The engine's id for its dataflow.
    pub id: ViewId,
    /// The pipe (or `sql`) and its bound parameters.
    pub label: String,
    /// Distinct rows held.
    pub rows: usize,
    /// Open subscriptions.
    pub subscribers: usize,
    /// The view's frontier.
    pub upper: Ts,
    /// The timestamp of the snapshot it was restored from at install, if any.
    pub restored_from: Option<Ts>,
    /// True while a restored view's dataflow has not caught up with its snapshot.
    pub catching_up: bool,
    /// True when the view keeps its rows in the query's ORDER BY, so a read costs its
    /// LIMIT; false when the order depends on a request parameter the view is not bound to
    /// (each read then sorts the key's rows).
    pub ordered: bool,
    /// How many windows of it (the rows OFFSET..OFFSET+LIMIT of each key) subscriptions with
    /// a LIMIT read; each counts as a view under `--max-views`.
    pub windows: usize,
    /// Why the view stopped (a failed evaluation, a failed replay), if it did: reads of it
    /// answer 500 with this error and its subscribers get an `error` frame.
    pub error: Option<String>,
}

/// What a crash of the previous run may have erased, per table: a batch that was sent to
/// views but not stored was appended after the table's last stored batch and at or after the
/// last durable frontier, so every change below the later of the two survived. (The last
/// stored batch's own tick may have had lost company: it counts as unsafe.)
pub struct Erased {
    /// Each table's safe frontier: every change below it survived.
    durable: BTreeMap<String, Ts>,
    /// This run's first tick: frontiers from it on were sent by this run.
    pub restarted: Ts,
}

impl Erased {
    /// From the stored durable frontier, each table's last stored timestamp, and this run's
    /// first tick.
    pub fn after_restart(
        frontier: Ts,
        last_stored: impl IntoIterator<Item = (String, Ts)>,
        restarted: Ts,
    ) -> Erased {
        Erased {
            durable: last_stored
                .into_iter()
                .map(|(t, last)| (t, frontier.max(last)))
                .collect(),
            restarted,
        }
    }

    /// The frontier below which every change of `tables` survived, if one of them existed
    /// before this run (tables a deploy added since lost nothing).
    fn durable_for(&self, tables: &BTreeSet<String>) -> Option<Ts> {
        tables
            .iter()
            .filter_map(|t| self.durable.get(t))
            .min()
            .copied()
            .filter(|d| *d < self.restarted)
    }
}

/// Shapes planned so far and the views installed for them.
pub struct Views {
    /// What a crash of the previous run may have erased (none on a replica).
    erased: Option<Erased>,
    engine: Arc<Engine>,
    storage: Arc<Storage>,
    /// How much change history each view keeps.
    retention: Retention,
    query_limits: QueryLimits,
    /// One permit per ad-hoc query allowed to run now.
    query_slots: Arc<tokio::sync::Semaphore>,
    /// The most views maintained at once (ad-hoc queries aside).
    max_views: usize,
    prepared: Mutex<HashMap<String, Arc<Prepared>>>,
    live: Mutex<HashMap<ViewKey, Arc<Live>>>,
    /// Views rebuilt because a bounded extreme or top-k lost track ([`View::needs_rebuild`]):
    /// this run of the server installs them with exact states.
    exact: Mutex<HashSet<ViewKey>>,
    /// Ad-hoc queries running now, shown by `GET /v0/views` as `sql`.
    adhoc: Mutex<BTreeMap<ViewId, Arc<View>>>,
    /// How often each limit acted, for metrics.
    counters: LimitCountersInner,
}

/// What one ad-hoc query may take.
#[derive(Clone, Copy, Debug)]
pub(super) struct QueryLimits {
    /// Time to answer (`--query-timeout-ms`).
    pub timeout: std::time::Duration,
    /// Rows its joins may produce (`--query-max-rows`).
    pub max_rows: u64,
    /// Ad-hoc queries running at once (`--max-concurrent-queries`); more answer 429.
    pub concurrent: usize,
}

#[derive(Default)]
struct LimitCountersInner {
    query_timeouts: AtomicU64,
    queries_too_large: AtomicU64,
    queries_refused: AtomicU64,
    queries_abandoned: AtomicU64,
    views_dropped: AtomicU64,
    views_refused: AtomicU64,
}

/// How often each limit acted since the server started.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct LimitCounters {
    /// Ad-hoc queries cancelled by `--query-timeout-ms`.
    pub query_timeouts: u64,
    /// Ad-hoc queries cancelled by `--query-max-rows`.
    pub queries_too_large: u64,
    /// Ad-hoc queries refused by `--max-concurrent-queries`.
    pub queries_refused: u64,
    /// Ad-hoc queries dropped because their request went away first.
    pub queries_abandoned: u64,
    /// Views dropped to stay within `--max-views`.
    pub views_dropped: u64,
    /// Requests refused with 429 because subscribers held every view.
    pub views_refused: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn bad(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::BadRequest(e.to_string())
}

impl Views {
    pub(super) fn new(
        engine: Arc<Engine>,
        storage: Arc<Storage>,
        retention: Retention,
        query_limits: QueryLimits,
        max_views: usize,
        erased: Option<Erased>,
    ) -> Views {
        Views {
            erased,
            engine,
            storage,
            retention: Retention {
                ring: retention.ring.max(1),
                ..retention
            },
            query_slots: Arc::new(tokio::sync::Semaphore::new(query_limits.concurrent.max(1))),
            query_limits,
            max_views: max_views.max(1),
            prepared: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            exact: Mutex::new(HashSet::new()),
            adhoc: Mutex::new(BTreeMap::new()),
            counters: LimitCountersInner::default(),
        }
    }

    /// The prepared form of a shape, planning it with `plan` the first time.
    pub(super) fn prepare(
        &self,
        name: &str,
        shape: &str,
        plan: impl FnOnce() -> Result<Query, ProjectError>,
    ) -> Result<Arc<Prepared>, RuntimeError> {
        if let Some(p) = lock(&self.prepared).get(shape) {
            return Ok(p.clone());
        }
        let (query, keys) = lift_keys(plan()?);
        let mut params = BTreeSet::new();
        query.plan.params(&mut params);
        let mut order_params = BTreeSet::new();
        for k in &query.order_by {
            k.expr.params(&mut order_params);
        }
        // A WITH FILL result is made on read: its rows are sorted then, not kept in order.
        let ordered = order_params.is_subset(&params) && query.fill.is_none();
        let mut tables = BTreeSet::new();
        petrel_engine::scanned_tables(&query.plan, &mut tables);
        let prepared = Arc::new(Prepared {
            name: name.to_string(),
            shape: shape.to_string(),
            query,
            keys,
            bound: params.into_iter().collect(),
            ordered,
            tables,
        });
        lock(&self.prepared).insert(shape.to_string(), prepared.clone());
        Ok(prepared)
    }

    async fn get_or_install(
        &self,
        prepared: &Prepared,
        values: &BTreeMap<String, Value>,
    ) -> Result<Arc<Live>, RuntimeError> {
        let key = view_key(prepared, values)?;
        self.lookup_or_install(prepared, key, &prepared.query, values)
            .await
    }

    /// For a subscription with a LIMIT/OFFSET: a window of the pipe's own view (the one pulls
    /// read), kept up to date as that view folds each batch ([`View::window`]), and the view's
    /// live entry. Taken when the view keeps the subscription's order, and when it exists
    /// already or a top-k of the subscription's own would not keep fewer rows than it (its
    /// input can retract rows, so it would hold every row of each key); otherwise `None`,
    /// and the subscription gets a top-k dataflow that keeps just the window.
    async fn window_of_view(
        &self,
        prepared: &Prepared,
        values: &BTreeMap<String, Value>,
        (offset, limit): (u64, Option<u64>),
    ) -> Result<Option<(Lease, Arc<View>)>, RuntimeError> {
        // A view whose order reads a parameter it is not bound to sorts on read: it keeps no
        // order to take a window of.
        if sorts_on_read(prepared.ordered, &prepared.query) {
            return Ok(None);
        }
        let key = view_key(prepared, values)?;
        let exists = self.healthy(&mut lock(&self.live), &key).is_some();
        if !exists && prepared.query.plan.is_append_only() {
            return Ok(None);
        }
        let live = self
            .lookup_or_install(prepared, key, &prepared.query, values)
            .await?;
        // Held from here, so that making room for the window cannot drop its view.
        let lease = Lease::new(live.clone());
        live.view.wait_for(live.as_of).await;
        // A view restored from a snapshot takes windows once it has caught up.
        let mut upper = live.view.watch_upper();
        while live.view.is_catching_up() && live.view.failure().is_none() {
            if upper.changed().await.is_err() {
                break;
            }
        }
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let (offset, limit) = (size(offset), limit.map(size));
        if !live.view.has_window(offset, limit) {
            self.make_room(&mut lock(&self.live))?;
        }
        Ok(live
            .view
            .window(offset, limit)
            .map(|window| (lease, window)))
    }

    /// The live view for `key`, installing `query` for it the first time (from its stored
    /// snapshot, if there is one: read from object storage with no lock held).
    async fn lookup_or_install(
        &self,
        prepared: &Prepared,
        key: ViewKey,
        query: &Query,
        values: &BTreeMap<String, Value>,
    ) -> Result<Arc<Live>, RuntimeError> {
        if let Some(l) = self.healthy(&mut lock(&self.live), &key) {
            return Ok(l);
        }
        let snapshot = key.snapshot_name();
        let exact = lock(&self.exact).contains(&key);
        let restored = if exact {
            // A rebuild replays the whole history, not the last snapshot and what followed.
            None
        } else {
            let (storage, name) = (self.storage.clone(), snapshot.clone());
            let columns: Vec<String> = query.plan.columns.iter().map(|c| c.name.clone()).collect();
            match tokio::task::spawn_blocking(move || storage.read_view_snapshot(&name, &columns))
                .await
            {
                Ok(Ok(Some((rows, upper)))) if upper > 0 => Some((rows, upper)),
                Ok(Ok(_)) => None,
                Ok(Err(e)) => {
                    tracing::warn!(view = %prepared.name, error = %e, "view snapshot not read");
                    None
                }
                Err(e) => return Err(RuntimeError::Internal(e.to_string())),
            }
        };
        let mut live = lock(&self.live);
        // Another request may have installed it meanwhile.
        if let Some(l) = self.healthy(&mut live, &key) {
            return Ok(l);
        }
        self.make_room(&mut live)?;
        let label = std::iter::once(prepared.name.clone())
            .chain(
                key.bound
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.to_text())),
            )
            .collect::<Vec<_>>()
            .join(" ");
        let l = Arc::new(self.install(
            query,
            values,
            prepared.keys.iter().map(|k| k.column).collect(),
            prepared.ordered,
            prepared.tables.clone(),
            label,
            Some((snapshot, restored)),
            None,
            exact,
        )?);
        live.insert(key, l.clone());
        Ok(l)
    }

    /// Makes room for one more view or window under `--max-views` (a window counts as a view:
    /// it holds up to its limit of rows per key and costs work on every batch): drops the
    /// least recently used view nobody subscribes to, or refuses when subscribers hold them all.
    fn make_room(&self, live: &mut HashMap<ViewKey, Arc<Live>>) -> Result<(), RuntimeError> {
        let held = live.len() + live.values().map(|l| l.view.window_count()).sum::<usize>();
        if held < self.max_views {
            return Ok(());
        }
        // Make room: drop the least recently used view nobody subscribes to.
        let lru = live
            .iter()
            .filter(|(_, l)| l.subscribers.load(Ordering::SeqCst) == 0)
            .min_by_key(|(_, l)| l.last_used.load(Ordering::Relaxed))
            .map(|(k, _)| k.clone());
        match lru.and_then(|k| live.remove(&k)) {
            Some(old) => {
                self.counters.views_dropped.fetch_add(1, Ordering::Relaxed);
                // A request still waiting for it gets an error instead of waiting forever.
                old.view
                    .fail("the view was dropped to make room (--max-views); retry".into());
                self.engine.drop_view(old.id);
                Ok(())
            }
            None => {
                self.counters.views_refused.fetch_add(1, Ordering::Relaxed);
                Err(RuntimeError::Exhausted(format!(
                    "the server maintains {} views and windows (--max-views) and subscribers hold all of them; close subscriptions or raise --max-views",
                    self.max_views
                )))
            }
        }
    }

    /// The live view for `key`, unless it has to be rebuilt ([`View::needs_rebuild`]): then
    /// it is dropped, and the key is installed with exact states from now on.
    fn healthy(&self, live: &mut HashMap<ViewKey, Arc<Live>>, key: &ViewKey) -> Option<Arc<Live>> {
        let l = live.get(key)?;
        if !l.view.needs_rebuild() {
            l.touch();
            return Some(l.clone());
        }
        let l = live.remove(key)?;
        tracing::warn!(view = %l.label, error = ?l.view.failure(), "rebuilding the view from its history");
        lock(&self.exact).insert(key.clone());
        self.engine.drop_view(l.id);
        None
    }

    /// Drops views that no subscriber holds and no request has read for `idle_ms`; a later
    /// request installs them again. Returns how many were dropped.
    pub(super) fn evict_idle(&self, idle_ms: u64) -> usize {
        let now = wall_ms();
        let mut live = lock(&self.live);
        let idle: Vec<ViewKey> = live
            .iter()
            .filter(|(_, l)| {
                l.subscribers.load(Ordering::SeqCst) == 0
                    && now.saturating_sub(l.last_used.load(Ordering::Relaxed)) > idle_ms
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &idle {
            if let Some(l) = live.remove(k) {
                self.engine.drop_view(l.id);
            }
        }
        idle.len()
    }

    /// Drops every view that reads `table` (its data is being replaced).
    pub(super) fn drop_readers(&self, table: &str) {
        let mut live = lock(&self.live);
        let readers: Vec<ViewKey> = live
            .iter()
            .filter(|(_, l)| l.tables.contains(table))
            .map(|(k, _)| k.clone())
            .collect();
        for k in readers {
            if let Some(l) = live.remove(&k) {
                l.view
                    .fail(format!("the datasource '{table}' was replaced by a deploy"));
                self.engine.drop_view(l.id);
            }
        }
    }

    /// Forgets planned shapes (after a deploy); live views stay and are found again by shape.
    pub(super) fn forget_plans(&self) {
        lock(&self.prepared).clear();
    }

    /// How often each limit acted.
    pub(super) fn limit_counters(&self) -> LimitCounters {
        let c = &self.counters;
        LimitCounters {
            query_timeouts: c.query_timeouts.load(Ordering::Relaxed),
            queries_too_large: c.queries_too_large.load(Ordering::Relaxed),
            queries_refused: c.queries_refused.load(Ordering::Relaxed),
            queries_abandoned: c.queries_abandoned.load(Ordering::Relaxed),
            views_dropped: c.views_dropped.load(Ordering::Relaxed),
            views_refused: c.views_refused.load(Ordering::Relaxed),
        }
    }

    /// The failed views (label and error), without describing every view: what
    /// `/v0/health` reports on each probe.
    pub(super) fn failures(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = lock(&self.live)
            .values()
            .filter_map(|l| l.view.failure().map(|e| (l.label.clone(), e)))
            .collect();
        out.extend(
            lock(&self.adhoc)
                .values()
                .filter_map(|v| v.failure().map(|e| ("sql".to_string(), e))),
        );
        out
    }

    /// The live views, for operators.
    pub(super) fn describe(&self) -> Vec<ViewInfo> {
        let mut out: Vec<ViewInfo> = lock(&self.live)
            .values()
            .map(|l| ViewInfo {
                id: l.id,
                label: l.label.clone(),
                rows: l.view.distinct_rows(),
                subscribers: l.subscribers.load(Ordering::SeqCst),
                upper: l.view.upper(),
                restored_from: l.restored_from,
                catching_up: l.view.is_catching_up(),
                ordered: !l.sorts_on_read,
                windows: l.view.window_count(),
                error: l.view.failure(),
            })
            .collect();
        out.extend(lock(&self.adhoc).iter().map(|(id, view)| ViewInfo {
            id: *id,
            label: "sql".into(),
            rows: view.distinct_rows(),
            subscribers: 0,
            upper: view.upper(),
            restored_from: None,
            catching_up: false,
            ordered: true,
            windows: 0,
            error: view.failure(),
        }));
        out.sort_by_key(|v| v.id);
        out
    }

    /// Installs `query` bound to `values` as a view grouped by the `keys` columns; with
    /// `ordered`, each key's rows are kept in the query's ORDER BY.
    #[allow(clippy::too_many_arguments)]
    fn install(
        &self,
        query: &Query,
        values: &BTreeMap<String, Value>,
        keys: Vec<usize>,
        ordered: bool,
        tables: BTreeSet<String>,
        label: String,
        snapshot: Option<(String, Option<(petrel_view::CountedRows, Ts)>)>,
        budget: Option<Arc<RowBudget>>,
        exact: bool,
    ) -> Result<Live, RuntimeError> {
        let plan = query.plan.bind(values).map_err(bad)?;
        let order = if ordered {
            row_order(&bind_order(query, values)?)
        } else {
            RowOrder::natural()
        };
        let sorts_on_read = sorts_on_read(ordered, query);
        let view = View::identified(
            plan.columns.clone(),
            (KeyColumns(keys), plan.identity()),
            order,
            self.retention,
        );
        if let Some(erased) = &self.erased {
            if let Some(durable) = erased.durable_for(&tables) {
                view.refuse_resume_between(durable, erased.restarted);
            }
        }
        let mut as_of = self.engine.open_ts();
        let mut restored_from = None;
        let (snapshot, restored) = match snapshot {
            Some((name, restored)) => (Some(name), restored),
            None => (None, None),
        };
        if let Some((rows, upper)) = restored {
            view.restore(rows, upper);
            // Reads are answered from the snapshot at once.
            as_of = upper - 1;
            restored_from = Some(upper);
        }
        let installed = match (restored_from, budget) {
            (Some(upper), _) => self.engine.install_restored(plan, view.clone(), upper),
            (None, Some(budget)) => self.engine.install_bounded(plan, view.clone(), budget),
            (None, None) if exact => self.engine.install_exact(plan, view.clone()),
            (None, None) => self.engine.install(plan, view.clone()),
        };
        let id = installed.map_err(|e| RuntimeError::Internal(e.to_string()))?;
        Ok(Live {
            id,
            view,
            sorts_on_read,
            as_of,
            snapshot,
            restored_from,
            snapshotted: AtomicU64::new(restored_from.unwrap_or(0)),
            tables,
            label,
            subscribers: AtomicUsize::new(0),
            last_used: AtomicU64::new(wall_ms()),
        })
    }

    /// Writes a snapshot of every view whose frontier moved since its last one, once the
    /// storage holds every batch below those frontiers durably. Blocking (object-store writes).
    pub(super) fn write_snapshots(&self) {
        let live: Vec<Arc<Live>> = lock(&self.live).values().cloned().collect();
        let due: Vec<(Arc<Live>, petrel_view::CountedRows, Ts)> = live
            .into_iter()
            .filter(|l| l.snapshot.is_some())
            .filter(|l| l.view.failure().is_none() && !l.view.is_catching_up())
            // The frontier first: copying the rows of a view that has not moved would cost
            // its whole size on every round for nothing.
            .filter(|l| l.view.upper() > l.snapshotted.load(Ordering::SeqCst))
            .map(|l| {
                let (rows, upper) = l.view.counted_rows();
                (l, rows, upper)
            })
            .collect();
        let Some(newest) = due.iter().map(|(_, _, u)| *u).max() else {
            return;
        };
        // The rows may hold batches not yet durable: wait for the flusher to pass them.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.storage.durable_frontier() < newest {
            if std::time::Instant::now() > deadline {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        for (l, rows, upper) in due {
            let Some(name) = &l.snapshot else { continue };
            let columns: Vec<String> = l.view.columns().iter().map(|c| c.name.clone()).collect();
            match self
                .storage
                .write_view_snapshot(name, &columns, rows, upper)
            {
                Ok(()) => l.snapshotted.store(upper, Ordering::SeqCst),
                Err(e) => tracing::warn!(view = %l.label, error = %e, "view snapshot not written"),
            }
        }
    }

    /// Reads a prepared shape for a request's parameter values.
    pub(super) async fn read(
        &self,
        prepared: &Prepared,
        values: &BTreeMap<String, Value>,
    ) -> Result<QueryResult, RuntimeError> {
        let mut live = self.get_or_install(prepared, values).await?;
        live.view.wait_for(live.as_of).await;
        if live.view.needs_rebuild() {
            // It lost track while this read waited: the rebuilt view answers instead.
            live = self.get_or_install(prepared, values).await?;
            live.view.wait_for(live.as_of).await;
        }
        if let Some(e) = live.view.failure() {
            return Err(RuntimeError::Internal(e));
        }
        let key = lookup_key(prepared, values);
        if live.sorts_on_read {
            let snapshot = live.view.snapshot(&key);
            return finish(&prepared.query, snapshot.rows, snapshot.upper, values)
                .map(|r| self.as_of_now(r));
        }
        read_page(&live.view, &key, &prepared.query, values).map(|r| self.as_of_now(r))
    }

    /// A view that reads no table is final: its frontier is the end of time. Its answer
    /// holds now, so it reports the clock's open tick (a number clients can hold).
    fn as_of_now(&self, mut result: QueryResult) -> QueryResult {
        if result.upper == Ts::MAX {
            result.upper = self.engine.open_ts();
        }
        result
    }

    /// A subscription to a prepared shape for a request's parameter values. With a top-level
    /// LIMIT/OFFSET the pushed result stays limited: the subscription reads a window of the
    /// pipe's view ([`Views::window_of_view`]), or else a view of its own whose plan keeps
    /// the top rows per key (one per limit value).
    pub(super) async fn subscribe(
        &self,
        prepared: &Prepared,
        values: &BTreeMap<String, Value>,
    ) -> Result<Subscription, RuntimeError> {
        let key_columns: Vec<usize> = prepared.keys.iter().map(|k| k.column).collect();
        let (lease, view) = if prepared.query.limit.is_none() && prepared.query.offset.is_none() {
            let live = self.get_or_install(prepared, values).await?;
            let view = live.view.clone();
            (Lease::new(live), view)
        } else {
            let number = |e: &Option<Expr>| -> Result<Option<u64>, RuntimeError> {
                e.as_ref()
                    .map(|e| {
                        let v = e.bind(values).map_err(bad)?.eval(&[]);
                        v.as_i64()
                            .filter(|n| *n >= 0)
                            .map(|n| n as u64)
                            .ok_or_else(|| {
                                bad(format!(
                                    "LIMIT/OFFSET must be a non-negative integer, got {}",
                                    v.to_text()
                                ))
                            })
                    })
                    .transpose()
            };
            let (limit, offset) = (
                number(&prepared.query.limit)?,
                number(&prepared.query.offset)?,
            );
            if let Some(windowed) = self
                .window_of_view(prepared, values, (offset.unwrap_or(0), limit))
                .await?
            {
                windowed
            } else {
                let plan = &prepared.query.plan;
                let top = petrel_sql::Plan {
                    columns: plan.columns.clone(),
                    node: petrel_sql::PlanNode::TopK {
                        input: Box::new(plan.clone()),
                        order_by: prepared.query.order_by.clone(),
                        limit,
                        offset: offset.unwrap_or(0),
                        partition_by: key_columns.iter().map(|&c| Expr::Column(c)).collect(),
                    },
                };
                let query = Query {
                    plan: top,
                    ..prepared.query.clone()
                };
                let mut bound: Vec<(String, Value)> = prepared
                    .bound
                    .iter()
                    .filter_map(|p| values.get(p).map(|v| (p.clone(), v.clone())))
                    .collect();
                bound.push(("__limit".into(), Value::UInt(limit.unwrap_or(u64::MAX))));
                bound.push(("__offset".into(), Value::UInt(offset.unwrap_or(0))));
                let key = ViewKey {
                    shape: prepared.shape.clone(),
                    bound,
                };
                let live = self
                    .lookup_or_install(prepared, key, &query, values)
                    .await?;
                let view = live.view.clone();
                (Lease::new(live), view)
            }
        };
        let live = &lease.0;
        live.view.wait_for(live.as_of).await;
        let key = lookup_key(prepared, values);
        let order = row_order(&bind_order(&prepared.query, values)?);
        Ok(Subscription {
            view,
            _lease: lease,
            key,
            key_columns,
            columns: prepared.query.plan.columns[..prepared.query.visible].to_vec(),
            order,
            upsert_key: upsert_key(&prepared.query),
        })
    }

    /// Installs an ad-hoc query, reads it once caught up, and drops it: when it is read,
    /// when it runs past the query time limit (408), and when the request is abandoned (a
    /// client that disconnects drops this future, and with it the dataflow).
    pub(super) async fn run_once(
        &self,
        prepared: PreparedSql,
    ) -> Result<QueryResult, RuntimeError> {
        // Ad-hoc queries share the workers with the views: past the limit a query is refused
        // at once (as ClickHouse's max_concurrent_queries does) rather than queued behind
        // others, so a burst of them cannot hold back ingest and pulls.
        let Ok(_slot) = self.query_slots.clone().try_acquire_owned() else {
            self.counters
                .queries_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err(RuntimeError::Exhausted(format!(
                "{} ad-hoc queries are running (the server's --max-concurrent-queries): retry when one ends",
                self.query_limits.concurrent
            )));
        };
        let budget = RowBudget::new(self.query_limits.max_rows);
        let live = self.install(
            &prepared.query,
            &prepared.values,
            Vec::new(),
            true,
            prepared.tables,
            "sql".into(),
            None,
            Some(budget.clone()),
            false,
        )?;
        lock(&self.adhoc).insert(live.id, live.view.clone());
        let mut dropped_at_exit = DropView {
            views: self,
            id: live.id,
            ended: false,
        };
        let waited =
            tokio::time::timeout(self.query_limits.timeout, live.view.wait_for(live.as_of)).await;
        dropped_at_exit.ended = true;
        if waited.is_err() {
            self.counters.query_timeouts.fetch_add(1, Ordering::Relaxed);
            return Err(RuntimeError::Timeout(format!(
                "the query did not finish within {} ms (the server's --query-timeout-ms) and was cancelled",
                self.query_limits.timeout.as_millis()
            )));
        }
        if budget.exceeded() {
            self.counters
                .queries_too_large
                .fetch_add(1, Ordering::Relaxed);
            return Err(RuntimeError::TooLarge(format!(
                "the query's joins produced more than {} rows (the server's --query-max-rows) and it was cancelled",
                budget.limit()
            )));
        }
        if let Some(e) = live.view.failure() {
            return Err(RuntimeError::Internal(e));
        }
        if prepared.query.fill.is_some() {
            let snapshot = live.view.snapshot(&[]);
            return finish(
                &prepared.query,
                snapshot.rows,
                snapshot.upper,
                &prepared.values,
            )
            .map(|r| self.as_of_now(r));
        }
        read_page(&live.view, &[], &prepared.query, &prepared.values).map(|r| self.as_of_now(r))
    }

    /// Done once every view that reads one of `tables` now has passed `ts` (or was dropped);
    /// owns what it waits on, so it can outlive the request that made it.
    pub(super) fn read_by_readers(
        &self,
        tables: &[String],
        ts: Ts,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let readers: Vec<Arc<Live>> = lock(&self.live)
            .values()
            .filter(|l| tables.iter().any(|t| l.tables.contains(t)))
            .cloned()
            .collect();
        async move {
            for l in readers {
                l.view.wait_for(ts).await;
            }
        }
    }

    /// Waits until every live view reading `table` holds the changes at `ts`.
    pub(super) async fn wait_for_readers(&self, table: &str, ts: Ts) {
        self.read_by_readers(&[table.to_string()], ts).await
    }
}

/// Where a plan's output column comes from: `Some(i)` when it is the i-th GROUP BY key of
/// the aggregation under it (through projections and filters).
fn group_key_origin(plan: &petrel_sql::Plan, column: usize) -> Option<usize> {
    use petrel_sql::PlanNode;
    match &plan.node {
        PlanNode::Project { input, exprs } => match exprs.get(column)? {
            Expr::Column(c) => group_key_origin(input, *c),
            _ => None,
        },
        PlanNode::Filter { input, .. }
        | PlanNode::TemporalFilter { input, .. }
        | PlanNode::Distinct { input }
        | PlanNode::TopK { input, .. } => group_key_origin(input, column),
        PlanNode::Aggregate { keys, .. } => (column < keys.len()).then_some(column),
        _ => None,
    }
}

/// The visible columns that key an upsert stream (see [`Subscription::upsert_key`]).
fn upsert_key(query: &Query) -> Vec<usize> {
    let keys: Vec<usize> = (0..query.visible)
        .filter(|&c| group_key_origin(&query.plan, c).is_some())
        .collect();
    if keys.is_empty() {
        (0..query.visible).collect()
    } else {
        keys
    }
}

/// The view key a request reads: each lifted parameter's value in its column's type.
fn lookup_key(prepared: &Prepared, values: &BTreeMap<String, Value>) -> Row {
    prepared
        .keys
        .iter()
        .map(|k| {
            let v = values.get(&k.param).cloned().unwrap_or(Value::Null);
            k.ty.coerce(&v).unwrap_or(v)
        })
        .collect()
}
