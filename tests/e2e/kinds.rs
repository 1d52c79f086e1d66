//! Status that tells the truth for kinds other than Deployments, on real kcp and two real
//! clusters: a StatefulSet, a DaemonSet, a Job and a LoadBalancer Service placed on both show in
//! kcp what runs on both (counts summed, the Job complete only once complete everywhere, every
//! cluster's load-balancer address).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::env::{TestResult, eventually};
use crate::placement::tenant;
use crate::syncer::{WAIT, downstream_ns, register, upstream_get, wait_downstream};
use crate::{World, ensure};

const WS: &str = "root:kinds";

/// The kinds the two targets sync: the workload kinds kcp-tmc exports, and ConfigMaps.
fn supported() -> Value {
    json!([{"group": "apps", "kind": "StatefulSet"}, {"group": "apps", "kind": "DaemonSet"},
           {"group": "batch", "kind": "Job"}, {"group": "", "kind": "Service"}, {"group": "", "kind": "ConfigMap"}])
}

fn pod_template(app: &str, restart: &str) -> Value {
    json!({"metadata": {"labels": {"app": app}},
           "spec": {"restartPolicy": restart, "containers": [{"name": "c", "image": "busybox:1.36"}]}})
}

fn workloads() -> Vec<Value> {
    let selector = |app: &str| json!({"matchLabels": {"app": app}});
    vec![
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
               "spec": {"replicas": 1, "serviceName": "db", "selector": selector("db"), "template": pod_template("db", "Always")}}),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
               "spec": {"selector": selector("agent"), "template": pod_template("agent", "Always")}}),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
               "spec": {"template": pod_template("once", "Never")}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
               "spec": {"type": "LoadBalancer", "selector": {"app": "db"}, "ports": [{"port": 80}]}}),
    ]
}

/// Waits until kcp's `kind`/`name` status satisfies `done`; returns the status.
async fn wait_status(w: &World, kind: &str, name: &str, done: impl Fn(&Value) -> bool) -> Result<Value, String> {
    eventually(&format!("{kind} {name} status in kcp"), WAIT, || async {
        let obj = upstream_get(w, WS, "work", kind, name)?.ok_or("gone")?;
        match done(&obj["status"]) {
            true => Ok(Some(obj["status"].clone())),
            false => Err(format!("status {}", obj["status"])),
        }
    })
    .await
}

pub async fn status_of_more_kinds_adds_up_across_clusters(w: Arc<World>) -> TestResult {
    tenant(&w, WS).await?;
    let mut keys = vec![];
    for (name, index) in [("k0", 0), ("k1", 1)] {
        keys.push(register(&w, WS, name, index).await?);
        let patch = json!({ "spec": { "supportedAPIs": supported() } }).to_string();
        w.kcp.kubectl(WS, &["patch", "synctarget", name, "--type=merge", "-p", &patch], None)?;
    }
    let labels: String = keys.iter().map(|k| format!("state.tmc.kcp.io/{k}: Sync, ")).collect();
    let ns = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: work\n  labels: {{{labels}}}\n");
    w.kcp.kubectl(WS, &["apply", "-f", "-"], Some(&ns))?;
    for obj in workloads() {
        w.kcp.kubectl(WS, &["-n", "work", "apply", "-f", "-"], Some(&obj.to_string()))?;
    }

    // One StatefulSet pod per cluster; the DaemonSet on each cluster's two nodes.
    wait_status(&w, "statefulset", "db", |s| s["readyReplicas"] == 2 && s["replicas"] == 2).await?;
    wait_status(&w, "daemonset", "agent", |s| s["desiredNumberScheduled"] == 4 && s["numberReady"] == 4).await?;
    // The Job ran once in each cluster: complete only now, with both successes counted.
    let job = wait_status(&w, "job", "once", |s| {
        let complete =
            s["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Complete" && c["status"] == "True");
        complete && s["succeeded"] == 2
    })
    .await?;
    ensure!(job["completionTime"].is_string() && job["startTime"].is_string(), "job times {job}");

    // Each cluster's load balancer (set here as a cloud controller would) shows in kcp.
    for (index, (name, ip)) in [("k0", "192.0.2.10"), ("k1", "192.0.2.11")].into_iter().enumerate() {
        let dns = downstream_ns(&w, WS, name, WS, "work").await;
        wait_downstream(&w, index, &dns, "service", "lb").await?;
        let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}).to_string();
        w.clusters[index].kubectl(&[
            "-n",
            &dns,
            "patch",
            "service",
            "lb",
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ])?;
    }
    let ingress = |s: &Value| -> Vec<String> {
        let points = s["loadBalancer"]["ingress"].as_array().cloned().unwrap_or_default();
        points.iter().filter_map(|p| p["ip"].as_str().map(String::from)).collect()
    };
    let lb = wait_status(&w, "service", "lb", |s| ingress(s).len() == 2).await?;
    let mut ips = ingress(&lb);
    ips.sort();
    ensure!(ips == ["192.0.2.10", "192.0.2.11"], "ingress {lb}");
    Ok(())
}
