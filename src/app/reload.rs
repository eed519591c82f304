//! Live reload: when the configuration file changes (or on SIGHUP), build a complete new
//! snapshot from it with [`Snapshot::build`] and swap it in; a file that does not validate
//! changes nothing.
//!
//! Editors save by writing a new file and renaming it over the old one, and Kubernetes swaps
//! a ConfigMap's `..data` symlink: the watcher therefore watches the file's directory,
//! debounces the burst of events one save makes, and skips content it has already tried.
//!
//! A file is read only once it is complete: after a rename or creation, or when a writer
//! closes it (inotify's close-after-write), never on a bare modification, which may be half
//! of a write that pauses. And a file that would drop every rule or every video (the usual
//! look of a truncated write) is refused unless it says `allow_empty_policy: true`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::digest;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::app::keys::{MissingKeys, load_signing_keys};
use crate::app::live::Live;
use crate::config::{ConfigErrors, Settings};
use crate::emulator::Emulator;
use crate::metrics::Metrics;
use crate::snapshot::{BuildError, Fixed, Snapshot, keep_restart_settings, restart_only_changes};

/// Events closer together than this are one save.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Where reloading stands, for `/readyz` and the logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// 1 for the configuration the process started with, +1 per applied reload.
    pub generation: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// The last failure, when the last attempt failed (file, line, field and message, never
    /// a configured value). Logged, and kept here for the process; `/readyz` does not show it.
    pub last_error: Option<String>,
    /// When the last attempt failed (unix seconds); `None` once an attempt applies.
    pub last_failed_at: Option<u64>,
    /// Settings that changed in the file but only take effect after a restart (see
    /// [`restart_only_changes`]).
    pub needs_restart: Vec<&'static str>,
    /// How many times the file has been looked at: once per change event (after the
    /// debounce) and per SIGHUP, whether or not the content had changed or the reload
    /// applied, and counted together with that outcome. It moves when nothing else does, so
    /// it shows that the watcher is alive and has handled a change.
    pub checks: u64,
    /// Events about the file that were not a reason to read it: modifications of a write
    /// still in progress (it is read once the writer closes it).
    pub writes_in_progress: u64,
}

/// Why a reload was refused; the running configuration is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The file would drop every rule or every video, and does not say it means to.
    #[error(
        "{file}: the new configuration has no {what} (the running one has {running}); not applied, \
         since a truncated or half-written file looks like this. Set `allow_empty_policy: true` \
         in the file to apply it on purpose"
    )]
    WouldEmpty {
        file: String,
        what: &'static str,
        running: usize,
    },
}

/// Rebuilds and swaps the snapshot (and the in-process emulator) from the configuration file.
pub struct Reloader {
    path: PathBuf,
    live: Arc<Live<Snapshot>>,
    emulator: Option<Arc<Live<Emulator>>>,
    fixed: Fixed,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// See [`ReloadStatus::writes_in_progress`]; counted by the watcher's thread.
    writes_in_progress: Arc<AtomicU64>,
    /// Where each applied reload records the signing key (see [`crate::app::key_history`]).
    key_history: Option<PathBuf>,
}

#[derive(Default)]
struct State {
    status: ReloadStatus,
    /// SHA-256 of the content last tried, applied or not.
    last_content: Option<[u8; 32]>,
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        live: Arc<Live<Snapshot>>,
        emulator: Option<Arc<Live<Emulator>>>,
        fixed: Fixed,
    ) -> Self {
        let metrics = Arc::clone(&fixed.metrics);
        // Nothing recorded: the file may have changed since the running settings were read,
        // so the first change event always reloads.
        let last_content = None;
        Self {
            path,
            live,
            emulator,
            fixed,
            metrics,
            state: Mutex::new(State {
                status: ReloadStatus {
                    generation: 1,
                    ..ReloadStatus::default()
                },
                last_content,
            }),
            writes_in_progress: Arc::default(),
            key_history: None,
        }
    }

    /// Record the signing key in the history file at `path` after each applied reload.
    pub fn recording_key_history(mut self, path: Option<PathBuf>) -> Self {
        self.key_history = path;
        self
    }

    pub fn status(&self) -> ReloadStatus {
        let mut status = self.lock().status.clone();
        status.writes_in_progress = self.writes_in_progress.load(Ordering::Acquire);
        status
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reload if the file's content differs from what was last tried.
    pub fn reload_if_changed(&self) -> Option<Result<u64, ReloadError>> {
        let digest = std::fs::read(&self.path)
            .ok()
            .map(|content| sha256(&content));
        let mut state = self.lock();
        if digest.is_none() || state.last_content == digest {
            state.status.checks += 1;
            return None;
        }
        drop(state);
        Some(self.reload())
    }

    /// Read, validate and apply the file. `Ok` is the new generation; on `Err` (already
    /// logged) the running configuration is unchanged.
    pub fn reload(&self) -> Result<u64, ReloadError> {
        let content = std::fs::read(&self.path).ok();
        let result = self.try_reload();
        let mut state = self.lock();
        state.status.checks += 1;
        state.last_content = content.as_deref().map(sha256);
        match result {
            Ok(needs_restart) => {
                state.status.generation += 1;
                self.metrics.reload(true);
                self.metrics.set_config_generation(state.status.generation);
                state.status.reloads_ok += 1;
                state.status.last_error = None;
                state.status.last_failed_at = None;
                state.status.needs_restart = needs_restart;
                tracing::info!(
                    generation = state.status.generation,
                    needs_restart = ?state.status.needs_restart,
                    "configuration reloaded"
                );
                Ok(state.status.generation)
            }
            Err(error) => {
                let message = error.to_string();
                self.metrics.reload(false);
                state.status.reloads_failed += 1;
                state.status.last_error = Some(message.clone());
                state.status.last_failed_at = Some(crate::token::signer::unix_now());
                let cause = std::error::Error::source(&error)
                    .map(|cause| format!(" ({cause})"))
                    .unwrap_or_default();
                tracing::error!(
                    "configuration reload refused; the previous configuration keeps serving:\n{message}{cause}"
                );
                Err(error)
            }
        }
    }

    fn try_reload(&self) -> Result<Vec<&'static str>, ReloadError> {
        let settings = Settings::load(&self.path)?;
        let current = self.live.current();
        refuse_emptying(&current.settings, &settings)?;
        let (keys, _) = load_signing_keys(&settings, MissingKeys::Fail)?;
        let needs_restart = restart_only_changes(&current.settings, &settings);
        if !needs_restart.is_empty() {
            tracing::warn!(
                settings = ?needs_restart,
                "these settings changed but need a restart; the rest of the file is applied"
            );
        }
        let settings = keep_restart_settings(&current.settings, settings);
        let (snapshot, emulator) = Snapshot::build(settings, keys, &self.fixed, Some(&current))?;
        self.metrics
            .set_rules(snapshot.settings.policy.rules().iter().map(|r| &*r.name));
        // The emulator first: a token the new snapshot signs must already be trusted.
        if let (Some(live), Some(emulator)) = (&self.emulator, emulator) {
            live.replace(Arc::new(emulator));
        }
        let snapshot = Arc::new(snapshot);
        self.live.replace(Arc::clone(&snapshot));
        if let Some(path) = &self.key_history {
            crate::app::key_history::record_snapshot(path, &snapshot, self.fixed.clock.now());
        }
        Ok(needs_restart)
    }

    /// Start watching the file (and SIGHUP) before returning, so that no change made after
    /// this call is missed; the returned task reloads on each change until `stop` resolves.
    pub fn spawn_watch(
        self: Arc<Self>,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let (events, changes) = mpsc::unbounded_channel::<()>();
        let watcher = match self.watcher(events) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(%error, path = %self.path.display(), "cannot watch the configuration file; reload with SIGHUP");
                None
            }
        };
        let hangup = hangup_signal();
        tokio::spawn(self.watch(watcher, changes, hangup, stop))
    }

    async fn watch(
        self: Arc<Self>,
        watcher: Option<notify::RecommendedWatcher>,
        mut changes: mpsc::UnboundedReceiver<()>,
        mut hangup: Hangup,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                Some(()) = changes.recv() => {
                    // One save is several events: wait for the burst to end.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, changes.recv()).await {}
                    let this = Arc::clone(&self);
                    let _ = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
                }
                Some(()) = recv_signal(&mut hangup) => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let this = Arc::clone(&self);
                    let _ = tokio::task::spawn_blocking(move || this.reload()).await;
                }
            }
        }
        drop(watcher);
    }

    fn watcher(
        &self,
        events: mpsc::UnboundedSender<()>,
    ) -> notify::Result<notify::RecommendedWatcher> {
        let directory = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let name = self.path.file_name().map(|n| n.to_os_string());
        let writes_in_progress = Arc::clone(&self.writes_in_progress);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                let relevant = event.paths.iter().any(|path| {
                    let file = path.file_name();
                    file == name.as_deref() || file == Some(std::ffi::OsStr::new("..data"))
                });
                if !relevant {
                    return;
                }
                match event.kind {
                    kind if is_complete(kind, &event.paths) => {
                        let _ = events.send(());
                    }
                    EventKind::Modify(_) => {
                        writes_in_progress.fetch_add(1, Ordering::AcqRel);
                    }
                    _ => {}
                }
            })?;
        watcher.watch(&directory, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    }
}

/// Whether an event says the file is complete: a writer closed it, a whole file was renamed
/// into place (an editor's save, a ConfigMap's `..data` swap), or a symbolic link was made.
/// A regular file just created is not: its content follows, and its writer's close says when
/// it is all there.
fn is_complete(kind: EventKind, paths: &[PathBuf]) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write))
        | EventKind::Modify(ModifyKind::Name(_)) => true,
        EventKind::Create(_) => paths.iter().any(|path| {
            std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink())
        }),
        _ => false,
    }
}

/// Refuse `new` when it drops every rule or every video that `running` has, unless it sets
/// `allow_empty_policy`.
fn refuse_emptying(running: &Settings, new: &Settings) -> Result<(), ReloadError> {
    if new.allow_empty_policy {
        return Ok(());
    }
    let checks = [
        (
            "rules",
            running.policy.rules().len(),
            new.policy.rules().len(),
        ),
        ("videos", running.catalogue.len(), new.catalogue.len()),
    ];
    for (what, running, new_count) in checks {
        if running > 0 && new_count == 0 {
            return Err(ReloadError::WouldEmpty {
                file: new.file.clone(),
                what,
                running,
            });
        }
    }
    Ok(())
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
fn hangup_signal() -> Hangup {
    None
}

#[cfg(unix)]
async fn recv_signal(signal: &mut Hangup) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
#[cfg(not(unix))]
async fn recv_signal(_signal: &mut Hangup) -> Option<()> {
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(videos: &str, rules: &str, extra: &str) -> Settings {
        let yaml = format!(
            "stream:\n  origin: https://customer-abc.cloudflarestream.com\nsigning_keys:\n  - id: 0123456789abcdef0123456789abcdef\n    file: key.pem\n{videos}{rules}{extra}"
        );
        Settings::from_yaml(&yaml, "config.yaml", Path::new(".")).unwrap()
    }

    const VIDEOS: &str = "videos:\n  intro:\n    uid: ce800be43a9772f4bb02f35b860fb516\n";
    const RULES: &str = "rules:\n  - name: all\n    videos: [\"*\"]\n    subjects: [anyone]\n";

    #[test]
    fn dropping_every_rule_or_every_video_is_refused_unless_allowed() {
        let running = settings(VIDEOS, RULES, "");
        assert!(refuse_emptying(&running, &settings(VIDEOS, RULES, "")).is_ok());
        let no_rules = refuse_emptying(&running, &settings(VIDEOS, "rules: []\n", ""));
        assert!(
            matches!(
                no_rules,
                Err(ReloadError::WouldEmpty {
                    what: "rules",
                    running: 1,
                    ..
                })
            ),
            "{no_rules:?}"
        );
        let no_videos = refuse_emptying(&running, &settings("videos: {}\n", RULES, ""));
        assert!(
            matches!(
                no_videos,
                Err(ReloadError::WouldEmpty { what: "videos", .. })
            ),
            "{no_videos:?}"
        );
        let allowed = settings("videos: {}\n", "rules: []\n", "allow_empty_policy: true\n");
        assert!(refuse_emptying(&running, &allowed).is_ok());
        // Nothing to lose: an empty file may stay empty.
        let empty = settings("", "", "");
        assert!(refuse_emptying(&empty, &settings("", "", "")).is_ok());
    }

    #[test]
    fn only_a_closed_write_a_rename_or_a_new_link_means_the_file_is_complete() {
        use notify::event::{CreateKind, DataChange, RenameMode};
        let none: &[PathBuf] = &[];
        assert!(is_complete(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            none
        ));
        assert!(is_complete(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            none
        ));
        assert!(!is_complete(
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            none
        ));
        assert!(!is_complete(EventKind::Modify(ModifyKind::Any), none));
        assert!(!is_complete(EventKind::Create(CreateKind::File), none));
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("config.yaml");
        std::os::unix::fs::symlink(dir.path().join("elsewhere.yaml"), &link).unwrap();
        assert!(is_complete(EventKind::Create(CreateKind::Any), &[link]));
    }
}
