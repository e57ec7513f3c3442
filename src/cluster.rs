//! A Petrel cluster: several processes running one timely computation (docs/cluster.md).
//!
//! Every process runs the same dataflows; rows enter on the process that receives them (its
//! HTTP API or its share of a Kafka topic's partitions), are stored in that process's own
//! storage prefix, and are exchanged by key inside the dataflows. Process 0 is the
//! coordinator: it installs every view (so the views' rows are published there), serves
//! endpoints, subscriptions and ad-hoc SQL, runs sinks and copy pipes, and sequences deploys.
//! The other processes, the followers, take writes themselves and forward every other
//! request to process 0. This module holds what the processes tell each other over HTTP.

use std::collections::BTreeSet;
use std::time::Duration;

use petrel_view::Ts;

/// One process of a cluster file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Where timely connects to it (`host:port`).
    pub cluster_address: String,
    /// Its HTTP API (`http://host:port`).
    pub http_url: String,
}

/// Cluster-file problems.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A line is not `HOST:PORT http://HOST:PORT`.
    #[error("cluster file line {line}: {message}")]
    BadLine {
        /// 1-based.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The file lists no process, or `--process` is not one of them.
    #[error("{0}")]
    Invalid(String),
    /// Another process did not answer as it should.
    #[error("process {process} ({url}): {message}")]
    Peer {
        /// Its index.
        process: usize,
        /// Its HTTP URL.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// Parses a cluster file: one process per line, `CLUSTER_ADDRESS HTTP_URL`, in process order
/// (`#` starts a comment).
pub fn parse_members(text: &str) -> Result<Vec<Member>, ClusterError> {
    let mut members = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = |message: &str| ClusterError::BadLine {
            line: i + 1,
            message: message.to_string(),
        };
        let mut fields = line.split_whitespace();
        let (Some(address), Some(url), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad("expected `HOST:PORT http://HOST:PORT`"));
        };
        if address
            .rsplit_once(':')
            .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        {
            return Err(bad("the cluster address must be HOST:PORT"));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad("the HTTP URL must start with http:// or https://"));
        }
        members.push(Member {
            cluster_address: address.to_string(),
            http_url: url.trim_end_matches('/').to_string(),
        });
    }
    if members.is_empty() {
        return Err(ClusterError::Invalid(
            "the cluster file lists no process".into(),
        ));
    }
    Ok(members)
}

/// This process's place in a cluster.
#[derive(Clone, Debug)]
pub struct ClusterRole {
    /// This process's index.
    pub process: usize,
    /// Every process, in order.
    pub members: Vec<Member>,
    /// The admin token every process shares: processes call each other with it.
    pub admin_token: String,
}

/// What `GET /v0/cluster/local` tells about one process.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ProcessStatus {
    /// Its index.
    pub process: usize,
    /// Its timely workers.
    pub workers: usize,
    /// Its clock's open tick: every row it took from now on lands at or after it.
    pub frontier: Ts,
    /// True once its datasources are open and it takes writes.
    pub ready: bool,
    /// Why its workers stopped (a lost peer), if they did.
    pub failure: Option<String>,
    /// The durable frontier its previous run stored: every change it took below it survived.
    #[serde(default)]
    pub stored_frontier: Option<Ts>,
}

impl ClusterRole {
    /// The role of process `process` of `members`.
    pub fn new(
        process: usize,
        members: Vec<Member>,
        admin_token: String,
    ) -> Result<ClusterRole, ClusterError> {
        if process >= members.len() {
            return Err(ClusterError::Invalid(format!(
                "--process {process} is not in the cluster file, which lists {} process(es) (0 to {})",
                members.len(),
                members.len().saturating_sub(1)
            )));
        }
        Ok(ClusterRole {
            process,
            members,
            admin_token,
        })
    }

    /// True on process 0, which installs views and serves reads.
    pub fn is_coordinator(&self) -> bool {
        self.process == 0
    }

    /// True on process 0 of a cluster that has other processes: what it changes (deploys,
    /// truncates, deletes), it asks them to change too.
    pub fn leads_followers(&self) -> bool {
        self.process == 0 && self.members.len() > 1
    }

    /// Process 0's HTTP URL.
    pub fn coordinator_url(&self) -> &str {
        &self.members[0].http_url
    }

    /// Every process's cluster address, for timely.
    pub fn addresses(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| m.cluster_address.clone())
            .collect()
    }

    fn client(timeout: Duration) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default()
    }

    fn peer_error(&self, process: usize, message: impl std::fmt::Display) -> ClusterError {
        ClusterError::Peer {
            process,
            url: self.members[process].http_url.clone(),
            message: message.to_string(),
        }
    }

    /// POSTs `body` to `path` of process `process` with the admin token; its JSON answer,
    /// or the error it answered with.
    async fn post(
        &self,
        process: usize,
        path: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, ClusterError> {
        let url = format!("{}{path}", self.members[process].http_url);
        let response = Self::client(timeout)
            .post(&url)
            .bearer_auth(&self.admin_token)
            .json(body)
            .send()
            .await
            .map_err(|e| self.peer_error(process, e))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(self.peer_error(process, format!("{status}: {text}")));
        }
        Ok(serde_json::from_str(&text).unwrap_or_default())
    }

    /// Asks every follower to run a share operation (`/v0/cluster/truncate` or
    /// `/v0/cluster/delete`) on its own rows; returns the rows they removed together.
    pub async fn on_every_share(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<u64, ClusterError> {
        let mut rows = 0;
        for process in 1..self.members.len() {
            let answer = self
                .post(process, path, body, Duration::from_secs(300))
                .await?;
            rows += answer["rows"].as_u64().unwrap_or(0);
        }
        Ok(rows)
    }

    /// Waits until process 0's views that read `tables` have passed `ts` (a follower's
    /// `wait=true`: its rows are visible wherever they are read).
    pub async fn wait_visible(&self, tables: &[String], ts: Ts) -> Result<(), ClusterError> {
        let body = serde_json::json!({"tables": tables, "ts": ts});
        self.post(0, "/v0/cluster/visible", &body, Duration::from_secs(60))
            .await
            .map(|_| ())
    }

    /// Sends a deploy's datafiles to every follower, which applies them before process 0
    /// does: by the time process 0 installs views on the new project, every process has its
    /// datasources.
    pub async fn push_deploy(
        &self,
        files: &std::collections::BTreeMap<String, String>,
        destructive: bool,
    ) -> Result<(), ClusterError> {
        let body = serde_json::json!({"files": files, "allow_destructive_operations": destructive});
        for process in 1..self.members.len() {
            self.post(
                process,
                "/v0/cluster/deploy",
                &body,
                Duration::from_secs(120),
            )
            .await?;
        }
        Ok(())
    }

    /// GETs `path` of process `process` with the admin token; its JSON answer.
    async fn get(
        &self,
        process: usize,
        path: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value, ClusterError> {
        let url = format!("{}{path}", self.members[process].http_url);
        let response = Self::client(timeout)
            .get(&url)
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .map_err(|e| self.peer_error(process, e))?;
        if !response.status().is_success() {
            return Err(self.peer_error(process, response.status()));
        }
        response
            .json()
            .await
            .map_err(|e| self.peer_error(process, e))
    }

    /// The status of process `process`, asked over HTTP.
    pub async fn status_of(&self, process: usize) -> Result<ProcessStatus, ClusterError> {
        let answer = self
            .get(process, "/v0/cluster/local", Duration::from_secs(2))
            .await?;
        serde_json::from_value(answer).map_err(|e| self.peer_error(process, e))
    }

    /// Every follower's own figures of its datasources (`GET /v0/cluster/datasources`).
    pub async fn followers_datasources(&self) -> Result<Vec<serde_json::Value>, ClusterError> {
        let mut out = Vec::new();
        for process in 1..self.members.len() {
            out.push(
                self.get(process, "/v0/cluster/datasources", Duration::from_secs(10))
                    .await?,
            );
        }
        Ok(out)
    }

    /// Waits until every follower has opened its datasources (process 0, before it installs
    /// any view: a follower's stored rows must be there when the views replay history);
    /// returns their statuses.
    pub async fn wait_for_followers(&self) -> Vec<ProcessStatus> {
        let mut waiting: BTreeSet<usize> = (1..self.members.len()).collect();
        let mut ready = Vec::new();
        let mut reported = std::time::Instant::now();
        while !waiting.is_empty() {
            for process in waiting.clone() {
                if let Ok(status) = self.status_of(process).await {
                    if status.ready {
                        waiting.remove(&process);
                        ready.push(status);
                    }
                }
            }
            if !waiting.is_empty() {
                if reported.elapsed() > Duration::from_secs(5) {
                    tracing::info!(?waiting, "waiting for the cluster's other processes");
                    reported = std::time::Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_files_parse_and_bad_lines_say_where() {
        let members = parse_members(
            "# three processes\n127.0.0.1:7300 http://127.0.0.1:7181\n\n127.0.0.1:7301 http://127.0.0.1:7182/ # one\n",
        )
        .unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[1].http_url, "http://127.0.0.1:7182");
        let e = parse_members("a:1 http://x\nnoport http://y\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(parse_members("a:1 ftp://y").is_err());
        assert!(parse_members("# nothing\n").is_err());
        assert!(ClusterRole::new(2, members, "t".into()).is_err());
    }
}
