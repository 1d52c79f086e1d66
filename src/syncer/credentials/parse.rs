//! Reading kubeconfig YAML without repeating what it says.

use kube::config::Kubeconfig;

use super::KubeconfigError;

/// Parses kubeconfig YAML. The error says where (line, column and, when recognisable, the field)
/// but not the parser's own words, which can quote the value they choked on.
pub fn parse(text: &str) -> Result<Kubeconfig, KubeconfigError> {
    Kubeconfig::from_yaml(text).map_err(|e| {
        let at = match &e {
            kube::config::KubeconfigError::Parse(inner) => inner.location().map(|l| (l.line(), l.column())),
            _ => None,
        };
        KubeconfigError::Invalid(parse_error_message(text, at))
    })
}

fn parse_error_message(text: &str, at: Option<(u64, u64)>) -> String {
    let withheld = "the parser's own message is not shown, as it can quote the Secret's values";
    let Some((line, column)) = at.filter(|(line, _)| *line > 0) else {
        return format!("the kubeconfig is not a valid kubeconfig document ({withheld})");
    };
    let field = usize::try_from(line - 1)
        .ok()
        .and_then(|index| text.lines().nth(index))
        .and_then(known_key_of_line)
        .map(|key| format!(", field {key:?}"))
        .unwrap_or_default();
    format!("the kubeconfig is not a valid kubeconfig at line {line}, column {column}{field} ({withheld})")
}

/// Every field name of the kubeconfig format: a key from this list names a place, never a value.
#[rustfmt::skip]
pub(super) const KUBECONFIG_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "preferences",
    "colors",
    "clusters",
    "cluster",
    "users",
    "user",
    "contexts",
    "context",
    "current-context",
    "extensions",
    "extension",
    "name",
    "namespace",
    "server",
    "certificate-authority",
    "certificate-authority-data",
    "insecure-skip-tls-verify",
    "tls-server-name",
    "proxy-url",
    "disable-compression",
    "token",
    "tokenFile",
    "client-certificate",
    "client-certificate-data",
    "client-key",
    "client-key-data",
    "username",
    "password",
    "as",
    "as-uid",
    "as-groups",
    "as-user-extra",
    "auth-provider",
    "config",
    "exec",
    "command",
    "args",
    "env",
    "installHint",
    "interactiveMode",
    "provideClusterInfo",
];

/// The key a YAML line sets (`  - token: …` → `token`), if it is a kubeconfig field name.
fn known_key_of_line(line: &str) -> Option<&'static str> {
    let line = line.trim_start().trim_start_matches("- ").trim_start();
    let key = line.split_once(':')?.0.trim().trim_matches(|c| c == '"' || c == '\'');
    KUBECONFIG_KEYS.iter().copied().find(|k| *k == key)
}
