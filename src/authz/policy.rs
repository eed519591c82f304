//! Who may watch what: ordered rules, first match wins, no match denies.
//!
//! Pure: `(policy, identity, video, time) → RuleMatch | Denied`. A [`RuleMatch`] is the only way to
//! get the token settings a handler needs to mint a token.
//!
//! Rules are indexed by video when the policy is built, so a decision looks only at the rules
//! that can cover the requested video (in rule order), however large the policy is.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use crate::authz::catalogue::{Catalogue, Video};
use crate::identity::{Identity, Principal, PrincipalKind};
use crate::token::claims::{AccessRule, RuleAction};
use crate::token::{TokenSettings, VideoUid};
use crate::{FastMap, FastSet};

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
    pub fn matches(&self, video: &Video) -> bool {
        match self {
            VideoSelector::All => true,
            VideoSelector::Some { uids, tags } => {
                uids.contains(&video.uid) || video.tags.iter().any(|tag| tags.contains(tag))
            }
        }
    }
}

/// Who a rule covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// Everyone, with or without a credential.
    Anyone,
    /// Any valid credential.
    Authenticated,
    /// A user of `source` with this name: a Basic user, or a JWT whose subject claim is it.
    User { source: Source, name: Arc<str> },
    /// Members of a group of `source` (from `users` and `api_keys`, or a JWT's groups claim).
    Group { source: Source, name: Arc<str> },
    /// The API key with this name.
    ApiKey(Arc<str>),
    /// A JWT (from any issuer) whose claim at `name` (a dotted path) equals `value`.
    Claim { name: Arc<str>, value: Arc<str> },
}

/// Whose names a `user:` or `group:` subject means: a name from one source is never taken for
/// the same name from another unless the operator said so (`shares_local_names`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// `user:alice`: the local users and API keys, and the JWT issuers that share local
    /// names.
    Unqualified,
    /// `user:local:alice`: the local users and API keys only.
    Local,
    /// `user:<issuer name>:alice`: tokens of the issuer with that `name` only.
    Issuer(Arc<str>),
}

impl Source {
    /// Whether identities of `kind` are in this source.
    fn covers(&self, kind: &PrincipalKind) -> bool {
        match (self, kind) {
            (Source::Issuer(_), PrincipalKind::ApiKey | PrincipalKind::User) => false,
            (_, PrincipalKind::ApiKey | PrincipalKind::User) => true,
            (Source::Unqualified, PrincipalKind::Jwt { issuer }) => issuer.shares_local_names,
            (Source::Local, PrincipalKind::Jwt { .. }) => false,
            (Source::Issuer(name), PrincipalKind::Jwt { issuer }) => {
                issuer.name.as_deref() == Some(&**name)
            }
        }
    }

    /// Whether every identity of this source is also of `other`.
    fn is_within(&self, other: &Source) -> bool {
        self == other || (*self == Source::Local && *other == Source::Unqualified)
    }
}

impl std::fmt::Display for Source {
    /// The qualifier as written in a subject, with its `:`; nothing when unqualified.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Unqualified => Ok(()),
            Source::Local => f.write_str("local:"),
            Source::Issuer(name) => write!(f, "{name}:"),
        }
    }
}

impl Subject {
    pub fn matches(&self, identity: &Identity) -> bool {
        let principal = match (self, identity) {
            (Subject::Anyone, _) => return true,
            (_, Identity::Anonymous) => return false,
            (_, Identity::Authenticated(principal)) => principal,
        };
        self.matches_principal(principal)
    }

    fn matches_principal(&self, principal: &Principal) -> bool {
        match self {
            Subject::Anyone | Subject::Authenticated => true,
            // API keys are never users, whatever their name.
            Subject::User { source, name } => {
                !matches!(principal.kind, PrincipalKind::ApiKey)
                    && source.covers(&principal.kind)
                    && principal.name == *name
            }
            Subject::Group { source, name } => {
                source.covers(&principal.kind) && principal.in_group(name)
            }
            Subject::ApiKey(name) => {
                principal.kind == PrincipalKind::ApiKey && principal.name == *name
            }
            Subject::Claim { name, value } => {
                matches!(principal.kind, PrincipalKind::Jwt { .. })
                    && principal.claim_equals(name, value)
            }
        }
    }

    /// Whether every identity this subject matches is also matched by `other`.
    fn is_within(&self, other: &Subject) -> bool {
        match (self, other) {
            (_, Subject::Anyone) => true,
            (Subject::Anyone, _) => false,
            (_, Subject::Authenticated) => true,
            (
                Subject::User { source, name },
                Subject::User {
                    source: wider,
                    name: same,
                },
            )
            | (
                Subject::Group { source, name },
                Subject::Group {
                    source: wider,
                    name: same,
                },
            ) => name == same && source.is_within(wider),
            (a, b) => a == b,
        }
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Anyone => f.write_str("anyone"),
            Subject::Authenticated => f.write_str("authenticated"),
            Subject::User { source, name } => write!(f, "user:{source}{name}"),
            Subject::Group { source, name } => write!(f, "group:{source}{name}"),
            Subject::ApiKey(name) => write!(f, "api_key:{name}"),
            Subject::Claim { name, value } => write!(f, "claim:{name}={value}"),
        }
    }
}

/// What a matching rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

/// When a rule applies, in unix seconds (inclusive bounds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub not_before: Option<u64>,
    pub not_after: Option<u64>,
}

impl Window {
    /// `Ok` inside the window, else which bound was missed.
    pub fn check(&self, now: u64) -> Result<(), OutsideWindow> {
        match (self.not_before, self.not_after) {
            (Some(start), _) if now < start => Err(OutsideWindow::NotYet { from: start }),
            (_, Some(end)) if now > end => Err(OutsideWindow::Ended { at: end }),
            _ => Ok(()),
        }
    }

    pub fn is_always(&self) -> bool {
        self.not_before.is_none() && self.not_after.is_none()
    }

    /// Whether every instant of `other` is inside `self`.
    fn contains(&self, other: &Window) -> bool {
        let start_ok = match (self.not_before, other.not_before) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a <= b,
        };
        let end_ok = match (self.not_after, other.not_after) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a >= b,
        };
        start_ok && end_ok
    }
}

/// Why a rule's time window excluded a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutsideWindow {
    NotYet { from: u64 },
    Ended { at: u64 },
}

impl std::fmt::Display for OutsideWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutsideWindow::NotYet { from } => write!(f, "available from {}", rfc3339(*from)),
            OutsideWindow::Ended { at } => write!(f, "no longer available since {}", rfc3339(*at)),
        }
    }
}

/// A unix second as RFC 3339 UTC.
pub fn rfc3339(unix: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The token a rule grants, before the request's own details are known.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    /// The settings for every viewer (already including country rules and the rule's end).
    pub settings: Arc<TokenSettings>,
    /// Bind each token to the viewer's address: `ip.src allow <addr>` then `any block`,
    /// after the rule's other access rules.
    pub bind_client_ip: bool,
}

impl TokenGrant {
    /// How many access rules a token minted under this grant carries.
    pub fn access_rule_count(&self) -> usize {
        self.settings.access_rules.len() + if self.bind_client_ip { 2 } else { 0 }
    }

    /// The settings for a viewer at `client_ip`: shared unless the token is bound to it.
    pub fn for_client(&self, client_ip: IpAddr) -> Cow<'_, Arc<TokenSettings>> {
        if !self.bind_client_ip {
            return Cow::Borrowed(&self.settings);
        }
        let mut rules = Vec::with_capacity(self.settings.access_rules.len() + 2);
        rules.extend(self.settings.access_rules.iter().cloned());
        rules.push(AccessRule::IpSrc {
            action: RuleAction::Allow,
            ip: vec![client_ip.into()],
        });
        rules.push(AccessRule::Any {
            action: RuleAction::Block,
        });
        Cow::Owned(Arc::new(TokenSettings {
            access_rules: Arc::from(rules),
            ..(*self.settings).clone()
        }))
    }
}

/// How a permitted request is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// 302 to the signed Stream URL.
    #[default]
    Redirect,
    /// Fetch the signed URL and stream the answer back; the viewer never sees the token.
    Proxy,
}

/// One policy rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: Arc<str>,
    pub videos: VideoSelector,
    pub subjects: Vec<Subject>,
    pub action: Action,
    pub window: Window,
    pub token: TokenGrant,
    pub mode: Mode,
}

impl Rule {
    fn covers_identity(&self, identity: &Identity) -> bool {
        self.subjects.iter().any(|s| s.matches(identity))
    }
}

/// The rule that allows a request; only [`Policy::decide`] makes one, and only
/// [`crate::authz`] turns it into a [`crate::authz::Permit`].
///
/// It borrows the deciding rule: the hit path clones no reference counts that every request
/// for the same rule would contend on.
#[derive(Debug, Clone, Copy)]
pub struct RuleMatch<'a> {
    rule: &'a Rule,
    /// The rule's position in the policy (for the decision metrics).
    index: usize,
}

impl<'a> RuleMatch<'a> {
    /// The position of the rule that allowed the request.
    pub fn rule_index(&self) -> usize {
        self.index
    }

    /// The name of the rule that allowed the request.
    pub fn rule(&self) -> &'a str {
        &self.rule.name
    }

    /// The token the rule grants.
    pub fn grant(&self) -> &'a TokenGrant {
        &self.rule.token
    }

    pub fn downloadable(&self) -> bool {
        self.rule.token.settings.downloadable
    }

    pub fn mode(&self) -> Mode {
        self.rule.mode
    }
}

/// Why a request was not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// A rule matched and said deny.
    ByRule(Arc<str>),
    /// A rule would have allowed it, but not at this time; no later rule did.
    OutsideWindow {
        rule: Arc<str>,
        reason: OutsideWindow,
    },
    /// No rule matched: denied by default.
    NoRule,
}

/// What one rule made of a request, for `streamgate explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    VideoNotCovered,
    SubjectNotCovered,
    OutsideWindow(OutsideWindow),
    /// This rule decided.
    Decides(Action),
}

/// The ordered rule list, indexed by video.
#[derive(Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    /// For each catalogue video, the rules naming it by uid, alias or tag, ascending.
    by_video: FastMap<VideoUid, Box<[u32]>>,
    /// Rules covering every video (`*`), ascending.
    every_video: Box<[u32]>,
    /// Rule positions by name, for metrics.
    index_by_name: FastMap<Arc<str>, usize>,
}

impl Policy {
    /// Index `rules` over the videos of `catalogue`.
    pub fn new(rules: Vec<Rule>, catalogue: &Catalogue) -> Self {
        let mut every_video = Vec::new();
        let mut by_uid: FastMap<VideoUid, Vec<u32>> = FastMap::default();
        let mut by_tag: FastMap<&str, Vec<u32>> = FastMap::default();
        for (index, rule) in rules.iter().enumerate() {
            let index = index as u32;
            match &rule.videos {
                VideoSelector::All => every_video.push(index),
                VideoSelector::Some { uids, tags } => {
                    for uid in uids {
                        by_uid.entry(*uid).or_default().push(index);
                    }
                    for tag in tags {
                        by_tag.entry(tag).or_default().push(index);
                    }
                }
            }
        }
        let mut by_video = FastMap::default();
        for video in catalogue.videos() {
            let mut candidates: Vec<u32> = by_uid.get(&video.uid).cloned().unwrap_or_default();
            for tag in &video.tags {
                if let Some(indices) = by_tag.get(&**tag) {
                    candidates.extend_from_slice(indices);
                }
            }
            candidates.sort_unstable();
            candidates.dedup();
            if !candidates.is_empty() {
                by_video.insert(video.uid, candidates.into_boxed_slice());
            }
        }
        let index_by_name = rules
            .iter()
            .enumerate()
            .map(|(i, rule)| (Arc::clone(&rule.name), i))
            .collect();
        Self {
            rules,
            by_video,
            every_video: every_video.into_boxed_slice(),
            index_by_name,
        }
    }

    /// The position of the rule named `name`.
    pub fn rule_index(&self, name: &str) -> Option<usize> {
        self.index_by_name.get(name).copied()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The first rule covering `video`, `identity` and `now` (unix seconds) decides; none
    /// means deny. A rule outside its time window is skipped, and named in the refusal when
    /// no later rule allows.
    pub fn decide(
        &self,
        identity: &Identity,
        video: &Video,
        now: u64,
    ) -> Result<RuleMatch<'_>, Denied> {
        let specific = self.by_video.get(&video.uid).map_or(&[][..], |v| &v[..]);
        let mut outside: Option<(&Rule, OutsideWindow)> = None;
        for index in merged(specific, &self.every_video) {
            let rule = &self.rules[index as usize];
            if !rule.covers_identity(identity) {
                continue;
            }
            if let Err(reason) = rule.window.check(now) {
                if rule.action == Action::Allow && outside.is_none() {
                    outside = Some((rule, reason));
                }
                continue;
            }
            return match rule.action {
                Action::Allow => Ok(RuleMatch {
                    rule,
                    index: index as usize,
                }),
                Action::Deny => Err(Denied::ByRule(Arc::clone(&rule.name))),
            };
        }
        match outside {
            Some((rule, reason)) => Err(Denied::OutsideWindow {
                rule: Arc::clone(&rule.name),
                reason,
            }),
            None => Err(Denied::NoRule),
        }
    }

    /// Every rule up to the deciding one, with what it made of the request. Scans the whole
    /// list (it is for operators, not the request path).
    pub fn explain(&self, identity: &Identity, video: &Video, now: u64) -> Vec<(&Rule, Verdict)> {
        let mut verdicts = Vec::new();
        for rule in &self.rules {
            let verdict = if !rule.videos.matches(video) {
                Verdict::VideoNotCovered
            } else if !rule.covers_identity(identity) {
                Verdict::SubjectNotCovered
            } else if let Err(reason) = rule.window.check(now) {
                Verdict::OutsideWindow(reason)
            } else {
                Verdict::Decides(rule.action)
            };
            let decided = matches!(verdict, Verdict::Decides(_));
            verdicts.push((rule, verdict));
            if decided {
                break;
            }
        }
        verdicts
    }

    /// Rules that can never decide anything because an earlier rule always decides first:
    /// `(shadowed rule, earlier rule)`. Cheap checks (subjects, windows) run before the
    /// videos a rule covers are worked out, so a large policy lints quickly.
    pub fn shadowed(&self, catalogue: &Catalogue) -> Vec<(&Rule, &Rule)> {
        let mut by_tag: FastMap<&str, Vec<&Video>> = FastMap::default();
        for video in catalogue.videos() {
            for tag in &video.tags {
                by_tag.entry(tag).or_default().push(video);
            }
        }
        let covered_by = |selector: &VideoSelector| -> Vec<&Video> {
            match selector {
                VideoSelector::All => catalogue.videos().map(|v| &**v).collect(),
                VideoSelector::Some { uids, tags } => uids
                    .iter()
                    .filter_map(|uid| catalogue.by_uid(uid).map(|v| &**v))
                    .chain(
                        tags.iter()
                            .flat_map(|t| by_tag.get(&**t).into_iter().flatten().copied()),
                    )
                    .collect(),
            }
        };
        let mut found = Vec::new();
        for (j, later) in self.rules.iter().enumerate() {
            let mut covered: Option<Vec<&Video>> = None;
            let shadow = self.rules[..j].iter().find(|earlier| {
                let cheap = earlier.window.contains(&later.window)
                    && later
                        .subjects
                        .iter()
                        .all(|s| earlier.subjects.iter().any(|e| s.is_within(e)));
                if !cheap {
                    return false;
                }
                match (&earlier.videos, &later.videos) {
                    (VideoSelector::All, _) => true,
                    (_, VideoSelector::All) => false,
                    (videos, selector) => {
                        let covered = covered.get_or_insert_with(|| covered_by(selector));
                        !covered.is_empty() && covered.iter().all(|v| videos.matches(v))
                    }
                }
            });
            if let Some(earlier) = shadow {
                found.push((later, earlier));
            }
        }
        found
    }

    /// Whether any rule could allow `video` to someone.
    pub fn could_allow(&self, video: &Video) -> bool {
        let specific = self.by_video.get(&video.uid).map_or(&[][..], |v| &v[..]);
        merged(specific, &self.every_video)
            .any(|index| self.rules[index as usize].action == Action::Allow)
    }
}

/// Two ascending index lists merged into one ascending sequence.
fn merged<'a>(a: &'a [u32], b: &'a [u32]) -> impl Iterator<Item = u32> + 'a {
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || match (a.get(i), b.get(j)) {
        (Some(&x), Some(&y)) if x <= y => {
            i += 1;
            Some(x)
        }
        (_, Some(&y)) => {
            j += 1;
            Some(y)
        }
        (Some(&x), None) => {
            i += 1;
            Some(x)
        }
        (None, None) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IssuerSource;
    use std::time::Duration;

    const NOW: u64 = 1_800_000_000;

    fn uid(n: u8) -> VideoUid {
        format!("{n:032x}").parse().unwrap()
    }

    fn catalogue() -> Catalogue {
        let mut catalogue = Catalogue::default();
        for (n, alias, tag) in [(1, "intro", "public"), (2, "keynote", "members")] {
            catalogue.insert(Video {
                uid: uid(n),
                alias: alias.into(),
                tags: vec![tag.into()],
                title: None,
            });
        }
        catalogue
    }

    fn video<'a>(catalogue: &'a Catalogue, alias: &str) -> &'a Video {
        catalogue.resolve(alias).unwrap()
    }

    fn grant(downloadable: bool) -> TokenGrant {
        TokenGrant {
            settings: Arc::new(TokenSettings {
                downloadable,
                ..TokenSettings::with_ttl(Duration::from_secs(60))
            }),
            bind_client_ip: false,
        }
    }

    fn tagged(tag: &str) -> VideoSelector {
        VideoSelector::Some {
            uids: FastSet::default(),
            tags: [Arc::from(tag)].into_iter().collect(),
        }
    }

    fn rule(name: &str, videos: VideoSelector, subject: Subject, action: Action) -> Rule {
        Rule {
            name: name.into(),
            videos,
            subjects: vec![subject],
            action,
            window: Window::default(),
            token: grant(false),
            mode: Mode::Redirect,
        }
    }

    fn principal(kind: PrincipalKind, name: &str, groups: &[&str]) -> Identity {
        Identity::Authenticated(Arc::new(Principal::new(
            kind,
            name.into(),
            groups.iter().map(|g| Arc::from(*g)),
            Default::default(),
        )))
    }

    fn ci() -> Identity {
        principal(PrincipalKind::ApiKey, "ci", &[])
    }

    #[test]
    fn no_rules_deny_by_default() {
        let catalogue = catalogue();
        let policy = Policy::new(vec![], &catalogue);
        assert_eq!(
            policy
                .decide(&Identity::Anonymous, video(&catalogue, "intro"), NOW)
                .unwrap_err(),
            Denied::NoRule
        );
    }

    #[test]
    fn first_matching_rule_wins_and_carries_its_settings() {
        let catalogue = catalogue();
        let mut members = rule(
            "members",
            tagged("members"),
            Subject::Authenticated,
            Action::Allow,
        );
        members.token = grant(true);
        let policy = Policy::new(
            vec![
                members,
                rule("public", tagged("public"), Subject::Anyone, Action::Allow),
                rule(
                    "all",
                    VideoSelector::All,
                    Subject::ApiKey("ci".into()),
                    Action::Allow,
                ),
            ],
            &catalogue,
        );
        let permit = policy
            .decide(&ci(), video(&catalogue, "intro"), NOW)
            .unwrap();
        assert_eq!(permit.rule(), "public");
        assert!(!permit.downloadable());
        let permit = policy
            .decide(&ci(), video(&catalogue, "keynote"), NOW)
            .unwrap();
        assert_eq!(permit.rule(), "members");
        assert_eq!(
            Some(permit.rule_index()),
            policy.rule_index("members"),
            "the permit knows its rule's position"
        );
        assert!(permit.downloadable());
        assert_eq!(
            policy
                .decide(&Identity::Anonymous, video(&catalogue, "keynote"), NOW)
                .unwrap_err(),
            Denied::NoRule
        );
    }

    #[test]
    fn wildcard_and_specific_rules_keep_their_order() {
        let catalogue = catalogue();
        let policy = Policy::new(
            vec![
                rule(
                    "block-all",
                    VideoSelector::All,
                    Subject::ApiKey("ci".into()),
                    Action::Deny,
                ),
                rule("public", tagged("public"), Subject::Anyone, Action::Allow),
                rule(
                    "late-all",
                    VideoSelector::All,
                    Subject::Anyone,
                    Action::Allow,
                ),
            ],
            &catalogue,
        );
        assert_eq!(
            policy
                .decide(&ci(), video(&catalogue, "intro"), NOW)
                .unwrap_err(),
            Denied::ByRule("block-all".into())
        );
        let anonymous = &Identity::Anonymous;
        assert_eq!(
            policy
                .decide(anonymous, video(&catalogue, "intro"), NOW)
                .unwrap()
                .rule(),
            "public"
        );
        assert_eq!(
            policy
                .decide(anonymous, video(&catalogue, "keynote"), NOW)
                .unwrap()
                .rule(),
            "late-all"
        );
    }

    fn jwt(issuer: IssuerSource, name: &str, groups: &[&str]) -> Identity {
        let mut claims = serde_json::Map::new();
        claims.insert("plan".into(), "pro".into());
        Identity::Authenticated(Arc::new(Principal::new(
            PrincipalKind::Jwt {
                issuer: Arc::new(issuer),
            },
            name.into(),
            groups.iter().map(|g| Arc::from(*g)),
            claims,
        )))
    }

    fn issuer(name: &str, shares_local_names: bool) -> IssuerSource {
        IssuerSource {
            iss: format!("https://{name}.test").into(),
            name: Some(name.into()),
            shares_local_names,
        }
    }

    fn user(source: Source, name: &str) -> Subject {
        Subject::User {
            source,
            name: name.into(),
        }
    }

    fn group(source: Source, name: &str) -> Subject {
        Subject::Group {
            source,
            name: name.into(),
        }
    }

    #[test]
    fn subjects_match_users_groups_keys_and_claims() {
        let sharing = jwt(issuer("corp", true), "alice", &["staff"]);
        let basic_alice = principal(PrincipalKind::User, "alice", &["editors"]);
        let key_alice = principal(PrincipalKind::ApiKey, "alice", &["staff"]);

        let alice = user(Source::Unqualified, "alice");
        assert!(alice.matches(&sharing) && alice.matches(&basic_alice));
        assert!(!alice.matches(&key_alice), "an API key is not a user");
        let staff = group(Source::Unqualified, "staff");
        assert!(staff.matches(&key_alice) && staff.matches(&sharing));
        assert!(!staff.matches(&basic_alice));
        assert!(Subject::ApiKey("alice".into()).matches(&key_alice));
        assert!(!Subject::ApiKey("alice".into()).matches(&basic_alice));
        let pro = Subject::Claim {
            name: "plan".into(),
            value: "pro".into(),
        };
        assert!(pro.matches(&sharing) && !pro.matches(&basic_alice));
        for subject in [alice, pro, Subject::Authenticated] {
            assert!(!subject.matches(&Identity::Anonymous));
        }
        assert!(Subject::Anyone.matches(&Identity::Anonymous));
    }

    #[test]
    fn names_from_an_issuer_match_only_its_qualified_subjects_unless_it_shares_local_names() {
        let other = jwt(issuer("partner", false), "alice", &["staff"]);
        let unnamed = jwt(IssuerSource::unnamed("https://x.test"), "alice", &["staff"]);
        let sharing = jwt(issuer("corp", true), "alice", &["staff"]);
        let basic_alice = principal(PrincipalKind::User, "alice", &["staff"]);
        let key = principal(PrincipalKind::ApiKey, "ci", &["staff"]);

        for subject in [
            user(Source::Unqualified, "alice"),
            group(Source::Unqualified, "staff"),
        ] {
            assert!(!subject.matches(&other), "{subject}");
            assert!(!subject.matches(&unnamed), "{subject}");
            assert!(subject.matches(&sharing), "{subject}");
            assert!(subject.matches(&basic_alice), "{subject}");
        }
        for subject in [
            user(Source::Issuer("partner".into()), "alice"),
            group(Source::Issuer("partner".into()), "staff"),
        ] {
            assert!(subject.matches(&other), "{subject}");
            assert!(!subject.matches(&sharing), "{subject}");
            assert!(!subject.matches(&basic_alice), "{subject}");
            assert!(!subject.matches(&key), "{subject}");
        }
        for subject in [user(Source::Local, "alice"), group(Source::Local, "staff")] {
            assert!(subject.matches(&basic_alice), "{subject}");
            assert!(!subject.matches(&sharing), "{subject}");
        }
        assert!(group(Source::Local, "staff").matches(&key));
        assert_eq!(
            user(Source::Issuer("partner".into()), "alice").to_string(),
            "user:partner:alice"
        );
        assert_eq!(
            group(Source::Local, "staff").to_string(),
            "group:local:staff"
        );
        assert_eq!(user(Source::Unqualified, "alice").to_string(), "user:alice");
    }

    #[test]
    fn a_rule_outside_its_window_is_skipped_and_named_when_nothing_else_allows() {
        let catalogue = catalogue();
        let mut premiere = rule("premiere", tagged("public"), Subject::Anyone, Action::Allow);
        premiere.window = Window {
            not_before: Some(NOW + 100),
            not_after: Some(NOW + 200),
        };
        let policy = Policy::new(vec![premiere.clone()], &catalogue);
        let intro = video(&catalogue, "intro");
        assert_eq!(
            policy.decide(&ci(), intro, NOW).unwrap_err(),
            Denied::OutsideWindow {
                rule: "premiere".into(),
                reason: OutsideWindow::NotYet { from: NOW + 100 }
            }
        );
        assert!(policy.decide(&ci(), intro, NOW + 100).is_ok());
        assert!(policy.decide(&ci(), intro, NOW + 200).is_ok());
        assert_eq!(
            policy.decide(&ci(), intro, NOW + 201).unwrap_err(),
            Denied::OutsideWindow {
                rule: "premiere".into(),
                reason: OutsideWindow::Ended { at: NOW + 200 }
            }
        );
        let with_fallback = Policy::new(
            vec![
                premiere,
                rule(
                    "ci",
                    VideoSelector::All,
                    Subject::ApiKey("ci".into()),
                    Action::Allow,
                ),
            ],
            &catalogue,
        );
        assert_eq!(
            with_fallback.decide(&ci(), intro, NOW).unwrap().rule(),
            "ci"
        );
    }

    #[test]
    fn bound_grants_add_the_viewers_address_then_block_everyone_else() {
        let grant = TokenGrant {
            bind_client_ip: true,
            ..grant(false)
        };
        let settings = grant.for_client("2001:db8::7".parse().unwrap());
        assert_eq!(grant.access_rule_count(), 2);
        assert_eq!(
            serde_json::to_value(&settings.access_rules[..]).unwrap(),
            serde_json::json!([
                {"type": "ip.src", "action": "allow", "ip": ["2001:db8::7"]},
                {"type": "any", "action": "block"}
            ])
        );
        let unbound = self::grant(false);
        assert!(matches!(
            unbound.for_client("127.0.0.1".parse().unwrap()),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn explain_walks_rules_until_one_decides() {
        let catalogue = catalogue();
        let policy = Policy::new(
            vec![
                rule(
                    "members",
                    tagged("members"),
                    Subject::Authenticated,
                    Action::Allow,
                ),
                rule(
                    "ci-only",
                    VideoSelector::All,
                    Subject::ApiKey("ci".into()),
                    Action::Allow,
                ),
                rule("public", tagged("public"), Subject::Anyone, Action::Allow),
                rule(
                    "never-reached",
                    VideoSelector::All,
                    Subject::Anyone,
                    Action::Deny,
                ),
            ],
            &catalogue,
        );
        let verdicts: Vec<_> = policy
            .explain(&Identity::Anonymous, video(&catalogue, "intro"), NOW)
            .into_iter()
            .map(|(rule, verdict)| (rule.name.to_string(), verdict))
            .collect();
        assert_eq!(
            verdicts,
            vec![
                ("members".into(), Verdict::VideoNotCovered),
                ("ci-only".into(), Verdict::SubjectNotCovered),
                ("public".into(), Verdict::Decides(Action::Allow)),
            ]
        );
    }

    #[test]
    fn shadowed_rules_are_found() {
        let catalogue = catalogue();
        let policy = Policy::new(
            vec![
                rule("public", tagged("public"), Subject::Anyone, Action::Allow),
                rule(
                    "ci-public",
                    tagged("public"),
                    Subject::ApiKey("ci".into()),
                    Action::Allow,
                ),
                rule(
                    "members",
                    tagged("members"),
                    Subject::Authenticated,
                    Action::Allow,
                ),
                rule(
                    "everything",
                    VideoSelector::All,
                    Subject::Anyone,
                    Action::Allow,
                ),
            ],
            &catalogue,
        );
        let shadowed: Vec<_> = policy
            .shadowed(&catalogue)
            .into_iter()
            .map(|(later, earlier)| (later.name.to_string(), earlier.name.to_string()))
            .collect();
        assert_eq!(shadowed, vec![("ci-public".into(), "public".into())]);
    }

    #[test]
    fn merge_keeps_rule_order() {
        let merged: Vec<u32> = merged(&[1, 4, 5], &[0, 2, 5, 9]).collect();
        assert_eq!(merged, vec![0, 1, 2, 4, 5, 5, 9]);
    }
}
