//! JWKS documents: which of their keys can verify an issuer's algorithms, and, for a JWKS
//! URL, fetching them over the upstream HTTPS client at start, every `refresh`, and on demand
//! when a token names an unknown `kid` (single-flight, rate-limited).

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::KeySource;
use super::keys::{KeySet, parse_jwks};
use super::{Issuer, JwtVerifier};
use crate::http::client::{self as http_client, ClientOptions, HttpsClient};

/// A JWKS fetch gives up after this long.
const JWKS_TIMEOUT: Duration = Duration::from_secs(10);
/// A JWKS document larger than this is refused.
const JWKS_MAX_BYTES: usize = 1 << 20;
/// After a failed JWKS fetch, the first retry comes after this long, doubling per failure...
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// ...up to this (and never later than the issuer's `refresh`).
const MAX_RETRY: Duration = Duration::from_secs(30);

/// A JWKS URL and what was last fetched from it.
pub(super) struct Remote {
    url: http::Uri,
    refresh: Duration,
    min_refresh_interval: Duration,
    client: HttpsClient,
    /// `None` until a fetch has succeeded.
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Completed fetch attempts; bumped after `keys` is updated.
    pub(super) generation: AtomicU64,
    /// Held while fetching (single flight); holds when an unknown `kid` last caused a fetch.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl Remote {
    /// Prepare to fetch `url` (nothing is fetched yet), trusting `ca_file` besides the
    /// usual roots.
    pub(super) fn new(
        url: &http::Uri,
        refresh: Duration,
        min_refresh_interval: Duration,
        ca_file: Option<&Path>,
    ) -> Result<Self, String> {
        if !matches!(url.scheme_str(), Some("https" | "http")) || url.host().is_none() {
            return Err(format!(
                "the JWKS URL {} is not an http(s) URL",
                redacted(url)
            ));
        }
        if refresh.is_zero() {
            return Err("the JWKS `refresh` interval must be positive".into());
        }
        let client = http_client::build(&ClientOptions {
            extra_ca_file: ca_file.map(Path::to_path_buf),
            ..ClientOptions::default()
        })
        .map_err(|error| error.to_string())?;
        Ok(Self {
            url: url.clone(),
            refresh,
            min_refresh_interval,
            client,
            keys: RwLock::new(None),
            generation: AtomicU64::new(0),
            fetching: tokio::sync::Mutex::new(None),
        })
    }

    /// The keys of the last successful fetch.
    pub(super) fn current(&self) -> Option<Arc<KeySet>> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl JwtVerifier {
    /// Start one task per JWKS URL issuer: fetch now, then every `refresh` (sooner after a
    /// failure, keeping the previous keys meanwhile). The tasks end when `stop` resolves or
    /// the verifier is dropped. A second call does nothing.
    pub fn spawn_refresh(self: &Arc<Self>, stop: impl Future<Output = ()> + Send + 'static) {
        let remote: Vec<usize> = (0..self.issuers.len())
            .filter(|&i| matches!(self.issuers[i].keys, KeySource::Remote(_)))
            .collect();
        if remote.is_empty() || self.refresh_spawned.swap(true, Ordering::SeqCst) {
            return;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                () = stop => {
                    let _ = stop_tx.send(true);
                }
                // Every refresh task ended (the verifier was dropped).
                () = stop_tx.closed() => {}
            }
        });
        for index in remote {
            let running = TaskGuard::new(self.refresh_tasks.clone());
            let verifier = Arc::downgrade(self);
            let stop = stop_rx.clone();
            tokio::spawn(async move {
                let _running = running;
                refresh_loop(verifier, index, stop).await;
            });
        }
    }

    /// Fetch a JWKS because a token named a key it lacks: one fetch at a time, none if another
    /// completed since `seen`, and at most one per `min_refresh_interval`.
    pub(super) async fn refresh_on_demand(&self, issuer: &Issuer, remote: &Remote, seen: u64) {
        let mut last = remote.fetching.lock().await;
        if remote.generation.load(Ordering::Acquire) != seen {
            return;
        }
        if last.is_some_and(|at| at.elapsed() < remote.min_refresh_interval) {
            return;
        }
        *last = Some(Instant::now());
        self.fetch_jwks(issuer, remote).await;
    }

    /// One fetch; the caller holds `remote.fetching`. Keeps the previous keys on failure.
    async fn fetch_jwks(&self, issuer: &Issuer, remote: &Remote) -> bool {
        let result =
            http_client::get_bytes(&remote.client, &remote.url, JWKS_TIMEOUT, JWKS_MAX_BYTES)
                .await
                .map_err(|error| error.to_string())
                .and_then(|body| parse_jwks(&body, &issuer.settings.algorithms));
        let ok = match result {
            Ok(keys) => {
                tracing::debug!(
                    issuer = %issuer.name,
                    keys = keys.by_kid.len().max(usize::from(keys.single.is_some())),
                    "fetched the issuer's JWKS"
                );
                *remote
                    .keys
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(keys));
                true
            }
            Err(reason) => {
                tracing::warn!(
                    issuer = %issuer.name,
                    url = %redacted(&remote.url),
                    reason = %crate::untrusted::Untrusted::new(&reason.to_string()),
                    "cannot fetch the issuer's JWKS; keeping the previous keys"
                );
                false
            }
        };
        remote.generation.fetch_add(1, Ordering::Release);
        self.jwks_fetches.fetch_add(1, Ordering::SeqCst);
        ok
    }
}

/// Counts a running task until dropped (also when the runtime drops the task).
struct TaskGuard(Arc<AtomicUsize>);

impl TaskGuard {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Refresh one JWKS URL issuer until `stop` or the verifier is gone.
async fn refresh_loop(verifier: Weak<JwtVerifier>, index: usize, mut stop: watch::Receiver<bool>) {
    let mut failures: u32 = 0;
    loop {
        let delay = {
            let Some(verifier) = verifier.upgrade() else {
                return;
            };
            let issuer = &verifier.issuers[index];
            let KeySource::Remote(remote) = &issuer.keys else {
                return;
            };
            let fetched = tokio::select! {
                biased;
                () = stopped(&mut stop) => return,
                fetched = async {
                    let _flight = remote.fetching.lock().await;
                    verifier.fetch_jwks(issuer, remote).await
                } => fetched,
            };
            if fetched {
                failures = 0;
                remote.refresh
            } else {
                failures = failures.saturating_add(1);
                retry_delay(failures).min(remote.refresh)
            }
        };
        tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Resolves once stop is signalled (or can no longer be).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// 1 s after the first failure, doubling, at most 30 s.
fn retry_delay(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(5);
    (FIRST_RETRY * factor).min(MAX_RETRY)
}

/// A URL for logs: scheme, host and path, without a query that could hold a secret.
fn redacted(url: &http::Uri) -> String {
    format!(
        "{}://{}{}",
        url.scheme_str().unwrap_or("?"),
        url.authority().map_or("?", |authority| authority.as_str()),
        url.path()
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::http::client::test_support::{TestCa, TestServer, respond, serve};
    use crate::identity::AuthError;
    use crate::identity::jwt::IssuerKeys;
    use crate::identity::jwt::tests::{
        TestKey, claims, ec_key, ed_key, file, other_rsa_key, reason, rsa_key, settings, sign,
    };
    use jsonwebtoken::Algorithm;
    use serde_json::Value;

    /// Bounded waits: at most this many polls of `POLL` each.
    const POLLS: usize = 1000;
    const POLL: Duration = Duration::from_millis(10);

    #[tokio::test]
    async fn a_jwks_file_serves_keys_by_kid() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (rsa_key(), other_rsa_key());
        let ec = ec_key(false);
        let document = json!({"keys": [
            one.jwk_with("one"),
            two.jwk_with("two"),
            ec.jwk_with("ec-is-skipped"),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "oct-is-skipped"},
        ]});
        let path = file(&dir, "jwks.json", document.to_string());
        let verifier = JwtVerifier::new(vec![settings(
            IssuerKeys::JwksFile(path),
            vec![Algorithm::RS256],
        )])
        .unwrap();
        let by_two = sign(
            &two.encoding,
            Algorithm::RS256,
            Some("two"),
            &claims(json!({})),
        );
        verifier.verify(&by_two).await.unwrap();

        let wrong_kid = sign(
            &two.encoding,
            Algorithm::RS256,
            Some("one"),
            &claims(json!({})),
        );
        assert_eq!(reason(verifier.verify(&wrong_kid).await), "bad signature");
        let unknown = sign(
            &two.encoding,
            Algorithm::RS256,
            Some("three"),
            &claims(json!({})),
        );
        assert_eq!(reason(verifier.verify(&unknown).await), "unknown key id");
        let no_kid = sign(&two.encoding, Algorithm::RS256, None, &claims(json!({})));
        assert!(reason(verifier.verify(&no_kid).await).contains("no key id"));
    }

    #[tokio::test]
    async fn a_jwks_with_one_key_without_kid_serves_tokens_without_kid() {
        let dir = tempfile::tempdir().unwrap();
        let key = ed_key();
        let path = file(&dir, "jwks.json", json!({"keys": [key.jwk]}).to_string());
        let verifier = JwtVerifier::new(vec![settings(
            IssuerKeys::JwksFile(path),
            vec![Algorithm::EdDSA],
        )])
        .unwrap();
        let token = sign(&key.encoding, Algorithm::EdDSA, None, &claims(json!({})));
        verifier.verify(&token).await.unwrap();
    }

    #[tokio::test]
    async fn a_jwk_that_names_its_alg_verifies_only_that_alg() {
        let dir = tempfile::tempdir().unwrap();
        let key = rsa_key();
        let mut jwk = key.jwk_with("k");
        jwk["alg"] = json!("RS256");
        let path = file(&dir, "jwks.json", json!({"keys": [jwk]}).to_string());
        let verifier = JwtVerifier::new(vec![settings(
            IssuerKeys::JwksFile(path),
            vec![Algorithm::RS256, Algorithm::PS256],
        )])
        .unwrap();
        let rs = sign(
            &key.encoding,
            Algorithm::RS256,
            Some("k"),
            &claims(json!({})),
        );
        verifier.verify(&rs).await.unwrap();
        let ps = sign(
            &key.encoding,
            Algorithm::PS256,
            Some("k"),
            &claims(json!({})),
        );
        assert_eq!(
            reason(verifier.verify(&ps).await),
            "algorithm does not match the key"
        );
    }

    /// What a test JWKS endpoint answers.
    struct Endpoint {
        status: u16,
        body: String,
    }

    fn jwks_body(keys: &[(&TestKey, &str)]) -> String {
        let keys: Vec<Value> = keys.iter().map(|(key, kid)| key.jwk_with(kid)).collect();
        json!({ "keys": keys }).to_string()
    }

    async fn jwks_server(
        tls: Option<Arc<rustls::ServerConfig>>,
        body: String,
    ) -> (TestServer, Arc<Mutex<Endpoint>>) {
        let endpoint = Arc::new(Mutex::new(Endpoint { status: 200, body }));
        let state = endpoint.clone();
        let server = serve(
            tls,
            Arc::new(move |_request| {
                let endpoint = state.lock().unwrap();
                respond(endpoint.status, endpoint.body.clone())
            }),
        )
        .await;
        (server, endpoint)
    }

    fn jwks_url(
        scheme: &str,
        server: &TestServer,
        refresh: Duration,
        ca_file: Option<PathBuf>,
    ) -> IssuerKeys {
        IssuerKeys::JwksUrl {
            url: format!("{scheme}://{}/.well-known/jwks.json", server.addr)
                .parse()
                .unwrap(),
            refresh,
            min_refresh_interval: Duration::from_secs(3600),
            ca_file,
        }
    }

    /// Wait (bounded) until `verifier` has completed `fetches` JWKS fetches.
    async fn wait_for_fetches(verifier: &JwtVerifier, fetches: u64) {
        for _ in 0..POLLS {
            if verifier.jwks_fetches() >= fetches {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!(
            "only {} JWKS fetches, expected {fetches}",
            verifier.jwks_fetches()
        );
    }

    fn stop_signal() -> (
        tokio::sync::oneshot::Sender<()>,
        impl Future<Output = ()> + Send + 'static,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        (tx, async move {
            let _ = rx.await;
        })
    }

    #[tokio::test]
    async fn an_unknown_kid_refreshes_the_jwks_once_for_many_requests() {
        let (one, two) = (rsa_key(), other_rsa_key());
        let (server, endpoint) = jwks_server(None, jwks_body(&[(one, "one")])).await;
        let verifier = Arc::new(
            JwtVerifier::new(vec![settings(
                jwks_url("http", &server, Duration::from_secs(3600), None),
                vec![Algorithm::RS256],
            )])
            .unwrap(),
        );
        let (stop, stop_future) = stop_signal();
        verifier.spawn_refresh(stop_future);
        wait_for_fetches(&verifier, 1).await;
        let by_one = sign(
            &one.encoding,
            Algorithm::RS256,
            Some("one"),
            &claims(json!({})),
        );
        verifier.verify(&by_one).await.unwrap();
        assert_eq!(server.hits(), 1);

        // The provider rotates in a new key; 20 concurrent requests name it.
        endpoint.lock().unwrap().body = jwks_body(&[(one, "one"), (two, "two")]);
        let mut tasks = Vec::new();
        for i in 0..20 {
            let verifier = verifier.clone();
            let token = sign(
                &two.encoding,
                Algorithm::RS256,
                Some("two"),
                &claims(json!({"sub": format!("user-{i}")})),
            );
            tasks.push(tokio::spawn(async move { verifier.verify(&token).await }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(verifier.jwks_fetches(), 2);
        assert_eq!(server.hits(), 2);

        // A kid the provider does not have: refused, and no refetch within the cooldown.
        for i in 0..20 {
            let token = sign(
                &two.encoding,
                Algorithm::RS256,
                Some("three"),
                &claims(json!({"sub": format!("user-{i}")})),
            );
            assert_eq!(reason(verifier.verify(&token).await), "unknown key id");
        }
        assert_eq!(verifier.jwks_fetches(), 2);
        assert_eq!(server.hits(), 2);
        let _ = stop.send(());
    }

    #[tokio::test]
    async fn known_kids_keep_verifying_while_the_jwks_endpoint_is_down() {
        let key = rsa_key();
        let (server, endpoint) = jwks_server(None, jwks_body(&[(key, "k")])).await;
        let verifier = Arc::new(
            JwtVerifier::new(vec![settings(
                jwks_url("http", &server, Duration::from_millis(20), None),
                vec![Algorithm::RS256],
            )])
            .unwrap(),
        );
        let (stop, stop_future) = stop_signal();
        verifier.spawn_refresh(stop_future);
        wait_for_fetches(&verifier, 1).await;
        let token = |sub: &str| {
            sign(
                &key.encoding,
                Algorithm::RS256,
                Some("k"),
                &claims(json!({"sub": sub})),
            )
        };
        verifier.verify(&token("before")).await.unwrap();

        endpoint.lock().unwrap().status = 503;
        let fetched = verifier.jwks_fetches();
        wait_for_fetches(&verifier, fetched + 3).await;
        let principal = verifier.verify(&token("during")).await.unwrap();
        assert_eq!(&*principal.name, "during");
        assert_eq!(verifier.verifications(), 2);

        // Stopping ends the refresh task.
        assert_eq!(verifier.refresh_tasks.load(Ordering::SeqCst), 1);
        let _ = stop.send(());
        for _ in 0..POLLS {
            if verifier.refresh_tasks.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("the refresh task did not stop");
    }

    #[tokio::test]
    async fn without_any_fetched_keys_the_answer_is_keys_unavailable() {
        let key = rsa_key();
        let (server, endpoint) = jwks_server(None, jwks_body(&[(key, "k")])).await;
        endpoint.lock().unwrap().status = 500;
        let verifier = JwtVerifier::new(vec![settings(
            jwks_url("http", &server, Duration::from_secs(3600), None),
            vec![Algorithm::RS256],
        )])
        .unwrap();
        let token = sign(
            &key.encoding,
            Algorithm::RS256,
            Some("k"),
            &claims(json!({})),
        );
        for _ in 0..5 {
            assert_eq!(
                verifier.verify(&token).await.unwrap_err(),
                AuthError::KeysUnavailable
            );
        }
        // One on-demand attempt; the rest wait for the cooldown.
        assert_eq!(verifier.jwks_fetches(), 1);
        assert_eq!(server.hits(), 1);
    }

    #[tokio::test]
    async fn keys_are_fetched_on_demand_before_spawn_refresh() {
        let key = ec_key(false);
        let (server, _endpoint) = jwks_server(None, jwks_body(&[(&key, "ec")])).await;
        let verifier = JwtVerifier::new(vec![settings(
            jwks_url("http", &server, Duration::from_secs(3600), None),
            vec![Algorithm::ES256],
        )])
        .unwrap();
        let token = sign(
            &key.encoding,
            Algorithm::ES256,
            Some("ec"),
            &claims(json!({})),
        );
        verifier.verify(&token).await.unwrap();
        assert_eq!(verifier.jwks_fetches(), 1);
    }

    #[tokio::test]
    async fn a_jwks_over_https_is_trusted_through_the_issuer_ca_file() {
        let key = rsa_key();
        let ca = TestCa::new();
        let ca_file = ca.ca_file();
        let (server, _endpoint) =
            jwks_server(Some(ca.server_config.clone()), jwks_body(&[(key, "k")])).await;
        let token = sign(
            &key.encoding,
            Algorithm::RS256,
            Some("k"),
            &claims(json!({})),
        );

        let trusting = JwtVerifier::new(vec![settings(
            jwks_url(
                "https",
                &server,
                Duration::from_secs(3600),
                Some(ca_file.path().into()),
            ),
            vec![Algorithm::RS256],
        )])
        .unwrap();
        trusting.verify(&token).await.unwrap();

        let untrusting = JwtVerifier::new(vec![settings(
            jwks_url("https", &server, Duration::from_secs(3600), None),
            vec![Algorithm::RS256],
        )])
        .unwrap();
        assert_eq!(
            untrusting.verify(&token).await.unwrap_err(),
            AuthError::KeysUnavailable
        );
        assert_eq!(server.hits(), 1);
    }
}
