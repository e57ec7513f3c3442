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
