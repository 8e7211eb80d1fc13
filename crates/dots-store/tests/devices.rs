//! Device accounts owned by a DID, handle bindings, and how they live
//! together with the accounts of `dots user`.

use std::path::PathBuf;

use dots_registrar::hash_password;
use dots_store::{AccountStore, DeviceError, DeviceOwner, StoreError};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        TempDir(std::env::temp_dir().join(format!(
            "dots-store-devices-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        )))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const ALICE: &str = "did:key:z6MkALICE";
const BOB: &str = "did:key:z6MkBOB";

fn owner(did: &str, handle: &str, device: &str, grant: Option<Vec<u8>>) -> DeviceOwner {
    DeviceOwner {
        did: did.into(),
        device: device.into(),
        handle: handle.into(),
        created: 1_700_000_000_000,
        grant,
    }
}

fn add(store: &AccountStore, o: &DeviceOwner) -> Result<String, DeviceError> {
    let user = format!("{}-{}", o.handle, o.device);
    store.add_device(&user, &hash_password(&user, "dots", "pw"), o, 4)?;
    Ok(user)
}

#[test]
fn device_accounts_round_trip_with_owner_and_grant() {
    let dir = TempDir::new("round-trip");
    let store = AccountStore::new(&dir.0);
    add(&store, &owner(ALICE, "alice", "phone", Some(vec![1, 2, 3]))).unwrap();
    add(&store, &owner(ALICE, "alice", "desk", None)).unwrap();
    store
        .add("carol", &hash_password("carol", "dots", "x"))
        .unwrap();

    let table = store.load().unwrap();
    let users: Vec<&str> = table.accounts.iter().map(|a| a.user.as_str()).collect();
    assert_eq!(users, ["alice-desk", "alice-phone", "carol"]);
    let phone = &table.accounts[1];
    assert_eq!(phone.creds, hash_password("alice-phone", "dots", "pw"));
    assert_eq!(
        phone.owner,
        Some(owner(ALICE, "alice", "phone", Some(vec![1, 2, 3])))
    );
    assert_eq!(table.accounts[2].owner, None);
    assert_eq!(table.handles.len(), 1);
    assert_eq!(table.handles["alice"].did, ALICE);
    assert_eq!(store.handle("alice").unwrap().unwrap().did, ALICE);
    assert_eq!(store.handle("nobody").unwrap(), None);

    let devices = store.devices(ALICE).unwrap();
    let names: Vec<&str> = devices
        .iter()
        .map(|a| a.owner.as_ref().unwrap().device.as_str())
        .collect();
    assert_eq!(names, ["desk", "phone"]);
    assert!(store.devices(BOB).unwrap().is_empty());
    // `dots user list` sees device accounts as accounts.
    assert_eq!(store.list().unwrap().len(), 3);
}

#[test]
fn conflicts_are_refused_without_writing() {
    let dir = TempDir::new("conflicts");
    let store = AccountStore::new(&dir.0);
    add(&store, &owner(ALICE, "alice", "phone", None)).unwrap();
    store
        .add("dave", &hash_password("dave", "dots", "x"))
        .unwrap();
    let before = store.load().unwrap();

    // Another DID cannot use a bound handle.
    match add(&store, &owner(BOB, "alice", "laptop", None)) {
        Err(DeviceError::HandleTaken { handle, did }) => {
            assert_eq!((handle.as_str(), did.as_str()), ("alice", ALICE))
        }
        other => panic!("expected HandleTaken, got {other:?}"),
    }
    // The same device name twice for one DID, even under another handle.
    assert!(matches!(
        add(&store, &owner(ALICE, "alice", "phone", None)),
        Err(DeviceError::DeviceExists(_))
    ));
    assert!(matches!(
        add(&store, &owner(ALICE, "al", "phone", None)),
        Err(DeviceError::DeviceExists(_))
    ));
    // A handle that is the name of an account.
    assert!(matches!(
        add(&store, &owner(BOB, "dave", "phone", None)),
        Err(DeviceError::HandleIsAccount(_))
    ));
    assert!(matches!(
        add(&store, &owner(BOB, "alice-phone", "x", None)),
        Err(DeviceError::HandleIsAccount(_))
    ));
    // A user name that exists already: "alice" + "work-phone" and
    // "alice-work" + "phone"; the refused add binds no handle.
    add(&store, &owner(ALICE, "alice", "work-phone", None)).unwrap();
    assert!(matches!(
        add(&store, &owner(BOB, "alice-work", "phone", None)),
        Err(DeviceError::UserNameTaken(u)) if u == "alice-work-phone"
    ));
    assert_eq!(store.handle("alice-work").unwrap(), None);
    // A device user name that is a bound handle.
    add(&store, &owner(BOB, "bob-x", "y", None)).unwrap();
    assert!(matches!(
        add(&store, &owner(BOB, "bob", "x", None)),
        Err(DeviceError::UserNameTaken(u)) if u == "bob-x"
    ));
    // `dots user add` cannot take a bound handle's name.
    assert!(matches!(
        store.add("alice", &hash_password("alice", "dots", "x")),
        Err(StoreError::AlreadyExists)
    ));
    // The per-DID limit (4 here).
    add(&store, &owner(ALICE, "alice", "d3", None)).unwrap();
    add(&store, &owner(ALICE, "alice", "d4", None)).unwrap();
    assert!(matches!(
        add(&store, &owner(ALICE, "alice", "d5", None)),
        Err(DeviceError::TooManyDevices(4))
    ));
    let after = store.load().unwrap();
    assert_eq!(
        after.handles.len(),
        before.handles.len() + 1,
        "only bob-x bound"
    );
}

#[test]
fn revoking_removes_the_account_and_keeps_the_handle() {
    let dir = TempDir::new("revoke");
    let store = AccountStore::new(&dir.0);
    add(&store, &owner(ALICE, "alice", "phone", None)).unwrap();
    let stamp = store.stamp();
    let removed = store.remove_device(ALICE, "phone").unwrap();
    assert_eq!(removed.user, "alice-phone");
    assert_ne!(store.stamp(), stamp, "a revocation is an edit");
    assert!(store.get("alice-phone").unwrap().is_none());
    assert!(store.devices(ALICE).unwrap().is_empty());
    assert!(matches!(
        store.remove_device(ALICE, "phone"),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.remove_device(BOB, "phone"),
        Err(StoreError::NotFound)
    ));
    // The handle stays with its DID: nobody else can take it over.
    assert_eq!(store.handle("alice").unwrap().unwrap().did, ALICE);
    assert!(matches!(
        add(&store, &owner(BOB, "alice", "phone", None)),
        Err(DeviceError::HandleTaken { .. })
    ));
    // The same name can be used again by its DID.
    add(&store, &owner(ALICE, "alice", "phone", None)).unwrap();
}

#[test]
fn user_commands_on_device_accounts() {
    let dir = TempDir::new("user-commands");
    let store = AccountStore::new(&dir.0);
    add(&store, &owner(ALICE, "alice", "phone", Some(vec![9]))).unwrap();
    // A new password keeps the owner.
    store
        .set("alice-phone", &hash_password("alice-phone", "dots", "new"))
        .unwrap();
    let account = store.get_account("alice-phone").unwrap().unwrap();
    assert_eq!(account.creds, hash_password("alice-phone", "dots", "new"));
    assert_eq!(account.owner.unwrap().grant, Some(vec![9]));
    // Removing it as a user also removes it from the DID's devices.
    store.remove("alice-phone").unwrap();
    assert!(store.devices(ALICE).unwrap().is_empty());
    add(&store, &owner(ALICE, "alice", "phone", None)).unwrap();
}

#[test]
fn files_without_device_tables_load() {
    let dir = TempDir::new("legacy");
    let store = AccountStore::new(&dir.0);
    assert_eq!(store.load().unwrap(), Default::default());
    assert!(!store.path().exists(), "reading must not create the file");
    store
        .add("carol", &hash_password("carol", "dots", "x"))
        .unwrap();
    let table = store.load().unwrap();
    assert_eq!(table.accounts.len(), 1);
    assert!(table.handles.is_empty());
    assert!(store.devices(ALICE).unwrap().is_empty());
    assert_eq!(store.handle("carol").unwrap(), None);
}
