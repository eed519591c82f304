//! The token API's body: any bytes are a request or a 400, and a request can only narrow
//! what the deciding rule grants (never a later `exp`, downloads it does not allow, or fewer
//! of its access rules), or be refused with a 400 or 403.

use std::time::Duration;

use arbitrary::Arbitrary;
use serde_json::{Value, json};

use super::Json;
use crate::authz::narrow::{TokenRequest, narrow};
use crate::token::TokenSettings;
use crate::token::claims::{AccessRule, MAX_ACCESS_RULES, MAX_TTL, RuleAction};

/// A request body, the grant it is checked against, and the time.
#[derive(Debug, Arbitrary)]
pub struct Input {
    body: Body,
    granted: Granted,
    /// Seconds after a fixed date.
    now: u32,
}

#[derive(Debug, Arbitrary)]
enum Body {
    Raw(Vec<u8>),
    Fields(Vec<(Field, FieldValue)>),
}

#[derive(Debug, Arbitrary)]
enum Field {
    Exp,
    Nbf,
    Downloadable,
    AccessRules,
    Id,
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum FieldValue {
    Json(Json),
    /// Seconds from now (negative: in the past).
    Relative(i32),
    /// The same, as a float.
    RelativeFloat(i32, u8),
    Bool(bool),
    Rules(Vec<Rule>),
}

#[derive(Debug, Clone, Arbitrary)]
struct Rule {
    kind: RuleKind,
    allow: bool,
    ips: Vec<String>,
    countries: Vec<String>,
}

#[derive(Debug, Clone, Arbitrary)]
enum RuleKind {
    Any,
    IpSrc,
    Country,
    Other(String),
}

impl Rule {
    fn to_json(&self) -> Value {
        let action = if self.allow { "allow" } else { "block" };
        match &self.kind {
            RuleKind::Any => json!({"type": "any", "action": action}),
            RuleKind::IpSrc => json!({"type": "ip.src", "action": action, "ip": self.ips}),
            RuleKind::Country => {
                json!({"type": "ip.geoip.country", "action": action, "country": self.countries})
            }
            RuleKind::Other(kind) => json!({"type": kind, "action": action}),
        }
    }

    /// The rule as a policy would grant it (always valid).
    fn granted(&self) -> AccessRule {
        let action = if self.allow {
            RuleAction::Allow
        } else {
            RuleAction::Block
        };
        match self.kind {
            RuleKind::IpSrc => AccessRule::IpSrc {
                action,
                ip: vec!["192.0.2.0/24".parse().expect("a literal network")],
            },
            RuleKind::Country => AccessRule::Country {
                action,
                country: vec!["KP".parse().expect("a literal code")],
            },
            _ => AccessRule::Any { action },
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Granted {
    ttl_secs: u32,
    downloadable: bool,
    rules: Vec<Rule>,
    /// The rule's `not_after`, from one second ago (the policy read the clock a moment
    /// before).
    not_after: Option<NotAfter>,
}

#[derive(Debug, Arbitrary)]
enum NotAfter {
    /// Within a few seconds of now.
    Soon(u8),
    /// Seconds after one second ago.
    Later(u32),
}

/// A date well inside the range every field can hold.
const EPOCH: u64 = 1_800_000_000;

impl Input {
    fn now(&self) -> u64 {
        EPOCH + u64::from(self.now)
    }

    fn body(&self) -> Vec<u8> {
        let now = self.now() as i64;
        match &self.body {
            Body::Raw(bytes) => bytes.clone(),
            Body::Fields(fields) => {
                let object: serde_json::Map<String, Value> = fields
                    .iter()
                    .map(|(field, value)| {
                        let name = match field {
                            Field::Exp => "exp".to_string(),
                            Field::Nbf => "nbf".to_string(),
                            Field::Downloadable => "downloadable".to_string(),
                            Field::AccessRules => "accessRules".to_string(),
                            Field::Id => "id".to_string(),
                            Field::Other(name) => name.clone(),
                        };
                        let value = match value {
                            FieldValue::Json(json) => json.to_value(&["type", "action", "ip"]),
                            FieldValue::Relative(secs) => json!(now + i64::from(*secs)),
                            FieldValue::RelativeFloat(secs, fraction) => {
                                json!(
                                    (now + i64::from(*secs)) as f64 + f64::from(*fraction) / 256.0
                                )
                            }
                            FieldValue::Bool(b) => json!(b),
                            FieldValue::Rules(rules) => {
                                Value::Array(rules.iter().map(Rule::to_json).collect())
                            }
                        };
                        (name, value)
                    })
                    .collect();
                Value::Object(object).to_string().into_bytes()
            }
        }
    }

    fn granted(&self) -> TokenSettings {
        let granted = &self.granted;
        TokenSettings {
            ttl: Duration::from_secs(u64::from(granted.ttl_secs) % MAX_TTL.as_secs() + 1),
            downloadable: granted.downloadable,
            access_rules: granted
                .rules
                .iter()
                .take(MAX_ACCESS_RULES)
                .map(Rule::granted)
                .collect::<Vec<_>>()
                .into(),
            not_after: granted.not_after.as_ref().map(|end| {
                let secs = match end {
                    NotAfter::Soon(secs) => u64::from(secs % 4),
                    NotAfter::Later(secs) => u64::from(*secs),
                };
                self.now() - 1 + secs
            }),
        }
    }
}

/// Parse the body, narrow the grant with it, and check the token's settings.
pub fn check(input: Input) {
    let body = input.body();
    let requested = match TokenRequest::parse(&body) {
        Ok(requested) => requested,
        Err(error) => {
            assert_eq!(error.status(), http::StatusCode::BAD_REQUEST, "{error:?}");
            return;
        }
    };
    let asked_exp = requested.exp;
    let asked_downloadable = requested.downloadable;
    let granted = input.granted();
    let now = input.now();
    let (settings, validity) = match narrow(&granted, "rule", requested, now) {
        Ok(narrowed) => narrowed,
        Err(error) => {
            let status = error.status().as_u16();
            assert!(status == 400 || status == 403, "{status}: {error:?}");
            return;
        }
    };
    let latest = granted
        .not_after
        .map_or(now + granted.ttl.as_secs(), |end| {
            end.min(now + granted.ttl.as_secs())
        });
    assert!(
        validity.exp >= now,
        "a token that expired before it was made"
    );
    assert!(
        validity.exp <= latest,
        "exp {} is later than the grant's {latest}",
        validity.exp
    );
    if let Some(asked) = asked_exp {
        assert_eq!(validity.exp, asked, "the requested exp was not honoured");
    }
    assert!(validity.nbf < validity.exp || validity.exp == now);
    assert_eq!(settings.ttl, Duration::from_secs(validity.exp - now));
    assert!(
        !settings.downloadable || granted.downloadable,
        "downloads widened"
    );
    assert_eq!(settings.downloadable, asked_downloadable.unwrap_or(false));
    assert!(settings.access_rules.len() <= MAX_ACCESS_RULES);
    if !granted.access_rules.is_empty() {
        assert!(
            settings.access_rules.ends_with(&granted.access_rules),
            "the policy's access rules were dropped or reordered"
        );
        let added = settings.access_rules.len() - granted.access_rules.len();
        assert!(
            settings.access_rules[..added].iter().all(|rule| matches!(
                rule,
                AccessRule::Any {
                    action: RuleAction::Block
                } | AccessRule::IpSrc {
                    action: RuleAction::Block,
                    ..
                } | AccessRule::Country {
                    action: RuleAction::Block,
                    ..
                }
            )),
            "an allow rule was put ahead of the policy's"
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_token_request_only_narrows_the_grant() {
        super::super::property(super::check);
    }
}
