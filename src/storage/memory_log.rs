//! [`MemoryLog`]: batches held in memory, for short-lived inputs such as the result a `q=`
//! query runs over.

use std::io;
use std::sync::Mutex;

use petrel_log::SourceLog;
use petrel_value::Row;
use petrel_view::Ts;

/// An in-memory log of row batches with their timestamps.
#[derive(Default)]
pub struct MemoryLog {
    batches: Mutex<Vec<petrel_log::TimedBatch>>,
}

impl MemoryLog {
    /// A log holding one batch of rows, each inserted once.
    pub fn with_rows(rows: Vec<Row>) -> MemoryLog {
        MemoryLog {
            batches: Mutex::new(vec![(0, rows.into_iter().map(|r| (r, 1)).collect())]),
        }
    }
}

impl SourceLog for MemoryLog {
    fn append(
        &self,
        ts: Ts,
        updates: &std::sync::Arc<Vec<(Row, isize)>>,
        _meta: Option<&[u8]>,
    ) -> io::Result<u64> {
        let mut b = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        b.push((ts, updates.to_vec()));
        Ok(b.len() as u64)
    }

    fn len(&self) -> u64 {
        self.batches.lock().unwrap_or_else(|e| e.into_inner()).len() as u64
    }

    fn replay(
        &self,
        upto: u64,
        worker: usize,
        peers: usize,
        f: &mut dyn FnMut(Row, Ts, isize),
    ) -> io::Result<()> {
        let b = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        for (i, (ts, batch)) in b.iter().take(upto as usize).enumerate() {
            if i % peers == worker {
                for (row, diff) in batch {
                    f(row.clone(), *ts, *diff);
                }
            }
        }
        Ok(())
    }
}
