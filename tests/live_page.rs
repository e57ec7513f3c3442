//! The live page in real headless Chromium, driven over the DevTools protocol: it shows a
//! pipe's table and updates it when events arrive, without a reload.
//!
//! Needs Debian's `chromium` (installed by `scripts/test.sh`), or `PETREL_CHROMIUM`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{client, Server, ADMIN};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

struct Chromium(std::process::Child, std::path::PathBuf);

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// Starts headless Chromium on `url`; returns it and its DevTools browser endpoint's port.
fn chromium(url: &str) -> (Chromium, u16) {
    let bin = std::env::var("PETREL_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let profile = common::temp_dir("chromium");
    let mut child = Command::new(&bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {bin} ({e}): scripts/test.sh installs Debian's chromium")
        });
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut port = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("DevTools listening on ws://127.0.0.1:").nth(1) {
            port = rest.split('/').next().and_then(|p| p.parse().ok());
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (
        Chromium(child, profile),
        port.expect("chromium printed its DevTools address"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_page_updates_without_reload() {
    let server = tokio::task::spawn_blocking(|| Server::start("dataflows/clicks", &[]))
        .await
        .unwrap();
    let ingest = |body: &'static str| {
        let r = client()
            .post(format!("{}/v0/events?name=clicks&wait=true", server.url))
            .bearer_auth(ADMIN)
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    tokio::task::block_in_place(|| {
        ingest(include_str!("../dataflows/clicks/fixtures/clicks.ndjson"))
    });
    let page = format!(
        "{}/?pipe=clicks_by_user&country=DE&token={ADMIN}",
        server.url
    );
    let (_browser, port) = chromium(&page);

    // The page's DevTools target.
    let targets: Vec<Value> = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let target = targets
        .iter()
        .find(|t| t["type"] == "page")
        .expect("a page target");
    let ws_url = target["webSocketDebuggerUrl"].as_str().unwrap().to_string();
    let (ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let mut cdp = Cdp { ws, id: 0 };
    let first = cdp.wait_for("22").await;
    assert!(first.contains('2'), "{first}");
    // New events: the same page (no reload) shows the new total.
    tokio::task::block_in_place(|| {
        ingest("{\"user_id\":2,\"click_count\":3,\"country\":\"DE\"}\n")
    });
    let updated = cdp.wait_for("25").await;
    assert!(!updated.contains("22"), "the old value is gone: {updated}");
    let shot = cdp
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await;
    if let Some(data) = shot["result"]["data"].as_str() {
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        assert!(png.len() > 1000, "a real screenshot");
        let _ = std::fs::write(std::env::temp_dir().join("petrel-live-page.png"), png);
    }
}

/// A DevTools protocol session on one page.
struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    id: u64,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.id += 1;
        let call = json!({"id": self.id, "method": method, "params": params});
        self.ws
            .send(Message::Text(call.to_string().into()))
            .await
            .unwrap();
        loop {
            let Some(Ok(Message::Text(t))) = self.ws.next().await else {
                panic!("devtools closed")
            };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == self.id {
                return v;
            }
        }
    }

    async fn table_text(&mut self) -> String {
        let v = self
            .call("Runtime.evaluate", json!({"expression": "document.getElementById('rows').innerText", "returnByValue": true}))
            .await;
        v["result"]["result"]["value"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Polls the table's text (not the server) until it shows `want`.
    async fn wait_for(&mut self, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.table_text().await;
            if text.contains(want) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {want:?}; it shows {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
