//! The template's tags (Tornado's syntax, as Tinybird restricts it) parsed into a tree of
//! [`Node`]s: text, `{{ expr }}`, `{% if %}`/`{% elif %}`/`{% else %}`, `{% for %}` (with
//! `{% break %}`/`{% continue %}` and an optional `{% else %}`), `{% set %}`, comments
//! (`{# .. #}` and the one-tag `{% comment .. %}`), `{% whitespace mode %}`, and `{{!`/`{%!`
//! for literal braces. Every block closes with `{% end %}`.

use crate::error::TemplateError;
use crate::expr::{self, BinOp, Expr, ExprError, ExprErrorKind, Target};

/// A piece of a parsed template.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    /// Text copied to the output.
    Text(String),
    /// `{{ expr }}`.
    Expr {
        expr: Expr,
        src: String,
        line: usize,
    },
    /// `{% if %}`, its `{% elif %}`s and its `{% else %}`.
    If {
        branches: Vec<Branch>,
        otherwise: Option<Vec<Node>>,
    },
    /// `{% for target in iter %}`, with the `{% else %}` Python runs when no `break` happened.
    For {
        target: Target,
        iter: Expr,
        body: Vec<Node>,
        otherwise: Option<Vec<Node>>,
        line: usize,
    },
    /// `{% set target = expr %}` (or `+=` and friends).
    Set {
        target: Target,
        op: Option<BinOp>,
        expr: Expr,
        line: usize,
    },
    Break,
    Continue,
}

/// One condition and body of an `if`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Branch {
    pub(crate) cond: Expr,
    pub(crate) body: Vec<Node>,
    pub(crate) line: usize,
}

/// Tornado's whitespace modes for template text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Whitespace {
    All,
    Single,
    Oneline,
}

fn filter_whitespace(mode: Whitespace, text: &str) -> String {
    match mode {
        Whitespace::All => text.to_string(),
        Whitespace::Single => {
            // Runs of spaces and tabs become one space; whitespace around newlines becomes
            // one newline.
            let mut out = String::new();
            let mut run = String::new();
            let flush = |run: &mut String, out: &mut String| {
                if run.is_empty() {
                    return;
                }
                out.push(if run.contains('\n') { '\n' } else { ' ' });
                run.clear();
            };
            for c in text.chars() {
                if c.is_whitespace() {
                    run.push(c);
                } else {
                    flush(&mut run, &mut out);
                    out.push(c);
                }
            }
            flush(&mut run, &mut out);
            out
        }
        Whitespace::Oneline => {
            let mut out = String::new();
            let mut in_space = false;
            for c in text.chars() {
                if c.is_whitespace() {
                    if !in_space {
                        out.push(' ');
                    }
                    in_space = true;
                } else {
                    out.push(c);
                    in_space = false;
                }
            }
            out
        }
    }
}

/// How a block's body ended.
enum Stop {
    Eof,
    End,
    Else { line: usize },
    Elif { suffix: String, line: usize },
}

struct Reader<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
    ws: Whitespace,
}

/// Tags Tinybird refuses.
const FORBIDDEN: [&str; 9] = [
    "extends",
    "include",
    "import",
    "from",
    "raw",
    "module",
    "apply",
    "block",
    "autoescape",
];

/// Parses template text that starts at byte `start` of `src` (just after the `%`); lines are
/// counted from the start of `src`.
pub(crate) fn parse_template(src: &str, start: usize) -> Result<Vec<Node>, TemplateError> {
    let line = 1 + src[..start].matches('\n').count();
    let mut reader = Reader {
        src,
        pos: start,
        line,
        ws: Whitespace::All,
    };
    let (nodes, _) = reader.body(None, false)?;
    Ok(nodes)
}

fn syntax(line: usize, message: impl Into<String>) -> TemplateError {
    TemplateError::Syntax {
        message: message.into(),
        line,
    }
}

/// Converts an expression error into a template error at the right line.
fn expr_error(e: ExprError, content: &str, line: usize) -> TemplateError {
    let line = line + content[..e.offset.min(content.len())].matches('\n').count();
    match e.kind {
        ExprErrorKind::Syntax(message) => TemplateError::Syntax { message, line },
        ExprErrorKind::UnknownFunction(name) => TemplateError::UnknownFunction { name, line },
    }
}

impl Reader<'_> {
    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn consume(&mut self, n: usize) -> &str {
        let end = (self.pos + n).min(self.src.len());
        let s = &self.src[self.pos..end];
        self.line += s.matches('\n').count();
        self.pos = end;
        s
    }

    /// Consumes a tag's contents up to `close`, returning them trimmed and the line where
    /// the trimmed contents start.
    fn tag_contents(
        &mut self,
        close: &str,
        missing: &str,
    ) -> Result<(String, usize), TemplateError> {
        let Some(end) = self.rest().find(close) else {
            return Err(syntax(self.line, missing));
        };
        let raw = self.consume(end).to_string();
        self.consume(close.len());
        let leading = &raw[..raw.len() - raw.trim_start().len()];
        let start_line = self.line - raw.matches('\n').count() + leading.matches('\n').count();
        Ok((raw.trim().to_string(), start_line))
    }

    fn push_text(&self, nodes: &mut Vec<Node>, text: &str) {
        if text.is_empty() {
            return;
        }
        let text = filter_whitespace(self.ws, text);
        if let Some(Node::Text(prev)) = nodes.last_mut() {
            prev.push_str(&text);
        } else {
            nodes.push(Node::Text(text));
        }
    }

    /// Parses nodes until `{% end %}`, an intermediate tag of the enclosing block, or the end.
    fn body(
        &mut self,
        in_block: Option<&str>,
        in_loop: bool,
    ) -> Result<(Vec<Node>, Stop), TemplateError> {
        let mut nodes = Vec::new();
        loop {
            // Find the next `{{`, `{%` or `{#`; with more than two braces in a row the innermost
            // pair counts.
            let bytes = self.rest().as_bytes();
            let mut curly = 0;
            let found = loop {
                match bytes[curly..].iter().position(|b| *b == b'{') {
                    None => break None,
                    Some(off) => {
                        curly += off;
                        if curly + 1 >= bytes.len() {
                            break None;
                        }
                        if !matches!(bytes[curly + 1], b'{' | b'%' | b'#') {
                            curly += 1;
                            continue;
                        }
                        if curly + 2 < bytes.len()
                            && bytes[curly + 1] == b'{'
                            && bytes[curly + 2] == b'{'
                        {
                            curly += 1;
                            continue;
                        }
                        break Some(curly);
                    }
                }
            };
            let Some(curly) = found else {
                if let Some(block) = in_block {
                    return Err(syntax(
                        self.line,
                        format!("Missing {{% end %}} block for {block}"),
                    ));
                }
                let text = self.consume(self.src.len() - self.pos).to_string();
                self.push_text(&mut nodes, &text);
                return Ok((nodes, Stop::Eof));
            };
            let text = self.consume(curly).to_string();
            self.push_text(&mut nodes, &text);
            let brace = self.consume(2).to_string();
            let line = self.line;
            if self.rest().starts_with('!') {
                self.consume(1);
                if let Some(Node::Text(prev)) = nodes.last_mut() {
                    prev.push_str(&brace);
                } else {
                    nodes.push(Node::Text(brace));
                }
                continue;
            }
            match brace.as_str() {
                "{#" => {
                    self.tag_contents("#}", "Missing end comment #}")?;
                }
                "{{" => {
                    let (contents, start_line) =
                        self.tag_contents("}}", "Missing end expression }}")?;
                    if contents.is_empty() {
                        return Err(syntax(line, "Empty expression"));
                    }
                    let expr = expr::parse_expression(&contents)
                        .map_err(|e| expr_error(e, &contents, start_line))?;
                    nodes.push(Node::Expr {
                        expr,
                        src: contents,
                        line: start_line,
                    });
                }
                _ => {
                    let (contents, start_line) = self.tag_contents("%}", "Missing end block %}")?;
                    if contents.is_empty() {
                        return Err(syntax(line, "Empty block tag ({% %})"));
                    }
                    let split = contents.find(char::is_whitespace).unwrap_or(contents.len());
                    let operator = contents[..split].to_string();
                    let suffix = contents[split..].trim().to_string();
                    let suffix_line = start_line
                        + contents[..contents.len() - contents[split..].trim_start().len()]
                            .matches('\n')
                            .count();
                    if let Some(stop) = self.tag(
                        &mut nodes,
                        &operator,
                        &suffix,
                        suffix_line,
                        line,
                        in_block,
                        in_loop,
                    )? {
                        return Ok((nodes, stop));
                    }
                }
            }
        }
    }

    /// Handles one `{% .. %}` tag; returns how the current body stops, if it does.
    #[allow(clippy::too_many_arguments)]
    fn tag(
        &mut self,
        nodes: &mut Vec<Node>,
        operator: &str,
        suffix: &str,
        suffix_line: usize,
        line: usize,
        in_block: Option<&str>,
        in_loop: bool,
    ) -> Result<Option<Stop>, TemplateError> {
        let parse_expr =
            |src: &str| expr::parse_expression(src).map_err(|e| expr_error(e, src, suffix_line));
        match operator {
            "else" | "elif" | "except" | "finally" => {
                let parents: &[&str] = match operator {
                    "else" => &["if", "for", "while", "try"],
                    "elif" => &["if"],
                    _ => &["try"],
                };
                let Some(block) = in_block else {
                    return Err(syntax(
                        line,
                        format!("{operator} outside {} block", parents.join("/")),
                    ));
                };
                if !parents.contains(&block) {
                    return Err(syntax(
                        line,
                        format!("{operator} block cannot be attached to {block} block"),
                    ));
                }
                Ok(Some(if operator == "else" {
                    Stop::Else { line }
                } else {
                    Stop::Elif {
                        suffix: suffix.to_string(),
                        line: suffix_line,
                    }
                }))
            }
            "end" => {
                if in_block.is_none() {
                    return Err(syntax(line, "Extra {% end %} block"));
                }
                Ok(Some(Stop::End))
            }
            "comment" => Ok(None),
            op if FORBIDDEN.contains(&op) => Err(syntax(line, format!("{op} is forbidden"))),
            "set" => {
                if suffix.is_empty() {
                    return Err(syntax(line, "set missing statement"));
                }
                let (target, op, expr) = expr::parse_assignment(suffix)
                    .map_err(|e| expr_error(e, suffix, suffix_line))?;
                nodes.push(Node::Set {
                    target,
                    op,
                    expr,
                    line,
                });
                Ok(None)
            }
            "whitespace" => {
                self.ws = match suffix {
                    "all" => Whitespace::All,
                    "single" => Whitespace::Single,
                    "oneline" => Whitespace::Oneline,
                    other => return Err(syntax(line, format!("invalid whitespace mode {other}"))),
                };
                Ok(None)
            }
            "if" => {
                let mut branches = vec![Branch {
                    cond: parse_expr(suffix)?,
                    body: Vec::new(),
                    line,
                }];
                let mut otherwise = None;
                loop {
                    let (body, stop) = self.body(Some("if"), in_loop)?;
                    match (&mut otherwise, stop) {
                        (None, Stop::Elif { suffix, line }) => {
                            if let Some(last) = branches.last_mut() {
                                last.body = body;
                            }
                            let cond = expr::parse_expression(&suffix)
                                .map_err(|e| expr_error(e, &suffix, line))?;
                            branches.push(Branch {
                                cond,
                                body: Vec::new(),
                                line,
                            });
                        }
                        (None, Stop::Else { .. }) => {
                            if let Some(last) = branches.last_mut() {
                                last.body = body;
                            }
                            otherwise = Some(Vec::new());
                        }
                        (Some(_), Stop::Else { line } | Stop::Elif { line, .. }) => {
                            return Err(syntax(line, "invalid syntax: else or elif after else"));
                        }
                        (slot, Stop::End | Stop::Eof) => {
                            match slot {
                                Some(o) => *o = body,
                                None => {
                                    if let Some(last) = branches.last_mut() {
                                        last.body = body;
                                    }
                                }
                            }
                            nodes.push(Node::If {
                                branches,
                                otherwise,
                            });
                            return Ok(None);
                        }
                    }
                }
            }
            "for" => {
                let (target, iter) =
                    expr::parse_for(suffix).map_err(|e| expr_error(e, suffix, suffix_line))?;
                let (body, stop) = self.body(Some("for"), true)?;
                let otherwise = match stop {
                    Stop::Else { .. } => {
                        let (o, stop) = self.body(Some("for"), in_loop)?;
                        if let Stop::Else { line } | Stop::Elif { line, .. } = stop {
                            return Err(syntax(line, "invalid syntax: else after else"));
                        }
                        Some(o)
                    }
                    _ => None,
                };
                nodes.push(Node::For {
                    target,
                    iter,
                    body,
                    otherwise,
                    line,
                });
                Ok(None)
            }
            "while" | "try" => Err(syntax(
                line,
                format!("{operator} is not supported by Petrel templates"),
            )),
            "break" | "continue" => {
                if !in_loop {
                    return Err(syntax(line, format!("{operator} outside for block")));
                }
                nodes.push(if operator == "break" {
                    Node::Break
                } else {
                    Node::Continue
                });
                Ok(None)
            }
            other => Err(syntax(line, format!("unknown operator: '{other}'"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<Node>, TemplateError> {
        parse_template(s, 1)
    }

    #[test]
    fn blocks_nest() {
        let nodes = parse(
            "%SELECT {% if a %}1{% elif b %}2{% else %}3{% end %} {% for x in y %}{{x}}{% end %}",
        )
        .unwrap();
        assert!(
            matches!(&nodes[1], Node::If { branches, otherwise: Some(_) } if branches.len() == 2)
        );
        assert!(matches!(&nodes[3], Node::For { .. }));
    }

    #[test]
    fn errors_name_the_line() {
        let err =
            parse("%\nselect * from t\n{% if defined(x) %}\nwhere 2\n{% else %}\n   ").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Syntax error: Missing {% end %} block for if at line 5"
        );
        let err = parse("% SELECT * FROM {% import os %}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Syntax error: import is forbidden at line 1"
        );
        let err = parse("%\n{% end %}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Syntax error: Extra {% end %} block at line 2"
        );
        let err = parse("%\n\n{% if whatever(x) %}{% end %}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Template Syntax Error: 'whatever' is not a valid function, line 3"
        );
        assert!(parse("%{% break %}").is_err());
        assert!(parse("%{% elif x %}").is_err());
        assert!(parse("%{% for x in y %}{% elif z %}{% end %}").is_err());
        assert!(parse("%{{ }}").is_err());
        assert!(parse("%{{ x ").is_err());
        assert!(parse("%{% while x %}{% end %}").is_err());
    }

    #[test]
    fn literal_braces_comments_and_whitespace() {
        let nodes = parse("%a {{! b }} {# c #}{% comment d %}{%! e %}").unwrap();
        assert_eq!(nodes, vec![Node::Text("a {{ b }} {% e %}".into())]);
        let nodes = parse("%{% whitespace oneline %}a  \n\n  b").unwrap();
        assert_eq!(nodes, vec![Node::Text("a b".into())]);
        let nodes = parse("%{% whitespace single %}a  \t b \n\n  c").unwrap();
        assert_eq!(nodes, vec![Node::Text("a b\nc".into())]);
    }
}
