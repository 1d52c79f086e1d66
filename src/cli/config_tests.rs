//! The manifests under config/ render with kustomize and say what the code expects: the flags
//! the manager has, the RBAC verbs it needs, and alert rules over metrics it exports.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

/// `kubectl kustomize <dir>`, parsed into objects.
fn kustomize(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl is needed for this test (it ships kustomize)");
    assert!(out.status.success(), "kubectl kustomize {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|d| Value::deserialize(d).unwrap()).collect()
}

fn kustomizations(dir: &Path, found: &mut Vec<PathBuf>) {
    if dir.join("kustomization.yaml").exists() {
        found.push(dir.to_path_buf());
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            kustomizations(&path, found);
        }
    }
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn every_kustomization_renders_objects() {
    let mut dirs = vec![];
    kustomizations(&config_dir(), &mut dirs);
    let names: Vec<String> = dirs.iter().map(|d| d.strip_prefix(config_dir()).unwrap().display().to_string()).collect();
    for want in ["manager", "kcp-rbac", "kcp-rbac/parent", "kcp-rbac/system-admin", "syncer", "prometheus"] {
        assert!(names.iter().any(|n| n == want), "config/{want} has no kustomization.yaml: {names:?}");
    }
    for dir in dirs {
        let objects = kustomize(&dir);
        assert!(!objects.is_empty(), "{} renders nothing", dir.display());
        for o in &objects {
            let ok = o["apiVersion"].is_string() && o["kind"].is_string() && o["metadata"]["name"].is_string();
            assert!(ok, "{}: an object without apiVersion, kind or name: {o}", dir.display());
        }
    }
}

#[test]
fn manager_deployment_uses_real_flags_and_is_locked_down() {
    let objects = kustomize(&config_dir().join("manager"));
    let deploy = find(&objects, "Deployment", "tmc-manager");
    assert_eq!(deploy["metadata"]["namespace"], "kcp-tmc-system");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(
        args[..4],
        ["manager", "--kubeconfig=/etc/tmc/kcp/kubeconfig", "--workspace=root:tmc", "--leader-elect"]
    );
    let argv = std::iter::once("tmc").chain(args.iter().copied());
    assert!(<super::Cli as clap::Parser>::try_parse_from(argv).is_ok(), "args do not parse: {args:?}");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let ports: Vec<(&str, i64)> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["containerPort"].as_i64().unwrap()))
        .collect();
    assert_eq!(ports, [("metrics", 8080), ("health", 8081)]);
    let sc = &c["securityContext"];
    assert_eq!((sc["readOnlyRootFilesystem"].as_bool(), sc["runAsNonRoot"].as_bool()), (Some(true), Some(true)));
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(c["resources"]["requests"].is_object() && c["resources"]["limits"].is_object());
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "tmc-kcp-kubeconfig");
    let svc = find(&objects, "Service", "tmc-manager-metrics");
    assert_eq!(svc["spec"]["selector"], deploy["spec"]["selector"]["matchLabels"]);
}

#[test]
fn kcp_rbac_grants_what_the_manager_needs_and_no_wildcards() {
    let objects = kustomize(&config_dir().join("kcp-rbac"));
    let role = find(&objects, "ClusterRole", "kcp-tmc-manager");
    let rules = role["rules"].as_array().unwrap();
    let rule = |resource: &str| -> Vec<String> {
        let r =
            rules.iter().find(|r| r["resources"][0] == resource).unwrap_or_else(|| panic!("no rule for {resource}"));
        r["verbs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
    };
    let cases: &[(&str, &[&str])] = &[
        ("apiexports/content", &["get", "list", "watch", "create", "update", "patch", "delete"]),
        ("apiexports", &["get"]),
        ("apiexportendpointslices", &["get", "list", "watch"]),
        ("leases", &["get", "create", "update"]),
        ("workspaces", &["get"]),
    ];
    for (resource, verbs) in cases {
        assert_eq!(rule(resource), *verbs, "{resource}");
    }
    assert!(!role.to_string().contains("\"*\""), "no wildcards: {role}");
    let binding = find(&objects, "ClusterRoleBinding", "kcp-tmc-manager");
    assert_eq!(binding["roleRef"]["name"], "kcp-tmc-manager");
}

/// What every workspace grants the manager through the shard's `system:admin`: reading paths,
/// no list and nothing else.
#[test]
fn kcp_path_reader_reads_paths_only() {
    let objects = kustomize(&config_dir().join("kcp-rbac/system-admin"));
    let role = find(&objects, "ClusterRole", "kcp-tmc-manager-path-reader");
    let rules: Vec<String> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}{} {} {}", r["apiGroups"], r["resources"], r["resourceNames"], r["verbs"]))
        .collect();
    assert_eq!(
        rules,
        [
            r#"nullnull null ["access"]"#,
            r#"["core.kcp.io"]["logicalclusters"] ["cluster"] ["get"]"#,
            r#"["tenancy.kcp.io"]["workspaces"] null ["get"]"#,
        ]
    );
    let binding = find(&objects, "ClusterRoleBinding", "kcp-tmc-manager-path-reader");
    assert_eq!(binding["roleRef"]["name"], "kcp-tmc-manager-path-reader");
}

/// The alerts' groups, from the plain rules file and from the PrometheusRule.
#[test]
fn alert_rules_are_identical_and_name_real_metrics() {
    let dir = config_dir().join("prometheus");
    let plain: Value = serde_yaml::from_str(&std::fs::read_to_string(dir.join("alerts.yaml")).unwrap()).unwrap();
    let objects = kustomize(&dir);
    let rule = find(&objects, "PrometheusRule", "kcp-tmc");
    assert_eq!(rule["spec"], plain, "prometheusrule.yaml and alerts.yaml differ");
    let rules = plain["groups"][0]["rules"].as_array().unwrap();
    let alerts: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(
        alerts,
        ["TmcSyncTargetNotReady", "TmcSyncErrorsRising", "TmcSyncLatencyHigh", "TmcHeartbeatStale", "TmcManagerDown"]
    );
    // Record one series of each family so that every name appears in the exposition.
    let m = crate::server::Metrics::new();
    m.syncer_op("t", "deployments", crate::server::metrics::SyncOp::Apply, false, std::time::Duration::from_millis(3));
    m.observe_sync_latency("t", std::time::Duration::from_secs(1));
    m.set_target_ready("t", false);
    m.set_heartbeat_age("t", std::time::Duration::from_secs(1));
    let exposition = m.encode();
    for r in rules {
        let expr = r["expr"].as_str().unwrap();
        assert!(r["for"].is_string() && r["annotations"]["summary"].is_string(), "{r}");
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("tmc_")) {
            assert!(exposition.contains(&format!("\n{word}")), "alert {} uses unknown metric {word}", r["alert"]);
        }
    }
    let scrape: Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("scrape-config.yaml")).unwrap()).unwrap();
    assert_eq!(scrape[0]["job_name"], "tmc-manager", "the job TmcManagerDown matches on");
}

#[test]
fn chart_carries_the_shipped_alerts_and_the_crate_version() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("config/prometheus/alerts.yaml")).unwrap();
    let carried = std::fs::read_to_string(root.join("charts/kcp-tmc/files/alerts.yaml")).unwrap();
    assert_eq!(
        carried, shipped,
        "charts/kcp-tmc/files/alerts.yaml differs from config/prometheus/alerts.yaml: copy it"
    );
    let chart: Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("charts/kcp-tmc/Chart.yaml")).unwrap()).unwrap();
    assert_eq!(chart["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["appVersion"], format!("v{}", env!("CARGO_PKG_VERSION")));
}
