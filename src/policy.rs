//! Who may watch what: ordered rules, first match wins, no match denies.
//!
//! Pure: `(policy, identity, video) → Permit | Denied`. A [`Permit`] is the only way to get
//! the token settings a handler needs to mint a token.

use std::sync::Arc;

use crate::FastSet;
use crate::catalogue::Video;
use crate::identity::Identity;
use crate::token::{TokenSettings, VideoUid};

/// Which videos a rule covers.
#[derive(Debug, Clone)]
pub enum VideoSelector {
    /// `*`: every video in the catalogue.
    All,
    /// Listed uids (aliases are resolved at load) and tags.
    Some {
        uids: FastSet<VideoUid>,
        tags: FastSet<Arc<str>>,
    },
}

impl VideoSelector {
    fn matches(&self, video: &Video) -> bool {
        match self {
            VideoSelector::All => true,
            VideoSelector::Some { uids, tags } => {
                uids.contains(&video.uid) || video.tags.iter().any(|tag| tags.contains(tag))
            }
        }
    }
}

/// Who a rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// Everyone, with or without a credential.
    Anyone,
    /// Any valid credential.
    Authenticated,
    /// The API key with this name.
    ApiKey(Arc<str>),
}

impl Subject {
    fn matches(&self, identity: &Identity) -> bool {
        match (self, identity) {
            (Subject::Anyone, _) => true,
            (Subject::Authenticated, identity) => identity.is_authenticated(),
            (Subject::ApiKey(wanted), Identity::ApiKey { name }) => wanted == name,
            (Subject::ApiKey(_), Identity::Anonymous) => false,
        }
    }
}

/// What a matching rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

/// One policy rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: Arc<str>,
    pub videos: VideoSelector,
    pub subjects: Vec<Subject>,
    pub action: Action,
    /// The settings tokens minted under this rule carry.
    pub token: Arc<TokenSettings>,
}

/// Permission to mint a token with these settings; only [`Policy::decide`] makes one.
///
/// It borrows the deciding rule: the hit path clones no reference counts that every request
/// for the same rule would contend on.
#[derive(Debug, Clone, Copy)]
pub struct Permit<'a> {
    rule: &'a Rule,
}

impl<'a> Permit<'a> {
    /// The name of the rule that allowed the request.
    pub fn rule(&self) -> &'a str {
        &self.rule.name
    }

    /// The token settings the rule grants.
    pub fn token_settings(&self) -> &'a Arc<TokenSettings> {
        &self.rule.token
    }
}

/// Why a request was not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// A rule matched and said deny.
    ByRule(Arc<str>),
    /// No rule matched: denied by default.
    NoRule,
}

/// The ordered rule list.
#[derive(Debug, Default, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self { rules }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The first rule covering both `video` and `identity` decides; none means deny.
    pub fn decide(&self, identity: &Identity, video: &Video) -> Result<Permit<'_>, Denied> {
        let rule = self
            .rules
            .iter()
            .find(|rule| {
                rule.videos.matches(video) && rule.subjects.iter().any(|s| s.matches(identity))
            })
            .ok_or(Denied::NoRule)?;
        match rule.action {
            Action::Allow => Ok(Permit { rule }),
            Action::Deny => Err(Denied::ByRule(Arc::clone(&rule.name))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn video(tag: &str) -> Video {
        Video {
            uid: "0123456789abcdef0123456789abcdef".parse().unwrap(),
            alias: "intro".into(),
            tags: vec![tag.into()],
            title: None,
        }
    }

    fn settings(downloadable: bool) -> Arc<TokenSettings> {
        Arc::new(TokenSettings {
            ttl: Duration::from_secs(60),
            downloadable,
            access_rules: Arc::from(vec![]),
        })
    }

    fn rule(name: &str, tag: &str, subject: Subject, action: Action, downloadable: bool) -> Rule {
        Rule {
            name: name.into(),
            videos: VideoSelector::Some {
                uids: FastSet::default(),
                tags: [Arc::from(tag)].into_iter().collect(),
            },
            subjects: vec![subject],
            action,
            token: settings(downloadable),
        }
    }

    fn ci() -> Identity {
        Identity::ApiKey { name: "ci".into() }
    }

    #[test]
    fn no_rules_deny_by_default() {
        assert_eq!(
            Policy::default()
                .decide(&Identity::Anonymous, &video("public"))
                .unwrap_err(),
            Denied::NoRule
        );
    }

    #[test]
    fn first_matching_rule_wins_and_carries_its_settings() {
        let policy = Policy::new(vec![
            rule(
                "members",
                "members",
                Subject::Authenticated,
                Action::Allow,
                true,
            ),
            rule("public", "public", Subject::Anyone, Action::Allow, false),
            rule(
                "all-public-for-ci",
                "public",
                Subject::ApiKey("ci".into()),
                Action::Allow,
                true,
            ),
        ]);
        let permit = policy.decide(&ci(), &video("public")).unwrap();
        assert_eq!(permit.rule(), "public");
        assert!(!permit.token_settings().downloadable);
        let permit = policy.decide(&ci(), &video("members")).unwrap();
        assert_eq!(permit.rule(), "members");
        assert!(permit.token_settings().downloadable);
        assert_eq!(
            policy
                .decide(&Identity::Anonymous, &video("members"))
                .unwrap_err(),
            Denied::NoRule
        );
    }

    #[test]
    fn deny_rule_stops_evaluation() {
        let policy = Policy::new(vec![
            rule(
                "block-ci",
                "public",
                Subject::ApiKey("ci".into()),
                Action::Deny,
                false,
            ),
            rule("public", "public", Subject::Anyone, Action::Allow, false),
        ]);
        assert_eq!(
            policy.decide(&ci(), &video("public")).unwrap_err(),
            Denied::ByRule("block-ci".into())
        );
        assert!(
            policy
                .decide(&Identity::Anonymous, &video("public"))
                .is_ok()
        );
    }
}
