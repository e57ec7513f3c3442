//! Tokens and scopes: the admin token, and the resource-scoped tokens that datafiles declare
//! with `TOKEN name READ|APPEND`. A token is sent as `Authorization: Bearer T` or `?token=T`.
//!
//! Token values are random secrets kept in `PROJECT/.petrel/tokens.json`, so they survive a
//! restart. They look like Tinybird's static tokens (`p.<base64url json>.<secret>`), whose
//! middle part clients read for the host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
#[derive(Debug, Default)]
pub struct Tokens {
    /// Replaced whole when a deploy changes the datafiles' TOKEN lines.
    by_value: std::sync::RwLock<BTreeMap<String, Token>>,
    /// The key JWTs are signed with: the admin token, as Tinybird signs with the workspace
    /// admin token.
    jwt_key: String,
    /// Where tokens created over the API are kept.
    api_file: Option<PathBuf>,
}

fn api_tokens_file(file: &Path) -> PathBuf {
    file.with_file_name("api_tokens.json")
}

/// Parses a scope as the token API writes it: `ADMIN`, `PIPES:READ:pipe`,
/// `DATASOURCES:APPEND:ds`, `DATASOURCES:READ:ds`.
pub fn parse_scope(text: &str) -> Option<Scope> {
    let mut parts = text.splitn(3, ':');
    let (a, b, c) = (parts.next()?, parts.next(), parts.next());
    match (a, b, c) {
        ("ADMIN", None, None) => Some(Scope::Admin),
        ("PIPES", Some("READ"), Some(r)) => Some(Scope::PipesRead(r.to_string())),
        ("DATASOURCES", Some("APPEND"), Some(r)) => Some(Scope::DatasourcesAppend(r.to_string())),
        ("DATASOURCES", Some("READ"), Some(r)) => Some(Scope::DatasourcesRead(r.to_string())),
        _ => None,
    }
}

/// What a request's token grants, static or JWT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The scopes.
    pub scopes: Vec<Scope>,
    /// JWT `fixed_params` per pipe: they override the request's parameters.
    pub fixed_params: BTreeMap<String, BTreeMap<String, String>>,
    /// Row filters per datasource (a JWT's `DATASOURCES:READ` with `filter` SQL or
    /// `fixed_params`, as one SQL condition): every query the token runs reads only the rows
    /// of that datasource for which it holds.
    pub row_filters: BTreeMap<String, String>,
}

impl Grant {
    /// True when the grant holds `scope` (or admin).
    pub fn allows(&self, scope: &Scope) -> bool {
        self.scopes.iter().any(|s| s == scope || *s == Scope::Admin)
    }
}

/// The claims of a Petrel/Tinybird JWT.
#[derive(Debug, Deserialize)]
struct JwtClaims {
    exp: i64,
    #[serde(default)]
    scopes: Vec<JwtScope>,
}

#[derive(Debug, Deserialize)]
struct JwtScope {
    #[serde(rename = "type")]
    kind: String,
    resource: String,
    #[serde(default)]
    fixed_params: BTreeMap<String, serde_json::Value>,
    /// Tinybird's SQL row filter on `DATASOURCES:READ`.
    #[serde(default)]
    filter: Option<String>,
}

/// A `DATASOURCES:READ` scope's row filter as one SQL condition: its `filter` and an
/// equality per `fixed_params` entry (`column = value`), joined with AND. `None` when a
/// fixed parameter does not name a column.
fn row_filter(scope: &JwtScope) -> Option<String> {
    let mut parts: Vec<String> = scope.filter.iter().map(|f| format!("({f})")).collect();
    for (column, value) in &scope.fixed_params {
        if !petrel_datafile::is_valid_name(column) {
            return None;
        }
        let literal = match value {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::String(s) => sql_string(s),
            other => sql_string(&other.to_string()),
        };
        parts.push(format!("`{column}` = {literal}"));
    }
    Some(parts.join(" AND "))
}

/// A SQL string literal holding `s`.
fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Verifies an HS256 JWT signed with `key`; its claims when the signature holds and it has
/// not expired.
fn verify_jwt(token: &str, key: &str) -> Option<JwtClaims> {
    use hmac::{Hmac, Mac};
    let mut parts = token.split('.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    if header["alg"] != "HS256" {
        return None;
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).ok()?;
    mac.update(format!("{}.{}", token.split('.').next()?, payload).as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(signature).ok()?)
        .ok()?;
    let claims: JwtClaims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    (claims.exp > now).then_some(claims)
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
        write_private(file, &serde_json::to_vec_pretty(&to_save)?)?;
        // Tokens created over the API live in their own file, next to the datafiles' ones.
        let api_file = api_tokens_file(file);
        let api: Vec<Token> = std::fs::read(&api_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let taken: Vec<String> = tokens.iter().map(|t| t.name.clone()).collect();
        tokens.extend(api.into_iter().filter(|t| !taken.contains(&t.name)));
        Ok(Tokens {
            by_value: std::sync::RwLock::new(
                tokens.into_iter().map(|t| (t.token.clone(), t)).collect(),
            ),
            jwt_key: admin.to_string(),
            api_file: Some(api_file),
        })
    }

    /// Creates (or, for an existing API token of that name, updates) a static token with
    /// `scopes`, kept across restarts. Datafile tokens and the admin token cannot be replaced.
    pub fn create_static(&self, name: &str, scopes: Vec<Scope>) -> Result<Token, String> {
        let Some(api_file) = &self.api_file else {
            return Err("this server keeps no API tokens".into());
        };
        let mut map = self.by_value.write().unwrap_or_else(|e| e.into_inner());
        let mut api: Vec<Token> = std::fs::read(api_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if map.values().any(|t| t.name == name) && !api.iter().any(|t| t.name == name) {
            return Err(format!(
                "the token '{name}' comes from the datafiles or is the admin token"
            ));
        }
        let value = api
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.token.clone())
            .unwrap_or_else(|| new_token_value(name));
        let token = Token {
            name: name.to_string(),
            token: value,
            scopes,
        };
        api.retain(|t| t.name != name);
        api.push(token.clone());
        let bytes = serde_json::to_vec_pretty(&api).map_err(|e| e.to_string())?;
        write_private(api_file, &bytes).map_err(|e| e.to_string())?;
        map.retain(|_, t| t.name != name);
        map.insert(token.token.clone(), token.clone());
        Ok(token)
    }

    /// What a token value grants: a static token's scopes, or a valid JWT's scopes and
    /// fixed parameters. `None` for unknown, forged or expired tokens.
    pub fn grant(&self, value: &str) -> Option<Grant> {
        if let Some(t) = self.read().get(value) {
            return Some(Grant {
                scopes: t.scopes.clone(),
                fixed_params: BTreeMap::new(),
                row_filters: BTreeMap::new(),
            });
        }
        let claims = verify_jwt(value, &self.jwt_key)?;
        let mut grant = Grant {
            scopes: Vec::new(),
            fixed_params: BTreeMap::new(),
            row_filters: BTreeMap::new(),
        };
        for s in claims.scopes {
            let scope = match s.kind.as_str() {
                "PIPES:READ" => Scope::PipesRead(s.resource.clone()),
                "DATASOURCES:READ" => {
                    if !s.fixed_params.is_empty() || s.filter.is_some() {
                        // A filter that cannot be written grants nothing, never every row.
                        let Some(condition) = row_filter(&s) else {
                            continue;
                        };
                        grant.row_filters.insert(s.resource.clone(), condition);
                    }
                    grant
                        .scopes
                        .push(Scope::DatasourcesRead(s.resource.clone()));
                    continue;
                }
                _ => continue,
            };
            if !s.fixed_params.is_empty() {
                let fixed = s
                    .fixed_params
                    .iter()
                    .map(|(k, v)| {
                        let text = match v {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (k.clone(), text)
                    })
                    .collect();
                grant.fixed_params.insert(s.resource.clone(), fixed);
            }
            grant.scopes.push(scope);
        }
        Some(grant)
    }

    /// The token with this value, if any.
    pub fn find(&self, value: &str) -> Option<Token> {
        self.read().get(value).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Token>> {
        self.by_value.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes over another set's tokens (after a deploy re-read the datafiles' TOKEN lines).
    pub fn replace_with(&self, other: Tokens) {
        let new = other
            .by_value
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        *self.by_value.write().unwrap_or_else(|e| e.into_inner()) = new;
    }

    /// Every token, for the token API.
    pub fn all(&self) -> Vec<Token> {
        self.read().values().cloned().collect()
    }

    /// True when `value` is a token (static or JWT) holding `scope` (or admin).
    pub fn allows(&self, value: &str, scope: &Scope) -> bool {
        self.grant(value).is_some_and(|g| g.allows(scope))
    }
}

/// Writes a file only its owner can read or write (mode 0600 on Unix): token files hold
/// secrets.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    // A file created earlier with a wider mode is narrowed too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)
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
        let reader = a
            .all()
            .into_iter()
            .find(|t| t.name == "reader")
            .unwrap()
            .token;
        assert!(b.allows(&reader, &Scope::PipesRead("p".into())));
        assert!(!b.allows(&reader, &Scope::PipesRead("q".into())));
        assert!(b.allows("ADMIN", &Scope::DatasourcesAppend("x".into())));
        assert!(!b.allows("nope", &Scope::PipesRead("p".into())));
        assert!(reader.starts_with("p."));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn jwt(key: &str, claims: &serde_json::Value) -> String {
        use hmac::{Hmac, Mac};
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(format!("{header}.{payload}").as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{header}.{payload}.{sig}")
    }

    #[test]
    fn jwts_signed_with_the_admin_token_grant_their_scopes() {
        let tokens = Tokens {
            by_value: Default::default(),
            jwt_key: "ADMIN".into(),
            api_file: None,
        };
        let claims = serde_json::json!({"workspace_id": "petrel", "name": "t", "exp": 4_000_000_000i64,
            "scopes": [{"type": "PIPES:READ", "resource": "p", "fixed_params": {"country": "DE", "n": 3}}]});
        let grant = tokens.grant(&jwt("ADMIN", &claims)).unwrap();
        assert!(grant.allows(&Scope::PipesRead("p".into())));
        assert!(!grant.allows(&Scope::PipesRead("q".into())));
        assert_eq!(grant.fixed_params["p"]["country"], "DE");
        assert_eq!(grant.fixed_params["p"]["n"], "3");
        assert!(
            tokens.grant(&jwt("OTHER", &claims)).is_none(),
            "a forged signature is refused"
        );
        let expired = serde_json::json!({"exp": 1, "scopes": []});
        assert!(
            tokens.grant(&jwt("ADMIN", &expired)).is_none(),
            "an expired token is refused"
        );
    }
}
