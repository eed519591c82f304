//! Micro-benchmarks of the token path's pieces, each on one core:
//!
//! - `sign`: one RS256 token with the key parsed once at load ([`sign_jws`]), against
//!   `jsonwebtoken::encode`, which parses the PKCS#1 DER again on every call; the ratio is
//!   what parsing once buys.
//! - `claims_build`: the claims of one token and their JSON, without the signature.
//! - `cache_hit`: [`TokenCache::token`] for a token that is already cached.
//!
//! Run with `cargo bench --bench micro`; the whole run takes about half a minute.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls_pki_types::PrivatePkcs1KeyDer;
use rustls_pki_types::pem::PemObject;
use streamgate::cache::TokenCache;
use streamgate::token::claims::Claims;
use streamgate::token::signer::{sign_jws, unix_now};
use streamgate::token::{Signer, SigningKey, TokenSettings, VideoUid};

/// The committed test-only key (RSA 2048, PKCS#1 PEM); never a real Stream key.
const FIXTURE_PEM: &str = include_str!("../tests/fixtures/test-only-signing-key.pem");
const FIXTURE_KID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const VIDEO_UID: &str = "0123456789abcdef0123456789abcdef";
const NBF_BACKDATE: Duration = Duration::from_secs(60);

fn fixture_key() -> SigningKey {
    SigningKey::from_material(Some(FIXTURE_KID), FIXTURE_PEM).expect("the fixture key parses")
}

/// The settings the load bench's config produces: a one-hour token, no options.
fn token_settings() -> TokenSettings {
    TokenSettings {
        ttl: Duration::from_secs(3600),
        downloadable: false,
        access_rules: Arc::from(vec![]),
    }
}

fn video_uid() -> VideoUid {
    VIDEO_UID.parse().expect("a valid uid")
}

fn sign(c: &mut Criterion) {
    let key = fixture_key();
    let der = PrivatePkcs1KeyDer::from_pem_slice(FIXTURE_PEM.as_bytes()).expect("PKCS#1 PEM");
    // Built once, as an application would; `encode` still parses the DER on every call.
    let encoding_key = EncodingKey::from_rsa_der(der.secret_pkcs1_der());
    let header = Header {
        typ: None,
        kid: Some(FIXTURE_KID.into()),
        ..Header::new(Algorithm::RS256)
    };
    let settings = token_settings();
    let uid = video_uid();
    let claims = Claims::build(&uid, FIXTURE_KID, &settings, unix_now(), NBF_BACKDATE);
    assert_eq!(
        sign_jws(&key, &claims).expect("signs"),
        jsonwebtoken::encode(&header, &claims, &encoding_key).expect("signs"),
        "both paths must produce the same token for the comparison to mean anything"
    );

    let mut group = c.benchmark_group("sign");
    group.bench_function("sign_jws_parsed_key", |b| {
        b.iter(|| sign_jws(black_box(&key), black_box(&claims)).expect("signs"))
    });
    group.bench_function("jsonwebtoken_encode_reparsed_key", |b| {
        b.iter(|| {
            jsonwebtoken::encode(
                black_box(&header),
                black_box(&claims),
                black_box(&encoding_key),
            )
            .expect("signs")
        })
    });
    group.finish();
}

fn claims_build(c: &mut Criterion) {
    let settings = token_settings();
    let uid = video_uid();
    let now = unix_now();
    let mut group = c.benchmark_group("claims_build");
    group.bench_function("build_and_serialize", |b| {
        b.iter(|| {
            let claims = Claims::build(
                black_box(&uid),
                black_box(FIXTURE_KID),
                black_box(&settings),
                black_box(now),
                NBF_BACKDATE,
            );
            serde_json::to_vec(&claims).expect("claims serialize")
        })
    });
    group.finish();
}

fn cache_hit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let signer = Arc::new(Signer::new(vec![fixture_key()], NBF_BACKDATE, 2));
    let cache = TokenCache::new(signer, 1_000, Duration::from_secs(600));
    let settings = Arc::new(token_settings());
    let uid = video_uid();
    runtime
        .block_on(cache.token(uid, &settings))
        .expect("the warm-up signature succeeds");

    let mut group = c.benchmark_group("cache_hit");
    group.bench_function("token_warmed_key", |b| {
        // One `block_on` per batch, not per call, so the runtime's enter/exit is not what is
        // measured (this is what criterion's own async support does).
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let token = cache
                        .token(black_box(uid), black_box(&settings))
                        .await
                        .expect("a cached token");
                    black_box(token);
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    let stats = cache.stats();
    assert_eq!(stats.misses, 1, "every measured call must be a hit");
    assert_eq!(cache.signer().signatures(), 1);
}

/// Short runs: the machine is shared, and these are for ratios and regressions, not for
/// nanosecond precision.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args()
}

criterion_group! {
    name = micro;
    config = config();
    targets = sign, claims_build, cache_hit
}
criterion_main!(micro);
