//! Two user agents and the node's engine (`dots-proxy`, open mode) on a
//! simulated network: registration, calls by did:key through the proxy
//! (Record-Route honoured end to end), CANCEL, messages, and the same over a
//! lossy network. Time only moves when the simulation jumps to the next
//! wake-up; nothing sleeps.

use std::collections::VecDeque;
use std::net::SocketAddr;

use dots_identity::Wallet;
use dots_proxy::{Engine, EngineConfig};
use dots_records::NodeKey;
use dots_sip::{parse_datagram, Peer, TransportKind};
use dots_ua::{target_uri, CallRef, Config, EndReason, Event, UserAgent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const T0: u64 = 1_700_000_000_000;
const NODE: &str = "127.0.0.1:5060";

fn udp(addr: SocketAddr) -> Peer {
    Peer::new(TransportKind::Udp, addr)
}

struct Agent {
    addr: SocketAddr,
    ua: UserAgent,
    did: String,
    events: Vec<Event>,
}

struct Packet {
    at: u64,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

struct Sim {
    now: u64,
    node: Engine,
    agents: Vec<Agent>,
    net: VecDeque<Packet>,
    rng: StdRng,
    loss: f64,
    delivered: usize,
    lost: usize,
    /// Start lines of the datagrams that went from one agent straight to another.
    direct: Vec<String>,
    /// Requests the node received, by start line.
    at_node: Vec<String>,
}

impl Sim {
    fn new(agents: usize, loss: f64, seed: u64) -> Sim {
        Sim::with_node(agents, loss, seed, true)
    }

    /// `open`: no authentication; otherwise key login (the engine has an
    /// overlay identity to name in its DOTS-Sig challenges).
    fn with_node(agents: usize, loss: f64, seed: u64, open: bool) -> Sim {
        let node_addr: SocketAddr = NODE.parse().unwrap();
        let mut config = EngineConfig::for_addr(node_addr);
        config.open = open;
        let agents = (0..agents)
            .map(|i| {
                let wallet = Wallet::from_secret([i as u8 + 1; 32], None);
                let did = wallet.did();
                let addr: SocketAddr = format!("127.0.0.1:{}", 5071 + i).parse().unwrap();
                let cfg = Config::new(&did, "127.0.0.1", udp(node_addr), addr);
                Agent {
                    addr,
                    ua: UserAgent::new(cfg, wallet, seed * 100 + i as u64),
                    did,
                    events: Vec::new(),
                }
            })
            .collect();
        let mut node = Engine::new(config, seed);
        if !open {
            node.enable_overlay(NodeKey::from_secret([99; 32]).peer_id_bytes());
        }
        Sim {
            now: T0,
            node,
            agents,
            net: VecDeque::new(),
            rng: StdRng::seed_from_u64(seed),
            loss,
            delivered: 0,
            lost: 0,
            direct: Vec::new(),
            at_node: Vec::new(),
        }
    }

    fn node_addr() -> SocketAddr {
        NODE.parse().unwrap()
    }

    /// Moves everything sent so far onto the network (1 ms away), losing some.
    fn collect(&mut self) {
        let mut out = Vec::new();
        while let Some(t) = self.node.poll_transmit() {
            out.push((Self::node_addr(), t.dest.addr, t.bytes));
        }
        for a in &mut self.agents {
            while let Some(t) = a.ua.poll_transmit() {
                out.push((a.addr, t.dest.addr, t.bytes));
            }
            while let Some(e) = a.ua.poll_event() {
                a.events.push(e);
            }
        }
        for (from, to, bytes) in out {
            if self.loss > 0.0 && self.rng.random_bool(self.loss) {
                self.lost += 1;
                continue;
            }
            self.net.push_back(Packet {
                at: self.now + 1,
                from,
                to,
                bytes,
            });
        }
    }

    fn step(&mut self) -> bool {
        self.collect();
        let next = [
            self.net.iter().map(|p| p.at).min(),
            self.node.poll_timeout(),
            self.agents.iter().filter_map(|a| a.ua.poll_timeout()).min(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { return false };
        self.now = self.now.max(next);
        let now = self.now;
        let (due, later): (Vec<Packet>, Vec<Packet>) =
            self.net.drain(..).partition(|p| p.at <= now);
        self.net = later.into();
        for p in due {
            self.delivered += 1;
            let line = String::from_utf8_lossy(&p.bytes)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            if p.to == Self::node_addr() {
                self.at_node.push(line);
            } else if p.from != Self::node_addr() {
                self.direct.push(line);
            }
            if p.to == Self::node_addr() {
                if let Ok(msg) = parse_datagram(&p.bytes) {
                    self.node.handle_message(now, msg, udp(p.from));
                }
            } else if let Some(a) = self.agents.iter_mut().find(|a| a.addr == p.to) {
                a.ua.handle_datagram(now, &p.bytes, udp(p.from));
            }
        }
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
        }
        for a in &mut self.agents {
            if a.ua.poll_timeout().is_some_and(|t| t <= now) {
                a.ua.handle_timeout(now);
            }
        }
        self.collect();
        true
    }

    /// Runs until `done` holds (true) or `max_ms` of simulated time pass.
    fn run_until(&mut self, max_ms: u64, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + max_ms;
        while self.now <= end {
            if done(self) {
                return true;
            }
            if !self.step() {
                return done(self);
            }
        }
        done(self)
    }

    fn agent(&mut self, i: usize) -> &mut Agent {
        &mut self.agents[i]
    }

    fn has(&self, i: usize, f: impl Fn(&Event) -> bool) -> bool {
        self.agents[i].events.iter().any(f)
    }

    fn register_all(&mut self) {
        let now = self.now;
        for a in &mut self.agents {
            a.ua.register(now);
        }
        let n = self.agents.len();
        assert!(
            self.run_until(60_000, |s| (0..n)
                .all(|i| s.has(i, |e| matches!(e, Event::Registered { .. })))),
            "registration: {:?}",
            self.agents.iter().map(|a| &a.events).collect::<Vec<_>>()
        );
    }

    /// Agent `from` calls agent `to` by its did:key.
    fn call(&mut self, from: usize, to: usize) -> CallRef {
        let target = target_uri(&self.agents[to].did, NODE).unwrap();
        let now = self.now;
        self.agent(from).ua.call(now, target)
    }

    fn incoming(&self, i: usize) -> Option<CallRef> {
        self.agents[i].events.iter().find_map(|e| match e {
            Event::IncomingCall { call, .. } => Some(*call),
            _ => None,
        })
    }

    fn ended(&self, i: usize) -> Option<EndReason> {
        self.agents[i].events.iter().find_map(|e| match e {
            Event::CallEnded { reason, .. } => Some(reason.clone()),
            _ => None,
        })
    }
}

/// A call by did:key, answered, then hung up by `hangs_up`.
fn call_and_hang_up(sim: &mut Sim, hangs_up: usize) {
    sim.register_all();
    let out = sim.call(0, 1);
    assert!(
        sim.run_until(60_000, |s| s.incoming(1).is_some()),
        "the callee never rang: {:?}",
        sim.agents[0].events
    );
    let inc = sim.incoming(1).unwrap();
    if let Some(Event::IncomingCall { from, .. }) = sim.agents[1]
        .events
        .iter()
        .find(|e| matches!(e, Event::IncomingCall { .. }))
    {
        assert_eq!(from, &sim.agents[0].ua.aor());
    }
    let now = sim.now;
    sim.agent(1).ua.accept(now, inc).unwrap();
    assert!(
        sim.run_until(60_000, |s| s
            .has(0, |e| matches!(e, Event::Answered { .. }))),
        "{:?}",
        sim.agents[0].events
    );
    assert!(sim.has(0, |e| matches!(e, Event::Ringing { .. })));
    // Let the ACK get there, then hold the call for a while.
    let until = sim.now + 5_000;
    sim.run_until(10_000, |s| s.now >= until);
    assert_eq!(sim.ended(0), None);
    assert_eq!(sim.ended(1), None);

    let (call, other) = if hangs_up == 0 { (out, 1) } else { (inc, 0) };
    let now = sim.now;
    sim.agent(hangs_up).ua.hangup(now, call);
    assert!(
        sim.run_until(60_000, |s| s.ended(0).is_some() && s.ended(1).is_some()),
        "{:?}",
        sim.agents.iter().map(|a| &a.events).collect::<Vec<_>>()
    );
    assert_eq!(sim.ended(hangs_up), Some(EndReason::HungUp));
    assert_eq!(sim.ended(other), Some(EndReason::ByeFromPeer));
    // The node Record-Routes: ACK and BYE go through it, never straight to
    // the Contact.
    assert!(sim.direct.is_empty(), "{:?}", sim.direct);
    for method in ["INVITE ", "ACK ", "BYE "] {
        assert!(
            sim.at_node.iter().any(|l| l.starts_with(method)),
            "no {method}at the node: {:?}",
            sim.at_node
        );
    }
}

#[test]
fn call_by_did_through_the_engine_caller_hangs_up() {
    let mut sim = Sim::new(2, 0.0, 1);
    call_and_hang_up(&mut sim, 0);
}

#[test]
fn call_by_did_through_the_engine_callee_hangs_up() {
    let mut sim = Sim::new(2, 0.0, 2);
    call_and_hang_up(&mut sim, 1);
}

#[test]
fn calls_complete_on_a_lossy_network() {
    for seed in 1..=5 {
        let mut sim = Sim::new(2, 0.15, seed);
        call_and_hang_up(&mut sim, (seed % 2) as usize);
        assert!(sim.lost > 0, "seed {seed}: nothing was lost");
    }
}

/// The engine requires authentication: the agents register with their keys
/// (401, DOTS-Sig) and are then let through as callers from where they
/// registered.
#[test]
fn key_login_then_call_through_an_authenticating_engine() {
    let mut sim = Sim::with_node(2, 0.0, 6, false);
    call_and_hang_up(&mut sim, 0);
    let challenged = sim
        .at_node
        .iter()
        .filter(|l| l.starts_with("REGISTER "))
        .count();
    assert_eq!(challenged, 4, "two REGISTERs per agent: {:?}", sim.at_node);
    let now = sim.now;
    let target = target_uri(&sim.agents[1].did, NODE).unwrap();
    let m = sim
        .agent(0)
        .ua
        .message(now, target, "text/plain", "signed in");
    assert!(sim.run_until(60_000, |s| s.has(
        0,
        |e| matches!(e, Event::MessageDelivered { message, .. } if *message == m)
    )));
}

/// Without registering first, a key user is not let through.
#[test]
fn unregistered_key_user_is_refused_by_an_authenticating_engine() {
    let mut sim = Sim::with_node(2, 0.0, 7, false);
    sim.call(0, 1);
    assert!(sim.run_until(60_000, |s| s.ended(0).is_some()));
    let Some(EndReason::Failed(f)) = sim.ended(0) else {
        panic!("{:?}", sim.agents[0].events)
    };
    assert_eq!(f.code, 403, "{f}");
}

#[test]
fn cancel_through_the_engine() {
    let mut sim = Sim::new(2, 0.0, 3);
    sim.register_all();
    let call = sim.call(0, 1);
    assert!(sim.run_until(60_000, |s| s.incoming(1).is_some()
        && s.has(0, |e| matches!(e, Event::Ringing { .. }))));
    let now = sim.now;
    sim.agent(0).ua.hangup(now, call);
    assert!(sim.run_until(60_000, |s| s.ended(0).is_some() && s.ended(1).is_some()));
    assert_eq!(sim.ended(0), Some(EndReason::Cancelled));
    assert_eq!(sim.ended(1), Some(EndReason::CancelledByPeer));
}

#[test]
fn message_and_unregister_through_the_engine() {
    let mut sim = Sim::new(2, 0.0, 4);
    sim.register_all();
    let target = target_uri(&sim.agents[1].did, NODE).unwrap();
    let now = sim.now;
    let m = sim
        .agent(0)
        .ua
        .message(now, target.clone(), "text/plain", "hi bob");
    assert!(sim.run_until(60_000, |s| s.has(
        0,
        |e| matches!(e, Event::MessageDelivered { message, .. } if *message == m)
    )));
    let from = sim.agents[0].ua.aor();
    assert!(sim.has(1, |e| matches!(e,
        Event::MessageReceived { text, from: f, .. } if text == "hi bob" && *f == from)));

    // Once bob is gone, the node has nobody to deliver to.
    let now = sim.now;
    sim.agent(1).ua.unregister(now);
    assert!(sim.run_until(60_000, |s| s.has(1, |e| matches!(e, Event::Unregistered))));
    let now = sim.now;
    let m = sim
        .agent(0)
        .ua
        .message(now, target, "text/plain", "still there?");
    assert!(sim.run_until(60_000, |s| s.has(
        0,
        |e| matches!(e, Event::MessageFailed { message, .. } if *message == m)
    )));
    let failure = sim.agents[0].events.iter().find_map(|e| match e {
        Event::MessageFailed { failure, .. } => Some(failure.clone()),
        _ => None,
    });
    assert!(
        matches!(&failure, Some(f) if f.code == 480 || f.code == 404),
        "{failure:?}"
    );
}

#[test]
fn registration_is_refreshed_by_itself() {
    let mut sim = Sim::new(1, 0.0, 5);
    sim.register_all();
    // Three refreshes in 1000 s of a 600 s registration.
    let until = sim.now + 1_000_000;
    sim.run_until(1_100_000, |s| s.now >= until);
    let renewals = sim.agents[0]
        .events
        .iter()
        .filter(|e| matches!(e, Event::Registered { renewal: true, .. }))
        .count();
    assert_eq!(renewals, 3);
    assert!(sim.delivered < 50, "{} datagrams", sim.delivered);
}
