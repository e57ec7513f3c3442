//! The engine on its own: views installed over history, then live inserts and retractions,
//! on two workers; temporal filters retract rows as the clock passes them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use petrel_engine::{Engine, EngineConfig, SourceLog};
use petrel_sql::*;
use petrel_value::*;
use petrel_view::{KeyColumns, View};

#[derive(Default)]
struct MemoryLog(Mutex<Vec<petrel_engine::TimedBatch>>);

impl SourceLog for MemoryLog {
    fn append(
        &self,
        ts: u64,
        updates: &Arc<Vec<(Row, isize)>>,
        _: Option<&[u8]>,
    ) -> std::io::Result<u64> {
        let mut b = self.0.lock().unwrap();
        b.push((ts, updates.to_vec()));
        Ok(b.len() as u64)
    }
    fn len(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
    fn replay(
        &self,
        upto: u64,
        worker: usize,
        peers: usize,
        f: &mut dyn FnMut(Row, u64, isize),
    ) -> std::io::Result<()> {
        for (i, (ts, b)) in self
            .0
            .lock()
            .unwrap()
            .iter()
            .take(upto as usize)
            .enumerate()
        {
            if i % peers == worker {
                for (r, d) in b {
                    f(r.clone(), *ts, *d);
                }
            }
        }
        Ok(())
    }
}

fn columns() -> Vec<Column> {
    vec![
        Column {
            name: "k".into(),
            ty: ColumnType::String,
        },
        Column {
            name: "v".into(),
            ty: ColumnType::Int(64),
        },
    ]
}

fn scan() -> Plan {
    Plan {
        node: PlanNode::Scan { table: "t".into() },
        columns: columns(),
    }
}

fn agg(func: AggFunc, args: Vec<Expr>, ty: ColumnType) -> Aggregate {
    Aggregate {
        func,
        args,
        params: vec![],
        filter: None,
        ty,
    }
}

fn start() -> Arc<Engine> {
    let engine = Engine::start(EngineConfig {
        workers: 2,
        tick: Duration::from_millis(5),
        ..Default::default()
    })
    .unwrap();
    engine.register_source("t", Arc::new(MemoryLog::default()));
    engine
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn aggregates_follow_history_inserts_and_retractions() {
    let engine = start();
    engine
        .insert("t", vec![(vec![Value::str("a"), Value::Int(1)], 1)])
        .unwrap();
    let plan = Plan {
        node: PlanNode::Aggregate {
            input: Box::new(scan()),
            keys: vec![Expr::Column(0)],
            aggregates: vec![
                agg(AggFunc::Count, vec![], ColumnType::UInt(64)),
                agg(AggFunc::Sum, vec![Expr::Column(1)], ColumnType::Int(64)),
                agg(AggFunc::Max, vec![Expr::Column(1)], ColumnType::Int(64)),
            ],
        },
        columns: vec![],
    };
    let view = View::new(vec![], KeyColumns(vec![0]), 1000);
    engine.install(plan, view.clone()).unwrap();
    for i in 0..10 {
        engine
            .insert(
                "t",
                vec![(
                    vec![
                        Value::str(if i % 2 == 0 { "a" } else { "b" }),
                        Value::Int(i),
                    ],
                    1,
                )],
            )
            .unwrap();
    }
    let ts = engine
        .insert("t", vec![(vec![Value::str("a"), Value::Int(8)], -1)])
        .unwrap();
    block_on(view.wait_for(ts));
    // a: 1 (history) + 0, 2, 4, 6, 8, minus the 8.
    assert_eq!(
        view.snapshot(&[Value::str("a")]).rows,
        vec![vec![
            Value::str("a"),
            Value::UInt(5),
            Value::Int(13),
            Value::Int(6)
        ]]
    );
    assert_eq!(view.snapshot(&[Value::str("b")]).rows[0][1], Value::UInt(5));
    engine.shutdown();
}

/// A `GROUP BY` over a datasource is folded where its rows lie, each of the two workers
/// folding the keys that hash to it. Over many keys, seeded random inserts and retractions in
/// many batches, and a filter, the view installed before the rows and the one installed
/// halfway (whose history is replayed) both equal a recomputation from the rows.
/// Seeded random inserts and retractions of `(k, v)` rows, and the rows they leave live: what
/// the tests that check a view against a recomputation insert.
struct Changes {
    seed: u64,
    live: Vec<Row>,
}

impl Changes {
    fn new(seed: u64) -> Changes {
        Changes {
            seed,
            live: Vec::new(),
        }
    }

    /// A number below `n` (xorshift).
    fn next(&mut self, n: u64) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed % n
    }

    /// `n` changes: about a quarter retract a live row, the others insert a row of one of
    /// `keys` keys with a value below `values`.
    fn batch(&mut self, n: usize, keys: u64, values: u64) -> Vec<(Row, isize)> {
        let mut updates = Vec::with_capacity(n);
        for _ in 0..n {
            if !self.live.is_empty() && self.next(4) == 0 {
                let at = self.next(self.live.len() as u64) as usize;
                updates.push((self.live.swap_remove(at), -1));
            } else {
                let row = vec![
                    Value::str(&format!("k{}", self.next(keys))),
                    Value::Int(self.next(values) as i64),
                ];
                self.live.push(row.clone());
                updates.push((row, 1));
            }
        }
        updates
    }
}

#[test]
fn a_group_by_folded_where_its_rows_lie_equals_a_recomputation() {
    group_by_equals_a_recomputation(40, 50);
}

/// Batches of hundreds of updates per worker (the fold fetches each key's state a few
/// updates ahead of its fold, and folds a batch's updates as one run): each update is folded
/// once, whatever its place in the run.
#[test]
fn a_group_by_over_large_batches_equals_a_recomputation() {
    group_by_equals_a_recomputation(6, 1_500);
}

/// `count()`, `sum()` and `uniqExact()` by key over a filter, maintained over `batches`
/// batches of `per_batch` random inserts and retractions, in a view installed first and in
/// one installed halfway (which replays the history), against a recomputation.
fn group_by_equals_a_recomputation(batches: usize, per_batch: usize) {
    let engine = start();
    let plan = || Plan {
        node: PlanNode::Aggregate {
            input: Box::new(Plan {
                node: PlanNode::Filter {
                    input: Box::new(scan()),
                    predicate: Expr::Call {
                        func: petrel_sql::functions::Func::NotEq,
                        args: vec![Expr::Column(1), Expr::Literal(Value::Int(3))],
                    },
                },
                columns: columns(),
            }),
            keys: vec![Expr::Column(0)],
            aggregates: vec![
                agg(AggFunc::Count, vec![], ColumnType::UInt(64)),
                agg(AggFunc::Sum, vec![Expr::Column(1)], ColumnType::Int(64)),
                agg(
                    AggFunc::UniqExact,
                    vec![Expr::Column(1)],
                    ColumnType::UInt(64),
                ),
            ],
        },
        columns: vec![],
    };
    let early = View::new(vec![], KeyColumns(vec![0]), 1000);
    engine.install(plan(), early.clone()).unwrap();
    let mut changes = Changes::new(0x5eed);
    let mut late = None;
    let mut ts = 0;
    for batch in 0..batches {
        ts = engine
            .insert("t", changes.batch(per_batch, 200, 8))
            .unwrap();
        if batch == batches / 2 {
            let view = View::new(vec![], KeyColumns(vec![0]), 1000);
            engine.install(plan(), view.clone()).unwrap();
            late = Some(view);
        }
    }
    let (late, live) = (late.unwrap(), changes.live);
    // Each key's count, sum and distinct values of the rows that pass the filter.
    let mut expected: std::collections::BTreeMap<String, (u64, i64, Vec<i64>)> = Default::default();
    for row in live.iter().filter(|r| r[1] != Value::Int(3)) {
        let (Value::String(k), Value::Int(v)) = (&row[0], &row[1]) else {
            unreachable!()
        };
        let e = expected.entry(k.to_string()).or_default();
        e.0 += 1;
        e.1 += v;
        if !e.2.contains(v) {
            e.2.push(*v);
        }
    }
    for view in [&early, &late] {
        block_on(view.wait_for(ts));
        for k in 0..200 {
            let key = format!("k{k}");
            let rows = view.snapshot(&[Value::str(&key)]).rows;
            let want: Vec<Row> = expected
                .get(&key)
                .map(|(n, sum, distinct)| {
                    vec![
                        Value::str(&key),
                        Value::UInt(*n),
                        Value::Int(*sum),
                        Value::UInt(distinct.len() as u64),
                    ]
                })
                .into_iter()
                .collect();
            assert_eq!(rows, want, "key {key}");
        }
    }
    engine.shutdown();
}

/// `SELECT k, sum(v) FROM t GROUP BY k`.
fn sums_by_key() -> Plan {
    Plan {
        node: PlanNode::Aggregate {
            input: Box::new(scan()),
            keys: vec![Expr::Column(0)],
            aggregates: vec![agg(
                AggFunc::Sum,
                vec![Expr::Column(1)],
                ColumnType::Int(64),
            )],
        },
        columns: columns(),
    }
}

/// `exprs` of `input`'s rows.
fn project(input: Plan, exprs: Vec<Expr>) -> Plan {
    Plan {
        columns: vec![columns()[0].clone(); exprs.len()],
        node: PlanNode::Project {
            input: Box::new(input),
            exprs,
        },
    }
}

/// The `v` of the rows of `live` whose `k` is `key` (the tests insert integers).
fn values_of(live: &[Row], key: &Value) -> Vec<i64> {
    live.iter()
        .filter(|r| r[0] == *key)
        .filter_map(|r| match r[1] {
            Value::Int(v) => Some(v),
            _ => None,
        })
        .collect()
}

/// `v + throwIf(v = 3)` over column `c`: `v` on any row without `v = 3`; a row with it fails
/// the view that evaluates it there.
fn v_unless_3(c: usize) -> Expr {
    use petrel_sql::functions::Func;
    let is_3 = Expr::call(
        Func::Eq,
        vec![Expr::Column(c), Expr::Literal(Value::Int(3))],
    );
    Expr::call(
        Func::Plus,
        vec![Expr::Column(c), Expr::call(Func::ThrowIf, vec![is_3])],
    )
}

/// Group keys made by projections, on two workers that each read every batch and fold the rows
/// whose keys are theirs: with the filter before the key's projection, after it, and with the
/// key's columns reordered by a projection, each view equals a recomputation. A key is
/// evaluated only on the rows the filters keep: `throwIf` in it fails no view.
#[test]
fn group_keys_made_by_projections_follow_the_filters_and_equal_a_recomputation() {
    use petrel_sql::functions::Func;
    let engine = start();
    let not_3 = Expr::call(
        Func::NotEq,
        vec![Expr::Column(1), Expr::Literal(Value::Int(3))],
    );
    let filtered = |input: Plan| Plan {
        node: PlanNode::Filter {
            input: Box::new(input),
            predicate: not_3.clone(),
        },
        columns: columns(),
    };
    let count_by = |input: Plan, keys: Vec<Expr>| Plan {
        node: PlanNode::Aggregate {
            input: Box::new(input),
            keys,
            aggregates: vec![agg(AggFunc::Count, vec![], ColumnType::UInt(64))],
        },
        columns: vec![],
    };
    let doubled = Expr::call(
        Func::Multiply,
        vec![Expr::Column(1), Expr::Literal(Value::Int(2))],
    );
    // Rows told apart by their key are recomputed as the key's values then the count.
    let plans = [
        // Filter, then the projection that makes the key.
        count_by(
            project(filtered(scan()), vec![Expr::Column(0), v_unless_3(1)]),
            vec![Expr::Column(0), Expr::Column(1)],
        ),
        // A projection, then the filter, then a key made of the projection's columns.
        count_by(
            filtered(project(
                scan(),
                vec![Expr::Column(0), Expr::Column(1), doubled],
            )),
            vec![Expr::Column(2), v_unless_3(1)],
        ),
        // The key's columns reordered by a projection under the filter.
        count_by(
            project(filtered(scan()), vec![Expr::Column(1), Expr::Column(0)]),
            vec![Expr::Column(0), Expr::Column(1)],
        ),
    ];
    let views: Vec<Arc<View>> = plans
        .into_iter()
        .map(|plan| {
            let view = View::new(vec![], KeyColumns(vec![]), 1000);
            engine.install(plan, view.clone()).unwrap();
            view
        })
        .collect();
    let mut changes = Changes::new(0x0ddba11);
    let mut ts = 0;
    for _ in 0..30 {
        ts = engine.insert("t", changes.batch(60, 50, 6)).unwrap();
    }
    let live = changes.live;
    // Each view's rows, recomputed: the count of the live rows by key.
    let recompute = |key: &dyn Fn(&str, i64) -> Row| {
        let mut counts: std::collections::BTreeMap<Row, u64> = Default::default();
        for row in &live {
            let (Value::String(k), Value::Int(v)) = (&row[0], &row[1]) else {
                unreachable!()
            };
            *counts.entry(key(k, *v)).or_default() += 1;
        }
        let rows: Vec<(Row, i64)> = counts
            .into_iter()
            .map(|(mut key, n)| {
                key.push(Value::UInt(n));
                (key, 1)
            })
            .collect();
        rows
    };
    let expected = [
        recompute(&|k, v| match v {
            3 => vec![],
            v => vec![Value::str(k), Value::Int(v)],
        }),
        recompute(&|_, v| match v {
            3 => vec![],
            v => vec![Value::Int(2 * v), Value::Int(v)],
        }),
        recompute(&|k, v| match v {
            3 => vec![],
            v => vec![Value::Int(v), Value::str(k)],
        }),
    ];
    for (i, (view, want)) in views.iter().zip(expected).enumerate() {
        let want: Vec<(Row, i64)> = want.into_iter().filter(|(r, _)| r.len() > 1).collect();
        block_on(view.wait_for(ts));
        assert_eq!(view.failure(), None, "view {i}");
        let (mut rows, _) = view.counted_rows();
        rows.sort();
        assert_eq!(rows, want, "view {i}");
    }
    engine.shutdown();
}

/// Projections stacked as a lifted parameter and a SELECT list leave them (a reordering of
/// columns over another, the last keeping its input's columns as they are) read as the one
/// projection they make, over an aggregation and over a table's rows.
#[test]
fn stacked_projections_read_as_the_projection_they_make() {
    let engine = start();
    // (k, sum) -> (sum, k, sum) -> (k, sum, sum) -> itself.
    let over_sums = project(
        project(
            project(
                sums_by_key(),
                vec![Expr::Column(1), Expr::Column(0), Expr::Column(1)],
            ),
            vec![Expr::Column(1), Expr::Column(0), Expr::Column(2)],
        ),
        vec![Expr::Column(0), Expr::Column(1), Expr::Column(2)],
    );
    // (k, v) -> (v, k, v + 1) -> (k, v + 1).
    let plus_one = Expr::Call {
        func: petrel_sql::functions::Func::Plus,
        args: vec![Expr::Column(1), Expr::Literal(Value::Int(1))],
    };
    let over_rows = project(
        project(scan(), vec![Expr::Column(1), Expr::Column(0), plus_one]),
        vec![Expr::Column(1), Expr::Column(2)],
    );
    let by_sum = View::new(vec![], KeyColumns(vec![0]), 1000);
    engine.install(over_sums, by_sum.clone()).unwrap();
    let by_row = View::new(vec![], KeyColumns(vec![0]), 1000);
    engine.install(over_rows, by_row.clone()).unwrap();
    let mut live: Vec<Row> = Vec::new();
    let mut ts = 0;
    for i in 0..60i64 {
        let row = vec![Value::str(&format!("k{}", i % 7)), Value::Int(i % 11)];
        live.push(row.clone());
        let mut updates = vec![(row, 1)];
        if i % 5 == 4 {
            updates.push((live.swap_remove((i as usize * 3) % live.len()), -1));
        }
        ts = engine.insert("t", updates).unwrap();
    }
    block_on(by_sum.wait_for(ts));
    block_on(by_row.wait_for(ts));
    for k in 0..7 {
        let key = Value::str(&format!("k{k}"));
        let values = values_of(&live, &key);
        let sum = Value::Int(values.iter().sum());
        let want = match values.is_empty() {
            true => vec![],
            false => vec![vec![key.clone(), sum.clone(), sum]],
        };
        assert_eq!(
            by_sum.snapshot(std::slice::from_ref(&key)).rows,
            want,
            "sums of {key:?}"
        );
        let mut want: Vec<Row> = values
            .iter()
            .map(|v| vec![key.clone(), Value::Int(v + 1)])
            .collect();
        want.sort();
        let mut got = by_row.snapshot(std::slice::from_ref(&key)).rows;
        got.sort();
        assert_eq!(got, want, "rows of {key:?}");
    }
    engine.shutdown();
}

/// One time that changes more groups than a worker hands on in one container (each worker's
/// share of 160k keys is about 80k, twice over when every group changes): every group's row
/// reaches the view, once, with its new sum.
#[test]
fn a_time_that_changes_many_groups_publishes_every_one() {
    let engine = start();
    // All rows under one key, told apart by their values.
    let view = View::new(columns(), KeyColumns(vec![]), 60_000);
    engine.install(sums_by_key(), view.clone()).unwrap();
    let keys = 160_000i64;
    let row = |k: i64, v: i64| vec![Value::str(&format!("k{k}")), Value::Int(v)];
    let ts = engine
        .insert("t", (0..keys).map(|k| (row(k, k), 1)).collect())
        .unwrap();
    block_on(view.wait_for(ts));
    assert_eq!(view.snapshot(&[]).rows.len(), keys as usize);
    // Every group changes at one time: its old row out, its new one in.
    let ts = engine
        .insert("t", (0..keys).map(|k| (row(k, 1), 1)).collect())
        .unwrap();
    block_on(view.wait_for(ts));
    let mut rows = view.snapshot(&[]).rows;
    rows.sort();
    let mut want: Vec<Row> = (0..keys).map(|k| row(k, k + 1)).collect();
    want.sort();
    assert_eq!(rows.len(), want.len());
    assert!(rows == want, "a group's sum is missing or wrong");
    engine.shutdown();
}

/// Rows with fewer columns than a group key reads (a table's rows written before a column
/// was added): the key cannot be read where the row lies, so the worker that routes the row
/// makes it through the scan (the missing column reads as NULL), and the row lands in its
/// group once, on two workers, among rows routed by their keys as they lie.
#[test]
fn rows_narrower_than_the_key_are_routed_by_the_key_the_scan_makes() {
    let engine = start();
    // `SELECT v, count() FROM t GROUP BY v`: the key is the second column.
    let plan = Plan {
        node: PlanNode::Aggregate {
            input: Box::new(scan()),
            keys: vec![Expr::Column(1)],
            aggregates: vec![agg(AggFunc::Count, vec![], ColumnType::UInt(64))],
        },
        columns: vec![],
    };
    let view = View::new(vec![], KeyColumns(vec![]), 1000);
    engine.install(plan, view.clone()).unwrap();
    let mut batch: Vec<(Row, isize)> = Vec::new();
    for i in 0..3_000i64 {
        batch.push((vec![Value::str("a"), Value::Int(i % 7)], 1));
        if i % 3 == 0 {
            batch.push((vec![Value::str("narrow")], 1));
        }
    }
    let ts = engine.insert("t", batch).unwrap();
    block_on(view.wait_for(ts));
    assert_eq!(view.failure(), None);
    let (mut rows, _) = view.counted_rows();
    rows.sort();
    let mut want: Vec<(Row, i64)> = (0..7)
        .map(|v| {
            let n = (0..3_000i64).filter(|i| i % 7 == v).count() as u64;
            (vec![Value::Int(v), Value::UInt(n)], 1)
        })
        .collect();
    want.push((vec![Value::Null, Value::UInt(1_000)], 1));
    want.sort();
    assert_eq!(rows, want);
    engine.shutdown();
}

/// A view over groups publishes each time's changes with no row twice, as subscribers read
/// them: where every group column is kept (the groups' changes are consolidated already and
/// go to the view as they are) and where a computed projection drops the sum (a group's old and
/// new row are then alike, and cancel). Both views end equal to a recomputation.
#[test]
fn a_view_over_groups_publishes_each_row_once_per_time() {
    let engine = start();
    let project = |exprs: Vec<Expr>| project(sums_by_key(), exprs);
    // (sum, k), keyed by k; and (k, 1).
    let kept = View::new(vec![], KeyColumns(vec![1]), 60_000);
    engine
        .install(
            project(vec![Expr::Column(1), Expr::Column(0)]),
            kept.clone(),
        )
        .unwrap();
    let dropped = View::new(vec![], KeyColumns(vec![0]), 60_000);
    engine
        .install(
            project(vec![Expr::Column(0), Expr::Literal(Value::Int(1))]),
            dropped.clone(),
        )
        .unwrap();
    let (_, mut kept_batches) = kept.subscribe(&[Value::str("k0")]);
    let (_, mut dropped_batches) = dropped.subscribe(&[Value::str("k0")]);
    let mut live: Vec<Row> = Vec::new();
    for i in 0..40i64 {
        let mut updates: Vec<(Row, isize)> = (0..25)
            .map(|j| {
                let row = vec![Value::str(&format!("k{}", (i + j) % 9)), Value::Int(j % 4)];
                live.push(row.clone());
                (row, 1)
            })
            .collect();
        if i % 3 == 2 {
            for _ in 0..20 {
                updates.push((live.swap_remove((i as usize * 7) % live.len()), -1));
            }
        }
        // Each batch at its own time: a group's sum changes from one time to the next.
        let ts = engine.insert("t", updates).unwrap();
        block_on(kept.wait_for(ts));
        block_on(dropped.wait_for(ts));
    }
    for (name, batches) in [
        ("kept", &mut kept_batches),
        ("dropped", &mut dropped_batches),
    ] {
        let mut seen = 0;
        while let Ok(batch) = batches.try_recv() {
            let mut rows: Vec<&Row> = batch.changes.iter().map(|(r, _)| r).collect();
            rows.sort();
            rows.dedup();
            assert_eq!(
                rows.len(),
                batch.changes.len(),
                "{name}: a row twice in {batch:?}"
            );
            assert!(
                batch.changes.iter().all(|(_, d)| *d != 0),
                "{name}: {batch:?}"
            );
            seen += batch.changes.len();
        }
        assert!(seen > 0, "{name}: the subscriber saw changes");
    }
    for k in 0..9 {
        let key = Value::str(&format!("k{k}"));
        let values = values_of(&live, &key);
        let sum = Value::Int(values.iter().sum());
        let (want_kept, want_dropped) = match values.is_empty() {
            true => (vec![], vec![]),
            false => (
                vec![vec![sum, key.clone()]],
                vec![vec![key.clone(), Value::Int(1)]],
            ),
        };
        let key = std::slice::from_ref(&key);
        assert_eq!(kept.snapshot(key).rows, want_kept, "sums of {key:?}");
        assert_eq!(
            dropped.snapshot(key).rows,
            want_dropped,
            "groups of {key:?}"
        );
    }
    engine.shutdown();
}

#[test]
fn temporal_filters_retract_rows_when_the_clock_passes_them() {
    let engine = start();
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let cols = vec![Column {
        name: "ts".into(),
        ty: ColumnType::DateTime,
    }];
    engine.register_source("e", Arc::new(MemoryLog::default()));
    // ts > now() - 2 seconds: a row stays while it is younger than 2 s.
    let plan = Plan {
        node: PlanNode::TemporalFilter {
            input: Box::new(Plan {
                node: PlanNode::Scan { table: "e".into() },
                columns: cols.clone(),
            }),
            bounds: vec![TemporalBound {
                expr: Expr::Column(0),
                op: CmpOp::Gt,
                offset_ms: -2000,
            }],
        },
        columns: cols.clone(),
    };
    let view = View::new(cols, KeyColumns(vec![]), 1000);
    engine.install(plan, view.clone()).unwrap();
    let ts = engine
        .insert(
            "e",
            vec![
                (vec![Value::DateTime(now_secs)], 1),
                (vec![Value::DateTime(now_secs - 3600)], 1),
            ],
        )
        .unwrap();
    block_on(view.wait_for(ts));
    assert_eq!(
        view.snapshot(&[]).rows,
        vec![vec![Value::DateTime(now_secs)]]
    );
    block_on(view.wait_for(ts + 3000));
    assert!(
        view.snapshot(&[]).rows.is_empty(),
        "the row left the window"
    );
    engine.shutdown();
}

/// Two engines joined as a two-process cluster on loopback, each with its own log: process
/// 0 installs, rows enter through both, and the view on process 0 holds them all.
#[test]
fn a_two_process_cluster_maintains_views_over_both_processes_rows() {
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let starts: Vec<_> = (0..2)
        .map(|process| {
            let addresses = addresses.clone();
            std::thread::spawn(move || {
                let engine = Engine::start(EngineConfig {
                    workers: 2,
                    tick: Duration::from_millis(5),
                    cluster: Some(petrel_engine::Cluster { process, addresses }),
                    ..Default::default()
                })
                .unwrap();
                engine.register_source("t", Arc::new(MemoryLog::default()));
                engine
            })
        })
        .collect();
    let engines: Vec<Arc<Engine>> = starts.into_iter().map(|s| s.join().unwrap()).collect();
    let row = |k: &str, v: i64| (vec![Value::str(k), Value::Int(v)], 1);
    // History on both processes before the install.
    engines[0].insert("t", vec![row("a", 1)]).unwrap();
    engines[1]
        .insert("t", vec![row("a", 2), row("b", 5)])
        .unwrap();
    let plan = sums_by_key();
    assert!(
        engines[1]
            .install(plan.clone(), View::new(vec![], KeyColumns(vec![0]), 1000))
            .is_err(),
        "only process 0 installs views"
    );
    let view = View::new(vec![], KeyColumns(vec![0]), 1000);
    let id = engines[0].install(plan.clone(), view.clone()).unwrap();
    // Live rows through both processes, many per batch so they split over the workers.
    let many: Vec<_> = (0..5000).map(|i| row("b", i % 3)).collect();
    engines[1].insert("t", many).unwrap();
    let t0 = engines[0].insert("t", vec![row("a", 10)]).unwrap();
    let t1 = engines[1].insert("t", vec![row("a", 100)]).unwrap();
    block_on(view.wait_for(t0.max(t1)));
    let sum = |key: &str| view.snapshot(&[Value::str(key)]).rows[0][1].clone();
    assert_eq!(sum("a"), Value::Int(113));
    // b: 5 + (5000 rows of 0, 1, 2: 1667 zeros, 1667 ones, 1666 twos).
    assert_eq!(sum("b"), Value::Int(5 + 1667 + 2 * 1666));
    // A view dropped and installed again on process 0 is rebuilt on both, from both logs.
    engines[0].drop_view(id);
    let again = View::new(vec![], KeyColumns(vec![0]), 1000);
    engines[0].install(plan, again.clone()).unwrap();
    let t = engines[1].insert("t", vec![row("a", 1000)]).unwrap();
    block_on(again.wait_for(t));
    assert_eq!(
        again.snapshot(&[Value::str("a")]).rows[0][1],
        Value::Int(1113)
    );
    assert_eq!(engines[0].process(), (0, 2));
    assert!(engines[0].failure().is_none());
    for e in &engines {
        e.shutdown();
    }
}
