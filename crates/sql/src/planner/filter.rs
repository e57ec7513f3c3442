//! WHERE and PREWHERE: each AND-ed conjunct becomes a filter predicate, a join key (an
//! equality across the two sides of a comma or inner join), a semi/anti join (`x [NOT] IN
//! (subquery)`), or a temporal bound (a comparison with `now()`/`today()`).
//!
//! Temporal bounds are `expr op now() + offset_ms`. Constant fixed-length offsets
//! (`now() - INTERVAL 1 HOUR`, `now() - 3600`) become `offset_ms`; calendar or parameter
//! offsets (`INTERVAL 1 MONTH`, `INTERVAL $days DAY`) move to the row side
//! (`ts >= now() - INTERVAL 1 MONTH` is kept as `ts + INTERVAL 1 MONTH >= now()`).
//! `today()` comparisons are rewritten over whole days: `d >= today() - k` holds exactly
//! when `toDate(d) > now() + (k - 1) days`, and `d > today() - k` when
//! `ceilDay(d) > now() - k days` (for a Date, `toDate(d)` and `ceilDay(d)` are `d`).

use std::collections::BTreeSet;

use petrel_value::{Column, ColumnType, Value};
use sqlparser::ast::{self, BinaryOperator, UnaryOperator};

use super::expr::{function_args, function_name, interval_of, mentions_now, uses_now_alias};
use super::{and_all, at, conjuncts, filtered, node, project, Aliases, Mode, Planner, Scope};
use crate::expr::Expr;
use crate::functions::{common_type, is_time, Func, Unit};
use crate::plan::*;
use crate::SqlError;

const DAY_MS: i64 = 86_400_000;

/// How a temporal comparison reads the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClockScale {
    /// As a time: `now()`.
    Time,
    /// As whole days: `today()`, `toDate(now())`, `toStartOfDay(now())`.
    Day,
    /// As `toUnixTimestamp64Milli(now())`: milliseconds.
    UnixMillis,
    /// As `toUnixTimestamp(now())`: seconds.
    UnixSeconds,
}

/// The clock side of a temporal comparison: `scale(now()) + offset_ms + shifts`.
#[derive(Clone, Debug)]
struct Clock {
    scale: ClockScale,
    offset_ms: i64,
    /// Offsets that are not fixed milliseconds: (unit, amount, sign).
    shifts: Vec<(Unit, Expr, i64)>,
}

/// A comparison operator of SQL, with equality (which a temporal bound cannot express
/// directly).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

impl Cmp {
    fn of(op: &BinaryOperator) -> Option<Cmp> {
        Some(match op {
            BinaryOperator::Lt => Cmp::Lt,
            BinaryOperator::LtEq => Cmp::Le,
            BinaryOperator::Gt => Cmp::Gt,
            BinaryOperator::GtEq => Cmp::Ge,
            BinaryOperator::Eq => Cmp::Eq,
            _ => return None,
        })
    }

    /// The operator with its operands swapped (`a < b` is `b > a`).
    fn flipped(self) -> Cmp {
        match self {
            Cmp::Lt => Cmp::Gt,
            Cmp::Le => Cmp::Ge,
            Cmp::Gt => Cmp::Lt,
            Cmp::Ge => Cmp::Le,
            Cmp::Eq => Cmp::Eq,
        }
    }
}

/// The pieces of `x [NOT] IN (subquery)` (also under NOT and parentheses).
fn in_subquery_parts(e: &ast::Expr) -> Option<(&ast::Expr, &ast::Query, bool)> {
    match e {
        ast::Expr::In {
            expr,
            target: ast::InTarget::Subquery(subquery),
            negated,
            ..
        } => Some((expr, subquery, *negated)),
        ast::Expr::Nested(inner) => in_subquery_parts(inner),
        ast::Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => in_subquery_parts(expr).map(|(x, q, n)| (x, q, !n)),
        _ => None,
    }
}

/// Join keys of possibly different types, cast to their common type when their values
/// would not compare equal as they are (Int64 and UInt64 values, a Date and a DateTime).
pub(super) fn key_pair((l, lt): (Expr, ColumnType), (r, rt): (Expr, ColumnType)) -> (Expr, Expr) {
    use ColumnType as T;
    let kind = |t: &ColumnType| match t.base() {
        T::Int(_) => T::Int(64),
        T::UInt(_) => T::UInt(64),
        T::Float32 | T::Float64 => T::Float64,
        other => other.clone(),
    };
    if kind(&lt) == kind(&rt) {
        return (l, r);
    }
    let common = common_type(&[lt.base().clone(), rt.base().clone()]);
    (
        Expr::call(Func::Cast(common.clone()), vec![l]),
        Expr::call(Func::Cast(common), vec![r]),
    )
}

/// Adds `a = b` to the keys of a cross or inner join when `a` reads only one side and `b`
/// only the other (a cross join becomes inner), descending into the left input when both
/// read only it. False when the equality stays a filter.
fn push_key(plan: &mut Plan, a: &(Expr, ColumnType), b: &(Expr, ColumnType)) -> bool {
    let PlanNode::Join {
        left,
        kind,
        left_keys,
        right_keys,
        ..
    } = &mut plan.node
    else {
        return false;
    };
    let nl = left.columns.len();
    let cols = |e: &Expr| {
        let mut s = BTreeSet::new();
        e.columns(&mut s);
        s
    };
    let (ca, cb) = (cols(&a.0), cols(&b.0));
    if ca.is_empty() || cb.is_empty() {
        return false;
    }
    let left_only = |c: &BTreeSet<usize>| c.iter().all(|&i| i < nl);
    let right_only = |c: &BTreeSet<usize>| c.iter().all(|&i| i >= nl);
    if matches!(kind, JoinKind::Cross | JoinKind::Inner) {
        let pair = if left_only(&ca) && right_only(&cb) {
            Some((a, b))
        } else if left_only(&cb) && right_only(&ca) {
            Some((b, a))
        } else {
            None
        };
        if let Some((l, r)) = pair {
            let shifted = (r.0.map_columns(&|i| i - nl), r.1.clone());
            let (lk, rk) = key_pair(l.clone(), shifted);
            left_keys.push(lk);
            right_keys.push(rk);
            *kind = JoinKind::Inner;
            return true;
        }
    }
    left_only(&ca) && left_only(&cb) && push_key(left, a, b)
}

impl Planner<'_> {
    /// WHERE/PREWHERE: join keys, IN-subquery joins, a filter, then temporal bounds.
    pub(super) fn filter(
        &mut self,
        mut plan: Plan,
        scope: &Scope,
        cond: &ast::Expr,
        aliases: &Aliases,
    ) -> Result<Plan, SqlError> {
        let mut parts = Vec::new();
        conjuncts(cond, &mut parts);
        let mut predicates = Vec::new();
        let mut bounds = Vec::new();
        let mut semi_joins = Vec::new();
        for p in parts {
            if let Some(semi) = in_subquery_parts(p) {
                semi_joins.push(semi);
                continue;
            }
            if mentions_now(p) || uses_now_alias(p, aliases) {
                let (b, extra) = self.temporal(p, scope, aliases)?;
                bounds.extend(b);
                predicates.extend(extra);
                continue;
            }
            if let ast::Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } = p
            {
                let a = self.expr(left, scope, aliases, &mut Mode::Rows)?;
                let b = self.expr(right, scope, aliases, &mut Mode::Rows)?;
                if push_key(&mut plan, &a, &b) {
                    continue;
                }
            }
            predicates.push(self.expr(p, scope, aliases, &mut Mode::Rows)?.0);
        }
        for (x, subquery, negated) in semi_joins {
            plan = self.in_subquery(plan, scope, x, subquery, negated, aliases)?;
        }
        if let Some(predicate) = and_all(predicates) {
            plan = filtered(plan, predicate);
        }
        if !bounds.is_empty() {
            let columns = plan.columns.clone();
            plan = node(
                PlanNode::TemporalFilter {
                    input: Box::new(plan),
                    bounds,
                },
                columns,
            );
        }
        Ok(plan)
    }

    /// `x IN (SELECT y ..)`: an inner join with the subquery's distinct rows; `NOT IN`: a
    /// left join keeping the rows whose marker column stayed at its default 0. A tuple
    /// `(a, b) IN (SELECT x, y ..)` joins on every element.
    fn in_subquery(
        &mut self,
        plan: Plan,
        scope: &Scope,
        x: &ast::Expr,
        subquery: &ast::Query,
        negated: bool,
        aliases: &Aliases,
    ) -> Result<Plan, SqlError> {
        let sub = self.subquery(subquery)?;
        let items: Vec<&ast::Expr> = match x {
            ast::Expr::Tuple(items) if items.len() == sub.columns.len() => items.iter().collect(),
            other => vec![other],
        };
        if items.len() != sub.columns.len() {
            return Err(at(
                format!(
                    "IN (subquery) compares {} value(s) with a subquery of {} columns",
                    items.len(),
                    sub.columns.len()
                ),
                x,
            ));
        }
        let (mut left_keys, mut right_keys) = (Vec::new(), Vec::new());
        for (i, item) in items.into_iter().enumerate() {
            let l = self.expr(item, scope, aliases, &mut Mode::Rows)?;
            let (lk, rk) = key_pair(l, (Expr::Column(i), sub.columns[i].ty.clone()));
            left_keys.push(lk);
            right_keys.push(rk);
        }
        let (width, n) = (plan.columns.len(), sub.columns.len());
        let mut marked_columns = sub.columns.clone();
        marked_columns.push(Column {
            name: "__matched".into(),
            ty: ColumnType::UInt(8),
        });
        let distinct = node(
            PlanNode::Distinct {
                input: Box::new(sub.clone()),
            },
            sub.columns,
        );
        let mut marker: Vec<Expr> = (0..n).map(Expr::Column).collect();
        marker.push(Expr::Literal(Value::UInt(1)));
        let marked = project(distinct, marker, marked_columns.clone());
        let mut joined_columns = plan.columns.clone();
        joined_columns.extend(marked_columns);
        let out_columns = plan.columns.clone();
        let joined = node(
            PlanNode::Join {
                left: Box::new(plan),
                right: Box::new(marked),
                kind: if negated {
                    JoinKind::Left
                } else {
                    JoinKind::Inner
                },
                left_keys,
                right_keys,
                residual: None,
            },
            joined_columns,
        );
        let kept = if negated {
            filtered(
                joined,
                Expr::call(
                    Func::Eq,
                    vec![Expr::Column(width + n), Expr::Literal(Value::UInt(0))],
                ),
            )
        } else {
            joined
        };
        Ok(project(
            kept,
            (0..width).map(Expr::Column).collect(),
            out_columns,
        ))
    }

    /// A conjunct comparing with the clock: its bounds, and any plain predicates it also
    /// holds (`ts BETWEEN '2024-01-01' AND now()`).
    fn temporal(
        &mut self,
        p: &ast::Expr,
        scope: &Scope,
        aliases: &Aliases,
    ) -> Result<(Vec<TemporalBound>, Vec<Expr>), SqlError> {
        let refuse = || {
            at(
                "unsupported temporal filter: now() and today() are only supported in WHERE comparisons of a time with now() or today() [± INTERVAL], joined by AND",
                p,
            )
        };
        let clock_in = |e: &ast::Expr| mentions_now(e) || uses_now_alias(e, aliases);
        match p {
            ast::Expr::Nested(inner) => self.temporal(inner, scope, aliases),
            ast::Expr::BinaryOp { left, op, right } => {
                let cmp = Cmp::of(op).ok_or_else(refuse)?;
                let (row_side, clock_side, cmp) = match (clock_in(left), clock_in(right)) {
                    (false, true) => (left, right, cmp),
                    (true, false) => (right, left, cmp.flipped()),
                    _ => return Err(refuse()),
                };
                let clock = self.clock(clock_side, aliases).ok_or_else(refuse)?;
                let row = self.expr(row_side, scope, aliases, &mut Mode::Rows)?;
                Ok((self.bounds(row, cmp, &clock, row_side)?, Vec::new()))
            }
            ast::Expr::Between {
                expr,
                negated: false,
                low,
                high,
            } => {
                let row = self.expr(expr, scope, aliases, &mut Mode::Rows)?;
                let (mut bounds, mut predicates) = (Vec::new(), Vec::new());
                for (side, cmp, func) in [(low, Cmp::Ge, Func::GtEq), (high, Cmp::Le, Func::LtEq)] {
                    if clock_in(side) {
                        let clock = self.clock(side, aliases).ok_or_else(refuse)?;
                        bounds.extend(self.bounds(row.clone(), cmp, &clock, expr)?);
                    } else {
                        let (s, _) = self.expr(side, scope, aliases, &mut Mode::Rows)?;
                        predicates.push(Expr::call(func, vec![row.0.clone(), s]));
                    }
                }
                Ok((bounds, predicates))
            }
            _ => Err(refuse()),
        }
    }

    /// The bounds for `row cmp clock`.
    fn bounds(
        &mut self,
        (x, ty): (Expr, ColumnType),
        cmp: Cmp,
        clock: &Clock,
        row_node: &ast::Expr,
    ) -> Result<Vec<TemporalBound>, SqlError> {
        let ops: &[CmpOp] = match (cmp, clock.scale) {
            (Cmp::Lt, _) => &[CmpOp::Lt],
            (Cmp::Le, _) => &[CmpOp::Le],
            (Cmp::Gt, _) => &[CmpOp::Gt],
            (Cmp::Ge, _) => &[CmpOp::Ge],
            (Cmp::Eq, ClockScale::Day) => &[CmpOp::Ge, CmpOp::Le],
            (Cmp::Eq, _) => {
                return Err(at(
                    "unsupported temporal filter: equality with now() (compare with today(), or use a range)",
                    row_node,
                ))
            }
        };
        let mut x = match clock.scale {
            ClockScale::Time | ClockScale::Day if is_time(&ty) => x,
            ClockScale::UnixMillis if ty.is_numeric() => {
                Expr::call(Func::FromUnixTimestamp64Milli, vec![x])
            }
            ClockScale::UnixSeconds if ty.is_numeric() => {
                Expr::call(Func::Cast(ColumnType::DateTime), vec![x])
            }
            _ => {
                return Err(at(
                    format!(
                        "a temporal filter compares a Date or DateTime (or a Unix timestamp with toUnixTimestamp(now())), not {}",
                        ty.name()
                    ),
                    row_node,
                ))
            }
        };
        // `x op now() + shift` is `x - shift op now()`.
        for (unit, n, sign) in &clock.shifts {
            let f = if *sign > 0 {
                Func::SubtractInterval(*unit)
            } else {
                Func::AddInterval(*unit)
            };
            x = Expr::call(f, vec![x, n.clone()]);
        }
        let is_date = *ty.base() == ColumnType::Date && clock.shifts.is_empty();
        Ok(ops
            .iter()
            .map(|&op| {
                if clock.scale != ClockScale::Day {
                    return TemporalBound {
                        expr: x.clone(),
                        op,
                        offset_ms: clock.offset_ms,
                    };
                }
                let k = clock.offset_ms;
                let to_date = Expr::call(Func::ToDate, vec![x.clone()]);
                let floor = if is_date { x.clone() } else { to_date.clone() };
                let ceil = if is_date {
                    x.clone()
                } else {
                    Expr::call(
                        Func::If,
                        vec![
                            Expr::call(
                                Func::Eq,
                                vec![
                                    Expr::call(Func::ToStartOf(Unit::Day), vec![x.clone()]),
                                    x.clone(),
                                ],
                            ),
                            to_date.clone(),
                            Expr::call(
                                Func::AddInterval(Unit::Day),
                                vec![to_date, Expr::Literal(Value::UInt(1))],
                            ),
                        ],
                    )
                };
                let (expr, op, offset_ms) = match op {
                    CmpOp::Ge => (floor, CmpOp::Gt, k.saturating_sub(DAY_MS)),
                    CmpOp::Lt => (floor, CmpOp::Le, k.saturating_sub(DAY_MS)),
                    CmpOp::Gt => (ceil, CmpOp::Gt, k),
                    CmpOp::Le => (ceil, CmpOp::Le, k),
                };
                TemporalBound {
                    expr,
                    op,
                    offset_ms,
                }
            })
            .collect())
    }

    /// The clock an expression reads: `now()`, `today()`, `yesterday()`, through aliases,
    /// the conversions `toDateTime[64]`, `toDate`, `toStartOfDay`, `toUnixTimestamp[64Milli]`,
    /// and `± INTERVAL n unit` or `± n` (seconds, or days after `today()`).
    fn clock(&mut self, e: &ast::Expr, aliases: &Aliases) -> Option<Clock> {
        let now = |scale, offset_ms| Clock {
            scale,
            offset_ms,
            shifts: Vec::new(),
        };
        match e {
            ast::Expr::Identifier(id) => {
                let aliased = aliases.get(&id.value)?.clone();
                let mut inner = aliases.clone();
                inner.remove(&id.value);
                self.clock(&aliased, &inner)
            }
            ast::Expr::Nested(inner) => self.clock(inner, aliases),
            ast::Expr::Function(f) => {
                let name = function_name(f).to_ascii_lowercase();
                let args = function_args(f).ok()?;
                let inner = |me: &mut Self| me.clock(args.first()?, aliases);
                match name.as_str() {
                    "now" | "now64" => Some(now(ClockScale::Time, 0)),
                    "today" => Some(now(ClockScale::Day, 0)),
                    "yesterday" => Some(now(ClockScale::Day, -DAY_MS)),
                    "todatetime" | "todatetime64" => inner(self)
                        .filter(|c| matches!(c.scale, ClockScale::Time | ClockScale::Day)),
                    "todate" | "tostartofday" => {
                        let c = inner(self)?;
                        let whole_days = c.offset_ms % DAY_MS == 0 && c.shifts.is_empty();
                        match c.scale {
                            ClockScale::Day => Some(c),
                            ClockScale::Time if whole_days => Some(Clock {
                                scale: ClockScale::Day,
                                ..c
                            }),
                            _ => None,
                        }
                    }
                    "tounixtimestamp" | "tounixtimestamp64milli" => {
                        let c = inner(self).filter(|c| c.scale == ClockScale::Time)?;
                        Some(Clock {
                            scale: if name == "tounixtimestamp" {
                                ClockScale::UnixSeconds
                            } else {
                                ClockScale::UnixMillis
                            },
                            ..c
                        })
                    }
                    _ => None,
                }
            }
            ast::Expr::BinaryOp {
                left,
                op: op @ (BinaryOperator::Plus | BinaryOperator::Minus),
                right,
            } => {
                let (base, amount) = match self.clock(left, aliases) {
                    Some(c) => (c, right),
                    None if *op == BinaryOperator::Plus => (self.clock(right, aliases)?, left),
                    None => return None,
                };
                let sign = if *op == BinaryOperator::Plus { 1 } else { -1 };
                self.shifted(base, amount, sign)
            }
            _ => None,
        }
    }

    /// `clock ± amount`: a constant fixed-length amount joins the offset, anything else (a
    /// calendar unit, a parameter) is a shift.
    fn shifted(&mut self, mut c: Clock, amount: &ast::Expr, sign: i64) -> Option<Clock> {
        let (value, unit) = match interval_of(amount) {
            Some((value, unit)) => (value, unit.ok()?),
            None => (
                amount,
                match c.scale {
                    ClockScale::Day => Unit::Day,
                    _ => Unit::Second,
                },
            ),
        };
        let (n, _) = self
            .expr(value, &Scope::default(), &Aliases::new(), &mut Mode::Rows)
            .ok()?;
        if !n.is_constant() {
            return None;
        }
        let unit_ms = match (c.scale, interval_of(amount).is_none()) {
            // `toUnixTimestamp64Milli(now()) - 1000`: milliseconds.
            (ClockScale::UnixMillis, true) => Some(1),
            _ => unit.seconds().map(|s| s * 1000),
        };
        match (&n, unit_ms) {
            (Expr::Literal(v), Some(ms))
                if v.as_i64()
                    .and_then(|n| n.checked_mul(ms))
                    .is_some_and(|a| c.scale != ClockScale::Day || a % DAY_MS == 0) =>
            {
                let amount = v.as_i64()?.checked_mul(ms)?.checked_mul(sign)?;
                c.offset_ms = c.offset_ms.checked_add(amount)?;
            }
            (_, Some(1)) => return None,
            _ => c.shifts.push((unit, n, sign)),
        }
        Some(c)
    }
}
