//! Checking the kubeconfig a push-mode SyncTarget points at. The kubeconfig itself is judged by
//! [`crate::syncer::credentials`]: inline data only, nothing executed or opened.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::status::Credentials;
use crate::apis::names::{is_dns_label, is_dns_subdomain};
use crate::apis::sync::v1alpha1::KubeconfigSecretRef;
use crate::syncer::credentials::{self, InlineCredentials, Policy};

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

/// Turns what was read into the credential state the conditions report and, when the
/// kubeconfig is accepted, the inline credentials a syncer's client is built from.
pub fn classify(
    secret_ref: &KubeconfigSecretRef,
    lookup: SecretLookup,
    policy: Policy,
) -> (Credentials, Option<InlineCredentials>) {
    let at = format!("secret {}/{}", secret_ref.namespace, secret_ref.name);
    let secret = match lookup {
        SecretLookup::Found(s) => s,
        SecretLookup::NotFound => {
            let message = format!("{at} referenced by spec.kubeconfigSecretRef does not exist in this workspace");
            return (Credentials::Problem { reason: "KubeconfigSecretNotFound", message }, None);
        }
        SecretLookup::Forbidden(detail) => {
            let message = format!(
                "{at} cannot be read: accept the secrets permission claim in this workspace's APIBinding ({detail})"
            );
            return (Credentials::Problem { reason: "KubeconfigSecretForbidden", message }, None);
        }
    };
    let data = secret.data.unwrap_or_default();
    let Some(bytes) = data.get(&secret_ref.key) else {
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        let message = format!("{at} has no key {:?} (it has: {})", secret_ref.key, keys.join(", "));
        return (Credentials::Problem { reason: "KubeconfigKeyMissing", message }, None);
    };
    let problem = |reason, why: String| Credentials::Problem {
        reason,
        message: format!("{at} key {:?} does not hold a usable kubeconfig: {why}", secret_ref.key),
    };
    let text = match std::str::from_utf8(&bytes.0) {
        Ok(text) => text,
        Err(e) => {
            let why = format!("not UTF-8 text (the first invalid byte is at offset {})", e.valid_up_to());
            return (problem("KubeconfigInvalid", why), None);
        }
    };
    match credentials::load(text, policy) {
        Ok(inline) => {
            let loaded = Credentials::Loaded { server: inline.server.clone(), warning: inline.warning() };
            (loaded, Some(inline))
        }
        Err(e) => (problem(e.reason(), e.to_string()), None),
    }
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
        let exec = GOOD.replace("{token: t}", "{exec: {command: /bin/sh, args: [-c, 'touch m']}}");
        let token_where_a_bool_goes = GOOD.replace("{server:", "{insecure-skip-tls-verify: t0ken-v4lue, server:");
        let cases: Vec<(SecretLookup, &str, &str)> = vec![
            (SecretLookup::NotFound, "KubeconfigSecretNotFound", "tmc/east"),
            (SecretLookup::Forbidden("nope".into()), "KubeconfigSecretForbidden", "permission claim"),
            (secret(&[("other", b"x")]), "KubeconfigKeyMissing", "other"),
            (secret(&[("kubeconfig", b"\xff\xfe")]), "KubeconfigInvalid", "UTF-8"),
            (secret(&[("kubeconfig", b"{{{ not yaml")]), "KubeconfigInvalid", "usable kubeconfig"),
            (secret(&[("kubeconfig", no_context.as_bytes())]), "KubeconfigInvalid", "current-context"),
            (secret(&[("kubeconfig", wrong_context.as_bytes())]), "KubeconfigInvalid", "\"x\""),
            (secret(&[("kubeconfig", no_server.as_bytes())]), "KubeconfigInvalid", "no server"),
            (
                secret(&[("kubeconfig", exec.as_bytes())]),
                "KubeconfigRefused",
                "users[name=u].user.exec is not accepted",
            ),
            (secret(&[("kubeconfig", token_where_a_bool_goes.as_bytes())]), "KubeconfigInvalid", "line 9"),
            (secret(&[("kubeconfig", GOOD.as_bytes())]), "Loaded", ""),
        ];
        for (lookup, want, fragment) in cases {
            let (got, inline) = classify(&secret_ref(), lookup, Policy::default());
            assert_eq!(reason(&got), want, "{got:?}");
            assert_eq!(inline.is_some(), want == "Loaded", "{got:?}");
            if let Credentials::Problem { message, .. } = &got {
                assert!(message.contains(fragment), "{message:?} should mention {fragment:?}");
                for value in ["t0ken-v4lue", "touch", "/bin/sh"] {
                    assert!(!message.contains(value), "{message:?} echoes {value:?}");
                }
            }
        }
        let (got, _) = classify(&secret_ref(), secret(&[("kubeconfig", GOOD.as_bytes())]), Policy::default());
        assert_eq!(got, Credentials::Loaded { server: "https://127.0.0.1:6443".into(), warning: None });
    }

    #[test]
    fn insecure_tls_is_refused_unless_the_operator_allows_it() {
        let insecure = GOOD.replace("{server:", "{insecure-skip-tls-verify: true, server:");
        let (refused, _) = classify(&secret_ref(), secret(&[("kubeconfig", insecure.as_bytes())]), Policy::default());
        assert_eq!(reason(&refused), "KubeconfigRefused");
        let allow = Policy { allow_insecure_tls: true };
        let (loaded, inline) = classify(&secret_ref(), secret(&[("kubeconfig", insecure.as_bytes())]), allow);
        let Credentials::Loaded { warning: Some(warning), .. } = loaded else { panic!("{loaded:?}") };
        assert!(warning.contains("--allow-insecure-cluster-tls"), "{warning}");
        assert!(inline.is_some());
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

    /// Debug output of a read kubeconfig Secret names it and its keys, never the data.
    #[test]
    fn debug_of_a_kubeconfig_secret_names_it_only() {
        let mut lookup = secret(&[("k0", b"token: kubeconfig-token-value")]);
        if let SecretLookup::Found(s) = &mut lookup {
            s.metadata.name = Some("s".into());
        }
        let shown = format!("{lookup:?}");
        assert!(shown.contains("\"s\"") && shown.contains("k0"), "{shown}");
        for leaked in ["kubeconfig-token-value", "a3ViZWNvbmZpZy10b2tlbi12YWx1ZQ", "107, 117"] {
            assert!(!shown.contains(leaked), "{shown} shows {leaked}");
        }
    }
}
