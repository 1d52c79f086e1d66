//! The allow-list: which fields a tenant's kubeconfig may set.

use kube::config::{AuthInfo, Cluster, Kubeconfig};
use secrecy::ExposeSecret;

use super::{InlineCredentials, KubeconfigError, Policy};

/// Checks every cluster and user entry against the allow-list, then takes the current context's
/// inline credentials. A field counts as set when it holds anything but its empty value
/// (`false`, `""`, `[]`, `{}`): an empty value carries nothing to run, open or dial.
pub fn inline_credentials(k: &Kubeconfig, policy: Policy) -> Result<InlineCredentials, KubeconfigError> {
    for (index, named) in k.clusters.iter().enumerate() {
        if let Some(cluster) = &named.cluster {
            check_cluster(&format!("clusters{}.cluster", entry(index, &named.name)), cluster, policy)?;
        }
    }
    for (index, named) in k.auth_infos.iter().enumerate() {
        if let Some(user) = &named.auth_info {
            check_user(&format!("users{}.user", entry(index, &named.name)), user)?;
        }
    }
    super::select::current(k)
}

const RUNS_NOTHING: &str = "the manager never runs commands named in a tenant's kubeconfig; put a token (e.g. a \
    ServiceAccount token) in `token`, or client-certificate-data and client-key-data";
const NOT_LISTED: &str = "only server, certificate-authority-data and tls-server-name are accepted in a cluster \
    entry, and only token, client-certificate-data and client-key-data in a user entry; remove it";

fn check_cluster(at: &str, c: &Cluster, policy: Policy) -> Result<(), KubeconfigError> {
    let plain_http = c.server.as_deref().and_then(|s| s.get(..7)).is_some_and(|p| p.eq_ignore_ascii_case("http://"));
    let refusals = [
        (
            set(&c.certificate_authority),
            "certificate-authority",
            "the manager never opens files named in a tenant's kubeconfig; put the CA certificates (PEM, base64) \
             in `certificate-authority-data`",
        ),
        (
            set(&c.proxy_url),
            "proxy-url",
            "the manager does not dial through a proxy a tenant names; give a server it can reach directly",
        ),
        (
            c.insecure_skip_tls_verify == Some(true) && !policy.allow_insecure_tls,
            "insecure-skip-tls-verify",
            "the cluster's certificate must be verified: put its CA certificates (PEM, base64) in \
             `certificate-authority-data` (an operator can allow this with --allow-insecure-cluster-tls)",
        ),
        (
            plain_http && !policy.allow_insecure_tls,
            "server",
            "plain http would send the credentials unencrypted: use an https:// server and \
             `certificate-authority-data` (an operator can allow this with --allow-insecure-cluster-tls)",
        ),
        (c.disable_compression == Some(true), "disable-compression", NOT_LISTED),
        (c.extensions.as_ref().is_some_and(|e| !e.is_empty()), "extensions", NOT_LISTED),
    ];
    first_refusal(at, &refusals, &c.other)
}

fn check_user(at: &str, u: &AuthInfo) -> Result<(), KubeconfigError> {
    let refusals = [
        (u.exec.is_some(), "exec", RUNS_NOTHING),
        (u.auth_provider.is_some(), "auth-provider", RUNS_NOTHING),
        (
            set(&u.token_file),
            "tokenFile",
            "the manager never opens files named in a tenant's kubeconfig; put the token itself in `token`",
        ),
        (
            set(&u.client_certificate),
            "client-certificate",
            "the manager never opens files named in a tenant's kubeconfig; put the certificate (PEM, base64) in \
             `client-certificate-data`",
        ),
        (
            set(&u.client_key),
            "client-key",
            "the manager never opens files named in a tenant's kubeconfig; put the key (PEM, base64) in \
             `client-key-data`",
        ),
        (
            set(&u.username),
            "username",
            "basic authentication is not accepted; use `token`, or client-certificate-data and client-key-data",
        ),
        (
            u.password.as_ref().is_some_and(|p| !p.expose_secret().is_empty()),
            "password",
            "basic authentication is not accepted; use `token`, or client-certificate-data and client-key-data",
        ),
        (set(&u.impersonate), "as", IMPERSONATION),
        (set(&u.impersonate_uid), "as-uid", IMPERSONATION),
        (u.impersonate_groups.as_ref().is_some_and(|g| !g.is_empty()), "as-groups", IMPERSONATION),
        (u.impersonate_user_extra.as_ref().is_some_and(|e| !e.is_empty()), "as-user-extra", IMPERSONATION),
        (u.extensions.as_ref().is_some_and(|e| !e.is_empty()), "extensions", NOT_LISTED),
    ];
    first_refusal(at, &refusals, &u.other)
}

const IMPERSONATION: &str =
    "impersonation is not accepted; give the credentials of the identity the syncer should act as";

/// The first set field of `refusals`, else the first set field kube does not model (`other`).
fn first_refusal(
    at: &str,
    refusals: &[(bool, &str, &'static str)],
    other: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Result<(), KubeconfigError> {
    let field = |name: &str, instead| KubeconfigError::Refused { field: format!("{at}.{name}"), instead };
    if let Some((_, name, instead)) = refusals.iter().find(|(is_set, _, _)| *is_set) {
        return Err(field(name, instead));
    }
    match other.iter().find(|(_, v)| !is_empty_value(v)) {
        Some((key, _)) => {
            let plain = (1..=63).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            Err(field(if plain { key } else { "<an unrecognised field>" }, NOT_LISTED))
        }
        None => Ok(()),
    }
}

pub(super) fn set(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

fn is_empty_value(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(true) | Value::Number(_) => false,
    }
}

/// `[name=east]`, or `[2]` when the name is not something a message should carry.
pub(super) fn entry(index: usize, name: &str) -> String {
    if is_plain_name(name) { format!("[name={name}]") } else { format!("[{index}]") }
}

fn is_plain_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b':' | b'/'))
}

/// A name for a message: quoted when plain, withheld otherwise.
pub(super) fn shown(name: &str) -> String {
    if is_plain_name(name) { format!("{name:?}") } else { "(a name not shown here)".into() }
}
