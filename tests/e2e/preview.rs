//! `tmc placement preview` against a real kcp: what it says before a Placement exists is what
//! the manager then chooses, and every other target is told apart by the rule that left it out.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::env::{TestResult, tmc};
use crate::placement::{get, namespace_with_config, placement, selected, tenant, wait_assigned};
use crate::syncer::register;
use crate::{World, ensure};

/// Runs the preview of `manifest` in `ws` as JSON; the parsed output.
fn preview(w: &World, ws: &str, manifest: &str) -> Result<Value, String> {
    let file = w.kcp.dir.path().join(format!("preview-{}.json", ws.replace(':', "_")));
    std::fs::write(&file, manifest).map_err(|e| e.to_string())?;
    let kubeconfig = w.kcp.kubeconfig.display().to_string();
    let args =
        ["placement", "preview", "-f", &file.display().to_string(), "--workspace", ws, "--kubeconfig", &kubeconfig];
    let (code, out, err) = tmc(&[&args[..], &["-o", "json"]].concat());
    ensure!(code == 0, "preview failed ({code}): {err}");
    serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
}

/// (name, chosen, why) of each target, sorted by name.
fn rows(p: &Value) -> Vec<(String, bool, String)> {
    let targets = p["targets"].as_array().cloned().unwrap_or_default();
    targets
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or_default().into(),
                t["chosen"] == true,
                t["why"].as_str().unwrap_or_default().into(),
            )
        })
        .collect()
}

fn row(name: &str, chosen: bool, why: &str) -> (String, bool, String) {
    (name.into(), chosen, why.into())
}

pub async fn placement_preview_says_what_the_manager_then_does(w: Arc<World>) -> TestResult {
    let ws = "root:pl-preview";
    tenant(&w, ws).await?;
    let a = register(&w, ws, "a", 0).await?;
    register(&w, ws, "b", 1).await?;
    // Targets no syncer serves (no kubeconfig): never Ready.
    for (name, labels) in [("c", "{env: prod}"), ("d", "{env: dev}")] {
        let yaml = format!(
            "apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata: {{name: {name}, labels: {labels}}}\nspec: {{}}\n"
        );
        w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&yaml))?;
    }
    for name in ["a", "b"] {
        w.kcp.kubectl(ws, &["label", "synctarget", name, "env=prod"], None)?;
    }
    w.kcp.kubectl(
        ws,
        &["patch", "synctarget", "b", "--type=merge", "-p", r#"{"spec":{"unschedulable":true}}"#],
        None,
    )?;
    namespace_with_config(&w, ws, "web", "web")?;
    namespace_with_config(&w, ws, "other", "other")?;
    let manifest = placement("web", "web", json!({ "matchLabels": { "env": "prod" } }), None);

    // Before the Placement exists: nothing is written, and the answer names each rule.
    let p = preview(&w, ws, &manifest)?;
    let want = [
        row("a", true, "Chosen"),
        row("b", false, "Cordoned"),
        row("c", false, "NotReady"),
        row("d", false, "LabelsDoNotMatch"),
    ];
    ensure!(rows(&p) == want, "preview {p}");
    ensure!(p["outcome"] == "Scheduled" && p["namespaces"] == json!(["web"]), "preview {p}");
    ensure!(
        w.kcp.kubectl(ws, &["get", "placements", "-o", "name"], None)?.trim().is_empty(),
        "the preview wrote a Placement"
    );

    // The manager then chooses what the preview said, and the preview of the placed Placement
    // reads its status: the chosen target is kept.
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&manifest))?;
    wait_assigned(&w, ws, "web", &[&a]).await?;
    ensure!(selected(&get(&w, ws, "placement", "web")?) == ["a"], "the manager chose otherwise");
    let p = preview(&w, ws, &manifest)?;
    ensure!(rows(&p)[0] == row("a", true, "Kept"), "preview after placing {p}");

    // A Placement the manager would refuse is refused here too, saying what to fix.
    let bad = placement("bad", "web", json!({ "matchLabels": { "env": "not a value!" } }), None);
    let file = w.kcp.dir.path().join("preview-bad.json");
    std::fs::write(&file, bad).map_err(|e| e.to_string())?;
    let kubeconfig = w.kcp.kubeconfig.display().to_string();
    let (code, _, err) = tmc(&[
        "placement",
        "preview",
        "-f",
        &file.display().to_string(),
        "--workspace",
        ws,
        "--kubeconfig",
        &kubeconfig,
    ]);
    ensure!(code == 1 && err.contains("spec.locationSelector") && err.contains("fix:"), "bad placement: {code} {err}");
    Ok(())
}
