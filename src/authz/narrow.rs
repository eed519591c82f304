//! What a caller of the token API may ask for: a token narrower than the permit grants (an
//! earlier `exp`, extra `block` rules, no downloads), never a wider one.

use std::sync::Arc;
use std::time::Duration;

use crate::authz::policy::rfc3339;
use crate::error::RequestError;
use crate::token::TokenSettings;
use crate::token::claims::{AccessRule, MAX_ACCESS_RULES, MAX_TTL, RuleAction, Validity};

/// Stream's defaults: a token lives one hour, and is valid from one hour before it is made.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(60 * 60);
pub const DEFAULT_NBF_BACKDATE: Duration = Duration::from_secs(60 * 60);

/// Stream's request body, checked field by field.
#[derive(Debug, Default, PartialEq)]
pub struct TokenRequest {
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub downloadable: Option<bool>,
    pub access_rules: Option<Vec<AccessRule>>,
}

/// The token a request gets: what it asked for, checked against what rule `rule` grants
/// (`granted`, at `now`). Asking for more than the grant is a 403 naming the field; asking
/// for what Stream would refuse is a 400.
pub fn narrow(
    granted: &TokenSettings,
    rule: &str,
    requested: TokenRequest,
    now: u64,
) -> Result<(TokenSettings, Validity), RequestError> {
    let latest = granted
        .not_after
        .map_or(now + granted.ttl.as_secs(), |end| {
            end.min(now + granted.ttl.as_secs())
        });
    if latest < now {
        // The policy allowed the request in the last second of the rule's window, and that
        // second has passed since: there is no lifetime left to grant.
        return Err(RequestError::Forbidden(format!(
            "rule `{rule}` stopped granting tokens at {}",
            rfc3339(latest)
        )));
    }
    let exp = match requested.exp {
        None => latest.min(now + DEFAULT_LIFETIME.as_secs()),
        Some(exp) if exp > now + MAX_TTL.as_secs() => {
            return Err(RequestError::BadRequest(
                "`exp` is more than 24 hours away; Stream accepts tokens for at most 24 hours"
                    .into(),
            ));
        }
        Some(exp) if exp <= now => {
            return Err(RequestError::BadRequest(format!(
                "`exp` ({}) is not in the future",
                rfc3339(exp)
            )));
        }
        Some(exp) if exp > latest => {
            return Err(RequestError::Forbidden(format!(
                "`exp` asks for more than the policy grants: rule `{rule}` allows tokens until {} at the latest",
                rfc3339(latest)
            )));
        }
        Some(exp) => exp,
    };
    let nbf = match requested.nbf {
        None => now.saturating_sub(DEFAULT_NBF_BACKDATE.as_secs()),
        Some(nbf) if nbf >= exp => {
            return Err(RequestError::BadRequest(
                "`nbf` must be before `exp`".into(),
            ));
        }
        Some(nbf) => nbf,
    };
    let downloadable = requested.downloadable.unwrap_or(false);
    if downloadable && !granted.downloadable {
        return Err(RequestError::Forbidden(format!(
            "`downloadable`: rule `{rule}` does not allow downloads of this video"
        )));
    }
    let access_rules = combine_rules(&granted.access_rules, requested.access_rules, rule)?;
    let settings = TokenSettings {
        ttl: Duration::from_secs(exp - now),
        downloadable,
        access_rules: Arc::from(access_rules),
        not_after: None,
    };
    Ok((settings, Validity { nbf, exp }))
}

/// The access rules of the token: a viewer may play only when both the policy's rules and
/// the request's accept them. With no rules from the policy the request's are used as they
/// are; otherwise only `block` rules can be added, ahead of the policy's (an `allow` rule
/// cannot be placed anywhere without either letting in viewers the policy blocks or being
/// skipped).
fn combine_rules(
    granted: &[AccessRule],
    requested: Option<Vec<AccessRule>>,
    rule: &str,
) -> Result<Vec<AccessRule>, RequestError> {
    let requested = requested.unwrap_or_default();
    if granted.is_empty() {
        return Ok(requested);
    }
    if requested.iter().any(|r| action_of(r) == RuleAction::Allow) {
        return Err(RequestError::Forbidden(format!(
            "`accessRules`: rule `{rule}` already limits who may play this video, so a request may add `block` rules only"
        )));
    }
    let total = requested.len() + granted.len();
    if total > MAX_ACCESS_RULES {
        return Err(RequestError::BadRequest(format!(
            "`accessRules`: with the {} rules the policy adds, the token would carry {total}; Stream accepts at most {MAX_ACCESS_RULES}",
            granted.len()
        )));
    }
    let mut rules = requested;
    rules.extend(granted.iter().cloned());
    Ok(rules)
}

fn action_of(rule: &AccessRule) -> RuleAction {
    match rule {
        AccessRule::Any { action }
        | AccessRule::IpSrc { action, .. }
        | AccessRule::Country { action, .. } => *action,
    }
}
