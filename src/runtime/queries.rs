//! Reads: pulls of endpoints, subscriptions (with their per-token caps and byte budgets),
//! ad-hoc SQL and `q=` over a pipe's result.

use super::*;

/// Open subscriptions by token, within a cap per token.
pub(super) struct SubscriptionCounts {
    pub(super) max_per_token: usize,
    pub(super) by_token: std::sync::Mutex<std::collections::HashMap<String, usize>>,
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

impl Runtime {
    /// Answers an endpoint request: renders the pipe with `params`, finds (or installs) its
    /// view, and reads the key the parameters select.
    pub async fn query_pipe(
        &self,
        pipe: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<QueryResult, RuntimeError> {
        let project = self.project();
        let rendered = project.render_pipe(pipe, params)?;
        if recomputed_per_request(&project, pipe) {
            // Pinned to the second: recomputed for this request alone, as ClickHouse does.
            let query = project.plan_for(pipe, &rendered)?;
            let mut tables = BTreeSet::new();
            petrel_engine::scanned_tables(&query.plan, &mut tables);
            let prepared = PreparedSql::new(query, rendered.values, tables, BTreeSet::new());
            return self.views.run_once(prepared).await;
        }
        let prepared = self
            .views
            .prepare(pipe, &rendered.shape, || project.plan_for(pipe, &rendered))?;
        self.views.read(&prepared, &rendered.values).await
    }

    /// Subscribes to an endpoint with the request's parameters (validated as for a pull).
    pub async fn subscribe(
        &self,
        pipe: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<Subscription, RuntimeError> {
        let project = self.project();
        if recomputed_per_request(&project, pipe) {
            return Err(RuntimeError::BadRequest(format!(
                "The pipe '{pipe}' reads now() outside a temporal filter (a WHERE comparison of a time with now()): it is recomputed for each request and cannot be subscribed to"
            )));
        }
        let rendered = project.render_pipe(pipe, params)?;
        let prepared = self
            .views
            .prepare(pipe, &rendered.shape, || project.plan_for(pipe, &rendered))?;
        self.views.subscribe(&prepared, &rendered.values).await
    }

    /// The views that failed, each with its label and error (`GET /v0/health`).
    pub fn failed_views(&self) -> Vec<(String, String)> {
        self.views.failures()
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

    /// Restricts a prepared query to the rows a token may read: wherever it scans a
    /// datasource of `filters` (also inside the pipes it names), only the rows for which the
    /// datasource's condition holds reach it.
    pub fn filter_rows(
        &self,
        prepared: &mut PreparedSql,
        filters: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        for (datasource, condition) in filters {
            let planned = self
                .project()
                .plan_raw(
                    datasource,
                    &format!("SELECT * FROM `{datasource}` WHERE {condition}"),
                )
                .map_err(|e| {
                    RuntimeError::BadRequest(format!(
                        "the token's row filter on '{datasource}' is not valid SQL: {e}"
                    ))
                })?;
            let predicate = scan_predicate(&planned.plan, datasource).ok_or_else(|| {
                RuntimeError::BadRequest(format!(
                    "the token's row filter on '{datasource}' must be a condition on its columns"
                ))
            })?;
            prepared.filter_scans(datasource, &predicate);
        }
        Ok(())
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
        // Without an ORDER BY of its own, `q=` reads `_` in the pipe's order (pages with
        // LIMIT/OFFSET then see every row once), when its columns carry that order.
        if query.order_by.is_empty() && !result.order_by.is_empty() {
            let visible = &query.plan.columns[..query.visible.min(query.plan.columns.len())];
            let keys: Option<Vec<petrel_sql::SortKey>> = result
                .order_by
                .iter()
                .map(|(name, desc, nulls_first)| {
                    visible
                        .iter()
                        .position(|c| &c.name == name)
                        .map(|j| petrel_sql::SortKey {
                            expr: petrel_sql::Expr::Column(j),
                            desc: *desc,
                            nulls_first: *nulls_first,
                        })
                })
                .collect();
            if let Some(keys) = keys {
                query.order_by = keys;
            }
        }
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
}

/// The condition a plan of `SELECT * FROM table WHERE c` applies right over its scan.
fn scan_predicate(plan: &Plan, table: &str) -> Option<petrel_sql::Expr> {
    if let PlanNode::Filter { input, predicate } = &plan.node {
        if matches!(&input.node, PlanNode::Scan { table: t } if t == table) {
            return Some(predicate.clone());
        }
    }
    plan.inputs()
        .into_iter()
        .find_map(|input| scan_predicate(input, table))
}

/// True for a pipe pinned to the second (see `project::TimePin`): no view is kept for it.
fn recomputed_per_request(project: &crate::project::Project, pipe: &str) -> bool {
    project
        .pipes
        .get(pipe)
        .is_some_and(|p| p.time_pin == Some(crate::project::TimePin::Second))
}
