//! `tmc install` and the APIExport it writes, against a real kcp.

use std::sync::Arc;
use std::time::Duration;

use kcp_tmc::kcp::endpoints::{endpoint_slice_resource, endpoint_urls};
use kcp_tmc::kcp::schema::{self, ResourceSchema};
use kcp_tmc::kcp::{export, install, workspace};
use kube::api::{Api, DynamicObject};

use crate::env::{self, TestResult, eventually};
use crate::{PROVIDER, World, ensure};

pub async fn install_is_idempotent(w: Arc<World>) -> TestResult {
    let kubeconfig = w.kcp.kubeconfig.display().to_string();
    let args = ["install", "--kubeconfig", &kubeconfig, "--workspace", PROVIDER, "--workload-crd", crate::WIDGET_CRD];
    let (code, out, err) = env::tmc(&args);
    ensure!(code == 0, "re-install failed: {out}{err}");
    ensure!(!out.contains("created") && out.contains("unchanged"), "a re-install must change nothing:\n{out}");
    let schemas = w.kcp.kubectl(PROVIDER, &["get", "apiresourceschemas", "-o", "name"], None)?;
    for s in export::schemas(&[])? {
        ensure!(schemas.contains(&s.name), "schema {} missing from:\n{schemas}", s.name);
    }
    Ok(())
}

/// A provider of its own, so that changing the schema does not disturb the other tests.
pub async fn endpoint_follows_bindings_and_schema_upgrades(w: Arc<World>) -> TestResult {
    let provider = "root:upgrade-provider";
    let tenant = "root:upgrade-tenant";
    let export_name = "tmc-upgrade";
    let provider_cluster = workspace::ensure(&w.clients, &provider.parse()?, Duration::from_secs(60)).await?;
    let v1 = export::schemas(&[])?;
    let report = install::install(&w.clients, &provider_cluster, export_name, &v1).await?;
    ensure!(report.schemas_created.len() == v1.len() && report.export_written, "first install: {report:?}");

    // No binding yet: the endpoint slice lists no virtual-workspace URL.
    let slices: Api<DynamicObject> = Api::all_with(w.clients.cluster(&provider_cluster), &endpoint_slice_resource());
    let urls = || async {
        let slice = slices.get_opt(export_name).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(slice.map(|s| endpoint_urls(&serde_json::to_value(s).unwrap())).unwrap_or_default())
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(urls().await?.is_empty(), "endpoint before any binding: {:?}", urls().await?);

    workspace::ensure(&w.clients, &tenant.parse()?, Duration::from_secs(60)).await?;
    let binding = serde_json::to_string(&export::api_binding(provider, export_name))?;
    w.kcp.kubectl(tenant, &["apply", "-f", "-"], Some(&binding))?;
    let found = eventually("an endpoint after the first binding", Duration::from_secs(30), || async {
        Ok(Some(urls().await?).filter(|u| !u.is_empty()))
    })
    .await?;
    let (url, shard) = found.iter().next().unwrap();
    ensure!(url.ends_with(&format!("/services/apiexport/{provider_cluster}/{export_name}")), "endpoint {url}");
    // The shard that wrote the URL is named by the slice's managedFields (what --shards reads).
    ensure!(shard.as_deref() == Some("root"), "endpoint {url}: shard {shard:?}, want the single kcp's \"root\"");
    eventually("synctargets served in the tenant", Duration::from_secs(30), || async {
        Ok(w.kcp.kubectl(tenant, &["get", "synctargets"], None).ok().map(|_| ()))
    })
    .await?;
    w.kcp.kubectl(
        tenant,
        &["apply", "-f", "-"],
        Some("apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata: {name: survivor}\nspec: {}\n"),
    )?;

    // A schema change: a new printer column. Re-installing moves the export to the new schema,
    // deletes the old one, and the tenant's objects survive and show the new column.
    let mut crd = export::own_crds().remove(0);
    let cols = crd.spec.versions[0].additional_printer_columns.get_or_insert_with(Vec::new);
    cols.insert(
        0,
        serde_json::from_value(serde_json::json!({"name": "Cells", "type": "string", "jsonPath": ".spec.cells"}))?,
    );
    let changed = schema::from_crd(&crd)?;
    let v2: Vec<ResourceSchema> =
        v1.iter().map(|s| if s.plural == "synctargets" { changed.clone() } else { s.clone() }).collect();
    let report = install::install(&w.clients, &provider_cluster, export_name, &v2).await?;
    ensure!(report.schemas_created == vec![changed.name.clone()], "upgrade created {:?}", report.schemas_created);
    ensure!(report.export_written, "upgrade must rewrite the export");
    ensure!(report.schemas_pruned == vec![v1[0].name.clone()], "upgrade pruned {:?}", report.schemas_pruned);
    eventually("the new printer column in the tenant", Duration::from_secs(60), || async {
        let out = w.kcp.kubectl(tenant, &["get", "synctargets", "survivor"], None)?;
        Ok(out.contains("CELLS").then_some(()))
    })
    .await?;
    let again = install::install(&w.clients, &provider_cluster, export_name, &v2).await?;
    ensure!(!again.changed(), "a second upgrade run must change nothing: {again:?}");
    Ok(())
}

pub async fn crds_command_prints_both_crds(_w: Arc<World>) -> TestResult {
    let (code, out, err) = env::tmc(&["crds"]);
    ensure!(code == 0, "tmc crds failed: {err}");
    let kinds: Vec<String> = out
        .split("\n---\n")
        .filter(|d| !d.trim().is_empty() && d.trim() != "---")
        .map(|d| {
            serde_yaml::from_str::<serde_json::Value>(d.trim_start_matches("---\n"))
                .map(|v| v["spec"]["names"]["kind"].to_string())
        })
        .collect::<Result<_, _>>()?;
    ensure!(kinds == vec!["\"SyncTarget\"", "\"Placement\""], "kinds: {kinds:?}");
    Ok(())
}
