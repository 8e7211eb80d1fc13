//! The network behaviour: Kademlia, gossipsub and identify, configured for presence.

use std::time::Duration;

use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, MessageId, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore, store::MemoryStoreConfig, Mode, StoreInserts};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{identify, StreamProtocol};
use sha2_011::{Digest, Sha256};

/// Kademlia protocol name of the DOTS overlay (a separate DHT from the public IPFS one).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/dots/kad/1.0.0");
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/dots/id/1.0.0";
/// Nodes a record is stored on by a DHT put (Kademlia's k; its default is 20).
/// Eight, as in OpenDHT: gossip already leaves a copy on every node of the mesh, and
/// each put or lookup contacts fewer peers.
pub const REPLICATION_FACTOR: std::num::NonZeroUsize = std::num::NonZeroUsize::new(8).unwrap();
/// Gossipsub topic of presence records.
pub const PRESENCE_TOPIC: &str = "dots/presence/1";
/// Most records one node keeps (its DHT share plus what it learned by gossip).
pub const MAX_STORED_RECORDS: usize = 100_000;
/// Largest gossip message accepted off the wire. Above the record limit, so that an
/// oversize record reaches verification and is counted as such.
pub const MAX_GOSSIP_SIZE: usize = 16 * 1024;

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub kad: kad::Behaviour<MemoryStore>,
    pub gossipsub: gossipsub::Behaviour,
    pub identify: identify::Behaviour,
}

/// The gossip topic of presence records.
pub fn presence_topic() -> IdentTopic {
    IdentTopic::new(PRESENCE_TOPIC)
}

/// Kademlia configuration: own protocol, every inbound record filtered by the
/// application, no TTL, publication or replication of its own: presence records
/// carry their expiry (minutes) and their owner re-publishes them well before it,
/// which also reaches nodes that joined closer to the key in the meantime.
pub fn kad_config() -> kad::Config {
    let mut config = kad::Config::new(KAD_PROTOCOL);
    config
        .set_record_filtering(StoreInserts::FilterBoth)
        .set_record_ttl(None)
        .set_publication_interval(None)
        .set_replication_interval(None)
        .set_query_timeout(Duration::from_secs(10))
        .set_replication_factor(REPLICATION_FACTOR)
        // Caching a found record at the closest peer that lacked it costs a put per
        // lookup; the owner re-publishes well within the record's life anyway.
        .set_caching(kad::Caching::Disabled)
        .set_max_packet_size(16 * 1024);
    config
}

/// Gossipsub configuration for small meshes (a handful of nodes up to hundreds):
/// the default mesh degree (5/6/12) cannot be reached by a 5-node network.
pub fn gossipsub_config() -> gossipsub::Config {
    gossipsub::ConfigBuilder::default()
        .mesh_outbound_min(1)
        .mesh_n_low(2)
        .mesh_n(4)
        .mesh_n_high(8)
        .gossip_lazy(4)
        // The publisher sends to its mesh, not to every subscribed peer: each node
        // gets a record once per mesh link instead of once more from the publisher.
        .flood_publish(false)
        .heartbeat_interval(Duration::from_secs(1))
        // Records carry their own signature and are verified by the application;
        // a second, per-copy gossipsub signature would only double the work.
        .validation_mode(ValidationMode::Anonymous)
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP_SIZE)
        // One record, one message id: the same record arriving from several peers
        // (or published again) is handled once.
        .message_id_fn(|m: &gossipsub::Message| MessageId::from(Sha256::digest(&m.data).to_vec()))
        .build()
        .expect("static gossipsub configuration is valid")
}

impl Behaviour {
    pub fn new(key: &Keypair) -> anyhow::Result<Behaviour> {
        let peer_id = key.public().to_peer_id();
        let store = MemoryStore::with_config(
            peer_id,
            MemoryStoreConfig {
                max_records: MAX_STORED_RECORDS,
                max_value_bytes: dots_records::MAX_RECORD_SIZE,
                ..MemoryStoreConfig::default()
            },
        );
        let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config());
        // Loopback and private addresses never get confirmed as external: without this
        // a node stays a client and answers no DHT requests.
        kad.set_mode(Some(Mode::Server));

        let mut gossipsub =
            gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, gossipsub_config())
                .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?;
        gossipsub.subscribe(&presence_topic())?;

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
                .with_agent_version(format!("dots/{}", env!("CARGO_PKG_VERSION"))),
        );
        Ok(Behaviour {
            kad,
            gossipsub,
            identify,
        })
    }
}
