//! Rendering and planning: a pipe's templates rendered for a request's parameters, planned
//! node by node over the project's datasources, pipes and materialized targets; ad-hoc SQL
//! and `q=` planned over what they may read.

use super::*;

impl Project {
    /// Renders every node of a pipe for a request.
    pub fn render_pipe(
        &self,
        pipe: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<RenderedPipe, ProjectError> {
        self.render_with(pipe, &Params::from(params.clone()))
    }

    pub(super) fn render_with(
        &self,
        pipe: &str,
        params: &Params,
    ) -> Result<RenderedPipe, ProjectError> {
        let pin = self.pipes.get(pipe).and_then(|p| p.time_pin);
        self.render_pinned(pipe, params, pin, RequestTime::now())
    }

    /// Renders a pipe with its clock reads pinned to `at` as `pin` says (and the pipes it
    /// reads alike).
    pub(super) fn render_pinned(
        &self,
        pipe: &str,
        params: &Params,
        pin: Option<TimePin>,
        at: RequestTime,
    ) -> Result<RenderedPipe, ProjectError> {
        let p = self
            .pipes
            .get(pipe)
            .ok_or_else(|| ProjectError::NotFound(format!("The pipe '{pipe}' does not exist")))?;
        let mut out = RenderedPipe {
            shape: String::new(),
            values: BTreeMap::new(),
            nodes: Vec::new(),
            types: BTreeMap::new(),
            params: params.clone(),
            pin,
            at,
        };
        let last = p.endpoint.unwrap_or(p.nodes.len().saturating_sub(1));
        for node in p.nodes.iter().take(last + 1) {
            let mut r = node.template.render(params)?;
            if let Some(pin) = pin {
                r.sql = super::clock::pin_time(&r.sql, pin, at);
            }
            // A parameter another node rendered with a different value (its own default)
            // gets a placeholder of its own here: each node keeps the value it was given.
            let clashes: Vec<String> = r
                .values
                .iter()
                .filter(|(k, v)| out.values.get(*k).is_some_and(|o| o != *v))
                .map(|(k, _)| k.clone())
                .collect();
            for old in clashes {
                let new = (2..)
                    .map(|n| format!("{old}__node{n}"))
                    .find(|c| !out.values.contains_key(c) && !r.values.contains_key(c))
                    .unwrap_or_else(|| format!("{old}__node"));
                r.sql = rename_placeholder(&r.sql, &old, &new);
                if let Some(v) = r.values.remove(&old) {
                    r.values.insert(new.clone(), v);
                }
                if let Some(t) = r.types.remove(&old) {
                    r.types.insert(new, t);
                }
            }
            out.shape.push_str(&r.sql);
            out.shape.push('\u{0}');
            for (k, v) in r.values {
                out.values.insert(k, v);
            }
            for (k, t) in r.types {
                if let Some(ct) = t.column_type() {
                    out.types.insert(k, ct);
                }
            }
            out.nodes.push(r.sql);
        }
        // Pipes read as tables are rendered with the same parameters: their SQL is part of
        // this pipe's shape, so a plan or view is never reused across different renderings.
        for other in &p.reads_pipes {
            if out.nodes.iter().any(|sql| names_table(sql, other)) {
                let other_pin = pin.max(self.pipes.get(other).and_then(|o| o.time_pin));
                if let Some(r) = nested(|| self.render_pinned(other, params, other_pin, at).ok()) {
                    out.shape.push_str(&r.shape);
                    out.values.extend(r.values);
                    out.types.extend(r.types);
                }
            }
        }
        Ok(out)
    }

    /// The plan of a rendered pipe: the one made at load when the shapes match, else planned
    /// now (see [`Project::plan_rendered`]).
    pub fn plan_for(&self, pipe: &str, rendered: &RenderedPipe) -> Result<Query, ProjectError> {
        if let Some(checked) = self.pipes.get(pipe).and_then(|p| p.checked_plan.as_ref()) {
            if checked.0 == rendered.shape {
                return Ok(checked.1.clone());
            }
        }
        self.plan_rendered(pipe, rendered)
    }

    /// Plans a rendered pipe: each node in turn, later nodes reading earlier ones.
    pub fn plan_rendered(
        &self,
        pipe: &str,
        rendered: &RenderedPipe,
    ) -> Result<Query, ProjectError> {
        let p = self
            .pipes
            .get(pipe)
            .ok_or_else(|| ProjectError::NotFound(format!("The pipe '{pipe}' does not exist")))?;
        let mut catalog = ProjectCatalog {
            project: self,
            nodes: HashMap::new(),
            types: &rendered.types,
            named: Default::default(),
            params: &rendered.params,
            bind_pipes: false,
            pin: rendered.pin,
            at: rendered.at,
        };
        let mut last = None;
        for (node, sql) in p.nodes.iter().zip(&rendered.nodes) {
            let query =
                plan_query(sql, &catalog).map_err(|e| sql_error(&p.file, &node.sql_map, &e))?;
            let as_table = query
                .clone()
                .bind_limits(&rendered.values)
                .map_err(|e| ProjectError::Sql(e.to_string()))?
                .into_plan();
            catalog.nodes.insert(node.name.clone(), as_table);
            last = Some(query);
        }
        last.ok_or_else(|| ProjectError::Sql(format!("pipe '{pipe}' has no nodes")))
    }

    /// Plans an ad-hoc query (`/v0/sql`, `petrel sql`) over datasources and endpoint pipes.
    /// A query starting with `%` is a template over `params`. Also returns the datasources,
    /// quarantine tables and pipes the query names (what a token must be allowed to read).
    pub fn plan_sql(
        &self,
        sql: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<PlannedSql, ProjectError> {
        let template = Template::parse(sql)?;
        let rendered = template.render(&Params::from(params.clone()))?;
        let types = rendered
            .types
            .iter()
            .filter_map(|(k, t)| t.column_type().map(|c| (k.clone(), c)))
            .collect();
        let params = Params::from(params.clone());
        let catalog = ProjectCatalog {
            project: self,
            nodes: HashMap::new(),
            types: &types,
            named: Default::default(),
            params: &params,
            bind_pipes: true,
            pin: None,
            at: RequestTime::now(),
        };
        let query =
            plan_query(&rendered.sql, &catalog).map_err(|e| ProjectError::Sql(e.to_string()))?;
        Ok((query, rendered.values, catalog.named.into_inner()))
    }

    /// Plans `sql` over one datasource's stored rows (no engine read rules), for data
    /// operations such as delete by condition.
    pub fn plan_raw(&self, datasource: &str, sql: &str) -> Result<Query, ProjectError> {
        let ds = self.datasources.get(datasource).ok_or_else(|| {
            ProjectError::NotFound(format!("Data Source '{datasource}' not found"))
        })?;
        plan_query(sql, &RawCatalog { ds }).map_err(|e| ProjectError::Sql(e.to_string()))
    }

    /// Plans `sql` over a result that it reads as the table `_` (an endpoint's `q=`).
    pub fn plan_sql_over(
        &self,
        sql: &str,
        columns: &[Column],
    ) -> Result<(Query, BTreeMap<String, Value>), ProjectError> {
        let catalog = ResultCatalog { columns };
        let query = plan_query(sql, &catalog).map_err(|e| {
            let mut message = e.to_string();
            if e.message.starts_with("unknown table") {
                message.push_str(" (q= reads only the table _, the pipe's own result)");
            }
            ProjectError::Sql(message)
        })?;
        Ok((query, BTreeMap::new()))
    }
}

fn sql_error(file: &Path, map: &SqlMap, e: &SqlError) -> ProjectError {
    if e.line == 0 {
        return ProjectError::Sql(format!("{}: {}", file.display(), e.message));
    }
    let loc = map.file_loc(e.line as usize, e.column.max(1) as usize);
    ProjectError::Sql(located(file, loc.line, loc.column, &e.message))
}

/// An ad-hoc query's plan, its parameter values, and the datasources, quarantine tables and
/// pipes its SQL names.
pub type PlannedSql = (Query, BTreeMap<String, Value>, BTreeSet<String>);

/// What a query may read: earlier nodes, datasources, quarantine tables and endpoint pipes
/// (with their default parameters).
struct ProjectCatalog<'a> {
    project: &'a Project,
    nodes: HashMap<String, Plan>,
    types: &'a BTreeMap<String, ColumnType>,
    /// The datasources, quarantine tables and pipes the query named.
    named: std::cell::RefCell<BTreeSet<String>>,
    /// The request's parameters, for the pipes the query reads.
    params: &'a Params,
    /// Bind the parameters of the pipes the query reads into their plans (ad-hoc SQL); a
    /// pipe's own rendering carries their values instead (see `render_with`).
    bind_pipes: bool,
    /// The clock pin of the pipe being planned, and its time: the pipes it reads get them too.
    pin: Option<TimePin>,
    at: RequestTime,
}

/// What an endpoint's `q=` may read: the table `_` (the pipe's own result) and nothing
/// else, so a token scoped to one pipe never reaches raw rows, other pipes or quarantine
/// tables through it (Tinybird's rule).
struct ResultCatalog<'a> {
    columns: &'a [Column],
}

impl Catalog for ResultCatalog<'_> {
    fn table(&self, name: &str) -> Option<TableRef> {
        (name == "_").then(|| TableRef::Datasource(self.columns.to_vec()))
    }

    fn param_type(&self, _name: &str) -> Option<ColumnType> {
        None
    }
}

/// A catalog with only one datasource's stored rows: what its engine's read SQL reads.
pub(super) struct RawCatalog<'a> {
    pub(super) ds: &'a Datasource,
}

impl Catalog for RawCatalog<'_> {
    fn table(&self, name: &str) -> Option<TableRef> {
        (name == self.ds.name).then(|| TableRef::Datasource(self.ds.schema()))
    }

    fn param_type(&self, _name: &str) -> Option<ColumnType> {
        None
    }
}

thread_local! {
    /// How deep pipe-as-table resolution is nested: pipes that read each other in a cycle
    /// stop here instead of recursing forever.
    static NESTING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// The materialized targets being resolved, innermost last.
    static RESOLVING: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `sql` with the placeholder `$old` (not `$old_more`) written `$new`.
fn rename_placeholder(sql: &str, old: &str, new: &str) -> String {
    let needle = format!("${old}");
    let mut out = String::with_capacity(sql.len() + 8);
    let mut rest = sql;
    while let Some(i) = rest.find(&needle) {
        let after = &rest[i + needle.len()..];
        let whole = !after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        out.push_str(&rest[..i]);
        if whole {
            out.push('$');
            out.push_str(new);
        } else {
            out.push_str(&needle);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// True when `sql` mentions `name` as a whole word (a table it may read).
pub(super) fn names_table(sql: &str, name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    sql.match_indices(name).any(|(i, _)| {
        let before = sql[..i].chars().next_back();
        let after = sql[i + name.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// Runs `f` one pipe deeper; `None` past 16 levels (a cycle).
fn nested<T>(f: impl FnOnce() -> Option<T>) -> Option<T> {
    let depth = NESTING.with(|n| n.get());
    if depth >= 16 {
        return None;
    }
    NESTING.with(|n| n.set(depth + 1));
    let out = f();
    NESTING.with(|n| n.set(depth));
    out
}

impl ProjectCatalog<'_> {
    /// The target of a materialized pipe, read as the pipe's maintained result with the
    /// target's column names (columns the pipe does not produce take their defaults).
    fn materialized_target(&self, name: &str) -> Option<Plan> {
        let pipes = self.project.materialized.get(name)?;
        let target = self.project.datasources.get(name)?;
        // A materialized pipe that reads its own target reads the target's stored rows, not
        // its own result again (which would nest without end).
        if RESOLVING.with(|r| r.borrow().iter().any(|t| t == name)) {
            return None;
        }
        RESOLVING.with(|r| r.borrow_mut().push(name.to_string()));
        // Every pipe writing the target adds its rows (a pipe that does not plan adds none).
        let results: Vec<Plan> = pipes
            .iter()
            .filter_map(|pipe| self.materialized_result(pipe, target))
            .collect();
        RESOLVING.with(|r| r.borrow_mut().pop());
        let result = match results.len() {
            0 => return None,
            1 => results.into_iter().next()?,
            _ => Plan {
                columns: results[0].columns.clone(),
                node: petrel_sql::PlanNode::Union { inputs: results },
            },
        };
        // The target's engine rules (ReplacingMergeTree read as FINAL, TTL) apply to the
        // pipes' rows as they apply to a datasource's rows.
        match &target.read_sql {
            Some(sql) => {
                let over = ResultAsTable {
                    name,
                    plan: &result,
                };
                Some(plan_query(sql, &over).ok()?.into_plan())
            }
            None => Some(result),
        }
    }

    /// The pipe's result with its target's columns (columns it does not produce take their
    /// defaults).
    fn materialized_result(&self, pipe: &str, target: &Datasource) -> Option<Plan> {
        let rendered = self.project.render_with(pipe, &Params::new()).ok()?;
        let query = self.project.plan_rendered(pipe, &rendered).ok()?;
        let plan = query
            .bind_limits(&rendered.values)
            .ok()?
            .into_plan()
            .bind(&rendered.values)
            .ok()?;
        let mut exprs = Vec::new();
        let mut columns = Vec::new();
        for c in &target.columns {
            match plan.columns.iter().position(|p| p.name == c.column.name) {
                // The target's declared type, as ClickHouse converts what a materialized view
                // inserts (a Nullable target column keeps the pipe's NULLs as NULLs).
                Some(i) => {
                    let column = petrel_sql::Expr::Column(i);
                    let simple = |t: &ColumnType| match t {
                        ColumnType::LowCardinality(inner) => (**inner).clone(),
                        other => other.clone(),
                    };
                    let scalar = |t: &ColumnType| {
                        !matches!(
                            t.base(),
                            ColumnType::AggregateState { .. }
                                | ColumnType::Array(_)
                                | ColumnType::Map(..)
                                | ColumnType::Tuple(_)
                        )
                    };
                    let converts = simple(&plan.columns[i].ty) != simple(&c.column.ty)
                        && scalar(&c.column.ty)
                        && scalar(&plan.columns[i].ty);
                    exprs.push(if converts {
                        petrel_sql::Expr::call(
                            petrel_sql::functions::Func::Cast(c.column.ty.clone()),
                            vec![column],
                        )
                    } else {
                        column
                    });
                    columns.push(Column {
                        name: c.column.name.clone(),
                        ty: if converts {
                            c.column.ty.clone()
                        } else {
                            plan.columns[i].ty.clone()
                        },
                    });
                }
                None => {
                    exprs.push(petrel_sql::Expr::Literal(c.column.ty.default_value()));
                    columns.push(c.column.clone());
                }
            }
        }
        Some(Plan {
            node: petrel_sql::PlanNode::Project {
                input: Box::new(plan),
                exprs,
            },
            columns,
        })
    }
}

/// A catalog with one table: a plan read under a datasource's name.
struct ResultAsTable<'a> {
    name: &'a str,
    plan: &'a Plan,
}

impl Catalog for ResultAsTable<'_> {
    fn table(&self, name: &str) -> Option<TableRef> {
        (name == self.name).then(|| TableRef::Plan(self.plan.clone()))
    }

    fn param_type(&self, _name: &str) -> Option<ColumnType> {
        None
    }
}

impl Catalog for ProjectCatalog<'_> {
    fn table(&self, name: &str) -> Option<TableRef> {
        if let Some(plan) = self.nodes.get(name) {
            return Some(TableRef::Plan(plan.clone()));
        }
        let found = self.resource(name);
        if found.is_some() {
            self.named.borrow_mut().insert(name.to_string());
        }
        found
    }

    fn param_type(&self, name: &str) -> Option<ColumnType> {
        self.types.get(name).cloned()
    }
}

impl ProjectCatalog<'_> {
    /// A datasource, quarantine table, materialized target or endpoint pipe by name.
    fn resource(&self, name: &str) -> Option<TableRef> {
        if let Some(plan) = nested(|| self.materialized_target(name)) {
            return Some(TableRef::Plan(plan));
        }
        if let Some(ds) = self.project.datasources.get(name) {
            if let Some(sql) = &ds.read_sql {
                let raw = RawCatalog { ds };
                return plan_query(sql, &raw)
                    .ok()
                    .map(|q| TableRef::Plan(q.into_plan()));
            }
            return Some(TableRef::Datasource(ds.schema()));
        }
        if let Some(ds) = name
            .strip_suffix("_quarantine")
            .and_then(|n| self.project.datasources.get(n))
        {
            return Some(TableRef::Datasource(quarantine_columns(&ds.schema())));
        }
        // Any pipe that loads reads as a table (Tinybird's rule in both formats), rendered
        // with the request's parameters.
        let pipe = self
            .project
            .pipes
            .get(name)
            .filter(|p| p.broken.is_none() && p.sink.is_none())?;
        nested(|| {
            let rendered = self
                .project
                .render_pinned(
                    &pipe.name,
                    self.params,
                    self.pin.max(pipe.time_pin),
                    self.at,
                )
                .ok()?;
            let query = self.project.plan_rendered(&pipe.name, &rendered).ok()?;
            let plan = query.bind_limits(&rendered.values).ok()?.into_plan();
            if self.bind_pipes {
                Some(TableRef::Plan(plan.bind(&rendered.values).ok()?))
            } else {
                Some(TableRef::Plan(plan))
            }
        })
    }
}
