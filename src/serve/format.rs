//! Result formats of the pull API: Tinybird's JSON envelope, CSV with a header, NDJSON.

use std::fmt::Write as _;

use petrel_value::{write_json_string, Column, Row, Value};

/// The output formats an endpoint or query can answer in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `{"meta","data","rows","rows_before_limit_at_least","statistics"}`.
    Json,
    /// A header line of column names, then one line per row.
    Csv,
    /// One JSON object per line, no envelope.
    Ndjson,
}

impl Format {
    /// The format named by a URL extension (`json`, `csv`, `ndjson`).
    pub fn from_extension(ext: &str) -> Option<Format> {
        match ext {
            "json" => Some(Format::Json),
            "csv" | "csvwithnames" => Some(Format::Csv),
            "ndjson" => Some(Format::Ndjson),
            _ => None,
        }
    }

    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
        }
    }
}

/// A result ready to format.
pub struct ResultSet<'a> {
    /// The columns shown.
    pub columns: &'a [Column],
    /// The rows, already sorted and limited.
    pub rows: &'a [Row],
    /// Rows before LIMIT/OFFSET were applied.
    pub rows_before_limit: usize,
    /// Seconds spent answering.
    pub elapsed: f64,
    /// Rows the answer read from the maintained view.
    pub rows_read: usize,
    /// The frontier the answer is consistent at: it holds every change below this time, so
    /// a subscription resuming with `since=upper` continues exactly after it.
    pub upper: u64,
}

/// Formats `result` in `format`.
pub fn render(format: Format, result: &ResultSet<'_>) -> String {
    let mut out = String::with_capacity(64 + result.rows.len() * 32);
    match format {
        Format::Json => {
            out.push_str("{\"meta\":[");
            for (i, c) in result.columns.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"name\":");
                write_json_string(&c.name, &mut out);
                out.push_str(",\"type\":");
                write_json_string(&c.ty.name(), &mut out);
                out.push('}');
            }
            out.push_str("],\"data\":[");
            for (i, row) in result.rows.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_object(result.columns, row, &mut out);
            }
            let _ = write!(
                out,
                "],\"rows\":{},\"rows_before_limit_at_least\":{},\"statistics\":{{\"elapsed\":{},\"rows_read\":{},\"bytes_read\":{},\"upper\":{}}}}}",
                result.rows.len(),
                result.rows_before_limit,
                result.elapsed,
                result.rows_read,
                result.rows_read * 8 * result.columns.len().max(1),
                result.upper
            );
        }
        Format::Ndjson => {
            for row in result.rows {
                write_object(result.columns, row, &mut out);
                out.push('\n');
            }
        }
        Format::Csv => {
            for (i, c) in result.columns.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_csv_field(&Value::from(c.name.as_str()), &mut out);
            }
            out.push('\n');
            for row in result.rows {
                for (i, v) in row.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_csv_field(v, &mut out);
                }
                out.push('\n');
            }
        }
    }
    out
}

/// Writes a row as a JSON object keyed by column name.
pub fn write_object(columns: &[Column], row: &[Value], out: &mut String) {
    out.push('{');
    for (i, (c, v)) in columns.iter().zip(row.iter()).enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(&c.name, out);
        out.push(':');
        v.write_json(out);
    }
    out.push('}');
}

/// ClickHouse's CSV: strings, dates and times in double quotes (doubled inside), numbers bare.
fn write_csv_field(v: &Value, out: &mut String) {
    match v {
        Value::Int(_) | Value::UInt(_) | Value::Float(_) | Value::Bool(_) | Value::Null => {
            v.write_text(out)
        }
        other => {
            out.push('"');
            out.push_str(&other.to_text().replace('"', "\"\""));
            out.push('"');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_value::ColumnType;

    #[test]
    fn formats_match_tinybird_shapes() {
        let columns = vec![
            Column {
                name: "user_id".into(),
                ty: ColumnType::UInt(32),
            },
            Column {
                name: "country".into(),
                ty: ColumnType::String,
            },
        ];
        let rows = vec![vec![Value::UInt(1), Value::str("U\"S")]];
        let rs = ResultSet {
            columns: &columns,
            rows: &rows,
            rows_before_limit: 1,
            elapsed: 0.001,
            rows_read: 1,
            upper: 42,
        };
        let json: serde_json::Value = serde_json::from_str(&render(Format::Json, &rs)).unwrap();
        assert_eq!(json["meta"][0]["type"], "UInt32");
        assert_eq!(json["data"][0]["country"], "U\"S");
        assert_eq!(json["rows"], 1);
        assert_eq!(json["statistics"]["upper"], 42);
        assert_eq!(
            render(Format::Ndjson, &rs),
            "{\"user_id\":1,\"country\":\"U\\\"S\"}\n"
        );
        assert_eq!(
            render(Format::Csv, &rs),
            "\"user_id\",\"country\"\n1,\"U\"\"S\"\n"
        );
    }
}
