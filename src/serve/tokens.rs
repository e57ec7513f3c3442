//! Tokens and scopes: the admin token, and the resource-scoped tokens that datafiles declare
//! with `TOKEN name READ|APPEND`. A token is sent as `Authorization: Bearer T` or `?token=T`.
//!
//! Token values are random secrets kept in `PROJECT/.petrel/tokens.json`, so they survive a
//! restart. They look like Tinybird's static tokens (`p.<base64url json>.<secret>`), whose
//! middle part clients read for the host.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// What a token may do.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", content = "resource")]
pub enum Scope {
    /// Everything.
    #[serde(rename = "ADMIN")]
    Admin,
    /// Read one pipe's endpoint (and subscribe to it).
    #[serde(rename = "PIPES:READ")]
    PipesRead(String),
    /// Append to one datasource.
    #[serde(rename = "DATASOURCES:APPEND")]
    DatasourcesAppend(String),
    /// Read one datasource (in SQL queries).
    #[serde(rename = "DATASOURCES:READ")]
    DatasourcesRead(String),
}

/// A named token and its scopes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The token's name.
    pub name: String,
    /// The secret value.
    pub token: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

/// All tokens of a running server.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_value: BTreeMap<String, Token>,
}

/// Makes a new token value in Tinybird's static-token shape.
pub fn new_token_value(id: &str) -> String {
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut secret);
    let meta = serde_json::json!({"u": "petrel", "id": id, "host": null}).to_string();
    format!(
        "p.{}.{}",
        URL_SAFE_NO_PAD.encode(meta.as_bytes()),
        secret
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

impl From<crate::project::Grant> for Scope {
    fn from(g: crate::project::Grant) -> Scope {
        use crate::project::Grant;
        match g {
            Grant::ReadPipe(p) => Scope::PipesRead(p),
            Grant::ReadDatasource(d) => Scope::DatasourcesRead(d),
            Grant::AppendDatasource(d) => Scope::DatasourcesAppend(d),
        }
    }
}

impl Tokens {
    /// Loads the tokens saved in `file` (if any), keeps the ones whose names `wanted` still
    /// declares (making values for new ones), sets the admin token, and saves the result.
    pub fn load(
        file: &Path,
        admin: &str,
        wanted: Vec<(String, Vec<Scope>)>,
    ) -> std::io::Result<Tokens> {
        let saved: Vec<Token> = std::fs::read(file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut tokens = Vec::new();
        tokens.push(Token {
            name: "admin token".into(),
            token: admin.to_string(),
            scopes: vec![Scope::Admin],
        });
        for (name, scopes) in wanted {
            let token = saved
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.token.clone())
                .unwrap_or_else(|| new_token_value(&name));
            tokens.push(Token {
                name,
                token,
                scopes,
            });
        }
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let to_save: Vec<&Token> = tokens.iter().filter(|t| t.name != "admin token").collect();
        std::fs::write(file, serde_json::to_vec_pretty(&to_save)?)?;
        Ok(Tokens {
            by_value: tokens.into_iter().map(|t| (t.token.clone(), t)).collect(),
        })
    }

    /// The token with this value, if any.
    pub fn find(&self, value: &str) -> Option<&Token> {
        self.by_value.get(value)
    }

    /// Every token, for the token API.
    pub fn all(&self) -> impl Iterator<Item = &Token> {
        self.by_value.values()
    }

    /// True when `value` is a token holding `scope` (or admin).
    pub fn allows(&self, value: &str, scope: &Scope) -> bool {
        self.find(value)
            .is_some_and(|t| t.scopes.iter().any(|s| s == scope || *s == Scope::Admin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_tokens_persist_and_check() {
        let dir = std::env::temp_dir().join(format!("petrel-tokens-{}", std::process::id()));
        let file = dir.join("tokens.json");
        let wanted = vec![("reader".to_string(), vec![Scope::PipesRead("p".into())])];
        let a = Tokens::load(&file, "ADMIN", wanted.clone()).unwrap();
        let b = Tokens::load(&file, "ADMIN", wanted).unwrap();
        let reader = a.all().find(|t| t.name == "reader").unwrap().token.clone();
        assert!(b.allows(&reader, &Scope::PipesRead("p".into())));
        assert!(!b.allows(&reader, &Scope::PipesRead("q".into())));
        assert!(b.allows("ADMIN", &Scope::DatasourcesAppend("x".into())));
        assert!(!b.allows("nope", &Scope::PipesRead("p".into())));
        assert!(reader.starts_with("p."));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
