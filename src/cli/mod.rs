//! The `petrel` commands.

mod build;
mod client;
mod cluster;
mod datasource;
mod deploy;
mod endpoint;
mod init;
mod kafka;
mod local;
mod output;
mod sql;
mod testing;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A command failure: printed as `error: ...`, exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The project has errors (already printed).
    #[error("the project has {0} error(s)")]
    Project(usize),
    /// Anything else, with its message.
    #[error("{0}")]
    Failed(String),
}

#[derive(Parser)]
#[command(
    name = "petrel",
    version,
    about = "Real-time analytics: Tinybird-style pipes kept incrementally up to date"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a local server.
    Local {
        #[command(subcommand)]
        command: LocalCommand,
    },
    /// Run one Petrel over several processes (docs/cluster.md).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Run SQL on a running server.
    Sql(sql::SqlArgs),
    /// Check a project: parse every file, plan every pipe, report errors with locations.
    Build(build::BuildArgs),
    /// Run a local server for a project, load its fixtures, and deploy every saved change.
    Dev(local::StartArgs),
    /// Send a project to a running server, which validates it and swaps changed pipes.
    Deploy(deploy::DeployArgs),
    /// Connections to other systems.
    Connection {
        #[command(subcommand)]
        command: ConnectionCommand,
    },
    /// Create a project: folders, a sample datasource, endpoint, fixture and test, CI.
    Init(init::InitArgs),
    /// Run (or update) the project's tests/*.yaml against a fresh instance.
    Test {
        #[command(subcommand)]
        command: TestCommand,
    },
    /// Endpoints of a running server.
    Endpoint {
        #[command(subcommand)]
        command: endpoint::EndpointCommand,
    },
    /// Tokens of a running server.
    Token {
        #[command(subcommand)]
        command: endpoint::TokenCommand,
    },
    /// Datasources.
    Datasource {
        #[command(subcommand)]
        command: DatasourceCommand,
    },
}

#[derive(Subcommand)]
enum TestCommand {
    /// Run the tests; exit 1 when one fails.
    Run(testing::TestArgs),
    /// Rewrite the tests' expected results with what the project answers now.
    Update(testing::TestArgs),
}

#[derive(Subcommand)]
enum ConnectionCommand {
    /// Write a connection file.
    Create {
        #[command(subcommand)]
        kind: ConnectionKind,
    },
}

#[derive(Subcommand)]
enum ConnectionKind {
    /// A Kafka connection.
    Kafka(kafka::ConnectionArgs),
}

#[derive(Subcommand)]
enum DatasourceCommand {
    /// Create a datasource file from a Kafka topic's messages (`--kafka`).
    Create(kafka::DatasourceCreateArgs),
    /// List a running server's datasources.
    Ls(datasource::LsArgs),
    /// Append an NDJSON file to a datasource.
    Append(datasource::AppendArgs),
    /// Remove every row of a datasource.
    Truncate(datasource::TruncateArgs),
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Start one process of a cluster (`--hosts FILE --process I`), or a whole cluster on
    /// this machine (`--local N`).
    Start(Box<cluster::ClusterStartArgs>),
    /// Every process of a running cluster: workers, frontier, lag, failures.
    Status(client::HostArgs),
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Start a server for a project folder.
    Start(Box<local::StartArgs>),
    /// Is a server running? (GET /v0/health)
    Status(client::HostArgs),
    /// Stop a running server on this machine.
    Stop(client::HostArgs),
}

/// Where a project folder is, defaulting to the current directory.
fn project_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| PathBuf::from("."))
}

/// Runs the command line; returns the process exit code (0 ok, 1 error, 2 usage).
pub fn run(args: Vec<OsString>) -> Result<i32, CliError> {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return Ok(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let outcome = match cli.command {
        Command::Local {
            command: LocalCommand::Start(args),
        } => local::start(*args, false),
        Command::Local {
            command: LocalCommand::Status(args),
        } => deploy::status(args),
        Command::Local {
            command: LocalCommand::Stop(args),
        } => deploy::stop(args),
        Command::Cluster {
            command: ClusterCommand::Start(args),
        } => cluster::start(*args),
        Command::Cluster {
            command: ClusterCommand::Status(args),
        } => cluster::status(args),
        Command::Dev(mut args) => {
            args.fixtures = true;
            local::start(args, true)
        }
        Command::Deploy(args) => deploy::run(args),
        Command::Endpoint { command } => endpoint::run(command),
        Command::Init(args) => init::run(args),
        Command::Test {
            command: TestCommand::Run(args),
        } => testing::run(args, false),
        Command::Test {
            command: TestCommand::Update(args),
        } => testing::run(args, true),
        Command::Token { command } => endpoint::run_token(command),
        Command::Connection {
            command:
                ConnectionCommand::Create {
                    kind: ConnectionKind::Kafka(args),
                },
        } => kafka::create_connection(args),
        Command::Datasource { command } => match command {
            DatasourceCommand::Create(args) => kafka::create_datasource(args),
            DatasourceCommand::Ls(args) => datasource::ls(args),
            DatasourceCommand::Append(args) => datasource::append(args),
            DatasourceCommand::Truncate(args) => datasource::truncate(args),
        },
        Command::Sql(args) => sql::run(args),
        Command::Build(args) => build::run(args),
    };
    match outcome {
        Ok(()) => Ok(0),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(1)
        }
    }
}
