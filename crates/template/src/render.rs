//! Rendering: runs a parsed template against a request's parameters.
//!
//! Typed parameter functions return [`Typed`] values that render as `$name` placeholders and
//! bind their typed value; structural functions (`column`, `columns`, `symbol`, `table`,
//! `sql_and`, the setting comments) return SQL text; any other value a `{{ }}` renders becomes
//! an escaped SQL literal. Missing required parameters are collected (the render goes on so
//! that all of them are named) and reported together at the end.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use petrel_value::Value;

use crate::error::TemplateError;
use crate::expr::{Args, BinOp, CmpOp, DiffUnit, Expr, Func, Lit, Method, Target};
use crate::parse::Node;
use crate::types::{convert_scalar, parse_float, strptime, ParamDecl, ParamType};
use crate::val::{
    float_repr, from_json, py_arith, py_cmp, py_contains, py_eq, py_repr, py_str, to_json, Bind,
    Piece, Typed, Val, MAX_LEN,
};
use crate::{Params, Rendered};

/// Most loop iterations and statements one render may run.
const MAX_STEPS: usize = 1_000_000;
/// Longest SQL one render may produce.
const MAX_OUTPUT: usize = 16 << 20;

/// The arguments of the typed scalar functions, in Tinybird's order.
const SCALAR_ARGS: [&str; 8] = [
    "x",
    "default",
    "defined",
    "required",
    "description",
    "enum",
    "example",
    "format",
];
/// The arguments of `Array`.
const ARRAY_ARGS: [&str; 9] = [
    "x",
    "_type",
    "default",
    "defined",
    "required",
    "description",
    "enum",
    "example",
    "format",
];

/// Why evaluation stopped: a message that gets the statement's line, or a finished error.
pub(crate) enum Fail {
    Msg(String),
    Err(TemplateError),
}

impl From<String> for Fail {
    fn from(m: String) -> Self {
        Fail::Msg(m)
    }
}

impl From<&str> for Fail {
    fn from(m: &str) -> Self {
        Fail::Msg(m.to_string())
    }
}

type R<T> = Result<T, Fail>;

#[derive(PartialEq, Eq)]
enum Flow {
    Normal,
    Break,
    Continue,
}

/// One render of a template.
pub(crate) struct Renderer<'a> {
    params: &'a Params,
    guarded: &'a BTreeSet<String>,
    globals: HashMap<String, Val>,
    locals: HashMap<String, Val>,
    out: String,
    after_placeholder: bool,
    values: BTreeMap<String, Value>,
    types: BTreeMap<String, ParamType>,
    declared: Vec<ParamDecl>,
    missing: Vec<String>,
    generated: usize,
    steps: usize,
    line: usize,
}

impl<'a> Renderer<'a> {
    /// Prepares a render: request values of parameters whose first declaration is an `Array`
    /// are split into lists for template logic, as Tinybird does.
    pub(crate) fn new(
        params: &'a Params,
        arrays: &BTreeMap<String, ParamType>,
        guarded: &'a BTreeSet<String>,
    ) -> Self {
        let globals = params
            .values
            .iter()
            .map(|(name, raw)| {
                let raw_val = Val::Str(raw.clone());
                let v = match arrays.get(name) {
                    Some(elem) => match convert_array(elem, &elem.name(), &raw_val) {
                        Ok((list, _)) => list,
                        Err(_) => raw_val,
                    },
                    None => raw_val,
                };
                (name.clone(), v)
            })
            .collect();
        Renderer {
            params,
            guarded,
            globals,
            locals: HashMap::new(),
            out: String::new(),
            after_placeholder: false,
            values: BTreeMap::new(),
            types: BTreeMap::new(),
            declared: Vec::new(),
            missing: Vec::new(),
            generated: 0,
            steps: 0,
            line: 1,
        }
    }

    /// Runs the template.
    pub(crate) fn run(mut self, nodes: &[Node]) -> Result<Rendered, TemplateError> {
        let result = self.exec(nodes);
        if !self.missing.is_empty() {
            // A later failure is most likely a consequence of the missing values.
            return Err(TemplateError::RequiredParams {
                names: self.missing,
            });
        }
        result?;
        Ok(Rendered {
            sql: self.out,
            values: self.values,
            types: self.types,
            declared: self.declared,
        })
    }

    fn fail(&self, f: Fail) -> TemplateError {
        match f {
            Fail::Msg(message) => TemplateError::Eval {
                message,
                line: self.line,
            },
            Fail::Err(e) => e,
        }
    }

    fn tick(&mut self) -> R<()> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(format!("the template ran more than {MAX_STEPS} steps").into());
        }
        Ok(())
    }

    fn exec(&mut self, nodes: &[Node]) -> Result<Flow, TemplateError> {
        for node in nodes {
            self.tick().map_err(|f| self.fail(f))?;
            match node {
                Node::Text(t) => self.push_text(t).map_err(|f| self.fail(f))?,
                Node::Expr { expr, src, line } => {
                    self.line = *line;
                    let r = self.eval(expr).and_then(|v| self.emit_value(&v, src));
                    r.map_err(|f| self.fail(f))?;
                }
                Node::If {
                    branches,
                    otherwise,
                } => {
                    let mut taken = None;
                    for b in branches {
                        self.line = b.line;
                        let cond = self.eval(&b.cond).map_err(|f| self.fail(f))?;
                        if cond.truthy() {
                            taken = Some(&b.body);
                            break;
                        }
                    }
                    if let Some(body) = taken.or(otherwise.as_ref()) {
                        let flow = self.exec(body)?;
                        if flow != Flow::Normal {
                            return Ok(flow);
                        }
                    }
                }
                Node::For {
                    target,
                    iter,
                    body,
                    otherwise,
                    line,
                } => {
                    self.line = *line;
                    let items = self
                        .eval(iter)
                        .and_then(|v| v.iter_items().map_err(Fail::Msg))
                        .map_err(|f| self.fail(f))?;
                    let mut broke = false;
                    for item in items {
                        self.line = *line;
                        self.tick().map_err(|f| self.fail(f))?;
                        self.assign(target, item).map_err(|f| self.fail(f))?;
                        if self.exec(body)? == Flow::Break {
                            broke = true;
                            break;
                        }
                    }
                    if let (false, Some(o)) = (broke, otherwise) {
                        let flow = self.exec(o)?;
                        if flow != Flow::Normal {
                            return Ok(flow);
                        }
                    }
                }
                Node::Set {
                    target,
                    op,
                    expr,
                    line,
                } => {
                    self.line = *line;
                    let r = self.eval(expr).and_then(|v| {
                        let v = match (op, target) {
                            (Some(op), Target::Name(n)) => {
                                let current = self.lookup(n);
                                self.binop(*op, &current, &v)?
                            }
                            _ => v,
                        };
                        self.assign(target, v)
                    });
                    r.map_err(|f| self.fail(f))?;
                }
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    fn assign(&mut self, target: &Target, v: Val) -> R<()> {
        match target {
            Target::Name(n) => {
                self.locals.insert(n.clone(), v);
                Ok(())
            }
            Target::Tuple(targets) => {
                let items = v.iter_items()?;
                if items.len() != targets.len() {
                    return Err(format!(
                        "cannot unpack {} values into {} names",
                        items.len(),
                        targets.len()
                    )
                    .into());
                }
                for (t, item) in targets.iter().zip(items) {
                    self.assign(t, item)?;
                }
                Ok(())
            }
        }
    }

    fn lookup(&self, name: &str) -> Val {
        self.locals
            .get(name)
            .or_else(|| self.globals.get(name))
            .cloned()
            .unwrap_or(Val::None)
    }

    // ---- output ------------------------------------------------------------------------

    fn push_text(&mut self, text: &str) -> R<()> {
        if text.is_empty() {
            return Ok(());
        }
        if self.after_placeholder
            && text
                .chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$')
        {
            // Keep `$name` from running into the text after it.
            self.out.push(' ');
        }
        self.after_placeholder = false;
        self.out.push_str(text);
        if self.out.len() > MAX_OUTPUT {
            return Err(format!("the rendered SQL is longer than {MAX_OUTPUT} bytes").into());
        }
        Ok(())
    }

    fn emit_value(&mut self, v: &Val, src: &str) -> R<()> {
        let pieces = to_pieces(v, src)?;
        self.emit(&pieces)
    }

    fn emit(&mut self, pieces: &[Piece]) -> R<()> {
        for p in pieces {
            match p {
                Piece::Text(t) => self.push_text(t)?,
                Piece::Bind(b) => {
                    let name = self.register(b)?;
                    self.push_text(&format!("${name}"))?;
                    self.after_placeholder = true;
                }
            }
        }
        Ok(())
    }

    /// Gives a bound value its placeholder name: the parameter's own name, `name__2` when
    /// the same parameter is bound again with another value (different defaults), `__N` for
    /// values computed in the template.
    fn register(&mut self, b: &Bind) -> R<String> {
        let Some(value) = &b.value else {
            // A missing required parameter: the render fails at the end anyway.
            return Ok(b.name.clone().unwrap_or_else(|| "_".to_string()));
        };
        let Some(base) = &b.name else {
            self.generated += 1;
            let name = format!("__{}", self.generated);
            self.types.insert(name.clone(), b.ty.clone());
            self.values.insert(name.clone(), value.clone());
            return Ok(name);
        };
        let mut n = 1;
        loop {
            let candidate = if n == 1 {
                base.clone()
            } else {
                format!("{base}__{n}")
            };
            match self.types.get(&candidate) {
                None => {
                    self.types.insert(candidate.clone(), b.ty.clone());
                    self.values.insert(candidate.clone(), value.clone());
                    return Ok(candidate);
                }
                Some(t) if *t != b.ty => {
                    if n == 1 {
                        return Err(Fail::Err(TemplateError::TypeConflict {
                            name: base.clone(),
                            first: t.name(),
                            second: b.ty.name(),
                        }));
                    }
                }
                Some(_) => {
                    if self.values.get(&candidate) == Some(value) {
                        return Ok(candidate);
                    }
                }
            }
            n += 1;
        }
    }

    // ---- expressions -------------------------------------------------------------------

    fn eval(&mut self, e: &Expr) -> R<Val> {
        Ok(match e {
            Expr::Lit(l) => lit(l),
            Expr::Name(n) => self.lookup(n),
            Expr::List(items) => Val::List(self.eval_all(items)?),
            Expr::Tuple(items) => Val::Tuple(self.eval_all(items)?),
            Expr::Dict(pairs) => {
                let mut out = Vec::with_capacity(pairs.len());
                for (k, v) in pairs {
                    let k = self.eval(k)?.plain().into_owned();
                    let v = self.eval(v)?;
                    out.retain(|(k2, _)| !py_eq(k2, &k));
                    out.push((k, v));
                }
                Val::Dict(out)
            }
            Expr::Neg(inner) => {
                let v = self.eval(inner)?;
                match &v {
                    Val::Typed(t) if is_number(&t.value) => {
                        let value = py_arith(BinOp::Sub, &Val::Int(0), &t.value)?;
                        let mut pieces = vec![Piece::Text("(-".into())];
                        pieces.extend(t.pieces.iter().cloned());
                        pieces.push(Piece::Text(")".into()));
                        Val::Typed(Box::new(Typed { value, pieces }))
                    }
                    _ if is_number(v.plain().as_ref()) => {
                        py_arith(BinOp::Sub, &Val::Int(0), v.plain().as_ref())?
                    }
                    _ => {
                        return Err(
                            format!("bad operand type for unary -: '{}'", v.type_name()).into()
                        )
                    }
                }
            }
            Expr::Pos(inner) => {
                let v = self.eval(inner)?;
                if !is_number(v.plain().as_ref()) {
                    return Err(format!("bad operand type for unary +: '{}'", v.type_name()).into());
                }
                v
            }
            Expr::Not(inner) => Val::Bool(!self.eval(inner)?.truthy()),
            Expr::Bin(op, a, b) => {
                let a = self.eval(a)?;
                let b = self.eval(b)?;
                self.binop(*op, &a, &b)?
            }
            Expr::And(a, b) => {
                let a = self.eval(a)?;
                if !a.truthy() {
                    a
                } else {
                    self.eval(b)?
                }
            }
            Expr::Or(a, b) => {
                let a = self.eval(a)?;
                if a.truthy() {
                    a
                } else {
                    self.eval(b)?
                }
            }
            Expr::Compare(first, rest) => {
                let mut left = self.eval(first)?;
                for (op, e) in rest {
                    let right = self.eval(e)?;
                    if !compare(*op, &left, &right)? {
                        return Ok(Val::Bool(false));
                    }
                    left = right;
                }
                Val::Bool(true)
            }
            Expr::IfElse {
                cond,
                then,
                otherwise,
            } => {
                if self.eval(cond)?.truthy() {
                    self.eval(then)?
                } else {
                    self.eval(otherwise)?
                }
            }
            Expr::Call(f, args) => self.call(f, args)?,
            Expr::Method(recv, m, args) => {
                let recv = self.eval(recv)?;
                let positional = self.eval_all(&args.positional)?;
                if let Some((k, _)) = args.keywords.first() {
                    return Err(format!(".{}() takes no keyword argument '{k}'", m.name()).into());
                }
                method(recv.plain().as_ref(), *m, &positional)?
            }
            Expr::Index(target, index) => {
                let t = self.eval(target)?;
                let i = self.eval(index)?;
                index_value(t.plain().as_ref(), i.plain().as_ref())?
            }
            Expr::Slice(target, lo, hi) => {
                let t = self.eval(target)?;
                let lo = match lo {
                    Some(e) => Some(self.eval(e)?),
                    None => None,
                };
                let hi = match hi {
                    Some(e) => Some(self.eval(e)?),
                    None => None,
                };
                slice_value(t.plain().as_ref(), lo.as_ref(), hi.as_ref())?
            }
        })
    }

    fn eval_all(&mut self, items: &[Expr]) -> R<Vec<Val>> {
        items.iter().map(|e| self.eval(e)).collect()
    }

    fn eval_opt(&mut self, e: Option<&Expr>) -> R<Option<Val>> {
        e.map(|e| self.eval(e)).transpose()
    }

    /// Arithmetic. On typed numbers `+ - * /` keep the SQL symbolic (`($page * $size)`), and
    /// `+` on typed strings becomes `concat(..)`, so the shape of the query does not depend
    /// on parameter values; everything else computes a plain value.
    fn binop(&mut self, op: BinOp, a: &Val, b: &Val) -> R<Val> {
        let typed = matches!(a, Val::Typed(_)) || matches!(b, Val::Typed(_));
        let (pa, pb) = (a.plain().into_owned(), b.plain().into_owned());
        let value = py_arith(op, &pa, &pb)?;
        if !typed {
            return Ok(value);
        }
        let numeric = is_number(&pa) && is_number(&pb);
        let strings = matches!((&pa, &pb), (Val::Str(_), Val::Str(_)));
        let symbolic = match op {
            BinOp::Add => numeric || strings,
            BinOp::Sub | BinOp::Mul | BinOp::Div => numeric,
            BinOp::FloorDiv | BinOp::Mod => false,
        };
        if !symbolic {
            return Ok(value);
        }
        let (left, right) = (to_pieces(a, "")?, to_pieces(b, "")?);
        let mut pieces = Vec::new();
        if strings {
            pieces.push(Piece::Text("concat(".into()));
            pieces.extend(left);
            pieces.push(Piece::Text(", ".into()));
            pieces.extend(right);
        } else {
            pieces.push(Piece::Text("(".into()));
            pieces.extend(left);
            pieces.push(Piece::Text(format!(" {} ", op.symbol())));
            pieces.extend(right);
        }
        pieces.push(Piece::Text(")".into()));
        Ok(Val::Typed(Box::new(Typed { value, pieces })))
    }

    // ---- functions ---------------------------------------------------------------------

    fn call(&mut self, f: &Func, args: &Args) -> R<Val> {
        match f {
            Func::Scalar(ty) => self.call_scalar(ty, args),
            Func::Array => self.call_array(args),
            Func::Json => self.call_json(args),
            Func::Defined => {
                let s = bind_args("defined", &["x"], args)?;
                let v = self.eval_opt(s[0])?;
                Ok(Val::Bool(
                    v.is_some_and(|v| !matches!(v.plain().as_ref(), Val::None)),
                ))
            }
            Func::Column => {
                let s = bind_args("column", &["x", "default"], args)?;
                let x = self.eval_opt(s[0])?.unwrap_or(Val::None);
                let x = match x.plain().as_ref() {
                    Val::None => match self.eval_opt(s[1])?.map(|d| d.plain().into_owned()) {
                        Some(Val::None) | None => return Err(
                            "Missing column() default value, use `column(column_name, 'default_column_name')`"
                                .into(),
                        ),
                        Some(d) => d,
                    },
                    v => v.clone(),
                };
                Ok(sql_text(column_sql(&py_str(&x))?))
            }
            Func::Columns => {
                let s = bind_args("columns", &["x", "default", "fn"], args)?;
                let x = self
                    .eval_opt(s[0])?
                    .unwrap_or(Val::None)
                    .plain()
                    .into_owned();
                let x = match x {
                    Val::None => match self.eval_opt(s[1])?.map(|d| d.plain().into_owned()) {
                        Some(Val::None) | None => return Err(
                            "Missing columns() default value, use `columns(column_names, 'default_column_name')`"
                                .into(),
                        ),
                        Some(d) => d,
                    },
                    v => v,
                };
                let Val::Str(list) = x else {
                    return Err("The 'columns' function expects a String not an Array".into());
                };
                let func = self.eval_opt(s[2])?.map(|f| f.plain().into_owned());
                let func = match func {
                    None | Some(Val::None) => None,
                    Some(f) => {
                        let f = py_str(&f);
                        if f.is_empty() || !f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        {
                            return Err(format!("invalid function name '{f}' in columns()").into());
                        }
                        Some(f)
                    }
                };
                let mut parts = Vec::new();
                for c in list.split(',').map(str::trim) {
                    let col = column_sql(c)?;
                    parts.push(match &func {
                        Some(f) => format!("{f}({col}) as {}", quote_ident(c, '`')?),
                        None => col,
                    });
                }
                Ok(sql_text(parts.join(",")))
            }
            Func::Symbol => {
                let s = bind_args("symbol", &["x", "quote"], args)?;
                let x = self
                    .eval_opt(s[0])?
                    .unwrap_or(Val::None)
                    .plain()
                    .into_owned();
                if x == Val::None {
                    return Err("symbol() needs a value".into());
                }
                let quote = match self.eval_opt(s[1])?.map(|q| py_str(&q)) {
                    None => '`',
                    Some(q) if q == "`" => '`',
                    Some(q) if q == "\"" => '"',
                    Some(q) => return Err(format!("symbol() can't quote with {q}").into()),
                };
                Ok(sql_text(quote_ident(&py_str(&x), quote)?))
            }
            Func::Table => {
                let s = bind_args("table", &["x", "quote"], args)?;
                let x = self
                    .eval_opt(s[0])?
                    .unwrap_or(Val::None)
                    .plain()
                    .into_owned();
                let name = py_str(&x);
                let valid = x != Val::None
                    && !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
                if !valid {
                    return Err(format!("invalid table name '{name}'").into());
                }
                Ok(sql_text(name))
            }
            Func::SqlAnd => self.call_sql_and(args),
            Func::SplitToArray => {
                let s = bind_args("split_to_array", &["x", "default", "separator"], args)?;
                let x = self
                    .eval_opt(s[0])?
                    .unwrap_or(Val::None)
                    .plain()
                    .into_owned();
                let x = match x {
                    Val::None => self
                        .eval_opt(s[1])?
                        .map(|d| d.plain().into_owned())
                        .unwrap_or(Val::Str(String::new())),
                    v => v,
                };
                let sep = match self.eval_opt(s[2])? {
                    Some(v) => py_str(&v),
                    None => ",".to_string(),
                };
                let Val::Str(text) = x else {
                    return Err("First argument of split_to_array has to be a value that can be split to a list of elements, but found a PlaceHolder with no value instead".into());
                };
                if sep.is_empty() {
                    return Err("empty separator".into());
                }
                Ok(Val::List(
                    text.split(sep.as_str())
                        .map(|p| Val::Str(p.trim().to_string()))
                        .collect(),
                ))
            }
            Func::EnumerateWithLast => {
                let s = bind_args("enumerate_with_last", &["arr"], args)?;
                let items = self
                    .eval_opt(s[0])?
                    .ok_or("enumerate_with_last() missing 1 required positional argument")?
                    .iter_items()?;
                let n = items.len();
                Ok(Val::List(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, x)| Val::Tuple(vec![Val::Bool(i + 1 == n), x]))
                        .collect(),
                ))
            }
            Func::DayDiff => {
                let s = bind_args("day_diff", &["d0", "d1", "default"], args)?;
                let d0 = self.eval_opt(s[0])?.unwrap_or(Val::None);
                let d1 = self.eval_opt(s[1])?.unwrap_or(Val::None);
                date_diff(&d0, &d1, "%Y-%m-%d", None, DiffUnit::Days)
                    .map(Val::Int)
                    .ok_or_else(|| Fail::Msg("invalid date format in function `day_diff`, it must be ISO format date YYYY-MM-DD, e.g. 2018-09-26. For other formats, try `date_diff_in_days`".into()))
            }
            Func::DateDiff(unit) => {
                let s = bind_args(
                    "date_diff",
                    &[
                        "d0",
                        "d1",
                        "date_format",
                        "default",
                        "backup_date_format",
                        "none_if_error",
                    ],
                    args,
                )?;
                let d0 = self.eval_opt(s[0])?.unwrap_or(Val::None);
                let d1 = self.eval_opt(s[1])?.unwrap_or(Val::None);
                let format = match self.eval_opt(s[2])? {
                    Some(f) => py_str(&f),
                    None if *unit == DiffUnit::Days => "%Y-%m-%d".into(),
                    None => "%Y-%m-%d %H:%M:%S".into(),
                };
                let backup = self
                    .eval_opt(s[4])?
                    .filter(|b| *b != Val::None)
                    .map(|b| py_str(&b));
                let none_if_error = self.eval_opt(s[5])?.is_some_and(|v| v.truthy());
                match date_diff(&d0, &d1, &format, backup.as_deref(), *unit) {
                    Some(v) => Ok(Val::Int(v)),
                    None if none_if_error => Ok(Val::None),
                    None => Err(date_diff_message(*unit).into()),
                }
            }
            Func::SqlUnescape => {
                let s = bind_args("sql_unescape", &["x", "what"], args)?;
                let x = self.eval_opt(s[0])?.unwrap_or(Val::None);
                if matches!(x, Val::Typed(_)) {
                    // Bound values are never escaped, so there is nothing to undo.
                    return Ok(x);
                }
                let what = self.eval_opt(s[1])?.map(|w| py_str(&w)).unwrap_or_default();
                let mut text = escape_string(&py_str(&x));
                for c in what.chars().filter(|c| !matches!(c, '\'' | '\\' | '"')) {
                    text = text.replace(&format!("\\{c}"), &c.to_string());
                }
                Ok(sql_text(format!("'{text}'")))
            }
            Func::Error => {
                let s = bind_args("error", &["s", "code"], args)?;
                let msg = self.eval_opt(s[0])?.unwrap_or(Val::None);
                let status = status_code(self.eval_opt(s[1])?);
                Err(Fail::Err(TemplateError::Custom {
                    message: py_str(&msg),
                    status,
                    body: None,
                }))
            }
            Func::CustomError => {
                let s = bind_args("custom_error", &["s", "code"], args)?;
                let body = self
                    .eval_opt(s[0])?
                    .unwrap_or(Val::None)
                    .plain()
                    .into_owned();
                let status = status_code(self.eval_opt(s[1])?);
                let (message, body) = match &body {
                    Val::Dict(pairs) => {
                        let json = to_json(&body);
                        let message = pairs
                            .iter()
                            .find(|(k, _)| *k == Val::Str("error".into()))
                            .map(|(_, v)| py_str(v))
                            .unwrap_or_else(|| json.to_string());
                        (message, Some(json))
                    }
                    Val::List(_) | Val::Tuple(_) => {
                        let json = to_json(&body);
                        (json.to_string(), Some(json))
                    }
                    other => (py_str(other), None),
                };
                Err(Fail::Err(TemplateError::Custom {
                    message,
                    status,
                    body,
                }))
            }
            Func::TbSecret => {
                let s = bind_args("tb_secret", &["name", "default"], args)?;
                let name = py_str(&self.eval_opt(s[0])?.unwrap_or(Val::None));
                if let Some(secret) = self.params.secrets.get(&name) {
                    return Ok(Val::Typed(Box::new(Typed {
                        value: Val::Str(secret.clone()),
                        pieces: vec![Piece::Bind(Bind {
                            name: Some(format!("tb_secret_{name}")),
                            ty: ParamType::String,
                            value: Some(Value::from(secret.as_str())),
                        })],
                    })));
                }
                match self.eval_opt(s[1])? {
                    Some(d) if d != Val::None => Ok(d),
                    _ => Err(format!("Cannot access secret '{name}'. Check the secret exists in the Workspace and the token has the required scope.").into()),
                }
            }
            Func::MaxThreads => {
                let s = bind_args("max_threads", &["x"], args)?;
                let x = self.eval_opt(s[0])?.unwrap_or(Val::None);
                Ok(sql_text(match to_int(x.plain().as_ref()) {
                    Ok(n) => format!("-- max_threads {n}\n"),
                    Err(_) => "-- max_threads: wrong argument\n".to_string(),
                }))
            }
            Func::CacheTtl => {
                let s = bind_args("cache_ttl", &["ttl"], args)?;
                let ttl = py_str(&self.eval_opt(s[0])?.unwrap_or(Val::None));
                if !["5s", "1m", "5m", "30m", "1h"].contains(&ttl.as_str()) {
                    return Err("Invalid TTL cache expression, valid expressions are ('5s', '1m', '5m', '30m', '1h')".into());
                }
                Ok(sql_text(format!("-- cache_ttl {ttl}\n")))
            }
            Func::BackendHint => {
                let s = bind_args("backend_hint", &["hint"], args)?;
                let hint = py_str(&self.eval_opt(s[0])?.unwrap_or(Val::None));
                let hint: String = hint
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                Ok(sql_text(format!("-- backend_hint {hint}\n")))
            }
            Func::Activate | Func::Disable => {
                let (fname, valid): (&str, &[&str]) = if *f == Func::Activate {
                    (
                        "activate",
                        &[
                            "analyzer",
                            "parallel_replicas",
                            "optimize_aggregation_in_order",
                        ],
                    )
                } else {
                    ("disable", &["analyzer"])
                };
                let s = bind_args(fname, &["feature"], args)?;
                let feature = py_str(&self.eval_opt(s[0])?.unwrap_or(Val::None));
                if !valid.contains(&feature.as_str()) {
                    return Err(format!("'{feature}' is not a valid '{fname}' argument").into());
                }
                Ok(sql_text(format!("-- {fname} {feature}\n")))
            }
            _ => {
                let positional = self.eval_all(&args.positional)?;
                if let Some((k, _)) = args.keywords.first() {
                    if !(*f == Func::Enumerate && k == "start" && args.keywords.len() == 1) {
                        return Err(format!("unexpected keyword argument '{k}'").into());
                    }
                }
                let start = match args.keywords.first() {
                    Some((_, e)) => Some(self.eval(e)?),
                    None => None,
                };
                builtin(f, &positional, start)
            }
        }
    }

    /// Where the first argument of a typed function comes from: a request parameter (by its
    /// name, with the raw request text) or a value computed in the template.
    fn param_source(&mut self, e: &Expr) -> R<(Option<String>, Val)> {
        if let Expr::Name(n) = e {
            if !self.locals.contains_key(n) {
                let raw = self
                    .params
                    .values
                    .get(n)
                    .map(|s| Val::Str(s.clone()))
                    .unwrap_or(Val::None);
                return Ok((Some(n.clone()), raw));
            }
        }
        let v = self.eval(e)?.plain().into_owned();
        Ok((None, v))
    }

    /// Records a declaration met while rendering.
    #[allow(clippy::too_many_arguments)]
    fn declare(
        &mut self,
        name: &Option<String>,
        ty: &ParamType,
        default: &Option<Val>,
        defined: bool,
        slots: &[Option<&Expr>],
        meta_from: usize,
    ) -> R<()> {
        let Some(name) = name else {
            return Ok(());
        };
        let mut meta = Vec::new();
        for slot in &slots[meta_from..] {
            meta.push(self.eval_opt(*slot)?.map(|v| v.plain().into_owned()));
        }
        let guarded = self.guarded.contains(name);
        let decl = make_decl(
            name,
            ty,
            default.as_ref(),
            defined,
            guarded,
            &meta,
            self.line,
        );
        if !self
            .declared
            .iter()
            .any(|d| d.name == decl.name && d.ty == decl.ty)
        {
            self.declared.push(decl);
        }
        Ok(())
    }

    fn note_missing(&mut self, name: &Option<String>, src: &Expr) {
        let n = name.clone().unwrap_or_else(|| describe(src));
        if !self.missing.contains(&n) {
            self.missing.push(n);
        }
    }

    fn call_scalar(&mut self, ty: &ParamType, args: &Args) -> R<Val> {
        let fname = ty.name();
        let s = bind_args(&fname, &SCALAR_ARGS, args)?;
        let x_expr = s[0].ok_or_else(|| {
            Fail::Msg("one of the transform type functions is missing an argument".into())
        })?;
        let (name, raw) = self.param_source(x_expr)?;
        let default = self.eval_opt(s[1])?.map(|d| d.plain().into_owned());
        let defined = self.eval_opt(s[2])?.is_none_or(|d| d.truthy());
        self.declare(&name, ty, &default, defined, &s, 3)?;
        let bind = |value: Value| {
            Piece::Bind(Bind {
                name: name.clone(),
                ty: ty.clone(),
                value: Some(value),
            })
        };
        if *ty == ParamType::Boolean {
            let b = match (&raw, &default) {
                (Val::None, None | Some(Val::None)) => false,
                (Val::None, Some(d)) => boolean(d),
                (x, _) => boolean(x),
            };
            return Ok(Val::Typed(Box::new(Typed {
                value: Val::Int(b as i128),
                pieces: vec![bind(Value::UInt(b as u64))],
            })));
        }
        let x = match (raw, default) {
            (Val::None, Some(d)) if d != Val::None => d,
            (Val::None, _) => {
                if !defined {
                    return Ok(Val::None);
                }
                self.note_missing(&name, x_expr);
                return Ok(missing_value(name, ty));
            }
            (x, _) => x,
        };
        let text = py_str(&x);
        let (value, bound) = if *ty == ParamType::String {
            (Val::Str(text.clone()), Value::from(text))
        } else {
            convert_scalar(ty, &text).map_err(|message| {
                Fail::Err(TemplateError::InvalidValue {
                    name: name.clone().unwrap_or_else(|| describe(x_expr)),
                    message,
                })
            })?
        };
        Ok(Val::Typed(Box::new(Typed {
            value,
            pieces: vec![bind(bound)],
        })))
    }

    fn call_array(&mut self, args: &Args) -> R<Val> {
        let s = bind_args("Array", &ARRAY_ARGS, args)?;
        let x_expr = s[0].ok_or_else(|| {
            Fail::Msg("one of the transform type functions is missing an argument".into())
        })?;
        let (name, raw) = self.param_source(x_expr)?;
        let type_name = match self.eval_opt(s[1])?.map(|t| t.plain().into_owned()) {
            None | Some(Val::None) => "String".to_string(),
            Some(t) => py_str(&t),
        };
        let elem = ParamType::array_element(&type_name);
        let ty = ParamType::Array(Box::new(elem.clone()));
        let default = self.eval_opt(s[2])?.map(|d| d.plain().into_owned());
        let defined = self.eval_opt(s[3])?.is_none_or(|d| d.truthy());
        self.declare(&name, &ty, &default, defined, &s, 4)?;
        let x = match (raw, default) {
            (Val::None, Some(d)) if d != Val::None => d,
            (Val::None, _) => {
                if !defined {
                    return Ok(Val::None);
                }
                self.note_missing(&name, x_expr);
                return Ok(missing_value(name, &ty));
            }
            (x, _) => x,
        };
        let (list, bound) = convert_array(&elem, &type_name, &x).map_err(|message| {
            Fail::Err(TemplateError::InvalidValue {
                name: name.clone().unwrap_or_else(|| describe(x_expr)),
                message,
            })
        })?;
        Ok(Val::Typed(Box::new(Typed {
            value: list,
            pieces: vec![Piece::Bind(Bind {
                name,
                ty,
                value: Some(bound),
            })],
        })))
    }

    fn call_json(&mut self, args: &Args) -> R<Val> {
        let s = bind_args("JSON", &SCALAR_ARGS, args)?;
        let x_expr = s[0].ok_or_else(|| {
            Fail::Msg("one of the transform type functions is missing an argument".into())
        })?;
        let (name, raw) = self.param_source(x_expr)?;
        let default = self.eval_opt(s[1])?.map(|d| d.plain().into_owned());
        self.declare(&name, &ParamType::Json, &default, true, &s, 3)?;
        let text = match (raw, default) {
            (Val::None, Some(Val::Str(d))) => d,
            (Val::None, _) => "{}".to_string(),
            (Val::Str(s), _) => s,
            (other, _) => return Ok(other),
        };
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(j) => Ok(from_json(&j)),
            Err(e) => {
                let shown: String = if text.chars().count() > 16 {
                    text.chars().take(16).chain("...".chars()).collect()
                } else {
                    text.clone()
                };
                Err(Fail::Err(TemplateError::InvalidValue {
                    name: name.unwrap_or_else(|| describe(x_expr)),
                    message: format!("Error parsing JSON: '{shown}' - {e}"),
                }))
            }
        }
    }

    fn call_sql_and(&mut self, args: &Args) -> R<Val> {
        if !args.positional.is_empty() {
            return Err(
                "sql_and() takes keyword arguments only, e.g. sql_and(a=String(a), b__in=Array(b))"
                    .into(),
            );
        }
        let mut pieces = Vec::new();
        for (key, e) in &args.keywords {
            let v = self.eval(e)?;
            if v == Val::None {
                continue;
            }
            let (column, op) = match key.rsplit_once("__") {
                None => (key.as_str(), "="),
                Some((column, suffix)) => {
                    let op = match suffix {
                        "in" => "in",
                        "not_in" => "not in",
                        "gt" => ">",
                        "lt" => "<",
                        "gte" => ">=",
                        "lte" => "<=",
                        other => return Err(format!("operand {other} not supported").into()),
                    };
                    (column, op)
                }
            };
            if !pieces.is_empty() {
                pieces.push(Piece::Text(" and ".into()));
            }
            pieces.push(Piece::Text(format!("{column} {op} ")));
            pieces.extend(to_pieces(&v, key)?);
        }
        Ok(Val::Sql(pieces))
    }
}

/// The value a missing required parameter stands for while the render goes on to find the
/// other missing ones.
fn missing_value(name: Option<String>, ty: &ParamType) -> Val {
    Val::Typed(Box::new(Typed {
        value: Val::None,
        pieces: vec![Piece::Bind(Bind {
            name,
            ty: ty.clone(),
            value: None,
        })],
    }))
}

/// Builds a declaration from a typed call's arguments (`meta` holds `required`,
/// `description`, `enum`, `example`, `format`, evaluated). `guarded` tells that the template
/// tests `defined(name)` somewhere, which makes a parameter without a default optional.
pub(crate) fn make_decl(
    name: &str,
    ty: &ParamType,
    default: Option<&Val>,
    defined: bool,
    guarded: bool,
    meta: &[Option<Val>],
    line: usize,
) -> ParamDecl {
    let text = |i: usize| {
        meta.get(i)
            .cloned()
            .flatten()
            .filter(|v| *v != Val::None)
            .map(|v| py_str(&v))
    };
    let explicit_required = meta.first().cloned().flatten().is_some_and(|v| v.truthy());
    let default = default.filter(|d| **d != Val::None);
    let never_fails = matches!(ty, ParamType::Boolean | ParamType::Json) || !defined || guarded;
    ParamDecl {
        name: name.to_string(),
        ty: ty.clone(),
        default: default.map(|d| default_value(ty, d)),
        required: explicit_required || (default.is_none() && !never_fails),
        description: text(1),
        enum_values: match meta.get(2).cloned().flatten() {
            Some(Val::List(items)) | Some(Val::Tuple(items)) => items.iter().map(py_str).collect(),
            _ => Vec::new(),
        },
        example: text(3),
        format: text(4),
        line,
    }
}

/// A default converted to its parameter's type (the literal as a string when it does not
/// convert).
fn default_value(ty: &ParamType, d: &Val) -> Value {
    let fallback = || Value::from(py_str(d));
    match ty {
        ParamType::String | ParamType::Json => fallback(),
        ParamType::Boolean => Value::UInt(boolean(d) as u64),
        ParamType::Array(elem) => convert_array(elem, &elem.name(), d)
            .map(|(_, v)| v)
            .unwrap_or_else(|_| fallback()),
        _ => convert_scalar(ty, &py_str(d))
            .map(|(_, v)| v)
            .unwrap_or_else(|_| fallback()),
    }
}

/// Tinybird's `boolean()`: `"0"` and `"false"` (any case) are false, otherwise truthiness.
fn boolean(v: &Val) -> bool {
    match v.plain().as_ref() {
        Val::Str(s) => !(s == "0" || s.eq_ignore_ascii_case("false")),
        other => other.truthy(),
    }
}

/// Validates and converts the elements of an `Array` parameter: a list, or text split at
/// commas. Returns the list for template logic and the typed array to bind.
fn convert_array(elem: &ParamType, type_name: &str, x: &Val) -> Result<(Val, Value), String> {
    let x = x.plain();
    let items: Vec<Val> = match x.as_ref() {
        Val::List(v) | Val::Tuple(v) => v.clone(),
        other => py_str(other)
            .split(',')
            .map(|s| Val::Str(s.to_string()))
            .collect(),
    };
    let mut logic = Vec::with_capacity(items.len());
    let mut bound = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let t = py_str(item);
        match elem {
            ParamType::String | ParamType::Array(_) | ParamType::Json => {
                logic.push(Val::Str(t.clone()));
                bound.push(Value::from(t));
            }
            ParamType::Boolean => {
                let b = boolean(item);
                logic.push(Val::Int(b as i128));
                bound.push(Value::UInt(b as u64));
            }
            _ => match convert_scalar(elem, &t) {
                Ok((l, b)) => {
                    logic.push(l);
                    bound.push(b);
                }
                Err(_) => {
                    let shown = if t.is_empty() {
                        "empty string".to_string()
                    } else {
                        t
                    };
                    return Err(format!(
                        "Error validating [{}][{i}] ({shown}) to type {type_name}",
                        py_str(x.as_ref())
                    ));
                }
            },
        }
    }
    Ok((Val::List(logic), Value::Array(bound.into())))
}

fn lit(l: &Lit) -> Val {
    match l {
        Lit::None => Val::None,
        Lit::Bool(b) => Val::Bool(*b),
        Lit::Int(i) => Val::Int(*i),
        Lit::Float(f) => Val::Float(*f),
        Lit::Str(s) => Val::Str(s.clone()),
    }
}

/// A constant expression's value, for static analysis of defaults and docs.
pub(crate) fn const_eval(e: &Expr) -> Option<Val> {
    match e {
        Expr::Lit(l) => Some(lit(l)),
        Expr::List(items) => items
            .iter()
            .map(const_eval)
            .collect::<Option<_>>()
            .map(Val::List),
        Expr::Tuple(items) => items
            .iter()
            .map(const_eval)
            .collect::<Option<_>>()
            .map(Val::Tuple),
        Expr::Neg(inner) => py_arith(BinOp::Sub, &Val::Int(0), &const_eval(inner)?).ok(),
        Expr::Bin(op, a, b) => py_arith(*op, &const_eval(a)?, &const_eval(b)?).ok(),
        _ => None,
    }
}

/// Short source text for an expression, for messages.
fn describe(e: &Expr) -> String {
    match e {
        Expr::Name(n) => n.clone(),
        Expr::Lit(l) => py_repr(&lit(l)),
        Expr::Method(_, m, _) => format!(".{}()", m.name()),
        _ => "expression".to_string(),
    }
}

fn is_number(v: &Val) -> bool {
    matches!(v, Val::Int(_) | Val::Float(_) | Val::Bool(_))
}

fn sql_text(s: String) -> Val {
    Val::Sql(vec![Piece::Text(s)])
}

/// Maps positional and keyword arguments onto a function's parameter names.
fn bind_args<'e>(fname: &str, spec: &[&str], args: &'e Args) -> R<Vec<Option<&'e Expr>>> {
    if args.positional.len() > spec.len() {
        return Err(format!(
            "{fname}() takes at most {} arguments ({} given)",
            spec.len(),
            args.positional.len()
        )
        .into());
    }
    let mut slots: Vec<Option<&Expr>> = vec![None; spec.len()];
    for (slot, e) in slots.iter_mut().zip(&args.positional) {
        *slot = Some(e);
    }
    for (k, e) in &args.keywords {
        match spec.iter().position(|s| s == k) {
            Some(i) if slots[i].is_none() => slots[i] = Some(e),
            Some(_) => {
                return Err(format!("{fname}() got multiple values for argument '{k}'").into())
            }
            None => {
                return Err(format!("{fname}() got an unexpected keyword argument '{k}'").into())
            }
        }
    }
    Ok(slots)
}

/// An HTTP status from `error(.., code)`: 4xx and 5xx are kept, anything else is 400.
fn status_code(code: Option<Val>) -> u16 {
    code.and_then(|c| c.as_int())
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..=599).contains(c))
        .unwrap_or(400)
}

/// Escapes text for a single-quoted SQL literal, as Tinybird does.
pub(crate) fn escape_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '\0' => out.push_str("\\0"),
            '\r' => out.push_str("\\r"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\u{1a}' => out.push_str("\\Z"),
            '\n' => out.push_str("\\n"),
            '"' | '\'' | '\\' | '%' | '`' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Quotes an identifier; names that could break out of the quotes are refused (Tinybird
/// drops `"` and backslash-escapes the rest, which Petrel's SQL parser would not honour).
fn quote_ident(name: &str, quote: char) -> R<String> {
    let name: String = name.chars().filter(|c| *c != '"').collect();
    if name
        .chars()
        .any(|c| c == '`' || c == '\\' || c == quote || c.is_control())
    {
        return Err(format!("invalid identifier '{name}'").into());
    }
    Ok(format!("{quote}{name}{quote}"))
}

/// `column('a.b')` → `` `a`.`b` ``.
fn column_sql(name: &str) -> R<String> {
    let parts: R<Vec<String>> = name.split('.').map(|p| quote_ident(p, '`')).collect();
    Ok(parts?.join("."))
}

/// What `{{ v }}` renders as: placeholders for typed values, text for structural SQL, and an
/// escaped literal for anything else (Tinybird's `expression_wrapper`).
fn to_pieces(v: &Val, src: &str) -> R<Vec<Piece>> {
    Ok(match v {
        Val::Typed(t) => t.pieces.clone(),
        Val::Sql(p) => p.clone(),
        Val::None => {
            let shown = if src.chars().count() > 20 {
                format!("{}...", src.chars().take(20).collect::<String>())
            } else {
                src.to_string()
            };
            return Err(format!("expression \"{shown}\" evaluated to null").into());
        }
        Val::Bool(b) => vec![Piece::Text(if *b { "true" } else { "false" }.into())],
        Val::Int(i) => vec![Piece::Text(i.to_string())],
        Val::Float(f) => vec![Piece::Text(float_repr(*f))],
        Val::Str(s) => vec![Piece::Text(format!("'{}'", escape_string(s)))],
        Val::List(items) | Val::Tuple(items) => {
            let is_list = matches!(v, Val::List(_));
            let open = match (is_list, items.len()) {
                (true, _) => "[",
                (false, 1) | (false, 0) => "tuple(",
                (false, _) => "(",
            };
            let mut out = vec![Piece::Text(open.into())];
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(Piece::Text(",".into()));
                }
                out.extend(to_pieces(item, src)?);
            }
            out.push(Piece::Text(if is_list { "]" } else { ")" }.into()));
            out
        }
        Val::Dict(_) => {
            return Err(
                format!("expression \"{src}\" is a dict, which can't be rendered as SQL").into(),
            )
        }
    })
}

fn compare(op: CmpOp, l: &Val, r: &Val) -> R<bool> {
    let order = |want: &dyn Fn(std::cmp::Ordering) -> bool| -> R<bool> {
        match py_cmp(l, r) {
            Some(o) => Ok(want(o)),
            None => Err(format!(
                "'{}' not supported between instances of '{}' and '{}'",
                op.symbol(),
                l.type_name(),
                r.type_name()
            )
            .into()),
        }
    };
    match op {
        CmpOp::Eq => Ok(py_eq(l, r)),
        CmpOp::Ne => Ok(!py_eq(l, r)),
        CmpOp::Lt => order(&|o| o.is_lt()),
        CmpOp::Le => order(&|o| o.is_le()),
        CmpOp::Gt => order(&|o| o.is_gt()),
        CmpOp::Ge => order(&|o| o.is_ge()),
        CmpOp::In => Ok(py_contains(r, l)?),
        CmpOp::NotIn => Ok(!py_contains(r, l)?),
        CmpOp::Is | CmpOp::IsNot => {
            let same = match (l.plain().as_ref(), r.plain().as_ref()) {
                (Val::None, Val::None) => true,
                (Val::Bool(a), Val::Bool(b)) => a == b,
                _ => false,
            };
            Ok(same == (op == CmpOp::Is))
        }
    }
}

fn index_value(t: &Val, i: &Val) -> R<Val> {
    let position = |len: usize| -> R<usize> {
        let Some(i) = i.as_int() else {
            return Err(format!("indices must be integers, not {}", i.type_name()).into());
        };
        let idx = if i < 0 { i + len as i128 } else { i };
        usize::try_from(idx)
            .ok()
            .filter(|p| *p < len)
            .ok_or_else(|| Fail::Msg(String::new()))
    };
    match t {
        Val::List(v) | Val::Tuple(v) => {
            position(v.len())
                .map(|p| v[p].clone())
                .map_err(|e| match e {
                    Fail::Msg(m) if m.is_empty() => Fail::Msg("list index out of range".into()),
                    e => e,
                })
        }
        Val::Str(s) => {
            let chars: Vec<char> = s.chars().collect();
            position(chars.len())
                .map(|p| Val::Str(chars[p].to_string()))
                .map_err(|e| match e {
                    Fail::Msg(m) if m.is_empty() => Fail::Msg("String index out of range. Check that string parameters have values before accessing specific characters (e.g., param[0]). Provide default values or add length checks in your template.".into()),
                    e => e,
                })
        }
        Val::Dict(pairs) => pairs
            .iter()
            .find(|(k, _)| py_eq(k, i))
            .map(|(_, v)| v.clone())
            .ok_or_else(|| Fail::Msg(format!("key {} not found", py_repr(i)))),
        other => Err(format!("'{}' object is not subscriptable", other.type_name()).into()),
    }
}

fn slice_value(t: &Val, lo: Option<&Val>, hi: Option<&Val>) -> R<Val> {
    let bound = |b: Option<&Val>, len: usize, default: usize| -> R<usize> {
        match b.map(|v| v.plain().into_owned()) {
            None | Some(Val::None) => Ok(default),
            Some(v) => {
                let i = v
                    .as_int()
                    .ok_or_else(|| Fail::Msg("slice indices must be integers".into()))?;
                let i = if i < 0 { i + len as i128 } else { i };
                Ok(i.clamp(0, len as i128) as usize)
            }
        }
    };
    match t {
        Val::List(v) | Val::Tuple(v) => {
            let (a, b) = (bound(lo, v.len(), 0)?, bound(hi, v.len(), v.len())?);
            let items = if a < b { v[a..b].to_vec() } else { Vec::new() };
            Ok(if matches!(t, Val::List(_)) {
                Val::List(items)
            } else {
                Val::Tuple(items)
            })
        }
        Val::Str(s) => {
            let chars: Vec<char> = s.chars().collect();
            let (a, b) = (
                bound(lo, chars.len(), 0)?,
                bound(hi, chars.len(), chars.len())?,
            );
            Ok(Val::Str(if a < b {
                chars[a..b].iter().collect()
            } else {
                String::new()
            }))
        }
        other => Err(format!("'{}' object is not subscriptable", other.type_name()).into()),
    }
}

fn str_arg(args: &[Val], i: usize, what: &str) -> R<Option<String>> {
    match args.get(i).map(|v| v.plain().into_owned()) {
        None | Some(Val::None) => Ok(None),
        Some(Val::Str(s)) => Ok(Some(s)),
        Some(other) => Err(format!("{what} must be str, not {}", other.type_name()).into()),
    }
}

fn method(recv: &Val, m: Method, args: &[Val]) -> R<Val> {
    let want = |n: usize| -> R<()> {
        if args.len() > n {
            return Err(format!(".{}() takes at most {n} arguments", m.name()).into());
        }
        Ok(())
    };
    match (recv, m) {
        (Val::Dict(pairs), Method::Get) => {
            want(2)?;
            let key = args.first().ok_or(".get() needs a key")?;
            Ok(pairs
                .iter()
                .find(|(k, _)| py_eq(k, key))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| args.get(1).cloned().unwrap_or(Val::None)))
        }
        (Val::Dict(pairs), Method::Keys) => Ok(Val::List(pairs.iter().map(|(k, _)| k.clone()).collect())),
        (Val::Dict(pairs), Method::Values) => {
            Ok(Val::List(pairs.iter().map(|(_, v)| v.clone()).collect()))
        }
        (Val::Dict(pairs), Method::Items) => Ok(Val::List(
            pairs
                .iter()
                .map(|(k, v)| Val::Tuple(vec![k.clone(), v.clone()]))
                .collect(),
        )),
        (Val::Str(s), Method::Split) => {
            want(2)?;
            let sep = str_arg(args, 0, "separator")?;
            let max = match args.get(1) {
                Some(v) => v.as_int().ok_or(".split() maxsplit must be an integer")?,
                None => -1,
            };
            let parts: Vec<String> = match (sep, max) {
                (Some(sep), _) if sep.is_empty() => return Err("empty separator".into()),
                (Some(sep), m) if m < 0 => s.split(sep.as_str()).map(String::from).collect(),
                (Some(sep), m) => s
                    .splitn(m as usize + 1, sep.as_str())
                    .map(String::from)
                    .collect(),
                (None, m) if m < 0 => s.split_whitespace().map(String::from).collect(),
                (None, m) => {
                    let mut out = Vec::new();
                    let mut rest = s.trim_start();
                    while !rest.is_empty() && (out.len() as i128) < m {
                        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                        out.push(rest[..end].to_string());
                        rest = rest[end..].trim_start();
                    }
                    if !rest.is_empty() {
                        out.push(rest.to_string());
                    }
                    out
                }
            };
            Ok(Val::List(parts.into_iter().map(Val::Str).collect()))
        }
        (Val::Str(s), Method::StartsWith | Method::EndsWith) => {
            want(1)?;
            let options: Vec<String> = match args.first().map(|v| v.plain().into_owned()) {
                Some(Val::Str(p)) => vec![p],
                Some(Val::Tuple(items)) => items.iter().map(py_str).collect(),
                _ => return Err(format!(".{}() needs a string", m.name()).into()),
            };
            Ok(Val::Bool(options.iter().any(|p| {
                if m == Method::StartsWith {
                    s.starts_with(p.as_str())
                } else {
                    s.ends_with(p.as_str())
                }
            })))
        }
        (Val::Str(s), Method::Strip | Method::LStrip | Method::RStrip) => {
            want(1)?;
            let chars = str_arg(args, 0, "strip chars")?;
            let pred = |c: char| match &chars {
                Some(set) => set.contains(c),
                None => c.is_whitespace(),
            };
            Ok(Val::Str(
                match m {
                    Method::Strip => s.trim_matches(pred),
                    Method::LStrip => s.trim_start_matches(pred),
                    _ => s.trim_end_matches(pred),
                }
                .to_string(),
            ))
        }
        (Val::Str(s), Method::Lower) => Ok(Val::Str(s.to_lowercase())),
        (Val::Str(s), Method::Upper) => Ok(Val::Str(s.to_uppercase())),
        (Val::Str(s), Method::Replace) => {
            want(3)?;
            let old = str_arg(args, 0, "replace() argument 1")?.unwrap_or_default();
            let new = str_arg(args, 1, "replace() argument 2")?.unwrap_or_default();
            let out = match args.get(2).and_then(|v| v.as_int()) {
                Some(n) if n >= 0 => s.replacen(old.as_str(), &new, n as usize),
                _ => s.replace(old.as_str(), &new),
            };
            if out.len() > MAX_LEN * 10 {
                return Err("string too long".into());
            }
            Ok(Val::Str(out))
        }
        (Val::Str(s), Method::Join) => {
            want(1)?;
            let items = args.first().ok_or(".join() needs a list")?.iter_items()?;
            let mut parts = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.plain().as_ref() {
                    Val::Str(p) => parts.push(p.clone()),
                    other => {
                        return Err(format!(
                            "sequence item {i}: expected str instance, {} found",
                            other.type_name()
                        )
                        .into())
                    }
                }
            }
            Ok(Val::Str(parts.join(s)))
        }
        (Val::Str(_), Method::Get) => Err("'str' object has no attribute 'get'. Make sure you're using an object/dictionary where trying to use .get()".into()),
        (other, m) => Err(format!(
            "'{}' object has no attribute '{}'",
            other.type_name(),
            m.name()
        )
        .into()),
    }
}

/// Python's `int()`.
fn to_int(v: &Val) -> R<i128> {
    match v {
        Val::Bool(b) => Ok(*b as i128),
        Val::Int(i) => Ok(*i),
        Val::Float(f) if f.is_finite() && f.abs() < 1e38 => Ok(f.trunc() as i128),
        Val::Float(_) => Err("cannot convert float infinity or NaN to integer".into()),
        Val::Str(s) => {
            let t: String = s.trim().chars().filter(|c| *c != '_').collect();
            t.parse::<i128>().map_err(|_| {
                format!("invalid literal for int() with base 10: {}", py_repr(v)).into()
            })
        }
        other => Err(format!(
            "int() argument must be a string, a bytes-like object or a real number, not '{}'",
            other.type_name()
        )
        .into()),
    }
}

/// The Python builtins templates may call.
fn builtin(f: &Func, args: &[Val], start: Option<Val>) -> R<Val> {
    let plain: Vec<Val> = args.iter().map(|a| a.plain().into_owned()).collect();
    let one = || -> R<&Val> {
        plain
            .first()
            .ok_or_else(|| Fail::Msg("missing 1 required positional argument".into()))
    };
    match f {
        Func::Len => match one()? {
            Val::Str(s) => Ok(Val::Int(s.chars().count() as i128)),
            Val::List(v) | Val::Tuple(v) => Ok(Val::Int(v.len() as i128)),
            Val::Dict(d) => Ok(Val::Int(d.len() as i128)),
            other => Err(format!("object of type '{}' has no len()", other.type_name()).into()),
        },
        Func::Str => Ok(Val::Str(plain.first().map(py_str).unwrap_or_default())),
        Func::Int => plain
            .first()
            .map_or(Ok(Val::Int(0)), |v| to_int(v).map(Val::Int)),
        Func::Float => match plain.first() {
            None => Ok(Val::Float(0.0)),
            Some(Val::Str(s)) => parse_float(s).map(Val::Float).ok_or_else(|| {
                format!(
                    "could not convert string to float: {}",
                    py_repr(&Val::Str(s.clone()))
                )
                .into()
            }),
            Some(v) => match v {
                Val::Bool(_) | Val::Int(_) | Val::Float(_) => {
                    py_arith(BinOp::Add, &Val::Float(0.0), v).map_err(Fail::Msg)
                }
                other => Err(format!(
                    "float() argument must be a string or a real number, not '{}'",
                    other.type_name()
                )
                .into()),
            },
        },
        Func::Range => {
            let ints: R<Vec<i128>> = plain
                .iter()
                .map(|v| {
                    v.as_int().ok_or_else(|| {
                        Fail::Msg(format!(
                            "'{}' object cannot be interpreted as an integer",
                            v.type_name()
                        ))
                    })
                })
                .collect();
            let (lo, hi, step) = match ints?.as_slice() {
                [hi] => (0, *hi, 1),
                [lo, hi] => (*lo, *hi, 1),
                [lo, hi, step] => (*lo, *hi, *step),
                _ => return Err("range expected 1 to 3 arguments".into()),
            };
            if step == 0 {
                return Err("range() arg 3 must not be zero".into());
            }
            let count = if (step > 0 && lo < hi) || (step < 0 && lo > hi) {
                let span = hi
                    .checked_sub(lo)
                    .and_then(i128::checked_abs)
                    .ok_or("range() too long")?;
                let stride = step.checked_abs().ok_or("range() step too large")?;
                span / stride + i128::from(span % stride != 0)
            } else {
                0
            };
            if count > MAX_LEN as i128 {
                return Err(format!("range() longer than {MAX_LEN} items").into());
            }
            Ok(Val::List(
                (0..count).map(|k| Val::Int(lo + k * step)).collect(),
            ))
        }
        Func::Enumerate => {
            let items = one()?.iter_items()?;
            let first = match start {
                Some(s) => s.as_int().ok_or("enumerate() start must be an integer")?,
                None => plain.get(1).and_then(|v| v.as_int()).unwrap_or(0),
            };
            Ok(Val::List(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, x)| Val::Tuple(vec![Val::Int(first.saturating_add(i as i128)), x]))
                    .collect(),
            ))
        }
        Func::Sum => {
            let mut acc = plain.get(1).cloned().unwrap_or(Val::Int(0));
            for x in one()?.iter_items()? {
                acc = py_arith(BinOp::Add, &acc, &x)?;
            }
            Ok(acc)
        }
        Func::Min | Func::Max => {
            let items = if plain.len() == 1 {
                one()?.iter_items()?
            } else {
                plain.clone()
            };
            let name = if *f == Func::Min { "min" } else { "max" };
            let mut best: Option<Val> = None;
            for x in items {
                best = Some(match best {
                    None => x,
                    Some(b) => {
                        let o = py_cmp(&x, &b).ok_or_else(|| {
                            Fail::Msg(format!(
                                "'<' not supported between instances of '{}' and '{}'",
                                x.type_name(),
                                b.type_name()
                            ))
                        })?;
                        let better = if *f == Func::Min {
                            o.is_lt()
                        } else {
                            o.is_gt()
                        };
                        if better {
                            x
                        } else {
                            b
                        }
                    }
                });
            }
            best.ok_or_else(|| format!("{name}() arg is an empty sequence").into())
        }
        Func::Abs => match one()? {
            Val::Int(i) => i
                .checked_abs()
                .map(Val::Int)
                .ok_or_else(|| "integer overflow".into()),
            Val::Bool(b) => Ok(Val::Int(*b as i128)),
            Val::Float(x) => Ok(Val::Float(x.abs())),
            other => Err(format!("bad operand type for abs(): '{}'", other.type_name()).into()),
        },
        Func::Round => {
            let x = one()?;
            let digits = plain.get(1).filter(|v| **v != Val::None);
            match (x, digits) {
                (Val::Int(_) | Val::Bool(_), None) => Ok(Val::Int(x.as_int().unwrap_or(0))),
                (Val::Float(v), None) => to_int(&Val::Float(v.round_ties_even())).map(Val::Int),
                (Val::Int(_) | Val::Bool(_) | Val::Float(_), Some(d)) => {
                    let d = d.as_int().ok_or("round() digits must be an integer")?;
                    let v = match x {
                        Val::Float(v) => *v,
                        other => other.as_int().unwrap_or(0) as f64,
                    };
                    let scale = 10f64.powi(d.clamp(-300, 300) as i32);
                    let r = (v * scale).round_ties_even() / scale;
                    Ok(if matches!(x, Val::Float(_)) {
                        Val::Float(r)
                    } else {
                        Val::Int(r as i128)
                    })
                }
                (other, _) => Err(format!(
                    "type {} doesn't define __round__ method",
                    other.type_name()
                )
                .into()),
            }
        }
        Func::List => Ok(Val::List(match plain.first() {
            Some(v) => v.iter_items()?,
            None => Vec::new(),
        })),
        Func::Sorted => {
            let mut items = one()?.iter_items()?;
            let mut bad = None;
            items.sort_by(|a, b| {
                py_cmp(a, b).unwrap_or_else(|| {
                    bad = Some(format!(
                        "'<' not supported between instances of '{}' and '{}'",
                        a.type_name(),
                        b.type_name()
                    ));
                    std::cmp::Ordering::Equal
                })
            });
            match bad {
                Some(m) => Err(m.into()),
                None => Ok(Val::List(items)),
            }
        }
        Func::Any => Ok(Val::Bool(one()?.iter_items()?.iter().any(Val::truthy))),
        Func::All => Ok(Val::Bool(one()?.iter_items()?.iter().all(Val::truthy))),
        _ => Err("this function can't be called here".into()),
    }
}

/// `date_diff_in_*`: the absolute difference of two dates in whole units, `None` when either
/// does not parse with the format or the backup format.
fn date_diff(
    d0: &Val,
    d1: &Val,
    format: &str,
    backup: Option<&str>,
    unit: DiffUnit,
) -> Option<i128> {
    let parse = |d: &Val| -> Option<i64> {
        let Val::Str(s) = d.plain().into_owned() else {
            return None;
        };
        strptime(&s, format).or_else(|| backup.and_then(|b| strptime(&s, b)))
    };
    let diff = (parse(d1)? as i128 - parse(d0)? as i128).abs();
    let per: i128 = match unit {
        DiffUnit::Days => 86_400_000_000,
        DiffUnit::Hours => 3_600_000_000,
        DiffUnit::Minutes => 60_000_000,
        DiffUnit::Seconds => 1_000_000,
    };
    Some(diff / per)
}

fn date_diff_message(unit: DiffUnit) -> String {
    match unit {
        DiffUnit::Days => "invalid date format in function `date_diff_in_days`, it must be ISO format date YYYY-MM-DD, e.g. 2018-09-26".into(),
        other => {
            let name = match other {
                DiffUnit::Hours => "hours",
                DiffUnit::Minutes => "minutes",
                _ => "seconds",
            };
            format!("invalid date_format in function `date_diff_in_{name}`, defaults to YYYY-MM-DD hh:mm:ss. Or %Y-%m-%d %H:%M:%S [.ssssss]Z, e.g. ms: 2022-12-19T18:42:22.591Z s:2022-12-19T18:42:22Z")
        }
    }
}
