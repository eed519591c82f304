//! `streamgate explain`: why the policy decides what it does for one subject, video and time,
//! and the exact claims a token would carry.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::authz::policy::{Action, Mode, Rule, Subject, Verdict, rfc3339};
use crate::config::{Settings, human_duration};
use crate::identity::{Identity, IssuerSource, Principal, PrincipalKind};
use crate::token::claims::Claims;

use std::path::Path;

use super::{config_failure, parse_claim, parse_time};
use crate::app::keys::{MissingKeys, load_signing_keys};

/// Who to explain the decision for.
#[derive(Debug, Clone, Default)]
pub struct Asker {
    pub user: Option<String>,
    pub api_key_name: Option<String>,
    /// Extra groups (for a JWT user, whose groups come from the token).
    pub groups: Vec<String>,
    /// `name=value` claims, as a JWT would carry them.
    pub claims: Vec<(String, String)>,
    /// The JWT issuer (by its `name`) the subject's token comes from; the first issuer when
    /// unset and the subject is not a local user.
    pub issuer: Option<String>,
}

/// The question: who, which video, when, from where.
#[derive(Debug, Clone)]
pub struct Question {
    pub asker: Asker,
    pub video: String,
    /// Unix seconds.
    pub at: u64,
    pub ip: Option<IpAddr>,
    pub country: Option<String>,
}

/// Why a question cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error("no video `{0}` in the catalogue")]
    UnknownVideo(String),
    #[error("no API key named `{0}`")]
    UnknownApiKey(String),
    #[error("no user `{0}` in `users`, and no JWT issuer whose subjects could be named so")]
    UnknownUser(String),
    #[error("no JWT issuer named `{0}` (jwt_issuers[].name)")]
    UnknownIssuer(String),
}

/// The identity the question describes, built as the gateway would see it.
pub fn identity(settings: &Settings, asker: &Asker) -> Result<Identity, ExplainError> {
    let identity = &settings.identity;
    let claims: serde_json::Map<String, serde_json::Value> = asker
        .claims
        .iter()
        .map(|(name, value)| (name.clone(), serde_json::Value::String(value.clone())))
        .collect();
    let extra = asker.groups.iter().map(|g| Arc::from(g.as_str()));
    let principal = if let Some(name) = &asker.api_key_name {
        let key = identity
            .api_keys
            .principals()
            .find(|p| &*p.name == name)
            .ok_or_else(|| ExplainError::UnknownApiKey(name.clone()))?;
        Principal::new(
            PrincipalKind::ApiKey,
            Arc::clone(&key.name),
            key.groups.iter().cloned().chain(extra),
            claims,
        )
    } else if let Some(name) = &asker.user {
        match identity.users.iter().find(|u| &*u.name == name) {
            Some(user) if asker.claims.is_empty() && asker.issuer.is_none() => Principal::new(
                PrincipalKind::User,
                Arc::clone(&user.name),
                user.groups.iter().cloned().chain(extra),
                claims,
            ),
            _ if !identity.issuers.is_empty() => {
                jwt_principal(settings, asker.issuer.as_deref(), name, extra, claims)?
            }
            _ => return Err(ExplainError::UnknownUser(name.clone())),
        }
    } else if !asker.groups.is_empty() || !asker.claims.is_empty() || asker.issuer.is_some() {
        jwt_principal(
            settings,
            asker.issuer.as_deref(),
            "(token holder)",
            extra,
            claims,
        )?
    } else {
        return Ok(Identity::Anonymous);
    };
    Ok(Identity::Authenticated(Arc::new(principal)))
}

/// A JWT holder named `name`, from the issuer named `issuer` (else the first one).
fn jwt_principal(
    settings: &Settings,
    issuer: Option<&str>,
    name: &str,
    groups: impl Iterator<Item = Arc<str>>,
    claims: serde_json::Map<String, serde_json::Value>,
) -> Result<Principal, ExplainError> {
    let issuers = &settings.identity.issuers;
    let found = match issuer {
        Some(wanted) => issuers
            .iter()
            .find(|i| i.name.as_deref() == Some(wanted))
            .ok_or_else(|| ExplainError::UnknownIssuer(wanted.to_string()))?,
        None => issuers
            .first()
            .ok_or_else(|| ExplainError::UnknownUser(name.to_string()))?,
    };
    let source = IssuerSource {
        iss: found.issuer.as_str().into(),
        name: found.name.as_deref().map(Arc::from),
        shares_local_names: found.shares_local_names,
    };
    Ok(Principal::new(
        PrincipalKind::Jwt {
            issuer: Arc::new(source),
        },
        name.into(),
        groups,
        claims,
    ))
}

/// The report `explain` prints. `key_id` is the active signing key's id, when known.
pub fn explain(
    settings: &Settings,
    question: &Question,
    key_id: Option<&str>,
    nbf_backdate: Duration,
) -> Result<String, ExplainError> {
    let identity = identity(settings, &question.asker)?;
    let video = settings
        .catalogue
        .resolve(&question.video)
        .ok_or_else(|| ExplainError::UnknownVideo(question.video.clone()))?;
    let mut out = String::new();
    let tags: Vec<&str> = video.tags.iter().map(|t| &**t).collect();
    let _ = writeln!(
        out,
        "video    {} ({}) tags: [{}]",
        video.alias,
        video.uid,
        tags.join(", ")
    );
    let _ = writeln!(out, "subject  {}", describe(&identity));
    let _ = writeln!(out, "time     {}", rfc3339(question.at));
    let _ = writeln!(out, "\nrules, in order:");

    let verdicts = settings.policy.explain(&identity, video, question.at);
    for (i, (rule, verdict)) in verdicts.iter().enumerate() {
        let why = match verdict {
            Verdict::VideoNotCovered => "skipped: does not cover this video".to_string(),
            Verdict::SubjectNotCovered => format!(
                "skipped: covers only {}",
                rule.subjects
                    .iter()
                    .map(Subject::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Verdict::OutsideWindow(reason) => format!("skipped: {reason}"),
            Verdict::Decides(Action::Allow) => "ALLOW (decides)".to_string(),
            Verdict::Decides(Action::Deny) => "DENY (decides)".to_string(),
        };
        let _ = writeln!(out, "  {:>3}. {:<24} {why}", i + 1, rule.name);
    }
    let decision = settings.policy.decide(&identity, video, question.at);
    let _ = writeln!(out);
    match decision {
        Err(denied) => {
            let reason = match denied {
                crate::authz::policy::Denied::ByRule(rule) => format!("by rule `{rule}`"),
                crate::authz::policy::Denied::OutsideWindow { rule, reason } => {
                    format!("rule `{rule}` would allow, but this video is {reason}")
                }
                crate::authz::policy::Denied::NoRule => "no rule matched (deny by default)".into(),
            };
            let status = if identity.is_authenticated() {
                "403"
            } else {
                "401 (sign in)"
            };
            let _ = writeln!(out, "decision DENY {reason} → {status}");
        }
        Ok(permit) => {
            let _ = writeln!(out, "decision ALLOW by rule `{}`", permit.rule());
            let proxied = permit.mode() == Mode::Proxy;
            if proxied {
                let _ = writeln!(
                    out,
                    "mode     proxy: watched through the gateway at /watch/{}; the token never leaves it\n         (/api/getSignedURL and the token API answer 403 for this rule)",
                    video.alias
                );
            }
            write_claims(
                &mut out,
                permit.grant(),
                &video.uid,
                question,
                key_id,
                nbf_backdate,
                proxied,
            );
        }
    }
    Ok(out)
}

fn write_claims(
    out: &mut String,
    grant: &crate::authz::policy::TokenGrant,
    uid: &crate::token::VideoUid,
    question: &Question,
    key_id: Option<&str>,
    nbf_backdate: Duration,
    proxied: bool,
) {
    // A bound token needs the viewer's address; TEST-NET-1 stands in when none was given.
    let placeholder: IpAddr = IpAddr::from([192, 0, 2, 1]);
    let ip = question.ip.unwrap_or(placeholder);
    let settings = grant.for_client(ip);
    let kid = key_id.unwrap_or("(the active signing key)");
    let claims = Claims::build(uid, kid, &settings, question.at, nbf_backdate);
    let json = serde_json::to_value(&claims).unwrap_or_default();
    let _ = writeln!(
        out,
        "token    ttl {}{}{}",
        human_duration(settings.ttl),
        if settings.downloadable {
            ", downloadable"
        } else {
            ""
        },
        match settings.not_after {
            Some(end) if end < question.at + settings.ttl.as_secs() => {
                format!(", exp clipped to the rule's end {}", rfc3339(end))
            }
            _ => String::new(),
        }
    );
    if grant.bind_client_ip && question.ip.is_none() {
        let _ = writeln!(
            out,
            "         bound to the viewer's address ({placeholder} shown; pass --ip)"
        );
    }
    let pretty = serde_json::to_string_pretty(&json).unwrap_or_default();
    let _ = writeln!(out, "claims   {}", pretty.replace('\n', "\n         "));
    if proxied && (question.ip.is_some() || question.country.is_some()) {
        let _ = writeln!(
            out,
            "stream   judges the gateway's address in proxy mode, not the viewer's"
        );
    } else if question.ip.is_some() || question.country.is_some() {
        let empty = serde_json::Value::Array(vec![]);
        let rules = json.get("accessRules").unwrap_or(&empty);
        let verdict = crate::emulator::judge_access_rules(rules, ip, question.country.as_deref());
        let viewer = format!(
            "viewer at {ip}{}",
            question
                .country
                .as_deref()
                .map(|c| format!(" in {c}"))
                .unwrap_or_default()
        );
        let _ = match verdict {
            Ok(None) => writeln!(out, "stream   plays for the {viewer}"),
            Ok(Some(kind)) => writeln!(
                out,
                "stream   refuses the {viewer}: blocked by rule on '{kind}'"
            ),
            Err(fields) => writeln!(out, "stream   rejects the token: bad {}", fields.join(", ")),
        };
    }
}

fn describe(identity: &Identity) -> String {
    match identity {
        Identity::Anonymous => "anonymous (no credential)".into(),
        Identity::Authenticated(p) => {
            let groups: Vec<&str> = p.groups.iter().map(|g| &**g).collect();
            let from = match &p.kind {
                PrincipalKind::Jwt { issuer } => format!(
                    " from {}{}",
                    issuer.iss,
                    if issuer.shares_local_names {
                        " (shares local names)"
                    } else {
                        ""
                    }
                ),
                _ => String::new(),
            };
            format!("{}{from} groups: [{}]", p.label(), groups.join(", "))
        }
    }
}

/// Rules as `check` lists them.
pub fn describe_rule(rule: &Rule) -> String {
    use crate::authz::policy::VideoSelector;
    let videos = match &rule.videos {
        VideoSelector::All => "every video".to_string(),
        VideoSelector::Some { uids, tags } => {
            let mut tags: Vec<String> = tags.iter().map(|t| format!("tag:{t}")).collect();
            tags.sort();
            let mut parts = Vec::new();
            if !uids.is_empty() {
                parts.push(format!("{} video(s)", uids.len()));
            }
            parts.extend(tags);
            parts.join(" ")
        }
    };
    let subjects: Vec<String> = rule.subjects.iter().map(Subject::to_string).collect();
    let action = match rule.action {
        Action::Allow => "allow",
        Action::Deny => "deny",
    };
    let token = &rule.token.settings;
    let mut extras = vec![format!("ttl {}", human_duration(token.ttl))];
    if token.downloadable {
        extras.push("downloadable".into());
    }
    if !token.access_rules.is_empty() {
        extras.push(format!("{} access rule(s)", token.access_rules.len()));
    }
    if rule.token.bind_client_ip {
        extras.push("bound to the viewer's address".into());
    }
    if rule.mode == Mode::Proxy {
        extras.push("proxied".into());
    }
    if let Some(start) = rule.window.not_before {
        extras.push(format!("from {}", rfc3339(start)));
    }
    if let Some(end) = rule.window.not_after {
        extras.push(format!("until {}", rfc3339(end)));
    }
    format!(
        "{}: {action} {} on {videos} ({})",
        rule.name,
        subjects.join(", "),
        extras.join(", ")
    )
}

// === the command ===

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("who").args(["user", "api_key_name", "anonymous"])))]
pub(super) struct ExplainArgs {
    /// Video uid or alias.
    #[arg(long)]
    video: String,
    /// A Basic user, or a JWT subject.
    #[arg(long)]
    user: Option<String>,
    /// An API key, by its name in `api_keys`.
    #[arg(long)]
    api_key_name: Option<String>,
    /// Groups the subject is in (comma-separated), as a JWT's groups claim would say.
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// A JWT claim, `name=value` (repeatable).
    #[arg(long, value_parser = parse_claim)]
    claim: Vec<(String, String)>,
    /// The JWT issuer (its `name` in jwt_issuers) the subject's token comes from; default:
    /// a local user of that name, else the first issuer.
    #[arg(long, conflicts_with = "api_key_name")]
    issuer: Option<String>,
    /// No credential at all (the default when no subject is given).
    #[arg(long, conflicts_with_all = ["groups", "claim", "issuer"])]
    anonymous: bool,
    /// The viewer's address (for tokens bound to it, and to judge access rules).
    #[arg(long)]
    ip: Option<std::net::IpAddr>,
    /// The viewer's country, to judge country access rules as Stream would.
    #[arg(long)]
    country: Option<String>,
    /// When to decide, RFC 3339 (default: now).
    #[arg(long, value_parser = parse_time)]
    at: Option<u64>,
}

/// Print how the policy decides for the asked subject and video.
pub(super) fn run(path: &Path, args: ExplainArgs) -> anyhow::Result<()> {
    let settings = Settings::load(path).map_err(config_failure)?;
    let (keys, _) = load_signing_keys(&settings, MissingKeys::Skip).map_err(config_failure)?;
    let question = Question {
        asker: Asker {
            user: args.user,
            api_key_name: args.api_key_name,
            groups: args.groups,
            claims: args.claim,
            issuer: args.issuer,
        },
        video: args.video,
        at: args.at.unwrap_or_else(crate::token::signer::unix_now),
        ip: args.ip,
        country: args.country,
    };
    let report = explain(
        &settings,
        &question,
        keys.first().map(|k| k.id()),
        settings.nbf_backdate,
    )?;
    print!("{report}");
    Ok(())
}
