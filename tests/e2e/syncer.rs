//! Push-mode syncing, end to end: workloads created with kubectl in kcp workspaces run on real
//! kube-apiservers (with kwok nodes), and their status comes back.
//!
//! Clusters 0 and 1 are shared by several tests, each in its own namespaces; cluster 2 belongs to
//! `nothing_is_written_when_nothing_changed` alone, because it counts the cluster's write requests.

use std::sync::Arc;
use std::time::Duration;

use kcp_tmc::kcp::workspace;
use kcp_tmc::syncer::naming::{Locator, TargetRef, target_key};
use serde_json::{Value, json};

use crate::env::{TestResult, eventually};
use crate::{TENANT_A, TENANT_B, World, ensure};

pub const WAIT: Duration = Duration::from_secs(60);

/// Registers cluster `index` as the push-mode SyncTarget `name` in `ws` and waits until the
/// syncer's heartbeat makes it Ready. Returns the target key.
pub async fn register(w: &World, ws: &str, name: &str, index: usize) -> Result<String, String> {
    let kubeconfig = w.clusters[index].kubeconfig_text();
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": format!("{name}-kubeconfig"), "namespace": "default" },
        "stringData": { "kubeconfig": kubeconfig },
    });
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&secret.to_string()))?;
    let target = format!(
        "apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata: {{name: {name}}}\nspec:\n  kubeconfigSecretRef: {{namespace: default, name: {name}-kubeconfig}}\n"
    );
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&target))?;
    eventually(&format!("SyncTarget {ws}/{name} Ready"), WAIT, || async {
        let out = w.kcp.kubectl(
            ws,
            &["get", "synctarget", name, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
            None,
        )?;
        Ok((out == "True").then_some(()))
    })
    .await?;
    let cluster = workspace::resolve(&w.clients, &ws.parse().unwrap()).await.map_err(|e| e.to_string())?;
    Ok(target_key(&cluster, name))
}

/// Cluster `index`'s kubeconfig with its server moved to a free port nothing listens on: a
/// cluster that became unreachable.
pub fn unreachable_kubeconfig(w: &World, index: usize) -> Result<String, String> {
    let kubeconfig = w.clusters[index].kubeconfig_text();
    let server = kubeconfig.lines().find_map(|l| l.trim().strip_prefix("server: ")).ok_or("no server")?.to_string();
    Ok(kubeconfig.replace(&server, &format!("https://127.0.0.1:{}", crate::env::free_port())))
}

/// Creates the kcp namespace `ns` in `ws` assigned to the target `key`.
pub fn assigned_namespace(w: &World, ws: &str, ns: &str, key: &str) -> Result<(), String> {
    let yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{state.tmc.kcp.io/{key}: Sync}}\n"
    );
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&yaml)).map(|_| ())
}

/// The downstream namespace holding `ws`/`ns` for the target `name` of `target_ws`.
pub async fn downstream_ns(w: &World, target_ws: &str, name: &str, ws: &str, ns: &str) -> String {
    let target_cluster = workspace::resolve(&w.clients, &target_ws.parse().unwrap()).await.unwrap();
    let cluster = workspace::resolve(&w.clients, &ws.parse().unwrap()).await.unwrap();
    let target = TargetRef { cluster: target_cluster.to_string(), name: name.to_string() };
    Locator::new(target, &cluster, ns).downstream_namespace()
}

pub fn deployment(name: &str, replicas: i32) -> String {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "web", "image": "nginx:1.27" }] },
            },
        },
    })
    .to_string()
}

/// One JSON document kubectl applies: a `List` of the given objects.
pub fn list(items: &[String]) -> String {
    let items: Vec<Value> = items.iter().map(|i| serde_json::from_str(i).expect("test objects are JSON")).collect();
    json!({ "apiVersion": "v1", "kind": "List", "items": items }).to_string()
}

/// `kubectl get -o json` of an object in a physical cluster, or `None` when absent.
pub fn downstream_get(w: &World, index: usize, ns: &str, kind: &str, name: &str) -> Result<Option<Value>, String> {
    match w.clusters[index].kubectl(&["-n", ns, "get", kind, name, "-o", "json", "--ignore-not-found"]) {
        Ok(out) if out.trim().is_empty() => Ok(None),
        Ok(out) => serde_json::from_str(&out).map(Some).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    }
}

pub async fn wait_downstream(w: &World, index: usize, ns: &str, kind: &str, name: &str) -> Result<Value, String> {
    eventually(&format!("{kind} {ns}/{name} in cluster {index}"), WAIT, || async {
        downstream_get(w, index, ns, kind, name)
    })
    .await
}

pub fn upstream_get(w: &World, ws: &str, ns: &str, kind: &str, name: &str) -> Result<Option<Value>, String> {
    let out = w.kcp.kubectl(ws, &["-n", ns, "get", kind, name, "-o", "json", "--ignore-not-found"], None)?;
    if out.trim().is_empty() { Ok(None) } else { serde_json::from_str(&out).map(Some).map_err(|e| e.to_string()) }
}

pub async fn workloads_run_on_the_cluster_and_status_comes_back(w: Arc<World>) -> TestResult {
    let key = register(&w, TENANT_A, "phys-1", 0).await?;
    assigned_namespace(&w, TENANT_A, "shop", &key)?;
    let objects = list(&[
        deployment("shop", 2),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop"},
               "spec": {"selector": {"app": "shop"}, "ports": [{"port": 80, "targetPort": 8080}]}})
        .to_string(),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shop-config"}, "data": {"mode": "prod"}})
            .to_string(),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shop-secret"}, "stringData": {"token": "s3cret"}})
            .to_string(),
    ]);
    w.kcp.kubectl(TENANT_A, &["-n", "shop", "apply", "-f", "-"], Some(&objects))?;
    let dns = downstream_ns(&w, TENANT_A, "phys-1", TENANT_A, "shop").await;

    let ns = wait_downstream(&w, 0, "", "namespace", &dns).await?;
    let locator = ns["metadata"]["annotations"]["tmc.kcp.io/namespace-locator"].as_str().unwrap_or_default();
    ensure!(locator.contains("\"namespace\":\"shop\""), "downstream namespace locator: {locator}");
    let svc = wait_downstream(&w, 0, &dns, "service", "shop").await?;
    ensure!(
        svc["spec"]["clusterIP"].as_str().is_some_and(|ip| ip.starts_with("10.0.0.")),
        "cluster allocates the IP: {}",
        svc["spec"]
    );
    let cm = wait_downstream(&w, 0, &dns, "configmap", "shop-config").await?;
    ensure!(cm["data"] == json!({"mode": "prod"}), "configmap data {}", cm["data"]);
    ensure!(cm["metadata"]["labels"]["tmc.kcp.io/target"] == key.as_str(), "owner label {}", cm["metadata"]["labels"]);
    ensure!(cm["metadata"]["annotations"].get("kcp.io/cluster").is_none(), "kcp metadata leaked downstream");
    let secret = wait_downstream(&w, 0, &dns, "secret", "shop-secret").await?;
    ensure!(secret["data"]["token"] == "czNjcmV0", "secret data {}", secret["data"]);

    // The Deployment becomes available in the cluster (scheduler + kwok), and kcp shows it.
    eventually("upstream Deployment availableReplicas == 2", WAIT, || async {
        let d = upstream_get(&w, TENANT_A, "shop", "deployment", "shop")?.ok_or("upstream deployment gone")?;
        Ok((d["status"]["availableReplicas"] == 2).then_some(()))
    })
    .await?;
    let up = upstream_get(&w, TENANT_A, "shop", "deployment", "shop")?.unwrap();
    let finalizers = up["metadata"]["finalizers"].to_string();
    ensure!(finalizers.contains(&format!("tmc.kcp.io/syncer-{key}")), "upstream finalizers {finalizers}");
    let table = w.kcp.kubectl(TENANT_A, &["-n", "shop", "get", "deployments"], None)?;
    ensure!(table.contains("2/2") || table.contains("   2   "), "kubectl get deployments in kcp:\n{table}");
    Ok(())
}

pub async fn same_names_in_two_workspaces_do_not_collide_downstream(w: Arc<World>) -> TestResult {
    let mut namespaces = vec![];
    for ws in [TENANT_A, TENANT_B] {
        let key = register(&w, ws, "phys-shared", 0).await?;
        assigned_namespace(&w, ws, "dup", &key)?;
        w.kcp.kubectl(ws, &["-n", "dup", "apply", "-f", "-"], Some(&deployment("app", 1)))?;
        namespaces.push(downstream_ns(&w, ws, "phys-shared", ws, "dup").await);
    }
    ensure!(namespaces[0] != namespaces[1], "same downstream namespace for two workspaces: {namespaces:?}");
    // Isolation: tenant-b labelling a namespace with tenant-a's target key gets nothing synced.
    let a_key = target_key(&workspace::resolve(&w.clients, &TENANT_A.parse().unwrap()).await?, "phys-shared");
    assigned_namespace(&w, TENANT_B, "trespass", &a_key)?;
    w.kcp.kubectl(TENANT_B, &["-n", "trespass", "apply", "-f", "-"], Some(&deployment("sneaky", 1)))?;
    let stolen = Locator::new(
        TargetRef {
            cluster: workspace::resolve(&w.clients, &TENANT_A.parse().unwrap()).await?.to_string(),
            name: "phys-shared".into(),
        },
        &workspace::resolve(&w.clients, &TENANT_B.parse().unwrap()).await?,
        "trespass",
    )
    .downstream_namespace();
    for (ws, dns) in [TENANT_A, TENANT_B].iter().zip(&namespaces) {
        let d = wait_downstream(&w, 0, dns, "deployment", "app").await?;
        let origin = workspace::resolve(&w.clients, &ws.parse().unwrap()).await?.to_string();
        ensure!(
            d["metadata"]["labels"]["tmc.kcp.io/origin-cluster"] == origin.as_str(),
            "{ws}: origin label {}",
            d["metadata"]["labels"]
        );
        eventually(&format!("{ws} deployment available"), WAIT, || async {
            let d = upstream_get(&w, ws, "dup", "deployment", "app")?.ok_or("gone")?;
            Ok((d["status"]["availableReplicas"] == 1).then_some(()))
        })
        .await?;
    }
    // By now tenant-a's syncer has long processed everything it was sent.
    ensure!(downstream_get(&w, 0, "", "namespace", &stolen)?.is_none(), "another workspace's namespace was synced");
    let sneaky = upstream_get(&w, TENANT_B, "trespass", "deployment", "sneaky")?.ok_or("sneaky gone")?;
    ensure!(!sneaky["metadata"]["finalizers"].to_string().contains("tmc.kcp.io"), "finalizer on a foreign object");
    Ok(())
}

pub async fn drift_is_reverted(w: Arc<World>) -> TestResult {
    let key = register(&w, TENANT_B, "phys-drift", 0).await?;
    assigned_namespace(&w, TENANT_B, "drift", &key)?;
    let cm =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"level": "info"}});
    w.kcp.kubectl(
        TENANT_B,
        &["-n", "drift", "apply", "-f", "-"],
        Some(&list(&[deployment("d", 1), cm.to_string()])),
    )?;
    let dns = downstream_ns(&w, TENANT_B, "phys-drift", TENANT_B, "drift").await;
    wait_downstream(&w, 0, &dns, "deployment", "d").await?;
    wait_downstream(&w, 0, &dns, "configmap", "settings").await?;

    let cluster = &w.clusters[0];
    cluster.kubectl(&["-n", &dns, "scale", "deployment", "d", "--replicas=3"])?;
    cluster.kubectl(&[
        "-n",
        &dns,
        "patch",
        "configmap",
        "settings",
        "--type=merge",
        "-p",
        r#"{"data":{"level":"debug"}}"#,
    ])?;
    eventually("replicas reverted to 1 and data to info", Duration::from_secs(20), || async {
        let d = downstream_get(&w, 0, &dns, "deployment", "d")?.ok_or("deployment gone")?;
        let c = downstream_get(&w, 0, &dns, "configmap", "settings")?.ok_or("configmap gone")?;
        Ok((d["spec"]["replicas"] == 1 && c["data"]["level"] == "info").then_some(()))
    })
    .await?;
    cluster.kubectl(&["-n", &dns, "delete", "configmap", "settings"])?;
    eventually("deleted configmap recreated", Duration::from_secs(20), || async {
        Ok(downstream_get(&w, 0, &dns, "configmap", "settings")?.map(|_| ()))
    })
    .await?;
    Ok(())
}

pub async fn nothing_is_written_when_nothing_changed(w: Arc<World>) -> TestResult {
    let key = register(&w, TENANT_A, "phys-quiet", 2).await?;
    assigned_namespace(&w, TENANT_A, "quiet", &key)?;
    w.kcp.kubectl(TENANT_A, &["-n", "quiet", "apply", "-f", "-"], Some(&deployment("q", 2)))?;
    eventually("upstream deployment available", WAIT, || async {
        let d = upstream_get(&w, TENANT_A, "quiet", "deployment", "q")?.ok_or("gone")?;
        Ok((d["status"]["availableReplicas"] == 2).then_some(()))
    })
    .await?;
    // Settled. From here on the only upstream events are the syncer's own status writes and
    // heartbeats; none of them may cause a write of the Deployment in the cluster.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cluster = &w.clusters[2];
    let before = cluster.write_requests("deployments")?;
    // An upstream change that is not part of the downstream object (a status write by another
    // client) must not cause a downstream write either.
    w.kcp.kubectl(TENANT_A, &["-n", "quiet", "label", "namespace", "quiet", "unrelated=touched"], None)?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = cluster.write_requests("deployments")?;
    ensure!(after == before, "{} downstream Deployment writes while nothing changed upstream", after - before);
    // And a real change is one write (plus nothing else).
    w.kcp.kubectl(TENANT_A, &["-n", "quiet", "scale", "deployment", "q", "--replicas=3"], None)?;
    eventually("scaled downstream", WAIT, || async {
        let dns = downstream_ns(&w, TENANT_A, "phys-quiet", TENANT_A, "quiet").await;
        let d = downstream_get(&w, 2, &dns, "deployment", "q")?.ok_or("gone")?;
        Ok((d["spec"]["replicas"] == 3).then_some(()))
    })
    .await?;
    Ok(())
}

pub async fn deletion_and_unassignment_clean_up_downstream(w: Arc<World>) -> TestResult {
    let key = register(&w, TENANT_B, "phys-del", 0).await?;
    assigned_namespace(&w, TENANT_B, "gone", &key)?;
    let cm = |n: &str, v: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n}, "data": {"v": v}}).to_string()
    };
    let objects = list(&[cm("a", "1"), cm("b", "2"), deployment("x", 1)]);
    w.kcp.kubectl(TENANT_B, &["-n", "gone", "apply", "-f", "-"], Some(&objects))?;
    let dns = downstream_ns(&w, TENANT_B, "phys-del", TENANT_B, "gone").await;
    for (kind, name) in [("configmap", "a"), ("configmap", "b"), ("deployment", "x")] {
        wait_downstream(&w, 0, &dns, kind, name).await?;
    }
    // Upstream deletion -> downstream deletion -> finalizer released -> upstream gone.
    w.kcp.kubectl(TENANT_B, &["-n", "gone", "delete", "configmap", "a", "--wait=false"], None)?;
    eventually("configmap a gone downstream and upstream", WAIT, || async {
        let down = downstream_get(&w, 0, &dns, "configmap", "a")?;
        let up = upstream_get(&w, TENANT_B, "gone", "configmap", "a")?;
        Ok((down.is_none() && up.is_none()).then_some(()))
    })
    .await?;
    // Unassigning the namespace removes every copy and the downstream namespace, and releases
    // the upstream finalizers.
    w.kcp.kubectl(TENANT_B, &["label", "namespace", "gone", &format!("state.tmc.kcp.io/{key}-")], None)?;
    eventually("downstream namespace removed", WAIT, || async {
        let ns = downstream_get(&w, 0, "", "namespace", &dns)?;
        let terminating = ns.as_ref().is_some_and(|n| n["status"]["phase"] == "Terminating");
        Ok((ns.is_none() || terminating).then_some(()))
    })
    .await?;
    eventually("upstream finalizers released", WAIT, || async {
        let b = upstream_get(&w, TENANT_B, "gone", "configmap", "b")?.ok_or("upstream b gone")?;
        Ok((!b["metadata"]["finalizers"].to_string().contains("tmc.kcp.io/syncer")).then_some(()))
    })
    .await?;
    Ok(())
}

/// Warning events (events.k8s.io) on `ws`/`ns` with `reason`, as kubectl shows them.
pub fn events(w: &World, ws: &str, ns: &str, reason: &str) -> Result<Vec<String>, String> {
    let out = w.kcp.kubectl(
        ws,
        &["-n", ns, "get", "events.events.k8s.io", "--field-selector", &format!("reason={reason}"), "-o", "json"],
        None,
    )?;
    let list: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{} {}: {}",
                e["regarding"]["kind"],
                e["regarding"]["name"].as_str().unwrap_or(""),
                e["note"].as_str().unwrap_or("")
            )
        })
        .collect())
}

pub async fn foreign_objects_are_not_taken_over_without_consent(w: Arc<World>) -> TestResult {
    let key = register(&w, TENANT_B, "phys-takeover", 0).await?;
    assigned_namespace(&w, TENANT_B, "takeover", &key)?;
    let cm = |name: &str, v: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": v}}).to_string()
    };
    w.kcp.kubectl(TENANT_B, &["-n", "takeover", "apply", "-f", "-"], Some(&cm("first", "1")))?;
    let dns = downstream_ns(&w, TENANT_B, "phys-takeover", TENANT_B, "takeover").await;
    wait_downstream(&w, 0, &dns, "configmap", "first").await?;
    // Someone creates an object by hand in the cluster; then a tenant creates one of that name.
    w.clusters[0].kubectl(&["-n", &dns, "create", "configmap", "handmade", "--from-literal=v=cluster"])?;
    w.kcp.kubectl(TENANT_B, &["-n", "takeover", "apply", "-f", "-"], Some(&cm("handmade", "kcp")))?;
    let found = eventually("a TakeOverRefused event", WAIT, || async {
        let found = events(&w, TENANT_B, "takeover", "TakeOverRefused")?;
        Ok((!found.is_empty()).then_some(found))
    })
    .await?;
    ensure!(found[0].contains("handmade") && found[0].contains("tmc.kcp.io/adopt"), "event: {found:?}");
    let d = downstream_get(&w, 0, &dns, "configmap", "handmade")?.ok_or("handmade configmap gone")?;
    ensure!(d["data"]["v"] == "cluster", "the foreign object was overwritten: {}", d["data"]);
    // Consent: the annotation lets the syncer take it over.
    w.kcp.kubectl(TENANT_B, &["-n", "takeover", "annotate", "configmap", "handmade", "tmc.kcp.io/adopt=true"], None)?;
    eventually("adopted object holds the kcp data", WAIT, || async {
        let d = downstream_get(&w, 0, &dns, "configmap", "handmade")?.ok_or("gone")?;
        Ok((d["data"]["v"] == "kcp" && d["metadata"]["labels"]["tmc.kcp.io/target"] == key.as_str()).then_some(()))
    })
    .await?;
    Ok(())
}

pub async fn rejected_objects_are_reported_and_do_not_block_others(w: Arc<World>) -> TestResult {
    let key = register(&w, TENANT_A, "phys-reject", 0).await?;
    assigned_namespace(&w, TENANT_A, "reject", &key)?;
    // kcp's schema accepts an upper-case container name; a real kube-apiserver does not.
    let mut bad: Value = serde_json::from_str(&deployment("bad", 1))?;
    bad["spec"]["template"]["spec"]["containers"][0]["name"] = json!("Web_Server");
    let good = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fine"}, "data": {"ok": "yes"}});
    w.kcp.kubectl(
        TENANT_A,
        &["-n", "reject", "apply", "-f", "-"],
        Some(&list(&[bad.to_string(), good.to_string(), deployment("good", 1)])),
    )?;
    let dns = downstream_ns(&w, TENANT_A, "phys-reject", TENANT_A, "reject").await;
    wait_downstream(&w, 0, &dns, "configmap", "fine").await?;
    wait_downstream(&w, 0, &dns, "deployment", "good").await?;
    let found = eventually("a SyncRejected event for the invalid Deployment", WAIT, || async {
        let found = events(&w, TENANT_A, "reject", "SyncRejected")?;
        Ok(found.iter().any(|e| e.contains("bad")).then_some(found))
    })
    .await?;
    ensure!(
        found.iter().any(|e| e.contains("containers[0].name")),
        "the event should quote the cluster's reason: {found:?}"
    );
    ensure!(downstream_get(&w, 0, &dns, "deployment", "bad")?.is_none(), "the invalid Deployment exists downstream");
    ensure!(
        upstream_get(&w, TENANT_A, "reject", "deployment", "bad")?.is_some(),
        "the upstream object must never be lost"
    );
    // An immutable-field change (Deployment selector) is rejected the same way.
    let mut changed: Value = serde_json::from_str(&deployment("good", 1))?;
    changed["spec"]["selector"]["matchLabels"] = json!({"app": "good", "tier": "web"});
    changed["spec"]["template"]["metadata"]["labels"] = json!({"app": "good", "tier": "web"});
    w.kcp.kubectl(TENANT_A, &["-n", "reject", "apply", "-f", "-"], Some(&changed.to_string()))?;
    eventually("a SyncRejected event for the selector change", WAIT, || async {
        let found = events(&w, TENANT_A, "reject", "SyncRejected")?;
        Ok(found.iter().any(|e| e.contains("good") && e.contains("immutable")).then_some(()))
    })
    .await?;
    Ok(())
}

pub async fn status_is_aggregated_across_two_clusters(w: Arc<World>) -> TestResult {
    let first = register(&w, TENANT_A, "multi-1", 0).await?;
    let second = register(&w, TENANT_A, "multi-2", 1).await?;
    let yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: multi\n  labels: {{state.tmc.kcp.io/{first}: Sync, state.tmc.kcp.io/{second}: Sync}}\n"
    );
    w.kcp.kubectl(TENANT_A, &["apply", "-f", "-"], Some(&yaml))?;
    w.kcp.kubectl(TENANT_A, &["-n", "multi", "apply", "-f", "-"], Some(&deployment("both", 2)))?;
    // Two replicas on each cluster: kcp shows four available, and Available=True.
    let up = eventually("availableReplicas summed over both clusters", WAIT, || async {
        let d = upstream_get(&w, TENANT_A, "multi", "deployment", "both")?.ok_or("gone")?;
        Ok((d["status"]["availableReplicas"] == 4).then_some(d))
    })
    .await?;
    let available = up["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Available");
    ensure!(available.is_some_and(|c| c["status"] == "True"), "Available: {available:?}");
    for key in [&first, &second] {
        let recorded = &up["metadata"]["annotations"][format!("status.tmc.kcp.io/{key}")];
        ensure!(
            recorded.as_str().is_some_and(|r| r.contains("availableReplicas")),
            "per-target status of {key}: {recorded}"
        );
    }
    ensure!(up["status"]["observedGeneration"] == up["metadata"]["generation"], "observedGeneration {}", up["status"]);
    // On two clusters but not moving: neither syncer wrote evidence of its apply (the two
    // syncers' evidence patches of one object collided in the virtual workspace).
    let annotations = up["metadata"]["annotations"].to_string();
    ensure!(!annotations.contains(&kcp_tmc::apis::applied::applied_annotation(&first)), "evidence: {annotations}");
    ensure!(!annotations.contains(&kcp_tmc::apis::applied::applied_annotation(&second)), "evidence: {annotations}");
    // Per-target bookkeeping stays in kcp: the copies in the clusters do not carry it.
    for (index, name) in [(0, "multi-1"), (1, "multi-2")] {
        let dns = downstream_ns(&w, TENANT_A, name, TENANT_A, "multi").await;
        let d = wait_downstream(&w, index, &dns, "deployment", "both").await?;
        ensure!(!d["metadata"]["annotations"].to_string().contains("status.tmc.kcp.io"), "leaked: {}", d["metadata"]);
    }
    // Unassign one cluster: its copy goes, its annotation goes, and the sum follows.
    w.kcp.kubectl(TENANT_A, &["label", "namespace", "multi", &format!("state.tmc.kcp.io/{second}-")], None)?;
    eventually("status from the remaining cluster only", WAIT, || async {
        let d = upstream_get(&w, TENANT_A, "multi", "deployment", "both")?.ok_or("gone")?;
        let gone = d["metadata"]["annotations"].get(format!("status.tmc.kcp.io/{second}")).is_none();
        Ok((gone && d["status"]["availableReplicas"] == 2).then_some(()))
    })
    .await?;
    Ok(())
}

/// Replaces the kubeconfig in the Secret of the push-mode SyncTarget `name`.
fn set_kubeconfig(w: &World, ws: &str, name: &str, kubeconfig: &str) -> Result<(), String> {
    let patch = json!({ "stringData": { "kubeconfig": kubeconfig } }).to_string();
    w.kcp
        .kubectl(
            ws,
            &["-n", "default", "patch", "secret", &format!("{name}-kubeconfig"), "--type=merge", "-p", &patch],
            None,
        )
        .map(|_| ())
}

pub async fn wait_ready_reason(w: &World, ws: &str, name: &str, reason: &str) -> Result<String, String> {
    eventually(&format!("SyncTarget {ws}/{name} Ready reason {reason}"), WAIT, || async {
        let path = "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}|{.status.conditions[?(@.type==\"Ready\")].message}";
        let out = w.kcp.kubectl(ws, &["get", "synctarget", name, "-o", path], None)?;
        let (got, message) = out.split_once('|').unwrap_or((&out, ""));
        Ok((got == reason).then(|| message.to_string()))
    })
    .await
}

pub async fn wrong_credentials_are_named(w: Arc<World>) -> TestResult {
    register(&w, TENANT_B, "phys-badtoken", 1).await?;
    let kubeconfig = w.clusters[1].kubeconfig_text();
    let token = kubeconfig.lines().find_map(|l| l.trim().strip_prefix("token: ")).ok_or("no token in kubeconfig")?;
    set_kubeconfig(&w, TENANT_B, "phys-badtoken", &kubeconfig.replace(token, "not-the-token"))?;
    let message = wait_ready_reason(&w, TENANT_B, "phys-badtoken", "ClusterUnauthorized").await?;
    ensure!(message.contains("refuses the kubeconfig's credentials"), "message: {message}");
    set_kubeconfig(&w, TENANT_B, "phys-badtoken", &kubeconfig)?;
    wait_ready_reason(&w, TENANT_B, "phys-badtoken", "Ready").await?;
    Ok(())
}

pub async fn unreachable_cluster_does_not_block_deletion(w: Arc<World>) -> TestResult {
    let key = register(&w, TENANT_B, "phys-orphan", 1).await?;
    assigned_namespace(&w, TENANT_B, "orphan", &key)?;
    let cm =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "o"}, "data": {"v": "1"}}).to_string();
    w.kcp.kubectl(TENANT_B, &["-n", "orphan", "apply", "-f", "-"], Some(&cm))?;
    let dns = downstream_ns(&w, TENANT_B, "phys-orphan", TENANT_B, "orphan").await;
    wait_downstream(&w, 1, &dns, "configmap", "o").await?;

    // The cluster becomes unreachable for this target (its kubeconfig now points at a dead port).
    let kubeconfig = w.clusters[1].kubeconfig_text();
    let server = kubeconfig.lines().find_map(|l| l.trim().strip_prefix("server: ")).ok_or("no server")?.to_string();
    let dead = format!("https://127.0.0.1:{}", crate::env::free_port());
    set_kubeconfig(&w, TENANT_B, "phys-orphan", &kubeconfig.replace(&server, &dead))?;
    wait_ready_reason(&w, TENANT_B, "phys-orphan", "ClusterUnreachable").await?;

    // Deleting in kcp completes after the deletion timeout (3s in this suite), with an Event.
    w.kcp.kubectl(TENANT_B, &["-n", "orphan", "delete", "configmap", "o", "--wait=false"], None)?;
    eventually("upstream configmap deleted despite the unreachable cluster", WAIT, || async {
        Ok(upstream_get(&w, TENANT_B, "orphan", "configmap", "o")?.is_none().then_some(()))
    })
    .await?;
    let orphaned = events(&w, TENANT_B, "orphan", "DownstreamOrphaned")?;
    ensure!(orphaned.iter().any(|e| e.contains("phys-orphan")), "events: {orphaned:?}");
    ensure!(downstream_get(&w, 1, &dns, "configmap", "o")?.is_some(), "the copy cannot have been deleted yet");

    // The cluster comes back: the orphan is cleaned up.
    set_kubeconfig(&w, TENANT_B, "phys-orphan", &kubeconfig)?;
    eventually("orphan deleted once the cluster is reachable", WAIT, || async {
        Ok(downstream_get(&w, 1, &dns, "configmap", "o")?.is_none().then_some(()))
    })
    .await?;
    Ok(())
}

pub async fn pull_mode_syncer_runs_beside_the_cluster(w: Arc<World>) -> TestResult {
    let ws = TENANT_B;
    w.kcp.kubectl(
        ws,
        &["apply", "-f", "-"],
        Some("apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata: {name: pull-east}\nspec: {}\n"),
    )?;
    wait_ready_reason(&w, ws, "pull-east", "WaitingForSyncer").await?;
    let cluster = workspace::resolve(&w.clients, &ws.parse().unwrap()).await?;
    let key = target_key(&cluster, "pull-east");
    assigned_namespace(&w, ws, "pulled", &key)?;
    w.kcp.kubectl(ws, &["-n", "pulled", "apply", "-f", "-"], Some(&deployment("p", 1)))?;

    // The syncer runs as its own process, as it would beside the cluster, with kcp credentials
    // for this one workspace and the cluster's kubeconfig.
    let syncer = crate::env::Tmc::spawn(
        &[
            "syncer",
            "--kubeconfig",
            &w.kcp.kubeconfig.display().to_string(),
            "--workspace",
            ws,
            "--sync-target-name",
            "pull-east",
            "--downstream-kubeconfig",
            &w.clusters[1].kubeconfig.display().to_string(),
            "--heartbeat-interval",
            "1s",
            "--metrics-port",
            &crate::env::free_port().to_string(),
            "--health-port",
            &crate::env::free_port().to_string(),
        ],
        w.kcp.dir.path().join("pull-syncer.log"),
    );
    wait_ready_reason(&w, ws, "pull-east", "Ready").await?;
    let dns = downstream_ns(&w, ws, "pull-east", ws, "pulled").await;
    wait_downstream(&w, 1, &dns, "deployment", "p").await?;
    eventually("pull-mode status up", WAIT, || async {
        let d = upstream_get(&w, ws, "pulled", "deployment", "p")?.ok_or("gone")?;
        Ok((d["status"]["availableReplicas"] == 1).then_some(()))
    })
    .await
    .map_err(|e| format!("{e}\nsyncer log:\n{}", syncer.output()))?;
    // The syncer stops: no more heartbeats, and the manager says so.
    drop(syncer);
    wait_ready_reason(&w, ws, "pull-east", "HeartbeatStale").await?;
    Ok(())
}

pub async fn syncer_manifest_is_accepted_by_a_real_cluster(w: Arc<World>) -> TestResult {
    let (code, manifest, err) = crate::env::tmc(&[
        "syncer-manifest",
        "east",
        "--workspace",
        "root:tenant-a",
        "--kcp-kubeconfig",
        &w.kcp.kubeconfig.display().to_string(),
        "--image",
        "registry.example/kcp-tmc:dev",
    ]);
    ensure!(code == 0, "tmc syncer-manifest failed: {err}");
    // The cluster's own validation and admission accept every object (nothing is persisted,
    // so the namespace the others go into is created for real first).
    w.clusters[0].kubectl(&["create", "namespace", "kcp-tmc-syncer"])?;
    let out = w.clusters[0].kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &manifest)?;
    for kind in [
        "namespace",
        "serviceaccount",
        "clusterrole",
        "clusterrolebinding",
        "validatingadmissionpolicy",
        "validatingadmissionpolicybinding",
        "secret",
        "deployment",
    ] {
        ensure!(out.contains(&format!("{kind}.")) || out.contains(&format!("{kind}/")), "{kind} missing from:\n{out}");
    }
    Ok(())
}

pub async fn autoscaled_replicas_are_not_fought(w: Arc<World>) -> TestResult {
    let key = register(&w, TENANT_A, "phys-hpa", 1).await?;
    assigned_namespace(&w, TENANT_A, "scaled", &key)?;
    w.kcp.kubectl(TENANT_A, &["-n", "scaled", "apply", "-f", "-"], Some(&deployment("s", 1)))?;
    let dns = downstream_ns(&w, TENANT_A, "phys-hpa", TENANT_A, "scaled").await;
    wait_downstream(&w, 1, &dns, "deployment", "s").await?;
    // An autoscaler in the cluster owns the replica count: it scales through /scale, as here.
    let hpa = json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "s", "namespace": dns},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "s"}, "minReplicas": 1, "maxReplicas": 5,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]},
    });
    w.clusters[1].kubectl_stdin(&["apply", "-f", "-"], &hpa.to_string())?;
    w.clusters[1].kubectl(&["-n", &dns, "scale", "deployment", "s", "--replicas=3"])?;
    // A change upstream makes the syncer apply again; the replica count must survive it.
    w.kcp.kubectl(TENANT_A, &["-n", "scaled", "label", "deployment", "s", "tier=web"], None)?;
    eventually("the label arrives downstream", WAIT, || async {
        let d = downstream_get(&w, 1, &dns, "deployment", "s")?.ok_or("gone")?;
        Ok((d["metadata"]["labels"]["tier"] == "web").then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let d = downstream_get(&w, 1, &dns, "deployment", "s")?.ok_or("gone")?;
    ensure!(d["spec"]["replicas"] == 3, "the syncer fought the autoscaler: replicas {}", d["spec"]["replicas"]);
    Ok(())
}
