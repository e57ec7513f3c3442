//! Scalar expressions over a row: what SQL expressions become after name resolution and
//! type checking. Evaluating one is a match over this tree; no SQL text is looked at again.
//!
//! [`Expr::eval`] runs per row on the engine's hot path: arguments that are columns or
//! literals are read in place (not cloned), functions of up to three arguments are applied
//! without allocating, and `and`/`or`/`if`/`multiIf`/`IN` short-circuit.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use petrel_value::{ColumnType, Value};

use crate::functions::{in_list, logic, Func, NULL};
use crate::SqlError;

/// An error raised while evaluating an expression on a row (ClickHouse's query exceptions,
/// such as `throwIf`): evaluation unwinds with it as the panic payload, and the engine fails
/// the view that evaluated it with this message.
#[derive(Debug, Clone)]
pub struct EvalError(pub String);

/// A typed scalar expression over the columns of one input row.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Expr {
    /// The input row's column at this index.
    Column(usize),
    /// A constant.
    Literal(Value),
    /// A template parameter (`$name` in rendered SQL) not yet bound to a value.
    Param {
        /// The parameter's name.
        name: String,
        /// Its declared type.
        ty: ColumnType,
    },
    /// A lambda's parameter (`x` in `arrayMap(x -> x + 1, a)`): `level` counts the lambdas
    /// around it from the outermost, `index` is its position in that lambda's parameters. The
    /// higher-order function that owns the lambda substitutes each element for it.
    LambdaArg {
        /// The owning lambda's nesting level.
        level: usize,
        /// The parameter's position.
        index: usize,
    },
    /// A scalar function applied to arguments.
    Call {
        /// The function.
        func: Func,
        /// Its arguments.
        args: Vec<Expr>,
    },
}

impl Expr {
    /// Evaluates the expression on a row. Unbound parameters evaluate to NULL; so do columns
    /// past the end of the row.
    pub fn eval(&self, row: &[Value]) -> Value {
        match self {
            // Not `unwrap_or(Value::Null)`: the unused NULL was dropped through a call.
            Expr::Column(i) => match row.get(*i) {
                Some(v) => v.clone(),
                None => Value::Null,
            },
            Expr::Literal(v) => v.clone(),
            Expr::Param { .. } | Expr::LambdaArg { .. } => Value::Null,
            Expr::Call { func, args } => eval_call(func, args, row),
        }
    }

    /// Evaluates without cloning columns and literals.
    fn eval_ref<'a>(&'a self, row: &'a [Value]) -> Cow<'a, Value> {
        match self {
            Expr::Column(i) => Cow::Borrowed(row.get(*i).unwrap_or(&NULL)),
            Expr::Literal(v) => Cow::Borrowed(v),
            Expr::Param { .. } | Expr::LambdaArg { .. } => Cow::Borrowed(&NULL),
            Expr::Call { func, args } => Cow::Owned(eval_call(func, args, row)),
        }
    }

    /// Replaces parameters by their values (coerced to the declared type when they fit it),
    /// then folds calls whose arguments all became constants. A parameter with no value is
    /// an error naming it.
    pub fn bind(&self, values: &BTreeMap<String, Value>) -> Result<Expr, SqlError> {
        Ok(match self {
            Expr::Param { name, ty } => {
                let v = values
                    .get(name)
                    .ok_or_else(|| SqlError::new(format!("parameter '{name}' has no value")))?;
                let v = match v {
                    Value::Array(_) if !matches!(ty.base(), ColumnType::Array(_)) => v.clone(),
                    _ => ty.coerce(v).unwrap_or_else(|| v.clone()),
                };
                Expr::Literal(v)
            }
            Expr::Call { func, args } => Expr::Call {
                func: func.clone(),
                args: args
                    .iter()
                    .map(|a| a.bind(values))
                    .collect::<Result<_, _>>()?,
            }
            .fold(),
            other => other.clone(),
        })
    }

    /// The expression with a call whose arguments are all literals replaced by its value.
    pub(crate) fn fold(self) -> Expr {
        match &self {
            Expr::Call {
                func: Func::HigherOrder { level, .. },
                args,
            } if args[1..].iter().all(|a| matches!(a, Expr::Literal(_)))
                && args.first().is_some_and(|body| body.is_closed(*level)) =>
            {
                Expr::Literal(self.eval(&[]))
            }
            // throwIf stays a call: it raises when a row evaluates it, not when it is planned.
            Expr::Call { func, args }
                if *func != Func::ThrowIf && args.iter().all(|a| matches!(a, Expr::Literal(_))) =>
            {
                Expr::Literal(self.eval(&[]))
            }
            _ => self,
        }
    }

    /// Adds the names of the parameters the expression reads.
    pub fn params(&self, out: &mut BTreeSet<String>) {
        match self {
            Expr::Param { name, .. } => {
                out.insert(name.clone());
            }
            Expr::Call { args, .. } => args.iter().for_each(|a| a.params(out)),
            _ => {}
        }
    }

    /// Adds the input columns the expression reads.
    pub fn columns(&self, out: &mut BTreeSet<usize>) {
        match self {
            Expr::Column(i) => {
                out.insert(*i);
            }
            Expr::Call { args, .. } => args.iter().for_each(|a| a.columns(out)),
            _ => {}
        }
    }

    /// Adds to `reads[c]` each time the expression reads column `c` (columns past `reads` are
    /// not counted): [`Expr::columns`], with how often.
    pub fn count_column_reads(&self, reads: &mut [usize]) {
        match self {
            Expr::Column(c) => {
                if let Some(n) = reads.get_mut(*c) {
                    *n += 1;
                }
            }
            Expr::Call { args, .. } => args.iter().for_each(|a| a.count_column_reads(reads)),
            _ => {}
        }
    }

    /// The expression with every column index mapped through `f`.
    pub fn map_columns(&self, f: &impl Fn(usize) -> usize) -> Expr {
        match self {
            Expr::Column(i) => Expr::Column(f(*i)),
            Expr::Call { func, args } => Expr::Call {
                func: func.clone(),
                args: args.iter().map(|a| a.map_columns(f)).collect(),
            },
            other => other.clone(),
        }
    }

    /// The expression over a row that `columns` are computed from: each column it reads is
    /// replaced by that column's expression (a column past them reads NULL, as [`Expr::eval`]
    /// does). `None` where a lambda is involved, on either side: a lambda's parameters are
    /// numbered by how deep they sit, which a substitution would change.
    pub fn substitute_columns(&self, columns: &[Expr]) -> Option<Expr> {
        match self {
            Expr::Column(i) => {
                let column = columns.get(*i).cloned();
                let column = column.unwrap_or(Expr::Literal(Value::Null));
                (!column.has_lambda_arg()).then_some(column)
            }
            Expr::Call { func, args } => Some(Expr::Call {
                func: func.clone(),
                args: args
                    .iter()
                    .map(|a| a.substitute_columns(columns))
                    .collect::<Option<Vec<Expr>>>()?,
            }),
            Expr::LambdaArg { .. } => None,
            other => Some(other.clone()),
        }
    }

    /// True when a lambda's parameter appears in the expression.
    fn has_lambda_arg(&self) -> bool {
        match self {
            Expr::LambdaArg { .. } => true,
            Expr::Call { args, .. } => args.iter().any(Expr::has_lambda_arg),
            _ => false,
        }
    }

    /// True when the expression reads no column (it may still read parameters).
    pub fn is_constant(&self) -> bool {
        match self {
            Expr::Column(_) => false,
            Expr::Literal(_) | Expr::Param { .. } => true,
            Expr::LambdaArg { .. } => false,
            Expr::Call { args, .. } => args.iter().all(Expr::is_constant),
        }
    }

    /// True when the expression reads no column, no parameter and no lambda parameter of a
    /// lambda outside `level`: a lambda body at `level` that folds once its arrays do.
    fn is_closed(&self, level: usize) -> bool {
        match self {
            Expr::Column(_) | Expr::Param { .. } => false,
            Expr::Literal(_) => true,
            Expr::LambdaArg { level: l, .. } => *l >= level,
            Expr::Call { args, .. } => args.iter().all(|a| a.is_closed(level)),
        }
    }

    /// The expression with the parameters of the lambda at `level` replaced by `values`.
    pub(crate) fn substitute_lambda(&self, level: usize, values: &[Value]) -> Expr {
        match self {
            Expr::LambdaArg { level: l, index } if *l == level => {
                Expr::Literal(values.get(*index).cloned().unwrap_or(Value::Null))
            }
            Expr::Call { func, args } => Expr::Call {
                func: func.clone(),
                args: args
                    .iter()
                    .map(|a| a.substitute_lambda(level, values))
                    .collect(),
            },
            other => other.clone(),
        }
    }

    /// A function call.
    pub fn call(func: Func, args: Vec<Expr>) -> Expr {
        Expr::Call { func, args }
    }
}

fn eval_call(func: &Func, args: &[Expr], row: &[Value]) -> Value {
    match func {
        Func::And | Func::Or => logic(args.iter().map(|a| a.eval_ref(row)), *func == Func::Or),
        Func::If if args.len() == 3 => {
            if args[0].eval_ref(row).is_true() {
                args[1].eval(row)
            } else {
                args[2].eval(row)
            }
        }
        Func::MultiIf => {
            let mut pairs = args.chunks_exact(2);
            for pair in pairs.by_ref() {
                if pair[0].eval_ref(row).is_true() {
                    return pair[1].eval(row);
                }
            }
            match pairs.remainder() {
                [otherwise] => otherwise.eval(row),
                _ => Value::Null,
            }
        }
        Func::HigherOrder { kind, level } if !args.is_empty() => {
            crate::functions::higher_order(*kind, *level, &args[0], &args[1..], row)
        }
        Func::In | Func::NotIn if !args.is_empty() => in_list(
            *func == Func::NotIn,
            &args[0].eval_ref(row),
            args[1..].iter().map(|a| a.eval_ref(row)),
        ),
        _ => match args {
            [] => func.apply(&[]),
            [a] => func.apply(&[&*a.eval_ref(row)]),
            [a, b] => func.apply(&[&*a.eval_ref(row), &*b.eval_ref(row)]),
            [a, b, c] => func.apply(&[&*a.eval_ref(row), &*b.eval_ref(row), &*c.eval_ref(row)]),
            _ => {
                let values: Vec<Cow<'_, Value>> = args.iter().map(|a| a.eval_ref(row)).collect();
                let refs: Vec<&Value> = values.iter().map(|v| v.as_ref()).collect();
                func.apply(&refs)
            }
        },
    }
}

/// Writes `items` separated by `", "`.
fn list(f: &mut fmt::Formatter<'_>, items: &[Expr]) -> fmt::Result {
    for (i, a) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{a}")?;
    }
    Ok(())
}

/// SQL-ish text for error messages and debugging; columns show as `#index`.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Column(i) => write!(f, "#{i}"),
            Expr::Literal(v) => {
                let mut s = String::new();
                v.write_sql_literal(&mut s);
                f.write_str(&s)
            }
            Expr::Param { name, .. } => write!(f, "${name}"),
            Expr::LambdaArg { level, index } => write!(f, "$lambda{level}_{index}"),
            Expr::Call { func, args } => {
                let infix = match func {
                    Func::Plus => Some("+"),
                    Func::Minus => Some("-"),
                    Func::Multiply => Some("*"),
                    Func::Divide => Some("/"),
                    Func::Modulo => Some("%"),
                    Func::Eq => Some("="),
                    Func::NotEq => Some("!="),
                    Func::Lt => Some("<"),
                    Func::LtEq => Some("<="),
                    Func::Gt => Some(">"),
                    Func::GtEq => Some(">="),
                    Func::And => Some("AND"),
                    Func::Or => Some("OR"),
                    Func::Like => Some("LIKE"),
                    Func::NotLike => Some("NOT LIKE"),
                    Func::ILike => Some("ILIKE"),
                    _ => None,
                };
                match (func, args.as_slice()) {
                    (_, [first, rest @ ..]) if infix.is_some() && !rest.is_empty() => {
                        write!(f, "({first}")?;
                        for a in rest {
                            write!(f, " {} {a}", infix.unwrap_or_default())?;
                        }
                        f.write_str(")")
                    }
                    (Func::Not, [a]) => write!(f, "NOT {a}"),
                    (Func::Negate, [a]) => write!(f, "-{a}"),
                    (Func::IsNull, [a]) => write!(f, "{a} IS NULL"),
                    (Func::IsNotNull, [a]) => write!(f, "{a} IS NOT NULL"),
                    (Func::In | Func::NotIn, [x, items @ ..]) => {
                        let not = if *func == Func::NotIn { "NOT " } else { "" };
                        write!(f, "{x} {not}IN (")?;
                        list(f, items)?;
                        f.write_str(")")
                    }
                    (Func::AddInterval(u) | Func::SubtractInterval(u), [t, n]) => {
                        let op = if matches!(func, Func::AddInterval(_)) {
                            '+'
                        } else {
                            '-'
                        };
                        write!(f, "({t} {op} INTERVAL {n} {})", u.name().to_uppercase())
                    }
                    (Func::ToStartOf(u), [t, n]) => write!(
                        f,
                        "toStartOfInterval({t}, INTERVAL {n} {})",
                        u.name().to_uppercase()
                    ),
                    (Func::Cast(ty), [x]) => write!(f, "CAST({x} AS {})", ty.name()),
                    (Func::CastOrZero(ty), [x]) => {
                        write!(f, "accurateCastOrDefault({x}, '{}')", ty.name())
                    }
                    (Func::ToDateTime64(p), [x]) => write!(f, "toDateTime64({x}, {p})"),
                    (Func::TupleElement(i), [x]) => write!(f, "tupleElement({x}, {i})"),
                    (Func::DateDiff(u), [a, b]) => write!(f, "dateDiff('{}', {a}, {b})", u.name()),
                    (Func::ArrayElement, [a, i]) => write!(f, "{a}[{i}]"),
                    (Func::Array, items) => {
                        f.write_str("[")?;
                        list(f, items)?;
                        f.write_str("]")
                    }
                    _ => {
                        write!(f, "{}(", func.name())?;
                        list(f, args)?;
                        f.write_str(")")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::Unit;
    use petrel_value::F64;

    fn col(i: usize) -> Expr {
        Expr::Column(i)
    }

    fn lit(v: impl Into<Value>) -> Expr {
        Expr::Literal(v.into())
    }

    /// An expression over a projection's columns, substituted, evaluates on the projected
    /// row's source as it does on the projected row; a column past the projection reads NULL;
    /// a lambda's parameter on either side refuses the substitution.
    #[test]
    fn substituted_columns_evaluate_as_the_projection_they_read() {
        let source = vec![Value::Int(5), Value::str("abc")];
        let projection = vec![col(1), Expr::call(Func::Plus, vec![col(0), lit(2i64)])];
        let projected: Vec<Value> = projection.iter().map(|e| e.eval(&source)).collect();
        let over_projection = Expr::call(Func::Multiply, vec![col(1), lit(10i64)]);
        let over_source = over_projection.substitute_columns(&projection).unwrap();
        assert_eq!(over_source.eval(&source), over_projection.eval(&projected));
        assert_eq!(over_source.eval(&source), Value::Int(70));
        assert_eq!(col(0).substitute_columns(&projection), Some(col(1)));
        assert_eq!(
            col(5).substitute_columns(&projection),
            Some(lit(Value::Null))
        );
        let arg = Expr::LambdaArg { level: 0, index: 0 };
        assert_eq!(arg.substitute_columns(&projection), None);
        assert_eq!(col(0).substitute_columns(&[arg]), None);
    }

    #[test]
    fn eval_reads_columns_and_short_circuits() {
        let row = vec![Value::Int(5), Value::str("abc"), Value::Null];
        let gt = Expr::call(Func::Gt, vec![col(0), lit(3i64)]);
        assert_eq!(gt.eval(&row), Value::UInt(1));
        let and = Expr::call(
            Func::And,
            vec![gt.clone(), Expr::call(Func::IsNull, vec![col(2)])],
        );
        assert_eq!(and.eval(&row), Value::UInt(1));
        let or = Expr::call(Func::Or, vec![col(2), lit(0u64)]);
        assert_eq!(or.eval(&row), Value::Null);
        let iff = Expr::call(Func::If, vec![gt, lit("big"), lit("small")]);
        assert_eq!(iff.eval(&row), Value::str("big"));
        let multi = Expr::call(
            Func::MultiIf,
            vec![
                Expr::call(Func::Eq, vec![col(1), lit("x")]),
                lit(1u64),
                Expr::call(Func::Eq, vec![col(1), lit("abc")]),
                lit(2u64),
                lit(3u64),
            ],
        );
        assert_eq!(multi.eval(&row), Value::UInt(2));
        let inl = Expr::call(
            Func::In,
            vec![col(1), lit("a"), lit("b"), lit("c"), lit("abc"), lit("d")],
        );
        assert_eq!(inl.eval(&row), Value::UInt(1));
        let concat = Expr::call(
            Func::Concat,
            vec![col(1), lit("-"), col(0), lit("-"), lit(1.5f64)],
        );
        assert_eq!(concat.eval(&row), Value::str("abc-5-1.5"));
        assert_eq!(col(9).eval(&row), Value::Null);
        assert_eq!(
            Expr::Param {
                name: "p".into(),
                ty: ColumnType::String
            }
            .eval(&row),
            Value::Null
        );
    }

    #[test]
    fn bind_coerces_and_folds() {
        let e = Expr::call(
            Func::AddInterval(Unit::Day),
            vec![
                Expr::Param {
                    name: "start".into(),
                    ty: ColumnType::Date,
                },
                lit(1u64),
            ],
        );
        let mut params = BTreeSet::new();
        e.params(&mut params);
        assert_eq!(
            params.into_iter().collect::<Vec<_>>(),
            vec!["start".to_string()]
        );
        assert!(e.is_constant());
        let values = BTreeMap::from([("start".to_string(), Value::str("2024-01-31"))]);
        assert_eq!(
            e.bind(&values).unwrap(),
            Expr::Literal(Value::Date(
                petrel_value::time::parse_date("2024-02-01").unwrap() as i32
            ))
        );
        let err = e.bind(&BTreeMap::new()).unwrap_err();
        assert!(err.message.contains("'start'"), "{err}");
    }

    #[test]
    fn columns_and_mapping() {
        let e = Expr::call(
            Func::Plus,
            vec![col(1), Expr::call(Func::Abs, vec![col(3)])],
        );
        let mut cols = BTreeSet::new();
        e.columns(&mut cols);
        assert_eq!(cols.into_iter().collect::<Vec<_>>(), vec![1, 3]);
        assert!(!e.is_constant());
        let shifted = e.map_columns(&|i| i + 10);
        assert_eq!(
            shifted,
            Expr::call(
                Func::Plus,
                vec![col(11), Expr::call(Func::Abs, vec![col(13)])]
            )
        );
    }

    #[test]
    fn display_is_sql_ish() {
        let e = Expr::call(
            Func::And,
            vec![
                Expr::call(Func::Eq, vec![col(0), lit("a'b")]),
                Expr::call(Func::In, vec![col(1), lit(1u64), lit(2u64)]),
                Expr::call(Func::Not, vec![Expr::call(Func::IsNull, vec![col(2)])]),
            ],
        );
        assert_eq!(
            e.to_string(),
            "((#0 = 'a\\'b') AND #1 IN (1, 2) AND NOT #2 IS NULL)"
        );
        let e = Expr::call(
            Func::ToStartOf(Unit::Minute),
            vec![
                Expr::call(Func::Cast(ColumnType::DateTime), vec![col(0)]),
                lit(15u64),
            ],
        );
        assert_eq!(
            e.to_string(),
            "toStartOfInterval(CAST(#0 AS DateTime), INTERVAL 15 MINUTE)"
        );
        assert_eq!(
            Expr::call(Func::Round, vec![col(0), lit(F64(2.0).0)]).to_string(),
            "round(#0, 2)"
        );
    }
}
