//! Checking the kubeconfig a push-mode SyncTarget points at.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::config::Kubeconfig;

use super::status::Credentials;
use crate::apis::sync::v1alpha1::KubeconfigSecretRef;

/// What reading the referenced Secret returned.
pub enum SecretLookup {
    Found(Box<Secret>),
    NotFound,
    Forbidden(String),
}

/// Names the Secret and its keys, never its data (a kubeconfig's token and client key).
impl std::fmt::Debug for SecretLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretLookup::Found(s) => {
                let keys: Vec<&String> = s.data.iter().flat_map(|d| d.keys()).collect();
                f.debug_struct("Found").field("name", &s.metadata.name).field("keys", &keys).finish_non_exhaustive()
            }
            SecretLookup::NotFound => f.write_str("NotFound"),
            SecretLookup::Forbidden(m) => f.debug_tuple("Forbidden").field(m).finish(),
        }
    }
}

/// Reads the Secret `secret_ref` names through `client` (scoped to the SyncTarget's logical
/// cluster). Not-found and forbidden are answers; other errors are returned for a retry.
pub async fn lookup(client: kube::Client, secret_ref: &KubeconfigSecretRef) -> Result<SecretLookup, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client, &secret_ref.namespace);
    match api.get_opt(&secret_ref.name).await {
        Ok(Some(s)) => Ok(SecretLookup::Found(Box::new(s))),
        Ok(None) => Ok(SecretLookup::NotFound),
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(SecretLookup::Forbidden(s.message.clone())),
        Err(e) => Err(e),
    }
}

/// Problems with the reference itself, found before any request.
pub fn validate_ref(secret_ref: &KubeconfigSecretRef) -> Option<Credentials> {
    let bad = |field: &str, value: &str, rule: &str| Credentials::Problem {
        reason: "InvalidSpec",
        message: format!("spec.kubeconfigSecretRef.{field} {value:?} is not a valid {rule}"),
    };
    if !is_dns_label(&secret_ref.namespace) {
        return Some(bad("namespace", &secret_ref.namespace, "namespace name (lower-case DNS label)"));
    }
    if !is_dns_subdomain(&secret_ref.name) {
        return Some(bad("name", &secret_ref.name, "Secret name (lower-case DNS subdomain)"));
    }
    if secret_ref.key.is_empty()
        || !secret_ref.key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Some(bad("key", &secret_ref.key, "Secret data key"));
    }
    None
}

/// The kubeconfig text in a found Secret, if the key holds UTF-8.
pub fn kubeconfig_text(secret_ref: &KubeconfigSecretRef, lookup: &SecretLookup) -> Option<String> {
    let SecretLookup::Found(secret) = lookup else { return None };
    let bytes = secret.data.as_ref()?.get(&secret_ref.key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// Turns what was read into the credential state the conditions report.
pub fn classify(secret_ref: &KubeconfigSecretRef, lookup: SecretLookup) -> Credentials {
    let at = format!("secret {}/{}", secret_ref.namespace, secret_ref.name);
    let secret = match lookup {
        SecretLookup::Found(s) => s,
        SecretLookup::NotFound => {
            return Credentials::Problem {
                reason: "KubeconfigSecretNotFound",
                message: format!("{at} referenced by spec.kubeconfigSecretRef does not exist in this workspace"),
            };
        }
        SecretLookup::Forbidden(detail) => {
            return Credentials::Problem {
                reason: "KubeconfigSecretForbidden",
                message: format!(
                    "{at} cannot be read: accept the secrets permission claim in this workspace's APIBinding ({detail})"
                ),
            };
        }
    };
    let data = secret.data.unwrap_or_default();
    let Some(bytes) = data.get(&secret_ref.key) else {
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        return Credentials::Problem {
            reason: "KubeconfigKeyMissing",
            message: format!("{at} has no key {:?} (it has: {})", secret_ref.key, keys.join(", ")),
        };
    };
    let invalid = |why: String| Credentials::Problem {
        reason: "KubeconfigInvalid",
        message: format!("{at} key {:?} does not hold a usable kubeconfig: {why}", secret_ref.key),
    };
    let text = match std::str::from_utf8(&bytes.0) {
        Ok(t) => t,
        Err(e) => return invalid(format!("not UTF-8 text ({e})")),
    };
    let kubeconfig = match Kubeconfig::from_yaml(text) {
        Ok(k) => k,
        Err(e) => return invalid(e.to_string()),
    };
    match server_of(&kubeconfig) {
        Ok(server) => Credentials::Loaded { server },
        Err(why) => invalid(why),
    }
}

/// The server URL of the kubeconfig's current context.
fn server_of(k: &Kubeconfig) -> Result<String, String> {
    let context_name = k.current_context.as_deref().ok_or("no current-context is set")?;
    let context = k
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| format!("current-context {context_name:?} is not defined"))?;
    let cluster = k
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| format!("cluster {:?} of the current context is not defined", context.cluster))?;
    let server = cluster.server.clone().filter(|s| !s.is_empty()).ok_or("the current cluster has no server URL")?;
    server.parse::<http::Uri>().map_err(|e| format!("server URL {server:?} is invalid: {e}"))?;
    Ok(server)
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    const GOOD: &str = "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\nclusters:\n- name: k\n  cluster: {server: 'https://127.0.0.1:6443'}\nusers:\n- name: u\n  user: {token: t}\n";

    fn secret_ref() -> KubeconfigSecretRef {
        KubeconfigSecretRef { namespace: "tmc".into(), name: "east".into(), key: "kubeconfig".into() }
    }

    fn secret(entries: &[(&str, &[u8])]) -> SecretLookup {
        let data: BTreeMap<String, ByteString> =
            entries.iter().map(|(k, v)| (k.to_string(), ByteString(v.to_vec()))).collect();
        SecretLookup::Found(Box::new(Secret { data: Some(data), ..Default::default() }))
    }

    fn reason(c: &Credentials) -> &str {
        match c {
            Credentials::Problem { reason, .. } => reason,
            Credentials::Loaded { .. } => "Loaded",
            Credentials::PullMode => "PullMode",
        }
    }

    #[test]
    fn classify_table() {
        let no_context = GOOD.replace("current-context: c\n", "");
        let wrong_context = GOOD.replace("current-context: c", "current-context: x");
        let no_server = GOOD.replace("{server: 'https://127.0.0.1:6443'}", "{}");
        let cases: Vec<(SecretLookup, &str, &str)> = vec![
            (SecretLookup::NotFound, "KubeconfigSecretNotFound", "tmc/east"),
            (SecretLookup::Forbidden("nope".into()), "KubeconfigSecretForbidden", "permission claim"),
            (secret(&[("other", b"x")]), "KubeconfigKeyMissing", "other"),
            (secret(&[("kubeconfig", b"\xff\xfe")]), "KubeconfigInvalid", "UTF-8"),
            (secret(&[("kubeconfig", b"{{{ not yaml")]), "KubeconfigInvalid", "usable kubeconfig"),
            (secret(&[("kubeconfig", no_context.as_bytes())]), "KubeconfigInvalid", "current-context"),
            (secret(&[("kubeconfig", wrong_context.as_bytes())]), "KubeconfigInvalid", "\"x\""),
            (secret(&[("kubeconfig", no_server.as_bytes())]), "KubeconfigInvalid", "no server"),
            (secret(&[("kubeconfig", GOOD.as_bytes())]), "Loaded", ""),
        ];
        for (lookup, want, fragment) in cases {
            let got = classify(&secret_ref(), lookup);
            assert_eq!(reason(&got), want, "{got:?}");
            if let Credentials::Problem { message, .. } = &got {
                assert!(message.contains(fragment), "{message:?} should mention {fragment:?}");
            }
        }
        assert_eq!(
            classify(&secret_ref(), secret(&[("kubeconfig", GOOD.as_bytes())])),
            Credentials::Loaded { server: "https://127.0.0.1:6443".into() }
        );
    }

    #[test]
    fn validate_ref_table() {
        let cases = [
            ("tmc", "east", "kubeconfig", true),
            ("Bad_NS", "east", "kubeconfig", false),
            ("tmc", "East", "kubeconfig", false),
            ("tmc", "a.b-c", "kube.config_1", true),
            ("tmc", "east", "a/b", false),
            ("-x", "east", "k", false),
        ];
        for (ns, name, key, ok) in cases {
            let r = KubeconfigSecretRef { namespace: ns.into(), name: name.into(), key: key.into() };
            assert_eq!(validate_ref(&r).is_none(), ok, "{ns} {name} {key}");
        }
    }
}
