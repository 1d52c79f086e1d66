//! Per-target overrides (`spec.overrides`) on real kcp and real clusters: each target's copy
//! carries the changes its labels select (an image registry per region, a ConfigMap's data),
//! status says where each override applies, kcp's admission refuses overrides that would change
//! what an object is, and an override that cannot be applied holds the copies it meant to change
//! (the cluster's own resourceVersion unchanged) while the other target keeps syncing.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::env::{TestResult, eventually};
use crate::placement::{namespace_with_config, placement, tenant, wait_assigned};
use crate::syncer::{WAIT, deployment, downstream_get, downstream_ns, events, register};
use crate::{World, ensure};

const EU_IMAGE: &str = "eu.registry.example/nginx:1.27";

/// The value at `pointer` of the copy of `kind`/`name` in cluster `index`, once it is `want`.
async fn wait_field(
    w: &World,
    index: usize,
    ns: &str,
    (kind, name): (&str, &str),
    pointer: &str,
    want: Value,
) -> Result<Value, String> {
    eventually(&format!("{kind} {name} in cluster {index}: {pointer} = {want}"), WAIT, || async {
        let copy = downstream_get(w, index, ns, kind, name)?;
        Ok(copy.filter(|c| c.pointer(pointer) == Some(&want)))
    })
    .await
}

fn placement_status(w: &World, ws: &str) -> Result<Value, String> {
    let out = w.kcp.kubectl(ws, &["get", "placement", "shop", "-o", "jsonpath={.status}"], None)?;
    serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
}

async fn wait_condition(w: &World, ws: &str, status: &str, reason: &str) -> Result<Value, String> {
    eventually(&format!("OverridesValid {status} {reason}"), WAIT, || async {
        let s = placement_status(w, ws)?;
        let found = s["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "OverridesValid");
        Ok(found.filter(|c| c["status"] == status && c["reason"] == reason).cloned())
    })
    .await
}

pub async fn overrides_change_copies_per_target_and_a_bad_one_holds_them(w: Arc<World>) -> TestResult {
    let ws = "root:pl-overrides";
    tenant(&w, ws).await?;
    let (eu, us) = (register(&w, ws, "oeu", 0).await?, register(&w, ws, "ous", 1).await?);
    w.kcp.kubectl(ws, &["label", "synctarget", "oeu", "region=eu"], None)?;
    w.kcp.kubectl(ws, &["label", "synctarget", "ous", "region=us"], None)?;
    namespace_with_config(&w, ws, "shop", "shop")?;
    let mut p: Value = serde_json::from_str(&placement("shop", "shop", json!({}), None))?;
    let registry = |path: &str, image: &str| {
        json!({"name": "eu-registry", "targetSelector": {"matchLabels": {"region": "eu"}},
               "objects": {"group": "apps", "kind": "Deployment", "names": ["web"]},
               "jsonPatch": [{"op": "replace", "path": path, "value": image}]})
    };
    let us_config = json!({"name": "us-config", "targetSelector": {"matchLabels": {"region": "us"}},
        "objects": {"kind": "ConfigMap", "names": ["cfg"]},
        "mergePatch": {"metadata": {"annotations": {"region": "us"}}, "data": {"endpoint": "https://us.example"}}});
    let first_image = "/spec/template/spec/containers/0/image";
    p["spec"]["overrides"] = json!([registry(first_image, EU_IMAGE), us_config]);
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&p.to_string()))?;
    wait_assigned(&w, ws, "shop", &[&eu, &us]).await?;
    w.kcp.kubectl(ws, &["-n", "shop", "apply", "-f", "-"], Some(&deployment("web", 1)))?;
    let dns = [downstream_ns(&w, ws, "oeu", ws, "shop").await, downstream_ns(&w, ws, "ous", ws, "shop").await];

    // Each target's copies carry what its labels select, and nothing else.
    let image = "/spec/template/spec/containers/0/image";
    let web = ("deployment", "web");
    wait_field(&w, 0, &dns[0], web, image, json!(EU_IMAGE)).await?;
    wait_field(&w, 1, &dns[1], web, image, json!("nginx:1.27")).await?;
    let cm = wait_field(&w, 1, &dns[1], ("configmap", "cfg"), "/data/endpoint", json!("https://us.example")).await?;
    ensure!(cm["metadata"]["annotations"]["region"] == "us", "annotation: {}", cm["metadata"]);
    ensure!(
        cm["metadata"]["labels"]["tmc.kcp.io/target"] == us.as_str(),
        "the copy keeps our labels: {}",
        cm["metadata"]
    );
    let eu_cm = wait_field(&w, 0, &dns[0], ("configmap", "cfg"), "/data/ns", json!("shop")).await?;
    ensure!(eu_cm["data"].get("endpoint").is_none(), "the us override reached eu: {}", eu_cm["data"]);
    wait_condition(&w, ws, "True", "Valid").await?;
    let shown = placement_status(&w, ws)?["overrides"].clone();
    ensure!(
        shown == json!([{"name": "eu-registry", "targets": ["oeu"]}, {"name": "us-config", "targets": ["ous"]}]),
        "status.overrides: {shown}"
    );

    // The shipped sample (`make run` applies it) is what kcp accepts.
    let sample = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/samples/placement.yaml"))?;
    w.kcp.kubectl(ws, &["apply", "--dry-run=server", "-f", "-"], Some(&sample))?;

    // kcp's admission refuses overrides that would change what an object is.
    let cases = [
        (
            "a rename",
            json!({"name": "x", "objects": {"kind": "ConfigMap"}, "jsonPatch": [{"op": "replace", "path": "/metadata/name", "value": "y"}]}),
            "of metadata, a patch may change only labels and annotations",
        ),
        (
            "a kind change",
            json!({"name": "x", "objects": {"kind": "ConfigMap"}, "jsonPatch": [{"op": "replace", "path": "/kind", "value": "Secret"}]}),
            "a patch may not change apiVersion, kind or status",
        ),
        (
            "both patches",
            json!({"name": "x", "objects": {"kind": "ConfigMap"}, "mergePatch": {}, "jsonPatch": [{"op": "remove", "path": "/data"}]}),
            "set exactly one of mergePatch and jsonPatch",
        ),
    ];
    for (what, bad, rule) in cases {
        let mut refused = p.clone();
        refused["metadata"]["name"] = json!("refused");
        refused["spec"]["overrides"] = json!([bad]);
        let Err(error) = w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&refused.to_string())) else {
            return Err(format!("{what}: kcp accepted the Placement").into());
        };
        ensure!(error.contains("is invalid") && error.contains(rule), "{what}: want {rule:?} in: {error}");
    }

    // A patch that does not apply to the object on eu: the new image reaches us, while eu's
    // copy is not written without its override (the cluster's resourceVersion is unchanged).
    let before = downstream_get(&w, 0, &dns[0], "deployment", "web")?.ok_or("eu copy gone")?;
    p["spec"]["overrides"][0] = registry("/spec/template/spec/containers/5/image", EU_IMAGE);
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&p.to_string()))?;
    // (kcp serves Deployments from a schema, so no strategic merge: `kubectl set image` fails.)
    let new_image = json!([{"op": "replace", "path": image, "value": "nginx:1.28"}]).to_string();
    w.kcp.kubectl(ws, &["-n", "shop", "patch", "deployment", "web", "--type=json", "-p", &new_image], None)?;
    wait_field(&w, 1, &dns[1], web, image, json!("nginx:1.28")).await?;
    let failed = eventually("an OverrideFailed event on web", WAIT, || async {
        let found = events(&w, ws, "shop", "OverrideFailed")?;
        Ok(found.into_iter().find(|e| e.contains("web") && e.contains("eu-registry") && e.contains("does not apply")))
    })
    .await?;
    ensure!(failed.contains("left as it was"), "event: {failed}");
    let after = downstream_get(&w, 0, &dns[0], "deployment", "web")?.ok_or("eu copy gone")?;
    ensure!(
        after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
            && after.pointer(image) == Some(&json!(EU_IMAGE)),
        "eu's copy was written without its override: {} -> {}",
        before["metadata"]["resourceVersion"],
        after["metadata"]
    );

    // An override admission cannot judge (a merge patch setting kind): the condition names it,
    // and the ConfigMap it selects on us is held while eu's copy follows kcp.
    let mut forging = p["spec"]["overrides"][1].clone();
    forging["mergePatch"]["kind"] = json!("Secret");
    p["spec"]["overrides"][0] = registry(first_image, "eu.registry.example/nginx:1.28");
    p["spec"]["overrides"][1] = forging;
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&p.to_string()))?;
    let c = wait_condition(&w, ws, "False", "InvalidOverride").await?;
    ensure!(c["message"].as_str().is_some_and(|m| m.contains("us-config") && m.contains("may not set kind")), "{c}");
    // The fixed registry override catches eu up.
    wait_field(&w, 0, &dns[0], web, image, json!("eu.registry.example/nginx:1.28")).await?;
    let held = downstream_get(&w, 1, &dns[1], "configmap", "cfg")?.ok_or("us cfg gone")?;
    let cm =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"ns": "shop", "v": "2"}});
    w.kcp.kubectl(ws, &["-n", "shop", "apply", "-f", "-"], Some(&cm.to_string()))?;
    wait_field(&w, 0, &dns[0], ("configmap", "cfg"), "/data/v", json!("2")).await?;
    eventually("an OverrideFailed event on cfg", WAIT, || async {
        let found = events(&w, ws, "shop", "OverrideFailed")?;
        Ok(found.into_iter().find(|e| e.contains("cfg") && e.contains("us-config")))
    })
    .await?;
    let still = downstream_get(&w, 1, &dns[1], "configmap", "cfg")?.ok_or("us cfg gone")?;
    ensure!(
        still["metadata"]["resourceVersion"] == held["metadata"]["resourceVersion"],
        "us cfg written: {}",
        still["data"]
    );

    // Fixed: both copies follow kcp with their changes again.
    p["spec"]["overrides"][1]["mergePatch"].as_object_mut().ok_or("patch")?.remove("kind");
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&p.to_string()))?;
    wait_condition(&w, ws, "True", "Valid").await?;
    let cm = wait_field(&w, 1, &dns[1], ("configmap", "cfg"), "/data/v", json!("2")).await?;
    ensure!(cm["data"]["endpoint"] == "https://us.example", "us data: {}", cm["data"]);
    Ok(())
}
