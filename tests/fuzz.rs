//! Fuzzing the parsers that read users' and the network's input: datafiles, pipe templates,
//! the SQL planner, and the NDJSON and CSV decoders. Each target runs seeded random mutations
//! of real inputs (the corpus of real Tinybird projects in `../shared/corpus`, the repository's
//! projects and fixtures) for `FUZZ_SECONDS` (default 2 s here; `scripts/fuzz.sh` runs them for
//! 10 minutes each). No input may panic, and none may run longer than 10 s; a failing input is
//! written to `$CARGO_TARGET_TMPDIR/fuzz-failures/` and named in the failure, so it can become a
//! regression test.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use petrel::ingest::{typed_row, Cell, RowDecoder};
use petrel::project::Project;
use petrel_template::{Params, Template};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Tokens that steer mutations toward the grammars' interesting corners.
const DICTIONARY: &[&str] = &[
    "{{",
    "}}",
    "{%",
    "%}",
    "%",
    "(",
    ")",
    "'",
    "\"",
    "`",
    "\\",
    ",",
    ";",
    ":",
    "$",
    "[",
    "]",
    "SELECT ",
    " FROM ",
    " WHERE ",
    " GROUP BY ",
    " ORDER BY ",
    " LIMIT ",
    " JOIN ",
    " ON ",
    " UNION ALL ",
    " WITH ",
    " AS ",
    "count()",
    "sum(",
    "uniqExact(",
    "argMax(",
    "quantile(0.5)(",
    "arrayJoin(",
    "toStartOfInterval(",
    "INTERVAL 1 DAY",
    "now()",
    "NULL",
    "NaN",
    "-1",
    "99999999999999999999999",
    "1e308",
    "é",
    "\u{0}",
    "\u{feff}",
    "\n",
    "\r\n",
    "    ",
    "NODE ",
    "SQL >\n    ",
    "TYPE endpoint",
    "SCHEMA >\n    ",
    "ENGINE ",
    "TOKEN ",
    "DESCRIPTION >",
    "{% if defined(x) %}",
    "{% end %}",
    "{{ String(x, 'a') }}",
    "{{ Int32(n, 5) }}",
    "{{ Array(a, 'Int8') }}",
    "{{ column(c) }}",
    "json:$.a.b",
    "Nullable(",
    "LowCardinality(",
    "DateTime64(3)",
    "Array(String)",
    "{\"a\":",
    "[1,2,",
    "true",
    "null",
];

/// One mutation of `input`, with a chance of splicing in another seed.
fn mutate(rng: &mut StdRng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..6) {
        let at = if out.is_empty() {
            0
        } else {
            rng.random_range(0..=out.len())
        };
        match rng.random_range(0..7) {
            0 if !out.is_empty() => {
                let i = rng.random_range(0..out.len());
                out[i] ^= 1 << rng.random_range(0..8);
            }
            1 => out.insert(at, rng.random()),
            2 if !out.is_empty() => {
                let end = (at + rng.random_range(1..32)).min(out.len());
                out.drain(at.min(end)..end);
            }
            3 if !out.is_empty() => {
                let start = rng.random_range(0..out.len());
                let end = (start + rng.random_range(1..64)).min(out.len());
                let piece = out[start..end].to_vec();
                out.splice(at..at, piece);
            }
            4 => {
                let word = DICTIONARY[rng.random_range(0..DICTIONARY.len())];
                out.splice(at..at, word.bytes());
            }
            5 if !seeds.is_empty() => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                if !other.is_empty() {
                    let start = rng.random_range(0..other.len());
                    let end = (start + rng.random_range(1..256)).min(other.len());
                    out.splice(at..at, other[start..end].iter().copied());
                }
            }
            _ => out.truncate(at),
        }
    }
    out
}

/// Runs `target` on mutations of `seeds` for the configured time; fails on a panic or on an
/// input that takes longer than 10 s.
fn fuzz(name: &str, seeds: Vec<Vec<u8>>, target: impl Fn(&[u8]) + Send + Sync + 'static) {
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let seconds: u64 = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let runs = Arc::new(AtomicU64::new(0));
    let current: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
    let failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let worker = {
        let (runs, current, failure) = (runs.clone(), current.clone(), failure.clone());
        std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(seed);
            // Seeds themselves first, then mutations.
            let mut queue: Vec<Vec<u8>> = seeds.clone();
            while Instant::now() < deadline {
                let input = queue.pop().unwrap_or_else(|| {
                    let base = &seeds[rng.random_range(0..seeds.len())];
                    mutate(&mut rng, base, &seeds)
                });
                *current.lock().unwrap_or_else(|e| e.into_inner()) = input.clone();
                if std::panic::catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
                    *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some("panicked".into());
                    return;
                }
                runs.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut last = (0, Instant::now());
    while !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        let n = runs.load(Ordering::Relaxed);
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(10) {
            *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some("hung".into());
            break;
        }
    }
    let failed = failure.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(what) = failed {
        let input = current.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{name}-{seed}-{}", runs.load(Ordering::Relaxed)));
        let _ = std::fs::write(&file, &input);
        panic!(
            "{name}: an input {what} (saved in {}): {:?}",
            file.display(),
            String::from_utf8_lossy(&input)
        );
    }
    println!(
        "fuzz {name}: {} inputs in {seconds} s, no panic, no hang",
        runs.load(Ordering::Relaxed)
    );
}

fn repo() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
}

/// Every file under `dirs` whose name ends with one of `extensions`.
fn files(dirs: &[PathBuf], extensions: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if extensions.iter().any(|x| p.to_string_lossy().ends_with(x)) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn corpus_dirs() -> Vec<PathBuf> {
    vec![repo().join("dataflows"), repo().join("../shared/corpus")]
}

fn datafile_seeds(extension: &str) -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = files(&corpus_dirs(), &[extension])
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .collect();
    // One built-in example each, so the target runs even without the corpus.
    seeds.push(
        match extension {
            ".datasource" => "SCHEMA >\n    `a` String `json:$.a`\n\nENGINE \"MergeTree\"\n",
            ".pipe" => "NODE n\nSQL >\n    %\n    SELECT a FROM t WHERE a = {{String(a, 'x')}}\n\nTYPE endpoint\n",
            _ => "TYPE kafka\nKAFKA_BOOTSTRAP_SERVERS localhost:9092\n",
        }
        .as_bytes()
        .to_vec(),
    );
    seeds
}

/// The SQL of every node of the seed pipes.
fn sql_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for p in files(&corpus_dirs(), &[".pipe"]) {
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        if let Ok(petrel_datafile::Datafile::Pipe(pipe)) = petrel_datafile::parse_file(&p, &text) {
            out.extend(pipe.nodes.iter().map(|n| n.sql.clone().into_bytes()));
        }
    }
    out
}

fn clicks() -> Project {
    Project::load(&repo().join("dataflows/clicks")).expect("the demo project loads")
}

fn fuzz_datafile(extension: &str) {
    let path = format!("fuzzed{extension}");
    fuzz(
        &format!("datafile{extension}"),
        datafile_seeds(extension),
        move |input| {
            let text = String::from_utf8_lossy(input);
            let _ = petrel_datafile::parse_file(Path::new(&path), &text);
        },
    );
}

#[test]
fn fuzz_datasource_files() {
    fuzz_datafile(".datasource");
}

#[test]
fn fuzz_pipe_files() {
    fuzz_datafile(".pipe");
}

#[test]
fn fuzz_connection_files() {
    fuzz_datafile(".connection");
}

#[test]
fn fuzz_templates() {
    fuzz("template", sql_seeds(), |input| {
        let text = String::from_utf8_lossy(input);
        if let Ok(template) = Template::parse(&text) {
            let _ = template.declared_params();
            let params = Params::new()
                .with("country", "DE")
                .with("limit", "-1")
                .with("x", "1,2,'3")
                .with("date_from", "2024-01-01 00:00:00");
            let _ = template.render(&params);
            let _ = template.render(&Params::new());
        }
    });
}

#[test]
fn fuzz_sql_planner() {
    let project = Arc::new(clicks());
    fuzz("sql", sql_seeds(), move |input| {
        let text = String::from_utf8_lossy(input);
        let params = [("country".to_string(), "DE".to_string())].into();
        let _ = project.plan_sql(&text, &params);
    });
}

#[test]
fn fuzz_ndjson_decoder() {
    let project = clicks();
    let decoder = RowDecoder::new(&project.datasources["clicks"].columns);
    let mut seeds: Vec<Vec<u8>> = files(&corpus_dirs(), &[".ndjson"])
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .flat_map(|b| {
            b.split(|c| *c == b'\n')
                .take(50)
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect();
    seeds.push(
        br#"{"user_id":1,"click_count":2,"country":"US","timestamp":"2024-01-01 00:00:00"}"#
            .to_vec(),
    );
    fuzz("ndjson", seeds, move |input| {
        let _ = decoder.decode_bytes(input, 1_700_000_000);
    });
}

#[test]
fn fuzz_csv_decoder() {
    let project = clicks();
    let columns = project.datasources["clicks"].schema();
    let seeds = vec![
        b"user_id,click_count,country,timestamp\n1,2,US,2024-01-01 00:00:00\n".to_vec(),
        b"3,\"4\",\"D,E\",2024-06-01T10:00:00Z\n5,,VN,\n".to_vec(),
    ];
    fuzz("csv", seeds, move |input| {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(input);
        for record in reader.records().flatten() {
            let cells = (0..columns.len())
                .map(|j| Cell::Text(record.get(j).unwrap_or("").to_string()))
                .collect();
            let _ = typed_row(&columns, cells);
        }
    });
}
