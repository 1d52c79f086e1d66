//! Names shared by the reconcilers and the syncer: the labels, annotations and finalizers that
//! tie a kcp object to the targets it runs on. Both sides read and write the same markers, so
//! they are defined once, here, beside the API types.

use std::collections::BTreeSet;

use serde_json::Value;

/// A DNS label (RFC 1123): a namespace's name, one part of a subdomain.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS subdomain (RFC 1123): most objects' names (Secrets, kcp's Shards).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Label and annotation prefix of everything kcp-tmc writes.
pub const PREFIX: &str = "tmc.kcp.io";
/// Label on every downstream object: the [`target_key`] of the SyncTarget that wrote it.
pub const TARGET_LABEL: &str = "tmc.kcp.io/target";
/// Label on every downstream object: the logical cluster of its upstream object.
pub const ORIGIN_CLUSTER_LABEL: &str = "tmc.kcp.io/origin-cluster";

/// Label on a kcp namespace assigning it to one SyncTarget: `state.tmc.kcp.io/<target key>:
/// Sync`. The Placement reconciler writes it (see `reconciler::placement::assign`); it may also
/// be set by hand or by tests.
pub const ASSIGNMENT_LABEL_PREFIX: &str = "state.tmc.kcp.io/";
/// The value of an assignment label that means "run here".
pub const ASSIGNMENT_SYNC: &str = "Sync";
/// Annotation on a kcp namespace restricting what one target runs of it:
/// `workload.tmc.kcp.io/<target key>: <JSON list of label selectors>`; an object is synced to
/// that target when any selector matches its labels. Absent means every object. Written by the
/// Placement reconciler from `workloadSelector`.
pub const WORKLOAD_SELECTOR_PREFIX: &str = "workload.tmc.kcp.io/";

/// Annotation on a kcp namespace while it moves: the target keys (comma-separated, sorted) the
/// Placement reconciler waits on before the old assignment goes. Only those targets' syncers
/// record evidence of their applies ([`crate::apis::applied`]); a namespace that is not moving
/// costs kcp no evidence writes. Written with the new assignment label, removed with the old.
pub const AWAITING_EVIDENCE_ANNOTATION: &str = "placement.tmc.kcp.io/awaiting-evidence";

/// Label on a kcp object copied back from a cluster (upsync, a Placement's `spec.upsync`): the
/// [`target_key`] of the SyncTarget whose cluster holds the original. Such an object is never
/// synced down, and only that target's syncer updates or deletes it.
pub const UPSYNCED_FROM_LABEL: &str = "tmc.kcp.io/upsynced-from";
/// Annotation on a kcp namespace: `upsync.tmc.kcp.io/<target key>: <JSON list of {group, kind}>`,
/// the kinds that target's syncer copies back from the namespace's copy in its cluster. Written
/// by the Placement reconciler from `spec.upsync`.
pub const UPSYNC_PREFIX: &str = "upsync.tmc.kcp.io/";

/// The keys of a comma-separated list annotation (blanks ignored).
pub fn key_list(value: &str) -> BTreeSet<String> {
    value.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_string).collect()
}

/// Prefix of the finalizer the syncer of one target puts on every kcp object it copies.
pub const SYNCER_FINALIZER_PREFIX: &str = "tmc.kcp.io/syncer-";

/// A stable, label-safe key for the SyncTarget `name` in logical cluster `cluster`: 20
/// lower-case hex digits of a hash of both (never the workspace path, which can change, nor the
/// name alone, which repeats across workspaces).
pub fn target_key(cluster: &impl std::fmt::Display, name: &str) -> String {
    crate::json::sha256_hex(format!("{cluster}:{name}").as_bytes(), 10)
}

/// The finalizer the syncer of `target_key` puts on every kcp object it copies.
pub fn syncer_finalizer(target_key: &str) -> String {
    format!("{SYNCER_FINALIZER_PREFIX}{target_key}")
}

/// The assignment label of `target_key` (see [`ASSIGNMENT_LABEL_PREFIX`]).
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
