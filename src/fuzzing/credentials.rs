//! Credential parsing (`Authorization`, `X-Api-Key`, the JWT cookie): a request is anonymous
//! only when it carries no credential header, is authenticated only by a secret it really
//! holds, and a refusal never repeats a secret.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::jwt;
use crate::identity::basic::{BasicUsers, UserSettings};
use crate::identity::throttle::{FailedSignIns, SignInThrottle};
use crate::identity::{ApiKeys, Authenticator, Identity, PrincipalKind};
use crate::secret::Secret;

/// The one API key the authenticator knows (test-only).
pub const API_KEY: &str = "fuzz-only-api-key-0123456789";
/// The one Basic user and its password (test-only).
pub const USER: &str = "alice";
pub const PASSWORD: &str = "fuzz-only-password";
/// The cookie that may carry a JWT.
pub const COOKIE: &str = "session";

/// A request's headers, built from the credentials the authenticator looks for.
#[derive(Debug, Arbitrary)]
pub struct Input {
    line: Line,
    lines: Vec<Line>,
}

#[derive(Debug, Arbitrary)]
struct Line {
    name: Name,
    value: Value,
}

#[derive(Debug, Arbitrary)]
enum Name {
    Authorization,
    XApiKey,
    Cookie,
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Value {
    Raw(Vec<u8>),
    /// `<scheme> <credential>`, with the scheme spelled any way.
    Scheme(Scheme, Credential),
    /// `Basic base64(user:password)`.
    Basic(Option<String>, Option<String>),
    /// `name=value; ...`.
    Cookies(Vec<(Option<String>, Credential)>),
    Credential(Credential),
}

#[derive(Debug, Arbitrary)]
enum Scheme {
    Bearer,
    Basic,
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Credential {
    ApiKey,
    Jwt(jwt::Input),
    Text(String),
}

impl Credential {
    fn text(&self) -> String {
        match self {
            Credential::ApiKey => API_KEY.into(),
            Credential::Jwt(input) => input.token(),
            Credential::Text(text) => text.clone(),
        }
    }
}

impl Input {
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in std::iter::once(&self.line).chain(&self.lines) {
            let name = match &line.name {
                Name::Authorization => http::header::AUTHORIZATION,
                Name::XApiKey => HeaderName::from_static("x-api-key"),
                Name::Cookie => http::header::COOKIE,
                Name::Other(name) => match HeaderName::from_bytes(name.as_bytes()) {
                    Ok(name) => name,
                    Err(_) => continue,
                },
            };
            let value = match &line.value {
                Value::Raw(bytes) => bytes.clone(),
                Value::Scheme(scheme, credential) => {
                    let scheme = match scheme {
                        Scheme::Bearer => "Bearer",
                        Scheme::Basic => "basic",
                        Scheme::Other(scheme) => scheme,
                    };
                    format!("{scheme} {}", credential.text()).into_bytes()
                }
                Value::Basic(user, password) => {
                    let user = user.as_deref().unwrap_or(USER);
                    let password = password.as_deref().unwrap_or(PASSWORD);
                    format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))).into_bytes()
                }
                Value::Cookies(cookies) => cookies
                    .iter()
                    .map(|(name, credential)| {
                        format!(
                            "{}={}",
                            name.as_deref().unwrap_or(COOKIE),
                            credential.text()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
                    .into_bytes(),
                Value::Credential(credential) => credential.text().into_bytes(),
            };
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                headers.append(name, value);
            }
        }
        headers
    }
}

/// An argon2id hash of [`PASSWORD`] with the cheapest parameters, so the check stays fast.
fn password_hash() -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"fuzz-only-salt!!").expect("a 16-byte salt encodes");
    let params = argon2::Params::new(8, 1, 1, None).expect("the smallest argon2 parameters");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(PASSWORD.as_bytes(), &salt)
        .expect("hashing with valid parameters works")
        .to_string()
}

/// An authenticator with one API key, one Basic user and one HS256 issuer read from a cookie.
pub fn authenticator() -> Authenticator {
    let mut api_keys = ApiKeys::default();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, API_KEY.as_bytes());
    let digest = digest.as_ref().try_into().expect("a SHA-256 digest");
    api_keys.insert(digest, "ci".into(), vec![]);
    let user = UserSettings {
        name: USER.into(),
        password_hash: Secret::new(password_hash()),
        groups: vec![],
    };
    Authenticator {
        api_keys,
        basic: Some(BasicUsers::new(vec![user], Duration::from_secs(60), 2)),
        jwt: Some(Arc::new(jwt::verifier(Some(COOKIE)))),
        jwt_cookies: vec![COOKIE.into()],
        // Never in backoff: every input is judged on its credential alone.
        throttle: Arc::new(SignInThrottle::new(FailedSignIns {
            allowed: u32::MAX,
            ..FailedSignIns::default()
        })),
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = super::runtime();
}

/// Identify the caller and check the verdict.
pub fn check(input: Input) {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    let auth = AUTH.get_or_init(authenticator);
    let headers = input.headers();
    let client = std::net::IpAddr::from([192, 0, 2, 1]);
    let identity = RUNTIME.with(|runtime| runtime.block_on(auth.identify(&headers, client)));

    let values: Vec<&[u8]> = headers.values().map(HeaderValue::as_bytes).collect();
    let sent = |secret: &str| {
        values
            .iter()
            .any(|value| value.windows(secret.len()).any(|w| w == secret.as_bytes()))
    };
    let has_credential_header =
        headers.contains_key(http::header::AUTHORIZATION) || headers.contains_key("x-api-key");
    match identity {
        Ok(Identity::Anonymous) => assert!(
            !has_credential_header,
            "a credential header fell through to anonymous: {headers:?}"
        ),
        Ok(Identity::Authenticated(principal)) => match &principal.kind {
            PrincipalKind::ApiKey => {
                assert_eq!(&*principal.name, "ci");
                assert!(sent(API_KEY), "an API key caller without the key");
            }
            PrincipalKind::User => {
                assert_eq!(&*principal.name, USER);
                let basic = STANDARD.encode(format!("{USER}:{PASSWORD}"));
                assert!(sent(&basic), "a Basic caller without the password");
            }
            PrincipalKind::Jwt { .. } => {
                let signed = values.iter().any(|value| {
                    String::from_utf8_lossy(value)
                        .split(|c: char| c.is_whitespace() || matches!(c, ';' | '=' | '"' | ','))
                        .any(|token| jwt::expected(token).may_accept)
                });
                assert!(signed, "a JWT caller without a token the issuer signed");
            }
        },
        Err(error) => {
            let reason = error.to_string();
            for secret in [API_KEY, PASSWORD] {
                assert!(
                    !reason.contains(secret),
                    "the refusal repeats a secret: {reason}"
                );
            }
            assert!(!error.is_unavailable(), "{error:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_identify_only_whoever_holds_them() {
        super::super::property(super::check);
    }
}
