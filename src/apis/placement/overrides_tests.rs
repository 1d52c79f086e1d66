use serde_json::json;

use super::*;
use crate::apis::placement::v1alpha1::JsonPatchOperation;

fn parsed(v: Value) -> Override {
    serde_json::from_value(v).expect("an override")
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "kcp-abc", "labels": {"app": "web"}},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "docker.io/web:1"}]}}},
    })
}

fn entry(placement: &str, o: Value) -> TargetOverride {
    TargetOverride { placement: placement.into(), change: parsed(o), invalid: None }
}

#[test]
fn check_refuses_what_an_override_may_not_do() {
    let objects = json!({"group": "apps", "kind": "Deployment"});
    let big = "x".repeat(MAX_PATCH_BYTES);
    // (name, override, the error's start, or None when it is valid)
    let cases = [
        ("merge patch", json!({"mergePatch": {"spec": {"replicas": 3}}}), None),
        (
            "labels and annotations",
            json!({"mergePatch": {"metadata": {"labels": {"a": "b"}, "annotations": {}}}}),
            None,
        ),
        ("json patch", json!({"jsonPatch": [{"op": "replace", "path": "/spec/replicas", "value": 3}]}), None),
        ("remove needs no value", json!({"jsonPatch": [{"op": "remove", "path": "/metadata/labels/a"}]}), None),
        ("neither", json!({}), Some("must set exactly one")),
        (
            "both",
            json!({"mergePatch": {}, "jsonPatch": [{"op": "remove", "path": "/x"}]}),
            Some("must set exactly one"),
        ),
        ("merge sets kind", json!({"mergePatch": {"kind": "Secret"}}), Some("mergePatch may not set kind")),
        ("merge sets status", json!({"mergePatch": {"status": {}}}), Some("mergePatch may not set status")),
        ("merge renames", json!({"mergePatch": {"metadata": {"name": "x"}}}), Some("mergePatch may set only labels")),
        ("merge not an object", json!({"mergePatch": [1]}), Some("mergePatch must be a JSON object")),
        (
            "json renames",
            json!({"jsonPatch": [{"op": "replace", "path": "/metadata/name", "value": "x"}]}),
            Some("jsonPatch[0]: of metadata"),
        ),
        (
            "json whole metadata",
            json!({"jsonPatch": [{"op": "remove", "path": "/metadata"}]}),
            Some("jsonPatch[0]: of metadata"),
        ),
        (
            "json apiVersion",
            json!({"jsonPatch": [{"op": "replace", "path": "/apiVersion", "value": "v2"}]}),
            Some("jsonPatch[0]: a patch may not change apiVersion"),
        ),
        (
            "json status below",
            json!({"jsonPatch": [{"op": "add", "path": "/status/x", "value": 1}]}),
            Some("jsonPatch[0]: a patch may not change status"),
        ),
        (
            "relative path",
            json!({"jsonPatch": [{"op": "remove", "path": "spec"}]}),
            Some("jsonPatch[0]: path must start with /"),
        ),
        (
            "no value",
            json!({"jsonPatch": [{"op": "remove", "path": "/a"}, {"op": "add", "path": "/spec/x"}]}),
            Some("jsonPatch[1]: add and replace need a value"),
        ),
        ("too large", json!({"mergePatch": {"data": {"k": big}}}), Some("its patch is")),
        (
            "bad target selector",
            json!({"targetSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}, "mergePatch": {}}),
            Some("targetSelector"),
        ),
    ];
    for (name, mut o, want) in cases {
        o["name"] = json!("o");
        o["objects"] = objects.clone();
        let got = check(&parsed(o));
        match want {
            None => assert_eq!(got, Ok(()), "{name}"),
            Some(start) => assert!(got.as_ref().is_err_and(|e| e.starts_with(start)), "{name}: {got:?}"),
        }
    }
}

#[test]
fn overrides_select_by_group_kind_and_name() {
    // (objects, group, kind, name, selected)
    let cases = [
        (json!({"group": "apps", "kind": "Deployment"}), "apps", "Deployment", "web", true),
        (json!({"group": "apps", "kind": "Deployment", "names": ["api", "web"]}), "apps", "Deployment", "web", true),
        (json!({"group": "apps", "kind": "Deployment", "names": ["api"]}), "apps", "Deployment", "web", false),
        (json!({"group": "apps", "kind": "Deployment"}), "apps", "StatefulSet", "web", false),
        (json!({"kind": "ConfigMap"}), "", "ConfigMap", "c", true),
        (json!({"kind": "Deployment"}), "apps", "Deployment", "web", false),
    ];
    for (objects, group, kind, name, want) in cases {
        let o = parsed(json!({"name": "o", "objects": objects, "mergePatch": {}}));
        assert_eq!(selects(&o, group, kind, name), want, "{objects} {group}/{kind}/{name}");
    }
}

#[test]
fn applied_overrides_change_the_copy_in_order() {
    let image = json!({"name": "eu-image", "objects": {"group": "apps", "kind": "Deployment", "names": ["web"]},
        "jsonPatch": [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "eu.example/web:1"}]});
    let replicas = json!({"name": "more", "objects": {"group": "apps", "kind": "Deployment"},
        "mergePatch": {"metadata": {"annotations": {"region": "eu"}}, "spec": {"replicas": 5}}});
    let other = json!({"name": "cm", "objects": {"kind": "ConfigMap"}, "mergePatch": {"data": {"a": "b"}}});
    let list = [entry("p1", image), entry("p1", other), entry("p2", replicas)];
    let mut copy = deployment();
    assert_eq!(apply(&mut copy, &list, "apps", "Deployment", "web"), Ok(vec!["p1/eu-image".into(), "p2/more".into()]));
    assert_eq!(copy["spec"]["template"]["spec"]["containers"][0]["image"], "eu.example/web:1");
    assert_eq!(
        (copy["spec"]["replicas"].clone(), copy["metadata"]["annotations"].clone()),
        (json!(5), json!({"region": "eu"}))
    );
    // Nothing selects it: untouched.
    let mut other_copy = deployment();
    assert_eq!(apply(&mut other_copy, &list, "apps", "Deployment", "api").map(|v| v.len()), Ok(1));
    assert_eq!(apply(&mut other_copy, &list, "apps", "StatefulSet", "web"), Ok(vec![]));
}

#[test]
fn a_failing_override_leaves_the_copy_as_it_was() {
    let objects = json!({"group": "apps", "kind": "Deployment"});
    let good = entry("p", json!({"name": "good", "objects": objects, "mergePatch": {"spec": {"replicas": 9}}}));
    // (name, the failing override, the error's end)
    let cases = [
        (
            "missing path",
            json!({"jsonPatch": [{"op": "replace", "path": "/spec/template/spec/containers/3/image", "value": "x"}]}),
            "does not apply",
        ),
        (
            "forged: renames",
            json!({"jsonPatch": [{"op": "replace", "path": "/metadata/name", "value": "x"}]}),
            "is invalid",
        ),
        ("forged: sets kind", json!({"mergePatch": {"kind": "Secret"}}), "is invalid"),
        ("label not a string", json!({"mergePatch": {"metadata": {"labels": {"a": 1}}}}), "would make another object"),
    ];
    for (name, mut bad, want) in cases {
        bad["name"] = json!("bad");
        bad["objects"] = objects.clone();
        let mut copy = deployment();
        let got = apply(&mut copy, &[good.clone(), entry("p", bad)], "apps", "Deployment", "web");
        let err = got.expect_err(name);
        assert!(err.to_string().starts_with(&format!("override bad of Placement p {want}")), "{name}: {err}");
        assert_eq!(copy, deployment(), "{name}: untouched");
    }
    // Marked invalid by the manager.
    let mut marked = good.clone();
    marked.invalid = Some("its patch is 5000 bytes".into());
    let err = apply(&mut deployment(), &[marked], "apps", "Deployment", "web").expect_err("invalid");
    assert_eq!(err.to_string(), "override good of Placement p is invalid: its patch is 5000 bytes");
}

#[test]
fn targets_get_the_overrides_their_labels_select() {
    let eu: BTreeMap<String, String> = [("region".to_string(), "eu".to_string())].into();
    let us: BTreeMap<String, String> = [("region".to_string(), "us".to_string())].into();
    let objects = json!({"kind": "ConfigMap"});
    let overrides = [
        parsed(
            json!({"name": "eu", "objects": objects, "targetSelector": {"matchLabels": {"region": "eu"}}, "mergePatch": {}}),
        ),
        parsed(json!({"name": "all", "objects": objects, "mergePatch": {}})),
        parsed(
            json!({"name": "bad-selector", "objects": objects, "targetSelector": {"matchExpressions": [{"key": "r", "operator": "Near"}]}, "mergePatch": {}}),
        ),
        parsed(
            json!({"name": "bad-patch-eu", "objects": objects, "targetSelector": {"matchLabels": {"region": "eu"}}, "mergePatch": {"kind": "x"}}),
        ),
    ];
    let names = |list: Vec<TargetOverride>| {
        list.iter().map(|o| (o.change.name.clone(), o.invalid.is_some())).collect::<Vec<_>>()
    };
    let s = |n: &str, bad: bool| (n.to_string(), bad);
    assert_eq!(
        names(for_target("p", &overrides, &eu)),
        [s("eu", false), s("all", false), s("bad-selector", true), s("bad-patch-eu", true)]
    );
    assert_eq!(names(for_target("p", &overrides, &us)), [s("all", false), s("bad-selector", true)]);
    assert!(
        for_target("p", &overrides, &eu).iter().all(|o| o.change.target_selector.is_none()),
        "selectors stay with the manager"
    );

    let chosen = [("a".to_string(), eu), ("b".to_string(), us)];
    let got = status(&overrides, &chosen);
    let shown: Vec<(&str, Vec<String>, bool)> =
        got.iter().map(|o| (o.name.as_str(), o.targets.clone(), o.invalid.is_some())).collect();
    assert_eq!(
        shown,
        [
            ("eu", vec!["a".to_string()], false),
            ("all", vec!["a".to_string(), "b".to_string()], false),
            ("bad-selector", vec![], true),
            ("bad-patch-eu", vec![], true),
        ]
    );
}

#[test]
fn the_annotation_round_trips_and_a_forged_one_is_refused() {
    let list = vec![TargetOverride {
        placement: "p".into(),
        change: Override {
            name: "o".into(),
            objects: serde_json::from_value(json!({"group": "apps", "kind": "Deployment"})).unwrap(),
            json_patch: vec![JsonPatchOperation {
                op: JsonPatchOp::Replace,
                path: "/spec/replicas".into(),
                value: Some(json!(1)),
            }],
            ..Default::default()
        },
        invalid: None,
    }];
    let text = serde_json::to_string(&list).unwrap();
    assert_eq!(parse(&text), Ok(list));
    for forged in [
        "{",
        "{}",
        r#"[{"placement": "p"}]"#,
        r#"[{"placement": "p", "name": "o", "objects": {"kind": "X"}, "jsonPatch": [{"op": "move", "path": "/a"}]}]"#,
    ] {
        assert_eq!(parse(forged), Err("the overrides annotation is not a JSON list of overrides".into()), "{forged}");
    }
}
