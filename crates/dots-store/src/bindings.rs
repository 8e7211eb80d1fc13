//! Registrar bindings in `node.redb`, keyed by `(aor, contact_uri)`.
//!
//! A record is a compact binary encoding of the rest of the binding (see
//! [`encode`]); records written by earlier versions as JSON are still read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::Path;

use dots_registrar::{Binding, Change};
use dots_sip::{Peer, TransportKind};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Deserialize;

use crate::StoreError;

const BINDINGS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("bindings");

/// redb's page cache for `node.redb`. redb's default is 1 GiB, which a
/// million bindings fill (the file is read whole at start-up and the B-tree
/// pages that inserts touch stay cached), making the cache the node's
/// largest memory item. The store is written in batches and read once at
/// start-up, so a small cache costs little: pages missing from it come from
/// the operating system's page cache.
pub const CACHE_BYTES: usize = 32 << 20;

/// First byte of a binary record (a JSON record starts with `{`).
const VERSION: u8 = 1;
// Flags, the second byte of a binary record.
/// The Contact text is exactly `<` contact URI `>`, so it is not stored.
const BARE_CONTACT: u8 = 1;
const HAS_SOURCE: u8 = 1 << 1;
const HAS_PATH: u8 = 1 << 2;
const HAS_USER_AGENT: u8 = 1 << 3;
const HAS_INSTANCE: u8 = 1 << 4;
const HAS_REG_ID: u8 = 1 << 5;

/// The registrar's bindings, persisted. Opened once by the running node,
/// which holds the file's lock for its lifetime.
pub struct BindingStore {
    db: Database,
}

/// Encodes a binding without its key (`aor`, `contact_uri`, the table key).
/// `flow` is not stored because a connection id means nothing after a
/// restart.
///
/// Layout: version byte, flags byte, `q` (u16), `expires_at` (u64), `cseq`
/// (u32), the Call-ID, then only what the flags announce: the Contact text,
/// the source (transport name, then 4 + IPv4 + port or 6 + IPv6 + port +
/// scope id), the Path values (a count, then each), the User-Agent, the
/// instance and the reg-id. Integers are little-endian; strings are a LEB128
/// length and UTF-8 bytes.
fn encode(b: &Binding, out: &mut Vec<u8>) {
    out.clear();
    let bare = b.contact.len() == b.contact_uri.len() + 2
        && b.contact.starts_with('<')
        && b.contact.ends_with('>')
        && b.contact[1..b.contact.len() - 1] == b.contact_uri;
    let mut flags = 0;
    for (set, flag) in [
        (bare, BARE_CONTACT),
        (b.source.is_some(), HAS_SOURCE),
        (!b.path.is_empty(), HAS_PATH),
        (b.user_agent.is_some(), HAS_USER_AGENT),
        (b.instance.is_some(), HAS_INSTANCE),
        (b.reg_id.is_some(), HAS_REG_ID),
    ] {
        if set {
            flags |= flag;
        }
    }
    out.push(VERSION);
    out.push(flags);
    out.extend_from_slice(&b.q.to_le_bytes());
    out.extend_from_slice(&b.expires_at.to_le_bytes());
    out.extend_from_slice(&b.cseq.to_le_bytes());
    put_str(out, &b.call_id);
    if !bare {
        put_str(out, &b.contact);
    }
    if let Some(peer) = &b.source {
        put_str(out, peer.transport.uri_param());
        match peer.addr {
            SocketAddr::V4(a) => {
                out.push(4);
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_le_bytes());
            }
            SocketAddr::V6(a) => {
                out.push(6);
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_le_bytes());
                out.extend_from_slice(&a.scope_id().to_le_bytes());
            }
        }
    }
    if !b.path.is_empty() {
        put_len(out, b.path.len());
        for p in &b.path {
            put_str(out, p);
        }
    }
    for s in [&b.user_agent, &b.instance].into_iter().flatten() {
        put_str(out, s);
    }
    if let Some(r) = b.reg_id {
        out.extend_from_slice(&r.to_le_bytes());
    }
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// A cursor over a binary record; every read fails on truncation.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }
    fn len(&mut self) -> Option<usize> {
        let mut n: usize = 0;
        for shift in (0..35).step_by(7) {
            let byte = self.u8()?;
            n |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }
    fn str(&mut self) -> Option<&'a str> {
        let n = self.len()?;
        std::str::from_utf8(self.bytes(n)?).ok()
    }
}

fn decode(aor: &str, contact_uri: &str, bytes: &[u8]) -> Result<Binding, StoreError> {
    if bytes.first() != Some(&VERSION) {
        return decode_json(aor, contact_uri, bytes);
    }
    let corrupt =
        |what: &str| StoreError::Corrupt(format!("binding ({aor}, {contact_uri}): {what}"));
    let mut r = Reader(&bytes[1..]);
    let truncated = || corrupt("truncated record");
    let flags = r.u8().ok_or_else(truncated)?;
    let q = u16::from_le_bytes(r.array().ok_or_else(truncated)?);
    let expires_at = u64::from_le_bytes(r.array().ok_or_else(truncated)?);
    let cseq = u32::from_le_bytes(r.array().ok_or_else(truncated)?);
    let call_id = r.str().ok_or_else(truncated)?.to_string();
    let contact = if flags & BARE_CONTACT != 0 {
        format!("<{contact_uri}>")
    } else {
        r.str().ok_or_else(truncated)?.to_string()
    };
    let source = if flags & HAS_SOURCE != 0 {
        let t = r.str().ok_or_else(truncated)?;
        let transport =
            TransportKind::parse(t).ok_or_else(|| corrupt(&format!("transport {t:?}")))?;
        let addr = match r.u8().ok_or_else(truncated)? {
            4 => {
                let ip = Ipv4Addr::from(r.array::<4>().ok_or_else(truncated)?);
                let port = u16::from_le_bytes(r.array().ok_or_else(truncated)?);
                SocketAddr::new(IpAddr::V4(ip), port)
            }
            6 => {
                let ip = Ipv6Addr::from(r.array::<16>().ok_or_else(truncated)?);
                let port = u16::from_le_bytes(r.array().ok_or_else(truncated)?);
                let scope = u32::from_le_bytes(r.array().ok_or_else(truncated)?);
                SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope))
            }
            other => return Err(corrupt(&format!("address family {other}"))),
        };
        Some(Peer::new(transport, addr))
    } else {
        None
    };
    let mut path = Vec::new();
    if flags & HAS_PATH != 0 {
        let n = r.len().ok_or_else(truncated)?;
        for _ in 0..n {
            path.push(r.str().ok_or_else(truncated)?.to_string());
        }
    }
    let mut opt_str = |flag: u8| -> Result<Option<String>, StoreError> {
        if flags & flag == 0 {
            return Ok(None);
        }
        Ok(Some(r.str().ok_or_else(truncated)?.to_string()))
    };
    let user_agent = opt_str(HAS_USER_AGENT)?;
    let instance = opt_str(HAS_INSTANCE)?;
    let reg_id = if flags & HAS_REG_ID != 0 {
        Some(u32::from_le_bytes(r.array().ok_or_else(truncated)?))
    } else {
        None
    };
    Ok(Binding {
        aor: aor.to_string(),
        contact,
        contact_uri: contact_uri.to_string(),
        q,
        expires_at,
        call_id,
        cseq,
        source,
        path,
        user_agent,
        instance,
        reg_id,
    })
}

/// A record as earlier versions stored it (JSON with short field names).
#[derive(Deserialize)]
struct JsonRecord {
    c: String,
    q: u16,
    e: u64,
    i: String,
    s: u32,
    #[serde(default)]
    src: Option<(String, String)>,
    #[serde(default)]
    p: Vec<String>,
    #[serde(default)]
    ua: Option<String>,
    #[serde(default)]
    inst: Option<String>,
    #[serde(default)]
    reg: Option<u32>,
}

fn decode_json(aor: &str, contact_uri: &str, bytes: &[u8]) -> Result<Binding, StoreError> {
    let r: JsonRecord = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("binding ({aor}, {contact_uri}): {e}")))?;
    let source = match r.src {
        Some((t, a)) => {
            let transport = TransportKind::parse(&t)
                .ok_or_else(|| StoreError::Corrupt(format!("transport {t:?}")))?;
            let addr: SocketAddr = a
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("address {a:?}")))?;
            Some(Peer::new(transport, addr))
        }
        None => None,
    };
    Ok(Binding {
        aor: aor.to_string(),
        contact: r.c,
        contact_uri: contact_uri.to_string(),
        q: r.q,
        expires_at: r.e,
        call_id: r.i,
        cseq: r.s,
        source,
        path: r.p,
        user_agent: r.ua,
        instance: r.inst,
        reg_id: r.reg,
    })
}

impl BindingStore {
    /// Opens `<data_dir>/node.redb`, creating the directory and the file if
    /// missing, with a page cache of [`CACHE_BYTES`]. Fails with
    /// [`StoreError::Locked`] if another process has it.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)?;
        let db = crate::open_db_with_cache(&data_dir.join("node.redb"), CACHE_BYTES)?;
        // Create the table up front so that readers never meet a missing table.
        let tx = db.begin_write()?;
        tx.open_table(BINDINGS)?;
        tx.commit()?;
        Ok(BindingStore { db })
    }

    /// Every stored binding, expired or not (the location service expires
    /// them on its first `expire` call and emits the removals).
    pub fn load_all(&self) -> Result<Vec<Binding>, StoreError> {
        let mut out = Vec::new();
        self.for_each(|b| out.push(b))?;
        Ok(out)
    }

    /// Hands every stored binding to `f`, one at a time, without holding
    /// them all in memory at once (what the node does at start-up); returns
    /// how many there were.
    pub fn for_each(&self, mut f: impl FnMut(Binding)) -> Result<usize, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(BINDINGS)?;
        let mut n = 0;
        for row in table.iter()? {
            let (key, value) = row?;
            let (aor, contact_uri) = key.value();
            f(decode(aor, contact_uri, value.value())?);
            n += 1;
        }
        Ok(n)
    }

    /// Applies a batch of changes in one write transaction, durable on return.
    pub fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(BINDINGS)?;
            let mut bytes = Vec::with_capacity(128);
            for change in changes {
                match change {
                    Change::Upsert(b) => {
                        encode(b, &mut bytes);
                        table.insert((b.aor.as_str(), b.contact_uri.as_str()), bytes.as_slice())?;
                    }
                    Change::Remove { aor, contact_uri } => {
                        table.remove((aor.as_str(), contact_uri.as_str()))?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Number of stored bindings.
    pub fn len(&self) -> Result<usize, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(BINDINGS)?;
        Ok(table.len()? as usize)
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn full() -> Binding {
        Binding {
            aor: "sip:alice@example.com".into(),
            contact:
                "<sip:alice@192.0.2.1:5060;transport=tcp>;+sip.instance=\"<urn:uuid:1>\";reg-id=1"
                    .into(),
            contact_uri: "sip:alice@192.0.2.1:5060;transport=tcp".into(),
            q: 500,
            expires_at: 1_700_000_600_000,
            call_id: "c1@host".into(),
            cseq: 7,
            source: Some(Peer::new(
                TransportKind::Tcp,
                "[fe80::1%3]:5070".parse().unwrap(),
            )),
            path: vec!["<sip:p1.example.com;lr>".into(), "<sip:p2;lr>".into()],
            user_agent: Some("phone/1.0".into()),
            instance: Some("<urn:uuid:1>".into()),
            reg_id: Some(1),
        }
    }

    #[test]
    fn binary_records_round_trip() {
        let mut bytes = Vec::new();
        let b = full();
        encode(&b, &mut bytes);
        assert_eq!(decode(&b.aor, &b.contact_uri, &bytes).unwrap(), b);

        let bare = Binding {
            contact: "<sip:bob@192.0.2.2>".into(),
            contact_uri: "sip:bob@192.0.2.2".into(),
            source: Some(Peer::new(
                TransportKind::Udp,
                "192.0.2.2:5060".parse().unwrap(),
            )),
            path: vec![],
            user_agent: None,
            instance: None,
            reg_id: None,
            ..full()
        };
        encode(&bare, &mut bytes);
        assert_eq!(bytes[1] & BARE_CONTACT, BARE_CONTACT);
        assert!(bytes.len() < 40, "{} bytes", bytes.len());
        assert_eq!(decode(&bare.aor, &bare.contact_uri, &bytes).unwrap(), bare);

        // Every truncation is an error, never a panic.
        encode(&b, &mut bytes);
        for n in 1..bytes.len() {
            assert!(decode(&b.aor, &b.contact_uri, &bytes[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn json_records_of_earlier_versions_are_read() {
        let json = br#"{"c":"<sip:alice@192.0.2.1>;+sip.instance=\"<urn:uuid:1>\"","q":1000,"e":1700000600000,"i":"c1","s":3,"src":["udp","192.0.2.1:5060"],"p":["<sip:p1;lr>"],"ua":"x","inst":"<urn:uuid:1>","reg":2}"#;
        let b = decode("sip:alice@example.com", "sip:alice@192.0.2.1", json).unwrap();
        assert_eq!(
            b.contact,
            "<sip:alice@192.0.2.1>;+sip.instance=\"<urn:uuid:1>\""
        );
        assert_eq!(b.cseq, 3);
        assert_eq!(b.source.unwrap().addr, "192.0.2.1:5060".parse().unwrap());
        assert_eq!(b.path, ["<sip:p1;lr>"]);
        assert_eq!(b.reg_id, Some(2));
        let mut bytes = Vec::new();
        encode(&b, &mut bytes);
        assert_eq!(decode(&b.aor, &b.contact_uri, &bytes).unwrap(), b);
    }
}
