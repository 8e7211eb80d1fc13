//! End-to-end test harness: runs the real `dots` binary and real SIP peers
//! (SIPp, baresip) on 127.0.0.1, each on its own ports, every process bounded
//! in time and killed when its handle is dropped.
//!
//! When a test fails, the handles print what they know while the stack
//! unwinds: the node's log, SIPp's screen, error log and message trace.

#![allow(dead_code)]

pub mod baresip;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const LOCALHOST: &str = "127.0.0.1";

/// Path of the `dots` binary under test.
pub fn dots_bin() -> &'static str {
    env!("CARGO_BIN_EXE_dots")
}

/// Path of a SIPp scenario shipped with the tests.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("scenarios")
        .join(name)
}

// ---------------------------------------------------------------------------
// Ports and scratch directories
// ---------------------------------------------------------------------------

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A port that is free on 127.0.0.1 for both UDP and TCP right now, and that
/// this test process has never handed out before.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let udp = match UdpSocket::bind((LOCALHOST, 0)) {
            Ok(s) => s,
            Err(_) => continue,
        };
        let port = udp.local_addr().expect("local addr").port();
        // Keep clear of the ports SIPp picks for itself (media from 6000,
        // control from 8888) and of well-known SIP ports.
        if port < 10_000 {
            continue;
        }
        let tcp = match TcpListener::bind((LOCALHOST, port)) {
            Ok(s) => s,
            Err(_) => continue,
        };
        let mut seen = handed_out().lock().unwrap_or_else(|e| e.into_inner());
        if seen.insert(port) {
            drop(tcp);
            drop(udp);
            return port;
        }
    }
    panic!("no free port found on {LOCALHOST}");
}

/// A base port B such that B + o is free on 127.0.0.1 (UDP and TCP) for
/// every offset o, none handed out before; all of them are marked as handed
/// out. For programs that derive their ports from one base (`dots devnet`).
pub fn free_port_base(offsets: &[u16]) -> u16 {
    let max = offsets.iter().copied().max().unwrap_or(0);
    for _ in 0..1000 {
        let base = free_port();
        if u32::from(base) + u32::from(max) > 60_000 {
            continue;
        }
        let ports: Vec<u16> = offsets.iter().map(|o| base + o).collect();
        let all_free = ports.iter().all(|&p| {
            p == base
                || (UdpSocket::bind((LOCALHOST, p)).is_ok()
                    && TcpListener::bind((LOCALHOST, p)).is_ok())
        });
        if !all_free {
            continue;
        }
        let mut seen = handed_out().lock().unwrap_or_else(|e| e.into_inner());
        if ports.iter().all(|p| *p == base || !seen.contains(p)) {
            seen.extend(ports);
            return base;
        }
    }
    panic!("no free block of ports found on {LOCALHOST}");
}

/// A fresh, empty, uniquely named directory under the system temp dir.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "dots-e2e-{tag}-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn read_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => String::new(),
    }
}

/// The last `max` bytes of a text, on a char boundary.
pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGTERM (or another signal) to a process we started.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits for a child to exit, up to `timeout`.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then SIGKILL if the process is still there after `grace`.
/// SIGTERM, up to `grace` to exit, then SIGKILL; the exit status if it ended.
pub fn stop_child(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    signal(child.id(), "TERM");
    if let Some(st) = wait_child(child, grace) {
        return Some(st);
    }
    let _ = child.kill();
    wait_child(child, Duration::from_secs(5))
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// A minimal HTTP/1.0 GET: (status, body), or None if nothing answered.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr: SocketAddr = format!("{LOCALHOST}:{port}").parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {LOCALHOST}:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

// ---------------------------------------------------------------------------
// The node
// ---------------------------------------------------------------------------

/// How to start a node.
#[derive(Clone, Debug, Default)]
pub struct NodeConfig {
    /// `--open`: REGISTER without authentication.
    pub open: bool,
    /// Accounts created with `dots user add` before the node starts.
    pub users: Vec<(String, String)>,
    /// `--domain` names.
    pub domains: Vec<String>,
    /// `--digest-algorithms`: the challenges offered, most preferred first
    /// (the node's default is SHA-256 then MD5).
    pub digest_algorithms: Option<String>,
    /// `--sip-tls` on a port of its own (self-signed certificate).
    pub tls: bool,
    /// `--https` on a port of its own (HTTPS and SIP over secure WebSocket,
    /// self-signed certificate).
    pub https: bool,
    /// `--stun` on a UDP port of its own.
    pub stun: bool,
    /// `--p2p /ip4/127.0.0.1/tcp/<p2p_port>`: join the overlay.
    pub p2p: bool,
    /// `--bootstrap` multiaddrs (with `/p2p/<peer id>`), when `p2p` is set.
    pub bootstrap: Vec<String>,
}

impl NodeConfig {
    pub fn open() -> Self {
        NodeConfig {
            open: true,
            ..Default::default()
        }
    }

    pub fn with_auth() -> Self {
        NodeConfig::default()
    }

    /// Offer the MD5 challenge first: SIPp 3.6 answers only the first
    /// challenge of a 401/407, and only with MD5.
    pub fn md5_first(mut self) -> Self {
        self.digest_algorithms = Some("MD5,SHA-256".to_string());
        self
    }

    /// Offer only the MD5 challenge: baresip 1.0 (libre 1.1) gives up on a
    /// 401 as soon as any challenge names another algorithm.
    pub fn md5_only(mut self) -> Self {
        self.digest_algorithms = Some("MD5".to_string());
        self
    }

    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.to_string(), password.to_string()));
        self
    }

    /// Join the overlay, through these nodes (multiaddrs with `/p2p/`).
    pub fn p2p(mut self, bootstrap: &[String]) -> Self {
        self.p2p = true;
        self.bootstrap = bootstrap.to_vec();
        self
    }
}

/// A running `dots node`, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Node {
    child: Option<Child>,
    pub config: NodeConfig,
    pub sip_port: u16,
    pub http_port: u16,
    /// TLS listener port when `config.tls` is set.
    pub tls_port: u16,
    /// HTTPS port when `config.https` is set.
    pub https_port: u16,
    /// STUN (UDP) port when `config.stun` is set.
    pub stun_port: u16,
    /// Overlay (libp2p TCP) port when `config.p2p` is set.
    pub p2p_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    starts: u32,
}

/// Runs `dots user ARGS... --data-dir DIR`; returns (success, stdout+stderr).
pub fn dots_user(data_dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(dots_bin())
        .arg("user")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run dots user");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs `dots user add NAME --password PW --data-dir DIR`.
pub fn user_add(data_dir: &Path, name: &str, password: &str) {
    let (ok, text) = dots_user(data_dir, &["add", name, "--password", password]);
    assert!(ok, "dots user add {name} failed:\n{text}");
}

impl Node {
    /// Creates the data dir and the accounts, starts the node and waits
    /// until `/healthz` answers 200.
    pub fn start(config: NodeConfig) -> Node {
        Node::start_in(scratch_dir("node"), config)
    }

    /// Like `start`, on an existing data dir (removed when the node drops).
    pub fn start_in(data_dir: PathBuf, config: NodeConfig) -> Node {
        for (name, pw) in &config.users {
            user_add(&data_dir, name, pw);
        }
        let log_path = data_dir.with_extension("log");
        let mut node = Node {
            child: None,
            config,
            sip_port: free_port(),
            http_port: free_port(),
            tls_port: free_port(),
            https_port: free_port(),
            stun_port: free_port(),
            p2p_port: free_port(),
            data_dir,
            log_path,
            starts: 0,
        };
        node.spawn();
        node
    }

    /// "127.0.0.1:PORT" of the SIP listener.
    pub fn sip_addr(&self) -> String {
        format!("{LOCALHOST}:{}", self.sip_port)
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open node log");
        {
            let mut l = &log;
            let _ = writeln!(l, "===== test harness: start #{} =====", self.starts);
        }
        let mut cmd = Command::new(dots_bin());
        cmd.arg("node")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--sip")
            .arg(self.sip_addr())
            .arg("--http")
            .arg(format!("{LOCALHOST}:{}", self.http_port));
        if self.config.open {
            cmd.arg("--open");
        }
        if let Some(algs) = &self.config.digest_algorithms {
            cmd.arg("--digest-algorithms").arg(algs);
        }
        if self.config.tls {
            cmd.arg("--sip-tls")
                .arg(format!("{LOCALHOST}:{}", self.tls_port));
        }
        if self.config.https {
            cmd.arg("--https")
                .arg(format!("{LOCALHOST}:{}", self.https_port));
        }
        if self.config.stun {
            cmd.arg("--stun")
                .arg(format!("{LOCALHOST}:{}", self.stun_port));
        }
        for d in &self.config.domains {
            cmd.arg("--domain").arg(d);
        }
        if self.config.p2p {
            cmd.arg("--p2p")
                .arg(format!("/ip4/{LOCALHOST}/tcp/{}", self.p2p_port));
            for b in &self.config.bootstrap {
                cmd.arg("--bootstrap").arg(b);
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "debug");
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let child = cmd.spawn().expect("spawn dots node");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "dots node exited during startup ({st}); log {}:\n{}",
                    self.log_path.display(),
                    tail(&self.log(), 20_000)
                );
            }
            if let Some((200, body)) = http_get(self.http_port, "/healthz") {
                if body.trim() == "ok" {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "dots node did not answer /healthz within 60 s; log:\n{}",
                    tail(&self.log(), 20_000)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node's stdout+stderr so far (all starts).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn healthz(&self) -> Option<(u16, String)> {
        http_get(self.http_port, "/healthz")
    }

    /// `GET /api/v1/node` as JSON (peer_id, did, p2p_addrs, sip), if the
    /// node answers 200.
    pub fn node_info(&self) -> Option<serde_json::Value> {
        match http_get(self.http_port, "/api/v1/node") {
            Some((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// The body of `GET /metrics`, if the node answers 200.
    pub fn metrics(&self) -> Option<String> {
        match http_get(self.http_port, "/metrics") {
            Some((200, body)) => Some(body),
            _ => None,
        }
    }

    /// The value of one sample of `/metrics` (`name` with its labels, e.g.
    /// `dots_sip_requests_received_total{method="INVITE"}`), 0 if absent.
    pub fn metric(&self, name: &str) -> u64 {
        self.metrics()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .next()
            .unwrap_or(0)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL, as in a crash or power loss.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = wait_child(&mut c, Duration::from_secs(10));
        }
    }

    /// SIGTERM; returns the exit status (None if it had to be killed).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        signal(c.id(), "TERM");
        let st = wait_child(&mut c, Duration::from_secs(15));
        if st.is_none() {
            let _ = c.kill();
            let _ = wait_child(&mut c, Duration::from_secs(5));
        }
        st
    }

    /// Starts the node again on the same data dir and ports.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        self.spawn();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(10));
        }
        if thread::panicking() {
            eprintln!(
                "----- dots node log ({}) -----\n{}\n----- end of node log -----",
                self.log_path.display(),
                tail(&self.log(), 60_000)
            );
            eprintln!("node data dir kept: {}", self.data_dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.data_dir);
            let _ = fs::remove_file(&self.log_path);
        }
    }
}

// ---------------------------------------------------------------------------
// SIPp
// ---------------------------------------------------------------------------

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Panics with a clear message if a required tool is missing: the suite
/// needs SIPp and baresip, installed by `scripts/test`.
pub fn require(program: &str, package: &str) {
    assert!(
        have(program),
        "`{program}` is not installed (Debian package `{package}`); run scripts/test, which installs it"
    );
}

/// Transport for SIPp's `-t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn sipp_flag(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }
}

/// One SIPp invocation.
#[derive(Clone, Debug)]
pub struct Sipp {
    pub name: String,
    scenario: PathBuf,
    remote: Option<String>,
    pub port: u16,
    transport: Transport,
    calls: u32,
    timeout: Duration,
    keys: Vec<(String, String)>,
    extra: Vec<String>,
}

impl Sipp {
    /// A SIPp run of `scenario` (a file in tests/scenarios) on a fresh local port.
    pub fn new(name: &str, scenario_file: &str) -> Sipp {
        require("sipp", "sip-tester");
        Sipp {
            name: name.to_string(),
            scenario: scenario(scenario_file),
            remote: None,
            port: free_port(),
            transport: Transport::Udp,
            calls: 1,
            timeout: Duration::from_secs(30),
            keys: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Where requests go (the node's SIP address).
    pub fn remote(mut self, addr: &str) -> Self {
        self.remote = Some(addr.to_string());
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub fn transport(mut self, t: Transport) -> Self {
        self.transport = t;
        self
    }

    /// `-m`: stop after this many calls.
    pub fn calls(mut self, n: u32) -> Self {
        self.calls = n;
        self
    }

    /// `-timeout`: the run's upper bound.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// `-key NAME VALUE`: a `[NAME]` keyword in the scenario.
    pub fn key(mut self, k: &str, v: &str) -> Self {
        self.keys.push((k.to_string(), v.to_string()));
        self
    }

    /// Digest credentials for `[authentication]` (`-au`, `-ap`).
    pub fn auth(self, user: &str, password: &str) -> Self {
        self.arg("-au").arg(user).arg("-ap").arg(password)
    }

    /// `-auth_uri`: the digest-uri of `[authentication]`, which SIPp
    /// otherwise sets to the remote address ("sip:IP:PORT"), not to the
    /// Request-URI: pass "user@host" of the Request-URI for an INVITE.
    pub fn auth_uri(self, uri: &str) -> Self {
        self.arg("-auth_uri").arg(uri)
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.to_string());
        self
    }

    /// `host:port` of this SIPp instance, for Contact headers.
    pub fn hostport(&self) -> String {
        format!("{LOCALHOST}:{}", self.port)
    }

    /// Starts SIPp in the background; it is killed when the handle drops.
    pub fn spawn(&self) -> SippProc {
        let dir = scratch_dir(&format!("sipp-{}", self.name));
        let mut cmd = Command::new("sipp");
        if let Some(r) = &self.remote {
            cmd.arg(r);
        }
        let secs = self.timeout.as_secs().max(1);
        cmd.arg("-sf")
            .arg(&self.scenario)
            .args(["-i", LOCALHOST, "-p"])
            .arg(self.port.to_string())
            .args(["-t", self.transport.sipp_flag()])
            .args(["-m", &self.calls.to_string()])
            .args(["-timeout", &format!("{secs}s"), "-timeout_error"])
            .args(["-nostdin", "-max_recv_loops", "1000"])
            .args(["-trace_stat", "-stf"])
            .arg(dir.join("stat.csv"))
            .args(["-trace_err", "-error_file"])
            .arg(dir.join("errors.log"))
            .args(["-trace_msg", "-message_file"])
            .arg(dir.join("messages.log"))
            .args(["-trace_screen", "-screen_file"])
            .arg(dir.join("screen.log"));
        for (k, v) in &self.keys {
            cmd.arg("-key").arg(k).arg(v);
        }
        cmd.args(&self.extra);
        cmd.current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("stdout.log")).expect("sipp stdout"))
            .stderr(fs::File::create(dir.join("stderr.log")).expect("sipp stderr"));
        let child = cmd.spawn().expect("spawn sipp");
        SippProc {
            name: self.name.clone(),
            child: Some(child),
            dir,
            deadline: Instant::now() + self.timeout + Duration::from_secs(20),
            port: self.port,
            transport: self.transport,
            handed_over: false,
        }
    }

    /// Runs SIPp to the end and returns its result.
    pub fn run(&self) -> SippResult {
        self.spawn().wait()
    }
}

/// A running SIPp process.
pub struct SippProc {
    pub name: String,
    child: Option<Child>,
    dir: PathBuf,
    deadline: Instant,
    pub port: u16,
    transport: Transport,
    /// Set once the run's files belong to a `SippResult`.
    handed_over: bool,
}

/// What a SIPp run left behind; its files are removed on drop unless the
/// test is failing.
#[derive(Debug)]
pub struct SippResult {
    pub name: String,
    /// Exit code; None if SIPp had to be killed or died by a signal.
    pub code: Option<i32>,
    /// Last line of the `-trace_stat` CSV, by column name.
    pub stats: HashMap<String, String>,
    pub dir: PathBuf,
}

fn listening(port: u16, transport: Transport) -> bool {
    let (file, want_state) = match transport {
        Transport::Udp => ("/proc/net/udp", "07"),
        Transport::Tcp => ("/proc/net/tcp", "0A"),
    };
    let needle = format!("0100007F:{port:04X}");
    read_lossy(Path::new(file)).lines().skip(1).any(|l| {
        let mut f = l.split_whitespace();
        let local = f.nth(1).unwrap_or("");
        let state = f.nth(1).unwrap_or("");
        local == needle && state == want_state
    })
}

impl SippProc {
    /// Waits until SIPp listens on its port (so that requests sent to it
    /// from now on are received).
    pub fn wait_listening(&mut self) {
        let port = self.port;
        let transport = self.transport;
        let ok = wait_until(Duration::from_secs(20), || {
            listening(port, transport)
                || self
                    .child
                    .as_mut()
                    .map(|c| !matches!(c.try_wait(), Ok(None)))
                    .unwrap_or(true)
        });
        assert!(
            ok && listening(port, transport),
            "sipp `{}` does not listen on {port}:\n{}",
            self.name,
            self.report()
        );
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .map(|c| !matches!(c.try_wait(), Ok(None)))
            .unwrap_or(true)
    }

    /// Waits for SIPp to exit (it is killed at its deadline) and collects
    /// its result.
    pub fn wait(mut self) -> SippResult {
        let mut code = None;
        if let Some(mut c) = self.child.take() {
            let left = self.deadline.saturating_duration_since(Instant::now());
            code = match wait_child(&mut c, left) {
                Some(st) => st.code(),
                None => {
                    stop_child(&mut c, Duration::from_secs(3));
                    None
                }
            };
        }
        self.handed_over = true;
        SippResult {
            name: self.name.clone(),
            code,
            stats: parse_stats(&self.dir.join("stat.csv")),
            dir: self.dir.clone(),
        }
    }

    pub fn report(&self) -> String {
        report_dir(&self.name, &self.dir)
    }
}

impl Drop for SippProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(3));
        }
        if self.handed_over {
            return;
        }
        if thread::panicking() {
            eprintln!("{}", self.report());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for SippResult {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("sipp `{}` files kept in {}", self.name, self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn parse_stats(path: &Path) -> HashMap<String, String> {
    let text = read_lossy(path);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let (Some(header), Some(last)) = (lines.first(), lines.last()) else {
        return HashMap::new();
    };
    if lines.len() < 2 {
        return HashMap::new();
    }
    header
        .split(';')
        .zip(last.split(';'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn report_dir(name: &str, dir: &Path) -> String {
    let mut out = format!("===== sipp `{name}` ({}) =====\n", dir.display());
    for (f, max) in [
        ("stderr.log", 4_000),
        ("errors.log", 8_000),
        ("screen.log", 6_000),
        ("messages.log", 24_000),
    ] {
        let t = read_lossy(&dir.join(f));
        if !t.trim().is_empty() {
            out.push_str(&format!("--- {f} ---\n{}\n", tail(&t, max)));
        }
    }
    out
}

impl SippResult {
    fn stat(&self, key: &str) -> u64 {
        self.stats
            .get(key)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Calls that ended successfully (cumulative).
    pub fn successful(&self) -> u64 {
        self.stat("SuccessfulCall(C)")
    }

    /// Calls that failed (cumulative).
    pub fn failed(&self) -> u64 {
        self.stat("FailedCall(C)")
    }

    pub fn report(&self) -> String {
        report_dir(&self.name, &self.dir)
    }

    /// Asserts exit code 0 and exactly `calls` successful calls, none failed;
    /// on failure the panic message carries SIPp's logs.
    pub fn assert_ok(&self, calls: u64) {
        let ok = self.code == Some(0) && self.successful() == calls && self.failed() == 0;
        assert!(
            ok,
            "sipp `{}`: exit {:?}, successful {} (want {calls}), failed {}\n{}",
            self.name,
            self.code,
            self.successful(),
            self.failed(),
            self.report()
        );
    }
}

/// Registers `user`'s Contact `contact_hp` (host:port) with SIPp's register
/// scenario, without authentication (on an `--open` node).
pub fn register_open(node: &Node, user: &str, contact_hp: &str, t: Transport) -> SippResult {
    Sipp::new(&format!("register-{user}"), "register.xml")
        .remote(&node.sip_addr())
        .transport(t)
        .key("user", user)
        .key("contact_hp", contact_hp)
        .key("expires", "3600")
        .run()
}

/// Registers with Digest authentication.
pub fn register_auth(
    node: &Node,
    user: &str,
    password: &str,
    contact_hp: &str,
    t: Transport,
) -> SippResult {
    Sipp::new(&format!("register-auth-{user}"), "register_auth.xml")
        .remote(&node.sip_addr())
        .transport(t)
        .key("user", user)
        .key("contact_hp", contact_hp)
        .key("expires", "3600")
        .auth(user, password)
        .run()
}

// ---------------------------------------------------------------------------
// A raw SIP client, for checks SIPp cannot express
// ---------------------------------------------------------------------------

/// A random token for branches, tags and Call-IDs.
pub fn token() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{:x}{:x}{:x}",
        std::process::id(),
        nanos,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A parsed SIP response: status code, header lines, the whole text.
#[derive(Clone, Debug)]
pub struct SipResponse {
    pub status: u16,
    pub text: String,
}

impl SipResponse {
    pub fn parse(bytes: &[u8]) -> Option<SipResponse> {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let first = text.lines().next()?;
        let mut parts = first.split_whitespace();
        if parts.next()? != "SIP/2.0" {
            return None;
        }
        let status = parts.next()?.parse().ok()?;
        Some(SipResponse { status, text })
    }

    /// Values of all headers named `name` (or its compact form), in order.
    pub fn headers(&self, name: &str, compact: Option<&str>) -> Vec<String> {
        header_values(&self.text, name, compact)
            .into_iter()
            .map(str::to_string)
            .collect()
    }
}

/// Values of all headers named `name` (or its compact form) in the SIP
/// message `text`, one per header line, in order.
pub fn header_values<'a>(text: &'a str, name: &str, compact: Option<&str>) -> Vec<&'a str> {
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    head.lines()
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            let n = n.trim();
            (n.eq_ignore_ascii_case(name) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c)))
                .then(|| v.trim())
        })
        .collect()
}

/// A UDP socket on 127.0.0.1 that sends requests and collects responses.
pub struct UdpClient {
    pub sock: UdpSocket,
    pub port: u16,
}

impl UdpClient {
    pub fn new() -> UdpClient {
        let sock = UdpSocket::bind((LOCALHOST, 0)).expect("bind udp");
        let port = sock.local_addr().expect("addr").port();
        UdpClient { sock, port }
    }

    /// Sends `msg` and waits up to `timeout` for a response whose Call-ID is
    /// `call_id` with a final status (>= 200).
    pub fn request(
        &self,
        to: &str,
        msg: &str,
        call_id: &str,
        timeout: Duration,
    ) -> Option<SipResponse> {
        let deadline = Instant::now() + timeout;
        let mut next_send = Instant::now();
        let mut interval = Duration::from_millis(500);
        let mut buf = vec![0u8; 65_536];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            if now >= next_send {
                let _ = self.sock.send_to(msg.as_bytes(), to);
                next_send = now + interval;
                interval = (interval * 2).min(Duration::from_secs(4));
            }
            let wait = next_send
                .min(deadline)
                .saturating_duration_since(Instant::now());
            let _ = self
                .sock
                .set_read_timeout(Some(wait.max(Duration::from_millis(5))));
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                if let Some(r) = SipResponse::parse(&buf[..n]) {
                    let same_call = r.headers("Call-ID", Some("i")).iter().any(|v| v == call_id);
                    if same_call && r.status >= 200 {
                        return Some(r);
                    }
                }
            }
        }
    }

    /// An OPTIONS to the node itself; returns the final response.
    pub fn options(&self, node_addr: &str) -> Option<SipResponse> {
        let call_id = token();
        let msg = format!(
            "OPTIONS sip:{node_addr} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {LOCALHOST}:{port};branch=z9hG4bK{b};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:probe@{LOCALHOST}>;tag={t}\r\n\
             To: <sip:{node_addr}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Accept: application/sdp\r\n\
             Content-Length: 0\r\n\r\n",
            port = self.port,
            b = token(),
            t = token(),
        );
        self.request(node_addr, &msg, &call_id, Duration::from_secs(10))
    }

    /// A REGISTER without Contact (a query of the bindings of `user`).
    pub fn register_query(&self, node_addr: &str, user: &str) -> Option<SipResponse> {
        let call_id = token();
        let msg = format!(
            "REGISTER sip:{LOCALHOST} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {LOCALHOST}:{port};branch=z9hG4bK{b};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{LOCALHOST}>;tag={t}\r\n\
             To: <sip:{user}@{LOCALHOST}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 REGISTER\r\n\
             Content-Length: 0\r\n\r\n",
            port = self.port,
            b = token(),
            t = token(),
        );
        self.request(node_addr, &msg, &call_id, Duration::from_secs(10))
    }
}

impl Default for UdpClient {
    fn default() -> Self {
        Self::new()
    }
}

/// A TCP OPTIONS to the node; returns the response's status line and text.
pub fn options_tcp(node_addr: &str) -> Option<SipResponse> {
    let addr: SocketAddr = node_addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let port = s.local_addr().ok()?.port();
    let call_id = token();
    let msg = format!(
        "OPTIONS sip:{node_addr};transport=tcp SIP/2.0\r\n\
         Via: SIP/2.0/TCP {LOCALHOST}:{port};branch=z9hG4bK{b}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{LOCALHOST}>;tag={t}\r\n\
         To: <sip:{node_addr}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        b = token(),
        t = token(),
    );
    s.write_all(msg.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .filter_map(|l| l.split_once(':'))
                        .find(|(n, _)| {
                            n.trim().eq_ignore_ascii_case("content-length")
                                || n.trim().eq_ignore_ascii_case("l")
                        })
                        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        let r = SipResponse::parse(&buf)?;
                        if r.status >= 200 {
                            return Some(r);
                        }
                        buf.clear();
                    }
                }
            }
            Err(_) => break,
        }
    }
    None
}

// ---------------------------------------------------------------------------
// HTTP with any method and headers, and `dots id`
// ---------------------------------------------------------------------------

/// An answer of [`http_send`]: status, headers (names lowercased), body.
#[derive(Clone, Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.body))
    }
}

/// One HTTP/1.1 request (`Connection: close`) to 127.0.0.1:`port`; None if
/// nothing answered. Bodies of the node's API are never chunked.
pub fn http_send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<HttpAnswer> {
    let addr: SocketAddr = format!("{LOCALHOST}:{port}").parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {LOCALHOST}:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(HttpAnswer {
        status,
        headers,
        body: body.to_string(),
    })
}

/// Runs `dots id ARGS` without a passphrase in the environment; returns
/// (success, stdout, stderr).
pub fn run_dots_id(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(dots_bin())
        .arg("id")
        .args(args)
        .env_remove("DOTS_WALLET_PASSPHRASE")
        .stdin(Stdio::null())
        .output()
        .expect("run dots id");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of the line `KEY: VALUE` of a command's output.
pub fn output_field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.trim().to_string())
}
