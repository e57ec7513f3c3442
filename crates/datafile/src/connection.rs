//! `.connection` files: how to reach Kafka, S3, GCS, DynamoDB or Postgres.

use std::collections::BTreeMap;

use crate::lexer::{read_commands, Command, Ctx};
use crate::{DatafileError, DatafileWarning, Loc};

/// A parsed `.connection` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    /// Resource name (the file stem), which data sources and sinks refer to.
    pub name: String,
    /// The `TYPE` of the connection.
    pub kind: ConnectionKind,
    /// Where the TYPE value is.
    pub kind_loc: Loc,
    /// `DESCRIPTION`.
    pub description: Option<String>,
    /// Every other keyword, keyed by upper-case keyword (`KAFKA_BOOTSTRAP_SERVERS`, `S3_REGION`, ...),
    /// with the value and its location. `GCS_ACCESS_ID`/`GCS_SECRET` are stored as
    /// `GCS_HMAC_ACCESS_ID`/`GCS_HMAC_SECRET`.
    pub settings: BTreeMap<String, (String, Loc)>,
    /// What Tinybird would warn about, plus keys that do not belong to the connection's TYPE.
    pub warnings: Vec<DatafileWarning>,
}

/// The services a connection can point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionKind {
    /// `TYPE kafka`.
    Kafka,
    /// `TYPE s3`.
    S3,
    /// `TYPE gcs`.
    Gcs,
    /// `TYPE dynamodb`.
    DynamoDb,
    /// `TYPE postgres`.
    Postgres,
}

impl ConnectionKind {
    const ALL: [ConnectionKind; 5] = [
        ConnectionKind::Kafka,
        ConnectionKind::S3,
        ConnectionKind::Gcs,
        ConnectionKind::DynamoDb,
        ConnectionKind::Postgres,
    ];

    /// The TYPE value as written in files.
    pub fn name(self) -> &'static str {
        match self {
            ConnectionKind::Kafka => "kafka",
            ConnectionKind::S3 => "s3",
            ConnectionKind::Gcs => "gcs",
            ConnectionKind::DynamoDb => "dynamodb",
            ConnectionKind::Postgres => "postgres",
        }
    }

    /// The keyword prefix of this kind's settings.
    fn prefix(self) -> &'static str {
        match self {
            ConnectionKind::Kafka => "KAFKA_",
            ConnectionKind::S3 => "S3_",
            ConnectionKind::Gcs => "GCS_",
            ConnectionKind::DynamoDb => "DYNAMODB_",
            ConnectionKind::Postgres => "PG_",
        }
    }
}

impl Connection {
    /// The value of a setting (upper-case keyword).
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(|(v, _)| v.as_str())
    }

    /// `KAFKA_BOOTSTRAP_SERVERS` (`host:port[,host:port]`).
    pub fn kafka_bootstrap_servers(&self) -> Option<&str> {
        self.setting("KAFKA_BOOTSTRAP_SERVERS")
    }

    /// `KAFKA_SECURITY_PROTOCOL` (SASL_SSL, SASL_PLAINTEXT or PLAINTEXT; the CLI default is SASL_SSL).
    pub fn kafka_security_protocol(&self) -> Option<&str> {
        self.setting("KAFKA_SECURITY_PROTOCOL")
    }

    /// `KAFKA_SASL_MECHANISM` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER).
    pub fn kafka_sasl_mechanism(&self) -> Option<&str> {
        self.setting("KAFKA_SASL_MECHANISM")
    }

    /// `KAFKA_KEY` (the SASL user name).
    pub fn kafka_key(&self) -> Option<&str> {
        self.setting("KAFKA_KEY")
    }

    /// `KAFKA_SECRET` (the SASL password).
    pub fn kafka_secret(&self) -> Option<&str> {
        self.setting("KAFKA_SECRET")
    }

    /// `KAFKA_SCHEMA_REGISTRY_URL` (for Avro).
    pub fn kafka_schema_registry_url(&self) -> Option<&str> {
        self.setting("KAFKA_SCHEMA_REGISTRY_URL")
    }

    /// `KAFKA_SSL_CA_PEM` (a block is dedented and trimmed).
    pub fn kafka_ssl_ca_pem(&self) -> Option<&str> {
        self.setting("KAFKA_SSL_CA_PEM")
    }
}

const KEYS: [&str; 28] = [
    "kafka_bootstrap_servers",
    "kafka_key",
    "kafka_secret",
    "kafka_schema_registry_url",
    "kafka_ssl_ca_pem",
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_oauthbearer_method",
    "kafka_sasl_oauthbearer_aws_region",
    "kafka_sasl_oauthbearer_aws_role_arn",
    "kafka_sasl_oauthbearer_aws_external_id",
    "s3_region",
    "s3_arn",
    "s3_access_key",
    "s3_secret",
    "gcs_service_account_credentials_json",
    "gcs_access_id",
    "gcs_secret",
    "gcs_hmac_access_id",
    "gcs_hmac_secret",
    "dynamodb_arn",
    "dynamodb_region",
    "pg_host",
    "pg_port",
    "pg_database",
    "pg_user",
    "pg_password",
    "pg_ssl_mode",
];
const OTHER_KEYS: [&str; 4] = [
    "type",
    "description",
    "include",
    "kafka_key_avro_deserialization",
];

fn is_keyword(key: &str) -> bool {
    KEYS.contains(&key) || OTHER_KEYS.contains(&key)
}

/// Parses a `.connection` file. `text` must have its `tb_secret(...)` calls rendered already
/// ([`crate::render_secrets`]); `$VAR` references are kept as written.
pub fn parse_connection(name: &str, text: &str) -> Result<Connection, Vec<DatafileError>> {
    parse_connection_with_env(name, text, &|_| None)
}

/// Like [`parse_connection`], replacing `$VAR`/`${VAR}` in values with `env(VAR)`.
pub fn parse_connection_with_env(
    name: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Connection, Vec<DatafileError>> {
    let mut ctx = Ctx::new("connection", env);
    let commands = read_commands(text, &is_keyword, &mut ctx.errors);
    let mut kind: Option<(ConnectionKind, Loc)> = None;
    let mut description = None;
    let mut settings = BTreeMap::new();
    for cmd in &commands {
        match cmd.key.as_str() {
            "type" => {
                let Some(setting) = ctx.scalar_env(cmd) else {
                    continue;
                };
                match ConnectionKind::ALL
                    .into_iter()
                    .find(|k| k.name().eq_ignore_ascii_case(&setting.value))
                {
                    Some(k) => {
                        if kind.is_some() {
                            ctx.warn(cmd.loc, "TYPE is set more than once; the last value is used");
                        }
                        kind = Some((k, setting.loc));
                    }
                    None => ctx.error(
                        setting.loc,
                        format!(
                            "Invalid connection TYPE '{}'. Use one of: {}",
                            setting.value,
                            ConnectionKind::ALL.map(ConnectionKind::name).join(", ")
                        ),
                    ),
                }
            }
            "description" => {
                description = ctx
                    .scalar_or_block(cmd)
                    .map(|s| s.value)
                    .filter(|d| !d.is_empty());
            }
            "include" => {
                ctx.legacy(cmd);
            }
            "kafka_key_avro_deserialization" => ctx.error(
                cmd.loc,
                "KAFKA_KEY_AVRO_DESERIALIZATION has been deprecated. Use \"KAFKA_KEY_FORMAT avro\" in the corresponding .datasource file instead",
            ),
            key if KEYS.contains(&key) => setting(&mut ctx, &mut settings, cmd),
            _ => ctx.unknown(cmd),
        }
    }
    let (kind, kind_loc) = match kind {
        Some(k) => k,
        None => {
            if !ctx
                .errors
                .iter()
                .any(|e| e.message.starts_with("Invalid connection TYPE"))
            {
                ctx.error(Loc::new(1, 1), "TYPE is mandatory in connection files");
            }
            (ConnectionKind::Kafka, Loc::new(1, 1))
        }
    };
    let foreign: Vec<(String, Loc)> = settings
        .iter()
        .filter(|(key, _)| !key.starts_with(kind.prefix()))
        .map(|(key, (_, loc))| (key.clone(), *loc))
        .collect();
    for (key, loc) in foreign {
        ctx.warn(
            loc,
            format!("{key} does not apply to {} connections", kind.name()),
        );
    }
    let connection = Connection {
        name: name.to_string(),
        kind,
        kind_loc,
        description,
        settings,
        warnings: Vec::new(),
    };
    let (mut connection, warnings) = ctx.finish(connection)?;
    connection.warnings = warnings;
    Ok(connection)
}

fn setting(ctx: &mut Ctx<'_>, settings: &mut BTreeMap<String, (String, Loc)>, cmd: &Command) {
    // Like the CLI, the CA certificate may be a block and is taken verbatim (no `$VAR` replacement).
    let value = if cmd.key == "kafka_ssl_ca_pem" {
        ctx.scalar_or_block(cmd)
    } else {
        ctx.scalar_env(cmd)
    };
    let Some(value) = value else {
        return;
    };
    let key = match cmd.key.as_str() {
        "gcs_access_id" => "GCS_HMAC_ACCESS_ID".to_string(),
        "gcs_secret" => "GCS_HMAC_SECRET".to_string(),
        other => other.to_uppercase(),
    };
    if settings.contains_key(&key) {
        ctx.warn(
            cmd.loc,
            format!("{key} is set more than once; the last value is used"),
        );
    }
    settings.insert(key, (value.value, value.loc));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_connection() {
        let text = "TYPE kafka\nKAFKA_BOOTSTRAP_SERVERS localhost:9092\nKAFKA_SECURITY_PROTOCOL SASL_SSL\nKAFKA_SASL_MECHANISM PLAIN\nKAFKA_KEY \"key\"\nKAFKA_SECRET ${SECRET}\nKAFKA_SCHEMA_REGISTRY_URL https://r\nKAFKA_SSL_CA_PEM >\n    -----BEGIN CERTIFICATE-----\n    abc\n    -----END CERTIFICATE-----\n";
        let env = |k: &str| (k == "SECRET").then(|| "s3cr3t".to_string());
        let c = parse_connection_with_env("kc", text, &env).unwrap();
        assert_eq!(c.name, "kc");
        assert_eq!(c.kind, ConnectionKind::Kafka);
        assert_eq!(c.kind_loc, Loc::new(1, 6));
        assert_eq!(c.kafka_bootstrap_servers(), Some("localhost:9092"));
        assert_eq!(c.kafka_security_protocol(), Some("SASL_SSL"));
        assert_eq!(c.kafka_sasl_mechanism(), Some("PLAIN"));
        assert_eq!(c.kafka_key(), Some("key"));
        assert_eq!(c.kafka_secret(), Some("s3cr3t"));
        assert_eq!(c.kafka_schema_registry_url(), Some("https://r"));
        assert_eq!(
            c.kafka_ssl_ca_pem(),
            Some("-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----")
        );
        assert_eq!(c.settings["KAFKA_KEY"].1, Loc::new(5, 11));
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn other_kinds() {
        let c = parse_connection(
            "s",
            "TYPE S3\nS3_REGION eu-west-1\nS3_ARN arn:aws:iam::1:role/x\n",
        )
        .unwrap();
        assert_eq!(c.kind, ConnectionKind::S3);
        assert_eq!(c.setting("S3_REGION"), Some("eu-west-1"));
        let c = parse_connection("g", "TYPE gcs\nGCS_ACCESS_ID id\nGCS_SECRET s\n").unwrap();
        assert_eq!(c.setting("GCS_HMAC_ACCESS_ID"), Some("id"));
        assert_eq!(c.setting("GCS_HMAC_SECRET"), Some("s"));
        let c =
            parse_connection("p", "TYPE postgres\nPG_HOST h\nPG_PORT 5432\nS3_REGION x\n").unwrap();
        assert_eq!(c.kind, ConnectionKind::Postgres);
        assert_eq!(c.warnings.len(), 1, "S3_REGION does not belong to postgres");
        let c =
            parse_connection("d", "TYPE dynamodb\nDYNAMODB_ARN a\nDYNAMODB_REGION r\n").unwrap();
        assert_eq!(c.kind, ConnectionKind::DynamoDb);
    }

    #[test]
    fn connection_errors() {
        let errs = parse_connection("x", "KAFKA_KEY k\nFOO bar\n").unwrap_err();
        let rendered: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            [
                "1:1: TYPE is mandatory in connection files",
                "2:1: FOO is not a valid option in connection files."
            ]
        );
        let errs = parse_connection("x", "TYPE mysql\nKAFKA_KEY >\n    k\n").unwrap_err();
        let rendered: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            [
                "1:6: Invalid connection TYPE 'mysql'. Use one of: kafka, s3, gcs, dynamodb, postgres",
                "2:1: KAFKA_KEY does not support multiline arguments"
            ]
        );
    }
}
