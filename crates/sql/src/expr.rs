//! Scalar expressions over a row: what SQL expressions become after name resolution and
//! type checking. Evaluating one is a match over this tree; no SQL text is looked at again.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use petrel_value::{ColumnType, Value};

use crate::functions::Func;
use crate::SqlError;

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
    /// A scalar function applied to arguments.
    Call {
        /// The function.
        func: Func,
        /// Its arguments.
        args: Vec<Expr>,
    },
}

impl Expr {
    /// Evaluates the expression on a row. Unbound parameters evaluate to NULL.
    pub fn eval(&self, row: &[Value]) -> Value {
        match self {
            Expr::Column(i) => row.get(*i).cloned().unwrap_or(Value::Null),
            Expr::Literal(v) => v.clone(),
            Expr::Param { .. } => Value::Null,
            Expr::Call { func, args } => match func {
                Func::And => Value::UInt(args.iter().all(|a| a.eval(row).is_true()) as u64),
                Func::Or => Value::UInt(args.iter().any(|a| a.eval(row).is_true()) as u64),
                Func::If if args.len() == 3 => {
                    if args[0].eval(row).is_true() {
                        args[1].eval(row)
                    } else {
                        args[2].eval(row)
                    }
                }
                Func::MultiIf => {
                    let mut i = 0;
                    while i + 1 < args.len() {
                        if args[i].eval(row).is_true() {
                            return args[i + 1].eval(row);
                        }
                        i += 2;
                    }
                    args.last().map(|a| a.eval(row)).unwrap_or(Value::Null)
                }
                _ => match args.len() {
                    0 => func.apply(&[]),
                    1 => func.apply(&[args[0].eval(row)]),
                    2 => func.apply(&[args[0].eval(row), args[1].eval(row)]),
                    _ => {
                        let values: Vec<Value> = args.iter().map(|a| a.eval(row)).collect();
                        func.apply(&values)
                    }
                },
            },
        }
    }

    /// Replaces parameters by their values (coerced to the declared type); a parameter with
    /// no value is an error naming it.
    pub fn bind(&self, values: &BTreeMap<String, Value>) -> Result<Expr, SqlError> {
        Ok(match self {
            Expr::Param { name, ty } => {
                let v = values
                    .get(name)
                    .ok_or_else(|| SqlError::new(format!("parameter '{name}' has no value")))?;
                let v = match (ty, v) {
                    (ColumnType::Array(_), _) | (_, Value::Array(_)) => v.clone(),
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
            },
            other => other.clone(),
        })
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

    /// True when the expression reads no column (it may still read parameters).
    pub fn is_constant(&self) -> bool {
        let mut cols = BTreeSet::new();
        self.columns(&mut cols);
        cols.is_empty()
    }

    /// A function call.
    pub fn call(func: Func, args: Vec<Expr>) -> Expr {
        Expr::Call { func, args }
    }
}

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
            Expr::Call { func, args } => {
                write!(f, "{func:?}(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
        }
    }
}
