use super::*;
use base64::Engine;
use kube::config::{Cluster, Kubeconfig};

use super::allow::set;
use super::parse::KUBECONFIG_KEYS;
use proptest::prelude::*;

/// A real (public) CA certificate, so that a client can be built from it: ISRG Root X2.
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIICGzCCAaGgAwIBAgIQQdKd0XLq7qeAwSxs6S+HUjAKBggqhkjOPQQDAzBPMQsw
CQYDVQQGEwJVUzEpMCcGA1UEChMgSW50ZXJuZXQgU2VjdXJpdHkgUmVzZWFyY2gg
R3JvdXAxFTATBgNVBAMTDElTUkcgUm9vdCBYMjAeFw0yMDA5MDQwMDAwMDBaFw00
MDA5MTcxNjAwMDBaME8xCzAJBgNVBAYTAlVTMSkwJwYDVQQKEyBJbnRlcm5ldCBT
ZWN1cml0eSBSZXNlYXJjaCBHcm91cDEVMBMGA1UEAxMMSVNSRyBSb290IFgyMHYw
EAYHKoZIzj0CAQYFK4EEACIDYgAEzZvVn4CDCuwJSvMWSj5cz3es3mcFDR0HttwW
+1qLFNvicWDEukWVEYmO6gbf9yoWHKS5xcUy4APgHoIYOIvXRdgKam7mAHf7AlF9
ItgKbppbd9/w+kHsOdx1ymgHDB/qo0IwQDAOBgNVHQ8BAf8EBAMCAQYwDwYDVR0T
AQH/BAUwAwEB/zAdBgNVHQ4EFgQUfEKWrt5LSDv6kviejM9ti6lyN5UwCgYIKoZI
zj0EAwMDaAAwZQIwe3lORlCEwkSHRhtFcP9Ymd70/aTSVaYgLXTWNLxBo1BfASdW
tL4ndQavEi51mI38AjEAi/V3bNTIZargCyzuFJ0nN6T5U6VR5CmD1/iQMVtCnwr1
/q4AaOeMSQ+2b1tbFfLn
-----END CERTIFICATE-----
";
const TOKEN: &str = "t0ken-value-that-must-not-leak";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A kubeconfig with inline credentials; `cluster_extra` and `user_extra` are lines added to the
/// current context's cluster and user, `entries_extra` further list entries after `users:`.
fn kubeconfig(cluster_extra: &[&str], user_extra: &[&str], entries_extra: &str) -> String {
    let indent = |lines: &[&str]| lines.iter().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {{cluster: k, user: u}}\n\
         clusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: {ca}\n{cx}\
         users:\n- name: u\n  user:\n    token: {TOKEN}\n{ux}{entries_extra}",
        ca = b64(CA_PEM),
        cx = indent(cluster_extra),
        ux = indent(user_extra),
    )
}

fn good() -> String {
    kubeconfig(&[], &[], "")
}

#[test]
fn refused_fields_name_the_field_and_the_entry() {
    let other_user = "- name: other\n  user:\n    exec: {command: /bin/sh}\n";
    let odd_name = "- name: 'not a plain name!'\n  user:\n    exec: {command: /bin/sh}\n";
    let cases: Vec<(String, &str, &str)> = vec![
        (
            kubeconfig(
                &[],
                &["exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: [-c, 'touch /tmp/m']}"],
                "",
            ),
            "users[name=u].user.exec",
            "token",
        ),
        (
            kubeconfig(&[], &["auth-provider: {name: gcp, config: {cmd-path: /bin/sh, cmd-args: '-c id'}}"], ""),
            "users[name=u].user.auth-provider",
            "client-certificate-data",
        ),
        (kubeconfig(&[], &["tokenFile: /etc/passwd"], ""), "users[name=u].user.tokenFile", "`token`"),
        (
            kubeconfig(&[], &["client-certificate: /etc/cert.pem"], ""),
            "users[name=u].user.client-certificate",
            "client-certificate-data",
        ),
        (kubeconfig(&[], &["client-key: /etc/key.pem"], ""), "users[name=u].user.client-key", "client-key-data"),
        (kubeconfig(&[], &["username: admin"], ""), "users[name=u].user.username", "basic authentication"),
        (kubeconfig(&[], &["password: hunter2"], ""), "users[name=u].user.password", "basic authentication"),
        (kubeconfig(&[], &["as: system:admin"], ""), "users[name=u].user.as", "impersonation"),
        (kubeconfig(&[], &["as-uid: '1'"], ""), "users[name=u].user.as-uid", "impersonation"),
        (kubeconfig(&[], &["as-groups: [system:masters]"], ""), "users[name=u].user.as-groups", "impersonation"),
        (kubeconfig(&[], &["as-user-extra: {a: [b]}"], ""), "users[name=u].user.as-user-extra", "impersonation"),
        (
            kubeconfig(&[], &["extensions: [{name: x, extension: {}}]"], ""),
            "users[name=u].user.extensions",
            "remove it",
        ),
        (kubeconfig(&[], &["made-up-field: 1"], ""), "users[name=u].user.made-up-field", "remove it"),
        (kubeconfig(&[], &["'weird key!': 1"], ""), "users[name=u].user.<an unrecognised field>", "remove it"),
        (
            kubeconfig(&["certificate-authority: /etc/ca.pem"], &[], ""),
            "clusters[name=k].cluster.certificate-authority",
            "certificate-authority-data",
        ),
        (kubeconfig(&["proxy-url: http://10.0.0.1:3128"], &[], ""), "clusters[name=k].cluster.proxy-url", "directly"),
        (
            kubeconfig(&["insecure-skip-tls-verify: true"], &[], ""),
            "clusters[name=k].cluster.insecure-skip-tls-verify",
            "--allow-insecure-cluster-tls",
        ),
        (
            kubeconfig(&["disable-compression: true"], &[], ""),
            "clusters[name=k].cluster.disable-compression",
            "remove it",
        ),
        (
            kubeconfig(&["extensions: [{name: x, extension: {}}]"], &[], ""),
            "clusters[name=k].cluster.extensions",
            "remove it",
        ),
        (kubeconfig(&["made-up: x"], &[], ""), "clusters[name=k].cluster.made-up", "remove it"),
        (
            good().replace("https://127.0.0.1:6443", "http://127.0.0.1:6443"),
            "clusters[name=k].cluster.server",
            "https://",
        ),
        // Every entry is checked, not only the current context's.
        (kubeconfig(&[], &[], other_user), "users[name=other].user.exec", "token"),
        // A name a message should not carry is replaced by the entry's index.
        (kubeconfig(&[], &[], odd_name), "users[1].user.exec", "token"),
    ];
    for (yaml, field, instead) in cases {
        let err = load(&yaml, Policy::default()).expect_err(field);
        assert_eq!(err.reason(), "KubeconfigRefused", "{err}");
        let message = err.to_string();
        assert!(message.starts_with(field), "{message:?} should name {field}");
        assert!(message.contains(instead), "{message:?} should say what to use instead ({instead})");
        for value in ["/bin/sh", "touch", "/etc/", "hunter2", "10.0.0.1", TOKEN, "system:"] {
            assert!(!message.contains(value), "{message:?} echoes {value:?}");
        }
    }
}

#[test]
fn empty_values_and_allowed_fields_load() {
    let cases = [
        kubeconfig(&["insecure-skip-tls-verify: false", "tls-server-name: kubernetes.default"], &[], ""),
        kubeconfig(&["proxy-url: ''", "disable-compression: false"], &["tokenFile: ''", "as-groups: []"], ""),
        kubeconfig(&[], &[], "- name: spare\n  user: {token: other}\n"),
        good().replace(&format!("    token: {TOKEN}\n"), ""),
    ];
    for yaml in cases {
        let creds = load(&yaml, Policy::default()).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(creds.server, "https://127.0.0.1:6443");
        assert_eq!(creds.warning(), None);
    }
}

#[test]
fn insecure_transport_loads_only_when_allowed_and_is_warned() {
    let allow = Policy { allow_insecure_tls: true };
    let skip = kubeconfig(&["insecure-skip-tls-verify: true"], &[], "");
    let creds = load(&skip, allow).unwrap();
    assert!(creds.client_config().accept_invalid_certs);
    assert!(creds.warning().unwrap().contains("insecure-skip-tls-verify"), "{:?}", creds.warning());
    let http = good().replace("https://", "http://");
    let creds = load(&http, allow).unwrap();
    assert!(creds.warning().unwrap().contains("http://"), "{:?}", creds.warning());
    // The operator's flag widens transport only: files and commands stay refused.
    let exec = kubeconfig(&[], &["exec: {command: /bin/sh}"], "");
    assert_eq!(load(&exec, allow).unwrap_err().reason(), "KubeconfigRefused");
}

#[test]
fn incomplete_or_malformed_inline_data_is_invalid() {
    let token_line = format!("    token: {TOKEN}\n");
    let cases: Vec<(String, &str)> = vec![
        (good().replace("current-context: c\n", ""), "no current-context"),
        (good().replace("current-context: c", "current-context: x"), "current-context \"x\" is not defined"),
        (good().replace("cluster: k, user: u", "cluster: nope, user: u"), "cluster \"nope\""),
        (good().replace("cluster: k, user: u", "cluster: k, user: nobody"), "user \"nobody\""),
        (good().replace("    server: https://127.0.0.1:6443\n", ""), "has no server URL"),
        (good().replace("https://127.0.0.1:6443", "https://me:pw@127.0.0.1:6443"), "without user info"),
        (good().replace("https://127.0.0.1:6443", "ftp://127.0.0.1"), "not an http(s) URL"),
        (good().replace(&b64(CA_PEM), "not*base64!"), "certificate-authority-data is not base64"),
        (good().replace(&b64(CA_PEM), &b64("just text")), "certificate-authority-data is not base64 of PEM"),
        (kubeconfig(&["tls-server-name: 'bad name'"], &[], ""), "tls-server-name is not a DNS name"),
        (good().replace(&token_line, &format!("    token: \"{TOKEN} x\"\n")), "users[name=u].user.token holds spaces"),
        (kubeconfig(&[], &[&format!("client-certificate-data: {}", b64(CA_PEM))], ""), "no client-key-data"),
        (kubeconfig(&[], &["client-key-data: a2V5"], ""), "no client-certificate-data"),
        (
            kubeconfig(&[], &[&format!("client-certificate-data: {}", b64(CA_PEM)), "client-key-data: a2V5"], ""),
            "client-key-data is not base64 of a PEM private key",
        ),
    ];
    for (yaml, fragment) in cases {
        let err = load(&yaml, Policy::default()).expect_err(fragment);
        assert_eq!(err.reason(), "KubeconfigInvalid", "{err}");
        assert!(err.to_string().contains(fragment), "{err} should mention {fragment:?}");
        assert!(!err.to_string().contains(TOKEN) && !err.to_string().contains("pw@"), "{err} echoes a value");
    }
}

#[test]
fn parse_errors_say_where_but_never_quote_values() {
    let secret = "s3cr3t-value-in-the-wrong-place";
    let cases = [
        // serde's type errors quote the value: "invalid type: string \"…\", expected a boolean".
        (kubeconfig(&[&format!("insecure-skip-tls-verify: {secret}")], &[], ""), "line 12", "insecure-skip-tls-verify"),
        // A syntax error: the parser's message carries a snippet of the source around it.
        (good().replace(&format!("token: {TOKEN}"), &format!("token: \"{secret}")), "line ", "the Secret's values"),
        (format!("clusters: [{{name: k, cluster: {secret}}}]\n"), "line 1", "the Secret's values"),
    ];
    for (yaml, place, fragment) in cases {
        let raw = Kubeconfig::from_yaml(&yaml).expect_err("the YAML is broken on purpose").to_string();
        // Proves the case can fail: kube's own message would leak the value.
        assert!(raw.contains(secret) || raw.contains("s3cr3t"), "kube's message no longer quotes values: {raw}");
        let message = parse(&yaml).expect_err("broken").to_string();
        assert!(!message.contains("s3cr3t") && !message.contains(TOKEN), "{message:?} quotes a value");
        assert!(
            message.contains(place) && message.contains(fragment),
            "{message:?} should say {place:?}, {fragment:?}"
        );
    }
}

#[test]
fn the_client_config_holds_the_inline_values_and_nothing_else() {
    let creds = load(&kubeconfig(&["tls-server-name: kubernetes.default"], &[], ""), Policy::default()).unwrap();
    let config = creds.client_config();
    assert_eq!(config.cluster_url, "https://127.0.0.1:6443");
    assert_eq!(config.root_cert.as_ref().map(Vec::len), Some(1));
    assert_eq!(config.tls_server_name.as_deref(), Some("kubernetes.default"));
    assert!(!config.accept_invalid_certs);
    assert!(config.proxy_url.is_none() && config.root_cert_file.is_none() && config.headers.is_empty());
    let auth = &config.auth_info;
    assert_eq!(auth.token.as_ref().map(|t| t.expose_secret().to_string()), Some(TOKEN.to_string()));
    assert!(auth.exec.is_none() && auth.auth_provider.is_none() && auth.token_file.is_none());
    assert!(auth.client_certificate.is_none() && auth.client_key.is_none() && auth.username.is_none());
    assert!(auth.impersonate.is_none() && auth.impersonate_groups.is_none());
    assert!(!format!("{creds:?}").contains(TOKEN), "Debug shows the token: {creds:?}");
}

#[tokio::test]
async fn a_client_builds_from_the_inline_credentials() {
    let creds = load(&good(), Policy::default()).unwrap();
    crate::syncer::client::cluster_client(creds.client_config(), 10).expect("client");
}

#[test]
fn the_fingerprint_follows_the_credentials_not_the_formatting() {
    let a = load(&good(), Policy::default()).unwrap();
    let reformatted =
        load(&format!("# a comment\n{}", good().replace("kind: Config\n", "")), Policy::default()).unwrap();
    let other_token = load(&good().replace(TOKEN, "another-token"), Policy::default()).unwrap();
    assert_eq!(a.fingerprint(), reformatted.fingerprint());
    assert_ne!(a.fingerprint(), other_token.fingerprint());
}

#[test]
fn a_refused_exec_plugin_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let yaml = kubeconfig(&[], &[&format!("exec: {{command: /bin/sh, args: [-c, 'touch {}']}}", marker.display())], "");
    assert_eq!(load(&yaml, Policy::default()).unwrap_err().reason(), "KubeconfigRefused");
    assert!(!marker.exists());
}

/// Kubeconfig-shaped YAML: lines of known keys at random depths with random values; the fields
/// that hold secrets sometimes hold a marker no message may contain.
fn yamlish() -> impl Strategy<Value = String> {
    let key = prop::sample::select(KUBECONFIG_KEYS.to_vec());
    let value = prop_oneof![
        Just(String::new()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("true".to_string()),
        Just("- name: x".to_string()),
        Just(b64(CA_PEM)),
        "[ -~]{0,24}",
    ];
    let line = (0usize..4, prop::bool::ANY, key, value, prop::bool::ANY);
    prop::collection::vec(line, 0..24).prop_map(|lines| {
        let secret_field = |k: &str| matches!(k, "token" | "password" | "client-key-data");
        lines
            .into_iter()
            .map(|(depth, item, key, value, mark)| {
                let value = if mark && secret_field(key) { "s3cr3t-marker".to_string() } else { value };
                format!("{}{}{key}: {value}\n", "  ".repeat(depth), if item { "- " } else { "" })
            })
            .collect()
    })
}

fn opt(s: impl Strategy<Value = String>) -> impl Strategy<Value = Option<String>> {
    prop::option::of(s)
}

fn cluster_strategy() -> impl Strategy<Value = kube::config::NamedCluster> {
    let server = prop_oneof![Just("https://127.0.0.1:6443".to_string()), Just("http://h".to_string()), "[ -~]{0,16}"];
    (
        "[a-z]{0,3}",
        opt(server),
        prop::option::of(prop::bool::ANY),
        opt("[ -~]{0,8}"),
        opt(prop_oneof![Just(b64(CA_PEM)), "[A-Za-z0-9+/=]{0,12}"]),
        opt("[ -~]{0,8}"),
        opt("[a-z.]{0,12}"),
    )
        .prop_map(|(name, server, insecure, ca_file, ca_data, proxy, tsn)| kube::config::NamedCluster {
            name,
            cluster: Some(Cluster {
                server,
                insecure_skip_tls_verify: insecure,
                certificate_authority: ca_file,
                certificate_authority_data: ca_data,
                proxy_url: proxy,
                tls_server_name: tsn,
                ..Default::default()
            }),
            ..Default::default()
        })
}

fn user_strategy() -> impl Strategy<Value = kube::config::NamedAuthInfo> {
    (
        "[a-z]{0,3}",
        opt("[ -~]{0,12}"),
        opt("[ -~]{0,8}"),
        opt(prop_oneof![Just(b64(CA_PEM)), "[A-Za-z0-9+/=]{0,12}"]),
        opt("[A-Za-z0-9+/=]{0,12}"),
        prop::bool::ANY,
        opt("[ -~]{0,8}"),
    )
        .prop_map(|(name, token, token_file, cert, key, exec, impersonate)| kube::config::NamedAuthInfo {
            name,
            auth_info: Some(AuthInfo {
                token: token.map(Into::into),
                token_file,
                client_certificate_data: cert,
                client_key_data: key.map(Into::into),
                exec: exec.then(|| kube::config::ExecConfig { command: Some("/bin/sh".into()), ..Default::default() }),
                impersonate,
                ..Default::default()
            }),
            ..Default::default()
        })
}

fn kubeconfig_strategy() -> impl Strategy<Value = Kubeconfig> {
    (
        prop::collection::vec(cluster_strategy(), 0..3),
        prop::collection::vec(user_strategy(), 0..3),
        prop::collection::vec(("[a-z]{0,3}", "[a-z]{0,3}", opt("[a-z]{0,3}")), 0..3),
        opt("[a-z]{0,3}"),
    )
        .prop_map(|(clusters, auth_infos, contexts, current_context)| Kubeconfig {
            clusters,
            auth_infos,
            contexts: contexts
                .into_iter()
                .map(|(name, cluster, user)| kube::config::NamedContext {
                    name,
                    context: Some(kube::config::Context { cluster, user, ..Default::default() }),
                    ..Default::default()
                })
                .collect(),
            current_context,
            ..Default::default()
        })
}

/// Whether any entry holds something that must never be used.
fn holds_forbidden(k: &Kubeconfig) -> bool {
    let cluster =
        |c: &Cluster| set(&c.certificate_authority) || set(&c.proxy_url) || c.insecure_skip_tls_verify == Some(true);
    let user = |u: &AuthInfo| u.exec.is_some() || set(&u.token_file) || set(&u.impersonate);
    k.clusters.iter().filter_map(|c| c.cluster.as_ref()).any(cluster)
        || k.auth_infos.iter().filter_map(|u| u.auth_info.as_ref()).any(user)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = load(&text, Policy::default());
    }

    #[test]
    fn kubeconfig_shaped_text_never_panics_nor_leaks_values(text in yamlish()) {
        if let Err(e) = load(&text, Policy::default()) {
            prop_assert!(!e.to_string().contains("s3cr3t"));
        }
    }

    #[test]
    fn arbitrary_kubeconfigs_never_panic_and_forbidden_fields_are_always_refused(k in kubeconfig_strategy()) {
        let result = inline_credentials(&k, Policy::default());
        if holds_forbidden(&k) {
            prop_assert_eq!(result.as_ref().map_err(KubeconfigError::reason).err(), Some("KubeconfigRefused"));
        }
        if let Ok(creds) = result {
            let config = creds.client_config();
            prop_assert!(config.auth_info.exec.is_none() && config.auth_info.token_file.is_none());
            prop_assert!(config.proxy_url.is_none() && !config.accept_invalid_certs);
        }
    }
}
