//! Schemas of the free-form parts of an override (`schema_with`): a merge patch is any JSON
//! object, a JSON patch's value any JSON value. kcp stores them as they are; what they may
//! change is checked by [`super::overrides::check`].

use schemars::{Schema, SchemaGenerator};
use serde_json::json;

/// `schema_with` for `mergePatch`.
pub fn merge_patch(_: &mut SchemaGenerator) -> Schema {
    let v = json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true });
    Schema::try_from(v).expect("a JSON object")
}

/// `schema_with` for a JSON patch operation's `value`.
pub fn any_value(_: &mut SchemaGenerator) -> Schema {
    let v = json!({ "x-kubernetes-preserve-unknown-fields": true });
    Schema::try_from(v).expect("a JSON object")
}
