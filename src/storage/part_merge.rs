//! Merging parts by copying their row groups.
//!
//! A merge joins neighbouring parts so that a table keeps few of them. Parts hold their rows
//! in log order, and so does a merge: it copies each part's row groups, encoded and
//! compressed as they are, one after the other into the merged part. No value is decoded, compared or encoded again, and
//! a merge costs the bytes it copies; it was the part of storage whose cost grew with the
//! data (a row was decoded and encoded again each time its part grew). A row group keeps its
//! Parquet statistics. Parts whose Parquet or Arrow schemas differ (a column stored as another
//! kind), parts whose row groups are mostly small (a table that compacts few rows at a time:
//! copied, they would never be joined, and a replay reads a part's footer once per row
//! group), and the parts of a table whose rows expire are merged row by row instead
//! (`TableLog::merge_rows`), into full row groups.

use std::sync::Arc;

use bytes::Bytes;
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use petrel_view::Ts;

use super::manifest::PartInfo;
use super::part::{corrupt, ColumnStats, EncodedPart, ROW_GROUP_ROWS};
use super::StorageError;

/// A merged part and what the manifest says of it (a merge by rows gives the same).
pub(crate) struct Merged {
    pub encoded: EncodedPart,
    pub updates: u64,
    pub net_rows: i64,
    pub min_ts: Ts,
    pub max_ts: Ts,
}

/// A part's bytes with its Parquet footer, read once.
pub(crate) struct PartFile {
    bytes: Bytes,
    metadata: ParquetMetaData,
}

impl PartFile {
    /// Reads a part's footer.
    pub(crate) fn open(bytes: Bytes) -> Result<PartFile, StorageError> {
        let metadata = ParquetMetaDataReader::new()
            .parse_and_finish(&bytes)
            .map_err(corrupt)?;
        Ok(PartFile { bytes, metadata })
    }

    /// The part's bytes, for a merge row by row.
    pub(crate) fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

/// True when `parts` can be merged by copying their row groups: they have one Parquet schema
/// and one Arrow schema (each column stored as the same kind: kinds that share a Parquet type,
/// as integers and times do, differ in the Arrow schema's metadata), with the log position,
/// time and diff and the datasource's `width` columns; and the merged part would hold at most
/// one row group more per part than its rows need. Small row groups are then never copied
/// into a part more than once: a part made of them is merged row by row the next time.
pub(crate) fn applies(parts: &[PartFile], width: usize) -> bool {
    let Some(first) = parts.first() else {
        return false;
    };
    let file = first.metadata.file_metadata();
    let rows: i64 = parts
        .iter()
        .map(|p| p.metadata.file_metadata().num_rows())
        .sum();
    let groups: usize = parts.iter().map(|p| p.metadata.num_row_groups()).sum();
    let needed = usize::try_from(rows)
        .unwrap_or(usize::MAX)
        .div_ceil(ROW_GROUP_ROWS);
    file.schema_descr().num_columns() == width + 3
        && groups <= needed.saturating_add(parts.len())
        && parts.iter().all(|p| {
            let other = p.metadata.file_metadata();
            other.schema() == file.schema()
                && other.key_value_metadata() == file.key_value_metadata()
        })
}

/// Copies the row groups of `parts` (in log order; [`applies`] to them), which `infos`
/// describe, into one part; its statistics and figures are the parts' together.
pub(crate) fn concatenate(parts: &[PartFile], infos: &[&PartInfo]) -> Result<Merged, StorageError> {
    let Some(first) = parts.first() else {
        return Err(StorageError::Corrupt("a merge of no parts".into()));
    };
    if parts.len() != infos.len() {
        return Err(StorageError::Corrupt(format!(
            "a merge of {} parts described by {} manifest entries",
            parts.len(),
            infos.len()
        )));
    }
    let file = first.metadata.file_metadata();
    // The Arrow schema (each column's stored kind) is in the footer's key-value metadata. The
    // copied column chunks keep their own compression.
    let props = WriterProperties::builder()
        .set_key_value_metadata(file.key_value_metadata().cloned())
        .build();
    let schema = file.schema_descr().root_schema_ptr();
    let mut writer =
        SerializedFileWriter::new(Vec::new(), schema, Arc::new(props)).map_err(corrupt)?;
    let mut row_groups = 0;
    for part in parts {
        for group in part.metadata.row_groups() {
            let mut out = writer.next_row_group().map_err(corrupt)?;
            for column in group.columns() {
                let chunk = ColumnCloseResult {
                    bytes_written: u64::try_from(column.compressed_size()).map_err(corrupt)?,
                    rows_written: u64::try_from(group.num_rows()).map_err(corrupt)?,
                    metadata: column.clone(),
                    bloom_filter: None,
                    column_index: None,
                    offset_index: None,
                };
                out.append_column(&part.bytes, chunk).map_err(corrupt)?;
            }
            out.close().map_err(corrupt)?;
            row_groups += 1;
        }
    }
    let bytes = writer.into_inner().map_err(corrupt)?;
    let updates = infos.iter().map(|p| p.updates).sum();
    Ok(Merged {
        encoded: EncodedPart {
            bytes: Bytes::from(bytes),
            row_groups,
            stats: joined_stats(infos),
        },
        updates,
        net_rows: infos.iter().map(|p| p.net_rows).sum(),
        min_ts: infos
            .iter()
            .filter(|p| p.updates > 0)
            .map(|p| p.min_ts)
            .min()
            .unwrap_or(0),
        max_ts: infos.iter().map(|p| p.max_ts).max().unwrap_or(0),
    })
}

/// Each column's smallest and largest value over the parts.
fn joined_stats(infos: &[&PartInfo]) -> Vec<ColumnStats> {
    let Some(first) = infos.first() else {
        return Vec::new();
    };
    let mut stats = first.columns.clone();
    for info in &infos[1..] {
        for (joined, column) in stats.iter_mut().zip(&info.columns) {
            if let (Some(min), Some(max)) = (&column.min, &column.max) {
                joined.include(min.clone(), max.clone());
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::part::{self, PartReader, PartRow};
    use petrel_value::{Value, F64};
    use rand::{Rng, SeedableRng};

    fn names() -> Vec<String> {
        ["country", "user_id", "score", "path"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Random rows of one part, in log order, their log positions from `first`.
    fn part_rows(rng: &mut rand::rngs::StdRng, n: usize, first: u64) -> Vec<PartRow> {
        let countries = ["DE", "FR", "US", "a much longer country name"];
        (0..n)
            .map(|i| {
                let country = match rng.random_range(0..10) {
                    0 => Value::Null,
                    c => Value::str(countries[c % countries.len()]),
                };
                PartRow {
                    seq: first + (i / 7) as u64,
                    ts: 1_000 + rng.random_range(0..5_000),
                    diff: if rng.random_range(0..10) == 0 { -1 } else { 1 },
                    row: vec![
                        country,
                        Value::UInt(rng.random_range(0..50)),
                        Value::Float(F64(rng.random_range(-3..3) as f64 * 0.5)),
                        Value::str(&format!("/p/{}", rng.random_range(0..100))),
                    ],
                }
            })
            .collect()
    }

    /// A part of `rows` and its manifest entry.
    fn part(rows: &[PartRow]) -> (PartFile, PartInfo) {
        opened(rows, part::encode(&names(), rows).expect("encodes"))
    }

    /// The part `encoded` from `rows`, and its manifest entry.
    fn opened(rows: &[PartRow], encoded: EncodedPart) -> (PartFile, PartInfo) {
        let info = PartInfo {
            file: String::new(),
            first: 0,
            end: 0,
            partition: None,
            updates: rows.len() as u64,
            net_rows: rows.iter().map(|r| r.diff).sum(),
            bytes: encoded.bytes.len() as u64,
            row_groups: encoded.row_groups,
            min_ts: rows.iter().map(|r| r.ts).min().unwrap_or(0),
            max_ts: rows.iter().map(|r| r.ts).max().unwrap_or(0),
            columns: encoded.stats,
        };
        (PartFile::open(encoded.bytes).expect("opens"), info)
    }

    /// `rows` as [`read_back`] gives them.
    fn as_read(rows: &[PartRow]) -> Vec<(u64, Ts, isize, Vec<Value>)> {
        rows.iter()
            .map(|r| (r.seq, r.ts, r.diff as isize, r.row.clone()))
            .collect()
    }

    fn read_back(bytes: Bytes) -> Vec<(u64, Ts, isize, Vec<Value>)> {
        let mut out = Vec::new();
        part::decode_with_seq(bytes, &mut |seq, row, ts, diff| {
            out.push((seq, ts, diff, row))
        })
        .expect("the merged part reads back");
        out
    }

    /// A merge of three parts (one over several row groups, keys with NULLs, ties and long
    /// strings) by their row groups holds exactly their rows, part after part, each row group
    /// still in the part order; it stores its columns as they did, and its statistics and
    /// figures are those of a part written from all the rows.
    #[test]
    fn a_merge_by_row_groups_holds_its_parts_rows_and_figures() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let a = part_rows(&mut rng, ROW_GROUP_ROWS + 1_234, 0);
        let b = part_rows(&mut rng, 40_000, 100_000);
        let c = part_rows(&mut rng, 7_000, 200_000);
        let (files, infos): (Vec<PartFile>, Vec<PartInfo>) =
            [&a, &b, &c].into_iter().map(|rows| part(rows)).unzip();
        assert!(applies(&files, names().len()));
        let infos: Vec<&PartInfo> = infos.iter().collect();
        let merged = concatenate(&files, &infos).expect("merges");
        let union: Vec<PartRow> = a.iter().chain(&b).chain(&c).cloned().collect();
        assert_eq!(read_back(merged.encoded.bytes.clone()), as_read(&union));
        let reference = part::encode(&names(), &union).expect("encodes");
        assert_eq!(merged.encoded.stats, reference.stats);
        assert_eq!(
            merged.encoded.row_groups,
            infos.iter().map(|p| p.row_groups).sum::<usize>()
        );
        assert_eq!(merged.updates, union.len() as u64);
        assert_eq!(merged.net_rows, union.iter().map(|r| r.diff).sum::<i64>());
        assert_eq!(merged.min_ts, union.iter().map(|r| r.ts).min().unwrap_or(0));
        assert_eq!(merged.max_ts, union.iter().map(|r| r.ts).max().unwrap_or(0));
        let stored = |bytes: Bytes| PartReader::open(bytes).expect("opens").kinds();
        assert_eq!(
            stored(merged.encoded.bytes.clone()),
            stored(part::encode(&names(), &a).expect("encodes").bytes)
        );
    }

    /// Parts written by earlier versions (zstd) read back, and merge by their row groups with
    /// parts written now (LZ4): each copied column chunk keeps its own codec, and the merged
    /// part reads back as the rows of both.
    #[test]
    fn parts_compressed_with_zstd_read_and_merge_with_lz4_parts() {
        use parquet::basic::{Compression, ZstdLevel};
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let old_rows = part_rows(&mut rng, 3_000, 0);
        let new_rows = part_rows(&mut rng, 2_000, 10_000);
        let old =
            part::encode_compressed(&names(), &old_rows, Compression::ZSTD(ZstdLevel::default()))
                .expect("encodes");
        assert_eq!(read_back(old.bytes.clone()), as_read(&old_rows));
        let (old, old_info) = opened(&old_rows, old);
        let (new, new_info) = part(&new_rows);
        let codecs = |file: &PartFile| -> Vec<Compression> {
            let groups = file.metadata.row_groups();
            groups
                .iter()
                .flat_map(|g| g.columns().iter().map(|c| c.compression()))
                .collect()
        };
        assert!(codecs(&old)
            .iter()
            .all(|c| matches!(c, Compression::ZSTD(_))));
        assert!(codecs(&new).iter().all(|c| *c == Compression::LZ4_RAW));
        let files = [old, new];
        assert!(applies(&files, names().len()));
        let merged = concatenate(&files, &[&old_info, &new_info]).expect("merges");
        let both: Vec<PartRow> = old_rows.iter().chain(&new_rows).cloned().collect();
        assert_eq!(read_back(merged.encoded.bytes.clone()), as_read(&both));
        let merged = PartFile::open(merged.encoded.bytes).expect("opens");
        let (old_codecs, new_codecs) = (codecs(&files[0]), codecs(&files[1]));
        assert_eq!(codecs(&merged), [old_codecs, new_codecs].concat());
    }

    /// Parts of few rows (a table that compacts few rows at a time) are merged by copying
    /// once; a part made of their small row groups is not copied again, so a part never holds
    /// more than one row group per part of its last merge beyond what its rows need.
    #[test]
    fn small_row_groups_are_copied_into_one_part_only() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let small: Vec<(PartFile, PartInfo)> = (0..3)
            .map(|i| part(&part_rows(&mut rng, 10, i * 100)))
            .collect();
        let (files, infos): (Vec<PartFile>, Vec<PartInfo>) = small.into_iter().unzip();
        assert!(applies(&files, names().len()));
        let merged = concatenate(&files, &infos.iter().collect::<Vec<_>>()).expect("merges");
        assert_eq!(merged.encoded.row_groups, 3);
        let copied = || PartFile::open(merged.encoded.bytes.clone()).expect("opens");
        assert!(!applies(&[copied(), copied()], names().len()));
        assert!(!applies(&[copied()], names().len()));
    }

    /// Parts that store a column differently (also as kinds that share a Parquet type), or lack
    /// a column of the datasource, are left to the row-by-row merge.
    #[test]
    fn parts_stored_differently_are_not_merged_by_row_groups() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let a = part_rows(&mut rng, 100, 0);
        let mut b = part_rows(&mut rng, 100, 1_000);
        b[0].row[1] = Value::Int(-1);
        let (fa, fb, fa2) = (part(&a).0, part(&b).0, part(&a).0);
        assert!(!applies(&[fa, fb], names().len()));
        // Integers and times are both stored as 64-bit integers; only the kind tells them
        // apart.
        let times = |rows: &[PartRow], time: bool| -> Vec<PartRow> {
            let mut rows = rows.to_vec();
            for r in &mut rows {
                r.row[1] = match (&r.row[1], time) {
                    (Value::UInt(u), true) => Value::DateTime(*u as i64),
                    (Value::UInt(u), false) => Value::Int(*u as i64),
                    (v, _) => v.clone(),
                };
            }
            rows
        };
        let (ints, dates) = (part(&times(&a, false)).0, part(&times(&a, true)).0);
        assert!(!applies(&[ints, dates], names().len()));
        assert!(applies(std::slice::from_ref(&fa2), names().len()));
        assert!(!applies(&[fa2], names().len() + 1));
    }
}
