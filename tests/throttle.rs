//! Password guessing, over real sockets: failed sign-ins per address and per user name with
//! backoff, one address's share of the password-check queue, and the per-address rate limit
//! asked before any credential is verified.
//!
//! Two client addresses are simulated over loopback: the gateway trusts 127.0.0.1 as a proxy
//! and takes the viewer's address from `X-Forwarded-For`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use streamgate::app::App;
use streamgate::app::keys::{MissingKeys, load_signing_keys};
use streamgate::config::Settings;

const ALICE_PASSWORD: &str = "alice-test-only-password";
const BOB_PASSWORD: &str = "bob-test-only-password";

/// The address the wrong passwords come from.
const ATTACKER: &str = "203.0.113.66";
/// Where the real users are.
const VIEWER: &str = "198.51.100.20";

/// Failures let through by default (`auth.failed_sign_ins.allowed`).
const ALLOWED: u64 = 5;

/// [`gateway_config`] with users `alice` and `bob` (cheap argon2 hashes), 127.0.0.1 trusted
/// as a proxy, and `extra` appended.
fn config(extra: &str) -> String {
    format!(
        "{base}users:\n  alice:\n    password: \"{alice}\"\n  bob:\n    password: \"{bob}\"\ntrusted_proxies: [127.0.0.1/32]\n{extra}",
        base = gateway_config(),
        alice = argon2_phc(ALICE_PASSWORD),
        bob = argon2_phc(BOB_PASSWORD),
    )
}

/// `GET /watch/keynote` (members only) with `authorization`, from `address`.
async fn watch_as(gateway_url: &str, authorization: &str, address: &str) -> TestResponse {
    get_with(
        &format!("{gateway_url}/watch/keynote"),
        &[
            ("authorization", authorization),
            ("x-forwarded-for", address),
        ],
    )
    .await
}

/// Full argon2 checks run so far.
fn verifications(app: &App) -> u64 {
    app.snapshot()
        .auth
        .basic
        .as_ref()
        .expect("users are configured")
        .verifications()
}

/// The value of one sample in `/metrics`' text, e.g. `streamgate_failed_sign_ins_total` or
/// `streamgate_sign_ins_throttled_total{reason="user"}`.
fn metric(app: &App, sample: &str) -> u64 {
    let text = app.metrics().encode();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|value| value.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {sample} in:\n{text}")) as u64
}

fn throttled(app: &App, reason: &str) -> u64 {
    metric(
        app,
        &format!("streamgate_sign_ins_throttled_total{{reason=\"{reason}\"}}"),
    )
}

fn failed(app: &App) -> u64 {
    metric(app, "streamgate_failed_sign_ins_total")
}

/// What a flood's requests were answered with.
#[derive(Debug, Default)]
struct Answers {
    unauthorized: u64,
    too_many: u64,
    other: Vec<u16>,
    without_retry_after: u64,
}

/// `tasks` tasks sending wrong passwords for `bob` from [`ATTACKER`] until `stop` is set or
/// `limit` has passed, each at most 2,000 requests.
fn flood(
    gateway_url: String,
    tasks: usize,
    limit: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Answers> {
    tokio::spawn(async move {
        let started = Instant::now();
        let senders: Vec<_> = (0..tasks)
            .map(|task| {
                let (url, stop) = (gateway_url.clone(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut answers = Answers::default();
                    for attempt in 0..2_000 {
                        if stop.load(Ordering::Acquire) || started.elapsed() >= limit {
                            break;
                        }
                        let guess = basic_auth("bob", &format!("guess-{task}-{attempt}"));
                        let response = watch_as(&url, &guess, ATTACKER).await;
                        match response.status.as_u16() {
                            401 => answers.unauthorized += 1,
                            429 => {
                                answers.too_many += 1;
                                if response.header("retry-after").is_none() {
                                    answers.without_retry_after += 1;
                                }
                            }
                            other => answers.other.push(other),
                        }
                    }
                    answers
                })
            })
            .collect();
        let mut total = Answers::default();
        for sender in senders {
            let answers = sender.await.expect("a flood task");
            total.unauthorized += answers.unauthorized;
            total.too_many += answers.too_many;
            total.without_retry_after += answers.without_retry_after;
            total.other.extend(answers.other);
        }
        total
    })
}

/// How many failures in a row can be let through within `elapsed` of the first: the allowed
/// ones, then one per backoff window (1 s, 2 s, 4 s, ...) that ends within `elapsed`.
fn failures_within(elapsed: Duration) -> u64 {
    let mut windows = 0;
    let mut waited = Duration::ZERO;
    let mut window = Duration::from_secs(1);
    while waited + window <= elapsed {
        waited += window;
        window *= 2;
        windows += 1;
    }
    ALLOWED + windows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_flood_from_one_address_costs_few_checks_and_locks_out_no_one_else() {
    let gateway = TestGateway::start_with(&config("")).await;
    let app = gateway.app();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let flood = flood(
        gateway.origin().to_string(),
        12,
        Duration::from_secs(3),
        Arc::clone(&stop),
    );

    // Once the attacker's address is being refused, the real user signs in from hers: on a
    // cold cache, at the first try, within a second.
    wait_for("the flooding address to be refused", async || {
        throttled(app, "address") + throttled(app, "queued") > 0
    })
    .await;
    let signing_in = Instant::now();
    let alice = watch_as(
        gateway.origin(),
        &basic_auth("alice", ALICE_PASSWORD),
        VIEWER,
    )
    .await;
    let took = signing_in.elapsed();
    redirect_location(&alice, "alice during the flood");
    assert!(took < Duration::from_secs(1), "alice waited {took:?}");

    let answers = flood.await.expect("the flood");
    let elapsed = started.elapsed();
    assert!(answers.other.is_empty(), "{answers:?}");
    assert_eq!(answers.without_retry_after, 0, "{answers:?}");
    assert!(answers.too_many > answers.unauthorized, "{answers:?}");
    // Every argon2 check but alice's was one of the flood's failures, and they stayed within
    // what the backoff lets through (85 in the review's run, with more requests refused 503).
    let flood_checks = verifications(app) - 1;
    assert_eq!(flood_checks, answers.unauthorized, "{answers:?}");
    assert!(
        flood_checks <= failures_within(elapsed),
        "{flood_checks} checks in {elapsed:?}: {answers:?}"
    );
    // The metrics saw the same.
    assert_eq!(failed(app), answers.unauthorized);
    assert_eq!(
        throttled(app, "address") + throttled(app, "queued") + throttled(app, "user"),
        answers.too_many
    );
    assert!(throttled(app, "queued") > 0, "12 at once queue more than 4");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_reviews_rate_limit_the_flood_is_refused_before_its_passwords_are_checked() {
    // The review's setting: 1/s, burst 5, per address.
    let gateway = TestGateway::start_with(&config(
        "rate_limit:\n  per_address: {per_second: 1, burst: 5}\n",
    ))
    .await;
    let app = gateway.app();
    let started = Instant::now();
    let flood = flood(
        gateway.origin().to_string(),
        12,
        Duration::from_secs(3),
        Arc::new(AtomicBool::new(false)),
    );
    wait_for("the flood to be refused", async || {
        metric(app, "streamgate_rate_limited_total") > 0
    })
    .await;
    let alice = watch_as(
        gateway.origin(),
        &basic_auth("alice", ALICE_PASSWORD),
        VIEWER,
    )
    .await;
    redirect_location(&alice, "alice during the flood");

    let answers = flood.await.expect("the flood");
    let elapsed = started.elapsed();
    assert!(answers.other.is_empty(), "{answers:?}");
    assert_eq!(answers.without_retry_after, 0, "{answers:?}");
    // The rate limit lets through its burst and one a second; no more passwords than that
    // were checked (the limit used to be asked after the password).
    let admitted = 5 + elapsed.as_secs() + 1;
    let flood_checks = verifications(app) - 1;
    assert!(
        flood_checks <= admitted.min(failures_within(elapsed)),
        "{flood_checks} checks in {elapsed:?}: {answers:?}"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_per_address_rate_limit_is_asked_before_the_password_and_counts_a_request_once() {
    let gateway = TestGateway::start_with(&config(
        "rate_limit:\n  per_address: {per_second: 1, burst: 2}\nauth:\n  failed_sign_ins: {allowed: 1000}\n",
    ))
    .await;
    let app = gateway.app();
    let wrong = basic_auth("bob", "wrong");
    let started = Instant::now();
    let (mut checked, mut limited) = (0, 0);
    for _ in 0..8 {
        let before = verifications(app);
        let response = watch_as(gateway.origin(), &wrong, ATTACKER).await;
        match response.status.as_u16() {
            401 => {
                checked += 1;
                assert_eq!(verifications(app), before + 1);
            }
            429 => {
                limited += 1;
                assert_error(&response, 429, "too many requests");
                assert!(response.header("retry-after").is_some());
                assert_eq!(
                    verifications(app),
                    before,
                    "no password checked over the limit"
                );
            }
            other => panic!("unexpected {other}: {}", response.text()),
        }
    }
    // The burst, and one more per second that passed.
    assert!(
        checked <= 2 + started.elapsed().as_secs(),
        "{checked} checked, {limited} limited"
    );
    assert!(limited > 0);
    assert_eq!(metric(app, "streamgate_rate_limited_total"), limited);

    // A request that signs in and gets a token counts once against its address: two in a
    // row fit a burst of 2.
    let alice = basic_auth("alice", ALICE_PASSWORD);
    for attempt in 0..2 {
        let response = watch_as(gateway.origin(), &alice, VIEWER).await;
        redirect_location(&response, &format!("alice's request {attempt}"));
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_user_name_is_refused_from_any_address_after_the_allowed_failures_until_a_success() {
    let gateway = TestGateway::start_with(&config("")).await;
    let app = gateway.app();
    let wrong = basic_auth("alice", "wrong password");
    let alice = basic_auth("alice", ALICE_PASSWORD);
    let address = |i: u64| format!("192.0.2.{}", 10 + i);
    // One failure from each of five addresses: no address is in backoff, the name is.
    for i in 0..ALLOWED {
        let response = watch_as(gateway.origin(), &wrong, &address(i)).await;
        assert_error(&response, 401, "wrong password");
    }
    assert_eq!(failed(app), ALLOWED);
    let refused = watch_as(gateway.origin(), &alice, &address(99)).await;
    assert_error(&refused, 429, "too many failed sign-ins for this user name");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.header("www-authenticate").is_none());
    assert_eq!(verifications(app), ALLOWED, "refused before argon2");
    assert_eq!(throttled(app, "user"), 1);
    // Another user from those addresses is not affected.
    let bob = watch_as(
        gateway.origin(),
        &basic_auth("bob", BOB_PASSWORD),
        &address(0),
    )
    .await;
    redirect_location(&bob, "bob");

    // Once the window (1 s) has passed, the right password gets in, and resets the count:
    // the allowed failures are allowed again. Attempts refused meanwhile do not lengthen it.
    wait_for("alice's window to pass", async || {
        watch_as(gateway.origin(), &alice, &address(99))
            .await
            .status
            == 302
    })
    .await;
    let checks = verifications(app);
    for i in 0..ALLOWED - 1 {
        let response = watch_as(gateway.origin(), &wrong, &address(i)).await;
        assert_error(&response, 401, "wrong password");
    }
    // Without the reset these would be nine failures in a row, and a 16 s window.
    let response = watch_as(gateway.origin(), &alice, &address(50)).await;
    redirect_location(&response, "alice after four failures");
    assert_eq!(verifications(app), checks + ALLOWED - 1);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_remembered_password_is_refused_while_its_address_or_user_name_is_in_backoff() {
    let gateway = TestGateway::start_with(&config("")).await;
    let app = gateway.app();
    let alice = basic_auth("alice", ALICE_PASSWORD);
    let bob = basic_auth("bob", BOB_PASSWORD);
    // Both sign in once, from where they will be refused later: their checks are remembered,
    // and a repeat is answered without another.
    redirect_location(&watch_as(gateway.origin(), &alice, VIEWER).await, "alice");
    redirect_location(&watch_as(gateway.origin(), &bob, ATTACKER).await, "bob");
    redirect_location(
        &watch_as(gateway.origin(), &bob, ATTACKER).await,
        "bob again",
    );
    assert_eq!(verifications(app), 2);

    // alice's name is guessed at once from each of five addresses: the name is in backoff,
    // no address is. Her remembered password is refused as a check would be.
    let wrong = basic_auth("alice", "wrong password");
    for i in 0..ALLOWED {
        let address = format!("192.0.2.{}", 10 + i);
        let response = watch_as(gateway.origin(), &wrong, &address).await;
        assert_error(&response, 401, "wrong password");
    }
    let refused = watch_as(gateway.origin(), &alice, VIEWER).await;
    assert_error(&refused, 429, "too many failed sign-ins for this user name");
    assert_eq!(refused.header("retry-after"), Some("1"));

    // The attacker's address guesses another name five times: the address is in backoff,
    // and bob's remembered password is refused from it, but not from elsewhere.
    let mallory = basic_auth("mallory", "guess");
    for _ in 0..ALLOWED {
        let response = watch_as(gateway.origin(), &mallory, ATTACKER).await;
        assert_error(&response, 401, "wrong password");
    }
    let refused = watch_as(gateway.origin(), &bob, ATTACKER).await;
    assert_error(&refused, 429, "too many failed sign-ins from this address");
    redirect_location(
        &watch_as(gateway.origin(), &bob, VIEWER).await,
        "bob elsewhere",
    );
    assert_eq!(throttled(app, "user"), 1);
    assert_eq!(throttled(app, "address"), 1);
    // Only the wrong passwords were checked since; the refused and the remembered ones ran
    // no check.
    assert_eq!(verifications(app), 2 + 2 * ALLOWED);
    gateway.shutdown().await;
}

#[tokio::test]
async fn wrong_api_keys_put_their_address_in_backoff_too() {
    let gateway = TestGateway::start_with(&config("")).await;
    let app = gateway.app();
    let right = format!("Bearer {TEST_API_KEY}");
    for i in 0..ALLOWED {
        let response = watch_as(gateway.origin(), &format!("Bearer guess-{i}"), ATTACKER).await;
        assert_error(&response, 401, "API key is not valid");
    }
    let refused = watch_as(gateway.origin(), &right, ATTACKER).await;
    assert_error(&refused, 429, "too many failed sign-ins from this address");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // The same key from elsewhere works, and so does anonymous access from the address.
    let elsewhere = watch_as(gateway.origin(), &right, VIEWER).await;
    redirect_location(&elsewhere, "the key from another address");
    let anonymous = get_with(
        &gateway.url("/watch/intro"),
        &[("x-forwarded-for", ATTACKER)],
    )
    .await;
    redirect_location(&anonymous, "anonymous from the address in backoff");
    assert_eq!(failed(app), ALLOWED);
    assert_eq!(throttled(app, "address"), 1);
    assert_eq!(throttled(app, "user"), 0);
    gateway.shutdown().await;
}

#[tokio::test]
async fn failed_sign_ins_survive_a_reload_that_keeps_their_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let base = config("");
    std::fs::write(&path, &base).unwrap();
    let settings = Settings::load(&path).unwrap();
    let (keys, _) = load_signing_keys(&settings, MissingKeys::Fail).unwrap();
    let app = App::start(settings, keys, None).await.expect("starts");
    let origin = format!("http://{}", app.gateway_addr());
    let reloader = app.reloader().expect("a file-backed configuration reloads");
    let wrong = basic_auth("alice", "wrong password");
    let alice = basic_auth("alice", ALICE_PASSWORD);
    for _ in 0..ALLOWED {
        assert_eq!(watch_as(&origin, &wrong, ATTACKER).await.status, 401);
    }
    assert_eq!(watch_as(&origin, &alice, VIEWER).await.status, 429);

    // Another setting changes: the failures are still counted.
    std::fs::write(
        &path,
        base.replace("tags: [members]", "tags: [members, new]"),
    )
    .unwrap();
    reloader.reload().expect("the reload applies");
    assert_eq!(watch_as(&origin, &alice, VIEWER).await.status, 429);

    // The throttle's own settings change: it starts afresh under them.
    std::fs::write(
        &path,
        format!("{base}auth:\n  failed_sign_ins: {{allowed: 6}}\n"),
    )
    .unwrap();
    reloader.reload().expect("the reload applies");
    let response = watch_as(&origin, &alice, VIEWER).await;
    redirect_location(&response, "alice under new settings");
    app.shutdown().await;
}
