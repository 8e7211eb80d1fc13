//! Federation end to end: several `dots node` processes joined in one
//! overlay on 127.0.0.1, SIPp user agents registered at one node and called
//! through another, a node killed under a registered user, forged presence
//! records injected by an in-process overlay peer, and `dots devnet`.

mod common;

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use dots_records::{presence_key, NodeKey, PresenceRecord};
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{gossipsub, identify, kad, noise, tcp, yamux, Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

/// Generous bound for anything that crosses the overlay on a loaded machine.
const OVERLAY_WAIT: Duration = Duration::from_secs(60);

/// The address of record of `user` on a loopback node (its listen IP is its
/// canonical domain).
fn aor(user: &str) -> String {
    format!("sip:{user}@{LOCALHOST}")
}

// ---------------------------------------------------------------------------
// Nodes and their metrics
// ---------------------------------------------------------------------------

/// A metric sample: the value on the line `NAME VALUE` (NAME with its
/// labels, if any); 0 when the sample is absent.
fn refused(node: &Node, reason: &str) -> u64 {
    node.metric(&format!(
        "dots_overlay_records_refused_total{{reason=\"{reason}\"}}"
    ))
}

fn requests_received(node: &Node, method: &str) -> u64 {
    node.metric(&format!(
        "dots_sip_requests_received_total{{method=\"{method}\"}}"
    ))
}

/// Overlay lookups a node has answered (found or not).
fn lookups(node: &Node) -> u64 {
    node.metric("dots_overlay_lookup_duration_ms_count")
}

/// (peer id, overlay multiaddr with /p2p/) from `GET /api/v1/node`.
fn identity(node: &Node) -> (String, String) {
    let info = node
        .node_info()
        .unwrap_or_else(|| panic!("no /api/v1/node on {}", node.sip_addr()));
    let peer_id = info["peer_id"].as_str().expect("peer_id").to_string();
    let addrs: Vec<String> = info["p2p_addrs"]
        .as_array()
        .expect("p2p_addrs")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let want = format!("/ip4/{LOCALHOST}/tcp/{}/p2p/{peer_id}", node.p2p_port);
    assert!(
        addrs.contains(&want),
        "p2p_addrs {addrs:?} lack {want}; answer: {info}"
    );
    let sip = info["sip"].to_string();
    assert!(
        sip.contains(&format!("{LOCALHOST}:{}", node.sip_port)),
        "sip {sip} does not name the node's SIP port"
    );
    assert!(info["did"]
        .as_str()
        .is_some_and(|d| d.starts_with("did:key:z")));
    (peer_id, want)
}

/// Starts `n` overlay nodes (open registration), every one joining through
/// the first, and waits until each is connected to all the others.
fn start_overlay(n: usize) -> Vec<Node> {
    let first = Node::start(NodeConfig::open().p2p(&[]));
    let (_, bootstrap) = identity(&first);
    let mut nodes = vec![first];
    for _ in 1..n {
        nodes.push(Node::start(
            NodeConfig::open().p2p(std::slice::from_ref(&bootstrap)),
        ));
    }
    let want = (n - 1) as u64;
    let ok = wait_until(OVERLAY_WAIT, || {
        nodes
            .iter()
            .all(|node| node.metric("dots_overlay_peers_connected") >= want)
    });
    let seen: Vec<u64> = nodes
        .iter()
        .map(|node| node.metric("dots_overlay_peers_connected"))
        .collect();
    assert!(
        ok,
        "overlay did not connect every node to the {want} others: {seen:?}"
    );
    nodes
}

/// Waits until every node stores at least `count` presence records.
fn wait_records_everywhere(nodes: &[&Node], count: u64) {
    let ok = wait_until(OVERLAY_WAIT, || {
        nodes
            .iter()
            .all(|node| node.metric("dots_overlay_records_stored") >= count)
    });
    let seen: Vec<u64> = nodes
        .iter()
        .map(|node| node.metric("dots_overlay_records_stored"))
        .collect();
    assert!(ok, "records did not reach every node: stored {seen:?}");
}

// ---------------------------------------------------------------------------
// SIPp
// ---------------------------------------------------------------------------

/// Starts a SIPp user agent running `scenario` and waits until it listens.
fn callee(name: &str, scenario: &str, calls: u32) -> SippProc {
    let mut p = Sipp::new(name, scenario)
        .calls(calls)
        .timeout(Duration::from_secs(120))
        .spawn();
    p.wait_listening();
    p
}

/// A caller scenario from `caller` to `callee` through `node`.
fn caller(node: &Node, scenario: &str, from: &str, to: &str) -> Sipp {
    Sipp::new(&format!("{from}-to-{to}"), scenario)
        .remote(&node.sip_addr())
        .key("caller", from)
        .key("callee", to)
        .timeout(Duration::from_secs(40))
}

/// Registers `user` at `node` with the Contact of a SIPp user agent.
fn register(node: &Node, user: &str, ua: &SippProc) {
    register_open(
        node,
        user,
        &format!("{LOCALHOST}:{}", ua.port),
        Transport::Udp,
    )
    .assert_ok(1);
}

/// Removes one Contact of `user` (Expires: 0); other bindings must remain.
fn unregister_contact(node: &Node, user: &str, ua_port: u16) {
    Sipp::new(&format!("unregister-{user}"), "register.xml")
        .remote(&node.sip_addr())
        .key("user", user)
        .key("contact_hp", &format!("{LOCALHOST}:{ua_port}"))
        .key("expires", "0")
        .run()
        .assert_ok(1);
}

/// SIPp's message trace of a run (what it sent and received).
fn trace(result: &SippResult) -> String {
    std::fs::read_to_string(result.dir.join("messages.log")).unwrap_or_default()
}

/// The first received INVITE in a SIPp message trace.
fn received_invite(trace: &str) -> &str {
    let start = trace
        .find("INVITE sip:")
        .unwrap_or_else(|| panic!("no INVITE in the trace:\n{}", tail(trace, 8_000)));
    let rest = &trace[start..];
    let end = rest.find("\n\n").unwrap_or(rest.len());
    &rest[..end]
}

// ---------------------------------------------------------------------------
// Calls across the overlay
// ---------------------------------------------------------------------------

#[test]
fn call_and_message_reach_a_user_registered_at_another_node() {
    let nodes = start_overlay(5);
    let (home, via) = (&nodes[0], &nodes[3]);
    for node in &nodes {
        identity(node);
    }

    // alice's phone registers at node 1; her record reaches every node.
    let phone = callee("alice-phone", "uas_answer.xml", 1);
    let phone_port = phone.port;
    register(home, "alice", &phone);
    assert!(
        home.metric("dots_overlay_published_total") >= 1,
        "the registration published no presence record"
    );
    wait_records_everywhere(&nodes.iter().collect::<Vec<_>>(), 1);

    // A call through node 4: INVITE/180/200/ACK/BYE end to end.
    caller(via, "uac_call.xml", "bob", "alice")
        .run()
        .assert_ok(1);
    let answered = phone.wait();
    answered.assert_ok(1);

    // The INVITE came through both nodes: node 4 forwarded it to node 1,
    // node 1 delivered it to the registered Contact (without the
    // node-to-node routing mark), both nodes record-routed.
    let log = trace(&answered);
    let invite = received_invite(&log);
    assert!(
        invite.starts_with(&format!("INVITE sip:alice@{LOCALHOST}:{phone_port}")),
        "unexpected R-URI at the callee:\n{invite}"
    );
    assert!(
        !invite.to_ascii_lowercase().contains("x-dots-routed"),
        "the node-to-node routing mark reached the phone:\n{invite}"
    );
    let record_routes: Vec<&str> = invite
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("record-route:"))
        .collect();
    let rr = record_routes.join("\n");
    for node in [home, via] {
        assert!(
            rr.contains(&format!("{LOCALHOST}:{}", node.sip_port)),
            "Record-Route lacks node {}:\n{invite}",
            node.sip_addr()
        );
    }
    drop(answered);
    // ACK and BYE were loose-routed back through both nodes.
    for node in [home, via] {
        for method in ["INVITE", "ACK", "BYE"] {
            assert!(
                requests_received(node, method) >= 1,
                "node {} saw no {method}",
                node.sip_addr()
            );
        }
    }
    // Node 4 found alice without any binding of its own.
    assert_eq!(via.metric("dots_registrar_contacts"), 0);

    // A MESSAGE likewise: alice's messaging client replaces her phone.
    let messenger = callee("alice-messenger", "uas_message.xml", 1);
    register(home, "alice", &messenger);
    unregister_contact(home, "alice", phone_port);
    caller(via, "message.xml", "bob", "alice")
        .run()
        .assert_ok(1);
    messenger.wait().assert_ok(1);
    assert!(requests_received(home, "MESSAGE") >= 1);
    assert!(requests_received(via, "MESSAGE") >= 1);
}

#[test]
fn failover_after_the_serving_node_is_killed() {
    let mut nodes = start_overlay(5);

    // alice at node 1; node 5 learns her record by calling her.
    let phone = callee("alice-phone", "uas_answer.xml", 1);
    register(&nodes[0], "alice", &phone);
    wait_records_everywhere(&nodes.iter().collect::<Vec<_>>(), 1);
    caller(&nodes[4], "uac_call.xml", "bob", "alice")
        .run()
        .assert_ok(1);
    phone.wait().assert_ok(1);

    nodes[0].kill9();
    assert!(!nodes[0].is_alive());

    // Not re-registered anywhere: node 5's cached record points at the dead
    // node; that attempt fails, one fresh lookup finds nothing better, and
    // the caller gets 480 instead of waiting.
    let lookups_before = lookups(&nodes[4]);
    let started = Instant::now();
    caller(&nodes[4], "invite_480.xml", "bob", "alice")
        .run()
        .assert_ok(1);
    println!(
        "failover: call to alice at the dead node answered 480 after {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(
        lookups(&nodes[4]) - lookups_before,
        1,
        "node 5 should have used its cached record, then looked up once afresh"
    );

    // alice re-registers at node 2; a new call through node 5 reaches her.
    let phone = callee("alice-phone-again", "uas_answer.xml", 1);
    register(&nodes[1], "alice", &phone);
    let registered = Instant::now();
    let lookups_before = lookups(&nodes[4]);
    let deadline = registered + OVERLAY_WAIT;
    let mut attempts = 0;
    let (started, finished) = loop {
        attempts += 1;
        let started = registered.elapsed();
        let result = caller(&nodes[4], "uac_call.xml", "bob", "alice").run();
        if result.code == Some(0) && result.successful() == 1 {
            break (started, registered.elapsed());
        }
        assert!(
            Instant::now() < deadline,
            "no call reached alice at node 2 within {OVERLAY_WAIT:?} of her re-registration ({attempts} attempts); last:\n{}",
            result.report()
        );
        thread::sleep(Duration::from_millis(200));
    };
    phone.wait().assert_ok(1);
    // Whether node 5 still held the old record when the call came (then it
    // tried the dead node and found the new record by a fresh lookup) or had
    // already learned the new one by gossip.
    let path = match lookups(&nodes[4]) - lookups_before {
        0 => "node 5 had the new record from gossip",
        _ => "node 5 tried the dead node, then found the new record by a fresh lookup",
    };
    println!(
        "failover: re-registration to first successful routed call: attempt {attempts} started at +{} ms, answered and hung up by +{} ms ({path})",
        started.as_millis(),
        finished.as_millis()
    );
    assert!(requests_received(&nodes[1], "INVITE") >= 1);
}

// ---------------------------------------------------------------------------
// A hostile overlay peer
// ---------------------------------------------------------------------------

#[derive(NetworkBehaviour)]
struct PeerBehaviour {
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
}

type Reply<T> = oneshot::Sender<T>;

enum PeerCommand {
    Dial(Multiaddr, oneshot::Sender<Result<(), String>>),
    TopicPeers(oneshot::Sender<Vec<PeerId>>),
    Gossip(Vec<u8>, oneshot::Sender<Result<(), String>>),
    PutTo(
        [u8; 32],
        Vec<u8>,
        Vec<PeerId>,
        oneshot::Sender<Result<(), String>>,
    ),
    Get([u8; 32], oneshot::Sender<Vec<Vec<u8>>>),
}

/// A participant in the nodes' overlay that runs in the test process: the
/// same transport and protocols (`/dots/kad/1.0.0`, gossip topic
/// `dots/presence/1`), but it sends whatever bytes it is given, unverified.
struct TestPeer {
    key: NodeKey,
    runtime: tokio::runtime::Runtime,
    commands: mpsc::Sender<PeerCommand>,
}

impl TestPeer {
    fn start() -> TestPeer {
        let key = NodeKey::generate();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let keypair =
            libp2p::identity::Keypair::ed25519_from_bytes(key.secret()).expect("ed25519 key");
        let swarm = runtime.block_on(async {
            libp2p::SwarmBuilder::with_existing_identity(keypair)
                .with_tokio()
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .expect("tcp transport")
                .with_behaviour(|key| {
                    let peer_id = key.public().to_peer_id();
                    let mut kad = kad::Behaviour::with_config(
                        peer_id,
                        kad::store::MemoryStore::new(peer_id),
                        dots_overlay::kad_config(),
                    );
                    kad.set_mode(Some(kad::Mode::Client));
                    let mut gossipsub = gossipsub::Behaviour::new(
                        gossipsub::MessageAuthenticity::Anonymous,
                        dots_overlay::gossipsub_config(),
                    )?;
                    gossipsub.subscribe(&dots_overlay::presence_topic())?;
                    let identify = identify::Behaviour::new(identify::Config::new(
                        dots_overlay::IDENTIFY_PROTOCOL.to_string(),
                        key.public(),
                    ));
                    Ok(PeerBehaviour {
                        kad,
                        gossipsub,
                        identify,
                    })
                })
                .expect("behaviour")
                .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
                .build()
        });
        let (tx, rx) = mpsc::channel(16);
        runtime.spawn(run_peer(swarm, rx));
        TestPeer {
            key,
            runtime,
            commands: tx,
        }
    }

    fn peer_id_bytes(&self) -> Vec<u8> {
        self.key.peer_id_bytes()
    }

    fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> PeerCommand) -> T {
        let (tx, rx) = oneshot::channel();
        self.runtime.block_on(async {
            self.commands
                .send(make(tx))
                .await
                .expect("test peer running");
            tokio::time::timeout(Duration::from_secs(30), rx)
                .await
                .expect("test peer answers within 30 s")
                .expect("test peer answers")
        })
    }

    fn dial(&self, addr: &str) -> Result<(), String> {
        let addr: Multiaddr = addr.parse().expect("multiaddr");
        self.ask(|reply| PeerCommand::Dial(addr, reply))
    }

    fn topic_peers(&self) -> Vec<PeerId> {
        self.ask(PeerCommand::TopicPeers)
    }

    fn gossip(&self, bytes: Vec<u8>) -> Result<(), String> {
        self.ask(|reply| PeerCommand::Gossip(bytes, reply))
    }

    fn put_to(&self, key: [u8; 32], bytes: Vec<u8>, peers: Vec<PeerId>) -> Result<(), String> {
        self.ask(|reply| PeerCommand::PutTo(key, bytes, peers, reply))
    }

    fn get(&self, key: [u8; 32]) -> Vec<Vec<u8>> {
        self.ask(|reply| PeerCommand::Get(key, reply))
    }
}

async fn run_peer(
    mut swarm: libp2p::Swarm<PeerBehaviour>,
    mut commands: mpsc::Receiver<PeerCommand>,
) {
    use std::collections::HashMap;
    let mut dials: HashMap<PeerId, oneshot::Sender<Result<(), String>>> = HashMap::new();
    let mut puts: HashMap<kad::QueryId, oneshot::Sender<Result<(), String>>> = HashMap::new();
    // Values found so far, and who waits for them.
    type Pending = (Vec<Vec<u8>>, Reply<Vec<Vec<u8>>>);
    let mut gets: HashMap<kad::QueryId, Pending> = HashMap::new();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(PeerCommand::Dial(mut addr, reply)) => {
                    let full = addr.clone();
                    match addr.pop() {
                        Some(libp2p::multiaddr::Protocol::P2p(peer)) => {
                            swarm.behaviour_mut().kad.add_address(&peer, addr);
                            if swarm.is_connected(&peer) {
                                let _ = reply.send(Ok(()));
                            } else if let Err(e) = swarm.dial(full) {
                                let _ = reply.send(Err(e.to_string()));
                            } else {
                                dials.insert(peer, reply);
                            }
                        }
                        _ => {
                            let _ = reply.send(Err("no /p2p/ in the address".into()));
                        }
                    }
                }
                Some(PeerCommand::TopicPeers(reply)) => {
                    let topic = dots_overlay::presence_topic().hash();
                    let peers = swarm
                        .behaviour()
                        .gossipsub
                        .all_peers()
                        .filter(|(_, topics)| topics.contains(&&topic))
                        .map(|(p, _)| *p)
                        .collect();
                    let _ = reply.send(peers);
                }
                Some(PeerCommand::Gossip(bytes, reply)) => {
                    let result = swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(dots_overlay::presence_topic(), bytes)
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    let _ = reply.send(result);
                }
                Some(PeerCommand::PutTo(key, value, peers, reply)) => {
                    let record = kad::Record {
                        key: kad::RecordKey::new(&key),
                        value,
                        publisher: None,
                        expires: None,
                    };
                    let id = swarm.behaviour_mut().kad.put_record_to(
                        record,
                        peers.into_iter(),
                        kad::Quorum::All,
                    );
                    puts.insert(id, reply);
                }
                Some(PeerCommand::Get(key, reply)) => {
                    let id = swarm.behaviour_mut().kad.get_record(kad::RecordKey::new(&key));
                    gets.insert(id, (Vec::new(), reply));
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    if let Some(reply) = dials.remove(&peer_id) {
                        let _ = reply.send(Ok(()));
                    }
                }
                SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } => {
                    if let Some(reply) = dials.remove(&peer) {
                        let _ = reply.send(Err(error.to_string()));
                    }
                }
                SwarmEvent::Behaviour(PeerBehaviourEvent::Gossipsub(
                    gossipsub::Event::Message { propagation_source, message_id, .. },
                )) => {
                    // Relay nothing: this peer only injects.
                    swarm.behaviour_mut().gossipsub.report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        gossipsub::MessageAcceptance::Ignore,
                    );
                }
                SwarmEvent::Behaviour(PeerBehaviourEvent::Kad(
                    kad::Event::OutboundQueryProgressed { id, result, step, .. },
                )) => match result {
                    kad::QueryResult::PutRecord(r) => {
                        if let Some(reply) = puts.remove(&id) {
                            let _ = reply.send(r.map(|_| ()).map_err(|e| e.to_string()));
                        }
                    }
                    kad::QueryResult::GetRecord(r) => {
                        if let Some((found, _)) = gets.get_mut(&id) {
                            if let Ok(kad::GetRecordOk::FoundRecord(f)) = r {
                                found.push(f.record.value);
                            }
                        }
                        if step.last {
                            if let Some((found, reply)) = gets.remove(&id) {
                                let _ = reply.send(found);
                            }
                        }
                    }
                    _ => {}
                },
                _ => {}
            },
        }
    }
}

/// Accepts SIP on TCP and UDP at one port and counts what arrives there:
/// where forged records point.
struct Trap {
    port: u16,
    hits: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Trap {
    fn start() -> Trap {
        let port = free_port();
        let tcp = TcpListener::bind((LOCALHOST, port)).expect("trap tcp");
        let udp = UdpSocket::bind((LOCALHOST, port)).expect("trap udp");
        tcp.set_nonblocking(true).expect("nonblocking");
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let hits = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        let t1 = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut conn, _)) => {
                        h.fetch_add(1, Ordering::Relaxed);
                        let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
                        let _ = conn.read(&mut [0u8; 2048]);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        let (h, s) = (hits.clone(), stop.clone());
        let t2 = thread::spawn(move || {
            let mut buf = [0u8; 65_536];
            while !s.load(Ordering::Relaxed) {
                if udp.recv_from(&mut buf).is_ok() {
                    h.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Trap {
            port,
            hits,
            stop,
            threads: vec![t1, t2],
        }
    }

    fn uris(&self) -> Vec<String> {
        vec![
            format!("sip:{LOCALHOST}:{};transport=tcp", self.port),
            format!("sip:{LOCALHOST}:{};transport=udp", self.port),
        ]
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn now_ms() -> u64 {
    dots_overlay::now_ms()
}

#[test]
fn forged_presence_records_are_refused_by_every_node() {
    let nodes = start_overlay(4);
    let all: Vec<&Node> = nodes.iter().collect();
    let ids: Vec<(String, String)> = nodes.iter().map(identity).collect();
    let peer_ids: Vec<PeerId> = ids
        .iter()
        .map(|(p, _)| p.parse().expect("peer id"))
        .collect();

    // alice's real node is node 1; nodes 2 and 3 will call her.
    let phone = callee("alice-phone", "uas_answer.xml", 2);
    register(&nodes[0], "alice", &phone);
    wait_records_everywhere(&all, 1);

    // The test peer joins through every node's bootstrap address.
    let peer = TestPeer::start();
    for (_, addr) in &ids {
        peer.dial(addr)
            .unwrap_or_else(|e| panic!("test peer cannot dial {addr}: {e}"));
    }
    let ok = wait_until(OVERLAY_WAIT, || {
        let subscribed = peer.topic_peers();
        peer_ids.iter().all(|p| subscribed.contains(p))
    });
    assert!(ok, "the nodes never showed up on the presence topic");

    // alice's real record, as the DHT serves it.
    let key = presence_key(&aor("alice"));
    let real = peer
        .get(key)
        .iter()
        .filter_map(|b| PresenceRecord::verify(b, Some(&key), now_ms(), 3_600_000).ok())
        .max_by_key(|r| (r.seq, r.exp))
        .expect("alice's record in the DHT");
    assert_eq!(
        real.node,
        peer_ids[0].to_bytes(),
        "alice's record names node 1"
    );
    assert!(real
        .sip
        .iter()
        .any(|u| u.contains(&format!("{LOCALHOST}:{}", nodes[0].sip_port))));

    let before: Vec<(u64, u64)> = nodes
        .iter()
        .map(|n| (refused(n, "bad_signature"), refused(n, "stale")))
        .collect();

    let trap = Trap::start();
    // 1. Claims to come from node 1 with a far higher seq, pointing at the
    //    trap, but is signed by the test peer: the signature is wrong.
    let impersonation = PresenceRecord {
        seq: real.seq + 1_000_000,
        exp: now_ms() + 600_000,
        sip: trap.uris(),
        ..real.clone()
    }
    .sign(&peer.key);
    // 2. Honestly signed by the test peer, pointing at the trap, with a later
    //    expiry but a lower seq than alice's real record.
    let older = PresenceRecord::new(
        aor("alice"),
        &peer.key,
        trap.uris(),
        real.seq - 1,
        real.exp + 60_000,
    );
    assert_eq!(older.node, peer.peer_id_bytes());
    let older = older.sign(&peer.key);
    assert!(PresenceRecord::verify(&older, Some(&key), now_ms(), 3_600_000).is_ok());
    assert!(PresenceRecord::verify(&impersonation, Some(&key), now_ms(), 3_600_000).is_err());

    let counts = |nodes: &[Node]| -> Vec<(u64, u64)> {
        nodes
            .iter()
            .map(|n| (refused(n, "bad_signature"), refused(n, "stale")))
            .collect()
    };
    // Every honest node refuses each forgery once per path: `rounds` = 1
    // after the gossip, 2 after the DHT puts as well.
    let refused_everywhere = |rounds: u64, path: &str| {
        let ok = wait_until(OVERLAY_WAIT, || {
            counts(&nodes)
                .iter()
                .zip(&before)
                .all(|(now, then)| now.0 >= then.0 + rounds && now.1 >= then.1 + rounds)
        });
        assert!(
            ok,
            "not every node refused both forgeries by {path}: (bad_signature, stale) before {before:?}, now {:?}",
            counts(&nodes)
        );
    };

    // By gossip: the test peer's mesh holds every node (4 <= mesh_n).
    for forged in [&impersonation, &older] {
        peer.gossip(forged.clone())
            .unwrap_or_else(|e| panic!("gossip publish: {e}"));
    }
    refused_everywhere(1, "gossip");

    // By DHT puts to every node. A node acknowledges a put whatever it does
    // with the record, so only the counters tell.
    for forged in [&impersonation, &older] {
        let _ = peer.put_to(key, forged.clone(), peer_ids.clone());
    }
    refused_everywhere(2, "DHT put");

    // The DHT still serves only alice's real record.
    for bytes in peer.get(key) {
        let r = PresenceRecord::decode_unverified(&bytes).expect("decodes");
        assert_eq!((r.seq, &r.node), (real.seq, &real.node), "DHT serves {r:?}");
    }

    // Calls through two other nodes still reach her real node.
    for via in [&nodes[1], &nodes[2]] {
        caller(via, "uac_call.xml", "bob", "alice")
            .run()
            .assert_ok(1);
    }
    phone.wait().assert_ok(2);
    assert_eq!(
        trap.hits(),
        0,
        "a node sent SIP where a forged record points"
    );
}

// ---------------------------------------------------------------------------
// dots devnet
// ---------------------------------------------------------------------------

/// The `dots devnet` process and the nodes it started: killed on drop.
struct Devnet {
    child: Option<Child>,
    dir: PathBuf,
    nodes: Vec<u32>,
}

impl Devnet {
    fn output(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.with_extension(file)).unwrap_or_default()
    }
}

/// Whether process `pid` exists and runs a node in `dir` (so a recycled pid
/// is never taken for one of ours).
fn runs_in(pid: u32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = state
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    !zombie && String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy())
}

/// Children of `parent`, from /proc.
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let (_, rest) = s.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

impl Drop for Devnet {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for &pid in &self.nodes {
            if runs_in(pid, &self.dir) {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
        }
        if thread::panicking() {
            eprintln!(
                "----- dots devnet stdout -----\n{}\n----- stderr -----\n{}",
                self.output("stdout"),
                self.output("stderr")
            );
            for i in 0..3 {
                let log = std::fs::read_to_string(self.dir.join(format!("node-{i}.log")))
                    .unwrap_or_default();
                eprintln!("----- node-{i}.log -----\n{}", tail(&log, 8_000));
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
            let _ = std::fs::remove_file(self.dir.with_extension("stdout"));
            let _ = std::fs::remove_file(self.dir.with_extension("stderr"));
        }
    }
}

#[test]
fn devnet_starts_three_nodes_and_stops_them_on_sigint() {
    let offsets: Vec<u16> = (0..3).flat_map(|i| [i, 1000 + i, 2000 + i]).collect();
    let base = free_port_base(&offsets);
    let dir = scratch_dir("devnet");
    let stdout = std::fs::File::create(dir.with_extension("stdout")).expect("stdout file");
    let stderr = std::fs::File::create(dir.with_extension("stderr")).expect("stderr file");
    let mut cmd = Command::new(dots_bin());
    cmd.args(["devnet", "--nodes", "3", "--base-port", &base.to_string()])
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    let child = cmd.spawn().expect("spawn dots devnet");
    let pid = child.id();
    let mut devnet = Devnet {
        child: Some(child),
        dir,
        nodes: Vec::new(),
    };

    let ready = wait_until(Duration::from_secs(120), || {
        devnet.output("stdout").contains("Ctrl-C stops them all")
            || devnet
                .child
                .as_mut()
                .is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
    });
    let table = devnet.output("stdout");
    assert!(
        ready && table.contains("Ctrl-C stops them all"),
        "devnet printed no table:\n{table}"
    );

    // One row per node: index, SIP, HTTP, overlay, peer id.
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 5 && f[0].parse::<usize>().is_ok())
        .collect();
    assert_eq!(rows.len(), 3, "want 3 rows:\n{table}");
    for (i, row) in rows.iter().enumerate() {
        let i = i as u16;
        assert_eq!(row[0], i.to_string(), "{table}");
        assert_eq!(row[1], format!("sip:{LOCALHOST}:{}", base + i), "{table}");
        assert_eq!(
            row[2],
            format!("http://{LOCALHOST}:{}", base + 1000 + i),
            "{table}"
        );
        assert_eq!(
            row[3],
            format!("/ip4/{LOCALHOST}/tcp/{}", base + 2000 + i),
            "{table}"
        );
        assert!(row[4].parse::<PeerId>().is_ok(), "peer id {}", row[4]);
        let http = base + 1000 + i;
        let answer = http_get(http, "/healthz");
        assert!(
            matches!(&answer, Some((200, body)) if body.trim() == "ok"),
            "/healthz of node {i}: {answer:?}"
        );
    }

    devnet.nodes = children(pid);
    assert_eq!(devnet.nodes.len(), 3, "devnet runs {:?}", devnet.nodes);
    assert!(devnet.nodes.iter().all(|&p| runs_in(p, &devnet.dir)));

    // SIGINT to devnet alone (not its process group): it stops every node.
    let sent = Command::new("kill")
        .arg("-INT")
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(sent.success());
    let mut child = devnet.child.take().expect("devnet process");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait devnet") {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.is_some_and(|s| s.success()),
        "devnet did not exit cleanly within 30 s of SIGINT: {status:?}"
    );
    let gone = wait_until(Duration::from_secs(10), || {
        devnet.nodes.iter().all(|&p| !runs_in(p, &devnet.dir))
    });
    assert!(gone, "nodes still running after devnet stopped");
    for i in 0..3u16 {
        assert!(
            http_get(base + 1000 + i, "/healthz").is_none(),
            "node {i} still answers HTTP"
        );
    }
}

// ---------------------------------------------------------------------------
// A key user (did:key) and a rogue node
// ---------------------------------------------------------------------------

/// Registers the key user `wallet` at `node` by signature (DOTS-Sig), with a
/// Contact at `contact_hp`: a minimal UDP client doing what `dots agent` does,
/// so that the test owns every byte it checks.
fn key_register(node: &Node, wallet: &dots_identity::Wallet, contact_hp: &str) {
    use dots_identity::login::{self, Challenge};
    let id = wallet.did().strip_prefix("did:key:").unwrap().to_string();
    let sock = UdpSocket::bind((LOCALHOST, 0)).expect("client socket");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let local = sock.local_addr().unwrap();
    let ruri = format!("sip:{LOCALHOST}:{}", node.sip_port);
    let contact = format!("<sip:{id}@{contact_hp}>");
    let request = |cseq: u32, auth: Option<&str>| {
        let mut r = format!(
            "REGISTER {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-key-{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{id}@{LOCALHOST}>;tag=key-login\r\nTo: <sip:{id}@{LOCALHOST}>\r\n\
             Call-ID: key-login-{id}\r\nCSeq: {cseq} REGISTER\r\nContact: {contact}\r\nExpires: 600\r\n"
        );
        if let Some(auth) = auth {
            r.push_str(&format!("Authorization: {auth}\r\n"));
        }
        r.push_str("Content-Length: 0\r\n\r\n");
        r
    };
    let exchange = |text: String| -> String {
        sock.send_to(text.as_bytes(), node.sip_addr()).unwrap();
        let mut buf = [0u8; 8192];
        loop {
            let (n, _) = sock.recv_from(&mut buf).expect("an answer from the node");
            let resp = String::from_utf8_lossy(&buf[..n]).to_string();
            if !resp.starts_with("SIP/2.0 100") {
                return resp;
            }
        }
    };
    let first = exchange(request(1, None));
    assert!(first.starts_with("SIP/2.0 401"), "{first}");
    let challenge = first
        .lines()
        .filter_map(|l| l.strip_prefix("WWW-Authenticate: "))
        .find_map(Challenge::parse)
        .unwrap_or_else(|| panic!("no DOTS-Sig challenge:\n{first}"))
        .expect("the challenge parses");
    let creds = login::answer(
        wallet,
        &challenge,
        "REGISTER",
        &ruri,
        &contact,
        600,
        now_ms(),
        30_000,
    )
    .unwrap();
    let second = exchange(request(2, Some(&creds.to_header())));
    assert!(second.starts_with("SIP/2.0 200"), "{second}");
}

#[test]
fn a_rogue_node_cannot_take_over_a_key_users_presence() {
    // Nodes with authentication; bob has an account at nodes 2 and 3.
    let first = Node::start(NodeConfig::default().p2p(&[]));
    let (_, bootstrap) = identity(&first);
    let mut nodes = vec![first];
    for _ in 0..2 {
        nodes.push(Node::start(
            NodeConfig::default()
                .user("bob", "bob-pw")
                .p2p(std::slice::from_ref(&bootstrap)),
        ));
    }
    assert!(
        wait_until(OVERLAY_WAIT, || nodes
            .iter()
            .all(|n| n.metric("dots_overlay_peers_connected") >= 2)),
        "the three nodes did not connect"
    );
    let all: Vec<&Node> = nodes.iter().collect();
    let ids: Vec<(String, String)> = nodes.iter().map(identity).collect();
    let peer_ids: Vec<PeerId> = ids.iter().map(|(p, _)| p.parse().unwrap()).collect();

    // alice owns her key; her phone (a SIPp UAS) is registered at node 1 by a
    // key login, and her presence record carries her grant to node 1.
    let alice = dots_identity::Wallet::generate(Some("alice".into()));
    let alice_id = alice.did().strip_prefix("did:key:").unwrap().to_string();
    let phone = callee("alice-key-phone", "uas_answer.xml", 2);
    key_register(&nodes[0], &alice, &format!("{LOCALHOST}:{}", phone.port));
    wait_records_everywhere(&all, 1);

    let peer = TestPeer::start();
    for (_, addr) in &ids {
        peer.dial(addr)
            .unwrap_or_else(|e| panic!("dial {addr}: {e}"));
    }
    assert!(
        wait_until(OVERLAY_WAIT, || {
            let subscribed = peer.topic_peers();
            peer_ids.iter().all(|p| subscribed.contains(p))
        }),
        "the nodes never showed up on the presence topic"
    );
    let key = presence_key(&alice.did());
    let real = peer
        .get(key)
        .iter()
        .filter_map(|b| PresenceRecord::verify(b, Some(&key), now_ms(), 3_600_000).ok())
        .max_by_key(|r| (r.seq, r.exp))
        .expect("alice's record in the DHT");
    assert_eq!(real.node, peer_ids[0].to_bytes());
    let real_grant = real.grant.clone().expect("alice's grant in her record");
    assert_eq!(real_grant.did, alice.did());

    // The rogue node's attempts to point alice's DID at itself, each with a higher
    // seq and honestly signed by the rogue node: no grant; alice's grant to node 1
    // copied; a grant "signed" by the rogue's own key.
    let trap = Trap::start();
    let rogue_record = || {
        PresenceRecord::new(
            alice.did(),
            &peer.key,
            trap.uris(),
            real.seq + 1_000_000,
            now_ms() + 300_000,
        )
    };
    let no_grant = rogue_record().sign(&peer.key);
    let copied = rogue_record()
        .with_grant(real_grant.clone())
        .sign(&peer.key);
    let self_granted = {
        let g = dots_records::Grant::new_signed(
            &alice.did(),
            &peer.peer_id_bytes(),
            now_ms(),
            now_ms() + 600_000,
            |m| peer.key.sign(m),
        );
        rogue_record().with_grant(g).sign(&peer.key)
    };
    let reasons = ["missing_grant", "grant_mismatch", "bad_grant_signature"];
    let counts = || -> Vec<Vec<u64>> {
        nodes
            .iter()
            .map(|n| reasons.iter().map(|r| refused(n, r)).collect())
            .collect()
    };
    let before = counts();
    for forged in [&no_grant, &copied, &self_granted] {
        assert!(PresenceRecord::verify(forged, Some(&key), now_ms(), 3_600_000).is_err());
        peer.gossip(forged.clone())
            .unwrap_or_else(|e| panic!("gossip publish: {e}"));
        let _ = peer.put_to(key, forged.clone(), peer_ids.clone());
    }
    let refused_everywhere = wait_until(OVERLAY_WAIT, || {
        counts()
            .iter()
            .zip(&before)
            .all(|(now, then)| now.iter().zip(then).all(|(n, t)| *n > *t))
    });
    assert!(
        refused_everywhere,
        "not every node refused every forgery: {reasons:?} before {before:?}, now {:?}",
        counts()
    );
    for bytes in peer.get(key) {
        let r = PresenceRecord::decode_unverified(&bytes).expect("decodes");
        assert_eq!(r.node, real.node, "the DHT serves a record of another node");
    }

    // bob calls alice by her DID through nodes 2 and 3: her real node answers.
    for via in [&nodes[1], &nodes[2]] {
        caller(via, "uac_call_auth.xml", "bob", &alice_id)
            .auth("bob", "bob-pw")
            .auth_uri(&format!("{alice_id}@{LOCALHOST}"))
            .run()
            .assert_ok(1);
    }
    phone.wait().assert_ok(2);
    assert_eq!(
        trap.hits(),
        0,
        "a node sent SIP where a forged record points"
    );
}
