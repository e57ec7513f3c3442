//! `petrel sql "SELECT ..."`: runs a query on a running server through `GET /v0/sql`.

use clap::Args;

use super::CliError;

/// Options of `petrel sql`.
#[derive(Args, Debug)]
pub struct SqlArgs {
    /// The query.
    query: String,
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:7181", env = "PETREL_HOST")]
    host: String,
    /// The token (default: the admin token that a local server hands out on `GET /tokens`).
    #[arg(long, env = "PETREL_TOKEN")]
    token: Option<String>,
    /// Output: a human table, the raw JSON, or CSV with a header.
    #[arg(long, default_value = "table", value_parser = ["table", "json", "csv"])]
    format: String,
}

/// Runs the query and prints the answer.
pub fn run(args: SqlArgs) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(e.to_string()))?;
    rt.block_on(async move {
        let client = reqwest::Client::new();
        let host = args.host.trim_end_matches('/');
        let token = match args.token {
            Some(t) => t,
            None => {
                let tokens: serde_json::Value = client
                    .get(format!("{host}/tokens"))
                    .send()
                    .await
                    .map_err(|e| CliError::Failed(format!("cannot reach {host}: {e}")))?
                    .json()
                    .await
                    .map_err(|e| CliError::Failed(format!("bad answer from {host}/tokens: {e}")))?;
                tokens["admin_token"]
                    .as_str()
                    .ok_or_else(|| CliError::Failed("no admin token; pass --token".into()))?
                    .to_string()
            }
        };
        let format = if args.format == "csv" {
            "CSVWithNames"
        } else {
            "JSON"
        };
        let response = client
            .get(format!("{host}/v0/sql"))
            .bearer_auth(token)
            .query(&[("q", format!("{} FORMAT {format}", args.query))])
            .send()
            .await
            .map_err(|e| CliError::Failed(format!("cannot reach {host}: {e}")))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(text);
            return Err(CliError::Failed(format!("{status}: {message}")));
        }
        match args.format.as_str() {
            "table" => {
                let v: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| CliError::Failed(format!("bad JSON answer: {e}")))?;
                print!("{}", table(&v));
            }
            _ => print!("{text}"),
        }
        Ok(())
    })
}

/// Renders a JSON result as an aligned text table.
fn table(v: &serde_json::Value) -> String {
    let names: Vec<String> = v["meta"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|c| c["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = v["data"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|r| {
                    names
                        .iter()
                        .map(|n| match &r[n] {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    let widths: Vec<usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([n.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
            + "\n"
    };
    let mut out = line(&names);
    out.push_str(&line(
        &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
    ));
    for r in &rows {
        out.push_str(&line(r));
    }
    out.push_str(&format!("{} row(s)\n", rows.len()));
    out
}
