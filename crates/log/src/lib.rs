//! The ground floor between storage and the engine: Petrel's clock timestamps, and a
//! datasource's durable history as the engine replays it. Storage implements [`SourceLog`];
//! the engine reads it; neither depends on the other.

use std::sync::Arc;

use petrel_value::Row;

/// Milliseconds since the Unix epoch: Petrel's one clock (see the engine's clock).
pub type Ts = u64;

/// A batch of row updates and the timestamp it landed at.
pub type TimedBatch = (Ts, Vec<(Row, isize)>);

/// The durable history of one datasource, as the engine needs it: appends in ingest order,
/// each with the timestamp it landed at, and a replay of a prefix for views installed later.
/// Storage implements it.
pub trait SourceLog: Send + Sync + 'static {
    /// Appends a batch of row updates that land at `ts`, with optional metadata written in the
    /// same record (a source's position, such as Kafka offsets) so the two are durable
    /// together or not at all. Returns the log's length in batches afterwards.
    /// The batch is shared with the workers, so keeping it costs no copy.
    fn append(
        &self,
        ts: Ts,
        updates: &Arc<Vec<(Row, isize)>>,
        meta: Option<&[u8]>,
    ) -> std::io::Result<u64>;
    /// The log's length in batches.
    fn len(&self) -> u64;
    /// The latest timestamp a batch was appended at (0 for an empty log): after a restart the
    /// clock starts above it, so timestamps never go backwards.
    fn last_ts(&self) -> Ts {
        0
    }
    /// For a log another process writes (a replica following it): the batches appended since
    /// the last call with their timestamps, now counted in [`SourceLog::len`]. Logs this
    /// process writes return none.
    fn poll_new(&self) -> std::io::Result<Vec<TimedBatch>> {
        Ok(Vec::new())
    }
    /// True when nothing was ever appended.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Calls `f` with every update of the first `upto` batches and the timestamp it landed
    /// at, for this worker's share: storage splits the history into units (batches, parts,
    /// row groups) and worker `worker` of `peers` replays the units whose index modulo
    /// `peers` is `worker`. Each call may see the log's units anew (a compaction can turn
    /// segments into a part between two calls): a replay split over workers goes through
    /// [`SourceLog::history`], which fixes the units once for all of them.
    fn replay(
        &self,
        upto: u64,
        worker: usize,
        peers: usize,
        f: &mut dyn FnMut(Row, Ts, isize),
    ) -> std::io::Result<()>;
    /// The first `upto` batches as one history that every worker replays its share of: the
    /// units are fixed when it is taken, so the shares cover each batch exactly once even if
    /// storage compacts meanwhile. The default suits logs whose units never change.
    fn history(self: Arc<Self>, upto: u64) -> Arc<dyn History> {
        Arc::new(Unchanging { log: self, upto })
    }
}

/// A prefix of a log, fixed for every worker that replays a share of it.
pub trait History: Send + Sync {
    /// Calls `f` with this worker's share of the history's updates and their timestamps.
    fn replay(
        &self,
        worker: usize,
        peers: usize,
        f: &mut dyn FnMut(Row, Ts, isize),
    ) -> std::io::Result<()>;
}

/// The history of a log whose units never change (an append-only list of batches).
struct Unchanging<L: ?Sized> {
    log: Arc<L>,
    upto: u64,
}

impl<L: SourceLog + ?Sized> History for Unchanging<L> {
    fn replay(
        &self,
        worker: usize,
        peers: usize,
        f: &mut dyn FnMut(Row, Ts, isize),
    ) -> std::io::Result<()> {
        self.log.replay(self.upto, worker, peers, f)
    }
}
