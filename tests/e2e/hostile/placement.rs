//! Hostile tenants and Placements (issue 9, items 7 and 8): invalid selectors are refused at
//! admission by kcp or stop the Placement without undoing it, and probing other workspaces
//! through `locationSelector.workspace` tells the tenant nothing about them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::Bystander;
use crate::env::TestResult;
use crate::placement::{
    assigned, condition, get, namespace_with_config, placement, selected, tenant, wait_assigned, wait_scheduled,
};
use crate::syncer::{downstream_get, downstream_ns, register, wait_downstream};
use crate::{World, ensure};

fn placement_with(name: &str, spec: Value) -> String {
    json!({ "apiVersion": "placement.kcp.io/v1alpha1", "kind": "Placement", "metadata": { "name": name }, "spec": spec })
        .to_string()
}

fn message(p: &Value, type_: &str) -> String {
    let c = p["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == type_));
    c.and_then(|c| c["message"].as_str()).unwrap_or_default().to_string()
}

/// (a) Selectors the Kubernetes API would refuse are refused by kcp itself, from the rules in the
/// generated APIResourceSchema, for each of the three selectors; nothing is created.
pub async fn invalid_selectors_are_refused_at_admission(w: Arc<World>) -> TestResult {
    let ws = "root:hp-admission";
    tenant(&w, ws).await?;
    let expressions = |field: &str, expr: Value| {
        let mut spec = json!({ "namespaceSelector": {}, "locationSelector": {} });
        spec[field] = json!({ "matchExpressions": [expr] });
        spec
    };
    let long_name = "n".repeat(64);
    // (what, spec, the field kcp names, the rule's words)
    let cases = [
        (
            "Exists with values",
            expressions("namespaceSelector", json!({"key": "tier", "operator": "Exists", "values": ["web"]})),
            "spec.namespaceSelector.matchExpressions[0]",
            "values must be empty when the operator is Exists or DoesNotExist",
        ),
        (
            "DoesNotExist with values",
            expressions("workloadSelector", json!({"key": "tier", "operator": "DoesNotExist", "values": ["x"]})),
            "spec.workloadSelector.matchExpressions[0]",
            "values must be empty when the operator is Exists or DoesNotExist",
        ),
        (
            "In without values",
            expressions("locationSelector", json!({"key": "region", "operator": "In"})),
            "spec.locationSelector.matchExpressions[0]",
            "values must not be empty when the operator is In or NotIn",
        ),
        (
            "NotIn with an empty list",
            expressions("workloadSelector", json!({"key": "tier", "operator": "NotIn", "values": []})),
            "spec.workloadSelector.matchExpressions[0]",
            "values must not be empty when the operator is In or NotIn",
        ),
        (
            "unknown operator",
            expressions("namespaceSelector", json!({"key": "replicas", "operator": "Gt", "values": ["1"]})),
            "spec.namespaceSelector.matchExpressions[0].operator",
            r#"Unsupported value: "Gt""#,
        ),
        (
            "key with a space",
            expressions("locationSelector", json!({"key": "bad key", "operator": "Exists"})),
            "spec.locationSelector.matchExpressions[0].key",
            "should match",
        ),
        (
            "key name over 63 characters",
            expressions("namespaceSelector", json!({"key": long_name, "operator": "Exists"})),
            "spec.namespaceSelector.matchExpressions[0].key",
            "should match",
        ),
        (
            "value with a space in matchLabels",
            json!({ "namespaceSelector": { "matchLabels": { "app": "no way" } }, "locationSelector": {} }),
            "spec.namespaceSelector.matchLabels.app",
            "should match",
        ),
        (
            "value starting with '-' in In",
            expressions("locationSelector", json!({"key": "region", "operator": "In", "values": ["-east"]})),
            "spec.locationSelector.matchExpressions[0].values[0]",
            "should match",
        ),
    ];
    for (i, (what, spec, field, rule)) in cases.into_iter().enumerate() {
        let name = format!("refused-{i}");
        let refused = w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&placement_with(&name, spec)));
        let Err(error) = refused else { return Err(format!("{what}: kcp accepted the Placement").into()) };
        ensure!(error.contains("is invalid"), "{what}: not a validation error: {error}");
        ensure!(error.contains(field) && error.contains(rule), "{what}: want {field:?} and {rule:?} in: {error}");
        let found = w.kcp.kubectl(ws, &["get", "placement", &name, "--ignore-not-found", "-o", "name"], None)?;
        ensure!(found.trim().is_empty(), "{what}: the Placement exists anyway: {found}");
    }
    // The same selectors, valid, are accepted: the rules refuse only what is wrong.
    let valid = json!({
        "namespaceSelector": { "matchLabels": { "app": "web" },
                               "matchExpressions": [{"key": "example.com/tier", "operator": "Exists"}] },
        "locationSelector": { "matchExpressions": [{"key": "region", "operator": "In", "values": ["east"]}] },
        "workloadSelector": { "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}] },
    });
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&placement_with("accepted", valid)))?;
    Bystander::get(&w).await?.untouched(&w).await?;
    Ok(())
}

/// (b) A selector the schema cannot check (a `matchLabels` key, in each of the three selectors)
/// stops a Placement that has placed a namespace: `InvalidSelector` names the field, the
/// namespace keeps its assignment, the copy in the cluster keeps running (same UID), and a
/// namespace created meanwhile is not placed until the selector is fixed.
pub async fn invalid_selector_past_admission_keeps_what_was_placed(w: Arc<World>) -> TestResult {
    let ws = "root:hp-stuck";
    tenant(&w, ws).await?;
    let key = register(&w, ws, "steady", 0).await?;
    namespace_with_config(&w, ws, "kept", "kept")?;
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&placement("stuck", "kept", json!({}), None)))?;
    wait_scheduled(&w, ws, "stuck", "Scheduled").await?;
    wait_assigned(&w, ws, "kept", &[&key]).await?;
    let dns = downstream_ns(&w, ws, "steady", ws, "kept").await;
    let uid = wait_downstream(&w, 0, &dns, "configmap", "cfg").await?["metadata"]["uid"].clone();

    // (field, patch that breaks it, patch that mends it, the message's start)
    let cases = [
        (
            "namespaceSelector",
            json!({"spec": {"namespaceSelector": {"matchLabels": {"bad key": "x"}}}}),
            json!({"spec": {"namespaceSelector": {"matchLabels": {"bad key": null}}}}),
            r#"spec.namespaceSelector.matchLabels: label key "bad key" is not valid"#,
        ),
        (
            "workloadSelector",
            json!({"spec": {"workloadSelector": {"matchLabels": {"a/b/c": "x"}}}}),
            json!({"spec": {"workloadSelector": null}}),
            r#"spec.workloadSelector.matchLabels: label key "a/b/c" is not valid"#,
        ),
        (
            "locationSelector",
            json!({"spec": {"locationSelector": {"matchLabels": {"-region": "east"}}}}),
            json!({"spec": {"locationSelector": {"matchLabels": null}}}),
            r#"spec.locationSelector.matchLabels: label key "-region" is not valid"#,
        ),
    ];
    for (field, breaks, mends, want) in cases {
        w.kcp.kubectl(ws, &["patch", "placement", "stuck", "--type=merge", "-p", &breaks.to_string()], None)?;
        let p = wait_scheduled(&w, ws, "stuck", "InvalidSelector").await?;
        let m = message(&p, "Scheduled");
        ensure!(m.starts_with(want) && m.contains("stuck"), "{field}: message {m:?}");
        ensure!(condition(&p, "Ready") == ("False", "InvalidSelector"), "{field}: Ready {:?}", condition(&p, "Ready"));
        ensure!(selected(&p) == ["steady"], "{field}: the choice was dropped: {}", p["status"]);
        if field == "locationSelector" {
            namespace_with_config(&w, ws, "late", "kept")?;
        }
        // Give the reconcilers time to get it wrong.
        tokio::time::sleep(Duration::from_secs(4)).await;
        ensure!(
            assigned(&w, ws, "kept")? == [key.clone()],
            "{field}: assignment lost: {:?}",
            assigned(&w, ws, "kept")?
        );
        let copy = downstream_get(&w, 0, &dns, "configmap", "cfg")?.ok_or(format!("{field}: the copy was removed"))?;
        ensure!(copy["metadata"]["uid"] == uid, "{field}: the copy was recreated");
        if field == "locationSelector" {
            ensure!(assigned(&w, ws, "late")?.is_empty(), "a stuck Placement placed a new namespace");
        }
        w.kcp.kubectl(ws, &["patch", "placement", "stuck", "--type=merge", "-p", &mends.to_string()], None)?;
        wait_scheduled(&w, ws, "stuck", "Scheduled").await?;
    }
    // Mended, it converges again: the namespace created while it was stuck is placed now.
    wait_assigned(&w, ws, "late", &[&key]).await?;
    Bystander::get(&w).await?.untouched(&w).await?;
    Ok(())
}

/// Status with what differs between probes taken out: the path the tenant wrote and timestamps.
fn normalised(p: &Value, path: &str) -> Value {
    let mut status = p["status"].clone();
    for c in status["conditions"].as_array_mut().into_iter().flatten() {
        c["lastTransitionTime"] = Value::Null;
    }
    serde_json::from_str(&status.to_string().replace(path, "<ws>")).unwrap_or_default()
}

/// (c) A tenant names other workspaces in `locationSelector.workspace`: one that does not exist,
/// one under a parent that does not exist, one that exists with a matching Ready SyncTarget
/// that does not consent, and one that exists with none. All four read `WorkspaceNotAllowed`
/// with the same status apart from the path the tenant wrote; nothing is placed, no Event.
pub async fn cross_workspace_probes_all_read_not_allowed(w: Arc<World>) -> TestResult {
    let (prober, with_target, without_target) = ("root:hp-prober", "root:hp-private-with", "root:hp-private-none");
    tenant(&w, prober).await?;
    tenant(&w, with_target).await?;
    tenant(&w, without_target).await?;
    register(&w, with_target, "private", 0).await?;
    w.kcp.kubectl(with_target, &["label", "synctarget", "private", "region=east"], None)?;
    namespace_with_config(&w, prober, "probe", "probe")?;
    let probes = [
        ("p-missing", "root:hp-no-such-workspace"),
        ("p-deeper", "root:hp-no-such-parent:child"),
        ("p-with", with_target),
        ("p-none", without_target),
    ];
    for (name, path) in probes {
        let location = json!({ "workspace": path, "matchLabels": { "region": "east" } });
        w.kcp.kubectl(prober, &["apply", "-f", "-"], Some(&placement(name, "probe", location, None)))?;
    }
    let mut seen: Vec<(&str, Value)> = vec![];
    for (name, path) in probes {
        let p = wait_scheduled(&w, prober, name, "WorkspaceNotAllowed").await?;
        ensure!(
            condition(&p, "Ready") == ("False", "WorkspaceNotAllowed"),
            "{name}: Ready {:?}",
            condition(&p, "Ready")
        );
        ensure!(message(&p, "Scheduled").contains(path), "{name}: the message should name {path}");
        ensure!(selected(&p).is_empty() && p["status"]["phase"] == "Pending", "{name}: status {}", p["status"]);
        seen.push((name, normalised(&p, path)));
    }
    let (first, reference) = &seen[0];
    for (name, status) in &seen[1..] {
        ensure!(status == reference, "{name} reads differently from {first}:\n{status}\nvs\n{reference}");
    }
    // Stays that way (a later reconcile does not refine the answer), and nothing was placed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, path) in probes {
        let p = get(&w, prober, "placement", name)?;
        ensure!(normalised(&p, path) == *reference, "{name} changed later: {}", p["status"]);
    }
    ensure!(assigned(&w, prober, "probe")?.is_empty(), "a probe placed the namespace");
    let events = w.kcp.kubectl(prober, &["get", "events", "-A", "--field-selector", "reason=TargetsChanged"], None)?;
    ensure!(!events.contains("TargetsChanged"), "probes recorded events: {events}");
    Bystander::get(&w).await?.untouched(&w).await?;
    Ok(())
}
