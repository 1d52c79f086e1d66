//! The APIs a syncer syncs, and how namespaces are assigned to targets.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope};
use serde_json::Value;

use crate::apis::placement::overrides::{self, OVERRIDES_PREFIX, TargetOverride};
use crate::apis::placement::replicas::{REPLICAS_ANNOTATION, parse_weights, share};
use crate::apis::sync::v1alpha1::{SupportedApi, SyncedResourceState};

pub use crate::apis::names::{
    ASSIGNMENT_LABEL_PREFIX, ASSIGNMENT_SYNC, AWAITING_EVIDENCE_ANNOTATION, UPSYNC_PREFIX, UPSYNCED_FROM_LABEL,
    WORKLOAD_SELECTOR_PREFIX, assigned_targets, assignment_label, key_list,
};
use crate::apis::placement::v1alpha1::UpsyncedKind;

/// What a kcp namespace says about where it runs: the target keys of its assignment labels, and
/// for some of them the workload selectors that restrict which objects go there.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assignment {
    pub targets: BTreeSet<String>,
    pub selectors: std::collections::BTreeMap<String, Vec<LabelSelector>>,
    /// Assigned targets whose selector annotation is invalid (it selects nothing), and why.
    pub invalid: std::collections::BTreeMap<String, String>,
    /// Assigned targets a move waits on ([`AWAITING_EVIDENCE_ANNOTATION`]): they record evidence.
    pub awaiting: BTreeSet<String>,
    /// The weights of the targets that divide the replicas of scalable objects
    /// ([`REPLICAS_ANNOTATION`]); `None` when nobody divides (or the annotation is unreadable:
    /// then every target runs every replica, never fewer than asked).
    pub weights: Option<std::collections::BTreeMap<String, u32>>,
    /// Per assigned target, the overrides that change its copies ([`OVERRIDES_PREFIX`]), or why
    /// the annotation is unreadable (then nothing of the namespace is written there: syncing
    /// copies without the changes meant for them would sync something wrong).
    pub overrides: std::collections::BTreeMap<String, Result<Vec<TargetOverride>, String>>,
    /// Per assigned target, the (group, kind)s its syncer copies back ([`UPSYNC_PREFIX`]). An
    /// unreadable annotation copies nothing back (and so deletes nothing copied back before).
    pub upsync: std::collections::BTreeMap<String, BTreeSet<(String, String)>>,
}

impl Assignment {
    /// Reads the assignment labels and workload-selector annotations of a namespace. A selector
    /// annotation that does not parse selects nothing (fail closed: never sync more than asked).
    pub fn of(namespace: &Value) -> Self {
        let targets = assigned_targets(namespace);
        let (mut selectors, mut invalid) = (std::collections::BTreeMap::new(), std::collections::BTreeMap::new());
        for (key, v) in per_target(namespace, WORKLOAD_SELECTOR_PREFIX, &targets) {
            let parsed = parse_workload_selectors(v.as_str().unwrap_or_default());
            if let Err(why) = &parsed {
                invalid.insert(key.to_string(), why.clone());
            }
            selectors.insert(key.to_string(), parsed.unwrap_or_default());
        }
        let awaiting = namespace["metadata"]["annotations"][AWAITING_EVIDENCE_ANNOTATION].as_str().map(key_list);
        let awaiting = awaiting.unwrap_or_default().intersection(&targets).cloned().collect();
        let weights = namespace["metadata"]["annotations"][REPLICAS_ANNOTATION].as_str().and_then(parse_weights);
        let overrides = per_target(namespace, OVERRIDES_PREFIX, &targets)
            .map(|(key, v)| (key.to_string(), overrides::parse(v.as_str().unwrap_or_default())))
            .collect();
        let upsync = per_target(namespace, UPSYNC_PREFIX, &targets)
            .filter_map(|(key, v)| {
                let kinds: Vec<UpsyncedKind> = serde_json::from_str(v.as_str()?).ok()?;
                Some((key.to_string(), kinds.into_iter().map(|k| (k.group, k.kind)).collect()))
            })
            .collect();
        Self { targets, selectors, invalid, awaiting, weights, overrides, upsync }
    }

    /// The overrides that change `target_key`'s copies (none when the annotation is absent), or
    /// why they are unknown.
    pub fn overrides_of(&self, target_key: &str) -> Result<&[TargetOverride], String> {
        match self.overrides.get(target_key) {
            None => Ok(&[]),
            Some(Ok(list)) => Ok(list),
            Some(Err(why)) => Err(why.clone()),
        }
    }

    /// The share of `total` replicas `target_key` runs when the replicas are divided and it is
    /// among the dividing targets; `None` otherwise (it runs what was asked).
    pub fn replicas_of(&self, target_key: &str, total: i64) -> Option<i64> {
        self.weights.as_ref().and_then(|w| share(total, w, target_key))
    }

    /// Whether an object with `labels` runs on `target_key` (assignment aside).
    pub fn selects(&self, target_key: &str, labels: &std::collections::BTreeMap<String, String>) -> bool {
        match self.selectors.get(target_key) {
            None => true,
            Some(list) => list.iter().any(|s| crate::apis::placement::selector::matches_selector(s, labels)),
        }
    }

    /// Targets whose assignment, selectors or call for evidence differ between `self` and
    /// `other`.
    pub fn changed_targets(&self, other: &Assignment) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.targets.symmetric_difference(&other.targets).cloned().collect();
        out.extend(self.awaiting.symmetric_difference(&other.awaiting).cloned());
        // New weights change every dividing target's share.
        if self.weights != other.weights {
            out.extend(self.targets.union(&other.targets).cloned());
        }
        for key in self.overrides.keys().chain(other.overrides.keys()) {
            if self.overrides.get(key) != other.overrides.get(key) {
                out.insert(key.clone());
            }
        }
        for key in self.upsync.keys().chain(other.upsync.keys()) {
            if self.upsync.get(key) != other.upsync.get(key) {
                out.insert(key.clone());
            }
        }
        for key in self.selectors.keys().chain(other.selectors.keys()) {
            // An invalid selector replaced by another invalid one is news too (it is reported).
            if self.selectors.get(key) != other.selectors.get(key) || self.invalid.get(key) != other.invalid.get(key) {
                out.insert(key.clone());
            }
        }
        out
    }
}

/// The annotations `<prefix><target key>` of a namespace for the assigned `targets` only, as
/// (target key, value).
fn per_target<'a>(
    namespace: &'a Value,
    prefix: &'a str,
    targets: &'a BTreeSet<String>,
) -> impl Iterator<Item = (&'a str, &'a Value)> {
    let annotations = namespace["metadata"]["annotations"].as_object().into_iter().flatten();
    annotations.filter_map(move |(k, v)| Some((k.strip_prefix(prefix)?, v))).filter(|(key, _)| targets.contains(*key))
}

/// A workload-selector annotation's value: a JSON list of label selectors whose operators are
/// Kubernetes'. The error says why not, without echoing the value (it may be long).
pub fn parse_workload_selectors(value: &str) -> Result<Vec<LabelSelector>, String> {
    // Parsed in two steps: serde reports `{…` as the wrong shape before it finds the JSON broken.
    let json: Value =
        serde_json::from_str(value).map_err(|_| "it is not valid JSON, not a list of label selectors".to_string())?;
    let list: Vec<LabelSelector> = serde_json::from_value(json)
        .map_err(|_| "it is JSON of another shape, not a list of label selectors".to_string())?;
    const OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];
    let unknown = list
        .iter()
        .flat_map(|s| s.match_expressions.iter().flatten())
        .find(|r| !OPERATORS.contains(&r.operator.as_str()));
    match unknown {
        Some(_) => Err("a matchExpressions operator is not one of In, NotIn, Exists, DoesNotExist".into()),
        None => Ok(list),
    }
}

/// One namespaced API the syncer copies down, and whether its status comes back up.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncedResource {
    pub api: ApiResource,
    pub status_up: bool,
    /// The cluster serves a scale subresource for it: `spec.replicas` may be divided over
    /// targets (`replicaPolicy: Divide`).
    pub scale: bool,
}

fn resource(group: &str, version: &str, kind: &str, plural: &str, status_up: bool) -> SyncedResource {
    SyncedResource {
        api: ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural),
        status_up,
        scale: kind == "Deployment",
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

/// The APIs a target asks for: `spec.supportedAPIs` in order without duplicates, or the
/// defaults when it is empty.
pub fn wanted_apis(supported: &[SupportedApi]) -> Vec<SupportedApi> {
    if supported.is_empty() {
        return default_resources()
            .into_iter()
            .map(|r| SupportedApi { group: r.api.group, kind: r.api.kind })
            .collect();
    }
    let mut seen = BTreeSet::new();
    supported.iter().filter(|a| seen.insert((a.group.clone(), a.kind.clone()))).cloned().collect()
}

/// The default resource for `api`, when it is one of the defaults: what a syncer falls back on
/// while the cluster's discovery cannot be read, so deletions still time out and copies are
/// still cleaned up when the cluster returns.
pub fn known_resource(api: &SupportedApi) -> Option<SyncedResource> {
    default_resources().into_iter().find(|r| r.api.group == api.group && r.api.kind == api.kind)
}

/// Why an API of `supportedAPIs` is not synced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable {
    pub state: SyncedResourceState,
    pub message: String,
}

impl Unavailable {
    pub fn new(state: SyncedResourceState, message: impl Into<String>) -> Self {
        Self { state, message: message.into() }
    }
}

/// Decides from the cluster's discovery whether `api` can be synced (pure): it must exist and be
/// namespaced; its status comes up when it has a status subresource.
pub fn classify(
    api: &SupportedApi,
    found: Option<(ApiResource, ApiCapabilities)>,
) -> Result<SyncedResource, Unavailable> {
    let Some((resource, caps)) = found else {
        let group = if api.group.is_empty() { "the core group" } else { api.group.as_str() };
        return Err(Unavailable::new(
            SyncedResourceState::MissingOnCluster,
            format!("the cluster serves no kind {} in {group}", api.kind),
        ));
    };
    if caps.scope != Scope::Namespaced {
        return Err(Unavailable::new(
            SyncedResourceState::NotNamespaced,
            format!("{} is cluster-scoped; only namespaced APIs are synced", resource.plural),
        ));
    }
    let has = |name: &str| caps.subresources.iter().any(|(sub, _)| sub.plural == name);
    Ok(SyncedResource { api: resource, status_up: has("status"), scale: has("scale") })
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
    fn workload_selectors_restrict_what_a_target_runs() {
        let ns = json!({"metadata": {
            "labels": {"state.tmc.kcp.io/a": "Sync", "state.tmc.kcp.io/b": "Sync"},
            "annotations": {
                "workload.tmc.kcp.io/a": r#"[{"matchLabels": {"tier": "web"}}, {"matchLabels": {"tier": "api"}}]"#,
                "workload.tmc.kcp.io/gone": r#"[{"matchLabels": {"tier": "web"}}]"#,
                "workload.tmc.kcp.io/b": "not json",
            },
        }});
        let a = Assignment::of(&ns);
        assert_eq!(a.selectors.len(), 2, "a selector of an unassigned target is ignored");
        assert_eq!(a.invalid.keys().collect::<Vec<_>>(), ["b"], "only b's selector is invalid");
        let labels = |tier: &str| [("tier".to_string(), tier.to_string())].into();
        // (target, object tier, selected)
        let cases =
            [("a", "web", true), ("a", "api", true), ("a", "db", false), ("b", "web", false), ("c", "db", true)];
        for (target, tier, want) in cases {
            assert_eq!(a.selects(target, &labels(tier)), want, "{target} {tier}");
        }
        let mut other = a.clone();
        other.selectors.remove("a");
        other.targets.insert("c".into());
        assert_eq!(a.changed_targets(&other), ["a".to_string(), "c".to_string()].into());
        assert!(a.changed_targets(&a).is_empty());
        // A call for evidence is news to the targets it names (or no longer names).
        let mut moving = a.clone();
        moving.awaiting.insert("b".into());
        assert_eq!(a.changed_targets(&moving), ["b".to_string()].into());
    }

    #[test]
    fn a_call_for_evidence_names_assigned_targets_only() {
        let ns = |awaiting: &str| {
            json!({"metadata": {
                "labels": {"state.tmc.kcp.io/a": "Sync", "state.tmc.kcp.io/b": "Sync"},
                "annotations": {AWAITING_EVIDENCE_ANNOTATION: awaiting},
            }})
        };
        // (annotation, targets that record evidence)
        let cases = [("b", vec!["b"]), ("a, b", vec!["a", "b"]), ("b,gone", vec!["b"]), ("", vec![])];
        for (value, want) in cases {
            let got: Vec<String> = Assignment::of(&ns(value)).awaiting.into_iter().collect();
            assert_eq!(got, want, "{value}");
        }
        assert!(Assignment::of(&json!({"metadata": {}})).awaiting.is_empty());
    }

    #[test]
    fn per_target_overrides_and_upsync_kinds_are_read_for_assigned_targets() {
        let overrides = r#"[{"placement": "p", "name": "o", "objects": {"kind": "ConfigMap"}, "mergePatch": {}}]"#;
        let ns = json!({"metadata": {
            "labels": {"state.tmc.kcp.io/a": "Sync", "state.tmc.kcp.io/b": "Sync"},
            "annotations": {
                "overrides.tmc.kcp.io/a": overrides, "overrides.tmc.kcp.io/b": "{", "overrides.tmc.kcp.io/gone": overrides,
                "upsync.tmc.kcp.io/a": r#"[{"kind": "Secret"}, {"group": "example.dev", "kind": "Widget"}]"#,
                "upsync.tmc.kcp.io/b": "not json", "upsync.tmc.kcp.io/gone": r#"[{"kind": "Secret"}]"#,
            },
        }});
        let a = Assignment::of(&ns);
        assert_eq!(a.overrides_of("a").map(|l| l.len()), Ok(1));
        assert_eq!(
            a.overrides_of("b"),
            Err("the overrides annotation is not a JSON list of overrides".into()),
            "fail closed"
        );
        assert_eq!(a.overrides_of("c").map(|l| l.len()), Ok(0), "no annotation: nothing to change");
        assert!(!a.overrides.contains_key("gone") && !a.upsync.contains_key("gone"), "not assigned");
        let kinds: BTreeSet<(String, String)> =
            [("".into(), "Secret".into()), ("example.dev".into(), "Widget".into())].into();
        assert_eq!(a.upsync.get("a"), Some(&kinds));
        assert_eq!(a.upsync.get("b"), None, "unreadable: nothing copied back");
        // A changed override or upsync list is news to that target only.
        let mut changed = a.clone();
        changed.upsync.insert("a".into(), BTreeSet::new());
        assert_eq!(a.changed_targets(&changed), ["a".to_string()].into());
        let mut changed = a.clone();
        changed.overrides.insert("b".into(), Ok(vec![]));
        assert_eq!(a.changed_targets(&changed), ["b".to_string()].into());
    }

    #[test]
    fn workload_selector_values_are_validated() {
        let cases = [
            (r#"[{"matchLabels": {"tier": "web"}}]"#, Ok(1)),
            (r#"[]"#, Ok(0)),
            (r#"[{"matchExpressions": [{"key": "a", "operator": "Exists"}]}]"#, Ok(1)),
            ("not json", Err("not valid JSON")),
            ("{not json", Err("not valid JSON")),
            (r#"{"matchLabels": {}}"#, Err("another shape")),
            (r#"[{"matchLabels": {"tier": 7}}]"#, Err("another shape")),
            (r#"[{"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}]"#, Err("operator")),
        ];
        for (value, want) in cases {
            match (parse_workload_selectors(value), want) {
                (Ok(list), Ok(n)) => assert_eq!(list.len(), n, "{value}"),
                (Err(why), Err(part)) => {
                    assert!(why.contains(part), "{value}: {why}");
                    assert!(!why.contains(value), "the value is not echoed: {why}");
                }
                (got, want) => panic!("{value}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn wanted_apis_default_and_deduplicate() {
        let api = |g: &str, k: &str| SupportedApi { group: g.into(), kind: k.into() };
        let cases = [
            (vec![], vec![api("apps", "Deployment"), api("", "Service"), api("", "ConfigMap"), api("", "Secret")]),
            (
                vec![api("example.dev", "Widget"), api("", "ConfigMap")],
                vec![api("example.dev", "Widget"), api("", "ConfigMap")],
            ),
            (
                vec![api("", "ConfigMap"), api("", "ConfigMap"), api("x.dev", "ConfigMap")],
                vec![api("", "ConfigMap"), api("x.dev", "ConfigMap")],
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(wanted_apis(&spec), want, "{spec:?}");
        }
        assert!(known_resource(&api("apps", "Deployment")).is_some_and(|r| r.status_up));
        assert!(known_resource(&api("example.dev", "Widget")).is_none());
    }

    #[test]
    fn classify_discovery_results() {
        let widget = SupportedApi { group: "example.dev".into(), kind: "Widget".into() };
        let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("example.dev", "v1", "Widget"), "widgets");
        let caps = |scope, subresources: &[&str]| ApiCapabilities {
            scope,
            subresources: subresources
                .iter()
                .map(|s| {
                    let sub = ApiResource { plural: s.to_string(), ..ar.clone() };
                    (sub, ApiCapabilities { scope: Scope::Namespaced, subresources: vec![], operations: vec![] })
                })
                .collect(),
            operations: vec![],
        };
        // (discovery, Ok(status_up) or Err(state))
        let cases = [
            (None, Err(SyncedResourceState::MissingOnCluster)),
            (Some((ar.clone(), caps(Scope::Cluster, &[]))), Err(SyncedResourceState::NotNamespaced)),
            (Some((ar.clone(), caps(Scope::Namespaced, &[]))), Ok(false)),
            (Some((ar.clone(), caps(Scope::Namespaced, &["scale", "status"]))), Ok(true)),
        ];
        for (found, want) in cases {
            let got = classify(&widget, found).map(|r| r.status_up).map_err(|u| u.state);
            assert_eq!(got, want);
        }
        let missing = classify(&widget, None).unwrap_err();
        assert_eq!(missing.message, "the cluster serves no kind Widget in example.dev");
    }

    #[test]
    fn defaults_cover_the_four_workload_kinds() {
        let kinds: Vec<String> = default_resources().iter().map(|r| r.api.kind.clone()).collect();
        assert_eq!(kinds, ["Deployment", "Service", "ConfigMap", "Secret"]);
        assert_eq!(default_resources()[0].api.api_version, "apps/v1");
    }
}
