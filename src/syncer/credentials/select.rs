//! Taking the current context's inline credentials, checked for what a client needs.

use std::net::IpAddr;

use base64::Engine;
use kube::config::{AuthInfo, Kubeconfig};
use secrecy::{ExposeSecret, SecretString};

use super::allow::{entry, shown};
use super::{InlineCredentials, KubeconfigError};

/// The inline credentials of the current context, checked for what a client needs.
pub(super) fn current(k: &Kubeconfig) -> Result<InlineCredentials, KubeconfigError> {
    let invalid = KubeconfigError::Invalid;
    let context_name = k
        .current_context
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| invalid("no current-context is set".into()))?;
    let context = k
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| invalid(format!("current-context {} is not defined", shown(context_name))))?;
    let (index, cluster) = k
        .clusters
        .iter()
        .enumerate()
        .find_map(|(i, c)| (c.name == context.cluster).then_some((i, c.cluster.as_ref()?)))
        .ok_or_else(|| invalid(format!("cluster {} of the current context is not defined", shown(&context.cluster))))?;
    let at = format!("clusters{}.cluster", entry(index, &context.cluster));
    let server = cluster
        .server
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(format!("{at} of the current context has no server URL")))?;
    let uri = server_uri(&server)
        .ok_or_else(|| invalid(format!("{at}.server is not an http(s) URL with a host and without user info")))?;
    let ca_certs = match cluster.certificate_authority_data.as_deref().filter(|d| !d.is_empty()) {
        None => None,
        Some(data) => Some(
            pem_blocks(data, |tag| tag == "CERTIFICATE")
                .ok_or_else(|| invalid(format!("{at}.certificate-authority-data is not base64 of PEM certificates")))?,
        ),
    };
    let tls_server_name = cluster.tls_server_name.clone().filter(|n| !n.is_empty());
    if tls_server_name.as_deref().is_some_and(|n| !is_server_name(n)) {
        return Err(invalid(format!("{at}.tls-server-name is not a DNS name or IP address")));
    }
    let (token, identity) = match context.user.as_deref().filter(|u| !u.is_empty()) {
        // No user: anonymous, as client-go allows; the cluster will say what it thinks of that.
        None => (None, None),
        Some(user_name) => {
            let (index, user) =
                k.auth_infos.iter().enumerate().find(|(_, u)| u.name == user_name).ok_or_else(|| {
                    invalid(format!("user {} of the current context is not defined", shown(user_name)))
                })?;
            let at = format!("users{}.user", entry(index, user_name));
            user.auth_info.as_ref().map(|u| user_credentials(&at, u)).transpose()?.unwrap_or_default()
        }
    };
    Ok(InlineCredentials {
        server,
        uri,
        ca_certs,
        tls_server_name,
        skip_tls_verify: cluster.insecure_skip_tls_verify == Some(true),
        token,
        identity,
    })
}

type UserCredentials = (Option<SecretString>, Option<(String, SecretString)>);

fn user_credentials(at: &str, u: &AuthInfo) -> Result<UserCredentials, KubeconfigError> {
    let invalid = KubeconfigError::Invalid;
    let token = u.token.clone().filter(|t| !t.expose_secret().is_empty());
    // A token that is no valid header value would make kube's auth layer panic.
    if token.as_ref().is_some_and(|t| !t.expose_secret().bytes().all(|b| (0x21..=0x7e).contains(&b))) {
        return Err(invalid(format!(
            "{at}.token holds spaces, line breaks or non-ASCII characters, which a bearer token cannot"
        )));
    }
    let cert = u.client_certificate_data.clone().filter(|c| !c.is_empty());
    let key = u.client_key_data.clone().filter(|k| !k.expose_secret().is_empty());
    let identity = match (cert, key) {
        (None, None) => None,
        (Some(_), None) => return Err(invalid(format!("{at} has client-certificate-data but no client-key-data"))),
        (None, Some(_)) => return Err(invalid(format!("{at} has client-key-data but no client-certificate-data"))),
        (Some(cert), Some(key)) => {
            if pem_blocks(&cert, |tag| tag == "CERTIFICATE").is_none() {
                return Err(invalid(format!("{at}.client-certificate-data is not base64 of a PEM certificate")));
            }
            if pem_blocks(key.expose_secret(), |tag| tag.ends_with("PRIVATE KEY")).is_none() {
                return Err(invalid(format!("{at}.client-key-data is not base64 of a PEM private key")));
            }
            Some((cert, key))
        }
    };
    Ok((token, identity))
}

/// The DER contents of the PEM blocks tagged as `wanted` in base64 `data`; `None` when it is not
/// base64 of PEM or holds no such block.
fn pem_blocks(data: &str, wanted: impl Fn(&str) -> bool) -> Option<Vec<Vec<u8>>> {
    let pem = base64::engine::general_purpose::STANDARD.decode(data).ok()?;
    let blocks: Vec<Vec<u8>> =
        pem::parse_many(pem).ok()?.into_iter().filter(|p| wanted(p.tag())).map(pem::Pem::into_contents).collect();
    (!blocks.is_empty()).then_some(blocks)
}

/// The server URL, if it is http(s) with a host and carries no user info (which would be
/// credentials outside the allow-list, and would be echoed wherever the server is named).
fn server_uri(server: &str) -> Option<http::Uri> {
    let uri: http::Uri = server.parse().ok()?;
    let scheme_ok = uri.scheme() == Some(&http::uri::Scheme::HTTPS) || uri.scheme() == Some(&http::uri::Scheme::HTTP);
    let authority = uri.authority()?;
    (scheme_ok && !authority.host().is_empty() && !authority.as_str().contains('@')).then_some(uri)
}

fn is_server_name(name: &str) -> bool {
    name.parse::<IpAddr>().is_ok()
        || (name.len() <= 253
            && name.split('.').all(|label| {
                (1..=63).contains(&label.len()) && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
}
