//! Users who own their identity: DID addresses of record, device accounts owned by a
//! DID, deep login (REGISTER authorized by the user's key, `dots_identity::login`).

use dots_records::Grant;

/// The owner of a device account (a user name with a device password created by a
/// signed request to this node): the user's DID and their delegation to this node,
/// which is what makes this node's presence records for the DID valid elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountOwner {
    pub did: String,
    pub grant: Grant,
}

use dots_identity::login::{self, Challenge, Credentials as KeyCredentials};
use dots_registrar::NonceStatus;
use dots_sip::header::parse_delta_seconds;
use dots_sip::{HeaderName, NameAddr, Peer, Request};

use crate::engine::Engine;
use dots_registrar::Millis;

/// What became of a key login (DOTS-Sig) on a REGISTER.
#[derive(Debug)]
pub(crate) enum KeyLogin {
    /// No DOTS-Sig credentials in the request.
    Absent,
    /// Verified; the user's grant for this node.
    Accepted(Grant),
    /// Signed by the right key but on an expired nonce: challenge again.
    Stale,
    /// Refused, with the reason (logged and put in the 403's reason phrase).
    Refused(String),
}

/// The DID named by a SIP user part that is a did:key method-specific id
/// (`z6Mk…`): `sip:z6MkhaXg…@any.node` is the user `did:key:z6MkhaXg…`.
pub(crate) fn did_of_user(user: &str) -> Option<String> {
    if !user.starts_with('z') || user.len() > dots_records::MAX_DID_LEN {
        return None;
    }
    let did = format!("did:key:{user}");
    dots_records::public_from_did(&did).map(|_| did)
}

impl Engine {
    /// The address of record a local user's bindings live under: the DID for a
    /// key user (`sip:z6Mk…@…`) and for a device account or handle owned by a DID,
    /// `sip:user@domain` otherwise.
    pub(crate) fn aor_of_user(&self, user: &str) -> String {
        if let Some(did) = did_of_user(user) {
            return did;
        }
        match self.owners.get(user) {
            Some(owner) => owner.did.clone(),
            None => self.local_aor(user),
        }
    }

    /// The grant to put in a presence record for `aor`: the latest key login's,
    /// else the delegation that came with a device account. None for an AOR that
    /// is not a DID.
    pub fn presence_grant(&self, aor: &str) -> Option<Grant> {
        if !dots_records::is_did_subject(aor) {
            return None;
        }
        let from_login = self.login_grants.get(aor);
        let from_device = self.delegations.get(aor);
        from_login
            .into_iter()
            .chain(from_device)
            .max_by_key(|g| g.until)
            .cloned()
    }

    /// The alias records this node vouches for: for every device account and handle
    /// owned by a DID, (its address of record here, the DID, the DID's delegation).
    pub fn aliases(&self) -> Vec<(String, String, Grant)> {
        let mut out: Vec<(String, String, Grant)> = self
            .owners
            .iter()
            .map(|(user, owner)| (self.local_aor(user), owner.did.clone(), owner.grant.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The DOTS-Sig challenge (WWW-Authenticate value), offered when this node has
    /// an overlay identity to name in it.
    pub(crate) fn key_login_challenge(&mut self, now: Millis) -> Option<String> {
        if !self.overlay.enabled {
            return None;
        }
        Some(
            Challenge {
                realm: self.auth.realm().to_string(),
                nonce: self.auth.issue_nonce(now),
                node: bs58::encode(&self.overlay.node_id).into_string(),
            }
            .to_header(),
        )
    }

    /// Checks DOTS-Sig credentials on a REGISTER for the key user `did`.
    pub(crate) fn key_login(&mut self, now: Millis, req: &Request, did: Option<&str>) -> KeyLogin {
        let Some(parsed) = req
            .headers
            .get_all(HeaderName::Authorization)
            .find_map(KeyCredentials::parse)
        else {
            return KeyLogin::Absent;
        };
        let refuse = |reason: String| KeyLogin::Refused(reason);
        let creds = match parsed {
            Ok(creds) => creds,
            Err(e) => return refuse(e.to_string()),
        };
        if !self.overlay.enabled {
            return refuse("this node does not offer key login".into());
        }
        if did != Some(creds.did.as_str()) {
            return refuse("the login is for another DID than the To URI".into());
        }
        if creds.realm != self.auth.realm() || !self.auth.is_our_nonce(&creds.nonce) {
            return refuse("not a nonce of this node".into());
        }
        let Some(contact) = req.headers.get(HeaderName::Contact) else {
            return refuse("a key login needs a Contact".into());
        };
        let Some(expires) = self.requested_expiry(req) else {
            return refuse("invalid Expires".into());
        };
        if creds.uri != req.uri.to_string() {
            return refuse("the login signs another request-URI".into());
        }
        let node = self.overlay.node_id.clone();
        match login::verify(&creds, "REGISTER", contact.trim(), expires, &node, now) {
            Ok(grant) => match self.auth.spend_nonce(&creds.nonce, now) {
                NonceStatus::Fresh => KeyLogin::Accepted(grant),
                NonceStatus::Stale => KeyLogin::Stale,
                NonceStatus::Replayed => refuse("replayed nonce".into()),
                NonceStatus::Invalid => refuse("not a nonce of this node".into()),
            },
            Err(e) => refuse(e.to_string()),
        }
    }

    /// The expiry a REGISTER asks for: the Expires header, else the first Contact's
    /// `expires` parameter, else the registrar's default.
    fn requested_expiry(&self, req: &Request) -> Option<u32> {
        if let Some(v) = req.headers.get(HeaderName::Expires) {
            return parse_delta_seconds(v);
        }
        let contact = req.headers.get(HeaderName::Contact)?;
        let contact = NameAddr::parse(contact.trim()).ok()?;
        match contact.param("expires") {
            Some(Some(v)) => parse_delta_seconds(v),
            Some(None) => None,
            None => Some(self.registrar.config.default_expires),
        }
    }

    /// A request from a key user (From `sip:z6Mk…@this node`) is authorised when it
    /// comes from where that user registered with a key login: the same transport
    /// and address as one of the DID's live bindings.
    pub(crate) fn key_user_source_ok(&self, did: &str, source: Peer, now: Millis) -> bool {
        self.lookup(did, now).iter().any(|b| {
            b.source
                .is_some_and(|s| s.transport == source.transport && s.addr == source.addr)
        })
    }
}
