//! HTTPS: the certificate and key, their reload, the rustls server configuration, and the
//! plain-HTTP listener that redirects to HTTPS.
//!
//! The certificate chain and private key are read from PEM files and checked against each
//! other before anything listens. A [`CertStore`] hands the current pair to every new
//! handshake; [`CertStore::watch`] polls the files and swaps in a new pair when they change.
//! A broken replacement is logged and the previous pair keeps serving; connections already
//! established are never touched, since the certificate only matters during the handshake.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, crypto::CryptoProvider};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often [`CertStore::watch`] looks at the files in production.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// ALPN protocols offered, in order of preference.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The certificate chain and private key files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The leaf certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PKCS#8, PKCS#1 (RSA) or SEC1 (EC), unencrypted.
    pub key: PathBuf,
}

/// Which of the two files a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Cert,
    Key,
}

impl TlsFile {
    fn noun(self) -> &'static str {
        match self {
            TlsFile::Cert => "certificate file",
            TlsFile::Key => "private key file",
        }
    }
}

/// Why a certificate and key could not be used. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    // The paths are configured values: the caller names the field instead.
    #[error("cannot read the {}: {error}", file.noun())]
    Read {
        file: TlsFile,
        path: PathBuf,
        error: io::Error,
    },
    #[error("the {} {reason}", file.noun())]
    Invalid {
        file: TlsFile,
        path: PathBuf,
        reason: String,
    },
    #[error("the private key file does not match the certificate file")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

impl TlsError {
    /// The file at fault, or `None` when it is the pair (or neither).
    pub fn file(&self) -> Option<TlsFile> {
        match self {
            TlsError::Read { file, .. } | TlsError::Invalid { file, .. } => Some(*file),
            TlsError::KeyMismatch { .. } | TlsError::Setup(_) => None,
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Read the chain and key, and check that the key belongs to the leaf certificate.
pub fn load_certified_key(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_chain(&files.cert)?;
    let key = read_key(&files.key)?;
    let invalid_key = |reason: String| TlsError::Invalid {
        file: TlsFile::Key,
        path: files.key.clone(),
        reason,
    };
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|error| invalid_key(format!("holds an unsupported or malformed key: {error}")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(Arc::new(certified)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            })
        }
        // The aws-lc-rs keys all expose their public half, so this is not expected; the
        // handshake would still fail for a wrong key, so refuse rather than guess.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Err(
            invalid_key("cannot be checked against the certificate".into()),
        ),
        Err(error) => Err(TlsError::Invalid {
            file: TlsFile::Cert,
            path: files.cert.clone(),
            reason: format!("does not start with a valid X.509 certificate: {error}"),
        }),
    }
}

fn read_file(file: TlsFile, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        file,
        path: path.to_path_buf(),
        error,
    })
}

/// What is wrong with a PEM file, without quoting it.
fn pem_problem(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { .. } => "has a PEM section without its END line".into(),
        pem::Error::IllegalSectionStart { .. } => "has a malformed PEM BEGIN line".into(),
        pem::Error::Base64Decode(_) => "has a PEM section that is not valid base64".into(),
        pem::Error::SectionTooLarge => "has a PEM section that is too large".into(),
        other => format!("is not readable PEM ({other})"),
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |reason: String| TlsError::Invalid {
        file: TlsFile::Cert,
        path: path.to_path_buf(),
        reason,
    };
    let pem = read_file(TlsFile::Cert, path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(pem_problem(&error)))?;
    if chain.is_empty() {
        return Err(invalid(
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let invalid = |reason: String| TlsError::Invalid {
        file: TlsFile::Key,
        path: path.to_path_buf(),
        reason,
    };
    let pem = read_file(TlsFile::Key, path)?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) if contains(&pem, b"ENCRYPTED PRIVATE KEY") => Err(invalid(
            "holds an encrypted key; give the unencrypted key (readable only by the gateway)"
                .into(),
        )),
        Err(pem::Error::NoItemsFound) => Err(invalid(
            "holds no private key (expected PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`)"
                .into(),
        )),
        Err(error) => Err(invalid(pem_problem(&error))),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The rustls configuration for the gateway: aws-lc-rs, TLS 1.3 and 1.2 only, ALPN `h2`
/// then `http/1.1`, the certificate from `certs` at each handshake.
pub fn server_config(certs: Arc<CertStore>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| TlsError::Setup(error.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Reloads so far, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadCounts {
    /// A changed pair was loaded and now serves.
    pub ok: u64,
    /// A changed pair could not be used; the previous one kept serving.
    pub failed: u64,
}

/// What one look at the files did.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Reloaded,
    /// The files changed but the new pair is unusable; the previous one still serves.
    Failed(TlsError),
}

/// The certificate and key every new handshake gets, swappable while serving.
pub struct CertStore {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files as they were when last read.
    seen: Mutex<Stamp>,
    ok: AtomicU64,
    failed: AtomicU64,
}

impl CertStore {
    /// Read and check the pair now.
    pub fn load(files: TlsFiles) -> Result<Arc<CertStore>, TlsError> {
        // Stamp first: a change made while reading is then seen by the next look.
        let seen = Stamp::of(&files);
        let current = load_certified_key(&files)?;
        Ok(Arc::new(CertStore {
            files,
            current: RwLock::new(current),
            seen: Mutex::new(seen),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The pair new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn reloads(&self) -> ReloadCounts {
        ReloadCounts {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Reload if either file's size, modification time or identity changed since the last
    /// look. Blocking (file system); a failure is logged and counted, and is not retried
    /// until the files change again.
    pub fn reload_if_changed(&self) -> Reload {
        let stamp = Stamp::of(&self.files);
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if *seen == stamp {
                return Reload::Unchanged;
            }
            *seen = stamp;
        }
        match load_certified_key(&self.files) {
            Ok(pair) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = pair;
                self.ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                Reload::Reloaded
            }
            Err(error) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "TLS certificate not reloaded; the previous one keeps serving");
                Reload::Failed(error)
            }
        }
    }

    /// Look at the files every `interval` (see [`RELOAD_INTERVAL`]) until `stop` resolves.
    pub async fn watch(self: Arc<Self>, interval: Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the files were just read.
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = &mut stop => return,
            }
            let store = Arc::clone(&self);
            if let Err(error) = tokio::task::spawn_blocking(move || store.reload_if_changed()).await
            {
                tracing::error!(%error, "TLS certificate reload task failed");
            }
        }
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("files", &self.files)
            .field("reloads", &self.reloads())
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Enough of both files' metadata to notice a replacement: size, modification time, and on
/// Unix the inode and change time (a rename or symlink swap, as Kubernetes does).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp([Option<FileStamp>; 2]);

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    identity: (u64, u64, i64, i64),
}

impl Stamp {
    fn of(files: &TlsFiles) -> Stamp {
        Stamp([FileStamp::of(&files.cert), FileStamp::of(&files.key)])
    }
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let identity = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
        };
        Some(FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            identity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use rcgen::{CertificateParams, KeyPair, SignatureAlgorithm};

    use crate::test_support::pem;

    /// A self-signed certificate for `key`, as PEM.
    fn cert_for(key: &KeyPair) -> String {
        CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(key)
            .unwrap()
            .pem()
    }

    /// Write a sibling and rename it over `path`: a new inode, however fast the writes come.
    fn replace(path: &Path, contents: &str) {
        let staging = path.with_extension("new");
        std::fs::write(&staging, contents).unwrap();
        std::fs::rename(&staging, path).unwrap();
    }

    fn write_pair(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        replace(&files.cert, cert);
        replace(&files.key, key);
        files
    }

    fn key_from(der: PrivateKeyDer<'_>, alg: &'static SignatureAlgorithm) -> KeyPair {
        KeyPair::from_der_and_sign_algo(&der, alg).unwrap()
    }

    #[test]
    fn pkcs8_pkcs1_and_sec1_keys_load() {
        let dir = tempfile::tempdir().unwrap();

        let pkcs8 = KeyPair::generate().unwrap();
        let files = write_pair(dir.path(), &cert_for(&pkcs8), &pkcs8.serialize_pem());
        load_certified_key(&files).unwrap();

        let rsa_pem = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/test-only-signing-key.pem"),
        )
        .unwrap();
        let rsa_der = PrivateKeyDer::from_pem_slice(&rsa_pem).unwrap();
        assert!(matches!(rsa_der, PrivateKeyDer::Pkcs1(_)));
        let rsa = key_from(rsa_der.clone_key(), &rcgen::PKCS_RSA_SHA256);
        let rsa_pem = String::from_utf8(rsa_pem).unwrap();
        let files = write_pair(dir.path(), &cert_for(&rsa), &rsa_pem);
        load_certified_key(&files).unwrap();

        let ec = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        )
        .unwrap();
        let sec1 = ec.private_key().as_der().unwrap();
        let sec1_pem = pem("EC PRIVATE KEY", sec1.as_ref());
        let sec1_der = PrivateKeyDer::from_pem_slice(sec1_pem.as_bytes()).unwrap();
        assert!(matches!(sec1_der, PrivateKeyDer::Sec1(_)));
        let ec = key_from(sec1_der, &rcgen::PKCS_ECDSA_P256_SHA256);
        let files = write_pair(dir.path(), &cert_for(&ec), &sec1_pem);
        load_certified_key(&files).unwrap();
    }

    #[test]
    fn each_problem_names_its_file_and_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let other = KeyPair::generate().unwrap();
        let cert = cert_for(&key);

        let missing = TlsFiles {
            cert: dir.path().join("absent.pem"),
            key: dir.path().join("key.pem"),
        };
        let error = load_certified_key(&missing).unwrap_err();
        assert_eq!(error.file(), Some(TlsFile::Cert));
        assert!(
            error
                .to_string()
                .contains("cannot read the certificate file")
                && !error.to_string().contains("absent.pem"),
            "{error}"
        );

        let cases = [
            (
                "just text\n".to_string(),
                key.serialize_pem(),
                Some(TlsFile::Cert),
                "holds no certificate",
            ),
            (
                cert.clone(),
                cert.clone(),
                Some(TlsFile::Key),
                "holds no private key",
            ),
            (
                cert.clone(),
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
                    .to_string(),
                Some(TlsFile::Key),
                "encrypted",
            ),
            (
                cert.clone(),
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_string(),
                Some(TlsFile::Key),
                "unsupported or malformed key",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n".to_string(),
                key.serialize_pem(),
                Some(TlsFile::Cert),
                "without its END line",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_string(),
                key.serialize_pem(),
                Some(TlsFile::Cert),
                "not start with a valid X.509 certificate",
            ),
            (cert.clone(), other.serialize_pem(), None, "does not match"),
        ];
        for (cert_text, key_text, file, expected) in cases {
            let files = write_pair(dir.path(), &cert_text, &key_text);
            let error = load_certified_key(&files).unwrap_err();
            assert_eq!(error.file(), file, "{error}");
            assert!(error.to_string().contains(expected), "{error}");
            // The file is named by its role (the caller adds the field); its path is a
            // configured value and is not repeated.
            let named = match file {
                Some(TlsFile::Cert) => "certificate file",
                _ => "private key file",
            };
            assert!(error.to_string().contains(named), "{error}");
            assert!(!error.to_string().contains(".pem"), "{error}");
            let secret = key_text.lines().nth(1).unwrap_or_default();
            assert!(
                file != Some(TlsFile::Key) || !error.to_string().contains(secret),
                "{error}"
            );
        }
    }

    #[test]
    fn a_changed_pair_is_swapped_in_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let first = KeyPair::generate().unwrap();
        let files = write_pair(dir.path(), &cert_for(&first), &first.serialize_pem());
        let store = CertStore::load(files.clone()).unwrap();
        let original = store.current();
        assert!(matches!(store.reload_if_changed(), Reload::Unchanged));

        let second = KeyPair::generate().unwrap();
        write_pair(dir.path(), &cert_for(&second), &second.serialize_pem());
        assert!(matches!(store.reload_if_changed(), Reload::Reloaded));
        let replaced = store.current();
        assert_ne!(replaced.cert[0], original.cert[0]);

        // A certificate without its key: refused, logged once, the second pair still serves.
        let third = KeyPair::generate().unwrap();
        replace(&files.cert, &cert_for(&third));
        assert!(matches!(
            store.reload_if_changed(),
            Reload::Failed(TlsError::KeyMismatch { .. })
        ));
        assert!(matches!(store.reload_if_changed(), Reload::Unchanged));
        assert_eq!(store.current().cert[0], replaced.cert[0]);
        replace(&files.key, &third.serialize_pem());
        assert!(matches!(store.reload_if_changed(), Reload::Reloaded));
        assert_eq!(store.reloads(), ReloadCounts { ok: 2, failed: 1 });
    }
}
