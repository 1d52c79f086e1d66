//! Which addresses push-mode syncers may dial (pure; the dialer in [`super::dial`] applies it).
//!
//! A push-mode SyncTarget names its cluster's server in a tenant-written kubeconfig, and the
//! manager dials it from inside its own network. Left open, that makes the manager a proxy into
//! that network: its own loopback (sidecars, the metrics port), the cloud metadata service on
//! 169.254.169.254, kcp itself. So by default the refused addresses are loopback, link-local,
//! unspecified ("this network"), multicast and broadcast — also when written as IPv4-mapped,
//! IPv4-compatible or NAT64 IPv6 — and always kcp's own endpoints. Operators add ranges with
//! `--cluster-address-deny` (e.g. the pod and node networks) and opt ranges back in with
//! `--cluster-address-allow` (e.g. 127.0.0.1/32 for local tests).
//!
//! Precedence, simplest first so it can be stated in one line: kcp's endpoints are always
//! refused; an operator deny beats an operator allow; an operator allow beats the defaults.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An IP range in CIDR notation, e.g. `10.0.0.0/8` or `fd00::/8`; a bare address is a /32 or /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a string is not a CIDR range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("{0:?} is not an IP address")]
    Address(String),
    #[error("{0:?} is not a prefix length (0-32 for IPv4, 0-128 for IPv6)")]
    Prefix(String),
    #[error("{0:?} has host bits set; did you mean {1}?")]
    HostBits(String, Cidr),
}

impl Cidr {
    pub const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Self {
        Cidr { network: IpAddr::V4(Ipv4Addr::new(a, b, c, d)), prefix }
    }

    const fn v6(network: Ipv6Addr, prefix: u8) -> Self {
        Cidr { network: IpAddr::V6(network), prefix }
    }

    /// Whether `ip` lies in the range. IPv4 ranges never contain IPv6 addresses and the other
    /// way round; callers canonicalise first (see [`canonical`]).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                mask_eq(u128::from(n.to_bits()), u128::from(a.to_bits()), 32, self.prefix)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => mask_eq(n.to_bits(), a.to_bits(), 128, self.prefix),
            _ => false,
        }
    }
}

fn mask_eq(network: u128, addr: u128, width: u8, prefix: u8) -> bool {
    let host_bits = u32::from(width - prefix);
    host_bits >= u32::from(width) || (network >> host_bits) == (addr >> host_bits)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses `a.b.c.d/n`, `x::y/n` or a bare address. Host bits must be zero, so that a typo
    /// such as `10.1.2.3/8` is caught instead of silently meaning `10.0.0.0/8`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| CidrError::Address(addr.to_string()))?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 3 => {
                p.parse::<u8>().ok().filter(|n| *n <= width).ok_or_else(|| CidrError::Prefix(p.to_string()))?
            }
            Some(p) => return Err(CidrError::Prefix(p.to_string())),
        };
        let masked = Cidr { network: mask(network, prefix), prefix };
        if masked.network != network {
            return Err(CidrError::HostBits(s.to_string(), masked));
        }
        Ok(masked)
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let keep = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
            IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() & keep))
        }
        IpAddr::V6(a) => {
            let keep = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
            IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() & keep))
        }
    }
}

/// The address a connection to `ip` really reaches: IPv6 forms that embed an IPv4 address
/// (`::ffff:a.b.c.d` mapped, `::a.b.c.d` compatible, `64:ff9b::a.b.c.d` NAT64) are judged as
/// that IPv4 address, so `::ffff:169.254.169.254` is link-local like `169.254.169.254`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let bits = v6.to_bits();
    // `::` and `::1` are IPv6's own unspecified and loopback addresses, not compatible forms.
    if bits >> 32 == 0 && bits > 1 {
        return IpAddr::V4(Ipv4Addr::from_bits(bits as u32));
    }
    const NAT64: u128 = 0x0064_ff9b_0000_0000_0000_0000_0000_0000;
    if bits >> 32 == NAT64 >> 32 {
        return IpAddr::V4(Ipv4Addr::from_bits(bits as u32));
    }
    ip
}

/// The kinds of address refused unless an operator allows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    Loopback,
    LinkLocal,
    Unspecified,
    Multicast,
    Broadcast,
}

impl Category {
    fn describe(self) -> &'static str {
        match self {
            Category::Loopback => "a loopback address",
            Category::LinkLocal => "a link-local address (this includes the cloud metadata service)",
            Category::Unspecified => "an unspecified address (it reaches the manager's own host)",
            Category::Multicast => "a multicast address",
            Category::Broadcast => "the broadcast address",
        }
    }
}

/// Ranges refused by default, by category.
const DEFAULT_REFUSED: &[(Cidr, Category)] = &[
    (Cidr::v4(127, 0, 0, 0, 8), Category::Loopback),
    (Cidr::v4(169, 254, 0, 0, 16), Category::LinkLocal),
    (Cidr::v4(0, 0, 0, 0, 8), Category::Unspecified),
    (Cidr::v4(224, 0, 0, 0, 4), Category::Multicast),
    (Cidr::v4(255, 255, 255, 255, 32), Category::Broadcast),
    (Cidr::v6(Ipv6Addr::LOCALHOST, 128), Category::Loopback),
    (Cidr::v6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), Category::LinkLocal),
    (Cidr::v6(Ipv6Addr::UNSPECIFIED, 128), Category::Unspecified),
    (Cidr::v6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8), Category::Multicast),
];

/// Why an address may not be dialled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    Default(Category),
    Denied(Cidr),
    /// The address and port of one of kcp's own endpoints (`host:port` as the manager uses it).
    Kcp(String),
}

/// A refused address and the rule that refused it. Its text is what the tenant reads in the
/// SyncTarget's condition, so it names the address, the rule and, where there is one, the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Refusal {
    pub address: SocketAddr,
    pub rule: Rule,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = self.address.ip();
        match &self.rule {
            Rule::Default(category) => write!(
                f,
                "{ip} is {}; the manager's operator can allow it with --cluster-address-allow",
                category.describe()
            ),
            Rule::Denied(cidr) => write!(f, "{ip} is in {cidr}, which the manager's --cluster-address-deny refuses"),
            Rule::Kcp(endpoint) => {
                write!(f, "{} is kcp's own endpoint {endpoint}; a cluster may never be kcp itself", self.address)
            }
        }
    }
}

/// The operator's policy. Kcp's endpoints are not part of it: they change as the APIExport's
/// endpoint slice does, so [`AddressPolicy::check`] takes them as an argument.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
    /// Whether `http://` servers may be used (bearer tokens then travel in clear text).
    pub allow_plain_http: bool,
}

impl AddressPolicy {
    /// Decides whether `address` may be dialled, given kcp's endpoints as resolved addresses
    /// paired with the `host:port` they were resolved from.
    pub fn check(&self, address: SocketAddr, kcp: &[(SocketAddr, String)]) -> Result<(), Refusal> {
        let ip = canonical(address.ip());
        let refuse = |rule| Err(Refusal { address, rule });
        if let Some((_, endpoint)) = kcp.iter().find(|(k, _)| canonical(k.ip()) == ip && k.port() == address.port()) {
            return refuse(Rule::Kcp(endpoint.clone()));
        }
        // An unspecified kcp bind address (0.0.0.0:6443) is reachable on every local address;
        // those are loopback or the host's own and are judged by the rules below.
        if let Some(cidr) = self.deny.iter().find(|c| c.contains(ip)) {
            return refuse(Rule::Denied(*cidr));
        }
        if self.allow.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        match DEFAULT_REFUSED.iter().find(|(c, _)| c.contains(ip)) {
            Some((_, category)) => refuse(Rule::Default(*category)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_parse_table() {
        let ok = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("127.0.0.1", "127.0.0.1/32"),
            ("127.0.0.1/32", "127.0.0.1/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("fd00::/8", "fd00::/8"),
            ("::1", "::1/128"),
            ("::/0", "::/0"),
        ];
        for (input, want) in ok {
            assert_eq!(input.parse::<Cidr>().map(|c| c.to_string()), Ok(want.to_string()), "{input}");
        }
        let bad = [
            ("10.0.0.0/33", "prefix"),
            ("fd00::/129", "prefix"),
            ("10.0.0.0/", "prefix"),
            ("10.0.0.0/+8", "prefix"),
            ("10.0.0.0/08x", "prefix"),
            ("10.0.0/8", "not an IP"),
            ("localhost/32", "not an IP"),
            ("", "not an IP"),
            ("10.1.2.3/8", "did you mean 10.0.0.0/8"),
            ("fe80::1/10", "did you mean fe80::/10"),
        ];
        for (input, fragment) in bad {
            let err = input.parse::<Cidr>().expect_err(input).to_string();
            assert!(err.contains(fragment), "{input}: {err}");
        }
    }

    #[test]
    fn cidr_contains_table() {
        let cases = [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("127.0.0.1/32", "127.0.0.1", true),
            ("127.0.0.1/32", "127.0.0.2", false),
            ("fe80::/10", "febf::1", true),
            ("fe80::/10", "fec0::1", false),
            ("::/0", "2001:db8::1", true),
        ];
        for (cidr, ip, want) in cases {
            let c: Cidr = cidr.parse().unwrap();
            assert_eq!(c.contains(ip.parse().unwrap()), want, "{cidr} ∋ {ip}");
        }
    }

    #[test]
    fn canonical_table() {
        let cases = [
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("::ffff:169.254.169.254", "169.254.169.254"),
            ("::127.0.0.1", "127.0.0.1"),
            ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
            ("::1", "::1"),
            ("::", "::"),
            ("2001:db8::1", "2001:db8::1"),
            ("10.0.0.1", "10.0.0.1"),
        ];
        for (input, want) in cases {
            assert_eq!(canonical(input.parse().unwrap()), want.parse::<IpAddr>().unwrap(), "{input}");
        }
    }

    #[test]
    fn default_policy_table() {
        let policy = AddressPolicy::default();
        let cases: &[(&str, Option<&str>)] = &[
            ("127.0.0.1:6443", Some("loopback")),
            ("127.0.0.2:6443", Some("127.0.0.2 is a loopback address")),
            ("[::1]:6443", Some("loopback")),
            ("[::ffff:127.0.0.1]:6443", Some("loopback")),
            ("[::127.0.0.1]:6443", Some("loopback")),
            ("169.254.169.254:80", Some("link-local")),
            ("[::ffff:169.254.169.254]:80", Some("link-local")),
            ("[64:ff9b::a9fe:a9fe]:80", Some("link-local")),
            ("[fe80::1]:6443", Some("link-local")),
            ("0.0.0.0:6443", Some("unspecified")),
            ("0.1.2.3:6443", Some("unspecified")),
            ("[::]:6443", Some("unspecified")),
            ("[::ffff:0.0.0.0]:6443", Some("unspecified")),
            ("224.0.0.1:6443", Some("multicast")),
            ("[ff02::1]:6443", Some("multicast")),
            ("255.255.255.255:6443", Some("broadcast")),
            ("10.0.0.1:6443", None),
            ("192.168.1.10:6443", None),
            ("203.0.113.9:443", None),
            ("[2001:db8::1]:6443", None),
        ];
        for (addr, want) in cases {
            let got = policy.check(sa(addr), &[]);
            match want {
                None => assert_eq!(got, Ok(()), "{addr}"),
                Some(fragment) => {
                    let text = got.expect_err(addr).to_string();
                    assert!(text.contains(fragment), "{addr}: {text}");
                    assert!(text.contains("--cluster-address-allow"), "{addr}: {text}");
                }
            }
        }
    }

    #[test]
    fn operator_rules_and_kcp_table() {
        let policy = AddressPolicy {
            allow: vec!["127.0.0.1/32".parse().unwrap(), "10.0.0.0/8".parse().unwrap()],
            deny: vec!["10.96.0.0/12".parse().unwrap(), "192.168.0.0/16".parse().unwrap()],
            allow_plain_http: false,
        };
        let kcp = vec![(sa("127.0.0.1:6443"), "127.0.0.1:6443".to_string()), (sa("10.0.0.5:443"), "kcp:443".into())];
        let cases: &[(&str, Option<&str>)] = &[
            ("127.0.0.1:7000", None),
            ("[::ffff:127.0.0.1]:7000", None),
            ("127.0.0.2:7000", Some("loopback")),
            ("127.0.0.1:6443", Some("kcp's own endpoint 127.0.0.1:6443")),
            ("[::ffff:127.0.0.1]:6443", Some("kcp's own endpoint")),
            ("10.0.0.5:443", Some("kcp's own endpoint kcp:443")),
            ("10.0.0.5:6443", None),
            ("10.96.0.1:443", Some("10.96.0.1 is in 10.96.0.0/12")),
            ("10.1.0.1:443", None),
            ("192.168.3.4:6443", Some("--cluster-address-deny")),
            ("169.254.169.254:80", Some("link-local")),
        ];
        for (addr, want) in cases {
            let got = policy.check(sa(addr), &kcp);
            match want {
                None => assert_eq!(got, Ok(()), "{addr}"),
                Some(fragment) => {
                    let text = got.expect_err(addr).to_string();
                    assert!(text.contains(fragment), "{addr}: {text}");
                }
            }
        }
    }
}
