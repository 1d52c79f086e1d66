//! The location workspace of a Placement: parsing `locationSelector.workspace`, and what a failed
//! lookup of it does (pure, table-tested). A workspace that is gone unassigns; one that is not
//! ready, or a lookup that fails for a moment, keeps what the Placement placed there — said only
//! where the tenant already knows the workspace, so the reason is no oracle (docs/security.md).

use super::selector;
use crate::apis::placement::v1alpha1::{PlacementSpec, SelectedTarget};
use crate::kcp::paths::PathError;
use crate::kcp::workspace::WorkspaceError;
use crate::kcp::{ClusterKey, LogicalClusterName, WorkspacePath};

/// Whether a failed lookup of the location workspace means "not there for you" rather than "try
/// again": what kcp says is gone ([`PathError::is_authoritative`], the rule consent uses too),
/// and, for the tenant's eyes, also a 403 (kcp's answer for a path under a missing parent) and a
/// workspace not ready yet, so that its existence does not show. Anything else (kcp unreachable,
/// 5xx) is transient.
pub(super) fn location_absent(e: &PathError) -> bool {
    let forbidden =
        matches!(e, PathError::Workspace(WorkspaceError::Api { source: kube::Error::Api(s), .. }) if s.code == 403);
    e.is_authoritative() || forbidden || matches!(e, PathError::Workspace(WorkspaceError::NotReady(_)))
}

/// What a failed lookup of the location workspace does to a Placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LocationFailure {
    /// `WorkspaceNotAllowed`, nothing placed there: the tenant learns nothing of a workspace
    /// it has no assignments in.
    NotAllowed,
    /// Keep what is placed there and say `LocationWorkspaceNotReady`: the Placement has
    /// assignments there, so the tenant knew the workspace, and a workspace that is not ready or
    /// a moment of kcp trouble must not unassign anything.
    KeepAssignments,
    /// Fail the reconcile and retry; the status stays as it was.
    Retry,
}

pub(super) fn location_failure(e: &PathError, has_assignments_there: bool) -> LocationFailure {
    let not_ready = matches!(e, PathError::Workspace(WorkspaceError::NotReady(_)));
    match (location_absent(e), has_assignments_there) {
        // Gone for good (deleted, or never there): its targets are gone with it.
        (true, _) if !not_ready => LocationFailure::NotAllowed,
        (_, true) => LocationFailure::KeepAssignments,
        (true, false) => LocationFailure::NotAllowed,
        (false, false) => LocationFailure::Retry,
    }
}

/// Whether `selected` (a Placement's tenant-writable `selectedTargets`) names a target of the
/// workspace `path` that the Placement of `own` (at `own_path`) may use: one of `last_known`
/// (the logical cluster `path` last resolved to) that is its own workspace's or consents to it
/// (`consenting(target)`). Only then may a failed lookup of `path` say more than
/// `WorkspaceNotAllowed`: a forged entry naming a workspace that never consented tells nothing.
pub(super) fn placed_there(
    selected: &[SelectedTarget],
    path: &WorkspacePath,
    own: &LogicalClusterName,
    last_known: Option<&LogicalClusterName>,
    consenting: impl Fn(&ClusterKey) -> bool,
) -> bool {
    let Some(cluster) = last_known else { return false };
    selected
        .iter()
        .filter(|t| t.workspace == path.as_str())
        .any(|t| cluster == own || consenting(&ClusterKey::new(cluster.clone(), None, t.name.clone())))
}

/// The Placement's `locationSelector.workspace`, parsed; `None` means its own workspace.
pub(crate) fn location_path(spec: &PlacementSpec) -> Result<Option<WorkspacePath>, selector::Invalid> {
    let Some(text) = spec.location_selector.workspace.as_deref() else { return Ok(None) };
    text.parse().map(Some).map_err(|_| selector::Invalid {
        field: "spec.locationSelector.workspace".into(),
        problem: selector::Problem::WorkspacePath(selector::Shown::of(text)),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Which failed lookups of a location workspace read as "not allowed" (and are written to
    /// status) and which are transient (retried, the status kept as it was).
    #[test]
    fn missing_and_unreachable_workspaces() {
        let path: WorkspacePath = "root:elsewhere".parse().unwrap();
        let api = |code: u16| {
            let status = kube::core::Status::failure("x", "y").with_code(code).boxed();
            PathError::Workspace(WorkspaceError::Api { path: path.clone(), source: kube::Error::Api(status) })
        };
        let not_found =
            WorkspaceError::NotFound { path: path.clone(), parent: "root".parse().unwrap(), name: "x".into() };
        let cases = [
            ("no such workspace", PathError::Workspace(not_found), true),
            ("not ready yet", PathError::Workspace(WorkspaceError::NotReady(path.clone())), true),
            ("parent missing: forbidden", api(403), true),
            ("parent missing: not found", api(404), true),
            ("kcp failing", api(503), false),
            ("throttled", api(429), false),
            (
                "logical cluster unreadable",
                PathError::Api { cluster: crate::kcp::LogicalClusterName::new("c").unwrap(), message: "x".into() },
                false,
            ),
        ];
        for (name, e, absent) in cases {
            assert_eq!(location_absent(&e), absent, "{name}");
        }
    }

    /// A workspace that is not ready, or a moment of kcp trouble, keeps what a Placement placed
    /// there; without assignments there nothing is said that the tenant did not know.
    #[test]
    fn failed_location_lookups_keep_existing_assignments() {
        use LocationFailure::{KeepAssignments, NotAllowed, Retry};
        let path: WorkspacePath = "root:elsewhere".parse().unwrap();
        let api = |code: u16| {
            let status = kube::core::Status::failure("x", "y").with_code(code).boxed();
            PathError::Workspace(WorkspaceError::Api { path: path.clone(), source: kube::Error::Api(status) })
        };
        let not_found =
            || WorkspaceError::NotFound { path: path.clone(), parent: "root".parse().unwrap(), name: "x".into() };
        let not_ready = || PathError::Workspace(WorkspaceError::NotReady(path.clone()));
        // (name, error, assignments there, what happens)
        let cases = [
            ("not ready, placed there", not_ready(), true, KeepAssignments),
            ("not ready, nothing placed: as if absent", not_ready(), false, NotAllowed),
            ("kcp failing, placed there", api(503), true, KeepAssignments),
            ("kcp failing, nothing placed: retried", api(503), false, Retry),
            ("throttled, placed there", api(429), true, KeepAssignments),
            ("deleted while placed there", PathError::Workspace(not_found()), true, NotAllowed),
            ("no such workspace", PathError::Workspace(not_found()), false, NotAllowed),
            ("forbidden", api(403), false, NotAllowed),
        ];
        for (name, e, placed_there, want) in cases {
            assert_eq!(location_failure(&e, placed_there), want, "{name}");
        }
    }

    /// A tenant can write `selectedTargets`; an entry counts as "placed there" only for a
    /// workspace the manager has resolved and a target that takes this workspace's namespaces.
    #[test]
    fn placed_there_needs_a_known_workspace_and_consent() {
        let lc = |s: &str| LogicalClusterName::new(s).unwrap();
        let (own, shared, private) = (lc("own"), lc("shared"), lc("private"));
        let path: WorkspacePath = "root:elsewhere".parse().unwrap();
        let entry = |ws: &str, name: &str| SelectedTarget { workspace: ws.into(), name: name.into() };
        let consenting = |k: &ClusterKey| k.cluster.as_str() == "shared" && k.name == "t";
        // (name, selected, last known cluster of the path, placed there)
        let cases = [
            ("consenting target", vec![entry("root:elsewhere", "t")], Some(&shared), true),
            ("own workspace", vec![entry("root:elsewhere", "x")], Some(&own), true),
            ("never resolved", vec![entry("root:elsewhere", "t")], None, false),
            ("forged: no consent", vec![entry("root:elsewhere", "t")], Some(&private), false),
            ("forged: other target name", vec![entry("root:elsewhere", "u")], Some(&shared), false),
            ("entry of another workspace", vec![entry("root:other", "t")], Some(&shared), false),
            ("nothing selected", vec![], Some(&shared), false),
        ];
        for (name, selected, last_known, want) in cases {
            assert_eq!(placed_there(&selected, &path, &own, last_known, consenting), want, "{name}");
        }
    }

    #[test]
    fn a_location_path_that_does_not_parse_is_an_invalid_selector() {
        let spec = |ws: Option<&str>| -> PlacementSpec {
            serde_json::from_value(json!({"namespaceSelector": {}, "locationSelector": {"workspace": ws}})).unwrap()
        };
        assert_eq!(location_path(&spec(None)), Ok(None));
        assert_eq!(location_path(&spec(Some("root:a"))).unwrap().unwrap().as_str(), "root:a");
        let e = location_path(&spec(Some("Root::A"))).unwrap_err();
        assert_eq!(e.field, "spec.locationSelector.workspace");
    }
}
