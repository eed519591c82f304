//! The viewer's address, for policy decisions and for binding tokens to an IP.
//!
//! The address is the socket peer, unless the peer is a trusted proxy: then the one header
//! the operator named ([`ForwardedHeader`]: `X-Forwarded-For` by default, or `Forwarded`,
//! `X-Real-IP`, `CF-Connecting-IP`) is walked from the nearest hop outwards, like nginx's
//! `real_ip_recursive`, and the first untrusted address is the client. Every other such
//! header is ignored: a proxy appends to its own header and passes the others through as the
//! client wrote them. Anything a client can write itself (the left-most entries) is never
//! preferred over what a trusted proxy appended, and a malformed value gives the peer.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are treated as the IPv4 address everywhere:
//! in the peer, in header entries, in the trusted networks and in the returned address.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};

use http::HeaderMap;
use http::header::{FORWARDED, HeaderName};
use ipnet::{IpNet, Ipv4Net};

/// At most this many hops (the nearest ones) are considered from a forwarded header.
pub const MAX_HOPS: usize = 64;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const CF_CONNECTING_IP: HeaderName = HeaderName::from_static("cf-connecting-ip");

/// Optional whitespace around list elements and parameters.
const OWS: [char; 2] = [' ', '\t'];

/// The networks whose connections may speak for someone else (reverse proxies, load balancers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trust connections from `nets`. IPv4-mapped IPv6 networks (`::ffff:0:0/96` or narrower)
    /// are stored as the equivalent IPv4 network.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self {
            nets: nets.into_iter().map(canonical_net).collect(),
        }
    }

    /// Whether `ip` (IPv4-mapped IPv6 treated as IPv4) lies in a trusted network.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// No trusted proxies: the peer is always the client.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The trusted networks (after IPv4-mapped normalisation).
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

/// `::ffff:a.b.c.d/n` (n ≥ 96) → `a.b.c.d/(n-96)`; anything else unchanged.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.network().to_ipv4_mapped()
        && let Ok(v4net) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(v4net);
    }
    net
}

/// The header trusted proxies state the client's address in; the only one read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (each proxy appends the address it saw).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1` (its `for=` parameters).
    Forwarded,
    /// `X-Real-IP: client`, as nginx's `proxy_set_header X-Real-IP $remote_addr` sets it.
    XRealIp,
    /// `CF-Connecting-IP: client`, as Cloudflare's proxy sets it.
    CfConnectingIp,
}

impl ForwardedHeader {
    /// Every choice, by the name operators write (`client_address.header`).
    pub const ALL: [ForwardedHeader; 4] = [
        ForwardedHeader::XForwardedFor,
        ForwardedHeader::Forwarded,
        ForwardedHeader::XRealIp,
        ForwardedHeader::CfConnectingIp,
    ];

    /// The header's usual spelling.
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "X-Forwarded-For",
            ForwardedHeader::Forwarded => "Forwarded",
            ForwardedHeader::XRealIp => "X-Real-IP",
            ForwardedHeader::CfConnectingIp => "CF-Connecting-IP",
        }
    }

    /// The choice named `name` (any case).
    pub fn from_name(name: &str) -> Option<ForwardedHeader> {
        Self::ALL
            .into_iter()
            .find(|header| header.name().eq_ignore_ascii_case(name))
    }

    fn header_name(self) -> HeaderName {
        match self {
            ForwardedHeader::XForwardedFor => X_FORWARDED_FOR,
            ForwardedHeader::Forwarded => FORWARDED,
            ForwardedHeader::XRealIp => X_REAL_IP,
            ForwardedHeader::CfConnectingIp => CF_CONNECTING_IP,
        }
    }
}

/// How the viewer's address is found: which peers are trusted proxies, and the one header
/// they state it in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAddress {
    pub trusted: TrustedProxies,
    pub header: ForwardedHeader,
}

impl ClientAddress {
    /// The viewer's address (IPv4-mapped IPv6 returned as IPv4).
    ///
    /// * `peer` untrusted (or no trusted proxies): `peer`; the headers are ignored.
    /// * `peer` trusted: the entries of the configured header (every line, in order; for
    ///   `Forwarded` the `for=` of each element) walked right to left over at most
    ///   [`MAX_HOPS`] of them. Trusted hops are skipped and the first untrusted one is the
    ///   client; if every entry considered is trusted, the left-most of them.
    /// * `peer`, when that header is absent or empty, a line is not visible ASCII, or an
    ///   entry reached on the walk is not an address (`unknown`, `_hidden`, garbage).
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusted.is_trusted(peer) {
            return peer;
        }
        let name = self.header.header_name();
        let found = match self.header {
            ForwardedHeader::Forwarded => {
                nearest_entries(headers, &name, split_forwarded).map(|elements| {
                    walk(
                        peer,
                        elements.iter().rev().map(|e| forwarded_for(e)),
                        &self.trusted,
                    )
                })
            }
            _ => nearest_entries(headers, &name, split_list).map(|entries| {
                walk(
                    peer,
                    entries.iter().rev().map(|e| parse_node(e)),
                    &self.trusted,
                )
            }),
        };
        found.unwrap_or(peer)
    }
}

/// Walk hops nearest first: skip trusted ones, stop at the first untrusted one. An entry that
/// is not an address gives the peer: what lies beyond it cannot be trusted to be in order.
fn walk(
    peer: IpAddr,
    hops: impl Iterator<Item = Option<IpAddr>>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let mut nearest = peer;
    for hop in hops {
        let Some(ip) = hop else {
            return peer;
        };
        let ip = ip.to_canonical();
        if !trusted.is_trusted(ip) {
            return ip;
        }
        nearest = ip;
    }
    nearest
}

/// Keeps only the last [`MAX_HOPS`] entries pushed.
#[derive(Default)]
struct Nearest<'a>(VecDeque<&'a str>);

impl<'a> Nearest<'a> {
    fn push(&mut self, entry: &'a str) {
        let entry = entry.trim_matches(OWS);
        if entry.is_empty() {
            return;
        }
        if self.0.len() == MAX_HOPS {
            self.0.pop_front();
        }
        self.0.push_back(entry);
    }
}

/// The last [`MAX_HOPS`] non-empty list elements of every `name` line, in order; `None` if a
/// line is not visible ASCII.
fn nearest_entries<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    split: fn(&'a str, &mut Nearest<'a>),
) -> Option<VecDeque<&'a str>> {
    let mut nearest = Nearest::default();
    for value in headers.get_all(name) {
        split(value.to_str().ok()?, &mut nearest);
    }
    Some(nearest.0)
}

fn split_list<'a>(line: &'a str, out: &mut Nearest<'a>) {
    line.split(',').for_each(|entry| out.push(entry));
}

fn split_forwarded<'a>(line: &'a str, out: &mut Nearest<'a>) {
    QuotedSplit::new(line, b',').for_each(|element| out.push(element));
}

/// Splits on `sep` outside quoted-strings (which may contain `\`-escaped characters).
struct QuotedSplit<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

impl<'a> QuotedSplit<'a> {
    fn new(s: &'a str, sep: u8) -> Self {
        Self { rest: Some(s), sep }
    }
}

impl<'a> Iterator for QuotedSplit<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        let bytes = rest.as_bytes();
        let (mut quoted, mut escaped) = (false, false);
        for (i, &b) in bytes.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted && b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = !quoted;
            } else if !quoted && b == self.sep {
                // `sep` is ASCII, so both halves are on char boundaries.
                self.rest = Some(&rest[i + 1..]);
                return Some(&rest[..i]);
            }
        }
        self.rest = None;
        Some(rest)
    }
}

/// The address in a `Forwarded` element's `for=` parameter; `None` if it has none, more than
/// one, a malformed pair, or a value that is not an address.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let mut found = None;
    for pair in QuotedSplit::new(element, b';') {
        let pair = pair.trim_matches(OWS);
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=')?;
        if name.trim_matches(OWS).eq_ignore_ascii_case("for") {
            if found.is_some() {
                return None;
            }
            found = Some(value.trim_matches(OWS));
        }
    }
    parse_node(&unquote(found?)?)
}

/// A token as is, or the content of a quoted-string with its escapes removed.
fn unquote(value: &str) -> Option<Cow<'_, str>> {
    let Some(inner) = value.strip_prefix('"') else {
        return Some(Cow::Borrowed(value));
    };
    let inner = inner.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    Some(Cow::Owned(out))
}

/// `192.0.2.43`, `192.0.2.43:8080`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:4711`.
/// Anything else (`unknown`, `_hidden`, garbage) is `None`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let ip = host.parse::<IpAddr>().ok()?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(valid_port);
        return port_ok.then_some(ip);
    }
    let (host, port) = node.rsplit_once(':')?;
    if !valid_port(port) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A decimal port, or an RFC 7239 obfuscated port (`_` followed by ALPHA / DIGIT / `.` `_` `-`).
fn valid_port(port: &str) -> bool {
    if let Some(obfuscated) = port.strip_prefix('_') {
        return !obfuscated.is_empty()
            && obfuscated
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    }
    (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn proxies() -> TrustedProxies {
        trusted(&["10.0.0.0/8", "fd00::/8"])
    }

    /// The rule reading `header` behind [`proxies`].
    fn reading(header: ForwardedHeader) -> ClientAddress {
        ClientAddress {
            trusted: proxies(),
            header,
        }
    }

    fn xff() -> ClientAddress {
        reading(ForwardedHeader::XForwardedFor)
    }

    fn forwarded() -> ClientAddress {
        reading(ForwardedHeader::Forwarded)
    }

    const PEER: &str = "10.0.0.1";

    /// Every forwarding header at once, each naming a different client.
    fn mixed() -> HeaderMap {
        headers(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("forwarded", "for=203.0.113.2"),
            ("x-real-ip", "203.0.113.3"),
            ("cf-connecting-ip", "203.0.113.4"),
        ])
    }

    #[test]
    fn only_the_configured_header_is_read_whatever_else_is_sent() {
        let h = mixed();
        for (header, client) in [
            (ForwardedHeader::XForwardedFor, "203.0.113.1"),
            (ForwardedHeader::Forwarded, "203.0.113.2"),
            (ForwardedHeader::XRealIp, "203.0.113.3"),
            (ForwardedHeader::CfConnectingIp, "203.0.113.4"),
        ] {
            assert_eq!(
                reading(header).resolve(ip(PEER), &h),
                ip(client),
                "{header:?}"
            );
        }
        // The review's case: X-Forwarded-For is configured (the default), Forwarded is the
        // client's own and is ignored.
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=198.51.100.7"),
        ]);
        assert_eq!(
            ClientAddress::default().header,
            ForwardedHeader::XForwardedFor
        );
        assert_eq!(xff().resolve(ip(PEER), &h), ip("203.0.113.9"));
        // Absent configured header: the peer, even when another one is present.
        let h = headers(&[("forwarded", "for=198.51.100.7")]);
        assert_eq!(xff().resolve(ip(PEER), &h), ip(PEER));
    }

    #[test]
    fn header_names_are_chosen_from_four_in_any_case() {
        assert_eq!(
            ForwardedHeader::from_name("x-real-ip"),
            Some(ForwardedHeader::XRealIp)
        );
        assert_eq!(
            ForwardedHeader::from_name("CF-CONNECTING-IP"),
            Some(ForwardedHeader::CfConnectingIp)
        );
        assert_eq!(ForwardedHeader::from_name("True-Client-IP"), None);
        for header in ForwardedHeader::ALL {
            assert_eq!(ForwardedHeader::from_name(header.name()), Some(header));
        }
    }

    #[test]
    fn untrusted_peer_ignores_every_forwarding_header() {
        for header in ForwardedHeader::ALL {
            assert_eq!(
                reading(header).resolve(ip("203.0.113.9"), &mixed()),
                ip("203.0.113.9")
            );
        }
    }

    #[test]
    fn no_trusted_proxies_means_the_peer_is_the_client() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1")]);
        let none = ClientAddress::default();
        assert!(none.trusted.is_empty());
        assert_eq!(none.resolve(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn trusted_peer_takes_the_rightmost_untrusted_entry() {
        let h = headers(&[("x-forwarded-for", "198.51.100.1, 203.0.113.7")]);
        assert_eq!(xff().resolve(ip(PEER), &h), ip("203.0.113.7"));
        let h = headers(&[("x-real-ip", "198.51.100.1, 203.0.113.7")]);
        assert_eq!(
            reading(ForwardedHeader::XRealIp).resolve(ip(PEER), &h),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn chains_of_trusted_proxies_are_skipped() {
        let h = headers(&[(
            "x-forwarded-for",
            "203.0.113.7, 10.1.1.1,10.2.2.2 , fd00::5",
        )]);
        assert_eq!(xff().resolve(ip(PEER), &h), ip("203.0.113.7"));
        let h = headers(&[("cf-connecting-ip", "203.0.113.7, 10.1.1.1")]);
        assert_eq!(
            reading(ForwardedHeader::CfConnectingIp).resolve(ip(PEER), &h),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn spoofed_leftmost_entries_are_ignored_when_a_nearer_untrusted_one_exists() {
        let h = headers(&[(
            "x-forwarded-for",
            "10.9.9.9, 127.0.0.1, 203.0.113.7, 10.1.1.1",
        )]);
        assert_eq!(xff().resolve(ip(PEER), &h), ip("203.0.113.7"));
    }

    #[test]
    fn several_header_lines_concatenate_in_order() {
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.1, 203.0.113.7"),
            ("x-forwarded-for", "10.1.1.1"),
        ]);
        assert_eq!(xff().resolve(ip(PEER), &h), ip("203.0.113.7"));
        let h = headers(&[
            ("x-forwarded-for", "10.1.1.1"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        assert_eq!(xff().resolve(ip(PEER), &h), ip("203.0.113.7"));
        let h = headers(&[("x-real-ip", "198.51.100.1"), ("x-real-ip", "203.0.113.7")]);
        assert_eq!(
            reading(ForwardedHeader::XRealIp).resolve(ip(PEER), &h),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn forwarded_handles_quoted_ipv6_and_ports_with_case_insensitive_names() {
        let peer = ip(PEER);
        let h = headers(&[("forwarded", r#"For="[2001:db8:cafe::17]:4711""#)]);
        assert_eq!(forwarded().resolve(peer, &h), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", r#"FOR="192.0.2.43:8080";proto=https"#)]);
        assert_eq!(forwarded().resolve(peer, &h), ip("192.0.2.43"));
        let h = headers(&[("forwarded", r#"for="[2001:db8::1]""#)]);
        assert_eq!(forwarded().resolve(peer, &h), ip("2001:db8::1"));
        let h = headers(&[("forwarded", r#"for="192.0.2.43:_obf""#)]);
        assert_eq!(forwarded().resolve(peer, &h), ip("192.0.2.43"));
    }

    #[test]
    fn forwarded_lines_elements_and_parameters_are_all_walked() {
        let h = headers(&[
            ("forwarded", "for=198.51.100.1;proto=http, for=203.0.113.7"),
            (
                "forwarded",
                r#"by="a,b;c";for=10.1.1.1;host="x\"y", proto=https ; for="[fd00::2]""#,
            ),
        ]);
        assert_eq!(forwarded().resolve(ip(PEER), &h), ip("203.0.113.7"));
    }

    #[test]
    fn malformed_forwarded_elements_give_the_peer() {
        let peer = ip(PEER);
        for element in [
            "proto=https",
            "for=1.2.3.4;for=5.6.7.8",
            r#"for="1.2.3.4"#,
            "for=1.2.3.4;garbage",
        ] {
            let h = headers(&[(
                "forwarded",
                &format!("for=198.51.100.1, for=10.1.1.1, {element}"),
            )]);
            assert_eq!(forwarded().resolve(peer, &h), peer, "{element}");
        }
    }

    #[test]
    fn entries_may_carry_ports_and_brackets() {
        let peer = ip(PEER);
        let h = headers(&[("x-forwarded-for", "203.0.113.7:5678, 10.1.1.1:443")]);
        assert_eq!(xff().resolve(peer, &h), ip("203.0.113.7"));
        let h = headers(&[("x-forwarded-for", "[2001:db8::1]:80, [fd00::1]")]);
        assert_eq!(xff().resolve(peer, &h), ip("2001:db8::1"));
        let h = headers(&[("x-forwarded-for", "2001:db8::2")]);
        assert_eq!(xff().resolve(peer, &h), ip("2001:db8::2"));
        let h = headers(&[("x-real-ip", "[2001:db8::3]")]);
        assert_eq!(
            reading(ForwardedHeader::XRealIp).resolve(peer, &h),
            ip("2001:db8::3")
        );
        // An unbracketed IPv6 address with a port is ambiguous: not an address.
        for bad in ["203.0.113.7:99999", "2001:db8::1:80:", "[2001:db8::1]:x"] {
            let h = headers(&[("x-forwarded-for", bad)]);
            assert_eq!(xff().resolve(peer, &h), peer, "{bad}");
        }
    }

    #[test]
    fn a_malformed_entry_on_the_walk_gives_the_peer() {
        let peer = ip(PEER);
        let h = headers(&[(
            "x-forwarded-for",
            "203.0.113.7, unknown, 10.1.1.1, 10.2.2.2",
        )]);
        assert_eq!(xff().resolve(peer, &h), peer);
        let h = headers(&[("forwarded", "for=203.0.113.7, for=_hidden, for=10.1.1.1")]);
        assert_eq!(forwarded().resolve(peer, &h), peer);
        let h = headers(&[("x-forwarded-for", "203.0.113.7, garbage")]);
        assert_eq!(xff().resolve(peer, &h), peer);
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(forwarded().resolve(peer, &h), peer);
        // Beyond the client, the walk never looks.
        let h = headers(&[("x-forwarded-for", "garbage, 203.0.113.7, 10.1.1.1")]);
        assert_eq!(xff().resolve(peer, &h), ip("203.0.113.7"));
    }

    #[test]
    fn all_trusted_entries_return_the_leftmost() {
        let h = headers(&[("x-forwarded-for", "10.3.3.3, 10.2.2.2, 10.1.1.1")]);
        assert_eq!(xff().resolve(ip(PEER), &h), ip("10.3.3.3"));
    }

    #[test]
    fn empty_or_absent_headers_return_the_peer() {
        let peer = ip(PEER);
        assert_eq!(xff().resolve(peer, &HeaderMap::new()), peer);
        let h = headers(&[("x-forwarded-for", "")]);
        assert_eq!(xff().resolve(peer, &h), peer);
        let h = headers(&[("x-forwarded-for", " , ,")]);
        assert_eq!(xff().resolve(peer, &h), peer);
        let h = headers(&[("forwarded", ""), ("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(forwarded().resolve(peer, &h), peer);
    }

    #[test]
    fn header_values_that_are_not_visible_ascii_are_ignored() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        h.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"198.51.100.1\xff").unwrap(),
        );
        assert_eq!(xff().resolve(ip(PEER), &h), ip(PEER));
    }

    #[test]
    fn v4_mapped_v6_peer_matches_a_v4_cidr() {
        let p = proxies();
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert!(p.is_trusted(ip("::ffff:10.0.0.1")));
        assert_eq!(xff().resolve(ip("::ffff:10.0.0.1"), &h), ip("203.0.113.7"));
        // An untrusted mapped peer comes back as plain IPv4.
        assert_eq!(
            xff().resolve(ip("::ffff:203.0.113.9"), &h),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn v4_mapped_header_entries_and_nets_are_treated_as_ipv4() {
        let p = trusted(&["::ffff:10.0.0.0/104"]);
        assert_eq!(p.nets(), &["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert!(p.is_trusted(ip("10.1.2.3")));
        let rule = ClientAddress {
            trusted: p,
            header: ForwardedHeader::XForwardedFor,
        };
        let h = headers(&[("x-forwarded-for", "::ffff:203.0.113.7, ::ffff:10.1.1.1")]);
        assert_eq!(rule.resolve(ip(PEER), &h), ip("203.0.113.7"));
    }

    #[test]
    fn a_header_with_ten_thousand_entries_is_bounded() {
        let peer = ip(PEER);
        // An attacker entry far to the left of 9,999 trusted hops is never reached.
        let mut entries = vec!["203.0.113.66".to_owned()];
        entries.extend((1..10_000).map(|i| format!("10.0.{}.{}", i / 256, i % 256)));
        let h = headers(&[("x-forwarded-for", &entries.join(", "))]);
        let leftmost_considered = ip(&entries[entries.len() - MAX_HOPS]);
        assert_eq!(xff().resolve(peer, &h), leftmost_considered);

        let elements: Vec<String> = entries.iter().map(|e| format!("for={e}")).collect();
        let h = headers(&[("forwarded", &elements.join(","))]);
        assert_eq!(forwarded().resolve(peer, &h), leftmost_considered);

        let h = headers(&[("x-forwarded-for", &"garbage,".repeat(10_000))]);
        assert_eq!(xff().resolve(peer, &h), peer);
    }
}
