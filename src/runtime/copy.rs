//! Copy pipes: a pipe's result appended to a datasource, on demand or on its cron schedule.

use super::*;

impl Runtime {
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

    /// Runs each copy pipe with a `COPY_SCHEDULE` every so many minutes, until the runtime
    /// goes away.
    pub(super) fn schedule_copies(self: &Arc<Self>) {
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
}
