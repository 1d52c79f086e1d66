//! `placement.kcp.io/v1alpha1`: Placement.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, LabelSelectorRequirement};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A Placement states where the workloads of a workspace should run: which of its namespaces
/// (`namespaceSelector`) go to which SyncTargets (`locationSelector`), and on how many of them.
/// The manager chooses the targets, records the choice in `status`, and keeps it valid as
/// clusters come and go.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "placement.kcp.io",
    version = "v1alpha1",
    kind = "Placement",
    plural = "placements",
    singular = "placement",
    shortname = "pl",
    category = "tmc",
    status = "PlacementStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "Placement selects namespaces of a workspace and the SyncTargets their workloads run on.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending until targets are chosen, then Bound"
    ),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Reason", type_ = "string", json_path = r#".status.conditions[?(@.type=="Scheduled")].reason"#),
    printcolumn(
        name = "Targets",
        type_ = "string",
        json_path = ".status.targetNames",
        description = "Chosen SyncTargets"
    ),
    printcolumn(
        name = "Namespaces",
        type_ = "integer",
        json_path = ".status.placedNamespaces",
        description = "Namespaces placed on the chosen targets"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// Namespaces of this workspace whose workloads are placed. An empty selector selects all
    /// namespaces. A selector the Kubernetes API would refuse is refused here too; one that got
    /// in anyway (written before this check existed) stops the Placement with `InvalidSelector`
    /// and keeps what it placed.
    #[schemars(schema_with = "super::selector_schema::label_selector")]
    pub namespace_selector: LabelSelector,

    /// Only objects whose labels match are synced from the selected namespaces to the chosen
    /// targets. Unset means every object of a supported API. Several Placements choosing one
    /// target for a namespace run the union of their selections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::selector_schema::optional_label_selector")]
    pub workload_selector: Option<LabelSelector>,

    /// Which SyncTargets may run the selected namespaces.
    pub location_selector: LocationSelector,

    /// How many targets each selected namespace runs on. Unset means every matching target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub number_of_targets: Option<i32>,

    /// How the replicas of the selected namespaces' Deployments (and of other kinds with a
    /// scale subresource) are spread over the chosen targets. Unset means `Duplicate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_policy: Option<ReplicaPolicy>,

    /// Changes to the copies of some objects on some of the chosen targets only (an image
    /// registry per region, replicas, env, annotations), without forking the manifest: each
    /// override selects targets by SyncTarget labels and objects by kind and name, and patches
    /// their copies there, in list order. One that cannot be applied to an object leaves that
    /// object's copy on those targets as it was (never synced without the change) and says why
    /// in an `OverrideFailed` event on the object; `status.overrides` shows where each applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub overrides: Vec<Override>,

    /// Kinds whose objects created in a target's copy of a selected namespace — by an operator
    /// in the cluster, not by kcp-tmc — are copied back into the namespace here, labelled
    /// `tmc.kcp.io/upsynced-from: <target key>`, kept current and deleted when they are gone
    /// there. Such copies are never synced down again, and never overwrite an object of the
    /// same name that is not one (an `UpsyncConflict` event says so instead). Only kinds the
    /// targets sync (ConfigMaps and Secrets by default) are copied back; their status is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub upsync: Vec<UpsyncedKind>,
}

/// A kind copied back from the clusters.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpsyncedKind {
    /// API group of the kind; empty for the core group.
    #[serde(default)]
    #[schemars(length(max = 253))]
    pub group: String,
    /// The kind, for example `Secret`.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
}

/// A change to the copies of some objects on some targets.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.mergePatch) != has(self.jsonPatch)", "message": "set exactly one of mergePatch and jsonPatch"}
]))]
pub struct Override {
    /// Name of the override, unique in the Placement; status and events name it.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// The chosen SyncTargets whose copies change, by their labels. Unset means every chosen
    /// target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::selector_schema::optional_label_selector")]
    pub target_selector: Option<LabelSelector>,

    /// The objects whose copies change.
    pub objects: OverriddenObjects,

    /// A JSON merge patch (RFC 7386) applied to the copy, for example
    /// `{"metadata": {"annotations": {"region": "eu"}}, "spec": {"replicas": 5}}`. It may not
    /// set `apiVersion`, `kind` or `status`, and of `metadata` only labels and annotations; at
    /// most 4 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::override_schema::merge_patch")]
    pub merge_patch: Option<serde_json::Value>,

    /// A JSON patch (RFC 6902) applied to the copy, for example
    /// `[{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "eu.example/web:1"}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 16))]
    pub json_patch: Vec<JsonPatchOperation>,
}

/// Objects of one kind in the selected namespaces, all or by name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverriddenObjects {
    /// API group of the kind; empty for the core group (ConfigMap, Secret, Service, …).
    #[serde(default)]
    #[schemars(length(max = 253))]
    pub group: String,

    /// The kind, for example `Deployment`.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,

    /// Names of the objects; unset means every object of the kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub names: Vec<String>,
}

/// One operation of a JSON patch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!['/apiVersion', '/kind', '/status'].exists(f, self.path == f || self.path.startsWith(f + '/'))",
     "message": "a patch may not change apiVersion, kind or status"},
    {"rule": "!(self.path == '/metadata' || self.path.startsWith('/metadata/')) || ['/metadata/labels', '/metadata/annotations'].exists(f, self.path == f || self.path.startsWith(f + '/'))",
     "message": "of metadata, a patch may change only labels and annotations"}
]))]
pub struct JsonPatchOperation {
    /// `add`, `remove` or `replace`.
    pub op: JsonPatchOp,

    /// JSON pointer (RFC 6901) to the field, for example `/spec/replicas`.
    #[schemars(length(max = 512), regex(pattern = r"^(/([^/~]|~[01])*)+$"))]
    pub path: String,

    /// The new value, which `add` and `replace` need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::override_schema::any_value")]
    pub value: Option<serde_json::Value>,
}

/// What a JSON patch operation does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JsonPatchOp {
    /// Adds the value (or replaces a field that exists; appends to a list at `-`).
    Add,
    /// Removes the field; the patch fails when it is missing.
    Remove,
    /// Replaces the field's value; the patch fails when it is missing.
    Replace,
}

/// How replicas are spread over a Placement's targets.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaPolicy {
    /// `Duplicate`: every chosen target runs `spec.replicas`. `Divide`: `spec.replicas` is
    /// split over the chosen targets by weight, the parts adding up to it (remainders to the
    /// largest fractions); a cordoned or draining target, or one not Ready past the failover
    /// grace, gets none while it is out. An autoscaler in a cluster still owns its copy's
    /// replicas. With several Placements on one namespace, the replicas are divided over the
    /// targets of those that divide; a target chosen only by one that duplicates runs them all.
    #[serde(rename = "type")]
    pub type_: ReplicaPolicyType,

    /// `Divide`: a SyncTarget label whose value, a whole number up to 1000, is the target's
    /// weight. A target without the label, or with a value that is not a number, weighs 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 317))]
    pub weight_label: Option<String>,

    /// `Divide`: the weights of targets by name; they win over `weightLabel`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<TargetWeight>,
}

/// Whether a Placement's targets each run every replica or divide them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReplicaPolicyType {
    /// Every chosen target runs every replica.
    #[default]
    Duplicate,
    /// The replicas are divided over the chosen targets.
    Divide,
}

/// The weight of one SyncTarget when dividing replicas.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetWeight {
    /// Name of the SyncTarget (in the location workspace).
    pub name: String,
    /// Its weight: its share is `replicas × weight / the sum of the weights`.
    #[schemars(range(min = 0, max = 1000))]
    pub weight: i32,
}

/// Selects SyncTargets by their labels, in one workspace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocationSelector {
    /// Workspace path (for example `root:org:clusters`) whose SyncTargets are candidates.
    /// Defaults to the Placement's own workspace. Another workspace's targets can only be used
    /// when that workspace allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(:[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"))]
    pub workspace: Option<String>,

    /// SyncTarget labels that must all match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "super::selector_schema::labels")]
    pub match_labels: BTreeMap<String, String>,

    /// Label selector requirements over SyncTarget labels that must all match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::selector_schema::requirements")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// The phase of a Placement.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PlacementPhase {
    /// No targets are chosen yet.
    #[default]
    Pending,
    /// Targets are chosen and namespaces are assigned to them.
    Bound,
}

/// One chosen SyncTarget.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelectedTarget {
    /// Workspace path of the SyncTarget.
    pub workspace: String,
    /// Name of the SyncTarget.
    pub name: String,
}

/// Observed state of a Placement, written by the manager.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStatus {
    /// Pending until targets are chosen, then Bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PlacementPhase>,

    /// The SyncTargets the selected namespaces are assigned to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selected_targets: Vec<SelectedTarget>,

    /// `Scheduled` says whether targets could be chosen and why not; `Ready` whether the chosen
    /// targets are ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// How many namespaces of this workspace the Placement selects and assigns to the chosen
    /// targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_namespaces: Option<i32>,

    /// The names of `selectedTargets`, comma-separated: what `kubectl get placements` shows in
    /// its Targets column (a printer column's JSONPath shows only the first list element).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_names: Option<String>,

    /// Where each override of `spec.overrides` applies: the chosen targets its selector
    /// matches, or why it is invalid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<OverrideStatus>,
}

/// Where one override applies.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverrideStatus {
    /// Name of the override.
    pub name: String,
    /// Names of the chosen SyncTargets whose copies it changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Why it is invalid, if it is: then the objects it selects are left as they are on its
    /// targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}
