//! A table's manifest: the Parquet parts that hold its compacted history and where its log
//! continues. Each version is a new object written only if absent, so a change is atomic:
//! a reader sees the old version or the new one, never half of either.

use super::part::ColumnStats;
use petrel_view::Ts;

/// One Parquet part.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PartInfo {
    /// The object's name under the table's `parts/`.
    pub file: String,
    /// The log batches it holds: `first..end`.
    pub first: u64,
    /// One past the last batch.
    pub end: u64,
    /// The `ENGINE_PARTITION_KEY` value all its rows share, when the table is partitioned.
    #[serde(default)]
    pub partition: Option<petrel_value::Value>,
    /// Updates stored (rows of the file).
    pub updates: u64,
    /// Net rows: insertions minus retractions.
    pub net_rows: i64,
    /// Size of the object.
    pub bytes: u64,
    /// Row groups in the file (the unit replays are split by).
    pub row_groups: usize,
    /// Earliest and latest timestamp of its updates.
    pub min_ts: Ts,
    /// Latest timestamp.
    pub max_ts: Ts,
    /// Min/max of every column.
    pub columns: Vec<ColumnStats>,
}

/// The state of a table's compacted history.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Increases by one with every change.
    pub version: u64,
    /// The parts, in log order (a partitioned table has one part per partition for a run of
    /// batches), covering batches `0..log_start` without gaps.
    pub parts: Vec<PartInfo>,
    /// The first batch still in log segments.
    pub log_start: u64,
    /// The metadata of the last compacted batch that had some (a source position).
    pub last_meta: Option<Vec<u8>>,
    /// The latest timestamp compacted.
    pub last_ts: Ts,
}

impl Manifest {
    /// The object name of a version: zero-padded so names sort by version.
    pub(crate) fn file_name(version: u64) -> String {
        format!("{version:020}.json")
    }

    /// Net rows in the parts.
    pub fn net_rows(&self) -> i64 {
        self.parts.iter().map(|p| p.net_rows).sum()
    }

    /// Bytes the parts take.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.bytes).sum()
    }
}
