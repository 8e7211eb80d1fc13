//! Start-up, the engine loop, and shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use dots_proxy::{Engine, EngineConfig, Listener};
use dots_registrar::{Change, RegistrarConfig};
use dots_sip::TransportKind;
use dots_store::{AccountStore, BindingStore};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use crate::config::NodeConfig;
use crate::federation::Federation;
use crate::http::{self, Snapshot, SnapshotRequest};
use crate::names::Names;
use crate::provider::{self, AccountsUpdate, Provider, ServiceInfo};
use crate::transport::{self, Connections, Inbound, SharedConnections};
use crate::udp;
use crate::ws;
use axum::serve::ListenerExt;

/// How long shutdown waits for in-flight transactions.
const DRAIN_TIME: Duration = Duration::from_secs(2);
/// Bindings handed to the engine at a time while restoring at start-up.
const RESTORE_CHUNK: usize = 4096;

/// The node's clock: wall-clock milliseconds at start plus monotonic time
/// since, so engine time never jumps backwards.
struct Clock {
    wall_at_start: u64,
    start: Instant,
}

impl Clock {
    fn new() -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            wall_at_start: wall,
            start: Instant::now(),
        }
    }
    fn now(&self) -> u64 {
        self.wall_at_start + self.start.elapsed().as_millis() as u64
    }
    fn instant_at(&self, t: u64) -> tokio::time::Instant {
        let offset = t.saturating_sub(self.wall_at_start);
        tokio::time::Instant::from_std(self.start + Duration::from_millis(offset))
    }
}

/// Runs a node until `shutdown` completes, then drains and flushes.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    tracing::info!(data_dir = %data_dir.display(), "starting DOTS node");

    let store = BindingStore::open(&data_dir).with_context(|| {
        format!(
            "cannot open {}/node.redb (is another node using this data directory?)",
            data_dir.display()
        )
    })?;
    let accounts = AccountStore::new(&data_dir);

    // Sockets first, so a port conflict fails before anything else happens.
    let sip_addr = config.sip.listen;
    let (udp, udp_buffer) = transport::bind_udp(sip_addr)
        .with_context(|| format!("cannot bind SIP UDP socket on {sip_addr}"))?;
    tracing::debug!(bytes = udp_buffer, "SIP UDP receive buffer");
    let tcp = TcpListener::bind(sip_addr)
        .await
        .with_context(|| format!("cannot bind SIP TCP socket on {sip_addr}"))?;
    // One certificate for SIP over TLS and HTTPS: the configured one, or a
    // self-signed one generated once in DATA_DIR/tls.
    let tls_addrs: Vec<SocketAddr> = config
        .sip
        .tls_listen
        .into_iter()
        .chain(config.http.tls_listen)
        .collect();
    let tls_config = if tls_addrs.is_empty() {
        None
    } else {
        let names: Vec<String> = tls_addrs
            .iter()
            .map(|a| a.ip().to_string())
            .chain(config.sip.advertise.clone())
            .chain(config.sip.domains.iter().cloned())
            .collect();
        Some(crate::tls::server_config(
            config.sip.tls_cert.as_deref(),
            config.sip.tls_key.as_deref(),
            &data_dir,
            &names,
        )?)
    };
    let tls = match (config.sip.tls_listen, &tls_config) {
        (Some(addr), Some((server_config, cert_path))) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot bind SIP TLS socket on {addr}"))?;
            Some((
                listener,
                tokio_rustls::TlsAcceptor::from(server_config.clone()),
                addr,
                cert_path.clone(),
            ))
        }
        _ => None,
    };
    let http_listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot bind HTTP on {}", config.http.listen))?;
    let http_addr: SocketAddr = http_listener.local_addr()?;
    let https = match (config.http.tls_listen, &tls_config) {
        (Some(addr), Some((server_config, cert_path))) => {
            let mut https_config = (**server_config).clone();
            https_config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot bind HTTPS on {addr}"))?;
            let addr = listener.local_addr()?;
            Some((
                listener,
                tokio_rustls::TlsAcceptor::from(Arc::new(https_config)),
                addr,
                cert_path.clone(),
            ))
        }
        _ => None,
    };
    let stun = match config.stun.listen {
        Some(addr) => {
            let socket = UdpSocket::bind(addr)
                .await
                .with_context(|| format!("cannot bind STUN socket on {addr}"))?;
            Some(Arc::new(socket))
        }
        None => None,
    };

    if sip_addr.ip().is_unspecified() && config.sip.advertise.is_none() {
        anyhow::bail!(
            "SIP listens on the wildcard address {sip_addr}: set sip.advertise (the host or IP clients reach) in the config"
        );
    }
    let mut listeners = vec![
        Listener {
            transport: TransportKind::Udp,
            addr: sip_addr,
            advertise: config.sip.advertise.clone(),
        },
        Listener {
            transport: TransportKind::Tcp,
            addr: sip_addr,
            advertise: config.sip.advertise.clone(),
        },
    ];
    if let Some((_, _, addr, _)) = &tls {
        listeners.push(Listener {
            transport: TransportKind::Tls,
            addr: *addr,
            advertise: config.sip.advertise.clone(),
        });
    }
    // SIP over WebSocket (RFC 7118) on the HTTP and HTTPS listeners.
    listeners.push(Listener {
        transport: TransportKind::Ws,
        addr: http_addr,
        advertise: config.sip.advertise.clone(),
    });
    if let Some((_, _, addr, _)) = &https {
        listeners.push(Listener {
            transport: TransportKind::Wss,
            addr: *addr,
            advertise: config.sip.advertise.clone(),
        });
    }
    let mut engine_config = EngineConfig::for_addr(sip_addr);
    engine_config.listeners = listeners;
    engine_config.domains = config.sip.domains.clone();
    engine_config.open = config.sip.open;
    engine_config.stateless_register = config.registrar.stateless;
    engine_config.realm = config.sip.realm.clone();
    for alg in &config.sip.digest_algorithms {
        if !["SHA-256", "MD5"]
            .iter()
            .any(|a| a.eq_ignore_ascii_case(alg))
        {
            anyhow::bail!("unsupported digest algorithm {alg:?} (use SHA-256 and/or MD5)");
        }
    }
    if config.sip.digest_algorithms.is_empty() {
        anyhow::bail!("no digest algorithm configured: offer at least one of SHA-256, MD5");
    }
    engine_config.digest_algorithms = config.sip.digest_algorithms.clone();
    engine_config.registrar = RegistrarConfig {
        min_expires: config.registrar.min_expires,
        max_expires: config.registrar.max_expires,
        default_expires: config.registrar.default_expires,
        max_contacts_per_aor: config.registrar.max_contacts_per_aor,
    };
    // The host the engine writes in Via and Record-Route, for the SIP URIs
    // this node publishes too.
    let sip_host = engine_config.listeners[0].host();
    let mut engine = Engine::new(engine_config, rand_seed());
    let (inbound_tx, mut inbound_rx) = mpsc::channel::<Inbound>(transport::INBOUND_QUEUE);

    let sip_uris = vec![
        format!("sip:{sip_host}:{};transport=tcp", sip_addr.port()),
        format!("sip:{sip_host}:{};transport=udp", sip_addr.port()),
    ];
    let mut federation = if config.p2p.listen.is_empty() {
        None
    } else {
        let f =
            Federation::start(&config.p2p, &data_dir, sip_uris.clone(), inbound_tx.clone()).await?;
        engine.enable_overlay(f.peer_id_bytes());
        tracing::info!(peer_id = %f.overlay.peer_id(), did = %f.did(), "overlay started");
        for addr in f.overlay.listen_addrs().await {
            tracing::info!("overlay listening on {addr}");
        }
        Some(f)
    };

    let clock = Clock::new();
    // Streamed from the store in chunks: a million bindings never sit in
    // memory twice.
    let (loaded_at, mut live) = (clock.now(), 0usize);
    let mut chunk = Vec::with_capacity(RESTORE_CHUNK);
    store
        .for_each(|b| {
            live += usize::from(b.expires_at > loaded_at);
            chunk.push(b);
            if chunk.len() == RESTORE_CHUNK {
                engine.restore_bindings(std::mem::replace(
                    &mut chunk,
                    Vec::with_capacity(RESTORE_CHUNK),
                ));
            }
        })
        .context("cannot load registrations from the store")?;
    engine.restore_bindings(chunk);
    engine.announce_online(clock.now());
    let account_tables = provider::engine_tables(
        &accounts.load().context("cannot read accounts")?,
        &config.sip.realm,
    );
    let account_count = account_tables.accounts.len();
    engine.set_accounts(account_tables.accounts);
    engine.set_account_owners(account_tables.owners);
    let handles = provider::Handles::default();
    *handles.write().unwrap_or_else(|e| e.into_inner()) = account_tables.handles;
    let mut accounts_stamp = accounts.stamp();
    tracing::info!(
        registrations = live,
        accounts = account_count,
        "state loaded"
    );

    for t in ["udp", "tcp"] {
        tracing::info!("SIP listening on {t}:{sip_addr}");
    }
    if let Some((_, _, addr, cert)) = &tls {
        tracing::info!(certificate = %cert.display(), "SIP listening on tls:{addr}");
    }
    tracing::info!("HTTP listening on http://{http_addr} (/healthz, /metrics)");
    let mut ws_urls = vec![format!(
        "ws://{}:{}{}",
        ws::url_host(http_addr, config.sip.advertise.as_deref(), &sip_host),
        http_addr.port(),
        ws::PATH
    )];
    if let Some((_, _, addr, cert)) = &https {
        tracing::info!(certificate = %cert.display(), "HTTPS listening on https://{addr}");
        ws_urls.push(format!(
            "wss://{}:{}{}",
            ws::url_host(*addr, config.sip.advertise.as_deref(), &sip_host),
            addr.port(),
            ws::PATH
        ));
    }
    for url in &ws_urls {
        tracing::info!("SIP over WebSocket on {url}");
    }
    let mut ice_servers = Vec::new();
    if let Some(socket) = &stun {
        let addr = socket.local_addr()?;
        tracing::info!("STUN listening on udp:{addr}");
        ice_servers.push(ws::IceServer {
            urls: vec![format!(
                "stun:{}:{}",
                ws::url_host(addr, config.sip.advertise.as_deref(), &sip_host),
                addr.port()
            )],
        });
    }
    let webrtc = ws::WebRtcInfo {
        ws: ws_urls,
        ice_servers,
        domain: config
            .sip
            .domains
            .first()
            .map(|d| d.to_ascii_lowercase())
            .unwrap_or_else(|| sip_host.clone()),
        realm: config.sip.realm.clone(),
    };
    let domains: Vec<String> = std::iter::once(sip_addr.ip().to_string())
        .chain(config.sip.advertise.clone())
        .chain(config.sip.domains.iter().cloned())
        .collect();
    tracing::info!(realm = %config.sip.realm, "local domains: {}", domains.join(", "));
    if config.sip.open {
        tracing::warn!("OPEN MODE: registrations and calls are accepted WITHOUT authentication; use only for development and benchmarks");
    }

    // Plumbing.
    let (query_tx, mut query_rx) = mpsc::channel::<SnapshotRequest>(64);
    let (accounts_tx, mut accounts_rx) = mpsc::channel::<AccountsUpdate>(4);
    let reloader = provider::spawn_loader(
        data_dir.clone(),
        config.sip.realm.clone(),
        handles.clone(),
        accounts_tx,
    );
    // The names service publishes the node key; a node without the overlay
    // loads it only when it has a domain to publish it under.
    let names_domain = config.sip.domains.first().map(|d| d.to_ascii_lowercase());
    let node_did = match (&federation, &names_domain) {
        (Some(f), _) => Some(f.did()),
        (None, Some(_)) => Some(
            dots_records::NodeKey::load_or_create(&data_dir)
                .with_context(|| {
                    format!(
                        "cannot load or create the node key in {}",
                        data_dir.display()
                    )
                })?
                .did(),
        ),
        (None, None) => None,
    };
    let provider = Provider::new(
        data_dir.clone(),
        ServiceInfo {
            realm: config.sip.realm.clone(),
            domain: names_domain.clone().unwrap_or_else(|| sip_host.clone()),
            registrar: format!("sip:{sip_host}:{}", sip_addr.port()),
        },
        federation.as_ref().map(|f| f.peer_id_bytes()),
        reloader.clone(),
        handles.clone(),
    );
    let names = Names {
        domain: names_domain,
        node_did,
        sip: sip_uris,
        handles,
    };
    let connections: SharedConnections = Arc::new(Mutex::new(Connections::default()));
    let mut tasks = Vec::new();
    // The engine loop takes datagrams itself, in batches, and parses them
    // where it handles them: handing each one over from a receiving thread
    // cost two thread wake-ups per handful of datagrams, more than the
    // parse it moved off the engine.
    let udp_fd = udp.as_raw_fd();
    let udp_ready = UdpSocket::from_std(udp).context("cannot use the SIP UDP socket")?;
    let mut udp_in = udp::RecvBatch::default();
    let mut udp_out = udp::SendBatch::default();
    tasks.push(tokio::spawn(transport::accept_loop(
        tcp,
        None,
        connections.clone(),
        inbound_tx.clone(),
        config.sip.max_connections,
    )));
    if let Some((listener, acceptor, _, _)) = tls {
        tasks.push(tokio::spawn(transport::accept_loop(
            listener,
            Some(acceptor),
            connections.clone(),
            inbound_tx.clone(),
            config.sip.max_connections,
        )));
    }
    let app_state = http::AppState {
        queries: query_tx,
        identity: federation.as_ref().map(|f| http::Identity {
            overlay: f.overlay.clone(),
            did: f.did(),
            sip: f.sip_uris.clone(),
        }),
        provider: Arc::new(provider),
        names: Arc::new(names),
        sip_ws: Some(ws::SipWebSocket {
            connections: connections.clone(),
            inbound: inbound_tx.clone(),
            max_connections: config.sip.max_connections,
        }),
        webrtc: Arc::new(webrtc),
    };
    let router = http::router(app_state);
    if let Some((listener, acceptor, _, _)) = https {
        let app = router
            .clone()
            .layer(axum::Extension(ws::Secure(true)))
            .into_make_service_with_connect_info::<SocketAddr>();
        let listener = crate::https::TlsListener::spawn(listener, acceptor)?.tap_io(|_| {});
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "HTTPS server stopped");
            }
        }));
    }
    let app = router
        .layer(axum::Extension(ws::Secure(false)))
        .into_make_service_with_connect_info::<SocketAddr>();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(http_listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    }));
    if let Some(socket) = stun {
        tasks.push(tokio::spawn(crate::stun::serve(socket)));
    }
    let (store_tx, store_thread) = spawn_store_writer(store);

    tokio::pin!(shutdown);
    let mut draining_until: Option<tokio::time::Instant> = None;
    let mut account_check = tokio::time::interval(Duration::from_secs(1));
    account_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let far = Duration::from_secs(3600);
    let mut republish = tokio::time::interval(
        federation
            .as_ref()
            .map(|f| f.republish_every())
            .unwrap_or(far),
    );
    republish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    republish.tick().await;
    // Alias records (user names on this node that name a DID) go out at start, after
    // every change to the accounts, and with each re-publication.
    let mut aliases_due = true;
    loop {
        let wake = engine
            .poll_timeout()
            .map(|t| clock.instant_at(t))
            .unwrap_or_else(|| tokio::time::Instant::now() + far);
        let wake = match draining_until {
            Some(d) => wake.min(d),
            None => wake,
        };
        // Not biased: under a flood on one source (UDP, the streams'
        // queue) the others, timers included, still take their turns.
        tokio::select! {
            _ = &mut shutdown, if draining_until.is_none() => {
                tracing::info!("shutting down: finishing in-flight transactions");
                draining_until = Some(tokio::time::Instant::now() + DRAIN_TIME);
            }
            Some(msg) = inbound_rx.recv() => {
                handle_inbound(&mut engine, clock.now(), msg);
                // Take what else is already queued before flushing, so bursts
                // cost one persistence batch.
                for _ in 0..256 {
                    match inbound_rx.try_recv() {
                        Ok(msg) => handle_inbound(&mut engine, clock.now(), msg),
                        Err(_) => break,
                    }
                }
            }
            ready = udp_ready.readable() => {
                if ready.is_ok() {
                    receive_udp(&udp_ready, &mut udp_in, &mut udp_out, &mut engine, &clock);
                }
            }
            Some(reply) = query_rx.recv() => {
                let (aors, contacts) = engine.registrations();
                let (server_transactions, client_transactions) = engine.transactions();
                let _ = reply.send(Snapshot {
                    stats: engine.stats().clone(),
                    aors,
                    contacts,
                    server_transactions,
                    client_transactions,
                    connections: connections.lock().expect("connection table lock").len(),
                    accounts: engine.account_count(),
                });
            }
            Some(update) = accounts_rx.recv() => {
                tracing::info!(accounts = update.accounts.len(), owners = update.owners.len(), "accounts reloaded");
                engine.set_accounts(update.accounts);
                engine.set_account_owners(update.owners);
                aliases_due = true;
                for done in update.done {
                    let _ = done.send(());
                }
            }
            _ = account_check.tick() => {
                let stamp = accounts.stamp();
                if stamp != accounts_stamp {
                    accounts_stamp = stamp;
                    reloader.request();
                }
            }
            _ = republish.tick(), if federation.is_some() => {
                if let Some(f) = federation.as_mut() {
                    let now = clock.now();
                    for aor in engine.online_aors() {
                        f.publish(&aor, true, engine.presence_grant(&aor), now);
                    }
                }
                aliases_due = true;
            }
            _ = tokio::time::sleep_until(wake) => {
                engine.handle_timeout(clock.now());
            }
        }
        while let Some(t) = engine.poll_transmit() {
            transport::dispatch(&mut udp_out, &connections, &inbound_tx, t.dest, t.bytes);
        }
        udp_out.flush(udp_fd);
        if let Some(f) = federation.as_mut() {
            if std::mem::take(&mut aliases_due) {
                let now = clock.now();
                for (aor, did, grant) in engine.aliases() {
                    f.publish_alias(&aor, &did, grant, now);
                }
            }
            while let Some(lookup) = engine.poll_lookup() {
                f.lookup(lookup, inbound_tx.clone());
            }
            let now = clock.now();
            for change in engine.drain_presence_changes() {
                f.publish(&change.aor, change.online, change.grant, now);
            }
        }
        let changes = engine.drain_binding_changes();
        if !changes.is_empty() {
            let _ = store_tx.send(changes);
        }
        if let Some(deadline) = draining_until {
            let (s, c) = engine.transactions();
            if tokio::time::Instant::now() >= deadline || s + c == 0 {
                break;
            }
        }
    }

    for t in &tasks {
        t.abort();
    }
    inbound_rx.close();
    drop(store_tx);
    let _ = tokio::task::spawn_blocking(move || store_thread.join()).await;
    tracing::info!("store flushed; node stopped");
    Ok(())
}

/// Datagrams one turn of the engine loop takes at most, so that the other
/// sources are not kept waiting behind a flood.
const UDP_PER_TURN: usize = 256;

/// Hands what is queued on the SIP UDP socket to the engine, up to
/// [`UDP_PER_TURN`] datagrams. Readiness is cleared only when the socket
/// is found empty, so a flood left queued brings the loop straight back.
fn receive_udp(
    socket: &UdpSocket,
    batch: &mut udp::RecvBatch,
    replies: &mut udp::SendBatch,
    engine: &mut Engine,
    clock: &Clock,
) {
    let fd = socket.as_raw_fd();
    let mut headers = udp::RecvHeaders::default();
    let mut taken = 0;
    while taken < UDP_PER_TURN {
        match socket.try_io(tokio::io::Interest::READABLE, || {
            batch.recv(fd, &mut headers)
        }) {
            Ok(n) => {
                for i in 0..n {
                    if let Some((data, from)) = batch.datagram(i) {
                        if let Some(msg) = transport::udp_inbound(data, from, replies) {
                            handle_inbound(engine, clock.now(), msg);
                        }
                    }
                }
                taken += n.max(1);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => {
                // ICMP errors surface here on Linux; they do not stop the loop.
                tracing::debug!(error = %e, "UDP receive error");
                taken += 1;
            }
        }
    }
}

fn handle_inbound(engine: &mut Engine, now: u64, msg: Inbound) {
    match msg {
        Inbound::Message(Ok(m), peer) => engine.handle_message(now, m, peer),
        Inbound::Request(req, reply_to) => engine.handle_stamped_request(now, *req, reply_to),
        Inbound::Message(Err(e), peer) => {
            tracing::debug!(%peer, error = %e, "malformed message");
            engine.handle_parse_error(now, e, peer)
        }
        Inbound::Unreachable(peer) => engine.transport_error(now, peer),
        Inbound::Lookup(token, found) => engine.lookup_result(now, token, found),
        Inbound::Presence(subject, presence) => engine.remote_presence(&subject, presence),
        Inbound::FlowClosed(peer) => engine.flow_closed(now, peer),
    }
}

/// Persists registration changes on a thread of its own, coalescing bursts
/// into one write transaction: at most one every [`STORE_COMMIT_INTERVAL`],
/// since each is a durable commit (an fsync) and the 200 OK has gone out
/// before the change is persisted anyway. Folds the journal when the
/// channel closes, so that the next start has nothing to replay.
fn spawn_store_writer(
    store: BindingStore,
) -> (
    std::sync::mpsc::Sender<Vec<Change>>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<Change>>();
    let handle = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let mut last_commit = std::time::Instant::now() - STORE_COMMIT_INTERVAL;
            while let Ok(mut batch) = rx.recv() {
                let due = last_commit + STORE_COMMIT_INTERVAL;
                let now = std::time::Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                while let Ok(more) = rx.try_recv() {
                    batch.extend(more);
                }
                last_commit = std::time::Instant::now();
                if let Err(e) = store.apply(&batch) {
                    tracing::error!(error = %e, changes = batch.len(), "could not persist registrations");
                }
            }
            if let Err(e) = store.compact() {
                tracing::warn!(error = %e, "could not fold the registration journal at shutdown");
            }
        })
        .expect("spawning the store writer thread");
    (tx, handle)
}

/// Shortest time between two commits of registration changes.
const STORE_COMMIT_INTERVAL: Duration = Duration::from_millis(20);

fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS; mix in time for good measure.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
