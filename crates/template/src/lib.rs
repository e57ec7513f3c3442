//! Tinybird pipe SQL templates, rendered to SQL with typed parameters.
//!
//! A node's SQL is a template when its first non-blank character is `%`. The language is
//! Tinybird's cut-down Tornado: `{{ expr }}`, `{% if %}..{% elif %}..{% else %}..{% end %}`,
//! `{% for x in xs %}..{% end %}` (with `break`/`continue`), `{% set a = e %}`, `{# .. #}`,
//! `{% comment .. %}`, `{% whitespace mode %}` and `{{!`/`{%!` for literal braces; expressions
//! are a small Python subset (see [`Template::parse`] for what is refused).
//!
//! **Parameters never splice into SQL text** (Petrel's Principle 4). A typed parameter
//! function rendered by `{{ }}` — `{{ Int32(limit, 10) }}`, `{{ Array(ids, 'UInt64') }}` —
//! becomes the placeholder `$limit` / `$ids` in [`Rendered::sql`], and its validated, typed
//! value goes into [`Rendered::values`]. Arithmetic on typed numbers stays symbolic
//! (`{{ Int32(page, 0) * Int32(size, 10) }}` renders `($page * $size)`), and `+` on typed
//! strings renders `concat(..)`. So the rendered text — the query's *shape*, which Petrel
//! compiles one plan for — depends only on which branches the template takes, never on the
//! values of typed parameters.
//!
//! Structural functions do produce text: `column(x, 'dflt')` and `columns(..)` render
//! backticked identifiers, `symbol(x)` a quoted name, `table(x)` a bare table name,
//! `sql_and(..)` a condition (with placeholders for its typed values), and `max_threads`,
//! `cache_ttl`, `backend_hint`, `activate`, `disable` render `-- ...` setting comments.
//!
//! **The one place a value becomes text** is a `{{ }}` whose value is not typed: a raw request
//! parameter (`{{ workspace_id }}`), a `{% set %}` variable, a JSON field. Tinybird renders
//! those as escaped SQL literals, and so does Petrel (strings quoted with `\`-escapes, lists as
//! `[..]`); the shape of such a query then depends on the value.

#![warn(missing_docs)]

mod decl;
mod error;
mod expr;
mod parse;
mod render;
mod types;
mod val;

use std::collections::{BTreeMap, BTreeSet};

use petrel_value::Value;

pub use error::TemplateError;
pub use types::{ParamDecl, ParamType};

/// The request's parameters: the raw query-string values (an `Array` parameter comes
/// comma-separated, `a,b,c`), and the workspace secrets `tb_secret()` may read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    /// Query-string parameters by name, as sent.
    pub values: BTreeMap<String, String>,
    /// Secrets by name, for `tb_secret('NAME')` / `tb_var('NAME')`.
    pub secrets: BTreeMap<String, String>,
}

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a query-string parameter (builder style).
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.values.insert(name.into(), value.into());
        self
    }

    /// Adds a query-string parameter.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values.insert(name.into(), value.into());
    }

    /// A query-string parameter's raw value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
}

impl From<BTreeMap<String, String>> for Params {
    fn from(values: BTreeMap<String, String>) -> Self {
        Params {
            values,
            secrets: BTreeMap::new(),
        }
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Params {
            values: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            secrets: BTreeMap::new(),
        }
    }
}

/// A rendered template.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    /// The SQL, with `$name` placeholders for typed parameters (the `%` line marker removed).
    /// A parameter bound twice with different values (different defaults) gets `$name__2`;
    /// a typed value computed inside the template (`String(item)` in a loop) gets `$__1`, ...
    /// `tb_secret('N')` binds `$tb_secret_N`.
    pub sql: String,
    /// The value of every placeholder in `sql`, by placeholder name (without the `$`).
    pub values: BTreeMap<String, Value>,
    /// The type of every placeholder in `sql`, by placeholder name.
    pub types: BTreeMap<String, ParamType>,
    /// The typed parameters the render met (rendered or used in logic), once per name and type.
    pub declared: Vec<ParamDecl>,
}

/// A parsed node SQL, templated or not.
#[derive(Clone, Debug)]
pub struct Template {
    source: String,
    nodes: Option<Vec<parse::Node>>,
    declared: Vec<ParamDecl>,
    names: BTreeSet<String>,
    guarded: BTreeSet<String>,
    arrays: BTreeMap<String, ParamType>,
}

impl Template {
    /// Parses a node's SQL. It is a template when its first non-blank character is `%`;
    /// otherwise it is plain SQL, kept as it is (and `{{` or `{%` in it is an error, as in
    /// Tinybird: the query must start with `%` to be dynamic).
    ///
    /// Errors carry the line of the SQL text (the `%` line is line 1): unclosed blocks
    /// (`Missing {% end %} block for if`), forbidden tags (`import is forbidden`: also
    /// `from`, `include`, `extends`, `raw`, `module`, `apply`, `block`, `autoescape`),
    /// `while`/`try` (unsupported), Python syntax errors, `**`, lambdas, comprehensions,
    /// calls of unknown functions, and `format`/`q` used as variable names.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let trimmed = text.trim_start();
        if !trimmed.starts_with('%') {
            if let Some(pos) = text.find("{{").or_else(|| text.find("{%")) {
                return Err(TemplateError::Syntax {
                    message: "In order to make a query dynamic, it is necessary to start the \
                              query with a % character"
                        .into(),
                    line: 1 + text[..pos].matches('\n').count(),
                });
            }
            return Ok(Template {
                source: text.to_string(),
                nodes: None,
                declared: Vec::new(),
                names: BTreeSet::new(),
                guarded: BTreeSet::new(),
                arrays: BTreeMap::new(),
            });
        }
        let start = text.len() - trimmed.len() + 1;
        let nodes = parse::parse_template(text, start)?;
        let statics = decl::analyze(&nodes)?;
        Ok(Template {
            source: text.to_string(),
            nodes: Some(nodes),
            declared: statics.declared,
            names: statics.names,
            guarded: statics.guarded,
            arrays: statics.arrays,
        })
    }

    /// True when the SQL is a template (starts with `%`).
    pub fn is_templated(&self) -> bool {
        self.nodes.is_some()
    }

    /// The SQL text as parsed.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every typed parameter declared anywhere in the template, on every branch, in order,
    /// once per name and type; defaults and doc fields are filled in where they are constants.
    pub fn declared_params(&self) -> Vec<ParamDecl> {
        self.declared.clone()
    }

    /// Every request parameter name the template reads, typed or not (`{{ workspace_id }}`,
    /// `defined(x)`), excluding its own `{% set %}` and `{% for %}` variables.
    pub fn param_names(&self) -> BTreeSet<String> {
        self.names.clone()
    }

    /// Renders the template for a request. Plain SQL comes back unchanged.
    ///
    /// Errors: missing required parameters (all of them, in one
    /// [`TemplateError::RequiredParams`]), values that don't fit their type
    /// ([`TemplateError::InvalidValue`], e.g. `Error validating 'abc' to type Int32`), a
    /// parameter bound with two types ([`TemplateError::TypeConflict`]), failing template
    /// logic ([`TemplateError::Eval`]), and `error()`/`custom_error()`
    /// ([`TemplateError::Custom`]).
    pub fn render(&self, params: &Params) -> Result<Rendered, TemplateError> {
        let Some(nodes) = &self.nodes else {
            return Ok(Rendered {
                sql: self.source.clone(),
                values: BTreeMap::new(),
                types: BTreeMap::new(),
                declared: Vec::new(),
            });
        };
        render::Renderer::new(params, &self.arrays, &self.guarded).run(nodes)
    }
}
