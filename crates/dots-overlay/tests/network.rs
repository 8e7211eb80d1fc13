//! Real swarms on 127.0.0.1 in one process: several overlay nodes bootstrapped to
//! the first, and a raw libp2p peer that injects bad records over gossip and
//! Kademlia, bypassing every check.

use std::future::Future;
use std::time::{Duration, Instant};

use dots_overlay::{now_ms, Overlay, OverlayConfig, OverlayEvent, OverlayMetrics};
use dots_records::{presence_key, NodeKey, PresenceRecord};
use futures::StreamExt;
use libp2p::kad::{self, store::MemoryStore, Mode, Quorum};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{gossipsub, identify, noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use tokio::sync::mpsc;

const MAX_TTL: u64 = 10 * 60 * 1000;
const SUBJECT: &str = "sip:alice@dots.test";
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

struct Node {
    key: NodeKey,
    overlay: Overlay,
    events: mpsc::Receiver<OverlayEvent>,
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

async fn start_node(n: u8, bootstrap: Vec<Multiaddr>) -> Node {
    let key = NodeKey::from_secret([n; 32]);
    let (overlay, events) = Overlay::start(OverlayConfig {
        key: key.clone(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap,
        max_ttl: MAX_TTL,
    })
    .await
    .expect("overlay starts");
    Node {
        key,
        overlay,
        events,
    }
}

/// Polls `check` every 20 ms until it returns Some, or panics after `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` nodes, all bootstrapped to the first; returns once every node sees every
/// other on the presence topic.
async fn network(n: u8) -> Vec<Node> {
    let first = start_node(1, vec![]).await;
    let boot = first.overlay.listen_addrs().await;
    assert!(boot[0].to_string().contains("/p2p/12D3KooW"), "{boot:?}");
    let mut nodes = vec![first];
    for i in 2..=n {
        nodes.push(start_node(i, boot.clone()).await);
    }
    let started = Instant::now();
    for node in &nodes {
        eventually("a full gossip mesh", Duration::from_secs(20), || async {
            let m = node.overlay.metrics().await;
            (m.gossip_peers == u64::from(n) - 1).then_some(())
        })
        .await;
    }
    eprintln!("{n} nodes joined in {:?}", started.elapsed());
    nodes
}

fn presence(key: &NodeKey, seq: u64, exp: u64) -> PresenceRecord {
    PresenceRecord::new(
        SUBJECT,
        key,
        vec![
            "sip:127.0.0.1:5061;transport=tcp".into(),
            "sip:127.0.0.1:5061".into(),
        ],
        seq,
        exp,
    )
}

async fn next_presence(node: &mut Node, limit: Duration) -> PresenceRecord {
    match tokio::time::timeout(limit, node.events.recv()).await {
        Ok(Some(OverlayEvent::Presence(record))) => record,
        other => panic!("no presence event: {other:?}"),
    }
}

async fn shutdown_all(nodes: &[Node]) {
    for node in nodes {
        node.overlay.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_gossip_and_fresh_lookup() {
    init_tracing();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut nodes = network(5).await;
        let record = presence(&nodes[0].key, 1, now_ms() + 60_000);
        let published = Instant::now();
        nodes[0]
            .overlay
            .publish(record.sign(&nodes[0].key))
            .await
            .unwrap();

        for node in nodes.iter_mut().skip(1) {
            let got = next_presence(node, Duration::from_secs(5)).await;
            assert_eq!(got, record);
        }
        eprintln!("gossip reached all 4 others in {:?}", published.elapsed());

        let started = Instant::now();
        let found = nodes[3].overlay.lookup(SUBJECT, true).await.unwrap();
        eprintln!("fresh lookup at D took {:?}", started.elapsed());
        assert_eq!(found, Some(record.clone()));
        // A cached lookup answers from the local store.
        assert_eq!(
            nodes[3].overlay.lookup(SUBJECT, false).await.unwrap(),
            Some(record.clone())
        );
        assert_eq!(
            nodes[3]
                .overlay
                .lookup("sip:nobody@dots.test", true)
                .await
                .unwrap(),
            None
        );

        // A newer record supersedes everywhere; an older one is refused by the publisher.
        let newer = presence(&nodes[0].key, 2, now_ms() + 60_000);
        nodes[0]
            .overlay
            .publish(newer.sign(&nodes[0].key))
            .await
            .unwrap();
        for node in nodes.iter_mut().skip(1) {
            assert_eq!(next_presence(node, Duration::from_secs(5)).await, newer);
        }
        assert!(nodes[0]
            .overlay
            .publish(record.sign(&nodes[0].key))
            .await
            .is_err());

        let m: OverlayMetrics = nodes[3].overlay.metrics().await;
        assert_eq!(m.peers_connected, 4);
        assert_eq!(m.records_stored, 1);
        assert_eq!(m.lookups, 3);
        assert_eq!(m.lookups_found, 2);
        assert_eq!(m.lookup_latency_ms.iter().sum::<u64>(), 3);
        // Nothing refused but, possibly, the older record arriving late by its DHT
        // put after the newer one came by gossip (refused as stale, as it should be).
        assert_eq!(m.refused_total() - m.refused("stale"), 0, "{m:?}");
        assert_eq!(nodes[0].overlay.metrics().await.published, 2);
        assert!(m
            .prometheus("dots_overlay")
            .contains("dots_overlay_lookup_duration_ms_count 3"));

        // The local answer follows the store: the newer record, not the first.
        assert_eq!(
            nodes[3].overlay.lookup(SUBJECT, false).await.unwrap(),
            Some(newer.clone())
        );
        // A confirmed publish returns once that many peers stored it, and fails when
        // the network has fewer peers than asked for.
        let third = presence(&nodes[0].key, 3, now_ms() + 60_000);
        let four = std::num::NonZeroUsize::new(4).unwrap();
        nodes[0]
            .overlay
            .publish_confirmed(third.sign(&nodes[0].key), four)
            .await
            .expect("4 peers acknowledge");
        let fourth = presence(&nodes[0].key, 4, now_ms() + 60_000);
        let five = std::num::NonZeroUsize::new(5).unwrap();
        let err = nodes[0]
            .overlay
            .publish_confirmed(fourth.sign(&nodes[0].key), five)
            .await
            .expect_err("only 4 peers exist");
        assert!(err.to_string().contains("DHT put"), "{err:#}");
        shutdown_all(&nodes).await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_a_dead_node() {
    init_tracing();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut nodes = network(5).await;
        let record = presence(&nodes[0].key, 7, now_ms() + 60_000);
        nodes[0]
            .overlay
            .publish(record.sign(&nodes[0].key))
            .await
            .unwrap();
        for node in nodes.iter_mut().skip(1) {
            assert_eq!(next_presence(node, Duration::from_secs(5)).await, record);
        }
        nodes[0].overlay.shutdown().await;
        assert!(nodes[0]
            .overlay
            .publish(record.sign(&nodes[0].key))
            .await
            .is_err());
        for node in &nodes[1..] {
            assert_eq!(
                node.overlay.lookup(SUBJECT, true).await.unwrap(),
                Some(record.clone())
            );
        }
        // A node that joins after the publisher died and missed the gossip finds the
        // record in the DHT, on the replicas.
        let boot = nodes[1].overlay.listen_addrs().await;
        let mut late = start_node(9, boot).await;
        eventually("the late node to join", Duration::from_secs(20), || async {
            (late.overlay.metrics().await.peers_connected >= 1).then_some(())
        })
        .await;
        let started = Instant::now();
        assert_eq!(
            late.overlay.lookup(SUBJECT, false).await.unwrap(),
            Some(record.clone())
        );
        eprintln!("late node lookup took {:?}", started.elapsed());
        // The lookup taught it the record.
        assert_eq!(
            next_presence(&mut late, Duration::from_secs(1)).await,
            record
        );
        assert_eq!(late.overlay.metrics().await.records_stored, 1);
        late.overlay.shutdown().await;
        shutdown_all(&nodes[1..]).await;
    })
    .await
    .expect("test finished in time");
}

#[derive(NetworkBehaviour)]
struct RawBehaviour {
    kad: kad::Behaviour<MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
}

/// A libp2p peer speaking the overlay's protocols with no checks at all.
fn raw_peer() -> Swarm<RawBehaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let mut config = kad::Config::new(dots_overlay::KAD_PROTOCOL);
            config.set_record_filtering(kad::StoreInserts::Unfiltered);
            let mut kad = kad::Behaviour::with_config(peer_id, MemoryStore::new(peer_id), config);
            kad.set_mode(Some(Mode::Server));
            let mut gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Anonymous,
                dots_overlay::gossipsub_config(),
            )
            .unwrap();
            gossipsub
                .subscribe(&dots_overlay::presence_topic())
                .unwrap();
            let identify = identify::Behaviour::new(identify::Config::new(
                dots_overlay::IDENTIFY_PROTOCOL.into(),
                key.public(),
            ));
            RawBehaviour {
                kad,
                gossipsub,
                identify,
            }
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Drives the raw swarm until `done` says so, for at most `limit`.
async fn drive_until(
    swarm: &mut Swarm<RawBehaviour>,
    limit: Duration,
    mut done: impl FnMut(&SwarmEvent<RawBehaviourEvent>) -> bool,
) {
    tokio::time::timeout(limit, async {
        loop {
            let event = swarm.select_next_some().await;
            if done(&event) {
                return;
            }
        }
    })
    .await
    .expect("raw peer: timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_refused_everywhere() {
    init_tracing();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut nodes = network(5).await;
        let honest = presence(&nodes[0].key, 5, now_ms() + 120_000);
        nodes[0].overlay.publish(honest.sign(&nodes[0].key)).await.unwrap();
        for node in nodes.iter_mut().skip(1) {
            assert_eq!(next_presence(node, Duration::from_secs(5)).await, honest);
        }

        // The raw peer connects to every honest node and waits for their subscriptions.
        let mut raw = raw_peer();
        raw.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
        let mut peers: Vec<PeerId> = Vec::new();
        for node in &nodes {
            let addr = node.overlay.listen_addrs().await.remove(0);
            let mut dial = addr.clone();
            dial.pop();
            raw.behaviour_mut().kad.add_address(&node.overlay.peer_id(), dial);
            raw.dial(addr).unwrap();
            peers.push(node.overlay.peer_id());
        }
        let mut subscribed = 0;
        drive_until(&mut raw, Duration::from_secs(10), |event| {
            if let SwarmEvent::Behaviour(RawBehaviourEvent::Gossipsub(
                gossipsub::Event::Subscribed { .. },
            )) = event
            {
                subscribed += 1;
            }
            subscribed == peers.len()
        })
        .await;

        let a = &nodes[0].key;
        let rogue = NodeKey::from_secret([66; 32]);
        let now = now_ms();
        let mut oversize = presence(a, 101, now + 60_000);
        oversize.sip = (0..200)
            .map(|i| format!("sip:10.0.0.{i}:5061;transport=tcp"))
            .collect();
        let bad: Vec<(&str, Vec<u8>)> = vec![
            // Claims node A with a higher seq, signed by another key.
            ("bad_signature", presence(a, 99, now + 60_000).sign(&rogue)),
            // A's own older record, replayed.
            ("stale", presence(a, 3, now + 60_000).sign(a)),
            ("expired", presence(a, 100, now - 1_000).sign(a)),
            ("too_large", oversize.sign(a)),
        ];
        assert!(bad[3].1.len() > dots_records::MAX_RECORD_SIZE);
        // Tampered bytes: honest record with the seq raised after signing.
        let mut tampered = presence(a, 6, now + 60_000).sign(a);
        let seq_at = tampered.len() - 64 - 16;
        tampered[seq_at + 7] = 200;

        let key = kad::RecordKey::new(&presence_key(SUBJECT));
        let mut inject = bad.clone();
        inject.push(("bad_signature", tampered));
        for (reason, bytes) in &inject {
            raw.behaviour_mut()
                .gossipsub
                .publish(dots_overlay::presence_topic(), bytes.clone())
                .unwrap_or_else(|e| panic!("gossip {reason}: {e}"));
            let query = raw
                .behaviour_mut()
                .kad
                .put_record(kad::Record::new(key.clone(), bytes.clone()), Quorum::All)
                .unwrap();
            drive_until(&mut raw, Duration::from_secs(10), |event| {
                matches!(event, SwarmEvent::Behaviour(RawBehaviourEvent::Kad(
                    kad::Event::OutboundQueryProgressed { id, result: kad::QueryResult::PutRecord(_), .. }
                )) if *id == query)
            })
            .await;
        }
        // A valid record under another subject's key.
        let wrong_key = kad::RecordKey::new(&presence_key("sip:bob@dots.test"));
        let query = raw
            .behaviour_mut()
            .kad
            .put_record(kad::Record::new(wrong_key, honest.sign(a)), Quorum::All)
            .unwrap();
        drive_until(&mut raw, Duration::from_secs(10), |event| {
            matches!(event, SwarmEvent::Behaviour(RawBehaviourEvent::Kad(
                kad::Event::OutboundQueryProgressed { id, result: kad::QueryResult::PutRecord(_), .. }
            )) if *id == query)
        })
        .await;
        // From here on the raw peer only answers requests (e.g. DHT gets).
        let raw_task = tokio::spawn(async move {
            loop {
                raw.select_next_some().await;
            }
        });

        // Every honest node refused each bad record twice: once by gossip, once by put.
        let expected = [
            ("bad_signature", 4),
            ("stale", 2),
            ("expired", 2),
            ("too_large", 2),
            ("wrong_key", 1),
        ];
        for (i, node) in nodes.iter().enumerate() {
            let m = eventually("refusals", Duration::from_secs(10), || async {
                let m = node.overlay.metrics().await;
                expected
                    .iter()
                    .all(|(reason, n)| m.refused(reason) >= *n)
                    .then_some(m)
            })
            .await;
            eprintln!("node {i} refused {:?}", m.records_refused);
        }
        // ... and still has the honest record, locally and from the network.
        for node in nodes.iter_mut() {
            assert_eq!(node.overlay.lookup(SUBJECT, false).await.unwrap(), Some(honest.clone()));
            assert_eq!(node.overlay.lookup(SUBJECT, true).await.unwrap(), Some(honest.clone()));
            assert_eq!(node.overlay.lookup("sip:bob@dots.test", false).await.unwrap(), None);
            assert!(node.events.try_recv().is_err(), "a bad record was reported as presence");
        }
        raw_task.abort();
        shutdown_all(&nodes).await;
    })
    .await
    .expect("test finished in time");
}
