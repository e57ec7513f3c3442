//! The `SCHEMA >` and `INDEXES >` blocks of a `.datasource`: column and index definitions.
//!
//! The column grammar and its error messages follow the Tinybird CLI (`_parse_table_structure`):
//! ``name [Type] [DEFAULT expr] [CODEC(...)] [`json:path`]``, columns separated by commas, `--` comments
//! (except inside `` `json:...` ``). Unlike the CLI, reading goes on after an error so that every broken
//! column is reported.

use crate::datasource::{ColumnDef, IndexDef};
use crate::lexer::{first_non_blank_col, BlockLine};
use crate::{DatafileError, Loc};

/// Characters allowed in a column name written without backticks.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._`*<>+-'".contains(c)
}

/// Characters allowed in a type, DEFAULT or CODEC expression outside string literals.
fn is_expr_char(c: char) -> bool {
    is_name_char(c) || "[](),=!?:/ \n\t\r".contains(c)
}

/// What may come next in a column definition (the CLI's `SyntaxExpr`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syn {
    Null,
    NotNull,
    Default,
    Materialized,
    Alias,
    Codec,
    Ttl,
    JsonPath,
    Comma,
    NewLine,
    Type,
}

impl Syn {
    fn name(self) -> &'static str {
        match self {
            Syn::Null => "NULL",
            Syn::NotNull => "NOTNULL",
            Syn::Default => "DEFAULT",
            Syn::Materialized => "MATERIALIZED",
            Syn::Alias => "ALIAS",
            Syn::Codec => "CODEC",
            Syn::Ttl => "TTL",
            Syn::JsonPath => "JSONPATH",
            Syn::Comma => "COMMA",
            Syn::NewLine => "NEW_LINE",
            Syn::Type => "TYPE",
        }
    }
}

const ALL_NEXT: [Syn; 11] = [
    Syn::Null,
    Syn::NotNull,
    Syn::Default,
    Syn::Materialized,
    Syn::Alias,
    Syn::Codec,
    Syn::Ttl,
    Syn::JsonPath,
    Syn::Comma,
    Syn::NewLine,
    Syn::Type,
];
const EXPR_END: [Syn; 8] = [
    Syn::NotNull,
    Syn::Default,
    Syn::Materialized,
    Syn::Alias,
    Syn::Codec,
    Syn::Ttl,
    Syn::JsonPath,
    Syn::Comma,
];
const TYPE_END: [Syn; 9] = [
    Syn::Null,
    Syn::NotNull,
    Syn::Default,
    Syn::Materialized,
    Syn::Alias,
    Syn::Codec,
    Syn::Ttl,
    Syn::JsonPath,
    Syn::Comma,
];

/// How to carry on after a broken column.
enum Resume {
    /// Skip to the next comma outside quotes and parentheses.
    NextComma,
    /// A new column starts here (a missing comma was detected).
    At(usize),
}

type ColumnResult<T> = Result<T, (DatafileError, Resume)>;

struct SchemaParser<'a> {
    s: Vec<char>,
    /// Index in `s` where each block line starts.
    starts: Vec<usize>,
    lines: &'a [BlockLine],
    i: usize,
}

/// Parses the lines of a `SCHEMA >` block into columns, adding every problem found to `errors`.
pub(crate) fn parse_columns(
    lines: &[BlockLine],
    errors: &mut Vec<DatafileError>,
) -> Vec<ColumnDef> {
    let mut s = Vec::new();
    let mut starts = Vec::with_capacity(lines.len());
    for (n, line) in lines.iter().enumerate() {
        if n > 0 {
            s.push('\n');
        }
        starts.push(s.len());
        s.extend(strip_comment(&line.text).chars());
    }
    while s.last().is_some_and(|c| c.is_whitespace()) {
        s.pop();
    }
    let mut parser = SchemaParser {
        s,
        starts,
        lines,
        i: 0,
    };
    let mut columns = Vec::new();
    loop {
        parser.skip_ws();
        if parser.i >= parser.s.len() {
            break;
        }
        match parser.column() {
            Ok(column) => columns.push(column),
            Err((error, resume)) => {
                errors.push(error);
                match resume {
                    Resume::At(pos) => parser.i = pos,
                    Resume::NextComma => parser.skip_past_comma(),
                }
            }
        }
    }
    columns
}

/// Removes a `--` comment from a schema line, except inside `` `json:...` ``, and trims the line end.
fn strip_comment(line: &str) -> &str {
    let mut inside_json = false;
    for (i, c) in line.char_indices() {
        if !inside_json && c == '-' && line[i + 1..].starts_with('-') {
            return line[..i].trim_end();
        }
        if !inside_json && line[i..].starts_with("`json:") {
            inside_json = true;
        } else if inside_json && c == '`' {
            inside_json = false;
        }
    }
    line.trim_end()
}

impl SchemaParser<'_> {
    fn loc(&self, pos: usize) -> Loc {
        let idx = self
            .starts
            .partition_point(|&start| start <= pos)
            .saturating_sub(1);
        let line = self.lines.get(idx).map_or(0, |l| l.line);
        let start = self.starts.get(idx).copied().unwrap_or(0);
        Loc::new(line, pos - start + 1)
    }

    fn err(&self, pos: usize, message: impl Into<String>) -> (DatafileError, Resume) {
        (
            DatafileError::new(self.loc(pos), message),
            Resume::NextComma,
        )
    }

    fn at(&self, pos: usize) -> Option<char> {
        self.s.get(pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.at(self.i).is_some_and(char::is_whitespace) {
            self.i += 1;
        }
    }

    fn next_non_ws(&self, mut pos: usize) -> usize {
        while self.at(pos).is_some_and(char::is_whitespace) {
            pos += 1;
        }
        pos
    }

    /// Whether `word` (case-insensitive) starts at `pos` and is not followed by a word character.
    fn word_at(&self, pos: usize, word: &str) -> Option<usize> {
        let mut p = pos;
        for w in word.chars() {
            if !self.at(p)?.eq_ignore_ascii_case(&w) {
                return None;
            }
            p += 1;
        }
        match self.at(p) {
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => None,
            _ => Some(p),
        }
    }

    /// Whether `syn` matches at `pos` (the CLI's lookahead regular expressions).
    fn matches(&self, syn: Syn, pos: usize) -> bool {
        let after_ws = || {
            let p = self.next_non_ws(pos);
            (p > pos).then_some(p)
        };
        match syn {
            Syn::Type => true,
            Syn::Comma => self.at(pos) == Some(','),
            Syn::NewLine => {
                self.at(pos).is_some_and(char::is_whitespace)
                    && (pos + 1 == self.s.len()
                        || (pos + 2 == self.s.len() && self.at(pos + 1) == Some('\n')))
            }
            Syn::JsonPath => after_ws().is_some_and(|p| {
                let text: String = self.s[p..(p + 6).min(self.s.len())].iter().collect();
                text.eq_ignore_ascii_case("`json:")
            }),
            Syn::NotNull => after_ws()
                .and_then(|p| self.word_at(p, "NOT"))
                .and_then(|p| {
                    let q = self.next_non_ws(p);
                    (q > p).then(|| self.word_at(q, "NULL")).flatten()
                })
                .is_some(),
            Syn::Null => after_ws().and_then(|p| self.word_at(p, "NULL")).is_some(),
            Syn::Default => after_ws()
                .and_then(|p| self.word_at(p, "DEFAULT"))
                .is_some(),
            Syn::Materialized => after_ws()
                .and_then(|p| self.word_at(p, "MATERIALIZED"))
                .is_some(),
            Syn::Alias => after_ws().and_then(|p| self.word_at(p, "ALIAS")).is_some(),
            Syn::Codec => after_ws().and_then(|p| self.word_at(p, "CODEC")).is_some(),
            Syn::Ttl => after_ws().and_then(|p| self.word_at(p, "TTL")).is_some(),
        }
    }

    fn lookahead(&self, options: &[Syn]) -> Option<Syn> {
        options
            .iter()
            .copied()
            .find(|syn| self.matches(*syn, self.i))
    }

    /// Skips to just after the next comma outside quotes, backticks and parentheses (or to the end).
    fn skip_past_comma(&mut self) {
        let mut depth = 0usize;
        let mut quote: Option<char> = None;
        while let Some(c) = self.at(self.i) {
            self.i += 1;
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '\'' | '"' | '`' => quote = Some(c),
                    '(' => depth += 1,
                    ')' => depth = depth.saturating_sub(1),
                    ',' if depth == 0 => return,
                    _ => {}
                },
            }
        }
    }

    /// Reads up to the closing backtick; whitespace before it is an error, as in the CLI.
    fn backticked(&mut self) -> ColumnResult<String> {
        let begin = self.i;
        while let Some(c) = self.at(self.i) {
            if c == '`' {
                let text = self.s[begin..self.i].iter().collect();
                self.i += 1;
                return Ok(text);
            }
            if c.is_whitespace() {
                return Err(self.err(self.i, "Expected closing backtick"));
            }
            self.i += 1;
        }
        Err(self.err(self.i, "Expected closing backtick"))
    }

    fn name(&mut self) -> ColumnResult<String> {
        if self.at(self.i) == Some('`') {
            self.i += 1;
            return self.backticked();
        }
        let begin = self.i;
        while let Some(c) = self.at(self.i) {
            if c.is_whitespace() {
                break;
            }
            if !is_name_char(c) {
                return Err(self.err(
                    self.i,
                    format!("Column name contains invalid character {c:?}. Hint: use backticks"),
                ));
            }
            self.i += 1;
        }
        Ok(self.s[begin..self.i].iter().collect())
    }

    /// Reads a type, DEFAULT or CODEC expression up to the next item of `end` found outside quotes and
    /// parentheses. An expression that goes on after a line break is reported as a missing comma.
    fn expr(&mut self, end: &[Syn], attribute: &str) -> ColumnResult<String> {
        let begin = self.i;
        let mut stack: Vec<char> = Vec::new();
        let mut after_newline = false;
        let mut split: Option<usize> = None;
        while let Some(c) = self.at(self.i) {
            let context = stack.last().copied();
            if matches!(
                (context, c),
                (Some('\''), '\'') | (Some('"'), '"') | (Some('('), ')')
            ) {
                stack.pop();
            } else if matches!(c, '\'' | '"' | '(') && matches!(context, None | Some('(')) {
                stack.push(c);
            } else if context.is_none() && self.lookahead(end).is_some() {
                if self.i == begin {
                    return Err(
                        self.err(self.i, format!("Missing mandatory value for {attribute}"))
                    );
                }
                break;
            } else if matches!(context, None | Some('(')) && !is_expr_char(c) {
                return Err(self.err(self.i, format!("Invalid character {c:?}")));
            }
            if context.is_none() {
                if c == '\n' {
                    after_newline = true;
                } else if after_newline && !c.is_whitespace() && split.is_none() {
                    split = Some(self.i);
                }
            }
            self.i += 1;
        }
        if let Some(open) = stack.last() {
            let closing = if *open == '(' { ')' } else { *open };
            return Err(self.err(self.i, format!("Expected closing {closing}")));
        }
        if self.i == begin {
            return Err(self.err(self.i, format!("Missing mandatory value for {attribute}")));
        }
        if let Some(pos) = split {
            let loc = self.loc(pos);
            let message = if loc.column == 1 {
                "Expected a comma before this column definition (an unindented line stays in the block unless it starts with a keyword of the file)"
            } else {
                "Expected a comma before this column definition"
            };
            return Err((DatafileError::new(loc, message), Resume::At(pos)));
        }
        let text: String = self.s[begin..self.i].iter().collect();
        Ok(text.trim().to_string())
    }

    fn check_type(&self, type_text: &str, pos: usize) -> ColumnResult<()> {
        let lower = type_text.to_lowercase();
        if lower.contains("boolean") {
            return Err(self.err(
                pos,
                "Boolean type is not supported. Hint: use Bool or UInt8 instead",
            ));
        }
        if lower.contains("datetime64") && !lower.contains("datetime64(") {
            return Err(self.err(
                pos,
                "DateTime64 type without precision is not supported. Hint: use DateTime64(3) instead",
            ));
        }
        if type_text == "Int" || type_text == "UInt" {
            let t = type_text;
            return Err(self.err(
                pos,
                format!(
                    "Precision is mandatory for {t} types. Hint: use one of {t}8, {t}16, {t}32, {t}64, {t}128, {t}256"
                ),
            ));
        }
        Ok(())
    }

    fn column(&mut self) -> ColumnResult<ColumnDef> {
        let start = self.i;
        let name = self.name()?;
        if name == "INDEX" {
            return Err(self.err(
                start,
                "Forbidden INDEX definition. Hint: indexes are not allowed in SCHEMA section. Use the INDEXES section instead",
            ));
        }
        let mut type_text: Option<String> = None;
        let mut default: Option<String> = None;
        let mut codec: Option<String> = None;
        let mut json_path: Option<String> = None;
        let mut valid_next: &[Syn] = &[
            Syn::Null,
            Syn::NotNull,
            Syn::Default,
            Syn::Materialized,
            Syn::Alias,
            Syn::Codec,
            Syn::Ttl,
            Syn::JsonPath,
            Syn::Comma,
            Syn::Type,
        ];
        let mut last: Option<Syn> = None;
        while self.i < self.s.len() {
            let found = self.lookahead(&ALL_NEXT).unwrap_or(Syn::Type);
            let keyword_pos = self.next_non_ws(self.i);
            if !valid_next.contains(&found) {
                let after = last
                    .map(|l| format!(" after {}", l.name()))
                    .unwrap_or_default();
                let hint = if found == Syn::Type {
                    " (is a comma missing?)"
                } else {
                    ""
                };
                return Err(self.err(
                    keyword_pos,
                    format!("Unexpected {}{after}{hint}", found.name()),
                ));
            }
            match found {
                Syn::Type => {
                    self.skip_ws();
                    let type_pos = self.i;
                    valid_next = &[
                        Syn::Null,
                        Syn::NotNull,
                        Syn::Default,
                        Syn::Materialized,
                        Syn::Alias,
                        Syn::Codec,
                        Syn::Ttl,
                        Syn::JsonPath,
                        Syn::Comma,
                        Syn::NewLine,
                    ];
                    let text = self.expr(&TYPE_END, "TYPE")?;
                    self.check_type(&text, type_pos)?;
                    type_text = Some(text);
                }
                Syn::Null => {
                    return Err(self.err(
                        keyword_pos,
                        "NULL column syntax not supported. Hint: use Nullable(...)",
                    ))
                }
                Syn::NotNull => {
                    return Err(self.err(
                        keyword_pos,
                        "NOT NULL column syntax not supported. Hint: Columns are not nullable by default",
                    ))
                }
                Syn::Materialized => {
                    return Err(self.err(keyword_pos, "MATERIALIZED columns are not supported"))
                }
                Syn::Alias => return Err(self.err(keyword_pos, "ALIAS columns are not supported")),
                Syn::Ttl => return Err(self.err(keyword_pos, "column TTL is not supported")),
                Syn::Default => {
                    self.i = keyword_pos + "DEFAULT".len();
                    valid_next = &[
                        Syn::Codec,
                        Syn::Comma,
                        Syn::JsonPath,
                        Syn::Materialized,
                        Syn::Ttl,
                        Syn::Null,
                        Syn::NotNull,
                    ];
                    default = Some(self.expr(&EXPR_END, "DEFAULT")?);
                }
                Syn::Codec => {
                    self.i = keyword_pos + "CODEC".len();
                    valid_next = &[
                        Syn::Comma,
                        Syn::JsonPath,
                        Syn::Materialized,
                        Syn::Ttl,
                        Syn::Null,
                        Syn::NotNull,
                    ];
                    let args = self.expr(&EXPR_END, "CODEC")?;
                    codec = Some(format!("CODEC{args}"));
                }
                Syn::JsonPath => {
                    self.i = keyword_pos + "`json:".len();
                    json_path = Some(self.backticked()?);
                }
                Syn::Comma => {
                    self.i += 1;
                    break;
                }
                Syn::NewLine => self.i += 1,
            }
            last = Some(found);
        }
        if type_text.is_none() && default.is_none() {
            return Err(self.err(start, "Column name and either type or DEFAULT are required"));
        }
        let nullable = type_text
            .as_deref()
            .is_some_and(|t| t.to_lowercase().starts_with("nullable"));
        if nullable
            && default
                .as_deref()
                .is_some_and(|d| d.eq_ignore_ascii_case("null"))
        {
            default = None;
        }
        Ok(ColumnDef {
            name,
            type_text,
            default,
            codec,
            json_path,
            loc: self.loc(start),
        })
    }
}

/// Parses the lines of an `INDEXES >` block, one index per line: `[INDEX] name expr TYPE type [GRANULARITY n]`.
pub(crate) fn parse_indexes(lines: &[BlockLine], errors: &mut Vec<DatafileError>) -> Vec<IndexDef> {
    let mut indexes = Vec::new();
    for line in lines {
        let loc = Loc::new(line.line, first_non_blank_col(&line.text));
        match parse_index(&line.text) {
            Some((name, expr, type_full, granularity)) => indexes.push(IndexDef {
                text: line.text.trim().trim_end_matches(',').trim_end().to_string(),
                name,
                expr,
                type_full,
                granularity,
                loc,
            }),
            None => errors.push(DatafileError::new(
                loc,
                "Invalid INDEX syntax. Usage: `[INDEX] name expr TYPE type_full GRANULARITY granularity`",
            )),
        }
    }
    indexes
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Characters the CLI's index regular expression allows in the indexed expression.
fn is_index_expr_char(c: char) -> bool {
    is_word_char(c) || c.is_whitespace() || "*[](),'<.".contains(c) || ('"'..='>').contains(&c)
}

type IndexParts = (String, String, String, Option<String>);

fn parse_index(text: &str) -> Option<IndexParts> {
    let mut rest = text.trim().trim_end_matches(',').trim_end();
    if let Some(after) = rest.strip_prefix("INDEX") {
        if after.starts_with(char::is_whitespace) {
            rest = after.trim_start();
        }
    }
    if rest.matches("TYPE").count() != 1 {
        return None;
    }
    let type_at = rest.find("TYPE")?;
    let (before, after) = (&rest[..type_at], &rest[type_at + "TYPE".len()..]);
    if !before.ends_with(char::is_whitespace) || !after.starts_with(char::is_whitespace) {
        return None;
    }
    let name_end = before.find(|c: char| !is_word_char(c))?;
    let name = &before[..name_end];
    let expr = before[name_end..].trim();
    if name.is_empty()
        || !before[name_end..].starts_with(char::is_whitespace)
        || expr.is_empty()
        || !expr.chars().all(is_index_expr_char)
    {
        return None;
    }
    let after = after.trim_start();
    let type_name_end = after
        .find(|c: char| !is_word_char(c))
        .unwrap_or(after.len());
    let type_name = &after[..type_name_end];
    if type_name.is_empty() {
        return None;
    }
    let mut type_full = type_name.to_string();
    let mut tail = &after[type_name_end..];
    if let Some(args) = tail.strip_prefix('(') {
        if let Some(close) = args.find(')') {
            let inner = &args[..close];
            if !inner.is_empty()
                && inner
                    .chars()
                    .all(|c| is_word_char(c) || c.is_whitespace() || "*.,".contains(c))
            {
                type_full = format!("{type_name}({inner})");
                tail = &args[close + 1..];
            }
        }
    }
    let granularity = tail
        .trim_start()
        .strip_prefix("GRANULARITY")
        .filter(|g| g.starts_with(char::is_whitespace))
        .map(|g| {
            g.trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .filter(|g| !g.is_empty());
    Some((name.to_string(), expr.to_string(), type_full, granularity))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(first_line: usize, text: &str) -> Vec<BlockLine> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(n, l)| BlockLine {
                line: first_line + n,
                text: l.to_string(),
            })
            .collect()
    }

    fn columns(text: &str) -> Result<Vec<ColumnDef>, Vec<DatafileError>> {
        let mut errors = Vec::new();
        let cols = parse_columns(&block(2, text), &mut errors);
        if errors.is_empty() {
            Ok(cols)
        } else {
            Err(errors)
        }
    }

    fn one_error(text: &str) -> DatafileError {
        let errors = columns(text).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors.into_iter().next().unwrap()
    }

    #[test]
    fn basic_columns() {
        let cols = columns(
            "    `timestamp` DateTime64(3) `json:$.timestamp`,\n    session_id String,\n    `tags` Array(String) `json:$.tags[:]`,\n",
        )
        .unwrap();
        assert_eq!(cols.len(), 3);
        assert_eq!(cols[0].name, "timestamp");
        assert_eq!(cols[0].type_text.as_deref(), Some("DateTime64(3)"));
        assert_eq!(cols[0].json_path.as_deref(), Some("$.timestamp"));
        assert_eq!(cols[0].loc, Loc::new(2, 5));
        assert_eq!(cols[1].name, "session_id");
        assert_eq!(cols[1].loc, Loc::new(3, 5));
        assert_eq!(cols[2].json_path.as_deref(), Some("$.tags[:]"));
    }

    #[test]
    fn default_before_or_after_json_path() {
        let cols = columns(
            "    a Float64 `json:$.a` DEFAULT 0,\n    b String DEFAULT 'x' `json:$.b`,\n    c DEFAULT now()\n",
        )
        .unwrap();
        assert_eq!(cols[0].default.as_deref(), Some("0"));
        assert_eq!(cols[0].json_path.as_deref(), Some("$.a"));
        assert_eq!(cols[1].default.as_deref(), Some("'x'"));
        assert_eq!(cols[1].json_path.as_deref(), Some("$.b"));
        assert_eq!(cols[2].type_text, None);
        assert_eq!(cols[2].default.as_deref(), Some("now()"));
    }

    #[test]
    fn codec_and_complex_types() {
        let cols = columns(
            "    a Float32 CODEC(Delta(4), LZ4) `json:$.a`,\n    m Map(String, Array(Tuple(a String, b Int32))),\n    e Enum8('a' = 1, 'b' = 2)\n",
        )
        .unwrap();
        assert_eq!(cols[0].codec.as_deref(), Some("CODEC(Delta(4), LZ4)"));
        assert_eq!(cols[0].json_path.as_deref(), Some("$.a"));
        assert_eq!(
            cols[1].type_text.as_deref(),
            Some("Map(String, Array(Tuple(a String, b Int32)))")
        );
        assert_eq!(
            cols[2].type_text.as_deref(),
            Some("Enum8('a' = 1, 'b' = 2)")
        );
    }

    #[test]
    fn comments_are_stripped_except_in_json_paths() {
        let cols = columns(
            "    -- leading comment\n    a String `json:$.a--b`, -- trailing\n    b Int32 -- last\n",
        )
        .unwrap();
        assert_eq!(cols.len(), 2);
        assert_eq!(cols[0].json_path.as_deref(), Some("$.a--b"));
        assert_eq!(cols[1].type_text.as_deref(), Some("Int32"));
        assert_eq!(cols[1].loc, Loc::new(4, 5));
    }

    #[test]
    fn nullable_default_null_is_dropped() {
        let cols =
            columns("    a Nullable(String) DEFAULT NULL,\n    b String DEFAULT 'NULL'").unwrap();
        assert_eq!(cols[0].default, None);
        assert_eq!(cols[1].default.as_deref(), Some("'NULL'"));
    }

    #[test]
    fn multiline_type_inside_parentheses() {
        let cols =
            columns("    t Tuple(\n        a String,\n        b Int32\n    ),\n    c String")
                .unwrap();
        assert_eq!(cols.len(), 2);
        assert_eq!(cols[1].loc, Loc::new(6, 5));
    }

    #[test]
    fn rejected_column_syntax() {
        let cases = [
            (
                "    a Int32 NULL",
                Loc::new(2, 13),
                "NULL column syntax not supported",
            ),
            (
                "    a Int32 NOT NULL",
                Loc::new(2, 13),
                "NOT NULL column syntax not supported",
            ),
            (
                "    a Int32 MATERIALIZED b * 2",
                Loc::new(2, 13),
                "MATERIALIZED columns are not supported",
            ),
            (
                "    a Int32 ALIAS b",
                Loc::new(2, 13),
                "ALIAS columns are not supported",
            ),
            (
                "    a Int32 TTL now()",
                Loc::new(2, 13),
                "column TTL is not supported",
            ),
            (
                "    INDEX idx a TYPE minmax",
                Loc::new(2, 5),
                "Forbidden INDEX definition",
            ),
            (
                "    a Boolean",
                Loc::new(2, 7),
                "Boolean type is not supported",
            ),
            (
                "    a Nullable(Boolean)",
                Loc::new(2, 7),
                "Boolean type is not supported",
            ),
            (
                "    a DateTime64",
                Loc::new(2, 7),
                "DateTime64 type without precision",
            ),
            (
                "    a Int",
                Loc::new(2, 7),
                "Precision is mandatory for Int types",
            ),
            (
                "    a UInt",
                Loc::new(2, 7),
                "Precision is mandatory for UInt types",
            ),
            (
                "    a",
                Loc::new(2, 5),
                "Column name and either type or DEFAULT are required",
            ),
            (
                "    a#b String",
                Loc::new(2, 6),
                "Column name contains invalid character '#'",
            ),
            ("    `a String", Loc::new(2, 7), "Expected closing backtick"),
            (
                "    a Int32 DEFAULT",
                Loc::new(2, 20),
                "Missing mandatory value for DEFAULT",
            ),
            (
                "    a Int32 DEFAULT 1$",
                Loc::new(2, 22),
                "Invalid character '$'",
            ),
            ("    a Array(Int32", Loc::new(2, 18), "Expected closing )"),
            (
                "    a Int32 CODEC(ZSTD) DEFAULT 1",
                Loc::new(2, 25),
                "Unexpected DEFAULT after CODEC",
            ),
        ];
        for (text, loc, message) in cases {
            let e = one_error(text);
            assert_eq!(e.loc(), loc, "{text}: {e}");
            assert!(e.message.contains(message), "{text}: {e}");
        }
    }

    #[test]
    fn missing_commas_are_reported() {
        let e = one_error("    a String\n    b Int32");
        assert_eq!(e.loc(), Loc::new(3, 5));
        assert!(e.message.contains("comma"), "{e}");
        let e = one_error("    a String `json:$.a`\n    b Int32 `json:$.b`");
        assert_eq!(e.loc(), Loc::new(3, 5));
        assert!(e.message.contains("Unexpected TYPE after JSONPATH"), "{e}");
    }

    #[test]
    fn every_broken_column_is_reported() {
        let errors =
            columns("    a Boolean,\n    b String,\n    c Int32 NULL,\n    d Int").unwrap_err();
        let locs: Vec<Loc> = errors.iter().map(DatafileError::loc).collect();
        assert_eq!(locs, [Loc::new(2, 7), Loc::new(4, 13), Loc::new(5, 7)]);
        // A missing comma resumes at the next column, which is itself checked.
        let errors = columns("    a String\n    b Boolean").unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[1].loc(), Loc::new(3, 7));
    }

    #[test]
    fn indexes() {
        let mut errors = Vec::new();
        let idx = parse_indexes(
            &block(
                5,
                "    idx_session session_id TYPE bloom_filter(0.01) GRANULARITY 4\n    INDEX i2 (toIPv6(a), toIPv6(b)) TYPE minmax,\n    bad_index a",
            ),
            &mut errors,
        );
        assert_eq!(idx.len(), 2);
        assert_eq!(idx[0].name, "idx_session");
        assert_eq!(idx[0].expr, "session_id");
        assert_eq!(idx[0].type_full, "bloom_filter(0.01)");
        assert_eq!(idx[0].granularity.as_deref(), Some("4"));
        assert_eq!(idx[0].loc, Loc::new(5, 5));
        assert_eq!(idx[1].name, "i2");
        assert_eq!(idx[1].expr, "(toIPv6(a), toIPv6(b))");
        assert_eq!(idx[1].type_full, "minmax");
        assert_eq!(idx[1].granularity, None);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].loc(), Loc::new(7, 5));
        assert!(errors[0].message.contains("Invalid INDEX syntax"));
    }
}
