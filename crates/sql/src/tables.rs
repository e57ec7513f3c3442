//! The tables a query reads, as Tinybird's `POST /v0/sql_tables` reports them: the Classic
//! CLI asks it for each node to order what it pushes by dependency.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{self, Visit, Visitor};
use sqlparser::dialect::ClickHouseDialect;
use sqlparser::parser::Parser;

use crate::preprocess::prepare;
use crate::SqlError;

/// Collects the relations a statement names and the names its `WITH` clauses define.
#[derive(Default)]
struct Relations {
    read: Vec<(String, String)>,
    defined: BTreeSet<String>,
}

impl Visitor for Relations {
    type Break = ();

    fn pre_visit_query(&mut self, query: &ast::Query) -> ControlFlow<()> {
        for cte in query.with.iter().flat_map(|w| &w.cte_tables) {
            self.defined.insert(cte.alias.name.value.clone());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ast::ObjectName) -> ControlFlow<()> {
        let parts: Vec<String> = relation
            .0
            .iter()
            .filter_map(|p| p.as_ident().map(|i| i.value.clone()))
            .collect();
        match parts.as_slice() {
            [table] => self.read.push((String::new(), table.clone())),
            [database, table] => self.read.push((database.clone(), table.clone())),
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// The `(database, table)` pairs `sql` reads (database empty when unqualified), in order of
/// first mention, without the names its own `WITH` clauses define.
pub fn tables_read(sql: &str) -> Result<Vec<(String, String)>, SqlError> {
    let prepared = prepare(sql)?;
    let statements = Parser::new(&ClickHouseDialect {})
        .with_tokens_with_locations(prepared.tokens)
        .parse_statements()
        .map_err(|e| SqlError::new(e.to_string()))?;
    let mut relations = Relations::default();
    let _ = statements.visit(&mut relations);
    let mut seen = BTreeSet::new();
    Ok(relations
        .read
        .into_iter()
        .filter(|(db, t)| !(db.is_empty() && relations.defined.contains(t)))
        .filter(|r| seen.insert(r.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sql: &str) -> Vec<String> {
        tables_read(sql)
            .unwrap()
            .into_iter()
            .map(|(db, t)| {
                if db.is_empty() {
                    t
                } else {
                    format!("{db}.{t}")
                }
            })
            .collect()
    }

    #[test]
    fn lists_each_table_once_without_ctes() {
        assert_eq!(
            names(
                "WITH recent AS (SELECT * FROM events WHERE ts > now() - 60) \
                 SELECT a.id, b.name FROM recent a JOIN users b ON a.id = b.id \
                 WHERE a.id IN (SELECT id FROM vip) UNION ALL SELECT 1, 'x' FROM events"
            ),
            ["events", "users", "vip"]
        );
        assert_eq!(names("SELECT count() FROM db.t"), ["db.t"]);
        assert!(tables_read("SELECT FROM WHERE").is_err());
    }
}
