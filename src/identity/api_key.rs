//! API keys: stored as SHA-256 digests, each with a name and groups.

use std::sync::Arc;

use aws_lc_rs::digest;

use super::{AuthError, Principal, PrincipalKind};
use crate::FastMap;

/// The configured API keys, keyed by the SHA-256 digest of the key text.
#[derive(Debug, Default, Clone)]
pub struct ApiKeys {
    by_digest: FastMap<[u8; 32], Arc<Principal>>,
}

impl ApiKeys {
    /// Register a key by the SHA-256 digest of its text. Returns false if the digest is taken.
    pub(crate) fn insert(
        &mut self,
        digest: [u8; 32],
        name: Arc<str>,
        groups: Vec<Arc<str>>,
    ) -> bool {
        if self.by_digest.contains_key(&digest) {
            return false;
        }
        let principal = Principal::new(PrincipalKind::ApiKey, name, groups, Default::default());
        self.by_digest.insert(digest, Arc::new(principal));
        true
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Every key's principal, in no particular order.
    pub fn principals(&self) -> impl Iterator<Item = &Arc<Principal>> {
        self.by_digest.values()
    }

    /// The key whose text is `presented`.
    ///
    /// The map is keyed by the digest, so what a lookup's timing could reveal is about the
    /// digest, not the key: no byte-by-byte comparison of the secret itself happens, and the
    /// final equality check on the digest is constant-time.
    pub fn verify(&self, presented: &str) -> Result<Arc<Principal>, AuthError> {
        let digest = sha256(presented);
        match self.by_digest.get_key_value(&digest) {
            Some((stored, principal))
                if bool::from(subtle::ConstantTimeEq::ct_eq(&stored[..], &digest[..])) =>
            {
                Ok(Arc::clone(principal))
            }
            _ => Err(AuthError::InvalidApiKey),
        }
    }
}

fn sha256(text: &str) -> [u8; 32] {
    let digest = digest::digest(&digest::SHA256, text.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// SHA-256 of an API key, hex-encoded: the form the config stores.
pub fn hash_api_key(key: &str) -> String {
    crate::hex::encode(&sha256(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        let mut keys = ApiKeys::default();
        keys.insert(sha256("s3cret-key"), "ci".into(), vec!["robots".into()]);
        keys
    }

    #[test]
    fn valid_key_yields_its_name_and_groups() {
        let principal = keys().verify("s3cret-key").unwrap();
        assert_eq!(&*principal.name, "ci");
        assert_eq!(principal.kind, PrincipalKind::ApiKey);
        assert!(principal.in_group("robots"));
    }

    #[test]
    fn unknown_key_is_refused() {
        assert_eq!(
            keys().verify("wrong").unwrap_err(),
            AuthError::InvalidApiKey
        );
        assert_eq!(keys().verify("").unwrap_err(), AuthError::InvalidApiKey);
    }

    #[test]
    fn a_digest_is_registered_once() {
        let mut keys = keys();
        assert!(!keys.insert(sha256("s3cret-key"), "again".into(), vec![]));
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn hash_matches_the_stored_form() {
        assert_eq!(
            hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
