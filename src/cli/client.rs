//! What the commands that talk to a running server share: the host, the token, a client.

use clap::Args;

use super::CliError;

/// Which server, and with which token.
#[derive(Args, Debug, Clone)]
pub struct HostArgs {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:7181", env = "PETREL_HOST")]
    pub host: String,
    /// The token (default: the admin token a local server hands out on `GET /tokens`).
    #[arg(long, env = "PETREL_TOKEN")]
    pub token: Option<String>,
}

impl HostArgs {
    /// The host without a trailing slash.
    pub fn base(&self) -> &str {
        self.host.trim_end_matches('/')
    }

    /// The token to send: `--token`, or the admin token from a local server's `GET /tokens`.
    pub async fn token(&self, client: &reqwest::Client) -> Result<String, CliError> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        let host = self.base();
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
            .map(str::to_string)
            .ok_or_else(|| CliError::Failed("no admin token; pass --token".into()))
    }
}

/// A single-threaded runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(e.to_string()))
}

/// Sends a request and returns its JSON body, turning error statuses into the server's
/// `error` message.
pub async fn json(request: reqwest::RequestBuilder) -> Result<serde_json::Value, CliError> {
    let response = request
        .send()
        .await
        .map_err(|e| CliError::Failed(format!("request failed: {e}")))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let body: serde_json::Value =
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    if !status.is_success() {
        let message = body["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        return Err(CliError::Failed(format!("{status}: {message}")));
    }
    Ok(body)
}
