//! Shared bench support: an in-process server over a temporary copy of a project.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::Arc;

use petrel::project::Project;
use petrel::runtime::{Runtime, RuntimeConfig};
use petrel::serve::{self, AppState, Tokens};

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Whether [`CountingAlloc`] counts (only the benches that report the heap turn it on).
static COUNTING: AtomicBool = AtomicBool::new(false);
/// Bytes allocated and not freed since counting started.
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

/// mimalloc, as the server's binary uses, that can also count the bytes allocated and not yet
/// freed: the process's resident memory includes pages the allocator keeps after transient
/// work, the heap is what the process holds.
pub struct CountingAlloc;

// SAFETY: every call is passed on to mimalloc unchanged; the counter only reads sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        count(!p.is_null(), layout.size() as isize);
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        count(!p.is_null(), layout.size() as isize);
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        count(true, -(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        count(!p.is_null(), new_size as isize - layout.size() as isize);
        p
    }
}

fn count(done: bool, bytes: isize) {
    if done && COUNTING.load(Ordering::Relaxed) {
        LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Starts counting the heap (call first thing: frees of earlier allocations count as
/// negative, so only differences between two readings mean anything).
pub fn count_heap() {
    COUNTING.store(true, Ordering::SeqCst);
}

/// Bytes allocated and not freed since [`count_heap`].
pub fn heap_bytes() -> i64 {
    LIVE_BYTES.load(Ordering::Relaxed) as i64
}

/// Waits until the process's background work (storage compaction and merges) is done: less
/// than `max_busy` CPU seconds used over one `interval`, for two minutes at most. Returns the
/// process's CPU seconds then.
pub async fn wait_quiet(interval: std::time::Duration, max_busy: f64) -> f64 {
    let mut last = cpu_seconds();
    for _ in 0..(120.0 / interval.as_secs_f64()).ceil() as usize {
        tokio::time::sleep(interval).await;
        let now = cpu_seconds();
        let busy = now - last;
        last = now;
        if busy < max_busy {
            break;
        }
    }
    last
}

pub const ADMIN: &str = "bench-admin";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            if e.file_name() != ".petrel" {
                copy_dir(&e.path(), &to.join(e.file_name()));
            }
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Posts one NDJSON batch to `datasource` with `wait=true`; returns the seconds the request
/// took and the rows it landed. Panics on an error or a quarantined row (a bench's data must
/// fit its schema).
pub async fn post_batch(
    client: &reqwest::Client,
    url: &str,
    datasource: &str,
    body: Vec<u8>,
) -> (f64, u64) {
    let started = std::time::Instant::now();
    let r = client
        .post(format!("{url}/v0/events?name={datasource}&wait=true"))
        .bearer_auth(ADMIN)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(status.is_success(), "POST /v0/events: {status} {text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let quarantined = answer["quarantined_rows"].as_u64().unwrap_or(0);
    assert_eq!(quarantined, 0, "{datasource} rows quarantined: {text}");
    (seconds, answer["successful_rows"].as_u64().unwrap_or(0))
}

/// `GET url` with the admin token; the JSON answer (panics on an error status).
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let r = client.get(url).bearer_auth(ADMIN).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "GET {url}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// A setting from the environment, or `default` when it is unset or does not parse.
pub fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The repository's root, where the bench runs (cargo sets the variable at run time; a
/// binary built in another checkout reads this one).
pub fn repo() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
}

/// A temporary copy of a project folder of the repository.
pub fn project_copy(project: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "petrel-bench-{}-{}",
        project.replace('/', "_"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&repo().join(project), &dir);
    dir
}

/// Starts the runtime and the HTTP API on a free port; returns the base URL.
pub async fn start(dir: &Path, config: RuntimeConfig) -> (String, Arc<Runtime>) {
    // As the binary's main does: the bench measures the server users run.
    petrel::host::tune_process();
    let project = Project::load(dir).expect("project loads");
    let runtime = Runtime::start(project, &dir.join(".petrel/data").to_string_lossy(), config)
        .await
        .expect("runtime starts");
    let tokens = Tokens::load(&dir.join(".petrel/tokens.json"), ADMIN, Vec::new()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState {
        runtime: runtime.clone(),
        tokens: Arc::new(tokens),
        admin_token: ADMIN.into(),
        requests: Default::default(),
        jobs: Default::default(),
        workspace_names: Default::default(),
        deployments: Arc::new(serve::Deployments::load(
            dir.join(".petrel/deployments.json"),
        )),
    };
    tokio::spawn(serve::serve(listener, state));
    (url, runtime)
}

/// Resident memory of this process in bytes (what `GET /metrics` reports for a server).
pub fn rss_bytes() -> u64 {
    serve::resident_bytes()
}

/// CPU seconds (user and system) this process has used so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct it is given and reads nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds the calling thread has used.
pub fn thread_cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct it is given and reads nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// The p-th percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
