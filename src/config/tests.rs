use std::path::PathBuf;
use std::time::Duration;

use super::*;

const GOOD: &str = "\
listen: 127.0.0.1:0
stream:
  emulator:
    listen: 127.0.0.1:0
signing_keys:
  - file: key.json
token:
  ttl: 1h
  min_remaining: 10m
videos:
  intro:
    uid: 0123456789abcdef0123456789abcdef
    tags: [public]
  keynote:
    uid: fedcba9876543210fedcba9876543210
api_keys:
  - name: ci
    sha256: ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
rules:
  - name: public
    videos: [\"tag:public\"]
    subjects: [anyone]
  - name: ci
    videos: [keynote]
    subjects: [api_key:ci]
    ttl: 30m
    downloadable: true
";

fn parse(source: &str) -> Result<Settings, ConfigErrors> {
    Settings::from_yaml(source, "test.yaml", Path::new("/etc/streamgate"))
}

fn single_error(source: &str) -> ConfigError {
    let errors = parse(source).unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    errors.0.into_iter().next().unwrap()
}

#[test]
fn good_config_builds_a_snapshot() {
    let settings = parse(GOOD).unwrap();
    assert_eq!(settings.catalogue.len(), 2);
    assert_eq!(settings.identity.api_keys.len(), 1);
    assert_eq!(settings.policy.rules().len(), 2);
    assert_eq!(
        settings.policy.rules()[1].token.settings.ttl,
        Duration::from_secs(1800)
    );
    assert!(settings.policy.rules()[1].token.settings.downloadable);
    assert_eq!(
        settings.signing_keys[0].location,
        KeyLocation::File(PathBuf::from("/etc/streamgate/key.json"))
    );
    assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
}

#[test]
fn unknown_field_names_line_and_field() {
    let error = single_error(&GOOD.replace("  ttl: 1h\n", "  ttl: 1h\n  tll: 2h\n"));
    assert_eq!(error.position.map(|p| p.0), Some(9));
    assert!(error.message.contains("unknown field `tll`"), "{error}");
    assert!(error.to_string().starts_with("test.yaml:9:"), "{error}");
}

#[test]
fn ttl_over_24h_is_rejected_with_its_line() {
    let error = single_error(&GOOD.replace("ttl: 1h", "ttl: 25h"));
    assert_eq!(error.position.map(|p| p.0), Some(8));
    assert!(error.message.contains("24h"), "{error}");
}

#[test]
fn human_durations_are_required() {
    let error = single_error(&GOOD.replace("ttl: 1h", "ttl: soon"));
    assert!(error.message.contains("expected a duration"), "{error}");
    assert!(!error.message.contains("soon"), "{error}");
}

#[test]
fn duplicate_alias_is_rejected() {
    let doubled = GOOD.replace(
        "  keynote:\n",
        "  intro:\n    uid: 11111111111111111111111111111111\n  keynote:\n",
    );
    let error = single_error(&doubled);
    assert!(error.message.contains("duplicate entry"), "{error}");
    assert_eq!(error.position.map(|p| p.0), Some(11));
}

#[test]
fn bad_uid_is_rejected_at_its_line() {
    let error = single_error(&GOOD.replace("0123456789abcdef0123456789abcdef", "not-a-uid"));
    assert_eq!(error.position.map(|p| p.0), Some(12));
    assert!(error.message.contains("expected a video uid"), "{error}");
    assert!(!error.message.contains("not-a-uid"), "{error}");
}

#[test]
fn unknown_alias_in_a_rule_points_at_the_rule() {
    let error = single_error(&GOOD.replace("videos: [keynote]", "videos: [keynot]"));
    assert_eq!(error.field, "rules[1].videos[0]");
    assert_eq!(error.position.map(|p| p.0), Some(24));
    assert!(
        error.message.contains("not a video alias or uid"),
        "{error}"
    );
    assert!(!error.message.contains("keynot"), "{error}");
}

#[test]
fn min_remaining_must_leave_room_to_reuse() {
    let error = single_error(&GOOD.replace("ttl: 30m", "ttl: 5m"));
    assert_eq!(error.field, "rules[1].ttl");
    assert_eq!(error.position.map(|p| p.0), Some(26));
}

#[test]
fn more_than_five_access_rules_are_rejected() {
    let rules =
        "    access_rules:\n".to_string() + &"      - {type: any, action: allow}\n".repeat(6);
    let error = single_error(&format!("{GOOD}{rules}"));
    assert_eq!(error.field, "rules[1].access_rules");
    assert!(error.message.contains("at most 5"), "{error}");
}

#[test]
fn bad_subject_and_several_errors_are_all_reported() {
    let source = GOOD
        .replace("subjects: [anyone]", "subjects: [everyone]")
        .replace("videos: [keynote]", "videos: [nope]");
    let errors = parse(&source).unwrap_err();
    assert_eq!(errors.0.len(), 2, "{errors}");
}

#[test]
fn stream_needs_exactly_one_origin() {
    let both = GOOD.replace("stream:\n", "stream:\n  customer_code: abc123\n");
    assert!(single_error(&both).message.contains("exactly one"));
    let origin = GOOD.replace(
        "  emulator:\n    listen: 127.0.0.1:0\n",
        "  origin: https://customer-x.cloudflarestream.com/path\n",
    );
    assert!(single_error(&origin).message.contains("no path"));
    let code = GOOD.replace(
        "  emulator:\n    listen: 127.0.0.1:0\n",
        "  customer_code: abc123\n",
    );
    let settings = parse(&code).unwrap();
    assert_eq!(
        settings.configured_origin(),
        Some("https://customer-abc123.cloudflarestream.com")
    );
}

#[test]
fn generated_keys_need_the_emulator() {
    let source = GOOD
        .replace(
            "  - file: key.json\n",
            "  - file: key.json\n    generate_if_missing: true\n",
        )
        .replace(
            "  emulator:\n    listen: 127.0.0.1:0\n",
            "  customer_code: abc123\n",
        );
    let error = single_error(&source);
    assert_eq!(error.field, "signing_keys[0].generate_if_missing");
}

#[test]
fn inline_keys_are_not_accepted() {
    let error = single_error(&GOOD.replace("  - file: key.json\n", "  - pem: abc\n"));
    assert!(error.message.contains("unknown field `pem`"), "{error}");
}

#[test]
fn emulator_leeway_is_capped_at_a_minute() {
    let source = GOOD.replace(
        "    listen: 127.0.0.1:0\nsigning_keys",
        "    listen: 127.0.0.1:0\n    leeway: 5m\nsigning_keys",
    );
    let error = single_error(&source);
    assert_eq!(error.field, "stream.emulator.leeway");
    assert!(error.message.contains("at most 1m"), "{error}");
}

#[test]
fn proxy_mode_is_global_or_per_rule_and_refuses_address_binding() {
    let settings = parse(&format!("mode: proxy\n{GOOD}")).unwrap();
    assert!(
        settings
            .policy
            .rules()
            .iter()
            .all(|r| r.mode == crate::authz::policy::Mode::Proxy)
    );
    let per_rule = GOOD.replace("    ttl: 30m\n", "    ttl: 30m\n    mode: proxy\n");
    let settings = parse(&per_rule).unwrap();
    let modes: Vec<_> = settings.policy.rules().iter().map(|r| r.mode).collect();
    assert_eq!(
        modes,
        [
            crate::authz::policy::Mode::Redirect,
            crate::authz::policy::Mode::Proxy
        ]
    );
    let bound = per_rule.replace(
        "    mode: proxy\n",
        "    mode: proxy\n    bind_client_ip: true\n",
    );
    let error = single_error(&bound);
    assert_eq!(error.field, "rules[1].bind_client_ip");
    assert!(error.message.contains("gateway's address"), "{error}");
}

#[test]
fn upstream_timeouts_have_a_floor() {
    let error = single_error(&format!("upstream:\n  idle_timeout: 10ms\n{GOOD}"));
    assert_eq!(error.field, "upstream.idle_timeout");
}

/// [`GOOD`] with a local user `alice` (in `staff`), two JWT issuers (`corp`, sharing local
/// names when `corp_shares`; `partner`, not) and `rules` appended to its rules.
fn with_sources(corp_shares: bool, rules: &str) -> String {
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$hUYtGmcggkXryg9JZOq5Hw$F0+7Z8eajyoikCEqE8gWphRU5GDQ3Wn5rY1dtIgfSc8";
    format!(
        "{GOOD}{rules}users:\n  alice:\n    password: \"{hash}\"\n    groups: [staff]\njwt_issuers:\n  - issuer: https://corp.test\n    name: corp\n    shares_local_names: {corp_shares}\n    audience: a\n    algorithms: [HS256]\n    secret: {{file: corp.secret}}\n    groups_claim: groups\n  - issuer: https://partner.test\n    name: partner\n    audience: a\n    algorithms: [HS256]\n    secret: {{file: partner.secret}}\n    groups_claim: groups\n"
    )
}

fn rule_with(subject: &str) -> String {
    format!("  - name: extra\n    videos: [intro]\n    subjects: [\"{subject}\"]\n")
}

#[test]
fn user_and_group_subjects_name_their_source() {
    use crate::authz::policy::{Source, Subject};
    for (written, expected) in [
        (
            "user:alice",
            Subject::User {
                source: Source::Unqualified,
                name: "alice".into(),
            },
        ),
        (
            "user:local:alice",
            Subject::User {
                source: Source::Local,
                name: "alice".into(),
            },
        ),
        (
            "user:partner:auth0|a:b",
            Subject::User {
                source: Source::Issuer("partner".into()),
                name: "auth0|a:b".into(),
            },
        ),
        (
            "group:corp:staff",
            Subject::Group {
                source: Source::Issuer("corp".into()),
                name: "staff".into(),
            },
        ),
    ] {
        let settings = parse(&with_sources(false, &rule_with(written))).unwrap();
        let rule = settings.policy.rules().last().unwrap();
        assert_eq!(rule.subjects, vec![expected], "{written}");
        assert_eq!(rule.subjects[0].to_string(), written);
    }
}

#[test]
fn subjects_that_name_no_source_are_errors() {
    for (subject, message) in [
        ("user:nobody", "user:<issuer name>:<subject>"),
        ("user:local:carol", "no user by this name"),
        ("user:elsewhere:alice", "no JWT issuer has this `name`"),
        ("group:elsewhere:staff", "no JWT issuer has this `name`"),
        ("user::alice", "not a subject"),
        ("group:corp:", "not a subject"),
    ] {
        let error = single_error(&with_sources(false, &rule_with(subject)));
        assert_eq!(error.field, "rules[2].subjects[0]", "{subject}");
        assert!(error.message.contains(message), "{subject}: {error}");
        assert!(!error.message.contains(subject), "{subject}: echoed");
    }
    // With an issuer that shares local names, any unqualified name may be its subject.
    parse(&with_sources(true, &rule_with("user:carol"))).unwrap();
}

#[test]
fn check_warns_when_one_name_can_come_from_two_sources() {
    let settings = parse(&with_sources(true, &rule_with("user:alice"))).unwrap();
    assert!(
        settings.warnings.iter().any(|w| w
            .starts_with("rules[2].subjects[0]: this name may come from users and jwt_issuers[0]")),
        "{:?}",
        settings.warnings
    );
    let settings = parse(&with_sources(true, &rule_with("group:staff"))).unwrap();
    assert!(
        settings
            .warnings
            .iter()
            .any(|w| w.contains("this group may come from users and api_keys and jwt_issuers[0]")),
        "{:?}",
        settings.warnings
    );
    // Qualified, or with no issuer sharing names: one source, no warning.
    for (shares, subject) in [
        (true, "user:local:alice"),
        (true, "group:partner:staff"),
        (false, "user:alice"),
        (false, "group:staff"),
    ] {
        let settings = parse(&with_sources(shares, &rule_with(subject))).unwrap();
        assert!(
            !settings
                .warnings
                .iter()
                .any(|w| w.contains("may come from")),
            "{subject}: {:?}",
            settings.warnings
        );
    }
    // A local user and an API key with one name.
    let source =
        with_sources(false, "").replace("  - name: ci\n    sha256", "  - name: alice\n    sha256");
    let source = source.replace("api_key:ci", "api_key:alice");
    let settings = parse(&source).unwrap();
    assert!(
        settings
            .warnings
            .iter()
            .any(|w| w.starts_with("users.alice: an API key has the same name")),
        "{:?}",
        settings.warnings
    );
}

#[test]
fn issuer_names_are_plain_unique_and_never_local() {
    for (from, to, field) in [
        (
            "    name: corp\n",
            "    name: local\n",
            "jwt_issuers[0].name",
        ),
        (
            "    name: corp\n",
            "    name: \"a b\"\n",
            "jwt_issuers[0].name",
        ),
        (
            "    name: partner\n",
            "    name: corp\n",
            "jwt_issuers[1].name",
        ),
    ] {
        let error = single_error(&with_sources(false, "").replace(from, to));
        assert_eq!(error.field, field, "{error}");
    }
}

#[test]
fn failed_sign_ins_default_and_bad_values_are_named_by_line_and_field() {
    let defaults = parse(GOOD).unwrap().identity.failed_sign_ins;
    assert_eq!(
        (defaults.allowed, defaults.backoff, defaults.max_backoff),
        (5, Duration::from_secs(1), Duration::from_secs(300))
    );
    let set = parse(&format!(
        "{GOOD}auth:\n  failed_sign_ins: {{allowed: 3, backoff: 2s, max_backoff: 1m}}\n"
    ))
    .unwrap()
    .identity
    .failed_sign_ins;
    assert_eq!(
        (set.allowed, set.backoff, set.max_backoff),
        (3, Duration::from_secs(2), Duration::from_secs(60))
    );
    for (line, field, message) in [
        ("allowed: 0", "auth.failed_sign_ins.allowed", "at least 1"),
        (
            "backoff: 50ms",
            "auth.failed_sign_ins.backoff",
            "at least 100ms",
        ),
        (
            "backoff: 48h",
            "auth.failed_sign_ins.backoff",
            "at most 24h",
        ),
        (
            "max_backoff: 999ms",
            "auth.failed_sign_ins.max_backoff",
            "at least `backoff`",
        ),
        (
            "max_backoff: 30h",
            "auth.failed_sign_ins.max_backoff",
            "at most 24h",
        ),
    ] {
        let error = single_error(&format!("{GOOD}auth:\n  failed_sign_ins:\n    {line}\n"));
        assert_eq!(error.field, field, "{line}");
        assert_eq!(error.position.map(|p| p.0), Some(30), "{line}: {error}");
        assert!(error.message.contains(message), "{line}: {error}");
        let value = line.split_once(": ").unwrap().1;
        assert!(
            value == "0" || !error.to_string().contains(value),
            "{line}: {error}"
        );
    }
    let error = single_error(&format!("{GOOD}auth:\n  failed_sign_ins:\n    alowed: 3\n"));
    assert!(error.message.contains("unknown field `alowed`"), "{error}");
}

#[test]
fn cloudflare_section_is_parsed_with_defaults_left_to_the_reader() {
    let settings = parse(&format!(
        "{GOOD}cloudflare:\n  account_id: 023E105F4ECEF8AD9CA31A8372D0C353\n  api_token: {{file: token}}\n  api_base: http://127.0.0.1:8081/client/v4/\n  audit_interval: 1h\n"
    ))
    .unwrap();
    let cloudflare = &settings.cloudflare;
    assert_eq!(
        cloudflare.account_id.as_deref(),
        Some("023e105f4ecef8ad9ca31a8372d0c353")
    );
    assert_eq!(
        cloudflare.api_token,
        Some(KeyLocation::File(PathBuf::from("/etc/streamgate/token")))
    );
    assert_eq!(
        cloudflare.api_base_or_default(),
        "http://127.0.0.1:8081/client/v4"
    );
    assert_eq!(cloudflare.audit_interval, Some(Duration::from_secs(3600)));

    let defaults = parse(GOOD).unwrap().cloudflare;
    assert_eq!(defaults, CloudflareSettings::default());
    assert_eq!(defaults.api_base_or_default(), DEFAULT_CLOUDFLARE_API_BASE);
    assert_eq!(
        defaults.api_token_location(),
        KeyLocation::Env(CLOUDFLARE_API_TOKEN_ENV.into())
    );
}

#[test]
fn cloudflare_mistakes_name_the_field_and_never_the_value() {
    const SECRET: &str = "s3cr3t-api-token-value";
    for (section, field) in [
        (
            "  account_id: not-an-account\n".to_string(),
            "cloudflare.account_id",
        ),
        (format!("  api_token: {SECRET}\n"), "cloudflare.api_token"),
        (
            format!("  api_token: {{file: a, env: {SECRET}}}\n"),
            "cloudflare.api_token",
        ),
        (
            format!("  api_base: ftp://{SECRET}\n"),
            "cloudflare.api_base",
        ),
        (
            "  audit_interval: 0s\n".to_string(),
            "cloudflare.audit_interval",
        ),
    ] {
        let error = single_error(&format!("{GOOD}cloudflare:\n{section}"));
        assert_eq!(error.field, field, "{error}");
        assert!(error.position.is_some(), "{error}");
        assert!(!error.to_string().contains(SECRET), "{error}");
    }
}

#[test]
fn unprotected_videos_are_catalogue_aliases_or_uids() {
    let with = |list: &str| {
        GOOD.replace(
            "    listen: 127.0.0.1:0\nsigning_keys",
            &format!("    listen: 127.0.0.1:0\n    unprotected: {list}\nsigning_keys"),
        )
    };
    let settings = parse(&with(
        "[keynote, 0123456789abcdef0123456789abcdef, keynote]",
    ))
    .unwrap();
    let StreamSettings::Emulator(options) = &settings.stream else {
        panic!("the emulator is configured");
    };
    assert_eq!(
        options.unprotected,
        [
            "fedcba9876543210fedcba9876543210",
            "0123456789abcdef0123456789abcdef"
        ]
    );
    let error = single_error(&with("[intro, trailer]"));
    assert_eq!(error.field, "stream.emulator.unprotected[1]");
    assert!(error.message.contains("videos:"), "{error}");
}
