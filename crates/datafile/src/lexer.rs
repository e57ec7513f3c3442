//! Line reading shared by the three datafile kinds: shlex-like splitting, grouping lines into commands
//! and blocks, and the value rules (quote removal, `$VAR` replacement, dedenting).

use crate::{DatafileError, DatafileWarning, Loc, Setting, SqlMap};

/// One word of a line, as Python's non-POSIX `shlex` with `whitespace_split` yields it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    /// The word, quotes included.
    pub text: String,
    /// 1-based column of its first character.
    pub col: usize,
}

/// A raw line inside a `KEYWORD >` block, indentation included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockLine {
    /// 1-based line number in the file.
    pub line: usize,
    /// The line without its line break.
    pub text: String,
}

/// A keyword line, with its block when it ended in `>`.
#[derive(Debug, Clone)]
pub(crate) struct Command {
    /// The keyword as written (for messages).
    pub name: String,
    /// The keyword in lower case (for matching).
    pub key: String,
    /// Where the keyword is.
    pub loc: Loc,
    /// The words after the keyword (empty for a block).
    pub args: Vec<Token>,
    /// The block's lines when the keyword was followed by `>`.
    pub block: Option<Vec<BlockLine>>,
}

const SHLEX_WHITESPACE: [char; 4] = [' ', '\t', '\r', '\n'];

/// Splits a line the way Python's `shlex.shlex(line)` with `whitespace_split = True` does (non-POSIX):
/// quotes are kept in the token and only group when a token starts with one; `#` outside quotes ends the
/// line. Returns the column of the opening quote when a quote is not closed.
pub(crate) fn split_line(line: &str) -> Result<Vec<Token>, usize> {
    #[derive(PartialEq)]
    enum State {
        Between,
        Word,
        Quoted(char),
    }
    let mut tokens = Vec::new();
    let mut state = State::Between;
    let mut current = String::new();
    let mut start = 0;
    for (idx, c) in line.chars().enumerate() {
        match state {
            State::Between => {
                if SHLEX_WHITESPACE.contains(&c) {
                    continue;
                }
                if c == '#' {
                    return Ok(tokens);
                }
                start = idx + 1;
                current.push(c);
                state = if c == '"' || c == '\'' {
                    State::Quoted(c)
                } else {
                    State::Word
                };
            }
            State::Word => {
                if SHLEX_WHITESPACE.contains(&c) {
                    tokens.push(Token {
                        text: std::mem::take(&mut current),
                        col: start,
                    });
                    state = State::Between;
                } else if c == '#' {
                    tokens.push(Token {
                        text: std::mem::take(&mut current),
                        col: start,
                    });
                    return Ok(tokens);
                } else {
                    current.push(c);
                }
            }
            State::Quoted(q) => {
                current.push(c);
                if c == q {
                    tokens.push(Token {
                        text: std::mem::take(&mut current),
                        col: start,
                    });
                    state = State::Between;
                }
            }
        }
    }
    match state {
        State::Quoted(_) => Err(start),
        State::Word => {
            tokens.push(Token {
                text: current,
                col: start,
            });
            Ok(tokens)
        }
        State::Between => Ok(tokens),
    }
}

/// Splits text into lines with Python's universal newlines (`\r\n`, `\r` and `\n` all end a line).
pub(crate) fn split_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.find(['\r', '\n']) {
            Some(pos) => {
                lines.push(&rest[..pos]);
                let skip = if rest[pos..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = &rest[pos + skip..];
            }
            None => {
                lines.push(rest);
                rest = "";
            }
        }
    }
    lines
}

/// Groups the lines of a file into commands. `is_keyword` tells which lower-case words are keywords of
/// this kind of file: an unindented line starting with one of them ends an open block.
pub(crate) fn read_commands(
    text: &str,
    is_keyword: &dyn Fn(&str) -> bool,
    errors: &mut Vec<DatafileError>,
) -> Vec<Command> {
    let mut commands = Vec::new();
    let mut open: Option<Command> = None;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (idx, line) in split_lines(text).into_iter().enumerate() {
        let line_no = idx + 1;
        let tokens = match split_line(line) {
            Ok(tokens) => tokens,
            Err(col) => {
                // Python falls back to a token that is never a keyword: inside a block the line stays
                // in the block, outside it the line is an error.
                match open.as_mut().and_then(|c| c.block.as_mut()) {
                    Some(block) => block.push(BlockLine {
                        line: line_no,
                        text: line.to_string(),
                    }),
                    None => errors.push(DatafileError::new(
                        Loc::new(line_no, col),
                        "No closing quotation",
                    )),
                }
                continue;
            }
        };
        let Some(first) = tokens.first() else {
            continue;
        };
        let key = first.text.to_lowercase();
        let indented = line.starts_with([' ', '\t']);
        if open.is_some() && !indented && is_keyword(&key) {
            commands.extend(open.take());
        }
        if let Some(block) = open.as_mut().and_then(|c| c.block.as_mut()) {
            block.push(BlockLine {
                line: line_no,
                text: line.to_string(),
            });
            continue;
        }
        let loc = Loc::new(line_no, first.col);
        let name = first.text.clone();
        if tokens.get(1).is_some_and(|t| t.text == ">") {
            open = Some(Command {
                name,
                key,
                loc,
                args: Vec::new(),
                block: Some(Vec::new()),
            });
        } else {
            commands.push(Command {
                name,
                key,
                loc,
                args: tokens[1..].to_vec(),
                block: None,
            });
        }
    }
    commands.extend(open);
    commands
}

/// Removes one pair of surrounding quotes, as Tinybird's `_unquote` does (the two quotes need not match).
pub(crate) fn unquote(s: &str) -> &str {
    let is_quote = |c: char| c == '"' || c == '\'';
    let mut chars = s.chars();
    match (chars.next(), chars.next_back()) {
        (Some(a), Some(b)) if is_quote(a) && is_quote(b) => &s[1..s.len() - 1],
        (Some(a), None) if is_quote(a) => "",
        _ => s,
    }
}

/// Replaces `$NAME` and `${NAME}` with `env(NAME)` and `$$` with `$`, leaving unknown or malformed
/// references as written (Python's `string.Template.safe_substitute`).
pub(crate) fn substitute_env(s: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let chars: Vec<char> = s.chars().collect();
    let is_start = |c: char| c.is_ascii_alphabetic() || c == '_';
    let is_cont = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some('{') => {
                let name_start = i + 2;
                let mut j = name_start;
                while j < chars.len() && is_cont(chars[j]) {
                    j += 1;
                }
                let valid =
                    j > name_start && is_start(chars[name_start]) && chars.get(j) == Some(&'}');
                let name: String = chars[name_start..j].iter().collect();
                match valid.then(|| env(&name)).flatten() {
                    Some(value) => {
                        out.push_str(&value);
                        i = j + 1;
                    }
                    None => {
                        out.push('$');
                        i += 1;
                    }
                }
            }
            Some(&n) if is_start(n) => {
                let mut j = i + 1;
                while j < chars.len() && is_cont(chars[j]) {
                    j += 1;
                }
                let name: String = chars[i + 1..j].iter().collect();
                match env(&name) {
                    Some(value) => out.push_str(&value),
                    None => {
                        out.push('$');
                        out.push_str(&name);
                    }
                }
                i = j;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    out
}

/// The longest run of leading spaces and tabs common to all lines (Python's `textwrap.dedent` margin),
/// in characters. Block lines are never blank, as blank lines are dropped while reading.
pub(crate) fn common_margin(lines: &[BlockLine]) -> usize {
    let mut margin: Option<Vec<char>> = None;
    for line in lines {
        let indent: Vec<char> = line
            .text
            .chars()
            .take_while(|c| *c == ' ' || *c == '\t')
            .collect();
        margin = Some(match margin {
            None => indent,
            Some(m) => m
                .iter()
                .zip(indent.iter())
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| *a)
                .collect(),
        });
    }
    margin.map_or(0, |m| m.len())
}

/// The block's text dedented and trimmed, lines joined with `\n`: the value of a block used as a plain
/// value (DESCRIPTION, ENGINE_* or KAFKA_SSL_CA_PEM written as blocks).
pub(crate) fn block_text(lines: &[BlockLine]) -> String {
    let margin = common_margin(lines);
    let joined: Vec<String> = lines
        .iter()
        .map(|l| l.text.chars().skip(margin).collect())
        .collect();
    joined.join("\n").trim().to_string()
}

/// SQL text read from a block, with its map back to the file.
pub(crate) struct SqlBlock {
    pub text: String,
    pub loc: Loc,
    pub map: SqlMap,
}

/// Applies Tinybird's SQL block rule: dedent and right-trim, unless the first character is `%` (a
/// template), in which case the text is only stripped. `None` when the block has no text.
pub(crate) fn sql_block(lines: &[BlockLine]) -> Option<SqlBlock> {
    let first = lines.first()?;
    let line_numbers: Vec<usize> = lines.iter().map(|l| l.line).collect();
    let first_col = first_non_blank_col(&first.text);
    if first.text.trim_start().starts_with('%') {
        let joined: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        let text = joined.join("\n").trim().to_string();
        return Some(SqlBlock {
            text,
            loc: Loc::new(first.line, first_col),
            map: SqlMap {
                lines: line_numbers,
                first_column: first_col,
                margin: 0,
            },
        });
    }
    let margin = common_margin(lines);
    let dedented: Vec<String> = lines
        .iter()
        .map(|l| l.text.chars().skip(margin).collect())
        .collect();
    let text = dedented.join("\n").trim_end().to_string();
    Some(SqlBlock {
        text,
        loc: Loc::new(first.line, margin + 1),
        map: SqlMap {
            lines: line_numbers,
            first_column: margin + 1,
            margin,
        },
    })
}

/// The parts of a `TOKEN <name> <READ|APPEND>` line.
pub(crate) struct TokenLine {
    pub name: String,
    /// The permission in upper case.
    pub permission: String,
    pub permission_loc: Loc,
}

/// Reads a TOKEN line with the CLI's checks (two arguments, READ or APPEND).
pub(crate) fn token_line(ctx: &mut Ctx<'_>, cmd: &Command) -> Option<TokenLine> {
    if cmd.block.is_some() {
        ctx.error(cmd.loc, "TOKEN does not support multiline arguments");
        return None;
    }
    match cmd.args.as_slice() {
        [name, permission] => {
            let upper = permission.text.to_uppercase();
            let permission_loc = Loc::new(cmd.loc.line, permission.col);
            if upper == "CREATE" {
                ctx.warn(
                    permission_loc,
                    format!(
                        "TOKEN {} CREATE is Classic syntax and grants nothing here (only READ and APPEND are supported): create datasources with the admin token",
                        unquote(&name.text)
                    ),
                );
                return None;
            }
            if upper != "READ" && upper != "APPEND" {
                ctx.error(
                    permission_loc,
                    format!(
                        "Invalid permission: {}. Only READ and APPEND are supported",
                        permission.text
                    ),
                );
                return None;
            }
            Some(TokenLine {
                name: unquote(&name.text).to_string(),
                permission: upper,
                permission_loc,
            })
        }
        [_, _, extra, ..] => {
            ctx.error(
                Loc::new(cmd.loc.line, extra.col),
                format!(
                    "Invalid number of arguments for TOKEN command: {}. Expected 2 arguments: token name and permission",
                    cmd.args.len()
                ),
            );
            None
        }
        _ => {
            ctx.error(
                cmd.loc,
                "TOKEN takes two params: token name and permission e.g TOKEN \"read api token\" READ",
            );
            None
        }
    }
}

/// Collects errors and warnings while one file is read, and applies the value rules shared by all kinds.
pub(crate) struct Ctx<'a> {
    /// "datasource", "pipe" or "connection", for messages.
    pub kind: &'static str,
    /// Where `$VAR` values come from.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Every error found so far.
    pub errors: Vec<DatafileError>,
    /// Every warning found so far.
    pub warnings: Vec<DatafileWarning>,
}

impl<'a> Ctx<'a> {
    pub fn new(kind: &'static str, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Ctx {
            kind,
            env,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub fn error(&mut self, loc: Loc, message: impl Into<String>) {
        self.errors.push(DatafileError::new(loc, message));
    }

    pub fn warn(&mut self, loc: Loc, message: impl Into<String>) {
        self.warnings.push(DatafileWarning {
            loc,
            message: message.into(),
        });
    }

    /// Ends a parse: the value when no error was found, else all the errors in file order.
    pub fn finish<T>(mut self, value: T) -> Result<(T, Vec<DatafileWarning>), Vec<DatafileError>> {
        if self.errors.is_empty() {
            Ok((value, self.warnings))
        } else {
            self.errors.sort_by_key(|e| (e.line, e.column));
            Err(self.errors)
        }
    }

    /// Reports a keyword this kind of file does not know, with Tinybird's message.
    pub fn unknown(&mut self, cmd: &Command) {
        if cmd.key == "settings" {
            self.error(
                cmd.loc,
                "SETTINGS option is not allowed, use ENGINE_SETTINGS instead",
            );
        } else {
            self.error(
                cmd.loc,
                format!(
                    "{} is not a valid option in {} files.",
                    cmd.name.to_uppercase(),
                    self.kind
                ),
            );
        }
    }

    /// Handles the legacy keywords every kind shares (VERSION, INCLUDE). Returns false for other keywords.
    pub fn legacy(&mut self, cmd: &Command) -> bool {
        match cmd.key.as_str() {
            "version" => {
                self.warn(cmd.loc, "VERSION has been deprecated and will be ignored.");
                true
            }
            "include" => {
                self.error(cmd.loc, "INCLUDE is not supported yet");
                true
            }
            _ => false,
        }
    }

    /// Reports a keyword that Tinybird has deprecated and ignores.
    pub fn deprecated_warning(&mut self, cmd: &Command, extra: &str) {
        self.warn(
            cmd.loc,
            format!(
                "{} has been deprecated and will be ignored.{extra}",
                cmd.name.to_uppercase()
            ),
        );
    }

    /// The value of a one-line keyword: tokens joined with single spaces, one pair of quotes removed.
    /// Reports blocks and missing values.
    pub fn scalar(&mut self, cmd: &Command) -> Option<Setting> {
        if cmd.block.is_some() {
            self.error(
                cmd.loc,
                format!(
                    "{} does not support multiline arguments",
                    cmd.name.to_uppercase()
                ),
            );
            return None;
        }
        let first = cmd.args.first();
        let Some(first) = first else {
            self.error(
                cmd.loc,
                format!("{} requires a value", cmd.name.to_uppercase()),
            );
            return None;
        };
        let joined = cmd
            .args
            .iter()
            .map(|t| t.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        Some(Setting {
            value: unquote(&joined).to_string(),
            loc: Loc::new(cmd.loc.line, first.col),
        })
    }

    /// Like [`Ctx::scalar`], then `$VAR` replacement: the rule for connector, engine and node values.
    pub fn scalar_env(&mut self, cmd: &Command) -> Option<Setting> {
        let mut setting = self.scalar(cmd)?;
        setting.value = substitute_env(&setting.value, self.env);
        Some(setting)
    }

    /// A value that may be written on the keyword's line or as a block (dedented and trimmed).
    pub fn scalar_or_block(&mut self, cmd: &Command) -> Option<Setting> {
        match &cmd.block {
            Some(lines) => Some(Setting {
                value: unquote(&block_text(lines)).to_string(),
                loc: lines
                    .first()
                    .map_or(cmd.loc, |l| Loc::new(l.line, first_non_blank_col(&l.text))),
            }),
            None => self.scalar(cmd),
        }
    }

    /// The block of a keyword that must be written as a block (SQL, SCHEMA, ...).
    pub fn require_block<'c>(&mut self, cmd: &'c Command) -> Option<&'c [BlockLine]> {
        match &cmd.block {
            Some(lines) => Some(lines),
            None => {
                self.error(
                    cmd.loc,
                    format!(
                        "{} must be multiline. Use > to start a multiline block",
                        cmd.name.to_uppercase()
                    ),
                );
                None
            }
        }
    }

    /// Stores a setting, warning when the keyword was already given (the last value wins).
    pub fn set(&mut self, slot: &mut Option<Setting>, cmd: &Command, value: Setting) {
        if slot.is_some() {
            self.warn(
                cmd.loc,
                format!(
                    "{} is set more than once; the last value is used",
                    cmd.name.to_uppercase()
                ),
            );
        }
        *slot = Some(value);
    }
}

/// 1-based column of the first character that is not a space or tab.
pub(crate) fn first_non_blank_col(text: &str) -> usize {
    text.chars().take_while(|c| *c == ' ' || *c == '\t').count() + 1
}

/// Splits `TAGS "a, b"` into its non-empty, trimmed entries.
pub(crate) fn split_tags(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether a schedule is `@on-demand` or looks like a cron expression (5 or 6 fields, or an `@` alias).
pub(crate) fn is_valid_schedule(value: &str) -> bool {
    const ALIASES: [&str; 8] = [
        "@on-demand",
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
    ];
    if ALIASES.contains(&value.trim()) {
        return true;
    }
    let fields: Vec<&str> = value.split_whitespace().collect();
    (5..=6).contains(&fields.len())
        && fields.iter().all(|f| {
            f.chars()
                .all(|c| c.is_ascii_alphanumeric() || "*/,-?#".contains(c))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(line: &str) -> Vec<String> {
        split_line(line)
            .unwrap()
            .into_iter()
            .map(|t| t.text)
            .collect()
    }

    #[test]
    fn split_line_keeps_quotes_and_drops_comments() {
        assert_eq!(
            texts("TOKEN \"my token\" READ"),
            ["TOKEN", "\"my token\"", "READ"]
        );
        assert_eq!(texts("  a   b\t c "), ["a", "b", "c"]);
        assert_eq!(
            texts("ENGINE MergeTree # the engine"),
            ["ENGINE", "MergeTree"]
        );
        assert_eq!(texts("a#b c"), ["a"]);
        assert_eq!(texts("# only a comment"), Vec::<String>::new());
        assert_eq!(
            texts("x = '#not a comment'"),
            ["x", "=", "'#not a comment'"]
        );
        // Quotes only group at the start of a token (non-POSIX shlex).
        assert_eq!(texts("k=\"a b\""), ["k=\"a", "b\""]);
        assert_eq!(texts("\"ab\"cd"), ["\"ab\"", "cd"]);
        let cols: Vec<usize> = split_line("  ab  \"c d\" e")
            .unwrap()
            .into_iter()
            .map(|t| t.col)
            .collect();
        assert_eq!(cols, [3, 7, 13]);
    }

    #[test]
    fn split_line_reports_unclosed_quotes() {
        assert_eq!(split_line("DESCRIPTION \"abc"), Err(13));
    }

    #[test]
    fn split_lines_handles_all_line_breaks() {
        assert_eq!(split_lines("a\r\nb\rc\nd"), ["a", "b", "c", "d"]);
        assert_eq!(split_lines("a\n\nb\n"), ["a", "", "b"]);
    }

    #[test]
    fn blocks_end_at_unindented_keywords_only() {
        let text = "SQL >\n    SELECT 1\nFROM t\n\n  # comment\n    WHERE 1\nNODE x\n";
        let mut errors = Vec::new();
        let cmds = read_commands(text, &|k| k == "sql" || k == "node", &mut errors);
        assert!(errors.is_empty());
        assert_eq!(cmds.len(), 2);
        let block = cmds[0].block.as_ref().unwrap();
        let lines: Vec<usize> = block.iter().map(|l| l.line).collect();
        assert_eq!(lines, [2, 3, 6]);
        assert_eq!(cmds[1].key, "node");
        assert_eq!(cmds[1].loc, Loc::new(7, 1));
    }

    #[test]
    fn byte_order_mark_is_ignored() {
        let mut errors = Vec::new();
        let cmds = read_commands("\u{feff}NODE a\n", &|k| k == "node", &mut errors);
        assert_eq!(cmds[0].key, "node");
    }

    #[test]
    fn indented_keyword_stays_in_block() {
        let mut errors = Vec::new();
        let cmds = read_commands(
            "DESCRIPTION >\n    NODE is a word here\nNODE n\n",
            &|k| k == "description" || k == "node",
            &mut errors,
        );
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[0].block.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn unclosed_quote_outside_block_is_an_error() {
        let mut errors = Vec::new();
        read_commands(
            "DESCRIPTION it's fine\nDESCRIPTION 'abc\n",
            &|_| true,
            &mut errors,
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].loc(), Loc::new(2, 13));
        let mut errors = Vec::new();
        let cmds = read_commands("SQL >\n    SELECT 'it''s\n", &|_| true, &mut errors);
        assert!(errors.is_empty());
        assert_eq!(cmds[0].block.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn unquote_removes_one_pair() {
        assert_eq!(unquote("\"abc\""), "abc");
        assert_eq!(unquote("'abc'"), "abc");
        assert_eq!(unquote("\"\"x\"\""), "\"x\"");
        assert_eq!(unquote("abc"), "abc");
        assert_eq!(unquote("\""), "");
        assert_eq!(unquote(""), "");
    }

    #[test]
    fn substitute_env_follows_safe_substitute() {
        let env = |k: &str| match k {
            "A" => Some("1".to_string()),
            "B_2" => Some("two".to_string()),
            _ => None,
        };
        assert_eq!(substitute_env("x$A-${B_2}", &env), "x1-two");
        assert_eq!(
            substitute_env("$MISSING ${MISSING} $$A $1 ${", &env),
            "$MISSING ${MISSING} $A $1 ${"
        );
        assert_eq!(substitute_env("cost: 5$", &env), "cost: 5$");
    }

    #[test]
    fn margins_and_block_text() {
        let lines = vec![
            BlockLine {
                line: 2,
                text: "    a".into(),
            },
            BlockLine {
                line: 3,
                text: "      b".into(),
            },
            BlockLine {
                line: 4,
                text: "  \tc".into(),
            },
        ];
        assert_eq!(common_margin(&lines), 2);
        assert_eq!(block_text(&lines[..2]), "a\n  b");
    }

    #[test]
    fn schedules() {
        assert!(is_valid_schedule("@on-demand"));
        assert!(is_valid_schedule("0 * * * *"));
        assert!(is_valid_schedule("*/5 * * * *"));
        assert!(!is_valid_schedule("every hour"));
        assert!(!is_valid_schedule("@sometimes"));
    }
}
