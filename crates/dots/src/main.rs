//! `dots`: run a DOTS node and administer it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use dots_node::NodeConfig;
use dots_registrar::hash_password;
use dots_store::{AccountStore, StoreError};

/// `println!` for command output that may go to a pipe: a reader that went away
/// (`dots id show … | head -1`) ends the command quietly instead of a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

// The SIP path allocates and frees many small buffers per message, often on
// different threads (a datagram is parsed on one worker and freed after the
// engine has run on another), the pattern glibc's allocator handles worst.
// Without the `mimalloc` feature the system allocator stays, which is what
// heap profilers that interpose malloc (heaptrack) can see.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod agent;
mod bench;
mod devnet;
mod id;

/// DOTS — Decentralized Open Telecommunication System.
///
/// A node is a SIP registrar and stateful proxy that any standard SIP phone
/// can use. Start one with `dots node`, create accounts with `dots user add`.
#[derive(Parser)]
#[command(name = "dots", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: SIP registrar and proxy on UDP/TCP (and TLS), HTTP for
    /// /healthz and /metrics. Stops cleanly on Ctrl-C or SIGTERM.
    Node(NodeArgs),
    /// Start a local network of N nodes on 127.0.0.1 with distinct ports, all
    /// joined through the first; print their addresses; stop them all on
    /// Ctrl-C.
    Devnet(DevnetArgs),
    /// Benchmarks (see docs/benchmarks.md).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Manage the accounts (SIP digest user names and passwords) of a node.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage your identity: an Ed25519 key pair whose public name is a did:key.
    Id {
        #[command(subcommand)]
        command: id::IdCommand,
    },
    /// A SIP user agent for your identity: register at a node, listen for
    /// calls and messages, call, send a message (sip: or did:key targets).
    Agent(agent::AgentArgs),
}

#[derive(Args)]
struct NodeArgs {
    /// TOML configuration file; flags given on the command line override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for the node's state (registrations, accounts, TLS key)
    /// [default: ./dots-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// SIP listen address for UDP and TCP [default: 127.0.0.1:5060].
    #[arg(long, value_name = "ADDR")]
    sip: Option<SocketAddr>,
    /// SIP over TLS listen address (off unless given; a self-signed
    /// certificate is generated in the data directory unless the config
    /// names one).
    #[arg(long, value_name = "ADDR")]
    sip_tls: Option<SocketAddr>,
    /// HTTP listen address: /healthz, /metrics, the API, and SIP over
    /// WebSocket at ws://ADDR/sip [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// HTTPS listen address: the same service over TLS, with SIP over
    /// secure WebSocket at wss://ADDR/sip (off unless given; the
    /// certificate of --sip-tls, generated in the data directory unless the
    /// config names one).
    #[arg(long, value_name = "ADDR")]
    https: Option<SocketAddr>,
    /// STUN server (RFC 8489 Binding requests) UDP listen address, e.g.
    /// 127.0.0.1:3478 (off unless given); GET /api/v1/webrtc names it to
    /// WebRTC clients.
    #[arg(long, value_name = "ADDR")]
    stun: Option<SocketAddr>,
    /// A domain this node serves, besides its listen address (repeatable):
    /// REGISTER for alice@DOMAIN is then local.
    #[arg(long = "domain", value_name = "NAME")]
    domains: Vec<String>,
    /// Host or IP to write in Via and Record-Route (needed when listening
    /// on 0.0.0.0).
    #[arg(long, value_name = "HOST")]
    advertise: Option<String>,
    /// Digest authentication realm [default: dots].
    #[arg(long)]
    realm: Option<String>,
    /// Digest algorithms to offer, most preferred first, comma-separated
    /// [default: MD5,SHA-256, the order most deployed phones cope with].
    /// Use "MD5" alone for clients that give up on any SHA-256 challenge
    /// (baresip 1.x), "SHA-256,MD5" when all phones are RFC 8760 aware.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    digest_algorithms: Option<Vec<String>>,
    /// Accept REGISTER (and calls) WITHOUT authentication. For development
    /// and benchmarks only.
    #[arg(long)]
    open: bool,
    /// Overlay listen address, e.g. /ip4/127.0.0.1/tcp/7060 (repeatable);
    /// without it the node runs alone.
    #[arg(long = "p2p", value_name = "MULTIADDR")]
    p2p: Vec<String>,
    /// A node to join through, e.g. /ip4/127.0.0.1/tcp/7060/p2p/12D3Koo…
    /// (repeatable).
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// Log filter, e.g. "info" or "dots_node=debug" (RUST_LOG also works).
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
}

#[derive(Args)]
struct DevnetArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// SIP port of the first node; node i listens for SIP on BASE+i, HTTP on
    /// BASE+1000+i and the overlay on BASE+2000+i.
    #[arg(long, value_name = "P", default_value_t = 5060)]
    base_port: u16,
    /// Where the nodes keep their data and logs.
    #[arg(long, value_name = "DIR", default_value = "dots-devnet")]
    dir: PathBuf,
    /// Require digest authentication (accounts per node with `dots user add
    /// --data-dir DIR/node-I`) instead of open registration.
    #[arg(long)]
    auth: bool,
}

#[derive(Args)]
struct StoreArgs {
    /// The node's data directory [default: ./dots-data].
    #[arg(long, value_name = "DIR", default_value = "dots-data")]
    data_dir: PathBuf,
    /// The node's configuration file, to take the realm from.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Digest realm of the node [default: the config's, else "dots"].
    #[arg(long)]
    realm: Option<String>,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account. Its phone registers as NAME@<node address> with PW.
    Add {
        name: String,
        #[arg(long)]
        password: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete an account (its registered devices stay until they expire).
    Remove {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Set a new password.
    Passwd {
        name: String,
        #[arg(long)]
        password: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Node(args) => run_node(args),
        Command::User { command } => run_user(command),
        Command::Devnet(args) => devnet::run(args.nodes, args.base_port, &args.dir, !args.auth),
        Command::Bench { command } => bench::run(command),
        Command::Id { command } => id::run(command),
        Command::Agent(args) => agent::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: Option<&str>) {
    let filter = filter
        .map(str::to_string)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run_node(args: NodeArgs) -> anyhow::Result<()> {
    init_logging(args.log.as_deref());
    let mut config = match &args.config {
        Some(path) => NodeConfig::from_file(path)?,
        None => NodeConfig::default(),
    };
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(a) = args.sip {
        config.sip.listen = a;
    }
    if let Some(a) = args.sip_tls {
        config.sip.tls_listen = Some(a);
    }
    if let Some(a) = args.http {
        config.http.listen = a;
    }
    if let Some(a) = args.https {
        config.http.tls_listen = Some(a);
    }
    if let Some(a) = args.stun {
        config.stun.listen = Some(a);
    }
    config.sip.domains.extend(args.domains);
    if let Some(a) = args.advertise {
        config.sip.advertise = Some(a);
    }
    if let Some(r) = args.realm {
        config.sip.realm = r;
    }
    config.p2p.listen.extend(args.p2p);
    config.p2p.bootstrap.extend(args.bootstrap);
    if let Some(list) = args.digest_algorithms {
        config.sip.digest_algorithms = list;
    }
    if args.open {
        config.sip.open = true;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // The node's loop runs as a task on the worker threads rather than on this
    // thread: a worker that has just received a datagram then runs the engine
    // itself, instead of waking a parked thread for every burst.
    runtime.block_on(async {
        tokio::spawn(dots_node::run(config, shutdown_signal()))
            .await
            .context("the node's task stopped")?
    })
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn realm_of(store: &StoreArgs) -> anyhow::Result<String> {
    if let Some(r) = &store.realm {
        return Ok(r.clone());
    }
    match &store.config {
        Some(path) => Ok(NodeConfig::from_file(path)?.sip.realm),
        None => Ok(NodeConfig::default().sip.realm),
    }
}

fn accounts(dir: &Path) -> anyhow::Result<AccountStore> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    Ok(AccountStore::new(dir))
}

fn run_user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            name,
            password,
            store,
        } => {
            check_user_name(&name)?;
            check_password(&password)?;
            let realm = realm_of(&store)?;
            accounts(&store.data_dir)?.add(&name, &hash_password(&name, &realm, &password)).map_err(|e| match e {
                StoreError::AlreadyExists => {
                    anyhow::anyhow!("user {name} already exists (use `dots user passwd {name}` to change the password)")
                }
                e => anyhow::anyhow!(e),
            })?;
            outln!("added user {name} (realm {realm})");
        }
        UserCommand::List { store } => {
            for (name, creds) in accounts(&store.data_dir)?.list()? {
                outln!("{name}\t{}", creds.realm);
            }
        }
        UserCommand::Remove { name, store } => {
            accounts(&store.data_dir)?
                .remove(&name)
                .map_err(|e| match e {
                    StoreError::NotFound => {
                        anyhow::anyhow!("no user {name} (see `dots user list`)")
                    }
                    e => anyhow::anyhow!(e),
                })?;
            outln!("removed user {name}");
        }
        UserCommand::Passwd {
            name,
            password,
            store,
        } => {
            check_password(&password)?;
            let realm = realm_of(&store)?;
            accounts(&store.data_dir)?
                .set(&name, &hash_password(&name, &realm, &password))
                .map_err(|e| match e {
                    StoreError::NotFound => {
                        anyhow::anyhow!("no user {name} (create it with `dots user add`)")
                    }
                    e => anyhow::anyhow!(e),
                })?;
            outln!("password changed for {name}");
        }
    }
    Ok(())
}

fn check_user_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'+".contains(&b));
    if !ok {
        anyhow::bail!("invalid user name {name:?}: use 1-64 letters, digits or -_.!~*'+");
    }
    Ok(())
}

fn check_password(password: &str) -> anyhow::Result<()> {
    if password.is_empty() {
        anyhow::bail!("the password must not be empty");
    }
    Ok(())
}
