//! Who is asking: an API key, or nobody.
//!
//! The first credential present decides; a credential that is present but invalid is an
//! error, never a fall-through to anonymous.

use std::sync::Arc;

use aws_lc_rs::digest;
use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::FastMap;

/// The caller, as far as the gateway could tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// No credential was presented.
    Anonymous,
    /// A valid API key, by its configured name.
    ApiKey { name: Arc<str> },
}

impl Identity {
    pub fn is_authenticated(&self) -> bool {
        !matches!(self, Identity::Anonymous)
    }

    /// A name for logs: never a secret.
    pub fn subject(&self) -> &str {
        match self {
            Identity::Anonymous => "anonymous",
            Identity::ApiKey { name } => name,
        }
    }
}

/// Why the presented credential was refused (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the API key is not valid")]
    InvalidApiKey,
    #[error("the Authorization header is malformed; expected `Bearer <api key>`")]
    MalformedAuthorization,
    #[error("unsupported authorization scheme; expected `Bearer <api key>`")]
    UnsupportedScheme,
}

/// The configured API keys, stored as SHA-256 digests of the keys.
#[derive(Debug, Default)]
pub struct ApiKeys {
    by_digest: FastMap<[u8; 32], Arc<str>>,
}

impl ApiKeys {
    /// Register a key by the SHA-256 digest of its text. Returns false if the digest is taken.
    pub(crate) fn insert(&mut self, digest: [u8; 32], name: Arc<str>) -> bool {
        self.by_digest.insert(digest, name).is_none()
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The name of the key whose text is `presented`.
    ///
    /// The map is keyed by the digest, so what a lookup's timing could reveal is about the
    /// digest, not the key: no byte-by-byte comparison of the secret itself happens.
    fn find(&self, presented: &str) -> Option<&Arc<str>> {
        let digest = digest::digest(&digest::SHA256, presented.as_bytes());
        let digest: [u8; 32] = digest.as_ref().try_into().ok()?;
        self.by_digest.get(&digest)
    }
}

/// Identify the caller from request headers: `Authorization: Bearer <key>` or `X-Api-Key`.
pub fn identify(headers: &HeaderMap, api_keys: &ApiKeys) -> Result<Identity, AuthError> {
    let presented = if let Some(value) = headers.get(AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| AuthError::MalformedAuthorization)?;
        let (scheme, credential) = value
            .split_once(' ')
            .ok_or(AuthError::MalformedAuthorization)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::UnsupportedScheme);
        }
        credential.trim()
    } else if let Some(value) = headers.get("x-api-key") {
        value.to_str().map_err(|_| AuthError::InvalidApiKey)?.trim()
    } else {
        return Ok(Identity::Anonymous);
    };
    if presented.is_empty() {
        return Err(AuthError::MalformedAuthorization);
    }
    api_keys
        .find(presented)
        .map(|name| Identity::ApiKey {
            name: Arc::clone(name),
        })
        .ok_or(AuthError::InvalidApiKey)
}

/// SHA-256 of an API key, hex-encoded: the form the config stores.
pub fn hash_api_key(key: &str) -> String {
    digest::digest(&digest::SHA256, key.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn keys() -> ApiKeys {
        let mut keys = ApiKeys::default();
        let digest = digest::digest(&digest::SHA256, b"s3cret-key");
        keys.insert(digest.as_ref().try_into().unwrap(), "ci".into());
        keys
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn no_credential_is_anonymous() {
        assert_eq!(identify(&headers(&[]), &keys()), Ok(Identity::Anonymous));
    }

    #[test]
    fn valid_key_in_either_header_identifies_by_name() {
        let expected = Ok(Identity::ApiKey { name: "ci".into() });
        assert_eq!(
            identify(&headers(&[("authorization", "Bearer s3cret-key")]), &keys()),
            expected
        );
        assert_eq!(
            identify(&headers(&[("x-api-key", "s3cret-key")]), &keys()),
            expected
        );
    }

    #[test]
    fn present_but_invalid_credentials_never_fall_back_to_anonymous() {
        let cases = [
            (("authorization", "Bearer wrong"), AuthError::InvalidApiKey),
            (
                ("authorization", "Bearer "),
                AuthError::MalformedAuthorization,
            ),
            (
                ("authorization", "Basic dTpw"),
                AuthError::UnsupportedScheme,
            ),
            (
                ("authorization", "garbage"),
                AuthError::MalformedAuthorization,
            ),
            (("x-api-key", "wrong"), AuthError::InvalidApiKey),
        ];
        for ((name, value), expected) in cases {
            assert_eq!(identify(&headers(&[(name, value)]), &keys()), Err(expected));
        }
    }

    #[test]
    fn hash_matches_the_stored_form() {
        assert_eq!(
            hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
