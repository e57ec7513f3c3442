//! Deploys: a new project replaces the running one; unchanged views keep their state, and
//! destructive datasource changes need consent.

use super::*;

/// What a deploy changed, by resource kind.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DeployReport {
    /// Datasources added.
    pub new_datasource_names: Vec<String>,
    /// Datasources whose schema changed.
    pub changed_datasource_names: Vec<String>,
    /// Datasources removed.
    pub deleted_datasource_names: Vec<String>,
    /// Pipes added.
    pub new_pipe_names: Vec<String>,
    /// Pipes whose nodes changed.
    pub changed_pipe_names: Vec<String>,
    /// Pipes removed.
    pub deleted_pipe_names: Vec<String>,
}

impl DeployReport {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.new_datasource_names.is_empty()
            && self.changed_datasource_names.is_empty()
            && self.deleted_datasource_names.is_empty()
            && self.new_pipe_names.is_empty()
            && self.changed_pipe_names.is_empty()
            && self.deleted_pipe_names.is_empty()
    }
}

impl Runtime {
    /// Replaces the running project with `new` (Principle: unchanged views keep their state).
    /// New datasources start empty; a datasource whose schema changed or that is removed while
    /// it holds rows is a destructive change, refused unless `allow_destructive` (then its old
    /// data is set aside as `NAME.log.replaced-<ts>`). With `check`, only reports what would change.
    pub async fn deploy(
        &self,
        new: Project,
        allow_destructive: bool,
        check: bool,
    ) -> Result<DeployReport, RuntimeError> {
        self.refuse_on_replica()?;
        let old = self.project();
        let mut report = DeployReport::default();
        for (name, ds) in &new.datasources {
            match old.datasources.get(name) {
                None => report.new_datasource_names.push(name.clone()),
                Some(o) if o.columns != ds.columns => {
                    report.changed_datasource_names.push(name.clone())
                }
                Some(_) => {}
            }
        }
        for name in old
            .datasources
            .keys()
            .filter(|n| !new.datasources.contains_key(*n))
        {
            report.deleted_datasource_names.push(name.clone());
        }
        for (name, pipe) in &new.pipes {
            match old.pipes.get(name) {
                None => report.new_pipe_names.push(name.clone()),
                Some(o) if !o.same_definition(pipe) => report.changed_pipe_names.push(name.clone()),
                Some(_) => {}
            }
        }
        for name in old.pipes.keys().filter(|n| !new.pipes.contains_key(*n)) {
            report.deleted_pipe_names.push(name.clone());
        }
        let destructive: Vec<&String> = report
            .changed_datasource_names
            .iter()
            .chain(&report.deleted_datasource_names)
            .filter(|n| self.row_count(n).unwrap_or(0) > 0)
            .collect();
        if !destructive.is_empty() && !allow_destructive {
            return Err(RuntimeError::BadRequest(format!(
                "destructive changes to datasources that hold data: {}; deploy with allow_destructive_operations=true to replace their data",
                destructive.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        if check {
            return Ok(report);
        }
        let replaced: Vec<String> = report
            .changed_datasource_names
            .iter()
            .chain(&report.deleted_datasource_names)
            .cloned()
            .collect();
        {
            let mut sources = self.sources.write().unwrap_or_else(|e| e.into_inner());
            for name in &replaced {
                for table in [name.clone(), format!("{name}_quarantine")] {
                    sources.remove(&table);
                    self.engine.unregister_source(&table);
                    self.views.drop_readers(&table);
                    self.storage
                        .set_aside(&table, &wall_secs().to_string())
                        .and_then(|()| self.storage.delete_view_snapshots())
                        .map_err(|e| {
                            RuntimeError::Internal(format!("cannot set aside {table}: {e}"))
                        })?;
                }
            }
            for name in report
                .new_datasource_names
                .iter()
                .chain(&report.changed_datasource_names)
            {
                if let Some(ds) = new.datasources.get(name) {
                    sources.extend(open_sources(
                        &self.engine,
                        &self.storage,
                        &self.other_storages,
                        ds,
                    )?);
                }
            }
        }
        self.project.send_replace(Arc::new(new));
        // Plans are re-made from the new project; views whose plan is unchanged are found
        // again by their shape and keep their state.
        self.views.forget_plans();
        self.warm_default_views().await;
        Ok(report)
    }
}
