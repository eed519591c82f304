//! Validating the ordered rules into an indexed [`Policy`], and the policy lints that
//! `streamgate check` prints.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::identity::{IdentitySettings, LOCAL_SOURCE};
use super::raw::{RawAction, RawCountries, RawMode, RawRule, RawToken};
use super::{Checker, Seg, check_access_rules, display_path, key};
use crate::FastSet;
use crate::authz::catalogue::Catalogue;
use crate::authz::policy::{
    Action, Mode, Policy, Rule, Source, Subject, TokenGrant, VideoSelector, Window,
};
use crate::token::TokenSettings;
use crate::token::claims::{AccessRule, MAX_ACCESS_RULES, RuleAction};

/// The token settings every rule starts from (`token:`), before per-rule overrides.
pub(super) struct TokenDefaults {
    pub ttl: Duration,
    pub downloadable: bool,
    pub access_rules: Vec<AccessRule>,
    pub countries: Option<RawCountries>,
    pub bind_client_ip: bool,
    pub min_remaining: Duration,
}

impl TokenDefaults {
    pub fn from_raw(raw: &RawToken) -> Self {
        Self {
            ttl: raw.ttl.0,
            downloadable: raw.downloadable,
            access_rules: raw.access_rules.clone(),
            countries: raw.countries.clone(),
            bind_client_ip: raw.bind_client_ip,
            min_remaining: raw.min_remaining.0,
        }
    }
}

pub(super) fn build_policy(
    raw: Vec<RawRule>,
    catalogue: &Catalogue,
    identity: &IdentitySettings,
    defaults: &TokenDefaults,
    mode: Mode,
    check: &mut Checker<'_>,
    warnings: &mut Vec<String>,
) -> Policy {
    if raw.is_empty() {
        warnings.push("no rules: every request will be denied".into());
    }
    let known_tags: HashSet<&str> = catalogue
        .videos()
        .flat_map(|video| video.tags.iter().map(|t| &**t))
        .collect();
    let context = SubjectContext {
        users: identity.users.iter().map(|u| &*u.name).collect(),
        api_keys: identity.api_keys.principals().map(|p| &*p.name).collect(),
        groups: identity.known_groups(),
        issuers: identity
            .issuers
            .iter()
            .enumerate()
            .map(|(i, issuer)| IssuerNames {
                field: identity
                    .issuer_fields
                    .get(i)
                    .map_or_else(|| format!("jwt_issuers[{i}]"), |(field, _)| field.clone()),
                name: issuer.name.as_deref(),
                shares_local_names: issuer.shares_local_names,
                supplies_groups: issuer.groups_claim.is_some(),
            })
            .collect(),
    };
    warnings.extend(users_named_like_keys(&context));
    let mut names = std::collections::HashMap::new();
    let mut rules = Vec::with_capacity(raw.len());
    for (i, rule) in raw.into_iter().enumerate() {
        let at = |field: &str| vec![key("rules"), Seg::Index(i), key(field)];
        if rule.name.is_empty() {
            check.error(&at("name"), "a rule needs a name");
        } else if let Some(first) = names.insert(rule.name.clone(), i) {
            check.error(
                &at("name"),
                format!("this name is already used by rules[{first}]"),
            );
        }
        let videos = rule_videos(
            &rule.videos,
            &at("videos"),
            catalogue,
            &known_tags,
            check,
            warnings,
        );
        let subjects = rule_subjects(&rule.subjects, &at("subjects"), &context, check, warnings);
        let window = Window {
            not_before: rule.not_before.map(|t| t.0),
            not_after: rule.not_after.map(|t| t.0),
        };
        if let (Some(start), Some(end)) = (window.not_before, window.not_after)
            && start >= end
        {
            check.error(&at("not_after"), "must be later than not_before");
        }
        let token = rule_token(&rule, &at, defaults, window.not_after, check);
        let rule_mode = rule.mode.map_or(mode, mode_of);
        if rule_mode == Mode::Proxy && rule.action == RawAction::Allow {
            // Stream then sees the gateway's address and location, not the viewer's.
            if token.bind_client_ip {
                check.error(
                    &at("bind_client_ip"),
                    "bind_client_ip cannot work in proxy mode: Stream sees the gateway's address, not the viewer's (the token never leaves the gateway anyway)",
                );
            }
            let has_geo = token
                .settings
                .access_rules
                .iter()
                .any(|r| matches!(r, AccessRule::Country { .. } | AccessRule::IpSrc { .. }));
            if has_geo {
                warnings.push(format!(
                    "{}: in proxy mode Stream judges ip.src and country rules against the gateway's address, not the viewer's",
                    display_path(&[key("rules"), Seg::Index(i)])
                ));
            }
        }
        rules.push(Rule {
            name: rule.name.into(),
            videos,
            subjects,
            action: match rule.action {
                RawAction::Allow => Action::Allow,
                RawAction::Deny => Action::Deny,
            },
            window,
            token,
            mode: rule_mode,
        });
    }
    Policy::new(rules, catalogue)
}

pub(super) fn mode_of(raw: RawMode) -> Mode {
    match raw {
        RawMode::Redirect => Mode::Redirect,
        RawMode::Proxy => Mode::Proxy,
    }
}

/// What rule subjects may refer to.
struct SubjectContext<'a> {
    /// Local users, API keys, and the groups they are in.
    users: HashSet<&'a str>,
    api_keys: HashSet<&'a str>,
    groups: HashSet<&'a str>,
    issuers: Vec<IssuerNames<'a>>,
}

/// A JWT issuer, as far as rule subjects are concerned.
struct IssuerNames<'a> {
    /// `jwt_issuers[i]`, for messages.
    field: String,
    name: Option<&'a str>,
    shares_local_names: bool,
    supplies_groups: bool,
}

impl SubjectContext<'_> {
    fn issuer_named(&self, name: &str) -> Option<&IssuerNames<'_>> {
        self.issuers.iter().find(|issuer| issuer.name == Some(name))
    }

    /// The issuers whose names count as local names (for a group: that supply groups).
    fn sharing(&self, for_groups: bool) -> Vec<&str> {
        self.issuers
            .iter()
            .filter(|i| i.shares_local_names && (i.supplies_groups || !for_groups))
            .map(|i| i.field.as_str())
            .collect()
    }
}

/// `check`'s warning for a local user and an API key of the same name: different subjects
/// (`user:`, `api_key:`) that read alike in logs.
fn users_named_like_keys(context: &SubjectContext<'_>) -> Vec<String> {
    let mut shared: Vec<&str> = context
        .users
        .iter()
        .filter(|name| context.api_keys.contains(*name))
        .copied()
        .collect();
    shared.sort_unstable();
    shared
        .into_iter()
        .map(|name| {
            format!(
                "{}: an API key has the same name; user:{name} and api_key:{name} are different callers",
                display_path(&[key("users"), key(name)])
            )
        })
        .collect()
}

/// A rule's `videos`: `*`, `tag:<name>`, aliases and uids (which must be in the catalogue).
fn rule_videos(
    entries: &[String],
    path: &[Seg],
    catalogue: &Catalogue,
    known_tags: &HashSet<&str>,
    check: &mut Checker<'_>,
    warnings: &mut Vec<String>,
) -> VideoSelector {
    if entries.is_empty() {
        check.error(path, "list at least one video, `tag:<name>` or `*`");
    }
    let mut uids = FastSet::default();
    let mut tags = FastSet::default();
    let mut all = false;
    for (j, entry) in entries.iter().enumerate() {
        let mut path = path.to_vec();
        path.push(Seg::Index(j));
        if entry == "*" {
            all = true;
        } else if let Some(tag) = entry.strip_prefix("tag:") {
            if !known_tags.contains(tag) {
                warnings.push(format!("{}: no video has this tag", display_path(&path)));
            }
            tags.insert(Arc::from(tag));
        } else if let Some(video) = catalogue.resolve(entry) {
            uids.insert(video.uid);
        } else {
            check.error(&path, "not a video alias or uid listed in `videos`");
        }
    }
    if all {
        VideoSelector::All
    } else {
        VideoSelector::Some { uids, tags }
    }
}

const SUBJECT_FORMS: &str = "anyone, authenticated, user:<name>, group:<name>, user:<issuer name or local>:<name>, group:<issuer name or local>:<name>, api_key:<name> or claim:<name>=<value>";

/// A rule's `subjects`, checked against the users, keys, groups and issuers that exist.
fn rule_subjects(
    entries: &[String],
    path: &[Seg],
    context: &SubjectContext<'_>,
    check: &mut Checker<'_>,
    warnings: &mut Vec<String>,
) -> Vec<Subject> {
    if entries.is_empty() {
        check.error(path, format!("list at least one subject: {SUBJECT_FORMS}"));
    }
    let mut subjects = Vec::new();
    for (j, entry) in entries.iter().enumerate() {
        let mut path = path.to_vec();
        path.push(Seg::Index(j));
        let subject = match parse_subject(entry) {
            Ok(subject) => subject,
            Err(message) => {
                check.error(&path, message);
                continue;
            }
        };
        let at = display_path(&path);
        match &subject {
            Subject::User { source, name } => {
                check_user(source, name, context, &at, &path, check, warnings);
            }
            Subject::Group { source, name } => {
                check_group(source, name, context, &at, &path, check, warnings);
            }
            Subject::ApiKey(name) if !context.api_keys.contains(&**name) => {
                check.error(&path, "no API key by this name in `api_keys`");
            }
            Subject::Claim { .. } if context.issuers.is_empty() => {
                check.error(&path, "claim subjects need a JWT issuer in `jwt_issuers`");
            }
            _ => {}
        }
        subjects.push(subject);
    }
    subjects
}

/// The sources a `user:` subject can match, or why it cannot; and a warning when it would
/// match one name from more than one source.
fn check_user(
    source: &Source,
    name: &str,
    context: &SubjectContext<'_>,
    at: &str,
    path: &[Seg],
    check: &mut Checker<'_>,
    warnings: &mut Vec<String>,
) {
    let local = context.users.contains(name);
    match source {
        Source::Unqualified => {
            let sharing = context.sharing(false);
            if !local && sharing.is_empty() {
                check.error(
                    path,
                    "no user by this name in `users`; a JWT subject is written user:<issuer name>:<subject> (or its issuer is given `shares_local_names: true`)",
                );
            }
            let sources: Vec<&str> = local
                .then_some("users")
                .into_iter()
                .chain(sharing)
                .collect();
            if sources.len() > 1 {
                warnings.push(format!(
                    "{at}: this name may come from {}: each of them matches (qualify it as user:local:<name> or user:<issuer name>:<name>)",
                    sources.join(" and ")
                ));
            }
        }
        Source::Local if !local => check.error(path, "no user by this name in `users`"),
        Source::Local => {}
        Source::Issuer(issuer) if context.issuer_named(issuer).is_none() => {
            check.error(path, "no JWT issuer has this `name` in `jwt_issuers`");
        }
        Source::Issuer(_) => {}
    }
}

/// As [`check_user`], for a `group:` subject.
fn check_group(
    source: &Source,
    name: &str,
    context: &SubjectContext<'_>,
    at: &str,
    path: &[Seg],
    check: &mut Checker<'_>,
    warnings: &mut Vec<String>,
) {
    let local = context.groups.contains(name);
    match source {
        Source::Unqualified => {
            let sharing = context.sharing(true);
            if !local && sharing.is_empty() {
                warnings.push(format!(
                    "{at}: no user or API key is in this group, and no JWT issuer that shares local names supplies groups (an issuer's group is written group:<issuer name>:<group>)"
                ));
            }
            let sources: Vec<&str> = local
                .then_some("users and api_keys")
                .into_iter()
                .chain(sharing)
                .collect();
            if sources.len() > 1 {
                warnings.push(format!(
                    "{at}: this group may come from {}: members of each match (qualify it as group:local:<name> or group:<issuer name>:<name>)",
                    sources.join(" and ")
                ));
            }
        }
        Source::Local if !local => {
            warnings.push(format!("{at}: no user or API key is in this group"))
        }
        Source::Local => {}
        Source::Issuer(issuer) => match context.issuer_named(issuer) {
            None => check.error(path, "no JWT issuer has this `name` in `jwt_issuers`"),
            Some(found) if !found.supplies_groups => warnings.push(format!(
                "{at}: {} has no `groups_claim`, so this subject never matches",
                found.field
            )),
            Some(_) => {}
        },
    }
}

/// `anyone`, `authenticated`, `user:`/`group:` with an optional source (`local` or an
/// issuer's `name`: `user:corp:alice`), `api_key:<name>`, `claim:<name>=<value>`.
fn parse_subject(entry: &str) -> Result<Subject, String> {
    let invalid = || format!("not a subject: use {SUBJECT_FORMS}");
    match entry {
        "anyone" => return Ok(Subject::Anyone),
        "authenticated" => return Ok(Subject::Authenticated),
        _ => {}
    }
    let (kind, rest) = entry.split_once(':').ok_or_else(invalid)?;
    if rest.is_empty() {
        return Err(invalid());
    }
    match kind {
        "user" | "group" => {
            // Local names never hold `:` (users, groups), so the first one ends a source;
            // what follows may (a JWT subject such as `auth0|x:y`).
            let (source, name) = match rest.split_once(':') {
                None => (Source::Unqualified, rest),
                Some((LOCAL_SOURCE, name)) => (Source::Local, name),
                Some((issuer, name)) => (Source::Issuer(issuer.into()), name),
            };
            if name.is_empty() || matches!(&source, Source::Issuer(issuer) if issuer.is_empty()) {
                return Err(invalid());
            }
            let name = name.into();
            Ok(if kind == "user" {
                Subject::User { source, name }
            } else {
                Subject::Group { source, name }
            })
        }
        "api_key" => Ok(Subject::ApiKey(rest.into())),
        "claim" => match rest.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok(Subject::Claim {
                name: name.into(),
                value: value.into(),
            }),
            _ => Err("write claim:<name>=<value>".to_string()),
        },
        _ => Err(invalid()),
    }
}

/// The token a rule grants: its overrides on top of the defaults, with country lists and
/// address binding turned into Stream access rules.
fn rule_token(
    rule: &RawRule,
    at: &dyn Fn(&str) -> Vec<Seg>,
    defaults: &TokenDefaults,
    not_after: Option<u64>,
    check: &mut Checker<'_>,
) -> TokenGrant {
    let ttl = rule.ttl.map_or(defaults.ttl, |ttl| ttl.0);
    if rule.ttl.is_some() && defaults.min_remaining >= ttl {
        check.error(
            &at("ttl"),
            "must be more than token.min_remaining, or no token could ever be reused",
        );
    }
    let raw_rules = match &rule.access_rules {
        Some(list) => {
            check_access_rules(list, &at("access_rules"), check);
            list.clone()
        }
        None => defaults.access_rules.clone(),
    };
    // More than the limit in the list alone was reported by check_access_rules.
    let listed_too_many = raw_rules.len() > MAX_ACCESS_RULES;
    let countries = rule.countries.as_ref().or(defaults.countries.as_ref());
    let bind_client_ip = rule.bind_client_ip.unwrap_or(defaults.bind_client_ip);
    let access_rules =
        compose_access_rules(raw_rules, countries, bind_client_ip).unwrap_or_else(|message| {
            check.error(&at("countries"), message);
            Vec::new()
        });
    let grant = TokenGrant {
        settings: Arc::new(TokenSettings {
            ttl,
            downloadable: rule.downloadable.unwrap_or(defaults.downloadable),
            access_rules: Arc::from(access_rules),
            not_after,
        }),
        bind_client_ip,
    };
    if grant.access_rule_count() > MAX_ACCESS_RULES && !listed_too_many {
        check.error(
            &at("access_rules"),
            format!(
                "tokens under this rule would carry {} access rules (access_rules, countries{}); Stream accepts at most {MAX_ACCESS_RULES}",
                grant.access_rule_count(),
                if bind_client_ip { ", and 2 for bind_client_ip" } else { "" }
            ),
        );
    }
    grant
}

/// The static access rules: the operator's own first, then country rules. When the token is
/// bound to the viewer's address, the gateway appends `ip.src allow` + `any block` per
/// request, which is why a country allow-list cannot be combined with it.
fn compose_access_rules(
    mut rules: Vec<AccessRule>,
    countries: Option<&RawCountries>,
    bind_client_ip: bool,
) -> Result<Vec<AccessRule>, String> {
    let Some(countries) = countries else {
        return Ok(rules);
    };
    match (&countries.allow, &countries.block) {
        (Some(_), Some(_)) => Err("set `allow` or `block`, not both".into()),
        (None, None) => Err("list countries under `allow` or `block`".into()),
        (Some(allow), None) => {
            if bind_client_ip {
                return Err(
                    "countries.allow cannot be combined with bind_client_ip: Stream's first-match rules cannot say \"this address and one of these countries\"; use countries.block"
                        .into(),
                );
            }
            if allow.is_empty() {
                return Err("countries.allow is empty: no one could watch".into());
            }
            rules.push(AccessRule::Country {
                action: RuleAction::Allow,
                country: allow.clone(),
            });
            rules.push(AccessRule::Any {
                action: RuleAction::Block,
            });
            Ok(rules)
        }
        (None, Some(block)) => {
            if !block.is_empty() {
                rules.push(AccessRule::Country {
                    action: RuleAction::Block,
                    country: block.clone(),
                });
            }
            Ok(rules)
        }
    }
}

/// Things `check` points out that are allowed but probably mistakes.
pub fn lint(policy: &Policy, catalogue: &Catalogue) -> Vec<String> {
    let mut warnings = Vec::new();
    for (later, earlier) in policy.shadowed(catalogue) {
        warnings.push(format!(
            "rule `{}` can never match: rule `{}` above it covers the same videos and subjects",
            later.name, earlier.name
        ));
    }
    let mut unreachable: Vec<&str> = catalogue
        .videos()
        .filter(|video| !policy.could_allow(video))
        .map(|video| &*video.alias)
        .collect();
    unreachable.sort_unstable();
    for alias in unreachable {
        warnings.push(format!(
            "video `{alias}` is mentioned by no allow rule: nobody can watch it"
        ));
    }
    warnings
}
