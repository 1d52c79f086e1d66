//! Names of logical clusters and workspaces, and the cluster-aware object key.
//!
//! A workspace has a human path (`root:org:team`) that can change when a workspace is moved,
//! and an opaque logical cluster name (`2abc9x...`) that never changes. Keys, caches and
//! downstream names use the logical cluster name; paths are for people and for flags.

use std::fmt;
use std::str::FromStr;

use kube::ResourceExt;

/// The annotation kcp puts on every object to say which logical cluster it lives in.
pub const CLUSTER_ANNOTATION: &str = "kcp.io/cluster";

/// Why a logical cluster name or workspace path was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("empty {0}")]
    Empty(&'static str),
    #[error(
        "{what} {value:?} is not valid: use lower-case letters, digits and '-', starting and ending with a letter or digit{hint}"
    )]
    InvalidSegment { what: &'static str, value: String, hint: &'static str },
}

fn valid_segment(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// The opaque, immutable name of a logical cluster, e.g. `root` or `2abc9xq7tz4wd5ph`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogicalClusterName(String);

impl LogicalClusterName {
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        if name.is_empty() {
            return Err(NameError::Empty("logical cluster name"));
        }
        if !valid_segment(&name) {
            return Err(NameError::InvalidSegment { what: "logical cluster name", value: name, hint: "" });
        }
        Ok(Self(name))
    }

    /// The logical cluster an object lives in, from its `kcp.io/cluster` annotation.
    pub fn of<K: ResourceExt>(obj: &K) -> Option<Self> {
        obj.annotations().get(CLUSTER_ANNOTATION).and_then(|c| Self::new(c.as_str()).ok())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LogicalClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A workspace path such as `root:org:team`: the segments from the root workspace down.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkspacePath(String);

impl WorkspacePath {
    pub fn root() -> Self {
        Self("root".to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split(':')
    }

    /// The parent workspace and this workspace's name in it; `None` for a single-segment path.
    pub fn parent_and_name(&self) -> Option<(WorkspacePath, &str)> {
        let (parent, name) = self.0.rsplit_once(':')?;
        Some((WorkspacePath(parent.to_string()), name))
    }

    /// The path of the child workspace `name` of this one.
    pub fn join(&self, name: &str) -> Result<Self, NameError> {
        format!("{}:{name}", self.0).parse()
    }
}

impl FromStr for WorkspacePath {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NameError::Empty("workspace path"));
        }
        if let Some(bad) = s.split(':').find(|seg| !valid_segment(seg)) {
            return Err(NameError::InvalidSegment {
                what: "workspace path segment",
                value: bad.to_string(),
                hint: "; separate segments with ':', e.g. root:org:team",
            });
        }
        Ok(Self(s.to_string()))
    }
}

impl fmt::Display for WorkspacePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key of an object across all workspaces: (logical cluster, namespace, name). Every cache
/// and work queue in kcp-tmc is keyed by this, never by name alone, so that two objects with
/// the same name in two workspaces never collide. Displayed like kcp's Go keys:
/// `cluster|namespace/name`, or `cluster|name` for cluster-scoped objects.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterKey {
    pub cluster: LogicalClusterName,
    pub namespace: Option<String>,
    pub name: String,
}

impl ClusterKey {
    pub fn new(cluster: LogicalClusterName, namespace: Option<String>, name: impl Into<String>) -> Self {
        Self { cluster, namespace, name: name.into() }
    }

    /// The key of an object read from a wildcard or virtual-workspace request. `None` when the
    /// object lacks the `kcp.io/cluster` annotation (it did not come from kcp).
    pub fn of<K: ResourceExt>(obj: &K) -> Option<Self> {
        Some(Self { cluster: LogicalClusterName::of(obj)?, namespace: obj.namespace(), name: obj.name_any() })
    }
}

impl fmt::Display for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}|{}/{}", self.cluster, ns, self.name),
            None => write!(f, "{}|{}", self.cluster, self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    #[test]
    fn workspace_paths() {
        let cases: &[(&str, bool)] = &[
            ("root", true),
            ("root:org:team-1", true),
            ("", false),
            ("root:", false),
            (":root", false),
            ("root::x", false),
            ("Root", false),
            ("root:-x", false),
            ("root:x-", false),
            ("root/x", false),
        ];
        for (input, ok) in cases {
            assert_eq!(input.parse::<WorkspacePath>().is_ok(), *ok, "{input:?}");
        }
    }

    #[test]
    fn path_parent_and_join() {
        let p: WorkspacePath = "root:org:team".parse().unwrap();
        let (parent, name) = p.parent_and_name().unwrap();
        assert_eq!((parent.as_str(), name), ("root:org", "team"));
        assert_eq!(WorkspacePath::root().parent_and_name(), None);
        assert_eq!(WorkspacePath::root().join("a").unwrap().as_str(), "root:a");
        assert!(WorkspacePath::root().join("A").is_err());
        assert_eq!(p.segments().collect::<Vec<_>>(), ["root", "org", "team"]);
    }

    #[test]
    fn logical_cluster_names() {
        let cases: &[(&str, bool)] =
            &[("root", true), ("2abc9xq7tz4wd5ph", true), ("", false), ("a:b", false), ("A", false)];
        for (input, ok) in cases {
            assert_eq!(LogicalClusterName::new(*input).is_ok(), *ok, "{input:?}");
        }
    }

    fn cm(cluster: Option<&str>, ns: Option<&str>, name: &str) -> ConfigMap {
        let mut annotations = std::collections::BTreeMap::new();
        if let Some(c) = cluster {
            annotations.insert(CLUSTER_ANNOTATION.to_string(), c.to_string());
        }
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: ns.map(Into::into),
                annotations: Some(annotations),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn keys_from_objects() {
        let cases: &[(Option<&str>, Option<&str>, &str, Option<&str>)] = &[
            (Some("abc"), Some("ns"), "x", Some("abc|ns/x")),
            (Some("abc"), None, "x", Some("abc|x")),
            (None, Some("ns"), "x", None),
            (Some("Not Valid"), None, "x", None),
        ];
        for (cluster, ns, name, want) in cases {
            let got = ClusterKey::of(&cm(*cluster, *ns, name)).map(|k| k.to_string());
            assert_eq!(got.as_deref(), *want);
        }
    }

    #[test]
    fn same_name_in_two_workspaces_are_different_keys() {
        let a = ClusterKey::of(&cm(Some("aaa"), None, "east")).unwrap();
        let b = ClusterKey::of(&cm(Some("bbb"), None, "east")).unwrap();
        assert_ne!(a, b);
        let set: std::collections::HashSet<_> = [a, b].into_iter().collect();
        assert_eq!(set.len(), 2);
    }
}
