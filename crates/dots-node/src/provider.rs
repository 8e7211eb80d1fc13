//! The provider API: device passwords controlled by the user's key.
//!
//! A user holding an Ed25519 key (a `dots id` wallet) asks a node, by requests
//! signed with that key (`Authorization: DOTS-JWS <token>`, see
//! `dots_identity::sign_request`), to create a SIP account for a phone:
//!
//! - `POST /api/v1/accounts/devices` `{"name": "phone", "user": "alice",
//!   "grant": {"issued", "until", "sig"}}` creates the account
//!   `alice-phone` with a random password, returned once; the node keeps only
//!   the digest verifier, the owner's DID, the device name, the handle and
//!   the grant (the user's delegation to this node, needed for the node's
//!   presence records of the DID to be valid on the overlay).
//! - `GET /api/v1/accounts/devices` lists the DID's devices.
//! - `DELETE /api/v1/accounts/devices/{name}` revokes one.
//!
//! A handle is bound to the first DID that uses it on this node. Every change
//! is in the engine before the response is sent: a revoked password is refused
//! by the very next REGISTER.
//!
//! Everything that decides (validation, name rules, JSON shapes, the engine's
//! tables) is a plain function here; the axum handlers in `http.rs` only pass
//! the request in and the answer out.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use dots_identity::{verify_request, ReplayGuard, RequestError};
use dots_proxy::AccountOwner;
use dots_records::Grant;
use dots_registrar::{hash_password, Credentials};
use dots_store::{Account, AccountStore, AccountTable, DeviceError, DeviceOwner, StoreError};
use rand::{Rng, TryRngCore};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

/// How far a signed request's timestamp may be from the node's clock.
pub const MAX_SKEW_MS: u64 = 60_000;
/// Nonces remembered by the replay guard.
pub const REPLAY_CAPACITY: usize = 100_000;
/// Devices one DID may have on a node.
pub const MAX_DEVICES_PER_DID: usize = 32;
/// Longest handle or device name.
pub const MAX_NAME_LEN: usize = 32;
/// Length of a generated device password.
pub const PASSWORD_LEN: usize = 24;
/// Letters and digits that cannot be mistaken for one another when read off a
/// screen and typed into a phone (no 0/O/o, 1/l/I/i): 55 symbols, so a
/// password carries about 139 bits.
pub const PASSWORD_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// The Authorization scheme of signed requests.
pub const AUTH_SCHEME: &str = "DOTS-JWS";

/// A refusal: an HTTP status and a message for the JSON body `{"error": …}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError::new(400, m)
    }
    fn conflict(m: impl Into<String>) -> ApiError {
        ApiError::new(409, m)
    }
    fn internal(m: impl std::fmt::Display) -> ApiError {
        tracing::warn!(error = %m, "provider API: internal error");
        ApiError::new(500, format!("internal error: {m}"))
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({ "error": self.message })
    }
}

/// A successful answer: status and JSON body.
pub type ApiResult = Result<(u16, Value), ApiError>;

// ---------------------------------------------------------------------------
// Rules and shapes
// ---------------------------------------------------------------------------

/// A handle or a device name: 1 to 32 of lowercase letters, digits, '-', '_',
/// '.', beginning with a letter or digit (so that it is a plain SIP user part
/// and a plain URL path segment).
pub fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        Err(ApiError::bad_request(format!(
            "invalid {what} {name:?}: {why}; use 1-{MAX_NAME_LEN} lowercase letters, digits, '-', '_' or '.', beginning with a letter or digit"
        )))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is too long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
    {
        return bad("it holds other characters");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("it begins with a symbol");
    }
    Ok(())
}

/// The SIP user name of `handle`'s device `device`.
pub fn device_username(handle: &str, device: &str) -> String {
    format!("{handle}-{device}")
}

/// A fresh device password: [`PASSWORD_LEN`] symbols of
/// [`PASSWORD_ALPHABET`], drawn uniformly from the operating system's RNG.
pub fn new_password() -> String {
    let mut rng = rand::rngs::OsRng.unwrap_err();
    (0..PASSWORD_LEN)
        .map(|_| PASSWORD_ALPHABET[rng.random_range(0..PASSWORD_ALPHABET.len())] as char)
        .collect()
}

/// The token of an `Authorization: DOTS-JWS <token>` header.
pub fn parse_authorization(header: Option<&[u8]>) -> Result<&str, ApiError> {
    let missing = || {
        ApiError::new(
            401,
            format!("missing Authorization header: sign the request with your key ({AUTH_SCHEME} <token>, as `dots id device` does)"),
        )
    };
    let header = header.ok_or_else(missing)?;
    let header = std::str::from_utf8(header)
        .map_err(|_| ApiError::bad_request("malformed Authorization header: not UTF-8"))?;
    let (scheme, token) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if !scheme.eq_ignore_ascii_case(AUTH_SCHEME) {
        return Err(ApiError::new(
            401,
            format!("unsupported Authorization scheme {scheme:?}: expected {AUTH_SCHEME}"),
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::bad_request(format!(
            "malformed Authorization header: no token after {AUTH_SCHEME}"
        )));
    }
    Ok(token)
}

/// The status of a refused signed request: 400 for a token that cannot be
/// read, 401 for one that does not authenticate this request now.
pub fn request_error(e: &RequestError) -> ApiError {
    let status = match e {
        RequestError::Malformed(_)
        | RequestError::WrongAlgorithm(_)
        | RequestError::MalformedDid(_)
        | RequestError::SignatureLength(_) => 400,
        RequestError::BadSignature
        | RequestError::Stale { .. }
        | RequestError::Replayed
        | RequestError::Forgotten
        | RequestError::Mismatch(_) => 401,
    };
    ApiError::new(status, e.to_string())
}

/// The body of `POST /api/v1/accounts/devices`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddDeviceRequest {
    /// The device's name (`phone`).
    pub name: String,
    /// The handle (`alice`); absent: the handle already bound to the DID, if
    /// it has exactly one.
    #[serde(default)]
    pub user: Option<String>,
    /// The user's delegation to this node.
    #[serde(default)]
    pub grant: Option<GrantJson>,
}

/// A grant as sent by a client: the DID and the node are implied.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantJson {
    pub issued: u64,
    pub until: u64,
    /// base64url (no padding) of the 64-byte Ed25519 signature.
    pub sig: String,
}

/// Parses and checks the shape of an add-device body (not the grant's
/// signature: see [`check_grant`]).
pub fn parse_add_request(body: &[u8]) -> Result<AddDeviceRequest, ApiError> {
    let req: AddDeviceRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid JSON body: {e}; expected {{\"name\": DEVICE, \"user\": HANDLE, \"grant\": {{\"issued\", \"until\", \"sig\"}}}}"
        ))
    })?;
    check_name("device name", &req.name)?;
    if let Some(user) = &req.user {
        check_name("user handle", user)?;
    }
    Ok(req)
}

/// The grant of a request, checked against the signer's DID and this node's
/// PeerId: signed by the DID's key, for this node, not expired at `now`.
/// `node` is `None` when the node runs without the overlay, which publishes
/// nothing and so takes no grant.
pub fn check_grant(
    did: &str,
    node: Option<&[u8]>,
    grant: Option<&GrantJson>,
    now: u64,
) -> Result<Option<Grant>, ApiError> {
    let Some(g) = grant else {
        return Ok(None);
    };
    let Some(node) = node else {
        return Err(ApiError::bad_request(
            "this node runs without the overlay and publishes no presence: it takes no grant; leave \"grant\" out",
        ));
    };
    let sig = B64
        .decode(g.sig.trim_end_matches('='))
        .map_err(|_| ApiError::bad_request("bad grant: \"sig\" is not base64url"))?;
    let signature: [u8; 64] = sig.as_slice().try_into().map_err(|_| {
        ApiError::bad_request(format!(
            "bad grant: signature of {} bytes, expected 64",
            sig.len()
        ))
    })?;
    if g.until <= g.issued {
        return Err(ApiError::bad_request(
            "bad grant: \"until\" is not after \"issued\"",
        ));
    }
    let grant = Grant {
        did: did.to_string(),
        node: node.to_vec(),
        issued: g.issued,
        until: g.until,
        signature,
    };
    grant.check(did, node, now).map_err(|e| {
        ApiError::bad_request(format!(
            "bad grant: {e} (sign it with the same key as the request, for this node's peer_id from GET /api/v1/node)"
        ))
    })?;
    Ok(Some(grant))
}

/// The handle of an add-device request: the one given, else the one bound to
/// the DID if there is exactly one.
pub fn choose_handle(
    given: Option<&str>,
    did: &str,
    handles: &BTreeMap<String, String>,
) -> Result<String, ApiError> {
    if let Some(h) = given {
        return Ok(h.to_string());
    }
    let mine: Vec<&String> = handles
        .iter()
        .filter(|(_, d)| d.as_str() == did)
        .map(|(h, _)| h)
        .collect();
    match mine.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(ApiError::bad_request(
            "no \"user\" given and this identity has no handle on this node yet: give one (\"user\": \"alice\")",
        )),
        _ => Err(ApiError::bad_request(format!(
            "no \"user\" given and this identity has several handles here ({}): name one",
            mine.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// What the node says about itself in the answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Digest realm.
    pub realm: String,
    /// The domain of the AORs (the first `--domain`, else the SIP host).
    pub domain: String,
    /// Where phones register, `sip:HOST:PORT`.
    pub registrar: String,
}

/// The 201 body of a created device account: what the phone needs.
pub fn created_json(
    info: &ServiceInfo,
    did: &str,
    handle: &str,
    device: &str,
    username: &str,
    password: &str,
    grant: Option<&Grant>,
) -> Value {
    json!({
        "username": username,
        "password": password,
        "realm": info.realm,
        "domain": info.domain,
        "aor": format!("sip:{username}@{}", info.domain),
        "did": did,
        "registrar": info.registrar,
        "user": handle,
        "device": device,
        "grant_until": grant.map(|g| g.until),
    })
}

/// One device in the list (never a password or a verifier).
pub fn device_json(account: &Account) -> Option<Value> {
    let o = account.owner.as_ref()?;
    let grant_until = o
        .grant
        .as_deref()
        .and_then(|g| Grant::decode(g).ok())
        .map(|g| g.until);
    Some(json!({
        "name": o.device,
        "username": account.user,
        "user": o.handle,
        "created": o.created,
        "grant_until": grant_until,
    }))
}

/// A store refusal of an add-device as an HTTP answer.
pub fn device_error(e: DeviceError) -> ApiError {
    match e {
        DeviceError::HandleTaken { handle, .. } => ApiError::conflict(format!(
            "the handle {handle:?} is taken on this node by another identity; choose another (--user)"
        )),
        DeviceError::HandleIsAccount(h) => ApiError::conflict(format!(
            "the handle {h:?} is taken on this node by an account; choose another (--user)"
        )),
        DeviceError::DeviceExists(d) => ApiError::conflict(format!(
            "you already have a device named {d:?} on this node; choose another name, or revoke it first"
        )),
        DeviceError::UserNameTaken(u) => ApiError::conflict(format!(
            "the SIP user name {u:?} is taken on this node; choose another device name"
        )),
        DeviceError::TooManyDevices(n) => ApiError::conflict(format!(
            "you already have {n} devices on this node, the most allowed; revoke one first"
        )),
        DeviceError::Store(e) => store_error(e),
    }
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Locked => ApiError::new(
            503,
            "the accounts file is busy (a `dots user` command?); try again",
        ),
        e => ApiError::internal(e),
    }
}

// ---------------------------------------------------------------------------
// The engine's account tables
// ---------------------------------------------------------------------------

/// What the engine needs from the accounts file.
#[derive(Debug, Clone, Default)]
pub struct EngineTables {
    /// User name → digest credentials (every account).
    pub accounts: HashMap<String, Credentials>,
    /// Device user name and handle → owner DID and grant.
    pub owners: HashMap<String, AccountOwner>,
    /// Handle → DID, for the names service.
    pub handles: BTreeMap<String, String>,
}

/// The engine's tables from the accounts file: credentials of every
/// account; an owner for every device account and every handle, with the
/// most recent (latest `issued`) grant among the DID's devices. A DID none of
/// whose devices carries a grant has no owner entries: the engine's owner
/// needs a grant, and a node that holds none publishes nothing for the DID.
pub fn engine_tables(table: &AccountTable, realm: &str) -> EngineTables {
    let mut out = EngineTables::default();
    let mut best: HashMap<&str, Grant> = HashMap::new();
    for a in &table.accounts {
        if a.creds.realm != realm {
            tracing::warn!(
                user = %a.user,
                account_realm = %a.creds.realm,
                node_realm = %realm,
                "account was created for another realm and cannot log in here; reset it with `dots user passwd`"
            );
        }
        out.accounts.insert(a.user.clone(), a.creds.clone());
        let Some(o) = &a.owner else { continue };
        let Some(bytes) = &o.grant else { continue };
        match Grant::decode(bytes) {
            Ok(g) if g.did == o.did => {
                let newer = match best.get(o.did.as_str()) {
                    Some(b) => g.issued > b.issued,
                    None => true,
                };
                if newer {
                    best.insert(&o.did, g);
                }
            }
            Ok(_) => tracing::warn!(user = %a.user, "stored grant names another DID; ignored"),
            Err(e) => {
                tracing::warn!(user = %a.user, error = %e, "stored grant unreadable; ignored")
            }
        }
    }
    let owner = |did: &str| {
        best.get(did).map(|g| AccountOwner {
            did: did.to_string(),
            grant: g.clone(),
        })
    };
    for a in &table.accounts {
        if let Some(o) = a.owner.as_ref().and_then(|o| owner(&o.did)) {
            out.owners.insert(a.user.clone(), o);
        }
    }
    for (handle, binding) in &table.handles {
        out.handles.insert(handle.clone(), binding.did.clone());
        if let Some(o) = owner(&binding.did) {
            out.owners.insert(handle.clone(), o);
        }
    }
    out
}

/// A new account table for the engine loop, and whom to tell once it is in.
pub struct AccountsUpdate {
    pub accounts: HashMap<String, Credentials>,
    pub owners: HashMap<String, AccountOwner>,
    pub done: Vec<oneshot::Sender<()>>,
}

/// Handle → DID, as last loaded; read by the names service.
pub type Handles = Arc<RwLock<BTreeMap<String, String>>>;

/// Asks the account loader to read the accounts file again.
#[derive(Clone)]
pub struct Reloader {
    tx: mpsc::Sender<Option<oneshot::Sender<()>>>,
}

impl Reloader {
    /// A reload, without waiting for it (the poll of `accounts.gen`).
    pub fn request(&self) {
        let _ = self.tx.try_send(None);
    }

    /// A reload that started after this call, in the engine when it returns
    /// true; false if it failed (the poll retries).
    pub async fn reload_now(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Some(tx)).await.is_err() {
            return false;
        }
        rx.await.is_ok()
    }
}

/// Starts the account loader: one task that reads the accounts file on
/// request, one read at a time, so tables reach the engine in the order they
/// were read and a newer one is never overwritten by an older one.
pub fn spawn_loader(
    data_dir: PathBuf,
    realm: String,
    handles: Handles,
    engine: mpsc::Sender<AccountsUpdate>,
) -> Reloader {
    let (tx, mut rx) = mpsc::channel::<Option<oneshot::Sender<()>>>(256);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut done: Vec<_> = first.into_iter().collect();
            while let Ok(more) = rx.try_recv() {
                done.extend(more);
            }
            let store = AccountStore::new(&data_dir);
            let realm = realm.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                store.load().map(|t| engine_tables(&t, &realm))
            })
            .await;
            match loaded {
                Ok(Ok(tables)) => {
                    *handles.write().unwrap_or_else(|e| e.into_inner()) = tables.handles;
                    let update = AccountsUpdate {
                        accounts: tables.accounts,
                        owners: tables.owners,
                        done,
                    };
                    if engine.send(update).await.is_err() {
                        return;
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "could not reload accounts"),
                Err(e) => tracing::warn!(error = %e, "account loader failed"),
            }
        }
    });
    Reloader { tx }
}

// ---------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------

/// The provider API's state, shared by its handlers.
pub struct Provider {
    data_dir: PathBuf,
    info: ServiceInfo,
    /// This node's PeerId bytes, when it runs with the overlay.
    peer_id: Option<Vec<u8>>,
    replay: Mutex<ReplayGuard>,
    reloader: Reloader,
    handles: Handles,
}

/// Milliseconds since the UNIX epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Provider {
    pub fn new(
        data_dir: PathBuf,
        info: ServiceInfo,
        peer_id: Option<Vec<u8>>,
        reloader: Reloader,
        handles: Handles,
    ) -> Provider {
        Provider {
            data_dir,
            info,
            peer_id,
            replay: Mutex::new(ReplayGuard::new(REPLAY_CAPACITY)),
            reloader,
            handles,
        }
    }

    /// The signer's DID, if `token` signs exactly this request, now, once.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<String, ApiError> {
        let token = parse_authorization(authorization)?;
        let mut replay = self.replay.lock().unwrap_or_else(|e| e.into_inner());
        verify_request(
            token,
            method,
            path,
            body,
            now_ms(),
            MAX_SKEW_MS,
            &mut replay,
        )
        .map_err(|e| request_error(&e))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(AccountStore) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = AccountStore::new(&self.data_dir);
        tokio::task::spawn_blocking(move || f(store))
            .await
            .map_err(ApiError::internal)
    }

    /// Puts the stored change into the engine before the answer goes out.
    async fn apply(&self) -> Result<(), ApiError> {
        if self.reloader.reload_now().await {
            Ok(())
        } else {
            Err(ApiError::new(
                503,
                "the change is stored, but the node could not reload its accounts yet; it retries within a second",
            ))
        }
    }

    /// `POST /api/v1/accounts/devices`.
    pub async fn add_device(
        &self,
        authorization: Option<&[u8]>,
        path: &str,
        body: &[u8],
    ) -> ApiResult {
        let did = self.authenticate(authorization, "POST", path, body)?;
        let req = parse_add_request(body)?;
        let now = now_ms();
        let grant = check_grant(&did, self.peer_id.as_deref(), req.grant.as_ref(), now)?;
        let handle = {
            let handles = self.handles.read().unwrap_or_else(|e| e.into_inner());
            choose_handle(req.user.as_deref(), &did, &handles)?
        };
        let username = device_username(&handle, &req.name);
        let password = new_password();
        let creds = hash_password(&username, &self.info.realm, &password);
        let owner = DeviceOwner {
            did: did.clone(),
            device: req.name.clone(),
            handle: handle.clone(),
            created: now,
            grant: grant.as_ref().map(Grant::encode),
        };
        let user = username.clone();
        self.blocking(move |store| store.add_device(&user, &creds, &owner, MAX_DEVICES_PER_DID))
            .await?
            .map_err(device_error)?;
        tracing::info!(%did, user = %username, "device account created");
        self.apply().await?;
        Ok((
            201,
            created_json(
                &self.info,
                &did,
                &handle,
                &req.name,
                &username,
                &password,
                grant.as_ref(),
            ),
        ))
    }

    /// `GET /api/v1/accounts/devices`.
    pub async fn list_devices(&self, authorization: Option<&[u8]>, path: &str) -> ApiResult {
        let did = self.authenticate(authorization, "GET", path, b"")?;
        let d = did.clone();
        let devices = self
            .blocking(move |store| store.devices(&d))
            .await?
            .map_err(store_error)?;
        let handles: Vec<String> = self
            .handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, d)| **d == did)
            .map(|(h, _)| h.clone())
            .collect();
        let devices: Vec<Value> = devices.iter().filter_map(device_json).collect();
        Ok((
            200,
            json!({ "did": did, "handles": handles, "devices": devices }),
        ))
    }

    /// `DELETE /api/v1/accounts/devices/{name}`.
    pub async fn revoke_device(
        &self,
        authorization: Option<&[u8]>,
        path: &str,
        name: &str,
    ) -> ApiResult {
        let did = self.authenticate(authorization, "DELETE", path, b"")?;
        check_name("device name", name)?;
        let (d, n) = (did.clone(), name.to_string());
        let removed = self
            .blocking(move |store| store.remove_device(&d, &n))
            .await?
            .map_err(|e| match e {
                StoreError::NotFound => ApiError::new(
                    404,
                    format!("you have no device named {name:?} on this node"),
                ),
                e => store_error(e),
            })?;
        tracing::info!(%did, user = %removed.user, "device account revoked");
        self.apply().await?;
        Ok((
            200,
            json!({ "revoked": name, "username": removed.user, "did": did }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dots_identity::{new_nonce, sign_request, Wallet};
    use dots_store::HandleBinding;

    #[test]
    fn name_rules() {
        for ok in ["alice", "a", "al.ice_2-x", "0", &"a".repeat(32)] {
            check_name("handle", ok).unwrap();
        }
        for bad in [
            "",
            "Alice",
            "al ice",
            "-alice",
            ".alice",
            "..",
            "al/ice",
            "al%41",
            "alice@x",
            "é",
            &"a".repeat(33),
        ] {
            let e = check_name("handle", bad).unwrap_err();
            assert_eq!(e.status, 400, "{bad:?}");
            assert!(e.message.contains("invalid handle"), "{}", e.message);
        }
        assert_eq!(device_username("alice", "phone"), "alice-phone");
    }

    #[test]
    fn passwords_are_long_random_and_unambiguous() {
        let a = new_password();
        let b = new_password();
        assert_eq!(a.len(), PASSWORD_LEN);
        assert!(a.len() >= 20);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| PASSWORD_ALPHABET.contains(&c)));
        for ambiguous in b"0O1lIio" {
            assert!(!PASSWORD_ALPHABET.contains(ambiguous));
        }
    }

    #[test]
    fn authorization_header() {
        assert_eq!(
            parse_authorization(Some(b"DOTS-JWS a.b.c")).unwrap(),
            "a.b.c"
        );
        assert_eq!(
            parse_authorization(Some(b"dots-jws  a.b.c ")).unwrap(),
            "a.b.c"
        );
        assert_eq!(parse_authorization(None).unwrap_err().status, 401);
        assert_eq!(
            parse_authorization(Some(b"Bearer x")).unwrap_err().status,
            401
        );
        assert_eq!(
            parse_authorization(Some(b"DOTS-JWS")).unwrap_err().status,
            400
        );
        assert_eq!(
            parse_authorization(Some(b"DOTS-JWS \xff"))
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn request_errors_map_to_statuses() {
        assert_eq!(request_error(&RequestError::Replayed).status, 401);
        assert!(request_error(&RequestError::Replayed)
            .message
            .starts_with("replayed nonce"));
        assert_eq!(request_error(&RequestError::SignatureLength(3)).status, 400);
        assert_eq!(
            request_error(&RequestError::MalformedDid("x".into())).status,
            400
        );
        assert_eq!(request_error(&RequestError::BadSignature).status, 401);
        let stale = RequestError::Stale {
            ts: 0,
            now: 100_000,
            max_skew: 60_000,
        };
        assert_eq!(request_error(&stale).status, 401);
    }

    #[test]
    fn add_request_bodies() {
        let r = parse_add_request(br#"{"name":"phone","user":"alice"}"#).unwrap();
        assert_eq!(
            (r.name.as_str(), r.user.as_deref()),
            ("phone", Some("alice"))
        );
        assert_eq!(r.grant, None);
        let r = parse_add_request(br#"{"name":"phone","grant":{"issued":1,"until":2,"sig":"AA"}}"#)
            .unwrap();
        assert_eq!(r.grant.unwrap().until, 2);
        for bad in [
            &b""[..],
            b"[]",
            b"{}",
            br#"{"name":"Phone"}"#,
            br#"{"name":"phone","user":"a b"}"#,
            br#"{"name":"phone","extra":1}"#,
            br#"{"name":"phone","grant":{"issued":1}}"#,
            b"\xff\xfe",
        ] {
            assert_eq!(parse_add_request(bad).unwrap_err().status, 400);
        }
    }

    #[test]
    fn grants_are_checked_against_signer_and_node() {
        let user = Wallet::generate(None);
        let other = Wallet::generate(None);
        let node = dots_records::NodeKey::generate().peer_id_bytes();
        let elsewhere = dots_records::NodeKey::generate().peer_id_bytes();
        let now = 1_700_000_000_000;
        let json_of = |g: &Grant| GrantJson {
            issued: g.issued,
            until: g.until,
            sig: B64.encode(g.signature),
        };
        let good = Grant::new_signed(&user.did(), &node, now, now + 1000, |m| user.sign(m));
        let got = check_grant(&user.did(), Some(&node), Some(&json_of(&good)), now).unwrap();
        assert_eq!(got, Some(good.clone()));
        assert_eq!(
            check_grant(&user.did(), Some(&node), None, now).unwrap(),
            None
        );
        // Signed by another key, for another node, expired, no overlay, bad sig.
        let by_other = Grant::new_signed(&user.did(), &node, now, now + 1000, |m| other.sign(m));
        let for_elsewhere =
            Grant::new_signed(&user.did(), &elsewhere, now, now + 1000, |m| user.sign(m));
        for g in [&by_other, &for_elsewhere] {
            let e = check_grant(&user.did(), Some(&node), Some(&json_of(g)), now).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.starts_with("bad grant"), "{}", e.message);
        }
        let e =
            check_grant(&user.did(), Some(&node), Some(&json_of(&good)), now + 2000).unwrap_err();
        assert!(e.message.contains("ends before"), "{}", e.message);
        let e = check_grant(&user.did(), None, Some(&json_of(&good)), now).unwrap_err();
        assert!(e.message.contains("without the overlay"), "{}", e.message);
        let mut short = json_of(&good);
        short.sig = B64.encode([1u8; 10]);
        let e = check_grant(&user.did(), Some(&node), Some(&short), now).unwrap_err();
        assert!(e.message.contains("10 bytes"), "{}", e.message);
        short.sig = "!!".into();
        assert_eq!(
            check_grant(&user.did(), Some(&node), Some(&short), now)
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn handle_defaults_to_the_one_bound() {
        let mut handles = BTreeMap::new();
        assert_eq!(choose_handle(Some("al"), "did:a", &handles).unwrap(), "al");
        assert_eq!(
            choose_handle(None, "did:a", &handles).unwrap_err().status,
            400
        );
        handles.insert("alice".to_string(), "did:a".to_string());
        handles.insert("bob".to_string(), "did:b".to_string());
        assert_eq!(choose_handle(None, "did:a", &handles).unwrap(), "alice");
        handles.insert("al".to_string(), "did:a".to_string());
        let e = choose_handle(None, "did:a", &handles).unwrap_err();
        assert!(e.message.contains("al, alice"), "{}", e.message);
    }

    #[test]
    fn signed_requests_are_accepted_once() {
        let dir = std::env::temp_dir().join(format!("dots-provider-unit-{}", std::process::id()));
        let (tx, _rx) = mpsc::channel(1);
        let provider = Provider::new(
            dir,
            ServiceInfo {
                realm: "dots".into(),
                domain: "example.test".into(),
                registrar: "sip:127.0.0.1:5060".into(),
            },
            None,
            Reloader { tx },
            Handles::default(),
        );
        let wallet = Wallet::generate(Some("alice".into()));
        let path = "/api/v1/accounts/devices";
        let token = sign_request(&wallet, "GET", path, b"", now_ms(), &new_nonce());
        let header = format!("DOTS-JWS {token}");
        let did = provider
            .authenticate(Some(header.as_bytes()), "GET", path, b"")
            .unwrap();
        assert_eq!(did, wallet.did());
        let again = provider
            .authenticate(Some(header.as_bytes()), "GET", path, b"")
            .unwrap_err();
        assert_eq!(again.status, 401);
        assert!(
            again.message.starts_with("replayed nonce"),
            "{}",
            again.message
        );
        // Signed for another path or body.
        let token = sign_request(&wallet, "GET", path, b"", now_ms(), &new_nonce());
        let header = format!("DOTS-JWS {token}");
        let e = provider
            .authenticate(Some(header.as_bytes()), "GET", "/other", b"")
            .unwrap_err();
        assert_eq!(e.status, 401);
        // Signed an hour ago.
        let token = sign_request(
            &wallet,
            "GET",
            path,
            b"",
            now_ms() - 3_600_000,
            &new_nonce(),
        );
        let header = format!("DOTS-JWS {token}");
        let e = provider
            .authenticate(Some(header.as_bytes()), "GET", path, b"")
            .unwrap_err();
        assert!(e.message.starts_with("stale timestamp"), "{}", e.message);
    }

    fn account(user: &str, owner: Option<DeviceOwner>) -> Account {
        Account {
            user: user.into(),
            creds: hash_password(user, "dots", "pw"),
            owner,
        }
    }

    #[test]
    fn engine_tables_give_owners_to_devices_and_handles() {
        let alice = Wallet::generate(None);
        let bob = Wallet::generate(None);
        let node = dots_records::NodeKey::generate().peer_id_bytes();
        let old = Grant::new_signed(&alice.did(), &node, 10, 1000, |m| alice.sign(m));
        let new = Grant::new_signed(&alice.did(), &node, 20, 900, |m| alice.sign(m));
        let dev = |did: &str, handle: &str, device: &str, grant: Option<&Grant>| DeviceOwner {
            did: did.into(),
            device: device.into(),
            handle: handle.into(),
            created: 1,
            grant: grant.map(Grant::encode),
        };
        let table = AccountTable {
            accounts: vec![
                account(
                    "alice-desk",
                    Some(dev(&alice.did(), "alice", "desk", Some(&new))),
                ),
                account(
                    "alice-phone",
                    Some(dev(&alice.did(), "alice", "phone", Some(&old))),
                ),
                account("alice-tv", Some(dev(&alice.did(), "alice", "tv", None))),
                account("bob-phone", Some(dev(&bob.did(), "bob", "phone", None))),
                account("carol", None),
            ],
            handles: [
                ("alice".to_string(), alice.did()),
                ("bob".to_string(), bob.did()),
            ]
            .into_iter()
            .map(|(h, did)| (h, HandleBinding { did, created: 1 }))
            .collect(),
        };
        let t = engine_tables(&table, "dots");
        assert_eq!(t.accounts.len(), 5);
        assert_eq!(t.accounts["carol"], hash_password("carol", "dots", "pw"));
        // Every device of alice, and her handle, with her latest grant.
        for user in ["alice-desk", "alice-phone", "alice-tv", "alice"] {
            let o = &t.owners[user];
            assert_eq!(o.did, alice.did());
            assert_eq!(o.grant, new, "{user}");
        }
        // Bob gave no grant: no owner entries; carol is no device.
        assert!(!t.owners.contains_key("bob-phone"));
        assert!(!t.owners.contains_key("bob"));
        assert!(!t.owners.contains_key("carol"));
        assert_eq!(t.handles["bob"], bob.did());
    }

    #[test]
    fn answers_have_the_documented_shape() {
        let info = ServiceInfo {
            realm: "dots".into(),
            domain: "example.test".into(),
            registrar: "sip:127.0.0.1:5060".into(),
        };
        let v = created_json(
            &info,
            "did:key:z6Mk",
            "alice",
            "phone",
            "alice-phone",
            "pw",
            None,
        );
        for (k, want) in [
            ("username", "alice-phone"),
            ("password", "pw"),
            ("realm", "dots"),
            ("domain", "example.test"),
            ("aor", "sip:alice-phone@example.test"),
            ("did", "did:key:z6Mk"),
            ("registrar", "sip:127.0.0.1:5060"),
        ] {
            assert_eq!(v[k], want, "{k}");
        }
        let a = account(
            "alice-phone",
            Some(DeviceOwner {
                did: "did:key:z6Mk".into(),
                device: "phone".into(),
                handle: "alice".into(),
                created: 7,
                grant: None,
            }),
        );
        let d = device_json(&a).unwrap();
        assert_eq!(
            d,
            json!({"name": "phone", "username": "alice-phone", "user": "alice", "created": 7, "grant_until": null})
        );
        assert!(device_json(&account("carol", None)).is_none());
        assert_eq!(ApiError::new(409, "x").body(), json!({"error": "x"}));
    }
}
