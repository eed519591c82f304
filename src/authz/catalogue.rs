//! The operator's video catalogue: aliases, uids and tags.

pub use crate::token::claims::is_valid_alias;
use std::sync::Arc;

use crate::FastMap;
use crate::token::VideoUid;

/// One video the gateway will mint tokens for.
#[derive(Debug)]
pub struct Video {
    pub uid: VideoUid,
    /// The friendly name used in `/watch/<alias>`.
    pub alias: Arc<str>,
    pub tags: Vec<Arc<str>>,
    pub title: Option<String>,
}

impl Video {
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| &**t == tag)
    }
}

/// Lookup by alias or by uid; built once per configuration.
#[derive(Debug, Default)]
pub struct Catalogue {
    by_alias: FastMap<Arc<str>, Arc<Video>>,
    by_uid: FastMap<VideoUid, Arc<Video>>,
    /// Every video, in the configuration's order.
    in_order: Vec<Arc<Video>>,
}

impl Catalogue {
    /// Add a video; the caller (config validation) has rejected duplicate aliases and uids.
    pub(crate) fn insert(&mut self, video: Video) {
        let video = Arc::new(video);
        self.by_alias
            .insert(Arc::clone(&video.alias), Arc::clone(&video));
        self.by_uid.insert(video.uid, Arc::clone(&video));
        self.in_order.push(video);
    }

    /// The video named by `id`, a uid (any case) or an alias.
    pub fn resolve(&self, id: &str) -> Option<&Arc<Video>> {
        match id.parse::<VideoUid>() {
            Ok(uid) => self.by_uid.get(&uid),
            Err(_) => self.by_alias.get(id),
        }
    }

    pub fn by_alias(&self, alias: &str) -> Option<&Arc<Video>> {
        self.by_alias.get(alias)
    }

    pub fn by_uid(&self, uid: &VideoUid) -> Option<&Arc<Video>> {
        self.by_uid.get(uid)
    }

    /// Every video, in the configuration's order.
    pub fn videos(&self) -> impl Iterator<Item = &Arc<Video>> {
        self.in_order.iter()
    }

    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_by_alias_and_by_uid_in_any_case() {
        let mut catalogue = Catalogue::default();
        let uid: VideoUid = "0123456789abcdef0123456789abcdef".parse().unwrap();
        catalogue.insert(Video {
            uid,
            alias: "intro".into(),
            tags: vec!["public".into()],
            title: None,
        });
        assert_eq!(catalogue.resolve("intro").unwrap().uid, uid);
        assert_eq!(
            catalogue
                .resolve("0123456789ABCDEF0123456789abcdef")
                .unwrap()
                .alias
                .as_ref(),
            "intro"
        );
        assert!(catalogue.resolve("outro").is_none());
        assert!(catalogue.resolve("intro").unwrap().has_tag("public"));
    }

    #[test]
    fn aliases_cannot_be_traversal_or_uid_shaped() {
        for bad in ["", ".", "..", ".hidden", "a/b", "a%2e", &"x".repeat(65)] {
            assert!(!is_valid_alias(bad), "{bad}");
        }
        assert!(!is_valid_alias("0123456789abcdef0123456789abcdef"));
        for good in ["intro", "keynote-2026", "a.b_c", "X1"] {
            assert!(is_valid_alias(good), "{good}");
        }
    }
}
