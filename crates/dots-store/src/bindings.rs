//! Registrar bindings in `node.redb`, keyed by `(aor, contact_uri)`.

use std::net::SocketAddr;
use std::path::Path;

use dots_registrar::{Binding, Change};
use dots_sip::{Peer, TransportKind};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{open_db, StoreError};

const BINDINGS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("bindings");

/// The registrar's bindings, persisted. Opened once by the running node,
/// which holds the file's lock for its lifetime.
pub struct BindingStore {
    db: Database,
}

/// The stored form of a binding (without the key, which is the table key).
/// Short field names keep records small; `flow` is not stored because a
/// connection id means nothing after a restart.
#[derive(Serialize, Deserialize)]
struct Record {
    c: String,
    q: u16,
    e: u64,
    i: String,
    s: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    src: Option<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    p: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ua: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inst: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reg: Option<u32>,
}

impl Record {
    fn from_binding(b: &Binding) -> Record {
        Record {
            c: b.contact.clone(),
            q: b.q,
            e: b.expires_at,
            i: b.call_id.clone(),
            s: b.cseq,
            src: b
                .source
                .map(|p| (p.transport.uri_param().to_string(), p.addr.to_string())),
            p: b.path.clone(),
            ua: b.user_agent.clone(),
            inst: b.instance.clone(),
            reg: b.reg_id,
        }
    }

    fn into_binding(self, aor: &str, contact_uri: &str) -> Result<Binding, StoreError> {
        let source = match self.src {
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
            contact: self.c,
            contact_uri: contact_uri.to_string(),
            q: self.q,
            expires_at: self.e,
            call_id: self.i,
            cseq: self.s,
            source,
            path: self.p,
            user_agent: self.ua,
            instance: self.inst,
            reg_id: self.reg,
        })
    }
}

impl BindingStore {
    /// Opens `<data_dir>/node.redb`, creating the directory and the file if
    /// missing. Fails with [`StoreError::Locked`] if another process has it.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)?;
        let db = open_db(&data_dir.join("node.redb"))?;
        // Create the table up front so that readers never meet a missing table.
        let tx = db.begin_write()?;
        tx.open_table(BINDINGS)?;
        tx.commit()?;
        Ok(BindingStore { db })
    }

    /// Every stored binding, expired or not (the location service expires
    /// them on its first `expire` call and emits the removals).
    pub fn load_all(&self) -> Result<Vec<Binding>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(BINDINGS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            let (aor, contact_uri) = key.value();
            let record: Record = serde_json::from_slice(value.value())
                .map_err(|e| StoreError::Corrupt(format!("binding ({aor}, {contact_uri}): {e}")))?;
            out.push(record.into_binding(aor, contact_uri)?);
        }
        Ok(out)
    }

    /// Applies a batch of changes in one write transaction, durable on return.
    pub fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(BINDINGS)?;
            for change in changes {
                match change {
                    Change::Upsert(b) => {
                        let bytes = serde_json::to_vec(&Record::from_binding(b))
                            .map_err(|e| StoreError::Db(e.to_string()))?;
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
