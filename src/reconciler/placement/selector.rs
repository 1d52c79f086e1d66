//! Label selectors (`matchLabels` + `matchExpressions`): validated and evaluated the way the
//! Kubernetes API does (`metav1validation.ValidateLabelSelector`, `labels.Parse`). Pure: used for
//! Placements' namespace, location and workload selectors.
//!
//! The generated schemas refuse most invalid selectors at admission (see
//! `apis::placement::validation`); [`validate`] is the same rules again for what the schema
//! cannot say within kcp's CEL cost budget (the keys of `matchLabels`) and for objects stored
//! before the rules existed. A selector that fails it is never evaluated: guessing what a
//! broken selector meant could place or unplace namespaces nobody asked for.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::apis::placement::v1alpha1::PlacementSpec;

/// Longest label name (the part after the optional `prefix/`), and longest label value.
pub const MAX_NAME: usize = 63;
/// Longest label key prefix (a DNS subdomain).
pub const MAX_PREFIX: usize = 253;

/// Why a selector is invalid, naming the field (`spec.namespaceSelector.matchExpressions[0].key`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    pub field: String,
    pub problem: Problem,
}

/// What is wrong with one part of a selector. Tenant text is quoted and cut to [`Shown`]'s
/// bound, so a condition message never grows with what the tenant wrote.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("label key {0} is not valid: {1}")]
    Key(Shown, &'static str),
    #[error("label value {0} is not valid: {1}")]
    Value(Shown, &'static str),
    #[error("operator {0} is not one of In, NotIn, Exists, DoesNotExist")]
    Operator(Shown),
    #[error("operator {0} needs at least one value")]
    NoValues(&'static str),
    #[error("operator {0} takes no values")]
    Values(&'static str),
    #[error("{0} is not a workspace path such as root:org:team")]
    WorkspacePath(Shown),
}

/// Tenant text as it appears in a message: quoted, escaped, at most 80 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown(String);

impl Shown {
    pub fn of(text: &str) -> Self {
        const MAX: usize = 80;
        let cut: String = text.chars().take(MAX).collect();
        let more = if text.chars().count() > MAX { "…" } else { "" };
        Self(format!("{cut:?}{more}"))
    }
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`: a label name, or a non-empty label value.
fn name_chars(s: &str) -> bool {
    let (first, last) = (s.chars().next(), s.chars().last());
    first.is_some_and(alnum) && last.is_some_and(alnum) && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`, at most 253 characters.
fn dns_subdomain(s: &str) -> Result<(), &'static str> {
    if s.len() > MAX_PREFIX {
        return Err("the prefix must be no more than 253 characters");
    }
    let label_ok = |l: &str| {
        let lower = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        l.chars().next().is_some_and(lower)
            && l.chars().last().is_some_and(lower)
            && l.chars().all(|c| lower(c) || c == '-')
    };
    if s.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(
            "the prefix must be a DNS subdomain: lower-case alphanumerics, '-' and '.', starting and ending alphanumeric",
        )
    }
}

/// Checks a label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of `[A-Za-z0-9._-]` starting and ending alphanumeric.
pub fn validate_key(key: &str) -> Result<(), &'static str> {
    let name = match key.split_once('/') {
        None => key,
        Some(("", _)) => return Err("the prefix before '/' must not be empty"),
        Some((prefix, name)) => {
            dns_subdomain(prefix)?;
            name
        }
    };
    if name.is_empty() {
        return Err("the name must not be empty");
    }
    if name.contains('/') {
        return Err("a key has at most one '/'");
    }
    if name.len() > MAX_NAME {
        return Err("the name must be no more than 63 characters");
    }
    if !name_chars(name) {
        return Err("the name must be alphanumerics, '-', '_' or '.', starting and ending alphanumeric");
    }
    Ok(())
}

/// Checks a label value: empty, or at most 63 characters of `[A-Za-z0-9._-]` starting and ending
/// alphanumeric.
pub fn validate_value(value: &str) -> Result<(), &'static str> {
    if value.len() > MAX_NAME {
        return Err("it must be no more than 63 characters");
    }
    if !value.is_empty() && !name_chars(value) {
        return Err("it must be empty or alphanumerics, '-', '_' or '.', starting and ending alphanumeric");
    }
    Ok(())
}

/// Validates a selector given as its parts; `field` is its path in the object
/// (`spec.locationSelector`). The first problem found is reported.
pub fn validate(
    field: &str,
    match_labels: &BTreeMap<String, String>,
    expressions: &[LabelSelectorRequirement],
) -> Result<(), Invalid> {
    let invalid = |field: String, problem| Err(Invalid { field, problem });
    for (key, value) in match_labels {
        if let Err(why) = validate_key(key) {
            return invalid(format!("{field}.matchLabels"), Problem::Key(Shown::of(key), why));
        }
        if let Err(why) = validate_value(value) {
            return invalid(format!("{field}.matchLabels[{}]", Shown::of(key)), Problem::Value(Shown::of(value), why));
        }
    }
    for (i, r) in expressions.iter().enumerate() {
        let at = format!("{field}.matchExpressions[{i}]");
        if let Err(why) = validate_key(&r.key) {
            return invalid(format!("{at}.key"), Problem::Key(Shown::of(&r.key), why));
        }
        let values = r.values.as_deref().unwrap_or_default();
        let (op, needs_values): (&'static str, bool) = match r.operator.as_str() {
            "In" => ("In", true),
            "NotIn" => ("NotIn", true),
            "Exists" => ("Exists", false),
            "DoesNotExist" => ("DoesNotExist", false),
            other => return invalid(format!("{at}.operator"), Problem::Operator(Shown::of(other))),
        };
        match (needs_values, values.is_empty()) {
            (true, true) => return invalid(format!("{at}.values"), Problem::NoValues(op)),
            (false, false) => return invalid(format!("{at}.values"), Problem::Values(op)),
            _ => {}
        }
        for (j, v) in values.iter().enumerate() {
            if let Err(why) = validate_value(v) {
                return invalid(format!("{at}.values[{j}]"), Problem::Value(Shown::of(v), why));
            }
        }
    }
    Ok(())
}

/// [`validate`] for a `metav1.LabelSelector`.
pub fn validate_selector(field: &str, selector: &LabelSelector) -> Result<(), Invalid> {
    let empty = BTreeMap::new();
    validate(
        field,
        selector.match_labels.as_ref().unwrap_or(&empty),
        selector.match_expressions.as_deref().unwrap_or_default(),
    )
}

/// Validates the three selectors of a Placement: where it runs (`locationSelector`), which
/// namespaces (`namespaceSelector`) and which of their objects (`workloadSelector`).
pub fn validate_spec(spec: &PlacementSpec) -> Result<(), Invalid> {
    let location = &spec.location_selector;
    validate("spec.locationSelector", &location.match_labels, &location.match_expressions)?;
    validate_selector("spec.namespaceSelector", &spec.namespace_selector)?;
    spec.workload_selector.as_ref().map_or(Ok(()), |s| validate_selector("spec.workloadSelector", s))
}

/// Whether `labels` satisfy every `match_labels` entry and every requirement. An empty selector
/// matches everything. An unknown operator matches nothing (fail closed: never place by accident).
pub fn matches(
    match_labels: &BTreeMap<String, String>,
    expressions: &[LabelSelectorRequirement],
    labels: &BTreeMap<String, String>,
) -> bool {
    match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)) && expressions.iter().all(|r| requirement(r, labels))
}

/// [`matches`] for a `metav1.LabelSelector`.
pub fn matches_selector(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let empty = BTreeMap::new();
    matches(
        selector.match_labels.as_ref().unwrap_or(&empty),
        selector.match_expressions.as_deref().unwrap_or_default(),
        labels,
    )
}

fn requirement(r: &LabelSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let value = labels.get(&r.key);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn table() {
        let east = labels(&[("region", "east"), ("tier", "gold")]);
        type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], Vec<LabelSelectorRequirement>, bool);
        let cases: &[Row] = &[
            ("empty selects all", &[], vec![], true),
            ("matchLabels hit", &[("region", "east")], vec![], true),
            ("matchLabels miss", &[("region", "west")], vec![], false),
            ("matchLabels absent key", &[("zone", "a")], vec![], false),
            ("In hit", &[], vec![req("region", "In", &["east", "west"])], true),
            ("In miss", &[], vec![req("region", "In", &["west"])], false),
            ("NotIn hit", &[], vec![req("region", "NotIn", &["west"])], true),
            ("NotIn absent key", &[], vec![req("zone", "NotIn", &["a"])], true),
            ("NotIn miss", &[], vec![req("region", "NotIn", &["east"])], false),
            ("Exists", &[], vec![req("tier", "Exists", &[])], true),
            ("DoesNotExist", &[], vec![req("tier", "DoesNotExist", &[])], false),
            ("all must hold", &[("region", "east")], vec![req("tier", "In", &["silver"])], false),
            ("unknown operator fails closed", &[], vec![req("region", "Gt", &["1"])], false),
        ];
        for (name, ml, exprs, want) in cases {
            assert_eq!(matches(&labels(ml), exprs, &east), *want, "{name}");
        }
    }
    #[test]
    fn keys_and_values() {
        let long = |n: usize| "a".repeat(n);
        let prefix_253 = format!("{}/x", ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join("."));
        let prefix_254 = format!("{}/x", ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(62)].join("."));
        // (key, valid)
        let keys: &[(&str, bool)] = &[
            ("app", true),
            ("A.b_c-9", true),
            ("example.com/app", true),
            ("kubernetes.io/metadata.name", true),
            ("a", true),
            (&long(63), true),
            (&long(64), false),
            (&prefix_253, true),
            (&prefix_254, false),
            ("", false),
            ("bad key", false),
            ("-app", false),
            ("app-", false),
            ("app.", false),
            ("_app", false),
            ("a/b/c", false),
            ("/app", false),
            ("example.com/", false),
            ("Example.com/app", false),
            ("example..com/app", false),
            ("-example.com/app", false),
            ("exa_mple.com/app", false),
            ("ünicode", false),
        ];
        for (key, want) in keys {
            assert_eq!(validate_key(key).is_ok(), *want, "key {key:?}: {:?}", validate_key(key));
        }
        let values: &[(&str, bool)] = &[
            ("", true),
            ("east", true),
            ("v1.2_3-x", true),
            ("1", true),
            (&long(63), true),
            (&long(64), false),
            ("bad value", false),
            ("-x", false),
            ("x.", false),
            ("a/b", false),
        ];
        for (value, want) in values {
            assert_eq!(validate_value(value).is_ok(), *want, "value {value:?}");
        }
    }

    #[test]
    fn selectors_name_the_field_and_the_problem() {
        let r = |key: &str, op: &str, values: Option<&[&str]>| LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        };
        type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], Vec<LabelSelectorRequirement>, Option<&'a str>);
        let rows: &[Row] = &[
            ("empty", &[], vec![], None),
            ("valid both", &[("app", "web")], vec![r("tier", "In", Some(&["a", "b"])), r("x", "Exists", None)], None),
            ("Exists with empty list", &[], vec![r("x", "Exists", Some(&[]))], None),
            ("empty matchLabels value", &[("app", "")], vec![], None),
            (
                "bad matchLabels key",
                &[("bad key", "x")],
                vec![],
                Some(r#"sel.matchLabels: label key "bad key" is not valid: the name must be alphanumerics"#),
            ),
            (
                "bad matchLabels value",
                &[("app", "no way")],
                vec![],
                Some(r#"sel.matchLabels["app"]: label value "no way" is not valid"#),
            ),
            (
                "Exists with values",
                &[],
                vec![r("x", "Exists", Some(&["a"]))],
                Some("sel.matchExpressions[0].values: operator Exists takes no values"),
            ),
            (
                "DoesNotExist with values",
                &[],
                vec![r("x", "In", Some(&["a"])), r("y", "DoesNotExist", Some(&["a"]))],
                Some("sel.matchExpressions[1].values: operator DoesNotExist takes no values"),
            ),
            (
                "In without values",
                &[],
                vec![r("x", "In", None)],
                Some("sel.matchExpressions[0].values: operator In needs at least one value"),
            ),
            (
                "NotIn with an empty list",
                &[],
                vec![r("x", "NotIn", Some(&[]))],
                Some("sel.matchExpressions[0].values: operator NotIn needs at least one value"),
            ),
            (
                "unknown operator",
                &[],
                vec![r("x", "Gt", Some(&["1"]))],
                Some(r#"sel.matchExpressions[0].operator: operator "Gt" is not one of"#),
            ),
            (
                "operators are case-sensitive",
                &[],
                vec![r("x", "exists", None)],
                Some(r#"sel.matchExpressions[0].operator: operator "exists""#),
            ),
            (
                "bad expression key",
                &[],
                vec![r("a/b/c", "Exists", None)],
                Some(r#"sel.matchExpressions[0].key: label key "a/b/c" is not valid: a key has at most one '/'"#),
            ),
            (
                "bad expression value",
                &[],
                vec![r("x", "In", Some(&["ok", "not ok"]))],
                Some(r#"sel.matchExpressions[0].values[1]: label value "not ok" is not valid"#),
            ),
        ];
        for (name, ml, exprs, want) in rows {
            let got = validate("sel", &labels(ml), exprs).err().map(|e| e.to_string());
            match (want, &got) {
                (None, None) => {}
                (Some(want), Some(got)) => assert!(got.starts_with(want), "{name}: {got}"),
                _ => panic!("{name}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn tenant_text_in_messages_is_bounded() {
        let key = format!("{}\n{}", "k".repeat(500), "x");
        let e = validate("sel", &labels(&[(&key, "v")]), &[]).unwrap_err().to_string();
        assert!(e.len() < 300, "{} characters", e.len());
        assert!(!e.contains('\n'), "control characters are escaped: {e}");
    }

    #[test]
    fn a_placement_spec_names_which_selector() {
        let spec = |v: serde_json::Value| -> PlacementSpec { serde_json::from_value(v).unwrap() };
        let ok = spec(serde_json::json!({"namespaceSelector": {}, "locationSelector": {}}));
        assert_eq!(validate_spec(&ok), Ok(()));
        let bad = |field: &str, sel: serde_json::Value| {
            let mut v = serde_json::json!({"namespaceSelector": {}, "locationSelector": {}});
            v[field] = sel;
            validate_spec(&spec(v)).unwrap_err().field
        };
        let exists = serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]});
        assert_eq!(bad("namespaceSelector", exists.clone()), "spec.namespaceSelector.matchExpressions[0].values");
        assert_eq!(bad("locationSelector", exists.clone()), "spec.locationSelector.matchExpressions[0].values");
        assert_eq!(bad("workloadSelector", exists), "spec.workloadSelector.matchExpressions[0].values");
    }
}
