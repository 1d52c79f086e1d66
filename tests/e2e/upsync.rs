//! Upsync (`spec.upsync`) on real kcp and a real cluster: a Secret and a ConfigMap an operator
//! creates in the cluster's copy of a namespace come back into the tenant's namespace in kcp,
//! labelled with the target, follow their originals and are deleted with them; they are never
//! synced down again (the original keeps its UID and resourceVersion); a tenant's own object of
//! the same name is reported, not overwritten; a copy kcp refuses is reported once, with the
//! Secret's value cut out of what kcp said; and a second workspace with the same names on the
//! same cluster gets nothing of the first's.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::env::{TestResult, eventually};
use crate::placement::{namespace_with_config, placement, tenant, wait_assigned};
use crate::syncer::{WAIT, downstream_get, downstream_ns, events, register, upstream_get};
use crate::{World, ensure};

/// A Placement of namespaces labelled `app=db` that copies back Secrets and ConfigMaps and
/// syncs down nothing labelled `sync=no`.
fn upsyncing() -> Result<String, String> {
    let mut p: Value = serde_json::from_str(&placement("db", "db", json!({}), None)).map_err(|e| e.to_string())?;
    p["spec"]["upsync"] = json!([{"kind": "Secret"}, {"kind": "ConfigMap"}]);
    p["spec"]["workloadSelector"] =
        json!({"matchExpressions": [{"key": "sync", "operator": "NotIn", "values": ["no"]}]});
    Ok(p.to_string())
}

/// A Secret value kcp's admission policy repeats in its refusal, which must never reach an event.
const REFUSED_VALUE: &str = "s3cr3t-upsync-token";

/// A ValidatingAdmissionPolicy (and binding) in the tenant's workspace refusing Secrets labelled
/// `refuse=upsync`, whose message quotes the Secret's `token`, as a careless policy author's
/// might (kcp v0.32's CEL renders it base64-encoded; the test looks for both forms).
const REFUSING_POLICY: &str = r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: refuse-upsync}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: [v1]
      operations: [CREATE, UPDATE]
      resources: [secrets]
  validations:
  - expression: "false"
    messageExpression: "'the workspace refuses this Secret (token ' + string(object.data.token) + ')'"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: refuse-upsync}
spec:
  policyName: refuse-upsync
  validationActions: [Deny]
  matchResources:
    objectSelector:
      matchLabels: {refuse: upsync}
"#;

/// Waits until kcp's `kind`/`name` in `ws`/db satisfies `ok`.
async fn wait_kcp(w: &World, ws: &str, kind: &str, name: &str, ok: impl Fn(&Value) -> bool) -> Result<Value, String> {
    eventually(&format!("{kind} {name} in {ws}/db"), WAIT, || async {
        Ok(upstream_get(w, ws, "db", kind, name)?.filter(|o| ok(o)))
    })
    .await
}

pub async fn operator_objects_come_back_to_kcp_and_never_go_down_again(w: Arc<World>) -> TestResult {
    let (ws, other) = ("root:pl-upsync", "root:pl-upsync-b");
    let mut keys = vec![];
    for ws in [ws, other] {
        tenant(&w, ws).await?;
        keys.push(register(&w, ws, "up", 0).await?);
        namespace_with_config(&w, ws, "db", "db")?;
        w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&upsyncing()?))?;
    }
    wait_assigned(&w, ws, "db", &[&keys[0]]).await?;
    wait_assigned(&w, other, "db", &[&keys[1]]).await?;
    let dns = downstream_ns(&w, ws, "up", ws, "db").await;
    eventually("the namespace's ConfigMap in the cluster", WAIT, || async {
        Ok(downstream_get(&w, 0, &dns, "configmap", "cfg")?.map(drop))
    })
    .await?;

    // A tenant's own ConfigMap that is not synced down, with the name an operator then uses.
    let mine = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "report", "labels": {"sync": "no"}}, "data": {"by": "tenant"}});
    w.kcp.kubectl(ws, &["-n", "db", "apply", "-f", "-"], Some(&mine.to_string()))?;
    let mine = upstream_get(&w, ws, "db", "configmap", "report")?.ok_or("tenant's report gone")?;

    // The operator writes in the cluster.
    let operator = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-conn", "labels": {"made-by": "operator"}}, "stringData": {"url": "postgres://db:5432"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "report"}, "data": {"by": "operator"}},
    ]});
    w.clusters[0].kubectl_stdin(&["-n", &dns, "apply", "-f", "-"], &operator.to_string())?;
    let original = downstream_get(&w, 0, &dns, "secret", "db-conn")?.ok_or("operator's secret gone")?;

    // Copied back, labelled with the target, with its data.
    let copy = wait_kcp(&w, ws, "secret", "db-conn", |s| s["data"]["url"] == "cG9zdGdyZXM6Ly9kYjo1NDMy").await?;
    ensure!(copy["metadata"]["labels"]["tmc.kcp.io/upsynced-from"] == keys[0].as_str(), "{}", copy["metadata"]);
    ensure!(copy["metadata"]["labels"]["made-by"] == "operator", "{}", copy["metadata"]);

    // The tenant's own ConfigMap is reported, not overwritten.
    let said = eventually("an UpsyncConflict event on report", WAIT, || async {
        Ok(events(&w, ws, "db", "UpsyncConflict")?.into_iter().find(|e| e.contains("report")))
    })
    .await?;
    ensure!(said.contains("not copied back"), "{said}");
    let still = upstream_get(&w, ws, "db", "configmap", "report")?.ok_or("tenant's report gone")?;
    ensure!(
        still["metadata"]["resourceVersion"] == mine["metadata"]["resourceVersion"] && still["data"]["by"] == "tenant",
        "the tenant's ConfigMap was written: {still}"
    );

    // Kept current.
    let update = json!({"stringData": {"url": "postgres://db-2:5432"}}).to_string();
    w.clusters[0].kubectl(&["-n", &dns, "patch", "secret", "db-conn", "--type=merge", "-p", &update])?;
    wait_kcp(&w, ws, "secret", "db-conn", |s| s["data"]["url"] == "cG9zdGdyZXM6Ly9kYi0yOjU0MzI=").await?;

    // Never synced down again: the original is the operator's alone (no target label, the same
    // UID), and no take-over was attempted.
    let now = downstream_get(&w, 0, &dns, "secret", "db-conn")?.ok_or("operator's secret gone")?;
    ensure!(now["metadata"]["uid"] == original["metadata"]["uid"], "the original was replaced");
    ensure!(now["metadata"]["labels"].get("tmc.kcp.io/target").is_none(), "synced down: {}", now["metadata"]);
    ensure!(events(&w, ws, "db", "TakeOverRefused")?.is_empty(), "a take-over was attempted");

    // A copy kcp refuses: one `UpsyncFailed` event naming it, with what kcp said, and without
    // the Secret's value in either form.
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(REFUSING_POLICY))?;
    let refused = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db-refused", "labels": {"refuse": "upsync"}}, "stringData": {"token": REFUSED_VALUE}});
    // A policy takes a moment to be enforced: wait until kcp refuses a server-side dry run.
    eventually("the workspace's policy to be enforced", WAIT, || async {
        let probe =
            w.kcp.kubectl(ws, &["-n", "db", "apply", "--dry-run=server", "-f", "-"], Some(&refused.to_string()));
        Ok(probe.is_err_and(|e| e.contains("the workspace refuses")).then_some(()))
    })
    .await?;
    w.clusters[0].kubectl_stdin(&["-n", &dns, "apply", "-f", "-"], &refused.to_string())?;
    let said = eventually("an UpsyncFailed event on db-refused", WAIT, || async {
        Ok(events(&w, ws, "db", "UpsyncFailed")?.into_iter().find(|e| e.contains("db-refused")))
    })
    .await?;
    ensure!(said.contains("the workspace refuses this Secret"), "kcp's reason is missing: {said}");
    let encoded = "czNjcjN0LXVwc3luYy10b2tlbg=="; // base64 of REFUSED_VALUE
    ensure!(!said.contains(REFUSED_VALUE) && !said.contains(encoded), "the Secret's value reached an event: {said}");
    ensure!(upstream_get(&w, ws, "db", "secret", "db-refused")?.is_none(), "kcp holds a refused copy");

    // The other workspace, same names on the same cluster, got nothing.
    ensure!(upstream_get(&w, other, "db", "secret", "db-conn")?.is_none(), "{other} got the first workspace's Secret");

    // Deleted with its original.
    w.clusters[0].kubectl(&["-n", &dns, "delete", "secret", "db-conn"])?;
    eventually("the copy deleted in kcp", WAIT, || async {
        Ok(upstream_get(&w, ws, "db", "secret", "db-conn")?.is_none().then_some(()))
    })
    .await?;
    ensure!(upstream_get(&w, ws, "db", "configmap", "report")?.is_some(), "the tenant's ConfigMap was deleted");
    // Retried at every pass meanwhile, the refusal of one version was told once.
    let told = events(&w, ws, "db", "UpsyncFailed")?.into_iter().filter(|e| e.contains("db-refused")).count();
    ensure!(told == 1, "{told} UpsyncFailed events for one refused version");
    Ok(())
}
