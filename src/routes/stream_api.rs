//! `POST /accounts/{account_id}/stream/{video}/token`: Cloudflare Stream's token API, answered
//! by the gateway. An app or SDK that calls Stream's `/token` today points its base URL here
//! and gets tokens signed locally, still under the operator's policy.
//!
//! The request body is Stream's (`exp`, `nbf`, `downloadable`, `accessRules`; empty means
//! defaults) and so is the answer: `{"result": {"token"}, "success", "errors", "messages"}`.
//! A request may narrow what the deciding rule grants (an earlier `exp`, extra `block`
//! rules, no downloads) but never widen it: that is a 403 naming the field. Keys stay in the
//! gateway, so a client-supplied `id` or `pem` is refused.

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use crate::Body;
use crate::authz::narrow::TokenRequest;
use crate::config::is_account_id;
use crate::error::{Audience, RequestError, truncate};
use crate::identity::PrincipalKind;
use crate::request::Context;
use crate::request::route::{Target, check_video_id};
use crate::snapshot::Snapshot;
use crate::token::claims::{AccessRule, MAX_ACCESS_RULES};
use crate::token::signer::unix_now;
use crate::untrusted::Untrusted;

/// The error code Cloudflare's API uses for authentication failures.
const AUTHENTICATION_ERROR: u32 = 10000;

/// Answer one call, successes and failures both in Stream's envelope.
pub async fn create_token(
    snapshot: &Snapshot,
    ctx: &mut Context,
    head: &Parts,
    body: Incoming,
    account_id: &str,
    video: &str,
) -> Response<Body> {
    match token(snapshot, ctx, head, body, account_id, video).await {
        Ok(token) => {
            let body = json!({
                "result": {"token": token},
                "success": true,
                "errors": [],
                "messages": [],
            });
            crate::error::json_response(StatusCode::OK, &body)
        }
        Err(error) => stream_error(error, snapshot.bearer_challenge()),
    }
}

async fn token(
    snapshot: &Snapshot,
    ctx: &mut Context,
    head: &Parts,
    body: Incoming,
    account_id: &str,
    video_id: &str,
) -> Result<String, RequestError> {
    let settings = &snapshot.settings;
    if !settings.token_api.enabled {
        return Err(RequestError::NotFound(
            "the token API is turned off on this gateway".into(),
        ));
    }
    if head.method != Method::POST {
        return Err(RequestError::MethodNotAllowed { allow: "POST" });
    }
    if !is_account_id(account_id) {
        return Err(RequestError::BadRequest(format!(
            "`{}` is not an account id (32 hex characters)",
            truncate(account_id)
        )));
    }
    check_video_id(video_id)?;
    super::identify(snapshot, ctx, &head.headers).await?;
    match ctx.identity.principal().map(|p| &p.kind) {
        Some(PrincipalKind::ApiKey) => {}
        Some(_) => {
            return Err(RequestError::Forbidden(
                "the token API accepts API keys only (Authorization: Bearer <key>)".into(),
            ));
        }
        None => {
            return Err(RequestError::CredentialsRequired(Arc::from(
                "an API key (Authorization: Bearer <key>)",
            )));
        }
    }
    // Checked only for callers with a key: the account this gateway serves is not told to
    // anyone else.
    if let Some(ours) = &settings.token_api.account_id
        && !ours.eq_ignore_ascii_case(account_id)
    {
        return Err(RequestError::NotFound(format!(
            "this gateway does not mint tokens for account {account_id}"
        )));
    }
    let bytes = super::api::read_body(snapshot, ctx.deadline, &head.headers, body).await?;
    let requested = TokenRequest::parse(&bytes)?;

    let permit = snapshot.authz.authorize(ctx, video_id, Target::Player)?;
    let issued = permit.narrowed_token(&snapshot.cache, requested).await?;
    super::audit_token(snapshot, ctx, &permit, &issued, crate::audit::Via::TokenApi);
    tracing::debug!(
        video = %permit.video().uid,
        rule = permit.rule(),
        subject = crate::untrusted::clip(ctx.identity.subject(), crate::untrusted::LOG_CHARS),
        "token issued through the token API"
    );
    Ok(issued.token.expose().clone())
}

impl TokenRequest {
    /// An empty body (or `{}`) means Stream's defaults. A field set to `null` counts as
    /// absent.
    pub fn parse(body: &[u8]) -> Result<TokenRequest, RequestError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(TokenRequest::default());
        }
        let fields: Map<String, Value> = serde_json::from_slice(body).map_err(|error| {
            RequestError::BadRequest(if error.is_data() {
                "the body must be a JSON object".to_string()
            } else {
                format!("malformed JSON: {error}")
            })
        })?;
        let mut request = TokenRequest::default();
        for (name, value) in &fields {
            if value.is_null() {
                continue;
            }
            match name.as_str() {
                "id" | "pem" => {
                    return Err(RequestError::BadRequest(format!(
                        "`{name}`: this gateway signs with its own keys; send the request without `id` and `pem`"
                    )));
                }
                "exp" => request.exp = Some(unix_time(value, "exp")?),
                "nbf" => request.nbf = Some(unix_time(value, "nbf")?),
                "downloadable" => {
                    request.downloadable = Some(value.as_bool().ok_or_else(|| {
                        RequestError::BadRequest("`downloadable` must be true or false".into())
                    })?);
                }
                "accessRules" => request.access_rules = Some(access_rules(value)?),
                other => {
                    return Err(RequestError::BadRequest(format!(
                        "unknown field `{}`; a token request has exp, nbf, downloadable and accessRules",
                        truncate(other)
                    )));
                }
            }
        }
        Ok(request)
    }
}

/// A unix time in whole seconds (an integral float such as `1700000000.0` is accepted).
fn unix_time(value: &Value, field: &str) -> Result<u64, RequestError> {
    let seconds = match value {
        Value::Number(number) => number.as_u64().or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1e15)
                .map(|f| f as u64)
        }),
        _ => None,
    };
    seconds.ok_or_else(|| {
        RequestError::BadRequest(format!(
            "`{field}` must be a unix time in whole seconds, such as {}",
            unix_now() + 3600
        ))
    })
}

fn access_rules(value: &Value) -> Result<Vec<AccessRule>, RequestError> {
    let items = value
        .as_array()
        .ok_or_else(|| RequestError::BadRequest("`accessRules` must be an array".into()))?;
    if items.len() > MAX_ACCESS_RULES {
        return Err(RequestError::BadRequest(format!(
            "`accessRules` holds {} rules; Stream accepts at most {MAX_ACCESS_RULES}",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let rule: AccessRule = serde_json::from_value(item.clone()).map_err(|error| {
                RequestError::BadRequest(format!(
                    "`accessRules[{i}]`: {}",
                    Untrusted::new(&error.to_string())
                ))
            })?;
            rule.validate().map_err(|error| {
                RequestError::BadRequest(format!(
                    "`accessRules[{i}]`: {}",
                    Untrusted::new(&error.to_string())
                ))
            })?;
            Ok(rule)
        })
        .collect()
}

/// A failure in Cloudflare's API shape, keeping the status and headers (`WWW-Authenticate`
/// with `bearer`, the configured realm's challenge; `Allow`, `Retry-After`) of our own
/// rendering.
fn stream_error(error: RequestError, bearer: &[HeaderValue]) -> Response<Body> {
    let reason = error.public_reason();
    let status = error.status();
    let code = if status == StatusCode::UNAUTHORIZED {
        AUTHENTICATION_ERROR
    } else {
        u32::from(status.as_u16())
    };
    let mut response = error.render(&Audience {
        challenges: bearer,
        ..Audience::default()
    });
    let body = json!({
        "result": null,
        "success": false,
        "errors": [{"code": code, "message": reason}],
        "messages": [],
    });
    *response.body_mut() = Body::new(Bytes::from(body.to_string()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::narrow::narrow;
    use crate::token::TokenSettings;
    use crate::token::claims::CountryCode;
    use crate::token::claims::{RuleAction, Validity};
    use std::time::Duration;

    const NOW: u64 = 1_800_000_000;

    fn grant(ttl_secs: u64, downloadable: bool, rules: Vec<AccessRule>) -> TokenSettings {
        TokenSettings {
            ttl: Duration::from_secs(ttl_secs),
            downloadable,
            access_rules: Arc::from(rules),
            not_after: None,
        }
    }

    fn block_country(code: &str) -> AccessRule {
        AccessRule::Country {
            action: RuleAction::Block,
            country: vec![code.parse::<CountryCode>().unwrap()],
        }
    }

    fn reason(error: RequestError) -> (u16, String) {
        (error.status().as_u16(), error.to_string())
    }

    #[test]
    fn an_empty_body_gets_streams_defaults_within_the_grant() {
        for body in [&b""[..], b"  \n", b"{}", br#"{"exp": null}"#] {
            assert_eq!(TokenRequest::parse(body).unwrap(), TokenRequest::default());
        }
        let (settings, validity) = narrow(
            &grant(7200, true, vec![]),
            "r",
            TokenRequest::default(),
            NOW,
        )
        .unwrap();
        assert_eq!(validity.exp, NOW + 3600);
        assert_eq!(validity.nbf, NOW - 3600);
        assert!(!settings.downloadable, "Stream's default is no downloads");
        // A rule that grants less than an hour caps the default.
        let (_, validity) = narrow(
            &grant(600, false, vec![]),
            "r",
            TokenRequest::default(),
            NOW,
        )
        .unwrap();
        assert_eq!(validity.exp, NOW + 600);
    }

    #[test]
    fn a_grant_whose_window_ended_a_moment_ago_is_refused() {
        // The policy allowed the request in the last second of the rule's window; narrowing
        // reads the clock again a moment later.
        let mut ended = grant(3600, false, vec![]);
        ended.not_after = Some(NOW - 1);
        let later = TokenRequest {
            exp: Some(NOW + 60),
            ..TokenRequest::default()
        };
        for requested in [TokenRequest::default(), later] {
            let (status, reason) = reason(narrow(&ended, "r", requested, NOW).unwrap_err());
            assert_eq!(status, 403, "{reason}");
            assert!(reason.contains("`r`"), "{reason}");
        }
    }

    #[test]
    fn streams_documented_request_parses() {
        let body = br#"{
            "id": null,
            "exp": 1800003600,
            "nbf": 1799999000,
            "downloadable": true,
            "accessRules": [
                {"type": "ip.geoip.country", "action": "allow", "country": ["GB"]},
                {"type": "any", "action": "block"}
            ]
        }"#;
        let request = TokenRequest::parse(body).unwrap();
        assert_eq!(request.exp, Some(1_800_003_600));
        assert_eq!(request.nbf, Some(1_799_999_000));
        assert_eq!(request.downloadable, Some(true));
        assert_eq!(request.access_rules.unwrap().len(), 2);
    }

    #[test]
    fn bad_bodies_are_400s_naming_the_field() {
        for (body, needle) in [
            (&br#"{"id": "abc", "pem": "LS0t"}"#[..], "`id`"),
            (br#"{"pem": "LS0t"}"#, "`pem`"),
            (br#"{"exp": "soon"}"#, "`exp`"),
            (br#"{"exp": 1800000000.5}"#, "`exp`"),
            (br#"{"nbf": -5}"#, "`nbf`"),
            (br#"{"downloadable": "yes"}"#, "`downloadable`"),
            (br#"{"accessRules": {}}"#, "`accessRules`"),
            (
                br#"{"accessRules": [{"type": "ip.src", "action": "allow", "ip": ["nope"]}]}"#,
                "`accessRules[0]`",
            ),
            (
                br#"{"accessRules": [{"type": "ip.src", "action": "allow", "ip": []}]}"#,
                "`accessRules[0]`",
            ),
            (br#"{"access_rules": []}"#, "`access_rules`"),
            (br#"[1, 2]"#, "JSON object"),
            (br#"{"exp": "#, "malformed JSON"),
        ] {
            let (status, message) = reason(TokenRequest::parse(body).unwrap_err());
            assert_eq!(status, 400, "{message}");
            assert!(message.contains(needle), "{needle} not in {message}");
        }
        let six = format!(
            r#"{{"accessRules": [{}]}}"#,
            [r#"{"type": "any", "action": "block"}"#; 6].join(",")
        );
        let (status, message) = reason(TokenRequest::parse(six.as_bytes()).unwrap_err());
        assert_eq!(status, 400);
        assert!(message.contains("at most 5"), "{message}");
        // A float with no fraction is a whole second.
        let float = TokenRequest::parse(br#"{"exp": 1800000000.0}"#).unwrap();
        assert_eq!(float.exp, Some(1_800_000_000));
    }

    #[test]
    fn narrowing_is_allowed() {
        let granted = grant(7200, true, vec![block_country("KP")]);
        let requested = TokenRequest {
            exp: Some(NOW + 300),
            nbf: Some(NOW + 60),
            downloadable: Some(false),
            access_rules: Some(vec![block_country("RU")]),
        };
        let (settings, validity) = narrow(&granted, "r", requested, NOW).unwrap();
        assert_eq!(
            validity,
            Validity {
                nbf: NOW + 60,
                exp: NOW + 300
            }
        );
        assert!(!settings.downloadable);
        // The request's block rules come first, then the policy's.
        assert_eq!(
            &*settings.access_rules,
            &[block_country("RU"), block_country("KP")]
        );
        // With no rules from the policy, the request's are used as they are.
        let allow_gb = vec![
            AccessRule::Country {
                action: RuleAction::Allow,
                country: vec!["GB".parse().unwrap()],
            },
            AccessRule::Any {
                action: RuleAction::Block,
            },
        ];
        let requested = TokenRequest {
            access_rules: Some(allow_gb.clone()),
            ..TokenRequest::default()
        };
        let (settings, _) = narrow(&grant(3600, false, vec![]), "r", requested, NOW).unwrap();
        assert_eq!(&*settings.access_rules, &allow_gb[..]);
    }

    #[test]
    fn widening_is_a_403_naming_the_field() {
        let granted = grant(1800, false, vec![block_country("KP")]);
        let cases = [
            (
                TokenRequest {
                    exp: Some(NOW + 3600),
                    ..TokenRequest::default()
                },
                "`exp`",
            ),
            (
                TokenRequest {
                    downloadable: Some(true),
                    ..TokenRequest::default()
                },
                "`downloadable`",
            ),
            (
                TokenRequest {
                    access_rules: Some(vec![AccessRule::Any {
                        action: RuleAction::Allow,
                    }]),
                    ..TokenRequest::default()
                },
                "`accessRules`",
            ),
        ];
        for (requested, field) in cases {
            let (status, message) =
                reason(narrow(&granted, "members", requested, NOW).unwrap_err());
            assert_eq!(status, 403, "{message}");
            assert!(message.contains(field), "{field} not in {message}");
            assert!(message.contains("members"), "{message}");
        }
        // The rule's end caps exp too.
        let ending = TokenSettings {
            not_after: Some(NOW + 100),
            ..grant(7200, false, vec![])
        };
        let requested = TokenRequest {
            exp: Some(NOW + 200),
            ..TokenRequest::default()
        };
        assert_eq!(
            reason(narrow(&ending, "r", requested, NOW).unwrap_err()).0,
            403
        );
    }

    #[test]
    fn what_stream_refuses_is_a_400() {
        let granted = grant(24 * 3600, false, vec![]);
        for requested in [
            TokenRequest {
                exp: Some(NOW + 24 * 3600 + 1),
                ..TokenRequest::default()
            },
            TokenRequest {
                exp: Some(NOW - 1),
                ..TokenRequest::default()
            },
            TokenRequest {
                exp: Some(NOW + 100),
                nbf: Some(NOW + 100),
                ..TokenRequest::default()
            },
        ] {
            assert_eq!(
                reason(narrow(&granted, "r", requested, NOW).unwrap_err()).0,
                400
            );
        }
        // Five rules from the request plus one from the policy is six.
        let granted = grant(3600, false, vec![block_country("KP")]);
        let requested = TokenRequest {
            access_rules: Some(vec![block_country("RU"); 5]),
            ..TokenRequest::default()
        };
        let (status, message) = reason(narrow(&granted, "r", requested, NOW).unwrap_err());
        assert_eq!(status, 400);
        assert!(message.contains("6"), "{message}");
    }
}
