//! `streamgate inspect <token|url>`: what a Stream token says, whether it is genuine, when it
//! expires, and whether Stream would play it for a given viewer.

use std::fmt::Write as _;
use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::authz::policy::rfc3339;
use crate::emulator::VerifyingKeySpec;

use std::path::Path;
use std::process::ExitCode;

use crate::app::keys::{MissingKeys, load_signing_keys};
use crate::config::Settings;

/// What to inspect, and for whom.
#[derive(Debug, Clone)]
pub struct Inspection<'a> {
    /// A token, or a URL carrying one (`https://customer-x.cloudflarestream.com/<token>/iframe`).
    pub input: &'a str,
    /// Public halves of the configured keys (empty: the signature cannot be checked).
    pub keys: &'a [VerifyingKeySpec],
    pub ip: Option<IpAddr>,
    pub country: Option<&'a str>,
    /// Unix seconds.
    pub now: u64,
    /// Seconds east of UTC for the local-time column, when known.
    pub local_offset_secs: Option<i64>,
}

/// The report, and whether the token would be accepted right now (genuine and in its time
/// window; the caller's exit status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub text: String,
    pub acceptable: bool,
}

/// Why the input is not a token at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error(
        "no token found: expected a JWT (three base64url parts separated by dots) or a URL containing one"
    )]
    NoToken,
    #[error("the token has {0} parts; a JWT has three (header.claims.signature)")]
    Parts(usize),
    #[error("the {0} is not base64url-encoded JSON")]
    Undecodable(&'static str),
}

/// The token inside `input`: the input itself, or the URL path segment shaped like a JWT.
pub fn extract_token(input: &str) -> Result<&str, Malformed> {
    let input = input.trim();
    if !input.contains('/') {
        return if input.is_empty() {
            Err(Malformed::NoToken)
        } else {
            Ok(input)
        };
    }
    let path = input.split(['?', '#']).next().unwrap_or(input);
    path.split('/')
        // A JWT's header is a JSON object, so its base64url starts with `eyJ` (`{"`).
        .find(|segment| segment.starts_with("eyJ") && segment.split('.').count() == 3)
        .ok_or(Malformed::NoToken)
}

fn decode_part(part: &str, what: &'static str) -> Result<Map<String, Value>, Malformed> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| Malformed::Undecodable(what))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(Malformed::Undecodable(what)),
    }
}

/// A time claim as Stream accepts it: an integer or an integer string.
fn time_claim(claims: &Map<String, Value>, name: &str) -> Option<i64> {
    match claims.get(name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn describe_time(unix: i64, now: u64, local_offset_secs: Option<i64>) -> String {
    let utc = rfc3339(unix.max(0) as u64);
    let local = local_offset_secs
        .map(|offset| {
            let local = rfc3339((unix + offset).max(0) as u64);
            let sign = if offset < 0 { '-' } else { '+' };
            let offset = offset.unsigned_abs();
            format!(
                ", local {}{sign}{:02}:{:02}",
                local.trim_end_matches('Z'),
                offset / 3600,
                offset % 3600 / 60
            )
        })
        .unwrap_or_default();
    let delta = unix - now as i64;
    let relative = if delta >= 0 {
        format!(
            "in {}",
            humantime::format_duration(std::time::Duration::from_secs(delta as u64))
        )
    } else {
        format!(
            "{} ago",
            humantime::format_duration(std::time::Duration::from_secs(delta.unsigned_abs()))
        )
    };
    format!("{utc}{local} ({relative})")
}

/// Inspect a token; `Err` only when the input is not a token at all.
pub fn inspect(request: &Inspection<'_>) -> Result<Report, Malformed> {
    let token = extract_token(request.input)?;
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(Malformed::Parts(parts.len()));
    }
    let header = decode_part(parts[0], "header")?;
    let claims = decode_part(parts[1], "claims")?;
    let mut out = String::new();
    let pretty = |value: &Map<String, Value>| {
        serde_json::to_string_pretty(value)
            .unwrap_or_default()
            .replace('\n', "\n           ")
    };
    let _ = writeln!(out, "header     {}", pretty(&header));
    let _ = writeln!(out, "claims     {}", pretty(&claims));

    let mut acceptable = true;
    match time_claim(&claims, "exp") {
        Some(exp) => {
            let _ = writeln!(
                out,
                "expires    {}",
                describe_time(exp, request.now, request.local_offset_secs)
            );
            if exp <= request.now as i64 {
                acceptable = false;
                let _ = writeln!(out, "           EXPIRED: Stream refuses it");
            }
        }
        None => {
            acceptable = false;
            let _ = writeln!(
                out,
                "expires    missing or not an integer: Stream refuses it"
            );
        }
    }
    if let Some(nbf) = time_claim(&claims, "nbf") {
        let _ = writeln!(
            out,
            "not before {}",
            describe_time(nbf, request.now, request.local_offset_secs)
        );
        if nbf > request.now as i64 {
            acceptable = false;
            let _ = writeln!(out, "           NOT YET VALID");
        }
    }

    if request.keys.is_empty() {
        acceptable = false;
        let _ = writeln!(
            out,
            "signature  cannot be checked: no signing keys are configured"
        );
    } else {
        match crate::emulator::check_signature(token, request.keys) {
            Ok(kid) => {
                let _ = writeln!(out, "signature  valid (key {kid})");
            }
            Err(reason) => {
                acceptable = false;
                let ids: Vec<&str> = request.keys.iter().map(|k| k.id.as_str()).collect();
                let _ = writeln!(
                    out,
                    "signature  NOT VALID: {reason} (configured keys: {})",
                    ids.join(", ")
                );
            }
        }
    }

    if request.ip.is_some() || request.country.is_some() {
        let address = request.ip.unwrap_or(IpAddr::from([192, 0, 2, 1]));
        let empty = Value::Array(vec![]);
        let rules = claims.get("accessRules").unwrap_or(&empty);
        let viewer = format!(
            "viewer at {address}{}",
            request
                .country
                .map(|c| format!(" in {c}"))
                .unwrap_or_default()
        );
        let _ = match crate::emulator::judge_access_rules(rules, address, request.country) {
            Ok(None) => writeln!(out, "access     the rules let the {viewer} play it"),
            Ok(Some(kind)) => {
                acceptable = false;
                writeln!(
                    out,
                    "access     the {viewer} is blocked by rule on '{kind}'"
                )
            }
            Err(fields) => {
                acceptable = false;
                writeln!(out, "access     malformed rules: {}", fields.join(", "))
            }
        };
    }
    let _ = writeln!(
        out,
        "verdict    {}",
        if acceptable {
            "Stream would accept this token now"
        } else {
            "Stream would refuse this token now"
        }
    );
    Ok(Report {
        text: out,
        acceptable,
    })
}

// === the command ===

/// Print what is in `token`; exit 0 when Stream would accept it now.
pub(super) fn run(
    path: &Path,
    token: &str,
    ip: Option<std::net::IpAddr>,
    country: Option<&str>,
) -> ExitCode {
    // The local offset can only be read safely while the process has one thread.
    let local_offset_secs = time::UtcOffset::current_local_offset()
        .ok()
        .map(|offset| i64::from(offset.whole_seconds()));
    // Keys are optional: without a readable configuration the signature is not checked.
    let keys: Vec<VerifyingKeySpec> = Settings::load(path)
        .ok()
        .and_then(|settings| load_signing_keys(&settings, MissingKeys::Skip).ok())
        .map(|(keys, _)| keys.iter().map(VerifyingKeySpec::from).collect())
        .unwrap_or_default();
    let report = inspect(&Inspection {
        input: token,
        keys: &keys,
        ip,
        country,
        now: crate::token::signer::unix_now(),
        local_offset_secs,
    });
    match report {
        Ok(report) => {
            print!("{}", report.text);
            if report.acceptable {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(malformed) => {
            eprintln!("error: not a Stream token: {malformed}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_in_urls_or_taken_as_given() {
        let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
        assert_eq!(extract_token(token).unwrap(), token);
        assert_eq!(
            extract_token(&format!(
                "https://customer-x.cloudflarestream.com/{token}/iframe?autoplay=1"
            ))
            .unwrap(),
            token
        );
        assert_eq!(
            extract_token("https://example.com/watch/x"),
            Err(Malformed::NoToken)
        );
        assert_eq!(extract_token("  "), Err(Malformed::NoToken));
    }

    #[test]
    fn malformed_input_says_what_is_wrong() {
        let inspect = |input: &str| {
            super::inspect(&Inspection {
                input,
                keys: &[],
                ip: None,
                country: None,
                now: 0,
                local_offset_secs: None,
            })
        };
        assert_eq!(inspect("abc.def").unwrap_err(), Malformed::Parts(2));
        assert_eq!(
            inspect("!!!.e30.x").unwrap_err(),
            Malformed::Undecodable("header")
        );
        assert_eq!(
            inspect("e30.!!!.x").unwrap_err(),
            Malformed::Undecodable("claims")
        );
    }
}
