//! Validating who can sign in: API keys, Basic users, JWT issuers, trusted proxies and the
//! login redirect; and building the [`Authenticator`] (which reads issuer key files).

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::raw::{
    RawApiKey, RawAuth, RawClientAddress, RawFailedSignIns, RawIssuer, RawNet, RawUser,
};
use super::{Checker, KeyLocation, Seg, key, parse_origin};
use crate::http::client_addr::{ClientAddress, ForwardedHeader, TrustedProxies};
use crate::identity::ApiKeys;
use crate::identity::basic::{UserSettings, validate_phc};
use crate::identity::jwt::{IssuerKeys, IssuerSettings};
use crate::identity::throttle::FailedSignIns;
use crate::secret::Secret;

/// Who can sign in, and how refusals reach a browser.
#[derive(Debug)]
pub struct IdentitySettings {
    pub api_keys: ApiKeys,
    pub users: Vec<UserSettings>,
    pub issuers: Vec<IssuerSettings>,
    /// `jwt_issuers[i]` and its position, for errors found while reading key files.
    pub issuer_fields: Vec<(String, Option<(usize, usize)>)>,
    /// The Basic realm shown by browsers.
    pub realm: String,
    /// Where browsers without a credential are sent (`?return_to=<path>` is appended).
    pub login_url: Option<String>,
    /// This gateway's public origin, to make `return_to` absolute; relative when unset.
    pub public_url: Option<String>,
    pub basic_cache_ttl: Duration,
    pub max_password_checks: usize,
    /// Failed sign-ins let through per address and user name, and the backoff after them.
    pub failed_sign_ins: FailedSignIns,
    /// The trusted proxies and the one header they state the viewer's address in.
    pub client_address: ClientAddress,
}

impl IdentitySettings {
    /// Group names someone can be in: from users and API keys.
    pub fn known_groups(&self) -> HashSet<&str> {
        self.users
            .iter()
            .flat_map(|u| u.groups.iter().map(|g| &**g))
            .chain(
                self.api_keys
                    .principals()
                    .flat_map(|p| p.groups.iter().map(|g| &**g)),
            )
            .collect()
    }

    /// Whether some JWT issuer supplies groups (so rules may name groups no local user has).
    pub fn groups_from_tokens(&self) -> bool {
        self.issuers.iter().any(|i| i.groups_claim.is_some())
    }
}

pub(super) struct RawIdentity {
    pub api_keys: Vec<RawApiKey>,
    pub users: Vec<(String, RawUser)>,
    pub issuers: Vec<RawIssuer>,
    pub auth: RawAuth,
    pub trusted_proxies: Vec<RawNet>,
    pub client_address: RawClientAddress,
}

pub(super) fn validate_identity(
    raw: RawIdentity,
    check: &mut Checker<'_>,
    base_dir: &Path,
) -> IdentitySettings {
    let mut groups = GroupNames::default();
    let api_keys = build_api_keys(raw.api_keys, &mut groups, check);
    let users = build_users(raw.users, &mut groups, check);
    let mut issuers = Vec::new();
    let mut issuer_fields = Vec::new();
    let mut seen = std::collections::HashMap::new();
    let mut names = std::collections::HashMap::new();
    for (i, entry) in raw.issuers.into_iter().enumerate() {
        let path = [key("jwt_issuers"), Seg::Index(i)];
        if let Some(first) = seen.insert(entry.issuer.clone(), i) {
            check.error(
                &[key("jwt_issuers"), Seg::Index(i), key("issuer")],
                format!("this issuer is already listed at jwt_issuers[{first}]"),
            );
            continue;
        }
        if let Some(name) = &entry.name
            && let Some(first) = names.insert(name.clone(), i)
        {
            check.error(
                &[key("jwt_issuers"), Seg::Index(i), key("name")],
                format!("this name is already used by jwt_issuers[{first}]"),
            );
            continue;
        }
        if let Some(issuer) = build_issuer(entry, i, check, base_dir) {
            issuers.push(issuer);
            issuer_fields.push((super::display_path(&path), check.position(&path)));
        }
    }
    let login_url = raw.auth.login_url.and_then(|url| {
        let ok =
            url.starts_with('/') && !url.starts_with("//") || parse_url_with_path(&url).is_some();
        if !ok {
            check.error(
                &[key("auth"), key("login_url")],
                "must be a path (/login) or an http(s) URL",
            );
        }
        ok.then_some(url)
    });
    let public_url = raw
        .auth
        .public_url
        .and_then(|url| match parse_origin(&url) {
            Ok(origin) => Some(origin),
            Err(message) => {
                check.error(&[key("auth"), key("public_url")], message);
                None
            }
        });
    if raw.auth.realm.is_empty()
        || raw.auth.realm.contains(['"', '\\'])
        || !raw.auth.realm.is_ascii()
    {
        check.error(
            &[key("auth"), key("realm")],
            "a realm is non-empty ASCII without quotes or backslashes",
        );
    }
    if raw.auth.max_password_checks == 0 {
        check.error(
            &[key("auth"), key("max_password_checks")],
            "must be at least 1",
        );
    }
    let failed_sign_ins = failed_sign_ins(&raw.auth.failed_sign_ins, check);
    IdentitySettings {
        api_keys,
        users,
        issuers,
        issuer_fields,
        realm: raw.auth.realm,
        login_url,
        public_url,
        basic_cache_ttl: raw.auth.basic_cache_ttl.0,
        max_password_checks: raw.auth.max_password_checks.max(1),
        failed_sign_ins,
        client_address: ClientAddress {
            trusted: TrustedProxies::new(raw.trusted_proxies.into_iter().map(|n| n.0).collect()),
            header: client_address_header(raw.client_address, check),
        },
    }
}

/// The longest `auth.failed_sign_ins.max_backoff`: failures are remembered this long at most.
const MAX_BACKOFF_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// `auth.failed_sign_ins`: at least one failure let through, a backoff of at least 100 ms,
/// and a maximum between the backoff and 24 h. Errors name the field, never the value.
fn failed_sign_ins(raw: &RawFailedSignIns, check: &mut Checker<'_>) -> FailedSignIns {
    let at = |field: &str| [key("auth"), key("failed_sign_ins"), key(field)];
    let defaults = FailedSignIns::default();
    let mut settings = FailedSignIns {
        allowed: raw.allowed,
        backoff: raw.backoff.0,
        max_backoff: raw.max_backoff.0,
    };
    if raw.allowed == 0 {
        check.error(&at("allowed"), "must be at least 1");
        settings.allowed = defaults.allowed;
    }
    if raw.backoff.0 < Duration::from_millis(100) {
        check.error(&at("backoff"), "must be at least 100ms");
        settings.backoff = defaults.backoff;
    } else if raw.backoff.0 > MAX_BACKOFF_LIMIT {
        check.error(&at("backoff"), "must be at most 24h");
        settings.backoff = defaults.backoff;
    }
    let backoff_ok = settings.backoff == raw.backoff.0;
    if raw.max_backoff.0 > MAX_BACKOFF_LIMIT {
        check.error(&at("max_backoff"), "must be at most 24h");
    } else if backoff_ok && raw.max_backoff.0 < raw.backoff.0 {
        check.error(&at("max_backoff"), "must be at least `backoff`");
    }
    settings.max_backoff = settings
        .max_backoff
        .clamp(settings.backoff, MAX_BACKOFF_LIMIT);
    settings
}

/// `client_address.header`: one of the four headers proxies state the client in.
fn client_address_header(raw: RawClientAddress, check: &mut Checker<'_>) -> ForwardedHeader {
    let Some(name) = raw.header else {
        return ForwardedHeader::default();
    };
    ForwardedHeader::from_name(name.trim()).unwrap_or_else(|| {
        let names: Vec<&str> = ForwardedHeader::ALL.iter().map(|h| h.name()).collect();
        check.error(
            &[key("client_address"), key("header")],
            format!("expected one of {}", names.join(", ")),
        );
        ForwardedHeader::default()
    })
}

fn parse_url_with_path(url: &str) -> Option<http::Uri> {
    let uri: http::Uri = url.parse().ok()?;
    matches!(uri.scheme_str(), Some("https" | "http"))
        .then_some(())
        .and(uri.authority())?;
    Some(uri)
}

/// A name usable in `user:<name>` and `group:<name>`: printable, no separators that would
/// make the rule syntax or Basic credentials ambiguous.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && c != ':' && c != ',')
}

/// The source named `local` in qualified subjects: the local users and API keys.
pub(super) const LOCAL_SOURCE: &str = "local";

/// A usable issuer `name`: short, plain, and not the local source's.
fn is_issuer_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name != LOCAL_SOURCE
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One shared string per group name, however many users are in it.
#[derive(Default)]
struct GroupNames(std::collections::HashMap<String, Arc<str>>);

impl GroupNames {
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(name) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(name);
        self.0.insert(name.to_string(), Arc::clone(&shared));
        shared
    }
}

fn check_groups(
    groups: &[String],
    path: &[Seg],
    names: &mut GroupNames,
    check: &mut Checker<'_>,
) -> Vec<Arc<str>> {
    let mut out = Vec::with_capacity(groups.len());
    for (j, group) in groups.iter().enumerate() {
        if is_valid_name(group) {
            out.push(names.intern(group));
        } else {
            let mut path = path.to_vec();
            path.push(Seg::Index(j));
            check.error(
                &path,
                "not a usable group name (no spaces, control characters, `:` or `,`)",
            );
        }
    }
    out
}

fn build_api_keys(
    raw: Vec<RawApiKey>,
    names_of_groups: &mut GroupNames,
    check: &mut Checker<'_>,
) -> ApiKeys {
    let mut keys = ApiKeys::default();
    let mut names = HashSet::new();
    for (i, entry) in raw.into_iter().enumerate() {
        let at = |field: &str| [key("api_keys"), Seg::Index(i), key(field)];
        if !is_valid_name(&entry.name) || !names.insert(entry.name.clone()) {
            check.error(
                &at("name"),
                "the name is empty, unusable (spaces, control characters, `:` or `,`) or listed twice",
            );
            continue;
        }
        let groups = check_groups(&entry.groups, &at("groups"), names_of_groups, check);
        if !keys.insert(entry.sha256.0, entry.name.into(), groups) {
            check.error(&at("sha256"), "this digest is listed twice");
        }
    }
    keys
}

fn build_users(
    raw: Vec<(String, RawUser)>,
    names_of_groups: &mut GroupNames,
    check: &mut Checker<'_>,
) -> Vec<UserSettings> {
    let mut users = Vec::with_capacity(raw.len());
    for (name, user) in raw {
        let at = |field: &str| [key("users"), key(&name), key(field)];
        if !is_valid_name(&name) {
            check.error(
                &[key("users"), key(&name)],
                "not a usable user name (no spaces, control characters, `:` or `,`)",
            );
            continue;
        }
        if let Err(message) = validate_phc(&user.password) {
            check.error(
                &at("password"),
                format!("{message}; make one with `streamgate hash-password`"),
            );
            continue;
        }
        let groups = check_groups(&user.groups, &at("groups"), names_of_groups, check);
        users.push(UserSettings {
            name: name.as_str().into(),
            password_hash: Secret::new(user.password),
            groups,
        });
    }
    users
}

/// The key family an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

fn family(alg: Algorithm) -> Family {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
        Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
        Algorithm::EdDSA => Family::Ed,
        _ => Family::Rsa,
    }
}

fn build_issuer(
    raw: RawIssuer,
    i: usize,
    check: &mut Checker<'_>,
    base_dir: &Path,
) -> Option<IssuerSettings> {
    let at = |field: &str| [key("jwt_issuers"), Seg::Index(i), key(field)];
    let errors_before = check.errors.len();
    if raw.issuer.is_empty() {
        check.error(&at("issuer"), "the issuer (`iss`) must not be empty");
    }
    if let Some(name) = &raw.name
        && !is_issuer_name(name)
    {
        check.error(
            &at("name"),
            "an issuer's name is 1-64 letters, digits, `.`, `_` or `-`, and not `local` (which means the local users and API keys)",
        );
    }
    let audiences = raw.audience.into_vec();
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        check.error(
            &at("audience"),
            "list the audience (`aud`) this gateway accepts",
        );
    }
    let mut algorithms = Vec::new();
    for (j, name) in raw.algorithms.iter().enumerate() {
        let mut path = at("algorithms").to_vec();
        path.push(Seg::Index(j));
        if name.eq_ignore_ascii_case("none") {
            check.error(&path, "`none` is never accepted: tokens must be signed");
            continue;
        }
        match Algorithm::from_str(name) {
            Ok(alg) => algorithms.push(alg),
            Err(_) => check.error(
                &path,
                "not an algorithm; use HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA",
            ),
        }
    }
    if raw.algorithms.is_empty() {
        check.error(
            &at("algorithms"),
            "pin the algorithms this issuer signs with, e.g. [RS256]",
        );
    }
    let families: HashSet<Family> = algorithms.iter().map(|a| family(*a)).collect();
    if families.len() > 1 {
        check.error(
            &at("algorithms"),
            "mix no key families: HMAC (HS*), RSA (RS*/PS*), EC (ES*) and EdDSA need different keys",
        );
    }
    let sources = [
        raw.secret.is_some(),
        raw.public_key_file.is_some(),
        raw.jwks_file.is_some(),
        raw.jwks_url.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        check.error(
            &[key("jwt_issuers"), Seg::Index(i)],
            "set exactly one of `secret`, `public_key_file`, `jwks_file` or `jwks_url`",
        );
        return None;
    }
    let is_hmac = families.contains(&Family::Hmac);
    let keys = if let Some(secret) = raw.secret {
        let location = match (secret.file, secret.env) {
            (Some(file), None) => KeyLocation::File(base_dir.join(file)),
            (None, Some(env)) => KeyLocation::Env(env),
            _ => {
                check.error(
                    &at("secret"),
                    "set exactly one of `file` or `env` (secrets are never inline)",
                );
                return None;
            }
        };
        if !is_hmac && !algorithms.is_empty() {
            check.error(&at("secret"), "a shared secret is only for HS256/384/512");
        }
        IssuerKeys::Secret(location)
    } else {
        if is_hmac {
            check.error(
                &at("algorithms"),
                "HS* algorithms need a `secret`; a public key or JWKS cannot verify them",
            );
        }
        if let Some(file) = raw.public_key_file {
            IssuerKeys::PublicKeyPem(base_dir.join(file))
        } else if let Some(file) = raw.jwks_file {
            IssuerKeys::JwksFile(base_dir.join(file))
        } else {
            let url = raw.jwks_url.unwrap_or_default();
            let uri = match check_jwks_url(&url) {
                Ok(uri) => uri,
                Err(message) => {
                    check.error(&at("jwks_url"), message);
                    return None;
                }
            };
            if raw.jwks_refresh.0 < Duration::from_secs(1) {
                check.error(&at("jwks_refresh"), "must be at least 1s");
            }
            if raw.jwks_min_refresh_interval.0 < Duration::from_secs(1) {
                check.error(
                    &at("jwks_min_refresh_interval"),
                    "must be at least 1s, or unknown key ids could make the gateway fetch without pause",
                );
            }
            IssuerKeys::JwksUrl {
                url: uri,
                refresh: raw.jwks_refresh.0,
                min_refresh_interval: raw.jwks_min_refresh_interval.0,
                ca_file: raw.jwks_ca_file.map(|f| base_dir.join(f)),
            }
        }
    };
    if let Some(cookie) = &raw.cookie {
        let valid = !cookie.is_empty()
            && cookie
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid {
            check.error(&at("cookie"), "not a valid cookie name");
        }
    }
    if raw.subject_claim.is_empty() {
        check.error(
            &at("subject_claim"),
            "name the claim holding the subject, e.g. sub",
        );
    }
    if raw.leeway.0 > Duration::from_secs(300) {
        check.error(
            &at("leeway"),
            "at most 5m: leeway extends every token's life",
        );
    }
    if check.errors.len() > errors_before {
        return None;
    }
    Some(IssuerSettings {
        issuer: raw.issuer,
        audiences,
        algorithms,
        keys,
        leeway: raw.leeway.0,
        cookie: raw.cookie,
        subject_claim: raw.subject_claim,
        groups_claim: raw.groups_claim.filter(|c| !c.is_empty()),
        cache_ttl: raw.cache_ttl.0,
        name: raw.name,
        shares_local_names: raw.shares_local_names,
    })
}

/// `https://...`, or `http://` to a loopback host (a development identity provider).
fn check_jwks_url(url: &str) -> Result<http::Uri, String> {
    let uri = parse_url_with_path(url).ok_or_else(|| "not an http(s) URL".to_string())?;
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if uri.scheme_str() == Some("http") && !loopback {
        return Err(
            "keys must be fetched over https (plain http only to a loopback address)".to_string(),
        );
    }
    Ok(uri)
}
