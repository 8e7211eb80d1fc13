//! User accounts in `accounts.redb`, shared between the node and the CLI.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use dots_registrar::Credentials;
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{open_db, StoreError};

const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");

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

#[derive(Serialize, Deserialize)]
struct Record {
    realm: String,
    ha1_md5: String,
    ha1_sha256: String,
}

impl Record {
    fn from_creds(c: &Credentials) -> Record {
        Record {
            realm: c.realm.clone(),
            ha1_md5: c.ha1_md5.clone(),
            ha1_sha256: c.ha1_sha256.clone(),
        }
    }

    fn into_creds(self) -> Credentials {
        Credentials {
            realm: self.realm,
            ha1_md5: self.ha1_md5,
            ha1_sha256: self.ha1_sha256,
        }
    }
}

fn decode(user: &str, bytes: &[u8]) -> Result<Credentials, StoreError> {
    serde_json::from_slice::<Record>(bytes)
        .map(Record::into_creds)
        .map_err(|e| StoreError::Corrupt(format!("account {user}: {e}")))
}

fn encode(creds: &Credentials) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&Record::from_creds(creds)).map_err(|e| StoreError::Db(e.to_string()))
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

    /// Adds a user; [`StoreError::AlreadyExists`] if there is one by that name.
    pub fn add(&self, user: &str, creds: &Credentials) -> Result<(), StoreError> {
        self.write(|table| {
            if table.get(user)?.is_some() {
                return Err(StoreError::AlreadyExists);
            }
            table.insert(user, encode(creds)?.as_slice())?;
            Ok(())
        })
    }

    /// Replaces a user's credentials (password change); [`StoreError::NotFound`]
    /// if there is no such user.
    pub fn set(&self, user: &str, creds: &Credentials) -> Result<(), StoreError> {
        self.write(|table| {
            if table.get(user)?.is_none() {
                return Err(StoreError::NotFound);
            }
            table.insert(user, encode(creds)?.as_slice())?;
            Ok(())
        })
    }

    /// Removes a user; [`StoreError::NotFound`] if there is no such user.
    pub fn remove(&self, user: &str) -> Result<(), StoreError> {
        self.write(|table| match table.remove(user)? {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound),
        })
    }

    /// All users, sorted by name.
    pub fn list(&self) -> Result<Vec<(String, Credentials)>, StoreError> {
        let Some(db) = self.open_existing()? else {
            return Ok(Vec::new());
        };
        let tx = db.begin_read()?;
        let table = match tx.open_table(ACCOUNTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in table.iter()? {
            let (user, value) = row?;
            let user = user.value().to_string();
            let creds = decode(&user, value.value())?;
            out.push((user, creds));
        }
        Ok(out)
    }

    pub fn get(&self, user: &str) -> Result<Option<Credentials>, StoreError> {
        let Some(db) = self.open_existing()? else {
            return Ok(None);
        };
        let tx = db.begin_read()?;
        let table = match tx.open_table(ACCOUNTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let value = table.get(user)?;
        value.map(|v| decode(user, v.value())).transpose()
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

    fn write(
        &self,
        f: impl FnOnce(&mut redb::Table<&str, &[u8]>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = self.open_waiting()?;
        let tx = db.begin_write()?;
        {
            let mut table = tx.open_table(ACCOUNTS)?;
            // On error the transaction is dropped uncommitted: nothing changes.
            f(&mut table)?;
        }
        tx.commit()?;
        // Bumped while `db` still holds the lock, so writers never race on it.
        let next = self.generation().wrapping_add(1);
        std::fs::write(self.gen_path(), format!("{next}\n"))?;
        drop(db);
        Ok(())
    }
}
