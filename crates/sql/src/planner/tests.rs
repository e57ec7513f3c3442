//! Planner tests: for each construct, the plan's shape, its expressions and column types,
//! and for refused SQL the message and location.

use std::collections::BTreeMap;

use petrel_value::{time, Column, ColumnType as T, Row, Value};

use super::plan_query;
use crate::expr::Expr;
use crate::functions::{Func, Unit};
use crate::plan::*;
use crate::SqlError;

struct TestCatalog;

fn col(name: &str, ty: &str) -> Column {
    Column {
        name: name.into(),
        ty: T::parse(ty).unwrap(),
    }
}

fn events() -> Vec<Column> {
    vec![
        col("timestamp", "DateTime"),
        col("date", "Date"),
        col("user_id", "String"),
        col("session_id", "String"),
        col("action", "LowCardinality(String)"),
        col("click_count", "UInt32"),
        col("amount", "Float64"),
        col("tags", "Array(String)"),
        col("ms", "Int64"),
        col("country", "Nullable(String)"),
        col("id", "UInt64"),
    ]
}

impl Catalog for TestCatalog {
    fn table(&self, name: &str) -> Option<TableRef> {
        match name {
            "events" => Some(TableRef::Datasource(events())),
            "users" => Some(TableRef::Datasource(vec![
                col("user_id", "String"),
                col("name", "String"),
                col("plan", "String"),
                col("id", "Int32"),
            ])),
            "earlier_node" => Some(TableRef::Plan(Plan {
                node: PlanNode::Values {
                    rows: vec![vec![Value::str("a"), Value::UInt(1)]],
                },
                columns: vec![col("k", "String"), col("n", "UInt64")],
            })),
            _ => None,
        }
    }

    fn param_type(&self, name: &str) -> Option<T> {
        let ty = match name {
            "p" | "since" => "String",
            "limit" | "days" => "Int32",
            "arr" => "Array(String)",
            "start" => "DateTime",
            _ => return None,
        };
        T::parse(ty).ok()
    }
}

fn plan(sql: &str) -> Query {
    plan_query(sql, &TestCatalog)
        .unwrap_or_else(|e| panic!("{sql}\n  {e} at {}:{}", e.line, e.column))
}

fn err(sql: &str) -> SqlError {
    match plan_query(sql, &TestCatalog) {
        Ok(q) => panic!("{sql} planned: {q:?}"),
        Err(e) => e,
    }
}

/// The node kinds from the root down the first input, e.g. `Project(Filter(Scan))`; joins
/// and unions list all inputs.
fn shape(p: &Plan) -> String {
    let name = match &p.node {
        PlanNode::Scan { table } => return format!("Scan {table}"),
        PlanNode::Values { .. } => return "Values".into(),
        PlanNode::Filter { .. } => "Filter",
        PlanNode::TemporalFilter { .. } => "TemporalFilter",
        PlanNode::Project { .. } => "Project",
        PlanNode::Aggregate { .. } => "Aggregate",
        PlanNode::Distinct { .. } => "Distinct",
        PlanNode::Join { kind, .. } => match kind {
            JoinKind::Inner => "Join",
            JoinKind::Left => "LeftJoin",
            JoinKind::Cross => "CrossJoin",
        },
        PlanNode::Union { .. } => "Union",
        PlanNode::TopK { .. } => "TopK",
        PlanNode::ArrayJoin { .. } => "ArrayJoin",
        PlanNode::Window { .. } => "Window",
    };
    let inputs: Vec<String> = p.inputs().into_iter().map(shape).collect();
    format!("{name}({})", inputs.join(", "))
}

/// The first node (depth first) matching `pred`.
fn find<'p>(p: &'p Plan, pred: &dyn Fn(&PlanNode) -> bool) -> Option<&'p Plan> {
    if pred(&p.node) {
        return Some(p);
    }
    p.inputs().into_iter().find_map(|i| find(i, pred))
}

fn names(p: &Plan) -> Vec<&str> {
    p.columns.iter().map(|c| c.name.as_str()).collect()
}

fn types(p: &Plan) -> Vec<T> {
    p.columns.iter().map(|c| c.ty.clone()).collect()
}

fn project_exprs(p: &Plan) -> &[Expr] {
    match &p.node {
        PlanNode::Project { exprs, .. } => exprs,
        other => panic!("not a projection: {other:?}"),
    }
}

fn aggregates(p: &Plan) -> (&[Expr], &[Aggregate]) {
    match &find(p, &|n| matches!(n, PlanNode::Aggregate { .. }))
        .expect("an aggregate")
        .node
    {
        PlanNode::Aggregate {
            keys, aggregates, ..
        } => (keys, aggregates),
        _ => unreachable!(),
    }
}

fn bounds(sql: &str) -> Vec<TemporalBound> {
    let q = plan(sql);
    match &find(&q.plan, &|n| matches!(n, PlanNode::TemporalFilter { .. }))
        .unwrap_or_else(|| panic!("no temporal filter in {sql}"))
        .node
    {
        PlanNode::TemporalFilter { bounds, .. } => bounds.clone(),
        _ => unreachable!(),
    }
}

fn c(i: usize) -> Expr {
    Expr::Column(i)
}

fn call(f: Func, args: Vec<Expr>) -> Expr {
    Expr::call(f, args)
}

fn lit(v: Value) -> Expr {
    Expr::Literal(v)
}

fn dt(s: &str) -> Value {
    Value::DateTime(time::parse_datetime(s, 0).unwrap())
}

const DAY: i64 = 86_400_000;

#[test]
fn select_star_aliases_and_where() {
    let q = plan("SELECT * FROM events");
    assert_eq!(shape(&q.plan), "Project(Scan events)");
    assert_eq!(q.plan.columns, events());
    assert_eq!(q.visible, 11);

    let q = plan("SELECT user_id AS u, click_count * 2 AS c FROM events WHERE c > 2 AND u != ''");
    assert_eq!(shape(&q.plan), "Project(Filter(Scan events))");
    assert_eq!(names(&q.plan), ["u", "c"]);
    assert_eq!(types(&q.plan), [T::String, T::UInt(64)]);
    let filter = find(&q.plan, &|n| matches!(n, PlanNode::Filter { .. })).unwrap();
    let PlanNode::Filter { predicate, .. } = &filter.node else {
        unreachable!()
    };
    assert_eq!(
        *predicate,
        call(
            Func::And,
            vec![
                call(
                    Func::Gt,
                    vec![
                        call(Func::Multiply, vec![c(5), lit(Value::UInt(2))]),
                        lit(Value::UInt(2))
                    ]
                ),
                call(Func::NotEq, vec![c(2), lit(Value::str(""))]),
            ]
        )
    );

    let q = plan("SELECT * EXCEPT (tags, ms), events.id FROM events");
    assert_eq!(q.plan.columns.len(), 10);
    assert!(!names(&q.plan).contains(&"tags"));
    let q = plan("SELECT e.* FROM events AS e");
    assert_eq!(q.plan.columns.len(), 11);
    // Column names resolve case-insensitively when no exact match exists.
    let q = plan("SELECT USER_ID FROM events");
    assert_eq!(project_exprs(&q.plan), [c(2)]);
    assert_eq!(names(&q.plan), ["USER_ID"]);
}

#[test]
fn select_without_from_and_constants() {
    let q = plan("SELECT 1 AS one, 'a' AS s, -5 AS neg, 1.5 AS f, NULL AS n");
    assert_eq!(shape(&q.plan), "Project(Values)");
    assert_eq!(
        types(&q.plan),
        [
            T::UInt(8),
            T::String,
            T::Int(8),
            T::Float64,
            T::Nullable(Box::new(T::String))
        ]
    );
    assert_eq!(
        project_exprs(&q.plan),
        [
            lit(Value::UInt(1)),
            lit(Value::str("a")),
            lit(Value::Int(-5)),
            lit(Value::from(1.5)),
            lit(Value::Null)
        ]
    );
    // Constant expressions fold.
    let q = plan("SELECT 1 + 2, toDate('2024-01-02') + 1, [1, -1]");
    assert_eq!(
        project_exprs(&q.plan),
        [
            lit(Value::UInt(3)),
            lit(Value::Date(time::parse_date("2024-01-03").unwrap() as i32)),
            lit(Value::Array(vec![Value::Int(1), Value::Int(-1)].into())),
        ]
    );
    assert_eq!(
        names(&q.plan),
        ["plus(1, 2)", "plus(toDate('2024-01-02'), 1)", "[1, -1]"]
    );
}

#[test]
fn aggregates_are_named_and_typed() {
    let q = plan(
        "SELECT user_id, count(), sum(click_count), sum(ms), sum(amount), avg(amount), \
         min(timestamp), max(country), uniq(session_id), uniqExact(session_id), \
         quantile(0.9)(amount), median(click_count), argMax(action, timestamp), \
         groupArray(action), groupUniqArray(user_id), any(date), anyLast(ms) \
         FROM events GROUP BY user_id",
    );
    assert_eq!(shape(&q.plan), "Project(Aggregate(Scan events))");
    assert_eq!(
        names(&q.plan),
        [
            "user_id",
            "count()",
            "sum(click_count)",
            "sum(ms)",
            "sum(amount)",
            "avg(amount)",
            "min(timestamp)",
            "max(country)",
            "uniq(session_id)",
            "uniqExact(session_id)",
            "quantile(0.9)(amount)",
            "median(click_count)",
            "argMax(action, timestamp)",
            "groupArray(action)",
            "groupUniqArray(user_id)",
            "any(date)",
            "anyLast(ms)",
        ]
    );
    assert_eq!(
        types(&q.plan),
        [
            T::String,
            T::UInt(64),
            T::UInt(64),
            T::Int(64),
            T::Float64,
            T::Float64,
            T::DateTime,
            T::Nullable(Box::new(T::String)),
            T::UInt(64),
            T::UInt(64),
            T::Float64,
            T::Float64,
            T::LowCardinality(Box::new(T::String)),
            T::Array(Box::new(T::String)),
            T::Array(Box::new(T::String)),
            T::Date,
            T::Int(64),
        ]
    );
    let (keys, aggs) = aggregates(&q.plan);
    assert_eq!(keys, [c(2)]);
    let funcs: Vec<AggFunc> = aggs.iter().map(|a| a.func).collect();
    assert_eq!(
        funcs,
        [
            AggFunc::Count,
            AggFunc::Sum,
            AggFunc::Sum,
            AggFunc::Sum,
            AggFunc::Avg,
            AggFunc::Min,
            AggFunc::Max,
            AggFunc::Uniq,
            AggFunc::UniqExact,
            AggFunc::Quantile,
            AggFunc::Quantile,
            AggFunc::ArgMax,
            AggFunc::GroupArray,
            AggFunc::GroupUniqArray,
            AggFunc::Any,
            AggFunc::AnyLast,
        ]
    );
    assert_eq!(aggs[9].params, [Value::from(0.9)]);
    assert_eq!(aggs[10].params, [Value::from(0.5)]);
    assert_eq!(aggs[11].args, [c(4), c(0)]);
    // The Aggregate node's own columns: keys, then aggregates.
    let agg = find(&q.plan, &|n| matches!(n, PlanNode::Aggregate { .. })).unwrap();
    assert_eq!(names(agg)[..3], ["user_id", "count()", "sum(click_count)"]);
}

#[test]
fn if_combinator_and_count_distinct() {
    let q = plan(
        "SELECT countIf(click_count > 1) AS c, sumIf(amount, action = 'buy') AS s, \
         count(DISTINCT user_id) AS u, uniqIf(user_id, amount > 0) AS v, count(country) AS n \
         FROM events",
    );
    let (keys, aggs) = aggregates(&q.plan);
    assert!(keys.is_empty());
    assert_eq!(aggs[0].func, AggFunc::Count);
    assert!(aggs[0].args.is_empty());
    assert_eq!(
        aggs[0].filter,
        Some(call(Func::Gt, vec![c(5), lit(Value::UInt(1))]))
    );
    assert_eq!(aggs[1].func, AggFunc::Sum);
    assert_eq!(aggs[1].args, [c(6)]);
    assert_eq!(
        aggs[1].filter,
        Some(call(Func::Eq, vec![c(4), lit(Value::str("buy"))]))
    );
    assert_eq!(aggs[2].func, AggFunc::UniqExact);
    assert_eq!(aggs[2].args, [c(2)]);
    assert_eq!(aggs[3].func, AggFunc::Uniq);
    assert!(aggs[3].filter.is_some());
    assert_eq!(aggs[4].args, [c(9)]);
    assert_eq!(
        types(&q.plan),
        [
            T::UInt(64),
            T::Float64,
            T::UInt(64),
            T::UInt(64),
            T::UInt(64)
        ]
    );
    let q = plan("SELECT count(DISTINCT user_id) FROM events");
    assert_eq!(names(&q.plan), ["countDistinct(user_id)"]);
}

#[test]
fn aggregates_inside_expressions() {
    let q = plan(
        "SELECT round(avg(amount), 2) AS a, sum(click_count) / count() AS r, \
         count() * 2 AS twice FROM events",
    );
    assert_eq!(shape(&q.plan), "Project(Aggregate(Scan events))");
    let (keys, aggs) = aggregates(&q.plan);
    assert!(keys.is_empty());
    assert_eq!(aggs.len(), 3, "count() is shared: {aggs:?}");
    assert_eq!(
        project_exprs(&q.plan),
        [
            call(Func::Round, vec![c(0), lit(Value::UInt(2))]),
            call(Func::Divide, vec![c(1), c(2)]),
            call(Func::Multiply, vec![c(2), lit(Value::UInt(2))]),
        ]
    );
    assert_eq!(types(&q.plan), [T::Float64, T::Float64, T::UInt(64)]);
}

#[test]
fn group_by_aliases_positions_and_having() {
    for sql in [
        "SELECT toStartOfHour(timestamp) AS h, count() AS c FROM events GROUP BY h",
        "SELECT toStartOfHour(timestamp) AS h, count() AS c FROM events GROUP BY 1",
        "SELECT toStartOfHour(timestamp) AS h, count() AS c FROM events GROUP BY toStartOfHour(timestamp)",
    ] {
        let q = plan(sql);
        let (keys, _) = aggregates(&q.plan);
        assert_eq!(keys, [call(Func::ToStartOf(Unit::Hour), vec![c(0)])], "{sql}");
        assert_eq!(project_exprs(&q.plan), [c(0), c(1)], "{sql}");
        assert_eq!(types(&q.plan), [T::DateTime, T::UInt(64)]);
    }
    let q = plan(
        "SELECT user_id, count() AS c FROM events GROUP BY user_id HAVING c > 10 AND max(amount) > 1",
    );
    assert_eq!(shape(&q.plan), "Project(Filter(Aggregate(Scan events)))");
    let (_, aggs) = aggregates(&q.plan);
    assert_eq!(aggs.len(), 2);
    // Expressions over keys are computed after the aggregation.
    let q = plan("SELECT upper(user_id) AS u, count() FROM events GROUP BY user_id");
    assert_eq!(project_exprs(&q.plan)[0], call(Func::Upper, vec![c(0)]));
    let e = err("SELECT user_id, action FROM events GROUP BY user_id");
    assert!(
        e.message
            .contains("'action' is not under an aggregate function"),
        "{e}"
    );
    assert_eq!((e.line, e.column), (1, 17));
    let e = err("SELECT sum(count()) FROM events");
    assert!(e.message.contains("cannot be nested"), "{e}");
    let e = err("SELECT * FROM events WHERE count() > 1");
    assert!(
        e.message
            .contains("aggregate function count is not allowed here"),
        "{e}"
    );
}

#[test]
fn distinct_order_by_and_hidden_columns() {
    let q = plan("SELECT DISTINCT user_id FROM events");
    assert_eq!(shape(&q.plan), "Distinct(Project(Scan events))");

    let q = plan(
        "SELECT user_id, count() AS c FROM events GROUP BY user_id ORDER BY max(amount) DESC, c, 1 LIMIT 3",
    );
    assert_eq!(q.visible, 2);
    assert_eq!(names(&q.plan), ["user_id", "c", "max(amount)"]);
    assert_eq!(
        q.order_by,
        [
            SortKey {
                expr: c(2),
                desc: true,
                nulls_first: false
            },
            SortKey {
                expr: c(1),
                desc: false,
                nulls_first: false
            },
            SortKey {
                expr: c(0),
                desc: false,
                nulls_first: false
            },
        ]
    );
    assert_eq!(q.limit, Some(lit(Value::UInt(3))));

    let q = plan("SELECT user_id FROM events ORDER BY timestamp NULLS FIRST LIMIT $limit OFFSET 5");
    assert_eq!(q.visible, 1);
    assert_eq!(types(&q.plan), [T::String, T::DateTime]);
    assert!(q.order_by[0].nulls_first);
    assert_eq!(
        q.limit,
        Some(Expr::Param {
            name: "limit".into(),
            ty: T::Int(32)
        })
    );
    assert_eq!(q.offset, Some(lit(Value::UInt(5))));
    let q = plan("SELECT user_id FROM events LIMIT 5, 10");
    assert_eq!(
        (q.limit, q.offset),
        (Some(lit(Value::UInt(10))), Some(lit(Value::UInt(5))))
    );

    let e = err("SELECT DISTINCT user_id FROM events ORDER BY amount");
    assert!(e.message.contains("DISTINCT"), "{e}");
}

#[test]
fn subqueries_ctes_limit_by_and_into_plan() {
    let q = plan(
        "SELECT user_id FROM (SELECT user_id, amount FROM events ORDER BY amount DESC LIMIT 3) AS top",
    );
    assert_eq!(shape(&q.plan), "Project(TopK(Project(Scan events)))");
    let top = find(&q.plan, &|n| matches!(n, PlanNode::TopK { .. })).unwrap();
    let PlanNode::TopK {
        order_by,
        limit,
        offset,
        partition_by,
        ..
    } = &top.node
    else {
        unreachable!()
    };
    assert_eq!((*limit, *offset), (Some(3), 0));
    assert!(order_by[0].desc && partition_by.is_empty());

    // A subquery's ORDER BY without LIMIT does nothing; its hidden columns are dropped.
    let q = plan("SELECT * FROM (SELECT user_id FROM events ORDER BY amount)");
    assert_eq!(shape(&q.plan), "Project(Project(Project(Scan events)))");
    assert_eq!(names(&q.plan), ["user_id"]);

    let q = plan(
        "WITH active AS (SELECT user_id, count() AS c FROM events GROUP BY user_id) \
         SELECT a.user_id, a.c FROM active AS a WHERE a.c > 1",
    );
    assert_eq!(
        shape(&q.plan),
        "Project(Filter(Project(Aggregate(Scan events))))"
    );
    assert_eq!(types(&q.plan), [T::String, T::UInt(64)]);

    let q = plan("SELECT user_id, amount FROM events ORDER BY amount DESC LIMIT 2 BY user_id");
    let PlanNode::TopK {
        limit,
        partition_by,
        order_by,
        ..
    } = &q.plan.node
    else {
        panic!("{}", shape(&q.plan))
    };
    assert_eq!(
        (*limit, partition_by.as_slice()),
        (Some(2), [c(0)].as_slice())
    );
    assert_eq!(order_by[0].expr, c(1));

    let q = plan("SELECT k, n FROM earlier_node WHERE n > 0");
    assert_eq!(shape(&q.plan), "Project(Filter(Values))");

    let e = err("SELECT * FROM (SELECT user_id FROM events LIMIT $limit)");
    assert!(
        e.message.starts_with("unsupported: a parameter as LIMIT"),
        "{e}"
    );

    // A query read as a table: ORDER BY + LIMIT become a top-k, hidden columns go.
    let q = plan("SELECT user_id FROM events ORDER BY amount DESC LIMIT 10");
    let p = q.into_plan();
    assert_eq!(shape(&p), "Project(TopK(Project(Scan events)))");
    assert_eq!(names(&p), ["user_id"]);
}

#[test]
fn scalar_with_aliases() {
    let q = plan(
        "WITH 10 AS lim, (now() - INTERVAL 1 HOUR) AS start \
         SELECT user_id FROM events WHERE timestamp > start AND click_count > lim",
    );
    let b = bounds(
        "WITH 10 AS lim, (now() - INTERVAL 1 HOUR) AS start \
         SELECT user_id FROM events WHERE timestamp > start AND click_count > lim",
    );
    assert_eq!((b[0].op, b[0].offset_ms), (CmpOp::Gt, -3_600_000));
    assert_eq!(
        shape(&q.plan),
        "Project(TemporalFilter(Filter(Scan events)))"
    );
    // Scalars and CTEs together; a scalar is visible in subqueries.
    let q = plan(
        "WITH 'x' AS wanted, sub AS (SELECT user_id FROM events WHERE user_id = wanted) \
         SELECT * FROM sub",
    );
    let f = find(&q.plan, &|n| matches!(n, PlanNode::Filter { .. })).unwrap();
    let PlanNode::Filter { predicate, .. } = &f.node else {
        unreachable!()
    };
    assert_eq!(*predicate, call(Func::Eq, vec![c(2), lit(Value::str("x"))]));
    // Not visible outside the query that defines it.
    let e = err("SELECT lim FROM (WITH 1 AS lim SELECT 2 AS x)");
    assert!(e.message.contains("unknown column 'lim'"), "{e}");
    let q = plan("SELECT lim FROM (WITH 1 AS lim SELECT lim)");
    assert_eq!(types(&q.plan), [T::UInt(8)]);
}

#[test]
fn where_and_prewhere() {
    let q = plan("SELECT user_id FROM events PREWHERE action = 'click' WHERE amount > 1");
    assert_eq!(shape(&q.plan), "Project(Filter(Filter(Scan events)))");
    let PlanNode::Filter { input, predicate } = &q.plan.inputs()[0].node else {
        unreachable!()
    };
    assert_eq!(*predicate, call(Func::Gt, vec![c(6), lit(Value::UInt(1))]));
    let PlanNode::Filter { predicate, .. } = &input.node else {
        unreachable!()
    };
    assert_eq!(
        *predicate,
        call(Func::Eq, vec![c(4), lit(Value::str("click"))])
    );
}

#[test]
fn string_literals_take_the_compared_type() {
    let q = plan(
        "SELECT 1 FROM events WHERE timestamp >= '2024-01-01 10:00:00' AND date < '2024-02-01' \
         AND click_count = '5' AND id IN ('1', '2')",
    );
    let f = find(&q.plan, &|n| matches!(n, PlanNode::Filter { .. })).unwrap();
    let PlanNode::Filter { predicate, .. } = &f.node else {
        unreachable!()
    };
    assert_eq!(
        *predicate,
        call(
            Func::And,
            vec![
                call(Func::GtEq, vec![c(0), lit(dt("2024-01-01 10:00:00"))]),
                call(
                    Func::Lt,
                    vec![
                        c(1),
                        lit(Value::Date(time::parse_date("2024-02-01").unwrap() as i32))
                    ]
                ),
                call(Func::Eq, vec![c(5), lit(Value::UInt(5))]),
                call(
                    Func::In,
                    vec![c(10), lit(Value::UInt(1)), lit(Value::UInt(2))]
                ),
            ]
        )
    );
    // A String parameter ordered against a time is cast (and folded when bound).
    let q = plan("SELECT 1 FROM events WHERE timestamp >= $since AND user_id = $p");
    let values = BTreeMap::from([
        ("since".to_string(), Value::str("2024-01-01 00:00:00")),
        ("p".to_string(), Value::str("u1")),
    ]);
    let bound = q.bind(&values).unwrap();
    let f = find(&bound.plan, &|n| matches!(n, PlanNode::Filter { .. })).unwrap();
    let PlanNode::Filter { predicate, .. } = &f.node else {
        unreachable!()
    };
    assert_eq!(
        *predicate,
        call(
            Func::And,
            vec![
                call(Func::GtEq, vec![c(0), lit(dt("2024-01-01 00:00:00"))]),
                call(Func::Eq, vec![c(2), lit(Value::str("u1"))]),
            ]
        )
    );
}

#[test]
fn parameters() {
    let q = plan("SELECT user_id FROM events WHERE user_id = $p AND action IN $arr");
    let mut params = std::collections::BTreeSet::new();
    q.plan.params(&mut params);
    assert_eq!(params.into_iter().collect::<Vec<_>>(), ["arr", "p"]);
    let f = find(&q.plan, &|n| matches!(n, PlanNode::Filter { .. })).unwrap();
    let PlanNode::Filter { predicate, .. } = &f.node else {
        unreachable!()
    };
    let arr = Expr::Param {
        name: "arr".into(),
        ty: T::Array(Box::new(T::String)),
    };
    let p = Expr::Param {
        name: "p".into(),
        ty: T::String,
    };
    assert_eq!(
        *predicate,
        call(
            Func::And,
            vec![
                call(Func::Eq, vec![c(2), p]),
                call(Func::Has, vec![arr.clone(), c(4)]),
            ]
        )
    );
    let q = plan("SELECT user_id FROM events WHERE action NOT IN ($arr)");
    let f = find(&q.plan, &|n| matches!(n, PlanNode::Filter { .. })).unwrap();
    let PlanNode::Filter { predicate, .. } = &f.node else {
        unreachable!()
    };
    assert_eq!(
        *predicate,
        call(Func::Not, vec![call(Func::Has, vec![arr, c(4)])])
    );
    let values = BTreeMap::from([
        ("p".to_string(), Value::str("u")),
        (
            "arr".to_string(),
            Value::Array(vec![Value::str("a"), Value::str("b")].into()),
        ),
    ]);
    let bound = q.bind(&values).unwrap();
    let mut left = std::collections::BTreeSet::new();
    bound.plan.params(&mut left);
    assert!(left.is_empty());
    let e = err("SELECT * FROM events WHERE user_id = $nope");
    assert!(e.message.contains("unknown parameter 'nope'"), "{e}");
    assert_eq!((e.line, e.column), (1, 38));
}

#[test]
fn joins() {
    let q = plan(
        "SELECT e.user_id, u.name FROM events AS e INNER JOIN users AS u \
         ON e.user_id = u.user_id AND u.plan != 'free' AND e.amount > 1",
    );
    assert_eq!(shape(&q.plan), "Project(Join(Scan events, Scan users))");
    let PlanNode::Join {
        left_keys,
        right_keys,
        residual,
        ..
    } = &q.plan.inputs()[0].node
    else {
        unreachable!()
    };
    assert_eq!(
        (left_keys.as_slice(), right_keys.as_slice()),
        ([c(2)].as_slice(), [c(0)].as_slice())
    );
    assert_eq!(
        *residual,
        Some(call(
            Func::And,
            vec![
                call(Func::NotEq, vec![c(13), lit(Value::str("free"))]),
                call(Func::Gt, vec![c(6), lit(Value::UInt(1))]),
            ]
        ))
    );
    assert_eq!(project_exprs(&q.plan), [c(2), c(12)]);

    // An ANY LEFT join keeps one right row per key.
    for sql in [
        "SELECT name FROM events ANY LEFT JOIN users ON events.user_id = users.user_id",
        "SELECT name FROM events LEFT ANY JOIN users USING user_id",
        "SELECT name FROM events ANY LEFT JOIN (SELECT user_id, name FROM users) AS u USING user_id",
    ] {
        assert!(
            shape(&plan(sql).plan).starts_with("Project(LeftJoin(Scan events, TopK("),
            "{sql}: {}",
            shape(&plan(sql).plan)
        );
    }
    // Mirrored equality and LEFT joins.
    for sql in [
        "SELECT name FROM events LEFT JOIN users ON users.user_id = events.user_id",
        "SELECT name FROM events LEFT OUTER JOIN users ON (events.user_id = users.user_id)",
    ] {
        let q = plan(sql);
        assert_eq!(
            shape(&q.plan),
            "Project(LeftJoin(Scan events, Scan users))",
            "{sql}"
        );
        let PlanNode::Join {
            left_keys,
            right_keys,
            ..
        } = &q.plan.inputs()[0].node
        else {
            unreachable!()
        };
        assert_eq!(
            (left_keys[0].clone(), right_keys[0].clone()),
            (c(2), c(0)),
            "{sql}"
        );
    }

    // USING: the column appears once in `*`.
    let q = plan("SELECT * FROM events JOIN users USING (user_id)");
    assert_eq!(q.plan.columns.len(), 11 + 3);
    assert_eq!(
        names(&q.plan).iter().filter(|n| **n == "user_id").count(),
        1
    );
    let e = err("SELECT id FROM events JOIN users USING (user_id)");
    assert!(e.message.contains("ambiguous"), "{e}");

    // Keys of different integer kinds are cast to a common type.
    let q = plan("SELECT 1 FROM events AS e JOIN users AS u ON e.id = u.id");
    let PlanNode::Join {
        left_keys,
        right_keys,
        ..
    } = &q.plan.inputs()[0].node
    else {
        unreachable!()
    };
    assert_eq!(left_keys[0], call(Func::Cast(T::Int(64)), vec![c(10)]));
    assert_eq!(right_keys[0], call(Func::Cast(T::Int(64)), vec![c(3)]));

    // Comma and CROSS joins; an equality in WHERE makes a comma join an inner join.
    let q = plan(
        "SELECT 1 FROM events, users WHERE events.user_id = users.user_id AND users.plan = 'pro'",
    );
    assert_eq!(
        shape(&q.plan),
        "Project(Filter(Join(Scan events, Scan users)))"
    );
    let q = plan("SELECT 1 FROM events CROSS JOIN users");
    assert_eq!(
        shape(&q.plan),
        "Project(CrossJoin(Scan events, Scan users))"
    );

    let e = err("SELECT 1 FROM events JOIN users ON events.amount > 1");
    assert!(e.message.contains("needs an equality"), "{e}");
    let e = err("SELECT 1 FROM events\nRIGHT JOIN users ON events.user_id = users.user_id");
    assert!(e.message.starts_with("unsupported: RIGHT JOIN"), "{e}");
    let e = err("SELECT 1 FROM events FULL OUTER JOIN users ON events.user_id = users.user_id");
    assert!(e.message.starts_with("unsupported: FULL JOIN"), "{e}");
    let e = err("SELECT 1 FROM nope");
    assert!(e.message.contains("unknown table 'nope'"), "{e}");
    assert_eq!((e.line, e.column), (1, 15));
}

#[test]
fn union_all() {
    let q = plan(
        "SELECT user_id, click_count FROM events UNION ALL SELECT name, id FROM users \
         UNION ALL SELECT 'x', 1",
    );
    assert_eq!(
        shape(&q.plan),
        "Union(Project(Scan events), Project(Scan users), Project(Values))"
    );
    assert_eq!(names(&q.plan), ["user_id", "click_count"]);
    assert_eq!(types(&q.plan), [T::String, T::Int(64)]);
    let q = plan(
        "SELECT user_id FROM events UNION ALL SELECT name FROM users ORDER BY user_id LIMIT 1",
    );
    assert_eq!(q.order_by[0].expr, c(0));
    let e = err("SELECT user_id FROM events UNION SELECT name FROM users");
    assert!(
        e.message.starts_with("unsupported: UNION without ALL"),
        "{e}"
    );
    let e = err("SELECT user_id, 1 FROM events UNION ALL SELECT name FROM users");
    assert!(e.message.contains("UNION ALL of 2 and 1 columns"), "{e}");
}

#[test]
fn in_subquery_is_a_semi_or_anti_join() {
    let q = plan("SELECT user_id FROM events WHERE user_id IN (SELECT user_id FROM users WHERE plan = 'pro')");
    assert_eq!(
        shape(&q.plan),
        "Project(Project(Join(Scan events, Project(Distinct(Project(Filter(Scan users)))))))"
    );
    let semi = q.plan.inputs()[0];
    assert_eq!(semi.columns, events());
    let PlanNode::Join {
        left_keys,
        right_keys,
        ..
    } = &semi.inputs()[0].node
    else {
        unreachable!()
    };
    assert_eq!((left_keys[0].clone(), right_keys[0].clone()), (c(2), c(0)));

    let q = plan("SELECT user_id FROM events WHERE user_id NOT IN (SELECT user_id FROM users)");
    assert_eq!(
        shape(&q.plan),
        "Project(Project(Filter(LeftJoin(Scan events, Project(Distinct(Project(Scan users)))))))"
    );
    let PlanNode::Filter { predicate, .. } = &q.plan.inputs()[0].inputs()[0].node else {
        unreachable!()
    };
    // The marker column follows the input's 11 columns and the subquery's 1.
    assert_eq!(*predicate, call(Func::Eq, vec![c(12), lit(Value::UInt(0))]));

    let q = plan("SELECT 1 FROM events WHERE (user_id, id) IN (SELECT user_id, id FROM users)");
    let PlanNode::Join {
        left_keys,
        right_keys,
        ..
    } = &find(&q.plan, &|n| matches!(n, PlanNode::Join { .. }))
        .unwrap()
        .node
    else {
        unreachable!()
    };
    assert_eq!(left_keys.len(), 2);
    assert_eq!(right_keys[1], call(Func::Cast(T::Int(64)), vec![c(1)]));

    let e = err("SELECT 1 FROM events WHERE user_id IN (SELECT user_id, name FROM users)");
    assert!(e.message.contains("subquery of 2 columns"), "{e}");
    // Outside WHERE's conditions: the subquery's distinct values as one array, joined once.
    let q = plan("SELECT user_id IN (SELECT user_id FROM users) AS pro FROM events");
    assert_eq!(names(&q.plan), ["pro"]);
    assert!(find(&q.plan, &|n| matches!(n, PlanNode::Join { .. })).is_some());
    let e = err("SELECT (user_id, id) IN (SELECT user_id, id FROM users) FROM events");
    assert!(e.message.starts_with("unsupported: IN (subquery)"), "{e}");
}

#[test]
fn array_joins() {
    let q = plan("SELECT arrayJoin(tags) AS tag, count() AS c FROM events GROUP BY tag");
    assert_eq!(
        shape(&q.plan),
        "Project(Aggregate(ArrayJoin(Project(Scan events))))"
    );
    let aj = find(&q.plan, &|n| matches!(n, PlanNode::ArrayJoin { .. })).unwrap();
    assert!(matches!(aj.node, PlanNode::ArrayJoin { column: 11, .. }));
    assert_eq!(aj.columns[11].ty, T::String);
    assert_eq!(types(&q.plan), [T::String, T::UInt(64)]);
    let (keys, _) = aggregates(&q.plan);
    assert_eq!(keys, [c(11)]);

    let q = plan(
        "SELECT upper(arrayJoin(splitByChar(',', user_id))) AS part FROM events WHERE part != ''",
    );
    assert_eq!(
        shape(&q.plan),
        "Project(Filter(ArrayJoin(Project(Scan events))))"
    );

    // ARRAY JOIN with an alias appends the element; without, unnests the column in place.
    let q = plan("SELECT user_id, t FROM events ARRAY JOIN tags AS t");
    assert_eq!(shape(&q.plan), "Project(ArrayJoin(Project(Scan events)))");
    assert_eq!(types(&q.plan), [T::String, T::String]);
    let q = plan("SELECT user_id, tags FROM events ARRAY JOIN tags");
    assert_eq!(shape(&q.plan), "Project(ArrayJoin(Scan events))");
    assert_eq!(types(&q.plan), [T::String, T::String]);
    let q = plan("SELECT tags FROM events LEFT ARRAY JOIN tags");
    let p = find(&q.plan, &|n| matches!(n, PlanNode::Project { .. })).unwrap();
    assert_eq!(shape(p), "Project(ArrayJoin(Project(Scan events)))");
    let inner = q.plan.inputs()[0].inputs()[0];
    assert_eq!(
        project_exprs(inner)[7],
        call(
            Func::If,
            vec![
                call(Func::Empty, vec![c(7)]),
                lit(Value::Array(vec![Value::str("")].into())),
                c(7)
            ]
        )
    );
    let e = err("SELECT a FROM events ARRAY JOIN user_id AS a");
    assert!(e.message.contains("ARRAY JOIN needs an array"), "{e}");
    let e = err("SELECT 1 FROM events WHERE arrayJoin(tags) = 'a'");
    assert!(
        e.message
            .starts_with("unsupported: arrayJoin outside the select list"),
        "{e}"
    );
}

#[test]
fn temporal_filters() {
    let b = bounds("SELECT 1 FROM events WHERE timestamp > now() - INTERVAL 1 DAY");
    assert_eq!(
        (b[0].expr.clone(), b[0].op, b[0].offset_ms),
        (c(0), CmpOp::Gt, -DAY)
    );
    let b = bounds("SELECT 1 FROM events WHERE now() - INTERVAL 2 HOUR < timestamp");
    assert_eq!((b[0].op, b[0].offset_ms), (CmpOp::Gt, -7_200_000));
    let b = bounds("SELECT 1 FROM events WHERE timestamp <= now() + 60");
    assert_eq!((b[0].op, b[0].offset_ms), (CmpOp::Le, 60_000));
    let b =
        bounds("SELECT 1 FROM events WHERE timestamp BETWEEN now() - INTERVAL 1 HOUR AND now()");
    assert_eq!(
        b.iter().map(|b| (b.op, b.offset_ms)).collect::<Vec<_>>(),
        [(CmpOp::Ge, -3_600_000), (CmpOp::Le, 0)]
    );
    // One side constant: a filter and a bound.
    let q = plan("SELECT 1 FROM events WHERE timestamp BETWEEN '2024-01-01 00:00:00' AND now()");
    assert_eq!(
        shape(&q.plan),
        "Project(TemporalFilter(Filter(Scan events)))"
    );
    // Through conversions of the clock.
    let b = bounds("SELECT 1 FROM events WHERE ms >= toUnixTimestamp64Milli(toDateTime64(now() - INTERVAL 1 DAY, 3))");
    assert_eq!(b[0].offset_ms, -DAY);
    assert_eq!(b[0].expr, call(Func::FromUnixTimestamp64Milli, vec![c(8)]));
    let b = bounds(
        "SELECT 1 FROM events WHERE toUnixTimestamp(timestamp) > toUnixTimestamp(now()) - 3600",
    );
    assert_eq!(b[0].offset_ms, -3_600_000);
    // Calendar and parameter offsets move to the row side.
    let b = bounds("SELECT 1 FROM events WHERE timestamp >= now() - INTERVAL 1 MONTH");
    assert_eq!(
        (b[0].expr.clone(), b[0].offset_ms),
        (
            call(
                Func::AddInterval(Unit::Month),
                vec![c(0), lit(Value::UInt(1))]
            ),
            0
        )
    );
    let b = bounds("SELECT 1 FROM events WHERE timestamp > now() - INTERVAL $days DAY");
    let days = Expr::Param {
        name: "days".into(),
        ty: T::Int(32),
    };
    assert_eq!(
        b[0].expr,
        call(Func::AddInterval(Unit::Day), vec![c(0), days])
    );
    // today(): whole days.
    let b = bounds("SELECT 1 FROM events WHERE date >= today() - 7");
    assert_eq!(
        (b[0].expr.clone(), b[0].op, b[0].offset_ms),
        (c(1), CmpOp::Gt, -8 * DAY)
    );
    let b = bounds("SELECT 1 FROM events WHERE date = yesterday()");
    assert_eq!(
        b.iter().map(|b| (b.op, b.offset_ms)).collect::<Vec<_>>(),
        [(CmpOp::Gt, -2 * DAY), (CmpOp::Le, -DAY)]
    );
    let b = bounds("SELECT 1 FROM events WHERE timestamp >= today()");
    assert_eq!(
        (b[0].expr.clone(), b[0].op, b[0].offset_ms),
        (call(Func::ToDate, vec![c(0)]), CmpOp::Gt, -DAY)
    );
    let b = bounds("SELECT 1 FROM events WHERE toDate(timestamp) > toDate(now()) - INTERVAL 3 DAY");
    assert_eq!((b[0].op, b[0].offset_ms), (CmpOp::Gt, -3 * DAY));
    // A bound's expression over a DateTime rounds up to whole days for `>`.
    let b = bounds("SELECT 1 FROM events WHERE timestamp > today()");
    let ceil = &b[0].expr;
    for (t, day) in [
        ("2024-01-01 00:00:00", "2024-01-01"),
        ("2024-01-01 00:00:01", "2024-01-02"),
    ] {
        let mut row = vec![Value::Null; 11];
        row[0] = dt(t);
        assert_eq!(
            ceil.eval(&row),
            Value::Date(time::parse_date(day).unwrap() as i32)
        );
    }
    // Aliases that read the clock.
    let b = bounds("WITH now() - INTERVAL 5 MINUTE AS since_t SELECT user_id FROM events WHERE timestamp > since_t");
    assert_eq!(b[0].offset_ms, -300_000);
}

#[test]
fn now_outside_temporal_filters_is_refused() {
    let e = err("SELECT toString(now()) FROM events");
    assert_eq!(
        e.message,
        "now() is only supported in WHERE comparisons (temporal filters)"
    );
    assert_eq!((e.line, e.column), (1, 17));
    let e = err("SELECT 1 FROM events WHERE timestamp > now() OR amount > 1");
    assert!(e.message.starts_with("unsupported temporal filter"), "{e}");
    let e = err("SELECT 1 FROM events WHERE timestamp = now()");
    assert!(e.message.contains("equality with now()"), "{e}");
    let e = err("SELECT 1 FROM events WHERE user_id > now()");
    assert!(e.message.contains("not String"), "{e}");
    let e = err("SELECT count() FROM events GROUP BY user_id HAVING max(timestamp) > now()");
    assert!(e.message.contains("temporal"), "{e}");
}

#[test]
fn expressions_and_functions() {
    let q = plan(
        "SELECT CASE WHEN amount > 10 THEN 'big' WHEN amount > 1 THEN 'mid' ELSE 'small' END AS size, \
         CASE action WHEN 'a' THEN 1 END AS k, \
         if(click_count > 0, amount, 0) AS v, multiIf(ms > 0, 'p', 'n') AS sign, \
         toStartOfInterval(timestamp, INTERVAL 15 minute) AS bucket, \
         toStartOfFifteenMinutes(timestamp) AS b2, \
         dateDiff('hour', timestamp, now_col) AS d \
         FROM (SELECT *, timestamp + INTERVAL 90 MINUTE AS now_col FROM events)",
    );
    let exprs = project_exprs(&q.plan);
    assert!(matches!(&exprs[0], Expr::Call { func: Func::MultiIf, args } if args.len() == 5));
    assert!(
        matches!(&exprs[1], Expr::Call { func: Func::MultiIf, args } if args[2] == lit(Value::Null))
    );
    assert_eq!(exprs[4], exprs[5]);
    assert_eq!(
        types(&q.plan),
        [
            T::String,
            T::Nullable(Box::new(T::UInt(8))),
            T::Float64,
            T::String,
            T::DateTime,
            T::DateTime,
            T::Int(64)
        ]
    );
    let mut row: Vec<Value> = vec![Value::Null; 12];
    row[0] = dt("2024-05-01 10:47:00");
    row[6] = Value::from(5.0);
    row[5] = Value::UInt(2);
    row[8] = Value::Int(-1);
    row[11] = dt("2024-05-01 12:17:00");
    let out: Vec<Value> = exprs.iter().map(|e| e.eval(&row)).collect();
    assert_eq!(
        out,
        [
            Value::str("mid"),
            Value::Null,
            Value::from(5.0),
            Value::str("n"),
            dt("2024-05-01 10:45:00"),
            dt("2024-05-01 10:45:00"),
            Value::Int(2),
        ]
    );

    let q = plan(
        "SELECT click_count::Int32, CAST(country AS Nullable(String)), toInt32OrZero(user_id), \
         toFloat64OrNull(user_id), floor(amount), substring(user_id, 2, 3), trim(user_id), \
         position('a' IN user_id), DATE '2024-01-02', tags[1], lowerUTF8(user_id), \
         JSONExtractString(user_id, 'k'), cityHash64(user_id, id) % 10, toYYYYMM(date), \
         length(tags), has(tags, 'x'), indexOf(tags, 'x'), toDayOfWeek(date) FROM events",
    );
    assert_eq!(
        types(&q.plan),
        [
            T::Int(32),
            T::Nullable(Box::new(T::String)),
            T::Int(32),
            T::Nullable(Box::new(T::Float64)),
            T::Float64,
            T::String,
            T::String,
            T::UInt(64),
            T::Date,
            T::String,
            T::String,
            T::String,
            T::UInt(64),
            T::UInt(32),
            T::UInt(64),
            T::UInt(8),
            T::UInt(64),
            T::UInt(8),
        ]
    );
    assert_eq!(names(&q.plan)[0], "CAST(click_count, 'Int32')");
    let exprs = project_exprs(&q.plan);
    assert_eq!(exprs[2], call(Func::CastOrZero(T::Int(32)), vec![c(2)]));
    assert_eq!(
        exprs[7],
        call(Func::Position, vec![c(2), lit(Value::str("a"))])
    );

    let e = err("SELECT nosuchfunction(user_id) FROM events");
    assert!(
        e.message
            .starts_with("unsupported: function nosuchfunction at 1:8"),
        "{e}"
    );
    let e = err("SELECT if(amount) FROM events");
    assert!(e.message.contains("if takes 3 argument(s), got 1"), "{e}");
    let e = err("SELECT user_id + INTERVAL 1 DAY FROM events");
    assert!(e.message.contains("INTERVAL added to a String"), "{e}");
}

#[test]
fn state_and_merge_combinators() {
    let q = plan("SELECT user_id, countState() AS c, avgState(amount) AS a, uniqState(session_id) AS u FROM events GROUP BY user_id");
    assert_eq!(
        types(&q.plan),
        [
            T::String,
            T::UInt(64),
            T::Tuple(vec![T::Float64, T::UInt(64)]),
            T::Array(Box::new(T::String))
        ]
    );
}

#[test]
fn errors_name_the_construct_and_place() {
    let e = err("SELECT user_id,\n  row_number() OVER (ORDER BY x ROWS 1 PRECEDING) FROM events");
    assert!(e.message.starts_with("unsupported: window frames"), "{e}");
    assert_eq!((e.line, e.column), (2, 3));
    let e = err("SELECT nope FROM events");
    assert_eq!(e.message, "unknown column 'nope'");
    assert_eq!((e.line, e.column), (1, 8));
    let e = err("SELECT user_id FROM events e WHERE x.user_id = 1");
    assert!(e.message.contains("unknown column 'x.user_id'"), "{e}");
    let e = err("SELECT (SELECT user_id, name FROM users) FROM events");
    assert!(
        e.message
            .starts_with("unsupported: a scalar subquery with several columns"),
        "{e}"
    );
    let e = err("SELECT count() FROM events GROUP BY user_id WITH TOTALS");
    assert!(
        e.message.starts_with("unsupported: GROUP BY modifiers"),
        "{e}"
    );
    let e = err("SELECT 1 FROM events SAMPLE 0.1");
    assert!(e.message.starts_with("unsupported: SAMPLE"), "{e}");
    let e = err("SELECT 1 FROM events FORMAT JSON");
    assert!(e.message.starts_with("unsupported: FORMAT"), "{e}");
    let e = err("SELECT 1 FROM events\nWHERE amount >");
    assert_eq!(e.line, 2, "{e}");
    let e = err("SELECT 1; SELECT 2");
    assert!(e.message.contains("exactly one"), "{e}");
    let e = err("INSERT INTO events VALUES (1)");
    assert!(e.message.contains("exactly one SELECT"), "{e}");
    // Locations survive the scalar-WITH rewrite.
    let e = err("WITH 1 AS one\nSELECT nope FROM events");
    assert_eq!((e.line, e.column), (2, 8));
}

#[test]
fn final_and_join_strictness_are_accepted() {
    let q = plan("SELECT e.user_id FROM events AS e FINAL ALL INNER JOIN users AS u ON e.user_id = u.user_id");
    assert_eq!(shape(&q.plan), "Project(Join(Scan events, Scan users))");
}

#[test]
fn cast_type_names() {
    let q = plan(
        "SELECT CAST(ms AS DateTime64(3)), ms::DateTime64(3, 'UTC'), CAST(user_id AS LowCardinality(String)), \
         CAST(tags AS Array(String)), CAST(ms AS DateTime), CAST(ms, 'UInt16'), \
         CAST(amount AS DOUBLE), CAST(ms AS BIGINT), toDateTime64(ms, 6, 'UTC') FROM events",
    );
    assert_eq!(
        types(&q.plan),
        [
            T::DateTime64(3),
            T::DateTime64(3),
            T::LowCardinality(Box::new(T::String)),
            T::Array(Box::new(T::String)),
            T::DateTime,
            T::UInt(16),
            T::Float64,
            T::Int(64),
            T::DateTime64(6),
        ]
    );
}

/// Tables and parameters of the repository's example projects, as the project loader
/// presents them (aggregate states as their stored types).
struct ProjectCatalog;

impl Catalog for ProjectCatalog {
    fn table(&self, name: &str) -> Option<TableRef> {
        let columns = match name {
            "clicks" => vec![
                col("user_id", "UInt32"),
                col("click_count", "UInt32"),
                col("country", "LowCardinality(String)"),
                col("timestamp", "DateTime"),
            ],
            "hits" => vec![
                col("ts", "DateTime"),
                col("page", "String"),
                col("session", "String"),
                col("ms", "Float64"),
            ],
            "pages_mv" => vec![
                col("day", "Date"),
                col("page", "String"),
                col("hits", "AggregateFunction(count)"),
                col("sessions", "AggregateFunction(uniq, String)"),
                col("avg_ms", "AggregateFunction(avg, Float64)"),
                col(
                    "slowest_session",
                    "AggregateFunction(argMax, String, Float64)",
                ),
            ],
            "orders" => vec![
                col("order_id", "UInt64"),
                col("customer", "String"),
                col("country", "LowCardinality(String)"),
                col("amount", "Float64"),
                col("items", "Array(String)"),
                col("created_at", "DateTime"),
                col("note", "Nullable(String)"),
            ],
            "by_country" => {
                let q = plan_query(
                    "SELECT country, sum(click_count) AS clicks, uniqExact(user_id) AS users \
                     FROM clicks GROUP BY country",
                    self,
                )
                .ok()?;
                return Some(TableRef::Plan(q.into_plan()));
            }
            _ => return None,
        };
        Some(TableRef::Datasource(
            columns
                .into_iter()
                .map(|c| Column {
                    ty: c.ty.stored(),
                    ..c
                })
                .collect(),
        ))
    }

    fn param_type(&self, name: &str) -> Option<T> {
        let ty = match name {
            "country" | "customer" => "String",
            "limit" => "Int32",
            "since_date" => "Date",
            "since" => "DateTime",
            _ => return None,
        };
        T::parse(ty).ok()
    }
}

#[test]
fn example_project_queries() {
    let cases: &[(&str, &[T])] = &[
        (
            "SELECT country, sum(click_count) AS clicks FROM clicks GROUP BY country",
            &[T::LowCardinality(Box::new(T::String)), T::UInt(64)],
        ),
        (
            "SELECT user_id, sum(click_count) AS clicks FROM clicks WHERE country = $country \
             GROUP BY user_id ORDER BY clicks DESC, user_id LIMIT $limit",
            &[T::UInt(32), T::UInt(64)],
        ),
        (
            "SELECT toStartOfMinute(timestamp) AS minute, country, sum(click_count) AS clicks, \
             count() AS events FROM clicks WHERE country = $country GROUP BY minute, country \
             ORDER BY minute DESC, country",
            &[
                T::DateTime,
                T::LowCardinality(Box::new(T::String)),
                T::UInt(64),
                T::UInt(64),
            ],
        ),
        (
            "SELECT country, clicks, users FROM by_country ORDER BY clicks DESC, country LIMIT $limit",
            &[T::LowCardinality(Box::new(T::String)), T::UInt(64), T::UInt(64)],
        ),
        (
            "SELECT toDate(ts) AS day, page, countState() AS hits, uniqState(session) AS sessions, \
             avgState(ms) AS avg_ms, argMaxState(session, ms) AS slowest_session \
             FROM hits GROUP BY day, page",
            &[
                T::Date,
                T::String,
                T::UInt(64),
                T::Array(Box::new(T::String)),
                T::Tuple(vec![T::Float64, T::UInt(64)]),
                T::Tuple(vec![T::String, T::Float64]),
            ],
        ),
        (
            "SELECT page, countMerge(hits) AS hits, uniqMerge(sessions) AS sessions, \
             avgMerge(avg_ms) AS avg_ms, argMaxMerge(slowest_session) AS slowest \
             FROM pages_mv WHERE day >= $since_date GROUP BY page ORDER BY hits DESC, page",
            &[T::String, T::UInt(64), T::UInt(64), T::Float64, T::String],
        ),
        (
            "SELECT page, count() AS hits, uniqExact(session) AS sessions, avg(ms) AS avg_ms, \
             argMax(session, ms) AS slowest FROM hits WHERE toDate(ts) >= $since_date \
             GROUP BY page ORDER BY hits DESC, page",
            &[T::String, T::UInt(64), T::UInt(64), T::Float64, T::String],
        ),
        (
            "SELECT country, count() AS orders, sum(amount) AS revenue, avg(amount) AS avg_amount, \
             max(amount) AS biggest FROM orders WHERE created_at >= $since GROUP BY country \
             ORDER BY revenue DESC, country",
            &[
                T::LowCardinality(Box::new(T::String)),
                T::UInt(64),
                T::Float64,
                T::Float64,
                T::Float64,
            ],
        ),
        (
            "SELECT order_id, amount, length(items) AS item_count FROM orders \
             WHERE customer = $customer ORDER BY order_id LIMIT $limit",
            &[T::UInt(64), T::Float64, T::UInt(64)],
        ),
    ];
    for (sql, expected) in cases {
        let q = plan_query(sql, &ProjectCatalog)
            .unwrap_or_else(|e| panic!("{sql}\n  {e} at {}:{}", e.line, e.column));
        let visible: Vec<T> = q.plan.columns[..q.visible]
            .iter()
            .map(|c| c.ty.clone())
            .collect();
        assert_eq!(visible, *expected, "{sql}");
    }
}

#[test]
fn odd_sql_never_panics() {
    for sql in [
        "",
        "SELECT",
        "SELECT * FROM",
        "WITH",
        "WITH x AS SELECT 1",
        "WITH 1 AS SELECT 1",
        "SELECT 1 FROM events LIMIT -1",
        "SELECT 1 FROM events LIMIT 1.5",
        "SELECT x IN () FROM events",
        "SELECT [] AS a, tuple() AS t",
        "SELECT arrayJoin([]) AS x",
        "SELECT arrayJoin([1, 2]) AS x, arrayJoin(['a']) AS y",
        "SELECT tupleElement((1, 2), 5)",
        "SELECT (1, 2).3",
        "SELECT [1][0], [1][-5]",
        "SELECT toStartOfInterval(timestamp, INTERVAL 0 MINUTE) FROM events",
        "SELECT toStartOfInterval(timestamp, INTERVAL -3 HOUR) FROM events",
        "SELECT round(amount, 1000) FROM events",
        "SELECT dateDiff('fortnight', timestamp, timestamp) FROM events",
        "SELECT 99999999999999999999999 + 1",
        "SELECT -9223372036854775808, 18446744073709551615",
        "SELECT 1 FROM events WHERE timestamp > now() - INTERVAL 9223372036854775807 DAY",
        "SELECT 1 FROM events WHERE timestamp > now() - 9223372036854775807",
        "SELECT 1 FROM events WHERE date > today() - INTERVAL 5 HOUR",
        "SELECT 1 FROM events WHERE timestamp > toStartOfHour(now())",
        "SELECT count(*) FROM events GROUP BY 0",
        "SELECT count(*) FROM events GROUP BY 99",
        "SELECT user_id FROM events ORDER BY 0",
        "SELECT quantile(2)(amount) FROM events",
        "SELECT quantile('a')(amount) FROM events",
        "SELECT argMax(user_id) FROM events",
        "SELECT sum(user_id) FROM events",
        "SELECT * FROM events AS a JOIN events AS b ON a.user_id = b.user_id JOIN users ON users.user_id = a.user_id",
        "SELECT * FROM events ARRAY JOIN tags AS t, tags AS u",
        "SELECT * FROM events WHERE (user_id, id) IN (SELECT user_id FROM users)",
        "SELECT JSONExtractString('{\"a\":[1,2', 'a', 1)",
        "SELECT substring('abc', -10, -10), substringUTF8('ab', 0, 1)",
        "SELECT CAST('x' AS Nosuch)",
        "SELECT 1::Nullable(Nosuch)",
        "SELECT DATE 'nope'",
        "SELECT toDateTime64(ms, 200) FROM events",
    ] {
        let _ = plan_query(sql, &TestCatalog).map(|q| {
            // Evaluate every projected expression on a row of NULLs and on defaults.
            if let PlanNode::Project { exprs, .. } = &q.plan.node {
                let nulls = vec![Value::Null; 32];
                let defaults: Vec<Value> = events().iter().map(|c| c.ty.default_value()).collect();
                for e in exprs {
                    e.eval(&nulls);
                    e.eval(&defaults);
                }
            }
        });
    }
}

#[test]
fn datasource_read_sql_of_the_project_loader() {
    // ReplacingMergeTree: the latest row per key, without deleted rows.
    let q = plan(
        "SELECT * FROM (SELECT * FROM `events` ORDER BY `ms` DESC LIMIT 1 BY id) WHERE `click_count` = 0",
    );
    assert_eq!(
        shape(&q.plan),
        "Project(Filter(TopK(Project(Scan events))))"
    );
    let top = find(&q.plan, &|n| matches!(n, PlanNode::TopK { .. })).unwrap();
    let PlanNode::TopK {
        order_by,
        limit,
        partition_by,
        ..
    } = &top.node
    else {
        unreachable!()
    };
    assert_eq!(
        (*limit, partition_by.as_slice()),
        (Some(1), [c(10)].as_slice())
    );
    assert_eq!((order_by[0].expr.clone(), order_by[0].desc), (c(8), true));
    assert_eq!(q.plan.columns, events());
    // ENGINE_TTL: rows live while their TTL is ahead of the clock.
    let b = bounds("SELECT * FROM `events` WHERE (timestamp + INTERVAL 3 SECOND) > now()");
    assert_eq!(
        (b[0].expr.clone(), b[0].op, b[0].offset_ms),
        (
            call(
                Func::AddInterval(Unit::Second),
                vec![c(0), lit(Value::UInt(3))]
            ),
            CmpOp::Gt,
            0
        )
    );
}

#[test]
fn lambdas_and_range() {
    // Constant arguments fold at planning time.
    let q = plan("SELECT arrayMap(x -> x * 2, range(1, 4)) AS a, arrayFilter(x -> x != 'b', ['a', 'b', 'c']) AS f");
    assert_eq!(
        project_exprs(&q.plan),
        [
            lit(Value::Array(
                vec![Value::UInt(2), Value::UInt(4), Value::UInt(6)].into()
            )),
            lit(Value::Array(vec![Value::str("a"), Value::str("c")].into())),
        ]
    );
    assert_eq!(
        types(&q.plan),
        [
            T::parse("Array(UInt64)").unwrap(),
            T::parse("Array(String)").unwrap()
        ]
    );
    // Over columns: evaluated per row, with nested lambdas and a lambda over two arrays.
    let q = plan(
        "SELECT arrayMap((t, n) -> concat(t, toString(n)), tags, arrayMap(t -> length(t), tags)) AS m,
                arrayExists(t -> arrayCount(u -> u = t, tags) > 1, tags) AS dup,
                arrayFirst(t -> startsWith(t, 'b'), tags) AS b
         FROM events",
    );
    let exprs = project_exprs(&q.plan).to_vec();
    let tags = Value::Array(vec![Value::str("ab"), Value::str("b"), Value::str("b")].into());
    let mut row = vec![Value::Null; events().len()];
    row[7] = tags;
    assert_eq!(
        exprs[0].eval(&row),
        Value::Array(vec![Value::str("ab2"), Value::str("b1"), Value::str("b1")].into())
    );
    assert_eq!(exprs[1].eval(&row), Value::UInt(1));
    assert_eq!(exprs[2].eval(&row), Value::str("b"));
    row[7] = Value::Array(vec![Value::str("a")].into());
    assert_eq!(exprs[1].eval(&row), Value::UInt(0));
    assert_eq!(exprs[2].eval(&row), Value::str(""));
    // A date series, as real pipes make one.
    let q = plan("SELECT arrayJoin(arrayMap(x -> toDate(x), range(toUInt32(toDate('2024-01-01')), toUInt32(toDate('2024-01-04')), 86400))) AS d");
    assert!(shape(&q.plan).contains("ArrayJoin") || !project_exprs(&q.plan).is_empty());
    let e = err("SELECT arrayMap((a, b) -> a, tags) FROM events");
    assert!(e.message.contains("one parameter per array"), "{e}");
}

#[test]
fn constant_scalar_subqueries_and_date_arithmetic() {
    // A node of dates computed from constants, read through scalar subqueries.
    let q = plan(
        "WITH toDate('2024-03-10') AS current_end,
              toDate(timestampAdd(current_end, INTERVAL -7 DAY)) AS current_start
         SELECT user_id FROM events
         WHERE date >= (SELECT current_start) AND date <= (SELECT current_end)",
    );
    let filter = find(&q.plan, &|n| matches!(n, PlanNode::Filter { .. })).expect("a filter");
    let PlanNode::Filter { predicate, .. } = &filter.node else {
        unreachable!()
    };
    let mut row = vec![Value::Null; events().len()];
    for (day, inside) in [
        ("2024-03-02", false),
        ("2024-03-03", true),
        ("2024-03-10", true),
        ("2024-03-11", false),
    ] {
        row[1] = Value::Date(time::parse_date(day).unwrap() as i32);
        assert_eq!(predicate.eval(&row).is_true(), inside, "{day}: {predicate}");
    }
    let q = plan("SELECT date_sub(DAY, 7, toDateTime('2024-03-10 00:00:00')) AS a, date_add(HOUR, 2, toDateTime('2024-03-10 00:00:00')) AS b, timestampSub(toDate('2024-03-10'), INTERVAL 1 MONTH) AS c");
    assert_eq!(
        project_exprs(&q.plan),
        [
            lit(dt("2024-03-03 00:00:00")),
            lit(dt("2024-03-10 02:00:00")),
            lit(Value::Date(time::parse_date("2024-02-10").unwrap() as i32))
        ]
    );
}

#[test]
fn with_fill_makes_the_rows_clickhouse_makes() {
    let fill = |sql: &str, rows: Vec<Row>| -> Vec<(Value, Value)> {
        let q = plan(sql);
        let f = q.fill.clone().expect("a fill");
        f.apply(rows, q.order_by[0].desc, &q.plan.columns, 1000)
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect()
    };
    let rows = |keys: &[u64]| -> Vec<Row> {
        keys.iter()
            .map(|k| vec![Value::UInt(*k), Value::UInt(1)])
            .collect()
    };
    let keys = |out: Vec<(Value, Value)>| -> Vec<(u64, u64)> {
        out.into_iter()
            .map(|(k, c)| (k.as_i64().unwrap() as u64, c.as_i64().unwrap() as u64))
            .collect()
    };
    // Each expectation is what ClickHouse answers for the same ORDER BY over the same rows.
    let base = "SELECT click_count AS n, id AS c FROM events ORDER BY n";
    assert_eq!(
        keys(fill(
            &format!("{base} WITH FILL FROM 1 TO 9 STEP 2"),
            rows(&[2, 5, 6])
        )),
        [(1, 0), (2, 1), (3, 0), (5, 1), (6, 1), (7, 0)]
    );
    assert_eq!(
        keys(fill(
            &format!("{base} WITH FILL STEP 2"),
            rows(&[2, 5, 6, 11])
        )),
        [(2, 1), (4, 0), (5, 1), (6, 1), (8, 0), (10, 0), (11, 1)]
    );
    assert_eq!(
        keys(fill(
            &format!("{base} WITH FILL FROM 4 TO 12 STEP 3"),
            rows(&[2, 5, 6])
        )),
        [(2, 1), (4, 0), (5, 1), (6, 1), (7, 0), (10, 0)]
    );
    let desc = "SELECT click_count AS n, id AS c FROM events ORDER BY n DESC WITH FILL FROM 8 TO 0 STEP -2";
    assert_eq!(
        keys(fill(desc, rows(&[6, 5, 2]))),
        [(8, 0), (6, 1), (5, 1), (4, 0), (2, 1)]
    );
    let days = "SELECT timestamp AS d, id AS c FROM events ORDER BY d DESC WITH FILL FROM toDateTime('2024-03-10 00:00:00') TO toDateTime('2024-03-03 00:00:00') STEP INTERVAL -1 DAY";
    let out = fill(
        days,
        vec![
            vec![dt("2024-03-08 00:00:00"), Value::UInt(3)],
            vec![dt("2024-03-05 00:00:00"), Value::UInt(3)],
        ],
    );
    let expected: Vec<(Value, Value)> = [
        ("2024-03-10", 0),
        ("2024-03-09", 0),
        ("2024-03-08", 3),
        ("2024-03-07", 0),
        ("2024-03-06", 0),
        ("2024-03-05", 3),
        ("2024-03-04", 0),
    ]
    .iter()
    .map(|(d, c)| (dt(&format!("{d} 00:00:00")), Value::UInt(*c)))
    .collect();
    assert_eq!(out, expected);
    let e = err("SELECT n FROM (SELECT click_count AS n FROM events ORDER BY n WITH FILL)");
    assert!(e.message.contains("WITH FILL"), "{e}");
}

#[test]
fn uniq_of_star_and_qualified_names_over_subqueries() {
    let q = plan("SELECT uniq(*) AS u FROM (SELECT user_id, session_id FROM events)");
    let (_, aggs) = aggregates(&q.plan);
    assert_eq!(aggs[0].args, [c(0), c(1)]);
    // A subquery that selected `e.user_id` still answers to that name outside.
    let q = plan("SELECT e.user_id AS u FROM (SELECT e.user_id FROM events e)");
    assert_eq!(names(&q.plan), ["u"]);
    let e = err("SELECT user_id FROM events e WHERE x.user_id = 1");
    assert!(e.message.contains("unknown column 'x.user_id'"), "{e}");
}

#[test]
fn a_with_subquery_reads_its_own_name_as_a_column() {
    // Regression: the alias was planned inside its own subquery, recursing without end.
    let q = plan("WITH (SELECT name FROM users WHERE id = 1) AS name SELECT user_id FROM events WHERE user_id = name");
    assert_eq!(names(&q.plan), ["user_id"]);
}

#[test]
fn window_functions_append_a_column_per_call() {
    let q = plan("SELECT user_id, sum(amount) OVER (PARTITION BY user_id ORDER BY timestamp) AS running, row_number() OVER (ORDER BY timestamp) AS rn FROM events");
    assert_eq!(names(&q.plan), ["user_id", "running", "rn"]);
    assert_eq!(types(&q.plan), [T::String, T::Float64, T::UInt(64)]);
    assert_eq!(shape(&q.plan), "Project(Window(Window(Scan events)))");
    // Over groups, the window reads the grouped rows (the grouping becomes a subquery).
    let q = plan("SELECT user_id, count() AS n, sum(n) OVER (ORDER BY user_id) AS running FROM events GROUP BY user_id");
    assert_eq!(names(&q.plan), ["user_id", "n", "running"]);
    assert_eq!(
        shape(&q.plan),
        "Project(Window(Project(Aggregate(Scan events))))"
    );
    let e = err("SELECT user_id FROM events GROUP BY user_id HAVING count() OVER () > 1");
    assert!(e.message.contains("window functions (OVER)"), "{e}");
    let e = err("SELECT sum(amount) OVER (ORDER BY timestamp ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM events");
    assert!(e.message.contains("window frames"), "{e}");
}

/// A plan's identity is the output columns that tell its rows apart: a GROUP BY's keys where
/// the SELECT keeps them as plain columns (in any order), a DISTINCT's columns, through
/// HAVING and an inner ORDER BY .. LIMIT; none when a key is computed or dropped, or the rows
/// are the table's own.
#[test]
fn an_identity_is_the_group_keys_the_result_keeps() {
    let identity = |sql: &str| plan(sql).plan.identity();
    assert_eq!(
        identity("SELECT user_id, sum(amount) AS total FROM events GROUP BY user_id"),
        Some(vec![0])
    );
    assert_eq!(
        identity("SELECT sum(amount) AS total, action, user_id FROM events GROUP BY user_id, action HAVING total > 1"),
        Some(vec![2, 1])
    );
    assert_eq!(
        identity(
            "SELECT user_id, count() AS n FROM events GROUP BY user_id ORDER BY n DESC LIMIT 5"
        ),
        Some(vec![0])
    );
    assert_eq!(
        identity("SELECT DISTINCT user_id, action FROM events"),
        Some(vec![0, 1])
    );
    assert_eq!(identity("SELECT count() AS n FROM events"), Some(vec![]));
    assert_eq!(
        identity("SELECT sum(amount) AS total FROM events GROUP BY user_id"),
        None
    );
    assert_eq!(
        identity("SELECT concat(user_id, 'x') AS u, sum(amount) FROM events GROUP BY user_id"),
        None
    );
    assert_eq!(identity("SELECT user_id, amount FROM events"), None);
}
