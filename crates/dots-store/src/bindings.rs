//! Registrar bindings in `node.redb`, keyed by `(aor, contact_uri)`.
//!
//! A record is a compact binary encoding of the rest of the binding (see
//! [`encode`]); records written by earlier versions as JSON are still read.
//!
//! Writes go to a journal first: each batch of changes is one row of the
//! `bindings_journal` table (one B-tree insert per batch instead of one per
//! binding, which was the largest single cost of a REGISTER under load).
//! Once the journal holds [`COMPACT_AFTER`] changes, they are folded into the
//! `bindings` table in key order, the last change of each binding winning,
//! and the journal is emptied, in one transaction. Readers see the bindings
//! table with the journal applied on top, so the two are never out of step,
//! whatever moment the process dies at.
//!
//! The writer keeps a copy of the journal's changes in memory, so that the
//! fold does not read back from the file what it wrote there moments ago
//! (reading the journal back, and the fresh pages its buffers took, were
//! most of what a fold cost besides the B-tree inserts).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use dots_registrar::{Binding, Change};
use dots_sip::{Peer, TransportKind};
use redb::{Database, ReadableTable, TableDefinition};
use serde::Deserialize;

use crate::StoreError;

const BINDINGS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("bindings");
/// Batches of changes not yet folded into [`BINDINGS`], by sequence number.
/// A row is a change count (u32, little-endian) and then each change: a tag
/// ([`UPSERT`] or [`REMOVE`]), the AOR and the contact URI as strings, and for
/// an upsert the record as a length-prefixed byte string.
const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("bindings_journal");
const UPSERT: u8 = 1;
const REMOVE: u8 = 2;

/// Journalled changes after which the journal is folded into the bindings
/// table. Bounds what a restart replays and what the fold holds in memory
/// (a change is about 100 bytes); large enough that a binding refreshed
/// every few minutes is written to the B-tree once per fold, not per refresh.
pub const COMPACT_AFTER: u64 = 200_000;

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
    /// Sequence number of the next journal row, and the changes in the
    /// journal. Only the node's one writer changes them; atomics keep
    /// `apply` callable through `&self`.
    next_row: AtomicU64,
    journalled: AtomicU64,
    compact_after: u64,
    /// The journal's changes, rows concatenated without their counts (the
    /// encoding of a row after its count). Its capacity is kept across
    /// folds. Locked only by the one writer.
    journal_copy: Mutex<Vec<u8>>,
}

/// The last change per binding in a stretch of journal: `Some(record)` to
/// store, `None` to remove.
type Folded = BTreeMap<(String, String), Option<Vec<u8>>>;

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
        // Create the tables up front so that readers never meet a missing table.
        let tx = db.begin_write()?;
        tx.open_table(BINDINGS)?;
        tx.open_table(JOURNAL)?;
        tx.commit()?;
        let (mut next_row, mut journalled) = (0, 0);
        let mut journal_copy = Vec::new();
        {
            let tx = db.begin_read()?;
            let journal = tx.open_table(JOURNAL)?;
            for row in journal.iter()? {
                let (seq, bytes) = row?;
                let bytes = bytes.value();
                next_row = seq.value() + 1;
                journalled += u64::from(row_count(bytes)?);
                journal_copy.extend_from_slice(&bytes[4..]);
            }
        }
        Ok(BindingStore {
            db,
            next_row: AtomicU64::new(next_row),
            journalled: AtomicU64::new(journalled),
            compact_after: COMPACT_AFTER,
            journal_copy: Mutex::new(journal_copy),
        })
    }

    /// Folds the journal after `changes` changes instead of
    /// [`COMPACT_AFTER`] (tests use small values to fold often).
    pub fn with_compact_after(mut self, changes: u64) -> Self {
        self.compact_after = changes.max(1);
        self
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
    /// how many there were. Only the journal, at most [`COMPACT_AFTER`]
    /// changes, is held while the bindings table streams by.
    pub fn for_each(&self, mut f: impl FnMut(Binding)) -> Result<usize, StoreError> {
        let tx = self.db.begin_read()?;
        let journal = tx.open_table(JOURNAL)?;
        let mut pending = Folded::new();
        for row in journal.iter()? {
            let (_, bytes) = row?;
            fold_row(bytes.value(), &mut pending)?;
        }
        let table = tx.open_table(BINDINGS)?;
        let mut n = 0;
        for row in table.iter()? {
            let (key, value) = row?;
            let (aor, contact_uri) = key.value();
            // A binding the journal touches is handed over from the journal.
            if !pending.is_empty()
                && pending.contains_key(&(aor.to_owned(), contact_uri.to_owned()))
            {
                continue;
            }
            f(decode(aor, contact_uri, value.value())?);
            n += 1;
        }
        for ((aor, contact_uri), record) in &pending {
            if let Some(bytes) = record {
                f(decode(aor, contact_uri, bytes)?);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Applies a batch of changes in one write transaction, durable on
    /// return: one journal row, and the fold of the journal into the
    /// bindings table when it has grown to [`COMPACT_AFTER`] changes.
    pub fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut row = Vec::with_capacity(8 + changes.len() * 96);
        let count = u32::try_from(changes.len())
            .map_err(|_| StoreError::Corrupt("more than 2^32 changes in one batch".into()))?;
        row.extend_from_slice(&count.to_le_bytes());
        let mut record = Vec::with_capacity(128);
        for change in changes {
            match change {
                Change::Upsert(b) => {
                    row.push(UPSERT);
                    put_str(&mut row, &b.aor);
                    put_str(&mut row, &b.contact_uri);
                    encode(b, &mut record);
                    put_len(&mut row, record.len());
                    row.extend_from_slice(&record);
                }
                Change::Remove { aor, contact_uri } => {
                    row.push(REMOVE);
                    put_str(&mut row, aor);
                    put_str(&mut row, contact_uri);
                }
            }
        }
        let seq = self.next_row.load(Ordering::Relaxed);
        let journalled = self.journalled.load(Ordering::Relaxed) + u64::from(count);
        let mut copy = self.journal_copy.lock().expect("journal copy lock");
        let tx = self.db.begin_write()?;
        let fold = journalled >= self.compact_after;
        if fold {
            fold_journal(&tx, &[copy.as_slice(), &row[4..]])?;
        } else {
            tx.open_table(JOURNAL)?.insert(seq, row.as_slice())?;
        }
        tx.commit()?;
        // Only once committed, so that the copy never runs ahead of the file.
        if fold {
            copy.clear();
        } else {
            copy.extend_from_slice(&row[4..]);
        }
        self.next_row.store(seq + 1, Ordering::Relaxed);
        self.journalled
            .store(if fold { 0 } else { journalled }, Ordering::Relaxed);
        Ok(())
    }

    /// Folds the journal into the bindings table now, whatever its size
    /// (the node does this when it stops, so the next start replays nothing).
    pub fn compact(&self) -> Result<(), StoreError> {
        if self.journalled.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let mut copy = self.journal_copy.lock().expect("journal copy lock");
        let tx = self.db.begin_write()?;
        fold_journal(&tx, &[copy.as_slice()])?;
        tx.commit()?;
        copy.clear();
        self.journalled.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Number of stored bindings (reads them all: for tests and tools).
    pub fn len(&self) -> Result<usize, StoreError> {
        self.for_each(|_| {})
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}

/// The change count at the head of a journal row.
fn row_count(row: &[u8]) -> Result<u32, StoreError> {
    Reader(row)
        .array()
        .map(u32::from_le_bytes)
        .ok_or_else(|| StoreError::Corrupt("binding journal: truncated row".into()))
}

/// Adds a journal row's changes to `into`, later changes replacing earlier
/// ones for the same binding. Records are checked when decoded, not here.
fn fold_row(row: &[u8], into: &mut Folded) -> Result<(), StoreError> {
    let corrupt = || StoreError::Corrupt("binding journal: truncated row".into());
    let mut r = Reader(row);
    let count = u32::from_le_bytes(r.array().ok_or_else(corrupt)?);
    for _ in 0..count {
        let tag = r.u8().ok_or_else(corrupt)?;
        let aor = r.str().ok_or_else(corrupt)?.to_owned();
        let contact_uri = r.str().ok_or_else(corrupt)?.to_owned();
        let record = match tag {
            UPSERT => {
                let n = r.len().ok_or_else(corrupt)?;
                Some(r.bytes(n).ok_or_else(corrupt)?.to_vec())
            }
            REMOVE => None,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "binding journal: change tag {other}"
                )))
            }
        };
        into.insert((aor, contact_uri), record);
    }
    if !r.0.is_empty() {
        return Err(StoreError::Corrupt(
            "binding journal: bytes after the last change".into(),
        ));
    }
    Ok(())
}

/// One change as it lies in a journal row: the AOR, the contact URI and
/// the record to store (`None`: remove the binding).
type JournalChange<'a> = (&'a str, &'a str, Option<&'a [u8]>);

/// Reads the changes of `stream` (journal rows without their counts, one
/// after another) into `out`, in order.
fn read_changes<'a>(stream: &'a [u8], out: &mut Vec<JournalChange<'a>>) -> Result<(), StoreError> {
    let corrupt = || StoreError::Corrupt("binding journal: truncated change".into());
    let mut r = Reader(stream);
    while !r.0.is_empty() {
        let tag = r.u8().ok_or_else(corrupt)?;
        let aor = r.str().ok_or_else(corrupt)?;
        let contact_uri = r.str().ok_or_else(corrupt)?;
        let record = match tag {
            UPSERT => {
                let n = r.len().ok_or_else(corrupt)?;
                Some(r.bytes(n).ok_or_else(corrupt)?)
            }
            REMOVE => None,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "binding journal: change tag {other}"
                )))
            }
        };
        out.push((aor, contact_uri, record));
    }
    Ok(())
}

/// Moves the journalled changes in `streams` (the in-memory copy of the
/// journal, in order) into the bindings table, in key order (the B-tree's
/// cheapest insertion order) and the last change of each binding winning,
/// and empties the journal: all in `tx`.
fn fold_journal(tx: &redb::WriteTransaction, streams: &[&[u8]]) -> Result<(), StoreError> {
    let mut changes = Vec::new();
    for stream in streams {
        read_changes(stream, &mut changes)?;
    }
    // A stable sort keeps a binding's changes in journal order: the last
    // of each run of equal keys is the one that stands.
    changes.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    {
        let mut bindings = tx.open_table(BINDINGS)?;
        for (i, (aor, contact_uri, record)) in changes.iter().enumerate() {
            if changes
                .get(i + 1)
                .is_some_and(|next| (next.0, next.1) == (*aor, *contact_uri))
            {
                continue;
            }
            match record {
                Some(bytes) => {
                    bindings.insert((*aor, *contact_uri), *bytes)?;
                }
                None => {
                    bindings.remove((*aor, *contact_uri))?;
                }
            }
        }
    }
    // Dropping the table frees its pages without reading the rows back.
    tx.delete_table(JOURNAL)?;
    tx.open_table(JOURNAL)?;
    Ok(())
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
