//! Assignment labels written by hand for targets that do not take this workspace's namespaces
//! (`state.tmc.kcp.io/<key>: Sync` with another workspace's target key, without its consent in
//! `spec.allowedWorkspaces`). The syncers give such a namespace nothing; this tells the tenant,
//! with a Warning Event `WorkspaceNotAllowed` on the namespace.
//!
//! The Event must not be an oracle: it reads the same, and is sent by the same code at the same
//! moment, whether the key names no SyncTarget at all or one in a workspace that does not allow
//! this one. Only targets that would run the namespace anyway (its own workspace's, or ones that
//! allow it) are told apart, and the tenant may know those.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DynamicObject, PartialObjectMeta};
use kube::core::ApiResource;

use super::{Controller, assign};
use crate::apis::names::target_key;
use crate::apis::names::{ASSIGNMENT_LABEL_PREFIX, assigned_targets};
use crate::kcp::{ClusterKey, LogicalClusterName};

/// The Event reason.
pub const REASON: &str = "WorkspaceNotAllowed";

/// What consent needs of one SyncTarget.
pub struct Consent<'a> {
    pub cluster: &'a LogicalClusterName,
    pub name: &'a str,
    pub allowed_workspaces: &'a [String],
}

/// The keys of `by_hand` that no target consenting to namespaces of `own` (logical cluster) at
/// `own_path` has. With `own_path` unknown only same-workspace targets consent.
pub fn unconsented<'a>(
    by_hand: &BTreeSet<String>,
    own: &LogicalClusterName,
    own_path: Option<&str>,
    targets: impl IntoIterator<Item = Consent<'a>>,
) -> BTreeSet<String> {
    let consenting: BTreeSet<String> = targets
        .into_iter()
        .filter(|t| t.cluster == own || own_path.is_some_and(|p| t.allowed_workspaces.iter().any(|w| w == p)))
        .map(|t| target_key(t.cluster, t.name))
        .collect();
    by_hand.difference(&consenting).cloned().collect()
}

/// The Event's text for `key`: nothing in it depends on what, if anything, the key names.
pub fn note(key: &str) -> String {
    format!(
        "{ASSIGNMENT_LABEL_PREFIX}{key}: no SyncTarget of this workspace, nor of a workspace whose spec.allowedWorkspaces lists it, has this key; nothing of this namespace is synced for it"
    )
}

impl Controller {
    /// Sends a `WorkspaceNotAllowed` Event for each hand-set assignment label of `ns` whose
    /// target does not take this workspace's namespaces (see the module docs).
    pub(super) async fn report_unconsented(
        &self,
        key: &ClusterKey,
        ns: &PartialObjectMeta<Namespace>,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) {
        let present = assigned_targets(&serde_json::json!({ "metadata": { "labels": labels } }));
        let by_hand: BTreeSet<String> = present.difference(&assign::managed_keys(annotations)).cloned().collect();
        if by_hand.is_empty() {
            return;
        }
        let targets = self.directory.all_targets();
        let as_consent = || {
            targets.iter().map(|(t, k)| Consent {
                cluster: &k.cluster,
                name: &k.name,
                allowed_workspaces: &t.spec.allowed_workspaces,
            })
        };
        let mut missing = unconsented(&by_hand, &key.cluster, None, as_consent());
        if !missing.is_empty() {
            // Targets of other workspaces consent by path; unresolved, nothing is reported on a guess.
            let Ok(own_path) = self.paths.path_of(&key.cluster).await else { return };
            missing = unconsented(&by_hand, &key.cluster, Some(own_path.as_str()), as_consent());
        }
        let api = ApiResource::erase::<Namespace>(&());
        let mut obj = DynamicObject::new(&key.name, &api);
        obj.metadata.uid = ns.metadata.uid.clone();
        for k in missing {
            self.warnings.warn(&key.cluster, &api, &obj, REASON, note(&k)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lc(s: &str) -> LogicalClusterName {
        LogicalClusterName::new(s).unwrap()
    }

    #[test]
    fn hand_set_keys_without_consent() {
        let (own, other, third) = (lc("own"), lc("other"), lc("third"));
        let allows_own = vec!["root:own".to_string()];
        let targets = || {
            vec![
                Consent { cluster: &own, name: "mine", allowed_workspaces: &[] },
                Consent { cluster: &other, name: "private", allowed_workspaces: &[] },
                Consent { cluster: &third, name: "shared", allowed_workspaces: &allows_own },
            ]
        };
        let key = |c: &LogicalClusterName, n: &str| target_key(c, n);
        let keys = |ks: &[String]| ks.iter().cloned().collect::<BTreeSet<String>>();
        let (mine, private, shared) = (key(&own, "mine"), key(&other, "private"), key(&third, "shared"));
        let nowhere = "0123456789abcdef0123".to_string();
        // (hand-set keys, own path known, unconsented)
        let cases = [
            (vec![mine.clone()], Some("root:own"), vec![]),
            (vec![shared.clone()], Some("root:own"), vec![]),
            (vec![shared.clone()], None, vec![shared.clone()]),
            (vec![private.clone()], Some("root:own"), vec![private.clone()]),
            (vec![nowhere.clone()], Some("root:own"), vec![nowhere.clone()]),
            (
                vec![mine.clone(), private.clone(), nowhere.clone()],
                Some("root:own"),
                vec![private.clone(), nowhere.clone()],
            ),
        ];
        for (by_hand, path, want) in cases {
            assert_eq!(unconsented(&keys(&by_hand), &own, path, targets()), keys(&want), "{by_hand:?} {path:?}");
        }
    }

    #[test]
    fn the_note_is_the_same_whatever_the_key_names() {
        let (a, b) = (note("aaaaaaaaaaaaaaaaaaaa"), note("bbbbbbbbbbbbbbbbbbbb"));
        assert_eq!(a.replace("aaaaaaaaaaaaaaaaaaaa", "K"), b.replace("bbbbbbbbbbbbbbbbbbbb", "K"));
        assert!(a.starts_with("state.tmc.kcp.io/aaaaaaaaaaaaaaaaaaaa: "));
    }
}
