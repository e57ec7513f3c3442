//! Type by type, values decode as ClickHouse decodes them: the same NDJSON rows go into a
//! ClickHouse table (chdb) and into a Petrel datasource of the same schema, and ClickHouse's
//! own CSV and Parquet exports of what it stored go into two more; every stored row must equal
//! ClickHouse's, and a row ClickHouse cannot read must be quarantined. The types cover the
//! scalar types, Nullable and LowCardinality, times given as text and as epoch seconds,
//! numbers given as strings and strings given as numbers, nested Array, Map and Tuple (an
//! `Array(Map(String, String))` among them), and the types Petrel stores as simpler ones
//! (Enum, IPv4, IPv6, Decimal).
//!
//! Needs `PETREL_PYTHON` pointing at a Python with chdb (`scripts/test.sh` sets it up).

mod common;

use serde_json::{json, Value};

const SCHEMA: &[(&str, &str)] = &[
    ("id", "UInt32"),
    ("i8", "Int8"),
    ("i16", "Int16"),
    ("i64", "Int64"),
    ("u8", "UInt8"),
    ("u64", "UInt64"),
    ("f32", "Float32"),
    ("f64", "Float64"),
    ("s", "String"),
    ("lc", "LowCardinality(String)"),
    ("ns", "Nullable(String)"),
    ("ni", "Nullable(Int32)"),
    ("b", "Bool"),
    ("d", "Date"),
    ("dt", "DateTime"),
    ("dt64", "DateTime64(3)"),
    ("u", "UUID"),
    ("a_s", "Array(String)"),
    ("a_ni", "Array(Nullable(Int32))"),
    ("a_lc", "Array(LowCardinality(String))"),
    ("m", "Map(String, String)"),
    ("m_a", "Map(String, Array(UInt32))"),
    ("tup", "Tuple(String, Int32)"),
    ("a_m", "Array(Map(String, String))"),
    ("e", "Enum8('a' = 1, 'b' = 2)"),
    ("ip4", "IPv4"),
    ("ip6", "IPv6"),
    ("dec", "Decimal(10, 2)"),
    ("lcn", "LowCardinality(Nullable(String))"),
    ("dtz", "DateTime64(3, 'UTC')"),
];

fn rows() -> Vec<Value> {
    vec![
        json!({"id":1,"i8":-5,"i16":300,"i64":-9007199254740993i64,"u8":255,"u64":18446744073709551615u64,
               "f32":0.5,"f64":1.25,"s":"héllo","lc":"x","ns":null,"ni":null,"b":true,"d":"2026-01-02",
               "dt":"2026-01-02 03:04:05","dt64":"2026-01-02 03:04:05.123",
               "u":"123e4567-e89b-12d3-a456-426614174000","a_s":["a","b"],"a_ni":[1,null,3],"a_lc":["p"],
               "m":{"k":"v"},"m_a":{"k":[1,2]},"tup":["t",7],"a_m":[{"a":"1"},{"b":"2"}],
               "e":"a","ip4":"1.2.3.4","ip6":"2001:db8::1","dec":1.25,"lcn":null,"dtz":"2026-01-02 03:04:05.5"}),
        // Numbers as strings, a string as a number, a time as epoch seconds, empty nestings.
        json!({"id":2,"i8":"7","i16":"-2","i64":"42","u8":"0","u64":"5","f32":"1.5","f64":"-2.75","s":42,
               "lc":"","ns":"n","ni":"9","b":false,"d":"2026-12-31","dt":1767323045,
               "dt64":"2026-01-02T03:04:05Z","u":"00000000-0000-0000-0000-000000000000","a_s":[],
               "a_ni":[],"a_lc":[],"m":{},"m_a":{},"tup":["",0],"a_m":[],
               "e":2,"ip4":"10.0.0.255","ip6":"1.2.3.4","dec":"3.14","lcn":"v","dtz":1767323045}),
        // Separators, quotes and line breaks inside strings, at every nesting.
        json!({"id":3,"i8":0,"i16":0,"i64":0,"u8":1,"u64":0,"f32":-0.0,"f64":1e300,
               "s":"line\nbreak \"q\" , comma","lc":"y","ns":"","ni":-1,"b":1,"d":"1970-01-01",
               "dt":"1970-01-01 00:00:00","dt64":"2000-02-29 23:59:59.999",
               "u":"FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF","a_s":["with,comma","quote'"],"a_ni":[null],
               "a_lc":["a","a"],"m":{"x":"1","y":"it's"},"m_a":{"e":[]},"tup":["a,b",-1],"a_m":[{}],
               "e":"b","ip4":"0.0.0.0","ip6":"::","dec":-0.5,"lcn":"","dtz":"1970-01-01 00:00:00"}),
        // ClickHouse cannot read this one (a word for an Int8): it must be quarantined.
        json!({"id":4,"i8":"abc","s":"bad"}),
    ]
}

#[test]
fn every_type_decodes_from_ndjson_csv_and_parquet_as_clickhouse_decodes_it() {
    let dir = common::temp_dir("type_decoding");
    let schema: Vec<String> = SCHEMA
        .iter()
        .map(|(n, t)| format!("    `{n}` {t} `json:$.{n}`"))
        .collect();
    std::fs::create_dir_all(dir.join("datasources")).unwrap();
    for ds in ["t_ndjson", "t_csv", "t_parquet"] {
        std::fs::write(
            dir.join(format!("datasources/{ds}.datasource")),
            format!(
                "SCHEMA >\n{}\n\nENGINE \"MergeTree\"\nENGINE_SORTING_KEY \"id\"\n",
                schema.join(",\n")
            ),
        )
        .unwrap();
    }
    let server = common::Server::start_in(dir, &[]);
    let spec = json!({
        "url": server.url,
        "token": common::ADMIN,
        "schema": SCHEMA,
        "rows": rows().iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "datasources": {"ndjson": "t_ndjson", "csv": "t_csv", "parquet": "t_parquet"},
    });
    let out = common::chdb_script("chdb_decode.py", &spec);
    let report: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["clickhouse_rows"], 3, "{report}");
    for format in ["ndjson", "csv", "parquet"] {
        let entry = &report["formats"][format];
        assert_eq!(entry["differences"], json!([]), "{format}: {entry}");
        assert_eq!(entry["petrel_rows"], 3, "{format}: {entry}");
    }
    assert_eq!(report["formats"]["ndjson"]["quarantined"], 1, "{report}");
}
