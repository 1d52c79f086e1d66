//! This target's finalizer on kcp objects: added before (or beside) the first copy, removed
//! once nothing is left downstream. Every edit is a JSON patch that tests exactly what it relies
//! on (see [`finalizer_patch`]), so concurrent writers of the list never overwrite each other.

use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::json;

use super::{Engine, SyncError, api_err, telemetry};
use crate::kcp::ClusterKey;
use crate::server::metrics::SyncOp;

impl Engine {
    /// Adds (`present`) or removes this target's finalizer on `obj`. `false`: not added, the
    /// object is being deleted (kcp refuses new finalizers then; the deletion's own event brings
    /// the key back to take the removal path).
    pub(super) async fn set_finalizer(
        &self,
        resource: &kube::core::ApiResource,
        key: &ClusterKey,
        obj: &DynamicObject,
        present: bool,
    ) -> Result<bool, SyncError> {
        let api = self.upstream_api(resource, key);
        let mut seen = obj.metadata.clone();
        // Two syncers of one object (two targets) change their finalizers at the same moment,
        // beside tenant writes. Every edit is a JSON patch that tests exactly what it relies on
        // (the list absent, or the entry it removes at its index), so only a change to the list
        // itself makes it fail, with 422 at once — never a resourceVersion, which kcp's virtual
        // workspace would re-apply to each fresh read and give up on only after its five
        // retries (that wait was the two-cluster tail). A failed creation of the list means the
        // other syncer created it first: append at once. Otherwise the object is read again and
        // the edit re-planned; a third failure is an error (retried with backoff).
        let started = std::time::Instant::now();
        let creates_list =
            |seen: &kube::api::ObjectMeta| present && seen.finalizers.as_ref().is_none_or(|f| f.is_empty());
        let mut next = finalizer_patch(&seen, &self.finalizer(), present);
        let mut creating = creates_list(&seen);
        for attempt in 0..3 {
            let Some(patch) = next.take() else { return Ok(true) };
            if present && seen.deletion_timestamp.is_some() {
                return Ok(false);
            }
            let written = api.patch(&key.name, &PatchParams::default(), &Patch::Json::<()>(patch)).await;
            match written {
                // The list exists now (or the object is being deleted: the append fails too, and
                // the read below finds the deletion).
                Err(kube::Error::Api(s)) if (s.code == 409 || s.code == 422) && creating && attempt < 2 => {
                    creating = false;
                    next = Some(finalizer_append(&self.finalizer()));
                }
                // A tested entry moved, the object is being deleted (then no finalizer is added;
                // see above), or the virtual workspace gave up under other writers (409).
                Err(kube::Error::Api(s)) if (s.code == 409 || s.code == 422) && attempt < 2 => {
                    match api.get_opt(&key.name).await {
                        Ok(Some(fresh)) => seen = fresh.metadata,
                        Ok(None) => return Ok(!present),
                        Err(e) => return Err(api_err("read the object from kcp")(e)),
                    }
                    next = finalizer_patch(&seen, &self.finalizer(), present);
                    creating = creates_list(&seen);
                }
                written => {
                    self.telemetry.op(&resource.plural, SyncOp::Finalizer, telemetry::done_or_gone(&written), started);
                    return match written {
                        Ok(_) => Ok(true),
                        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(!present),
                        Err(e) => {
                            let action = if present { "add finalizer" } else { "remove finalizer" };
                            // Refused (an admission policy of the tenant's, missing rights): the
                            // tenant is told on the object; the copy is kept and this retried.
                            // A 409 is other writers winning three times in a row, not a refusal.
                            if let kube::Error::Api(s) = &e
                                && (400..500).contains(&s.code)
                                && s.code != 409
                            {
                                let said =
                                    crate::net::response::bounded_line(&s.message, crate::net::response::MESSAGE_MAX);
                                let note = format!(
                                    "kcp refused to {action} for {} ({}): {said}; retrying",
                                    self.target.name, s.code
                                );
                                self.events.warn(&key.cluster, resource, obj, "FinalizerRefused", note).await;
                            }
                            Err(api_err(action)(e))
                        }
                    };
                }
            }
        }
        unreachable!("the last attempt always returns")
    }
}

/// The JSON patch that adds (`present`) or removes `finalizer` on an object whose metadata is
/// `meta`, or `None` when nothing is to change. It cannot overwrite a concurrent change: the
/// list is created only under a test that it is still absent (a missing member tests equal to
/// null), appended to without touching other entries, and an entry is removed at its index only
/// after testing it is still there. No resourceVersion: writes to the rest of the object, or to
/// other finalizers, do not make it fail.
fn finalizer_patch(meta: &kube::api::ObjectMeta, finalizer: &str, present: bool) -> Option<json_patch::Patch> {
    let finalizers = meta.finalizers.clone().unwrap_or_default();
    let at = finalizers.iter().position(|f| f == finalizer);
    let ops = match (present, at) {
        (true, Some(_)) | (false, None) => return None,
        (true, None) if finalizers.is_empty() => json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": [finalizer] },
        ]),
        (true, None) => return Some(finalizer_append(finalizer)),
        (false, Some(i)) => json!([
            { "op": "test", "path": format!("/metadata/finalizers/{i}"), "value": finalizer },
            { "op": "remove", "path": format!("/metadata/finalizers/{i}") },
        ]),
    };
    Some(serde_json::from_value(ops).expect("a JSON patch"))
}

/// Appends `finalizer` to an existing list (fails with 422 when the object has none).
fn finalizer_append(finalizer: &str) -> json_patch::Patch {
    let ops = json!([{ "op": "add", "path": "/metadata/finalizers/-", "value": finalizer }]);
    serde_json::from_value(ops).expect("a JSON patch")
}

#[cfg(test)]
mod finalizer_tests {
    use super::finalizer_patch;
    use kube::api::ObjectMeta;
    use serde_json::json;

    #[test]
    fn finalizer_patch_table() {
        let meta = |f: Option<&[&str]>| ObjectMeta {
            finalizers: f.map(|f| f.iter().map(|s| s.to_string()).collect()),
            resource_version: Some("7".into()),
            ..Default::default()
        };
        let json = |v: serde_json::Value| Some(serde_json::from_value::<json_patch::Patch>(v).unwrap());
        let first = json(json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["mine"]},
        ]));
        let rows = [
            ("first finalizer, none listed: created if still absent", meta(None), true, first.clone()),
            ("first finalizer, empty list: the same", meta(Some(&[])), true, first),
            (
                "beside another target's: appended, no resourceVersion",
                meta(Some(&["other"])),
                true,
                json(json!([{"op": "add", "path": "/metadata/finalizers/-", "value": "mine"}])),
            ),
            ("already there", meta(Some(&["other", "mine"])), true, None),
            (
                "remove, keep the other: the index tested first",
                meta(Some(&["other", "mine"])),
                false,
                json(json!([
                    {"op": "test", "path": "/metadata/finalizers/1", "value": "mine"},
                    {"op": "remove", "path": "/metadata/finalizers/1"},
                ])),
            ),
            ("already gone", meta(Some(&["other"])), false, None),
            ("nothing listed", meta(None), false, None),
        ];
        for (case, meta, present, want) in rows {
            assert_eq!(finalizer_patch(&meta, "mine", present), want, "{case}");
        }
    }
}
