//! `petrel endpoint ls|url|data|token` and `petrel token ls|create jwt`: endpoints and
//! tokens of a running server.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use clap::{Args, Subcommand};
use hmac::{Hmac, Mac};

use super::client::{json, runtime, HostArgs};
use super::output::{print, Output};
use super::CliError;

/// `petrel endpoint ...`.
#[derive(Subcommand, Debug)]
pub enum EndpointCommand {
    /// List the endpoints and their parameters.
    Ls(ListArgs),
    /// Print an endpoint's URL.
    Url(PipeArgs),
    /// Read an endpoint: `--param country=DE`.
    Data(DataArgs),
    /// Print the first token that may read an endpoint.
    Token(PipeArgs),
}

/// A listing's options.
#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    host: HostArgs,
    /// human, json or csv.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
}

/// An endpoint's name.
#[derive(Args, Debug)]
pub struct PipeArgs {
    /// The pipe.
    pipe: String,
    #[command(flatten)]
    host: HostArgs,
}

/// Options of `petrel endpoint data`.
#[derive(Args, Debug)]
pub struct DataArgs {
    /// The pipe.
    pipe: String,
    #[command(flatten)]
    host: HostArgs,
    /// Parameters, `name=value`.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// json, csv or ndjson.
    #[arg(long, default_value = "json", value_parser = ["json", "csv", "ndjson"])]
    format: String,
}

/// Runs `petrel endpoint ...`.
pub fn run(command: EndpointCommand) -> Result<(), CliError> {
    runtime()?.block_on(async move {
        let client = reqwest::Client::new();
        match command {
            EndpointCommand::Ls(args) => {
                let token = args.host.token(&client).await?;
                let v = json(
                    client
                        .get(format!("{}/v0/pipes", args.host.base()))
                        .bearer_auth(token),
                )
                .await?;
                let rows: Vec<Vec<String>> = v["pipes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["endpoint"] == true)
                    .map(|p| {
                        let params = p["params"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|x| {
                                format!(
                                    "{}:{}",
                                    x["name"].as_str().unwrap_or(""),
                                    x["type"].as_str().unwrap_or("")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(" ");
                        vec![p["name"].as_str().unwrap_or("").to_string(), params]
                    })
                    .collect();
                print(args.output, &["name", "parameters"], &rows);
                Ok(())
            }
            EndpointCommand::Url(args) => {
                println!("{}/v0/pipes/{}.json", args.host.base(), args.pipe);
                Ok(())
            }
            EndpointCommand::Data(args) => {
                let token = args.host.token(&client).await?;
                let mut query: Vec<(String, String)> = Vec::new();
                for p in &args.params {
                    let (k, v) = p.split_once('=').ok_or_else(|| {
                        CliError::Failed(format!("--param needs name=value, got '{p}'"))
                    })?;
                    query.push((k.to_string(), v.to_string()));
                }
                let response = client
                    .get(format!(
                        "{}/v0/pipes/{}.{}",
                        args.host.base(),
                        args.pipe,
                        args.format
                    ))
                    .bearer_auth(token)
                    .query(&query)
                    .send()
                    .await
                    .map_err(|e| CliError::Failed(e.to_string()))?;
                let status = response.status();
                let text = response
                    .text()
                    .await
                    .map_err(|e| CliError::Failed(e.to_string()))?;
                if !status.is_success() {
                    return Err(CliError::Failed(format!("{status}: {text}")));
                }
                print!("{text}");
                if !text.ends_with('\n') {
                    println!();
                }
                Ok(())
            }
            EndpointCommand::Token(args) => {
                let token = args.host.token(&client).await?;
                let v = json(
                    client
                        .get(format!("{}/v0/tokens", args.host.base()))
                        .bearer_auth(token),
                )
                .await?;
                let found =
                    v["tokens"].as_array().into_iter().flatten().find(|t| {
                        t["scopes"].as_array().into_iter().flatten().any(|s| {
                            s["type"] == "PIPES:READ" && s["resource"] == args.pipe.as_str()
                        })
                    });
                match found.and_then(|t| t["token"].as_str()) {
                    Some(t) => {
                        println!("{t}");
                        Ok(())
                    }
                    None => Err(CliError::Failed(format!(
                        "no token reads the pipe '{}'",
                        args.pipe
                    ))),
                }
            }
        }
    })
}

/// `petrel token ...`.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// List the tokens and their scopes.
    Ls(ListArgs),
    /// Create a token.
    Create {
        #[command(subcommand)]
        kind: TokenKind,
    },
}

/// The kinds of token `petrel token create` makes.
#[derive(Subcommand, Debug)]
pub enum TokenKind {
    /// A static token with resource scopes, kept by the server (creating an existing name
    /// updates its scopes).
    Static(StaticArgs),
    /// A JWT (HS256, signed with the admin token), never stored: dashboards hand it to
    /// browsers, with parameters fixed per pipe.
    Jwt(JwtArgs),
}

/// Options of `petrel token create static`.
#[derive(Args, Debug)]
pub struct StaticArgs {
    /// The token's name.
    name: String,
    /// Scopes: `PIPES:READ`, `DATASOURCES:APPEND`, `DATASOURCES:READ` (with --resource).
    #[arg(long, required = true)]
    scope: Vec<String>,
    /// The pipe or datasource of each scope, in order.
    #[arg(long)]
    resource: Vec<String>,
    #[command(flatten)]
    host: HostArgs,
}

/// Options of `petrel token create jwt`.
#[derive(Args, Debug)]
pub struct JwtArgs {
    /// The token's name.
    name: String,
    /// Lifetime: `90s`, `30m`, `1h`, `7d`.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// PIPES:READ or DATASOURCES:READ.
    #[arg(long, default_value = "PIPES:READ")]
    scope: String,
    /// The pipe or datasource.
    #[arg(long)]
    resource: String,
    /// Parameters fixed for every request: `k=v,k2=v2`.
    #[arg(long)]
    fixed_params: Option<String>,
    /// The admin token that signs it (default: a local server's).
    #[command(flatten)]
    host: HostArgs,
}

fn ttl_seconds(ttl: &str) -> Result<i64, CliError> {
    let (n, unit) = ttl.split_at(ttl.find(|c: char| !c.is_ascii_digit()).unwrap_or(ttl.len()));
    let n: i64 = n
        .parse()
        .map_err(|_| CliError::Failed(format!("bad --ttl '{ttl}'")))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(CliError::Failed(format!(
                "bad --ttl unit in '{ttl}': use s, m, h or d"
            )))
        }
    };
    Ok(n * scale)
}

/// Encodes an HS256 JWT of `claims` signed with `key`.
pub fn encode_jwt(claims: &serde_json::Value, key: &str) -> Result<String, CliError> {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes())
        .map_err(|e| CliError::Failed(e.to_string()))?;
    mac.update(format!("{header}.{payload}").as_bytes());
    Ok(format!(
        "{header}.{payload}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    ))
}

/// Runs `petrel token ...`.
pub fn run_token(command: TokenCommand) -> Result<(), CliError> {
    runtime()?.block_on(async move {
        let client = reqwest::Client::new();
        match command {
            TokenCommand::Ls(args) => {
                let token = args.host.token(&client).await?;
                let v = json(client.get(format!("{}/v0/tokens", args.host.base())).bearer_auth(token)).await?;
                let rows: Vec<Vec<String>> = v["tokens"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        let scopes = t["scopes"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|s| match s["resource"].as_str() {
                                Some(r) => format!("{}:{r}", s["type"].as_str().unwrap_or("")),
                                None => s["type"].as_str().unwrap_or("").to_string(),
                            })
                            .collect::<Vec<_>>()
                            .join(" ");
                        vec![t["name"].as_str().unwrap_or("").to_string(), scopes, t["token"].as_str().unwrap_or("").to_string()]
                    })
                    .collect();
                print(args.output, &["name", "scopes", "token"], &rows);
                Ok(())
            }
            TokenCommand::Create { kind: TokenKind::Static(args) } => {
                let token = args.host.token(&client).await?;
                let mut query = vec![("name".to_string(), args.name.clone())];
                for (i, scope) in args.scope.iter().enumerate() {
                    let full = match args.resource.get(i) {
                        Some(r) => format!("{scope}:{r}"),
                        None => scope.clone(),
                    };
                    query.push(("scope".to_string(), full));
                }
                let v = json(client.post(format!("{}/v0/tokens", args.host.base())).bearer_auth(token).query(&query)).await?;
                println!("{}", v["token"].as_str().unwrap_or_default());
                Ok(())
            }
            TokenCommand::Create { kind: TokenKind::Jwt(args) } => {
                let key = args.host.token(&client).await?;
                let mut fixed = BTreeMap::new();
                for pair in args.fixed_params.iter().flat_map(|p| p.split(',')).filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once('=')
                        .ok_or_else(|| CliError::Failed(format!("--fixed-params needs k=v pairs, got '{pair}'")))?;
                    fixed.insert(k.to_string(), v.to_string());
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                let claims = serde_json::json!({
                    "workspace_id": "petrel",
                    "name": args.name,
                    "exp": now + ttl_seconds(&args.ttl)?,
                    "scopes": [{"type": args.scope, "resource": args.resource, "fixed_params": fixed}],
                });
                println!("{}", encode_jwt(&claims, &key)?);
                Ok(())
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwts_are_accepted_by_the_server_token_check() {
        let dir = std::env::temp_dir().join(format!("petrel-jwt-{}", std::process::id()));
        let tokens =
            crate::serve::Tokens::load(&dir.join("tokens.json"), "ADMIN", Vec::new()).unwrap();
        let claims = serde_json::json!({"exp": 4_000_000_000i64, "scopes": [{"type": "PIPES:READ", "resource": "p", "fixed_params": {"c": "DE"}}]});
        let token = encode_jwt(&claims, "ADMIN").unwrap();
        assert!(token.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."));
        let grant = tokens.grant(&token).expect("the server accepts it");
        assert!(grant.allows(&crate::serve::Scope::PipesRead("p".into())));
        assert_eq!(grant.fixed_params["p"]["c"], "DE");
        assert!(tokens
            .grant(&encode_jwt(&claims, "OTHER").unwrap())
            .is_none());
        assert_eq!(ttl_seconds("2h").unwrap(), 7200);
        assert!(ttl_seconds("2w").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
