//! `tmc placement preview -f placement.yaml`: where a Placement would go, and why, before it is
//! applied. Reads with the caller's own kubeconfig (never the manager's): the workspace's
//! namespaces and the objects in those the Placement selects, the location workspace's
//! SyncTargets, and the Placement of the same name if it exists (its `status.selectedTargets`
//! keep their place). Then runs the manager's own decision (`schedule`, the same target view and
//! consent rule) and tells, per target, the rule that decided it (`explain`).
//!
//! Not predicted: the manager's eviction rate limit (a move it would defer is shown as made)
//! and anything the caller may not read (the preview stops and says what it could not read).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, ListParams};
use serde::Serialize;

use super::status::Output;
use super::{CliError, KubeconfigArgs, parse_duration, parse_workspace};
use crate::apis::placement::v1alpha1::Placement;
use crate::apis::sync::v1alpha1::{SupportedApi, SyncTarget, SyncedResourceState};
use crate::kcp::{ClusterClients, ClusterKey, LogicalClusterName, WorkspacePath, error_message};
use crate::reconciler::placement::explain::{self, Why};
use crate::reconciler::placement::{consents, location_path, schedule, selector, target_view};
use crate::syncer::discovery;

#[derive(Debug, Args)]
pub struct PreviewArgs {
    #[command(flatten)]
    pub kcp: KubeconfigArgs,

    /// The Placement to preview: a YAML or JSON file, `-` for standard input.
    #[arg(short = 'f', long = "filename", env = "TMC_PREVIEW_FILE")]
    pub file: PathBuf,

    /// The workspace the Placement would be created in, e.g. root:team. Without it, the
    /// workspace of the kubeconfig's server URL (`…/clusters/<path>`, as `kubectl ws` sets it).
    #[arg(long, env = "TMC_WORKSPACE", value_parser = parse_workspace)]
    pub workspace: Option<WorkspacePath>,

    /// The manager's `--placement-failover-grace`, for targets not Ready that a Placement holds.
    #[arg(long, env = "TMC_PLACEMENT_FAILOVER_GRACE", default_value = "2m", value_parser = parse_duration)]
    pub failover_grace: Duration,

    /// Output format: a table for a terminal, or JSON for scripts.
    #[arg(short, long, env = "TMC_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// What the preview read, with the caller's credentials.
#[derive(Clone, Debug)]
pub struct Reading {
    pub workspace: WorkspacePath,
    /// The workspace's logical cluster (the scheduler ranks targets by Placement identity).
    pub cluster: LogicalClusterName,
    pub placement: Placement,
    /// The namespaces the Placement selects, sorted.
    pub namespaces: Vec<String>,
    pub location: WorkspacePath,
    pub targets: Vec<SyncTarget>,
    /// (group, kind) of the objects in the selected namespaces that targets sync.
    pub needed: BTreeSet<(String, String)>,
    /// The existing Placement's `status.selectedTargets` in the location workspace.
    pub current: BTreeSet<String>,
}

/// One target's row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub name: String,
    pub chosen: bool,
    pub why: Why,
    pub reason: &'static str,
}

/// The preview of one Placement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Preview {
    pub placement: String,
    pub workspace: String,
    pub location: String,
    pub namespaces: Vec<String>,
    /// The `Scheduled` reason the manager would write.
    pub outcome: String,
    pub targets: Vec<Row>,
}

/// The decision on `reading` at `now`, explained. Pure.
pub fn preview(reading: &Reading, now: jiff::Timestamp, failover_grace: Duration) -> Preview {
    let spec = &reading.placement.spec;
    let foreign = reading.location != reading.workspace;
    let views: Vec<schedule::TargetView> = reading
        .targets
        .iter()
        .map(|t| target_view(t, !foreign || consents(t, &reading.workspace), &reading.needed))
        .collect();
    let name = reading.placement.metadata.name.clone().unwrap_or_default();
    let id = ClusterKey::new(reading.cluster.clone(), None, name.clone()).to_string();
    let input = schedule::Input {
        placement: &id,
        match_labels: &spec.location_selector.match_labels,
        match_expressions: &spec.location_selector.match_expressions,
        number_of_targets: spec.number_of_targets,
        targets: &views,
        current: &reading.current,
        foreign,
        now,
        failover_grace,
        evictions_allowed: usize::MAX,
    };
    let decision = schedule::schedule(&input);
    let targets = explain::explain(&input, &decision)
        .into_iter()
        .map(|c| Row { name: c.name, chosen: c.chosen, why: c.why, reason: c.why.text() })
        .collect();
    Preview {
        placement: name,
        workspace: reading.workspace.to_string(),
        location: reading.location.to_string(),
        namespaces: reading.namespaces.clone(),
        outcome: format!("{:?}", decision.outcome),
        targets,
    }
}

pub fn render_table(p: &Preview) -> String {
    let mut out = format!("Placement {} in {}\n", p.placement, p.workspace);
    let namespaces = if p.namespaces.is_empty() { "none".to_string() } else { p.namespaces.join(", ") };
    let _ = writeln!(out, "  namespaces selected: {namespaces}");
    let _ = writeln!(out, "  SyncTargets of {}: {}", p.location, p.targets.len());
    let _ = writeln!(out, "  would be: {}\n", p.outcome);
    let width = p.targets.iter().map(|t| t.name.len()).chain([6]).max().unwrap_or(6);
    let _ = writeln!(out, "{:width$}  CHOSEN  WHY", "TARGET");
    for t in &p.targets {
        let chosen = if t.chosen { "yes" } else { "no" };
        let _ = writeln!(out, "{:width$}  {chosen:6}  {}", t.name, t.reason);
    }
    out
}

/// Errors of the preview; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("cannot read {path}: {message}\n  fix: pass -f with a Placement manifest (YAML or JSON), or - for stdin")]
    File { path: PathBuf, message: String },
    #[error("{0}\n  fix: correct the Placement's spec; the manager would refuse it the same way")]
    Invalid(selector::Invalid),
    #[error(
        "no workspace given and the kubeconfig's server URL names none\n  fix: pass --workspace, e.g. --workspace root:team"
    )]
    NoWorkspace,
    #[error(
        "cannot read {what} in {workspace}: {message}\n  fix: the preview reads with your kubeconfig; check that the workspace exists and that you may list {what} there"
    )]
    Read { workspace: WorkspacePath, what: String, message: String },
    #[error(
        "cannot tell the logical cluster of {0}: its namespaces carry no kcp.io/cluster annotation (is the server kcp?)"
    )]
    NoCluster(WorkspacePath),
}

fn read_file(path: &PathBuf) -> Result<Placement, PreviewError> {
    let fail = |message: String| PreviewError::File { path: path.clone(), message };
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| fail(e.to_string()))?
    } else {
        std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?
    };
    let placement: Placement = serde_yaml::from_str(&text).map_err(|e| fail(e.to_string()))?;
    if placement.metadata.name.as_deref().unwrap_or_default().is_empty() {
        return Err(fail("metadata.name is missing".into()));
    }
    Ok(placement)
}

/// The workspace of a kcp server URL such as `https://kcp:6443/clusters/root:team`.
pub fn workspace_of_url(url: &str) -> Option<WorkspacePath> {
    let (_, rest) = url.split_once("/clusters/")?;
    rest.split('/').next()?.parse().ok()
}

/// Every object `api` lists; a kind the workspace does not serve holds none when
/// `missing_is_empty`.
async fn list<K>(
    api: Api<K>,
    workspace: &WorkspacePath,
    what: &str,
    missing_is_empty: bool,
) -> Result<Vec<K>, PreviewError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(s)) if s.code == 404 && missing_is_empty => Ok(vec![]),
        Err(e) => {
            Err(PreviewError::Read { workspace: workspace.clone(), what: what.into(), message: error_message(&e) })
        }
    }
}

/// The kinds the selected namespaces hold, among those any target reports (in any state: a kind
/// every target misses still counts, as in the reconciler), skipping objects no syncer copies.
/// Each kind is looked up in the workspace's discovery; one kcp does not serve there holds none.
async fn needed_kinds(
    client: &kube::Client,
    workspace: &WorkspacePath,
    namespaces: &BTreeSet<&str>,
    targets: &[SyncTarget],
) -> Result<BTreeSet<(String, String)>, PreviewError> {
    let kinds: BTreeSet<(String, String)> = targets
        .iter()
        .flat_map(|t| t.status.iter().flat_map(|s| s.synced_resources.iter()))
        .map(|r| (r.group.clone(), r.kind.clone()))
        .collect();
    let apis: Vec<SupportedApi> = kinds.into_iter().map(|(group, kind)| SupportedApi { group, kind }).collect();
    let mut needed = BTreeSet::new();
    for (api, found) in discovery::discover(client, &apis).await {
        let resource = match found {
            Ok(resource) => resource.api,
            Err(why) if why.state == SyncedResourceState::DiscoveryFailed => {
                let what = format!("the API group {:?}", api.group);
                return Err(PreviewError::Read { workspace: workspace.clone(), what, message: why.message });
            }
            // Not served in the workspace (or not namespaced): it holds nothing to place.
            Err(_) => continue,
        };
        let listed = Api::<DynamicObject>::all_with(client.clone(), &resource);
        let objects = list(listed, workspace, &resource.plural, true).await?;
        let holds = objects.iter().any(|o| {
            o.metadata.namespace.as_deref().is_some_and(|n| namespaces.contains(n))
                && crate::syncer::transform::skip_reason(&api.kind, &serde_json::to_value(o).unwrap_or_default())
                    .is_none()
        });
        if holds {
            needed.insert((api.group, api.kind));
        }
    }
    Ok(needed)
}

async fn read(
    clients: &ClusterClients,
    workspace: WorkspacePath,
    placement: Placement,
) -> Result<Reading, PreviewError> {
    selector::validate_spec(&placement.spec).map_err(PreviewError::Invalid)?;
    let location = location_path(&placement.spec).map_err(PreviewError::Invalid)?.unwrap_or_else(|| workspace.clone());
    let client = clients.path(&workspace);
    let namespaces = list(Api::<Namespace>::all(client.clone()), &workspace, "namespaces", false).await?;
    let cluster =
        namespaces.iter().find_map(LogicalClusterName::of).ok_or_else(|| PreviewError::NoCluster(workspace.clone()))?;
    let selected: BTreeSet<&str> = namespaces
        .iter()
        .filter(|n| {
            selector::matches_selector(
                &placement.spec.namespace_selector,
                &n.metadata.labels.clone().unwrap_or_default(),
            )
        })
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let targets = list(Api::<SyncTarget>::all(clients.path(&location)), &location, "synctargets", false).await?;
    let needed = needed_kinds(&client, &workspace, &selected, &targets).await?;
    let name = placement.metadata.name.clone().unwrap_or_default();
    let existing = Api::<Placement>::all(client.clone()).get_opt(&name).await.map_err(|e| PreviewError::Read {
        workspace: workspace.clone(),
        what: "placements".into(),
        message: error_message(&e),
    })?;
    let current = existing
        .and_then(|p| p.status)
        .map(|s| s.selected_targets.into_iter().filter(|t| t.workspace == location.as_str()).map(|t| t.name).collect())
        .unwrap_or_default();
    Ok(Reading {
        namespaces: selected.into_iter().map(String::from).collect(),
        workspace,
        cluster,
        placement,
        location,
        targets,
        needed,
        current,
    })
}

pub async fn run(args: PreviewArgs) -> Result<(), CliError> {
    let failed = |e: PreviewError| CliError::Failed(e.to_string());
    let placement = read_file(&args.file).map_err(failed)?;
    let config = args.kcp.load().await?;
    let workspace = match args.workspace {
        Some(w) => w,
        None => workspace_of_url(&config.cluster_url.to_string()).ok_or(PreviewError::NoWorkspace).map_err(failed)?,
    };
    let clients = ClusterClients::for_server(&config).map_err(|e| CliError::Failed(e.to_string()))?;
    let reading = read(&clients, workspace, placement).await.map_err(failed)?;
    let shown = preview(&reading, jiff::Timestamp::now(), args.failover_grace);
    let text = match args.output {
        Output::Table => render_table(&shown),
        Output::Json => serde_json::to_string_pretty(&shown).unwrap_or_default() + "\n",
    };
    super::emit(&text)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_workspace_comes_from_the_server_url() {
        let cases = [
            ("https://kcp:6443/clusters/root:team", Some("root:team")),
            ("https://kcp:6443/clusters/root:team/", Some("root:team")),
            ("https://kcp:6443/", None),
            ("https://kcp:6443/clusters/Not A Path", None),
        ];
        for (url, want) in cases {
            assert_eq!(workspace_of_url(url).map(|w| w.to_string()).as_deref(), want, "{url}");
        }
    }

    fn target(name: &str, labels: serde_json::Value, ready: &str, spec: serde_json::Value) -> SyncTarget {
        serde_json::from_value(json!({
            "apiVersion": "sync.kcp.io/v1alpha1", "kind": "SyncTarget",
            "metadata": {"name": name, "labels": labels}, "spec": spec,
            "status": {
                "conditions": [{"type": "Ready", "status": ready, "reason": "R", "message": "",
                                "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "syncedResources": [{"group": "", "kind": "ConfigMap", "version": "v1", "resource": "configmaps",
                                     "state": "Syncing", "syncedObjects": 0}],
            },
        }))
        .unwrap()
    }

    fn reading(location: &str, targets: Vec<SyncTarget>, current: &[&str]) -> Reading {
        let placement: Placement = serde_yaml::from_str(
            "apiVersion: placement.kcp.io/v1alpha1\nkind: Placement\nmetadata: {name: web}\n\
             spec: {namespaceSelector: {matchLabels: {app: web}}, locationSelector: {matchLabels: {env: prod}}}\n",
        )
        .unwrap();
        Reading {
            workspace: "root:team".parse().unwrap(),
            cluster: LogicalClusterName::new("abc").unwrap(),
            placement,
            namespaces: vec!["web".into()],
            location: location.parse().unwrap(),
            targets,
            needed: [("".to_string(), "ConfigMap".to_string())].into(),
            current: current.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Each target of a mixed location with the rule that decides it, and consent applied to
    /// another workspace's targets exactly as the reconciler applies it.
    #[test]
    fn every_target_gets_its_rule() {
        let prod = json!({"env": "prod"});
        let targets = vec![
            target("east", prod.clone(), "True", json!({})),
            target("west", prod.clone(), "False", json!({})),
            target("north", prod.clone(), "True", json!({"unschedulable": true})),
            target("dev", json!({"env": "dev"}), "True", json!({})),
        ];
        let shown =
            preview(&reading("root:team", targets.clone(), &[]), jiff::Timestamp::now(), Duration::from_secs(120));
        let rows: Vec<(&str, bool, Why)> = shown.targets.iter().map(|r| (r.name.as_str(), r.chosen, r.why)).collect();
        assert_eq!(
            rows,
            [
                ("dev", false, Why::LabelsDoNotMatch),
                ("east", true, Why::Chosen),
                ("north", false, Why::Cordoned),
                ("west", false, Why::NotReady),
            ]
        );
        assert_eq!(shown.outcome, "Scheduled");
        let table = render_table(&shown);
        assert!(table.contains("east    yes     Ready, matches"), "{table}");
        assert!(table.contains("namespaces selected: web"), "{table}");

        // The same targets in another workspace: only one that lists root:team takes part.
        let mut shared = targets;
        shared[1] = target("west", prod, "True", json!({"allowedWorkspaces": ["root:team"]}));
        let shown = preview(&reading("root:infra", shared, &["west"]), jiff::Timestamp::now(), Duration::ZERO);
        let chosen: Vec<&str> = shown.targets.iter().filter(|r| r.chosen).map(|r| r.name.as_str()).collect();
        assert_eq!(chosen, ["west"]);
        assert!(shown.targets.iter().filter(|r| r.name != "west").all(|r| r.why == Why::NotAllowed), "{shown:?}");
        assert_eq!(shown.targets.iter().find(|r| r.name == "west").unwrap().why, Why::Kept);
    }
}
