//! A video's `allowedOrigins`: which sites may embed it, as Stream matches them.
//!
//! An entry is a host name, optionally `*.`-prefixed (any subdomain, at any depth, but not the
//! name itself) and optionally with a port (`localhost:3000`: an entry without a port matches
//! only the default port). No scheme, no path.

use http::Uri;

/// The longest entry accepted (a DNS name is at most 253 characters, plus `*.` and a port).
const MAX_ENTRY_LEN: usize = 253 + 2 + 6;

/// `entry` lowercased when it is a valid `allowedOrigins` entry; `Err` says what is wrong.
pub fn normalize_entry(entry: &str) -> Result<String, &'static str> {
    if entry.is_empty() || entry.len() > MAX_ENTRY_LEN {
        return Err("must be a host name such as example.com or *.example.com");
    }
    if entry.contains("://") || entry.contains('/') {
        return Err("must be a host name without scheme or path");
    }
    let entry = entry.to_ascii_lowercase();
    let (host, _port) = split_port(&entry).ok_or("has a port that is not a number 1-65535")?;
    let name = host.strip_prefix("*.").unwrap_or(host);
    if !is_host_name(name) {
        return Err("must be a host name such as example.com or *.example.com");
    }
    Ok(entry)
}

/// Whether the page at `page_url` (an `Origin` or `Referer` value) may embed a video whose
/// `allowedOrigins` is `allowed` (already normalized). `false` for a value that is not an
/// absolute URL.
pub fn allows(allowed: &[String], page_url: &str) -> bool {
    let Some((host, port)) = page_host(page_url) else {
        return false;
    };
    allowed.iter().any(|entry| {
        let Some((pattern, entry_port)) = split_port(entry) else {
            return false;
        };
        if entry_port != port {
            return false;
        }
        match pattern.strip_prefix("*.") {
            Some(parent) => host
                .strip_suffix(parent)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => host == pattern,
        }
    })
}

/// The lowercased host of an absolute URL and its port when it is not the scheme's default.
fn page_host(page_url: &str) -> Option<(String, Option<u16>)> {
    let uri: Uri = page_url.trim().parse().ok()?;
    let authority = uri.authority()?;
    let default_port = match uri.scheme_str()? {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let host = authority.host().to_ascii_lowercase();
    let port = authority.port_u16().filter(|&port| port != default_port);
    Some((host, port))
}

/// `host[:port]` split; `None` when the port is not a number 1-65535.
fn split_port(entry: &str) -> Option<(&str, Option<u16>)> {
    let Some((host, digits)) = entry.rsplit_once(':') else {
        return Some((entry, None));
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = digits.parse().ok().filter(|&port| port != 0)?;
    Some((host, Some(port)))
}

/// Labels of letters, digits and inner hyphens, 1-63 characters each, at most 253 in all.
fn is_host_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries
            .iter()
            .map(|entry| normalize_entry(entry).unwrap())
            .collect()
    }

    #[test]
    fn entries_are_host_names_with_optional_wildcard_and_port() {
        for good in [
            "example.com",
            "*.Example.com",
            "localhost:3000",
            "192.0.2.1",
        ] {
            assert!(normalize_entry(good).is_ok(), "{good}");
        }
        assert_eq!(normalize_entry("*.Example.COM").unwrap(), "*.example.com");
        for bad in [
            "",
            "https://example.com",
            "example.com/path",
            "exa mple.com",
            "*",
            "*.",
            "a.*.example.com",
            "-bad.example.com",
            "example.com:0",
            "example.com:99999",
            "example.com:+80",
            "example..com",
        ] {
            assert!(normalize_entry(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_wildcard_covers_subdomains_but_not_the_name_itself() {
        let allowed = list(&["*.example.com"]);
        assert!(allows(&allowed, "https://www.example.com"));
        assert!(allows(&allowed, "https://a.b.example.com/page?x=1"));
        assert!(!allows(&allowed, "https://example.com"));
        assert!(!allows(&allowed, "https://badexample.com"));
    }

    #[test]
    fn ports_must_match_and_default_ports_are_implied() {
        let allowed = list(&["localhost:3000", "example.com"]);
        assert!(allows(&allowed, "http://localhost:3000/embed"));
        assert!(!allows(&allowed, "http://localhost:4000"));
        assert!(!allows(&allowed, "http://localhost"));
        assert!(allows(&allowed, "https://example.com:443/"));
        assert!(allows(&allowed, "http://EXAMPLE.com"));
        assert!(!allows(&allowed, "https://example.com:8443"));
    }

    #[test]
    fn values_that_are_not_absolute_urls_match_nothing() {
        let allowed = list(&["example.com"]);
        for value in ["null", "example.com", "", "ftp://example.com"] {
            assert!(!allows(&allowed, value), "{value}");
        }
    }
}
