//! Who is asking: an API key, a Basic user, a JWT from a trusted identity provider, or nobody.
//!
//! The first credential present decides (Authorization header, then `X-Api-Key`, then a
//! configured JWT cookie); a credential that is present but invalid is an error, never a
//! fall-through to anonymous.

pub mod api_key;
pub mod basic;
pub mod hot;
pub mod jwt;
pub mod password_memory;
pub mod throttle;

use std::net::IpAddr;
use std::sync::Arc;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

pub use api_key::{ApiKeys, hash_api_key};
use basic::BasicCredentials;
use throttle::SignInThrottle;

use crate::metrics::ThrottleReason;

/// An authenticated caller: what rules can match on. Its `kind` says where the identity came
/// from, so a name from one source is never taken for the same name from another.
#[derive(Debug)]
pub struct Principal {
    pub kind: PrincipalKind,
    /// The user name, API key name, or the JWT's subject claim (in its issuer's namespace).
    /// Never a secret.
    pub name: Arc<str>,
    /// Group names, sorted and without duplicates.
    pub groups: Box<[Arc<str>]>,
    /// A JWT's verified claims, for `claim:` subjects; empty for other kinds.
    pub claims: serde_json::Map<String, Value>,
    /// [`Principal::label`], made once: the access log writes it for every request.
    label: Box<str>,
    /// [`Principal::audit_json`], made once: the audit trail writes it for every token.
    audit_json: Box<str>,
}

/// How a [`Principal`] proved who it is: its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A local API key (`api_keys`).
    ApiKey,
    /// HTTP Basic, a local user (`users`).
    User,
    /// A JWT from this issuer.
    Jwt { issuer: Arc<IssuerSource> },
}

/// A JWT issuer as rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSource {
    /// The exact `iss` its tokens carry.
    pub iss: Arc<str>,
    /// Its `name` in the configuration, which qualified subjects use
    /// (`user:<name>:<subject>`, `group:<name>:<group>`); `None` when it has none.
    pub name: Option<Arc<str>>,
    /// Whether its subjects and groups also count as local names, matching the unqualified
    /// `user:<name>` and `group:<name>` (the issuer's `shares_local_names`).
    pub shares_local_names: bool,
}

impl IssuerSource {
    /// A source with no name that shares no names (tests, `explain` without an issuer).
    pub fn unnamed(iss: &str) -> Self {
        Self {
            iss: iss.into(),
            name: None,
            shares_local_names: false,
        }
    }
}

/// A thread's copy of a principal: the same caller, in an allocation whose reference count
/// only that thread writes (see [`hot::HotSlots`]).
impl hot::ThreadCopy for Arc<Principal> {
    fn copy_for_thread(&self) -> Self {
        Arc::new(Principal {
            kind: self.kind.clone(),
            name: Arc::clone(&self.name),
            groups: self.groups.clone(),
            claims: self.claims.clone(),
            label: self.label.clone(),
            audit_json: self.audit_json.clone(),
        })
    }
}

impl Principal {
    /// A principal with `groups` sorted and deduplicated.
    pub fn new(
        kind: PrincipalKind,
        name: Arc<str>,
        groups: impl IntoIterator<Item = Arc<str>>,
        claims: serde_json::Map<String, Value>,
    ) -> Self {
        let mut groups: Vec<Arc<str>> = groups.into_iter().collect();
        groups.sort_unstable();
        groups.dedup();
        let label = match &kind {
            PrincipalKind::ApiKey => format!("api_key:{name}"),
            PrincipalKind::User => format!("user:{name}"),
            PrincipalKind::Jwt { .. } => format!("jwt:{name}"),
        }
        .into_boxed_str();
        let audit_json = audit_json(&kind, &label);
        Self {
            kind,
            name,
            groups: groups.into_boxed_slice(),
            claims,
            label,
            audit_json,
        }
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.binary_search_by(|g| (**g).cmp(group)).is_ok()
    }

    /// Whether the claim at `path` equals `value`: a string equal to it, a number or boolean
    /// that prints as it, or an array holding one of those.
    pub fn claim_equals(&self, path: &str, value: &str) -> bool {
        let Some(claim) = lookup_claim(&self.claims, path) else {
            return false;
        };
        let equals = |v: &Value| match v {
            Value::String(s) => s == value,
            Value::Number(n) => n.to_string() == value,
            Value::Bool(b) => (if *b { "true" } else { "false" }) == value,
            _ => false,
        };
        match claim {
            Value::Array(items) => items.iter().any(equals),
            other => equals(other),
        }
    }

    /// A short label for logs: `user:alice`, `api_key:ci`, `jwt:alice@idp`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Who this is, as the audit trail's JSON members: `"subject":<label>,"source":<how the
    /// identity was proven: api_key, basic or jwt>` and, for a JWT, `"issuer":<iss>`.
    pub fn audit_json(&self) -> &str {
        &self.audit_json
    }
}

/// [`Principal::audit_json`] for an anonymous caller.
pub const ANONYMOUS_AUDIT_JSON: &str = r#""subject":"anonymous","source":"anonymous""#;

fn audit_json(kind: &PrincipalKind, label: &str) -> Box<str> {
    let quoted = |text: &str| {
        serde_json::to_string(crate::untrusted::clip(text, crate::untrusted::LOG_CHARS))
            .unwrap_or_else(|_| "\"\"".to_string())
    };
    let subject = quoted(label);
    match kind {
        PrincipalKind::ApiKey => format!(r#""subject":{subject},"source":"api_key""#),
        PrincipalKind::User => format!(r#""subject":{subject},"source":"basic""#),
        PrincipalKind::Jwt { issuer } => format!(
            r#""subject":{subject},"source":"jwt","issuer":{}"#,
            quoted(&issuer.iss)
        ),
    }
    .into_boxed_str()
}

/// The claim at a dotted `path` (`realm_access.roles`); a key that itself contains dots is
/// found too when it is present whole.
pub fn lookup_claim<'a>(
    claims: &'a serde_json::Map<String, Value>,
    path: &str,
) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// The caller, as far as the gateway could tell.
#[derive(Clone, Debug)]
pub enum Identity {
    /// No credential was presented.
    Anonymous,
    Authenticated(Arc<Principal>),
}

impl Identity {
    pub fn is_authenticated(&self) -> bool {
        matches!(self, Identity::Authenticated(_))
    }

    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Identity::Anonymous => None,
            Identity::Authenticated(principal) => Some(principal),
        }
    }

    /// A name for logs: never a secret.
    pub fn subject(&self) -> &str {
        match self {
            Identity::Anonymous => "anonymous",
            Identity::Authenticated(principal) => &principal.name,
        }
    }
}

/// Why the presented credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the API key is not valid")]
    InvalidApiKey,
    #[error("the Authorization header is malformed: {0}")]
    MalformedAuthorization(&'static str),
    /// `scheme` is named only when it is a known scheme: anything else may be a secret sent
    /// without one.
    #[error(
        "unsupported authorization scheme{}; use {accepted}",
        .scheme.map(|s| format!(" `{s}`")).unwrap_or_default()
    )]
    UnsupportedScheme {
        scheme: Option<&'static str>,
        accepted: String,
    },
    /// The same answer for an unknown user and a wrong password.
    #[error("unknown user or wrong password")]
    InvalidPassword,
    /// A JWT that failed verification; the reason names no secret.
    #[error("the token was refused: {0}")]
    InvalidToken(String),
    /// The issuer's keys could not be fetched yet (503, retry later).
    #[error("the identity provider's keys are not available yet; try again shortly")]
    KeysUnavailable,
    /// Too many password checks are queued (503, retry later).
    #[error("too many sign-ins at once; try again shortly")]
    Busy,
    /// Refused before the credential was checked (429 with `Retry-After`): the address or
    /// user name is in its backoff window after failed sign-ins, or the address has as many
    /// password checks running and waiting as it may.
    #[error("{}; retry in {retry_after_secs} s", throttle_reason(*.reason))]
    Throttled {
        reason: ThrottleReason,
        retry_after_secs: u64,
    },
}

fn throttle_reason(reason: ThrottleReason) -> &'static str {
    match reason {
        ThrottleReason::Address => "too many failed sign-ins from this address",
        ThrottleReason::User => "too many failed sign-ins for this user name",
        ThrottleReason::Queued => "too many sign-ins from this address are being checked at once",
    }
}

impl AuthError {
    /// Whether this is the server's temporary state rather than the caller's mistake.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AuthError::KeysUnavailable | AuthError::Busy)
    }

    /// Whether a credential was checked and found wrong (a guess that failed), as opposed to
    /// a malformed header, a check that could not run, or a refusal before checking.
    pub fn is_failed_credential(&self) -> bool {
        matches!(
            self,
            AuthError::InvalidApiKey | AuthError::InvalidPassword | AuthError::InvalidToken(_)
        )
    }
}

/// A keyed hash of credentials, for verification caches: keyed with a random per-process
/// key, so the cache never holds anything from which a password or token could be checked
/// offline, and cache keys cannot be predicted from outside.
pub struct CredentialHasher {
    key: hmac::Key,
}

impl CredentialHasher {
    /// A hasher with a fresh random key.
    pub fn new() -> Self {
        let mut secret = [0u8; 32];
        // The system RNG failing is not recoverable; an all-zero key would still be a keyed
        // hash, but make the failure loud instead.
        SystemRandom::new()
            .fill(&mut secret)
            .expect("the system random number generator failed");
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        }
    }

    /// HMAC-SHA256 over `parts`, each prefixed with its length so boundaries cannot shift.
    pub fn digest(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.key);
        // Short inputs (a user name and password) are joined on the stack and hashed in one
        // update: each update call costs as much as hashing a block.
        let mut joined = [0u8; 256];
        let mut len = 0;
        for part in parts {
            let end = len + 8 + part.len();
            if end > joined.len() {
                len = usize::MAX;
                break;
            }
            joined[len..len + 8].copy_from_slice(&(part.len() as u64).to_be_bytes());
            joined[len + 8..end].copy_from_slice(part);
            len = end;
        }
        if len == usize::MAX {
            for part in parts {
                context.update(&(part.len() as u64).to_be_bytes());
                context.update(part);
            }
        } else {
            context.update(&joined[..len]);
        }
        let tag = context.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

impl Default for CredentialHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for CredentialHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialHasher(***)")
    }
}

/// A credential found in a request, not yet verified. Borrows from the headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential<'a> {
    ApiKey(&'a str),
    /// The base64 part of `Authorization: Basic ...`.
    Basic(&'a str),
    Jwt(&'a str),
}

/// Every configured way of proving who you are.
#[derive(Default)]
pub struct Authenticator {
    pub api_keys: ApiKeys,
    /// Present when the policy lists users.
    pub basic: Option<basic::BasicUsers>,
    /// Present when the policy trusts JWT issuers.
    pub jwt: Option<Arc<jwt::JwtVerifier>>,
    /// Cookies that may carry a JWT, from the issuers' `cookie` settings.
    pub jwt_cookies: Vec<String>,
    /// Failed sign-ins per address and user name (`auth.failed_sign_ins`); carried over by a
    /// reload that does not change those settings.
    pub throttle: Arc<SignInThrottle>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("api_keys", &self.api_keys.len())
            .field("basic", &self.basic.is_some())
            .field("jwt", &self.jwt.is_some())
            .field("jwt_cookies", &self.jwt_cookies)
            .field("throttle", &self.throttle)
            .finish()
    }
}

/// Where an API key may also be sent; a constant, so a lookup does not parse the name.
const X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

impl Authenticator {
    /// Identify the caller from request headers, sent from `client`. `Ok(Anonymous)` only
    /// when no credential is present at all.
    ///
    /// Before a credential is verified, the throttle is asked whether `client` (and for HTTP
    /// Basic, the user name) is in a backoff window after failed sign-ins
    /// ([`AuthError::Throttled`]); the outcome is then counted for both.
    pub async fn identify(
        &self,
        headers: &http::HeaderMap,
        client: IpAddr,
    ) -> Result<Identity, AuthError> {
        let Some(credential) = self.credential(headers)? else {
            return Ok(Identity::Anonymous);
        };
        // A repeat Basic caller is found by a keyed hash of the credentials as sent, before
        // they are decoded. A remembered check is answered only as a check would be: after
        // the throttle, for the user name it was made for (the user's name, as the decoded
        // credentials would give it). A caller it does not know is hashed again by the full
        // check, which runs argon2: not worth carrying the key there.
        if let (Credential::Basic(encoded), Some(users)) = (credential, &self.basic)
            && let Some(principal) = users.recent(encoded)
        {
            let user = Some(&*principal.name);
            self.throttle.check(client, user)?;
            self.throttle.succeeded(client, user);
            return Ok(Identity::Authenticated(principal));
        }
        let basic = match credential {
            Credential::Basic(encoded) => Some(BasicCredentials::decode(encoded)?),
            _ => None,
        };
        let user = basic.as_ref().map(BasicCredentials::user);
        self.throttle.check(client, user)?;
        let verified = self.verify(credential, basic.as_ref(), client).await;
        match &verified {
            Ok(_) => self.throttle.succeeded(client, user),
            // A wrong password was counted by the password check itself (see
            // [`ThrottleGate`]), before the address's next check could start.
            Err(error) if error.is_failed_credential() && basic.is_none() => {
                self.throttle.failed(client, None)
            }
            Err(_) => {}
        }
        verified.map(Identity::Authenticated)
    }

    /// Verify the credential found (`basic` is a Basic one, decoded).
    async fn verify(
        &self,
        credential: Credential<'_>,
        basic: Option<&BasicCredentials>,
        client: IpAddr,
    ) -> Result<Arc<Principal>, AuthError> {
        match (credential, basic, &self.basic) {
            (Credential::ApiKey(key), _, _) => self.api_keys.verify(key),
            // Boxed: these futures are large (a password check on the blocking pool, a key
            // fetch), and anonymous and API-key callers would otherwise carry their space.
            (Credential::Basic(_), Some(credentials), Some(users)) => {
                let gate = ThrottleGate {
                    throttle: &self.throttle,
                    client,
                    user: credentials.user(),
                };
                Box::pin(users.verify_credentials(credentials, client, &gate)).await
            }
            (Credential::Basic(_), _, _) => Err(self.unsupported("Basic")),
            (Credential::Jwt(token), _, _) => match &self.jwt {
                Some(jwt) => match jwt.recent(token) {
                    Ok(principal) => Ok(principal),
                    Err(cache_key) => Box::pin(jwt.verify_keyed(token, cache_key)).await,
                },
                None => Err(AuthError::InvalidApiKey),
            },
        }
    }

    /// Whether the request carries a credential to verify (a malformed one included).
    pub fn presents_credential(&self, headers: &http::HeaderMap) -> bool {
        !matches!(self.credential(headers), Ok(None))
    }

    /// Whether HTTP Basic is on (some users are configured).
    pub fn basic_enabled(&self) -> bool {
        self.basic.is_some()
    }

    /// The first credential present: Authorization, then `X-Api-Key`, then a JWT cookie.
    fn credential<'a>(
        &self,
        headers: &'a http::HeaderMap,
    ) -> Result<Option<Credential<'a>>, AuthError> {
        // One pass over the headers for the three that may carry a credential, instead of a
        // lookup each (each hashes its name): an anonymous request looks for all three. The
        // first value of each is the one a lookup finds.
        let (mut authorization, mut api_key, mut cookie) = (None, None, false);
        for (name, value) in headers {
            if *name == http::header::AUTHORIZATION {
                authorization = authorization.or(Some(value));
            } else if *name == X_API_KEY {
                api_key = api_key.or(Some(value));
            } else if *name == http::header::COOKIE {
                cookie = true;
            }
        }
        if let Some(value) = authorization {
            // Visible ASCII (and tabs), so ASCII trimming is all the trimming there is; the
            // scheme is a word, so its end is found by a short scan.
            let value = value
                .to_str()
                .map_err(|_| AuthError::MalformedAuthorization("not visible ASCII"))?
                .trim_ascii();
            let space =
                value
                    .bytes()
                    .position(|b| b == b' ')
                    .ok_or(AuthError::MalformedAuthorization(
                        "expected `<scheme> <credential>`",
                    ))?;
            let (scheme, rest) = (&value[..space], value[space + 1..].trim_ascii());
            if rest.is_empty() {
                return Err(AuthError::MalformedAuthorization("the credential is empty"));
            }
            return if scheme.eq_ignore_ascii_case("bearer") {
                if self.jwt.is_some() && jwt::looks_like_jwt(rest) {
                    Ok(Some(Credential::Jwt(rest)))
                } else {
                    Ok(Some(Credential::ApiKey(rest)))
                }
            } else if scheme.eq_ignore_ascii_case("basic") && self.basic.is_some() {
                Ok(Some(Credential::Basic(rest)))
            } else {
                Err(self.unsupported(scheme))
            };
        }
        if let Some(value) = api_key {
            let key = value.to_str().map_err(|_| AuthError::InvalidApiKey)?.trim();
            return Ok(Some(Credential::ApiKey(key)));
        }
        if cookie && !self.jwt_cookies.is_empty() {
            // Read as bytes: a header with another site's non-ASCII cookie in it must not
            // hide ours, and ours must not be skipped for being unreadable.
            for header in headers.get_all(http::header::COOKIE) {
                for pair in cookie_pairs(header.as_bytes()) {
                    let Some((name, value)) = split_cookie(pair) else {
                        continue;
                    };
                    if self.jwt_cookies.iter().any(|c| c.as_bytes() == name) {
                        // Present counts: an empty or unreadable value is a refused
                        // credential, never anonymous.
                        return session_token(value).map(|token| Some(Credential::Jwt(token)));
                    }
                }
            }
        }
        Ok(None)
    }

    fn unsupported(&self, scheme: &str) -> AuthError {
        let mut accepted = vec!["Bearer"];
        if self.basic.is_some() {
            accepted.push("Basic");
        }
        AuthError::UnsupportedScheme {
            scheme: KNOWN_SCHEMES
                .iter()
                .find(|known| known.eq_ignore_ascii_case(scheme))
                .copied(),
            accepted: accepted.join(" or "),
        }
    }
}

/// The throttle as a password check sees it: asked again once the check has its turn (a
/// window that began while it waited refuses it before argon2 runs), and told of a wrong
/// password while the check still holds the turn.
struct ThrottleGate<'a> {
    throttle: &'a SignInThrottle,
    client: IpAddr,
    user: &'a str,
}

impl basic::Gate for ThrottleGate<'_> {
    fn admit(&self) -> Result<(), AuthError> {
        self.throttle.check(self.client, Some(self.user))
    }

    fn failed(&self) {
        self.throttle.failed(self.client, Some(self.user));
    }
}

/// `name=value` of one `Cookie` pair, both trimmed of spaces.
/// The `;`-separated pairs of a `Cookie` header. The separators are found with `memchr`: a
/// byte-at-a-time split cost a thousand instructions over a JWT cookie, on every request.
fn cookie_pairs(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(header);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr::memchr(b';', current) {
            Some(at) => {
                rest = Some(&current[at + 1..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// Whether every byte is visible ASCII (`!` to `~`), sixteen at a time.
fn all_visible_ascii(bytes: &[u8]) -> bool {
    fn all_in(chunk: &[u8; 16]) -> bool {
        let mut all = true;
        for &b in chunk {
            all &= b.wrapping_sub(b'!') <= b'~' - b'!';
        }
        all
    }
    let mut chunks = bytes.chunks_exact(16);
    for chunk in &mut chunks {
        if !all_in(chunk.try_into().expect("16 bytes")) {
            return false;
        }
    }
    let tail = chunks.remainder();
    let mut padded = [b'a'; 16];
    padded[..tail.len()].copy_from_slice(tail);
    all_in(&padded)
}

fn split_cookie(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = pair.iter().position(|&b| b == b'=')?;
    Some((pair[..at].trim_ascii(), pair[at + 1..].trim_ascii()))
}

/// A session cookie's token: the value, without the quotes a cookie value may carry. `Err`
/// when it is empty or not visible ASCII (a JWT never is).
fn session_token(value: &[u8]) -> Result<&str, AuthError> {
    let unquoted = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value);
    if unquoted.is_empty() {
        return Err(AuthError::InvalidToken(
            "the session cookie is empty".into(),
        ));
    }
    if !all_visible_ascii(unquoted) {
        return Err(AuthError::InvalidToken(
            "the session cookie is not a token".into(),
        ));
    }
    // Visible ASCII is UTF-8.
    std::str::from_utf8(unquoted)
        .map_err(|_| AuthError::InvalidToken("the session cookie is not a token".into()))
}

/// Authorization schemes a refusal may name (the registered ones, and `Token`, common in
/// APIs): an allow-list, because a client that sends a key or password without a scheme
/// would otherwise see it repeated in the answer and the log.
const KNOWN_SCHEMES: &[&str] = &[
    "AWS4-HMAC-SHA256",
    "Basic",
    "Bearer",
    "Concealed",
    "Digest",
    "DPoP",
    "GNAP",
    "HOBA",
    "Mutual",
    "Negotiate",
    "NTLM",
    "OAuth",
    "PrivateToken",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "Token",
    "vapid",
];

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn cookie_pairs_split_on_every_semicolon_like_a_byte_split() {
        for header in [
            &b""[..],
            b";",
            b";;a=1",
            b"a=1",
            b"a=1; session=x.y.z",
            b"a=1;b=2;",
            b" session = \"t\" ; other=\xff\xfe ;",
        ] {
            let ours: Vec<&[u8]> = cookie_pairs(header).collect();
            let reference: Vec<&[u8]> = header.split(|&b| b == b';').collect();
            assert_eq!(ours, reference, "{header:?}");
        }
    }

    #[test]
    fn visible_ascii_is_checked_at_every_position_of_every_length() {
        for len in 0..70 {
            let plain = vec![b'x'; len];
            assert!(all_visible_ascii(&plain));
            for at in 0..len {
                for bad in [b' ', 0x00, 0x1f, 0x7f, 0x80, 0xff] {
                    let mut bytes = plain.clone();
                    bytes[at] = bad;
                    assert!(!all_visible_ascii(&bytes), "len {len} at {at} byte {bad}");
                }
                for good in [b'!', b'~', b'"', b'.'] {
                    let mut bytes = plain.clone();
                    bytes[at] = good;
                    assert!(all_visible_ascii(&bytes));
                }
            }
        }
    }

    #[test]
    fn audit_json_says_who_and_how_and_stays_valid_json_for_any_subject() {
        let members = |principal: &Principal| -> serde_json::Value {
            serde_json::from_str(&format!("{{{}}}", principal.audit_json())).unwrap()
        };
        let user = Principal::new(PrincipalKind::User, "bob".into(), [], Default::default());
        assert_eq!(
            members(&user),
            serde_json::json!({"subject": "user:bob", "source": "basic"})
        );
        let key = Principal::new(PrincipalKind::ApiKey, "ci".into(), [], Default::default());
        assert_eq!(members(&key)["source"], "api_key");
        let issuer = Arc::new(IssuerSource {
            iss: "https://idp.example/\"x".into(),
            name: None,
            shares_local_names: false,
        });
        let hostile = "a\"b\n\u{2028}".to_string() + &"z".repeat(1000);
        let jwt = Principal::new(
            PrincipalKind::Jwt { issuer },
            hostile.into(),
            [],
            Default::default(),
        );
        let parsed = members(&jwt);
        assert_eq!(parsed["source"], "jwt");
        assert_eq!(parsed["issuer"], "https://idp.example/\"x");
        let subject = parsed["subject"].as_str().unwrap();
        assert!(subject.starts_with("jwt:a\"b\n"));
        assert!(
            subject.chars().count() <= crate::untrusted::LOG_CHARS,
            "clipped"
        );
        let anonymous: serde_json::Value =
            serde_json::from_str(&format!("{{{ANONYMOUS_AUDIT_JSON}}}")).unwrap();
        assert_eq!(anonymous["source"], "anonymous");
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn authenticator() -> Authenticator {
        let mut auth = Authenticator::default();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"s3cret-key");
        auth.api_keys
            .insert(digest.as_ref().try_into().unwrap(), "ci".into(), vec![]);
        auth
    }

    #[tokio::test]
    async fn no_credential_is_anonymous() {
        let identity = authenticator()
            .identify(&headers(&[]), CLIENT)
            .await
            .unwrap();
        assert!(!identity.is_authenticated());
    }

    #[tokio::test]
    async fn valid_key_in_either_header_identifies_by_name() {
        let auth = authenticator();
        for pair in [
            ("authorization", "Bearer s3cret-key"),
            ("x-api-key", "s3cret-key"),
        ] {
            let identity = auth.identify(&headers(&[pair]), CLIENT).await.unwrap();
            assert_eq!(identity.subject(), "ci");
        }
    }

    #[tokio::test]
    async fn present_but_invalid_credentials_never_fall_back_to_anonymous() {
        let auth = authenticator();
        let cases: [(&'static str, &str); 5] = [
            ("authorization", "Bearer wrong"),
            ("authorization", "Bearer "),
            ("authorization", "Basic dTpw"),
            ("authorization", "garbage"),
            ("x-api-key", "wrong"),
        ];
        for pair in cases {
            assert!(
                auth.identify(&headers(&[pair]), CLIENT).await.is_err(),
                "{pair:?}"
            );
        }
    }

    #[tokio::test]
    async fn wrong_api_keys_put_the_address_in_backoff_before_the_key_is_checked() {
        let auth = authenticator();
        let wrong = headers(&[("x-api-key", "wrong")]);
        let right = headers(&[("x-api-key", "s3cret-key")]);
        for _ in 0..throttle::FailedSignIns::default().allowed {
            let error = auth.identify(&wrong, CLIENT).await.unwrap_err();
            assert!(error.is_failed_credential(), "{error:?}");
        }
        // Even the right key is refused now, from that address: it is not checked.
        let error = auth.identify(&right, CLIENT).await.unwrap_err();
        assert_eq!(
            error,
            AuthError::Throttled {
                reason: ThrottleReason::Address,
                retry_after_secs: 1
            }
        );
        assert!(!error.is_failed_credential() && !error.is_unavailable());
        // Another address is not affected, and anonymous callers are never throttled.
        let elsewhere = IpAddr::from([198, 51, 100, 7]);
        assert!(auth.identify(&right, elsewhere).await.is_ok());
        assert!(auth.identify(&headers(&[]), CLIENT).await.is_ok());
        assert_eq!(auth.throttle.keys(), 1);
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[tokio::test]
    async fn basic_is_refused_by_name_when_no_users_are_configured() {
        let error = authenticator()
            .identify(&headers(&[("authorization", "Basic dTpw")]), CLIENT)
            .await
            .unwrap_err();
        assert_eq!(
            error,
            AuthError::UnsupportedScheme {
                scheme: Some("Basic"),
                accepted: "Bearer".into()
            }
        );
    }

    #[tokio::test]
    async fn a_secret_sent_in_place_of_the_scheme_is_not_repeated() {
        let auth = authenticator();
        for value in ["s3cret-key x", "=s3cret-key; x", "Token=s3cret-key Bearer"] {
            let error = auth
                .identify(&headers(&[("authorization", value)]), CLIENT)
                .await
                .unwrap_err();
            assert!(!error.to_string().contains("s3cret-key"), "{error}");
            assert!(!format!("{error:?}").contains("s3cret-key"), "{error:?}");
        }
        // A registered scheme is still named.
        let error = auth
            .identify(&headers(&[("authorization", "digest abc")]), CLIENT)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("`Digest`"), "{error}");
    }

    #[test]
    fn cookies_are_read_only_when_an_issuer_names_them() {
        let mut auth = authenticator();
        let cookie = headers(&[("cookie", "theme=dark; session=abc.def.ghi")]);
        assert_eq!(auth.credential(&cookie).unwrap(), None);
        auth.jwt_cookies.push("session".into());
        assert_eq!(
            auth.credential(&cookie).unwrap(),
            Some(Credential::Jwt("abc.def.ghi"))
        );
    }

    #[test]
    fn a_present_session_cookie_that_is_empty_or_unreadable_is_refused() {
        let mut auth = authenticator();
        auth.jwt_cookies.push("session".into());
        for value in [
            &b"session="[..],
            b"session=\"\"",
            b"session=  ",
            "session=é".as_bytes(),
        ] {
            let mut map = HeaderMap::new();
            map.append("cookie", HeaderValue::from_bytes(value).unwrap());
            assert!(
                matches!(auth.credential(&map), Err(AuthError::InvalidToken(_))),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
        // Another site's unreadable cookie does not hide ours, nor refuse the request.
        let mut map = HeaderMap::new();
        map.append(
            "cookie",
            HeaderValue::from_bytes("theme=é; session=\"abc.def.ghi\"".as_bytes()).unwrap(),
        );
        assert_eq!(
            auth.credential(&map).unwrap(),
            Some(Credential::Jwt("abc.def.ghi"))
        );
        let mut map = HeaderMap::new();
        map.append(
            "cookie",
            HeaderValue::from_bytes("theme=é".as_bytes()).unwrap(),
        );
        assert_eq!(auth.credential(&map).unwrap(), None);
    }

    #[test]
    fn the_authorization_header_wins_over_a_cookie() {
        let mut auth = authenticator();
        auth.jwt_cookies.push("session".into());
        let both = headers(&[("cookie", "session=abc.def.ghi"), ("x-api-key", "k")]);
        assert_eq!(
            auth.credential(&both).unwrap(),
            Some(Credential::ApiKey("k"))
        );
    }

    #[test]
    fn the_credential_is_the_first_value_of_the_first_header_by_precedence_in_any_order() {
        let mut auth = authenticator();
        auth.jwt_cookies.push("session".into());
        let all = [
            ("cookie", "session=a.b.c"),
            ("x-api-key", "second"),
            ("accept", "*/*"),
            ("authorization", "Bearer first"),
            ("authorization", "Bearer later"),
            ("x-api-key", "later"),
        ];
        let cases: [(&[(&'static str, &str)], _); 4] = [
            // Authorization, then X-Api-Key, then the cookie, wherever each stands.
            (&all, Some(Credential::ApiKey("first"))),
            (&all[..3], Some(Credential::ApiKey("second"))),
            // The session cookie in a later `Cookie` header is still found.
            (
                &[
                    ("cookie", "theme=dark"),
                    ("host", "h"),
                    ("cookie", "session=a.b.c"),
                ],
                Some(Credential::Jwt("a.b.c")),
            ),
            // A header whose name only begins like one of them is none of them.
            (
                &[("x-api-keys", "k"), ("authorization-x", "Bearer k")],
                None,
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(
                auth.credential(&headers(pairs)).unwrap(),
                expected,
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn claims_match_by_value_or_array_membership_and_dotted_path() {
        let claims = serde_json::json!({
            "plan": "pro",
            "level": 3,
            "realm_access": {"roles": ["viewer", "editor"]},
        });
        let principal = Principal::new(
            PrincipalKind::Jwt {
                issuer: Arc::new(IssuerSource::unnamed("idp")),
            },
            "alice".into(),
            [Arc::from("b"), Arc::from("a"), Arc::from("b")],
            claims.as_object().unwrap().clone(),
        );
        assert_eq!(&*principal.groups, &[Arc::from("a"), Arc::from("b")]);
        assert!(principal.claim_equals("plan", "pro"));
        assert!(principal.claim_equals("level", "3"));
        assert!(principal.claim_equals("realm_access.roles", "editor"));
        assert!(!principal.claim_equals("realm_access.roles", "admin"));
        assert!(!principal.claim_equals("missing", "x"));
    }
}
