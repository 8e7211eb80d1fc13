//! Whole transactions between a client layer and a server layer over a
//! seeded lossy, delaying network on simulated time.

mod common;

use common::*;
use dots_sip::TransportKind::{self, Tcp, Udp};
use dots_sip::{parse_datagram, Message};
use dots_txn::{Event, TxnId};

const SEEDS: std::ops::RangeInclusive<u64> = 1..=12;
const LOSS: f64 = 0.3;

fn lossy(seed: u64) -> Sim {
    Sim::new(seed, LOSS, 20, 40, Udp)
}

/// First line of every message one side put on the wire.
fn wire_lines(sim: &Sim, from: Side) -> Vec<String> {
    sim.wire
        .iter()
        .filter(|(_, s, _)| *s == from)
        .map(|(_, _, b)| {
            let text = String::from_utf8_lossy(b);
            text.lines().next().unwrap_or_default().to_string()
        })
        .collect()
}

fn server_requests(sim: &Sim) -> Vec<(TxnId, String, Option<TxnId>)> {
    sim.server_events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Request {
                id,
                request,
                cancels,
                ..
            } => Some((*id, request.method.to_string(), *cancels)),
            _ => None,
        })
        .collect()
}

#[test]
fn non_invite_completes_under_loss() {
    let mut dropped = 0;
    let mut retransmitted = 0;
    for seed in SEEDS {
        let mut sim = lossy(seed);
        let id = sim.send(request("MESSAGE", &format!("z9hG4bKn{seed}"), Udp));
        sim.run_until(200_000);

        // Exactly one final reaches the TU however many were retransmitted.
        assert_eq!(
            sim.client_names(),
            vec![
                format!("Response({},200)", id.0),
                format!("Terminated({})", id.0)
            ],
            "seed {seed}"
        );
        let reqs = server_requests(&sim);
        assert_eq!(reqs.len(), 1, "seed {seed}: retransmissions absorbed");
        assert_eq!(
            sim.server_names().last().unwrap(),
            &format!("Terminated({})", reqs[0].0 .0)
        );
        assert_eq!(sim.client.counts(), (0, 0));
        assert_eq!(sim.server.counts(), (0, 0));
        assert_eq!(sim.next_wake(), None, "seed {seed}: everything idle");
        dropped += sim.dropped;
        retransmitted += wire_lines(&sim, Side::Client).len() - 1;
    }
    // The network really lost packets and the layer really recovered.
    assert!(dropped > 5, "dropped {dropped}");
    assert!(retransmitted > 5, "retransmitted {retransmitted}");
}

#[test]
fn invite_with_ringing_and_answer_completes_under_loss() {
    let mut ringing_seen = 0;
    for seed in SEEDS {
        let mut sim = lossy(seed);
        let id = sim.send(request("INVITE", &format!("z9hG4bKi{seed}"), Udp));
        sim.run_until(200_000);

        let names = sim.client_names();
        let ok = format!("Response({},200)", id.0);
        let ringing = format!("Response({},180)", id.0);
        assert!(names.contains(&ok), "seed {seed}: {names:?}");
        assert!(
            names[..names.len() - 1]
                .iter()
                .all(|n| *n == ok || *n == ringing),
            "seed {seed}: {names:?}"
        );
        assert_eq!(names.last().unwrap(), &format!("Terminated({})", id.0));
        ringing_seen += usize::from(names.contains(&ringing));

        // One INVITE reached the server TU; the end-to-end ACK reached it too.
        let reqs = server_requests(&sim);
        assert_eq!(reqs.len(), 1, "seed {seed}");
        assert_eq!(reqs[0].1, "INVITE");
        assert!(
            sim.server_names().contains(&"Ack".to_string()),
            "seed {seed}"
        );
        // Accepted on both sides ends by Timers L and M, not by a timeout.
        assert!(!names.iter().any(|n| n.starts_with("Timeout")));
        assert_eq!(sim.client.counts(), (0, 0));
        assert_eq!(sim.server.counts(), (0, 0));
        // The layer never ACKs a 2xx itself: every ACK came from the UA core.
        let acks = wire_lines(&sim, Side::Client)
            .iter()
            .filter(|l| l.starts_with("ACK"))
            .count();
        assert_eq!(acks, sim.acks_for_2xx, "seed {seed}");
    }
    assert!(ringing_seen > SEEDS.count() / 2);
}

#[test]
fn rejected_invite_is_acked_hop_by_hop_under_loss() {
    for seed in SEEDS {
        let mut sim = lossy(seed);
        sim.policy = ServerPolicy::Reject;
        let id = sim.send(request("INVITE", &format!("z9hG4bKr{seed}"), Udp));
        sim.run_until(200_000);

        // One 486 for the TU; its retransmissions were absorbed and re-ACKed.
        assert_eq!(
            sim.client_names(),
            vec![
                format!("Response({},486)", id.0),
                format!("Terminated({})", id.0)
            ],
            "seed {seed}"
        );
        assert_eq!(sim.acks_for_2xx, 0);
        let client_lines = wire_lines(&sim, Side::Client);
        let acks = client_lines.iter().filter(|l| l.starts_with("ACK")).count();
        let finals = wire_lines(&sim, Side::Server)
            .iter()
            .filter(|l| l.contains(" 486 "))
            .count();
        assert!(acks >= 1, "seed {seed}");
        assert!(acks <= finals, "one ACK per 486 received at most");

        // The server absorbed the ACK (no event) and ended by Timer I, well
        // before Timer H would have given up at 32 s.
        let reqs = server_requests(&sim);
        assert_eq!(reqs.len(), 1, "seed {seed}");
        assert!(!sim.server_names().contains(&"Ack".to_string()));
        let (ended, _) = sim
            .server_events
            .iter()
            .find(|(_, e)| matches!(e, Event::Terminated { .. }))
            .unwrap();
        assert!(*ended < 32_000, "seed {seed}: ended at {ended}");
        assert_eq!(sim.server.counts(), (0, 0));
        assert_eq!(sim.client.counts(), (0, 0));
    }
}

#[test]
fn cancel_requested_before_any_provisional_completes_under_loss() {
    for seed in SEEDS {
        let mut sim = lossy(seed);
        sim.policy = ServerPolicy::Ring;
        let id = sim.send(request("INVITE", &format!("z9hG4bKc{seed}"), Udp));
        // Cancelled at once: the CANCEL waits for the first provisional.
        sim.cancel(id);
        assert!(wire_lines(&sim, Side::Client)
            .iter()
            .all(|l| l.starts_with("INVITE")));
        sim.run_until(200_000);

        // The TU sees the INVITE's responses only, never the CANCEL's.
        let names = sim.client_names();
        let terminated = format!("Response({},487)", id.0);
        assert_eq!(
            names.iter().filter(|n| **n == terminated).count(),
            1,
            "{names:?}"
        );
        assert!(names.contains(&format!("Response({},180)", id.0)));
        assert!(names
            .iter()
            .all(|n| n.contains(&format!("({})", id.0)) || n.contains(&format!("({},", id.0))));

        let reqs = server_requests(&sim);
        assert_eq!(reqs.len(), 2, "seed {seed}: {reqs:?}");
        assert_eq!(reqs[0].1, "INVITE");
        assert_eq!(reqs[1].1, "CANCEL");
        assert_eq!(reqs[1].2, Some(reqs[0].0), "CANCEL matched its INVITE");
        assert_eq!(sim.client.counts(), (0, 0));
        assert_eq!(sim.server.counts(), (0, 0));
    }
}

#[test]
fn reliable_transport_sends_every_message_once() {
    for transport in [Tcp, TransportKind::Tls] {
        let mut sim = Sim::new(7, 0.0, 20, 0, transport);
        let id = sim.send(request("INVITE", "z9hG4bKtcp", transport));
        sim.run_until(200_000);
        assert_eq!(
            wire_lines(&sim, Side::Client),
            vec![
                "INVITE sip:bob@example.com SIP/2.0",
                "ACK sip:bob@10.0.0.2 SIP/2.0"
            ]
        );
        assert_eq!(
            wire_lines(&sim, Side::Server),
            vec!["SIP/2.0 180 Ringing", "SIP/2.0 200 OK"]
        );
        // Timing: sent at 0, answered at 20, ACKed at 40; L and M still run
        // 64*T1 over reliable transports (RFC 6026).
        let client: Vec<_> = sim
            .client_events
            .iter()
            .map(|(t, e)| (*t, event_name(e)))
            .collect();
        assert_eq!(
            client,
            vec![
                (40, format!("Response({},180)", id.0)),
                (40, format!("Response({},200)", id.0)),
                (32_040, format!("Terminated({})", id.0)),
            ]
        );
        let server_end = sim.server_events.last().unwrap().0;
        assert_eq!(server_end, 32_020);
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let run = |seed| {
        let mut sim = lossy(seed);
        sim.send(request("INVITE", "z9hG4bKsame", Udp));
        sim.run_until(200_000);
        sim.wire
            .iter()
            .map(|(t, s, b)| (*t, *s, b.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
    // And every byte the layers sent parses as SIP.
    assert!(run(5).iter().all(|(_, _, b)| matches!(
        parse_datagram(b),
        Ok(Message::Request(_) | Message::Response(_))
    )));
}
