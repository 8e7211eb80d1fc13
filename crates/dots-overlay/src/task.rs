//! The swarm task: owns the libp2p swarm, answers the handle's commands and applies
//! the record rules to everything that arrives from the network.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dots_records::{Millis, PresenceRecord};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, PublishError};
use libp2p::kad::{self, store::RecordStore, GetRecordOk, QueryId, QueryResult, Quorum};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};

use crate::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use crate::local::LocalView;
use crate::metrics::OverlayMetrics;
use crate::OverlayEvent;

/// How long a DHT lookup may take before it is answered with what it has.
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(3);
/// How often expired records are dropped from the local store.
const PURGE_INTERVAL: Duration = Duration::from_secs(5);

pub(crate) type Reply<T> = oneshot::Sender<T>;

pub(crate) enum Command {
    ListenAddrs(Reply<Vec<Multiaddr>>),
    Publish(Vec<u8>, Reply<anyhow::Result<()>>),
    /// Publish, then answer once `replicas` peers acknowledged the DHT put.
    PublishConfirmed(Vec<u8>, NonZeroUsize, Reply<anyhow::Result<()>>),
    Lookup {
        subject: String,
        fresh: bool,
        reply: Reply<anyhow::Result<Option<PresenceRecord>>>,
    },
    Metrics(Reply<OverlayMetrics>),
    Shutdown(Reply<()>),
}

/// What became of a verified record offered to the local store.
enum Merge {
    /// Stored: it superseded what we had (or we had nothing).
    New,
    /// The very record we hold.
    Duplicate,
    /// Refused, with the metrics reason.
    Refused(&'static str),
}

struct PendingLookup {
    key: [u8; 32],
    started: Instant,
    deadline: Instant,
    best: Option<(PresenceRecord, Vec<u8>, Option<PeerId>)>,
    reply: Reply<anyhow::Result<Option<PresenceRecord>>>,
}

pub(crate) struct Task {
    pub swarm: Swarm<Behaviour>,
    pub commands: mpsc::Receiver<Command>,
    pub events: mpsc::Sender<OverlayEvent>,
    pub max_ttl: Millis,
    pub topic: IdentTopic,
    pub metrics: OverlayMetrics,
    lookups: HashMap<QueryId, PendingLookup>,
    confirmations: HashMap<QueryId, Reply<anyhow::Result<()>>>,
    /// Mirror of the store for lookups answered outside this task.
    local: Arc<LocalView>,
}

/// The wall clock in ms since the UNIX epoch, the time base of record expiry.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

impl Task {
    pub fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<OverlayEvent>,
        max_ttl: Millis,
        local: Arc<LocalView>,
    ) -> Task {
        Task {
            swarm,
            commands,
            events,
            max_ttl,
            topic: crate::behaviour::presence_topic(),
            metrics: OverlayMetrics::default(),
            lookups: HashMap::new(),
            confirmations: HashMap::new(),
            local,
        }
    }

    pub async fn run(mut self) {
        let mut purge = tokio::time::interval(PURGE_INTERVAL);
        let shutdown = loop {
            let deadline = self.lookups.values().map(|l| l.deadline).min();
            let sleep = tokio::time::sleep_until(
                deadline.map_or_else(|| tokio::time::Instant::now() + PURGE_INTERVAL, Into::into),
            );
            tokio::select! {
                command = self.commands.recv() => match command {
                    None => break None,
                    Some(Command::Shutdown(reply)) => break Some(reply),
                    Some(command) => self.command(command),
                },
                event = self.swarm.select_next_some() => self.swarm_event(event),
                () = sleep, if deadline.is_some() => self.expire_lookups(),
                _ = purge.tick() => self.purge_expired(),
            }
        };
        let peer_id = *self.swarm.local_peer_id();
        for (_, lookup) in self.lookups.drain() {
            let _ = lookup.reply.send(Err(anyhow::anyhow!("overlay stopped")));
        }
        drop(self.swarm);
        tracing::info!(%peer_id, "overlay stopped");
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.listen_addrs());
            }
            Command::Publish(bytes, reply) => {
                let _ = reply.send(self.publish(bytes, Quorum::One).map(|_| ()));
            }
            Command::PublishConfirmed(bytes, replicas, reply) => {
                match self.publish(bytes, Quorum::N(replicas)) {
                    Ok(query) => {
                        self.confirmations.insert(query, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Lookup {
                subject,
                fresh,
                reply,
            } => self.lookup(&subject, fresh, reply),
            Command::Metrics(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Command::Shutdown(_) => unreachable!("handled by the loop"),
        }
    }

    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        let me = *self.swarm.local_peer_id();
        self.swarm
            .listeners()
            .map(|a| a.clone().with(Protocol::P2p(me)))
            .collect()
    }

    fn snapshot(&mut self) -> OverlayMetrics {
        let mut m = self.metrics.clone();
        m.peers_connected = self.swarm.connected_peers().count() as u64;
        let topic = self.topic.hash();
        m.gossip_peers = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, topics)| topics.contains(&&topic))
            .count() as u64;
        m.records_stored = self.swarm.behaviour_mut().kad.store_mut().records().count() as u64;
        self.local.add_lookups_to(&mut m);
        m
    }

    fn publish(&mut self, bytes: Vec<u8>, quorum: Quorum) -> anyhow::Result<QueryId> {
        let now = now_ms();
        let record = PresenceRecord::verify(&bytes, None, now, self.max_ttl)
            .map_err(|e| anyhow::anyhow!("refusing to publish: {e}"))?;
        match self.merge(&record, &bytes, None, now) {
            Merge::New | Merge::Duplicate => {}
            Merge::Refused(reason) => {
                anyhow::bail!("refusing to publish: {reason} (a newer record is stored)")
            }
        }
        let kad_record = kad_record(&record, bytes.clone(), None, now);
        let behaviour = self.swarm.behaviour_mut();
        let query = behaviour.kad.put_record(kad_record, quorum)?;
        match behaviour.gossipsub.publish(self.topic.clone(), bytes) {
            Ok(_) => {}
            Err(e @ (PublishError::Duplicate | PublishError::NoPeersSubscribedToTopic)) => {
                tracing::debug!(subject = %record.subject, "presence not gossiped: {e}");
            }
            Err(e) => tracing::warn!(subject = %record.subject, "presence not gossiped: {e}"),
        }
        self.metrics.published += 1;
        tracing::debug!(subject = %record.subject, seq = record.seq, ?query, "presence published");
        Ok(query)
    }

    fn lookup(
        &mut self,
        subject: &str,
        fresh: bool,
        reply: Reply<anyhow::Result<Option<PresenceRecord>>>,
    ) {
        let started = Instant::now();
        let key = dots_records::presence_key(subject);
        if !fresh {
            if let Some((record, _)) = self.stored(&key, now_ms()) {
                self.metrics.observe_lookup(started.elapsed(), true);
                let _ = reply.send(Ok(Some(record)));
                return;
            }
        }
        let query = self
            .swarm
            .behaviour_mut()
            .kad
            .get_record(kad::RecordKey::new(&key));
        self.lookups.insert(
            query,
            PendingLookup {
                key,
                started,
                deadline: started + LOOKUP_DEADLINE,
                best: None,
                reply,
            },
        );
    }

    /// The valid stored record under `key`, if any. Stored values were verified when
    /// they were stored, so only the expiry is checked again.
    fn stored(&mut self, key: &[u8; 32], now: Millis) -> Option<(PresenceRecord, Vec<u8>)> {
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let kad_key = kad::RecordKey::new(key);
        let value = store.get(&kad_key)?.value.clone();
        match PresenceRecord::decode_unverified(&value) {
            Ok(record) if record.exp > now => Some((record, value)),
            _ => {
                store.remove(&kad_key);
                self.local.remove(key);
                None
            }
        }
    }

    /// Whether `bytes` are exactly the record stored under its key (and `key`, when
    /// the network named one, is that key).
    fn is_stored_copy(&mut self, key: Option<&[u8]>, bytes: &[u8], now: Millis) -> bool {
        let Ok(record) = PresenceRecord::decode_unverified(bytes) else {
            return false;
        };
        let record_key = record.key();
        if key.is_some_and(|k| k != record_key) {
            return false;
        }
        self.stored(&record_key, now)
            .is_some_and(|(_, stored)| stored == bytes)
    }

    /// Applies the merge rule to a verified record and stores it if it wins.
    fn merge(
        &mut self,
        record: &PresenceRecord,
        bytes: &[u8],
        publisher: Option<PeerId>,
        now: Millis,
    ) -> Merge {
        let key = record.key();
        if let Some((stored, _)) = self.stored(&key, now) {
            if stored == *record {
                return Merge::Duplicate;
            }
            if !record.supersedes(&stored) {
                return Merge::Refused("stale");
            }
        }
        let kad_record = kad_record(record, bytes.to_vec(), publisher, now);
        match self.swarm.behaviour_mut().kad.store_mut().put(kad_record) {
            Ok(()) => {
                self.local.insert(record.clone());
                Merge::New
            }
            Err(e) => {
                tracing::warn!(subject = %record.subject, "record not stored: {e}");
                Merge::Refused("store_full")
            }
        }
    }

    /// A record from the network (gossip, DHT put, DHT get): verify, merge, report.
    fn offer(
        &mut self,
        key: Option<&[u8]>,
        bytes: &[u8],
        from: Option<PeerId>,
        via: &'static str,
    ) -> Merge {
        let now = now_ms();
        if self.is_stored_copy(key, bytes, now) {
            // The same bytes again (the DHT put after the gossip, or the other way
            // round): verified when stored, nothing to learn.
            return Merge::Duplicate;
        }
        let record = match PresenceRecord::verify(bytes, key, now, self.max_ttl) {
            Ok(record) => record,
            Err(e) => {
                tracing::debug!(?from, via, "record refused: {e}");
                self.metrics.refuse(e.reason());
                return Merge::Refused(e.reason());
            }
        };
        let merge = self.merge(&record, bytes, from, now);
        match merge {
            Merge::New => {
                tracing::debug!(?from, via, subject = %record.subject, seq = record.seq, "presence learned");
                self.metrics.records_accepted += 1;
                self.emit(OverlayEvent::Presence(record));
            }
            Merge::Duplicate => {}
            Merge::Refused(reason) => {
                tracing::debug!(?from, via, subject = %record.subject, seq = record.seq, "record refused: {reason}");
                self.metrics.refuse(reason);
            }
        }
        merge
    }

    fn emit(&mut self, event: OverlayEvent) {
        match self.events.try_send(event) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("overlay event dropped: receiver is not keeping up");
            }
        }
    }

    fn swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.kad_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.gossip_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => self.identify_event(event),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "overlay listening");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                tracing::debug!(%peer_id, addr = %endpoint.get_remote_address(), "peer connected");
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                tracing::debug!(%peer_id, ?cause, "peer disconnected");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, "dial failed: {error}");
            }
            _ => {}
        }
    }

    fn identify_event(&mut self, event: identify::Event) {
        if let identify::Event::Received { peer_id, info, .. } = event {
            // Kademlia learns no dialable address from an inbound connection: take the
            // peer's own listen addresses, if it speaks our DHT.
            if info.protocols.contains(&KAD_PROTOCOL) {
                let kad = &mut self.swarm.behaviour_mut().kad;
                for addr in info.listen_addrs {
                    kad.add_address(&peer_id, addr);
                }
            }
        }
    }

    fn gossip_event(&mut self, event: gossipsub::Event) {
        if let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = event
        {
            let acceptance = if message.topic != self.topic.hash() {
                MessageAcceptance::Reject
            } else {
                match self.offer(None, &message.data, None, "gossip") {
                    Merge::New => MessageAcceptance::Accept,
                    // Valid but old or already known: do not forward, do not penalise.
                    Merge::Duplicate | Merge::Refused("stale" | "store_full") => {
                        MessageAcceptance::Ignore
                    }
                    Merge::Refused(_) => MessageAcceptance::Reject,
                }
            };
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&message_id, &propagation_source, acceptance);
        }
    }

    fn kad_event(&mut self, event: kad::Event) {
        match event {
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => {
                let key = record.key.to_vec();
                self.offer(Some(&key), &record.value, Some(source), "dht put");
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result: QueryResult::GetRecord(result),
                ..
            } => self.get_record_progress(id, result),
            kad::Event::OutboundQueryProgressed {
                id,
                result: QueryResult::PutRecord(result),
                stats,
                ..
            } => {
                match &result {
                    Ok(ok) => tracing::debug!(key = ?ok.key, ?stats, "presence put to the DHT"),
                    Err(e) => tracing::debug!("presence put: {e}"),
                }
                if let Some(reply) = self.confirmations.remove(&id) {
                    let answer = match result {
                        Ok(_) => Ok(()),
                        Err(e) => Err(anyhow::anyhow!("DHT put: {e}")),
                    };
                    let _ = reply.send(answer);
                }
            }
            kad::Event::OutboundQueryProgressed {
                result: QueryResult::Bootstrap(result),
                ..
            } => tracing::debug!(?result, "kademlia bootstrap"),
            _ => {}
        }
    }

    fn get_record_progress(&mut self, id: QueryId, result: kad::GetRecordResult) {
        let Some(lookup) = self.lookups.get(&id) else {
            return;
        };
        let key = lookup.key;
        match result {
            Ok(GetRecordOk::FoundRecord(found)) => {
                let now = now_ms();
                let bytes = found.record.value;
                let record = match PresenceRecord::verify(&bytes, Some(&key), now, self.max_ttl) {
                    Ok(record) => record,
                    Err(e) => {
                        tracing::debug!(peer = ?found.peer, "lookup: record refused: {e}");
                        self.metrics.refuse(e.reason());
                        return;
                    }
                };
                let lookup = self.lookups.get_mut(&id).expect("present above");
                if lookup
                    .best
                    .as_ref()
                    .is_none_or(|(b, _, _)| record.supersedes(b))
                {
                    lookup.best = Some((record, bytes, found.peer));
                }
                // The local copy comes first (peer None); one valid answer from the
                // network is enough.
                if found.peer.is_some() {
                    if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                        query.finish();
                    }
                    self.finish_lookup(id);
                }
            }
            Ok(GetRecordOk::FinishedWithNoAdditionalRecord { .. }) | Err(_) => {
                self.finish_lookup(id);
            }
        }
    }

    fn finish_lookup(&mut self, id: QueryId) {
        let Some(lookup) = self.lookups.remove(&id) else {
            return;
        };
        let found = lookup.best.map(|(record, bytes, peer)| {
            if peer.is_some() {
                // Learned from the network: keep it if it beats what we hold.
                let now = now_ms();
                if let Merge::New = self.merge(&record, &bytes, peer, now) {
                    self.metrics.records_accepted += 1;
                    self.emit(OverlayEvent::Presence(record.clone()));
                }
            }
            record
        });
        self.metrics
            .observe_lookup(lookup.started.elapsed(), found.is_some());
        let _ = lookup.reply.send(Ok(found));
    }

    fn expire_lookups(&mut self) {
        let now = Instant::now();
        let due: Vec<QueryId> = self
            .lookups
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                query.finish();
            }
            self.finish_lookup(id);
        }
    }

    fn purge_expired(&mut self) {
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let now = Instant::now();
        let expired: Vec<kad::RecordKey> = store
            .records()
            .filter(|r| r.is_expired(now))
            .map(|r| r.key.clone())
            .collect();
        for key in &expired {
            store.remove(key);
            if let Ok(key) = <[u8; 32]>::try_from(key.to_vec()) {
                self.local.remove(&key);
            }
        }
        if !expired.is_empty() {
            tracing::debug!(count = expired.len(), "expired records dropped");
        }
    }
}

/// The Kademlia record for a verified presence record: expires with the record
/// itself, not after Kademlia's default TTL.
fn kad_record(
    record: &PresenceRecord,
    value: Vec<u8>,
    publisher: Option<PeerId>,
    now: Millis,
) -> kad::Record {
    kad::Record {
        key: kad::RecordKey::new(&record.key()),
        value,
        publisher,
        expires: Some(Instant::now() + Duration::from_millis(record.exp.saturating_sub(now))),
    }
}
