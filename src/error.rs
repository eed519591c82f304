//! The request-path error, and the one place that turns it into a response: JSON for APIs,
//! a small HTML page for browsers, a sign-in redirect when one is configured.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::Body;
use crate::identity::AuthError;
use crate::proxy::UpstreamError;
use crate::token::SignError;
use crate::untrusted::Untrusted;

/// Everything that can stop a request. Client mistakes map to 4xx with a reason; our own
/// faults map to 500 with no internals in the body.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed; use {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("request path is too long")]
    UriTooLong,
    #[error("{0}")]
    InvalidCredentials(#[from] AuthError),
    /// No credential where one is needed; says which kinds this gateway accepts.
    #[error("this video requires you to sign in with {0}")]
    CredentialsRequired(Arc<str>),
    /// `/sign-in` for a visitor who has not.
    #[error("sign in to see the videos open to you")]
    SignIn,
    #[error("{0}")]
    Forbidden(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("internal error: {0}")]
    Internal(&'static str),
    #[error("token signing failed")]
    Signing(#[source] Arc<SignError>),
    /// The exchange with the Stream origin failed (proxy mode): 504 when it did not answer
    /// in time, 502 otherwise.
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    /// The Stream origin answered with a server error of its own (proxy mode): 502.
    #[error("the Stream origin answered {0}")]
    UpstreamStatus(u16),
    /// Over a token-minting rate limit.
    #[error("too many requests; retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    /// The gateway took longer than `limits.request_timeout` to produce a response head.
    #[error("the request took longer than {0:?}")]
    Timeout(std::time::Duration),
    /// The client did not send its whole body within `limits.request_timeout`: its fault,
    /// not ours (408, not 503).
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
}

/// How to address a refusal to this particular client.
#[derive(Debug, Default)]
pub struct Audience<'a> {
    /// The client prefers HTML (a browser navigating).
    pub html: bool,
    /// `WWW-Authenticate` challenges for a 401.
    pub challenges: &'a [HeaderValue],
    /// Where to send a browser that must sign in, already carrying `return_to`.
    pub login: Option<HeaderValue>,
}

impl RequestError {
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RequestError::NotFound(_) => StatusCode::NOT_FOUND,
            RequestError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            RequestError::UriTooLong => StatusCode::URI_TOO_LONG,
            RequestError::InvalidCredentials(AuthError::Throttled { .. }) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            RequestError::InvalidCredentials(error) if error.is_unavailable() => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RequestError::InvalidCredentials(_)
            | RequestError::CredentialsRequired(_)
            | RequestError::SignIn => StatusCode::UNAUTHORIZED,
            RequestError::Forbidden(_) => StatusCode::FORBIDDEN,
            RequestError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestError::Signing(error) if matches!(**error, SignError::TimedOut(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RequestError::Internal(_) | RequestError::Signing(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            RequestError::Upstream(UpstreamError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            RequestError::Upstream(_) | RequestError::UpstreamStatus(_) => StatusCode::BAD_GATEWAY,
            RequestError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            RequestError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            RequestError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The reason shown to the client: the message for 4xx (and our temporary 503s), nothing
    /// internal for other 5xx.
    pub(crate) fn public_reason(&self) -> String {
        let status = self.status();
        let ours = matches!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR | StatusCode::NOT_IMPLEMENTED
        );
        if ours {
            "internal error".to_string()
        } else {
            self.to_string()
        }
    }

    /// A JSON response with a Bearer challenge on 401: for callers with no audience.
    pub fn into_response(self) -> Response<Body> {
        const BEARER: [HeaderValue; 1] = [HeaderValue::from_static("Bearer realm=\"streamgate\"")];
        self.render(&Audience {
            challenges: &BEARER,
            ..Audience::default()
        })
    }

    /// Log once, at a level that matches whose fault it is, and build the response.
    pub fn render(self, audience: &Audience<'_>) -> Response<Body> {
        let status = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(
                error = %Untrusted::new(&self.to_string()),
                cause = %Untrusted::new(&Causes(&self).to_string()),
                "request failed"
            );
        } else if matches!(
            status,
            StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT
        ) {
            tracing::warn!(
                error = %Untrusted::new(&self.to_string()),
                cause = %Untrusted::new(&Causes(&self).to_string()),
                "the Stream origin failed"
            );
        } else {
            tracing::debug!(%status, reason = %Untrusted::new(&self.to_string()), "request refused");
        }
        let needs_sign_in = status == StatusCode::UNAUTHORIZED;
        if let (true, true, Some(login)) = (needs_sign_in, audience.html, &audience.login) {
            return login_redirect(login.clone());
        }
        let reason = self.public_reason();
        let mut response = if audience.html {
            html_response(status, &reason)
        } else {
            let body = serde_json::json!({ "error": reason, "status": status.as_u16() });
            json_response(status, &body)
        };
        let headers = response.headers_mut();
        match self {
            RequestError::MethodNotAllowed { allow } => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            RequestError::TooManyRequests { retry_after_secs }
            | RequestError::InvalidCredentials(AuthError::Throttled {
                retry_after_secs, ..
            }) => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            _ if needs_sign_in => {
                for challenge in audience.challenges {
                    headers.append(WWW_AUTHENTICATE, challenge.clone());
                }
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}

/// An error's chain of causes, `: `-separated (empty when it has none). Each cause is our own
/// type or a library's I/O or protocol error: none carries a URL, a token or a header value.
struct Causes<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut cause = self.0.source();
        let mut first = true;
        while let Some(error) = cause {
            if !first {
                f.write_str(": ")?;
            }
            write!(f, "{error}")?;
            first = false;
            cause = error.source();
        }
        Ok(())
    }
}

/// Whether the client asked for HTML ahead of JSON: a browser navigating, not an API call.
pub fn prefers_html(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    match (accept.find("text/html"), accept.find("application/json")) {
        (Some(html), Some(json)) => html < json,
        (Some(_), None) => true,
        _ => false,
    }
}

fn login_redirect(location: HeaderValue) -> Response<Body> {
    let mut response = Response::new(Body::new(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    let headers = response.headers_mut();
    headers.insert(LOCATION, location);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Echo at most a short prefix of client input in error messages, escaped.
pub fn truncate(text: &str) -> Untrusted<'_> {
    Untrusted::limited(text, 64)
}

/// A JSON response that no cache may keep.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A small HTML page stating the status and the reason.
fn html_response(status: StatusCode, reason: &str) -> Response<Body> {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#222}}</style>\
         </head><body><h1>{title}</h1><p>{}</p></body></html>\n",
        escape_html(reason)
    );
    let mut response = Response::new(Body::new(Bytes::from(page)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_faults_hide_their_cause() {
        let error = RequestError::Signing(Arc::new(SignError::Task("panicked at secret".into())));
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(error.public_reason(), "internal error");
    }

    #[test]
    fn unauthorized_carries_every_challenge_and_405_its_allow_list() {
        let challenges = [
            HeaderValue::from_static("Bearer realm=\"x\""),
            HeaderValue::from_static("Basic realm=\"x\", charset=\"UTF-8\""),
        ];
        let response = RequestError::CredentialsRequired("an API key".into()).render(&Audience {
            challenges: &challenges,
            ..Audience::default()
        });
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers().get_all(WWW_AUTHENTICATE).iter().count(),
            2
        );
        let response = RequestError::MethodNotAllowed { allow: "POST" }.into_response();
        assert_eq!(response.headers()[ALLOW], "POST");
    }

    #[test]
    fn browsers_get_html_or_the_sign_in_redirect() {
        let page = RequestError::NotFound("no video `<script>`".into()).render(&Audience {
            html: true,
            ..Audience::default()
        });
        assert_eq!(page.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        let response = RequestError::CredentialsRequired("an API key".into()).render(&Audience {
            html: true,
            login: Some(HeaderValue::from_static("/login?return_to=%2Fwatch%2Fx")),
            ..Audience::default()
        });
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(
            response.headers()[LOCATION],
            "/login?return_to=%2Fwatch%2Fx"
        );
        // A 403 is never turned into a sign-in redirect.
        let forbidden = RequestError::Forbidden("no".into()).render(&Audience {
            html: true,
            login: Some(HeaderValue::from_static("/login")),
            ..Audience::default()
        });
        assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn html_reasons_are_escaped() {
        assert_eq!(
            escape_html("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn html_is_preferred_only_when_asked_for_first() {
        let accept = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT, HeaderValue::from_static(value));
            prefers_html(&headers)
        };
        assert!(accept("text/html,application/xhtml+xml,*/*;q=0.8"));
        assert!(!accept("application/json, text/html"));
        assert!(!accept("*/*"));
        assert!(!prefers_html(&HeaderMap::new()));
    }

    #[test]
    fn a_throttled_sign_in_is_429_with_retry_after_and_no_challenge() {
        let response = RequestError::InvalidCredentials(AuthError::Throttled {
            reason: crate::metrics::ThrottleReason::User,
            retry_after_secs: 8,
        })
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "8");
        assert!(response.headers().get(WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn identity_provider_outages_are_503_with_retry_after() {
        let response = RequestError::InvalidCredentials(AuthError::KeysUnavailable).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "5");
    }
}
