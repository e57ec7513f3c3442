//! A cluster's datasource as one log: a replica of a cluster follows every process's share
//! of each datasource (each under its own `process-I` prefix) as one history.

use std::sync::Arc;

use petrel_log::{History, SourceLog, TimedBatch, Ts};
use petrel_value::Row;

use super::{StorageError, TableFigures, TableLog};

/// Every process's share of one datasource, read-only.
pub struct ClusterLog {
    shares: Vec<Arc<TableLog>>,
}

impl ClusterLog {
    /// The shares, in process order.
    pub fn new(shares: Vec<Arc<TableLog>>) -> ClusterLog {
        ClusterLog { shares }
    }

    /// The shares, in process order.
    pub fn shares(&self) -> &[Arc<TableLog>] {
        &self.shares
    }

    /// The storage figures of every share together.
    pub fn figures(&self) -> TableFigures {
        let mut total = TableFigures::default();
        for f in self.shares.iter().map(|s| s.figures()) {
            total.rows += f.rows;
            total.parts += f.parts;
            total.part_bytes += f.part_bytes;
            total.segments += f.segments;
            total.segment_bytes += f.segment_bytes;
            total.pending_batches += f.pending_batches;
        }
        total
    }
}

/// Each share's history, replayed one after the other.
struct Histories(Vec<Arc<dyn History>>);

impl History for Histories {
    fn replay(
        &self,
        worker: usize,
        peers: usize,
        f: &mut dyn FnMut(Row, Ts, isize),
    ) -> std::io::Result<()> {
        for h in &self.0 {
            h.replay(worker, peers, f)?;
        }
        Ok(())
    }
}

impl SourceLog for ClusterLog {
    fn append(&self, _: Ts, _: &Arc<Vec<(Row, isize)>>, _: Option<&[u8]>) -> std::io::Result<u64> {
        Err(StorageError::ReadOnly.into())
    }

    fn len(&self) -> u64 {
        self.shares.iter().map(|s| s.len()).sum()
    }

    fn last_ts(&self) -> Ts {
        self.shares.iter().map(|s| s.last_ts()).max().unwrap_or(0)
    }

    /// The batches every share added since the last call, in timestamp order.
    fn poll_new(&self) -> std::io::Result<Vec<TimedBatch>> {
        let mut out = Vec::new();
        for s in &self.shares {
            out.extend(s.poll_new()?);
        }
        out.sort_by_key(|(ts, _)| *ts);
        Ok(out)
    }

    /// Every share's whole history (what a replica's engine asks for: `upto` is this log's
    /// length, and the shares' lengths only change through `poll_new`, under the same lock).
    fn replay(
        &self,
        _upto: u64,
        worker: usize,
        peers: usize,
        f: &mut dyn FnMut(Row, Ts, isize),
    ) -> std::io::Result<()> {
        for s in &self.shares {
            s.replay(s.len(), worker, peers, f)?;
        }
        Ok(())
    }

    fn history(self: Arc<Self>, _upto: u64) -> Arc<dyn History> {
        Arc::new(Histories(
            self.shares
                .iter()
                .map(|s| s.clone().history(s.len()))
                .collect(),
        ))
    }
}
