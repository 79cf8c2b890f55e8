//! The outbound SSRF guard. A destination is allowed only if every address its host
//! resolves to is a public unicast address (or inside an operator-allowed CIDR); callers
//! then connect to one of the returned, checked addresses — never to the hostname again —
//! so a DNS answer cannot change between the check and the connection (rebinding).
//!
//! Hosts are parsed the way connecting libraries parse them: `127.1`, `2130706433`,
//! `0x7f000001` and `0177.0.0.1` are all loopback (inet_aton forms), and IPv6 addresses that
//! embed an IPv4 one (mapped, compatible, NAT64, 6to4) are judged by the IPv4 inside.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use futures_util::future::BoxFuture;

/// Resolves a hostname to addresses. Injectable so tests can answer with any address.
pub trait Resolver: Send + Sync {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host, port)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// Why a destination was refused. Messages reach the caller, so they name the host the
/// caller gave and never what it resolved to: the address (and which internal range it is
/// in) would map the server's network for whoever asks. That detail is logged instead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("{host} is not a valid host name")]
    InvalidHost { host: String },
    #[error(
        "{host} resolves to an address hdls does not connect to (private, loopback, link-local or otherwise reserved)"
    )]
    Blocked { host: String, address: IpAddr },
    #[error("{host} did not resolve to any address")]
    NoAddress { host: String },
    #[error("could not resolve {host}")]
    Resolution { host: String },
}

/// An IPv4 or IPv6 network in CIDR form (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `address/prefix`.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (address, prefix) = text.trim().split_once('/')?;
        let network: IpAddr = address.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { network, prefix })
    }

    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_match(&n.octets(), &a.octets(), self.prefix),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_match(&n.octets(), &a.octets(), self.prefix),
            _ => false,
        }
    }
}

fn prefix_match(network: &[u8], address: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if network[..full] != address[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (network[full] & mask) == (address[full] & mask)
}

/// IPv4 special-purpose ranges (IANA registry) that outbound connections never reach.
const BLOCKED_V4: [(Ipv4Addr, u8); 15] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 0, 0, 0), 24),
    (Ipv4Addr::new(192, 0, 2, 0), 24),
    (Ipv4Addr::new(192, 88, 99, 0), 24),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    (Ipv4Addr::new(198, 51, 100, 0), 24),
    (Ipv4Addr::new(203, 0, 113, 0), 24),
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// IPv6 special-purpose ranges. Ranges that embed an IPv4 address are handled separately,
/// except IPv4-translated addresses (::ffff:0:0:0/96, SIIT), which no public host uses.
const BLOCKED_V6: [(Ipv6Addr, u8); 11] = [
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 128),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1), 128),
    (Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0), 96),
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
    // Deprecated site-local (RFC 3879): still routed internally by some networks.
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),
];

/// Whether an address is never a legitimate outbound destination.
pub fn is_blocked(ip: IpAddr) -> bool {
    blocked_range(ip).is_some()
}

/// The reserved range `ip` falls in, for the server log (never for the caller).
fn blocked_range(ip: IpAddr) -> Option<String> {
    let find = |list: &[(IpAddr, u8)]| {
        list.iter()
            .find(|(network, prefix)| {
                Cidr {
                    network: *network,
                    prefix: *prefix,
                }
                .contains(ip)
            })
            .map(|(network, prefix)| format!("{network}/{prefix}"))
    };
    match ip {
        IpAddr::V4(_) => find(&BLOCKED_V4.map(|(n, p)| (IpAddr::V4(n), p))),
        IpAddr::V6(v6) => {
            if let Some(inner) = embedded_v4(v6) {
                return blocked_range(IpAddr::V4(inner))
                    .map(|range| format!("{range} (embedded in an IPv6 address)"));
            }
            if v6.segments()[0] & 0xff00 == 0xff00 {
                return Some("ff00::/8".to_owned());
            }
            find(&BLOCKED_V6.map(|(n, p)| (IpAddr::V6(n), p)))
        }
    }
}

/// The IPv4 address an IPv6 address stands for, where it embeds one: IPv4-mapped
/// (::ffff:0:0/96), IPv4-compatible (::/96), NAT64 (64:ff9b::/96 and 64:ff9b:1::/48) and
/// 6to4 (2002::/16). Each of those is judged by its IPv4 address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
        return Some(tail());
    }
    // ::/96 (deprecated IPv4-compatible), except :: and ::1 which the list covers.
    if s[..6] == [0, 0, 0, 0, 0, 0] && (s[6] != 0 || s[7] > 1) {
        return Some(tail());
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail());
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        // RFC 8215 local-use NAT64: treat the whole prefix as internal.
        return Some(Ipv4Addr::new(127, 0, 0, 1));
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// Parses a host that is an IP literal in any form a connecting library accepts, including
/// inet_aton's shortened, decimal, octal and hex forms and bracketed IPv6.
pub fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    let host = host.trim();
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(v6) = host.parse::<Ipv6Addr>() {
        return Some(IpAddr::V6(v6));
    }
    parse_inet_aton(host).map(IpAddr::V4)
}

fn parse_inet_aton(host: &str) -> Option<Ipv4Addr> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let numbers: Vec<u64> = parts
        .iter()
        .map(|p| parse_aton_number(p))
        .collect::<Option<_>>()?;
    let (last, leading) = numbers.split_last()?;
    if leading.iter().any(|n| *n > 255) {
        return None;
    }
    let last_bits = 8 * (4 - leading.len() as u32);
    if *last >= 1u64 << last_bits {
        return None;
    }
    let mut value: u64 = 0;
    for (i, n) in leading.iter().enumerate() {
        value |= n << (24 - 8 * i as u32);
    }
    value |= last;
    Some(Ipv4Addr::from(u32::try_from(value).ok()?))
}

fn parse_aton_number(part: &str) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if let Some(octal) = part.strip_prefix('0').filter(|rest| !rest.is_empty()) {
            (octal, 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        // "0x" alone is 0 for inet_aton.
        return (radix == 16).then_some(0);
    }
    u64::from_str_radix(digits, radix)
        .ok()
        .filter(|n| *n <= u64::from(u32::MAX))
}

/// The guard: a resolver plus the operator's allowed CIDRs (for development and tests;
/// empty by default).
#[derive(Clone)]
pub struct Guard {
    resolver: Arc<dyn Resolver>,
    allowed: Vec<Cidr>,
}

impl Guard {
    /// A guard over `resolver` that additionally allows `allowed` networks.
    pub fn new(resolver: Arc<dyn Resolver>, allowed: Vec<Cidr>) -> Guard {
        Guard { resolver, allowed }
    }

    /// The production guard: the system resolver, nothing extra allowed.
    pub fn system() -> Guard {
        Guard::new(Arc::new(SystemResolver), Vec::new())
    }

    /// Whether every address is inside an operator-allowed network (not merely public).
    pub fn all_explicitly_allowed(&self, addrs: &[SocketAddr]) -> bool {
        !addrs.is_empty()
            && addrs
                .iter()
                .all(|a| self.allowed.iter().any(|c| c.contains(a.ip())))
    }

    fn permitted(&self, ip: IpAddr) -> bool {
        self.allowed.iter().any(|c| c.contains(ip)) || !is_blocked(ip)
    }

    /// Resolves `host` once and checks every address; returns the addresses to connect to.
    /// One blocked address refuses the host (an attacker controls which one a client picks).
    pub async fn check(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
        let host = host.trim();
        if host.is_empty() || host.starts_with('/') || host.contains(['\0', '@', '/', '\\', ' ']) {
            return Err(Refusal::InvalidHost {
                host: host.to_owned(),
            });
        }
        let addresses = match parse_ip_literal(host) {
            Some(ip) => vec![ip],
            None => {
                // Real host names never end in a numeric label (top-level domains are
                // alphabetic), so such a host is a malformed address, not a name to look up.
                let last = host.trim_end_matches('.').rsplit('.').next().unwrap_or("");
                let hex = last
                    .strip_prefix("0x")
                    .or_else(|| last.strip_prefix("0X"))
                    .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
                if last.is_empty() || hex || last.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Refusal::InvalidHost {
                        host: host.to_owned(),
                    });
                }
                self.resolver
                    .resolve(host, port)
                    .await
                    .map_err(|_| Refusal::Resolution {
                        host: host.to_owned(),
                    })?
            }
        };
        if addresses.is_empty() {
            return Err(Refusal::NoAddress {
                host: host.to_owned(),
            });
        }
        if let Some(bad) = addresses.iter().find(|ip| !self.permitted(**ip)) {
            tracing::warn!(
                host,
                address = %bad,
                range = blocked_range(*bad).as_deref().unwrap_or("?"),
                "outbound connection refused: reserved address"
            );
            return Err(Refusal::Blocked {
                host: host.to_owned(),
                address: *bad,
            });
        }
        Ok(addresses
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn every_special_purpose_range_is_blocked() {
        for blocked in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:1ff::1",
            "2001:db8::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "3fff::1",
            "5f00::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "feff:ffff::1",
            "::ffff:0:8.8.8.8",
            "::ffff:0:127.0.0.1",
            "::ffff:0:0",
            "ff02::1",
            "ff0e::1",
        ] {
            assert!(is_blocked(ip(blocked)), "{blocked} should be blocked");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "172.32.0.1",
            "192.88.100.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:200::1",
        ] {
            assert!(!is_blocked(ip(public)), "{public} should be allowed");
        }
    }

    #[test]
    fn ip_literals_parse_the_way_connecting_libraries_do() {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for form in [
            "127.0.0.1",
            "127.1",
            "127.0.1",
            "2130706433",
            "0x7f000001",
            "0x7f.1",
            "0177.0.0.1",
            "0177.1",
            "127.0.0.1.",
        ] {
            assert_eq!(parse_ip_literal(form), Some(loopback), "{form}");
        }
        assert_eq!(parse_ip_literal("[::1]"), Some(ip("::1")));
        assert_eq!(
            parse_ip_literal("::ffff:7f00:1"),
            Some(ip("::ffff:127.0.0.1"))
        );
        for not_an_address in [
            "example.com",
            "256.0.0.1",
            "1.2.3.4.5",
            "0x1g",
            "",
            "1..2",
            "4294967296",
        ] {
            assert_eq!(parse_ip_literal(not_an_address), None, "{not_an_address}");
        }
    }

    #[test]
    fn cidrs_parse_and_match() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(!net.contains(ip("::1")));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nonsense").is_none());
        assert!(
            Cidr::parse("127.0.0.1/32")
                .unwrap()
                .contains(ip("127.0.0.1"))
        );
    }

    /// Answers every lookup with fixed addresses.
    struct Fixed(Vec<IpAddr>);

    impl Resolver for Fixed {
        fn resolve<'a>(
            &'a self,
            _host: &'a str,
            _port: u16,
        ) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
            let answer = self.0.clone();
            Box::pin(async move { Ok(answer) })
        }
    }

    fn guard(answer: &[&str], allowed: &[&str]) -> Guard {
        Guard::new(
            Arc::new(Fixed(answer.iter().map(|a| ip(a)).collect())),
            allowed.iter().filter_map(|c| Cidr::parse(c)).collect(),
        )
    }

    #[tokio::test]
    async fn a_host_is_refused_if_any_address_is_blocked() {
        let g = guard(&["93.184.216.34", "10.0.0.5"], &[]);
        assert!(matches!(
            g.check("rebind.example", 443).await,
            Err(Refusal::Blocked { .. })
        ));
        let ok = guard(&["93.184.216.34"], &[])
            .check("public.example", 443)
            .await
            .unwrap();
        assert_eq!(ok, vec![SocketAddr::new(ip("93.184.216.34"), 443)]);
        assert!(matches!(
            guard(&[], &[]).check("empty.example", 443).await,
            Err(Refusal::NoAddress { .. })
        ));
    }

    #[test]
    fn translated_and_site_local_ranges_are_blocked_but_their_neighbours_are_not() {
        // IPv4-translated ::ffff:0:0:0/96 is blocked whatever IPv4 address it carries.
        assert!(is_blocked(ip("::ffff:0:8.8.8.8")));
        assert_eq!(
            blocked_range(ip("::ffff:0:8.8.8.8")).as_deref(),
            Some("::ffff:0:0:0/96")
        );
        assert_eq!(blocked_range(ip("fec0::1")).as_deref(), Some("fec0::/10"));
        assert!(is_blocked(ip("feff::1")));
        // Just outside both ranges.
        assert!(!is_blocked(ip("::fffe:0:808:808")));
        assert!(!is_blocked(ip("::1:ffff:0:808:808")));
    }

    #[tokio::test]
    async fn refusals_never_show_the_resolved_address_or_its_range() {
        for (answer, range) in [
            ("10.1.2.3", "10.0.0.0/8"),
            ("169.254.169.254", "169.254.0.0/16"),
            ("fd12:3456::7", "fc00::/7"),
            ("fec0::5", "fec0::/10"),
            ("::ffff:0:10.9.8.7", "::ffff:0:0:0/96"),
        ] {
            let refusal = guard(&[answer], &[])
                .check("innocent.example", 443)
                .await
                .unwrap_err();
            assert!(matches!(refusal, Refusal::Blocked { .. }), "{answer}");
            let shown = refusal.to_string();
            let fetched = crate::net::fetch::FetchError::from(refusal).to_string();
            for text in [&shown, &fetched] {
                assert!(!text.contains(answer), "{answer} leaked: {text}");
                assert!(!text.contains(range), "{range} leaked: {text}");
                assert!(
                    text.contains("resolves to an address hdls does not connect to"),
                    "{text}"
                );
            }
            assert!(shown.starts_with("innocent.example "), "{shown}");
        }
    }

    #[tokio::test]
    async fn literal_hosts_are_checked_without_resolving() {
        // The resolver would say "public", but a literal is judged as written.
        let g = guard(&["93.184.216.34"], &[]);
        for literal in [
            "127.0.0.1",
            "127.1",
            "2130706433",
            "0x7f000001",
            "0177.0.0.1",
            "[::1]",
            "169.254.169.254",
            "[::ffff:169.254.169.254]",
        ] {
            assert!(
                matches!(g.check(literal, 80).await, Err(Refusal::Blocked { .. })),
                "{literal}"
            );
        }
        for malformed in [
            "999.1.1.1",
            "1.2.3.4.5",
            "/var/run/postgresql",
            "",
            "user@host.example",
            "0x7fzz.1",
        ] {
            assert!(g.check(malformed, 80).await.is_err(), "{malformed}");
        }
    }

    #[tokio::test]
    async fn operator_allowed_networks_open_the_guard_for_tests() {
        let g = guard(&["127.0.0.1"], &["127.0.0.0/8"]);
        assert!(g.check("localhost", 8080).await.is_ok());
        assert!(g.check("10.0.0.1", 8080).await.is_err());
        assert!(Guard::system().check("127.0.0.1", 80).await.is_err());
    }
}
