//! Names and keys that tie kcp objects to their downstream copies.
//!
//! - A **target key** names one SyncTarget everywhere a label must: a hash of its logical cluster
//!   and name (never the workspace path, which can change, nor the name alone, which repeats).
//! - A **downstream namespace** is named from a hash of its *locator*: the (workspace, namespace,
//!   target) it holds. The locator is also stored as an annotation, so a namespace maps back to
//!   its origin and a namespace with the same name but another (or no) locator is recognised as
//!   someone else's and never written to.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::kcp::LogicalClusterName;

/// Label and annotation prefix of everything kcp-tmc writes.
pub const PREFIX: &str = "tmc.kcp.io";
/// Annotation on a downstream namespace: the JSON [`Locator`] of the kcp namespace it holds.
pub const LOCATOR_ANNOTATION: &str = "tmc.kcp.io/namespace-locator";
/// Label on every downstream object: the [`target_key`] of the SyncTarget that wrote it.
pub const TARGET_LABEL: &str = "tmc.kcp.io/target";
/// Label on every downstream object: the logical cluster of its upstream object.
pub const ORIGIN_CLUSTER_LABEL: &str = "tmc.kcp.io/origin-cluster";

/// A stable, label-safe key for the SyncTarget `name` in `cluster`: 20 lower-case hex digits.
pub fn target_key(cluster: &LogicalClusterName, name: &str) -> String {
    crate::json::sha256_hex(format!("{cluster}:{name}").as_bytes(), 10)
}

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

/// Who a downstream namespace belongs to, judged by its locator annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Free: no namespace of that name exists yet.
    Absent,
    /// Ours, for exactly this locator.
    Ours,
    /// A namespace of that name exists and holds something else: a hash collision or a namespace
    /// someone created by hand. Never written to.
    Foreign { found: Option<String> },
}

/// Decides [`Ownership`] from the locator annotation of an existing namespace (`None`: absent).
pub fn ownership(expected: &Locator, existing: Option<Option<&str>>) -> Ownership {
    match existing {
        None => Ownership::Absent,
        Some(Some(annotation)) if Locator::from_annotation(annotation).as_ref() == Some(expected) => Ownership::Ours,
        Some(found) => Ownership::Foreign { found: found.map(str::to_string) },
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
    fn ownership_table() {
        let l = Locator::new(target("aaa", "east"), &lc("ws1"), "default");
        let other = Locator::new(target("aaa", "east"), &lc("ws2"), "default").to_annotation();
        let mine = l.to_annotation();
        let cases: Vec<(Option<Option<&str>>, Ownership)> = vec![
            (None, Ownership::Absent),
            (Some(Some(mine.as_str())), Ownership::Ours),
            (Some(None), Ownership::Foreign { found: None }),
            (Some(Some(other.as_str())), Ownership::Foreign { found: Some(other.clone()) }),
            (Some(Some("garbage")), Ownership::Foreign { found: Some("garbage".into()) }),
        ];
        for (existing, want) in cases {
            assert_eq!(ownership(&l, existing), want, "{existing:?}");
        }
    }
}
