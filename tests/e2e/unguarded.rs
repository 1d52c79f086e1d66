//! A copy can reach its cluster before its kcp object carries the syncer's finalizer: the two
//! writes go out together (issue 11, the finalizer off the latency path). This is the proof that
//! the window loses nothing, made wide open with a real fault: the tenant's own admission policy
//! refuses every finalizer of kcp-tmc, so the copies run with no finalizer at all. Then:
//! - the refusal is told on the object (event `FinalizerRefused`) and retried;
//! - the manager is killed with -9 and a kcp object is deleted while it is down (kcp deletes it
//!   at once: nothing holds it); the restarted manager finds the copy labelled for its target
//!   with no kcp object behind it and deletes it, and leaves the other copy (same UID);
//! - once the policy is gone, the retried finalizer lands.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::env::{self, TestResult, eventually};
use crate::syncer::{
    assigned_namespace, downstream_get, downstream_ns, events, register, upstream_get, wait_downstream,
};
use crate::{World, ensure};

const PROVIDER: &str = "root:unguarded-provider";
const TENANT: &str = "root:unguarded-tenant";
const TARGET: &str = "unguarded";
const CLUSTER: usize = 1;
const NAMESPACE: &str = "app";
const WAIT: Duration = Duration::from_secs(90);

/// The tenant's policy: no update of a ConfigMap may add a finalizer of kcp-tmc.
const POLICY: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: no-tmc-finalizers}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: ["v1"], operations: ["UPDATE"], resources: ["configmaps"]}
  validations:
  - expression: "!has(object.metadata.finalizers) || !object.metadata.finalizers.exists(f, f.startsWith('tmc.kcp.io/'))"
    message: "this workspace refuses kcp-tmc finalizers"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: no-tmc-finalizers}
spec: {policyName: no-tmc-finalizers, validationActions: [Deny]}
"#;

fn finalizers(w: &World, name: &str) -> Result<Vec<String>, String> {
    let obj =
        upstream_get(w, TENANT, NAMESPACE, "configmap", name)?.ok_or(format!("configmap {name} is gone from kcp"))?;
    Ok(serde_json::from_value(obj["metadata"]["finalizers"].clone()).unwrap_or_default())
}

fn uid(copy: &serde_json::Value) -> String {
    copy["metadata"]["uid"].as_str().unwrap_or_default().to_string()
}

pub async fn copies_without_a_finalizer_are_cleaned_up_after_a_kill(w: Arc<World>) -> TestResult {
    let admin = w.kcp.kubeconfig.display().to_string();
    let (code, out, err) =
        env::tmc(&["install", "--kubeconfig", &admin, "--workspace", PROVIDER, "--create-workspace"]);
    ensure!(code == 0, "tmc install failed: {out}{err}");
    w.bind_tenant(TENANT, PROVIDER, Duration::from_secs(60)).await?;
    w.kcp.kubectl(TENANT, &["apply", "-f", "-"], Some(POLICY))?;
    let mut manager = w.own_manager(PROVIDER, "unguarded-first");
    let key = register(&w, TENANT, TARGET, CLUSTER).await?;
    assigned_namespace(&w, TENANT, NAMESPACE, &key)?;
    // The policy is in force once kcp refuses a finalizer written by hand.
    w.kcp.kubectl(TENANT, &["-n", NAMESPACE, "create", "configmap", "probe"], None)?;
    eventually("the tenant's policy in force", WAIT, || async {
        let patch = json!({"metadata": {"finalizers": ["tmc.kcp.io/probe"]}}).to_string();
        let refused =
            w.kcp.kubectl(TENANT, &["-n", NAMESPACE, "patch", "configmap", "probe", "-p", &patch], None).is_err();
        Ok(refused.then_some(()))
    })
    .await?;
    for name in ["gone", "kept"] {
        w.kcp.kubectl(TENANT, &["-n", NAMESPACE, "create", "configmap", name, "--from-literal=a=b"], None)?;
    }
    let dns = downstream_ns(&w, TENANT, TARGET, TENANT, NAMESPACE).await;
    let gone = wait_downstream(&w, CLUSTER, &dns, "configmap", "gone").await?;
    let kept = wait_downstream(&w, CLUSTER, &dns, "configmap", "kept").await?;
    // The copies run, their kcp objects carry no finalizer, and the tenant is told why.
    for name in ["gone", "kept"] {
        ensure!(finalizers(&w, name)?.is_empty(), "{name} got a finalizer past the policy: {:?}", finalizers(&w, name));
    }
    let refused = eventually("a FinalizerRefused event", WAIT, || async {
        let seen = events(&w, TENANT, NAMESPACE, "FinalizerRefused")?;
        Ok(seen.iter().any(|e| e.contains("refuses kcp-tmc finalizers")).then_some(seen))
    })
    .await?;
    println!("refused finalizer told as: {}", refused[0]);

    // kill -9, then the tenant deletes one object while nobody runs the target: kcp deletes it
    // at once, and no watch of ours sees it go.
    manager.signal("KILL");
    for _ in 0..50 {
        if !manager.running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(!manager.running(), "the manager survived kill -9");
    w.kcp.kubectl(TENANT, &["-n", NAMESPACE, "delete", "configmap", "gone", "--wait=false"], None)?;
    ensure!(upstream_get(&w, TENANT, NAMESPACE, "configmap", "gone")?.is_none(), "gone is still in kcp");
    ensure!(downstream_get(&w, CLUSTER, &dns, "configmap", "gone")?.is_some(), "the copy went while nobody ran");

    let second = w.own_manager(PROVIDER, "unguarded-second");
    eventually("the orphaned copy deleted by the restarted manager", WAIT, || async {
        Ok(downstream_get(&w, CLUSTER, &dns, "configmap", "gone")?.is_none().then_some(()))
    })
    .await?;
    let now = downstream_get(&w, CLUSTER, &dns, "configmap", "kept")?.ok_or("the kept copy was deleted")?;
    ensure!(uid(&now) == uid(&kept), "the kept copy was recreated: uid {} → {}", uid(&kept), uid(&now));
    ensure!(uid(&gone) != uid(&kept), "two copies with one UID");

    // With the policy gone, the retried finalizer lands (the backoff is capped well below WAIT
    // for the few failures so far).
    w.kcp.kubectl(TENANT, &["delete", "validatingadmissionpolicybinding", "no-tmc-finalizers"], None)?;
    eventually("the finalizer on kept", Duration::from_secs(180), || async {
        Ok(finalizers(&w, "kept")?.iter().any(|f| f.ends_with(&key)).then_some(()))
    })
    .await?;
    drop(second);
    Ok(())
}
