//! The client address behind trusted proxies: whatever the forwarding headers say, the answer
//! is the peer or an address written in them, the peer's own when it is not a trusted proxy,
//! and never an IPv4-mapped IPv6 form.

use std::collections::HashSet;
use std::net::IpAddr;

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::http::client_addr::{ClientAddress, TrustedProxies};

/// A peer, the networks it may be trusted in, and the request's forwarding headers.
#[derive(Debug, Arbitrary)]
pub struct Input {
    peer: Address,
    /// Usually a single network, so a random address is often outside it.
    trusted: Option<(Net, Vec<Net>)>,
    line: Line,
    lines: Vec<Line>,
}

/// An address and a prefix length (taken modulo the address's width).
type Net = (IpAddr, u8);

/// An address, often one inside a trusted network so the headers are read.
#[derive(Debug, Arbitrary)]
enum Address {
    Trusted(u8),
    Mapped(u8),
    Any(IpAddr),
}

#[derive(Debug, Arbitrary)]
struct Line {
    name: Name,
    value: Value,
}

#[derive(Debug, Arbitrary)]
enum Name {
    XForwardedFor,
    Forwarded,
    Other(OtherName),
}

#[derive(Debug, Arbitrary)]
enum OtherName {
    XRealIp,
    CfConnectingIp,
    TrueClientIp,
    Any(String),
}

#[derive(Debug, Arbitrary)]
enum Value {
    Hops(Hop, Vec<Hop>),
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Hop {
    address: HopAddress,
    form: Form,
    /// For `Forwarded`: parameters around `for=`.
    by: Option<String>,
    proto_first: bool,
}

#[derive(Debug, Arbitrary)]
enum HopAddress {
    Address(Address),
    Odd(OddNode),
}

#[derive(Debug, Arbitrary)]
enum OddNode {
    Unknown,
    Text(String),
}

#[derive(Debug, Arbitrary)]
enum Form {
    Plain,
    Port(u16),
    Bracketed,
    BracketedPort(u16),
    Quoted,
    Spaced,
}

impl Input {
    fn nets(&self) -> Vec<IpNet> {
        let Some((first, more)) = &self.trusted else {
            return Vec::new();
        };
        std::iter::once(first)
            .chain(more)
            .map(|(ip, prefix)| {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                IpNet::new(*ip, prefix % (max + 1)).expect("the prefix is in range")
            })
            .collect()
    }

    fn address(&self, address: &Address) -> IpAddr {
        let nets = self.nets();
        let pick = |i: &u8| {
            nets.get(usize::from(*i) % nets.len().max(1))
                .map(IpNet::addr)
        };
        match address {
            Address::Trusted(i) => pick(i).unwrap_or(IpAddr::from([10, 0, 0, 1])),
            Address::Mapped(i) => match pick(i) {
                Some(IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
                Some(other) => other,
                None => IpAddr::from([0, 0, 0, 0, 0, 0xffff, 0x0a00, 1]),
            },
            Address::Any(ip) => *ip,
        }
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in std::iter::once(&self.line).chain(&self.lines) {
            let name = match &line.name {
                Name::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
                Name::Forwarded => http::header::FORWARDED,
                Name::Other(OtherName::XRealIp) => HeaderName::from_static("x-real-ip"),
                Name::Other(OtherName::CfConnectingIp) => {
                    HeaderName::from_static("cf-connecting-ip")
                }
                Name::Other(OtherName::TrueClientIp) => HeaderName::from_static("true-client-ip"),
                Name::Other(OtherName::Any(name)) => {
                    match HeaderName::from_bytes(name.as_bytes()) {
                        Ok(name) => name,
                        Err(_) => continue,
                    }
                }
            };
            let forwarded = name == http::header::FORWARDED;
            let bytes = match &line.value {
                Value::Raw(bytes) => bytes.clone(),
                Value::Hops(first, more) => std::iter::once(first)
                    .chain(more)
                    .map(|hop| self.hop(hop, forwarded))
                    .collect::<Vec<_>>()
                    .join(", ")
                    .into_bytes(),
            };
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                headers.append(name, value);
            }
        }
        headers
    }

    fn hop(&self, hop: &Hop, forwarded: bool) -> String {
        let node = match &hop.address {
            HopAddress::Address(address) => {
                let ip = self.address(address);
                match (&hop.form, ip) {
                    (Form::Port(port), IpAddr::V4(v4)) => format!("{v4}:{port}"),
                    (Form::Port(port) | Form::BracketedPort(port), IpAddr::V6(v6)) => {
                        format!("[{v6}]:{port}")
                    }
                    (Form::Bracketed, IpAddr::V6(v6)) => format!("[{v6}]"),
                    (Form::Quoted, ip) => format!("\"{ip}\""),
                    (Form::Spaced, ip) => format!("  {ip}\t"),
                    (_, ip) => ip.to_string(),
                }
            }
            HopAddress::Odd(OddNode::Text(text)) => text.clone(),
            HopAddress::Odd(OddNode::Unknown) => "unknown".into(),
        };
        if !forwarded {
            return node;
        }
        let node = if node.contains(':') && !node.starts_with('"') {
            format!("\"{node}\"")
        } else {
            node
        };
        let by = hop
            .by
            .as_deref()
            .map(|by| format!(";by={by}"))
            .unwrap_or_default();
        if hop.proto_first {
            format!("proto=https;for={node}{by}")
        } else {
            format!("for={node}{by}")
        }
    }
}

/// Every address written anywhere in `headers`, read as liberally as any parser could
/// (quoted, escaped, bracketed, with ports).
fn addresses_in(headers: &HeaderMap) -> HashSet<IpAddr> {
    let mut found = HashSet::new();
    for value in headers.values() {
        let text = String::from_utf8_lossy(value.as_bytes()).replace('\\', "");
        for token in text.split([',', ';', '=', '"', ' ', '\t', '[', ']']) {
            if let Ok(ip) = token.parse::<IpAddr>() {
                found.insert(ip.to_canonical());
            }
            if let Some((host, _)) = token.rsplit_once(':')
                && let Ok(ip) = host.parse::<IpAddr>()
            {
                found.insert(ip.to_canonical());
            }
        }
    }
    found
}

/// Compute the client address and check it.
pub fn check(input: Input) {
    let trusted = TrustedProxies::new(input.nets());
    let peer = input.address(&input.peer);
    let headers = input.headers();
    let client = ClientAddress {
        trusted: trusted.clone(),
        header: Default::default(),
    }
    .resolve(peer, &headers);

    assert_eq!(
        client,
        client.to_canonical(),
        "an IPv4-mapped address came out"
    );
    let peer = peer.to_canonical();
    if !trusted.is_trusted(peer) {
        assert_eq!(client, peer, "an untrusted peer spoke for someone else");
        return;
    }
    assert!(
        client == peer || addresses_in(&headers).contains(&client),
        "{client} is neither the peer {peer} nor written in {headers:?}"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_client_address_is_the_peer_or_one_the_headers_name() {
        super::super::property(super::check);
    }
}
