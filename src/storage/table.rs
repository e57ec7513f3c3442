//! [`TableLog`]: one datasource's history on object storage.
//!
//! - **Appends** go to memory at once (no I/O under the engine's clock lock).
//! - **Group commit**: [`TableLog::flush`] writes every waiting batch as ONE segment object;
//!   a `wait=true` request calls it after its append, so requests that arrive together share
//!   a write. A background flusher writes the rest every `flush_interval`.
//! - **Compaction**: segments turn into a Parquet part, rows in log order; the
//!   manifest's new version lists it, and only then are the segments deleted. Merges join
//!   small adjacent parts so their number stays bounded.
//! - **Replay** reads parts (by row group), segments and waiting batches as one consistent
//!   snapshot; objects a snapshot may still read are deleted only once no replay runs.
//! - **Replicas** open the same objects read-only and follow new segments (and parts, when
//!   the writer compacted segments before the replica saw them).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use object_store::path::Path;
use petrel_log::SourceLog;
use petrel_value::{Row, Value};
use petrel_view::Ts;

use super::manifest::{Manifest, PartInfo};
use super::part::{self, PartRow};
use super::part_merge;
use super::segment_codec;
use super::{Storage, StorageError};

/// One appended batch. Segments are read back with its derived `Deserialize`, and written
/// by [`segment_codec`] in the bytes its derived `Serialize` would write.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Record {
    pub(super) ts: Ts,
    /// Shared with the engine's workers while it waits in memory.
    pub(super) updates: Arc<Vec<(Row, isize)>>,
    pub(super) meta: Option<Vec<u8>>,
}

/// Drops batches whose rows are now held as columns. Where these are the last references
/// (the engine's workers let go of a batch once they have read it), each row is emptied by
/// [`petrel_value::clear_row`], without the drop glue's call per cell.
fn free_records(records: Vec<Arc<Record>>) {
    for mut record in records {
        let updates = Arc::get_mut(&mut record).and_then(|r| Arc::get_mut(&mut r.updates));
        for (row, _) in updates.into_iter().flatten() {
            petrel_value::clear_row(row);
        }
    }
}

/// A written segment: batches `first..end`.
#[derive(Clone, Debug)]
struct Segment {
    file: String,
    first: u64,
    end: u64,
    bytes: u64,
    /// Updates it holds (known once read or written).
    rows: u64,
}

impl Segment {
    fn name(first: u64, end: u64) -> String {
        format!("{first:020}-{end:020}.seg")
    }

    fn parse(file: &str, bytes: u64) -> Option<Segment> {
        let (first, end) = file.strip_suffix(".seg")?.split_once('-')?;
        Some(Segment {
            file: file.to_string(),
            first: first.parse().ok()?,
            end: end.parse().ok()?,
            bytes,
            rows: 0,
        })
    }
}

/// A written segment's batches, kept in memory until it is compacted so that the compaction
/// neither reads nor decodes what was just written. Their rows count against the storage's
/// bound on held rows until dropped; they are dropped when the table's writes pause (a
/// flusher round in which it wrote no segment), so an idle table keeps nothing.
struct Held {
    batches: HeldBatches,
    rows: u64,
    count: Arc<AtomicU64>,
}

/// How a written segment's batches are kept until their compaction.
enum HeldBatches {
    /// As the part's columns, built when the segment was written (a table without
    /// partitions or expiry, whose columns each hold values of one kind), with the batches'
    /// latest time and last metadata.
    Columns(part::HeldColumns, Ts, Option<Vec<u8>>),
    /// As the batches themselves, shared with the engine.
    Records(Vec<Arc<Record>>),
}

/// A segment's batches as a compaction takes them.
enum SegmentRows {
    Columns(part::HeldColumns, Ts, Option<Vec<u8>>),
    Records(Vec<Record>),
}

impl Drop for Held {
    fn drop(&mut self) {
        self.count.fetch_sub(self.rows, Ordering::Relaxed);
    }
}

impl State {
    /// Rows in the written segments, not compacted yet.
    fn segment_rows(&self) -> u64 {
        self.segments.iter().map(|s| s.rows).sum()
    }
}

#[derive(Default)]
struct State {
    manifest: Manifest,
    /// Written segments after the manifest's `log_start`, in order, without gaps.
    segments: Vec<Segment>,
    /// The batches of written segments still in memory, by the segment's first batch.
    held: BTreeMap<u64, Held>,
    /// Batches appended but not written yet: `len - pending.len() .. len`.
    pending: Vec<Arc<Record>>,
    pending_rows: u64,
    len: u64,
    net_rows: i64,
    last_meta: Option<Vec<u8>>,
    last_ts: Ts,
    /// Replays running now: superseded objects wait for them.
    readers: usize,
    /// Objects superseded by a compaction or merge, deleted once no replay runs.
    garbage: Vec<Path>,
    /// A replica's segments read by [`TableLog::prefetch`], not yet handed to the engine.
    fetched: Vec<(Segment, Vec<Record>)>,
}

/// A function of a stored row (a partition key, an expiry time), from the datasource's
/// definition.
pub type RowFn = Arc<dyn Fn(&Row) -> Value + Send + Sync>;

/// How a table's parts are laid out and pruned.
#[derive(Clone, Default)]
pub struct TableRules {
    /// Each part holds the rows of one value of this (`ENGINE_PARTITION_KEY`).
    pub partition: Option<RowFn>,
    /// Rows whose expiry (`ENGINE_TTL`, a date or time) is older than the storage's
    /// `keep_expired` are dropped from parts when they are compacted or merged.
    pub expiry: Option<RowFn>,
}

/// Seconds since the epoch of a date or time value.
fn epoch_secs(v: &Value) -> Option<i64> {
    match v {
        Value::Date(d) => Some(*d as i64 * 86_400),
        Value::DateTime(s) => Some(*s),
        Value::DateTime64(t, p) => Some(t / 10i64.pow(*p as u32)),
        Value::Int(i) => Some(*i),
        Value::UInt(u) => i64::try_from(*u).ok(),
        _ => None,
    }
}

/// What a table holds, for `GET /v0/datasources`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TableFigures {
    /// Net rows.
    pub rows: u64,
    /// Parquet parts.
    pub parts: usize,
    /// Bytes in parts.
    pub part_bytes: u64,
    /// Log segments not compacted yet.
    pub segments: usize,
    /// Bytes in those segments.
    pub segment_bytes: u64,
    /// Batches appended and not written yet.
    pub pending_batches: usize,
}

/// A datasource's history: manifest, parts, log segments and waiting batches.
pub struct TableLog {
    storage: Arc<Storage>,
    name: String,
    dir: String,
    columns: Vec<String>,
    rules: TableRules,
    state: Mutex<State>,
    /// Held while a segment is written, so segments are written in log order.
    flushing: Mutex<()>,
    /// Held while a compaction or merge runs.
    compacting: Mutex<()>,
    /// Held while held batches are made into columns ([`TableLog::build_held_columns`]).
    building_columns: Mutex<()>,
    /// Set when a segment is written; the flusher's next round takes it (see
    /// [`TableLog::release_held_if_idle`]).
    wrote_segment: std::sync::atomic::AtomicBool,
    /// Bytes per row of the last segment written: the next segment's buffer is sized from
    /// it, instead of growing (and being copied) a doubling at a time.
    segment_row_bytes: AtomicU64,
}

/// The most bytes a segment's buffer reserves before its encoding starts: one segment of
/// unusually wide rows (a few rows of megabytes each) must not make the next, of many small
/// rows, ask for more memory than the machine has. A larger segment's buffer grows as it is
/// written.
const SEGMENT_RESERVE_MAX: u64 = 64 << 20;

/// The bytes to reserve for a segment of `rows` rows when the last one took `per_row` bytes a
/// row: a tenth more (reserved, not yet touched), up to [`SEGMENT_RESERVE_MAX`].
fn segment_reserve(per_row: u64, rows: u64) -> usize {
    per_row
        .saturating_add(per_row / 10)
        .saturating_mul(rows)
        .min(SEGMENT_RESERVE_MAX) as usize
}

/// Encodes a segment's records into a buffer of `capacity` bytes to start with.
fn encode_records(records: &[Arc<Record>], capacity: usize) -> Result<Bytes, StorageError> {
    let mut out = Vec::with_capacity(capacity);
    segment_codec::encode_segment(&mut out, records)?;
    // A reservation that overshot (narrower rows than the last segment's) is not kept with
    // the bytes, which a store in memory holds as long as the segment.
    if out.capacity() > out.len() + out.len() / 4 {
        out.shrink_to_fit();
    }
    Ok(Bytes::from(out))
}

fn decode_records(bytes: &[u8]) -> Result<Vec<Record>, StorageError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| StorageError::Corrupt(format!("unreadable segment: {e}")))
}

/// How many of the leading items (each of so many rows) fit in `max_rows` together, at
/// least one however large, and their rows: one segment's batches, one part's segments.
fn leading_within(rows: impl Iterator<Item = u64>, max_rows: u64) -> (usize, u64) {
    let (mut take, mut total) = (0, 0);
    for n in rows {
        if take > 0 && total + n > max_rows {
            break;
        }
        total += n;
        take += 1;
    }
    (take, total)
}

/// The most parts one merge joins. A merge rewrites every row it joins, so joining several
/// small parts at once rewrites a row fewer times over its life than merging them in pairs
/// (each row about once, instead of once per doubling of its part).
const MERGE_FAN_IN: usize = 8;

/// Which neighbouring parts of one partition (their sizes in rows, in log order) to merge
/// when it has more than `max_parts`: the run of 2 to [`MERGE_FAN_IN`] parts, of at most
/// `max_rows` rows together, that rewrites the fewest rows per part it removes (the first
/// such run on ties). Returns that cost and the run.
fn merge_window(
    sizes: &[u64],
    max_parts: usize,
    max_rows: u64,
) -> Option<(f64, std::ops::Range<usize>)> {
    if sizes.len() <= max_parts {
        return None;
    }
    let mut best: Option<(f64, std::ops::Range<usize>)> = None;
    for start in 0..sizes.len() {
        let mut total = 0u64;
        for end in start + 1..=(start + MERGE_FAN_IN).min(sizes.len()) {
            total = total.saturating_add(sizes[end - 1]);
            if total > max_rows {
                break;
            }
            if end - start < 2 {
                continue;
            }
            let cost = total as f64 / (end - start - 1) as f64;
            if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                best = Some((cost, start..end));
            }
        }
    }
    best
}

/// The rows of held columns, in their order.
fn rows_of_held(held: Vec<part::HeldColumns>) -> Result<Vec<PartRow>, StorageError> {
    let mut rows = Vec::new();
    for columns in held {
        rows.extend(columns.into_rows()?);
    }
    Ok(rows)
}

/// The rows of segments taken for a compaction (each with its first batch), in log order,
/// about `known` rows in all.
fn rows_of_segments(
    taken: Vec<(u64, SegmentRows)>,
    known: u64,
) -> Result<Vec<PartRow>, StorageError> {
    // Sized once: growing a vector of a part's rows copies it several times over.
    let mut rows = Vec::with_capacity(known as usize);
    for (first, taken) in taken {
        match taken {
            SegmentRows::Records(records) => {
                for (seq, rec) in (first..).zip(records) {
                    rows.extend(Arc::unwrap_or_clone(rec.updates).into_iter().map(
                        |(row, diff)| PartRow {
                            seq,
                            ts: rec.ts,
                            diff: diff as i64,
                            row,
                        },
                    ));
                }
            }
            SegmentRows::Columns(columns, ..) => rows.extend(columns.into_rows()?),
        }
    }
    Ok(rows)
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn net(updates: &[(Row, isize)]) -> i64 {
    updates.iter().map(|(_, d)| *d as i64).sum()
}

/// A unit of replay: the work one worker takes.
enum Unit {
    PartGroup(usize, usize),
    Segment(usize),
    Pending(usize),
}

impl TableLog {
    /// Opens the table `name`: reads the latest manifest and the segments after it.
    pub(crate) fn open(
        storage: Arc<Storage>,
        name: &str,
        columns: Vec<String>,
        rules: TableRules,
    ) -> Result<TableLog, StorageError> {
        let table = TableLog {
            storage,
            name: name.to_string(),
            dir: format!("tables/{name}"),
            columns,
            rules,
            state: Mutex::new(State::default()),
            flushing: Mutex::new(()),
            compacting: Mutex::new(()),
            building_columns: Mutex::new(()),
            wrote_segment: Default::default(),
            segment_row_bytes: AtomicU64::new(0),
        };
        table.reload()?;
        if !table.storage.is_read_only() {
            table.remove_orphans()?;
        }
        Ok(table)
    }

    /// Deletes what a crash left behind: parts written but never listed in a manifest,
    /// segments already compacted, superseded manifest versions.
    fn remove_orphans(&self) -> Result<(), StorageError> {
        let manifest = self.manifest();
        for (file, _) in self.storage.list(&self.path("parts"), None)? {
            if !manifest.parts.iter().any(|p| p.file == file) {
                self.storage.delete(&self.path(&format!("parts/{file}")))?;
            }
        }
        for (file, bytes) in self.storage.list(&self.path("log"), None)? {
            if Segment::parse(&file, bytes).is_some_and(|s| s.end <= manifest.log_start) {
                self.storage.delete(&self.path(&format!("log/{file}")))?;
            }
        }
        let current = Manifest::file_name(manifest.version);
        for (file, _) in self.storage.list(&self.path("manifest"), None)? {
            if file < current {
                self.storage
                    .delete(&self.path(&format!("manifest/{file}")))?;
            }
        }
        Ok(())
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self, rel: &str) -> Path {
        self.storage.path(&format!("{}/{rel}", self.dir))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn latest_manifest(&self) -> Result<Manifest, StorageError> {
        let versions = self.storage.list(&self.path("manifest"), None)?;
        match versions.iter().rev().find(|(f, _)| f.ends_with(".json")) {
            None => Ok(Manifest::default()),
            Some((file, _)) => {
                let bytes = self.storage.get(&self.path(&format!("manifest/{file}")))?;
                serde_json::from_slice(&bytes)
                    .map_err(|e| StorageError::Corrupt(format!("manifest {file}: {e}")))
            }
        }
    }

    /// The written segments from `from` on, in order and without gaps.
    fn list_segments(&self, from: u64) -> Result<Vec<Segment>, StorageError> {
        let mut out: Vec<Segment> = Vec::new();
        for (file, bytes) in self.storage.list(&self.path("log"), None)? {
            let Some(seg) = Segment::parse(&file, bytes) else {
                continue;
            };
            if seg.end <= from {
                continue; // compacted already; its deletion did not happen before a crash
            }
            let expected = out.last().map_or(from, |s| s.end);
            if seg.first != expected {
                return Err(StorageError::Corrupt(format!(
                    "table '{}': log segment {file} does not follow batch {expected}",
                    self.name
                )));
            }
            out.push(seg);
        }
        Ok(out)
    }

    /// (Re)reads the manifest and segments: at open, and on a replica that lost track of
    /// the writer's compactions.
    fn reload(&self) -> Result<(), StorageError> {
        let manifest = self.latest_manifest()?;
        let mut segments = self.list_segments(manifest.log_start)?;
        let mut net_rows = manifest.net_rows();
        let mut last_meta = manifest.last_meta.clone();
        let mut last_ts = manifest.last_ts;
        for seg in &mut segments {
            for rec in self.read_segment(seg)? {
                net_rows += net(&rec.updates);
                seg.rows += rec.updates.len() as u64;
                last_ts = last_ts.max(rec.ts);
                if rec.meta.is_some() {
                    last_meta = rec.meta;
                }
            }
        }
        let len = segments.last().map_or(manifest.log_start, |s| s.end);
        let mut st = self.state();
        st.len = len;
        st.net_rows = net_rows;
        st.last_meta = last_meta;
        st.last_ts = last_ts;
        st.manifest = manifest;
        st.segments = segments;
        st.held.clear();
        st.pending.clear();
        st.pending_rows = 0;
        st.fetched.clear();
        Ok(())
    }

    fn read_segment(&self, seg: &Segment) -> Result<Vec<Record>, StorageError> {
        decode_records(&self.storage.get(&self.path(&format!("log/{}", seg.file)))?)
    }

    fn read_part(&self, part: &PartInfo) -> Result<Bytes, StorageError> {
        self.storage
            .get(&self.path(&format!("parts/{}", part.file)))
    }

    /// Net rows stored (insertions minus retractions).
    pub fn row_count(&self) -> u64 {
        self.state().net_rows.max(0) as u64
    }

    /// The metadata of the last batch appended with some (a source position).
    pub fn last_meta(&self) -> Option<Vec<u8>> {
        self.state().last_meta.clone()
    }

    /// Parts, segments and sizes.
    pub fn figures(&self) -> TableFigures {
        let st = self.state();
        TableFigures {
            rows: st.net_rows.max(0) as u64,
            parts: st.manifest.parts.len(),
            part_bytes: st.manifest.bytes(),
            segments: st.segments.len(),
            segment_bytes: st.segments.iter().map(|s| s.bytes).sum(),
            pending_batches: st.pending.len(),
        }
    }

    /// Rows in written segments not compacted into a part yet: the compactor's backlog.
    pub(crate) fn uncompacted_rows(&self) -> u64 {
        self.state().segment_rows()
    }

    /// The current manifest.
    pub fn manifest(&self) -> Manifest {
        self.state().manifest.clone()
    }

    /// Writes every waiting batch (group commit): the batches that arrived together share a
    /// write, in segments of at most `compact_max_rows` rows (a backlog, or batches queued
    /// while the storage was slow, is not encoded into one buffer, nor compacted from one
    /// segment larger than a part). Returns how many batches it wrote. Batches stay waiting
    /// if a write fails, and the next flush tries again.
    pub fn flush(&self) -> Result<usize, StorageError> {
        let _turn = self.flushing.lock().unwrap_or_else(|e| e.into_inner());
        let (mut first, records) = {
            let st = self.state();
            if st.pending.is_empty() {
                return Ok(0);
            }
            (st.len - st.pending.len() as u64, st.pending.clone())
        };
        let max_rows = self.storage.config.compact_max_rows;
        let mut rest = &records[..];
        while !rest.is_empty() {
            let (take, rows) =
                leading_within(rest.iter().map(|r| r.updates.len() as u64), max_rows);
            let (chunk, after) = rest.split_at(take);
            self.write_segment(first, chunk, rows)?;
            first += take as u64;
            rest = after;
        }
        Ok(records.len())
    }

    /// Writes `records` (the oldest waiting batches, from batch `first` on, `rows` updates)
    /// as one segment, and stops keeping them waiting.
    fn write_segment(
        &self,
        first: u64,
        records: &[Arc<Record>],
        rows: u64,
    ) -> Result<(), StorageError> {
        let end = first + records.len() as u64;
        let per_row = self.segment_row_bytes.load(Ordering::Relaxed);
        let bytes = encode_records(records, segment_reserve(per_row, rows))?;
        if let Some(per_row) = (bytes.len() as u64).checked_div(rows) {
            self.segment_row_bytes.store(per_row, Ordering::Relaxed);
        }
        let size = bytes.len() as u64;
        let file = Segment::name(first, end);
        let writing = (self.storage).start_put(&self.path(&format!("log/{file}")), bytes)?;
        // The batches are held as they are; [`TableLog::build_held_columns`] makes them the
        // part's columns later, off the write's path. A failed write drops them again.
        let held = self.hold(records, rows);
        writing.wait()?;
        self.storage.segment_written.store(true, Ordering::SeqCst);
        self.wrote_segment.store(true, Ordering::SeqCst);
        let mut st = self.state();
        st.pending.drain(..records.len());
        st.pending_rows = st.pending_rows.saturating_sub(rows);
        if let Some(held) = held {
            st.held.insert(first, held);
        }
        st.segments.push(Segment {
            file,
            first,
            end,
            bytes: size,
            rows,
        });
        let due = (self.storage.config).compaction_due(st.segments.iter().map(|s| s.rows));
        let backlog = st.segment_rows();
        drop(st);
        let bound = self.storage.idle_backlog_max();
        (self.storage.compactor_priority).raise_if_behind(backlog, bound);
        if due && !self.storage.is_stopped() {
            self.storage.wake_compactor();
        }
        Ok(())
    }

    /// Keeps a written segment's batches (`records`, `rows` updates) for its compaction, when
    /// the storage holds fewer than [`Storage::held_rows_max`] rows of segments in all (beyond
    /// that the compaction reads the segment back). They are kept as they are (an `Arc` each,
    /// shared with the engine): making them the part's columns costs about a third of a
    /// write's CPU, which a `wait=true` writer would otherwise pay while the engine's workers
    /// fold its rows on the same cores ([`TableLog::build_held_columns`] does it later).
    fn hold(&self, records: &[Arc<Record>], rows: u64) -> Option<Held> {
        let count = &self.storage.held_rows;
        let max = self.storage.held_rows_max();
        count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                (held + rows <= max).then_some(held + rows)
            })
            .ok()?;
        Some(Held {
            batches: HeldBatches::Records(records.to_vec()),
            rows,
            count: count.clone(),
        })
    }

    /// Whether this table's parts can be written from held columns: not where rows are split
    /// by partition or dropped by expiry, which reads them one by one.
    fn parts_from_columns(&self) -> bool {
        self.rules.partition.is_none() && self.rules.expiry.is_none()
    }

    /// A held segment's batches (from the log's batch `first` on) as the part's columns, with
    /// the batches' latest time and last metadata; `None` where a part is not written from
    /// columns (a table with partitions or expiry, or columns holding values of several
    /// kinds: its compaction takes the rows).
    fn held_columns(&self, first: u64, records: &[Arc<Record>]) -> Option<HeldBatches> {
        if !self.parts_from_columns() {
            return None;
        }
        let batches = records.iter().map(|r| (r.ts, r.updates.as_slice()));
        let columns =
            part::HeldColumns::build(first, batches, self.columns.len()).unwrap_or_else(|e| {
                tracing::warn!(table = %self.name, error = %e, "cannot hold a segment as columns");
                None
            })?;
        let last_ts = records.iter().map(|r| r.ts).max().unwrap_or(0);
        let last_meta = records.iter().rev().find_map(|r| r.meta.clone());
        Some(HeldBatches::Columns(columns, last_ts, last_meta))
    }

    /// Makes the written segments held as batches the part's columns (see
    /// [`TableLog::hold`]), each built outside the table's lock and kept only if its
    /// compaction has not taken the batches meanwhile. Called after a write, where it runs
    /// while the cores are free (the helper pool, once the views' folds are done), while the
    /// batches are still in the cache; a compaction that comes first builds them itself. One
    /// caller builds at a time: another one returns at once, and the builder looks again for
    /// segments written meanwhile before it stops.
    pub fn build_held_columns(&self) {
        if !self.parts_from_columns() {
            return;
        }
        let mut after = None;
        loop {
            let Ok(turn) = self.building_columns.try_lock() else {
                return;
            };
            let waiting = self.held_as_batches(after);
            if waiting.is_empty() {
                return;
            }
            for (first, records) in waiting {
                after = Some(first);
                let Some(columns) = self.held_columns(first, &records) else {
                    continue;
                };
                let mut st = self.state();
                if let Some(held) = st.held.get_mut(&first) {
                    if matches!(held.batches, HeldBatches::Records(_)) {
                        // The batches are dropped after the lock is released.
                        let batches = std::mem::replace(&mut held.batches, columns);
                        drop(st);
                        if let HeldBatches::Records(records) = batches {
                            free_records(records);
                        }
                    }
                }
            }
            drop(turn);
        }
    }

    /// The held segments still kept as batches, after the segment starting at `after`.
    fn held_as_batches(&self, after: Option<u64>) -> Vec<(u64, Vec<Arc<Record>>)> {
        let st = self.state();
        let newer = match after {
            Some(first) => st.held.range(first + 1..),
            None => st.held.range(..),
        };
        newer
            .filter_map(|(&first, held)| match &held.batches {
                HeldBatches::Records(records) => Some((first, records.clone())),
                HeldBatches::Columns(..) => None,
            })
            .collect()
    }

    /// Stops keeping written segments' batches in memory (their compaction reads them back).
    pub(crate) fn release_held(&self) {
        let held = std::mem::take(&mut self.state().held);
        drop(held);
    }

    /// [`TableLog::release_held`] when no segment of this table was written since the last
    /// call: its writes paused, and what it holds would stay in memory until they resume.
    pub(crate) fn release_held_if_idle(&self) {
        if !self.wrote_segment.swap(false, Ordering::SeqCst) {
            self.release_held();
        }
    }

    /// A segment's batches: the ones kept since it was written (as columns or batches), or
    /// else read back from storage.
    fn segment_rows(&self, seg: &Segment) -> Result<SegmentRows, StorageError> {
        let Some(mut held) = self.state().held.remove(&seg.first) else {
            return self.read_segment(seg).map(SegmentRows::Records);
        };
        let mut batches = std::mem::replace(&mut held.batches, HeldBatches::Records(Vec::new()));
        // Batches whose columns were not built yet (the write's turn to build them has not
        // come): built here, so that the part is still written from columns.
        if let HeldBatches::Records(records) = &batches {
            if let Some(columns) = self.held_columns(seg.first, records) {
                batches = columns;
            }
        }
        match batches {
            HeldBatches::Columns(columns, last_ts, last_meta) => {
                Ok(SegmentRows::Columns(columns, last_ts, last_meta))
            }
            HeldBatches::Records(records) => Ok(SegmentRows::Records(
                records
                    .into_iter()
                    .map(|r| {
                        Arc::try_unwrap(r).unwrap_or_else(|r| Record {
                            ts: r.ts,
                            updates: r.updates.clone(),
                            meta: r.meta.clone(),
                        })
                    })
                    .collect(),
            )),
        }
    }

    /// Compacts segments into a part when they hold enough rows (or always, with `force`),
    /// then merges parts while there are too many, then deletes superseded objects if no
    /// replay runs.
    pub fn compact(&self, force: bool) -> Result<(), StorageError> {
        if self.storage.is_read_only() {
            return Ok(());
        }
        let _turn = self.compacting.lock().unwrap_or_else(|e| e.into_inner());
        // A background round woken just before the storage stopped: the stop waited for the
        // compaction running then, not for one starting after it.
        if !force && self.storage.is_stopped() {
            return Ok(());
        }
        let config = &self.storage.config;
        loop {
            let segments = self.state().segments.clone();
            let due = || config.compaction_due(segments.iter().map(|s| s.rows));
            if segments.is_empty() || !(force || due()) {
                break;
            }
            // At most `compact_max_rows` per part (at least one segment), so a backlog
            // compacts in bounded memory, run after run.
            let (take, _) =
                leading_within(segments.iter().map(|s| s.rows), config.compact_max_rows);
            self.compact_segments(&segments[..take])?;
        }
        self.merge_parts()?;
        self.collect_garbage();
        Ok(())
    }

    /// Returns once a running compaction or merge has finished.
    pub(crate) fn wait_for_compaction(&self) {
        drop(self.compacting.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Drops the rows that expired longer ago than the storage keeps expired rows (their
    /// views retracted them then; replays would filter them); returns the net rows dropped.
    fn drop_expired(&self, rows: &mut Vec<PartRow>) -> i64 {
        let Some(expiry) = &self.rules.expiry else {
            return 0;
        };
        let keep_ms = self.storage.config.keep_expired.as_millis() as i64;
        let horizon = (wall_ms() as i64 - keep_ms) / 1000;
        let before: i64 = rows.iter().map(|r| r.diff).sum();
        rows.retain(|r| epoch_secs(&expiry(&r.row)).is_none_or(|t| t >= horizon));
        before - rows.iter().map(|r| r.diff).sum::<i64>()
    }

    /// Splits rows by partition (one group when the table has no partition key).
    fn by_partition(&self, rows: Vec<PartRow>) -> Vec<(Option<Value>, Vec<PartRow>)> {
        let Some(partition) = &self.rules.partition else {
            return vec![(None, rows)];
        };
        let mut groups: std::collections::BTreeMap<Value, Vec<PartRow>> = Default::default();
        for r in rows {
            groups.entry(partition(&r.row)).or_default().push(r);
        }
        groups.into_iter().map(|(k, v)| (Some(k), v)).collect()
    }

    /// Writes `rows` (of batches `first..end`, one partition) as the part `file` (a name
    /// never used before: compactions name parts by their batches and partition index,
    /// merges by the manifest version they create) and describes it.
    fn write_part(
        &self,
        file: String,
        first: u64,
        end: u64,
        partition: Option<Value>,
        mut rows: Vec<PartRow>,
    ) -> Result<PartInfo, StorageError> {
        let encoded = part::encode_taking(&self.columns, &mut rows)?;
        let figures = part::PartFigures::of_rows(&rows);
        self.put_part(file, first, end, partition, encoded, figures)
    }

    /// Stores an encoded part (of batches `first..end`, one partition) as `file` and
    /// describes it.
    fn put_part(
        &self,
        file: String,
        first: u64,
        end: u64,
        partition: Option<Value>,
        encoded: part::EncodedPart,
        figures: part::PartFigures,
    ) -> Result<PartInfo, StorageError> {
        let bytes = encoded.bytes.len() as u64;
        self.storage
            .put(&self.path(&format!("parts/{file}")), encoded.bytes)?;
        Ok(PartInfo {
            file,
            first,
            end,
            partition,
            updates: figures.updates,
            net_rows: figures.net_rows,
            bytes,
            row_groups: encoded.row_groups,
            min_ts: figures.min_ts,
            max_ts: figures.max_ts,
            columns: encoded.stats,
        })
    }

    /// Writes the next manifest version; on success it is the table's state.
    fn commit_manifest(&self, next: &Manifest) -> Result<(), StorageError> {
        let body = serde_json::to_vec_pretty(next)
            .map_err(|e| StorageError::Corrupt(format!("cannot encode the manifest: {e}")))?;
        self.storage.put_new(
            &self.path(&format!("manifest/{}", Manifest::file_name(next.version))),
            body.into(),
        )
    }

    fn compact_segments(&self, segments: &[Segment]) -> Result<(), StorageError> {
        let (first, end) = (segments[0].first, segments[segments.len() - 1].end);
        let mut last_meta = None;
        let mut last_ts = 0;
        let mut taken = Vec::with_capacity(segments.len());
        for seg in segments {
            let rows = self.segment_rows(seg)?;
            match &rows {
                SegmentRows::Columns(_, ts, meta) => {
                    last_ts = last_ts.max(*ts);
                    if meta.is_some() {
                        last_meta.clone_from(meta);
                    }
                }
                SegmentRows::Records(records) => {
                    for rec in records {
                        last_ts = last_ts.max(rec.ts);
                        if rec.meta.is_some() {
                            last_meta.clone_from(&rec.meta);
                        }
                    }
                }
            }
            taken.push((seg.first, rows));
        }
        let file = |i: usize| format!("{first:020}-{end:020}-{i:04}.parquet");
        let mut infos = Vec::new();
        let mut dropped = 0;
        let held_as_columns = taken
            .iter()
            .all(|(_, rows)| matches!(rows, SegmentRows::Columns(..)));
        let rows = if held_as_columns {
            // Every segment held as columns: they are the part's, as they are.
            let held = taken.into_iter().filter_map(|(_, rows)| match rows {
                SegmentRows::Columns(columns, ..) => Some(columns),
                SegmentRows::Records(_) => None,
            });
            match part::encode_held(&self.columns, held.collect())? {
                Ok((encoded, figures)) => {
                    infos.push(self.put_part(file(0), first, end, None, encoded, figures)?);
                    None
                }
                // A column's kinds differ between segments: written from the rows.
                Err(held) => Some(rows_of_held(held)?),
            }
        } else {
            let known: u64 = segments.iter().map(|s| s.rows).sum();
            let known = known.min(self.storage.config.compact_max_rows);
            Some(rows_of_segments(taken, known)?)
        };
        if let Some(mut rows) = rows {
            dropped = self.drop_expired(&mut rows);
            for (i, (partition, rows)) in self.by_partition(rows).into_iter().enumerate() {
                infos.push(self.write_part(file(i), first, end, partition, rows)?);
            }
        }
        let old = self.manifest();
        let mut next = old.clone();
        next.version += 1;
        next.parts.extend(infos);
        next.log_start = end;
        next.last_ts = next.last_ts.max(last_ts);
        if last_meta.is_some() {
            next.last_meta = last_meta;
        }
        self.commit_manifest(&next)?;
        let mut st = self.state();
        st.manifest = next;
        st.segments.retain(|s| s.first >= end);
        st.held.retain(|&first, _| first >= end);
        st.net_rows -= dropped;
        for seg in segments {
            let p = self.path(&format!("log/{}", seg.file));
            st.garbage.push(p);
        }
        let m = self.path(&format!("manifest/{}", Manifest::file_name(old.version)));
        if old.version > 0 {
            st.garbage.push(m);
        }
        Ok(())
    }

    /// Merges parts while a partition has more than `max_parts`: each time the run of
    /// neighbouring parts (in log order) that [`merge_window`] picks, over every partition.
    /// Expired rows are dropped on the way.
    fn merge_parts(&self) -> Result<(), StorageError> {
        let config = &self.storage.config;
        loop {
            let manifest = self.manifest();
            let mut by_partition: BTreeMap<Option<&Value>, Vec<usize>> = BTreeMap::new();
            for (i, p) in manifest.parts.iter().enumerate() {
                by_partition
                    .entry(p.partition.as_ref())
                    .or_default()
                    .push(i);
            }
            let best = by_partition
                .values()
                .filter_map(|parts| {
                    let sizes: Vec<u64> =
                        parts.iter().map(|&i| manifest.parts[i].updates).collect();
                    merge_window(&sizes, config.max_parts, config.merge_max_rows)
                        .map(|(cost, run)| (cost, parts[run].to_vec()))
                })
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let Some((_, chosen)) = best else {
                return Ok(());
            };
            let run: Vec<&PartInfo> = chosen.iter().map(|&i| &manifest.parts[i]).collect();
            let (merged, dropped) = self.merge_run(&run, manifest.version + 1)?;
            let mut next = manifest.clone();
            next.version += 1;
            next.parts[chosen[0]] = merged;
            // The run's indices rise: removing from the last keeps the others in place.
            for &i in chosen[1..].iter().rev() {
                next.parts.remove(i);
            }
            self.commit_manifest(&next)?;
            let mut st = self.state();
            st.manifest = next;
            st.net_rows -= dropped;
            for p in &run {
                let path = self.path(&format!("parts/{}", p.file));
                st.garbage.push(path);
            }
            let m = self.path(&format!(
                "manifest/{}",
                Manifest::file_name(manifest.version)
            ));
            st.garbage.push(m);
        }
    }

    /// Merges neighbouring parts of one partition (`run`, in log order) into one part, named
    /// for the manifest `version` that will list it: by copying their row groups where they
    /// store their columns alike, their row groups are mostly full and no row can have
    /// expired ([`part_merge`]), else row by row, streaming (one record batch per part at a
    /// time) and dropping expired rows on the way. Returns the part and the net rows dropped.
    fn merge_run(&self, run: &[&PartInfo], version: u64) -> Result<(PartInfo, i64), StorageError> {
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Err(StorageError::Corrupt("a merge of no parts".into()));
        };
        let file = format!("{:020}-{:020}-m{version}.parquet", first.first, last.end);
        let files = run
            .iter()
            .map(|p| part_merge::PartFile::open(self.read_part(p)?))
            .collect::<Result<Vec<_>, StorageError>>()?;
        // Expiry is a function of the row's values: a copy would keep expired rows.
        let (merged, dropped) =
            if self.rules.expiry.is_none() && part_merge::applies(&files, self.columns.len()) {
                (part_merge::concatenate(&files, run)?, 0)
            } else {
                let readers = files
                    .into_iter()
                    .map(|f| part::PartReader::open(f.into_bytes()))
                    .collect::<Result<Vec<_>, StorageError>>()?;
                self.merge_rows(run, readers)?
            };
        let bytes = merged.encoded.bytes.len() as u64;
        self.storage
            .put(&self.path(&format!("parts/{file}")), merged.encoded.bytes)?;
        let info = PartInfo {
            file,
            first: first.first,
            end: last.end,
            partition: first.partition.clone(),
            updates: merged.updates,
            net_rows: merged.net_rows,
            bytes,
            row_groups: merged.encoded.row_groups,
            min_ts: merged.min_ts,
            max_ts: merged.max_ts,
            columns: merged.encoded.stats,
        };
        Ok((info, dropped))
    }

    /// Merges parts row by row, dropping expired rows; returns the merged part and the net
    /// rows dropped.
    fn merge_rows(
        &self,
        run: &[&PartInfo],
        mut readers: Vec<part::PartReader>,
    ) -> Result<(part_merge::Merged, i64), StorageError> {
        // The kinds that store every part's values: where a part holds only NULLs in a
        // column, the others decide.
        let holds =
            |p: &PartInfo| -> Vec<bool> { p.columns.iter().map(|c| c.min.is_some()).collect() };
        let mut stored = readers.iter().zip(run).map(|(r, p)| (r.kinds(), holds(p)));
        let Some((mut kinds, mut has)) = stored.next() else {
            return Err(StorageError::Corrupt("a merge of no parts".into()));
        };
        for (next_kinds, next_has) in stored {
            kinds = kinds.merge(&has, &next_kinds, &next_has);
            has = (0..has.len().max(next_has.len()))
                .map(|c| {
                    has.get(c).copied().unwrap_or(true) || next_has.get(c).copied().unwrap_or(true)
                })
                .collect();
        }
        let mut writer = part::PartWriter::with_kinds(&self.columns, kinds)?;
        let mut out: Vec<PartRow> = Vec::with_capacity(part::ROW_GROUP_ROWS);
        let (mut updates, mut net_rows, mut dropped) = (0u64, 0i64, 0i64);
        let (mut min_ts, mut max_ts) = (Ts::MAX, 0);
        let mut flush = |out: &mut Vec<PartRow>, writer: &mut part::PartWriter| {
            dropped += self.drop_expired(out);
            updates += out.len() as u64;
            for r in out.iter() {
                net_rows += r.diff;
                min_ts = min_ts.min(r.ts);
                max_ts = max_ts.max(r.ts);
            }
            let written = writer.write(out);
            out.clear();
            written
        };
        // The parts one after the other, in log order: the merged part keeps it.
        for reader in &mut readers {
            while let Some(rows) = reader.next_rows()? {
                for row in rows {
                    out.push(row);
                    if out.len() >= part::ROW_GROUP_ROWS {
                        flush(&mut out, &mut writer)?;
                    }
                }
            }
        }
        flush(&mut out, &mut writer)?;
        let merged = part_merge::Merged {
            encoded: writer.finish()?,
            updates,
            net_rows,
            min_ts: if updates == 0 { 0 } else { min_ts },
            max_ts,
        };
        Ok((merged, dropped))
    }

    fn collect_garbage(&self) {
        let garbage = {
            let mut st = self.state();
            if st.readers > 0 {
                return;
            }
            std::mem::take(&mut st.garbage)
        };
        for p in garbage {
            if let Err(e) = self.storage.delete(&p) {
                tracing::warn!(object = %p, error = %e, "cannot delete a superseded object");
            }
        }
    }

    /// A replica: reads the segments the writer added since the last call (and, when the
    /// writer compacted some before this replica saw them, those batches from its parts),
    /// keeping them until [`SourceLog::poll_new`] hands them to the engine. No I/O happens
    /// under the engine's lock that way.
    pub fn prefetch(&self) -> Result<(), StorageError> {
        let from = {
            let st = self.state();
            st.fetched.last().map_or(st.len, |(s, _)| s.end)
        };
        let offset = self.path(&format!("log/{from:020}"));
        let mut found: Vec<Segment> = self
            .storage
            .list(&self.path("log"), Some(&offset))?
            .into_iter()
            .filter_map(|(f, b)| Segment::parse(&f, b))
            .filter(|s| s.end > from)
            .collect();
        found.sort_by_key(|s| s.first);
        let mut at = from;
        let mut fetched = Vec::new();
        if found.first().is_none_or(|s| s.first > at) {
            // Batches from `at` may have moved into parts: read them there.
            let manifest = self.latest_manifest()?;
            let upto = found
                .first()
                .map_or(manifest.log_start, |s| s.first.min(manifest.log_start));
            if upto > at {
                let records = self.records_from_parts(&manifest, at, upto)?;
                fetched.push((
                    Segment {
                        file: String::new(),
                        first: at,
                        end: upto,
                        bytes: 0,
                        rows: 0,
                    },
                    records,
                ));
                at = upto;
            }
            self.state().manifest = manifest;
        }
        for seg in found {
            if seg.first != at {
                break; // a gap the next call fills from the manifest
            }
            let records = match self.read_segment(&seg) {
                Ok(r) => r,
                Err(StorageError::Store(object_store::Error::NotFound { .. })) => break,
                Err(e) => return Err(e),
            };
            at = seg.end;
            let rows = records.iter().map(|r| r.updates.len() as u64).sum();
            fetched.push((Segment { rows, ..seg }, records));
        }
        self.state().fetched.extend(fetched);
        Ok(())
    }

    /// Batches `from..upto` rebuilt from the parts that hold them.
    fn records_from_parts(
        &self,
        manifest: &Manifest,
        from: u64,
        upto: u64,
    ) -> Result<Vec<Record>, StorageError> {
        let mut batches: Vec<(Ts, Vec<(Row, isize)>)> =
            (from..upto).map(|_| (0, Vec::new())).collect();
        for p in manifest
            .parts
            .iter()
            .filter(|p| p.end > from && p.first < upto)
        {
            part::decode_with_seq(self.read_part(p)?, &mut |seq, row, ts, diff| {
                if (from..upto).contains(&seq) {
                    let batch = &mut batches[(seq - from) as usize];
                    batch.0 = ts;
                    batch.1.push((row, diff));
                }
            })?;
        }
        Ok(batches
            .into_iter()
            .map(|(ts, updates)| Record {
                ts,
                updates: Arc::new(updates),
                meta: None,
            })
            .collect())
    }

    /// Replays one unit of a snapshot.
    fn replay_unit(
        &self,
        snap: &Snapshot,
        unit: &Unit,
        upto: u64,
        cache: &mut Option<(usize, Bytes)>,
        f: &mut dyn FnMut(Row, Ts, isize),
    ) -> Result<(), StorageError> {
        match *unit {
            Unit::PartGroup(p, g) => {
                let bytes = match cache {
                    Some((cached, bytes)) if *cached == p => bytes.clone(),
                    _ => {
                        let bytes = self.read_part(&snap.parts[p])?;
                        *cache = Some((p, bytes.clone()));
                        bytes
                    }
                };
                part::decode(bytes, Some(vec![g]), upto, f)
            }
            Unit::Segment(s) => {
                let seg = &snap.segments[s];
                let records = match self.read_segment(seg) {
                    Ok(r) => r,
                    // A replica's snapshot can lag the writer, who compacted this segment.
                    Err(StorageError::Store(object_store::Error::NotFound { .. }))
                        if self.storage.is_read_only() =>
                    {
                        let manifest = self.latest_manifest()?;
                        self.records_from_parts(&manifest, seg.first, seg.end)?
                    }
                    Err(e) => return Err(e),
                };
                for (i, rec) in records.into_iter().enumerate() {
                    if seg.first + i as u64 >= upto {
                        break;
                    }
                    for (row, diff) in Arc::unwrap_or_clone(rec.updates) {
                        f(row, rec.ts, diff);
                    }
                }
                Ok(())
            }
            Unit::Pending(i) => {
                if snap.pending_first + i as u64 >= upto {
                    return Ok(());
                }
                let rec = &snap.pending[i];
                for (row, diff) in rec.updates.iter() {
                    f(row.clone(), rec.ts, *diff);
                }
                Ok(())
            }
        }
    }
}

/// What one replay reads: taken under the lock at once, read without it.
struct Snapshot {
    parts: Vec<PartInfo>,
    segments: Vec<Segment>,
    pending: Vec<Arc<Record>>,
    pending_first: u64,
}

/// Counts a running replay, so superseded objects wait for it.
struct Reading<'a>(&'a TableLog);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state();
        st.readers = st.readers.saturating_sub(1);
    }
}

impl SourceLog for TableLog {
    fn append(
        &self,
        ts: Ts,
        updates: &Arc<Vec<(Row, isize)>>,
        meta: Option<&[u8]>,
    ) -> std::io::Result<u64> {
        if self.storage.is_read_only() {
            return Err(StorageError::ReadOnly.into());
        }
        let mut st = self.state();
        st.net_rows += net(updates);
        st.pending_rows += updates.len() as u64;
        st.last_ts = st.last_ts.max(ts);
        if let Some(m) = meta {
            st.last_meta = Some(m.to_vec());
        }
        st.pending.push(Arc::new(Record {
            ts,
            updates: updates.clone(),
            meta: meta.map(<[u8]>::to_vec),
        }));
        st.len += 1;
        Ok(st.len)
    }

    fn len(&self) -> u64 {
        self.state().len
    }

    fn last_ts(&self) -> Ts {
        self.state().last_ts
    }

    fn poll_new(&self) -> std::io::Result<Vec<petrel_log::TimedBatch>> {
        let mut st = self.state();
        let fetched = std::mem::take(&mut st.fetched);
        let mut out = Vec::new();
        for (seg, records) in fetched {
            for rec in records {
                st.net_rows += net(&rec.updates);
                st.last_ts = st.last_ts.max(rec.ts);
                if rec.meta.is_some() {
                    st.last_meta = rec.meta;
                }
                out.push((rec.ts, Arc::unwrap_or_clone(rec.updates)));
            }
            st.len = seg.end;
            if !seg.file.is_empty() {
                st.segments.push(seg);
            }
        }
        Ok(out)
    }

    fn replay(
        &self,
        upto: u64,
        worker: usize,
        peers: usize,
        f: &mut dyn FnMut(Row, Ts, isize),
    ) -> std::io::Result<()> {
        let snap = self.snapshot();
        let _reading = Reading(self);
        self.replay_share(&snap, upto, worker, peers, f)
    }

    fn history(self: Arc<Self>, upto: u64) -> Arc<dyn petrel_log::History> {
        let snap = self.snapshot();
        Arc::new(TableHistory {
            table: self,
            snap,
            upto,
        })
    }
}

impl TableLog {
    /// The parts, segments and waiting batches as they are now, counted as a running read
    /// (superseded objects are kept until it ends: the caller drops a [`Reading`]).
    fn snapshot(&self) -> Snapshot {
        let mut st = self.state();
        st.readers += 1;
        Snapshot {
            parts: st.manifest.parts.clone(),
            segments: st.segments.clone(),
            pending_first: st.len - st.pending.len() as u64,
            pending: st.pending.clone(),
        }
    }

    /// Replays worker `worker`'s share of the units of `snap` below batch `upto`.
    fn replay_share(
        &self,
        snap: &Snapshot,
        upto: u64,
        worker: usize,
        peers: usize,
        f: &mut dyn FnMut(Row, Ts, isize),
    ) -> std::io::Result<()> {
        let mut units = Vec::new();
        for (p, part) in snap.parts.iter().enumerate() {
            if part.first < upto {
                units.extend((0..part.row_groups).map(|g| Unit::PartGroup(p, g)));
            }
        }
        units.extend((0..snap.segments.len()).map(Unit::Segment));
        units.extend((0..snap.pending.len()).map(Unit::Pending));
        let mut cache = None;
        for (i, unit) in units.iter().enumerate() {
            if i % peers.max(1) == worker {
                self.replay_unit(snap, unit, upto, &mut cache, f)?;
            }
        }
        Ok(())
    }
}

/// A table's first batches with their units fixed when taken, for every worker of an
/// install: a compaction that turns segments into a part meanwhile would otherwise shift the
/// units between two workers' replays, replaying some batches twice and others never.
struct TableHistory {
    table: Arc<TableLog>,
    snap: Snapshot,
    upto: u64,
}

impl petrel_log::History for TableHistory {
    fn replay(
        &self,
        worker: usize,
        peers: usize,
        f: &mut dyn FnMut(Row, Ts, isize),
    ) -> std::io::Result<()> {
        self.table
            .replay_share(&self.snap, self.upto, worker, peers, f)
    }
}

impl Drop for TableHistory {
    fn drop(&mut self) {
        // The read `snapshot` counted ends: superseded objects may go now.
        drop(Reading(&self.table));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageConfig;
    use petrel_value::Value;

    fn storage(dir: &std::path::Path, read_only: bool) -> Arc<Storage> {
        let config = StorageConfig {
            compact_rows: 1,
            max_parts: 2,
            ..StorageConfig::default()
        };
        Storage::open(dir.to_str().unwrap(), read_only, config).unwrap()
    }

    /// A fresh storage under a temporary folder named after `name` that compacts only when
    /// told to, into parts (and segments) of at most 10 rows; with its folder and settings
    /// for a reopen.
    fn small_parts_storage(name: &str) -> (std::path::PathBuf, StorageConfig, Arc<Storage>) {
        let dir = std::env::temp_dir().join(format!("petrel-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = StorageConfig {
            compact_rows: u64::MAX,
            compact_segments: usize::MAX,
            compact_max_rows: 10,
            ..StorageConfig::default()
        };
        let s = Storage::open(dir.to_str().unwrap(), false, config.clone()).unwrap();
        (dir, config, s)
    }

    /// Two workers replay one history while a compaction turns its segments into a part
    /// between their replays: every batch is replayed once (a restarted server's first ad-hoc
    /// query stored rows twice when each worker listed the units itself).
    #[test]
    fn a_history_replays_each_batch_once_across_a_compaction() {
        let dir = std::env::temp_dir().join(format!("petrel-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = storage(&dir, false);
        let rules = TableRules::default();
        let t = s.table("t", vec!["k".into(), "v".into()], rules).unwrap();
        let mut expected = Vec::new();
        for i in 0..12i64 {
            let row = vec![Value::str(&format!("k{}", i % 4)), Value::Int(i)];
            t.append(1_000 + i as u64, &Arc::new(vec![(row.clone(), 1)]), None)
                .unwrap();
            expected.push(row);
            if i % 3 == 2 {
                t.flush().unwrap();
            }
        }
        let history = t.clone().history(t.len());
        let mut replayed = Vec::new();
        history
            .replay(0, 2, &mut |r, _, _| replayed.push(r))
            .unwrap();
        t.compact(true).unwrap();
        assert!(t.figures().parts >= 1, "the segments were compacted");
        history
            .replay(1, 2, &mut |r, _, _| replayed.push(r))
            .unwrap();
        replayed.sort();
        expected.sort();
        assert_eq!(replayed, expected);
        drop(history);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A backlog of waiting batches is written as several segments of at most
    /// `compact_max_rows` rows (a batch larger than that alone in its own), and everything
    /// replays, once, in order, after a reopen: a backlog once became one segment, encoded
    /// into one buffer and later compacted from memory all at once.
    #[test]
    fn a_backlog_flushes_in_segments_no_larger_than_a_part() {
        let (dir, config, s) = small_parts_storage("backlog");
        let cols = vec!["k".to_string(), "v".to_string()];
        let t = s.table("t", cols.clone(), TableRules::default()).unwrap();
        // Batches of 4 rows, then one of 25 (larger than a segment), then 4 more of 4.
        let sizes = [4, 4, 4, 4, 25, 4, 4, 4, 4];
        let mut expected = Vec::new();
        let mut n = 0i64;
        for (b, size) in sizes.iter().enumerate() {
            let rows: Vec<(Row, isize)> = (0..*size)
                .map(|_| {
                    n += 1;
                    (vec![Value::str(&format!("k{}", n % 3)), Value::Int(n)], 1)
                })
                .collect();
            let ts = 1_000 + b as u64;
            expected.extend(rows.iter().map(|(r, d)| (r.clone(), ts, *d)));
            t.append(ts, &Arc::new(rows), None).unwrap();
        }
        assert_eq!(
            t.flush().unwrap(),
            sizes.len(),
            "one flush writes every batch"
        );
        let segments: Vec<u64> = t.state().segments.iter().map(|s| s.rows).collect();
        assert_eq!(segments, vec![8, 8, 25, 8, 8]);
        assert_eq!(t.figures().pending_batches, 0);
        expected.sort();
        assert_eq!(replay_all(&t, 2), expected);
        drop(t);
        drop(s);
        let s = Storage::open(dir.to_str().unwrap(), false, config).unwrap();
        let t = s.table("t", cols, TableRules::default()).unwrap();
        assert_eq!(replay_all(&t, 1), expected, "the segments survive a reopen");
        t.compact(true).unwrap();
        assert_eq!(replay_all(&t, 2), expected, "and compact into parts");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A compaction takes the batches of the segments written since it last ran from memory
    /// while the storage holds at most twice `compact_max_rows` rows of them, reads the other
    /// segments back (also those released when writes paused), and writes the same parts
    /// either way; the count of held rows returns to zero once they are compacted.
    #[test]
    fn a_compaction_takes_held_segments_from_memory_and_reads_back_the_rest() {
        let (dir, config, s) = small_parts_storage("held");
        let cols = vec!["k".to_string(), "v".to_string()];
        let rules = || TableRules::default();
        let t = s.table("t", cols.clone(), rules()).unwrap();
        let mut expected = Vec::new();
        for b in 0..6i64 {
            let rows: Vec<(Row, isize)> = (0..4)
                .map(|i| {
                    (
                        vec![Value::str(&format!("k{}", i % 3)), Value::Int(b * 4 + i)],
                        1,
                    )
                })
                .collect();
            let ts = 1_000 + b as u64;
            expected.extend(rows.iter().map(|(r, d)| (r.clone(), ts, *d)));
            t.append(ts, &Arc::new(rows), None).unwrap();
            t.flush().unwrap();
        }
        expected.sort();
        // Five segments of 4 rows fit under the bound of 20 (two parts of 10 rows); the sixth
        // is only on storage.
        assert_eq!(
            t.state().held.keys().copied().collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        assert_eq!(s.held_rows.load(Ordering::Relaxed), 20);
        t.compact(true).unwrap();
        assert_eq!(t.figures().segments, 0);
        assert!(t.figures().parts >= 1);
        assert!(t.state().held.is_empty());
        assert_eq!(s.held_rows.load(Ordering::Relaxed), 0);
        assert_eq!(replay_all(&t, 2), expected);
        // Released when writes pause: the next compaction reads the segment back.
        let row = vec![Value::str("k9"), Value::Int(99)];
        expected.push((row.clone(), 2_000, 1));
        expected.sort();
        t.append(2_000, &Arc::new(vec![(row, 1)]), None).unwrap();
        t.flush().unwrap();
        assert_eq!(s.held_rows.load(Ordering::Relaxed), 1);
        t.release_held_if_idle();
        assert_eq!(
            t.state().held.len(),
            1,
            "kept: the table wrote since the last round"
        );
        t.release_held_if_idle();
        assert!(
            t.state().held.is_empty(),
            "released: it wrote nothing since"
        );
        assert_eq!(s.held_rows.load(Ordering::Relaxed), 0);
        t.compact(true).unwrap();
        assert_eq!(replay_all(&t, 2), expected);
        drop(t);
        drop(s);
        let s = Storage::open(dir.to_str().unwrap(), false, config).unwrap();
        let t = s.table("t", cols, rules()).unwrap();
        assert_eq!(replay_all(&t, 1), expected, "the parts survive a reopen");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A write holds its segment's batches as they are; they become the part's columns when
    /// [`TableLog::build_held_columns`] runs after the write, and a compaction that comes
    /// before it builds them itself. Batches taken by a compaction meanwhile are not held
    /// again. Every row comes back either way.
    #[test]
    fn held_batches_become_columns_after_the_write_or_in_the_compaction() {
        let (dir, _config, s) = small_parts_storage("held-later");
        let t = s
            .table("t", vec!["k".into(), "v".into()], TableRules::default())
            .unwrap();
        let mut expected = Vec::new();
        let mut write = |b: i64| {
            let rows: Vec<(Row, isize)> = (0..3)
                .map(|i| (vec![Value::str(&format!("k{i}")), Value::Int(b * 3 + i)], 1))
                .collect();
            let ts = 100 + b as u64;
            expected.extend(rows.iter().map(|(r, d)| (r.clone(), ts, *d)));
            t.append(ts, &Arc::new(rows), None).unwrap();
            t.flush().unwrap();
        };
        let columns = |t: &TableLog| {
            t.state()
                .held
                .values()
                .map(|h| matches!(h.batches, HeldBatches::Columns(..)))
                .collect::<Vec<_>>()
        };
        write(0);
        write(1);
        assert_eq!(columns(&t), vec![false, false], "held as the batches");
        t.build_held_columns();
        assert_eq!(columns(&t), vec![true, true]);
        assert_eq!(s.held_rows.load(Ordering::Relaxed), 6, "the same rows held");
        write(2);
        assert_eq!(columns(&t), vec![true, true, false]);
        t.build_held_columns();
        assert_eq!(columns(&t), vec![true, true, true], "a later write's too");
        write(3);
        assert_eq!(columns(&t), vec![true, true, true, false]);
        t.compact(true).unwrap();
        assert!(t.state().held.is_empty());
        assert_eq!(s.held_rows.load(Ordering::Relaxed), 0);
        t.build_held_columns();
        assert!(
            t.state().held.is_empty(),
            "nothing held again after the compaction"
        );
        expected.sort();
        assert_eq!(replay_all(&t, 2), expected);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Segments held as columns are written as they are: a column of NULLs in one segment
    /// takes the kind of another's values, and a column whose kinds differ between segments
    /// (strings in one, integers in the next) is written from the rows instead. Every row
    /// comes back with its time and multiplicity, and the manifest keeps the last batch's
    /// time and metadata.
    #[test]
    fn held_columns_of_segments_stored_differently_keep_every_row() {
        let (dir, _config, s) = small_parts_storage("held-kinds");
        let cols = vec!["a".to_string(), "b".to_string()];
        let t = s.table("t", cols, TableRules::default()).unwrap();
        let mut expected = Vec::new();
        let mut append = |ts: u64, rows: Vec<(Row, isize)>, meta: Option<&[u8]>| {
            expected.extend(rows.iter().map(|(r, d)| (r.clone(), ts, *d)));
            t.append(ts, &Arc::new(rows), meta).unwrap();
            t.flush().unwrap();
            t.build_held_columns();
        };
        // `b` is all NULL in the first segment and integers in the second.
        append(
            10,
            vec![
                (vec![Value::Int(1), Value::Null], 1),
                (vec![Value::Int(2), Value::Null], -1),
            ],
            Some(b"first"),
        );
        append(11, vec![(vec![Value::Int(3), Value::UInt(7)], 2)], None);
        assert!(t
            .state()
            .held
            .values()
            .all(|h| matches!(h.batches, HeldBatches::Columns(..))));
        t.compact(true).unwrap();
        let manifest = t.manifest();
        assert_eq!(manifest.parts.len(), 1);
        assert_eq!(
            (manifest.parts[0].updates, manifest.parts[0].net_rows),
            (3, 2)
        );
        assert_eq!(
            (manifest.parts[0].min_ts, manifest.parts[0].max_ts),
            (10, 11)
        );
        assert_eq!(manifest.parts[0].columns[1].min, Some(Value::UInt(7)));
        assert_eq!(manifest.last_meta.as_deref(), Some(&b"first"[..]));
        assert_eq!(manifest.last_ts, 11);
        // `a` holds strings in one segment and integers in the next.
        append(12, vec![(vec![Value::str("s"), Value::UInt(8)], 1)], None);
        append(
            13,
            vec![(vec![Value::Int(4), Value::Null], 1)],
            Some(b"last"),
        );
        t.compact(true).unwrap();
        let manifest = t.manifest();
        assert_eq!(manifest.parts.len(), 2);
        assert_eq!(manifest.last_meta.as_deref(), Some(&b"last"[..]));
        assert_eq!(manifest.last_ts, 13);
        expected.sort();
        assert_eq!(replay_all(&t, 1), expected);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A segment's buffer is reserved from the last segment's bytes per row, and never more
    /// than the bound: a segment of one very wide row does not make the next, of many small
    /// rows, reserve more memory than the machine has (the process would abort).
    #[test]
    fn a_segments_buffer_is_sized_from_the_last_and_bounded() {
        assert_eq!(segment_reserve(0, 20_000), 0);
        assert_eq!(segment_reserve(100, 20_000), 2_200_000);
        // One segment of a 4 MB row, then one of a part's worth of small rows: not a terabyte.
        assert_eq!(
            segment_reserve(4_200_000, 250_000),
            SEGMENT_RESERVE_MAX as usize
        );
        assert_eq!(
            segment_reserve(u64::MAX, u64::MAX),
            SEGMENT_RESERVE_MAX as usize
        );
    }

    /// Merges join runs of small parts at once, never more than the fan-in or the row
    /// bound, and only while a partition has too many parts.
    #[test]
    fn a_merge_joins_the_run_of_parts_that_rewrites_the_fewest_rows_per_part_removed() {
        let k = 200_000;
        let m = 2_000_000;
        // At most eight parts: nothing to do.
        assert_eq!(merge_window(&[k; 8], 8, m), None);
        // Nine equal parts: eight of them at once (the first such run).
        assert_eq!(merge_window(&[k; 9], 8, m).map(|w| w.1), Some(0..8));
        // A large part and small ones after it: the small ones, not the large one.
        let mut sizes = vec![8 * k];
        sizes.extend([k; 8]);
        assert_eq!(merge_window(&sizes, 8, m).map(|w| w.1), Some(1..9));
        // The row bound caps the run; parts too large to join are left alone.
        assert_eq!(merge_window(&[k; 9], 8, 3 * k).map(|w| w.1), Some(0..3));
        assert_eq!(merge_window(&[m; 9], 8, m), None);
        // Two small parts between large ones: those two.
        assert_eq!(
            merge_window(&[m, m, 10, 10, m, m, m, m, m], 8, m).map(|w| w.1),
            Some(2..4)
        );
    }

    /// A writer waiting for its rows to be stored is released by a clean stop (which writes
    /// every waiting batch), though no flusher will write a frontier past its rows any more.
    #[test]
    fn a_clean_stop_releases_writers_waiting_for_their_rows_to_be_stored() {
        let dir = std::env::temp_dir().join(format!("petrel-stop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = storage(&dir, false);
        let t = s
            .table("t", vec!["k".into()], TableRules::default())
            .unwrap();
        t.append(5, &Arc::new(vec![(vec![Value::Int(1)], 1)]), None)
            .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let waiter = {
            let s = s.clone();
            rt.spawn(async move { s.wait_durable_past(5).await })
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!waiter.is_finished(), "nothing stored the row yet");
        s.stop().unwrap();
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
                .await
                .expect("the stop released the waiting writer")
                .unwrap()
        });
        assert_eq!(t.figures().pending_batches, 0, "the stop wrote the batch");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn replay_all(t: &TableLog, peers: usize) -> Vec<(Row, Ts, isize)> {
        let mut out = Vec::new();
        for w in 0..peers {
            t.replay(t.len(), w, peers, &mut |r, ts, d| out.push((r, ts, d)))
                .unwrap();
        }
        out.sort();
        out
    }

    #[test]
    fn appends_compact_merge_and_survive_reopen() {
        let dir = std::env::temp_dir().join(format!("petrel-table-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = storage(&dir, false);
        let cols = vec!["k".to_string(), "v".to_string()];
        let rules = TableRules::default();
        let t = s.table("t", cols.clone(), rules.clone()).unwrap();
        let mut expected = Vec::new();
        for i in 0..20i64 {
            let row = vec![Value::str(&format!("k{}", i % 3)), Value::Int(i)];
            let diff = if i == 7 { -1 } else { 1 };
            t.append(
                1_000 + i as u64,
                &Arc::new(vec![(row.clone(), diff)]),
                Some(&[i as u8]),
            )
            .unwrap();
            expected.push((row, 1_000 + i as Ts, diff));
            if i % 4 == 3 {
                t.flush().unwrap();
                t.compact(false).unwrap();
            }
        }
        expected.sort();
        // Parts, segments and waiting batches replay together, split between workers.
        assert!(
            t.figures().parts >= 1 && t.figures().parts <= 2,
            "{:?}",
            t.figures()
        );
        assert_eq!(t.figures().pending_batches, 0);
        assert_eq!(replay_all(&t, 1), expected);
        assert_eq!(replay_all(&t, 3), expected);
        // A replay stops at a log position.
        let mut first = Vec::new();
        t.replay(5, 0, 1, &mut |r, _, _| first.push(r)).unwrap();
        assert_eq!(first.len(), 5);
        assert_eq!(t.row_count(), 18);
        // A replica follows what the writer adds, including batches compacted meanwhile.
        let replica = storage(&dir, true)
            .table("t", cols.clone(), rules.clone())
            .unwrap();
        assert_eq!(replica.len(), 20);
        t.append(
            2_000,
            &Arc::new(vec![(vec![Value::str("new"), Value::Int(0)], 1)]),
            None,
        )
        .unwrap();
        t.flush().unwrap();
        t.compact(true).unwrap();
        replica.prefetch().unwrap();
        let polled = replica.poll_new().unwrap();
        assert_eq!(polled.len(), 1);
        assert_eq!(polled[0].0, 2_000);
        assert_eq!(replica.len(), 21);
        drop(t);
        // Reopened: everything there once, with its timestamps and the last metadata.
        let t = storage(&dir, false).table("t", cols, rules).unwrap();
        assert_eq!(t.len(), 21);
        assert_eq!(t.row_count(), 19);
        assert_eq!(t.last_ts(), 2_000);
        assert_eq!(t.last_meta(), Some(vec![19]));
        assert_eq!(replay_all(&t, 2).len(), 21);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn merges_stream_parts_whose_columns_are_stored_differently() {
        let dir = std::env::temp_dir().join(format!("petrel-merge-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = storage(&dir, false);
        let cols = vec!["k".to_string(), "v".to_string()];
        let rules = TableRules::default();
        let t = s.table("t", cols, rules).unwrap();
        // Part 1: `v` all NULL; part 2: `v` integers; part 3: `v` strings (so the merged
        // column holds mixed kinds). max_parts is 2: the parts merge as they come.
        let batches: Vec<Vec<(Row, isize)>> = vec![
            (0..300)
                .map(|i| (vec![Value::Int(i % 17), Value::Null], 1))
                .collect(),
            (0..300)
                .map(|i| (vec![Value::Int(i % 13), Value::Int(i)], 1))
                .collect(),
            (0..300)
                .map(|i| (vec![Value::Int(i % 11), Value::str(&format!("s{i}"))], 1))
                .collect(),
        ];
        let appended: Vec<Vec<Row>> = batches
            .iter()
            .map(|b| b.iter().map(|(r, _)| r.clone()).collect())
            .collect();
        let mut expected = Vec::new();
        for (n, batch) in batches.into_iter().enumerate() {
            let ts = 1_000 + n as Ts;
            expected.extend(batch.iter().map(|(r, d)| (r.clone(), ts, *d)));
            t.append(ts, &Arc::new(batch), None).unwrap();
            t.flush().unwrap();
            t.compact(true).unwrap();
        }
        assert!(t.figures().parts <= 2, "{:?}", t.figures());
        expected.sort();
        assert_eq!(replay_all(&t, 1), expected);
        assert_eq!(t.row_count(), 900);
        // The merged part holds the parts' rows in log order.
        let manifest = t.manifest();
        let merged = manifest.parts.iter().max_by_key(|p| p.updates).unwrap();
        let mut read: Vec<(u64, Row)> = Vec::new();
        part::decode_with_seq(t.read_part(merged).unwrap(), &mut |seq, row, _, _| {
            read.push((seq, row))
        })
        .unwrap();
        assert!(merged.updates >= 600);
        // Each batch's rows in the order appended (batch n is log position n), the batches
        // in log order.
        let mut seqs: Vec<u64> = read.iter().map(|(seq, _)| *seq).collect();
        seqs.dedup();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        let want: Vec<(u64, Row)> = seqs
            .iter()
            .flat_map(|&seq| appended[seq as usize].iter().map(move |r| (seq, r.clone())))
            .collect();
        assert_eq!(read, want);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parts_split_by_partition_and_drop_expired_rows() {
        let dir = std::env::temp_dir().join(format!("petrel-table-ttl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = storage(&dir, false);
        let rules = TableRules {
            partition: Some(Arc::new(|r: &Row| r[0].clone())),
            expiry: Some(Arc::new(|r: &Row| r[1].clone())),
        };
        let t = s
            .table("t", vec!["k".into(), "expires".into()], rules)
            .unwrap();
        let mut kept = Vec::new();
        for i in 0..30i64 {
            // Every third row expired long ago; the others expire in the far future.
            let expires = if i % 3 == 0 { 1_000 } else { 4_000_000_000 + i };
            let row = vec![Value::str(&format!("p{}", i % 2)), Value::DateTime(expires)];
            t.append(500, &Arc::new(vec![(row.clone(), 1)]), None)
                .unwrap();
            if i % 3 != 0 {
                kept.push((row, 500, 1));
            }
        }
        t.flush().unwrap();
        t.compact(true).unwrap();
        let manifest = t.manifest();
        let partitions: Vec<Option<Value>> =
            manifest.parts.iter().map(|p| p.partition.clone()).collect();
        assert_eq!(
            partitions,
            vec![Some(Value::str("p0")), Some(Value::str("p1"))]
        );
        kept.sort();
        assert_eq!(replay_all(&t, 2), kept);
        assert_eq!(t.row_count(), 20);
        assert_eq!(manifest.net_rows(), 20);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
