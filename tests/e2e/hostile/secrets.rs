//! Secret material stays where it belongs, at every log level: a manager logging at
//! `RUST_LOG=trace` syncs a Secret, reverts a drifted copy, is refused a Secret by a cluster
//! policy that quotes the value back, and reads kubeconfigs broken so that parsers and TLS
//! complain about them. Then every output a tenant or an operator can read (the manager's log,
//! the tenant's Events, the SyncTargets' conditions, `/metrics`) is searched for each value, raw,
//! base64-encoded at every alignment, and as Rust prints bytes. The values are first shown to be
//! where they should be (kcp and the cluster), and the search to find them there.
//!
//! The trace manager is a second manager with a provider workspace of its own, so the shared
//! manager keeps its log level and this one sees only this test's tenant.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use serde_json::{Value, json};

use super::Bystander;
use crate::env::{self, TestResult, Tmc, eventually};
use crate::syncer::{WAIT, assigned_namespace, downstream_get, downstream_ns, events, register, upstream_get};
use crate::{World, ensure};

const PROVIDER: &str = "root:secrets-provider";
const TENANT: &str = "root:secrets-tenant";
/// A shared cluster: the refusing policy matches only this test's Secret name.
const CLUSTER: usize = 1;
const ECHOED: &str = "echoed-secret";

fn b64(bytes: &[u8]) -> String {
    serde_json::to_value(ByteString(bytes.to_vec())).unwrap().as_str().unwrap().to_string()
}

/// The strings that betray `value` in a text: itself, its base64 at the three alignments it
/// can have inside a longer encoded string (without the edge characters shared with
/// neighbours), and the start of its bytes as Rust's `Debug` prints a `Vec<u8>`.
fn needles(value: &str) -> Vec<String> {
    let mut out = vec![value.to_string()];
    for offset in 0..3 {
        let mut shifted = vec![b'x'; offset];
        shifted.extend_from_slice(value.as_bytes());
        let encoded = b64(&shifted);
        let start = if offset == 0 { 0 } else { 4 };
        out.push(encoded[start..encoded.len() - 4].to_string());
    }
    let bytes: Vec<String> = value.bytes().take(8).map(|b| b.to_string()).collect();
    out.push(bytes.join(", "));
    out
}

/// Where in `text` any form of `value` occurs, with some context.
fn find(text: &str, value: &str) -> Option<String> {
    needles(value).iter().find_map(|n| {
        let at = text.find(n.as_str())?;
        let (from, to) = (at.saturating_sub(120), (at + n.len() + 120).min(text.len()));
        let context: String = text.bytes().skip(from).take(to - from).map(char::from).collect();
        Some(format!("{n:?} in …{context}…"))
    })
}

fn secret_value(secret: &Value, key: &str) -> Option<String> {
    let encoded = secret["data"][key].clone();
    let ByteString(bytes) = serde_json::from_value(encoded).ok()?;
    String::from_utf8(bytes).ok()
}

/// `SyncerReady`'s reason on the tenant's SyncTarget `name`, once written.
fn syncer_reason(w: &World, name: &str) -> Result<Option<String>, String> {
    let jsonpath = r#"jsonpath={.status.conditions[?(@.type=="SyncerReady")].reason}"#;
    let out = w.kcp.kubectl(TENANT, &["get", "synctarget", name, "-o", jsonpath], None)?;
    Ok((!out.is_empty()).then_some(out))
}

/// A push-mode SyncTarget `name` whose Secret holds `kubeconfig`.
fn broken_target(w: &World, name: &str, kubeconfig: &str) -> Result<(), String> {
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("{name}-kubeconfig"), "namespace": "default"},
        "stringData": {"kubeconfig": kubeconfig}});
    w.kcp.kubectl(TENANT, &["apply", "-f", "-"], Some(&secret.to_string()))?;
    let target = format!(
        "apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata: {{name: {name}}}\nspec:\n  kubeconfigSecretRef: {{namespace: default, name: {name}-kubeconfig}}\n"
    );
    w.kcp.kubectl(TENANT, &["apply", "-f", "-"], Some(&target)).map(|_| ())
}

/// A ValidatingAdmissionPolicy (and binding) in the cluster that refuses the Secret named
/// [`ECHOED`] with a message quoting its `password`, as a clumsy cluster policy might.
fn echoing_policy(name: &str) -> String {
    let policy = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["secrets"]}]},
            "matchConditions": [{"name": "only-this-test", "expression": format!("object.metadata.name == '{ECHOED}'")}],
            "validations": [{"expression": "false",
                "messageExpression": "'refusing the password ' + string(object.data['password'])"}]}});
    let binding = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name}, "spec": {"policyName": name, "validationActions": ["Deny"]}});
    crate::syncer::list(&[policy.to_string(), binding.to_string()])
}

pub async fn secret_material_never_reaches_logs_events_conditions_or_metrics(w: Arc<World>) -> TestResult {
    let id = format!("{:016x}", rand::random::<u64>());
    let synced = format!("synced-secret-value-{id}");
    let drifted = format!("drifted-secret-value-{id}");
    let refused = format!("refused-secret-value-{id}");
    let yaml_type_token = format!("bad-yaml-type-token-{id}");
    let yaml_syntax_token = format!("bad-yaml-syntax-token-{id}");
    let key_marker = format!("bad-client-key-{id}-0123456789abcdef");

    let admin = w.kcp.kubeconfig.display().to_string();
    let (code, out, err) =
        env::tmc(&["install", "--kubeconfig", &admin, "--workspace", PROVIDER, "--create-workspace"]);
    ensure!(code == 0, "tmc install failed: {out}{err}");
    w.bind_tenant(TENANT, PROVIDER, Duration::from_secs(60)).await?;
    let log = w.kcp.dir.path().join("secrets-trace-manager.log");
    let flags = [
        "--heartbeat-threshold",
        "15s",
        "--syncer-heartbeat-interval",
        "1s",
        "--syncer-deletion-timeout",
        "3s",
        "--cluster-address-allow",
        "127.0.0.1/32",
    ];
    let started = Tmc::manager_with_env(&admin, PROVIDER, &flags, log, &[("RUST_LOG", "trace")]);
    let (mut manager, metrics) = (started.process, format!("http://{}", started.metrics));

    // The working kubeconfig: its token is used on every request the syncer makes.
    let kubeconfig = w.clusters[CLUSTER].kubeconfig_text();
    let parsed: serde_yaml::Value = serde_yaml::from_str(&kubeconfig)?;
    let cluster_token = parsed["users"][0]["user"]["token"].as_str().ok_or("cluster kubeconfig without a token")?;
    let key = register(&w, TENANT, "trace-east", CLUSTER).await?;
    assigned_namespace(&w, TENANT, "vault", &key)?;
    let app = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-secret"},
                     "stringData": {"password": synced}});
    w.kcp.kubectl(TENANT, &["-n", "vault", "apply", "-f", "-"], Some(&app.to_string()))?;
    let dns = downstream_ns(&w, TENANT, "trace-east", TENANT, "vault").await;

    // Where the values belong: kcp and the cluster hold them.
    let down = eventually("the synced Secret in the cluster", WAIT, || async {
        Ok(downstream_get(&w, CLUSTER, &dns, "secret", "app-secret")?
            .filter(|s| secret_value(s, "password").as_deref() == Some(synced.as_str())))
    })
    .await?;
    let up = upstream_get(&w, TENANT, "vault", "secret", "app-secret")?.ok_or("the kcp Secret vanished")?;
    ensure!(find(&up.to_string(), &synced).is_some(), "the search does not find the value in kcp's copy: {up}");
    ensure!(find(&down.to_string(), &synced).is_some(), "the search does not find the value in the cluster's copy");

    // Someone edits the copy in the cluster; the syncer puts the kcp value back (and logs why).
    let patch = json!({"data": {"password": b64(drifted.as_bytes())}}).to_string();
    w.clusters[CLUSTER].kubectl(&["-n", &dns, "patch", "secret", "app-secret", "--type", "merge", "-p", &patch])?;
    eventually("the drifted Secret reverted", WAIT, || async {
        let s = downstream_get(&w, CLUSTER, &dns, "secret", "app-secret")?;
        Ok(s.filter(|s| secret_value(s, "password").as_deref() == Some(synced.as_str())).map(|_| ()))
    })
    .await?;

    // The cluster refuses a Secret, quoting its value: proven directly first.
    let policy = format!("tmc-e2e-echo-{id}");
    w.clusters[CLUSTER].kubectl_stdin(&["apply", "-f", "-"], &echoing_policy(&policy))?;
    let probe = format!("probe-value-{id}");
    eventually("the cluster's policy to refuse and quote the probe Secret", WAIT, || async {
        let literal = format!("--from-literal=password={probe}");
        match w.clusters[CLUSTER].kubectl(&["-n", "default", "create", "secret", "generic", ECHOED, &literal]) {
            Err(said) => Ok(said.contains(&probe).then_some(())),
            Ok(_) => {
                // Created before the policy was active: remove it and try again.
                w.clusters[CLUSTER].kubectl(&["-n", "default", "delete", "secret", ECHOED])?;
                Ok(None)
            }
        }
    })
    .await?;
    let echoed = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": ECHOED},
                        "stringData": {"password": refused}});
    w.kcp.kubectl(TENANT, &["-n", "vault", "apply", "-f", "-"], Some(&echoed.to_string()))?;
    let rejected = eventually("a SyncRejected Event for the refused Secret", WAIT, || async {
        let found = events(&w, TENANT, "vault", "SyncRejected")?;
        Ok(found.into_iter().find(|e| e.contains(ECHOED)))
    })
    .await?;
    ensure!(rejected.contains("<redacted>"), "the refusal should be repeated, scrubbed: {rejected}");

    // Kubeconfigs broken so that the YAML parser and the TLS set-up complain about them.
    broken_target(&w, "trace-yaml-type", &format!("apiVersion: v1\nkind: Config\nusers: {yaml_type_token}\n"))?;
    let syntax = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\nusers:\n- name: u\n  user: {{token: {yaml_syntax_token}\n"
    );
    broken_target(&w, "trace-yaml-syntax", &syntax)?;
    let key_pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", b64(key_marker.as_bytes()));
    let cert_pem = format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", b64(b"not a certificate"));
    let mut bad_key = parsed.clone();
    let mut user = serde_yaml::Mapping::new();
    user.insert("client-certificate-data".into(), b64(cert_pem.as_bytes()).into());
    user.insert("client-key-data".into(), b64(key_pem.as_bytes()).into());
    bad_key["users"][0]["user"] = serde_yaml::Value::Mapping(user);
    broken_target(&w, "trace-bad-key", &serde_yaml::to_string(&bad_key)?)?;
    for name in ["trace-yaml-type", "trace-yaml-syntax", "trace-bad-key"] {
        let reason =
            eventually(&format!("{name}'s SyncerReady reason"), WAIT, || async { syncer_reason(&w, name) }).await?;
        ensure!(reason == "KubeconfigInvalid", "{name}: SyncerReady reason {reason}");
    }
    // A few more heartbeats, retries and watch events at trace level.
    tokio::time::sleep(Duration::from_secs(5)).await;

    ensure!(manager.running(), "the trace manager exited:\n{}", manager.output());
    let environ = std::fs::read(format!("/proc/{}/environ", manager.pid()))?;
    ensure!(environ.split(|b| *b == 0).any(|v| v == b"RUST_LOG=trace"), "the manager does not run with RUST_LOG=trace");
    let log = manager.output();
    ensure!(log.contains("downstream differs"), "the drift was not logged at debug; is the log level trace?");
    let outputs = [
        ("the trace manager's log", log),
        ("the tenant's Events", w.kcp.kubectl(TENANT, &["get", "events", "-A", "-o", "yaml"], None)?),
        ("the tenant's SyncTargets", w.kcp.kubectl(TENANT, &["get", "synctargets", "-o", "yaml"], None)?),
        ("the trace manager's /metrics", crate::ops::get(&format!("{metrics}/metrics")).await?.1),
    ];
    let values = [
        ("the synced value", synced.as_str()),
        ("the drifted value", drifted.as_str()),
        ("the refused value", refused.as_str()),
        ("the token in bad YAML (type error)", yaml_type_token.as_str()),
        ("the token in bad YAML (syntax error)", yaml_syntax_token.as_str()),
        ("the client key's content", key_marker.as_str()),
        ("the client key's PEM body", &b64(key_marker.as_bytes())),
        ("the client key data", &b64(key_pem.as_bytes())),
        ("the cluster token", cluster_token),
    ];
    let mut leaks = vec![];
    for (what, value) in values {
        for (place, text) in &outputs {
            if let Some(found) = find(text, value) {
                leaks.push(format!("{what} in {place}: {found}"));
            }
        }
    }
    let _ = w.clusters[CLUSTER].kubectl_stdin(&["delete", "-f", "-"], &echoing_policy(&policy));
    ensure!(leaks.is_empty(), "secret material leaked:\n{}", leaks.join("\n"));
    drop(manager);
    Bystander::get(&w).await?.untouched(&w).await?;
    Ok(())
}
