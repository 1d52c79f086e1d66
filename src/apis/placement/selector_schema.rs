//! The schemas of the Placement's label selectors, with the rules the Kubernetes API applies to
//! label selectors, so that kcp refuses an invalid selector when it is written. kcp serves an
//! APIResourceSchema like a CRD: `pattern`, `enum`, `maxLength` and CEL
//! `x-kubernetes-validations` are enforced on create and update (checked against kcp v0.32).
//!
//! kcp also prices every CEL rule when the schema is created and refuses rules over budget.
//! Two checks do not fit without bounds Kubernetes does not have, so the Placement reconciler
//! makes them (and every other check again, for objects stored before these rules existed)
//! and reports `InvalidSelector`:
//! - the syntax of `matchLabels` *keys*: `self.all(k, k.matches(...))` is over budget (1.3×)
//!   unless `maxProperties` bounds the map, and structural schemas have no `propertyNames`;
//! - a key prefix's 253-character bound: a CEL rule on each requirement's key is over budget
//!   (13.5×) unless `maxItems` bounds `matchExpressions`. The pattern bounds the name part to 63
//!   characters and `maxLength` the whole key to 317.

use schemars::{Schema, SchemaGenerator};
use serde_json::{Value, json};

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters
/// of `[A-Za-z0-9._-]` starting and ending alphanumeric. (A pattern cannot bound the total length
/// of the prefix's repeated group; see the module docs.)
pub const KEY_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
/// A label value: empty, or at most 63 characters of `[A-Za-z0-9._-]` starting and ending
/// alphanumeric.
pub const VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$";
/// Longest label key: a 253-character prefix, `/`, a 63-character name.
const MAX_KEY: u64 = 253 + 1 + 63;

fn value() -> Value {
    json!({ "type": "string", "maxLength": 63, "pattern": VALUE_PATTERN })
}

/// `matchLabels`: values are checked here, keys by the reconciler (see the module docs).
fn match_labels() -> Value {
    json!({ "type": "object", "additionalProperties": value() })
}

/// `matchExpressions`: operator, values and key as `metav1validation.ValidateLabelSelector`
/// checks them.
fn match_expressions() -> Value {
    json!({
        "type": "array",
        "items": {
            "description": "A label selector requirement is a selector that contains values, a key, and an operator that relates the key and values.",
            "type": "object",
            "required": ["key", "operator"],
            "properties": {
                "key": {
                    "description": "key is the label key that the selector applies to: an optional prefix (a DNS subdomain of at most 253 characters) and '/', then a name of at most 63 characters of [A-Za-z0-9._-] starting and ending alphanumeric.",
                    "type": "string",
                    "maxLength": MAX_KEY,
                    "pattern": KEY_PATTERN,
                },
                "operator": {
                    "description": "operator represents a key's relationship to a set of values.",
                    "type": "string",
                    "enum": ["In", "NotIn", "Exists", "DoesNotExist"],
                },
                "values": {
                    "description": "values is an array of string values, each empty or at most 63 characters of [A-Za-z0-9._-] starting and ending alphanumeric. If the operator is In or NotIn, the values array must be non-empty. If the operator is Exists or DoesNotExist, the values array must be empty.",
                    "type": "array",
                    "items": value(),
                },
            },
            "x-kubernetes-validations": [
                {
                    "rule": "!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
                    "message": "values must not be empty when the operator is In or NotIn",
                },
                {
                    "rule": "!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0",
                    "message": "values must be empty when the operator is Exists or DoesNotExist",
                },
            ],
        },
    })
}

fn selector() -> Value {
    let described = |mut v: Value, text: &str| {
        v["description"] = json!(text);
        v
    };
    json!({
        "description": "A label selector is a label query over a set of resources. The result of matchLabels and matchExpressions are ANDed. An empty label selector matches all objects.",
        "type": "object",
        "properties": {
            "matchExpressions": described(match_expressions(), "matchExpressions is a list of label selector requirements. The requirements are ANDed."),
            "matchLabels": described(match_labels(), "matchLabels is a map of {key,value} pairs. A single {key,value} in the matchLabels map is equivalent to an element of matchExpressions, whose key field is \"key\", the operator is \"In\", and the values array contains only \"value\". The requirements are ANDed."),
        },
    })
}

fn schema(v: Value) -> Schema {
    Schema::try_from(v).expect("a selector schema is a JSON object")
}

/// `schema_with` for a `metav1.LabelSelector` field.
pub fn label_selector(_: &mut SchemaGenerator) -> Schema {
    schema(selector())
}

/// `schema_with` for an `Option<metav1.LabelSelector>` field.
pub fn optional_label_selector(_: &mut SchemaGenerator) -> Schema {
    let mut s = selector();
    s["nullable"] = json!(true);
    schema(s)
}

/// `schema_with` for `locationSelector.matchExpressions`.
pub fn requirements(_: &mut SchemaGenerator) -> Schema {
    schema(match_expressions())
}

/// `schema_with` for `locationSelector.matchLabels`.
pub fn labels(_: &mut SchemaGenerator) -> Schema {
    schema(match_labels())
}
