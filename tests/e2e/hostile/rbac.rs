//! A stolen syncer token (the cluster identity `tmc syncer-manifest` sets up) stays inside the
//! namespaces its syncer created: it reads no other Secret, cannot bind itself elsewhere,
//! cannot grant itself more than it holds, and writes nothing outside its namespaces.

use std::sync::Arc;

use super::Bystander;
use crate::env::{TestResult, eventually};
use crate::rbac::ManifestIdentity;
use crate::syncer::WAIT;
use crate::{World, ensure};

const TARGET: &str = "rbac-stolen";
const NAMESPACE: &str = "kcp-tmc-rbac-stolen";

pub async fn stolen_syncer_token_stays_in_its_namespaces(w: Arc<World>) -> TestResult {
    let bystander = Bystander::get(&w).await?;
    // The bystander's copies live on cluster 1, where this syncer identity is set up too.
    let stolen = ManifestIdentity::apply(&w, 1, "root:rbac-stolen", TARGET, NAMESPACE)?;
    let theirs = bystander.downstream_namespace.as_str();

    // Read: the kcp credential beside it, and another tenant's synced Secret.
    let (read, said) = stolen.kubectl(&["-n", NAMESPACE, "get", "secret", &format!("syncer-{TARGET}-kcp")])?;
    ensure!(!read && said.contains("cannot get resource \"secrets\""), "read its own kcp credential: {said}");
    let (read, said) = stolen.kubectl(&["-n", theirs, "get", "secret", "calm-secret", "-o", "yaml"])?;
    ensure!(!read && said.contains("cannot get resource \"secrets\""), "read the bystander's Secret: {said}");
    let (listed, said) = stolen.kubectl(&["get", "secrets", "--all-namespaces"])?;
    ensure!(!listed && said.contains("cannot list resource \"secrets\""), "listed every Secret: {said}");

    // Bind itself to its namespace role in a namespace it did not create: the shipped policy
    // refuses (dry run: nothing is persisted even if it did not; the policy may need a moment
    // after the manifest was applied to be in force).
    let role = kcp_tmc::syncer::access::namespace_role(TARGET);
    let account = format!("{NAMESPACE}:syncer-{TARGET}");
    let bind = ["-n", theirs, "create", "rolebinding", "stolen", "--dry-run=server"];
    let refused = eventually("the admission policy refuses the binding", WAIT, || async {
        let (bound, said) = stolen.kubectl(
            &[&bind[..], &[&format!("--clusterrole={role}"), &format!("--serviceaccount={account}")]].concat(),
        )?;
        Ok((!bound && said.contains("denied request")).then_some(said))
    })
    .await?;
    let policy = format!("ValidatingAdmissionPolicy 'kcp-tmc-syncer-{TARGET}' with binding 'kcp-tmc-syncer-{TARGET}'");
    ensure!(refused.contains(&policy), "refused by something else: {refused}");
    ensure!(refused.contains("may be bound only in a namespace the syncer created"), "reason: {refused}");

    // Grant itself a role it does not hold: RBAC's escalation check refuses.
    let (bound, said) = stolen.kubectl(&[
        "-n",
        theirs,
        "create",
        "rolebinding",
        "stolen-admin",
        "--clusterrole=admin",
        &format!("--serviceaccount={account}"),
        "--dry-run=server",
    ])?;
    ensure!(!bound && said.contains("attempting to grant RBAC permissions not currently held"), "{said}");

    // Write outside its namespaces: a workload in kube-system, deleting the bystander's ConfigMap
    // or its namespace.
    let (created, said) = stolen.kubectl(&[
        "-n",
        "kube-system",
        "create",
        "deployment",
        "stolen",
        "--image=registry.example/stolen",
        "--dry-run=server",
    ])?;
    ensure!(!created && said.contains("cannot create resource \"deployments\""), "{said}");
    // Raw requests, so the refusal is of the write itself (kubectl's verbs may read first).
    let configmap = format!("/api/v1/namespaces/{theirs}/configmaps/calm-config?dryRun=All");
    let (deleted, said) = stolen.kubectl(&["delete", "--raw", &configmap])?;
    ensure!(!deleted && said.contains("cannot delete resource \"configmaps\""), "{said}");
    let namespace = format!("/api/v1/namespaces/{theirs}?dryRun=All");
    let (deleted, said) = stolen.kubectl(&["delete", "--raw", &namespace])?;
    ensure!(!deleted && said.contains("cannot delete resource \"namespaces\""), "{said}");

    bystander.untouched(&w).await?;
    Ok(())
}
