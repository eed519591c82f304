//! The configuration pipeline (YAML → [`Settings::from_yaml`] → [`Snapshot::build`]): any text
//! is either settings that build a running snapshot or errors that name the file and a real
//! line and column; nothing panics on the way.
//!
//! Inputs are raw text, or a full configuration with random edits (a value replaced, added or
//! removed anywhere in its tree), which reaches far more of the validation than random text.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use serde_json::{Value, json};

use super::Json;
use crate::config::{ConfigErrors, Settings};
use crate::identity::jwt::IssuerKeys;
use crate::metrics::Metrics;
use crate::secret::KeyLocation;
use crate::snapshot::{BuildError, Fixed, Snapshot, authenticator, restart_only_changes};
use crate::token::SigningKey;
use crate::token::signer::Clock;

/// What errors are reported against.
const FILE: &str = "fuzz.yaml";
const KEY_PEM: &str = include_str!("../../tests/fixtures/test-only-signing-key.pem");
const KID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

/// A configuration: any text, or the full one below with edits.
#[derive(Debug, Arbitrary)]
pub enum Input {
    Raw(String),
    Edited(Vec<Edit>),
}

/// Walk `path` into the configuration's tree and change what is there.
#[derive(Debug, Arbitrary)]
pub struct Edit {
    path: Vec<u8>,
    action: Action,
}

#[derive(Debug, Arbitrary)]
enum Action {
    Set(Leaf),
    Remove,
    /// Add an element to a list, or a field (a known name) to a mapping.
    Add(u8, Leaf),
}

#[derive(Debug, Arbitrary)]
enum Leaf {
    Known(u8),
    Json(Json),
    List(Vec<Leaf>),
    Map(Vec<(u8, Leaf)>),
}

/// Field names the configuration has, for new fields.
const FIELDS: &[&str] = &[
    "listen",
    "stream",
    "origin",
    "emulator",
    "customer_code",
    "signing_keys",
    "id",
    "file",
    "env",
    "active",
    "token",
    "ttl",
    "min_remaining",
    "nbf_backdate",
    "downloadable",
    "access_rules",
    "countries",
    "allow",
    "block",
    "bind_client_ip",
    "videos",
    "uid",
    "tags",
    "title",
    "api_keys",
    "name",
    "sha256",
    "groups",
    "users",
    "password",
    "jwt_issuers",
    "issuer",
    "audience",
    "algorithms",
    "secret",
    "public_key_file",
    "jwks_file",
    "jwks_url",
    "leeway",
    "cookie",
    "subject_claim",
    "groups_claim",
    "cache_ttl",
    "rules",
    "subjects",
    "action",
    "mode",
    "not_before",
    "not_after",
    "trusted_proxies",
    "limits",
    "request_timeout",
    "max_body_bytes",
    "rate_limit",
    "per_address",
    "per_subject",
    "per_second",
    "burst",
    "auth",
    "realm",
    "login_url",
    "public_url",
    "failed_sign_ins",
    "allowed",
    "backoff",
    "max_backoff",
    "cors",
    "allowed_origins",
    "token_api",
    "enabled",
    "account_id",
    "upstream",
    "ca_file",
    "tls",
    "cert",
    "key",
    "metrics_listen",
    "metrics_public",
    "demo_page",
    "log",
    "access",
    "type",
    "ip",
];

/// Plausible values, so an edit often passes the parser and reaches the validation.
fn known(i: u8) -> Value {
    let values = [
        json!("1h"),
        json!("10m"),
        json!("0s"),
        json!("25h"),
        json!("127.0.0.1:0"),
        json!("[::1]:0"),
        json!("intro"),
        json!("tag:public"),
        json!("anyone"),
        json!("authenticated"),
        json!("api_key:ci"),
        json!("user:alice"),
        json!("group:staff"),
        json!("claim:plan=pro"),
        json!("proxy"),
        json!("redirect"),
        json!("deny"),
        json!("ce800be43a9772f4bb02f35b860fb516"),
        json!(KID),
        json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        json!(password_hash()),
        json!(["HS256"]),
        json!(["RS256", "ES256"]),
        json!({"file": "secret.txt"}),
        json!({"env": "STREAMGATE_FUZZ_UNSET"}),
        json!("public.pem"),
        json!("https://idp.example/"),
        json!("https://idp.example/jwks.json"),
        json!("10.0.0.0/8"),
        json!("::ffff:10.0.0.0/104"),
        json!(["KP", "us"]),
        json!({"allow": ["KP"]}),
        json!({"block": ["XX"]}),
        json!({"per_second": 1, "burst": 5}),
        json!([{"type": "any", "action": "block"}]),
        json!([{"type": "ip.src", "action": "allow", "ip": ["192.0.2.0/24"]}]),
        json!("2030-01-01T00:00:00Z"),
        json!("2001-01-01 00:00:00+01:00"),
        json!("https://www.example.com"),
        json!("023e105f4ecef8ad9ca31a8372d0c353"),
        json!(true),
        json!(false),
        json!(0),
        json!(1),
        json!(u64::MAX),
        json!(-1),
        json!(1.5),
        json!(null),
        json!(""),
        json!([]),
        json!({}),
    ];
    values[usize::from(i) % values.len()].clone()
}

impl Leaf {
    fn value(&self) -> Value {
        match self {
            Leaf::Known(i) => known(*i),
            Leaf::Json(json) => json.to_value(FIELDS),
            Leaf::List(items) => Value::Array(items.iter().map(Leaf::value).collect()),
            Leaf::Map(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(name, leaf)| (field(*name), leaf.value()))
                    .collect(),
            ),
        }
    }
}

fn field(i: u8) -> String {
    FIELDS[usize::from(i) % FIELDS.len()].to_string()
}

/// An argon2id hash (cheapest parameters) for the configuration's user.
fn password_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"fuzz-only-salt!!").expect("a 16-byte salt");
        let params = argon2::Params::new(8, 1, 1, None).expect("valid argon2 parameters");
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(b"fuzz-only-password", &salt)
            .expect("hashing works")
            .to_string()
    })
    .clone()
}

/// A configuration that uses every section.
fn full_config() -> Value {
    json!({
        "listen": "127.0.0.1:0",
        "stream": {"emulator": {"listen": "127.0.0.1:0", "country_header": "CF-IPCountry"}},
        "signing_keys": [{"id": KID, "file": "key.pem"}],
        "token": {"ttl": "1h", "min_remaining": "10m", "countries": {"block": ["KP"]}},
        "videos": {
            "intro": {"uid": "ce800be43a9772f4bb02f35b860fb516", "tags": ["public"]},
            "keynote": {"uid": "5d5bc37ffcf54c9b82e996823bffbb81", "title": "Keynote"},
        },
        "api_keys": [{
            "name": "ci",
            "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "groups": ["apps"],
        }],
        "users": {"alice": {"password": password_hash(), "groups": ["staff"]}},
        "jwt_issuers": [{
            "issuer": "https://idp.example/",
            "audience": "streamgate",
            "algorithms": ["HS256"],
            "secret": {"file": "secret.txt"},
            "cookie": "session",
            "groups_claim": "groups",
        }],
        "trusted_proxies": ["10.0.0.0/8"],
        "rules": [
            {"name": "public", "videos": ["tag:public"], "subjects": ["anyone"]},
            {
                "name": "staff",
                "videos": ["keynote"],
                "subjects": ["group:staff", "api_key:ci"],
                "ttl": "30m",
                "downloadable": true,
                "mode": "proxy",
                "not_after": "2030-01-01T00:00:00Z",
            },
            {"name": "nobody", "videos": ["keynote"], "subjects": ["anyone"], "action": "deny"},
        ],
        "limits": {"request_timeout": "5s", "max_body_bytes": 4096},
        "rate_limit": {"per_address": {"per_second": 5, "burst": 10}},
        "auth": {"realm": "streamgate", "login_url": "https://www.example.com/login"},
        "cors": {"allowed_origins": ["https://www.example.com"]},
        "token_api": {"account_id": "023e105f4ecef8ad9ca31a8372d0c353"},
    })
}

/// `config` with `edit` applied where its path leads.
fn apply(config: &mut Value, edit: &Edit) {
    // Find the place by reading, then change it through its JSON pointer.
    let mut pointer = String::new();
    let mut at = &*config;
    for &step in &edit.path {
        let (segment, next) = match at {
            Value::Object(map) if !map.is_empty() => {
                let (key, next) = map
                    .iter()
                    .nth(usize::from(step) % map.len())
                    .expect("the index is in range");
                (key.replace('~', "~0").replace('/', "~1"), next)
            }
            Value::Array(items) if !items.is_empty() => {
                let index = usize::from(step) % items.len();
                (index.to_string(), &items[index])
            }
            _ => break,
        };
        pointer.push('/');
        pointer.push_str(&segment);
        at = next;
    }
    let Some(at) = config.pointer_mut(&pointer) else {
        return;
    };
    match &edit.action {
        Action::Set(leaf) => *at = leaf.value(),
        Action::Remove => *at = Value::Null,
        Action::Add(name, leaf) => match at {
            Value::Object(map) => {
                map.insert(field(*name), leaf.value());
            }
            Value::Array(items) => items.push(leaf.value()),
            other => *other = leaf.value(),
        },
    }
}

impl Input {
    /// The configuration's text.
    pub fn yaml(&self) -> String {
        match self {
            Input::Raw(text) => text.clone(),
            Input::Edited(edits) => {
                let mut config = full_config();
                for edit in edits {
                    apply(&mut config, edit);
                }
                serde_yaml::to_string(&config).expect("JSON values serialize as YAML")
            }
        }
    }
}

/// A directory holding the files the configuration names (a secret, a public key), so that
/// what the pipeline reads is under the fuzzer's control.
fn sandbox() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("streamgate-fuzz-config");
        std::fs::create_dir_all(&dir).expect("the temporary directory is writable");
        for (name, contents) in [
            ("secret.txt", "fuzz-only-hs256-secret-0123456789abcdef"),
            ("public.pem", "not a key"),
            ("key.pem", KEY_PEM),
        ] {
            let path = dir.join(name);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(contents) {
                // Write then rename: other test processes may read it meanwhile.
                let staging = dir.join(format!("{name}.{}", std::process::id()));
                std::fs::write(&staging, contents).expect("the sandbox is writable");
                std::fs::rename(&staging, &path).expect("the sandbox is writable");
            }
        }
        dir
    })
}

/// Whether every file the snapshot would read lies inside the sandbox (a random path could
/// name a device or a huge file: not what this target is about).
fn reads_only_sandbox(settings: &Settings) -> bool {
    let inside = |path: &Path| {
        path.starts_with(sandbox()) && !path.components().any(|c| c == Component::ParentDir)
    };
    let issuers = settings
        .identity
        .issuers
        .iter()
        .all(|issuer| match &issuer.keys {
            IssuerKeys::Secret(KeyLocation::File(path))
            | IssuerKeys::PublicKeyPem(path)
            | IssuerKeys::JwksFile(path) => inside(path),
            IssuerKeys::Secret(KeyLocation::Env(_)) => true,
            IssuerKeys::JwksUrl { ca_file, .. } => ca_file.as_deref().is_none_or(inside),
        });
    issuers && settings.upstream.ca_file.as_deref().is_none_or(inside)
}

/// Every error names the file, and a line and column inside the text.
fn check_errors(errors: &ConfigErrors, source: &str) {
    assert!(!errors.0.is_empty(), "an error without errors");
    // YAML breaks lines at CR, LF, CRLF, NEL, LS and PS; an error may point just past the end.
    let lines = source
        .replace("\r\n", "\n")
        .chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count()
        + 2;
    for error in &errors.0 {
        assert_eq!(error.file, FILE);
        assert!(!error.message.is_empty(), "{error:?}");
        if let Some((line, column)) = error.position {
            assert!(
                line >= 1 && line <= lines,
                "line {line} of {lines}: {error}"
            );
            assert!(column >= 1, "{error}");
        }
        assert!(error.to_string().starts_with(FILE));
    }
}

/// Load the configuration, build a snapshot from it, and check what came out.
pub fn check(input: Input) {
    let source = input.yaml();
    let settings = match Settings::from_yaml(&source, FILE, sandbox()) {
        Ok(settings) => settings,
        Err(errors) => return check_errors(&errors, &source),
    };
    assert!(restart_only_changes(&settings, &settings).is_empty());
    if !reads_only_sandbox(&settings) {
        return;
    }
    if let Err(errors) = authenticator(&settings) {
        return check_errors(&errors, &source);
    }
    let key = || SigningKey::from_material(Some(KID), KEY_PEM).expect("the fixture key loads");
    let fixed = Fixed {
        origin: "http://127.0.0.1:9".into(),
        metrics: Metrics::new(),
        clock: Clock::manual(1_800_000_000),
        emulator_account: None,
    };
    // A runtime for the JWKS refresh task a snapshot starts; it never runs (no network), and
    // is dropped with the runtime.
    let runtime = super::runtime();
    let _entered = runtime.enter();
    let first = match Snapshot::build(settings, vec![key()], &fixed, None) {
        Ok((snapshot, _)) => snapshot,
        Err(BuildError::Config(errors)) => return check_errors(&errors, &source),
        // An upstream CA file that holds no certificate, and the like.
        Err(_) => return,
    };
    // A reload of the same text builds too, keeping what did not change.
    let again = Settings::from_yaml(&source, FILE, sandbox()).expect("the same text validates");
    let (second, _) = Snapshot::build(again, vec![key()], &fixed, Some(&first))
        .expect("the same settings build again");
    assert!(
        Arc::ptr_eq(&first.cache, &second.cache),
        "a reload dropped the token cache"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn any_configuration_builds_or_names_its_errors() {
        super::super::property(super::check);
    }
}
