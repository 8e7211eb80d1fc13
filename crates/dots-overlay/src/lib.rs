//! The DOTS overlay: nodes find each other's users through a libp2p network.
//!
//! Every node runs one libp2p swarm with three protocols:
//!
//! - **Kademlia** (`/dots/kad/1.0.0`, always in server mode) stores signed presence
//!   records under `presence_key(subject)` on the nodes closest to that key. Inbound
//!   records are never stored by Kademlia itself (`StoreInserts::FilterBoth`): this
//!   crate verifies each with [`PresenceRecord::verify`], applies the merge rule (a
//!   stored record is only replaced by one that [supersedes](PresenceRecord::supersedes)
//!   it) and stores it with the record's own expiry, not Kademlia's 48 h default.
//! - **Gossipsub** (topic `dots/presence/1`) floods the same signed bytes, so that
//!   every node learns a change at once. Messages are verified the same way before
//!   they are stored or forwarded; invalid ones are rejected (and their sender
//!   penalised), valid but old ones ignored.
//! - **Identify** tells Kademlia the listen addresses of peers that connected to us.
//!
//! Nothing is trusted: every record from the network is counted either as accepted
//! or as refused by reason ([`OverlayMetrics::records_refused`]).
//!
//! # Driving it
//!
//! [`Overlay::start`] spawns the swarm task on the current tokio runtime and returns
//! a cheap, cloneable handle plus a receiver of [`OverlayEvent`]s: records learned
//! from the network that superseded what the node had. The owner of a presence
//! re-publishes it (higher `seq` or later `exp`) well before it expires; the overlay
//! neither republishes nor extends records.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use dots_overlay::{Overlay, OverlayConfig, OverlayEvent};
//! use dots_records::{NodeKey, PresenceRecord};
//!
//! let key = NodeKey::load_or_create(std::path::Path::new("dots-data"))?;
//! let (overlay, mut events) = Overlay::start(OverlayConfig {
//!     key: key.clone(),
//!     listen: vec!["/ip4/0.0.0.0/tcp/4001".parse()?],
//!     bootstrap: vec![],
//!     max_ttl: 10 * 60 * 1000,
//! })
//! .await?;
//! let now = dots_overlay::now_ms();
//! let record = PresenceRecord::new("sip:alice@dots.test", &key, vec!["sip:192.0.2.1:5060".into()], 1, now + 300_000);
//! overlay.publish(record.sign(&key)).await?;
//! let found = overlay.lookup("sip:bob@dots.test", false).await?;
//! while let Some(OverlayEvent::Presence(record)) = events.recv().await {
//!     println!("{} is at {:?}", record.subject, record.sip);
//! }
//! # Ok(()) }
//! ```
//!
//! QUIC is available behind the `quic` cargo feature (off by default: it adds a
//! second TLS stack to the build).

mod behaviour;
mod local;
mod metrics;
mod task;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use dots_records::{NodeKey, PresenceRecord};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

pub use behaviour::{
    gossipsub_config, kad_config, presence_topic, IDENTIFY_PROTOCOL, KAD_PROTOCOL, MAX_GOSSIP_SIZE,
    MAX_STORED_RECORDS, PRESENCE_TOPIC,
};
pub use metrics::{OverlayMetrics, LOOKUP_LATENCY_BUCKETS_MS};
pub use task::{now_ms, LOOKUP_DEADLINE};

use local::LocalView;
use task::{Command, Task};

/// How long an idle connection is kept open.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `start` waits for its listeners.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// What an overlay node needs to start.
pub struct OverlayConfig {
    /// The node's key; its secret becomes the libp2p Ed25519 keypair.
    pub key: NodeKey,
    /// Where to listen, e.g. `/ip4/127.0.0.1/tcp/4001`.
    pub listen: Vec<Multiaddr>,
    /// Known nodes to join through, each with `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Records expiring later than now + this (ms) are refused, e.g. 10 minutes.
    pub max_ttl: u64,
}

/// Something the overlay learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayEvent {
    /// A verified record learned by gossip or DHT that superseded what we had.
    Presence(PresenceRecord),
}

/// A handle on a running overlay node (cheap to clone: a channel to the swarm task).
#[derive(Clone)]
pub struct Overlay {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    local: Arc<LocalView>,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("peer_id", &self.peer_id)
            .finish()
    }
}

impl Overlay {
    /// Starts the swarm task; returns once listening. Logs peer id and listen addrs at info.
    pub async fn start(
        config: OverlayConfig,
    ) -> anyhow::Result<(Overlay, mpsc::Receiver<OverlayEvent>)> {
        let keypair = libp2p::identity::Keypair::ed25519_from_bytes(config.key.secret())
            .context("node key")?;
        let peer_id = keypair.public().to_peer_id();
        debug_assert_eq!(peer_id.to_bytes(), config.key.peer_id_bytes());

        let builder = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?;
        #[cfg(feature = "quic")]
        let builder = builder.with_quic();
        let mut swarm = builder
            .with_behaviour(|key| behaviour::Behaviour::new(key).map_err(Into::into))?
            .with_swarm_config(|c| {
                c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT)
                    // Every DHT request opens a substream; announcing its protocol and
                    // sending the request at once saves a round trip per request.
                    .with_substream_upgrade_protocol_override(
                        libp2p::core::upgrade::Version::V1Lazy,
                    )
            })
            .build();

        let mut pending = Vec::new();
        for addr in &config.listen {
            pending.push(
                swarm
                    .listen_on(addr.clone())
                    .with_context(|| format!("listen on {addr}"))?,
            );
        }
        tokio::time::timeout(LISTEN_TIMEOUT, async {
            while !pending.is_empty() {
                match swarm.select_next_some().await {
                    SwarmEvent::NewListenAddr { listener_id, .. } => {
                        pending.retain(|id| *id != listener_id);
                    }
                    SwarmEvent::ListenerClosed {
                        listener_id,
                        reason: Err(e),
                        ..
                    } if pending.contains(&listener_id) => {
                        return Err(anyhow::anyhow!("listener failed: {e}"));
                    }
                    SwarmEvent::ListenerError { listener_id, error }
                        if pending.contains(&listener_id) =>
                    {
                        return Err(anyhow::anyhow!("listener failed: {error}"));
                    }
                    _ => {}
                }
            }
            Ok(())
        })
        .await
        .context("overlay listeners did not come up")??;

        let addrs: Vec<String> = swarm
            .listeners()
            .map(|a| a.clone().with(Protocol::P2p(peer_id)).to_string())
            .collect();
        tracing::info!(%peer_id, did = %config.key.did(), listen = ?addrs, "overlay started");

        let mut known = 0;
        for addr in &config.bootstrap {
            let mut dial_addr = addr.clone();
            match dial_addr.pop() {
                Some(Protocol::P2p(peer)) if peer != peer_id => {
                    swarm.behaviour_mut().kad.add_address(&peer, dial_addr);
                    known += 1;
                }
                Some(Protocol::P2p(_)) => continue,
                _ => tracing::warn!(%addr, "bootstrap address without /p2p/<peer id>"),
            }
            if let Err(e) = swarm.dial(addr.clone()) {
                tracing::warn!(%addr, "cannot dial bootstrap node: {e}");
            }
        }
        if known > 0 {
            let _ = swarm.behaviour_mut().kad.bootstrap();
        }

        let (command_tx, command_rx) = mpsc::channel(256);
        let (event_tx, event_rx) = mpsc::channel(1024);
        let local = Arc::new(LocalView::default());
        let task = Task::new(swarm, command_rx, event_tx, config.max_ttl, local.clone());
        tokio::spawn(task.run());
        Ok((
            Overlay {
                peer_id,
                commands: command_tx,
                local,
            },
            event_rx,
        ))
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    async fn request<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Full multiaddrs with /p2p/<peer id>.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.request(Command::ListenAddrs).await.unwrap_or_default()
    }

    /// Stores locally, puts to the DHT (Quorum::One) and gossips. `record` is signed
    /// bytes from PresenceRecord::sign. Fails if the record does not verify or a newer
    /// one is stored; returns once the put and the gossip are under way.
    pub async fn publish(&self, record: Vec<u8>) -> anyhow::Result<()> {
        self.request(|reply| Command::Publish(record, reply))
            .await
            .ok_or_else(stopped)?
    }

    /// Like [`Overlay::publish`], but answers only once `replicas` peers acknowledged
    /// the DHT put (an error if fewer did before the query timed out). For callers that
    /// need the record durable in the DHT before going on, and for measuring the put.
    pub async fn publish_confirmed(
        &self,
        record: Vec<u8>,
        replicas: std::num::NonZeroUsize,
    ) -> anyhow::Result<()> {
        self.request(|reply| Command::PublishConfirmed(record, replicas, reply))
            .await
            .ok_or_else(stopped)?
    }

    /// Best record for the subject: local store/cache first unless `fresh`, else a DHT
    /// get (finished once a valid record arrives from a peer, or after
    /// [`LOOKUP_DEADLINE`]); verified; None if nothing valid.
    pub async fn lookup(
        &self,
        subject: &str,
        fresh: bool,
    ) -> anyhow::Result<Option<PresenceRecord>> {
        if !fresh {
            let started = std::time::Instant::now();
            if let Some(record) = self
                .local
                .get(&dots_records::presence_key(subject), now_ms())
            {
                self.local.observe_lookup(started.elapsed(), true);
                return Ok(Some(record));
            }
        }
        let subject = subject.to_string();
        self.request(|reply| Command::Lookup {
            subject,
            fresh,
            reply,
        })
        .await
        .ok_or_else(stopped)?
    }

    /// A snapshot of the counters (all zero once stopped).
    pub async fn metrics(&self) -> OverlayMetrics {
        self.request(Command::Metrics).await.unwrap_or_default()
    }

    /// Stops the swarm task and closes its connections; returns when it is gone.
    pub async fn shutdown(&self) {
        let _ = self.request(Command::Shutdown).await;
    }
}

fn stopped() -> anyhow::Error {
    anyhow::anyhow!("overlay stopped")
}
