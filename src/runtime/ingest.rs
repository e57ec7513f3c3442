//! Writes: rows decoded from request bodies (NDJSON, CSV, Parquet) and Kafka batches land in
//! their datasource (bad ones in its quarantine), waits for durability and visibility,
//! truncate and delete.

use super::*;

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

/// How long an Events API request waits for the views to catch up before it answers 429.
const ADMIT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// The longest accepted rows count as waiting for the views, whatever the views do (rows
/// count as waiting for the storage as long as they are not stored: they are in memory).
const HOLD_AT_MOST: std::time::Duration = std::time::Duration::from_secs(600);

impl Runtime {
    /// Decodes an NDJSON body into `datasource`: good rows land, rows that do not fit go to
    /// `datasource_quarantine` with the reason. Blocking (decoding and the log write).
    pub fn ingest_ndjson(
        &self,
        datasource: &str,
        body: &[u8],
    ) -> Result<IngestReport, RuntimeError> {
        self.ingest_ndjson_chunks(datasource, &[body])
    }

    /// [`Runtime::ingest_ndjson`] of the body made of `chunks`, as a request's body arrives:
    /// decoded where the chunks lie (only a line cut by a chunk's end is copied).
    pub fn ingest_ndjson_chunks<B: AsRef<[u8]>>(
        &self,
        datasource: &str,
        chunks: &[B],
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
            crate::ingest::decode_ndjson_chunks(decoder, chunks, now, &import_id);
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
            // ClickHouse writes a Tuple column as one field per element: with exactly that
            // many fields, each tuple column takes its elements' fields.
            let widths: Vec<usize> = columns
                .iter()
                .map(|c| match c.ty.base() {
                    petrel_value::ColumnType::Tuple(types) => types.len().max(1),
                    _ => 1,
                })
                .collect();
            let flattened =
                record.len() != columns.len() && record.len() == widths.iter().sum::<usize>();
            let mut fields = record.iter();
            let cells = widths
                .iter()
                .map(|&w| {
                    let text = if flattened && w > 1 {
                        let items: Vec<String> = fields
                            .by_ref()
                            .take(w)
                            .map(|f| format!("'{}'", f.replace('\'', "\\'")))
                            .collect();
                        format!("({})", items.join(","))
                    } else {
                        fields.next().unwrap_or("").to_string()
                    };
                    crate::ingest::Cell::Text(text)
                })
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

    /// Waits until the views have read, and the storage has stored, enough of the rows
    /// accepted before to take another Events API request (`max_waiting_rows`); 429 if they
    /// do not within `ADMIT_PATIENCE`.
    pub async fn admit_events(&self) -> Result<(), RuntimeError> {
        self.admission.admit(ADMIT_PATIENCE).await
    }

    /// Counts `rows` accepted into `datasource` (and its quarantine) at `ts` as waiting until
    /// every view that reads them has passed `ts` and the storage holds them durably.
    pub fn hold_until_read_and_stored(&self, datasource: &str, ts: Ts, rows: u64) {
        let tables = [datasource.to_string(), format!("{datasource}_quarantine")];
        let read = self.views.read_by_readers(&tables, ts);
        let storage = self.storage.clone();
        let settled = async move {
            // A view that never passes `ts` (its dataflow stuck) must not hold the count
            // forever and refuse every later request.
            let _ = tokio::time::timeout(HOLD_AT_MOST, read).await;
            // Rows the storage has not written are in memory: a storage that refuses writes
            // holds them, and the writers' next requests wait, then get 429.
            storage.wait_durable_past(ts).await;
        };
        self.admission.hold(rows, settled);
    }

    /// Rows accepted by the Events API that some view has not read yet or the storage has
    /// not stored yet.
    pub fn waiting_rows(&self) -> u64 {
        self.admission.waiting()
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
        let names = [datasource.to_string(), format!("{datasource}_quarantine")];
        for name in &names {
            if let Some(source) = self.source(name) {
                let log = source.log.clone();
                let flushed = log.clone();
                let written = super::run_blocking(move || flushed.flush())
                    .await?
                    .map_err(|e| RuntimeError::Internal(format!("storage write failed: {e}")))?;
                // The written batches become the compaction's columns on the helper pool,
                // which takes it up once the views' folds of these rows are done. A flush
                // that found them written already (by another writer's) leaves that to it.
                if written > 0 {
                    rayon::spawn(move || log.build_held_columns());
                }
            }
            self.views.wait_for_readers(name, ts).await;
        }
        // A follower's rows are read on process 0, whose views answer for the cluster.
        if let Some(role) = self.following() {
            role.wait_visible(&names, ts)
                .await
                .map_err(|e| RuntimeError::Unavailable(e.to_string()))?;
        }
        Ok(())
    }

    /// Removes every row of a datasource: the rows are retracted, so every view that reads
    /// it updates (and subscribers receive the retractions). Returns the rows removed and the
    /// timestamp of the retraction.
    /// In a cluster, each process removes its own share (process 0 asks the others first).
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
        if self.cluster.as_ref().is_some_and(|c| c.members.len() > 1) {
            return self.delete_from_share(datasource, &query.plan, dry_run);
        }
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

    /// A cluster process's delete: each process holds its own share of the datasource's rows,
    /// so it evaluates the condition over them itself (process 0 asks the others first). The
    /// condition must be a plain row filter (no subquery).
    fn delete_from_share(
        &self,
        datasource: &str,
        plan: &petrel_sql::Plan,
        dry_run: bool,
    ) -> Result<(usize, Ts), RuntimeError> {
        use petrel_sql::PlanNode;
        fn row_filter(plan: &petrel_sql::Plan) -> Option<&petrel_sql::Expr> {
            match &plan.node {
                PlanNode::Filter { input, predicate }
                    if matches!(input.node, PlanNode::Scan { .. }) =>
                {
                    Some(predicate)
                }
                PlanNode::Project { input, exprs }
                    if exprs
                        .iter()
                        .enumerate()
                        .all(|(i, e)| matches!(e, petrel_sql::Expr::Column(c) if *c == i)) =>
                {
                    row_filter(input)
                }
                _ => None,
            }
        }
        let predicate = row_filter(plan).ok_or_else(|| {
            RuntimeError::BadRequest(
                "on a cluster, a delete condition must be a filter on the datasource's own columns (no subquery)".into(),
            )
        })?;
        let rows = self
            .read_table(datasource)
            .ok_or_else(|| RuntimeError::Internal(format!("cannot read '{datasource}'")))?;
        let found: Vec<Row> = rows
            .into_iter()
            .filter(|r| predicate.eval(r).is_true())
            .collect();
        let n = found.len();
        if dry_run || n == 0 {
            return Ok((n, self.engine.open_ts()));
        }
        let ts = self
            .engine
            .insert(datasource, found.into_iter().map(|r| (r, -1)).collect())
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        Ok((n, ts))
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
}
