//! Static analysis of a parsed template, over every branch: the typed parameters it declares
//! (for docs and build output), the request parameter names it reads, and which parameters
//! are first declared as `Array` (their request values are split into lists for template
//! logic, as Tinybird does).

use std::collections::{BTreeMap, BTreeSet};

use crate::error::TemplateError;
use crate::expr::{Expr, Func};
use crate::parse::Node;
use crate::render::{const_eval, make_decl};
use crate::types::{ParamDecl, ParamType};
use crate::val::{py_str, Val};

/// Names Tinybird reserves for its own query-string parameters.
const RESERVED: [&str; 2] = ["format", "q"];

/// What static analysis finds.
pub(crate) struct Statics {
    pub(crate) declared: Vec<ParamDecl>,
    /// Names the template tests with `defined(name)`.
    pub(crate) guarded: BTreeSet<String>,
    pub(crate) names: BTreeSet<String>,
    pub(crate) arrays: BTreeMap<String, ParamType>,
}

/// Analyses the template's nodes.
pub(crate) fn analyze(nodes: &[Node]) -> Result<Statics, TemplateError> {
    let mut locals = BTreeSet::new();
    collect_locals(nodes, &mut locals);
    let mut guarded = BTreeSet::new();
    collect_guarded(nodes, &mut guarded);
    let mut a = Analyzer {
        locals,
        statics: Statics {
            declared: Vec::new(),
            guarded,
            names: BTreeSet::new(),
            arrays: BTreeMap::new(),
        },
        first_type: BTreeSet::new(),
    };
    a.nodes(nodes)?;
    Ok(a.statics)
}

fn collect_locals(nodes: &[Node], out: &mut BTreeSet<String>) {
    for node in nodes {
        let mut names = Vec::new();
        match node {
            Node::Set { target, .. } => target.names(&mut names),
            Node::For {
                target,
                body,
                otherwise,
                ..
            } => {
                target.names(&mut names);
                collect_locals(body, out);
                if let Some(o) = otherwise {
                    collect_locals(o, out);
                }
            }
            Node::If {
                branches,
                otherwise,
            } => {
                for b in branches {
                    collect_locals(&b.body, out);
                }
                if let Some(o) = otherwise {
                    collect_locals(o, out);
                }
            }
            Node::Text(_) | Node::Expr { .. } | Node::Break | Node::Continue => {}
        }
        out.extend(names);
    }
}

/// Every name tested with `defined(name)`, in any expression.
fn collect_guarded(nodes: &[Node], out: &mut BTreeSet<String>) {
    let mut visit = |e: &Expr| {
        e.walk(&mut |x| {
            if let Expr::Call(Func::Defined, args) = x {
                if let Some(Expr::Name(n)) = args.positional.first() {
                    out.insert(n.clone());
                }
            }
        })
    };
    fn each<'n>(nodes: &'n [Node], visit: &mut dyn FnMut(&'n Expr)) {
        for node in nodes {
            match node {
                Node::Text(_) | Node::Break | Node::Continue => {}
                Node::Expr { expr, .. } | Node::Set { expr, .. } => visit(expr),
                Node::If {
                    branches,
                    otherwise,
                } => {
                    for b in branches {
                        visit(&b.cond);
                        each(&b.body, visit);
                    }
                    if let Some(o) = otherwise {
                        each(o, visit);
                    }
                }
                Node::For {
                    iter,
                    body,
                    otherwise,
                    ..
                } => {
                    visit(iter);
                    each(body, visit);
                    if let Some(o) = otherwise {
                        each(o, visit);
                    }
                }
            }
        }
    }
    each(nodes, &mut visit);
}

struct Analyzer {
    locals: BTreeSet<String>,
    statics: Statics,
    first_type: BTreeSet<String>,
}

impl Analyzer {
    fn nodes(&mut self, nodes: &[Node]) -> Result<(), TemplateError> {
        for node in nodes {
            match node {
                Node::Text(_) | Node::Break | Node::Continue => {}
                Node::Expr { expr, line, .. } => self.expr(expr, *line)?,
                Node::Set { expr, line, .. } => self.expr(expr, *line)?,
                Node::If {
                    branches,
                    otherwise,
                } => {
                    for b in branches {
                        self.expr(&b.cond, b.line)?;
                        self.nodes(&b.body)?;
                    }
                    if let Some(o) = otherwise {
                        self.nodes(o)?;
                    }
                }
                Node::For {
                    iter,
                    body,
                    otherwise,
                    line,
                    ..
                } => {
                    self.expr(iter, *line)?;
                    self.nodes(body)?;
                    if let Some(o) = otherwise {
                        self.nodes(o)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn expr(&mut self, e: &Expr, line: usize) -> Result<(), TemplateError> {
        let mut found = Vec::new();
        let mut reserved = None;
        e.walk(&mut |x| match x {
            Expr::Name(n) if !self.locals.contains(n) => {
                if RESERVED.contains(&n.as_str()) && reserved.is_none() {
                    reserved = Some(n.clone());
                }
                found.push(x);
            }
            Expr::Call(Func::Scalar(_) | Func::Array | Func::Json, _) => found.push(x),
            _ => {}
        });
        if let Some(n) = reserved {
            return Err(TemplateError::Syntax {
                message: format!("\"{n}\" can not be used as a variable name"),
                line,
            });
        }
        for x in found {
            match x {
                Expr::Name(n) => {
                    self.statics.names.insert(n.clone());
                }
                Expr::Call(f, args) => self.typed_call(f, args, line),
                _ => {}
            }
        }
        Ok(())
    }

    fn typed_call(&mut self, f: &Func, args: &crate::expr::Args, line: usize) {
        let Some(Expr::Name(name)) = args.positional.first() else {
            return;
        };
        if self.locals.contains(name) {
            return;
        }
        let arg = |pos: usize, kw: &str| -> Option<Val> {
            args.positional
                .get(pos)
                .or_else(|| args.keywords.iter().find(|(k, _)| k == kw).map(|(_, e)| e))
                .and_then(const_eval)
        };
        // The positions of default, defined, required, description, enum, example, format.
        let (ty, first) = match f {
            Func::Scalar(t) => (t.clone(), 1),
            Func::Json => (ParamType::Json, 1),
            Func::Array => {
                let elem = match arg(1, "_type") {
                    Some(Val::Str(t)) => ParamType::array_element(&t),
                    Some(other) if other != Val::None => ParamType::array_element(&py_str(&other)),
                    _ => ParamType::String,
                };
                (ParamType::Array(Box::new(elem)), 2)
            }
            _ => return,
        };
        let default = arg(first, "default");
        let defined = arg(first + 1, "defined").is_none_or(|v| v.truthy());
        let meta: Vec<Option<Val>> = ["required", "description", "enum", "example", "format"]
            .iter()
            .enumerate()
            .map(|(i, kw)| arg(first + 2 + i, kw))
            .collect();
        let guarded = self.statics.guarded.contains(name);
        let decl = make_decl(name, &ty, default.as_ref(), defined, guarded, &meta, line);
        if self.first_type.insert(name.clone()) {
            if let ParamType::Array(elem) = &ty {
                self.statics.arrays.insert(name.clone(), (**elem).clone());
            }
        }
        if !self
            .statics
            .declared
            .iter()
            .any(|d| d.name == decl.name && d.ty == decl.ty)
        {
            self.statics.declared.push(decl);
        }
    }
}
