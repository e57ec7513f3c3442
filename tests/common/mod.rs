//! Test support: a real `petrel` server process on a free loopback port, over a private copy
//! of a project folder, stopped when the handle drops.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The first of `n` consecutive loopback ports for a child process to bind (an S3 server, a
/// broker, a cluster's processes), which it binds after this returns. Picked at random below
/// the kernel's range of ephemeral ports, checked free, and never handed twice by one test
/// binary: a port picked by binding port 0 comes from the ephemeral range, where any
/// outgoing connection of the machine (another test's client, a broker's) may take it
/// before the child binds it (the cluster and S3 tests failed that way under load).
pub fn unused_ports(n: u16) -> u16 {
    use rand::Rng;
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static HANDED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let (low, high) = if ephemeral_low > 12_000 + n {
        (10_000, ephemeral_low - n)
    } else {
        (61_000, u16::MAX - n)
    };
    let mut rng = rand::rng();
    let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let first = rng.random_range(low..high);
        let ports = first..first + n;
        let free = ports
            .clone()
            .all(|p| !handed.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            handed.extend(ports);
            return first;
        }
    }
}

/// One port as [`unused_ports`] picks them.
pub fn unused_port() -> u16 {
    unused_ports(1)
}

/// The admin token every test server uses.
pub const ADMIN: &str = "test-admin-token-0123456789abcdef";

/// A running server.
pub struct Server {
    pub url: String,
    pub dir: PathBuf,
    child: Child,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            if e.file_name() != ".petrel" {
                copy_dir(&e.path(), &target);
            }
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A fresh temporary folder.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "petrel-test-{name}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_007
}

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
}

impl Server {
    /// Starts a server over a copy of `project` (relative to the repository root).
    pub fn start(project: &str, extra: &[&str]) -> Server {
        let dir = temp_dir(&project.replace('/', "_"));
        copy_dir(&repo().join(project), &dir);
        Server::start_in(dir, extra)
    }

    /// Starts a server over the project folder `dir` (data kept in `dir/.petrel`).
    pub fn start_in(dir: PathBuf, extra: &[&str]) -> Server {
        Server::run(&["local", "start"], dir, extra)
    }

    /// Runs `petrel <command> --port 0 --project DIR <extra>` (e.g. `local start` or `dev`)
    /// and waits until it listens.
    pub fn run(command: &[&str], dir: PathBuf, extra: &[&str]) -> Server {
        Server::run_env(command, dir, extra, &[])
    }

    /// As [`Server::run`], with extra environment variables.
    pub fn run_env(
        command: &[&str],
        dir: PathBuf,
        extra: &[&str],
        env: &[(String, String)],
    ) -> Server {
        Server::try_run_env(command, dir, extra, env, Duration::from_secs(120))
            .expect("the server printed its address")
    }

    /// As [`Server::run_env`], or `None` when the server has not printed its address within
    /// `patience` (it exited, or it waits for cluster peers that will not come): the process
    /// is then killed.
    pub fn try_run_env(
        command: &[&str],
        dir: PathBuf,
        extra: &[&str],
        env: &[(String, String)],
        patience: Duration,
    ) -> Option<Server> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_petrel"))
            .args(command)
            .args(["--port", "0", "--project"])
            .arg(&dir)
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("PETREL_ADMIN_TOKEN", ADMIN)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("petrel starts");
        let stdout = child.stdout.take().expect("stdout");
        let (address, printed) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            for line in lines.by_ref() {
                if let Some(rest) = line.strip_prefix("Petrel is listening on ") {
                    let _ = address.send(rest.trim().to_string());
                    break;
                }
            }
            // Keep draining stdout so the server never blocks on a full pipe.
            for _ in lines {}
        });
        match printed.recv_timeout(patience) {
            Ok(url) => Some(Server { url, dir, child }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        }
    }

    /// The server's resident memory in bytes (from /proc).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }

    /// Stops the server, keeping its data folder.
    pub fn stop(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP client with a timeout.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Runs the `petrel` binary; returns its exit code, stdout and stderr.
pub fn petrel(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// GETs a path of a server with the admin token, as JSON.
pub fn get(server: &Server, path: &str) -> serde_json::Value {
    client()
        .get(format!("{}{path}", server.url))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// Copies the datafile folders and fixtures of a repository project into a fresh folder.
pub fn copy_project_files(project: &str, name: &str) -> PathBuf {
    let dir = temp_dir(name);
    let from = repo().join(project);
    for e in std::fs::read_dir(&from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.') {
            copy_dir(&e.path(), &dir.join(e.file_name()));
        }
    }
    dir
}

/// A real S3-compatible server (moto, installed by scripts/test.sh) on a free loopback port,
/// with one bucket; stopped when dropped.
pub struct S3Server {
    pub endpoint: String,
    pub bucket: String,
    child: Child,
}

impl S3Server {
    /// Starts the server and creates `bucket`.
    pub fn start(bucket: &str) -> S3Server {
        let bin = std::env::var("PETREL_MOTO").unwrap_or_else(|_| {
            panic!("PETREL_MOTO is not set: run the tests through scripts/test.sh, which installs the S3 server")
        });
        let port = unused_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the S3 server starts");
        let endpoint = format!("http://127.0.0.1:{port}");
        let server = S3Server {
            endpoint,
            bucket: bucket.to_string(),
            child,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let created = client()
                .put(format!("{}/{bucket}", server.endpoint))
                .send()
                .map(|r| r.status().is_success());
            if let Ok(true) = created {
                return server;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the S3 server did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The environment a Petrel process needs to use this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "petrel-test"),
            ("AWS_SECRET_ACCESS_KEY", "petrel-test-secret"),
            ("AWS_REGION", "us-east-1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The storage URL of a prefix in the bucket.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends NDJSON events to `clicks` with `wait=true`; returns the timestamp they landed at.
pub fn ingest_clicks(server: &Server, body: &str) -> u64 {
    let r = client()
        .post(format!("{}/v0/events?name=clicks&wait=true", server.url))
        .bearer_auth(ADMIN)
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<serde_json::Value>().unwrap()["ts"]
        .as_u64()
        .unwrap()
}

/// A WebSocket subscription.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Subscribes to `clicks_by_user` over WebSocket with the admin token and `query`.
pub async fn connect_clicks_by_user(server: &Server, query: &str) -> Ws {
    let url = format!(
        "{}/v0/pipes/clicks_by_user.ws?token={ADMIN}&{query}",
        server.url.replace("http", "ws")
    );
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects")
        .0
}

/// The next text message of a subscription, as JSON (within 20 s).
pub async fn next_json(ws: &mut Ws) -> serde_json::Value {
    use futures_util::StreamExt;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a message within 20 s")
            .expect("stream open")
            .expect("no websocket error");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// A JWT signed with HS256 under `key` (Tinybird's: the admin token) with `claims`.
pub fn jwt(key: &str, claims: &serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{header}.{payload}").as_bytes());
    format!(
        "{header}.{payload}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// Serves `files` (path → bytes) over HTTP on a loopback port until the test ends; its URL.
pub fn file_server(files: Vec<(&'static str, Vec<u8>)>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // Skip the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or("");
            let mut stream = stream;
            match files.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(body);
                }
                None => {
                    let _ = stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        }
    });
    url
}

/// Runs `tests/oracle/SCRIPT` under the Python with chdb (`PETREL_PYTHON`, which
/// `scripts/test.sh` sets up) with `input` as JSON on its standard input; its standard output,
/// after checking it succeeded.
pub fn chdb_script(script: &str, input: &serde_json::Value) -> Vec<u8> {
    let python = std::env::var_os("PETREL_PYTHON").unwrap_or_else(|| {
        panic!(
            "PETREL_PYTHON is not set: run the tests through scripts/test.sh, which installs chdb"
        )
    });
    let mut child = Command::new(python)
        .arg(repo().join("tests/oracle").join(script))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("the script reads its input");
    let out = child.wait_with_output().expect("the script ends");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A real Kafka-protocol broker (Tansu, installed by scripts/test.sh) on a free loopback port,
/// in memory; stopped when dropped.
pub struct Broker {
    child: Child,
    /// `host:port` for clients.
    pub address: String,
    bin: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    /// Starts the broker and waits until it listens.
    pub fn start() -> Broker {
        let bin = std::env::var("PETREL_TANSU").unwrap_or_else(|_| {
            panic!("PETREL_TANSU is not set: run the tests through scripts/test.sh, which installs the broker")
        });
        let port = unused_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the broker did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker {
            child,
            address: format!("127.0.0.1:{port}"),
            bin,
        }
    }

    /// Creates topic `name` with `partitions` partitions.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(&self.bin)
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://{}", self.address)])
            .status()
            .unwrap();
        assert!(status.success(), "topic {name} created");
    }
}

/// Produces `n` JSON click messages (ids `from..from + n`, keyed by id, countries DE, US, VN
/// in turn, `click_count` = id mod 3 + 1) to the topic `clicks` of the broker at `address`.
pub async fn produce_clicks(address: &str, from: u64, n: u64) {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .create()
        .unwrap();
    let mut pending = Vec::new();
    for i in from..from + n {
        let country = ["DE", "US", "VN"][(i % 3) as usize];
        let body = serde_json::json!({"user_id": i, "click_count": i % 3 + 1, "country": country})
            .to_string();
        let key = i.to_string();
        pending.push(
            producer
                .send_result(FutureRecord::to("clicks").key(&key).payload(&body))
                .unwrap(),
        );
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
}
