//! [`FileLog`]: a datasource's batches in one append-only file.
//!
//! Each batch is a record `len: u32 LE` + bincode of `(Vec<(Row, isize)>, Option<Vec<u8>>)`:
//! the rows, and optional metadata written atomically with them (a source's position, e.g.
//! Kafka offsets). Appends are written through at once (replays open the file separately);
//! `sync` makes them durable.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use petrel_engine::SourceLog;
use petrel_value::Row;

/// An append-only file of row batches.
pub struct FileLog {
    path: PathBuf,
    state: Mutex<State>,
}

struct State {
    /// `None` for a read-only log (a replica following another server's file).
    file: Option<File>,
    /// Byte offset where each batch ends.
    ends: Vec<u64>,
    /// Net rows: insertions minus retractions.
    rows: i64,
    /// The metadata of the last record that had some.
    last_meta: Option<Vec<u8>>,
}

type Record = (Vec<(Row, isize)>, Option<Vec<u8>>);

fn encode(updates: &[(Row, isize)], meta: Option<&[u8]>) -> io::Result<Vec<u8>> {
    bincode::serde::encode_to_vec((updates, meta), bincode::config::standard())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn decode(bytes: &[u8]) -> io::Result<Record> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl FileLog {
    /// Opens (or creates) the log at `path`, indexing the batches already there. A torn last
    /// record (from a crash mid-write) is cut off.
    pub fn open(path: &Path) -> io::Result<FileLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        let mut ends = Vec::new();
        let mut rows = 0i64;
        let mut last_meta = None;
        let mut reader = BufReader::new(&file);
        let mut at = 0u64;
        loop {
            let mut len = [0u8; 4];
            if reader.read_exact(&mut len).is_err() {
                break;
            }
            let len = u32::from_le_bytes(len) as usize;
            let mut buf = vec![0u8; len];
            if reader.read_exact(&mut buf).is_err() {
                break;
            }
            match decode(&buf) {
                Ok((batch, meta)) => {
                    rows += batch.iter().map(|(_, d)| *d as i64).sum::<i64>();
                    if meta.is_some() {
                        last_meta = meta;
                    }
                }
                Err(_) => break,
            }
            at += 4 + len as u64;
            ends.push(at);
        }
        drop(reader);
        file.set_len(at)?;
        file.seek(SeekFrom::End(0))?;
        Ok(FileLog {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                file: Some(file),
                ends,
                rows,
                last_meta,
            }),
        })
    }

    /// Opens another server's log to follow it: nothing is ever written (a torn tail is left
    /// alone, as the writer may still be writing it); [`SourceLog::poll_new`] reads what the
    /// writer appends.
    pub fn open_read_only(path: &Path) -> io::Result<FileLog> {
        let log = FileLog {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                file: None,
                ends: Vec::new(),
                rows: 0,
                last_meta: None,
            }),
        };
        log.read_new()?;
        Ok(log)
    }

    /// Reads the complete records after the last one indexed; returns their updates.
    fn read_new(&self) -> io::Result<Vec<(Row, isize)>> {
        let mut state = self.state();
        let start = state.ends.last().copied().unwrap_or(0);
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let size = file.metadata()?.len();
        if size <= start {
            return Ok(Vec::new());
        }
        file.seek(SeekFrom::Start(start))?;
        let mut reader = BufReader::new(file);
        let mut at = start;
        let mut updates = Vec::new();
        while at + 4 <= size {
            let mut len = [0u8; 4];
            reader.read_exact(&mut len)?;
            let len = u32::from_le_bytes(len) as u64;
            if at + 4 + len > size {
                break; // the writer is still writing this record
            }
            let mut buf = vec![0u8; len as usize];
            reader.read_exact(&mut buf)?;
            let (batch, meta) = decode(&buf)?;
            state.rows += batch.iter().map(|(_, d)| *d as i64).sum::<i64>();
            if meta.is_some() {
                state.last_meta = meta;
            }
            updates.extend(batch);
            at += 4 + len;
            state.ends.push(at);
        }
        Ok(updates)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of rows the log holds (insertions minus retractions).
    pub fn row_count(&self) -> u64 {
        self.state().rows.max(0) as u64
    }

    /// The metadata of the last record written with some (see [`SourceLog::append_with_meta`]).
    pub fn last_meta(&self) -> Option<Vec<u8>> {
        self.state().last_meta.clone()
    }

    fn write(&self, updates: &[(Row, isize)], meta: Option<&[u8]>) -> io::Result<u64> {
        let body = encode(updates, meta)?;
        let mut record = Vec::with_capacity(body.len() + 4);
        record.extend_from_slice(&(body.len() as u32).to_le_bytes());
        record.extend_from_slice(&body);
        let mut state = self.state();
        let Some(file) = state.file.as_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "this log is read-only (a replica)",
            ));
        };
        file.write_all(&record)?;
        let end = state.ends.last().copied().unwrap_or(0) + record.len() as u64;
        state.ends.push(end);
        state.rows += updates.iter().map(|(_, d)| *d as i64).sum::<i64>();
        if let Some(m) = meta {
            state.last_meta = Some(m.to_vec());
        }
        Ok(state.ends.len() as u64)
    }

    /// Flushes appended batches to stable storage.
    pub fn sync(&self) -> io::Result<()> {
        match &self.state().file {
            Some(file) => file.try_clone()?.sync_data(),
            None => Ok(()),
        }
    }
}

impl SourceLog for FileLog {
    fn append(&self, updates: &[(Row, isize)]) -> io::Result<u64> {
        self.write(updates, None)
    }

    fn append_with_meta(&self, updates: &[(Row, isize)], meta: &[u8]) -> io::Result<u64> {
        self.write(updates, Some(meta))
    }

    fn len(&self) -> u64 {
        self.state().ends.len() as u64
    }

    fn poll_new(&self) -> io::Result<Vec<(Row, isize)>> {
        if self.state().file.is_some() {
            return Ok(Vec::new());
        }
        self.read_new()
    }

    fn replay(
        &self,
        upto: u64,
        worker: usize,
        peers: usize,
        f: &mut dyn FnMut(Row, isize),
    ) -> io::Result<()> {
        let end = match upto {
            0 => return Ok(()),
            n => self.state().ends.get(n as usize - 1).copied().unwrap_or(0),
        };
        let mut reader = BufReader::with_capacity(1 << 20, File::open(&self.path)?);
        let mut at = 0u64;
        let mut index = 0usize;
        while at < end {
            let mut len = [0u8; 4];
            reader.read_exact(&mut len)?;
            let len = u32::from_le_bytes(len) as usize;
            if index % peers == worker {
                let mut buf = vec![0u8; len];
                reader.read_exact(&mut buf)?;
                for (row, diff) in decode(&buf)?.0 {
                    f(row, diff);
                }
            } else {
                reader.seek_relative(len as i64)?;
            }
            at += 4 + len as u64;
            index += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_value::Value;

    #[test]
    fn appends_replay_and_survive_reopen() {
        let dir = std::env::temp_dir().join(format!("petrel-log-{}", std::process::id()));
        let path = dir.join("t.log");
        let _ = std::fs::remove_file(&path);
        let log = FileLog::open(&path).unwrap();
        for i in 0..5i64 {
            log.append(&[(vec![Value::Int(i)], 1)]).unwrap();
        }
        log.append_with_meta(&[], b"offsets").unwrap();
        let mut seen = Vec::new();
        log.replay(3, 0, 1, &mut |r, d| seen.push((r, d))).unwrap();
        assert_eq!(seen.len(), 3);
        let mut odd = Vec::new();
        log.replay(5, 1, 2, &mut |r, _| odd.push(r[0].clone()))
            .unwrap();
        assert_eq!(odd, vec![Value::Int(1), Value::Int(3)]);
        drop(log);
        // A torn tail is cut off on reopen.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0, 0, 1]).unwrap();
        let log = FileLog::open(&path).unwrap();
        assert_eq!(log.len(), 6);
        assert_eq!(log.row_count(), 5);
        assert_eq!(log.last_meta().as_deref(), Some(&b"offsets"[..]));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
