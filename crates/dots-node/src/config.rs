//! Typed node configuration: a TOML file with a section per subsystem,
//! overridden by command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The whole node configuration. Every field has a default, so an empty
/// file (or no file) runs a node on 127.0.0.1.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the node keeps its state (registrations, accounts, TLS key).
    pub data_dir: PathBuf,
    pub sip: SipConfig,
    pub http: HttpConfig,
    pub registrar: RegistrarSection,
    pub p2p: P2pConfig,
    pub stun: StunConfig,
}

/// The STUN server (RFC 8489 Binding) that tells WebRTC clients their
/// public address.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StunConfig {
    /// UDP listen address, e.g. "127.0.0.1:3478"; off when absent. (The SIP
    /// UDP port answers STUN too, as RFC 5626 keep-alives.)
    pub listen: Option<SocketAddr>,
}

/// The overlay that joins nodes into one network.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct P2pConfig {
    /// Overlay listen multiaddrs, e.g. "/ip4/127.0.0.1/tcp/7060"; none = the
    /// node runs alone.
    pub listen: Vec<String>,
    /// Multiaddrs (with /p2p/PEERID) of nodes to join through.
    pub bootstrap: Vec<String>,
    /// Lifetime of this node's presence records, in seconds; they are
    /// re-published when a third of it is left.
    pub record_ttl: u64,
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            record_ttl: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// UDP and TCP listen address.
    pub listen: SocketAddr,
    /// TLS listen address (disabled when absent).
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain and key for TLS; a self-signed pair is
    /// generated in the data directory when absent.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Host name or IP written in Via and Record-Route (required when
    /// listening on a wildcard address).
    pub advertise: Option<String>,
    /// Domains this node is authoritative for, besides its listen addresses.
    pub domains: Vec<String>,
    /// Accept registrations and calls without authentication (development
    /// and benchmarks only).
    pub open: bool,
    /// Digest authentication realm.
    pub realm: String,
    /// Digest algorithms offered, most preferred first ("MD5", "SHA-256").
    pub digest_algorithms: Vec<String>,
    /// Maximum simultaneous TCP/TLS connections.
    pub max_connections: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address of the HTTP service (/healthz, /metrics, the API, the
    /// web softphone, and SIP over WebSocket at /sip).
    pub listen: SocketAddr,
    /// HTTPS listen address (the same service, with SIP over secure
    /// WebSocket at /sip), with the certificate of `sip.tls_cert` or the
    /// generated one; off when absent.
    pub tls_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrarSection {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_contacts_per_aor: usize,
    /// Answer REGISTERs without credentials (every REGISTER on an open
    /// node) without transaction state, like Kamailio's `save()`; false
    /// keeps each answer for retransmissions (Timer J, 32 s over UDP).
    pub stateless: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("dots-data"),
            sip: SipConfig::default(),
            http: HttpConfig::default(),
            registrar: RegistrarSection::default(),
            p2p: P2pConfig::default(),
            stun: StunConfig::default(),
        }
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: "127.0.0.1:5060".parse().expect("valid literal"),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            advertise: None,
            domains: Vec::new(),
            open: false,
            realm: "dots".into(),
            digest_algorithms: vec!["MD5".into(), "SHA-256".into()],
            max_connections: 10_000,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".parse().expect("valid literal"),
            tls_listen: None,
        }
    }
}

impl Default for RegistrarSection {
    fn default() -> Self {
        let d = dots_registrar::RegistrarConfig::default();
        RegistrarSection {
            min_expires: d.min_expires,
            max_expires: d.max_expires,
            default_expires: d.default_expires,
            max_contacts_per_aor: d.max_contacts_per_aor,
            stateless: true,
        }
    }
}

impl NodeConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<NodeConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_reads_and_matches_the_defaults_it_names() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dots.example.toml");
        let example = NodeConfig::from_file(&path).expect("docs/dots.example.toml reads");
        let defaults = NodeConfig::default();
        assert_eq!(example.registrar.stateless, defaults.registrar.stateless);
        assert!(
            example.registrar.stateless,
            "stateless REGISTER answers by default"
        );
        assert_eq!(
            example.registrar.max_contacts_per_aor,
            defaults.registrar.max_contacts_per_aor
        );
    }

    #[test]
    fn stateless_register_can_be_turned_off() {
        let config: NodeConfig = toml::from_str("[registrar]\nstateless = false\n").unwrap();
        assert!(!config.registrar.stateless);
        assert!(toml::from_str::<NodeConfig>("[registrar]\nstateles = false\n").is_err());
    }
}
