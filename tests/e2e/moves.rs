//! Moves of a placed namespace, end to end: the old target keeps the namespace until the new
//! target's syncer has *applied* everything (and its Deployments are available there). A target
//! whose cluster refuses the workload (here a ValidatingAdmissionPolicy on that cluster) never
//! gets it at the cost of the running copy: the Placement says `MoveStalled` after the move
//! timeout (15s for the suite's manager) and the old copy keeps running, same UID.

use std::sync::Arc;
use std::time::Duration;

use kcp_tmc::apis::applied::applied_annotation;
use kcp_tmc::apis::names::AWAITING_EVIDENCE_ANNOTATION;
use serde_json::{Value, json};

use crate::env::{TestResult, eventually};
use crate::placement::{
    assigned, condition, get, placement, tenant, wait_assigned, wait_scheduled, wait_scheduled_within,
};
use crate::syncer::{WAIT, deployment, downstream_get, downstream_ns, list, register, upstream_get, wait_downstream};
use crate::{World, ensure};

/// The label the refusing cluster's admission policy matches; unique to this test, so the
/// policy on the shared cluster touches nothing else.
const REFUSE: (&str, &str) = ("e2e.example.com/refuse", "evidence-move");

/// A ValidatingAdmissionPolicy (and binding) refusing Deployments labelled [`REFUSE`].
fn refusal_policy() -> String {
    let (key, value) = REFUSE;
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: tmc-e2e-refuse}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [apps]
      apiVersions: [v1]
      operations: [CREATE, UPDATE]
      resources: [deployments]
  validations:
  - expression: "false"
    message: refused by the e2e admission policy
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: tmc-e2e-refuse}}
spec:
  policyName: tmc-e2e-refuse
  validationActions: [Deny]
  matchResources:
    objectSelector:
      matchLabels: {{{key}: {value}}}
"#
    )
}

fn available(d: &Value) -> bool {
    d["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Available" && c["status"] == "True"))
}

pub async fn placement_move_waits_for_evidence_and_a_refusing_target_keeps_the_workload(w: Arc<World>) -> TestResult {
    let ws = "root:pl-evidence";
    tenant(&w, ws).await?;
    let old = register(&w, ws, "old", 0).await?;
    let yaml = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: app\n  labels: {app: evidence}\n";
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(yaml))?;
    let mut web: Value = serde_json::from_str(&deployment("web", 1))?;
    web["metadata"]["labels"][REFUSE.0] = json!(REFUSE.1);
    let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "b"}});
    w.kcp.kubectl(ws, &["-n", "app", "apply", "-f", "-"], Some(&list(&[web.to_string(), cfg.to_string()])))?;
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&placement("web", "evidence", json!({}), Some(1))))?;
    wait_assigned(&w, ws, "app", &[&old]).await?;
    let old_dns = downstream_ns(&w, ws, "old", ws, "app").await;
    let running = eventually("the Deployment available on the old cluster", WAIT, || async {
        Ok(downstream_get(&w, 0, &old_dns, "deployment", "web")?.filter(available))
    })
    .await?;
    let uid = running["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    ensure!(!uid.is_empty(), "no UID: {running}");
    // No move waits on the target, so no evidence is written (one kcp write per object fewer). Checked once kcp shows the Deployment available: the syncer would have recorded
    // the evidence before it brought that status up.
    let up = eventually("the kcp Deployment available", WAIT, || async {
        Ok(upstream_get(&w, ws, "app", "deployment", "web")?.filter(available))
    })
    .await?;
    ensure!(up["metadata"]["annotations"].get(applied_annotation(&old)).is_none(), "evidence on one target: {up}");

    // The new cluster refuses the Deployment (checked with a server-side dry run first).
    w.clusters[1].kubectl_stdin(&["apply", "-f", "-"], &refusal_policy())?;
    let mut probe = web.clone();
    probe["metadata"]["namespace"] = json!("default");
    probe["metadata"]["name"] = json!("tmc-e2e-refuse-probe");
    eventually("the admission policy refuses labelled Deployments", WAIT, || async {
        let refused = w.clusters[1].kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &probe.to_string());
        Ok(refused.err().filter(|e| e.contains("refused by the e2e admission policy")).map(|_| ()))
    })
    .await?;
    let new = register(&w, ws, "new", 1).await?;
    let drain = r#"{"spec":{"evictAfter":"2020-01-01T00:00:00Z"}}"#;
    w.kcp.kubectl(ws, &["patch", "synctarget", "old", "--type=merge", "-p", drain], None)?;

    // The move stalls: the new target holds its finalizer (its intent) but no evidence. The
    // stall is declared 15 s after the new target took the namespace, which itself waits for the
    // new target's first heartbeat: on a loaded two-core machine that is more than WAIT.
    let p = wait_scheduled_within(&w, ws, "web", "MoveStalled", Duration::from_secs(150)).await?;
    let message = p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Scheduled"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string();
    ensure!(message.contains("moving to new") && message.contains("Deployment web"), "message: {message}");
    let mut both = vec![old.clone(), new.clone()];
    both.sort();
    let mut now_assigned = assigned(&w, ws, "app")?;
    now_assigned.sort();
    ensure!(now_assigned == both, "assigned {now_assigned:?}");
    let up = upstream_get(&w, ws, "app", "deployment", "web")?.ok_or("kcp Deployment gone")?;
    ensure!(
        up["metadata"]["finalizers"].to_string().contains(&format!("tmc.kcp.io/syncer-{new}")),
        "the new target's syncer should have taken the object: {}",
        up["metadata"]
    );
    ensure!(up["metadata"]["annotations"].get(applied_annotation(&new)).is_none(), "evidence without an apply");
    // The move calls for the new target's evidence on the namespace, and only the new target
    // writes any: the old one is not waited on (the ConfigMap shows both, it applied on both).
    let ns = get(&w, ws, "namespace", "app")?;
    let awaiting = ns["metadata"]["annotations"][AWAITING_EVIDENCE_ANNOTATION].as_str().unwrap_or_default();
    ensure!(awaiting == new, "the namespace should await {new}: {}", ns["metadata"]);
    let cfg = eventually("the new target's evidence on the ConfigMap", WAIT, || async {
        Ok(upstream_get(&w, ws, "app", "configmap", "cfg")?
            .filter(|c| c["metadata"]["annotations"].get(applied_annotation(&new)).is_some()))
    })
    .await?;
    ensure!(cfg["metadata"]["annotations"].get(applied_annotation(&old)).is_none(), "the old target's evidence: {cfg}");
    let new_dns = downstream_ns(&w, ws, "new", ws, "app").await;
    wait_downstream(&w, 1, &new_dns, "configmap", "cfg").await?;
    ensure!(downstream_get(&w, 1, &new_dns, "deployment", "web")?.is_none(), "the refused Deployment exists");
    let still = downstream_get(&w, 0, &old_dns, "deployment", "web")?.ok_or("the old copy was deleted")?;
    ensure!(still["metadata"]["uid"] == uid.as_str(), "the old copy was recreated: {}", still["metadata"]);
    ensure!(still["metadata"].get("deletionTimestamp").is_none(), "the old copy is being deleted");
    ensure!(condition(&get(&w, ws, "placement", "web")?, "Scheduled").1 == "MoveStalled", "condition flapped");

    // The cluster accepts it after all: the move completes, and the old copy goes only once
    // the new one is available.
    w.clusters[1].kubectl(&["delete", "validatingadmissionpolicybinding", "tmc-e2e-refuse"])?;
    w.clusters[1].kubectl(&["delete", "validatingadmissionpolicy", "tmc-e2e-refuse"])?;
    // A change in kcp re-queues the object at once instead of after its retry backoff.
    w.kcp.kubectl(ws, &["-n", "app", "annotate", "deployment", "web", "e2e.example.com/retry=1"], None)?;
    let new_copy = eventually("the old copy deleted after the move", Duration::from_secs(120), || async {
        if downstream_get(&w, 0, &old_dns, "deployment", "web")?.is_some() {
            return Ok(None);
        }
        // Observed right after the old copy went: the new one must be available already.
        Ok(Some(downstream_get(&w, 1, &new_dns, "deployment", "web")?))
    })
    .await?;
    let new_copy = new_copy.ok_or("the old copy went while the new cluster had none")?;
    ensure!(available(&new_copy), "the old copy went before the new one was available: {}", new_copy["status"]);
    wait_assigned(&w, ws, "app", &[&new]).await?;
    let ns = get(&w, ws, "namespace", "app")?;
    ensure!(ns["metadata"]["annotations"].get(AWAITING_EVIDENCE_ANNOTATION).is_none(), "still awaiting: {ns}");
    // What let it go: the new target's evidence, written while the namespace was on both.
    let up = upstream_get(&w, ws, "app", "deployment", "web")?.ok_or("kcp Deployment gone")?;
    let evidence = up["metadata"]["annotations"][applied_annotation(&new)].as_str().unwrap_or_default();
    ensure!(evidence.contains("\"available\":true"), "the new target's evidence: {evidence:?}");
    wait_scheduled(&w, ws, "web", "Scheduled").await?;
    Ok(())
}
