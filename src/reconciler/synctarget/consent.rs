//! Consent keeps the last known good answer: a SyncTarget's `allowedWorkspaces` resolve to the
//! logical clusters its syncer may run cross-workspace workloads from. A path kcp could not
//! resolve just now (unreachable, failing, workspace not ready) keeps the cluster it last
//! resolved to, so a kcp hiccup never reads as withdrawn consent and never tears workloads
//! down; only a path removed from the spec, or one kcp says names no workspace, withdraws it.

use std::collections::{BTreeMap, BTreeSet};

use crate::kcp::paths::Resolution;
use crate::kcp::{ClusterKey, LogicalClusterName};

/// The consent of one target as last decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Each allowed path and the logical cluster it (last) resolved to.
    pub clusters: BTreeMap<String, LogicalClusterName>,
    /// Paths kcp could not resolve at the last look, with why: kept at their previous answer
    /// when there is one, else not (yet) granted.
    pub unresolved: BTreeMap<String, String>,
}

impl Resolved {
    /// The logical clusters the syncer may serve.
    pub fn allowed(&self) -> BTreeSet<LogicalClusterName> {
        self.clusters.values().cloned().collect()
    }
}

/// Combines this look's `outcomes` (one per path in the spec, in order) with the `previous`
/// decision.
pub fn decide(previous: Option<&Resolved>, outcomes: Vec<(String, Resolution)>) -> Resolved {
    let mut next = Resolved::default();
    for (path, outcome) in outcomes {
        match outcome {
            Resolution::Resolved(cluster) => {
                next.clusters.insert(path, cluster);
            }
            Resolution::Gone(_) => {}
            Resolution::Unknown(why) => {
                if let Some(cluster) = previous.and_then(|p| p.clusters.get(&path)) {
                    next.clusters.insert(path.clone(), cluster.clone());
                }
                next.unresolved.insert(path, why);
            }
        }
    }
    next
}

impl super::Controller {
    /// The logical clusters of the target's allowed workspaces, keeping the last answer for a
    /// path kcp cannot resolve just now (see the module docs). A Warning Event
    /// `AllowedWorkspaceUnresolved` on the SyncTarget names such paths when they first fail.
    pub(super) async fn allowed_clusters(&self, key: &ClusterKey, paths: &[String]) -> BTreeSet<LogicalClusterName> {
        let outcomes = self.paths.resolve_each(paths).await;
        let (next, newly) = {
            let mut all = self.consent.lock().expect("consent poisoned");
            let previous = all.get(key);
            let next = decide(previous, outcomes);
            let newly: Vec<String> = next
                .unresolved
                .iter()
                .filter(|(p, _)| previous.is_none_or(|prev| !prev.unresolved.contains_key(*p)))
                .map(|(p, why)| {
                    let kept = next.clusters.get(p).map_or("not granted yet".to_string(), |c| format!("kept as {c}"));
                    format!("{p} ({kept}): {why}")
                })
                .collect();
            all.insert(key.clone(), next.clone());
            (next, newly)
        };
        if !newly.is_empty()
            && let Some(raw) = self.cache.get(key)
        {
            let note = format!("allowed workspaces not resolved, last answer kept: {}", newly.join("; "));
            tracing::warn!(target = %key, %note, "allowed workspace unresolved");
            let kind = (kube::runtime::events::EventType::Warning, "Reconcile");
            self.events.publish(&key.cluster, &super::resource(), &raw, kind, "AllowedWorkspaceUnresolved", note).await;
        }
        next.allowed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lc(s: &str) -> LogicalClusterName {
        LogicalClusterName::new(s).unwrap()
    }

    fn resolved(pairs: &[(&str, &str)]) -> Resolved {
        Resolved { clusters: pairs.iter().map(|(p, c)| (p.to_string(), lc(c))).collect(), ..Default::default() }
    }

    #[test]
    fn decisions() {
        let ok = |c: &str| Resolution::Resolved(lc(c));
        let gone = || Resolution::Gone("no such workspace".into());
        let unknown = || Resolution::Unknown("kcp unreachable".into());
        type Row =
            (&'static str, Option<Resolved>, Vec<(&'static str, Resolution)>, Vec<&'static str>, Vec<&'static str>);
        let rows: Vec<Row> = vec![
            ("first resolution", None, vec![("root:a", ok("c1"))], vec!["c1"], vec![]),
            (
                "transient keeps the last answer",
                Some(resolved(&[("root:a", "c1")])),
                vec![("root:a", unknown())],
                vec!["c1"],
                vec!["root:a"],
            ),
            (
                "transient without a previous answer grants nothing",
                None,
                vec![("root:a", unknown())],
                vec![],
                vec!["root:a"],
            ),
            (
                "authoritatively gone withdraws",
                Some(resolved(&[("root:a", "c1")])),
                vec![("root:a", gone())],
                vec![],
                vec![],
            ),
            (
                "path removed from the spec withdraws",
                Some(resolved(&[("root:a", "c1"), ("root:b", "c2")])),
                vec![("root:b", unknown())],
                vec!["c2"],
                vec!["root:b"],
            ),
            (
                "a moved path follows the new answer",
                Some(resolved(&[("root:a", "c1")])),
                vec![("root:a", ok("c9"))],
                vec!["c9"],
                vec![],
            ),
            (
                "mixed",
                Some(resolved(&[("root:a", "c1"), ("root:b", "c2")])),
                vec![("root:a", unknown()), ("root:b", gone()), ("root:c", ok("c3"))],
                vec!["c1", "c3"],
                vec!["root:a"],
            ),
        ];
        for (name, previous, outcomes, allowed, unresolved) in rows {
            let outcomes = outcomes.into_iter().map(|(p, o)| (p.to_string(), o)).collect();
            let got = decide(previous.as_ref(), outcomes);
            assert_eq!(got.allowed(), allowed.iter().map(|c| lc(c)).collect(), "{name}");
            assert_eq!(got.unresolved.keys().map(String::as_str).collect::<Vec<_>>(), unresolved, "{name}");
        }
    }
}
