//! Imports from a URL (`POST /v0/datasources?mode=append&name=DS&url=URL`), as Tinybird's
//! clients start them: the server fetches an `http://` file (gzip or not, format from its
//! name) or an `s3://` object from a real S3-compatible server, appends its rows and answers
//! the finished job; bad URLs, failed fetches, addresses imports must not reach and tokens
//! without the append scope are refused with a JSON error and append nothing.

mod common;

use std::io::Write;

use common::{client, file_server, Server, ADMIN};
use serde_json::Value;

const SEED: &str = include_str!("../dataflows/clicks/fixtures/clicks.ndjson");

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn import(server: &Server, token: &str, url: &str) -> (u16, Value) {
    let res = client()
        .post(format!("{}/v0/datasources", server.url))
        .query(&[("name", "clicks"), ("mode", "append"), ("url", url)])
        .bearer_auth(token)
        .send()
        .unwrap();
    (res.status().as_u16(), res.json().unwrap())
}

fn rows(server: &Server) -> u64 {
    let body = common::get(server, "/v0/sql?q=SELECT+count()+AS+n+FROM+clicks");
    body["data"][0]["n"].as_u64().unwrap()
}

#[test]
fn imports_files_from_http_urls_as_jobs() {
    let server = Server::start("dataflows/clicks", &[]);
    let files = file_server(vec![
        ("/day1.ndjson.gz", gzip(SEED.as_bytes())),
        (
            "/day2.csv",
            b"user_id,click_count,country,timestamp\n900,4,FR,2026-01-01 00:00:00\n".to_vec(),
        ),
    ]);

    let (status, job) = import(&server, ADMIN, &format!("{files}/day1.ndjson.gz"));
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["successful_rows"], 8, "{job}");
    assert_eq!(rows(&server), 8);
    // Clients follow the job.
    let id = job["id"].as_str().unwrap();
    assert!(
        job["job_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v0/jobs/{id}")),
        "{job}"
    );
    let followed = common::get(&server, &format!("/v0/jobs/{id}"));
    assert_eq!(followed["status"], "done", "{followed}");

    let (status, job) = import(&server, ADMIN, &format!("{files}/day2.csv"));
    assert_eq!(
        (status, &job["successful_rows"]),
        (200, &Value::from(1)),
        "{job}"
    );
    let fr = common::get(
        &server,
        "/v0/sql?q=SELECT+click_count+FROM+clicks+WHERE+user_id+%3D+900",
    );
    assert_eq!(fr["data"][0]["click_count"], 4, "{fr}");

    // Refused, with nothing appended.
    for (url, want) in [
        (format!("{files}/missing.csv"), 400),
        ("ftp://example.com/x.csv".to_string(), 400),
        ("http://169.254.169.254/latest/meta-data".to_string(), 403),
        ("not a url".to_string(), 400),
    ] {
        let (status, body) = import(&server, ADMIN, &url);
        assert_eq!(status, want, "{url}: {body}");
        assert!(body["error"].is_string(), "{url}: {body}");
    }
    let reader = client()
        .post(format!("{}/v0/tokens", server.url))
        .query(&[("name", "reader"), ("scope", "PIPES:READ:top_countries")])
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    let (status, body) = import(
        &server,
        reader["token"].as_str().unwrap(),
        &format!("{files}/day2.csv"),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(rows(&server), 9);
}

#[test]
fn imports_objects_from_s3_urls() {
    let s3 = common::S3Server::start("imports");
    let put = client()
        .put(format!("{}/imports/exports/clicks.ndjson", s3.endpoint))
        .body(SEED)
        .send()
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let project = common::copy_project_files("dataflows/clicks", "imports-s3-project");
    let server = Server::run_env(&["local", "start"], project, &[], &s3.env());
    let (status, job) = import(&server, ADMIN, "s3://imports/exports/clicks.ndjson");
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["successful_rows"], 8, "{job}");
    assert_eq!(rows(&server), 8);
    let (status, body) = import(&server, ADMIN, "s3://imports/exports/none.ndjson");
    assert_eq!(status, 400, "{body}");
}
