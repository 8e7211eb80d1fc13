//! The node's side of the overlay: its key, publishing its users' presence
//! records, and running the engine's lookups.

use std::path::Path;

use anyhow::Context;
use dots_overlay::{Overlay, OverlayConfig, OverlayEvent};
use dots_proxy::{LookupRequest, RemotePresence};
use dots_records::{Grant, NodeKey, PresenceRecord};
use tokio::sync::mpsc;

use crate::config::P2pConfig;
use crate::transport::Inbound;

/// Refuse records that claim to live longer than this (ms).
const MAX_RECORD_TTL: u64 = 3_600_000;

pub struct Federation {
    pub overlay: Overlay,
    key: NodeKey,
    /// This node's SIP URIs, stream transport first (what other nodes dial).
    pub sip_uris: Vec<String>,
    ttl_ms: u64,
    last_seq: u64,
}

impl Federation {
    /// Loads (or creates) the node key and starts the overlay. Overlay
    /// events are forwarded into the engine's inbound channel.
    pub async fn start(
        config: &P2pConfig,
        data_dir: &Path,
        sip_uris: Vec<String>,
        inbound: mpsc::Sender<Inbound>,
    ) -> anyhow::Result<Federation> {
        let key = NodeKey::load_or_create(data_dir).with_context(|| {
            format!(
                "cannot load or create the node key in {}",
                data_dir.display()
            )
        })?;
        let parse = |list: &[String], what: &str| -> anyhow::Result<Vec<libp2p::Multiaddr>> {
            list.iter()
                .map(|s| {
                    s.parse()
                        .with_context(|| format!("invalid {what} multiaddr {s:?}"))
                })
                .collect()
        };
        let overlay_config = OverlayConfig {
            key: NodeKey::from_secret(key.secret()),
            listen: parse(&config.listen, "--p2p")?,
            bootstrap: parse(&config.bootstrap, "--bootstrap")?,
            max_ttl: MAX_RECORD_TTL,
        };
        let (overlay, mut events) = Overlay::start(overlay_config)
            .await
            .context("cannot start the overlay")?;
        tokio::spawn(async move {
            while let Some(OverlayEvent::Presence(record)) = events.recv().await {
                let subject = record.subject.clone();
                if inbound
                    .send(Inbound::Presence(subject, remote(record)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Federation {
            overlay,
            key,
            sip_uris,
            ttl_ms: config.record_ttl.max(10) * 1000,
            last_seq: 0,
        })
    }

    pub fn peer_id_bytes(&self) -> Vec<u8> {
        self.key.peer_id_bytes()
    }

    pub fn did(&self) -> String {
        self.key.did()
    }

    /// How often presence is re-published (a third of the record lifetime).
    pub fn republish_every(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.ttl_ms / 3)
    }

    /// Signs and publishes `aor`'s presence (online: our SIP URIs; offline:
    /// none). The sequence number is the wall clock in ms, bumped to stay
    /// strictly increasing, so a user who moves to another node is
    /// superseded there without any coordination between nodes.
    ///
    /// A DID's record carries the user's `grant` and expires no later than it; a
    /// DID without a grant (a key user registered at a node in open mode) is not
    /// published: no other node would accept the record.
    pub fn publish(&mut self, aor: &str, online: bool, grant: Option<Grant>, now: u64) {
        let mut exp = now + self.ttl_ms;
        if dots_records::is_did_subject(aor) {
            match &grant {
                Some(g) if g.until > now => exp = exp.min(g.until),
                _ => {
                    tracing::info!(%aor, "presence not published: no valid grant from the user");
                    return;
                }
            }
        }
        self.last_seq = now.max(self.last_seq + 1);
        let sip = if online {
            self.sip_uris.clone()
        } else {
            Vec::new()
        };
        let mut record = PresenceRecord::new(aor, &self.key, sip, self.last_seq, exp);
        record.grant = grant;
        let bytes = record.sign(&self.key);
        tracing::debug!(%aor, online, "publishing presence");
        self.spawn_publish(aor.to_string(), bytes);
    }

    /// Signs and publishes an alias record: `aor` (a user name on this node) names
    /// `did`; the DID's delegation to this node is the proof that it may say so.
    pub fn publish_alias(&mut self, aor: &str, did: &str, grant: Grant, now: u64) {
        if grant.until <= now {
            tracing::info!(%aor, %did, "alias not published: the delegation has expired");
            return;
        }
        self.last_seq = now.max(self.last_seq + 1);
        let exp = (now + self.ttl_ms).min(grant.until);
        let record = PresenceRecord::new(aor, &self.key, self.sip_uris.clone(), self.last_seq, exp)
            .with_alias(did, grant);
        self.spawn_publish(aor.to_string(), record.sign(&self.key));
    }

    fn spawn_publish(&self, subject: String, bytes: Vec<u8>) {
        let overlay = self.overlay.clone();
        tokio::spawn(async move {
            match overlay.publish(bytes).await {
                Ok(()) => tracing::debug!(%subject, "record published"),
                Err(e) => tracing::warn!(%subject, error = %e, "could not publish a record"),
            }
        });
    }

    /// Runs a lookup for the engine and hands the answer back.
    pub fn lookup(&self, request: LookupRequest, inbound: mpsc::Sender<Inbound>) {
        let overlay = self.overlay.clone();
        tokio::spawn(async move {
            let found = match overlay.lookup(&request.aor, request.fresh).await {
                Ok(r) => r.map(remote),
                Err(e) => {
                    tracing::debug!(aor = %request.aor, error = %e, "presence lookup failed");
                    None
                }
            };
            let _ = inbound.send(Inbound::Lookup(request.token, found)).await;
        });
    }
}

fn remote(record: PresenceRecord) -> RemotePresence {
    RemotePresence {
        node: record.node,
        sip: record.sip,
        seq: record.seq,
        exp: record.exp,
        alias: record.alias,
    }
}
