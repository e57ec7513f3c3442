//! `petrel datasource ls|append|truncate` against a running server.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;

use super::client::{json, runtime, HostArgs};
use super::output::{print, Output};
use super::CliError;

/// Options of `petrel datasource ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    #[command(flatten)]
    host: HostArgs,
    /// human, json or csv.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
}

/// Options of `petrel datasource append DS FILE`.
#[derive(Args, Debug)]
pub struct AppendArgs {
    /// The datasource.
    datasource: String,
    /// An NDJSON file, or a `.csv` file (columns in schema order).
    file: PathBuf,
    #[command(flatten)]
    host: HostArgs,
}

/// Options of `petrel datasource truncate DS`.
#[derive(Args, Debug)]
pub struct TruncateArgs {
    /// The datasource.
    datasource: String,
    #[command(flatten)]
    host: HostArgs,
}

/// Lists the datasources with their row counts.
pub fn ls(args: LsArgs) -> Result<(), CliError> {
    runtime()?.block_on(async move {
        let client = reqwest::Client::new();
        let token = args.host.token(&client).await?;
        let v = json(
            client
                .get(format!("{}/v0/datasources", args.host.base()))
                .bearer_auth(token),
        )
        .await?;
        let rows: Vec<Vec<String>> = v["datasources"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                vec![
                    d["name"].as_str().unwrap_or("").to_string(),
                    d["row_count"].to_string(),
                    d["quarantine_rows"].to_string(),
                    d["columns"]
                        .as_array()
                        .map(|c| c.len())
                        .unwrap_or(0)
                        .to_string(),
                ]
            })
            .collect();
        print(
            args.output,
            &["name", "rows", "quarantined", "columns"],
            &rows,
        );
        Ok(())
    })
}

/// Most bytes sent per request.
const CHUNK: usize = 10 * 1024 * 1024;

/// Sends an NDJSON (or `.csv`) file in chunks of whole lines, each acknowledged durably; a
/// `.parquet` file goes in one request.
pub fn append(args: AppendArgs) -> Result<(), CliError> {
    if args.file.extension().is_some_and(|x| x == "parquet") {
        return append_parquet(args);
    }
    let is_csv = args.file.extension().is_some_and(|x| x == "csv");
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", args.file.display())))?;
    runtime()?.block_on(async move {
        let client = reqwest::Client::new();
        let token = args.host.token(&client).await?;
        let progress = std::io::stderr().is_terminal();
        let (mut ok, mut bad, mut sent) = (0u64, 0u64, 0usize);
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let mut end = rest.len().min(CHUNK);
            if end < rest.len() {
                end = rest[..end].rfind('\n').map(|i| i + 1).unwrap_or(rest.len());
            }
            let (chunk, tail) = rest.split_at(end);
            let format = if is_csv { "csv" } else { "ndjson" };
            let v = post_rows(&client, &args, &token, format, chunk.to_string()).await?;
            ok += v["successful_rows"].as_u64().unwrap_or(0);
            bad += v["quarantined_rows"].as_u64().unwrap_or(0);
            sent += chunk.len();
            rest = tail;
            if progress {
                eprint!("\r{:>3}% ({ok} rows)", sent * 100 / text.len().max(1));
            }
        }
        if progress {
            eprintln!();
        }
        println!("✓ {ok} rows appended");
        if bad > 0 {
            println!("✗ {bad} rows went to quarantine");
        }
        Ok(())
    })
}

/// One durable append request of `body` in `format`; returns the server's answer.
async fn post_rows(
    client: &reqwest::Client,
    args: &AppendArgs,
    token: &str,
    format: &str,
    body: impl Into<reqwest::Body>,
) -> Result<serde_json::Value, CliError> {
    json(
        client
            .post(format!("{}/v0/datasources", args.host.base()))
            .bearer_auth(token)
            .query(&[
                ("name", args.datasource.as_str()),
                ("mode", "append"),
                ("format", format),
            ])
            .body(body),
    )
    .await
}

fn append_parquet(args: AppendArgs) -> Result<(), CliError> {
    let body = std::fs::read(&args.file)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", args.file.display())))?;
    runtime()?.block_on(async move {
        let client = reqwest::Client::new();
        let token = args.host.token(&client).await?;
        let v = post_rows(&client, &args, &token, "parquet", body).await?;
        println!("✓ {} rows appended", v["successful_rows"]);
        let bad = v["quarantined_rows"].as_u64().unwrap_or(0);
        if bad > 0 {
            println!("✗ {bad} rows went to quarantine");
        }
        Ok(())
    })
}

/// Removes every row of a datasource (views update).
pub fn truncate(args: TruncateArgs) -> Result<(), CliError> {
    runtime()?.block_on(async move {
        let client = reqwest::Client::new();
        let token = args.host.token(&client).await?;
        let v = json(
            client
                .post(format!(
                    "{}/v0/datasources/{}/truncate",
                    args.host.base(),
                    args.datasource
                ))
                .bearer_auth(token),
        )
        .await?;
        println!(
            "✓ {} rows removed from {}",
            v["truncated_rows"], args.datasource
        );
        Ok(())
    })
}
