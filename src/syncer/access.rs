//! The syncer's rights inside the downstream namespaces it creates (least privilege, issue 9).
//!
//! Cluster-wide, a syncer may create namespaces and read what has no namespaced alternative or
//! is not confidential (see [`crate::cli::manifest`]); everything it writes, and every Secret it
//! reads, it may touch only in namespaces it created itself. It gets those rights by binding
//! itself, in each namespace it creates, to one fixed ClusterRole ([`namespace_role`]), which
//! the cluster admin lets it `bind` by name. A ValidatingAdmissionPolicy shipped beside that
//! role confines such bindings to namespaces annotated with the syncer's own identity
//! ([`IDENTITY_ANNOTATION`]); the syncer can set that annotation only on namespaces it creates
//! (it may not update namespaces), so a stolen syncer token cannot bind itself in `kube-system`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, PostParams};
use kube::core::ApiResource;
use serde_json::{Value, json};

/// Annotation on a downstream namespace: the user name of the syncer that created it.
pub const IDENTITY_ANNOTATION: &str = "tmc.kcp.io/syncer-identity";
/// Name of the RoleBinding the syncer creates in each of its namespaces.
pub const ROLE_BINDING: &str = "kcp-tmc-syncer";

/// The ClusterRole a syncer binds itself to in each namespace it creates. SyncTarget names
/// cannot hold `:`, so this never equals the cluster-wide role of another target.
pub fn namespace_role(sync_target_name: &str) -> String {
    format!("kcp-tmc-syncer-{sync_target_name}:namespace")
}

/// Whether the syncer watches `api` namespace by namespace rather than cluster-wide: Secrets,
/// because reading them cluster-wide would let the syncer read every credential in the cluster.
/// Other kinds are watched once cluster-wide (one watch instead of one per namespace); their
/// cluster-wide read is granted, their writes are not.
pub fn watched_per_namespace(api: &ApiResource) -> bool {
    api.group.is_empty() && api.plural == "secrets"
}

/// The RBAC subject for the authenticated user `username`: a ServiceAccount for
/// `system:serviceaccount:<namespace>:<name>`, a User otherwise.
pub fn subject(username: &str) -> Value {
    let service_account = username.strip_prefix("system:serviceaccount:").and_then(|rest| rest.split_once(':'));
    match service_account {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains(':') => {
            json!({ "kind": "ServiceAccount", "namespace": namespace, "name": name })
        }
        _ => json!({ "kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": username }),
    }
}

/// Binds the syncer to [`namespace_role`] in the namespaces it creates. Cheap to clone.
#[derive(Clone)]
pub struct Access {
    client: kube::Client,
    role: String,
    /// Who the cluster says the syncer is (`None`: the cluster cannot say; nothing is bound).
    identity: Arc<tokio::sync::OnceCell<Option<String>>>,
    /// Namespaces whose binding this process has ensured.
    bound: Arc<Mutex<HashSet<String>>>,
}

impl Access {
    pub fn new(client: kube::Client, role: String) -> Self {
        Self { client, role, identity: Default::default(), bound: Default::default() }
    }

    /// The syncer's user name, asked once with a SelfSubjectReview (every authenticated user
    /// may). A cluster without that API (before Kubernetes 1.28) gives `None`; other errors
    /// are returned, so a namespace is never created without the annotation by accident.
    pub async fn identity(&self) -> Result<Option<&str>, kube::Error> {
        let found = self
            .identity
            .get_or_try_init(|| async {
                let api: Api<SelfSubjectReview> = Api::all(self.client.clone());
                match api.create(&PostParams::default(), &SelfSubjectReview::default()).await {
                    Ok(review) => Ok(review.status.and_then(|s| s.user_info).and_then(|u| u.username)),
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        tracing::warn!(
                            "the cluster serves no SelfSubjectReview; the syncer cannot bind itself in its namespaces and needs its rights there from elsewhere"
                        );
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            })
            .await?;
        Ok(found.as_deref())
    }

    /// Ensures the RoleBinding of the syncer to its namespace role in `namespace` (once per
    /// process and namespace). An identity that may not bind (one with broader rights of its
    /// own, in push mode) is left to those rights: its writes will say whether they suffice.
    pub async fn ensure(&self, namespace: &str) -> Result<(), kube::Error> {
        if self.bound.lock().expect("bound poisoned").contains(namespace) {
            return Ok(());
        }
        let Some(identity) = self.identity().await? else {
            self.bound.lock().expect("bound poisoned").insert(namespace.to_string());
            return Ok(());
        };
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": { "name": ROLE_BINDING, "namespace": namespace },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": self.role },
            "subjects": [subject(identity)],
        }))
        .expect("a static RoleBinding");
        let api: Api<RoleBinding> = Api::namespaced(self.client.clone(), namespace);
        // Read first: after a restart every binding exists already, and a create answered 409
        // is still a write request for the cluster (one per namespace per restart). A binding
        // that cannot be read is left to the create to judge, as before.
        match api.get_opt(ROLE_BINDING).await {
            Ok(Some(_)) => {
                self.bound.lock().expect("bound poisoned").insert(namespace.to_string());
                return Ok(());
            }
            Ok(None) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e),
        }
        match api.create(&PostParams::default(), &binding).await {
            Ok(_) => {
                tracing::info!(namespace, role = %self.role, "bound the syncer to its namespace role");
                self.wait_effective(namespace).await;
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(kube::Error::Api(s)) if s.code == 403 => {
                tracing::info!(namespace, reason = %s.message, "may not bind the namespace role; using the identity's own rights")
            }
            Err(e) => return Err(e),
        }
        self.bound.lock().expect("bound poisoned").insert(namespace.to_string());
        Ok(())
    }

    /// Waits (up to 5 s) until the new binding is in force: the cluster's RBAC authorizer
    /// learns of it from a watch, so the first write could otherwise be refused.
    async fn wait_effective(&self, namespace: &str) {
        let api: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.to_string()),
                    verb: Some("delete".into()),
                    resource: Some("namespaces".into()),
                    name: Some(namespace.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        for _ in 0..50 {
            let allowed = api.create(&PostParams::default(), &review).await.ok().and_then(|r| r.status);
            if allowed.is_some_and(|s| s.allowed) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!(namespace, "the namespace role's binding is not in force after 5s");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syncer::resources::default_resources;

    #[test]
    fn subjects_of_user_names() {
        let cases = [
            (
                "system:serviceaccount:kcp-tmc-syncer:syncer-east",
                json!({ "kind": "ServiceAccount", "namespace": "kcp-tmc-syncer", "name": "syncer-east" }),
            ),
            ("admin", json!({ "kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "admin" })),
            // Not a ServiceAccount's name, whatever it starts with.
            (
                "system:serviceaccount:ns",
                json!({ "kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "system:serviceaccount:ns" }),
            ),
            (
                "system:serviceaccount::x",
                json!({ "kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "system:serviceaccount::x" }),
            ),
            (
                "system:serviceaccount:a:b:c",
                json!({ "kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "system:serviceaccount:a:b:c" }),
            ),
        ];
        for (username, want) in cases {
            assert_eq!(subject(username), want, "{username}");
        }
    }

    #[test]
    fn only_secrets_are_watched_per_namespace() {
        let per_namespace: Vec<String> = default_resources()
            .iter()
            .filter(|r| watched_per_namespace(&r.api))
            .map(|r| r.api.plural.clone())
            .collect();
        assert_eq!(per_namespace, ["secrets"]);
        let widget = ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("example.dev", "v1", "Secret"),
            "secrets",
        );
        assert!(!watched_per_namespace(&widget), "only the core group's Secrets");
    }

    #[test]
    fn namespace_roles_never_collide_with_cluster_roles() {
        // The cluster-wide role of target `t` is `kcp-tmc-syncer-<t>`; no DNS name holds `:`.
        assert_eq!(namespace_role("east"), "kcp-tmc-syncer-east:namespace");
    }
}
