//! ClickHouse-dialect SQL to a typed relational plan, and the function catalog.
//!
//! [`plan_query`] turns SQL text (with `$param` placeholders from templates) into a [`Query`]:
//! a [`Plan`] tree of relational operators with typed columns, plus the top-level ORDER BY,
//! LIMIT and OFFSET. Expressions are [`Expr`] trees over [`functions::Func`]; evaluating them
//! never looks at SQL text again.

pub mod expr;
pub mod functions;
mod naming;
pub mod plan;
mod planner;
mod preprocess;
mod tables;

pub use expr::{EvalError, Expr};
pub use plan::*;
pub use planner::plan_query;
pub use tables::tables_read;

/// SQL that cannot be planned: the message names the construct, with its 1-based line and
/// column in the SQL text (0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SqlError {
    /// What is wrong.
    pub message: String,
    /// The line in the SQL text.
    pub line: u64,
    /// The column in the SQL text.
    pub column: u64,
}

impl SqlError {
    /// An error without a location.
    pub fn new(message: impl Into<String>) -> SqlError {
        SqlError {
            message: message.into(),
            line: 0,
            column: 0,
        }
    }
}
