//! The emulator's Cloudflare account: its signing keys and its videos with their settings.
//!
//! One account lives as long as the process. Every emulator built for it (a configuration
//! reload builds a new one) seeds it with what the configuration says and finds what the
//! management API changed still there: seeding only adds keys and videos the account lacks,
//! drops configured keys the configuration no longer lists, and never brings back a key that
//! was deleted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};

use super::judge::Trust;
use super::{EmulatorError, origins};
use crate::secret::Secret;

/// Cloudflare's limit on signing keys per account.
pub const MAX_KEYS: usize = 1000;

/// When the first seeded video without an explicit `created` was made; each next one a second
/// later, so every video has its own creation time and paging by it is exact.
const SEED_EPOCH_SECS: u64 = 1_704_067_200; // 2024-01-01T00:00:00Z

/// A video the account starts with (the catalogue's, the demo's, or a test's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountVideo {
    /// 32 lower-case hex characters.
    pub uid: String,
    /// `meta.name`.
    pub name: String,
    pub require_signed_urls: bool,
    /// Host names (`*.example.com` wildcards, `localhost:3000` ports); empty: any site.
    pub allowed_origins: Vec<String>,
    /// `readyToStream`; a video that is not ready is not served.
    pub ready: bool,
    /// `None`: assigned, one second after the previous seeded video (from 2024-01-01).
    pub created: Option<SystemTime>,
}

impl AccountVideo {
    /// A ready video named `name` that requires signed URLs and may be embedded anywhere.
    pub fn protected(uid: impl Into<String>, name: impl Into<String>) -> AccountVideo {
        AccountVideo {
            uid: uid.into(),
            name: name.into(),
            require_signed_urls: true,
            allowed_origins: Vec::new(),
            ready: true,
            created: None,
        }
    }
}

/// Two videos every configured emulator's account holds beyond the catalogue (unless the
/// catalogue lists their uids): something for a catalogue sync to find. The draft is not
/// ready to stream.
pub fn demo_account_videos() -> Vec<AccountVideo> {
    vec![
        AccountVideo::protected("7a3f9c2e1b4d4e6f8a0b2c4d6e8f0a1c", "Product tour"),
        AccountVideo {
            ready: false,
            ..AccountVideo::protected("3c5e7a9b1d2f4a6c8e0b1d3f5a7c9e2b", "Onboarding (draft)")
        },
    ]
}

/// The account id and API token the management API accepts.
#[derive(Clone, Debug)]
pub struct ApiAccess {
    /// 32 lower-case hex characters.
    pub account_id: String,
    pub token: Secret<String>,
}

/// A key the account holds.
pub(super) struct AccountKey {
    pub(super) decoding: DecodingKey,
    pub(super) created: SystemTime,
    /// Listed in the configuration (`signing_keys`).
    configured: bool,
    /// Created through the API (so a configuration that stops listing it does not remove it).
    via_api: bool,
}

/// A video the account holds, with the settings the API edits.
#[derive(Clone, Debug)]
pub(super) struct VideoRecord {
    pub(super) uid: String,
    /// Always holds `name` (a string).
    pub(super) meta: Map<String, Value>,
    pub(super) creator: Option<String>,
    pub(super) require_signed_urls: bool,
    pub(super) allowed_origins: Vec<String>,
    pub(super) ready: bool,
    /// Microseconds since the epoch; unique within the account.
    pub(super) created_micros: i64,
    pub(super) modified_micros: i64,
}

impl VideoRecord {
    pub(super) fn name(&self) -> &str {
        self.meta.get("name").and_then(Value::as_str).unwrap_or("")
    }
}

/// Everything the account holds, behind one lock.
#[derive(Default)]
pub(super) struct AccountState {
    pub(super) keys: HashMap<String, AccountKey>,
    /// Keys deleted through the API; a configuration listing one does not bring it back.
    deleted_keys: HashSet<String>,
    pub(super) videos: HashMap<String, VideoRecord>,
    /// `created_micros` → uid: the listing order.
    pub(super) by_created: BTreeMap<i64, String>,
}

impl Trust for AccountState {
    fn key(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid).map(|key| &key.decoding)
    }

    fn knows_video(&self, uid: &str) -> bool {
        self.videos.contains_key(uid)
    }
}

/// What one emulator brings to its account: checked, not yet applied.
pub(super) struct Seed {
    pub(super) keys: Vec<(String, DecodingKey)>,
    pub(super) videos: Vec<AccountVideo>,
}

/// The account shared by every emulator of a process; see the module docs.
pub struct EmulatorAccount {
    api: Option<ApiAccess>,
    state: RwLock<AccountState>,
}

// === impl EmulatorAccount ===

impl EmulatorAccount {
    /// An empty account whose management API accepts `api` (`None`: the API answers 401 to
    /// everything; said once in the log).
    pub fn new(api: Option<ApiAccess>) -> EmulatorAccount {
        if api.is_none() {
            tracing::info!(
                "the emulator's management API (/client/v4) is disabled: no cloudflare account id and API token"
            );
        }
        EmulatorAccount {
            api,
            state: RwLock::default(),
        }
    }

    pub(super) fn api(&self) -> Option<&ApiAccess> {
        self.api.as_ref()
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, AccountState> {
        // The state is consistent after every write: a panic elsewhere cannot leave half of one.
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn write(&self) -> RwLockWriteGuard<'_, AccountState> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Check that `seed` can be applied (its explicit creation times are unique, also against
    /// the videos the account holds), then apply it. Nothing changes on `Err`.
    pub(super) fn apply(&self, seed: Seed) -> Result<(), EmulatorError> {
        let mut state = self.write();
        let mut taken: HashMap<i64, &str> = state
            .videos
            .values()
            .map(|video| (video.created_micros, video.uid.as_str()))
            .collect();
        for video in &seed.videos {
            if state.videos.contains_key(&video.uid) {
                continue;
            }
            if let Some(created) = video.created {
                let micros = unix_micros(created);
                if taken.insert(micros, &video.uid).is_some() {
                    return Err(EmulatorError::DuplicateCreated(video.uid.clone()));
                }
            }
        }
        state.seed_keys(seed.keys);
        state.seed_videos(seed.videos);
        Ok(())
    }
}

impl fmt::Debug for EmulatorAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.read();
        let mut key_ids: Vec<&str> = state.keys.keys().map(String::as_str).collect();
        key_ids.sort_unstable();
        f.debug_struct("EmulatorAccount")
            .field("api", &self.api)
            .field("key_ids", &key_ids)
            .field("videos", &state.videos.len())
            .finish()
    }
}

// === impl AccountState ===

impl AccountState {
    /// Trust the configured `keys` (except deleted ones), and stop trusting configured keys
    /// no longer listed (unless the API created them).
    fn seed_keys(&mut self, keys: Vec<(String, DecodingKey)>) {
        let listed: HashSet<&str> = keys.iter().map(|(id, _)| id.as_str()).collect();
        self.keys.retain(|id, key| {
            if key.configured && !listed.contains(id.as_str()) {
                key.configured = false;
                return key.via_api;
            }
            true
        });
        for (id, decoding) in keys {
            if self.deleted_keys.contains(&id) {
                continue;
            }
            let key = self.keys.entry(id).or_insert_with(|| AccountKey {
                decoding: decoding.clone(),
                created: SystemTime::now(),
                configured: true,
                via_api: false,
            });
            key.decoding = decoding;
            key.configured = true;
        }
    }

    /// Add the videos the account lacks; the ones it holds keep their (edited) settings.
    fn seed_videos(&mut self, videos: Vec<AccountVideo>) {
        let (explicit, assigned): (Vec<_>, Vec<_>) = videos
            .into_iter()
            .enumerate()
            .filter(|(_, video)| !self.videos.contains_key(&video.uid))
            .partition(|(_, video)| video.created.is_some());
        for (_, video) in explicit {
            let created = unix_micros(video.created.unwrap_or(UNIX_EPOCH));
            self.insert_video(video, created);
        }
        for (index, video) in assigned {
            let offset = Duration::from_secs(u64::try_from(index).unwrap_or(u64::MAX));
            let mut created =
                unix_micros(UNIX_EPOCH + Duration::from_secs(SEED_EPOCH_SECS) + offset);
            if self.by_created.contains_key(&created) {
                // Taken (a reload added videos in between): after the newest.
                let newest = self.by_created.keys().next_back().copied().unwrap_or(0);
                created = newest.max(created) + 1_000_000;
            }
            self.insert_video(video, created);
        }
    }

    fn insert_video(&mut self, video: AccountVideo, created_micros: i64) {
        let mut meta = Map::new();
        meta.insert("name".into(), Value::String(video.name));
        self.by_created.insert(created_micros, video.uid.clone());
        self.videos.insert(
            video.uid.clone(),
            VideoRecord {
                uid: video.uid,
                meta,
                creator: None,
                require_signed_urls: video.require_signed_urls,
                allowed_origins: video.allowed_origins,
                ready: video.ready,
                created_micros,
                modified_micros: created_micros,
            },
        );
    }

    /// Hold a key created through the API. `Err` when the account is full.
    pub(super) fn add_created_key(
        &mut self,
        id: String,
        decoding: DecodingKey,
        created: SystemTime,
    ) -> Result<(), KeyLimit> {
        if self.keys.len() >= MAX_KEYS {
            return Err(KeyLimit);
        }
        self.keys.insert(
            id,
            AccountKey {
                decoding,
                created,
                configured: false,
                via_api: true,
            },
        );
        Ok(())
    }

    /// Delete a key (configured or created); its tokens are refused from now on. `false`
    /// when the account has no such key.
    pub(super) fn delete_key(&mut self, id: &str) -> bool {
        if self.keys.remove(id).is_none() {
            return false;
        }
        self.deleted_keys.insert(id.to_string());
        true
    }
}

/// The account already holds [`MAX_KEYS`] keys.
#[derive(Debug)]
pub(super) struct KeyLimit;

/// Check the seeded videos: uids well formed and unique, origins valid. `Ok` is the list in
/// order (the bare uids first, as protected videos named by their uid).
pub(super) fn check_videos(
    video_uids: Vec<String>,
    videos: Vec<AccountVideo>,
) -> Result<Vec<AccountVideo>, EmulatorError> {
    let mut seen = HashSet::new();
    let mut all: Vec<AccountVideo> = video_uids
        .into_iter()
        .map(|uid| AccountVideo::protected(uid.clone(), uid))
        .collect();
    all.extend(videos);
    for video in &mut all {
        if !super::judge::is_video_uid(&video.uid) {
            return Err(EmulatorError::InvalidVideoUid(video.uid.clone()));
        }
        if !seen.insert(video.uid.clone()) {
            return Err(EmulatorError::DuplicateVideoUid(video.uid.clone()));
        }
        for origin in &mut video.allowed_origins {
            *origin = origins::normalize_entry(origin).map_err(|reason| {
                EmulatorError::InvalidAllowedOrigin {
                    uid: video.uid.clone(),
                    reason,
                }
            })?;
        }
    }
    Ok(all)
}

/// Microseconds since the epoch (negative before it, saturating).
pub(super) fn unix_micros(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |m| -m),
    }
}

/// RFC 3339 in UTC with microseconds, as the API writes times.
pub(super) fn format_micros(micros: i64) -> String {
    let time = match u64::try_from(micros) {
        Ok(micros) => UNIX_EPOCH + Duration::from_micros(micros),
        Err(_) => UNIX_EPOCH,
    };
    humantime::format_rfc3339_micros(time).to_string()
}

/// An RFC 3339 time (`Z` or a `±hh:mm` offset, fractions allowed) as microseconds since the
/// epoch; `None` when it is not one or lies before the epoch.
pub(super) fn parse_micros(text: &str) -> Option<i64> {
    let at = crate::rfc3339::parse(text)?;
    i64::try_from(at.duration_since(UNIX_EPOCH).ok()?.as_micros()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const UID_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn seed(videos: Vec<AccountVideo>) -> Seed {
        Seed {
            keys: Vec::new(),
            videos,
        }
    }

    #[test]
    fn times_round_trip_to_the_microsecond() {
        let micros = 1_704_067_200_123_456;
        let text = format_micros(micros);
        assert_eq!(text, "2024-01-01T00:00:00.123456Z");
        assert_eq!(parse_micros(&text), Some(micros));
        assert_eq!(
            parse_micros("2024-01-01T01:00:00.123456+01:00"),
            Some(micros)
        );
        assert_eq!(
            parse_micros("2024-01-01T00:00:00Z"),
            Some(1_704_067_200_000_000)
        );
        for bad in [
            "",
            "2024-01-01",
            "yesterday",
            "2024-01-01T00:00:00+1:00",
            "é",
        ] {
            assert_eq!(parse_micros(bad), None, "{bad}");
        }
    }

    #[test]
    fn seeded_videos_get_distinct_creation_times_and_keep_their_edits() {
        let account = EmulatorAccount::new(None);
        let videos = check_videos(vec![UID_A.into()], Vec::new()).unwrap();
        account.apply(seed(videos)).unwrap();
        account
            .write()
            .videos
            .get_mut(UID_A)
            .unwrap()
            .require_signed_urls = false;
        // A reload seeds again, with one more video first.
        let videos = check_videos(vec![UID_B.into(), UID_A.into()], Vec::new()).unwrap();
        account.apply(seed(videos)).unwrap();
        let state = account.read();
        assert!(!state.videos[UID_A].require_signed_urls, "the edit is kept");
        assert_ne!(
            state.videos[UID_A].created_micros,
            state.videos[UID_B].created_micros
        );
        assert_eq!(state.by_created.len(), 2);
    }

    #[test]
    fn explicit_creation_times_must_be_unique() {
        let at = UNIX_EPOCH + Duration::from_secs(SEED_EPOCH_SECS);
        let video = |uid: &str| AccountVideo {
            created: Some(at),
            ..AccountVideo::protected(uid, uid)
        };
        let account = EmulatorAccount::new(None);
        let error = account
            .apply(seed(vec![video(UID_A), video(UID_B)]))
            .unwrap_err();
        assert!(matches!(error, EmulatorError::DuplicateCreated(uid) if uid == UID_B));
        assert!(account.read().videos.is_empty(), "nothing was applied");
    }

    #[test]
    fn duplicate_or_malformed_videos_and_bad_origins_are_refused() {
        assert!(matches!(
            check_videos(vec![UID_A.into(), UID_A.into()], Vec::new()),
            Err(EmulatorError::DuplicateVideoUid(_))
        ));
        assert!(matches!(
            check_videos(vec!["nope".into()], Vec::new()),
            Err(EmulatorError::InvalidVideoUid(_))
        ));
        let video = AccountVideo {
            allowed_origins: vec!["https://example.com".into()],
            ..AccountVideo::protected(UID_B, "b")
        };
        assert!(matches!(
            check_videos(Vec::new(), vec![video]),
            Err(EmulatorError::InvalidAllowedOrigin { .. })
        ));
    }

    #[test]
    fn debug_never_shows_the_api_token() {
        let account = EmulatorAccount::new(Some(ApiAccess {
            account_id: "023e105f4ecef8ad9ca31a8372d0c353".into(),
            token: Secret::new("do-not-show-me".into()),
        }));
        let debug = format!("{account:?}");
        assert!(!debug.contains("do-not-show-me"), "{debug}");
        assert!(debug.contains("023e105f4ecef8ad9ca31a8372d0c353"));
    }
}
