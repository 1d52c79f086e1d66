//! The Helm chart (`charts/kcp-tmc`) against a real `helm` (`TMC_HELM_BIN`, built from the Go
//! module proxy by `tests/servers.sh helm`) and a real kube-apiserver: linted, rendered, the same
//! manager pod as `config/manager/deployment.yaml`, the same alert rules as
//! `config/prometheus/alerts.yaml`, refused when misconfigured, and its objects accepted by the
//! cluster's own validation (`kubectl apply --dry-run=server`).

use std::process::Command;
use std::sync::Arc;

use serde_json::Value;

use crate::env::TestResult;
use crate::{World, ensure};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/kcp-tmc");
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
const NAMESPACE: &str = "tmc-chart";

/// `helm <args>`: its stdout, or its stderr as the error.
fn helm(args: &[&str]) -> Result<String, String> {
    let bin = std::env::var_os("TMC_HELM_BIN")
        .ok_or("TMC_HELM_BIN is not set: set it to the output of `tests/servers.sh helm` (`make test` does)")?;
    let out = Command::new(bin).args(args).output().map_err(|e| format!("helm: {e}"))?;
    if !out.status.success() {
        return Err(format!("helm {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The chart rendered with `--set` values `sets`, as objects.
fn render(sets: &[&str]) -> Result<Vec<Value>, String> {
    let mut args = vec!["template", "tmc", CHART, "--namespace", NAMESPACE];
    for s in sets {
        args.extend(["--set", s]);
    }
    let text = helm(&args)?;
    let docs = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).map_err(|e| format!("rendered YAML: {e}")))
        .collect::<Result<Vec<Value>, String>>()?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Result<&'a Value, String> {
    objects.iter().find(|o| o["kind"] == kind).ok_or_else(|| format!("no {kind} rendered"))
}

fn yaml_file(path: &str) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    serde_yaml::from_str(&text).map_err(|e| format!("{path}: {e}"))
}

/// The pod template's spec with what legitimately differs between the two set aside: the image
/// (a kustomize image transform there, a value here), its pull policy and the account's name.
fn pod_spec(deployment: &Value) -> Value {
    let mut spec = deployment["spec"]["template"]["spec"].clone();
    spec["serviceAccountName"] = Value::Null;
    for c in spec["containers"].as_array_mut().into_iter().flatten() {
        c["image"] = Value::Null;
        c.as_object_mut().map(|c| c.remove("imagePullPolicy"));
    }
    spec
}

pub async fn chart_lints_renders_the_shipped_manager_and_is_accepted_by_a_real_cluster(w: Arc<World>) -> TestResult {
    let lint = helm(&["lint", "--strict", CHART])?;
    ensure!(lint.contains("0 chart(s) failed"), "helm lint:\n{lint}");

    // Defaults: the same manager as config/manager, two replicas with leader election.
    let objects = render(&[])?;
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    ensure!(kinds == ["ServiceAccount", "Service", "Deployment"], "rendered kinds {kinds:?}");
    let ours = find(&objects, "Deployment")?;
    let shipped = yaml_file(&format!("{CONFIG}/manager/deployment.yaml"))?;
    ensure!(
        pod_spec(ours) == pod_spec(&shipped),
        "chart and config/manager pods differ:\n{:#}\n{:#}",
        pod_spec(ours),
        pod_spec(&shipped)
    );
    ensure!(ours["spec"]["replicas"] == shipped["spec"]["replicas"], "replicas differ");
    let account = find(&objects, "ServiceAccount")?;
    ensure!(
        ours["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"],
        "the pod runs as another account"
    );
    let service = find(&objects, "Service")?;
    ensure!(service["spec"]["selector"] == ours["spec"]["selector"]["matchLabels"], "the Service selects other pods");

    // Values reach the flags.
    let custom = render(&[
        "replicas=1",
        "leaderElection.enabled=false",
        "kcp.workspace=root:org:tmc",
        "clusterAddressDeny={10.244.0.0/16,10.96.0.0/12}",
        "extraArgs={--syncer-workers=8}",
        "shards={root,shard-1}",
    ])?;
    let args = &find(&custom, "Deployment")?["spec"]["template"]["spec"]["containers"][0]["args"];
    let want = serde_json::json!([
        "manager",
        "--kubeconfig=/etc/tmc/kcp/kubeconfig",
        "--workspace=root:org:tmc",
        "--log-format=json",
        "--cluster-address-deny=10.244.0.0/16,10.96.0.0/12",
        "--shards=root,shard-1",
        "--syncer-workers=8"
    ]);
    ensure!(*args == want, "args {args}");

    // Monitoring: the operator's objects carry the shipped rules and scrape endpoint.
    let monitored = render(&["serviceMonitor.enabled=true", "prometheusRule.enabled=true"])?;
    let rules = yaml_file(&format!("{CONFIG}/prometheus/alerts.yaml"))?;
    ensure!(
        find(&monitored, "PrometheusRule")?["spec"] == rules,
        "the PrometheusRule's groups differ from alerts.yaml"
    );
    let monitor = yaml_file(&format!("{CONFIG}/prometheus/servicemonitor.yaml"))?;
    let rendered = find(&monitored, "ServiceMonitor")?;
    ensure!(rendered["spec"]["endpoints"] == monitor["spec"]["endpoints"], "ServiceMonitor endpoints differ");
    ensure!(rendered["spec"]["jobLabel"] == monitor["spec"]["jobLabel"], "ServiceMonitor jobLabel differs");

    // Misconfigurations are refused with what to fix.
    let refused = render(&["leaderElection.enabled=false"]).err().unwrap_or_default();
    ensure!(refused.contains("replicas > 1 needs leaderElection.enabled"), "two replicas without a lease: {refused}");
    let refused = render(&["kcp.kubeconfigSecret="]).err().unwrap_or_default();
    ensure!(refused.contains("kcp.kubeconfigSecret is empty"), "no kubeconfig Secret: {refused}");

    // The cluster's own validation and admission accept the rendered objects.
    let cluster = &w.clusters[0];
    cluster.kubectl(&["create", "namespace", NAMESPACE])?;
    // The default rendering from above, as one List.
    let manifest = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
    let out = cluster.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &manifest.to_string())?;
    for object in ["serviceaccount/tmc-kcp-tmc", "service/tmc-kcp-tmc-metrics", "deployment.apps/tmc-kcp-tmc"] {
        ensure!(out.contains(&format!("{object} created (server dry run)")), "{object} not accepted:\n{out}");
    }
    Ok(())
}
