//! User accounts in `accounts.redb`, shared between the node and the CLI.
//!
//! Three tables:
//!
//! - `accounts`: SIP user name → digest verifier (and, for a device account,
//!   its owner). Accounts made with `dots user add` have no owner.
//! - `handles`: a user handle (`alice` in `alice@node.example`) → the DID it
//!   is bound to on this node, from the first device that DID added under it.
//! - `devices`: `"<did>/<device name>"` → SIP user name, so that a DID's
//!   devices are found (and a device name is unique per DID) without a scan.
//!
//! A device account is added, with its handle binding and its index entry,
//! in one write transaction; [`AccountStore::load`] reads all of it in one
//! read transaction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use dots_registrar::Credentials;
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{open_db, StoreError};

const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
const HANDLES: TableDefinition<&str, &[u8]> = TableDefinition::new("handles");
const DEVICES: TableDefinition<&str, &str> = TableDefinition::new("devices");

/// How long a call waits for another process to release the file.
const LOCK_WAIT: Duration = Duration::from_secs(2);
const LOCK_POLL: Duration = Duration::from_millis(25);

/// User accounts (digest credentials by user name), in
/// `<data_dir>/accounts.redb` with its change stamp in `<data_dir>/accounts.gen`.
///
/// The file is opened for each call and closed at its end, because redb lets
/// one process hold it at a time and both the node and `dots user ...` need
/// it. A call that finds it held retries for about two seconds, then fails
/// with [`StoreError::Locked`].
pub struct AccountStore {
    path: PathBuf,
}

/// Who owns a device account: the user's DID, the device's name among that
/// user's devices, and the handle it was created under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceOwner {
    /// `did:key:z6Mk…` of the user whose signed request created the account.
    pub did: String,
    /// The device's name, unique among the DID's devices (`phone`).
    pub device: String,
    /// The user handle (`alice`); the SIP user name is `<handle>-<device>`.
    pub handle: String,
    /// When the account was created, ms since the UNIX epoch.
    pub created: u64,
    /// The user's delegation to this node (`dots_records::Grant::encode`),
    /// when one was given.
    pub grant: Option<Vec<u8>>,
}

/// One account of the table: its SIP user name, digest verifier and, for a
/// device account, its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub creds: Credentials,
    pub owner: Option<DeviceOwner>,
}

/// A handle bound to a DID on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleBinding {
    pub did: String,
    /// When it was bound, ms since the UNIX epoch.
    pub created: u64,
}

/// Everything in the accounts file, read in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountTable {
    /// Every account, device accounts included, sorted by user name.
    pub accounts: Vec<Account>,
    /// Handle → DID.
    pub handles: BTreeMap<String, HandleBinding>,
}

/// Why a device account could not be added.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("the handle {handle:?} belongs to another identity on this node ({did})")]
    HandleTaken { handle: String, did: String },
    #[error("the handle {0:?} is the user name of an account on this node")]
    HandleIsAccount(String),
    #[error("this identity already has a device named {0:?}")]
    DeviceExists(String),
    #[error("the user name {0:?} is already taken on this node")]
    UserNameTaken(String),
    #[error(
        "this identity already has {0} devices on this node, the most allowed; revoke one first"
    )]
    TooManyDevices(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

macro_rules! device_error_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for DeviceError {
            fn from(e: $t) -> Self {
                DeviceError::Store(e.into())
            }
        }
    )*};
}
device_error_from_redb!(redb::TableError, redb::StorageError);

#[derive(Serialize, Deserialize)]
struct Record {
    realm: String,
    ha1_md5: String,
    ha1_sha256: String,
    /// Absent for accounts made by `dots user add` (and in files written
    /// before device accounts existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<OwnerRecord>,
}

#[derive(Serialize, Deserialize)]
struct OwnerRecord {
    did: String,
    device: String,
    handle: String,
    created: u64,
    /// base64url (no padding) of the encoded grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grant: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct HandleRecord {
    did: String,
    created: u64,
}

impl Record {
    fn new(c: &Credentials, owner: Option<&DeviceOwner>) -> Record {
        Record {
            realm: c.realm.clone(),
            ha1_md5: c.ha1_md5.clone(),
            ha1_sha256: c.ha1_sha256.clone(),
            owner: owner.map(|o| OwnerRecord {
                did: o.did.clone(),
                device: o.device.clone(),
                handle: o.handle.clone(),
                created: o.created,
                grant: o.grant.as_ref().map(|g| B64.encode(g)),
            }),
        }
    }

    fn into_account(self, user: &str) -> Result<Account, StoreError> {
        let owner = match self.owner {
            None => None,
            Some(o) => Some(DeviceOwner {
                grant: o
                    .grant
                    .map(|g| B64.decode(g))
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(format!("account {user}: grant: {e}")))?,
                did: o.did,
                device: o.device,
                handle: o.handle,
                created: o.created,
            }),
        };
        Ok(Account {
            user: user.to_string(),
            creds: Credentials {
                realm: self.realm,
                ha1_md5: self.ha1_md5,
                ha1_sha256: self.ha1_sha256,
            },
            owner,
        })
    }
}

fn decode(user: &str, bytes: &[u8]) -> Result<Account, StoreError> {
    serde_json::from_slice::<Record>(bytes)
        .map_err(|e| StoreError::Corrupt(format!("account {user}: {e}")))?
        .into_account(user)
}

fn encode(creds: &Credentials, owner: Option<&DeviceOwner>) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&Record::new(creds, owner)).map_err(|e| StoreError::Db(e.to_string()))
}

fn decode_handle(handle: &str, bytes: &[u8]) -> Result<HandleBinding, StoreError> {
    let r: HandleRecord = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("handle {handle}: {e}")))?;
    Ok(HandleBinding {
        did: r.did,
        created: r.created,
    })
}

/// The `devices` key of a DID's device. DIDs and device names never hold '/'.
fn device_key(did: &str, device: &str) -> String {
    format!("{did}/{device}")
}

/// The range of `devices` keys of one DID: from `"<did>/"` up to, not
/// including, `"<did>0"` ('0' follows '/').
fn device_range(did: &str) -> (String, String) {
    (format!("{did}/"), format!("{did}0"))
}

/// Opens a table for reading; `None` when it was never written.
fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    tx: &redb::ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match tx.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl AccountStore {
    /// Accounts of `<data_dir>/accounts.redb`; nothing is opened yet.
    pub fn new(data_dir: &Path) -> Self {
        AccountStore {
            path: data_dir.join("accounts.redb"),
        }
    }

    /// Path of the accounts file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a user; [`StoreError::AlreadyExists`] if there is one by that
    /// name, or if the name is a handle bound on this node.
    pub fn add(&self, user: &str, creds: &Credentials) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(ACCOUNTS)?;
            if table.get(user)?.is_some() || tx.open_table(HANDLES)?.get(user)?.is_some() {
                return Err(StoreError::AlreadyExists);
            }
            table.insert(user, encode(creds, None)?.as_slice())?;
            Ok(())
        })
    }

    /// Replaces a user's credentials (password change), keeping its owner if
    /// it is a device account; [`StoreError::NotFound`] if there is no such user.
    pub fn set(&self, user: &str, creds: &Credentials) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(ACCOUNTS)?;
            let old = match table.get(user)? {
                Some(v) => decode(user, v.value())?,
                None => return Err(StoreError::NotFound),
            };
            table.insert(user, encode(creds, old.owner.as_ref())?.as_slice())?;
            Ok(())
        })
    }

    /// Removes a user (a device account too); [`StoreError::NotFound`] if
    /// there is no such user.
    pub fn remove(&self, user: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            let removed = tx
                .open_table(ACCOUNTS)?
                .remove(user)?
                .map(|v| decode(user, v.value()))
                .transpose()?;
            match removed {
                Some(account) => {
                    if let Some(o) = account.owner {
                        tx.open_table(DEVICES)?
                            .remove(device_key(&o.did, &o.device).as_str())?;
                    }
                    Ok(())
                }
                None => Err(StoreError::NotFound),
            }
        })
    }

    /// All users, sorted by name.
    pub fn list(&self) -> Result<Vec<(String, Credentials)>, StoreError> {
        Ok(self
            .load()?
            .accounts
            .into_iter()
            .map(|a| (a.user, a.creds))
            .collect())
    }

    pub fn get(&self, user: &str) -> Result<Option<Credentials>, StoreError> {
        Ok(self.get_account(user)?.map(|a| a.creds))
    }

    /// One account with its owner, if any.
    pub fn get_account(&self, user: &str) -> Result<Option<Account>, StoreError> {
        self.read(|tx| {
            let Some(table) = read_table(tx, ACCOUNTS)? else {
                return Ok(None);
            };
            let value = table.get(user)?;
            value.map(|v| decode(user, v.value())).transpose()
        })
        .map(Option::flatten)
    }

    /// Every account and every handle binding, in one read transaction.
    pub fn load(&self) -> Result<AccountTable, StoreError> {
        self.read(|tx| {
            let mut out = AccountTable::default();
            if let Some(table) = read_table(tx, ACCOUNTS)? {
                for row in table.iter()? {
                    let (user, value) = row?;
                    out.accounts.push(decode(user.value(), value.value())?);
                }
            }
            if let Some(table) = read_table(tx, HANDLES)? {
                for row in table.iter()? {
                    let (handle, value) = row?;
                    let handle = handle.value();
                    out.handles
                        .insert(handle.to_string(), decode_handle(handle, value.value())?);
                }
            }
            Ok(out)
        })
        .map(Option::unwrap_or_default)
    }

    /// The DID a handle is bound to, if any.
    pub fn handle(&self, handle: &str) -> Result<Option<HandleBinding>, StoreError> {
        self.read(|tx| {
            let Some(table) = read_table(tx, HANDLES)? else {
                return Ok(None);
            };
            let value = table.get(handle)?;
            value.map(|v| decode_handle(handle, v.value())).transpose()
        })
        .map(Option::flatten)
    }

    /// The device accounts of a DID, sorted by device name.
    pub fn devices(&self, did: &str) -> Result<Vec<Account>, StoreError> {
        self.read(|tx| {
            let (Some(devices), Some(accounts)) =
                (read_table(tx, DEVICES)?, read_table(tx, ACCOUNTS)?)
            else {
                return Ok(Vec::new());
            };
            let (from, to) = device_range(did);
            let mut out = Vec::new();
            for row in devices.range(from.as_str()..to.as_str())? {
                let (_, user) = row?;
                let user = user.value();
                if let Some(v) = accounts.get(user)? {
                    out.push(decode(user, v.value())?);
                }
            }
            Ok(out)
        })
        .map(Option::unwrap_or_default)
    }

    /// Adds a device account `user` owned by `owner.did`, binding
    /// `owner.handle` to that DID if it is not bound yet, all in one
    /// transaction. Refused when the handle is bound to another DID or is
    /// the name of an account, when the DID already has a device of that
    /// name or `max_devices` devices, or when the user name is taken (by an
    /// account or a handle).
    pub fn add_device(
        &self,
        user: &str,
        creds: &Credentials,
        owner: &DeviceOwner,
        max_devices: usize,
    ) -> Result<(), DeviceError> {
        self.write(|tx| {
            let mut accounts = tx.open_table(ACCOUNTS)?;
            let mut handles = tx.open_table(HANDLES)?;
            let mut devices = tx.open_table(DEVICES)?;
            let bound = handles
                .get(owner.handle.as_str())?
                .map(|v| decode_handle(&owner.handle, v.value()))
                .transpose()?;
            match bound {
                Some(b) if b.did != owner.did => {
                    return Err(DeviceError::HandleTaken {
                        handle: owner.handle.clone(),
                        did: b.did,
                    })
                }
                Some(_) => {}
                None => {
                    if accounts.get(owner.handle.as_str())?.is_some() {
                        return Err(DeviceError::HandleIsAccount(owner.handle.clone()));
                    }
                }
            }
            if devices
                .get(device_key(&owner.did, &owner.device).as_str())?
                .is_some()
            {
                return Err(DeviceError::DeviceExists(owner.device.clone()));
            }
            if accounts.get(user)?.is_some() || handles.get(user)?.is_some() {
                return Err(DeviceError::UserNameTaken(user.to_string()));
            }
            let (from, to) = device_range(&owner.did);
            let count = devices.range(from.as_str()..to.as_str())?.count();
            if count >= max_devices {
                return Err(DeviceError::TooManyDevices(max_devices));
            }
            if bound.is_none() {
                let record = HandleRecord {
                    did: owner.did.clone(),
                    created: owner.created,
                };
                let bytes = serde_json::to_vec(&record).map_err(StoreError::db)?;
                handles.insert(owner.handle.as_str(), bytes.as_slice())?;
            }
            accounts.insert(user, encode(creds, Some(owner))?.as_slice())?;
            devices.insert(device_key(&owner.did, &owner.device).as_str(), user)?;
            Ok(())
        })
    }

    /// Removes the DID's device named `device` and returns its account;
    /// [`StoreError::NotFound`] if the DID has no such device. The handle
    /// stays bound to the DID.
    pub fn remove_device(&self, did: &str, device: &str) -> Result<Account, StoreError> {
        self.write(|tx| {
            let mut devices = tx.open_table(DEVICES)?;
            let key = device_key(did, device);
            let user = match devices.remove(key.as_str())? {
                Some(u) => u.value().to_string(),
                None => return Err(StoreError::NotFound),
            };
            let removed = tx
                .open_table(ACCOUNTS)?
                .remove(user.as_str())?
                .map(|v| decode(&user, v.value()))
                .transpose()?;
            removed.ok_or(StoreError::NotFound)
        })
    }

    /// A modification stamp for the node to poll, so that it reloads
    /// accounts only after an edit; `None` if there are no accounts yet.
    ///
    /// It is the mtime and the generation number of `accounts.gen`, which
    /// every write bumps while it still holds the database lock. The
    /// database file itself cannot serve: redb writes its header on every
    /// open and close, so merely reading would look like an edit.
    pub fn stamp(&self) -> Option<(SystemTime, u64)> {
        match std::fs::metadata(self.gen_path()) {
            Ok(meta) => Some((meta.modified().ok()?, self.generation())),
            // Accounts written before the generation file existed.
            Err(_) if self.path.exists() => Some((SystemTime::UNIX_EPOCH, 0)),
            Err(_) => None,
        }
    }

    fn gen_path(&self) -> PathBuf {
        self.path.with_extension("gen")
    }

    /// The generation in `accounts.gen`; 0 if missing or unreadable (then the
    /// next write starts again from 1, still a change).
    fn generation(&self) -> u64 {
        std::fs::read_to_string(self.gen_path())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Opens the file for a read, `None` if it does not exist: reading must
    /// not create it (a typo in the data directory would otherwise go unseen).
    fn open_existing(&self) -> Result<Option<Database>, StoreError> {
        if !self.path.exists() {
            return Ok(None);
        }
        self.open_waiting().map(Some)
    }

    fn open_waiting(&self) -> Result<Database, StoreError> {
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match open_db(&self.path) {
                Err(StoreError::Locked) if Instant::now() < deadline => {
                    std::thread::sleep(LOCK_POLL)
                }
                other => return other,
            }
        }
    }

    /// Runs `f` in a read transaction; `None` if the file does not exist.
    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let Some(db) = self.open_existing()? else {
            return Ok(None);
        };
        let tx = db.begin_read()?;
        f(&tx).map(Some)
    }

    /// Runs `f` in a write transaction, committed only if `f` succeeds.
    fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, E>,
    ) -> Result<T, E> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(StoreError::from)?;
        }
        let db = self.open_waiting()?;
        let tx = db.begin_write().map_err(StoreError::from)?;
        // On error the transaction is dropped uncommitted: nothing changes.
        let out = f(&tx)?;
        tx.commit().map_err(StoreError::from)?;
        // Bumped while `db` still holds the lock, so writers never race on it.
        let next = self.generation().wrapping_add(1);
        std::fs::write(self.gen_path(), format!("{next}\n")).map_err(StoreError::from)?;
        drop(db);
        Ok(out)
    }
}
