//! `dots bench overlay`: the overlay benchmark.
//!
//! The workload is the one of the OpenDHT loopback harness (`bench/opendht/bench.py`),
//! unchanged, and the output is the same `phase=... key=value` lines, so that
//! `bench/opendht/summarize.py` tabulates both side by side:
//!
//! 1. N overlay nodes, one OS process each (`dots bench overlay-worker`, this same
//!    executable), TCP on 127.0.0.1 with distinct ports; node 0 is the bootstrap node,
//!    nodes 1..N-1 join through it; wait `--settle` seconds.
//! 2. `put`: K signed presence records of about `--value-size` bytes, subject
//!    `presence:<j>`, each signed and published by a random node; at most C ops in
//!    flight across the whole network.
//! 3. `get`: every subject looked up from a random node other than its publisher, twice
//!    in a row: `lookup(subject, fresh = false)` (local store/cache first, as the node
//!    routes a call), then `lookup(subject, fresh = true)` (always a DHT search).
//! 4. `kill`: SIGKILL round(kill_frac·N) random nodes, never node 0.
//! 5. `get_killed`, then `get_killed2`: every subject again, each time from a random
//!    surviving node that never touched it; `survival` = fraction found by the fresh
//!    DHT lookup, `survival_any` = found so in either pass.
//!
//! Latencies are timed inside the node process, from the API call to its result.
//! put: sign + `publish_confirmed` until it returns: stored locally, gossip under way,
//! and the DHT put acknowledged by min(8, N-1) peers (OpenDHT's put: its 8 closest). get, mapped onto the two
//! times OpenDHT's get reports: `p50_ms`.. ("first value") = `lookup(fresh = false)`
//! until it returns the expected record, over the ops where it did (`first_ok`);
//! `done_p50_ms`.. ("search done") = the `lookup(fresh = true)` that follows, until it
//! returns, found or not (as OpenDHT's done callback). `ok`, `survival` and
//! `survival_any` count the fresh lookup only: a subject is found when the DHT search
//! returns the expected record; the local answer's success is `first_ok`/`first_ok_ratio`.
//! Per phase also: CPU seconds and % of one core summed over the node processes, RSS.
//!
//! Safety: the run re-executes itself inside a fresh network namespace
//! (`unshare -n`, root needed) whose only interface is `lo`; nodes listen on and dial
//! 127.0.0.1 only. `--no-netns` skips that. Children are killed when the run ends,
//! fails or overruns `--max-seconds`; a worker also stops when its stdin closes.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

/// Benchmarks.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// The overlay on the OpenDHT harness workload: N node processes on
    /// 127.0.0.1, K presence records put and looked up, then looked up again
    /// after killing a fraction of the nodes. Needs root for `unshare -n`.
    Overlay(OverlayBenchArgs),
    /// One overlay node of `dots bench overlay`, driven over stdin/stdout.
    #[command(hide = true)]
    OverlayWorker(WorkerArgs),
}

#[derive(clap::Args, Clone)]
pub struct OverlayBenchArgs {
    /// Number of nodes (processes).
    #[arg(short = 'n', long, default_value_t = 10)]
    nodes: usize,
    /// Number of records (distinct subjects).
    #[arg(short = 'k', long, default_value_t = 1000)]
    keys: usize,
    /// Fraction of the nodes killed (SIGKILL) after the first get pass.
    #[arg(long, default_value_t = 0.3)]
    kill_frac: f64,
    /// Most operations in flight, whole network.
    #[arg(short = 'c', long, default_value_t = 16)]
    concurrency: usize,
    /// Size of a signed record in bytes (padded with a random SIP URI).
    #[arg(long, default_value_t = 300)]
    value_size: usize,
    /// Seconds to wait after all nodes started.
    #[arg(long, default_value_t = 10.0)]
    settle: f64,
    /// Seconds after which an operation counts as failed.
    #[arg(long, default_value_t = 30.0)]
    op_timeout: f64,
    /// TCP port of node 0; node i listens on BASE+i.
    #[arg(long, default_value_t = 43000)]
    base_port: u16,
    /// Seed of the workload's random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Do not re-execute inside a fresh network namespace (`unshare -n`).
    #[arg(long)]
    no_netns: bool,
    /// Watchdog: abort the whole run after this many seconds.
    #[arg(long, default_value_t = 1800.0)]
    max_seconds: f64,
    /// A put returns once this many peers (at most N-1) acknowledged the DHT put;
    /// OpenDHT's put returns once its 8 closest nodes stored the value.
    #[arg(long, default_value_t = 8)]
    put_replicas: usize,
}

#[derive(clap::Args)]
pub struct WorkerArgs {
    #[arg(long)]
    index: usize,
    #[arg(long)]
    port: u16,
    #[arg(long)]
    bootstrap: Option<String>,
    /// Lifetime of published records, ms (also the overlay's max_ttl).
    #[arg(long, default_value_t = 600_000)]
    ttl_ms: u64,
    #[arg(long, default_value_t = 1800.0)]
    max_seconds: f64,
    /// A put returns once this many peers acknowledged the DHT put.
    #[arg(long, default_value_t = 8)]
    put_replicas: usize,
}

/// Environment variable set once the run is inside its own network namespace.
const NETNS_ENV: &str = "DOTS_BENCH_NETNS";
/// How long the records live (as OpenDHT's default values: 10 min).
const RECORD_TTL_MS: u64 = 600_000;

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Overlay(args) => coordinator(args),
        BenchCommand::OverlayWorker(args) => worker(args),
    }
}

// ---------------------------------------------------------------------------
// Messages between the coordinator and its workers: one JSON object per line.
// ---------------------------------------------------------------------------

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "t", rename_all = "snake_case")]
enum ToWorker {
    /// Sign and publish a record for `subject`, padded with `fill` to `size` bytes.
    Put {
        op: usize,
        subject: String,
        fill: String,
        size: usize,
    },
    /// Look `subject` up; ok if the record found is `expect` (hex of the signed bytes).
    Get {
        op: usize,
        subject: String,
        expect: String,
    },
    Stats,
    Quit,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "t", rename_all = "snake_case")]
enum FromWorker {
    Ready {
        pid: u32,
        peer: String,
        addr: String,
    },
    Res {
        op: usize,
        ok: bool,
        ms: f64,
        /// get: whether `lookup(fresh = false)` (timed by `ms`) returned the expected record.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first_ok: Option<bool>,
        /// get: time of the `lookup(fresh = true)` that follows; `ok` is its result.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        done_ms: Option<f64>,
        /// put: hex of the signed record.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        record: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        err: Option<String>,
    },
    Stats {
        peers: u64,
        gossip_peers: u64,
        records: u64,
        lookups: u64,
        lookups_found: u64,
        published: u64,
        accepted: u64,
        refused: u64,
    },
}

// ---------------------------------------------------------------------------
// Worker: one overlay node per process.
// ---------------------------------------------------------------------------

fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let max = Duration::from_secs_f64(args.max_seconds);
    runtime.block_on(async {
        match tokio::time::timeout(max, worker_loop(args)).await {
            Ok(result) => result,
            Err(_) => bail!("worker ran longer than --max-seconds"),
        }
    })
}

fn emit(msg: &FromWorker) {
    let line = serde_json::to_string(msg).expect("plain data serializes");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn worker_loop(args: WorkerArgs) -> anyhow::Result<()> {
    use dots_overlay::{now_ms, Overlay, OverlayConfig};
    use dots_records::{NodeKey, PresenceRecord};

    let key = NodeKey::generate();
    let listen: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", args.port).parse()?;
    let bootstrap = match &args.bootstrap {
        Some(addr) => vec![addr.parse().context("bootstrap address")?],
        None => vec![],
    };
    let (overlay, mut events) = Overlay::start(OverlayConfig {
        key: key.clone(),
        listen: vec![listen],
        bootstrap,
        max_ttl: args.ttl_ms,
    })
    .await?;
    // Nobody reads the presence events here; drain them so that none is reported dropped.
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let addr = overlay
        .listen_addrs()
        .await
        .into_iter()
        .next()
        .context("no listen address")?;
    emit(&FromWorker::Ready {
        pid: std::process::id(),
        peer: overlay.peer_id().to_string(),
        addr: addr.to_string(),
    });

    let sip_port = 5060 + args.index;
    let ttl_ms = args.ttl_ms;
    let put_replicas =
        std::num::NonZeroUsize::new(args.put_replicas).context("--put-replicas 0")?;
    // Commands arrive on stdin, read by a plain thread; its end (EOF) stops the node.
    let (line_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        let msg: ToWorker = match serde_json::from_str(&line) {
            Ok(msg) => msg,
            Err(e) => {
                eprintln!("overlay-worker {}: bad command: {e}", args.index);
                continue;
            }
        };
        match msg {
            ToWorker::Put {
                op,
                subject,
                fill,
                size,
            } => {
                let overlay = overlay.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let mut sip = vec![
                        format!("sip:127.0.0.1:{sip_port};transport=tcp"),
                        "sip:@127.0.0.1".to_string(),
                    ];
                    // Expiry a second inside max_ttl, so that clock steps between
                    // nodes never make it "too far in the future".
                    let exp = now_ms() + ttl_ms.saturating_sub(1000);
                    let base = PresenceRecord::new(subject.as_str(), &key, sip.clone(), 1, exp)
                        .encode_body()
                        .len()
                        + dots_records::SIGNATURE_LEN;
                    let pad = size.saturating_sub(base).min(fill.len());
                    sip[1] = format!("sip:{}@127.0.0.1", &fill[..pad]);
                    let record = PresenceRecord::new(subject, &key, sip, 1, exp);
                    let bytes = record.sign(&key);
                    let result = overlay.publish_confirmed(bytes.clone(), put_replicas).await;
                    let ms = started.elapsed().as_secs_f64() * 1e3;
                    emit(&FromWorker::Res {
                        op,
                        ok: result.is_ok(),
                        ms,
                        first_ok: None,
                        done_ms: None,
                        record: Some(to_hex(&bytes)),
                        err: result.err().map(|e| format!("{e:#}")),
                    });
                });
            }
            ToWorker::Get {
                op,
                subject,
                expect,
            } => {
                let overlay = overlay.clone();
                tokio::spawn(async move {
                    let expect =
                        from_hex(&expect).and_then(|b| PresenceRecord::decode_unverified(&b).ok());
                    let check = |result: anyhow::Result<Option<PresenceRecord>>| match result {
                        Ok(Some(found)) if Some(&found) == expect.as_ref() => (true, None),
                        Ok(Some(_)) => (false, Some("another record".to_string())),
                        Ok(None) => (false, None),
                        Err(e) => (false, Some(format!("{e:#}"))),
                    };
                    // First value: the path a call is routed by (local store/cache, else DHT).
                    let started = Instant::now();
                    let first = overlay.lookup(&subject, false).await;
                    let ms = started.elapsed().as_secs_f64() * 1e3;
                    let (first_ok, first_err) = check(first);
                    // Search done: always a DHT search.
                    let started = Instant::now();
                    let fresh = overlay.lookup(&subject, true).await;
                    let done_ms = started.elapsed().as_secs_f64() * 1e3;
                    let (ok, err) = check(fresh);
                    emit(&FromWorker::Res {
                        op,
                        ok,
                        ms,
                        first_ok: Some(first_ok),
                        done_ms: Some(done_ms),
                        record: None,
                        err: err.or(first_err.map(|e| format!("first: {e}"))),
                    });
                });
            }
            ToWorker::Stats => {
                let m = overlay.metrics().await;
                emit(&FromWorker::Stats {
                    peers: m.peers_connected,
                    gossip_peers: m.gossip_peers,
                    records: m.records_stored,
                    lookups: m.lookups,
                    lookups_found: m.lookups_found,
                    published: m.published,
                    accepted: m.records_accepted,
                    refused: m.refused_total(),
                });
            }
            ToWorker::Quit => break,
        }
    }
    overlay.shutdown().await;
    Ok(())
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    s.as_bytes()
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect::<Option<Vec<u8>>>()
        .filter(|bytes| bytes.len() * 2 == s.len())
}

// ---------------------------------------------------------------------------
// Coordinator.
// ---------------------------------------------------------------------------

/// The workload's random choices (SplitMix64: small, seedable, reproducible).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn choice<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// `k` distinct items of `items`.
    fn sample<T: Copy>(&mut self, items: &[T], k: usize) -> Vec<T> {
        let mut pool = items.to_vec();
        let k = k.min(pool.len());
        for i in 0..k {
            let j = i + self.below(pool.len() - i);
            pool.swap(i, j);
        }
        pool.truncate(k);
        pool
    }

    fn hex(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16)]))
            .collect()
    }
}

/// A line from worker `.0`, or `None` when its stdout closed.
type Line = (usize, Option<String>);

/// The worker processes. Dropping it kills every one still running.
struct Net {
    children: Arc<Mutex<Vec<Option<Child>>>>,
    stdins: Vec<Option<ChildStdin>>,
    pids: Vec<u32>,
    alive: BTreeSet<usize>,
    lines: mpsc::Receiver<Line>,
    line_tx: mpsc::Sender<Line>,
}

impl Drop for Net {
    fn drop(&mut self) {
        kill_all(&self.children);
    }
}

fn kill_all(children: &Mutex<Vec<Option<Child>>>) {
    let mut children = children.lock().unwrap_or_else(|e| e.into_inner());
    for child in children.iter_mut().filter_map(Option::take) {
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
    }
}

struct OpResult {
    ok: bool,
    ms: Option<f64>,
    first_ok: bool,
    done_ms: Option<f64>,
    record: Option<String>,
}

impl OpResult {
    fn failed() -> OpResult {
        OpResult {
            ok: false,
            ms: None,
            first_ok: false,
            done_ms: None,
            record: None,
        }
    }
}

struct Stats {
    peers: u64,
    gossip_peers: u64,
    records: u64,
}

impl Net {
    fn new() -> Net {
        let (line_tx, lines) = mpsc::channel();
        Net {
            children: Arc::new(Mutex::new(Vec::new())),
            stdins: Vec::new(),
            pids: Vec::new(),
            alive: BTreeSet::new(),
            lines,
            line_tx,
        }
    }

    fn spawn(
        &mut self,
        a: &OverlayBenchArgs,
        index: usize,
        bootstrap: Option<&str>,
    ) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        let port = a
            .base_port
            .checked_add(u16::try_from(index)?)
            .context("port out of range")?;
        let mut cmd = Process::new(exe);
        cmd.args(["bench", "overlay-worker", "--index"])
            .arg(index.to_string())
            .arg("--port")
            .arg(port.to_string())
            .arg("--ttl-ms")
            .arg(RECORD_TTL_MS.to_string())
            .arg("--max-seconds")
            .arg(a.max_seconds.to_string())
            .arg("--put-replicas")
            .arg(
                a.put_replicas
                    .min(a.nodes.saturating_sub(1))
                    .max(1)
                    .to_string(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(b) = bootstrap {
            cmd.arg("--bootstrap").arg(b);
        }
        let mut child = cmd.spawn().context("spawn overlay-worker")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        self.stdins.push(child.stdin.take());
        self.pids.push(child.id());
        self.children
            .lock()
            .expect("not poisoned")
            .push(Some(child));
        self.alive.insert(index);
        let tx = self.line_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(line) => {
                        if tx.send((index, Some(line))).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = tx.send((index, None));
        });
        Ok(())
    }

    fn send(&mut self, index: usize, msg: &ToWorker) -> bool {
        let Some(stdin) = self.stdins.get_mut(index).and_then(Option::as_mut) else {
            return false;
        };
        let line = serde_json::to_string(msg).expect("plain data serializes");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .is_ok()
    }

    /// Waits for `Ready` from each of `want`; returns their listen addresses.
    fn wait_ready(
        &mut self,
        want: &[usize],
        timeout: Duration,
    ) -> anyhow::Result<HashMap<usize, String>> {
        let deadline = Instant::now() + timeout;
        let mut addrs = HashMap::new();
        while addrs.len() < want.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let missing: Vec<_> = want.iter().filter(|i| !addrs.contains_key(*i)).collect();
                bail!("nodes not ready: {missing:?}");
            }
            match self.lines.recv_timeout(left.min(Duration::from_secs(1))) {
                Ok((i, Some(line))) => match serde_json::from_str(&line) {
                    Ok(FromWorker::Ready { pid, addr, .. }) => {
                        self.pids[i] = pid;
                        addrs.insert(i, addr);
                    }
                    _ => bail!("node {i}: unexpected line before ready: {line}"),
                },
                Ok((i, None)) => bail!("node {i} exited before it was ready"),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("all nodes gone"),
            }
        }
        Ok(addrs)
    }

    fn kill(&mut self, victims: &[usize]) {
        let mut children = self.children.lock().expect("not poisoned");
        for &i in victims {
            if let Some(mut child) = children[i].take() {
                let _ = child.kill(); // SIGKILL
                let _ = child.wait();
            }
            self.stdins[i] = None;
            self.alive.remove(&i);
        }
    }

    fn stats(&mut self) -> HashMap<usize, Stats> {
        let alive: Vec<usize> = self.alive.iter().copied().collect();
        for &i in &alive {
            self.send(i, &ToWorker::Stats);
        }
        let mut out = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while out.len() < alive.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.lines.recv_timeout(left) {
                Ok((i, Some(line))) => {
                    if let Ok(FromWorker::Stats {
                        peers,
                        gossip_peers,
                        records,
                        ..
                    }) = serde_json::from_str(&line)
                    {
                        out.insert(
                            i,
                            Stats {
                                peers,
                                gossip_peers,
                                records,
                            },
                        );
                    }
                }
                Ok((_, None)) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        out
    }

    /// (cpu seconds, rss MiB) of each live worker.
    fn usage(&self) -> HashMap<usize, (f64, f64)> {
        self.alive
            .iter()
            .filter_map(|&i| proc_usage(self.pids[i]).map(|u| (i, u)))
            .collect()
    }

    fn stop(&mut self) {
        let alive: Vec<usize> = self.alive.iter().copied().collect();
        for &i in &alive {
            self.send(i, &ToWorker::Quit);
        }
        self.stdins.iter_mut().for_each(|s| *s = None);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut children = self.children.lock().expect("not poisoned");
        for slot in children.iter_mut() {
            if let Some(child) = slot.as_mut() {
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
                *slot = None;
            }
        }
    }
}

/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux).
fn clock_ticks() -> f64 {
    Process::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

static CLK_TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

/// (cpu seconds, rss MiB) of a live process.
fn proc_usage(pid: u32) -> Option<(f64, f64)> {
    let tck = *CLK_TCK.get_or_init(clock_ticks);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let parts: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = parts.get(11)?.parse().ok()?;
    let stime: f64 = parts.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Some(((utime + stime) / tck, rss_kb / 1024.0))
}

fn self_cpu() -> f64 {
    proc_usage(std::process::id()).map_or(0.0, |u| u.0)
}

/// Percentile with linear interpolation (as bench.py's `pct`).
fn pct(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    let k = (xs.len() - 1) as f64 * p / 100.0;
    let f = k.floor() as usize;
    let c = (f + 1).min(xs.len() - 1);
    xs[f] + (xs[c] - xs[f]) * (k - f as f64)
}

fn fmt(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else {
        format!("{x:.2}")
    }
}

type Fields = Vec<(&'static str, String)>;

fn phase_line(name: &str, a: &OverlayBenchArgs, fields: &Fields) {
    let mut line = format!("phase={name} n={}", a.nodes);
    for (k, v) in fields {
        line.push_str(&format!(" {k}={v}"));
    }
    println!("{line}");
    let _ = std::io::stdout().flush();
}

fn usage_fields(
    u0: &HashMap<usize, (f64, f64)>,
    u1: &HashMap<usize, (f64, f64)>,
    wall: f64,
    ctl0: f64,
    ctl1: f64,
) -> Fields {
    let cpu: f64 = u1
        .iter()
        .filter_map(|(i, (c1, _))| u0.get(i).map(|(c0, _)| c1 - c0))
        .sum();
    let rss: Vec<f64> = u1.values().map(|u| u.1).collect();
    let total: f64 = rss.iter().sum();
    let avg = if rss.is_empty() {
        f64::NAN
    } else {
        total / rss.len() as f64
    };
    let max = rss.iter().copied().fold(f64::NAN, f64::max);
    vec![
        ("wall_s", fmt(wall)),
        ("nodes_cpu_s", fmt(cpu)),
        (
            "nodes_cpu_pct",
            fmt(if wall > 0.0 {
                100.0 * cpu / wall
            } else {
                f64::NAN
            }),
        ),
        ("rss_mb_total", fmt(total)),
        ("rss_mb_node_avg", fmt(avg)),
        ("rss_mb_node_max", fmt(max)),
        ("harness_cpu_s", fmt(ctl1 - ctl0)),
    ]
}

/// Runs `ops` (node, message without op id) with at most `concurrency` in flight.
fn run_ops(
    net: &mut Net,
    name: &str,
    ops: &[(usize, ToWorker)],
    concurrency: usize,
    op_timeout: Duration,
) -> Vec<OpResult> {
    let mut results: Vec<Option<OpResult>> = (0..ops.len()).map(|_| None).collect();
    let mut inflight: HashMap<usize, (Instant, usize)> = HashMap::new();
    let mut next = 0;
    let mut done = 0;
    let started = Instant::now();
    let mut progress = Instant::now();
    while next < ops.len() || !inflight.is_empty() {
        while next < ops.len() && inflight.len() < concurrency.max(1) {
            let (node, msg) = &ops[next];
            if net.send(*node, msg) {
                inflight.insert(next, (Instant::now(), *node));
            } else {
                results[next] = Some(OpResult::failed());
                done += 1;
            }
            next += 1;
        }
        match net.lines.recv_timeout(Duration::from_millis(200)) {
            Ok((_, Some(line))) => {
                if let Ok(FromWorker::Res {
                    op,
                    ok,
                    ms,
                    first_ok,
                    done_ms,
                    record,
                    ..
                }) = serde_json::from_str(&line)
                {
                    if inflight.remove(&op).is_some() {
                        results[op] = Some(OpResult {
                            ok,
                            ms: Some(ms),
                            // A put has no local answer: its only result is `ok`.
                            first_ok: first_ok.unwrap_or(ok),
                            done_ms,
                            record,
                        });
                        done += 1;
                    }
                }
            }
            Ok((node, None)) => {
                let lost: Vec<usize> = inflight
                    .iter()
                    .filter(|(_, (_, n))| *n == node)
                    .map(|(o, _)| *o)
                    .collect();
                for o in lost {
                    inflight.remove(&o);
                    results[o] = Some(OpResult::failed());
                    done += 1;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        let late: Vec<usize> = inflight
            .iter()
            .filter(|(_, (t, _))| now.duration_since(*t) > op_timeout)
            .map(|(o, _)| *o)
            .collect();
        for o in late {
            inflight.remove(&o);
            results[o] = Some(OpResult::failed());
            done += 1;
        }
        if progress.elapsed() > Duration::from_secs(5) {
            progress = Instant::now();
            eprintln!(
                "# {name}: {done}/{} done, {} in flight, {:.0} s",
                ops.len(),
                inflight.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(OpResult::failed))
        .collect()
}

#[derive(PartialEq)]
enum Kind {
    Put,
    Get,
}

/// One measured phase; prints its line and returns the per-op results.
fn timed_phase(
    net: &mut Net,
    a: &OverlayBenchArgs,
    name: &str,
    ops: &[(usize, ToWorker)],
    kind: Kind,
    survival_any: Option<&mut Vec<bool>>,
) -> Vec<OpResult> {
    let (u0, c0, t0) = (net.usage(), self_cpu(), Instant::now());
    let res = run_ops(
        net,
        name,
        ops,
        a.concurrency,
        Duration::from_secs_f64(a.op_timeout),
    );
    let wall = t0.elapsed().as_secs_f64();
    let (u1, c1) = (net.usage(), self_cpu());
    let ok: Vec<&OpResult> = res.iter().filter(|r| r.ok).collect();
    let ratio = if ops.is_empty() {
        f64::NAN
    } else {
        ok.len() as f64 / ops.len() as f64
    };
    let mut fields: Fields = vec![
        ("keys", ops.len().to_string()),
        ("ok", ok.len().to_string()),
        ("fail", (ops.len() - ok.len()).to_string()),
        ("ok_ratio", format!("{ratio:.4}")),
        ("conc", a.concurrency.to_string()),
        ("ops_per_s", fmt(ops.len() as f64 / wall)),
    ];
    if name.starts_with("get_killed") {
        fields.push(("survival", format!("{ratio:.4}")));
    }
    if let Some(found) = survival_any {
        for (f, r) in found.iter_mut().zip(&res) {
            *f |= r.ok;
        }
        let any = found.iter().filter(|f| **f).count() as f64 / found.len().max(1) as f64;
        fields.push(("survival_any", format!("{any:.4}")));
    }
    let first_ok = res.iter().filter(|r| r.first_ok).count();
    if kind == Kind::Get {
        fields.extend([
            ("first_ok", first_ok.to_string()),
            (
                "first_ok_ratio",
                format!("{:.4}", first_ok as f64 / ops.len().max(1) as f64),
            ),
        ]);
    }
    // put: until `publish_confirmed` returned; get: the first value, `lookup(fresh = false)`.
    let lat: Vec<f64> = res
        .iter()
        .filter(|r| r.first_ok)
        .filter_map(|r| r.ms)
        .collect();
    let max = lat.iter().copied().fold(f64::NAN, f64::max);
    fields.extend([
        ("p50_ms", fmt(pct(&lat, 50.0))),
        ("p95_ms", fmt(pct(&lat, 95.0))),
        ("p99_ms", fmt(pct(&lat, 99.0))),
        ("max_ms", fmt(max)),
    ]);
    if kind == Kind::Get {
        // Search done: the `lookup(fresh = true)`, found or not (as OpenDHT's done).
        let done: Vec<f64> = res.iter().filter_map(|r| r.done_ms).collect();
        fields.extend([
            ("done_p50_ms", fmt(pct(&done, 50.0))),
            ("done_p95_ms", fmt(pct(&done, 95.0))),
            ("done_p99_ms", fmt(pct(&done, 99.0))),
        ]);
        let failed: Vec<f64> = res
            .iter()
            .filter(|r| !r.ok)
            .filter_map(|r| r.done_ms)
            .collect();
        if !failed.is_empty() {
            fields.push(("fail_p50_ms", fmt(pct(&failed, 50.0))));
        }
    }
    fields.extend(usage_fields(&u0, &u1, wall, c0, c1));
    let st = net.stats();
    let mut records: Vec<u64> = st.values().map(|s| s.records).collect();
    records.sort_unstable();
    if let (Some(min), Some(max)) = (records.first(), records.last()) {
        fields.extend([
            ("records_node_min", min.to_string()),
            ("records_node_med", records[records.len() / 2].to_string()),
            ("records_node_max", max.to_string()),
        ]);
    }
    phase_line(name, a, &fields);
    res
}

/// Re-executes the run inside a fresh network namespace whose only interface is lo.
fn enter_netns() -> anyhow::Error {
    use std::os::unix::process::CommandExt as _;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return e.into(),
    };
    let err = Process::new("unshare")
        .args([
            "-n",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
            "_",
        ])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(NETNS_ENV, "1")
        .exec();
    anyhow::anyhow!("cannot unshare the network namespace ({err}); run as root or pass --no-netns")
}

fn coordinator(a: OverlayBenchArgs) -> anyhow::Result<()> {
    if a.nodes < 2 {
        bail!("--nodes must be at least 2");
    }
    let in_netns = std::env::var(NETNS_ENV).as_deref() == Ok("1");
    if !a.no_netns && !in_netns {
        return Err(enter_netns());
    }
    // /proc/self/net/dev is per network namespace.
    let ifaces: Vec<String> = std::fs::read_to_string("/proc/self/net/dev")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|s| s.trim().to_string())
        .collect();
    let mut rng = Rng(a.seed);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    phase_line(
        "env",
        &a,
        &vec![
            ("dots", env!("CARGO_PKG_VERSION").to_string()),
            ("overlay", "libp2p-0.57-tcp".to_string()),
            ("cpus", cpus.to_string()),
            ("netns", if in_netns { "True" } else { "False" }.to_string()),
            ("ifaces", ifaces.join(",")),
            ("ip_mode", "shared".to_string()),
            ("keys", a.keys.to_string()),
            ("value_size", a.value_size.to_string()),
            ("conc", a.concurrency.to_string()),
            ("kill_frac", a.kill_frac.to_string()),
            ("seed", a.seed.to_string()),
        ],
    );

    let mut net = Net::new();
    // Watchdog: whatever happens, the children do not outlive --max-seconds.
    {
        let children = Arc::clone(&net.children);
        let max = Duration::from_secs_f64(a.max_seconds);
        std::thread::spawn(move || {
            std::thread::sleep(max);
            println!("# watchdog: run exceeded --max-seconds, aborting");
            kill_all(&children);
            std::process::exit(3);
        });
    }
    let result = run_workload(&mut net, &a, &mut rng);
    net.stop();
    result
}

fn run_workload(net: &mut Net, a: &OverlayBenchArgs, rng: &mut Rng) -> anyhow::Result<()> {
    // ---- start: node 0 first, the others bootstrap from it
    let t0 = Instant::now();
    net.spawn(a, 0, None)?;
    let boot = net.wait_ready(&[0], Duration::from_secs(30))?[&0].clone();
    for i in 1..a.nodes {
        net.spawn(a, i, Some(&boot))?;
    }
    let rest: Vec<usize> = (1..a.nodes).collect();
    net.wait_ready(&rest, Duration::from_secs(60))?;
    let start_s = t0.elapsed().as_secs_f64();

    // ---- settle
    let (u0, c0, ts) = (net.usage(), self_cpu(), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(a.settle));
    let st = net.stats();
    let wall = ts.elapsed().as_secs_f64();
    let (u1, c1) = (net.usage(), self_cpu());
    let mut peers: Vec<u64> = st.values().map(|s| s.peers).collect();
    peers.sort_unstable();
    let mut gossip: Vec<u64> = st.values().map(|s| s.gossip_peers).collect();
    gossip.sort_unstable();
    let med = |v: &[u64]| v.get(v.len() / 2).copied().unwrap_or(0).to_string();
    let mut fields: Fields = vec![
        ("start_s", fmt(start_s)),
        ("settle_s", fmt(a.settle)),
        // For the overlay: connected peers (libp2p does not expose its routing table size).
        (
            "rt_good_min",
            peers.first().copied().unwrap_or(0).to_string(),
        ),
        ("rt_good_med", med(&peers)),
        (
            "rt_good_max",
            peers.last().copied().unwrap_or(0).to_string(),
        ),
        ("gossip_peers_med", med(&gossip)),
    ];
    fields.extend(usage_fields(&u0, &u1, wall, c0, c1));
    phase_line("settle", a, &fields);

    // ---- put
    let everyone: Vec<usize> = (0..a.nodes).collect();
    let subjects: Vec<String> = (0..a.keys).map(|j| format!("presence:{j}")).collect();
    let putters: Vec<usize> = (0..a.keys).map(|_| rng.choice(&everyone)).collect();
    let mut touched: Vec<BTreeSet<usize>> = putters.iter().map(|p| BTreeSet::from([*p])).collect();
    let ops: Vec<(usize, ToWorker)> = (0..a.keys)
        .map(|j| {
            let msg = ToWorker::Put {
                op: j,
                subject: subjects[j].clone(),
                fill: rng.hex(a.value_size),
                size: a.value_size,
            };
            (putters[j], msg)
        })
        .collect();
    let t_put = Instant::now();
    let put = timed_phase(net, a, "put", &ops, Kind::Put, None);
    let records: Vec<String> = put
        .iter()
        .map(|r| r.record.clone().unwrap_or_default())
        .collect();

    // ---- get from a node other than the putter
    let get_ops = |rng: &mut Rng, touched: &mut Vec<BTreeSet<usize>>, pool: &[usize]| {
        (0..a.keys)
            .map(|j| {
                let cand: Vec<usize> = pool
                    .iter()
                    .copied()
                    .filter(|i| !touched[j].contains(i))
                    .collect();
                let g = rng.choice(if cand.is_empty() { pool } else { &cand });
                touched[j].insert(g);
                let msg = ToWorker::Get {
                    op: j,
                    subject: subjects[j].clone(),
                    expect: records[j].clone(),
                };
                (g, msg)
            })
            .collect::<Vec<_>>()
    };
    let ops = get_ops(rng, &mut touched, &everyone);
    timed_phase(net, a, "get", &ops, Kind::Get, None);

    // ---- kill
    let nkill = (a.kill_frac * a.nodes as f64).round() as usize;
    let candidates: Vec<usize> = (1..a.nodes).collect();
    let mut victims = rng.sample(&candidates, nkill.min(a.nodes - 1));
    net.kill(&victims);
    victims.sort_unstable();
    phase_line(
        "kill",
        a,
        &vec![
            ("killed", victims.len().to_string()),
            ("alive", net.alive.len().to_string()),
            (
                "victims",
                victims
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ],
    );

    // ---- get after the kill, twice, each time from a fresh surviving node
    let mut found_after_kill = vec![false; a.keys];
    for name in ["get_killed", "get_killed2"] {
        let alive: Vec<usize> = net.alive.iter().copied().collect();
        let ops = get_ops(rng, &mut touched, &alive);
        let any = if name == "get_killed2" {
            Some(&mut found_after_kill)
        } else {
            None
        };
        let res = timed_phase(net, a, name, &ops, Kind::Get, any);
        if name == "get_killed" {
            for (f, r) in found_after_kill.iter_mut().zip(&res) {
                *f |= r.ok;
            }
        }
        let age = t_put.elapsed().as_secs_f64();
        if age > 540.0 {
            println!(
                "# WARNING: {age:.0} s since the puts began; records expire after 10 min, \
                 so later phases under-count survival"
            );
        }
    }
    Ok(())
}
