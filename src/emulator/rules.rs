//! The `accessRules` claim: parsed once from the token, evaluated against each viewer.
//!
//! Stream's semantics: rules are tried first to last, the first one that matches applies its
//! action and stops evaluation, and a token whose rules all miss is valid.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

/// Stream accepts at most this many rules in one token.
pub const MAX_ACCESS_RULES: usize = 5;

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    Allow,
    Block,
}

/// Which viewers a rule matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleMatcher {
    /// `type: any`: every viewer.
    Any,
    /// `type: ip.src`: viewers whose address is inside one of these networks (a single address
    /// is a /32 or /128 network).
    IpSource(Vec<IpNet>),
    /// `type: ip.geoip.country`: viewers whose country is one of these ISO 3166-1 alpha-2
    /// codes, stored upper-case.
    Country(Vec<String>),
}

impl RuleMatcher {
    /// The rule's `type` as Stream spells it, used in the `blocked by rule on '…'` reason.
    pub fn type_name(&self) -> &'static str {
        match self {
            RuleMatcher::Any => "any",
            RuleMatcher::IpSource(_) => "ip.src",
            RuleMatcher::Country(_) => "ip.geoip.country",
        }
    }

    fn matches(&self, viewer: &Viewer) -> bool {
        match self {
            RuleMatcher::Any => true,
            // `IpNet::contains` is false across families, so a v4 rule never matches a v6
            // viewer (and the other way round).
            RuleMatcher::IpSource(networks) => networks
                .iter()
                .any(|network| network.contains(&viewer.address)),
            RuleMatcher::Country(codes) => viewer
                .country
                .as_deref()
                .is_some_and(|country| codes.iter().any(|code| code.eq_ignore_ascii_case(country))),
        }
    }
}

/// One validated entry of `accessRules`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRule {
    pub action: RuleAction,
    pub matcher: RuleMatcher,
}

/// What the rules know about the viewer of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Viewer {
    address: IpAddr,
    country: Option<String>,
}

impl Viewer {
    /// A viewer at `address` in `country` (`None` when no country header was sent).
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket reports for a v4
    /// client) is treated as the IPv4 address it carries.
    pub fn new(address: IpAddr, country: Option<&str>) -> Viewer {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            IpAddr::V4(_) => address,
        };
        Viewer {
            address,
            country: country.map(str::to_owned),
        }
    }

    /// The viewer's address after unmapping.
    #[cfg(test)]
    pub fn address(&self) -> IpAddr {
        self.address
    }
}

/// The result of running a token's rules for one viewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleOutcome {
    Allowed,
    /// Blocked by a rule of this type (see [`RuleMatcher::type_name`]).
    Blocked(&'static str),
}

/// Apply the first rule that matches `viewer`; no match means allowed.
pub fn evaluate(rules: &[AccessRule], viewer: &Viewer) -> RuleOutcome {
    match rules.iter().find(|rule| rule.matcher.matches(viewer)) {
        Some(AccessRule {
            action: RuleAction::Block,
            matcher,
        }) => RuleOutcome::Blocked(matcher.type_name()),
        Some(_) | None => RuleOutcome::Allowed,
    }
}

/// Parse the `accessRules` claim.
///
/// `Err` carries the names of every offending field (`accessRules` itself when it is not an
/// array or has more than [`MAX_ACCESS_RULES`] entries, else paths like `accessRules[1].ip`).
pub fn parse_access_rules(value: &Value) -> Result<Vec<AccessRule>, Vec<String>> {
    let Some(entries) = value.as_array() else {
        return Err(vec!["accessRules".to_owned()]);
    };
    if entries.len() > MAX_ACCESS_RULES {
        return Err(vec!["accessRules".to_owned()]);
    }
    let mut rules = Vec::with_capacity(entries.len());
    let mut bad_fields = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        match parse_rule(entry) {
            Ok(rule) => rules.push(rule),
            Err(fields) => bad_fields.extend(
                fields
                    .into_iter()
                    .map(|field| format!("accessRules[{index}]{field}")),
            ),
        }
    }
    if bad_fields.is_empty() {
        Ok(rules)
    } else {
        Err(bad_fields)
    }
}

/// Parse one rule; `Err` holds field suffixes (`""` for the rule itself, `.type`, `.ip`, …).
fn parse_rule(entry: &Value) -> Result<AccessRule, Vec<&'static str>> {
    let Some(rule) = entry.as_object() else {
        return Err(vec![""]);
    };
    let action = match rule.get("action").and_then(Value::as_str) {
        Some("allow") => Some(RuleAction::Allow),
        Some("block") => Some(RuleAction::Block),
        _ => None,
    };
    let matcher = match rule.get("type").and_then(Value::as_str) {
        Some("any") => Ok(RuleMatcher::Any),
        Some("ip.src") => parse_networks(rule.get("ip"))
            .map(RuleMatcher::IpSource)
            .ok_or(".ip"),
        Some("ip.geoip.country") => parse_countries(rule.get("country"))
            .map(RuleMatcher::Country)
            .ok_or(".country"),
        _ => Err(".type"),
    };
    match (action, matcher) {
        (Some(action), Ok(matcher)) => Ok(AccessRule { action, matcher }),
        (action, matcher) => {
            let mut fields = Vec::new();
            if let Err(field) = matcher {
                fields.push(field);
            }
            if action.is_none() {
                fields.push(".action");
            }
            Err(fields)
        }
    }
}

/// A non-empty list of addresses or CIDRs, v4 or v6; `None` if anything is off.
fn parse_networks(value: Option<&Value>) -> Option<Vec<IpNet>> {
    let list = value?.as_array().filter(|list| !list.is_empty())?;
    list.iter()
        .map(|item| {
            let text = item.as_str()?.trim();
            text.parse::<IpNet>()
                .ok()
                .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect()
}

/// A non-empty list of two-letter country codes; `None` if anything is off.
fn parse_countries(value: Option<&Value>) -> Option<Vec<String>> {
    let list = value?.as_array().filter(|list| !list.is_empty())?;
    list.iter()
        .map(|item| {
            let code = item.as_str()?;
            (code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()))
                .then(|| code.to_ascii_uppercase())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules(value: Value) -> Vec<AccessRule> {
        parse_access_rules(&value).expect("rules should parse")
    }

    fn viewer(address: &str, country: Option<&str>) -> Viewer {
        Viewer::new(address.parse().unwrap(), country)
    }

    #[test]
    fn no_rules_allow_everyone() {
        assert_eq!(
            evaluate(&[], &viewer("203.0.113.9", None)),
            RuleOutcome::Allowed
        );
    }

    #[test]
    fn any_rule_always_matches() {
        let rules = rules(json!([{"type": "any", "action": "block"}]));
        assert_eq!(
            evaluate(&rules, &viewer("::1", None)),
            RuleOutcome::Blocked("any")
        );
    }

    #[test]
    fn first_matching_rule_decides() {
        let rules = rules(json!([
            {"type": "ip.src", "action": "allow", "ip": ["198.51.100.0/24"]},
            {"type": "any", "action": "block"},
        ]));
        assert_eq!(
            evaluate(&rules, &viewer("198.51.100.7", None)),
            RuleOutcome::Allowed
        );
        assert_eq!(
            evaluate(&rules, &viewer("203.0.113.9", None)),
            RuleOutcome::Blocked("any")
        );
    }

    #[test]
    fn no_matching_rule_allows() {
        let rules = rules(json!([
            {"type": "ip.src", "action": "block", "ip": ["198.51.100.0/24"]},
            {"type": "ip.geoip.country", "action": "block", "country": ["US"]},
        ]));
        assert_eq!(
            evaluate(&rules, &viewer("203.0.113.9", Some("DE"))),
            RuleOutcome::Allowed
        );
    }

    #[test]
    fn ip_rule_matches_a_single_address_and_a_cidr() {
        let rules = rules(json!([
            {"type": "ip.src", "action": "block", "ip": ["192.0.2.1", "2001:db8::/32"]},
        ]));
        assert_eq!(
            evaluate(&rules, &viewer("192.0.2.1", None)),
            RuleOutcome::Blocked("ip.src")
        );
        assert_eq!(
            evaluate(&rules, &viewer("192.0.2.2", None)),
            RuleOutcome::Allowed
        );
        assert_eq!(
            evaluate(&rules, &viewer("2001:db8:1::5", None)),
            RuleOutcome::Blocked("ip.src")
        );
    }

    #[test]
    fn v4_rule_never_matches_v6_viewer() {
        let rules = rules(json!([{"type": "ip.src", "action": "block", "ip": ["0.0.0.0/0"]}]));
        assert_eq!(
            evaluate(&rules, &viewer("2001:db8::1", None)),
            RuleOutcome::Allowed
        );
        assert_eq!(evaluate(&rules, &viewer("::", None)), RuleOutcome::Allowed);
    }

    #[test]
    fn v6_rule_never_matches_v4_viewer() {
        let rules = rules(json!([{"type": "ip.src", "action": "block", "ip": ["::/0"]}]));
        assert_eq!(
            evaluate(&rules, &viewer("192.0.2.1", None)),
            RuleOutcome::Allowed
        );
    }

    #[test]
    fn ipv4_mapped_viewer_is_treated_as_v4() {
        let rules = rules(json!([{"type": "ip.src", "action": "block", "ip": ["192.0.2.0/24"]}]));
        let mapped = viewer("::ffff:192.0.2.10", None);
        assert_eq!(mapped.address(), "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!(evaluate(&rules, &mapped), RuleOutcome::Blocked("ip.src"));
    }

    #[test]
    fn country_rule_ignores_case() {
        let rules = rules(json!([
            {"type": "ip.geoip.country", "action": "block", "country": ["gb", "FR"]},
        ]));
        assert_eq!(
            evaluate(&rules, &viewer("192.0.2.1", Some("GB"))),
            RuleOutcome::Blocked("ip.geoip.country")
        );
        assert_eq!(
            evaluate(&rules, &viewer("192.0.2.1", Some("fr"))),
            RuleOutcome::Blocked("ip.geoip.country")
        );
    }

    #[test]
    fn absent_country_never_matches_country_rule() {
        let rules = rules(json!([
            {"type": "ip.geoip.country", "action": "block", "country": ["US"]},
        ]));
        assert_eq!(
            evaluate(&rules, &viewer("192.0.2.1", None)),
            RuleOutcome::Allowed
        );
    }

    #[test]
    fn more_than_five_rules_are_malformed() {
        let six = Value::Array(vec![json!({"type": "any", "action": "allow"}); 6]);
        assert_eq!(parse_access_rules(&six), Err(vec!["accessRules".into()]));
        let five = Value::Array(vec![json!({"type": "any", "action": "allow"}); 5]);
        assert_eq!(parse_access_rules(&five).map(|rules| rules.len()), Ok(5));
    }

    #[test]
    fn malformed_rules_name_each_offending_field() {
        let value = json!([
            {"type": "any", "action": "allow"},
            {"type": "ip.src", "action": "deny", "ip": ["not-an-address"]},
            {"type": "ip.geoip.country", "action": "block", "country": ["USA"]},
            {"type": "asn", "action": "block"},
            "any",
        ]);
        assert_eq!(
            parse_access_rules(&value),
            Err(vec![
                "accessRules[1].ip".into(),
                "accessRules[1].action".into(),
                "accessRules[2].country".into(),
                "accessRules[3].type".into(),
                "accessRules[4]".into(),
            ])
        );
    }

    #[test]
    fn empty_address_list_is_malformed() {
        let value = json!([{"type": "ip.src", "action": "block", "ip": []}]);
        assert_eq!(
            parse_access_rules(&value),
            Err(vec!["accessRules[0].ip".into()])
        );
    }

    #[test]
    fn access_rules_that_are_not_an_array_are_malformed() {
        assert_eq!(
            parse_access_rules(&json!({"type": "any"})),
            Err(vec!["accessRules".into()])
        );
    }
}
