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
