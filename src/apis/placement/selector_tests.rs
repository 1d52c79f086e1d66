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
fn long(n: usize) -> String {
    "a".repeat(n)
}

/// (key, valid); the prefixes are 253 and 254 characters.
fn keys() -> Vec<(String, bool)> {
    let prefix = |last: usize| ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(last)].join(".");
    let rows: &[(&str, bool)] = &[
        ("app", true),
        ("A.b_c-9", true),
        ("example.com/app", true),
        ("kubernetes.io/metadata.name", true),
        ("a", true),
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
    let mut out: Vec<(String, bool)> = rows.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    out.extend([
        (long(63), true),
        (long(64), false),
        (format!("{}/x", prefix(61)), true),
        (format!("{}/x", prefix(62)), false),
        (format!("{}/{}", prefix(61), long(63)), true),
    ]);
    out
}

fn values() -> Vec<(String, bool)> {
    let rows: &[(&str, bool)] = &[
        ("", true),
        ("east", true),
        ("v1.2_3-x", true),
        ("1", true),
        ("bad value", false),
        ("-x", false),
        ("x.", false),
        ("a/b", false),
    ];
    let mut out: Vec<(String, bool)> = rows.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    out.extend([(long(63), true), (long(64), false)]);
    out
}

#[test]
fn keys_and_values() {
    for (key, want) in keys() {
        assert_eq!(validate_key(&key).is_ok(), want, "key {key:?}: {:?}", validate_key(&key));
    }
    for (value, want) in values() {
        assert_eq!(validate_value(&value).is_ok(), want, "value {value:?}");
    }
}

/// The generated schema refuses the same keys and values at admission, except a key prefix
/// over 253 characters (see `apis::placement::selector_schema`), which only the reconciler
/// catches.
#[test]
fn the_schema_patterns_agree_with_the_validator() {
    use crate::apis::placement::selector_schema::{KEY_PATTERN, VALUE_PATTERN};
    let key_re = regex::Regex::new(KEY_PATTERN).unwrap();
    let value_re = regex::Regex::new(VALUE_PATTERN).unwrap();
    for (key, want) in keys() {
        let by_schema = key.len() <= 317 && key_re.is_match(&key);
        let prefix_too_long = key.split_once('/').is_some_and(|(p, _)| p.len() > MAX_PREFIX);
        assert_eq!(by_schema, want || prefix_too_long, "key {key:?}");
    }
    for (value, want) in values() {
        assert_eq!(value.len() <= 63 && value_re.is_match(&value), want, "value {value:?}");
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
