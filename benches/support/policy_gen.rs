//! Generated policies for the `decision` and `policy_load` micro-benches: one shape, two
//! sizes, written as the YAML an operator would write and loaded through
//! [`Settings::from_yaml`].
//!
//! The shape: tags `t<N>` and groups `g<N>` pair up, one allow rule `tag:t<N>` for
//! `group:g<N>` per tag; every video carries 2-3 tags and every user 1-2 groups, spread
//! evenly; a few `*` rules (staff, partners) are spread through the list, and a few deny rules
//! ("group `g<M>` may not watch tag `t<K>`") sit just before the allow rule they restrict. All
//! users share one argon2id PHC string: loading parses each one, it never hashes.
//!
//! Lives in a subdirectory so that cargo does not take it for a bench target of its own.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use streamgate::authz::catalogue::Video;
use streamgate::authz::policy::Policy;
use streamgate::config::Settings;
use streamgate::identity::{Identity, Principal, PrincipalKind};

/// The committed test-only key's id; the key file itself is not read by `from_yaml`.
const KEY_ID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

/// How big a generated policy is.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub users: usize,
    pub videos: usize,
    /// Tags `t0..`, and as many groups `g0..`.
    pub tags: usize,
    /// Rules in all: `*` rules, deny rules, and one `tag:` allow rule in every other slot.
    pub rules: usize,
    pub star_rules: usize,
    pub deny_rules: usize,
}

/// 10 users, 10 videos, 5 rules.
pub const SMALL: Shape = Shape {
    users: 10,
    videos: 10,
    tags: 3,
    rules: 5,
    star_rules: 1,
    deny_rules: 1,
};

/// 100,000 users, 10,000 videos, 1,000 tags and groups, 1,000 rules.
pub const BIG: Shape = Shape {
    users: 100_000,
    videos: 10_000,
    tags: 1_000,
    rules: 1_000,
    star_rules: 3,
    deny_rules: 10,
};

/// One argon2id PHC string with the cheapest parameters argon2 accepts (8 KiB, one pass), for
/// every generated user. Made once: with cheap parameters it takes microseconds.
pub fn shared_phc() -> String {
    let params = Params::new(Params::MIN_M_COST, 1, 1, None).expect("valid argon2 parameters");
    let salt = SaltString::encode_b64(b"bench-salt-16byt").expect("a valid salt");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(b"bench-password", &salt)
        .expect("argon2 hashes")
        .to_string()
}

/// What sits in each rule slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// The k-th `*` rule.
    Star(usize),
    /// The k-th deny rule.
    Deny(usize),
    /// The allow rule for tag `t<N>` and group `g<N>`.
    Tag(usize),
}

fn slots(shape: &Shape) -> Vec<Slot> {
    let mut slots = vec![None; shape.rules];
    for k in 0..shape.star_rules {
        slots[k * shape.rules / shape.star_rules] = Some(Slot::Star(k));
    }
    for k in 0..shape.deny_rules {
        let mut at = (2 * k + 1) * shape.rules / (2 * shape.deny_rules);
        while slots[at].is_some() {
            at += 1;
        }
        slots[at] = Some(Slot::Deny(k));
    }
    let mut next_tag = 0;
    slots
        .into_iter()
        .map(|slot| {
            slot.unwrap_or_else(|| {
                next_tag += 1;
                Slot::Tag(next_tag - 1)
            })
        })
        .collect()
}

/// The tags of video `i`: 2, or 3 for even `i`, distinct, spread over all tags.
fn video_tags(i: usize, tags: usize) -> Vec<usize> {
    let step = 1 + (i / tags) % (tags - 1);
    let first = i % tags;
    let second = (first + step) % tags;
    let mut list = vec![first, second];
    let third = (second + step) % tags;
    if i.is_multiple_of(2) && third != first {
        list.push(third);
    }
    list
}

/// The groups of user `i`: `g<i mod tags>`, for three users in four a second `g<N>`, plus
/// `staff` for user 0 and `partners-<k>` for user k.
fn user_groups(i: usize, shape: &Shape) -> Vec<String> {
    let mut groups = vec![format!("g{}", i % shape.tags)];
    let second = (i * 7 + 1) % shape.tags;
    if !i.is_multiple_of(4) && second != i % shape.tags {
        groups.push(format!("g{second}"));
    }
    if i == 0 {
        groups.push("staff".into());
    } else if i < shape.star_rules {
        groups.push(format!("partners-{i}"));
    }
    groups
}

/// The whole configuration for `shape`, every user with the password hash `phc`.
pub fn policy_yaml(shape: &Shape, phc: &str) -> String {
    let mut yaml = String::with_capacity(shape.users * 110 + shape.videos * 80 + 1024);
    let mut line = |text: std::fmt::Arguments<'_>| {
        yaml.write_fmt(text).expect("writing to a String");
        yaml.push('\n');
    };
    line(format_args!(
        "stream:\n  origin: https://customer-bench.cloudflarestream.com\n\
         signing_keys:\n  - id: {KEY_ID}\n    file: bench-key.pem"
    ));
    line(format_args!("videos:"));
    for i in 0..shape.videos {
        let tags: Vec<String> = video_tags(i, shape.tags)
            .into_iter()
            .map(|t| format!("t{t}"))
            .collect();
        line(format_args!(
            "  v{i}:\n    uid: {:032x}\n    tags: [{}]",
            i + 1,
            tags.join(", ")
        ));
    }
    line(format_args!("users:"));
    for i in 0..shape.users {
        line(format_args!(
            "  u{i}:\n    password: '{phc}'\n    groups: [{}]",
            user_groups(i, shape).join(", ")
        ));
    }
    line(format_args!("rules:"));
    let slots = slots(shape);
    for (at, slot) in slots.iter().enumerate() {
        match *slot {
            Slot::Star(0) => line(format_args!(
                "  - name: staff-all\n    videos: ['*']\n    subjects: ['group:staff']"
            )),
            Slot::Star(k) => line(format_args!(
                "  - name: partners-{k}\n    videos: ['*']\n    subjects: ['group:partners-{k}']"
            )),
            Slot::Deny(k) => {
                // Restrict the next tag rule's tag for the group of the tag before it.
                let tag = slots[at..]
                    .iter()
                    .find_map(|s| match s {
                        Slot::Tag(t) => Some(*t),
                        _ => None,
                    })
                    .unwrap_or(0);
                line(format_args!(
                    "  - name: deny-{k}\n    videos: ['tag:t{tag}']\n    subjects: ['group:g{}']\n    action: deny",
                    (tag + shape.tags - 1) % shape.tags
                ))
            }
            Slot::Tag(t) => line(format_args!(
                "  - name: tag-t{t}\n    videos: ['tag:t{t}']\n    subjects: ['group:g{t}']"
            )),
        }
    }
    yaml
}

/// Parse and validate a generated configuration; it must load without errors or warnings.
pub fn load(yaml: &str) -> Settings {
    let settings = Settings::from_yaml(yaml, "generated.yaml", Path::new("/nonexistent"))
        .unwrap_or_else(|errors| panic!("the generated policy is invalid:\n{errors}"));
    assert!(
        settings.warnings.is_empty(),
        "the generated policy has warnings: {:?}",
        &settings.warnings[..settings.warnings.len().min(5)]
    );
    settings
}

/// A request to decide, and how deep in the policy its answer is.
pub struct Case {
    pub identity: Identity,
    pub user: Arc<str>,
    /// How many groups the user is in.
    pub groups: usize,
    pub video: Arc<Video>,
    /// Rules covering the video that the decision looks at, the deciding one included.
    pub examined: usize,
    /// Position of the deciding (allowing) rule in the whole list, from 0.
    pub rule_index: usize,
    pub rule_name: Arc<str>,
}

/// How many of the rules covering `video` a decision for `identity` looks at, and which rule
/// decides; `None` unless an allow rule decides.
fn trace(policy: &Policy, candidates: &[usize], identity: &Identity) -> Option<(usize, usize)> {
    for (examined, &index) in candidates.iter().enumerate() {
        let rule = &policy.rules()[index];
        if rule.subjects.iter().any(|s| s.matches(identity)) && rule.window.is_always() {
            return (rule.action == streamgate::authz::policy::Action::Allow)
                .then_some((examined + 1, index));
        }
    }
    None
}

/// Among the first users (Basic users, as the authenticator would identify them) and videos
/// spread over the catalogue, a case allowed by a `tag:` rule, decided furthest down the
/// rule list among those that look at the most rules (then: the user in the most groups).
///
/// With `like`, only cases that look at as many rules for a user in as many groups: every
/// generated rule has one subject, so such a case does the same work (one group lookup per
/// rule looked at, in as many groups) and differs only in the size of the policy.
pub fn deep_case(settings: &Settings, like: Option<&Case>) -> Case {
    const VIDEOS_TRIED: usize = 200;
    const USERS_TRIED: usize = 5_000;
    let policy = &settings.policy;
    let mut identities: Vec<(Arc<str>, usize, Identity)> = settings
        .identity
        .users
        .iter()
        .take(USERS_TRIED)
        .map(|user| {
            let principal = Principal::new(
                PrincipalKind::User,
                Arc::clone(&user.name),
                user.groups.iter().cloned(),
                serde_json::Map::new(),
            );
            (
                Arc::clone(&user.name),
                principal.groups.len(),
                Identity::Authenticated(Arc::new(principal)),
            )
        })
        .collect();
    let videos = settings.catalogue.len();
    let tried = VIDEOS_TRIED.min(videos);
    struct Best {
        /// Rules looked at, the user's groups, the deciding rule's index: larger is better.
        rank: (usize, usize, usize),
        video: Arc<Video>,
        user: usize,
    }
    let mut best: Option<Best> = None;
    for k in 0..tried {
        let alias = format!("v{}", k * videos / tried);
        let video = settings
            .catalogue
            .by_alias(&alias)
            .expect("a generated video");
        let candidates: Vec<usize> = (0..policy.rules().len())
            .filter(|&i| policy.rules()[i].videos.matches(video))
            .collect();
        for (u, (_, groups, identity)) in identities.iter().enumerate() {
            let Some((examined, rule)) = trace(policy, &candidates, identity) else {
                continue;
            };
            if !policy.rules()[rule].name.starts_with("tag-")
                || like.is_some_and(|like| (examined, *groups) != (like.examined, like.groups))
            {
                continue;
            }
            let rank = (examined, *groups, rule);
            if best.as_ref().is_none_or(|best| rank > best.rank) {
                best = Some(Best {
                    rank,
                    video: Arc::clone(video),
                    user: u,
                });
            }
        }
    }
    let Best {
        rank: (examined, groups, rule_index),
        video,
        user,
    } = best.expect("a user allowed by a tag rule, as deep as asked");
    let (user, _, identity) = identities.swap_remove(user);
    let rule_name = Arc::clone(&policy.rules()[rule_index].name);
    Case {
        identity,
        user,
        groups,
        video,
        examined,
        rule_index,
        rule_name,
    }
}
