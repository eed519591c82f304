//! Which key signed when: a small JSON file that `serve` updates at start and after every
//! reload, so that `streamgate stream keys delete` can tell whether tokens signed with a key
//! may still be live.
//!
//! Deleting a key on Cloudflare revokes every token it signed. A token lives at most the
//! longest ttl the policy can mint, so a key may go once that long has passed since it
//! stopped signing. The file records, per key id, when it last started signing, when it
//! stopped (none while it signs), and the longest ttl seen while it signed:
//!
//! ```json
//! {"version": 1, "keys": [
//!   {"id": "0a1b…", "started": "2026-12-01T09:00:00Z", "stopped": "2026-12-01T12:00:00Z", "max_ttl_secs": 7200},
//!   {"id": "ffee…", "started": "2026-12-01T12:00:00Z", "stopped": null, "max_ttl_secs": 7200}
//! ]}
//! ```
//!
//! It is written atomically (a sibling file renamed over it). By default it lives beside the
//! generated development key, `.streamgate/key-history.json` next to the configuration file;
//! `--key-history` (or `STREAMGATE_KEY_HISTORY`) moves it. Gateways of one fleet share a
//! file (a shared volume) or the operator checks them all before deleting a key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Settings, parse_rfc3339};

/// The file's name inside `.streamgate/`.
pub const FILE_NAME: &str = "key-history.json";
/// The format written.
const VERSION: u32 = 1;
/// The largest history file read: one entry is about 150 bytes.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// Where the history lives unless told otherwise: `.streamgate/key-history.json` beside the
/// configuration file.
pub fn default_path(config: &Path) -> PathBuf {
    config
        .parent()
        .unwrap_or(Path::new("."))
        .join(".streamgate")
        .join(FILE_NAME)
}

/// The longest life a token minted under `settings` can have: `token.ttl` or a rule's `ttl`.
pub fn longest_ttl(settings: &Settings) -> Duration {
    settings
        .policy
        .rules()
        .iter()
        .map(|rule| rule.token.settings.ttl)
        .fold(settings.default_token.ttl, Duration::max)
}

/// Why the history could not be read or written. Names no path (the caller does).
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read the key history: {0}")]
    Read(std::io::Error),
    #[error("the key history is not valid: {0}")]
    Invalid(String),
    #[error("cannot write the key history: {0}")]
    Write(std::io::Error),
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHistory {
    pub version: u32,
    #[serde(default)]
    pub keys: Vec<KeyRecord>,
}

impl Default for KeyHistory {
    fn default() -> Self {
        Self {
            version: VERSION,
            keys: Vec::new(),
        }
    }
}

/// One key's signing record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key id, lowercase.
    pub id: String,
    /// When it last started signing (RFC 3339).
    pub started: String,
    /// When it stopped signing; `None` while it signs.
    pub stopped: Option<String>,
    /// The longest token ttl the policy could mint while it signed.
    pub max_ttl_secs: u64,
}

/// What the history says about deleting a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retirement {
    /// This gateway never signed with it.
    NeverSigned,
    /// It signs now (as far as the file knows), since unix second `since`.
    Signing { since: u64 },
    /// It stopped at unix second `stopped`; its tokens may live until `live_until`.
    Stopped { stopped: u64, live_until: u64 },
}

impl KeyHistory {
    /// Read the file at `path`; an absent file is an empty history.
    pub fn load(path: &Path) -> Result<KeyHistory, HistoryError> {
        use std::io::Read;
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(KeyHistory::default());
            }
            Err(error) => return Err(HistoryError::Read(error)),
        };
        let mut text = String::new();
        file.take(MAX_FILE_BYTES)
            .read_to_string(&mut text)
            .map_err(HistoryError::Read)?;
        let history: KeyHistory = serde_json::from_str(&text).map_err(|error| {
            HistoryError::Invalid(format!(
                "{:?} error at line {} column {}",
                error.classify(),
                error.line(),
                error.column()
            ))
        })?;
        if history.version != VERSION {
            return Err(HistoryError::Invalid(format!(
                "version {} is not the {VERSION} this build reads",
                history.version
            )));
        }
        Ok(history)
    }

    /// Write to `path` atomically: a sibling file, flushed, renamed over it.
    pub fn save(&self, path: &Path) -> Result<(), HistoryError> {
        use std::io::Write;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(HistoryError::Write)?;
        }
        let staging = path.with_extension(format!("json.{}.tmp", std::process::id()));
        let text = serde_json::to_string_pretty(self)
            .map_err(|error| HistoryError::Invalid(error.to_string()))?;
        let written = (|| {
            let mut file = std::fs::File::create(&staging)?;
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&staging, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&staging);
        }
        written.map_err(HistoryError::Write)
    }

    /// Note that `signing` signs from unix second `now` under a policy whose longest ttl is
    /// `max_ttl`: every other key still marked signing stops now. `true` if anything changed.
    pub fn record_signing(&mut self, signing: &str, max_ttl: Duration, now: u64) -> bool {
        let signing = signing.to_ascii_lowercase();
        let now_text = crate::cloudflare::time::format_unix(now);
        let mut changed = false;
        for record in &mut self.keys {
            if record.id != signing && record.stopped.is_none() {
                record.stopped = Some(now_text.clone());
                changed = true;
            }
        }
        let max_ttl_secs = max_ttl.as_secs();
        match self.keys.iter_mut().find(|record| record.id == signing) {
            Some(record) => {
                if record.stopped.is_some() {
                    record.started = now_text;
                    record.stopped = None;
                    changed = true;
                }
                if max_ttl_secs > record.max_ttl_secs {
                    record.max_ttl_secs = max_ttl_secs;
                    changed = true;
                }
            }
            None => {
                self.keys.push(KeyRecord {
                    id: signing,
                    started: now_text,
                    stopped: None,
                    max_ttl_secs,
                });
                changed = true;
            }
        }
        changed
    }

    /// What the history says about deleting `id`, judged with tokens living at least
    /// `max_ttl` (the current policy's longest ttl, in case it grew since).
    pub fn retirement(&self, id: &str, max_ttl: Duration) -> Retirement {
        let Some(record) = self.keys.iter().find(|r| r.id.eq_ignore_ascii_case(id)) else {
            return Retirement::NeverSigned;
        };
        // An unreadable time is taken as "now": the safe reading.
        let read = |text: &str| parse_rfc3339(text).unwrap_or(u64::MAX);
        match &record.stopped {
            None => Retirement::Signing {
                since: read(&record.started),
            },
            Some(stopped) => {
                let stopped = read(stopped);
                let ttl = record.max_ttl_secs.max(max_ttl.as_secs());
                Retirement::Stopped {
                    stopped,
                    live_until: stopped.saturating_add(ttl),
                }
            }
        }
    }
}

/// Record in the file at `path` that `signing` signs from `now` (see
/// [`KeyHistory::record_signing`]); the file is written only when something changed.
pub fn record(path: &Path, signing: &str, max_ttl: Duration, now: u64) -> Result<(), HistoryError> {
    let mut history = KeyHistory::load(path)?;
    if history.record_signing(signing, max_ttl, now) {
        history.save(path)?;
    }
    Ok(())
}

/// [`record`] for the key `snapshot` signs with, logging (not failing) when the file cannot
/// be written: a gateway keeps serving without its history.
pub fn record_snapshot(path: &Path, snapshot: &crate::snapshot::Snapshot, now: u64) {
    let signing = snapshot.cache.signer().active_key().id().to_string();
    let max_ttl = longest_ttl(&snapshot.settings);
    match record(path, &signing, max_ttl, now) {
        Ok(()) => tracing::debug!(key = %signing, "key history recorded"),
        Err(error) => tracing::warn!(
            %error,
            path = %path.display(),
            "cannot record which key signs; `stream keys delete` will not know when it stopped"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
    const NEW: &str = "ffeeddccbbaa99887766554433221100";
    const HOUR: Duration = Duration::from_secs(3600);
    const T0: u64 = 1_800_000_000;

    #[test]
    fn a_new_signing_key_stops_the_old_one_and_tokens_outlive_it_by_the_longest_ttl() {
        let mut history = KeyHistory::default();
        assert!(history.record_signing(OLD, HOUR, T0));
        assert!(!history.record_signing(OLD, HOUR, T0 + 10), "nothing new");
        assert!(history.record_signing(OLD, 2 * HOUR, T0 + 20), "ttl grew");
        assert_eq!(
            history.retirement(OLD, HOUR),
            Retirement::Signing { since: T0 }
        );
        assert!(history.record_signing(NEW, HOUR, T0 + 100));
        assert_eq!(
            history.retirement(OLD, HOUR),
            Retirement::Stopped {
                stopped: T0 + 100,
                live_until: T0 + 100 + 7200
            },
            "the longest ttl seen while it signed"
        );
        assert_eq!(
            history.retirement(OLD, 3 * HOUR),
            Retirement::Stopped {
                stopped: T0 + 100,
                live_until: T0 + 100 + 3 * 3600
            },
            "or the current policy's, if longer"
        );
        assert_eq!(
            history.retirement("00000000000000000000000000000000", HOUR),
            Retirement::NeverSigned
        );
        // Signing again reopens the record.
        assert!(history.record_signing(OLD, HOUR, T0 + 500));
        assert!(matches!(
            history.retirement(OLD, HOUR),
            Retirement::Signing { since } if since == T0 + 500
        ));
        assert!(matches!(
            history.retirement(NEW, HOUR),
            Retirement::Stopped { stopped, .. } if stopped == T0 + 500
        ));
    }

    #[test]
    fn the_file_is_written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join(FILE_NAME);
        assert_eq!(KeyHistory::load(&path).unwrap(), KeyHistory::default());
        record(&path, OLD, HOUR, T0).unwrap();
        record(&path, NEW, HOUR, T0 + 60).unwrap();
        let history = KeyHistory::load(&path).unwrap();
        assert_eq!(history.keys.len(), 2);
        assert_eq!(
            history.keys[0].stopped.as_deref(),
            Some("2027-01-15T08:01:00Z")
        );
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, [FILE_NAME]);
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "{\"version\": 1, \"keys\": [").unwrap();
        assert!(matches!(
            KeyHistory::load(&path),
            Err(HistoryError::Invalid(_))
        ));
        std::fs::write(&path, "{\"version\": 9}").unwrap();
        assert!(matches!(
            KeyHistory::load(&path),
            Err(HistoryError::Invalid(_))
        ));
    }
}
