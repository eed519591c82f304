//! The viewer's address, for policy decisions and for binding tokens to an IP.
//!
//! The address is the socket peer, unless the peer is a trusted proxy: then the forwarded hop
//! list (RFC 7239 `Forwarded`, else `X-Forwarded-For`) is walked from the nearest hop outwards
//! and the first untrusted address is the client. Anything a client can write itself (the
//! left-most entries) is never preferred over what a trusted proxy appended.
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

/// Optional whitespace around list elements and parameters.
const OWS: [char; 2] = [' ', '\t'];

/// The networks whose connections may speak for someone else (reverse proxies, load balancers).
#[derive(Debug, Clone, Default)]
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

/// The viewer's address (IPv4-mapped IPv6 returned as IPv4).
///
/// * `peer` untrusted (or no trusted proxies): `peer`; the headers are ignored.
/// * `peer` trusted: the hop list from `Forwarded` (its `for=` values) if that header is
///   present, otherwise from `X-Forwarded-For`, walked right to left over at most
///   [`MAX_HOPS`] entries. Trusted hops are skipped and the first untrusted one is the client.
///   An entry that is not an IP (`unknown`, `_hidden`, garbage) stops the walk at the nearest
///   trusted hop seen so far (or the peer). If every entry considered is trusted, the
///   left-most of them. An empty or absent header, or one with a value that is not visible
///   ASCII, yields the peer.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.is_trusted(peer) {
        return peer;
    }
    if headers.contains_key(FORWARDED) {
        match nearest_entries(headers, &FORWARDED, split_forwarded) {
            Some(elements) => walk(
                peer,
                elements.iter().rev().map(|e| forwarded_for(e)),
                trusted,
            ),
            None => peer,
        }
    } else {
        match nearest_entries(headers, &X_FORWARDED_FOR, split_x_forwarded_for) {
            Some(entries) => walk(peer, entries.iter().rev().map(|e| parse_node(e)), trusted),
            None => peer,
        }
    }
}

/// Walk hops nearest first: skip trusted ones, stop at the first untrusted one or at the first
/// entry that is not an address.
fn walk(
    peer: IpAddr,
    hops: impl Iterator<Item = Option<IpAddr>>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let mut nearest = peer;
    for hop in hops {
        let Some(ip) = hop else {
            return nearest;
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

fn split_x_forwarded_for<'a>(line: &'a str, out: &mut Nearest<'a>) {
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

    #[test]
    fn untrusted_peer_ignores_x_forwarded_for_and_forwarded() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")]);
        assert_eq!(
            client_address(ip("203.0.113.9"), &h, &proxies()),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn no_trusted_proxies_means_the_peer_is_the_client() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1")]);
        let none = TrustedProxies::default();
        assert!(none.is_empty());
        assert_eq!(client_address(ip("10.0.0.1"), &h, &none), ip("10.0.0.1"));
    }

    #[test]
    fn trusted_peer_takes_the_rightmost_untrusted_x_forwarded_for_entry() {
        let h = headers(&[("x-forwarded-for", "198.51.100.1, 203.0.113.7")]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &proxies()),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn chains_of_trusted_proxies_are_skipped() {
        let h = headers(&[(
            "x-forwarded-for",
            "203.0.113.7, 10.1.1.1,10.2.2.2 , fd00::5",
        )]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &proxies()),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn spoofed_leftmost_entries_are_ignored_when_a_nearer_untrusted_one_exists() {
        let h = headers(&[(
            "x-forwarded-for",
            "10.9.9.9, 127.0.0.1, 203.0.113.7, 10.1.1.1",
        )]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &proxies()),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn multiple_x_forwarded_for_lines_concatenate_in_order() {
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.1, 203.0.113.7"),
            ("x-forwarded-for", "10.1.1.1"),
        ]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &proxies()),
            ip("203.0.113.7")
        );
        let h = headers(&[
            ("x-forwarded-for", "10.1.1.1"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &proxies()),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn forwarded_is_preferred_over_x_forwarded_for() {
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("forwarded", "for=203.0.113.7"),
        ]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &proxies()),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn forwarded_handles_quoted_ipv6_and_ports_with_case_insensitive_names() {
        let p = proxies();
        let peer = ip("10.0.0.1");
        let h = headers(&[("forwarded", r#"For="[2001:db8:cafe::17]:4711""#)]);
        assert_eq!(client_address(peer, &h, &p), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", r#"FOR="192.0.2.43:8080";proto=https"#)]);
        assert_eq!(client_address(peer, &h, &p), ip("192.0.2.43"));
        let h = headers(&[("forwarded", r#"for="[2001:db8::1]""#)]);
        assert_eq!(client_address(peer, &h, &p), ip("2001:db8::1"));
        let h = headers(&[("forwarded", r#"for="192.0.2.43:_obf""#)]);
        assert_eq!(client_address(peer, &h, &p), ip("192.0.2.43"));
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
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &proxies()),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn malformed_forwarded_elements_stop_the_walk() {
        let p = proxies();
        let peer = ip("10.0.0.1");
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
            assert_eq!(client_address(peer, &h, &p), peer, "{element}");
        }
    }

    #[test]
    fn x_forwarded_for_entries_may_carry_ports_and_brackets() {
        let p = proxies();
        let peer = ip("10.0.0.1");
        let h = headers(&[("x-forwarded-for", "203.0.113.7:5678, 10.1.1.1:443")]);
        assert_eq!(client_address(peer, &h, &p), ip("203.0.113.7"));
        let h = headers(&[("x-forwarded-for", "[2001:db8::1]:80, [fd00::1]")]);
        assert_eq!(client_address(peer, &h, &p), ip("2001:db8::1"));
        let h = headers(&[("x-forwarded-for", "2001:db8::2")]);
        assert_eq!(client_address(peer, &h, &p), ip("2001:db8::2"));
        let h = headers(&[("x-forwarded-for", "203.0.113.7:99999")]);
        assert_eq!(client_address(peer, &h, &p), peer);
    }

    #[test]
    fn unknown_entry_stops_the_walk_at_the_nearest_trusted_hop() {
        let p = proxies();
        let peer = ip("10.0.0.1");
        let h = headers(&[(
            "x-forwarded-for",
            "203.0.113.7, unknown, 10.1.1.1, 10.2.2.2",
        )]);
        assert_eq!(client_address(peer, &h, &p), ip("10.1.1.1"));
        let h = headers(&[("forwarded", "for=203.0.113.7, for=_hidden, for=10.1.1.1")]);
        assert_eq!(client_address(peer, &h, &p), ip("10.1.1.1"));
        let h = headers(&[("x-forwarded-for", "203.0.113.7, garbage")]);
        assert_eq!(client_address(peer, &h, &p), peer);
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(client_address(peer, &h, &p), peer);
    }

    #[test]
    fn all_trusted_entries_return_the_leftmost() {
        let h = headers(&[("x-forwarded-for", "10.3.3.3, 10.2.2.2, 10.1.1.1")]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &proxies()),
            ip("10.3.3.3")
        );
    }

    #[test]
    fn empty_or_absent_headers_return_the_peer() {
        let p = proxies();
        let peer = ip("10.0.0.1");
        assert_eq!(client_address(peer, &HeaderMap::new(), &p), peer);
        let h = headers(&[("x-forwarded-for", "")]);
        assert_eq!(client_address(peer, &h, &p), peer);
        let h = headers(&[("x-forwarded-for", " , ,")]);
        assert_eq!(client_address(peer, &h, &p), peer);
        let h = headers(&[("forwarded", ""), ("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(client_address(peer, &h, &p), peer);
    }

    #[test]
    fn header_values_that_are_not_visible_ascii_are_ignored() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        h.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"198.51.100.1\xff").unwrap(),
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &proxies()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn v4_mapped_v6_peer_matches_a_v4_cidr() {
        let p = proxies();
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert!(p.is_trusted(ip("::ffff:10.0.0.1")));
        assert_eq!(
            client_address(ip("::ffff:10.0.0.1"), &h, &p),
            ip("203.0.113.7")
        );
        // An untrusted mapped peer comes back as plain IPv4.
        assert_eq!(
            client_address(ip("::ffff:203.0.113.9"), &h, &p),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn v4_mapped_header_entries_and_nets_are_treated_as_ipv4() {
        let p = trusted(&["::ffff:10.0.0.0/104"]);
        assert_eq!(p.nets(), &["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert!(p.is_trusted(ip("10.1.2.3")));
        let h = headers(&[("x-forwarded-for", "::ffff:203.0.113.7, ::ffff:10.1.1.1")]);
        assert_eq!(client_address(ip("10.0.0.1"), &h, &p), ip("203.0.113.7"));
    }

    #[test]
    fn a_header_with_ten_thousand_entries_is_bounded() {
        let p = proxies();
        let peer = ip("10.0.0.1");
        // An attacker entry far to the left of 9,999 trusted hops is never reached.
        let mut entries = vec!["203.0.113.66".to_owned()];
        entries.extend((1..10_000).map(|i| format!("10.0.{}.{}", i / 256, i % 256)));
        let h = headers(&[("x-forwarded-for", &entries.join(", "))]);
        let leftmost_considered = ip(&entries[entries.len() - MAX_HOPS]);
        assert_eq!(client_address(peer, &h, &p), leftmost_considered);

        let forwarded: Vec<String> = entries.iter().map(|e| format!("for={e}")).collect();
        let h = headers(&[("forwarded", &forwarded.join(","))]);
        assert_eq!(client_address(peer, &h, &p), leftmost_considered);

        let h = headers(&[("x-forwarded-for", &"garbage,".repeat(10_000))]);
        assert_eq!(client_address(peer, &h, &p), peer);
    }
}
