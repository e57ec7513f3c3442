//! How listing commands print: a human table (the default), JSON or CSV.

use clap::ValueEnum;

/// `--output human|json|csv`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Human,
    /// One JSON document.
    Json,
    /// CSV with a header.
    Csv,
}

/// Prints rows of cells with a header in the chosen format.
pub fn print(output: Output, header: &[&str], rows: &[Vec<String>]) {
    match output {
        Output::Json => {
            let items: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    serde_json::Value::Object(
                        header
                            .iter()
                            .zip(r)
                            .map(|(h, v)| (h.to_string(), serde_json::Value::String(v.clone())))
                            .collect(),
                    )
                })
                .collect();
            println!("{}", serde_json::Value::Array(items));
        }
        Output::Csv => {
            let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
            println!(
                "{}",
                header
                    .iter()
                    .map(|h| quote(h))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            for r in rows {
                println!(
                    "{}",
                    r.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",")
                );
            }
        }
        Output::Human => {
            let widths: Vec<usize> = header
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    rows.iter()
                        .map(|r| r[i].chars().count())
                        .chain([h.len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: Vec<&str>| {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            println!("{}", line(header.to_vec()));
            for r in rows {
                println!("{}", line(r.iter().map(String::as_str).collect()));
            }
        }
    }
}
