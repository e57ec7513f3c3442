//! Template expressions: the small subset of Python that real pipe templates use, tokenized
//! and parsed into [`Expr`] trees once, when the template is parsed.
//!
//! Supported: literals (`'s'`, `"s"`, ints, floats, `True`/`False`/`None`, lists, tuples,
//! dicts), names, calls of the known functions with positional and keyword arguments, the
//! string and dict methods templates use (`.get`, `.split`, `.startswith`, ..), indexing and
//! slicing, `+ - * / // %`, unary `-`/`+`/`not`, comparisons (chained, `in`, `not in`, `is`,
//! `is not`), `and`/`or`, and `a if c else b`. Everything else (`**`, lambdas,
//! comprehensions, bit operators, attribute reads) is rejected with a syntax error.

use std::fmt;

/// A literal constant written in the template.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Lit {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
}

/// An arithmetic operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Mod,
}

impl BinOp {
    /// The operator as Python writes it.
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::FloorDiv => "//",
            BinOp::Mod => "%",
        }
    }
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Is,
    IsNot,
}

impl CmpOp {
    /// The operator as Python writes it.
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::In => "in",
            CmpOp::NotIn => "not in",
            CmpOp::Is => "is",
            CmpOp::IsNot => "is not",
        }
    }
}

/// A function templates may call by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Func {
    /// A typed parameter function: `String`, `Int32`, `DateTime`, `Boolean`, ...
    Scalar(crate::types::ParamType),
    /// `Array(name, 'Type', default)`.
    Array,
    /// `JSON(name, default)`.
    Json,
    Defined,
    Column,
    Columns,
    Symbol,
    Table,
    SqlAnd,
    SplitToArray,
    EnumerateWithLast,
    DayDiff,
    DateDiff(DiffUnit),
    SqlUnescape,
    Error,
    CustomError,
    TbSecret,
    MaxThreads,
    CacheTtl,
    BackendHint,
    Activate,
    Disable,
    Len,
    Str,
    Int,
    Float,
    Range,
    Enumerate,
    Sum,
    Min,
    Max,
    Abs,
    Round,
    List,
    Sorted,
    Any,
    All,
}

/// The unit of a `date_diff_in_*` function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DiffUnit {
    Days,
    Hours,
    Minutes,
    Seconds,
}

impl Func {
    /// The function a name calls, if templates know it.
    pub(crate) fn from_name(name: &str) -> Option<Func> {
        use crate::types::ParamType;
        let typed = match name {
            "String" => Some(ParamType::String),
            "Boolean" | "bool" => Some(ParamType::Boolean),
            "Int" | "Integer" | "Int32" => Some(ParamType::Int(32)),
            "Int8" => Some(ParamType::Int(8)),
            "Int16" => Some(ParamType::Int(16)),
            "Int64" => Some(ParamType::Int(64)),
            "Int128" => Some(ParamType::Int(128)),
            "Int256" => Some(ParamType::Int(256)),
            "UInt8" => Some(ParamType::UInt(8)),
            "UInt16" => Some(ParamType::UInt(16)),
            "UInt32" => Some(ParamType::UInt(32)),
            "UInt64" => Some(ParamType::UInt(64)),
            "UInt128" => Some(ParamType::UInt(128)),
            "UInt256" => Some(ParamType::UInt(256)),
            "Float32" => Some(ParamType::Float32),
            "Float64" => Some(ParamType::Float64),
            "Date" => Some(ParamType::Date),
            "DateTime" => Some(ParamType::DateTime),
            "DateTime64" => Some(ParamType::DateTime64),
            _ => None,
        };
        if let Some(t) = typed {
            return Some(Func::Scalar(t));
        }
        Some(match name {
            "Array" => Func::Array,
            "JSON" => Func::Json,
            "defined" => Func::Defined,
            "column" => Func::Column,
            "columns" => Func::Columns,
            "symbol" | "Symbol" | "Column" => Func::Symbol,
            "table" | "TABLE" => Func::Table,
            "sql_and" => Func::SqlAnd,
            "split_to_array" => Func::SplitToArray,
            "enumerate_with_last" => Func::EnumerateWithLast,
            "day_diff" => Func::DayDiff,
            "date_diff_in_days" => Func::DateDiff(DiffUnit::Days),
            "date_diff_in_hours" => Func::DateDiff(DiffUnit::Hours),
            "date_diff_in_minutes" => Func::DateDiff(DiffUnit::Minutes),
            "date_diff_in_seconds" => Func::DateDiff(DiffUnit::Seconds),
            "sql_unescape" => Func::SqlUnescape,
            "error" => Func::Error,
            "custom_error" => Func::CustomError,
            "tb_secret" | "tb_var" => Func::TbSecret,
            "max_threads" => Func::MaxThreads,
            "cache_ttl" => Func::CacheTtl,
            "backend_hint" => Func::BackendHint,
            "activate" => Func::Activate,
            "disable" => Func::Disable,
            "len" => Func::Len,
            "str" => Func::Str,
            "int" => Func::Int,
            "float" => Func::Float,
            "range" => Func::Range,
            "enumerate" => Func::Enumerate,
            "sum" => Func::Sum,
            "min" => Func::Min,
            "max" => Func::Max,
            "abs" => Func::Abs,
            "round" => Func::Round,
            "list" => Func::List,
            "sorted" => Func::Sorted,
            "any" => Func::Any,
            "all" => Func::All,
            _ => return None,
        })
    }
}

/// A method templates may call on a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Keys,
    Values,
    Items,
    Split,
    StartsWith,
    EndsWith,
    Strip,
    LStrip,
    RStrip,
    Lower,
    Upper,
    Replace,
    Join,
}

impl Method {
    fn from_name(name: &str) -> Option<Method> {
        Some(match name {
            "get" => Method::Get,
            "keys" => Method::Keys,
            "values" => Method::Values,
            "items" => Method::Items,
            "split" => Method::Split,
            "startswith" => Method::StartsWith,
            "endswith" => Method::EndsWith,
            "strip" => Method::Strip,
            "lstrip" => Method::LStrip,
            "rstrip" => Method::RStrip,
            "lower" => Method::Lower,
            "upper" => Method::Upper,
            "replace" => Method::Replace,
            "join" => Method::Join,
            _ => return None,
        })
    }

    /// The method's name as written.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Keys => "keys",
            Method::Values => "values",
            Method::Items => "items",
            Method::Split => "split",
            Method::StartsWith => "startswith",
            Method::EndsWith => "endswith",
            Method::Strip => "strip",
            Method::LStrip => "lstrip",
            Method::RStrip => "rstrip",
            Method::Lower => "lower",
            Method::Upper => "upper",
            Method::Replace => "replace",
            Method::Join => "join",
        }
    }
}

/// Positional and keyword arguments of a call.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Args {
    pub(crate) positional: Vec<Expr>,
    pub(crate) keywords: Vec<(String, Expr)>,
}

/// A parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    Lit(Lit),
    Name(String),
    List(Vec<Expr>),
    Tuple(Vec<Expr>),
    Dict(Vec<(Expr, Expr)>),
    Neg(Box<Expr>),
    Pos(Box<Expr>),
    Not(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Box<Expr>, Vec<(CmpOp, Expr)>),
    /// `then if cond else otherwise`.
    IfElse {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    Call(Func, Args),
    Method(Box<Expr>, Method, Args),
    Index(Box<Expr>, Box<Expr>),
    Slice(Box<Expr>, Option<Box<Expr>>, Option<Box<Expr>>),
}

impl Expr {
    /// Calls `f` on this expression and every expression inside it.
    pub(crate) fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Expr)) {
        f(self);
        match self {
            Expr::Lit(_) | Expr::Name(_) => {}
            Expr::List(items) | Expr::Tuple(items) => items.iter().for_each(|e| e.walk(f)),
            Expr::Dict(pairs) => pairs.iter().for_each(|(k, v)| {
                k.walk(f);
                v.walk(f);
            }),
            Expr::Neg(e) | Expr::Pos(e) | Expr::Not(e) => e.walk(f),
            Expr::Bin(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) | Expr::Index(a, b) => {
                a.walk(f);
                b.walk(f);
            }
            Expr::Compare(first, rest) => {
                first.walk(f);
                rest.iter().for_each(|(_, e)| e.walk(f));
            }
            Expr::IfElse {
                cond,
                then,
                otherwise,
            } => {
                cond.walk(f);
                then.walk(f);
                otherwise.walk(f);
            }
            Expr::Call(_, args) => args.walk(f),
            Expr::Method(recv, _, args) => {
                recv.walk(f);
                args.walk(f);
            }
            Expr::Slice(e, lo, hi) => {
                e.walk(f);
                lo.iter().for_each(|x| x.walk(f));
                hi.iter().for_each(|x| x.walk(f));
            }
        }
    }
}

impl Args {
    fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Expr)) {
        self.positional.iter().for_each(|e| e.walk(f));
        self.keywords.iter().for_each(|(_, e)| e.walk(f));
    }
}

/// The target of `{% set %}` or `{% for %}`: a name or a (nested) tuple of names.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Target {
    Name(String),
    Tuple(Vec<Target>),
}

impl Target {
    /// Every name the target binds.
    pub(crate) fn names(&self, out: &mut Vec<String>) {
        match self {
            Target::Name(n) => out.push(n.clone()),
            Target::Tuple(ts) => ts.iter().for_each(|t| t.names(out)),
        }
    }
}

/// Why an expression did not parse, with the byte offset in its source.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ExprError {
    pub(crate) kind: ExprErrorKind,
    pub(crate) offset: usize,
}

/// The kinds of expression errors.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ExprErrorKind {
    /// Malformed or unsupported syntax; the text explains.
    Syntax(String),
    /// A call of a name that is not a template function.
    UnknownFunction(String),
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprErrorKind::Syntax(m) => write!(f, "{m}"),
            ExprErrorKind::UnknownFunction(n) => write!(f, "'{n}' is not a valid function"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Name(String),
    Int(i128),
    Float(f64),
    Str(String),
    Op(&'static str),
    End,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    offset: usize,
}

const OPERATORS: [&str; 30] = [
    "**", "//", "==", "!=", "<=", ">=", "+=", "-=", "*=", "/=", "<>", "(", ")", "[", "]", "{", "}",
    ",", ":", ".", "+", "-", "*", "/", "%", "<", ">", "=", "|", "&",
];

fn syntax(offset: usize, message: impl Into<String>) -> ExprError {
    ExprError {
        kind: ExprErrorKind::Syntax(message.into()),
        offset,
    }
}

fn tokenize(src: &str) -> Result<Vec<Token>, ExprError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() || c == b'\\' && bytes.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        if c == b'#' {
            // A comment runs to the end of the line.
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        if c.is_ascii_digit() || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let (tok, end) = lex_number(src, i)?;
            out.push(Token { tok, offset: start });
            i = end;
            continue;
        }
        if c == b'_' || c.is_ascii_alphabetic() || c >= 0x80 {
            let rest = &src[i..];
            let len = rest
                .char_indices()
                .find(|(_, ch)| !(ch.is_alphanumeric() || *ch == '_'))
                .map(|(n, _)| n)
                .unwrap_or(rest.len());
            if len == 0 {
                let ch = rest.chars().next().unwrap_or('?');
                return Err(syntax(
                    start,
                    format!("invalid syntax: unexpected character '{ch}'"),
                ));
            }
            let word = &rest[..len];
            let after = rest[len..].chars().next();
            if matches!(after, Some('\'' | '"')) {
                match word.to_ascii_lowercase().as_str() {
                    "r" | "u" | "b" | "br" | "rb" => {
                        let raw = word.to_ascii_lowercase().contains('r');
                        let (s, end) = lex_string(src, i + len, raw)?;
                        out.push(Token {
                            tok: Tok::Str(s),
                            offset: start,
                        });
                        i = end;
                        continue;
                    }
                    "f" | "fr" | "rf" => {
                        return Err(syntax(start, "f-strings are not supported in templates"))
                    }
                    _ => {}
                }
            }
            out.push(Token {
                tok: Tok::Name(word.to_string()),
                offset: start,
            });
            i += len;
            continue;
        }
        if c == b'\'' || c == b'"' {
            let (s, end) = lex_string(src, i, false)?;
            out.push(Token {
                tok: Tok::Str(s),
                offset: start,
            });
            i = end;
            continue;
        }
        match OPERATORS.iter().find(|op| src[i..].starts_with(**op)) {
            Some(op) => {
                out.push(Token {
                    tok: Tok::Op(op),
                    offset: start,
                });
                i += op.len();
            }
            None => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(syntax(
                    start,
                    format!("invalid syntax: unexpected character '{ch}'"),
                ));
            }
        }
    }
    out.push(Token {
        tok: Tok::End,
        offset: src.len(),
    });
    Ok(out)
}

fn lex_number(src: &str, start: usize) -> Result<(Tok, usize), ExprError> {
    let bytes = src.as_bytes();
    let mut i = start;
    let digits = |i: &mut usize| {
        while *i < bytes.len() && (bytes[*i].is_ascii_digit() || bytes[*i] == b'_') {
            *i += 1;
        }
    };
    digits(&mut i);
    let mut is_float = false;
    if i < bytes.len() && bytes[i] == b'.' {
        is_float = true;
        i += 1;
        digits(&mut i);
    }
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        let mut j = i + 1;
        if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
            j += 1;
        }
        if j < bytes.len() && bytes[j].is_ascii_digit() {
            is_float = true;
            i = j;
            digits(&mut i);
        }
    }
    if i < bytes.len() && (bytes[i].is_ascii_alphabetic() || bytes[i] == b'_') {
        return Err(syntax(start, "invalid syntax: malformed number"));
    }
    let text: String = src[start..i].chars().filter(|c| *c != '_').collect();
    let tok = if is_float {
        Tok::Float(
            text.parse::<f64>()
                .map_err(|_| syntax(start, "invalid syntax: malformed number"))?,
        )
    } else {
        Tok::Int(
            text.parse::<i128>()
                .map_err(|_| syntax(start, "integer literal too large"))?,
        )
    };
    Ok((tok, i))
}

fn lex_string(src: &str, start: usize, raw: bool) -> Result<(String, usize), ExprError> {
    let rest = &src[start..];
    let quote = rest.chars().next().unwrap_or('\'');
    let triple: String = std::iter::repeat_n(quote, 3).collect();
    let is_triple = rest.starts_with(&triple);
    let body_start = start + if is_triple { 3 } else { 1 };
    let mut out = String::new();
    let mut chars = src[body_start..].char_indices().peekable();
    while let Some((n, c)) = chars.next() {
        let here = body_start + n;
        if c == quote {
            if !is_triple {
                return Ok((out, here + 1));
            }
            if src[here..].starts_with(&triple) {
                return Ok((out, here + 3));
            }
            out.push(c);
            continue;
        }
        if c == '\n' && !is_triple {
            return Err(syntax(start, "unterminated string literal"));
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some((_, e)) = chars.next() else {
            return Err(syntax(start, "unterminated string literal"));
        };
        if raw {
            out.push('\\');
            out.push(e);
            continue;
        }
        match e {
            '\n' => {}
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            '"' => out.push('"'),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '0' => out.push('\0'),
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'v' => out.push('\u{b}'),
            'x' | 'u' | 'U' => {
                let len = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let mut hex = String::new();
                for _ in 0..len {
                    match chars.next() {
                        Some((_, h)) if h.is_ascii_hexdigit() => hex.push(h),
                        _ => return Err(syntax(here, "invalid escape sequence in string")),
                    }
                }
                let ch = u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| syntax(here, "invalid escape sequence in string"))?;
                out.push(ch);
            }
            other => {
                // Python keeps unknown escapes as written.
                out.push('\\');
                out.push(other);
            }
        }
    }
    Err(syntax(start, "unterminated string literal"))
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

/// Parses a whole expression (a bare `a, b` is a tuple, as in Python).
pub(crate) fn parse_expression(src: &str) -> Result<Expr, ExprError> {
    let mut p = Parser::new(src)?;
    let e = p.exprlist()?;
    p.expect_end()?;
    Ok(e)
}

/// Parses the statement of `{% set %}`: `target = expr` or `target += expr` (also `-=`,
/// `*=`, `/=`).
pub(crate) fn parse_assignment(src: &str) -> Result<(Target, Option<BinOp>, Expr), ExprError> {
    let mut p = Parser::new(src)?;
    let target = p.target_list()?;
    let op = match p.peek_op() {
        Some("=") => None,
        Some("+=") => Some(BinOp::Add),
        Some("-=") => Some(BinOp::Sub),
        Some("*=") => Some(BinOp::Mul),
        Some("/=") => Some(BinOp::Div),
        _ => return Err(p.unexpected("expected '=' in set")),
    };
    p.pos += 1;
    if op.is_some() && !matches!(target, Target::Name(_)) {
        return Err(p.unexpected("augmented assignment needs a single name"));
    }
    let value = p.exprlist()?;
    if p.peek_op() == Some("=") {
        return Err(p.unexpected("chained assignment is not supported"));
    }
    p.expect_end()?;
    Ok((target, op, value))
}

/// Parses the statement of `{% for %}`: `target in expr`.
pub(crate) fn parse_for(src: &str) -> Result<(Target, Expr), ExprError> {
    let mut p = Parser::new(src)?;
    let target = p.target_list()?;
    if !p.eat_keyword("in") {
        return Err(p.unexpected("expected 'in' in for"));
    }
    let iter = p.exprlist()?;
    p.expect_end()?;
    Ok((target, iter))
}

impl Parser {
    fn new(src: &str) -> Result<Parser, ExprError> {
        Ok(Parser {
            toks: tokenize(src)?,
            pos: 0,
        })
    }

    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).map(|t| &t.tok).unwrap_or(&Tok::End)
    }

    fn offset(&self) -> usize {
        self.toks
            .get(self.pos)
            .or_else(|| self.toks.last())
            .map(|t| t.offset)
            .unwrap_or(0)
    }

    fn peek_op(&self) -> Option<&'static str> {
        match self.peek() {
            Tok::Op(op) => Some(op),
            _ => None,
        }
    }

    fn is_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Name(n) if n == kw)
    }

    fn is_keyword_at(&self, pos: usize, kw: &str) -> bool {
        matches!(self.toks.get(pos).map(|t| &t.tok), Some(Tok::Name(n)) if n == kw)
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        if self.is_keyword(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if self.peek_op() == Some(op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_op(&mut self, op: &str) -> Result<(), ExprError> {
        if self.eat_op(op) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("expected '{op}'")))
        }
    }

    fn expect_end(&self) -> Result<(), ExprError> {
        match self.peek() {
            Tok::End => Ok(()),
            _ => Err(self.unexpected("expected the end of the expression")),
        }
    }

    fn unexpected(&self, what: &str) -> ExprError {
        let found = match self.peek() {
            Tok::Name(n) => format!("'{n}'"),
            Tok::Int(i) => i.to_string(),
            Tok::Float(f) => f.to_string(),
            Tok::Str(_) => "a string".to_string(),
            Tok::Op(op) => format!("'{op}'"),
            Tok::End => "the end".to_string(),
        };
        syntax(
            self.offset(),
            format!("invalid syntax: {what}, found {found}"),
        )
    }

    fn target_list(&mut self) -> Result<Target, ExprError> {
        let first = self.target()?;
        if self.peek_op() != Some(",") {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.eat_op(",") {
            if self.is_keyword("in") || matches!(self.peek_op(), Some("=" | ")" | "]")) {
                break;
            }
            items.push(self.target()?);
        }
        Ok(Target::Tuple(items))
    }

    fn target(&mut self) -> Result<Target, ExprError> {
        if self.eat_op("(") {
            let t = self.target_list()?;
            self.expect_op(")")?;
            return Ok(t);
        }
        if self.eat_op("[") {
            let t = self.target_list()?;
            self.expect_op("]")?;
            return Ok(match t {
                Target::Name(n) => Target::Tuple(vec![Target::Name(n)]),
                t => t,
            });
        }
        match self.peek().clone() {
            Tok::Name(n) if !is_reserved_word(&n) => {
                self.pos += 1;
                Ok(Target::Name(n))
            }
            _ => Err(self.unexpected("expected a name")),
        }
    }

    /// `test (',' test)* [',']`: a tuple when there is a comma.
    fn exprlist(&mut self) -> Result<Expr, ExprError> {
        let first = self.test()?;
        if self.peek_op() != Some(",") {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.eat_op(",") {
            if self.at_expr_end() {
                break;
            }
            items.push(self.test()?);
        }
        Ok(Expr::Tuple(items))
    }

    fn at_expr_end(&self) -> bool {
        matches!(self.peek(), Tok::End)
            || matches!(self.peek_op(), Some(")" | "]" | "}" | "=" | ":"))
    }

    fn test(&mut self) -> Result<Expr, ExprError> {
        if self.is_keyword("lambda") {
            return Err(syntax(
                self.offset(),
                "lambda is not supported in templates",
            ));
        }
        let then = self.or_test()?;
        if self.eat_keyword("if") {
            let cond = self.or_test()?;
            if !self.eat_keyword("else") {
                return Err(self.unexpected("expected 'else'"));
            }
            let otherwise = self.test()?;
            return Ok(Expr::IfElse {
                cond: Box::new(cond),
                then: Box::new(then),
                otherwise: Box::new(otherwise),
            });
        }
        Ok(then)
    }

    fn or_test(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.and_test()?;
        while self.eat_keyword("or") {
            let rhs = self.and_test()?;
            e = Expr::Or(Box::new(e), Box::new(rhs));
        }
        Ok(e)
    }

    fn and_test(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.not_test()?;
        while self.eat_keyword("and") {
            let rhs = self.not_test()?;
            e = Expr::And(Box::new(e), Box::new(rhs));
        }
        Ok(e)
    }

    fn not_test(&mut self) -> Result<Expr, ExprError> {
        if self.eat_keyword("not") {
            return Ok(Expr::Not(Box::new(self.not_test()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, ExprError> {
        let first = self.arith()?;
        let mut rest = Vec::new();
        loop {
            let op = match self.peek() {
                Tok::Op("==") => CmpOp::Eq,
                Tok::Op("!=") | Tok::Op("<>") => CmpOp::Ne,
                Tok::Op("<") => CmpOp::Lt,
                Tok::Op("<=") => CmpOp::Le,
                Tok::Op(">") => CmpOp::Gt,
                Tok::Op(">=") => CmpOp::Ge,
                Tok::Name(n) if n == "in" => CmpOp::In,
                Tok::Name(n) if n == "not" && self.is_keyword_at(self.pos + 1, "in") => {
                    self.pos += 1;
                    CmpOp::NotIn
                }
                Tok::Name(n) if n == "is" => {
                    if self.is_keyword_at(self.pos + 1, "not") {
                        self.pos += 1;
                        CmpOp::IsNot
                    } else {
                        CmpOp::Is
                    }
                }
                _ => break,
            };
            self.pos += 1;
            rest.push((op, self.arith()?));
        }
        if rest.is_empty() {
            Ok(first)
        } else {
            Ok(Expr::Compare(Box::new(first), rest))
        }
    }

    fn arith(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.term()?;
        loop {
            let op = match self.peek_op() {
                Some("+") => BinOp::Add,
                Some("-") => BinOp::Sub,
                Some("|") | Some("&") => {
                    return Err(syntax(
                        self.offset(),
                        "bitwise operators are not supported in templates",
                    ))
                }
                _ => break,
            };
            self.pos += 1;
            let rhs = self.term()?;
            e = Expr::Bin(op, Box::new(e), Box::new(rhs));
        }
        Ok(e)
    }

    fn term(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.factor()?;
        loop {
            let op = match self.peek_op() {
                Some("*") => BinOp::Mul,
                Some("/") => BinOp::Div,
                Some("//") => BinOp::FloorDiv,
                Some("%") => BinOp::Mod,
                _ => break,
            };
            self.pos += 1;
            let rhs = self.factor()?;
            e = Expr::Bin(op, Box::new(e), Box::new(rhs));
        }
        Ok(e)
    }

    fn factor(&mut self) -> Result<Expr, ExprError> {
        if self.eat_op("-") {
            return Ok(Expr::Neg(Box::new(self.factor()?)));
        }
        if self.eat_op("+") {
            return Ok(Expr::Pos(Box::new(self.factor()?)));
        }
        let e = self.primary()?;
        if self.peek_op() == Some("**") {
            // Tinybird rejects exponentiation outright (`10**7` is a cheap way to exhaust memory).
            return Err(syntax(self.offset(), "Invalid BinOp: Pow()"));
        }
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let start = self.offset();
        let mut e = self.atom()?;
        loop {
            if self.peek_op() == Some("(") {
                let call_offset = self.offset();
                self.pos += 1;
                let args = self.args()?;
                e = match e {
                    Expr::Name(n) => match Func::from_name(&n) {
                        Some(f) => Expr::Call(f, args),
                        None => {
                            return Err(ExprError {
                                kind: ExprErrorKind::UnknownFunction(n),
                                offset: start,
                            })
                        }
                    },
                    _ => {
                        return Err(syntax(
                            call_offset,
                            "invalid syntax: only template functions can be called",
                        ))
                    }
                };
            } else if self.eat_op("[") {
                e = self.subscript(e)?;
            } else if self.peek_op() == Some(".") {
                self.pos += 1;
                let name_offset = self.offset();
                let name = match self.peek().clone() {
                    Tok::Name(n) => n,
                    _ => return Err(self.unexpected("expected a method name")),
                };
                self.pos += 1;
                let method = Method::from_name(&name).ok_or_else(|| {
                    syntax(
                        name_offset,
                        format!("the method '.{name}()' is not supported in templates"),
                    )
                })?;
                if !self.eat_op("(") {
                    return Err(syntax(
                        name_offset,
                        format!("attribute access ('.{name}') is not supported in templates; call the method"),
                    ));
                }
                let args = self.args()?;
                e = Expr::Method(Box::new(e), method, args);
            } else {
                return Ok(e);
            }
        }
    }

    fn subscript(&mut self, target: Expr) -> Result<Expr, ExprError> {
        let lo = if self.peek_op() == Some(":") {
            None
        } else {
            Some(Box::new(self.test()?))
        };
        if self.eat_op(":") {
            let hi = if self.peek_op() == Some("]") {
                None
            } else {
                Some(Box::new(self.test()?))
            };
            if self.peek_op() == Some(":") {
                return Err(syntax(
                    self.offset(),
                    "slices with a step are not supported in templates",
                ));
            }
            self.expect_op("]")?;
            return Ok(Expr::Slice(Box::new(target), lo, hi));
        }
        self.expect_op("]")?;
        match lo {
            Some(index) => Ok(Expr::Index(Box::new(target), index)),
            None => Err(self.unexpected("expected an index")),
        }
    }

    fn args(&mut self) -> Result<Args, ExprError> {
        let mut args = Args {
            positional: Vec::new(),
            keywords: Vec::new(),
        };
        loop {
            if self.eat_op(")") {
                return Ok(args);
            }
            if matches!(self.peek_op(), Some("*" | "**")) {
                return Err(syntax(
                    self.offset(),
                    "argument unpacking is not supported in templates",
                ));
            }
            let is_keyword = matches!(self.peek(), Tok::Name(n) if !is_reserved_word(n))
                && matches!(
                    self.toks.get(self.pos + 1).map(|t| &t.tok),
                    Some(Tok::Op("="))
                );
            if is_keyword {
                let Tok::Name(name) = self.peek().clone() else {
                    return Err(self.unexpected("expected a keyword argument"));
                };
                self.pos += 2;
                let value = self.test()?;
                if args.keywords.iter().any(|(k, _)| *k == name) {
                    return Err(syntax(
                        self.offset(),
                        format!("keyword argument repeated: {name}"),
                    ));
                }
                args.keywords.push((name, value));
            } else {
                if !args.keywords.is_empty() {
                    return Err(syntax(
                        self.offset(),
                        "positional argument follows keyword argument",
                    ));
                }
                let value = self.test()?;
                if self.is_keyword("for") {
                    return Err(syntax(
                        self.offset(),
                        "comprehensions are not supported in templates",
                    ));
                }
                args.positional.push(value);
            }
            if !self.eat_op(",") {
                self.expect_op(")")?;
                return Ok(args);
            }
        }
    }

    fn atom(&mut self) -> Result<Expr, ExprError> {
        let offset = self.offset();
        let tok = self.peek().clone();
        match tok {
            Tok::Int(i) => {
                self.pos += 1;
                Ok(Expr::Lit(Lit::Int(i)))
            }
            Tok::Float(f) => {
                self.pos += 1;
                Ok(Expr::Lit(Lit::Float(f)))
            }
            Tok::Str(s) => {
                self.pos += 1;
                let mut s = s;
                // Adjacent string literals concatenate.
                while let Tok::Str(more) = self.peek().clone() {
                    s.push_str(&more);
                    self.pos += 1;
                }
                Ok(Expr::Lit(Lit::Str(s)))
            }
            Tok::Name(n) => {
                self.pos += 1;
                match n.as_str() {
                    "None" => Ok(Expr::Lit(Lit::None)),
                    "True" => Ok(Expr::Lit(Lit::Bool(true))),
                    "False" => Ok(Expr::Lit(Lit::Bool(false))),
                    _ if is_reserved_word(&n) => {
                        self.pos -= 1;
                        Err(self.unexpected("expected a value"))
                    }
                    _ => Ok(Expr::Name(n)),
                }
            }
            Tok::Op("(") => {
                self.pos += 1;
                if self.eat_op(")") {
                    return Ok(Expr::Tuple(Vec::new()));
                }
                let first = self.test()?;
                if self.is_keyword("for") {
                    return Err(syntax(
                        self.offset(),
                        "comprehensions are not supported in templates",
                    ));
                }
                if self.eat_op(")") {
                    return Ok(first);
                }
                let mut items = vec![first];
                while self.eat_op(",") {
                    if self.peek_op() == Some(")") {
                        break;
                    }
                    items.push(self.test()?);
                }
                self.expect_op(")")?;
                Ok(Expr::Tuple(items))
            }
            Tok::Op("[") => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    if self.eat_op("]") {
                        return Ok(Expr::List(items));
                    }
                    items.push(self.test()?);
                    if self.is_keyword("for") {
                        return Err(syntax(
                            self.offset(),
                            "comprehensions are not supported in templates",
                        ));
                    }
                    if !self.eat_op(",") {
                        self.expect_op("]")?;
                        return Ok(Expr::List(items));
                    }
                }
            }
            Tok::Op("{") => {
                self.pos += 1;
                let mut pairs = Vec::new();
                loop {
                    if self.eat_op("}") {
                        return Ok(Expr::Dict(pairs));
                    }
                    let key = self.test()?;
                    if !self.eat_op(":") {
                        return Err(syntax(
                            self.offset(),
                            "set literals and comprehensions are not supported in templates",
                        ));
                    }
                    let value = self.test()?;
                    pairs.push((key, value));
                    if !self.eat_op(",") {
                        self.expect_op("}")?;
                        return Ok(Expr::Dict(pairs));
                    }
                }
            }
            _ => Err(syntax(
                offset,
                self.unexpected("expected a value").to_string(),
            )),
        }
    }
}

/// Python keywords that can't be names.
fn is_reserved_word(n: &str) -> bool {
    matches!(
        n,
        "and"
            | "or"
            | "not"
            | "in"
            | "is"
            | "if"
            | "else"
            | "elif"
            | "for"
            | "while"
            | "lambda"
            | "import"
            | "from"
            | "def"
            | "class"
            | "return"
            | "yield"
            | "with"
            | "as"
            | "pass"
            | "del"
            | "global"
            | "nonlocal"
            | "try"
            | "except"
            | "finally"
            | "raise"
            | "assert"
            | "await"
            | "async"
            | "break"
            | "continue"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_precedence_and_calls() {
        let e = parse_expression("defined(a) and not b or c == 1 + 2 * 3").unwrap();
        assert!(matches!(e, Expr::Or(..)));
        let e = parse_expression("Int32(x, 10, description=\"rows\",)").unwrap();
        match e {
            Expr::Call(Func::Scalar(_), args) => {
                assert_eq!(args.positional.len(), 2);
                assert_eq!(args.keywords[0].0, "description");
            }
            other => panic!("{other:?}"),
        }
        let e = parse_expression("item.get('operand', '').split('.')[1]").unwrap();
        assert!(matches!(e, Expr::Index(..)));
        let e = parse_expression("x not in ['a', 'b']").unwrap();
        assert!(matches!(e, Expr::Compare(_, ref r) if r[0].0 == CmpOp::NotIn));
        let e = parse_expression("a if b else c").unwrap();
        assert!(matches!(e, Expr::IfElse { .. }));
    }

    #[test]
    fn strings_and_numbers() {
        assert_eq!(
            parse_expression(r#"'a\'b' "c""#).unwrap(),
            Expr::Lit(Lit::Str("a'bc".into()))
        );
        assert_eq!(
            parse_expression("1.5e3").unwrap(),
            Expr::Lit(Lit::Float(1500.0))
        );
        assert_eq!(
            parse_expression("-3").unwrap(),
            Expr::Neg(Box::new(Expr::Lit(Lit::Int(3))))
        );
    }

    #[test]
    fn rejects_what_templates_forbid() {
        let err = parse_expression("len([1] * 10**7)").unwrap_err();
        assert_eq!(err.to_string(), "Invalid BinOp: Pow()");
        let err = parse_expression("whatever(x)").unwrap_err();
        assert_eq!(err.kind, ExprErrorKind::UnknownFunction("whatever".into()));
        assert!(parse_expression("x.y").is_err());
        assert!(parse_expression("[x for x in y]").is_err());
        assert!(parse_expression("lambda: 1").is_err());
        assert!(parse_expression("defined((x)").is_err());
    }

    #[test]
    fn statements() {
        let (t, op, _) = parse_assignment("a, b = 1, 2").unwrap();
        assert_eq!(
            t,
            Target::Tuple(vec![Target::Name("a".into()), Target::Name("b".into())])
        );
        assert_eq!(op, None);
        let (t, _) = parse_for("is_last, x in enumerate_with_last(xs)").unwrap();
        assert!(matches!(t, Target::Tuple(_)));
        assert!(parse_for("x of xs").is_err());
    }
}
