//! The demo page in a real browser: headless Chromium, driven over WebDriver by chromedriver,
//! against a gateway and its Stream emulator on loopback ports.
//!
//! An anonymous visitor sees and plays only the public video, and is told to sign in for the
//! members' one (by the form and by `/watch`); with a session cookie from the identity
//! provider the same page greets the viewer, lists and plays the members' video, and signs a
//! URL for it. The emulator's player page plays the real clip (HLS, which this Chromium plays
//! natively): its `currentTime` advances, in redirect mode (the gateway's 302 to the
//! emulator's page) and in proxy mode (page, playlists and segments through the gateway).
//! Screenshots land in `<target>/tmp/browser-artifacts/`.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`);
//! `CHROMIUM` and `CHROMEDRIVER` name other binaries. Without them the test is skipped with a
//! loud message, except under CI (`CI` set), where that is a failure.

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use futures_util::FutureExt as _;
use serde_json::{Value, json};
use webdriver::{Element, Session};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "streamgate";
const SESSION_COOKIE: &str = "session";
const HS_SECRET: &[u8] = b"browser-test-only-hs256-secret-0123456789abcdef";
const VIEWER: &str = "viewer-1";

/// Longest the whole browser scenario may take.
const SCENARIO_LIMIT: Duration = Duration::from_secs(180);

// === where the browser is, or why the test does not run ===

/// The two programs the test drives.
#[derive(Debug, PartialEq)]
struct BrowserTools {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

/// What to do about the browser: run, or skip or fail saying why.
#[derive(Debug, PartialEq)]
enum Availability {
    Ready(BrowserTools),
    Skip(String),
    Fail(String),
}

/// Find chromium and chromedriver: `CHROMIUM` / `CHROMEDRIVER` when set (and nothing else
/// then), otherwise on `PATH`, otherwise in `/usr/bin`. Missing ones skip the test, unless
/// `CI` is set (to anything but `false` or `0`): there a missing browser is a failure.
fn browser_availability(
    var: impl Fn(&str) -> Option<OsString>,
    is_file: impl Fn(&Path) -> bool,
) -> Availability {
    let locate = |override_var: &str, name: &str| -> Option<PathBuf> {
        if let Some(path) = var(override_var).filter(|value| !value.is_empty()) {
            let path = PathBuf::from(path);
            return is_file(&path).then_some(path);
        }
        let on_path = var("PATH")
            .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .unwrap_or_default();
        on_path
            .into_iter()
            .chain([PathBuf::from("/usr/bin")])
            .map(|dir| dir.join(name))
            .find(|candidate| is_file(candidate))
    };
    let chromium = locate("CHROMIUM", "chromium");
    let chromedriver = locate("CHROMEDRIVER", "chromedriver");
    if let (Some(chromium), Some(chromedriver)) = (&chromium, &chromedriver) {
        return Availability::Ready(BrowserTools {
            chromium: chromium.clone(),
            chromedriver: chromedriver.clone(),
        });
    }
    let missing: Vec<&str> = [
        chromium.is_none().then_some("chromium (or CHROMIUM)"),
        chromedriver
            .is_none()
            .then_some("chromedriver (or CHROMEDRIVER)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let reason = format!("not found: {}", missing.join(", "));
    let in_ci =
        var("CI").is_some_and(|value| !value.is_empty() && value != "false" && value != "0");
    if in_ci {
        Availability::Fail(reason)
    } else {
        Availability::Skip(reason)
    }
}

/// The tools, or `None` after a loud notice that the test is skipped; panics under CI.
fn browser_tools_or_skip() -> Option<BrowserTools> {
    match browser_availability(|name| std::env::var_os(name), Path::is_file) {
        Availability::Ready(tools) => Some(tools),
        Availability::Fail(reason) => {
            panic!(
                "CI is set, so a missing browser is a failure: the browser test needs chromium and \
                 chromedriver (apt-get install chromium chromium-driver); {reason}"
            )
        }
        Availability::Skip(reason) => {
            // Straight to the process's stderr: the test harness captures `eprintln!` of a
            // passing test, and this must be seen.
            use std::io::Write as _;
            let rule = "!".repeat(78);
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n{rule}\n!! SKIPPED: browser test needs chromium and chromedriver\n!!   (apt-get install chromium chromium-driver)\n!! {reason}\n{rule}\n"
            );
            None
        }
    }
}

/// An environment of just `pairs`.
fn fake_env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
    let vars: std::collections::HashMap<String, OsString> = pairs
        .iter()
        .map(|(name, value)| (name.to_string(), OsString::from(value)))
        .collect();
    move |name| vars.get(name).cloned()
}

#[test]
fn a_missing_browser_skips_here_and_fails_in_ci() {
    let installed = |path: &Path| {
        path == Path::new("/usr/bin/chromium") || path == Path::new("/opt/bin/chromedriver")
    };

    // chromium in /usr/bin, chromedriver on PATH.
    assert_eq!(
        browser_availability(fake_env(&[("PATH", "/nowhere:/opt/bin")]), installed),
        Availability::Ready(BrowserTools {
            chromium: PathBuf::from("/usr/bin/chromium"),
            chromedriver: PathBuf::from("/opt/bin/chromedriver"),
        })
    );
    // An override is the only place looked at.
    let hidden = [("PATH", "/opt/bin"), ("CHROMIUM", "/nonexistent")];
    match browser_availability(fake_env(&hidden), installed) {
        Availability::Skip(reason) => {
            assert!(reason.contains("chromium (or CHROMIUM)"), "{reason}");
            assert!(!reason.contains("chromedriver (or"), "{reason}");
        }
        other => panic!("expected a skip, got {other:?}"),
    }
    // The same absence fails under CI; `CI=false`, `CI=0` and `CI=` are not CI.
    for (ci, fails) in [
        ("true", true),
        ("1", true),
        ("false", false),
        ("0", false),
        ("", false),
    ] {
        let outcome =
            browser_availability(fake_env(&[hidden[0], hidden[1], ("CI", ci)]), installed);
        assert_eq!(
            matches!(outcome, Availability::Fail(_)),
            fails,
            "CI={ci:?}: {outcome:?}"
        );
    }
}

// === the gateway and the browser ===

/// [`gateway_config`] (public `intro`, members-only `keynote`) plus an HS256 identity
/// provider whose token the browser presents in the `session` cookie.
fn browser_config(secret_file: &Path) -> String {
    format!(
        "{base}jwt_issuers:
  - issuer: {ISSUER}
    audience: {AUDIENCE}
    algorithms: [HS256]
    secret:
      file: {secret}
    cookie: {SESSION_COOKIE}
    groups_claim: groups
",
        base = gateway_config(),
        secret = secret_file.display(),
    )
}

/// A session token for [`VIEWER`] in group `members`, valid for an hour.
fn viewer_token() -> String {
    let claims = json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": VIEWER,
        "iat": unix_now(),
        "exp": unix_now() + 3600,
        "groups": ["members"],
    });
    mint_hs256(HS_SECRET, &claims)
}

fn capabilities(chromium: &Path, profile: &Path) -> Value {
    json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
                "--disable-quic",
                format!("--user-data-dir={}", profile.display()),
                "--window-size=1280,900",
            ],
        },
        "goog:loggingPrefs": { "browser": "ALL" },
    })
}

/// The screenshots this test saves.
const SCREENSHOTS: [&str; 4] = [
    "anonymous.png",
    "signed-in.png",
    "signed-url.png",
    "failure.png",
];

/// `<target>/tmp/browser-artifacts/`, created.
fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-artifacts");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|error| panic!("creating {} failed: {error}", dir.display()));
    dir
}

async fn save_screenshot(session: &Session, name: &str) -> Result<PathBuf, String> {
    let png = session
        .screenshot()
        .await
        .map_err(|error| format!("screenshot failed: {error}"))?;
    let path = artifacts_dir().join(name);
    std::fs::write(&path, png)
        .map_err(|error| format!("writing {} failed: {error}", path.display()))?;
    eprintln!("screenshot: {}", path.display());
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_plays_and_signs_in_a_real_browser() {
    let Some(tools) = browser_tools_or_skip() else {
        return;
    };
    let started = Instant::now();
    // No screenshot from an earlier run may pass for one of this run.
    for name in SCREENSHOTS {
        let _ = std::fs::remove_file(artifacts_dir().join(name));
    }
    let secret = temp_file_with(HS_SECRET);
    let gateway = TestGateway::start_with(&browser_config(secret.path())).await;
    let origin = gateway.origin().to_owned();

    let outcome = in_browser(&tools, "failure.png", async |session: &Session| {
        anonymous_visitor(session, &origin).await;
        signed_in_viewer(session, &origin).await;
        console_is_clean(session).await;
    })
    .await;
    gateway.shutdown().await;
    outcome.resume();
    eprintln!("browser test took {:.1?}", started.elapsed());
}

/// How a browser scenario ended.
enum Outcome {
    Passed,
    Panicked(Box<dyn std::any::Any + Send>),
    TimedOut,
}

impl Outcome {
    /// Go on with the scenario's panic, if it had one.
    fn resume(self) {
        match self {
            Outcome::Passed => {}
            Outcome::Panicked(panic) => std::panic::resume_unwind(panic),
            Outcome::TimedOut => {
                panic!("the browser scenario took longer than {SCENARIO_LIMIT:?}")
            }
        }
    }
}

/// Start Chromium (through chromedriver, with a fresh profile), run `scenario` in it for at
/// most [`SCENARIO_LIMIT`], and close the browser. A failing scenario leaves a screenshot
/// named `failure_screenshot` and its console printed; its panic is returned, to be resumed
/// once the caller has shut its servers down.
async fn in_browser(
    tools: &BrowserTools,
    failure_screenshot: &str,
    scenario: impl AsyncFnOnce(&Session),
) -> Outcome {
    let driver = webdriver::Driver::start(&tools.chromedriver);
    let profile = tempfile::TempDir::new().expect("a temporary browser profile");
    let session = Session::new(driver.url(), capabilities(&tools.chromium, profile.path()))
        .await
        .unwrap_or_else(|error| panic!("chromium should start through chromedriver: {error}"));

    // Catch a failing step so that it still leaves a screenshot and the browser is closed
    // before the panic goes on. (futures-util's `std` feature is on through moka and governor.)
    let outcome = tokio::time::timeout(
        SCENARIO_LIMIT,
        std::panic::AssertUnwindSafe(scenario(&session)).catch_unwind(),
    )
    .await;
    let outcome = match outcome {
        Ok(Ok(())) => Outcome::Passed,
        Ok(Err(panic)) => Outcome::Panicked(panic),
        Err(_) => Outcome::TimedOut,
    };
    if !matches!(outcome, Outcome::Passed) {
        if let Err(reason) = save_screenshot(&session, failure_screenshot).await {
            eprintln!("no failure screenshot: {reason}");
        }
        print_console(&session).await;
    }
    if let Err(error) = session.delete().await {
        eprintln!("closing the browser failed (chromedriver's group is ended anyway): {error}");
    }
    drop(driver);
    outcome
}

/// The screenshots the playback test saves.
const PLAYBACK_SCREENSHOTS: [&str; 3] = [
    "playing-redirected.png",
    "playing-proxied.png",
    "playback-failure.png",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_player_plays_the_clip_redirected_and_proxied() {
    let Some(tools) = browser_tools_or_skip() else {
        return;
    };
    for name in PLAYBACK_SCREENSHOTS {
        let _ = std::fs::remove_file(artifacts_dir().join(name));
    }
    let redirecting = TestGateway::start_with(&gateway_config()).await;
    let proxying = TestGateway::start_with(&format!("{}mode: proxy\n", gateway_config())).await;

    let outcome = in_browser(&tools, "playback-failure.png", async |session: &Session| {
        // Redirect mode: the gateway's 302 takes the browser to the emulator's own page,
        // which fetches the playlists and segments from the emulator with the token.
        let emulator = redirecting.emulator_origin();
        goto(session, &redirecting.url("/watch/intro")).await;
        let page = session.current_url().await.expect("reading the URL");
        assert!(
            page.starts_with(&format!("{emulator}/")) && page.ends_with("/iframe"),
            "redirect mode should land on the emulator's player page: {page}"
        );
        let playing = plays_the_clip(session, "redirect mode").await;
        let manifest = page.replace("/iframe", "/manifest/video.m3u8");
        assert_eq!(playing.src, manifest, "redirect mode");
        save_screenshot(session, "playing-redirected.png")
            .await
            .expect("the redirect-mode screenshot should be saved");

        // Proxy mode: the page, the playlists and the segments all come through the gateway;
        // the browser never learns the emulator's address or the token.
        let proxied_before = upstream_responses(&proxying);
        goto(session, &proxying.url("/watch/intro")).await;
        let page = session.current_url().await.expect("reading the URL");
        assert_eq!(page, proxying.url("/watch/intro/iframe"), "proxy mode");
        let playing = plays_the_clip(session, "proxy mode").await;
        assert_eq!(
            playing.src,
            proxying.url("/watch/intro/manifest/video.m3u8"),
            "proxy mode"
        );
        // The page, the master and a media playlist, and the two segments it played.
        let proxied = upstream_responses(&proxying) - proxied_before;
        assert!(
            proxied >= 5.0,
            "proxy mode: the gateway fetched only {proxied} responses from the emulator"
        );
        save_screenshot(session, "playing-proxied.png")
            .await
            .expect("the proxy-mode screenshot should be saved");
    })
    .await;
    redirecting.shutdown().await;
    proxying.shutdown().await;
    outcome.resume();
}

/// Responses the gateway has had from Stream (its upstream-duration histogram's count).
fn upstream_responses(gateway: &TestGateway) -> f64 {
    let text = gateway.app().metrics().encode();
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            let name = name.split('{').next()?;
            if name != "streamgate_upstream_duration_seconds_count" {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

/// What the page's `<video>` element says about itself.
#[derive(Debug)]
struct VideoState {
    current_time: f64,
    paused: bool,
    ended: bool,
    ready_state: u64,
    network_state: u64,
    /// `video.error` as `code: message`, if any.
    error: Option<String>,
    /// `currentSrc`.
    src: String,
}

impl VideoState {
    fn from_json(value: &Value) -> Result<VideoState, String> {
        let number = |name: &str| {
            value[name]
                .as_f64()
                .ok_or_else(|| format!("{name} is not a number in {value}"))
        };
        Ok(VideoState {
            current_time: number("currentTime")?,
            paused: value["paused"].as_bool().unwrap_or(true),
            ended: value["ended"].as_bool().unwrap_or(false),
            ready_state: number("readyState")? as u64,
            network_state: number("networkState")? as u64,
            error: value["error"].as_str().map(str::to_owned),
            src: value["src"].as_str().unwrap_or_default().to_owned(),
        })
    }
}

impl std::fmt::Display for VideoState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "currentTime {:.2} s, readyState {}, networkState {}, paused {}, ended {}, error {:?}, src {:?}",
            self.current_time,
            self.ready_state,
            self.network_state,
            self.paused,
            self.ended,
            self.error,
            self.src
        )
    }
}

/// Where the clip must have played to: past its first 2 s segment, well short of its 6 s.
const PLAYED_SECS: f64 = 2.5;
/// Longest one check waits in the browser for the video's events.
const CHECK_WAIT: Duration = Duration::from_secs(3);
/// Checks before giving up; with [`PLAYBACK_LIMIT`], whichever comes first.
const PLAYBACK_CHECKS: usize = 12;
/// Longest the clip may take to play to [`PLAYED_SECS`] after `play()`.
const PLAYBACK_LIMIT: Duration = Duration::from_secs(30);

/// Start playback (muted, so no autoplay policy can refuse it) and return the state once its
/// `currentTime` has advanced to [`PLAYED_SECS`]. Each check waits in the browser for the
/// video's `timeupdate`, `error` or `ended` events (at most [`CHECK_WAIT`]); a media error,
/// a refused `play()` or an early end fails at once, running out of checks or time fails
/// with the last state seen.
async fn plays_the_clip(session: &Session, context: &str) -> VideoState {
    let started = session
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const video = document.querySelector('video');
             if (!video) { done('no <video> element'); return; }
             video.muted = true;
             video.play().then(() => done(null), (error) => done(String(error)));",
            vec![],
        )
        .await
        .unwrap_or_else(|error| panic!("{context}: calling play(): {error}"));
    if let Some(refused) = started.as_str() {
        let state = video_state_after_events(session, 0.0).await;
        let state = state.map_or_else(|error| error.to_string(), |state| state.to_string());
        panic!("{context}: play() failed: {refused}; the video: {state}");
    }
    let deadline = Instant::now() + PLAYBACK_LIMIT;
    let mut last = None;
    for _ in 0..PLAYBACK_CHECKS {
        let state = video_state_after_events(session, PLAYED_SECS)
            .await
            .unwrap_or_else(|error| panic!("{context}: reading the video: {error}"));
        assert_eq!(state.error, None, "{context}: the video failed: {state}");
        if state.current_time >= PLAYED_SECS {
            assert!(!state.paused, "{context}: played, then paused: {state}");
            return state;
        }
        assert!(!state.ended, "{context}: ended early: {state}");
        last = Some(state);
        if Instant::now() >= deadline {
            break;
        }
    }
    let last = last.map_or_else(|| "nothing".to_owned(), |state| state.to_string());
    panic!(
        "{context}: the clip did not play to {PLAYED_SECS} s within {PLAYBACK_CHECKS} checks or \
         {PLAYBACK_LIMIT:?}; last seen: {last}"
    );
}

/// The video's state once its `currentTime` reaches `played_secs`, it fails or ends, or
/// [`CHECK_WAIT`] passes, whichever is first (the browser waits for the events).
async fn video_state_after_events(
    session: &Session,
    played_secs: f64,
) -> webdriver::Result<VideoState> {
    let value = session
        .execute_async(
            "const [playedSecs, waitMs] = arguments;
             const done = arguments[arguments.length - 1];
             const video = document.querySelector('video');
             const state = () => ({
               currentTime: video.currentTime,
               paused: video.paused,
               ended: video.ended,
               readyState: video.readyState,
               networkState: video.networkState,
               error: video.error ? video.error.code + ': ' + video.error.message : null,
               src: video.currentSrc,
             });
             const settled = () => video.error || video.ended || video.currentTime >= playedSecs;
             if (settled()) { done(state()); return; }
             let timer;
             const finish = () => {
               clearTimeout(timer);
               for (const name of ['timeupdate', 'error', 'ended']) {
                 video.removeEventListener(name, check);
               }
               done(state());
             };
             const check = () => { if (settled()) finish(); };
             timer = setTimeout(finish, waitMs);
             for (const name of ['timeupdate', 'error', 'ended']) {
               video.addEventListener(name, check);
             }",
            vec![json!(played_secs), json!(CHECK_WAIT.as_millis() as u64)],
        )
        .await?;
    VideoState::from_json(&value).map_err(webdriver::Error::Transport)
}

/// Step 1: no credential. Only `intro` is listed and plays; `keynote` is refused with a
/// reason in the form, and `/watch/keynote` answers the browser with a sign-in page.
async fn anonymous_visitor(session: &Session, origin: &str) {
    goto(session, &format!("{origin}/")).await;
    let whoami = text_of(session, "#whoami").await;
    assert!(whoami.starts_with("Not signed in"), "#whoami: {whoami:?}");

    let listed = listed_videos(session).await;
    assert_eq!(
        listed,
        ["intro"],
        "an anonymous visitor sees only the public video"
    );
    let intro = found(session, r#"button.play[data-video="intro"]"#).await;
    let label = element_text(&intro).await;
    for part in ["intro", VIDEO_UID] {
        assert!(
            label.contains(part),
            "the intro button should name {part}: {label:?}"
        );
    }
    let list = text_of(session, "#video-list").await;
    assert!(
        !list.contains("keynote") && !list.contains(OTHER_VIDEO_UID),
        "list: {list:?}"
    );

    let player = found(session, "iframe#player").await;
    let src = player
        .attribute("src")
        .await
        .expect("reading the player's src");
    assert_eq!(src.as_deref(), Some("/watch/intro"));
    wait_for_player(session, VIDEO_UID).await;

    // The form refuses the members' video with the gateway's reason.
    sign_with_form(session, "keynote").await;
    let error = wait_for("the form's error", async || {
        let error = session.find("#error").await.map_err(|e| e.to_string())?;
        let shown = error.is_displayed().await.map_err(|e| e.to_string())?;
        let text = error.text().await.map_err(|e| e.to_string())?;
        if shown && !text.is_empty() {
            Ok(text)
        } else {
            Err(format!("displayed: {shown}, text: {text:?}"))
        }
    })
    .await;
    assert!(
        error.contains("401") && error.contains("sign in"),
        "#error: {error:?}"
    );
    let result = found(session, "#result").await;
    assert!(!result.is_displayed().await.expect("#result displayed"));
    save_screenshot(session, "anonymous.png")
        .await
        .expect("the anonymous screenshot should be saved");

    // A browser that opens the members' video directly gets a page that says why.
    let watch_keynote = format!("{origin}/watch/keynote");
    goto(session, &watch_keynote).await;
    let title = session.title().await.expect("reading the title");
    assert_eq!(title, "401 Unauthorized");
    let url = session.current_url().await.expect("reading the URL");
    assert_eq!(
        url, watch_keynote,
        "no redirect: this gateway has no login page"
    );
    let body = text_of(session, "body").await;
    assert!(
        body.contains("401") && body.contains("requires you to sign in"),
        "/watch/keynote for an anonymous browser: {body:?}"
    );
}

/// Step 2: the identity provider's session cookie. The page greets the viewer, lists and
/// plays `keynote`, and signs a URL for it.
async fn signed_in_viewer(session: &Session, origin: &str) {
    goto(session, &format!("{origin}/")).await;
    session
        .add_cookie(SESSION_COOKIE, &viewer_token())
        .await
        .expect("adding the session cookie");
    session.refresh().await.expect("reloading the page");

    let whoami = text_of(session, "#whoami").await;
    assert!(
        whoami.contains(&format!("Signed in as {VIEWER}")) && whoami.contains(ISSUER),
        "#whoami: {whoami:?}"
    );
    let listed = listed_videos(session).await;
    assert_eq!(
        listed,
        ["intro", "keynote"],
        "a signed-in viewer sees both videos"
    );

    let keynote = found(session, r#"button.play[data-video="keynote"]"#).await;
    let label = element_text(&keynote).await;
    assert!(label.contains(OTHER_VIDEO_UID), "keynote button: {label:?}");
    keynote.click().await.expect("clicking the keynote button");
    let player = found(session, "iframe#player").await;
    let src = player
        .attribute("src")
        .await
        .expect("reading the player's src");
    assert_eq!(src.as_deref(), Some("/watch/keynote"));
    wait_for_player(session, OTHER_VIDEO_UID).await;
    let now_playing = text_of(session, "#now-playing").await;
    assert_eq!(now_playing, "keynote");

    sign_with_form(session, "keynote").await;
    wait_for("the signed URL", async || {
        let result = session.find("#result").await.map_err(|e| e.to_string())?;
        match result.is_displayed().await.map_err(|e| e.to_string())? {
            true => Ok(()),
            false => {
                let error = session.find("#error").await.map_err(|e| e.to_string())?;
                Err(format!("#error: {:?}", error.text().await))
            }
        }
    })
    .await;

    let token = text_of(session, "#token").await;
    assert!(is_jwt_shaped(&token), "#token should be a JWT: {token:?}");
    assert_eq!(
        decode_claims_unverified(&token)["sub"],
        OTHER_VIDEO_UID,
        "the token is for keynote"
    );
    let claims = text_of(session, "#claims").await;
    assert!(
        claims.contains(&format!("\"sub\": \"{OTHER_VIDEO_UID}\"")),
        "#claims: {claims:?}"
    );
    let expires = text_of(session, "#expires").await;
    assert!(!expires.trim().is_empty(), "#expires is empty");
    let snippet = found(session, "#embed-snippet").await;
    let snippet = snippet
        .property("value")
        .await
        .expect("the snippet's value");
    let snippet = snippet.as_str().unwrap_or_default();
    assert!(
        snippet.contains(&format!("<iframe src=\"{origin}/watch/keynote\"")),
        "#embed-snippet: {snippet:?}"
    );
    let link = found(session, "#signed-url").await;
    let signed_url = link.property("href").await.expect("the signed URL's href");
    let signed_url = signed_url.as_str().unwrap_or_default().to_owned();
    assert!(
        signed_url.contains(&token) && signed_url.ends_with("/iframe"),
        "#signed-url: {signed_url:?}"
    );
    save_screenshot(session, "signed-in.png")
        .await
        .expect("the signed-in screenshot should be saved");

    // The signed URL opens in the player frame (target="player").
    link.click().await.expect("clicking the signed URL");
    wait_for("the signed URL in the player", async || {
        let (url, text) = in_player(session, async || {
            let url = session
                .execute("return document.location.href;", vec![])
                .await?;
            let text = session.find("p").await?.text().await?;
            Ok((url.as_str().unwrap_or_default().to_owned(), text))
        })
        .await
        .map_err(|e| e.to_string())?;
        if url == signed_url && text.contains(OTHER_VIDEO_UID) {
            Ok(())
        } else {
            Err(format!("player at {url}: {text:?}"))
        }
    })
    .await;
    session
        .execute(
            "document.getElementById('result').scrollIntoView();",
            vec![],
        )
        .await
        .expect("scrolling to the result");
    save_screenshot(session, "signed-url.png")
        .await
        .expect("the signed URL screenshot should be saved");
}

/// The console has no Content-Security-Policy violation (the page loads nothing inline and
/// nothing from elsewhere). Other entries, such as the refusals the scenario provokes, are
/// printed.
async fn console_is_clean(session: &Session) {
    let entries = print_console(session).await;
    let violations: Vec<&Value> = entries
        .iter()
        .filter(|entry| {
            let message = entry["message"].as_str().unwrap_or_default();
            message.contains("Content Security Policy")
                || message.contains("Content-Security-Policy")
        })
        .collect();
    assert!(violations.is_empty(), "CSP violations: {violations:#?}");
}

/// Print the browser's console since the last call, and return it.
async fn print_console(session: &Session) -> Vec<Value> {
    match session.browser_log().await {
        Ok(entries) => {
            for entry in &entries {
                eprintln!(
                    "console {}: {}",
                    entry["level"].as_str().unwrap_or("?"),
                    entry["message"].as_str().unwrap_or_default()
                );
            }
            entries
        }
        Err(error) => {
            eprintln!("no browser log: {error}");
            Vec::new()
        }
    }
}

// === steps and waits ===

async fn goto(session: &Session, url: &str) {
    session
        .goto(url)
        .await
        .unwrap_or_else(|error| panic!("opening {url}: {error}"));
}

/// The element for `css`, waiting (bounded) until it is there.
async fn found(session: &Session, css: &str) -> Element {
    wait_for(css, async || {
        session.find(css).await.map_err(|e| e.to_string())
    })
    .await
}

async fn element_text(element: &Element) -> String {
    element
        .text()
        .await
        .unwrap_or_else(|error| panic!("reading the text of {element:?}: {error}"))
}

async fn text_of(session: &Session, css: &str) -> String {
    element_text(&found(session, css).await).await
}

/// `data-video` of every play button, in order.
async fn listed_videos(session: &Session) -> Vec<String> {
    let buttons = session
        .find_all("#video-list button.play")
        .await
        .expect("finding the play buttons");
    let mut aliases = Vec::new();
    for button in buttons {
        let alias = button
            .attribute("data-video")
            .await
            .expect("reading data-video");
        aliases.push(alias.unwrap_or_default());
    }
    aliases
}

/// Put `video` in the form and submit it.
async fn sign_with_form(session: &Session, video: &str) {
    let input = found(session, "#video-id").await;
    input.clear().await.expect("clearing #video-id");
    input.send_keys(video).await.expect("typing into #video-id");
    let typed = input.property("value").await.expect("reading #video-id");
    assert_eq!(typed, video);
    found(session, "#sign-button")
        .await
        .click()
        .await
        .expect("clicking #sign-button");
}

/// Run `inside` with the player frame as the browsing context, then return to the page
/// (also when `inside` fails).
async fn in_player<T>(
    session: &Session,
    inside: impl AsyncFnOnce() -> webdriver::Result<T>,
) -> webdriver::Result<T> {
    session.top_frame().await?;
    let frame = session.find("iframe#player").await?;
    session.enter_frame(&frame).await?;
    let outcome = inside().await;
    session.leave_frame().await?;
    outcome
}

/// Wait until the emulator's player page in the frame names `video_uid`.
async fn wait_for_player(session: &Session, video_uid: &str) {
    let expected = format!("streamgate Stream emulator — video {video_uid}");
    wait_for(&format!("the player to show {video_uid}"), async || {
        let text = in_player(session, async || session.find("p").await?.text().await)
            .await
            .map_err(|e| e.to_string())?;
        if text.contains(&expected) {
            Ok(())
        } else {
            Err(format!("the player says {text:?}"))
        }
    })
    .await;
}

/// Three non-empty base64url parts separated by dots.
fn is_jwt_shaped(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
