//! Per-target overrides (`spec.overrides`), as pure functions: which overrides reach a target
//! (the manager records them on the namespace, [`OVERRIDES_PREFIX`]), what an override may
//! change ([`check`]), and applying them to a copy ([`apply`]), which every target's syncer does
//! for itself. The namespace annotation is tenant-writable like the object it changes, so the
//! syncer checks again what the manager checked: a forged entry can change no more than the
//! tenant could by editing their own object, and never the copy's identity.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::selector::{matches_selector, validate_selector};
use super::v1alpha1::{JsonPatchOp, Override, OverrideStatus};

/// Prefix of the annotation on a kcp namespace, followed by a target key: the JSON list of
/// [`TargetOverride`]s that apply on that target. Written by the Placement controller.
pub const OVERRIDES_PREFIX: &str = "overrides.tmc.kcp.io/";

/// The largest patch, serialized, an override may hold: the namespace annotations that carry
/// them share kcp's 256 KiB bound with everything else on the namespace.
pub const MAX_PATCH_BYTES: usize = 4096;

/// One override as a target's syncer receives it: the Placement it comes from, the change, and
/// why it is invalid if it is (then the objects it selects are left as they are).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetOverride {
    pub placement: String,
    #[serde(flatten)]
    pub change: Override,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

/// An override that could not be applied to a copy, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("override {name} of Placement {placement} {why}")]
pub struct Failed {
    pub placement: String,
    pub name: String,
    pub why: String,
}

/// What an override may not do, beyond its shape (which kcp's admission checks too): an
/// invalid `targetSelector`; not exactly one patch; a patch over [`MAX_PATCH_BYTES`]; changing
/// `apiVersion`, `kind`, `status`, or `metadata` beyond labels and annotations; `add` or
/// `replace` without a value.
pub fn check(o: &Override) -> Result<(), String> {
    if let Some(s) = &o.target_selector {
        validate_selector("targetSelector", s).map_err(|e| e.to_string())?;
    }
    let ops = &o.json_patch;
    let size = match &o.merge_patch {
        Some(_) if !ops.is_empty() => return Err("must set exactly one of mergePatch and jsonPatch".into()),
        None if ops.is_empty() => return Err("must set exactly one of mergePatch and jsonPatch".into()),
        Some(merge) => {
            check_merge(merge)?;
            merge.to_string().len()
        }
        None => {
            for (i, op) in ops.iter().enumerate() {
                check_path(&op.path).map_err(|why| format!("jsonPatch[{i}]: {why}"))?;
                if op.op != JsonPatchOp::Remove && op.value.is_none() {
                    return Err(format!("jsonPatch[{i}]: add and replace need a value"));
                }
            }
            serde_json::to_string(ops).map(|s| s.len()).unwrap_or(usize::MAX)
        }
    };
    if size > MAX_PATCH_BYTES {
        return Err(format!("its patch is {size} bytes, more than {MAX_PATCH_BYTES}"));
    }
    Ok(())
}

fn check_merge(merge: &Value) -> Result<(), String> {
    let fields = merge.as_object().ok_or("mergePatch must be a JSON object")?;
    if let Some(k) = ["apiVersion", "kind", "status"].into_iter().find(|k| fields.contains_key(*k)) {
        return Err(format!("mergePatch may not set {k}"));
    }
    match fields.get("metadata") {
        None => Ok(()),
        Some(Value::Object(meta)) if meta.keys().all(|k| k == "labels" || k == "annotations") => Ok(()),
        Some(_) => Err("mergePatch may set only labels and annotations of metadata".into()),
    }
}

/// A JSON pointer an operation may target.
fn check_path(path: &str) -> Result<(), String> {
    let mut tokens = path.split('/');
    if tokens.next() != Some("") || path.is_empty() {
        return Err("path must start with /".into());
    }
    let first = tokens.next().unwrap_or_default();
    if matches!(first, "apiVersion" | "kind" | "status") {
        return Err(format!("a patch may not change {first}"));
    }
    if first == "metadata" && !matches!(tokens.next(), Some("labels" | "annotations")) {
        return Err("of metadata, a patch may change only labels and annotations".into());
    }
    Ok(())
}

/// Whether `o` changes the object `group`/`kind` named `name`.
pub fn selects(o: &Override, group: &str, kind: &str, name: &str) -> bool {
    let objects = &o.objects;
    objects.group == group
        && objects.kind == kind
        && (objects.names.is_empty() || objects.names.iter().any(|n| n == name))
}

/// The overrides of Placement `placement` that reach a target with `labels`, in their order.
/// An invalid one goes along marked invalid (when its selector matches, or when the selector
/// itself is what is invalid: whether it reaches the target is then unknown), so the syncer
/// holds the objects it meant to change instead of syncing them unchanged.
pub fn for_target(placement: &str, overrides: &[Override], labels: &BTreeMap<String, String>) -> Vec<TargetOverride> {
    overrides
        .iter()
        .filter_map(|o| {
            let selector_invalid = o.target_selector.as_ref().is_some_and(|s| validate_selector("", s).is_err());
            (reaches(o, labels) || selector_invalid).then(|| {
                let change = Override { target_selector: None, ..o.clone() };
                TargetOverride { placement: placement.into(), change, invalid: check(o).err() }
            })
        })
        .collect()
}

/// `status.overrides`: for each override, the chosen targets (name, labels) it reaches, or why
/// it is invalid.
pub fn status(overrides: &[Override], chosen: &[(String, BTreeMap<String, String>)]) -> Vec<OverrideStatus> {
    overrides
        .iter()
        .map(|o| {
            let invalid = check(o).err();
            let targets = match invalid {
                Some(_) => vec![],
                None => chosen.iter().filter(|(_, l)| reaches(o, l)).map(|(n, _)| n.clone()).collect(),
            };
            OverrideStatus { name: o.name.clone(), targets, invalid }
        })
        .collect()
}

/// Whether `o`'s `targetSelector` (unset: every chosen target) matches a target's `labels`.
fn reaches(o: &Override, labels: &BTreeMap<String, String>) -> bool {
    o.target_selector.as_ref().is_none_or(|s| matches_selector(s, labels))
}

/// Reads an [`OVERRIDES_PREFIX`] annotation; the error says why without echoing the value.
pub fn parse(value: &str) -> Result<Vec<TargetOverride>, String> {
    serde_json::from_str(value).map_err(|_| "the overrides annotation is not a JSON list of overrides".to_string())
}

/// Applies the overrides in `list` that select the object `group`/`kind` named `name` to its
/// copy, in order; all or none. Returns the names (`placement/override`) applied. Fails, leaving
/// `copy` as it was, when one is invalid, its patch does not apply, or the result would be
/// another object (apiVersion, kind, name or namespace changed, a status, metadata beyond labels
/// and annotations, a label or annotation that is not a string).
pub fn apply(
    copy: &mut Value,
    list: &[TargetOverride],
    group: &str,
    kind: &str,
    name: &str,
) -> Result<Vec<String>, Failed> {
    let mut next = copy.clone();
    let mut applied = vec![];
    for entry in list.iter().filter(|e| selects(&e.change, group, kind, name)) {
        let failed = |why: String| Failed { placement: entry.placement.clone(), name: entry.change.name.clone(), why };
        if let Some(why) = &entry.invalid {
            return Err(failed(format!("is invalid: {why}")));
        }
        check(&entry.change).map_err(|why| failed(format!("is invalid: {why}")))?;
        patch(&mut next, &entry.change).map_err(|why| failed(format!("does not apply: {why}")))?;
        same_object(copy, &next).map_err(|why| failed(format!("would make another object: {why}")))?;
        applied.push(format!("{}/{}", entry.placement, entry.change.name));
    }
    *copy = next;
    Ok(applied)
}

fn patch(doc: &mut Value, o: &Override) -> Result<(), String> {
    if let Some(merge) = &o.merge_patch {
        json_patch::merge(doc, merge);
    }
    if !o.json_patch.is_empty() {
        let ops = serde_json::to_value(&o.json_patch).map_err(|e| e.to_string())?;
        let ops: json_patch::Patch = serde_json::from_value(ops).map_err(|e| e.to_string())?;
        json_patch::patch(doc, &ops).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Whether `after` is still the object `before` is, with metadata a copy may have.
fn same_object(before: &Value, after: &Value) -> Result<(), String> {
    for field in ["apiVersion", "kind"] {
        if before[field] != after[field] {
            return Err(format!("{field} changed"));
        }
    }
    for field in ["name", "namespace"] {
        if before["metadata"][field] != after["metadata"][field] {
            return Err(format!("metadata.{field} changed"));
        }
    }
    if after.get("status").is_some() {
        return Err("it sets a status".into());
    }
    let meta = after["metadata"].as_object().ok_or("metadata is not an object")?;
    for (k, v) in meta {
        match k.as_str() {
            "name" | "namespace" => {}
            "labels" | "annotations" if v.as_object().is_some_and(|m| m.values().all(Value::is_string)) => {}
            "labels" | "annotations" => return Err(format!("metadata.{k} is not a map of strings")),
            _ => return Err(format!("it sets metadata.{k}")),
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "overrides_tests.rs"]
mod tests;
