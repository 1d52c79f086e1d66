//! How push-mode syncers reach clusters a tenant names: which addresses they may dial
//! ([`address`], pure), the connector that enforces it at connect time ([`dial`]), and what is
//! kept of a cluster's answers ([`response`]). Below [`crate::kcp`] (whose error messages bound
//! these errors) and [`crate::syncer`].

pub mod address;
pub mod deadline;
pub mod dial;
pub mod response;

/// What kcp-tmc calls itself in the `User-Agent` of every request, so that an API server's audit
/// log and a proxy's access log can tell its requests from everyone else's (kube-rs sends none).
pub const USER_AGENT: &str = concat!("kcp-tmc/", env!("CARGO_PKG_VERSION"));

/// Adds kcp-tmc's [`USER_AGENT`] to the headers `config` sends, unless it names one already.
pub fn identify(config: &mut kube::Config) {
    let named = config.headers.iter().any(|(name, _)| name == http::header::USER_AGENT);
    if !named {
        config.headers.push((http::header::USER_AGENT, http::HeaderValue::from_static(USER_AGENT)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_adds_the_user_agent_once_and_keeps_a_chosen_one() {
        let mut config = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
        identify(&mut config);
        identify(&mut config);
        assert_eq!(config.headers, vec![(http::header::USER_AGENT, http::HeaderValue::from_static(USER_AGENT))]);
        assert!(USER_AGENT.starts_with("kcp-tmc/") && USER_AGENT.len() > "kcp-tmc/".len());

        let mut chosen = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
        chosen.headers.push((http::header::USER_AGENT, http::HeaderValue::from_static("mine/1")));
        identify(&mut chosen);
        assert_eq!(chosen.headers.len(), 1);
        assert_eq!(chosen.headers[0].1, "mine/1");
    }
}
