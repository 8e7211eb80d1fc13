//! # dots-store: the persistent state of a DOTS node
//!
//! Two [redb](https://docs.rs/redb) files in the node's data directory:
//!
//! - `node.redb`, owned by the running node: the registrar's bindings
//!   ([`BindingStore`]). The node loads them into its location service at
//!   start-up and writes every batch of [`Change`]s in one durable
//!   transaction, so that registrations survive a crash or `kill -9`.
//! - `accounts.redb`, shared by the node and the `dots user ...` commands
//!   ([`AccountStore`]). redb locks a file for one process at a time, so each
//!   call opens it only for its own duration and waits a little if someone
//!   else holds it; the node notices edits through [`AccountStore::stamp`].
//!   Besides the accounts of `dots user add` it holds device accounts, owned
//!   by a user's DID, and the handles bound to DIDs on this node.
//!
//! ```
//! use dots_registrar::{Binding, Change};
//! use dots_store::BindingStore;
//!
//! let dir = std::env::temp_dir().join(format!("dots-store-doc-{}", std::process::id()));
//! let binding = Binding {
//!     aor: "sip:alice@example.com".into(),
//!     contact: "<sip:alice@192.0.2.1>".into(),
//!     contact_uri: "sip:alice@192.0.2.1".into(),
//!     q: 1000,
//!     expires_at: 1_700_000_600_000,
//!     call_id: "c1".into(),
//!     cseq: 1,
//!     source: None,
//!     path: vec![],
//!     user_agent: None,
//!     instance: None,
//!     reg_id: None,
//! };
//! {
//!     let store = BindingStore::open(&dir).unwrap();
//!     store.apply(&[Change::Upsert(binding.clone())]).unwrap();
//! } // dropped: the file is closed, as after a crash
//! let store = BindingStore::open(&dir).unwrap();
//! assert_eq!(store.load_all().unwrap(), vec![binding]);
//! # drop(store);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

mod accounts;
mod bindings;

pub use accounts::{Account, AccountStore, AccountTable, DeviceError, DeviceOwner, HandleBinding};
pub use bindings::BindingStore;

pub use dots_registrar::{Binding, Change, Credentials};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    /// Another process held the file for longer than we waited.
    #[error("database file is locked by another process (is a node or another command using this data directory?)")]
    Locked,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("database error: {0}")]
    Db(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

impl StoreError {
    fn db(e: impl std::fmt::Display) -> StoreError {
        StoreError::Db(e.to_string())
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::db(e)
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Opens (creating if needed) a redb file, mapping "held by another
/// process" to [`StoreError::Locked`].
fn open_db(path: &std::path::Path) -> Result<redb::Database, StoreError> {
    open_db_with(path, redb::Builder::new())
}

/// [`open_db`] with a page cache of `cache_bytes` instead of redb's default
/// (1 GiB).
fn open_db_with_cache(
    path: &std::path::Path,
    cache_bytes: usize,
) -> Result<redb::Database, StoreError> {
    let mut builder = redb::Builder::new();
    builder.set_cache_size(cache_bytes);
    open_db_with(path, builder)
}

fn open_db_with(
    path: &std::path::Path,
    builder: redb::Builder,
) -> Result<redb::Database, StoreError> {
    match builder.create(path) {
        Ok(db) => Ok(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(StoreError::Locked),
        Err(e) => Err(StoreError::Db(format!("{}: {e}", path.display()))),
    }
}
