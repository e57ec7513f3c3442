//! View snapshots: a maintained view's rows at a timestamp, written periodically so that a
//! restarted server (or a replica) serves reads at once while its dataflow replays history.
//!
//! `views/KEY.json` names the current snapshot (`{"upper", "file", "columns"}`) and
//! `views/KEY-UPPER.parquet` holds its rows (as a part: `_diff` is each row's multiplicity).
//! The pointer is written after the rows, so a reader finds a whole snapshot or the previous
//! one. A snapshot is written only once every batch below its timestamp is durable, so it
//! never shows a row that a crash could lose.

use bytes::Bytes;
use petrel_view::{CountedRows, Ts};

use super::part::{self, PartRow};
use super::{Storage, StorageError};

#[derive(serde::Serialize, serde::Deserialize)]
struct Pointer {
    upper: Ts,
    file: String,
    columns: Vec<String>,
}

impl Storage {
    /// Writes the rows of the view `key` at `upper`, replacing its previous snapshot.
    pub fn write_view_snapshot(
        &self,
        key: &str,
        columns: &[String],
        rows: CountedRows,
        upper: Ts,
    ) -> Result<(), StorageError> {
        let previous = self.read_pointer(key).ok().flatten();
        let rows: Vec<PartRow> = rows
            .into_iter()
            .map(|(row, diff)| PartRow {
                seq: 0,
                ts: upper,
                diff,
                row,
            })
            .collect();
        let encoded = part::encode(columns, &rows)?;
        let file = format!("{key}-{upper:020}.parquet");
        self.put(&self.path(&format!("views/{file}")), encoded.bytes)?;
        let pointer = Pointer {
            upper,
            file,
            columns: columns.to_vec(),
        };
        let body = serde_json::to_vec(&pointer)
            .map_err(|e| StorageError::Corrupt(format!("cannot encode a view pointer: {e}")))?;
        self.put(&self.path(&format!("views/{key}.json")), Bytes::from(body))?;
        if let Some(old) = previous.filter(|p| p.file != pointer.file) {
            self.delete(&self.path(&format!("views/{}", old.file)))?;
        }
        Ok(())
    }

    fn read_pointer(&self, key: &str) -> Result<Option<Pointer>, StorageError> {
        match self.get(&self.path(&format!("views/{key}.json"))) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StorageError::Corrupt(format!("view pointer {key}: {e}"))),
            Err(StorageError::Store(object_store::Error::NotFound { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The latest snapshot of the view `key` (rows with multiplicities, and its timestamp),
    /// if one was written for these columns.
    pub fn read_view_snapshot(
        &self,
        key: &str,
        columns: &[String],
    ) -> Result<Option<(CountedRows, Ts)>, StorageError> {
        let Some(pointer) = self.read_pointer(key)? else {
            return Ok(None);
        };
        if pointer.columns != columns {
            return Ok(None);
        }
        let bytes = self.get(&self.path(&format!("views/{}", pointer.file)))?;
        let mut rows = Vec::new();
        part::decode(bytes, None, u64::MAX, &mut |row, _, diff| {
            rows.push((row, diff as i64))
        })?;
        Ok(Some((rows, pointer.upper)))
    }

    /// Deletes every view snapshot (the data they were taken of is being replaced).
    pub fn delete_view_snapshots(&self) -> Result<(), StorageError> {
        for (file, _) in self.list(&self.path("views"), None)? {
            self.delete(&self.path(&format!("views/{file}")))?;
        }
        Ok(())
    }
}
