//! Small helpers over JSON values and hashes, shared by install (APIExport comparison) and the
//! syncer (compare-before-write, content hashes).

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The first `bytes` bytes of the SHA-256 of `data`, as lower-case hex.
pub fn sha256_hex(data: &[u8], bytes: usize) -> String {
    Sha256::digest(data).iter().take(bytes).map(|b| format!("{b:02x}")).collect()
}

/// True when every field set in `want` has the same value in `have`. Arrays must have the same
/// length and match element by element; fields the server adds (defaults) are ignored,
/// and empty values match absent ones (the server omits them).
pub fn is_subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w.iter().all(|(k, v)| is_subset(v, h.get(k).unwrap_or(&Value::Null))),
        // The server omits empty values: a wanted empty value matches an absent one.
        (Value::Object(w), Value::Null) => w.is_empty(),
        (Value::Array(w), Value::Null) => w.is_empty(),
        (Value::Array(w), Value::Array(h)) => w.len() == h.len() && w.iter().zip(h).all(|(a, b)| is_subset(a, b)),
        (Value::String(w), Value::Null) => w.is_empty(),
        (w, h) => w == h,
    }
}

/// The path of the first field where [`is_subset`] fails, for logs (`None`: `want ⊆ have`).
/// Only the path and the kinds of the two values: the values themselves may be a Secret's data.
pub fn first_difference(want: &Value, have: &Value) -> Option<String> {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .find_map(|(k, v)| first_difference(v, h.get(k).unwrap_or(&Value::Null)).map(|rest| format!(".{k}{rest}"))),
        (Value::Array(w), Value::Array(h)) if w.len() == h.len() => w
            .iter()
            .zip(h)
            .enumerate()
            .find_map(|(i, (a, b))| first_difference(a, b).map(|rest| format!("[{i}]{rest}"))),
        _ if is_subset(want, have) => None,
        _ => Some(format!(" (values differ: want {}, have {})", kind(want), kind(have))),
    }
}

/// A JSON value's kind, for messages that must not print the value.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_comparison() {
        let cases = [
            (json!({"a": 1}), json!({"a": 1, "b": 2}), true),
            (json!({"a": 1}), json!({"a": 2}), false),
            (json!({"a": [1, 2]}), json!({"a": [1, 2]}), true),
            (json!({"a": [1, 2]}), json!({"a": [1, 2, 3]}), false),
            (json!({"a": [{"x": 1}]}), json!({"a": [{"x": 1, "y": 0}]}), true),
            (json!({"a": {}}), json!({}), true),
            (json!({"a": {"b": 1}}), json!({}), false),
            (json!({"a": []}), json!({}), true),
            (json!({"crd": {}}), json!({"crd": null}), true),
            (json!({"group": ""}), json!({}), true),
            (json!({"group": "apps"}), json!({}), false),
            (json!({"group": ""}), json!({"group": null}), true),
            (json!({"a": "x"}), json!({"a": "y"}), false),
        ];
        for (want, have, expected) in cases {
            assert_eq!(is_subset(&want, &have), expected, "{want} ⊆ {have}");
            assert_eq!(first_difference(&want, &have).is_none(), expected, "{want} vs {have}");
        }
        assert_eq!(
            first_difference(&json!({"a": [{"x": 1}]}), &json!({"a": [{"x": 2}]})).as_deref(),
            Some(".a[0].x (values differ: want a number, have a number)")
        );
        let secret = first_difference(&json!({"data": {"k": "czNjcmV0"}}), &json!({"data": {"k": "ZHJpZnQ="}}));
        assert_eq!(secret.as_deref(), Some(".data.k (values differ: want a string, have a string)"));
    }

    #[test]
    fn sha256_prefixes() {
        assert_eq!(sha256_hex(b"abc:cluster-1", 10), "1b1c850591b0602a9e32");
        assert_eq!(sha256_hex(b"x", 0), "");
    }
}
