//! [`TemplateError`]: why a template did not parse or render, worded as Tinybird words it.

/// Why a template did not parse or a request could not render it. Every error is the request's
/// or the pipe author's doing, so [`TemplateError::status`] is 400 except where `error()` or
/// `custom_error()` chose another status.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TemplateError {
    /// The template is malformed: an unclosed block, a forbidden tag, a Python syntax error.
    #[error("Syntax error: {message} at line {line}")]
    Syntax {
        /// What is wrong, e.g. `Missing {% end %} block for if`.
        message: String,
        /// The line of the SQL text (the `%` line is line 1).
        line: usize,
    },
    /// A call of a function the template language does not have.
    #[error("Template Syntax Error: '{name}' is not a valid function, line {line}")]
    UnknownFunction {
        /// The function's name.
        name: String,
        /// The line of the SQL text.
        line: usize,
    },
    /// Typed parameters without a default that the request did not supply.
    #[error(
        "Template Syntax Error: Required parameter is not defined. Check the parameters {}. \
         Please provide a value or set a default value in the pipe code.",
        join_names(names)
    )]
    RequiredParams {
        /// The missing parameters, in the order the render met them.
        names: Vec<String>,
    },
    /// A parameter value that does not fit its type.
    #[error("Template Syntax Error: {message}")]
    InvalidValue {
        /// The parameter (or, for a value computed in the template, the expression).
        name: String,
        /// Tinybird's wording, e.g. `Error validating 'abc' to type Int32`.
        message: String,
    },
    /// The same parameter bound into SQL with two different types in one render.
    #[error(
        "Template Syntax Error: parameter '{name}' is used as {first} and as {second} in the same \
         query; use one type per parameter"
    )]
    TypeConflict {
        /// The parameter.
        name: String,
        /// The type it was bound with first.
        first: String,
        /// The other type.
        second: String,
    },
    /// Template logic failed: a type error, a bad argument, a value that can't become SQL.
    #[error("Template Syntax Error: {message}, line {line}")]
    Eval {
        /// What failed.
        message: String,
        /// The line of the SQL text.
        line: usize,
    },
    /// The template called `error(msg, code)` or `custom_error(body, code)`.
    #[error("{message}")]
    Custom {
        /// The message (for `custom_error`, the body's `error` field, or the body as JSON).
        message: String,
        /// The HTTP status the template asked for (400 unless it gave a 4xx/5xx code).
        status: u16,
        /// For `custom_error`, the JSON body the template built.
        body: Option<serde_json::Value>,
    },
}

impl TemplateError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            TemplateError::Custom { status, .. } => *status,
            _ => 400,
        }
    }
}

/// `a`, `a and b`, `a, b and c`.
fn join_names(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let e = TemplateError::RequiredParams {
            names: vec!["test".into(), "color".into()],
        };
        assert_eq!(
            e.to_string(),
            "Template Syntax Error: Required parameter is not defined. Check the parameters test \
             and color. Please provide a value or set a default value in the pipe code."
        );
        assert_eq!(e.status(), 400);
        let e = TemplateError::Custom {
            message: "nope".into(),
            status: 404,
            body: None,
        };
        assert_eq!((e.to_string().as_str(), e.status()), ("nope", 404));
        assert_eq!(
            join_names(&["a".into(), "b".into(), "c".into()]),
            "a, b and c"
        );
    }
}
