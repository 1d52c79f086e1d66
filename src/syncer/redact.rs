//! Keeping a Secret's values out of what a cluster says about it.
//!
//! A cluster that refuses a Secret can quote its data back: an admission webhook's or a
//! ValidatingAdmissionPolicy's message is free text written by whoever runs the cluster, and a
//! `messageExpression` may well print the offending value. The syncer repeats a refusal in an
//! Event on the tenant's object (readable by everyone who may read Events there, often more
//! people than may read Secrets) and in the manager's log (read by the platform team). So before
//! a message about a Secret goes anywhere, every value of the Secret is cut out of it: raw, as
//! JSON or Go would quote it, line by line, and base64-encoded. A value too short to cut out
//! without mangling the rest (under [`MIN_SCRUBBED`] bytes) withholds the whole message instead.
//! A cluster that quotes a *part* of a value (a prefix, a hash) is not caught: that is the
//! cluster owner's choice, and the cluster holds the Secret anyway.

use k8s_openapi::ByteString;
use serde_json::Value;

/// What replaces a value.
pub const REDACTED: &str = "<redacted>";
/// Shorter values would be found inside unrelated words ("1" in a status code).
pub const MIN_SCRUBBED: usize = 4;

/// `text` with every value of `obj`'s `data` cut out when `obj` is a core Secret; otherwise
/// `text` unchanged.
pub fn scrub(obj: &Value, text: &str) -> String {
    if obj["kind"] != "Secret" || obj["apiVersion"] != "v1" {
        return text.to_string();
    }
    let Some(data) = obj["data"].as_object() else { return text.to_string() };
    let mut needles: Vec<String> = vec![];
    for encoded in data.values().filter_map(Value::as_str) {
        let Ok(ByteString(bytes)) = serde_json::from_value::<ByteString>(Value::String(encoded.to_string())) else {
            // Not base64 (the cluster would refuse it too): the text as stored is the value.
            needles.push(encoded.to_string());
            continue;
        };
        if bytes.is_empty() {
            continue;
        }
        if bytes.len() < MIN_SCRUBBED {
            return format!(
                "the cluster's message is withheld: the Secret has a value shorter than {MIN_SCRUBBED} bytes, which cannot be cut out of it"
            );
        }
        needles.push(encoded.to_string());
        needles.extend(forms(&bytes));
    }
    // Longest first, so a line of a value is not cut before the whole value is.
    needles.retain(|n| n.len() >= MIN_SCRUBBED);
    needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
    needles.dedup();
    let scrubbed = needles.iter().fold(text.to_string(), |t, n| t.replace(n.as_str(), REDACTED));
    cut_trailing_fragment(&scrubbed, &needles)
}

/// A message bounded on its way in (the cluster answer's layer keeps the first 200 characters)
/// can end in the first part of a value: that part is cut too.
fn cut_trailing_fragment(text: &str, needles: &[String]) -> String {
    let (body, ellipsis) = match text.strip_suffix('…') {
        Some(body) => (body, "…"),
        None => (text, ""),
    };
    for needle in needles {
        let longest = needle.len().saturating_sub(1).min(body.len());
        for k in (MIN_SCRUBBED..=longest).rev() {
            if needle.is_char_boundary(k) && body.ends_with(&needle[..k]) {
                return format!("{}{REDACTED}{ellipsis}", &body[..body.len() - k]);
            }
        }
    }
    text.to_string()
}

/// How a value may appear in a message: as text, quoted (JSON and Go `%q` escape alike for
/// what matters: quotes, backslashes, control characters), line by line, and in base64 at each
/// of the three alignments it can have inside a longer encoded string.
fn forms(bytes: &[u8]) -> Vec<String> {
    let mut out = vec![];
    let text = String::from_utf8_lossy(bytes);
    if let Ok(quoted) = serde_json::to_string(text.as_ref()) {
        out.push(quoted[1..quoted.len() - 1].to_string());
    }
    out.extend(text.lines().map(|l| l.trim().to_string()));
    out.push(text.into_owned());
    for offset in 0..3 {
        let mut shifted = vec![0u8; offset];
        shifted.extend_from_slice(bytes);
        let Ok(Value::String(encoded)) = serde_json::to_value(ByteString(shifted)) else { continue };
        // Drop the characters that also encode the neighbours: the leading group when shifted,
        // and the trailing group (padding, or bits shared with whatever follows).
        let start = if offset == 0 { 0 } else { 4 };
        let end = encoded.len().saturating_sub(4);
        if end > start {
            out.push(encoded[start..end].to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn b64(s: &str) -> String {
        serde_json::to_value(ByteString(s.as_bytes().to_vec())).unwrap().as_str().unwrap().to_string()
    }

    fn secret(values: &[&str]) -> Value {
        let data: serde_json::Map<String, Value> =
            values.iter().enumerate().map(|(i, v)| (format!("k{i}"), json!(b64(v)))).collect();
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": data})
    }

    #[test]
    fn every_form_of_a_value_is_cut_out() {
        let value = "hunter2-\"quoted\"\nsecond-line-of-it";
        let s = secret(&[value]);
        let quoted = serde_json::to_string(value).unwrap();
        let whole_b64 = b64(&format!("prefix{value}suffix"));
        let cases = [
            format!("denied: {value}"),
            format!("Invalid value: {quoted}: not allowed"),
            "the line hunter2-\"quoted\" is bad".to_string(),
            format!("data: {}", b64(value)),
            format!("embedded: {whole_b64}"),
        ];
        for said in cases {
            let got = scrub(&s, &said);
            for leaked in ["hunter2", "second-line-of-it", b64(value).as_str()] {
                assert!(!got.contains(leaked), "{said:?} → {got:?} still holds {leaked:?}");
            }
            assert!(got.contains(REDACTED), "{said:?} → {got:?}");
        }
        // The middle of the value's base64 inside a longer encoded string is gone.
        let got = scrub(&s, &format!("embedded: {whole_b64}"));
        assert!(got.len() < whole_b64.len(), "{got}");
    }

    #[test]
    fn other_text_and_other_kinds_are_left_alone() {
        let s = secret(&["correct-horse-battery"]);
        assert_eq!(scrub(&s, "etcdserver: request is too large"), "etcdserver: request is too large");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "correct-horse-battery"}});
        assert_eq!(scrub(&cm, "bad correct-horse-battery"), "bad correct-horse-battery");
        let empty = json!({"apiVersion": "v1", "kind": "Secret", "data": {"k": ""}});
        assert_eq!(scrub(&empty, "too large"), "too large");
    }

    /// Debug output of a cached Secret names it and never prints the data.
    #[test]
    fn debug_of_cached_secrets_names_them_only() {
        use crate::syncer::downstream::Cached;
        let object: kube::api::DynamicObject = serde_json::from_value(secret(&["cached-secret-value"])).unwrap();
        let cached = format!("{:?}", Cached::Whole(std::sync::Arc::new(object)));
        assert!(cached.contains("\"s\""), "{cached}");
        for leaked in ["cached-secret-value", &b64("cached-secret-value"), "107, 117"] {
            assert!(!cached.contains(leaked), "{cached} shows {leaked}");
        }
    }

    #[test]
    fn a_value_cut_short_by_the_bound_is_cut_out_too() {
        let value = "refused-secret-value-of-some-length";
        let encoded = "cmVmdXNlZC1zZWNyZXQtdmFsdWUtb2Ytc29tZS1sZW5ndGg=";
        let s = secret(&[value]);
        for said in [format!("refusing {}…", &encoded[..20]), format!("refusing {}", &value[..12])] {
            let got = scrub(&s, &said);
            assert!(got.starts_with("refusing <redacted>"), "{said} → {got}");
        }
        assert_eq!(scrub(&s, "refusing ab…"), "refusing ab…", "shorter than a scrubbed value: left");
    }

    #[test]
    fn a_value_too_short_to_cut_out_withholds_the_message() {
        let got = scrub(&secret(&["long-enough-value", "443"]), "port 443 is refused");
        assert!(!got.contains("443") && got.contains("withheld"), "{got}");
    }
}
