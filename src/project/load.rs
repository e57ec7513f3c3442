//! Loading a project: datafiles parsed into datasources (types, defaults, sorting keys,
//! Kafka settings), connections and pipes (nodes, parameters, sinks, copy jobs, tokens), then
//! every published pipe planned with its defaults so errors are reported at load.

use super::*;

impl Project {
    /// Loads every datafile under `dir`. Errors (unparsable files, unknown types, pipes whose
    /// SQL cannot be planned) come back together, each `file:line:column: message`; the
    /// project is returned alongside when it can still run without the broken pipes.
    pub fn load_with_errors(dir: &Path) -> (Project, Vec<String>) {
        let mut project = Project {
            root: dir.to_path_buf(),
            ..Project::default()
        };
        let mut errors = Vec::new();
        let mut files = Vec::new();
        if let Err(e) = datafiles(dir, &mut files) {
            errors.push(format!(
                "{}: cannot read the project folder: {e}",
                dir.display()
            ));
            return (project, errors);
        }
        // Secrets: the environment first, then the project's `.env.local` and `.env`.
        let mut dotenv: BTreeMap<String, String> = BTreeMap::new();
        for file in [".env", ".env.local"] {
            if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
                for line in text.lines() {
                    let line = line.trim();
                    if line.starts_with('#') {
                        continue;
                    }
                    if let Some((k, v)) = line.split_once('=') {
                        let v = v.trim().trim_matches('"').trim_matches('\'');
                        dotenv.insert(k.trim().to_string(), v.to_string());
                    }
                }
            }
        }
        let env = |name: &str| {
            std::env::var(name)
                .ok()
                .or_else(|| dotenv.get(name).cloned())
        };
        let mut parsed_pipes = Vec::new();
        for path in &files {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(format!("{}: cannot read: {e}", path.display()));
                    continue;
                }
            };
            // Pipes use tb_secret() in their templates; other files are rendered first.
            let is_pipe = path.extension().is_some_and(|x| x == "pipe");
            let rendered = if is_pipe {
                Ok(text)
            } else {
                petrel_datafile::render_secrets(&text, &env)
            };
            let text = match rendered {
                Ok(t) => t,
                Err(e) => {
                    errors.push(located(path, e.line, e.column, &e.message));
                    continue;
                }
            };
            match petrel_datafile::parse_file_with_env(path, &text, &env) {
                Err(es) => errors.extend(
                    es.iter()
                        .map(|e| located(path, e.line, e.column, &e.message)),
                ),
                Ok(Datafile::Datasource(ds)) => project.add_datasource(path, *ds, &mut errors),
                Ok(Datafile::Pipe(pipe)) => parsed_pipes.push((path.clone(), *pipe)),
                Ok(Datafile::Connection(c)) => project.add_connection(path, *c),
            }
        }
        project.classic = is_classic(parsed_pipes.iter().map(|(_, p)| p));
        for (path, pipe) in parsed_pipes {
            project.add_pipe(&path, pipe, &mut errors);
        }
        project.link_pipes();
        project.check_pipes(&mut errors);
        (project, errors)
    }

    /// Loads a project, failing on any error.
    pub fn load(dir: &Path) -> Result<Project, Vec<String>> {
        let (project, errors) = Project::load_with_errors(dir);
        if errors.is_empty() {
            Ok(project)
        } else {
            Err(errors)
        }
    }

    fn add_datasource(
        &mut self,
        path: &Path,
        ds: petrel_datafile::Datasource,
        errors: &mut Vec<String>,
    ) {
        for w in &ds.warnings {
            self.warnings
                .push(located(path, w.loc.line, w.loc.column, &w.message));
        }
        let mut columns = Vec::new();
        for c in &ds.columns {
            let Some(type_text) = &c.type_text else {
                errors.push(located(
                    path,
                    c.loc.line,
                    c.loc.column,
                    format!("column '{}' needs a type", c.name),
                ));
                continue;
            };
            let ty = match ColumnType::parse(type_text) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(located(path, c.loc.line, c.loc.column, e));
                    continue;
                }
            };
            let default = match &c.default {
                None => None,
                Some(text) => {
                    let d = column_default(&ty, text);
                    if d.is_none() {
                        self.warnings.push(located(
                            path,
                            c.loc.line,
                            c.loc.column,
                            format!("DEFAULT {text} is not supported yet: missing values get the type's default"),
                        ));
                    }
                    d
                }
            };
            columns.push(ColumnSpec {
                column: Column {
                    name: c.name.clone(),
                    ty: ty.stored(),
                },
                json_path: c.json_path.clone(),
                default,
            });
        }
        let engine = &ds.engine;
        if let Some(loc) = engine.loc {
            let name = format!("{:?}", engine.engine);
            // Aggregating and Summing targets of materialized pipes are exact: the view is
            // maintained whole and -Merge reads its states.
            if !matches!(
                name.as_str(),
                "MergeTree" | "AggregatingMergeTree" | "SummingMergeTree" | "ReplacingMergeTree"
            ) {
                self.warnings.push(located(
                    path,
                    loc.line,
                    loc.column,
                    format!("ENGINE {name} is maintained as MergeTree for now: rows are neither replaced nor merged"),
                ));
            }
        }
        // The datasource before its read and storage rules, to plan those over.
        let probe = Datasource {
            name: ds.name.clone(),
            columns,
            read_sql: None,
            kafka: None,
            partition_key: None,
            expiry: None,
            file: path.to_path_buf(),
            description: ds.description.clone(),
            engine: crate::project::EngineSummary {
                engine: format!("{:?}", ds.engine.engine),
                sorting_key: ds.engine.sorting_key.as_ref().map(|s| s.value.clone()),
                partition_key: ds.engine.partition_key.as_ref().map(|s| s.value.clone()),
                ttl: ds.engine.ttl.as_ref().map(|s| s.value.clone()),
            },
        };
        let read_sql = engine_read_sql(&ds).and_then(|sql| {
            match plan_query(&sql, &RawCatalog { ds: &probe }) {
                Ok(_) => Some(sql),
                Err(e) => {
                    let loc = engine.loc.unwrap_or(petrel_datafile::Loc::new(1, 1));
                    self.warnings.push(located(
                        path,
                        loc.line,
                        loc.column,
                        format!("the engine's replacing/TTL rules are not applied: {e}"),
                    ));
                    None
                }
            }
        });
        let kafka = kafka_source(&ds);
        let mut storage_rule = |what: &str, setting: Option<&petrel_datafile::Setting>| {
            let setting =
                setting.filter(|s| !s.value.trim().is_empty() && s.value.trim() != "tuple()")?;
            let text = setting.value.trim();
            let text = text
                .strip_suffix("DELETE")
                .or_else(|| text.strip_suffix("delete"))
                .unwrap_or(text);
            match row_expr(&probe, text) {
                Ok(e) => Some(e),
                Err(e) => {
                    let loc = setting.loc;
                    self.warnings.push(located(
                        path,
                        loc.line,
                        loc.column,
                        format!("{what} is not applied to stored parts: {e}"),
                    ));
                    None
                }
            }
        };
        let partition_key = storage_rule("ENGINE_PARTITION_KEY", ds.engine.partition_key.as_ref());
        let expiry = storage_rule("ENGINE_TTL", ds.engine.ttl.as_ref());
        for t in &ds.tokens {
            let grant = match t.scope {
                TokenScope::Append => Grant::AppendDatasource(ds.name.clone()),
                _ => Grant::ReadDatasource(ds.name.clone()),
            };
            self.tokens.entry(t.name.clone()).or_default().push(grant);
        }
        self.datasources.insert(
            ds.name.clone(),
            Datasource {
                read_sql,
                kafka,
                partition_key,
                expiry,
                ..probe
            },
        );
    }

    fn add_connection(&mut self, path: &Path, c: petrel_datafile::Connection) {
        for w in &c.warnings {
            self.warnings
                .push(located(path, w.loc.line, w.loc.column, &w.message));
        }
        if !format!("{:?}", c.kind).eq_ignore_ascii_case("kafka") {
            self.warnings.push(located(
                path,
                c.kind_loc.line,
                c.kind_loc.column,
                "only Kafka connections are used; this one is kept but not used",
            ));
            return;
        }
        let Some(servers) = c.kafka_bootstrap_servers() else {
            self.warnings.push(located(
                path,
                c.kind_loc.line,
                c.kind_loc.column,
                "KAFKA_BOOTSTRAP_SERVERS is missing",
            ));
            return;
        };
        self.connections.insert(
            c.name.clone(),
            KafkaConnection {
                name: c.name.clone(),
                bootstrap_servers: servers.to_string(),
                security_protocol: c
                    .kafka_security_protocol()
                    .unwrap_or("PLAINTEXT")
                    .to_string(),
                sasl_mechanism: c.kafka_sasl_mechanism().map(str::to_string),
                key: c.kafka_key().map(str::to_string),
                secret: c.kafka_secret().map(str::to_string),
                ssl_ca_pem: c.kafka_ssl_ca_pem().map(str::to_string),
            },
        );
    }

    fn add_pipe(&mut self, path: &Path, pipe: petrel_datafile::Pipe, errors: &mut Vec<String>) {
        for w in &pipe.warnings {
            self.warnings
                .push(located(path, w.loc.line, w.loc.column, &w.message));
        }
        let mut nodes = Vec::new();
        let mut params: Vec<ParamDecl> = Vec::new();
        let mut broken = None;
        for n in &pipe.nodes {
            match Template::parse(&n.sql) {
                Ok(template) => {
                    for d in template.declared_params() {
                        if !params.iter().any(|p| p.name == d.name) {
                            params.push(d);
                        }
                    }
                    nodes.push(PipeNode {
                        name: n.name.clone(),
                        template,
                        sql_map: n.sql_map.clone(),
                    });
                }
                Err(e) => {
                    let line = match &e {
                        TemplateError::Syntax { line, .. }
                        | TemplateError::UnknownFunction { line, .. }
                        | TemplateError::Eval { line, .. } => *line,
                        _ => 1,
                    };
                    let loc = n.sql_map.file_loc(line, 1);
                    let msg = located(path, loc.line, loc.column, &e);
                    errors.push(msg.clone());
                    broken = Some(msg);
                }
            }
        }
        let mut sink = None;
        let mut copy = None;
        let endpoint = match &pipe.kind {
            PipeKind::Endpoint { node } => nodes.iter().position(|n| &n.name == node),
            // Tinybird Classic publishes an untyped pipe's last node (`tb push`).
            PipeKind::Standard if self.classic => nodes.len().checked_sub(1),
            PipeKind::Standard => None,
            PipeKind::Materialized { datasource, .. } => {
                self.materialized
                    .entry(datasource.clone())
                    .or_default()
                    .push(pipe.name.clone());
                None
            }
            PipeKind::Sink {
                connection,
                target: petrel_datafile::SinkTarget::Kafka { topic },
                ..
            } => {
                let node = pipe
                    .nodes
                    .iter()
                    .find(|n| n.settings.contains_key("EXPORT_KAFKA_ENVELOPE"));
                let envelope = match node.and_then(|n| n.setting("EXPORT_KAFKA_ENVELOPE")) {
                    None | Some("changes") => SinkEnvelope::Changes,
                    Some("upsert") => SinkEnvelope::Upsert,
                    Some("debezium") => SinkEnvelope::Debezium,
                    Some(other) => {
                        let loc = node
                            .and_then(|n| n.settings.get("EXPORT_KAFKA_ENVELOPE"))
                            .map(|s| s.loc)
                            .unwrap_or(petrel_datafile::Loc::new(1, 1));
                        errors.push(located(
                            path,
                            loc.line,
                            loc.column,
                            format!("EXPORT_KAFKA_ENVELOPE must be changes, upsert or debezium, not '{other}'"),
                        ));
                        SinkEnvelope::Changes
                    }
                };
                sink = Some(KafkaSink {
                    connection: connection.clone(),
                    topic: topic.clone(),
                    envelope,
                });
                None
            }
            PipeKind::Copy {
                target_datasource,
                schedule,
                mode,
                ..
            } => {
                let schedule = schedule.as_deref().filter(|s| s.trim() != "@on-demand");
                let every_minutes = schedule.and_then(schedule_minutes);
                if let (Some(s), None) = (schedule, every_minutes) {
                    self.warnings.push(located(
                        path,
                        1,
                        1,
                        format!("COPY_SCHEDULE '{s}' is not run by Petrel yet (use */N * * * *, @hourly or @daily): the copy runs on demand only"),
                    ));
                }
                copy = Some(CopyJob {
                    target: target_datasource.clone(),
                    every_minutes,
                    replace: *mode == petrel_datafile::CopyMode::Replace,
                });
                None
            }
            other => {
                let what = match other {
                    PipeKind::Sink { .. } => "TYPE sink to object storage",
                    _ => "TYPE stream",
                };
                self.warnings
                    .push(located(path, 1, 1, format!("{what} pipes are not run yet")));
                None
            }
        };
        for t in &pipe.tokens {
            self.tokens
                .entry(t.name.clone())
                .or_default()
                .push(Grant::ReadPipe(pipe.name.clone()));
        }
        self.pipes.insert(
            pipe.name.clone(),
            Pipe {
                name: pipe.name.clone(),
                description: pipe.description.clone(),
                nodes,
                endpoint,
                params,
                broken,
                sink,
                copy,
                file: path.to_path_buf(),
                reads_pipes: Vec::new(),
                time_pin: None,
                checked_plan: None,
            },
        );
    }

    /// The request parameters `petrel build` plans a pipe with: its defaults (with a
    /// placeholder for each required parameter), then each branch value on top of them (see
    /// the `branches` module). A green build means each of these answers.
    pub fn build_parameter_sets(&self, pipe: &str) -> Vec<BTreeMap<String, String>> {
        let (base, branches) = self.build_branches(pipe);
        let mut sets = vec![base.clone()];
        for (param, value) in branches {
            let mut with = base.clone();
            with.insert(param, value);
            sets.push(with);
        }
        sets
    }

    /// A pipe's build parameters: the defaults, and the `(parameter, value)` branches.
    fn build_branches(&self, pipe: &str) -> (BTreeMap<String, String>, Vec<(String, String)>) {
        let Some(p) = self.pipes.get(pipe) else {
            return Default::default();
        };
        (
            check_values(&p.params),
            branches::branch_values(&self.template_sources(pipe), &p.params),
        )
    }

    /// The template text of a pipe's nodes and of the pipes it reads.
    fn template_sources(&self, pipe: &str) -> Vec<&str> {
        let Some(p) = self.pipes.get(pipe) else {
            return Vec::new();
        };
        std::iter::once(p)
            .chain(p.reads_pipes.iter().filter_map(|r| self.pipes.get(r)))
            .flat_map(|p| &p.nodes)
            .map(|n| n.template.source())
            .collect()
    }

    /// Records which other pipes each pipe's templates mention.
    fn link_pipes(&mut self) {
        let names: Vec<String> = self.pipes.keys().cloned().collect();
        for pipe in self.pipes.values_mut() {
            pipe.reads_pipes = names
                .iter()
                .filter(|n| **n != pipe.name)
                .filter(|n| {
                    pipe.nodes
                        .iter()
                        .any(|node| super::plan::names_table(node.template.source(), n))
                })
                .cloned()
                .collect();
        }
        // A pipe takes the parameters of the pipes it reads (they are rendered with its
        // request's parameters); a few rounds cover chains of pipes.
        for _ in 0..4 {
            let declared: BTreeMap<String, Vec<ParamDecl>> = self
                .pipes
                .values()
                .map(|p| (p.name.clone(), p.params.clone()))
                .collect();
            for pipe in self.pipes.values_mut() {
                for read in &pipe.reads_pipes {
                    for d in declared.get(read).into_iter().flatten() {
                        if !pipe.params.iter().any(|p| p.name == d.name) {
                            pipe.params.push(d.clone());
                        }
                    }
                }
            }
        }
    }

    /// Plans every endpoint with its defaults (or placeholders for required parameters).
    fn check_pipes(&mut self, errors: &mut Vec<String>) {
        let names: Vec<String> = self
            .pipes
            .values()
            .filter(|p| (p.endpoint.is_some() || p.sink.is_some()) && p.broken.is_none())
            .map(|p| p.name.clone())
            .collect();
        // Materialized pipes first: endpoints read their targets.
        let mut names: Vec<String> = self
            .materialized
            .values()
            .flatten()
            .cloned()
            .chain(names)
            .collect();
        names.dedup();
        for name in names {
            let params = check_params(&self.pipes[&name].params);
            let plan_with = |pin: Option<TimePin>| {
                self.render_pinned(&name, &params, pin, RequestTime::now())
                    .and_then(|r| Ok((self.plan_rendered(&name, &r)?, r.shape)))
            };
            let mut outcome = plan_with(None);
            // A pipe reading the clock outside temporal filters is served pinned to the
            // request's time (by the day if it can be, else by the second); materialized
            // and sink pipes must be maintained, so they cannot be.
            let pinnable = self.pipes[&name].sink.is_none()
                && !self.materialized.values().flatten().any(|m| *m == name);
            let reads_clock = self
                .template_sources(&name)
                .into_iter()
                .any(clock::mentions_clock);
            if let Err(e) = &outcome {
                if pinnable && (clock::is_clock_error(&e.to_string()) || reads_clock) {
                    for pin in [TimePin::Day, TimePin::Second] {
                        if let Ok(planned) = plan_with(Some(pin)) {
                            if let Some(p) = self.pipes.get_mut(&name) {
                                p.time_pin = Some(pin);
                            }
                            outcome = Ok(planned);
                            break;
                        }
                    }
                }
            }
            if let Ok((query, shape)) = &outcome {
                if let Some(p) = self.pipes.get_mut(&name) {
                    p.checked_plan = Some(Arc::new((shape.clone(), query.clone())));
                }
                // Every branch the templates can take must plan too (a failure is a build
                // error; the pipe is still served for the requests that plan).
                let mut pin = self.pipes[&name].time_pin;
                let (base, branches) = self.build_branches(&name);
                for (param, value) in branches {
                    let mut with = base.clone();
                    with.insert(param.clone(), value.clone());
                    let with = Params::from(with);
                    let plan_pinned = |pin: Option<TimePin>| {
                        self.render_pinned(&name, &with, pin, RequestTime::now())
                            .and_then(|r| self.plan_rendered(&name, &r))
                    };
                    let mut planned = plan_pinned(pin);
                    // A branch that reads the clock outside temporal filters pins the pipe.
                    if let Err(ProjectError::Sql(m)) = &planned {
                        if pinnable && clock::is_clock_error(m) {
                            for finer in [TimePin::Day, TimePin::Second] {
                                if Some(finer) > pin {
                                    if let Ok(q) = plan_pinned(Some(finer)) {
                                        pin = Some(finer);
                                        planned = Ok(q);
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    if let Err(ProjectError::Sql(m)) = planned {
                        errors.push(format!("{m} (with {param}={value})"));
                    }
                }
                if let Some(p) = self.pipes.get_mut(&name) {
                    p.time_pin = pin;
                }
            }
            if let Err(e) = outcome {
                let file = self.pipes[&name].file.display().to_string();
                let msg = match e {
                    ProjectError::Custom { .. } => continue,
                    ProjectError::Sql(m)
                    | ProjectError::Template(m)
                    | ProjectError::NotFound(m) => {
                        if m.starts_with(&file) {
                            m
                        } else {
                            format!("{file}: {m}")
                        }
                    }
                };
                errors.push(msg.clone());
                if let Some(p) = self.pipes.get_mut(&name) {
                    p.broken = Some(msg);
                }
            }
        }
    }
}

/// True when a project follows Tinybird Classic's rules: a pipe uses Classic-only syntax, or
/// untyped pipes are all it has (Forward projects publish endpoints with `TYPE endpoint`).
fn is_classic<'a>(mut pipes: impl Iterator<Item = &'a petrel_datafile::Pipe> + Clone) -> bool {
    pipes.clone().any(|p| p.classic_syntax)
        || !pipes.any(|p| matches!(p.kind, PipeKind::Endpoint { .. }))
}

/// A datasource's Kafka settings, when it names a topic.
fn kafka_source(ds: &petrel_datafile::Datasource) -> Option<KafkaSource> {
    let get = |k: &str| ds.kafka.get(k).map(|s| s.value.clone());
    Some(KafkaSource {
        connection: get("KAFKA_CONNECTION_NAME")?,
        topic: get("KAFKA_TOPIC")?,
        group_id: get("KAFKA_GROUP_ID").unwrap_or_else(|| format!("petrel-{}", ds.name)),
        auto_offset_reset: get("KAFKA_AUTO_OFFSET_RESET").unwrap_or_else(|| "latest".into()),
    })
}

/// `expr` planned over one row of `ds` (no read rules): a partition key or TTL expression.
fn row_expr(ds: &Datasource, expr: &str) -> Result<Expr, String> {
    let sql = format!("SELECT {expr} FROM `{}`", ds.name);
    let query = plan_query(&sql, &RawCatalog { ds }).map_err(|e| e.to_string())?;
    match query.plan.node {
        PlanNode::Project { input, mut exprs }
            if exprs.len() == 1 && matches!(input.node, PlanNode::Scan { .. }) =>
        {
            Ok(exprs.remove(0))
        }
        _ => Err(format!("'{expr}' is not an expression over the row")),
    }
}

/// The SQL a datasource is read through (see [`Datasource::read_sql`]).
fn engine_read_sql(ds: &petrel_datafile::Datasource) -> Option<String> {
    use petrel_datafile::Engine;
    let engine = &ds.engine;
    let name = format!("`{}`", ds.name);
    let mut sql = None;
    if engine.engine == Engine::ReplacingMergeTree {
        let key = engine.sorting_key.as_ref()?.value.clone();
        let order = match &engine.ver {
            Some(v) => format!("`{}` DESC", v.value),
            None => "1".to_string(),
        };
        let mut q =
            format!("SELECT * FROM (SELECT * FROM {name} ORDER BY {order} LIMIT 1 BY {key})");
        if let Some(d) = &engine.is_deleted {
            q.push_str(&format!(" WHERE `{}` = 0", d.value));
        }
        sql = Some(q);
    }
    if let Some(ttl) = engine.ttl.as_ref().filter(|t| !t.value.trim().is_empty()) {
        // `expr + INTERVAL n unit [DELETE]`: the row lives while that is after now().
        let expr = ttl
            .value
            .trim()
            .trim_end_matches("DELETE")
            .trim_end_matches("delete")
            .trim();
        let inner = sql
            .map(|q| format!("({q})"))
            .unwrap_or_else(|| name.clone());
        sql = Some(format!("SELECT * FROM {inner} WHERE ({expr}) > now()"));
    }
    sql
}

/// Minutes between runs of a `COPY_SCHEDULE`, for the forms Petrel runs by itself.
fn schedule_minutes(schedule: &str) -> Option<u64> {
    match schedule.trim() {
        "@hourly" | "0 * * * *" => Some(60),
        "@daily" | "0 0 * * *" => Some(24 * 60),
        "* * * * *" => Some(1),
        other => {
            let (first, rest) = other.split_once(' ')?;
            let n = first.strip_prefix("*/")?.parse().ok()?;
            (rest.split_whitespace().all(|f| f == "*") && n > 0).then_some(n)
        }
    }
}

/// Every datafile under `dir`, recursively, skipping hidden folders.
fn datafiles(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let path = e.path();
        let hidden = e.file_name().to_string_lossy().starts_with('.');
        if path.is_dir() && !hidden {
            datafiles(&path, out)?;
        } else if matches!(
            path.extension().and_then(|x| x.to_str()),
            Some("datasource" | "pipe" | "connection")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

pub(super) fn located(
    file: &Path,
    line: usize,
    column: usize,
    message: impl std::fmt::Display,
) -> String {
    format!("{}:{}:{}: {}", file.display(), line, column, message)
}

/// Parses a column's `DEFAULT` text.
fn column_default(ty: &ColumnType, text: &str) -> Option<ColumnDefault> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("now()") || t.eq_ignore_ascii_case("now64()") {
        return Some(ColumnDefault::Now);
    }
    let unquoted = t
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .unwrap_or(t);
    ty.parse_text(unquoted).map(ColumnDefault::Value)
}

/// Values to render a template with when checking it at load time: the defaults, and a
/// placeholder for each required parameter (as Tinybird's build check does).
fn check_params(decls: &[ParamDecl]) -> Params {
    Params::from(check_values(decls))
}

/// [`check_params`] as request parameters.
fn check_values(decls: &[ParamDecl]) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    for d in decls.iter().filter(|d| d.required) {
        let v = match &d.ty {
            ParamType::String => "__no_value__",
            ParamType::Date => "2019-01-01",
            // Tinybird's own placeholders (its DateTime64 needs the fraction).
            ParamType::DateTime => "2019-01-01 00:00:00",
            ParamType::DateTime64 => "2019-01-01 00:00:00.000",
            ParamType::Json => "{}",
            _ => "0",
        };
        p.insert(d.name.clone(), v.to_string());
    }
    p
}
