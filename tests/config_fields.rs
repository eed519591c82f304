//! Every field of the configuration, changed by a live reload, is either applied (the running
//! settings show the new value) or named as restart-only (in `needs_restart`, with the running
//! value kept). None is silently ignored.
//!
//! The fields are not listed by hand only: the parser is asked for each section's fields
//! (`deny_unknown_fields` names them when it meets an unknown one), and the test fails for a
//! field the table below does not cover. Lists and maps of entries (`videos`, `users`,
//! `rules`, ...) are covered as a whole: a change to any entry is a change of the section.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use streamgate::app::App;
use streamgate::app::keys::{MissingKeys, load_signing_keys};
use streamgate::config::Settings;

/// How one entry changes the test configuration.
enum Change {
    /// Append top-level YAML.
    Append(String),
    /// Replace the first occurrence of a piece of the base file.
    Replace(&'static str, String),
}

/// What a reload must do with the change.
enum Expect {
    /// Applied: the running settings' debug text now contains this (and did not before).
    Shows(&'static str),
    /// Applied: this holds for the running settings (and did not before).
    Holds(fn(&Settings) -> bool),
    /// Not applied, and named so in `needs_restart`.
    RestartOnly(&'static str),
}

/// One field: its path (`section.field`), the change, and the expectation.
struct Entry {
    field: &'static str,
    change: Change,
    expect: Expect,
}

const TOKEN: &str = "token:\n  ttl: 1h\n  min_remaining: 10m\n";
const EMULATOR: &str = "stream:\n  emulator:\n    listen: 127.0.0.1:0\n";

fn append(field: &'static str, yaml: &str, expect: Expect) -> Entry {
    Entry {
        field,
        change: Change::Append(yaml.to_string()),
        expect,
    }
}

fn replace(field: &'static str, from: &'static str, to: String, expect: Expect) -> Entry {
    Entry {
        field,
        change: Change::Replace(from, to),
        expect,
    }
}

fn token_with(line: &str) -> String {
    format!("{TOKEN}  {line}\n")
}

fn emulator_with(line: &str) -> String {
    format!("{EMULATOR}    {line}\n")
}

fn table(dir: &Path) -> Vec<Entry> {
    use Expect::*;
    let ca = TestCa::new("walk");
    let issued = ca.issue();
    std::fs::write(dir.join("walk-ca.pem"), &issued.chain_pem).unwrap();
    std::fs::write(
        dir.join("walk-secret"),
        "a-test-only-shared-secret-of-32-bytes+",
    )
    .unwrap();
    let second_key = format!(
        "signing_keys:\n  - id: {SECOND_KID}\n    file: {}\n",
        fixture_path("test-only-second-key.pem").display()
    );
    vec![
        replace(
            "listen",
            "listen: 127.0.0.1:0",
            "listen: 127.0.0.1:9".into(),
            RestartOnly("listen"),
        ),
        replace(
            "stream",
            EMULATOR,
            "stream:\n  origin: https://walk.example\n".into(),
            RestartOnly("stream"),
        ),
        replace(
            "stream.customer_code",
            EMULATOR,
            "stream:\n  customer_code: walk\n".into(),
            RestartOnly("stream"),
        ),
        replace(
            "stream.origin",
            EMULATOR,
            "stream:\n  origin: https://walk.example\n".into(),
            RestartOnly("stream"),
        ),
        replace(
            "stream.emulator",
            EMULATOR,
            emulator_with("leeway: 7s"),
            RestartOnly("stream"),
        ),
        replace(
            "stream.emulator.listen",
            EMULATOR,
            "stream:\n  emulator:\n    listen: 127.0.0.1:9\n".into(),
            RestartOnly("stream"),
        ),
        replace(
            "stream.emulator.country_header",
            EMULATOR,
            emulator_with("country_header: x-walk-country"),
            RestartOnly("stream"),
        ),
        replace(
            "stream.emulator.client_ip_header",
            EMULATOR,
            emulator_with("client_ip_header: x-walk-ip"),
            RestartOnly("stream"),
        ),
        replace(
            "stream.emulator.leeway",
            EMULATOR,
            emulator_with("leeway: 7s"),
            RestartOnly("stream"),
        ),
        replace(
            "stream.emulator.unprotected",
            EMULATOR,
            emulator_with("unprotected: [intro]"),
            RestartOnly("stream"),
        ),
        replace(
            "signing_keys",
            "signing_keys:\n",
            second_key,
            Shows(SECOND_KID),
        ),
        replace(
            "token",
            TOKEN,
            "token:\n  ttl: 2h\n  min_remaining: 10m\n".into(),
            Holds(|s| s.default_token.ttl.as_secs() == 7200),
        ),
        replace(
            "token.ttl",
            TOKEN,
            "token:\n  ttl: 2h\n  min_remaining: 10m\n".into(),
            Holds(|s| s.default_token.ttl.as_secs() == 7200),
        ),
        replace(
            "token.min_remaining",
            TOKEN,
            "token:\n  ttl: 1h\n  min_remaining: 11m\n".into(),
            Holds(|s| s.min_remaining.as_secs() == 660),
        ),
        replace(
            "token.nbf_backdate",
            TOKEN,
            token_with("nbf_backdate: 77s"),
            Holds(|s| s.nbf_backdate.as_secs() == 77),
        ),
        replace(
            "token.downloadable",
            TOKEN,
            token_with("downloadable: true"),
            Holds(|s| s.default_token.downloadable),
        ),
        replace(
            "token.access_rules",
            TOKEN,
            token_with(
                "access_rules: [{type: ip.src, action: allow, ip: [198.51.100.0/24]}, {type: any, action: block}]",
            ),
            Shows("198.51.100.0"),
        ),
        replace(
            "token.countries",
            TOKEN,
            token_with("countries: {allow: [NZ]}"),
            Shows("NZ"),
        ),
        replace(
            "token.bind_client_ip",
            TOKEN,
            token_with("bind_client_ip: true"),
            Shows("bind_client_ip: true"),
        ),
        append(
            "cache",
            "cache:\n  capacity: 4242\n",
            Shows("cache_capacity: 4242"),
        ),
        append(
            "cache.capacity",
            "cache:\n  capacity: 4242\n",
            Shows("cache_capacity: 4242"),
        ),
        append(
            "signing",
            "signing:\n  max_in_flight: 3\n",
            Shows("max_signing_in_flight: 3"),
        ),
        append(
            "signing.max_in_flight",
            "signing:\n  max_in_flight: 3\n",
            Shows("max_signing_in_flight: 3"),
        ),
        append(
            "signing.on_workers",
            "signing:\n  on_workers: false\n",
            Shows("sign_on_workers: false"),
        ),
        replace(
            "videos",
            "videos:\n",
            format!("videos:\n  walkvideo:\n    uid: {UNKNOWN_VIDEO_UID}\n"),
            Shows("walkvideo"),
        ),
        replace(
            "api_keys",
            "api_keys:\n",
            format!(
                "api_keys:\n  - name: walkkey\n    sha256: {}\n",
                streamgate::identity::hash_api_key("walk-key")
            ),
            Shows("walkkey"),
        ),
        append(
            "users",
            &format!(
                "users:\n  walkuser:\n    password: \"{}\"\n",
                argon2_phc("walk")
            ),
            Shows("walkuser"),
        ),
        append(
            "jwt_issuers",
            "jwt_issuers:\n  - issuer: https://walk.issuer\n    audience: walk\n    algorithms: [HS256]\n    secret: {file: walk-secret}\n",
            Shows("https://walk.issuer"),
        ),
        append("auth", "auth:\n  realm: walkrealm\n", Shows("walkrealm")),
        append(
            "auth.realm",
            "auth:\n  realm: walkrealm\n",
            Shows("walkrealm"),
        ),
        append(
            "auth.login_url",
            "auth:\n  login_url: https://login.walk.test/\n",
            Shows("https://login.walk.test/"),
        ),
        append(
            "auth.public_url",
            "auth:\n  public_url: https://public.walk.test\n",
            Shows("https://public.walk.test"),
        ),
        append(
            "auth.basic_cache_ttl",
            "auth:\n  basic_cache_ttl: 77s\n",
            Shows("basic_cache_ttl: 77s"),
        ),
        append(
            "auth.max_password_checks",
            "auth:\n  max_password_checks: 7\n",
            Shows("max_password_checks: 7"),
        ),
        append(
            "auth.failed_sign_ins",
            "auth:\n  failed_sign_ins: {allowed: 77}\n",
            Shows("allowed: 77"),
        ),
        append(
            "auth.failed_sign_ins.allowed",
            "auth:\n  failed_sign_ins:\n    allowed: 78\n",
            Shows("allowed: 78"),
        ),
        append(
            "auth.failed_sign_ins.backoff",
            "auth:\n  failed_sign_ins:\n    backoff: 7s\n",
            Shows("backoff: 7s"),
        ),
        append(
            "auth.failed_sign_ins.max_backoff",
            "auth:\n  failed_sign_ins:\n    max_backoff: 17m\n",
            Shows("max_backoff: 1020s"),
        ),
        append(
            "client_address",
            "client_address:\n  header: X-Real-IP\n",
            Shows("XRealIp"),
        ),
        append(
            "trusted_proxies",
            "trusted_proxies: [192.0.2.77/32]\n",
            Shows("192.0.2.77"),
        ),
        replace(
            "rules",
            "rules:\n",
            "rules:\n  - name: walkrule\n    videos: [intro]\n    subjects: [anyone]\n".into(),
            Shows("walkrule"),
        ),
        append(
            "tls",
            "tls:\n  cert: walk-cert.pem\n  key: walk-key.pem\n",
            RestartOnly("tls"),
        ),
        append(
            "http_redirect_listen",
            "tls:\n  cert: walk-cert.pem\n  key: walk-key.pem\nhttp_redirect_listen: 127.0.0.1:9\n",
            RestartOnly("tls"),
        ),
        append("mode", "mode: proxy\n", Shows("Proxy")),
        append(
            "upstream",
            "upstream:\n  connect_timeout: 7s\n",
            Shows("connect_timeout: 7s"),
        ),
        append(
            "upstream.connect_timeout",
            "upstream:\n  connect_timeout: 7s\n",
            Shows("connect_timeout: 7s"),
        ),
        append(
            "upstream.response_timeout",
            "upstream:\n  response_timeout: 8s\n",
            Shows("response_timeout: 8s"),
        ),
        append(
            "upstream.idle_timeout",
            "upstream:\n  idle_timeout: 9s\n",
            Shows("idle_timeout: 9s"),
        ),
        append(
            "upstream.min_body_rate",
            "upstream:\n  min_body_rate: 4243\n",
            Shows("min_body_rate: 4243"),
        ),
        append(
            "upstream.ca_file",
            "upstream:\n  ca_file: walk-ca.pem\n",
            Shows("walk-ca.pem"),
        ),
        append(
            "limits",
            "limits:\n  request_timeout: 7s\n",
            Holds(|s| s.request_timeout.as_secs() == 7),
        ),
        append(
            "limits.header_read_timeout",
            "limits:\n  header_read_timeout: 3s\n",
            RestartOnly("limits.header_read_timeout"),
        ),
        append(
            "limits.idle_timeout",
            "limits:\n  idle_timeout: 3s\n",
            RestartOnly("limits.idle_timeout"),
        ),
        append(
            "limits.max_header_bytes",
            "limits:\n  max_header_bytes: 9000\n",
            RestartOnly("limits.max_header_bytes"),
        ),
        append(
            "limits.request_timeout",
            "limits:\n  request_timeout: 7s\n",
            Holds(|s| s.request_timeout.as_secs() == 7),
        ),
        append(
            "limits.max_connections",
            "limits:\n  max_connections: 50\n",
            RestartOnly("limits.max_connections"),
        ),
        append(
            "limits.max_body_bytes",
            "limits:\n  max_body_bytes: 4244\n",
            Holds(|s| s.max_body_bytes == 4244),
        ),
        append(
            "limits.h2_max_concurrent_streams",
            "limits:\n  h2_max_concurrent_streams: 9\n",
            RestartOnly("limits.h2_max_concurrent_streams"),
        ),
        append(
            "limits.shutdown_drain",
            "limits:\n  shutdown_drain: 1s\n",
            RestartOnly("limits.shutdown_drain"),
        ),
        append(
            "limits.shutdown_deadline",
            "limits:\n  shutdown_deadline: 3s\n",
            RestartOnly("limits.shutdown_deadline"),
        ),
        append(
            "audit_trail",
            "audit_trail:\n  sink: stderr\n",
            RestartOnly("audit_trail"),
        ),
        append(
            "audit_trail.sink",
            "audit_trail:\n  sink: stderr\n",
            RestartOnly("audit_trail"),
        ),
        append(
            "audit_trail.path",
            "audit_trail:\n  sink: file\n  path: trail.jsonl\n",
            RestartOnly("audit_trail"),
        ),
        append(
            "audit_trail.max_file_bytes",
            "audit_trail:\n  sink: file\n  path: trail.jsonl\n  max_file_bytes: 65536\n",
            RestartOnly("audit_trail"),
        ),
        append(
            "audit_trail.keep_files",
            "audit_trail:\n  sink: file\n  path: trail.jsonl\n  keep_files: 2\n",
            RestartOnly("audit_trail"),
        ),
        append("log", "log:\n  access: false\n", Holds(|s| !s.access_log)),
        append(
            "log.access",
            "log:\n  access: false\n",
            Holds(|s| !s.access_log),
        ),
        append(
            "metrics_listen",
            "metrics_listen: 127.0.0.1:9\n",
            RestartOnly("metrics_listen"),
        ),
        append(
            "metrics_public",
            "metrics_public: true\n",
            Holds(|s| s.metrics_public),
        ),
        append(
            "rate_limit",
            "rate_limit:\n  per_subject: {per_second: 43}\n",
            Shows("per_second: 43"),
        ),
        append(
            "rate_limit.per_subject",
            "rate_limit:\n  per_subject: {per_second: 43}\n",
            Shows("per_second: 43"),
        ),
        append(
            "rate_limit.per_address",
            "rate_limit:\n  per_address: {per_second: 45, burst: 46}\n",
            Shows("burst: 46"),
        ),
        append(
            "rate_limit.max_keys",
            "rate_limit:\n  max_keys: 4245\n",
            Shows("max_keys: 4245"),
        ),
        append("demo_page", "demo_page: false\n", Holds(|s| !s.demo_page)),
        append(
            "cors",
            "cors:\n  allowed_origins: [https://walk.example]\n",
            Shows("https://walk.example"),
        ),
        append(
            "cors.allowed_origins",
            "cors:\n  allowed_origins: [https://walk.example]\n",
            Shows("https://walk.example"),
        ),
        append(
            "cors.max_age",
            "cors:\n  max_age: 77s\n",
            Holds(|s| s.cors.max_age.as_secs() == 77),
        ),
        append(
            "token_api",
            "token_api:\n  enabled: false\n",
            Holds(|s| !s.token_api.enabled),
        ),
        append(
            "token_api.enabled",
            "token_api:\n  enabled: false\n",
            Holds(|s| !s.token_api.enabled),
        ),
        append(
            "token_api.account_id",
            "token_api:\n  account_id: 0123456789abcdef0123456789abcd77\n",
            Shows("0123456789abcdef0123456789abcd77"),
        ),
        append(
            "cloudflare",
            "cloudflare:\n  account_id: 0123456789abcdef0123456789abcd78\n",
            RestartOnly("cloudflare"),
        ),
        append(
            "cloudflare.account_id",
            "cloudflare:\n  account_id: 0123456789abcdef0123456789abcd78\n",
            RestartOnly("cloudflare"),
        ),
        append(
            "cloudflare.api_token",
            "cloudflare:\n  api_token: {file: walk-api-token}\n",
            RestartOnly("cloudflare"),
        ),
        append(
            "cloudflare.api_base",
            "cloudflare:\n  api_base: http://127.0.0.1:9/client/v4\n",
            RestartOnly("cloudflare"),
        ),
        append(
            "cloudflare.audit_interval",
            "cloudflare:\n  audit_interval: 1h\n",
            RestartOnly("cloudflare"),
        ),
        append(
            "allow_empty_policy",
            "allow_empty_policy: true\n",
            Holds(|s| s.allow_empty_policy),
        ),
    ]
}

/// The fields the parser knows in the section at `path` (`""` for the top level), from the
/// error it gives for an unknown one.
fn fields_of(path: &str) -> BTreeSet<String> {
    let mut yaml = String::new();
    let mut indent = String::new();
    for section in path.split('.').filter(|s| !s.is_empty()) {
        yaml += &format!("{indent}{section}:\n");
        indent += "  ";
    }
    yaml += &format!("{indent}zz_not_a_field: 1\n");
    let error = Settings::from_yaml(&yaml, "walk.yaml", Path::new("."))
        .err()
        .unwrap_or_else(|| panic!("{yaml} should not parse"))
        .to_string();
    let expected = error
        .split_once("expected")
        .unwrap_or_else(|| panic!("no field list in: {error}"))
        .1;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Sections whose fields are walked one by one (the others are lists or maps of entries).
const SECTIONS: &[&str] = &[
    "",
    "stream",
    "stream.emulator",
    "token",
    "cache",
    "signing",
    "auth",
    "auth.failed_sign_ins",
    "upstream",
    "limits",
    "log",
    "audit_trail",
    "rate_limit",
    "cors",
    "token_api",
    "cloudflare",
];

#[tokio::test]
async fn every_config_field_is_applied_by_a_reload_or_named_as_restart_only() {
    let dir = tempfile::tempdir().unwrap();
    let entries = table(dir.path());

    // The table covers every field the parser knows.
    let covered: BTreeSet<&str> = entries.iter().map(|e| e.field).collect();
    for section in SECTIONS {
        for field in fields_of(section) {
            let path = if section.is_empty() {
                field
            } else {
                format!("{section}.{field}")
            };
            assert!(
                covered.contains(path.as_str()),
                "`{path}` is not in the table: say whether a reload applies it"
            );
        }
    }

    let base = gateway_config();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &base).unwrap();
    let settings = Settings::load(&path).unwrap();
    let (keys, _) = load_signing_keys(&settings, MissingKeys::Fail).unwrap();
    let app = App::start(settings, keys, None).await.expect("starts");
    let reloader = app.reloader().expect("a file-backed configuration reloads");
    let debug_of = |app: &App| format!("{:?}", app.snapshot().settings);
    // What a restart-only change must leave as it is.
    let fixed_of = |app: &App| {
        let s = &app.snapshot().settings;
        format!(
            "{:?}",
            (
                s.listen,
                &s.stream,
                &s.tls,
                s.metrics_listen,
                &s.limits,
                &s.cloudflare,
            )
        )
    };
    let started = debug_of(&app);
    let fixed = fixed_of(&app);

    for entry in &entries {
        let yaml = match &entry.change {
            Change::Append(extra) => format!("{base}{extra}"),
            Change::Replace(from, to) => {
                assert!(
                    base.contains(from),
                    "{}: {from:?} is not in the base",
                    entry.field
                );
                base.replacen(from, to, 1)
            }
        };
        std::fs::write(&path, &yaml).unwrap();
        let field = entry.field;
        reloader
            .reload()
            .unwrap_or_else(|error| panic!("{field}: the reload failed: {error}\n{yaml}"));
        let status = reloader.status();
        let running = app.snapshot();
        let now = debug_of(&app);
        match entry.expect {
            Expect::RestartOnly(name) => {
                assert_eq!(status.needs_restart, vec![name], "{field}");
                assert_eq!(
                    fixed_of(&app),
                    fixed,
                    "{field}: a restart-only value changed"
                );
            }
            Expect::Shows(marker) => {
                assert!(status.needs_restart.is_empty(), "{field}: {status:?}");
                assert!(
                    !started.contains(marker),
                    "{field}: {marker} is in the base"
                );
                assert!(now.contains(marker), "{field}: {marker} is not applied");
            }
            Expect::Holds(check) => {
                assert!(status.needs_restart.is_empty(), "{field}: {status:?}");
                assert!(check(&running.settings), "{field} is not applied");
            }
        }
    }
    // And back: the base file applies again with nothing pending.
    std::fs::write(&path, &base).unwrap();
    reloader.reload().unwrap();
    assert!(reloader.status().needs_restart.is_empty());
    app.shutdown().await;
}
