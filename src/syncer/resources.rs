//! The APIs a syncer syncs, and how namespaces are assigned to targets.

use std::collections::BTreeSet;

use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

/// Label on a kcp namespace assigning it to one SyncTarget: `state.tmc.kcp.io/<target key>:
/// Sync`. The Placement reconciler writes it; until then it is set by hand or by tests.
pub const ASSIGNMENT_LABEL_PREFIX: &str = "state.tmc.kcp.io/";
/// The value of an assignment label that means "run here".
pub const ASSIGNMENT_SYNC: &str = "Sync";

/// The assignment label key for a target key.
pub fn assignment_label(target_key: &str) -> String {
    format!("{ASSIGNMENT_LABEL_PREFIX}{target_key}")
}

/// The target keys a kcp namespace is assigned to, from its labels.
pub fn assigned_targets(namespace: &Value) -> BTreeSet<String> {
    namespace["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.as_str() == Some(ASSIGNMENT_SYNC))
        .filter_map(|(k, _)| k.strip_prefix(ASSIGNMENT_LABEL_PREFIX))
        .filter(|key| !key.is_empty())
        .map(str::to_string)
        .collect()
}

/// One namespaced API the syncer copies down, and whether its status comes back up.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncedResource {
    pub api: ApiResource,
    pub status_up: bool,
}

fn resource(group: &str, version: &str, kind: &str, plural: &str, status_up: bool) -> SyncedResource {
    SyncedResource {
        api: ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural),
        status_up,
    }
}

/// What a SyncTarget with an empty `supportedAPIs` syncs. ConfigMaps and Secrets have no status.
pub fn default_resources() -> Vec<SyncedResource> {
    vec![
        resource("apps", "v1", "Deployment", "deployments", true),
        resource("", "v1", "Service", "services", true),
        resource("", "v1", "ConfigMap", "configmaps", false),
        resource("", "v1", "Secret", "secrets", false),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn assignments_from_namespace_labels() {
        let cases = [
            (json!({"metadata": {}}), vec![]),
            (json!({"metadata": {"labels": {"state.tmc.kcp.io/abc": "Sync", "app": "x"}}}), vec!["abc"]),
            (
                json!({"metadata": {"labels": {"state.tmc.kcp.io/abc": "Sync", "state.tmc.kcp.io/def": "Sync"}}}),
                vec!["abc", "def"],
            ),
            (json!({"metadata": {"labels": {"state.tmc.kcp.io/abc": "Pending"}}}), vec![]),
            (json!({"metadata": {"labels": {"state.tmc.kcp.io/": "Sync"}}}), vec![]),
        ];
        for (ns, want) in cases {
            let got: Vec<String> = assigned_targets(&ns).into_iter().collect();
            assert_eq!(got, want, "{ns}");
        }
        assert_eq!(assignment_label("abc"), "state.tmc.kcp.io/abc");
    }

    #[test]
    fn defaults_cover_the_four_workload_kinds() {
        let kinds: Vec<String> = default_resources().iter().map(|r| r.api.kind.clone()).collect();
        assert_eq!(kinds, ["Deployment", "Service", "ConfigMap", "Secret"]);
        assert_eq!(default_resources()[0].api.api_version, "apps/v1");
    }
}
