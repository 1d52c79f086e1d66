//! `sync.kcp.io/v1alpha1`: SyncTarget.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type: summary of the other conditions; True only when the target can run workloads.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: whether a syncer for this target has what it needs to reach the cluster.
pub const CONDITION_SYNCER_READY: &str = "SyncerReady";
/// Condition type: whether the syncer's heartbeat (`status.lastSyncTime`) is recent enough.
pub const CONDITION_HEARTBEAT_HEALTHY: &str = "HeartbeatHealthy";
/// Condition type: whether new workloads may be placed on this target (cordon and eviction).
pub const CONDITION_SCHEDULABLE: &str = "Schedulable";
/// Condition type: whether every API in `spec.supportedAPIs` is served by both kcp and the cluster.
pub const CONDITION_APIS_AVAILABLE: &str = "APIsAvailable";

/// A SyncTarget registers one physical Kubernetes cluster with kcp-tmc. Workloads in kcp
/// namespaces that are placed on this target are synced to the cluster by a syncer, which also
/// heartbeats `status.lastSyncTime`. The manager keeps `status.conditions` true to what it sees.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "sync.kcp.io",
    version = "v1alpha1",
    kind = "SyncTarget",
    plural = "synctargets",
    singular = "synctarget",
    shortname = "st",
    category = "tmc",
    status = "SyncTargetStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "SyncTarget registers one physical Kubernetes cluster that workloads from kcp workspaces can run on.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the target can run workloads"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        description = "Why the target is or is not ready"
    ),
    printcolumn(
        name = "Unschedulable",
        type_ = "boolean",
        json_path = ".spec.unschedulable",
        description = "Cordoned: keeps what runs there, takes nothing new"
    ),
    printcolumn(
        name = "Last Sync",
        type_ = "date",
        json_path = ".status.lastSyncTime",
        description = "Age of the syncer's last heartbeat"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct SyncTargetSpec {
    /// APIs the syncer syncs to this cluster, as group and kind. Empty means the defaults:
    /// Deployments (apps), Services, ConfigMaps and Secrets (core). Any other namespaced API
    /// works when kcp serves it through kcp-tmc's APIExport (`tmc install --workload-crd`) and
    /// the cluster serves it too; `status.syncedResources` and the `APIsAvailable` condition
    /// say which are synced and why not. Removing an API removes its copies from the cluster.
    #[serde(default, rename = "supportedAPIs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub supported_apis: Vec<SupportedApi>,

    /// Failure domains this cluster belongs to (for example a region or zone). Placement
    /// spreads the targets it chooses across cells where it can.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub cells: Vec<String>,

    /// Cordon: when true, workloads already placed here keep running but no new namespaces are
    /// placed on this target.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unschedulable: bool,

    /// Drain: from this time on, workloads placed here are moved to other targets. Leave unset
    /// to keep the target in service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evict_after: Option<Time>,

    /// Other workspaces (full paths, for example `root:org:team`) whose Placements may place
    /// namespaces on this target, and whose namespaces its syncer therefore runs. Empty means
    /// only this target's own workspace. Exact paths only; no globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub allowed_workspaces: Vec<String>,

    /// A Secret in this workspace holding a kubeconfig for the cluster. Set it when the manager
    /// itself should drive the cluster (push mode); leave it unset when a syncer runs beside the
    /// cluster (pull mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<KubeconfigSecretRef>,
}

/// One API, named by group and kind, that a syncer may sync to the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SupportedApi {
    /// API group; empty for the core group (Services, ConfigMaps, Secrets).
    #[serde(default)]
    pub group: String,
    /// Kind, for example `Deployment`.
    #[schemars(length(min = 1))]
    pub kind: String,
}

/// Where to find the kubeconfig for a cluster the manager drives itself.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeconfigSecretRef {
    /// Namespace of the Secret, in the SyncTarget's workspace.
    #[schemars(length(min = 1))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in the Secret's data that holds the kubeconfig. Defaults to `kubeconfig`.
    #[serde(default = "default_kubeconfig_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

fn default_kubeconfig_key() -> String {
    "kubeconfig".to_string()
}

/// Observed state of a SyncTarget, written by the manager (conditions) and the syncer (heartbeat).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncTargetStatus {
    /// `Ready` summarises the others; `SyncerReady` says whether a syncer can reach the cluster;
    /// `HeartbeatHealthy` says whether the syncer's heartbeat is recent; `Schedulable` shows
    /// cordon (`spec.unschedulable`) and drain (`spec.evictAfter`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// When the syncer last reported in. Written by the syncer on a timer, never by the manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,

    /// The `metadata.generation` the conditions were computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// One entry per API the syncer was asked to sync: whether it syncs it, and how many objects
    /// of it are in the cluster. Written by the syncer with its heartbeat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub synced_resources: Vec<SyncedResourceStatus>,
}

/// What the syncer does with one API of `spec.supportedAPIs`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncedResourceStatus {
    /// API group; empty for the core group.
    #[serde(default)]
    pub group: String,
    /// Kind, as listed in `spec.supportedAPIs`.
    pub kind: String,
    /// The resource (plural) and version synced, once found on the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `Syncing`, or why not: `MissingOnCluster` (the cluster does not serve the kind),
    /// `NotServedByKcp` (the APIExport neither exports nor claims it), `NotNamespaced`, or
    /// `DiscoveryFailed` (the cluster's discovery could not be read; retried).
    pub state: SyncedResourceState,
    /// Details when the state is not `Syncing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Objects of this API the syncer keeps in the cluster.
    #[serde(default)]
    pub synced_objects: i64,
}

/// See [`SyncedResourceStatus::state`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SyncedResourceState {
    #[default]
    Syncing,
    MissingOnCluster,
    NotServedByKcp,
    NotNamespaced,
    DiscoveryFailed,
}

impl SyncedResourceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Syncing => "Syncing",
            Self::MissingOnCluster => "MissingOnCluster",
            Self::NotServedByKcp => "NotServedByKcp",
            Self::NotNamespaced => "NotNamespaced",
            Self::DiscoveryFailed => "DiscoveryFailed",
        }
    }
}
