//! Which kubeconfigs the manager accepts from tenant Secrets (push mode), and the client
//! configuration it builds from them.
//!
//! A kubeconfig is code as well as data: kube (like client-go) runs `exec` and `auth-provider`
//! commands, reads `tokenFile`, `certificate-authority`, `client-certificate` and `client-key`
//! from disk, and dials through `proxy-url`. The manager is shared by every tenant, so honouring
//! any of that would let a tenant run commands inside it or send its files (its own kcp
//! credential among them) to a server of the tenant's choosing — Flux's GHSA-vvmq-fwmg-2gjc.
//!
//! Two independent walls:
//! - [`inline_credentials`] checks the parsed kubeconfig against an allow-list, field by field,
//!   in *every* cluster and user entry, not only the current context's: what is refused does not
//!   depend on which context is current, and a kubeconfig that passes holds nothing executable
//!   or path-like anywhere. A refusal names the field and the entry, never a value.
//! - [`InlineCredentials::client_config`] builds the `kube::Config` by hand from the inline
//!   values alone (`Config::new`, never `Config::from_custom_kubeconfig`), so even a field a
//!   later kube version learns to honour cannot reach the client. On that path kube 5 reads no
//!   environment either: `Config::new` leaves `proxy_url`, `root_cert_file` and the
//!   impersonation headers empty (`HTTPS_PROXY` is only read by the kubeconfig loader, the
//!   `KUBE_RS_DEBUG_*` overrides only by `Config::infer`). Without `certificate-authority-data`
//!   the server is verified against the manager's own trust store (the OS roots, as client-go
//!   does): the operator's files, never ones a tenant names.
//!
//! Pull mode (`tmc syncer`) loads the cluster admin's own kubeconfig with kube's loader, files
//! and exec plugins included, and does not come here.

mod allow;
mod parse;
mod select;

use kube::config::AuthInfo;
use secrecy::{ExposeSecret, SecretString};

pub use allow::inline_credentials;
pub use parse::parse;

/// What the operator allows beyond inline credentials over verified TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `--allow-insecure-cluster-tls`: accept `insecure-skip-tls-verify: true` and `http://`
    /// servers (warned in the log and the SyncerReady message).
    pub allow_insecure_tls: bool,
}

/// Why a kubeconfig from a tenant Secret is not used. Messages name fields, entries and
/// positions, never values: tenants, operators and log readers see them, the Secret's readers
/// are fewer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KubeconfigError {
    /// A field outside the allow-list is set (condition reason `KubeconfigRefused`).
    #[error("{field} is not accepted in a kubeconfig from a tenant Secret: {instead}")]
    Refused { field: String, instead: &'static str },
    /// The kubeconfig cannot be read, or lacks what a client needs (reason `KubeconfigInvalid`).
    #[error("{0}")]
    Invalid(String),
}

impl KubeconfigError {
    /// The SyncerReady reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Refused { .. } => "KubeconfigRefused",
            Self::Invalid(_) => "KubeconfigInvalid",
        }
    }
}

/// The inline credentials of a kubeconfig's current context: all the manager takes from it.
#[derive(Clone)]
pub struct InlineCredentials {
    /// The server URL as written (validated: http(s), a host, no user info).
    pub server: String,
    uri: http::Uri,
    /// DER certificates from `certificate-authority-data`; `None`: the manager's own trust store.
    ca_certs: Option<Vec<Vec<u8>>>,
    tls_server_name: Option<String>,
    /// `insecure-skip-tls-verify: true` (only ever set when the policy allows it).
    skip_tls_verify: bool,
    token: Option<SecretString>,
    /// `client-certificate-data` and `client-key-data`, base64 as in the kubeconfig.
    identity: Option<(String, SecretString)>,
}

impl std::fmt::Debug for InlineCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineCredentials")
            .field("server", &self.server)
            .field("ca_certs", &self.ca_certs.as_ref().map(Vec::len))
            .field("tls_server_name", &self.tls_server_name)
            .field("skip_tls_verify", &self.skip_tls_verify)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl InlineCredentials {
    /// The client configuration: these values and kube's defaults, nothing else.
    pub fn client_config(&self) -> kube::Config {
        let mut config = kube::Config::new(self.uri.clone());
        config.root_cert = self.ca_certs.clone();
        config.tls_server_name = self.tls_server_name.clone();
        config.accept_invalid_certs = self.skip_tls_verify;
        config.auth_info = AuthInfo {
            token: self.token.clone(),
            client_certificate_data: self.identity.as_ref().map(|(cert, _)| cert.clone()),
            client_key_data: self.identity.as_ref().map(|(_, key)| key.clone()),
            ..Default::default()
        };
        config
    }

    /// A short hash of everything the client is built from: a changed kubeconfig that yields
    /// the same credentials does not restart the syncer.
    pub fn fingerprint(&self) -> String {
        let mut data = Vec::new();
        let mut field = |bytes: &[u8]| {
            data.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            data.extend_from_slice(bytes);
        };
        field(self.server.as_bytes());
        for cert in self.ca_certs.iter().flatten() {
            field(cert);
        }
        field(self.tls_server_name.as_deref().unwrap_or_default().as_bytes());
        field(&[u8::from(self.skip_tls_verify)]);
        field(self.token.as_ref().map(|t| t.expose_secret()).unwrap_or_default().as_bytes());
        if let Some((cert, key)) = &self.identity {
            field(cert.as_bytes());
            field(key.expose_secret().as_bytes());
        }
        crate::json::sha256_hex(&data, 8)
    }

    /// What the operator opted into that weakens this target's transport, for the log and the
    /// SyncerReady message.
    pub fn warning(&self) -> Option<String> {
        let what = if self.uri.scheme() == Some(&http::uri::Scheme::HTTP) {
            "the server is plain http://, so the credentials cross the network unencrypted"
        } else if self.skip_tls_verify {
            "insecure-skip-tls-verify is set, so the cluster's certificate is not verified and anyone on the network path can impersonate the cluster"
        } else {
            return None;
        };
        Some(format!("WARNING: {what} (allowed by --allow-insecure-cluster-tls)"))
    }
}

/// Parses and checks a kubeconfig from a tenant Secret.
pub fn load(text: &str, policy: Policy) -> Result<InlineCredentials, KubeconfigError> {
    inline_credentials(&parse(text)?, policy)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
