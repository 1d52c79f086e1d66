//! Names and keys that tie kcp objects to their downstream copies.
//!
//! - A **target key** names one SyncTarget everywhere a label must: a hash of its logical cluster
//!   and name (never the workspace path, which can change, nor the name alone, which repeats).
//! - A **downstream namespace** is named from a hash of its *locator*: the (workspace, namespace,
//!   target) it holds. The locator is also stored as an annotation, so a namespace maps back to
//!   its origin. A locator proves nothing (anyone who may create namespaces can copy it): the
//!   syncer writes only into a namespace whose UID it recorded in kcp when it created it
//!   ([`ownership`]); any other namespace of that name is someone else's and never written to.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::kcp::LogicalClusterName;

pub use crate::apis::names::{ORIGIN_CLUSTER_LABEL, PREFIX, TARGET_LABEL, target_key};

/// Annotation on downstream objects: hash of the applied object, to notice removed fields.
pub const SPEC_HASH_ANNOTATION: &str = "tmc.kcp.io/spec-hash";

/// Annotation on a downstream namespace: the JSON [`Locator`] of the kcp namespace it holds.
pub const LOCATOR_ANNOTATION: &str = "tmc.kcp.io/namespace-locator";

/// Identifies a SyncTarget across workspaces.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TargetRef {
    /// Logical cluster of the SyncTarget.
    pub cluster: String,
    /// Name of the SyncTarget.
    pub name: String,
}

/// Which kcp namespace, for which target, a downstream namespace holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Locator {
    pub sync_target: TargetRef,
    /// Logical cluster of the kcp namespace.
    pub cluster: String,
    /// Name of the kcp namespace.
    pub namespace: String,
}

impl Locator {
    pub fn new(target: TargetRef, cluster: &LogicalClusterName, namespace: &str) -> Self {
        Self { sync_target: target, cluster: cluster.to_string(), namespace: namespace.to_string() }
    }

    /// The canonical JSON form stored in [`LOCATOR_ANNOTATION`].
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("a locator serializes")
    }

    pub fn from_annotation(s: &str) -> Option<Self> {
        serde_json::from_str(s).ok()
    }

    /// `kcp-` and 16 base-36 digits of the locator's hash: 20 characters, a valid namespace name,
    /// deterministic, and distinct for distinct locators with overwhelming probability.
    pub fn downstream_namespace(&self) -> String {
        let digest = Sha256::digest(self.to_annotation().as_bytes());
        let mut n = u128::from_be_bytes(digest[..16].try_into().expect("16 bytes"));
        let mut digits = Vec::with_capacity(16);
        for _ in 0..16 {
            digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
            n /= 36;
        }
        format!("kcp-{}", String::from_utf8(digits).expect("ascii"))
    }
}

/// Annotation on a kcp namespace, one per target key: the proof of which downstream namespace
/// the syncer of that target created for it ([`Record`]). It lives in kcp, where a cluster user
/// cannot write; the tenant can, but every downstream namespace it names is derived from the
/// tenant's own locator, so a forged record can only misdirect that tenant's own data.
pub const OWNER_ANNOTATION_PREFIX: &str = "downstream.tmc.kcp.io/";
/// Annotation on a downstream namespace: the claim nonce the syncer recorded in kcp before
/// creating it, so a create interrupted before its UID was recorded is recognised afterwards.
pub const CLAIM_ANNOTATION: &str = "tmc.kcp.io/namespace-claim";

/// The [`OWNER_ANNOTATION_PREFIX`] annotation key of `target_key`.
pub fn owner_annotation(target_key: &str) -> String {
    format!("{OWNER_ANNOTATION_PREFIX}{target_key}")
}

/// What kcp records about the downstream namespace of one (kcp namespace, target).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Nothing (or something unreadable): no downstream namespace is proven ours.
    None,
    /// About to create it with this nonce in [`CLAIM_ANNOTATION`]; its UID is not known yet.
    Claimed(String),
    /// Created it; this is its UID.
    Created(String),
}

impl Record {
    pub fn parse(annotation: Option<&str>) -> Self {
        let Some(value) = annotation else { return Record::None };
        match value.split_once(':') {
            Some(("claim", nonce)) if !nonce.is_empty() => Record::Claimed(nonce.to_string()),
            Some(("uid", uid)) if !uid.is_empty() => Record::Created(uid.to_string()),
            _ => Record::None,
        }
    }

    /// The annotation value, `None` for [`Record::None`].
    pub fn to_annotation(&self) -> Option<String> {
        match self {
            Record::None => None,
            Record::Claimed(nonce) => Some(format!("claim:{nonce}")),
            Record::Created(uid) => Some(format!("uid:{uid}")),
        }
    }
}

/// What the syncer reads of an existing downstream namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed<'a> {
    pub uid: &'a str,
    /// Its [`LOCATOR_ANNOTATION`].
    pub locator: Option<&'a str>,
    /// Its [`CLAIM_ANNOTATION`].
    pub claim: Option<&'a str>,
}

/// Who a downstream namespace belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// No namespace of that name exists: create it (under the recorded claim, or a new one).
    Absent,
    /// Ours, for exactly this locator: the namespace with this UID.
    Ours { uid: String },
    /// Someone else's, or not provably ours: never written to, never deleted.
    Foreign(Conflict),
}

/// Why a downstream namespace is not ours. The texts name no value read from the cluster (the
/// tenant reads them in Events; the cluster user wrote those values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("holds something else (its locator annotation is not this namespace's)")]
    OtherLocator,
    #[error(
        "was not created by kcp-tmc for this namespace (no record in kcp: created by someone else, or by a kcp-tmc that kept no record)"
    )]
    NotRecorded,
    #[error("is not the one kcp-tmc created (it was deleted and created again by someone else)")]
    Recreated,
}

/// Decides [`Ownership`] from kcp's [`Record`] and the namespace found in the cluster (`None`:
/// absent). A matching locator annotation is necessary, never sufficient: anyone who may create
/// namespaces can copy it. Proof is the UID recorded in kcp, or the claim nonce (known only to
/// kcp until the namespace exists) for a create whose UID was not recorded yet.
pub fn ownership(expected: &Locator, record: &Record, existing: Option<Observed<'_>>) -> Ownership {
    let Some(found) = existing else { return Ownership::Absent };
    if found.locator.and_then(Locator::from_annotation).as_ref() != Some(expected) {
        return Ownership::Foreign(Conflict::OtherLocator);
    }
    match record {
        Record::Created(uid) if uid == found.uid => Ownership::Ours { uid: uid.clone() },
        Record::Created(_) => Ownership::Foreign(Conflict::Recreated),
        Record::Claimed(nonce) if found.claim == Some(nonce.as_str()) => Ownership::Ours { uid: found.uid.to_string() },
        Record::Claimed(_) | Record::None => Ownership::Foreign(Conflict::NotRecorded),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lc(s: &str) -> LogicalClusterName {
        LogicalClusterName::new(s).unwrap()
    }

    fn target(cluster: &str, name: &str) -> TargetRef {
        TargetRef { cluster: cluster.into(), name: name.into() }
    }

    #[test]
    fn target_keys_are_stable_label_values_and_distinct() {
        let a = target_key(&lc("aaa"), "east");
        assert_eq!(a, target_key(&lc("aaa"), "east"));
        assert_eq!(a.len(), 20);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(a, target_key(&lc("bbb"), "east"), "same name in another workspace");
        assert_ne!(a, target_key(&lc("aaa"), "west"));
        // The documented recipe: the first 20 hex digits of sha256("<cluster>:<name>"), which
        // tests/run-local.sh computes with sha256sum.
        assert_eq!(target_key(&lc("abc"), "cluster-1"), "1b1c850591b0602a9e32");
    }

    #[test]
    fn downstream_namespaces() {
        let t = target("aaa", "east");
        let cases = [
            (Locator::new(t.clone(), &lc("ws1"), "default"), Locator::new(t.clone(), &lc("ws2"), "default")),
            (Locator::new(t.clone(), &lc("ws1"), "default"), Locator::new(t.clone(), &lc("ws1"), "prod")),
            (
                Locator::new(t.clone(), &lc("ws1"), "default"),
                Locator::new(target("bbb", "east"), &lc("ws1"), "default"),
            ),
        ];
        for (a, b) in cases {
            let (na, nb) = (a.downstream_namespace(), b.downstream_namespace());
            assert_ne!(na, nb, "{a:?} vs {b:?}");
            for n in [&na, &nb] {
                assert_eq!(n.len(), 20);
                assert!(n.starts_with("kcp-"));
                assert!(n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            }
            assert_eq!(na, a.downstream_namespace(), "deterministic");
        }
    }

    #[test]
    fn locator_round_trips() {
        let l = Locator::new(target("aaa", "east"), &lc("ws1"), "default");
        let s = l.to_annotation();
        assert_eq!(s, r#"{"syncTarget":{"cluster":"aaa","name":"east"},"cluster":"ws1","namespace":"default"}"#);
        assert_eq!(Locator::from_annotation(&s), Some(l));
        assert_eq!(Locator::from_annotation("{not json"), None);
    }

    #[test]
    fn records_round_trip() {
        let cases = [
            (None, Record::None),
            (Some("uid:1234-abcd"), Record::Created("1234-abcd".into())),
            (Some("claim:n0nce"), Record::Claimed("n0nce".into())),
            (Some("uid:"), Record::None),
            (Some("claim:"), Record::None),
            (Some("1234-abcd"), Record::None),
            (Some("garbage:x"), Record::None),
        ];
        for (annotation, want) in cases {
            let got = Record::parse(annotation);
            assert_eq!(got, want, "{annotation:?}");
            if got != Record::None {
                assert_eq!(got.to_annotation().as_deref(), annotation, "round trip");
            }
        }
        assert_eq!(Record::None.to_annotation(), None);
        assert_eq!(owner_annotation("k"), "downstream.tmc.kcp.io/k");
    }

    #[test]
    fn ownership_table() {
        let l = Locator::new(target("aaa", "east"), &lc("ws1"), "default");
        let other = Locator::new(target("aaa", "east"), &lc("ws2"), "default").to_annotation();
        let mine = l.to_annotation();
        let ns = |uid, locator, claim| Some(Observed { uid, locator, claim });
        let created = |uid: &str| Record::Created(uid.into());
        let claimed = |n: &str| Record::Claimed(n.into());
        let ours = |uid: &str| Ownership::Ours { uid: uid.into() };
        let foreign = Ownership::Foreign;
        let cases: Vec<(&str, Record, Option<Observed>, Ownership)> = vec![
            ("nothing anywhere: create", Record::None, None, Ownership::Absent),
            ("claimed, not created yet", claimed("n1"), None, Ownership::Absent),
            ("ours deleted in the cluster: create again", created("u1"), None, Ownership::Absent),
            ("the namespace we created", created("u1"), ns("u1", Some(&mine), None), ours("u1")),
            ("ours, claim kept", created("u1"), ns("u1", Some(&mine), Some("n1")), ours("u1")),
            (
                "create interrupted before the UID was recorded",
                claimed("n1"),
                ns("u1", Some(&mine), Some("n1")),
                ours("u1"),
            ),
            // A cluster user's namespace with a copied locator: no record, or another claim.
            (
                "pre-created with a copied locator",
                Record::None,
                ns("u9", Some(&mine), None),
                foreign(Conflict::NotRecorded),
            ),
            (
                "created in the claim window by someone else",
                claimed("n1"),
                ns("u9", Some(&mine), None),
                foreign(Conflict::NotRecorded),
            ),
            ("a guessed claim", claimed("n1"), ns("u9", Some(&mine), Some("n2")), foreign(Conflict::NotRecorded)),
            (
                "ours deleted and recreated by someone else",
                created("u1"),
                ns("u9", Some(&mine), Some("n1")),
                foreign(Conflict::Recreated),
            ),
            (
                "another namespace's locator",
                created("u1"),
                ns("u1", Some(&other), None),
                foreign(Conflict::OtherLocator),
            ),
            ("no locator", Record::None, ns("u1", None, None), foreign(Conflict::OtherLocator)),
            ("garbage locator", created("u1"), ns("u1", Some("garbage"), None), foreign(Conflict::OtherLocator)),
        ];
        for (name, record, existing, want) in cases {
            assert_eq!(ownership(&l, &record, existing), want, "{name}");
        }
    }
}
