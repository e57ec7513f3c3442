//! Tinybird datafiles (`.datasource`, `.pipe`, `.connection`) read into syntax trees with locations.
//!
//! Petrel loads Tinybird projects as they are, so this crate follows the Tinybird CLI's reading rules
//! (see `tinybird-compat.md`, section 1):
//!
//! * Files are line based: `KEYWORD value`, or `KEYWORD >` followed by a block of lines. Keywords ignore
//!   case. A block ends at the first line that is not indented and whose first word is a keyword of the
//!   file's kind, so an unindented `SELECT` stays inside a SQL block.
//! * Lines are split like Python's non-POSIX `shlex` (quotes stay in the token, `#` starts a comment outside
//!   quotes). Lines that yield no token (blank or `#`-comment lines) are dropped, even inside blocks.
//! * A scalar value is its tokens joined with single spaces, with one pair of surrounding quotes removed.
//!   Connector and engine values also get `$VAR`/`${VAR}` replaced (see the `*_with_env` functions).
//! * SQL blocks are dedented and right-trimmed, unless their first character is `%` (a template), in which
//!   case they are only stripped.
//!
//! `.datasource` and `.connection` files may contain `{{ tb_secret("NAME", "default") }}`. The parse
//! functions take text where those have **already been rendered**: callers run [`render_secrets`] first.
//!
//! Every parse function reports all the errors it finds, not only the first one. Keywords that Tinybird
//! accepts but Petrel does not act on are still parsed and stored, so the caller decides what to warn about;
//! the trees also carry [`DatafileWarning`]s for what Tinybird itself warns about (deprecated keywords, ...).
//!
//! Rules come from the Forward CLI, with one Classic leniency: `ENGINE`/`ENGINE_*` lines in a
//! materialized pipe node (Classic projects declared the target's engine there) are kept in the node's
//! settings with a warning instead of being rejected. Other Classic-only syntax (`IMPORT_STRATEGY`,
//! `KAFKA_KEY_AVRO_DESERIALIZATION`, token permissions other than READ/APPEND) is an error, as in Forward.
//!
//! Column types, DEFAULT expressions and engine keys are kept as text (types may span lines inside
//! parentheses, as written); interpreting them is the caller's job.

#![warn(missing_docs)]

mod connection;
mod datasource;
mod lexer;
mod pipe;
mod schema;
mod secrets;

use std::fmt;
use std::path::Path;

pub use connection::{parse_connection, parse_connection_with_env, Connection, ConnectionKind};
pub use datasource::{
    parse_datasource, parse_datasource_with_env, ColumnDef, Datasource, Engine, EngineDef,
    ForwardQuery, IndexDef, TokenDef, TokenScope,
};
pub use pipe::{
    parse_pipe, parse_pipe_with_env, CopyMode, Node, NodeType, Pipe, PipeKind, SinkTarget,
};
pub use secrets::render_secrets;

/// A 1-based position in a datafile, so that every error and every tree item can point at its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters (a tab counts as one).
    pub column: usize,
}

impl Loc {
    /// Builds a location; exists so callers and tests can write `Loc::new(3, 5)`.
    pub fn new(line: usize, column: usize) -> Self {
        Loc { line, column }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A problem that makes a datafile unusable, with the place it was found (Display: `3:5: message`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct DatafileError {
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column of the problem.
    pub column: usize,
    /// What is wrong, in Tinybird's words where Tinybird has a message for it.
    pub message: String,
}

impl DatafileError {
    /// Builds an error at `loc`; exists so every module reports errors the same way.
    pub fn new(loc: Loc, message: impl Into<String>) -> Self {
        DatafileError {
            line: loc.line,
            column: loc.column,
            message: message.into(),
        }
    }

    /// The error's position as a [`Loc`], for callers that map errors onto other files.
    pub fn loc(&self) -> Loc {
        Loc::new(self.line, self.column)
    }
}

/// Something worth telling the user that does not stop the file from loading (e.g. a deprecated keyword).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatafileWarning {
    /// Where the warning applies.
    pub loc: Loc,
    /// What to tell the user.
    pub message: String,
}

/// A keyword's value as written (after quote removal and `$VAR` replacement), with the place of the value,
/// so that later checks (e.g. "ENGINE_VER must name a column") can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The value text.
    pub value: String,
    /// Where the value starts (the keyword's position when the value is a block).
    pub loc: Loc,
}

/// Maps positions in SQL text taken from a block (`SQL >`, `FORWARD_QUERY >`) back to the datafile, so
/// that errors found later in the SQL can be shown at the right file line and column.
///
/// Blank and `#`-comment lines are dropped from blocks, so SQL line `n` is file line `lines[n - 1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlMap {
    /// The file line of each line of the SQL text.
    pub lines: Vec<usize>,
    /// The file column of the SQL text's first character.
    pub first_column: usize,
    /// How many leading characters were removed from the other lines (the dedent margin; 0 for `%` SQL).
    pub margin: usize,
}

impl SqlMap {
    /// The file position of a 1-based (line, column) position in the SQL text. Positions past the last
    /// line are clamped to it.
    pub fn file_loc(&self, line: usize, column: usize) -> Loc {
        let idx = line.clamp(1, self.lines.len().max(1)) - 1;
        let file_line = self.lines.get(idx).copied().unwrap_or(0);
        let offset = if idx == 0 {
            self.first_column.saturating_sub(1)
        } else {
            self.margin
        };
        Loc::new(file_line, column + offset)
    }
}

/// Any parsed datafile, for callers that load a whole project folder without caring about kinds up front.
#[derive(Debug, Clone, PartialEq)]
pub enum Datafile {
    /// A `.datasource` file.
    Datasource(Box<Datasource>),
    /// A `.pipe` file.
    Pipe(Box<Pipe>),
    /// A `.connection` file.
    Connection(Box<Connection>),
}

/// True for a valid datasource, pipe, connection or token name (Tinybird's rule:
/// `[A-Za-z_][A-Za-z0-9_]*`). Names become storage paths and SQL table names, so nothing
/// else may enter.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses a datafile, choosing the parser from the path's extension; the resource name is the file stem.
///
/// `text` must already have its `tb_secret(...)` calls rendered (see [`render_secrets`]). `$VAR`
/// references are left as they are; use [`parse_file_with_env`] to replace them.
pub fn parse_file(path: &Path, text: &str) -> Result<Datafile, Vec<DatafileError>> {
    parse_file_with_env(path, text, &|_| None)
}

/// Like [`parse_file`], replacing `$VAR`/`${VAR}` in connector and engine values with `env(VAR)`
/// (references that `env` does not know are kept as written, as Python's `safe_substitute` does).
pub fn parse_file_with_env(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Datafile, Vec<DatafileError>> {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let extension = path
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !is_valid_name(&name) {
        return Err(vec![DatafileError::new(
            Loc::new(1, 1),
            format!(
                "'{name}' is not a valid resource name (from {}): a name starts with a letter or an underscore and holds only letters, digits and underscores",
                path.display()
            ),
        )]);
    }
    match extension.as_str() {
        "datasource" => {
            parse_datasource_with_env(&name, text, env).map(|d| Datafile::Datasource(Box::new(d)))
        }
        "pipe" => parse_pipe_with_env(&name, text, env).map(|p| Datafile::Pipe(Box::new(p))),
        "connection" => {
            parse_connection_with_env(&name, text, env).map(|c| Datafile::Connection(Box::new(c)))
        }
        _ => Err(vec![DatafileError::new(
            Loc::new(1, 1),
            format!(
                "File extension for {} not supported. It should be one of .datasource, .pipe or .connection",
                path.display()
            ),
        )]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display_is_line_colon_column() {
        let e = DatafileError::new(Loc::new(3, 5), "boom");
        assert_eq!(e.to_string(), "3:5: boom");
        assert_eq!(e.loc(), Loc::new(3, 5));
    }

    #[test]
    fn names_follow_tinybirds_rule() {
        for ok in ["events", "_x", "a1_b2", "Top10"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "..", "1abc", "a-b", "a.b", "a b", "é", "../etc"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        let e = parse_file(Path::new("x/...datasource"), "SCHEMA >\n    a String\n").unwrap_err();
        assert!(
            e[0].to_string().contains("not a valid resource name"),
            "{e:?}"
        );
    }

    #[test]
    fn parse_file_dispatches_on_extension() {
        let ds = parse_file(
            Path::new("a/b/events.datasource"),
            "SCHEMA >\n    a String\n",
        )
        .unwrap();
        match ds {
            Datafile::Datasource(d) => assert_eq!(d.name, "events"),
            other => panic!("unexpected {other:?}"),
        }
        let pipe = parse_file(Path::new("top.pipe"), "NODE n\nSQL >\n    SELECT 1\n").unwrap();
        assert!(matches!(pipe, Datafile::Pipe(p) if p.name == "top"));
        let conn = parse_file(Path::new("k.connection"), "TYPE kafka\n").unwrap();
        assert!(matches!(conn, Datafile::Connection(c) if c.name == "k"));
    }

    #[test]
    fn parse_file_rejects_other_extensions() {
        let errs = parse_file(Path::new("x.sql"), "SELECT 1").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].loc(), Loc::new(1, 1));
        assert!(errs[0].message.contains("not supported"), "{}", errs[0]);
    }

    #[test]
    fn parse_file_with_env_replaces_variables() {
        let env = |k: &str| (k == "TOPIC").then(|| "t1".to_string());
        let text = "SCHEMA >\n    a String\nKAFKA_CONNECTION_NAME c\nKAFKA_TOPIC $TOPIC\nKAFKA_GROUP_ID g\n";
        let Datafile::Datasource(d) =
            parse_file_with_env(Path::new("x.datasource"), text, &env).unwrap()
        else {
            panic!("not a datasource");
        };
        assert_eq!(d.kafka["KAFKA_TOPIC"].value, "t1");
    }
}
