//! An issuer's key material, read once at start: an HMAC secret (file or environment
//! variable), a PEM public key, or a JWKS file. Errors name the file or variable, never the
//! key material.

use std::collections::HashMap;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
use serde_json::Value;
use spki::der::Decode;
use spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};

use super::{IssuerKeys, echo, list_algorithms};
use crate::secret::KeyLocation;

/// Verification keys by `kid`.
#[derive(Default)]
pub(super) struct KeySet {
    pub(super) by_kid: HashMap<String, VerifyKey>,
    /// The key for tokens without a `kid` (or for every token, with `for_any_kid`).
    pub(super) single: Option<VerifyKey>,
    /// A secret or PEM key: the token's `kid` does not matter.
    pub(super) for_any_kid: bool,
}

impl KeySet {
    fn only(key: VerifyKey) -> Self {
        Self {
            by_kid: Default::default(),
            single: Some(key),
            for_any_kid: true,
        }
    }

    pub(super) fn find(&self, kid: Option<&str>) -> Option<&VerifyKey> {
        match kid {
            _ if self.for_any_kid => self.single.as_ref(),
            Some(kid) => self.by_kid.get(kid),
            None => self.single.as_ref(),
        }
    }
}

/// One verification key and what it may verify.
#[derive(Clone)]
pub(super) struct VerifyKey {
    pub(super) key: DecodingKey,
    pub(super) kind: KeyKind,
    /// The JWK's `alg`, when it names one: then only that algorithm may use the key.
    pub(super) alg: Option<Algorithm>,
}

/// What a key is, finer than an algorithm family: an EC key has one curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
    Hmac,
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    pub(super) fn accepts(self, alg: Algorithm) -> bool {
        match self {
            KeyKind::Hmac => alg.family() == AlgorithmFamily::Hmac,
            KeyKind::Rsa => alg.family() == AlgorithmFamily::Rsa,
            KeyKind::EcP256 => alg == Algorithm::ES256,
            KeyKind::EcP384 => alg == Algorithm::ES384,
            KeyKind::Ed25519 => alg == Algorithm::EdDSA,
        }
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            KeyKind::Hmac => "an HMAC secret",
            KeyKind::Rsa => "an RSA key",
            KeyKind::EcP256 => "a P-256 EC key",
            KeyKind::EcP384 => "a P-384 EC key",
            KeyKind::Ed25519 => "an Ed25519 key",
        }
    }
}

/// The shortest HMAC secret accepted.
const MIN_SECRET_BYTES: usize = 32;

/// Read an issuer's keys, checking they suit `algorithms` (one family, already checked).
/// `Ok(None)` for a JWKS URL, which is fetched once the gateway runs.
pub(super) fn load_fixed(
    keys: &IssuerKeys,
    algorithms: &[Algorithm],
) -> Result<Option<KeySet>, String> {
    let family = algorithms[0].family();
    let algs = list_algorithms(algorithms);
    if family == AlgorithmFamily::Hmac && !matches!(keys, IssuerKeys::Secret(_)) {
        return Err(format!(
            "{algs} need a shared `secret`, not a public key or JWKS"
        ));
    }
    match keys {
        IssuerKeys::Secret(location) => {
            if family != AlgorithmFamily::Hmac {
                return Err(format!(
                    "{algs} need a public key (PEM or JWKS); a `secret` is only for HS256, HS384 or HS512"
                ));
            }
            let key = read_secret(location)?;
            Ok(Some(KeySet::only(key)))
        }
        IssuerKeys::PublicKeyPem(path) => {
            let pem = std::fs::read(path)
                .map_err(|error| format!("cannot read the public key file: {error}"))?;
            let (key, kind) = parse_public_key_pem(&pem)
                .map_err(|reason| format!("the public key file: {reason}"))?;
            if let Some(alg) = algorithms.iter().find(|alg| !kind.accepts(**alg)) {
                return Err(format!(
                    "the public key file holds {}, which cannot verify {alg:?}",
                    kind.describe()
                ));
            }
            Ok(Some(KeySet::only(VerifyKey {
                key,
                kind,
                alg: None,
            })))
        }
        IssuerKeys::JwksFile(path) => {
            let body = std::fs::read(path)
                .map_err(|error| format!("cannot read the JWKS file: {error}"))?;
            let keys = parse_jwks(&body, algorithms)
                .map_err(|reason| format!("the JWKS file: {reason}"))?;
            Ok(Some(keys))
        }
        IssuerKeys::JwksUrl { .. } => Ok(None),
    }
}

/// An HMAC secret from a file or an environment variable, trailing newlines trimmed.
fn read_secret(location: &KeyLocation) -> Result<VerifyKey, String> {
    let (mut bytes, source) = match location {
        KeyLocation::File(path) => (
            std::fs::read(path).map_err(|error| format!("cannot read the secret file: {error}"))?,
            "secret file",
        ),
        KeyLocation::Env(var) => (
            std::env::var(var)
                .map_err(|_| {
                    "the environment variable named by `env` is not set or not UTF-8".to_string()
                })?
                .into_bytes(),
            "environment variable",
        ),
    };
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    if bytes.len() < MIN_SECRET_BYTES {
        let length = bytes.len();
        bytes.fill(0);
        return Err(format!(
            "the {source} holds {length} bytes; an HMAC secret needs at least {MIN_SECRET_BYTES}"
        ));
    }
    let key = DecodingKey::from_secret(&bytes);
    bytes.fill(0);
    Ok(VerifyKey {
        key,
        kind: KeyKind::Hmac,
        alg: None,
    })
}

/// A public key from PEM: `PUBLIC KEY` (SubjectPublicKeyInfo: RSA, P-256, P-384, Ed25519)
/// or `RSA PUBLIC KEY` (PKCS#1).
fn parse_public_key_pem(pem: &[u8]) -> Result<(DecodingKey, KeyKind), String> {
    const NOT_PEM: &str = "not a PEM file (expected -----BEGIN PUBLIC KEY-----)";
    // The pem crate's own messages are not passed on: they may quote parts of the file.
    let block = pem::parse(pem).map_err(|error| match error {
        pem::PemError::MismatchedTags(label, _) => {
            format!("the PEM block has no -----END {}-----", echo(&label, 40))
        }
        pem::PemError::InvalidData(_) => "the PEM block is not valid base64".to_string(),
        _ => NOT_PEM.to_string(),
    })?;
    match block.tag() {
        "PUBLIC KEY" => parse_spki(block.contents()),
        "RSA PUBLIC KEY" => rsa_public_key(block.contents()),
        "CERTIFICATE" => Err(
            "holds a certificate, not a public key (extract it: `openssl x509 -pubkey -noout`)"
                .into(),
        ),
        label if label.contains("PRIVATE KEY") => {
            Err("holds a private key; give the issuer's public key (`openssl pkey -pubout`)".into())
        }
        other => Err(format!(
            "holds a PEM \"{}\" block, not a PUBLIC KEY",
            echo(other, 40)
        )),
    }
}

/// `id-ecPublicKey` (RFC 5480).
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// The P-256 curve, `secp256r1` (RFC 5480).
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// The P-384 curve, `secp384r1` (RFC 5480).
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// `id-Ed25519` (RFC 8410).
const ID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// A SubjectPublicKeyInfo, as the key bytes jsonwebtoken expects for its kind.
fn parse_spki(der: &[u8]) -> Result<(DecodingKey, KeyKind), String> {
    const MALFORMED: &str = "the public key is not valid DER SubjectPublicKeyInfo";
    let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(|_| MALFORMED.to_string())?;
    // `None` when the BIT STRING does not hold whole bytes.
    let key = spki.subject_public_key.as_bytes().ok_or(MALFORMED)?;
    let algorithm = spki.algorithm.oid;
    if algorithm == pkcs1::ALGORITHM_OID {
        rsa_public_key(key)
    } else if algorithm == ID_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters_oid()
            .map_err(|_| MALFORMED.to_string())?;
        let (kind, length) = if curve == SECP256R1 {
            (KeyKind::EcP256, 65)
        } else if curve == SECP384R1 {
            (KeyKind::EcP384, 97)
        } else {
            return Err("an EC key on an unsupported curve (use P-256 or P-384)".into());
        };
        if key.len() != length || key[0] != 0x04 {
            return Err("the EC public key is not an uncompressed point".into());
        }
        Ok((DecodingKey::from_ec_der(key), kind))
    } else if algorithm == ID_ED25519 {
        if key.len() != 32 {
            return Err("the Ed25519 public key is not 32 bytes".into());
        }
        Ok((DecodingKey::from_ed_der(key), KeyKind::Ed25519))
    } else {
        Err("an unsupported key type (use RSA, EC P-256/P-384 or Ed25519)".into())
    }
}

/// A PKCS#1 `RSAPublicKey` of at least 2048 bits.
fn rsa_public_key(pkcs1: &[u8]) -> Result<(DecodingKey, KeyKind), String> {
    let key = aws_lc_rs::rsa::PublicKey::from_der(pkcs1)
        .map_err(|_| "not a valid RSA public key".to_string())?;
    if key.modulus_len() < 256 {
        return Err(format!(
            "the RSA key has {} bits; at least 2048 are required",
            key.modulus_len() * 8
        ));
    }
    Ok((DecodingKey::from_rsa_der(pkcs1), KeyKind::Rsa))
}

/// The keys of a JWKS document that can verify some of `algorithms`. Keys for other
/// families, encryption keys, and keys that do not parse are skipped; none left is an error.
pub(super) fn parse_jwks(body: &[u8], algorithms: &[Algorithm]) -> Result<KeySet, String> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<Value>,
    }
    let document: Document = serde_json::from_slice(body).map_err(|error| {
        // serde_json's own text may quote the document; only where it failed is shown.
        format!(
            "not a JWKS document ({:?} error at line {} column {})",
            error.classify(),
            error.line(),
            error.column()
        )
    })?;
    let mut usable: Vec<(Option<String>, VerifyKey)> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    for (position, value) in document.keys.into_iter().enumerate() {
        let label = value.get("kid").and_then(Value::as_str).map_or_else(
            || format!("key {}", position + 1),
            |kid| format!("kid {}", echo(kid, 40)),
        );
        match jwk_to_key(value, algorithms) {
            Ok((kid, key)) => usable.push((kid, key)),
            Err(reason) => {
                tracing::debug!("JWKS {label} skipped: {reason}");
                skipped.push(format!("{label}: {reason}"));
            }
        }
    }
    if usable.is_empty() {
        let mut message = format!("no key usable for {}", list_algorithms(algorithms));
        if !skipped.is_empty() {
            let shown: Vec<&str> = skipped.iter().take(3).map(String::as_str).collect();
            message.push_str(&format!(" ({})", shown.join("; ")));
        }
        return Err(message);
    }
    let mut keys = KeySet::default();
    if usable.len() == 1 && usable[0].0.is_none() {
        keys.single = usable.pop().map(|(_, key)| key);
        return Ok(keys);
    }
    for (kid, key) in usable {
        match kid {
            Some(kid) => {
                keys.by_kid.entry(kid).or_insert(key);
            }
            None => tracing::debug!("a JWKS key without `kid` among several is ignored"),
        }
    }
    Ok(keys)
}

fn jwk_to_key(
    value: Value,
    algorithms: &[Algorithm],
) -> Result<(Option<String>, VerifyKey), String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|_| "not a valid JWK".to_string())?;
    if matches!(&jwk.common.public_key_use, Some(usage) if *usage != PublicKeyUse::Signature) {
        return Err("not a signature key (`use`)".into());
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(named) => {
            let alg = Algorithm::try_from(named)
                .map_err(|_| format!("algorithm {named} is not a signature algorithm"))?;
            if !algorithms.contains(&alg) {
                return Err(format!("algorithm {alg:?} is not accepted"));
            }
            Some(alg)
        }
    };
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => KeyKind::EcP256,
            EllipticCurve::P384 => KeyKind::EcP384,
            _ => return Err("an EC key on an unsupported curve".into()),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            KeyKind::Ed25519
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric key (HMAC secrets are never taken from a JWKS)".into());
        }
        _ => return Err("an unsupported key type".into()),
    };
    if !algorithms.iter().any(|alg| kind.accepts(*alg)) {
        return Err(format!(
            "{} cannot verify {}",
            kind.describe(),
            list_algorithms(algorithms)
        ));
    }
    let key =
        DecodingKey::from_jwk(&jwk).map_err(|_| "the key material does not decode".to_string())?;
    let sane = match (kind, key.kind()) {
        (KeyKind::Rsa, DecodingKeyKind::RsaModulusExponent { n, .. }) => {
            n.iter().skip_while(|byte| **byte == 0).count() >= 256
        }
        (KeyKind::EcP256, DecodingKeyKind::SecretOrDer(point)) => point.len() == 65,
        (KeyKind::EcP384, DecodingKeyKind::SecretOrDer(point)) => point.len() == 97,
        (KeyKind::Ed25519, DecodingKeyKind::SecretOrDer(x)) => x.len() == 32,
        _ => false,
    };
    if !sane {
        return Err(match kind {
            KeyKind::Rsa => "an RSA key shorter than 2048 bits".into(),
            _ => "the key material has the wrong length".into(),
        });
    }
    Ok((jwk.common.key_id, VerifyKey { key, kind, alg }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::identity::jwt::tests::{
        SECRET, claims, ec_key, ed_key, file, group_names, pem_verifier, rsa_key, settings, sign,
    };
    use crate::identity::jwt::{IssuerSettings, JwtVerifier};
    use crate::test_support::pem;

    #[tokio::test]
    async fn rs256_and_ps256_tokens_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let key = rsa_key();
        let verifier = pem_verifier(&dir, key, vec![Algorithm::RS256, Algorithm::PS256]);
        for alg in [Algorithm::RS256, Algorithm::PS256] {
            let token = sign(
                &key.encoding,
                alg,
                Some("any"),
                &claims(json!({"groups": "g"})),
            );
            let principal = verifier.verify(&token).await.unwrap();
            assert_eq!(&*principal.name, "alice", "{alg:?}");
            assert_eq!(group_names(&principal), ["g"]);
        }
    }

    #[tokio::test]
    async fn es256_es384_and_eddsa_tokens_are_accepted() {
        let cases = [
            (ec_key(false), Algorithm::ES256),
            (ec_key(true), Algorithm::ES384),
            (ed_key(), Algorithm::EdDSA),
        ];
        for (key, alg) in cases {
            let dir = tempfile::tempdir().unwrap();
            let verifier = pem_verifier(&dir, &key, vec![alg]);
            let token = sign(&key.encoding, alg, None, &claims(json!({"groups": ["x"]})));
            let principal = verifier.verify(&token).await.unwrap();
            assert_eq!(&*principal.name, "alice", "{alg:?}");
            assert_eq!(group_names(&principal), ["x"]);
        }
    }

    #[tokio::test]
    async fn a_pkcs1_rsa_public_key_pem_is_read_too() {
        let dir = tempfile::tempdir().unwrap();
        let key = rsa_key();
        let spki = SubjectPublicKeyInfoRef::from_der(&key.spki).unwrap();
        let pkcs1 = spki.subject_public_key.as_bytes().unwrap();
        let path = file(&dir, "rsa.pem", pem("RSA PUBLIC KEY", pkcs1));
        let verifier = JwtVerifier::new(vec![settings(
            IssuerKeys::PublicKeyPem(path),
            vec![Algorithm::RS256],
        )])
        .unwrap();
        let token = sign(&key.encoding, Algorithm::RS256, None, &claims(json!({})));
        verifier.verify(&token).await.unwrap();
    }

    fn error_for(issuer: IssuerSettings) -> String {
        let errors = JwtVerifier::new(vec![issuer]).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, 0);
        errors[0].1.clone()
    }

    #[test]
    fn bad_key_material_is_reported_without_contents_paths_or_variable_names() {
        let dir = tempfile::tempdir().unwrap();
        let short = file(&dir, "short-secret", "hunter2-is-short\n");
        let message = error_for(settings(
            IssuerKeys::Secret(KeyLocation::File(short.clone())),
            vec![Algorithm::HS256],
        ));
        assert!(message.contains("secret file"), "{message}");
        assert!(!message.contains("short-secret"), "{message}");
        assert!(
            message.contains("16 bytes") && message.contains("32"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");

        let message = error_for(settings(
            IssuerKeys::Secret(KeyLocation::Env(
                "STREAMGATE_TEST_ONLY_UNSET_VARIABLE".into(),
            )),
            vec![Algorithm::HS256],
        ));
        assert!(message.contains("environment variable"), "{message}");
        assert!(
            !message.contains("STREAMGATE_TEST_ONLY_UNSET_VARIABLE"),
            "{message}"
        );

        let missing = dir.path().join("missing.pem");
        let message = error_for(settings(
            IssuerKeys::PublicKeyPem(missing),
            vec![Algorithm::RS256],
        ));
        assert!(
            message.contains("cannot read the public key file"),
            "{message}"
        );
        assert!(!message.contains("missing.pem"), "{message}");

        let private = file(
            &dir,
            "private.pem",
            pem("PRIVATE KEY", b"test-only-not-a-key"),
        );
        let message = error_for(settings(
            IssuerKeys::PublicKeyPem(private),
            vec![Algorithm::RS256],
        ));
        assert!(message.contains("private key"), "{message}");

        let empty = file(&dir, "empty.json", r#"{"keys": []}"#);
        let message = error_for(settings(
            IssuerKeys::JwksFile(empty),
            vec![Algorithm::RS256],
        ));
        assert!(
            !message.contains("empty.json") && message.contains("no key usable"),
            "{message}"
        );
    }

    #[test]
    fn unusable_pem_files_are_refused_by_reason_without_contents() {
        let p521 = {
            use aws_lc_rs::encoding::AsDer;
            use aws_lc_rs::signature::{ECDSA_P521_SHA512_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P521_SHA512_FIXED_SIGNING, &rng).unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P521_SHA512_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
            AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(pair.public_key())
                .unwrap()
                .as_ref()
                .to_vec()
        };
        let not_der = b"test-only-not-a-key";
        let cases = [
            ("test-only text".to_string(), "not a PEM file"),
            (
                "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n".to_string(),
                "not valid base64",
            ),
            (
                pem("PUBLIC KEY", not_der).replace("END PUBLIC", "END PRIVATE"),
                "no -----END PUBLIC KEY-----",
            ),
            (pem("CERTIFICATE", not_der), "holds a certificate"),
            (pem("EC PRIVATE KEY", not_der), "holds a private key"),
            (pem("DH PARAMETERS", not_der), "\"DH PARAMETERS\" block"),
            (
                pem("PUBLIC KEY", not_der),
                "not valid DER SubjectPublicKeyInfo",
            ),
            (pem("RSA PUBLIC KEY", not_der), "not a valid RSA public key"),
            (pem("PUBLIC KEY", &p521), "unsupported curve"),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (contents, expected) in cases {
            let path = file(&dir, "key.pem", &contents);
            let message = error_for(settings(
                IssuerKeys::PublicKeyPem(path),
                vec![Algorithm::ES256],
            ));
            assert!(
                !message.contains("key.pem") && message.contains(expected),
                "{expected}: {message}"
            );
            assert!(!message.contains("dGVzdC1vbmx5"), "{message}");
            assert!(!message.contains("test-only"), "{message}");
        }
    }

    #[test]
    fn algorithms_must_be_one_family_matching_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let secret = IssuerKeys::Secret(KeyLocation::File(file(&dir, "secret", SECRET)));
        let rsa = IssuerKeys::PublicKeyPem(file(&dir, "rsa.pem", rsa_key().pem()));
        let p256 = IssuerKeys::PublicKeyPem(file(&dir, "p256.pem", ec_key(false).pem()));
        let jwks = IssuerKeys::JwksFile(file(
            &dir,
            "jwks.json",
            json!({"keys": [rsa_key().jwk_with("k")]}).to_string(),
        ));

        let cases = [
            (secret.clone(), vec![Algorithm::RS256], "need a public key"),
            (rsa.clone(), vec![Algorithm::HS256], "shared `secret`"),
            (jwks.clone(), vec![Algorithm::HS256], "shared `secret`"),
            (
                rsa.clone(),
                vec![Algorithm::RS256, Algorithm::ES256],
                "mix key types",
            ),
            (rsa.clone(), vec![Algorithm::ES256], "cannot verify ES256"),
            (
                p256.clone(),
                vec![Algorithm::ES256, Algorithm::ES384],
                "cannot verify ES384",
            ),
            (p256, vec![Algorithm::EdDSA], "cannot verify EdDSA"),
            (jwks, vec![Algorithm::ES256], "no key usable"),
            (secret, vec![], "no algorithms"),
        ];
        for (keys, algorithms, expected) in cases {
            let message = error_for(settings(keys, algorithms.clone()));
            assert!(message.contains(expected), "{algorithms:?}: {message}");
        }

        // Secrets: trailing newlines are not part of the secret; 32 bytes are enough.
        let exact = file(&dir, "exact", format!("{}\r\n", &SECRET[..32]));
        JwtVerifier::new(vec![settings(
            IssuerKeys::Secret(KeyLocation::File(exact)),
            vec![Algorithm::HS256, Algorithm::HS384],
        )])
        .unwrap();
    }
}
