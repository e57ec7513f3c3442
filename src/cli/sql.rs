//! `petrel sql "SELECT ..."`: runs a query on a running server through `GET /v0/sql`.

use clap::Args;

use super::client::{json, runtime, HostArgs};
use super::output::{print, Output};
use super::CliError;

/// Options of `petrel sql`.
#[derive(Args, Debug)]
pub struct SqlArgs {
    /// The query.
    query: String,
    #[command(flatten)]
    host: HostArgs,
    /// Output: a human table, the raw JSON, or CSV with a header.
    #[arg(long, alias = "output", default_value = "table", value_parser = ["table", "human", "json", "csv"])]
    format: String,
}

/// Runs the query and prints the answer.
pub fn run(args: SqlArgs) -> Result<(), CliError> {
    runtime()?.block_on(async move {
        let client = reqwest::Client::new();
        let token = args.host.token(&client).await?;
        let host = args.host.base();
        if args.format == "csv" {
            let text = client
                .get(format!("{host}/v0/sql"))
                .bearer_auth(&token)
                .query(&[("q", format!("{} FORMAT CSVWithNames", args.query))])
                .send()
                .await
                .map_err(|e| CliError::Failed(format!("cannot reach {host}: {e}")))?;
            let status = text.status();
            let body = text
                .text()
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            if !status.is_success() {
                let message = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or(body);
                return Err(CliError::Failed(format!("{status}: {message}")));
            }
            print!("{body}");
            return Ok(());
        }
        let v = json(
            client
                .get(format!("{host}/v0/sql"))
                .bearer_auth(&token)
                .query(&[("q", format!("{} FORMAT JSON", args.query))]),
        )
        .await?;
        if args.format == "json" {
            println!("{v}");
            return Ok(());
        }
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
        let header: Vec<&str> = names.iter().map(String::as_str).collect();
        print(Output::Human, &header, &rows);
        println!("{} row(s)", rows.len());
        Ok(())
    })
}
