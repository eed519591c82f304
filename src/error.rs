//! The request-path error, and the one place that turns it into a response.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use crate::Body;
use crate::identity::AuthError;
use crate::token::SignError;

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
    #[error("this video needs an API key (Authorization: Bearer <key> or X-Api-Key)")]
    CredentialsRequired,
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
}

impl RequestError {
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RequestError::NotFound(_) => StatusCode::NOT_FOUND,
            RequestError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            RequestError::UriTooLong => StatusCode::URI_TOO_LONG,
            RequestError::InvalidCredentials(_) | RequestError::CredentialsRequired => {
                StatusCode::UNAUTHORIZED
            }
            RequestError::Forbidden(_) => StatusCode::FORBIDDEN,
            RequestError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestError::Internal(_) | RequestError::Signing(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The reason shown to the client: the message for 4xx, nothing internal for 5xx.
    fn public_reason(&self) -> String {
        if self.status().is_server_error() {
            "internal error".to_string()
        } else {
            self.to_string()
        }
    }

    /// Log once, at a level that matches whose fault it is, and build the response.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, source = ?std::error::Error::source(&self), "request failed");
        } else {
            tracing::debug!(%status, reason = %self, "request refused");
        }
        let body = serde_json::json!({ "error": self.public_reason(), "status": status.as_u16() });
        let mut response = json_response(status, &body);
        let headers = response.headers_mut();
        match self {
            RequestError::MethodNotAllowed { allow } => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            RequestError::InvalidCredentials(_) | RequestError::CredentialsRequired => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"streamgate\""),
                );
            }
            _ => {}
        }
        response
    }
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
    fn unauthorized_carries_a_challenge_and_405_its_allow_list() {
        let response = RequestError::CredentialsRequired.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key(WWW_AUTHENTICATE));
        let response = RequestError::MethodNotAllowed { allow: "POST" }.into_response();
        assert_eq!(response.headers()[ALLOW], "POST");
    }
}
