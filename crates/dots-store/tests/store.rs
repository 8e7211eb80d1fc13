//! Bindings and accounts on disk: round trips across reopening, account
//! commands, and waiting for a file another holder has locked.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dots_registrar::{hash_password, Binding, Change, Location};
use dots_sip::{Peer, TransportKind};
use dots_store::{AccountStore, BindingStore, StoreError};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "dots-store-test-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn binding(aor: &str, host: &str, expires_at: u64) -> Binding {
    Binding {
        aor: aor.into(),
        contact: format!(
            "\"Al\" <sip:alice@{host};transport=tcp>;+sip.instance=\"<urn:uuid:1>\";reg-id=1"
        ),
        contact_uri: format!("sip:alice@{host};transport=tcp"),
        q: 500,
        expires_at,
        call_id: "c1@host".into(),
        cseq: 42,
        source: Some(Peer::new(
            TransportKind::Tcp,
            "[2001:db8::1]:5061".parse().unwrap(),
        )),
        path: vec!["<sip:edge1;lr>".into(), "<sip:edge2;lr>".into()],
        user_agent: Some("phone/1.0".into()),
        instance: Some("<urn:uuid:1>".into()),
        reg_id: Some(1),
    }
}

fn sorted(mut v: Vec<Binding>) -> Vec<Binding> {
    v.sort_by(|a, b| (&a.aor, &a.contact_uri).cmp(&(&b.aor, &b.contact_uri)));
    v
}

#[test]
fn bindings_survive_reopening() {
    let dir = TempDir::new("bindings");
    let a = binding("sip:alice@example.com", "192.0.2.1", 1_000);
    let b = binding("sip:alice@example.com", "192.0.2.2", 2_000);
    let mut c = binding("sip:bob@example.com", "192.0.2.3", 3_000);
    c.source = None;
    c.path.clear();
    c.user_agent = None;
    c.instance = None;
    c.reg_id = None;
    {
        let store = BindingStore::open(&dir.0.join("nested")).unwrap();
        assert!(store.load_all().unwrap().is_empty());
        store
            .apply(&[
                Change::Upsert(a.clone()),
                Change::Upsert(b.clone()),
                Change::Upsert(c.clone()),
            ])
            .unwrap();
        assert_eq!(store.len().unwrap(), 3);
        // A refresh replaces, a removal deletes, all in one transaction.
        let mut a2 = a.clone();
        a2.cseq = 43;
        a2.expires_at = 5_000;
        store
            .apply(&[
                Change::Upsert(a2),
                Change::Remove {
                    aor: b.aor.clone(),
                    contact_uri: b.contact_uri.clone(),
                },
                Change::Remove {
                    aor: "sip:nobody@example.com".into(),
                    contact_uri: "sip:x".into(),
                },
            ])
            .unwrap();
        store.apply(&[]).unwrap();
    }
    let store = BindingStore::open(&dir.0.join("nested")).unwrap();
    let loaded = sorted(store.load_all().unwrap());
    let mut a2 = a.clone();
    a2.cseq = 43;
    a2.expires_at = 5_000;
    assert_eq!(loaded, sorted(vec![a2, c]));
    assert_eq!(store.len().unwrap(), 2);
    assert!(!store.is_empty().unwrap());
}

/// Random upserts and removals over a few AORs, in batches, against a plain
/// map: the store agrees with the map after every reopen, whether the
/// changes are still in the journal or already folded into the table.
#[test]
fn journal_and_fold_agree_with_a_model() {
    let dir = TempDir::new("journal");
    let mut model = std::collections::BTreeMap::new();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..12 {
        // Fold every 7 changes in some rounds, never (within the round) in others.
        let compact_after = if round % 3 == 0 { 1_000_000 } else { 7 };
        let store = BindingStore::open(&dir.0)
            .unwrap()
            .with_compact_after(compact_after);
        assert_eq!(
            sorted(store.load_all().unwrap()),
            model_bindings(&model),
            "round {round}"
        );
        for _ in 0..next(6) + 1 {
            let mut batch = Vec::new();
            for _ in 0..next(5) + 1 {
                let aor = format!("sip:u{}@example.com", next(4));
                let host = format!("192.0.2.{}", next(3));
                if next(3) == 0 {
                    let b = binding(&aor, &host, 0);
                    model.remove(&(aor.clone(), b.contact_uri.clone()));
                    batch.push(Change::Remove {
                        aor,
                        contact_uri: b.contact_uri,
                    });
                } else {
                    let mut b = binding(&aor, &host, next(1_000_000));
                    b.cseq = next(1000) as u32;
                    model.insert((aor, b.contact_uri.clone()), b.clone());
                    batch.push(Change::Upsert(b));
                }
            }
            store.apply(&batch).unwrap();
        }
        assert_eq!(
            sorted(store.load_all().unwrap()),
            model_bindings(&model),
            "round {round}"
        );
        if round == 10 {
            store.compact().unwrap();
        }
    }
    let store = BindingStore::open(&dir.0).unwrap();
    assert_eq!(store.len().unwrap(), model.len());
    store.compact().unwrap();
    assert_eq!(sorted(store.load_all().unwrap()), model_bindings(&model));
}

fn model_bindings(model: &std::collections::BTreeMap<(String, String), Binding>) -> Vec<Binding> {
    sorted(model.values().cloned().collect())
}

#[test]
fn corrupt_journal_rows_are_reported() {
    for row in [
        &b"\x01\x00"[..],
        &b"\x01\x00\x00\x00\x09"[..],
        &b"\x01\x00\x00\x00\x01\x03sip"[..],
    ] {
        let dir = TempDir::new("corrupt-journal");
        std::fs::create_dir_all(&dir.0).unwrap();
        {
            let db = redb::Database::create(dir.0.join("node.redb")).unwrap();
            let table: redb::TableDefinition<u64, &[u8]> =
                redb::TableDefinition::new("bindings_journal");
            let tx = db.begin_write().unwrap();
            tx.open_table(table).unwrap().insert(0, row).unwrap();
            tx.commit().unwrap();
        }
        let err = match BindingStore::open(&dir.0) {
            Err(e) => e,
            Ok(store) => store.load_all().unwrap_err(),
        };
        assert!(matches!(err, StoreError::Corrupt(_)), "{row:?}: {err:?}");
    }
}

#[test]
fn connection_ids_are_not_persisted() {
    let dir = TempDir::new("flow");
    let mut a = binding("sip:alice@example.com", "192.0.2.1", 1_000);
    a.source.as_mut().unwrap().flow = Some(7);
    {
        let store = BindingStore::open(&dir.0).unwrap();
        store.apply(&[Change::Upsert(a.clone())]).unwrap();
    }
    let loaded = BindingStore::open(&dir.0).unwrap().load_all().unwrap();
    a.source.as_mut().unwrap().flow = None;
    assert_eq!(loaded, vec![a]);
}

#[test]
fn location_changes_round_trip_through_the_store() {
    let dir = TempDir::new("location");
    let mut loc = Location::new();
    loc.upsert(binding("sip:alice@example.com", "192.0.2.1", 10_000), 0);
    loc.upsert(binding("sip:alice@example.com", "192.0.2.2", 20_000), 0);
    loc.expire(15_000);
    {
        let store = BindingStore::open(&dir.0).unwrap();
        store.apply(&loc.drain_changes()).unwrap();
    }
    let mut restored = Location::new();
    for b in BindingStore::open(&dir.0).unwrap().load_all().unwrap() {
        restored.restore(b);
    }
    assert_eq!(restored.contact_count(), 1);
    assert_eq!(
        restored.lookup("sip:alice@example.com", 15_000),
        loc.lookup("sip:alice@example.com", 15_000)
    );
}

#[test]
fn corrupt_records_are_reported() {
    let dir = TempDir::new("corrupt");
    std::fs::create_dir_all(&dir.0).unwrap();
    {
        let db = redb::Database::create(dir.0.join("node.redb")).unwrap();
        let table: redb::TableDefinition<(&str, &str), &[u8]> =
            redb::TableDefinition::new("bindings");
        let tx = db.begin_write().unwrap();
        tx.open_table(table)
            .unwrap()
            .insert(
                ("sip:alice@example.com", "sip:alice@192.0.2.1"),
                &b"{not json"[..],
            )
            .unwrap();
        tx.commit().unwrap();
    }
    let store = BindingStore::open(&dir.0).unwrap();
    let err = store.load_all().unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("sip:alice@192.0.2.1"));
}

#[test]
fn node_file_is_exclusive() {
    let dir = TempDir::new("exclusive");
    let _held = BindingStore::open(&dir.0).unwrap();
    assert!(matches!(
        BindingStore::open(&dir.0),
        Err(StoreError::Locked)
    ));
}

#[test]
fn account_commands() {
    let dir = TempDir::new("accounts");
    let accounts = AccountStore::new(&dir.0);
    // Nothing on disk yet: reads are empty and create nothing.
    assert!(accounts.list().unwrap().is_empty());
    assert_eq!(accounts.get("alice").unwrap(), None);
    assert_eq!(accounts.stamp(), None);
    assert!(!dir.0.exists());

    let alice = hash_password("alice", "example.com", "wonderland");
    let bob = hash_password("bob", "example.com", "builder");
    accounts.add("bob", &bob).unwrap();
    accounts.add("alice", &alice).unwrap();
    assert!(matches!(
        accounts.add("alice", &bob),
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(
        accounts.list().unwrap(),
        vec![
            ("alice".to_string(), alice.clone()),
            ("bob".to_string(), bob.clone())
        ]
    );
    assert!(accounts.stamp().is_some());

    let alice2 = hash_password("alice", "example.com", "looking-glass");
    accounts.set("alice", &alice2).unwrap();
    assert_eq!(accounts.get("alice").unwrap(), Some(alice2));
    assert!(matches!(
        accounts.set("carol", &bob),
        Err(StoreError::NotFound)
    ));

    accounts.remove("bob").unwrap();
    assert!(matches!(accounts.remove("bob"), Err(StoreError::NotFound)));
    assert_eq!(accounts.get("bob").unwrap(), None);
    assert_eq!(accounts.list().unwrap().len(), 1);

    // Another handle (another process, in real life) sees the same accounts.
    assert_eq!(AccountStore::new(&dir.0).list().unwrap().len(), 1);
}

#[test]
fn stamp_changes_on_writes_only() {
    let dir = TempDir::new("stamp");
    let accounts = AccountStore::new(&dir.0);
    accounts
        .add("alice", &hash_password("alice", "example.com", "pw"))
        .unwrap();
    let s1 = accounts.stamp().unwrap();
    accounts.list().unwrap();
    accounts.get("alice").unwrap();
    assert_eq!(
        accounts.stamp().unwrap(),
        s1,
        "reading must not look like an edit"
    );
    // A refused write is no edit either.
    assert!(accounts.remove("nobody").is_err());
    assert_eq!(accounts.stamp().unwrap(), s1);
    // Every write is seen, however coarse the file system's mtime.
    accounts
        .add("bob", &hash_password("bob", "example.com", "pw"))
        .unwrap();
    let s2 = accounts.stamp().unwrap();
    assert_ne!(s2, s1);
    accounts.remove("bob").unwrap();
    assert_ne!(accounts.stamp().unwrap(), s2);
}

#[test]
fn locked_accounts_file_is_waited_for() {
    let dir = TempDir::new("locked");
    let accounts = AccountStore::new(&dir.0);
    accounts
        .add("alice", &hash_password("alice", "example.com", "pw"))
        .unwrap();

    // Another holder keeps the file for 300 ms.
    let db = redb::Database::create(accounts.path()).unwrap();
    let (held_tx, held_rx) = mpsc::channel();
    let holder = std::thread::spawn(move || {
        held_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(db);
    });
    held_rx.recv().unwrap();
    let start = Instant::now();
    accounts
        .add("bob", &hash_password("bob", "example.com", "pw"))
        .unwrap();
    let waited = start.elapsed();
    holder.join().unwrap();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert_eq!(accounts.list().unwrap().len(), 2);
}

#[test]
fn locked_accounts_file_times_out() {
    let dir = TempDir::new("timeout");
    let accounts = AccountStore::new(&dir.0);
    accounts
        .add("alice", &hash_password("alice", "example.com", "pw"))
        .unwrap();
    let _held = redb::Database::create(accounts.path()).unwrap();
    let start = Instant::now();
    let err = accounts.get("alice").unwrap_err();
    assert!(matches!(err, StoreError::Locked), "{err:?}");
    assert!(start.elapsed() >= Duration::from_millis(1900));
    assert!(err.to_string().contains("locked"));
}
