//! `dots agent`: a small native SIP user agent for the wallet's identity.
//!
//! The protocol is `dots-ua` (sans-I/O); this is its shell: the socket (UDP,
//! or one TCP connection per peer), the clock, signals, and the command line.
//! Every event is one line on stdout, flushed; diagnostics go to stderr.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use dots_sip::parse::leading_crlf_len;
use dots_sip::{parse_stream, Message, ParseErrorKind, Peer, TransportKind, Uri};
use dots_ua::{target_uri, CallRef, Config, EndReason, Event, Failure, Time, UserAgent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::sync::{mpsc, watch};

/// How long to wait, at the end, for the binding to be removed.
const UNREGISTER_WAIT: Duration = Duration::from_secs(5);
/// How long to wait for a TCP connection to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Args)]
#[command(after_help = "\
The user is the wallet's DID: the agent registers sip:<id>@<node host>, where <id> is
the DID without its did:key: prefix. A call or message target is a sip: URI or a
did:key, which becomes sip:<id>@<node host:port> so that the node finds the user,
wherever in the network they registered.

At a node that asks for authentication the agent logs in with the wallet's key
(DOTS-Sig challenge of the 401); Digest challenges are not answered (the agent has
no password). Without a passphrase option, DOTS_WALLET_PASSPHRASE is used if set.

Examples:
  dots agent --wallet alice.wallet --node 127.0.0.1:5060 register
  dots agent --wallet bob.wallet --node 127.0.0.1:5060 listen
  dots agent --wallet alice.wallet --node 127.0.0.1:5060 call did:key:z6Mk… --duration 5
  dots agent --wallet alice.wallet --node 127.0.0.1:5060 message sip:carol@127.0.0.1 'hello'")]
pub struct AgentArgs {
    #[command(flatten)]
    wallet: crate::id::WalletArgs,
    /// The node's SIP address: registrar, and outbound proxy for calls and
    /// messages (port 5060 when left out).
    #[arg(long, value_name = "HOST:PORT")]
    node: String,
    /// Transport to the node.
    #[arg(long, value_enum, default_value_t = AgentTransport::Udp, global = true)]
    transport: AgentTransport,
    /// Registration lifetime to ask for, in seconds; `listen` refreshes it at
    /// half of what the node grants.
    #[arg(long, value_name = "SECS", default_value_t = 600, global = true)]
    expires: u32,
    /// Local address to bind [default: 0.0.0.0:0, the port chosen by the
    /// system]. The Contact names the address the socket uses toward the node.
    #[arg(long, value_name = "IP:PORT", global = true)]
    bind: Option<SocketAddr>,
    /// `call`: how long to hold the answered call before hanging up.
    #[arg(long, value_name = "SECS", default_value_t = 2.0, global = true)]
    duration: f64,
    /// `listen`: how long incoming calls ring before they are answered.
    #[arg(long, value_name = "SECS", default_value_t = 0.0, global = true)]
    answer_after: f64,
    /// `call`, `message`: do not register first. Without a registration the
    /// callee cannot call back, and a node that authenticates refuses calls
    /// and messages from a key user that has not registered from this address.
    #[arg(long, global = true)]
    no_register: bool,
    /// Log filter for stderr, e.g. "debug" or "dots_ua=debug" (RUST_LOG also
    /// works) [default: warn].
    #[arg(long, value_name = "FILTER", global = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AgentTransport {
    Udp,
    Tcp,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Register at the node, print the binding, exit. The binding stays until
    /// it expires (--expires): bind a fixed port (--bind) to be reachable at it.
    Register,
    /// Register, then answer every call (180, then 200 with an SDP answer) and
    /// every message (200), one line per event on stdout; refresh the
    /// registration before it expires. Ctrl-C or SIGTERM hangs up, unregisters
    /// and exits.
    Listen,
    /// Call URI (sip:… or did:key:…): register first (unless --no-register),
    /// INVITE, print `ringing` and `answered`, hold the call --duration
    /// seconds, hang up (BYE), print `hung up`, unregister. Exits non-zero
    /// with the status when the call fails.
    Call {
        /// sip:user@host or did:key:z6Mk….
        #[arg(value_name = "URI")]
        uri: String,
    },
    /// Send TEXT to URI (sip:… or did:key:…) as a MESSAGE (text/plain):
    /// register first (unless --no-register), exit 0 when a 2xx comes back,
    /// non-zero with the status otherwise.
    Message {
        #[arg(value_name = "URI")]
        uri: String,
        #[arg(value_name = "TEXT")]
        text: String,
    },
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let filter = args
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "warn".into());
    crate::init_logging(Some(&filter));
    if !(args.duration.is_finite() && args.duration >= 0.0) {
        bail!("--duration must be a number of seconds, 0 or more");
    }
    if !(args.answer_after.is_finite() && args.answer_after >= 0.0) {
        bail!("--answer-after must be a number of seconds, 0 or more");
    }
    if args.expires == 0 {
        bail!("--expires must be at least 1 second");
    }
    let wallet = args.wallet.load()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let mut shell = Shell::start(&args, wallet).await?;
        let result = match &args.command {
            AgentCommand::Register => register(&mut shell).await,
            AgentCommand::Listen => listen(&mut shell, &args).await,
            AgentCommand::Call { uri } => call(&mut shell, &args, uri).await,
            AgentCommand::Message { uri, text } => message(&mut shell, &args, uri, text).await,
        };
        shell.close();
        result
    })
}

/// A seed for branches, tags and Call-IDs, from the operating system.
fn seed() -> u64 {
    use rand::{RngCore, SeedableRng};
    rand::rngs::StdRng::from_os_rng().next_u64()
}

/// One line on stdout, flushed at once (a reader may wait for it).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `host`, `port` of `--node` (5060 when no port is given).
fn split_node(node: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = dots_sip::uri::split_host_port(node.trim())
        .filter(|(h, _)| dots_sip::uri::is_valid_host(h))
        .ok_or_else(|| anyhow!("--node {node:?}: expected HOST:PORT, e.g. 127.0.0.1:5060"))?;
    Ok((host.to_ascii_lowercase(), port.unwrap_or(5060)))
}

// ---------------------------------------------------------------------------
// The shell: sockets, clock, signals
// ---------------------------------------------------------------------------

/// What one turn of the loop came back with.
enum Step {
    Event(Event),
    /// The deadline given to [`Shell::next`] passed.
    Deadline,
    /// SIGINT or SIGTERM (reported once).
    Stop,
}

struct Shell {
    ua: UserAgent,
    io: Io,
    start: Instant,
    start_ms: Time,
    stop: watch::Receiver<bool>,
    stopped: bool,
    /// `host:port` of the node as given, for did:key targets.
    node: String,
}

impl Shell {
    async fn start(args: &AgentArgs, wallet: dots_identity::Wallet) -> anyhow::Result<Shell> {
        let (host, port) = split_node(&args.node)?;
        let node_text = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let node_addr = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .with_context(|| format!("resolving the node address {node_text}"))?
            .next()
            .ok_or_else(|| anyhow!("the node address {node_text} resolves to nothing"))?;
        let (io, local, transport) = match args.transport {
            AgentTransport::Udp => {
                let (sock, local) = bind_udp(args.bind, node_addr).await?;
                (Io::Udp(sock), local, TransportKind::Udp)
            }
            AgentTransport::Tcp => {
                let mut tcp = Tcp::new(args.bind);
                let (_, local) = tcp.connect(node_addr).await.with_context(|| {
                    format!("connecting to the node at tcp:{node_addr}; is a DOTS node listening there?")
                })?;
                (Io::Tcp(tcp), local, TransportKind::Tcp)
            }
        };
        let node = Peer::new(transport, node_addr);
        let mut cfg = Config::new(&wallet.did(), &host, node, local);
        cfg.expires = args.expires;
        tracing::info!(aor = %cfg.aor(), %node, %local, "agent starting");
        let (tx, stop) = watch::channel(false);
        tokio::spawn(async move {
            crate::shutdown_signal().await;
            let _ = tx.send(true);
            crate::shutdown_signal().await;
            eprintln!("second signal: exiting at once");
            std::process::exit(130);
        });
        let start_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as Time);
        Ok(Shell {
            ua: UserAgent::new(cfg, wallet, seed()),
            io,
            start: Instant::now(),
            start_ms,
            stop,
            stopped: false,
            node: node_text,
        })
    }

    /// Milliseconds since the UNIX epoch, on a monotonic clock.
    fn now(&self) -> Time {
        self.start_ms + self.start.elapsed().as_millis() as Time
    }

    fn target(&self, input: &str) -> anyhow::Result<Uri> {
        Ok(target_uri(input, &self.node)?)
    }

    fn node_label(&self) -> String {
        self.ua.config().node.to_string()
    }

    async fn flush(&mut self) {
        while let Some(t) = self.ua.poll_transmit() {
            if let Err(e) = self.io.send(t.dest, &t.bytes).await {
                tracing::warn!(dest = %t.dest, error = %e, "send failed");
                let now = self.now();
                self.ua.transport_error(now, t.dest);
            }
        }
    }

    /// Runs the agent until it has an event, `deadline` passes, or a signal
    /// comes (once).
    async fn next(&mut self, deadline: Option<Time>) -> anyhow::Result<Step> {
        loop {
            self.flush().await;
            if let Some(ev) = self.ua.poll_event() {
                return Ok(Step::Event(ev));
            }
            let now = self.now();
            if self.ua.poll_timeout().is_some_and(|t| t <= now) {
                self.ua.handle_timeout(now);
                continue;
            }
            if deadline.is_some_and(|d| d <= now) {
                return Ok(Step::Deadline);
            }
            if !self.stopped && *self.stop.borrow() {
                self.stopped = true;
                return Ok(Step::Stop);
            }
            let wake = [self.ua.poll_timeout(), deadline]
                .into_iter()
                .flatten()
                .min();
            let sleep = async {
                match wake {
                    Some(at) => {
                        tokio::time::sleep(Duration::from_millis(at.saturating_sub(now))).await
                    }
                    None => std::future::pending().await,
                }
            };
            let stopped = self.stopped;
            tokio::select! {
                input = self.io.recv() => {
                    let now = self.now();
                    match input? {
                        Input::Datagram(bytes, source) => self.ua.handle_datagram(now, &bytes, source),
                        Input::Message(msg, source) => self.ua.handle_message(now, *msg, source),
                        Input::Closed(peer) => {
                            tracing::warn!(%peer, "connection closed");
                            if let (Io::Tcp(tcp), Some(flow)) = (&mut self.io, peer.flow) {
                                tcp.conns.remove(&flow);
                            }
                            self.ua.transport_error(now, peer);
                            if peer.addr == self.ua.config().node.addr {
                                bail!("the node at {} closed the connection", self.node_label());
                            }
                        }
                    }
                }
                _ = sleep => {}
                _ = self.stop.changed(), if !stopped => {}
            }
        }
    }

    /// Registers and waits for the outcome; prints the `registered` line
    /// (`announce`) or logs it.
    async fn register(&mut self, announce: bool) -> Result<(), Registering> {
        let now = self.now();
        self.ua.register(now);
        loop {
            match self.next(None).await.map_err(Registering::Io)? {
                Step::Event(Event::Registered {
                    aor,
                    contact,
                    expires,
                    ..
                }) => {
                    let line = format!("registered {aor} as {contact} for {expires} s");
                    if announce {
                        say(&line);
                    } else {
                        tracing::info!("{line}");
                    }
                    return Ok(());
                }
                Step::Event(Event::RegistrationFailed { failure }) => {
                    let text = self.registration_error(&failure);
                    return Err(Registering::Failed(failure, text));
                }
                Step::Event(ev) => self.background(ev),
                Step::Stop => return Err(Registering::Interrupted),
                Step::Deadline => {}
            }
        }
    }

    fn registration_error(&self, failure: &Failure) -> String {
        let mut text = format!(
            "registering {} at {} failed: {failure}",
            self.ua.aor(),
            self.node_label()
        );
        match failure.code {
            408 if failure.detail.is_some() => {
                text.push_str("; is a DOTS node running there? Check --node (and --transport)")
            }
            403 if failure.reason.contains("Domain") => text
                .push_str("; name the node by its address or one of its --domain names in --node"),
            _ => {}
        }
        text
    }

    /// Removes the binding, waiting a few seconds at most; true when done.
    async fn unregister(&mut self) -> bool {
        let now = self.now();
        self.ua.unregister(now);
        let deadline = now + UNREGISTER_WAIT.as_millis() as Time;
        loop {
            match self.next(Some(deadline)).await {
                Ok(Step::Event(Event::Unregistered)) => return true,
                Ok(Step::Event(Event::RegistrationFailed { failure })) => {
                    eprintln!("warning: removing the registration failed: {failure}");
                    return false;
                }
                Ok(Step::Event(ev)) => self.background(ev),
                Ok(Step::Stop) => {}
                Ok(Step::Deadline) | Err(_) => {
                    eprintln!(
                        "warning: no answer to the unregistration; the binding expires by itself"
                    );
                    return false;
                }
            }
        }
    }

    /// Hangs up every call and waits (a few seconds at most) for them to end.
    async fn hang_up_all(&mut self) {
        let now = self.now();
        for call in self.ua.calls() {
            self.ua.hangup(now, call);
        }
        let deadline = now + UNREGISTER_WAIT.as_millis() as Time;
        while self.ua.call_count() > 0 {
            match self.next(Some(deadline)).await {
                Ok(Step::Event(ev)) => self.background(ev),
                Ok(Step::Stop) => {}
                Ok(Step::Deadline) | Err(_) => return,
            }
        }
    }

    /// Events a command does not wait for: incoming calls are declined
    /// (busy), messages printed.
    fn background(&mut self, ev: Event) {
        match ev {
            Event::IncomingCall {
                call,
                call_id,
                from,
            } => {
                tracing::info!(%from, %call_id, "declining a call (busy)");
                let now = self.now();
                let _ = self.ua.reject(now, call, 486);
            }
            Event::MessageReceived { from, text, .. } => {
                say(&format!("message from {from}: {}", one_line(&text)))
            }
            Event::RegistrationFailed { failure } => {
                eprintln!("warning: {}", self.registration_error(&failure))
            }
            ev => tracing::debug!(?ev, "event"),
        }
    }

    fn close(&mut self) {
        self.io.close();
    }
}

/// A message text as one line: line breaks as `\n`, other controls as spaces.
fn one_line(text: &str) -> String {
    let text = text
        .strip_suffix("\r\n")
        .or(text.strip_suffix('\n'))
        .unwrap_or(text);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// Why [`Shell::register`] did not register.
enum Registering {
    /// The node answered with an error, or not at all (with the text to show).
    Failed(Failure, String),
    Interrupted,
    Io(anyhow::Error),
}

impl From<Registering> for anyhow::Error {
    fn from(r: Registering) -> anyhow::Error {
        match r {
            Registering::Failed(_, text) => anyhow!(text),
            Registering::Interrupted => anyhow!("interrupted"),
            Registering::Io(e) => e,
        }
    }
}

async fn register(shell: &mut Shell) -> anyhow::Result<()> {
    Ok(shell.register(true).await?)
}

async fn listen(shell: &mut Shell, args: &AgentArgs) -> anyhow::Result<()> {
    shell.register(true).await?;
    let delay = (args.answer_after * 1000.0) as Time;
    let mut to_answer: Vec<(Time, CallRef)> = Vec::new();
    loop {
        let deadline = to_answer.iter().map(|(at, _)| *at).min();
        match shell.next(deadline).await? {
            Step::Event(ev) => match ev {
                Event::IncomingCall {
                    call,
                    call_id,
                    from,
                } => {
                    say(&format!("incoming call from {from} call-id {call_id}"));
                    to_answer.push((shell.now() + delay, call));
                }
                Event::Answered { call_id, .. } => say(&format!("answered call-id {call_id}")),
                Event::CallEnded {
                    call,
                    call_id,
                    reason,
                } => {
                    to_answer.retain(|(_, c)| *c != call);
                    say(&format!("call ended call-id {call_id} ({reason})"));
                }
                Event::Registered {
                    aor,
                    contact,
                    expires,
                    ..
                } => say(&format!("registered {aor} as {contact} for {expires} s")),
                Event::RegistrationFailed { failure } => say(&format!(
                    "registration failed: {failure}; retrying in {} s",
                    dots_ua::REGISTRATION_RETRY_MS / 1000
                )),
                ev => shell.background(ev),
            },
            Step::Deadline => {
                let now = shell.now();
                let (due, later): (Vec<_>, Vec<_>) =
                    to_answer.into_iter().partition(|(at, _)| *at <= now);
                to_answer = later;
                for (_, call) in due {
                    if let Err(e) = shell.ua.accept(now, call) {
                        tracing::debug!(error = %e, "call gone before it was answered");
                    }
                }
            }
            Step::Stop => break,
        }
    }
    shell.hang_up_all().await;
    if shell.unregister().await {
        say("unregistered");
    }
    Ok(())
}

/// Registers first unless told not to. A refusal is only a warning (the
/// call or message may still go through); no answer at all is an error (the
/// request would go unanswered too).
async fn maybe_register(shell: &mut Shell, args: &AgentArgs) -> anyhow::Result<bool> {
    if args.no_register {
        return Ok(false);
    }
    match shell.register(false).await {
        Ok(()) => Ok(true),
        Err(Registering::Failed(failure, text)) if failure.code != 408 => {
            eprintln!("warning: {text}; going on without a registration");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

async fn call(shell: &mut Shell, args: &AgentArgs, uri: &str) -> anyhow::Result<()> {
    let target = shell.target(uri)?;
    let registered = maybe_register(shell, args).await?;
    let result = run_call(shell, args, &target).await;
    if registered {
        shell.unregister().await;
    }
    result
}

async fn run_call(shell: &mut Shell, args: &AgentArgs, target: &Uri) -> anyhow::Result<()> {
    let now = shell.now();
    let call = shell.ua.call(now, target.clone());
    say(&format!("calling {target}"));
    let mut interrupted = false;
    // Until the answer.
    loop {
        match shell.next(None).await? {
            Step::Event(Event::Ringing { .. }) => say("ringing"),
            Step::Event(Event::Answered { .. }) => {
                say("answered");
                break;
            }
            Step::Event(Event::CallEnded { reason, .. }) => {
                return Err(match reason {
                    EndReason::Failed(f) => anyhow!("the call to {target} failed: {f}"),
                    _ if interrupted => anyhow!("interrupted: the call was cancelled"),
                    r => anyhow!("the call to {target} ended: {r}"),
                });
            }
            Step::Event(ev) => shell.background(ev),
            Step::Stop => {
                interrupted = true;
                let now = shell.now();
                shell.ua.hangup(now, call);
            }
            Step::Deadline => {}
        }
    }
    // Holding the call.
    let hold_until = shell.now() + (args.duration * 1000.0) as Time;
    let mut ended_by_peer = false;
    if interrupted {
        // Answered after all, while cancelling: hang up at once.
    } else {
        loop {
            match shell.next(Some(hold_until)).await? {
                Step::Event(Event::CallEnded { reason, .. }) => {
                    say(&format!("call ended ({reason})"));
                    ended_by_peer = true;
                    break;
                }
                Step::Event(ev) => shell.background(ev),
                Step::Deadline | Step::Stop => break,
            }
        }
    }
    if !ended_by_peer {
        let now = shell.now();
        shell.ua.hangup(now, call);
        loop {
            match shell.next(None).await? {
                Step::Event(Event::CallEnded { .. }) => {
                    say("hung up");
                    break;
                }
                Step::Event(ev) => shell.background(ev),
                Step::Stop | Step::Deadline => {}
            }
        }
    }
    Ok(())
}

async fn message(shell: &mut Shell, args: &AgentArgs, uri: &str, text: &str) -> anyhow::Result<()> {
    let target = shell.target(uri)?;
    let registered = maybe_register(shell, args).await?;
    let now = shell.now();
    let sent = shell
        .ua
        .message(now, target.clone(), "text/plain;charset=utf-8", text);
    let result = loop {
        match shell.next(None).await? {
            Step::Event(Event::MessageDelivered { message, code }) if message == sent => {
                say(&format!("message delivered to {target} ({code})"));
                break Ok(());
            }
            Step::Event(Event::MessageFailed { message, failure }) if message == sent => {
                break Err(anyhow!("the message to {target} failed: {failure}"));
            }
            Step::Event(ev) => shell.background(ev),
            Step::Stop => break Err(anyhow!("interrupted")),
            Step::Deadline => {}
        }
    };
    if registered {
        shell.unregister().await;
    }
    result
}

// ---------------------------------------------------------------------------
// Transports
// ---------------------------------------------------------------------------

/// Binds the UDP socket; the local address is the one it uses toward the
/// node (found by connecting a throwaway socket when bound to any address).
async fn bind_udp(
    bind: Option<SocketAddr>,
    node: SocketAddr,
) -> anyhow::Result<(UdpSocket, SocketAddr)> {
    let any: IpAddr = if node.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let bind = bind.unwrap_or(SocketAddr::new(any, 0));
    let sock = UdpSocket::bind(bind)
        .await
        .with_context(|| format!("binding UDP {bind}"))?;
    let port = sock.local_addr()?.port();
    let ip = if bind.ip().is_unspecified() {
        let probe = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
        probe
            .connect(node)
            .await
            .with_context(|| format!("no route to the node at {node}"))?;
        probe.local_addr()?.ip()
    } else {
        bind.ip()
    };
    Ok((sock, SocketAddr::new(ip, port)))
}

enum Input {
    Datagram(Vec<u8>, Peer),
    Message(Box<Message>, Peer),
    Closed(Peer),
}

enum Io {
    Udp(UdpSocket),
    Tcp(Tcp),
}

impl Io {
    async fn send(&mut self, dest: Peer, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Io::Udp(sock) if dest.transport == TransportKind::Udp => {
                sock.send_to(bytes, dest.addr).await.map(|_| ())
            }
            Io::Tcp(tcp) if dest.transport == TransportKind::Tcp => tcp.send(dest, bytes).await,
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!("this agent runs over one transport; it cannot reach {dest}"),
            )),
        }
    }

    async fn recv(&mut self) -> anyhow::Result<Input> {
        match self {
            Io::Udp(sock) => {
                let mut buf = vec![0u8; 65_535];
                loop {
                    match sock.recv_from(&mut buf).await {
                        Ok((n, from)) => {
                            buf.truncate(n);
                            return Ok(Input::Datagram(buf, Peer::new(TransportKind::Udp, from)));
                        }
                        // ICMP errors of earlier sends surface here on some systems.
                        Err(e) => tracing::debug!(error = %e, "UDP receive error"),
                    }
                }
            }
            Io::Tcp(tcp) => tcp
                .rx
                .recv()
                .await
                .ok_or_else(|| anyhow!("TCP readers gone")),
        }
    }

    fn close(&mut self) {
        if let Io::Tcp(tcp) = self {
            tcp.conns.clear();
        }
    }
}

/// TCP connections, one per peer, each with a reader task (framing by
/// Content-Length) and a writer task.
struct Tcp {
    bind: Option<SocketAddr>,
    conns: HashMap<u64, Conn>,
    next_flow: u64,
    tx: mpsc::UnboundedSender<Input>,
    rx: mpsc::UnboundedReceiver<Input>,
}

struct Conn {
    peer: SocketAddr,
    out: mpsc::UnboundedSender<Vec<u8>>,
}

impl Tcp {
    fn new(bind: Option<SocketAddr>) -> Tcp {
        let (tx, rx) = mpsc::unbounded_channel();
        Tcp {
            bind,
            conns: HashMap::new(),
            next_flow: 1,
            tx,
            rx,
        }
    }

    /// Opens a connection to `addr`; returns its flow and local address.
    async fn connect(&mut self, addr: SocketAddr) -> std::io::Result<(u64, SocketAddr)> {
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // Only the first connection takes --bind: one local port, one Contact.
        if let Some(bind) = self.bind.take() {
            sock.set_reuseaddr(true)?;
            sock.bind(bind)?;
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, sock.connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr()?;
        let flow = self.next_flow;
        self.next_flow += 1;
        let peer = Peer {
            transport: TransportKind::Tcp,
            addr,
            flow: Some(flow),
        };
        let (mut reader, mut writer) = stream.into_split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(bytes) = out_rx.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            let _ = writer.shutdown().await;
        });
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::with_capacity(8192);
            let mut chunk = vec![0u8; 16_384];
            loop {
                let n = match reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    let crlf = leading_crlf_len(&buf);
                    buf.drain(..crlf);
                    if buf.is_empty() {
                        break;
                    }
                    match parse_stream(&buf) {
                        Ok((msg, used)) => {
                            buf.drain(..used);
                            if tx.send(Input::Message(Box::new(msg), peer)).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind == ParseErrorKind::Incomplete => break,
                        Err(e) => match malformed_len(&buf) {
                            Skip::Bytes(n) => {
                                tracing::debug!(%peer, error = %e, "skipping a malformed message");
                                buf.drain(..n);
                            }
                            Skip::Wait => break,
                            Skip::Lost => {
                                tracing::warn!(%peer, error = %e, "unreadable TCP stream; closing");
                                let _ = tx.send(Input::Closed(peer));
                                return;
                            }
                        },
                    }
                }
            }
            let _ = tx.send(Input::Closed(peer));
        });
        self.conns.insert(flow, Conn { peer: addr, out });
        Ok((flow, local))
    }

    async fn send(&mut self, dest: Peer, bytes: &[u8]) -> std::io::Result<()> {
        let flow = dest
            .flow
            .filter(|f| self.conns.contains_key(f))
            .or_else(|| {
                self.conns
                    .iter()
                    .find(|(_, c)| c.peer == dest.addr)
                    .map(|(f, _)| *f)
            });
        let flow = match flow {
            Some(f) => f,
            None => self.connect(dest.addr).await?.0,
        };
        let conn = self.conns.get(&flow).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotConnected, "connection gone")
        })?;
        if conn.out.send(bytes.to_vec()).is_err() {
            self.conns.remove(&flow);
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "connection closed",
            ));
        }
        Ok(())
    }
}

/// What to do with a malformed message at the front of a stream buffer.
#[derive(Debug, PartialEq, Eq)]
enum Skip {
    /// Drop this many bytes: its header section and the body its
    /// Content-Length announces (none without a usable one).
    Bytes(usize),
    /// Not all of it is here yet.
    Wait,
    /// No way to find where it ends (no end of headers within the size
    /// limit, or an oversized body): the stream is lost.
    Lost,
}

fn malformed_len(buf: &[u8]) -> Skip {
    let limit = dots_sip::MAX_MESSAGE_SIZE;
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > limit {
            Skip::Lost
        } else {
            Skip::Wait
        };
    };
    let head = end + 4;
    let body = String::from_utf8_lossy(&buf[..head])
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l"))
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    if body > limit {
        return Skip::Lost;
    }
    if head + body <= buf.len() {
        Skip::Bytes(head + body)
    } else {
        Skip::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_texts() {
        assert_eq!(one_line("hello"), "hello");
        assert_eq!(one_line("hello\r\n"), "hello");
        assert_eq!(one_line("a\r\nb\nc\rd\te"), "a\\nb\\nc\\nd e");
    }

    #[test]
    fn malformed_messages_are_skipped_on_streams() {
        let bad = b"INVITE sip:x SIP/2.0\r\nVia: nonsense\r\nContent-Length: 3\r\n\r\nabcOPTIONS";
        assert_eq!(malformed_len(bad), Skip::Bytes(bad.len() - 7));
        assert_eq!(malformed_len(b"garbage\r\n\r\n"), Skip::Bytes(11));
        assert_eq!(malformed_len(b"X\r\nl: 10\r\n\r\nabc"), Skip::Wait);
        assert_eq!(malformed_len(b"no end yet"), Skip::Wait);
        assert_eq!(malformed_len(&vec![b'a'; 70_000]), Skip::Lost);
        assert_eq!(
            malformed_len(b"X\r\nContent-Length: 9999999\r\n\r\n"),
            Skip::Lost
        );
    }

    #[test]
    fn node_addresses() {
        assert_eq!(
            split_node("127.0.0.1:5070").unwrap(),
            ("127.0.0.1".into(), 5070)
        );
        assert_eq!(
            split_node("Node.Example").unwrap(),
            ("node.example".into(), 5060)
        );
        assert_eq!(split_node("[::1]:5080").unwrap(), ("[::1]".into(), 5080));
        assert!(split_node("127.0.0.1:x").is_err());
        assert!(split_node("").is_err());
        assert!(split_node("a b:1").is_err());
    }
}
