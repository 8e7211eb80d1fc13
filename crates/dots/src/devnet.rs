//! `dots devnet`: a local network of nodes on loopback, in one command.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// One node of the devnet.
struct DevNode {
    index: usize,
    sip: u16,
    http: u16,
    p2p: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Child,
    peer_id: String,
}

/// Ports of node `i`: SIP at `base + i`, HTTP at `base + 1000 + i`, the
/// overlay at `base + 2000 + i`.
fn ports(base: u16, i: usize) -> anyhow::Result<(u16, u16, u16)> {
    let i = u16::try_from(i).context("too many nodes")?;
    let sip = base.checked_add(i);
    let http = base.checked_add(1000).and_then(|p| p.checked_add(i));
    let p2p = base.checked_add(2000).and_then(|p| p.checked_add(i));
    match (sip, http, p2p) {
        (Some(s), Some(h), Some(p)) => Ok((s, h, p)),
        _ => bail!("--base-port {base} leaves no room for the ports of node {i}"),
    }
}

/// Starts `count` nodes, all bootstrapped from the first, prints their
/// addresses and waits for Ctrl-C (or SIGTERM), then stops them all.
pub fn run(count: usize, base_port: u16, dir: &Path, open: bool) -> anyhow::Result<()> {
    if count == 0 {
        bail!("--nodes must be at least 1");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the dots executable")?;
    let mut nodes: Vec<DevNode> = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        let mut bootstrap: Option<String> = None;
        for i in 0..count {
            let (sip, http, p2p) = ports(base_port, i)?;
            let data_dir = dir.join(format!("node-{i}"));
            let log = dir.join(format!("node-{i}.log"));
            let logfile = std::fs::File::create(&log)
                .with_context(|| format!("cannot create {}", log.display()))?;
            let mut cmd = Command::new(&exe);
            cmd.arg("node")
                .arg("--data-dir")
                .arg(&data_dir)
                .arg("--sip")
                .arg(format!("127.0.0.1:{sip}"))
                .arg("--http")
                .arg(format!("127.0.0.1:{http}"))
                .arg("--p2p")
                .arg(format!("/ip4/127.0.0.1/tcp/{p2p}"));
            if let Some(b) = &bootstrap {
                cmd.arg("--bootstrap").arg(b);
            }
            if open {
                cmd.arg("--open");
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(logfile.try_clone()?)
                .stderr(logfile)
                .spawn()
                .context("cannot start a node")?;
            eprint!("\rstarting node {}/{count}…", i + 1);
            let mut node = DevNode {
                index: i,
                sip,
                http,
                p2p,
                data_dir,
                log,
                child,
                peer_id: String::new(),
            };
            let info = wait_for_node(&mut node)?;
            node.peer_id = info.peer_id.clone();
            if bootstrap.is_none() {
                bootstrap = info.p2p_addrs.into_iter().next();
                if bootstrap.is_none() {
                    bail!(
                        "node 0 reports no overlay address (see {})",
                        node.log.display()
                    );
                }
            }
            nodes.push(node);
        }
        eprintln!();
        print_table(&nodes, open);
        wait_for_stop(&mut nodes)
    })();
    stop_all(&mut nodes);
    result
}

struct NodeInfo {
    peer_id: String,
    p2p_addrs: Vec<String>,
}

fn wait_for_node(node: &mut DevNode) -> anyhow::Result<NodeInfo> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = node.child.try_wait()? {
            bail!(
                "node {} exited at start-up ({status}); its log {} says:\n{}",
                node.index,
                node.log.display(),
                std::fs::read_to_string(&node.log).unwrap_or_default()
            );
        }
        if let Some(body) = http_get(node.http, "/api/v1/node") {
            let v: serde_json::Value =
                serde_json::from_str(&body).context("bad /api/v1/node answer")?;
            let peer_id = v["peer_id"].as_str().unwrap_or_default().to_string();
            let p2p_addrs = v["p2p_addrs"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            return Ok(NodeInfo { peer_id, p2p_addrs });
        }
        if Instant::now() > deadline {
            bail!(
                "node {} did not come up within 60 s (see {})",
                node.index,
                node.log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A minimal HTTP/1.0 GET on 127.0.0.1; the body of a 200, else None.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_string())
}

fn print_table(nodes: &[DevNode], open: bool) {
    outln!(
        "DOTS devnet: {} nodes on 127.0.0.1{}",
        nodes.len(),
        if open { " (open registration)" } else { "" }
    );
    outln!(
        "{:<5} {:<22} {:<27} {:<28} peer id",
        "node",
        "SIP (udp+tcp)",
        "HTTP",
        "overlay"
    );
    for n in nodes {
        outln!(
            "{:<5} {:<22} {:<27} {:<28} {}",
            n.index,
            format!("sip:127.0.0.1:{}", n.sip),
            format!("http://127.0.0.1:{}", n.http),
            format!("/ip4/127.0.0.1/tcp/{}", n.p2p),
            n.peer_id
        );
    }
    if let Some(n) = nodes.first() {
        outln!(
            "data and logs under {}",
            n.data_dir.parent().unwrap_or(Path::new(".")).display()
        );
    }
    outln!("Ctrl-C stops them all.");
}

fn wait_for_stop(nodes: &mut [DevNode]) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let stop = crate::shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tick.tick() => {
                    for n in nodes.iter_mut() {
                        if let Some(status) = n.child.try_wait()? {
                            eprintln!("node {} exited ({status}); see {}", n.index, n.log.display());
                        }
                    }
                }
            }
        }
    })
}

/// Stops every node: SIGTERM (they drain and flush), then SIGKILL for any
/// still running after 5 s.
fn stop_all(nodes: &mut [DevNode]) {
    for n in nodes.iter() {
        // A terminal's Ctrl-C already reached the whole process group; this
        // covers SIGTERM sent to devnet alone.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(n.child.id().to_string())
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for n in nodes.iter_mut() {
        while Instant::now() < deadline && matches!(n.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(n.child.try_wait(), Ok(None)) {
            let _ = n.child.kill();
        }
        let _ = n.child.wait();
    }
    if !nodes.is_empty() {
        eprintln!("stopped {} nodes", nodes.len());
    }
}
