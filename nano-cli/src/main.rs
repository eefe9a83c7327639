//! `nano-cli`: a command-line client for nano servers, built on [`nano::Client`].
//!
//! ```text
//! nano-cli request tcp://127.0.0.1:3250 Room.Join '{"name":"ann"}'
//! nano-cli listen ws://127.0.0.1:3251/nano --request Room.Join '{"name":"ann"}' --route onMessage
//! nano-cli repl tcp://127.0.0.1:3250
//! nano-cli bench tcp://127.0.0.1:13250 --route TestHandler.Echo --conns 50 --duration 10 \
//!     --proto ping.proto --type pb.Ping --payload '{"content":"hi"}'
//! ```
//!
//! Exit codes: 0 success, 1 the server answered with an error response, 2 anything else
//! (bad arguments, connection failure, timeout).

mod bench;
mod commands;
mod payload;
mod repl;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use nano::{ClientError, Json, Protobuf, Serializer};

use payload::Codec;
use target::{ConnectOptions, Target};

/// A command-line client for nano servers.
#[derive(Parser, Debug)]
#[command(name = "nano-cli", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Sends a request and prints the response as JSON.
    Request {
        /// Server URL: tcp://host:port, tls://host:port, ws://host:port/path, wss://…
        url: String,
        /// The route, e.g. `Room.Join`.
        route: String,
        /// The payload as JSON (default `{}`).
        json: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Sends a notify (no answer expected).
    Notify {
        /// Server URL.
        url: String,
        /// The route.
        route: String,
        /// The payload as JSON (default `{}`).
        json: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Prints pushes as JSON lines `{"route":…,"body":…}`.
    Listen {
        /// Server URL.
        url: String,
        /// Only these push routes (repeatable; default all).
        #[arg(long = "route")]
        routes: Vec<String>,
        /// Send this request first (ROUTE JSON), e.g. to join a room; its response goes to
        /// stderr.
        #[arg(long, num_args = 2, value_names = ["ROUTE", "JSON"])]
        request: Option<Vec<String>>,
        /// Stop after this many pushes.
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        common: Common,
    },
    /// An interactive shell: `request ROUTE [JSON]`, `notify ROUTE [JSON]`, `routes`, `quit`.
    Repl {
        /// Server URL.
        url: String,
        #[command(flatten)]
        common: Common,
    },
    /// Load test: N connections sending requests back to back for a duration.
    Bench(bench::BenchArgs),
}

/// Options of every command.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Request and connect timeout, in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// The CA certificate (PEM) to trust for tls:// and wss://.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Accept any server certificate on tls:// and wss:// (development only).
    #[arg(long, conflicts_with = "ca")]
    insecure: bool,
    /// The TLS server name (default: the URL's host).
    #[arg(long)]
    server_name: Option<String>,
    /// The handshake's `user` object, as JSON.
    #[arg(long)]
    user: Option<String>,
    /// Protobuf payloads: the .proto defining the messages (compiled at run time).
    #[arg(long)]
    proto: Option<PathBuf>,
    /// Extra import folders for --proto.
    #[arg(long = "include", short = 'I')]
    includes: Vec<PathBuf>,
    /// The protobuf message type of requests and notifies, e.g. `pkg.Ping`.
    #[arg(long = "type")]
    msg_type: Option<String>,
    /// The protobuf message type of responses.
    #[arg(long)]
    response_type: Option<String>,
    /// The protobuf message type of pushes.
    #[arg(long)]
    push_type: Option<String>,
}

/// Why a command failed, and its exit code.
#[derive(Debug)]
pub enum Failure {
    /// The server answered with an error response (exit 1).
    Server(nano::Error),
    /// Anything else (exit 2).
    Other(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Server(err) => Failure::Server(err),
            other => Failure::Other(other.to_string()),
        }
    }
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure::Other(e)
    }
}

/// The JSON object of an error response: `{"code":…,"msg":…,"metadata":{…}}`.
pub fn error_json(e: &nano::Error) -> serde_json::Value {
    serde_json::json!({
        "code": e.code(),
        "msg": e.message(),
        "metadata": e.metadata(),
    })
}

/// Everything a command needs besides its own arguments.
pub struct Setup {
    /// Where to connect.
    pub target: Target,
    /// How to connect.
    pub connect: ConnectOptions,
    /// How payloads are encoded.
    pub codec: Codec,
}

impl Setup {
    fn new(url: &str, common: &Common) -> Result<Self, String> {
        let target = Target::parse(url)?;
        let timeout = Duration::try_from_secs_f64(common.timeout)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("bad --timeout {}", common.timeout))?;
        let ca_der = common.ca.as_deref().map(target::read_ca).transpose()?;
        let user = match &common.user {
            None => serde_json::json!({}),
            Some(u) => serde_json::from_str(u).map_err(|e| format!("bad --user JSON: {e}"))?,
        };
        let codec = match &common.proto {
            None => {
                if common.msg_type.is_some() || common.response_type.is_some() {
                    return Err("--type/--response-type need --proto FILE".into());
                }
                Codec::Json
            }
            Some(proto) => payload::proto_codec(
                proto,
                &common.includes,
                common.msg_type.as_deref(),
                common.response_type.as_deref(),
                common.push_type.as_deref(),
            )?,
        };
        Ok(Setup {
            target,
            connect: ConnectOptions {
                timeout,
                ca_der,
                insecure: common.insecure,
                server_name: common.server_name.clone(),
                user,
            },
            codec,
        })
    }

    /// Connects with the serializer matching the codec (error responses are decoded with it).
    async fn run(self, command: Command) -> Result<(), Failure> {
        match self.codec {
            Codec::Json => run::<Json>(&self, command).await,
            Codec::Proto { .. } => run::<Protobuf>(&self, command).await,
        }
    }
}

/// Connects, failing with a message that says where.
pub async fn connect<S: Serializer>(setup: &Setup) -> Result<nano::Client<S>, Failure> {
    target::connect::<S>(&setup.target, &setup.connect)
        .await
        .map_err(|e| Failure::Other(format!("cannot connect to {:?}: {e}", setup.target)))
}

async fn run<S: Serializer>(setup: &Setup, command: Command) -> Result<(), Failure> {
    match command {
        Command::Request { route, json, .. } => {
            commands::request::<S>(setup, &route, json.as_deref()).await
        }
        Command::Notify { route, json, .. } => {
            commands::notify::<S>(setup, &route, json.as_deref()).await
        }
        Command::Listen {
            routes,
            request,
            count,
            ..
        } => commands::listen::<S>(setup, &routes, request.as_deref(), count).await,
        Command::Repl { .. } => repl::run::<S>(setup).await,
        Command::Bench(args) => bench::run::<S>(setup, &args).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (url, common) = match &cli.command {
        Command::Request { url, common, .. }
        | Command::Notify { url, common, .. }
        | Command::Listen { url, common, .. }
        | Command::Repl { url, common } => (url.clone(), common.clone()),
        Command::Bench(b) => (b.url.clone(), b.common.clone()),
    };
    let setup = match Setup::new(&url, &common) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("nano-cli: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nano-cli: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(setup.run(cli.command));
    // Do not wait for blocking readers (the REPL's stdin thread).
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Server(e)) => {
            eprintln!("{}", error_json(&e));
            ExitCode::from(1)
        }
        Err(Failure::Other(msg)) => {
            eprintln!("nano-cli: {msg}");
            ExitCode::from(2)
        }
    }
}
