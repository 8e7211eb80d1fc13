//! Engine configuration: who we are on the network and how strict we are.

use std::net::SocketAddr;

use dots_registrar::RegistrarConfig;
use dots_sip::TransportKind;
use dots_txn::TimerConfig;

/// One SIP listening socket of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub transport: TransportKind,
    pub addr: SocketAddr,
    /// Host written into Via and Record-Route for this listener; defaults to
    /// the socket's IP (which must then not be a wildcard address).
    pub advertise: Option<String>,
}

impl Listener {
    /// The host other elements use to reach this listener.
    pub fn host(&self) -> String {
        match &self.advertise {
            Some(h) => h.clone(),
            None => match self.addr.ip() {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                ip => ip.to_string(),
            },
        }
    }
}

/// Everything the engine needs to know at start-up.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub listeners: Vec<Listener>,
    /// Extra domain names this node is authoritative for (besides the hosts
    /// of its listeners).
    pub domains: Vec<String>,
    /// Accept REGISTER, INVITE and MESSAGE without authentication.
    pub open: bool,
    /// Digest realm.
    pub realm: String,
    /// Digest algorithms offered in challenges, most preferred first
    /// ("MD5", "SHA-256"). RFC 8760 clients take the first they support,
    /// but many deployed ones (SIPp, JsSIP) read only the first challenge
    /// and know only MD5, and some (baresip 1.x) give up on any SHA-256
    /// challenge: hence MD5 first by default, and the knob.
    pub digest_algorithms: Vec<String>,
    pub registrar: RegistrarConfig,
    pub timers: TimerConfig,
    /// RFC 3261 Timer C: how long an INVITE branch may ring (ms).
    pub timer_c: u64,
    /// Nonce lifetime for digest challenges (ms).
    pub nonce_ttl: u64,
    /// Value of the Server / User-Agent header on locally generated messages.
    pub server_name: String,
    /// Answer REGISTERs without credentials (all REGISTERs on an open node)
    /// without keeping a transaction, as Kamailio's `save()` answers
    /// statelessly: a retransmission is answered again, with the same To
    /// tag, instead of from a copy held for Timer J (32 s over UDP).
    pub stateless_register: bool,
}

impl EngineConfig {
    /// A configuration for one UDP+TCP listener pair on `addr`.
    pub fn for_addr(addr: SocketAddr) -> EngineConfig {
        EngineConfig {
            listeners: vec![
                Listener {
                    transport: TransportKind::Udp,
                    addr,
                    advertise: None,
                },
                Listener {
                    transport: TransportKind::Tcp,
                    addr,
                    advertise: None,
                },
            ],
            domains: Vec::new(),
            open: false,
            realm: "dots".into(),
            digest_algorithms: vec!["MD5".into(), "SHA-256".into()],
            registrar: RegistrarConfig::default(),
            timers: TimerConfig::default(),
            timer_c: 180_000,
            nonce_ttl: 300_000,
            server_name: concat!("DOTS/", env!("CARGO_PKG_VERSION")).into(),
            stateless_register: true,
        }
    }
}
