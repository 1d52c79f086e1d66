//! What `tmc status` shows, built from the objects it read (pure: the current time is an
//! argument), and its two renderings: a table for a terminal and JSON for scripts.

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::Serialize;

use crate::apis::placement::v1alpha1::{Placement, PlacementPhase};
use crate::apis::sync::v1alpha1::{CONDITION_READY, SyncTarget, SyncedResourceState};

/// Event reasons that mean an object did not reach a cluster (see docs/troubleshooting.md).
pub const PROBLEM_REASONS: &[&str] = &[
    "SyncRejected",
    "SyncFailed",
    "TakeOverRefused",
    "DownstreamNamespaceConflict",
    "DownstreamNamespaceFailed",
    "DownstreamOrphaned",
];

#[derive(Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStatus {
    pub workspace: String,
    pub placements: Vec<PlacementRow>,
    pub sync_targets: Vec<TargetRow>,
    pub problems: Vec<ProblemRow>,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementRow {
    pub name: String,
    pub phase: String,
    pub ready: String,
    pub reason: String,
    /// `name` for a target in the Placement's workspace, `workspace:name` otherwise.
    pub targets: Vec<String>,
    pub namespaces: i32,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetRow {
    pub name: String,
    pub ready: String,
    pub reason: String,
    pub unschedulable: bool,
    /// Seconds since the last heartbeat; none before the first one.
    pub heartbeat_age_seconds: Option<u64>,
    pub synced: Vec<SyncedRow>,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncedRow {
    pub kind: String,
    pub state: String,
    pub synced_objects: i64,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProblemRow {
    pub namespace: String,
    /// `Kind/name` of the object the Event is about.
    pub object: String,
    pub reason: String,
    pub count: i32,
    pub last_seen_seconds: Option<u64>,
    pub message: String,
}

fn ready(conditions: &[Condition]) -> (String, String) {
    conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY)
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_else(|| ("Unknown".into(), "NotReconciled".into()))
}

fn age(now: jiff::Timestamp, then: jiff::Timestamp) -> u64 {
    u64::try_from(now.duration_since(then).as_secs()).unwrap_or(0)
}

pub fn placement_row(workspace: &str, p: &Placement) -> PlacementRow {
    let status = p.status.clone().unwrap_or_default();
    let (ready, _) = ready(&status.conditions);
    let reason = status.conditions.iter().find(|c| c.type_ == "Scheduled").map(|c| c.reason.clone());
    let phase = match status.phase.unwrap_or_default() {
        PlacementPhase::Pending => "Pending",
        PlacementPhase::Bound => "Bound",
    };
    let targets = status
        .selected_targets
        .iter()
        .map(|t| if t.workspace == workspace { t.name.clone() } else { format!("{}:{}", t.workspace, t.name) })
        .collect();
    PlacementRow {
        name: p.metadata.name.clone().unwrap_or_default(),
        phase: phase.into(),
        ready,
        reason: reason.unwrap_or_default(),
        targets,
        namespaces: status.placed_namespaces.unwrap_or(0),
    }
}

pub fn target_row(now: jiff::Timestamp, st: &SyncTarget) -> TargetRow {
    let status = st.status.clone().unwrap_or_default();
    let (ready, reason) = ready(&status.conditions);
    TargetRow {
        name: st.metadata.name.clone().unwrap_or_default(),
        ready,
        reason,
        unschedulable: st.spec.unschedulable,
        heartbeat_age_seconds: status.last_sync_time.map(|t| age(now, t.0)),
        synced: status
            .synced_resources
            .iter()
            .map(|r| SyncedRow {
                kind: r.kind.clone(),
                state: r.state.as_str().into(),
                synced_objects: r.synced_objects,
            })
            .collect(),
    }
}

/// The Event as a problem row, when its reason is one of [`PROBLEM_REASONS`].
pub fn problem_row(now: jiff::Timestamp, e: &Event) -> Option<ProblemRow> {
    let reason = e.reason.clone().filter(|r| PROBLEM_REASONS.contains(&r.as_str()))?;
    let regarding = e.regarding.clone().unwrap_or_default();
    let last = e
        .series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0));
    Some(ProblemRow {
        namespace: regarding.namespace.or(e.metadata.namespace.clone()).unwrap_or_default(),
        object: format!("{}/{}", regarding.kind.unwrap_or_default(), regarding.name.unwrap_or_default()),
        reason,
        count: e.series.as_ref().map(|s| s.count).or(e.deprecated_count).unwrap_or(1),
        last_seen_seconds: last.map(|t| age(now, t)),
        message: e.note.clone().unwrap_or_default(),
    })
}

/// `42s`, `3m4s`, `2h5m`, `3d4h`: short enough for a table column.
pub fn human_age(seconds: u64) -> String {
    let d = seconds;
    match d {
        0..60 => format!("{d}s"),
        60..3600 => format!("{}m{}s", d / 60, d % 60),
        3600..86400 => format!("{}h{}m", d / 3600, d % 3600 / 60),
        _ => format!("{}d{}h", d / 86400, d % 86400 / 3600),
    }
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len() - 1;
        let padded: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| if i == last { c } else { format!("{c:<w$}", w = widths[i]) })
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn synced_cell(synced: &[SyncedRow]) -> String {
    if synced.is_empty() {
        return "-".into();
    }
    let parts: Vec<String> = synced
        .iter()
        .map(|s| {
            if s.state == SyncedResourceState::Syncing.as_str() {
                format!("{}={}", s.kind, s.synced_objects)
            } else {
                format!("{}({})", s.kind, s.state)
            }
        })
        .collect();
    parts.join(" ")
}

/// One message line in a table: the first line, at most 100 characters.
fn short(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default();
    if first.chars().count() > 100 {
        format!("{}…", first.chars().take(99).collect::<String>())
    } else {
        first.into()
    }
}

pub fn render_table(workspaces: &[WorkspaceStatus]) -> String {
    let mut out = String::new();
    for (i, ws) in workspaces.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("WORKSPACE {}\n\nPlacements:\n", ws.workspace));
        if ws.placements.is_empty() {
            out.push_str("  none\n");
        } else {
            let rows: Vec<Vec<String>> = ws
                .placements
                .iter()
                .map(|p| {
                    let targets = if p.targets.is_empty() { "-".into() } else { p.targets.join(",") };
                    vec![
                        p.name.clone(),
                        p.phase.clone(),
                        p.ready.clone(),
                        p.reason.clone(),
                        targets,
                        p.namespaces.to_string(),
                    ]
                })
                .collect();
            out.push_str(&table(&["NAME", "PHASE", "READY", "REASON", "TARGETS", "NAMESPACES"], &rows));
        }
        out.push_str("\nSyncTargets:\n");
        if ws.sync_targets.is_empty() {
            out.push_str("  none\n");
        } else {
            let rows: Vec<Vec<String>> = ws
                .sync_targets
                .iter()
                .map(|t| {
                    let ready = if t.unschedulable { format!("{},Cordoned", t.ready) } else { t.ready.clone() };
                    let heartbeat = t.heartbeat_age_seconds.map(human_age).unwrap_or_else(|| "never".into());
                    vec![t.name.clone(), ready, t.reason.clone(), heartbeat, synced_cell(&t.synced)]
                })
                .collect();
            out.push_str(&table(&["NAME", "READY", "REASON", "HEARTBEAT", "SYNCED OBJECTS"], &rows));
        }
        out.push_str("\nObjects in error:\n");
        if ws.problems.is_empty() {
            out.push_str("  none\n");
        } else {
            let rows: Vec<Vec<String>> = ws
                .problems
                .iter()
                .map(|p| {
                    let seen = p.last_seen_seconds.map(human_age).unwrap_or_else(|| "-".into());
                    vec![
                        p.namespace.clone(),
                        p.object.clone(),
                        p.reason.clone(),
                        p.count.to_string(),
                        seen,
                        short(&p.message),
                    ]
                })
                .collect();
            out.push_str(&table(&["NAMESPACE", "OBJECT", "REASON", "COUNT", "LAST SEEN", "MESSAGE"], &rows));
        }
    }
    out
}

pub fn render_json(workspaces: &[WorkspaceStatus]) -> String {
    let mut text = serde_json::to_string_pretty(workspaces).unwrap_or_else(|_| "[]".into());
    text.push('\n');
    text
}

#[cfg(test)]
#[path = "status_view_tests.rs"]
mod tests;
