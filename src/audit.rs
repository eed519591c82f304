//! The token audit trail: one JSON event each time a request is given a token, so that an
//! operator can answer "who was given access to what, and when".
//!
//! An event names the token by an id (the first 12 hex digits of its SHA-256), never by the
//! token itself, and says whether it was minted for the request or reused from the cache.
//! Events are written off the request path like log lines (see [`crate::log_writer`]): to
//! stderr, in the log's stream, or to a file of their own that is rotated by size. When the
//! sink cannot keep up, events are dropped and counted ([`dropped_events`], exported as
//! `streamgate_audit_events_dropped_total`) rather than stalling the gateway.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::log_writer::{self, LogGuard, LogWriter, log_field};
use crate::page_cache::Direct;
use crate::token::IssuedToken;
use crate::token::claims::VideoUid;

/// How many audit events were dropped because the sink could not keep up, since the
/// process started.
pub fn dropped_events() -> u64 {
    log_writer::dropped_audit_events()
}

/// Where the events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    /// Standard error, interleaved with the log (always JSON, whatever the log format).
    Stderr,
    /// A file of its own (mode 0600), renamed to `<path>.1` once it holds `max_file_bytes`,
    /// keeping `keep_files` old files (`<path>.1` is the newest).
    File {
        path: PathBuf,
        max_file_bytes: u64,
        keep_files: usize,
    },
}

/// Why the audit trail could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit trail file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the audit trail's writer thread")]
    Writer(#[source] io::Error),
}

/// How a request came by its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A 302 to the signed Stream URL.
    Redirect,
    /// The gateway fetched Stream with it; the viewer never saw it.
    Proxy,
    /// `/api/getSignedURL`: handed to the caller.
    Api,
    /// Stream's token API, answered by the gateway.
    TokenApi,
}

impl Via {
    /// `"via":<how>`, as JSON members.
    fn members(self) -> &'static str {
        match self {
            Via::Redirect => r#""via":"redirect""#,
            Via::Proxy => r#""via":"proxy""#,
            Via::Api => r#""via":"api""#,
            Via::TokenApi => r#""via":"token_api""#,
        }
    }
}

/// Who was given which token, for what.
#[derive(Debug, Clone, Copy)]
pub struct TokenEvent<'a> {
    /// When: the event's timestamp.
    pub at: std::time::SystemTime,
    pub token: &'a IssuedToken,
    /// Whether the token was made for another request first (a cache hit).
    pub reused: bool,
    /// Who, as JSON members: `"subject":<label>,"source":<anonymous, api_key, basic or
    /// jwt>` and, for a JWT, `"issuer":<iss>` (made once per principal; see
    /// `identity::Principal::audit_json`).
    pub who: &'a str,
    pub video_uid: &'a VideoUid,
    pub video_alias: &'a str,
    /// The rule that allowed it.
    pub rule: &'a str,
    /// The viewer's address.
    pub client: IpAddr,
    /// The request's id, as its `X-Request-Id` value holds it (plain by construction).
    pub request_id: &'a [u8],
    pub via: Via,
}

/// The open audit trail. Dropping it (or [`AuditTrail::close`]) writes every event recorded
/// before.
pub struct AuditTrail {
    writer: Writer,
    guard: Mutex<Option<LogGuard>>,
}

enum Writer {
    /// A writer thread of its own.
    Own(LogWriter),
    /// The log's own stderr buffer, so events and log lines keep their order.
    Log(&'static log_writer::Direct),
}

impl std::fmt::Debug for AuditTrail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditTrail").finish_non_exhaustive()
    }
}

impl AuditTrail {
    /// Open `sink`. `Err` when the file cannot be opened for appending (or its directory
    /// made), or the writer thread cannot start.
    pub fn open(sink: &AuditSink) -> Result<AuditTrail, AuditError> {
        match sink {
            AuditSink::Stderr => {
                if let Some(direct) = log_writer::direct() {
                    return Ok(AuditTrail {
                        writer: Writer::Log(direct),
                        guard: Mutex::new(None),
                    });
                }
                Self::spawn(io::stderr())
            }
            AuditSink::File {
                path,
                max_file_bytes,
                keep_files,
            } => Self::spawn(RotatingFile::open(path, *max_file_bytes, *keep_files)?),
        }
    }

    fn spawn<W: Write + Send + 'static>(sink: W) -> Result<AuditTrail, AuditError> {
        let (writer, guard) = log_writer::spawn_counted(
            sink,
            log_writer::QUEUE_BYTES,
            &log_writer::AUDIT_DROPPED,
            "audit-writer",
        )
        .map_err(AuditError::Writer)?;
        Ok(AuditTrail {
            writer: Writer::Own(writer),
            guard: Mutex::new(Some(guard)),
        })
    }

    /// Record that a request was given a token.
    pub fn token(&self, event: &TokenEvent<'_>) {
        let id = event.token.audit_id();
        // What is the same from event to event is joined once and copied here: formatting
        // field by field cost as much as the rest of a cache hit.
        let fill = |record: &mut log_writer::Record<'_>| {
            record
                .members(if event.reused {
                    r#""event":"token","reused":true"#
                } else {
                    r#""event":"token","reused":false"#
                })
                .members(&id.json)
                .members(event.who)
                // Plain by construction: a uid is hex, an alias validated at load, a request
                // id generated or kept only when plain.
                .plain_bytes(log_field!("video"), event.video_uid.as_bytes())
                .plain(log_field!("alias"), event.video_alias)
                .str(log_field!("rule"), event.rule)
                .ip(log_field!("client"), event.client)
                .plain_bytes(log_field!("request_id"), event.request_id)
                .members(event.via.members());
        };
        match &self.writer {
            Writer::Own(writer) => writer.json_event(event.at, fill),
            Writer::Log(direct) => direct.json_event(event.at, fill),
        }
    }

    /// Write and flush every event recorded so far and stop the writer thread. Events
    /// recorded after this go straight to stderr.
    pub fn close(&self) {
        let guard = self
            .guard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(guard);
    }
}

/// A file that is renamed aside once it holds `max_bytes`. The writer thread writes whole
/// batches of lines and flushes after each, and rotation happens only at a flush, so no
/// event is ever split between two files. The file is written around the page cache, by
/// whole blocks with `O_DIRECT`, where its filesystem allows (`page_cache::Direct`). A path
/// that is not a regular file (a FIFO a collector reads, `/dev/null`, a terminal) is written
/// as it is and never renamed: renaming a device node aside and creating a file in its place
/// would take it from every other program.
struct RotatingFile {
    path: PathBuf,
    file: Direct,
    /// The file last rotated aside, until the next rotation drops it from the page cache.
    aside: Option<Direct>,
    written: u64,
    /// `None` when the path is not a regular file: never rotated.
    max_bytes: Option<u64>,
    keep: usize,
}

impl RotatingFile {
    fn open(path: &Path, max_bytes: u64, keep: usize) -> Result<RotatingFile, AuditError> {
        let open_error = |source| AuditError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(open_error)?;
        }
        let file = append_only(path).map_err(open_error)?;
        let metadata = file.metadata().map_err(open_error)?;
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file: Direct::new(file, path),
            aside: None,
            written: metadata.len(),
            max_bytes: metadata.is_file().then_some(max_bytes),
            keep,
        })
    }

    /// `<path>.<n>`.
    fn numbered(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// `<path>` → `<path>.1` → … → `<path>.<keep>` (the oldest is replaced), then a new
    /// `<path>`.
    fn rotate(&mut self) -> io::Result<()> {
        for n in (1..self.keep).rev() {
            let from = self.numbered(n);
            if from.exists() {
                std::fs::rename(&from, self.numbered(n + 1))?;
            }
        }
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            std::fs::rename(&self.path, self.numbered(1))?;
        }
        let file = Direct::new(append_only(&self.path)?, &self.path);
        let mut aside = std::mem::replace(&mut self.file, file);
        // Its writeback starts now, not waited for: the events behind must not wait on the
        // disk. It is held until the next rotation, long written by then, and dropped whole.
        aside.trim_all();
        if let Some(before) = self.aside.replace(aside) {
            before.close_in_background();
        }
        self.written = 0;
        Ok(())
    }
}

fn append_only(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Subjects and addresses: personal data, for the operator only.
        options.mode(0o600);
    }
    options.open(path)
}

impl Write for RotatingFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.file.write(bytes)?;
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.max_bytes.is_some_and(|max| self.written >= max)
            && let Err(error) = self.rotate()
        {
            // Keep appending to the file we have: an oversized file beats lost events.
            tracing::warn!(%error, "cannot rotate the audit trail file");
            self.written = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static UID: std::sync::LazyLock<VideoUid> =
        std::sync::LazyLock::new(|| "5d5bc37ffcf54c9b82e996823bffbb81".parse().unwrap());

    fn event(token: &IssuedToken, reused: bool) -> TokenEvent<'_> {
        TokenEvent {
            at: std::time::SystemTime::now(),
            token,
            reused,
            who: r#""subject":"user:bob","source":"basic""#,
            video_uid: &UID,
            video_alias: "keynote",
            rule: "members",
            client: "127.0.0.1".parse().unwrap(),
            request_id: b"r-1",
            via: Via::Redirect,
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
            .collect()
    }

    #[test]
    fn an_event_names_the_token_by_its_hash_and_never_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit").join("tokens.jsonl");
        let sink = AuditSink::File {
            path: path.clone(),
            max_file_bytes: 1 << 20,
            keep_files: 2,
        };
        let trail = AuditTrail::open(&sink).unwrap();
        let token = IssuedToken::new(
            "eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl".into(),
            1_800_000_000,
        )
        .signed_by("0123456789abcdef0123456789abcdef");
        trail.token(&event(&token, false));
        trail.token(&event(&token, true));
        trail.close();

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("eyJhbGci"), "the token itself: {text}");
        let events = lines(&path);
        assert_eq!(events.len(), 2);
        let first = &events[0];
        assert_eq!(first["event"], "token");
        assert_eq!(first["reused"], false);
        assert_eq!(events[1]["reused"], true);
        // sha256("eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl"), first 12 hex digits.
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            b"eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl",
        );
        let hex: String = digest.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(first["token_id"], hex.as_str());
        assert_eq!(first["expires"], "2027-01-15T08:00:00Z");
        assert_eq!(first["key_id"], "0123456789abcdef0123456789abcdef");
        assert_eq!(first["subject"], "user:bob");
        assert_eq!(first["source"], "basic");
        assert_eq!(first["video"], "5d5bc37ffcf54c9b82e996823bffbb81");
        assert_eq!(first["alias"], "keynote");
        assert_eq!(first["rule"], "members");
        assert_eq!(first["client"], "127.0.0.1");
        assert_eq!(first["via"], "redirect");
        assert!(first.get("issuer").is_none());
        assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_rotated_file_leaves_the_page_cache_at_the_next_rotation() {
        use crate::page_cache::{on_disk, resident};
        let dir = on_disk(".audit-test");
        let path = dir.path().join("tokens.jsonl");
        let mut file = RotatingFile::open(&path, 1 << 20, 3).unwrap();
        let line = format!("{}\n", "x".repeat(1023));
        let fill = |file: &mut RotatingFile| {
            for _ in 0..1024 {
                file.write_all(line.as_bytes()).unwrap();
            }
            // A MiB: this flush rotates.
            file.flush().unwrap();
        };
        fill(&mut file);
        // What the time until the next rotation gives it: written to the disk.
        File::open(file.numbered(1)).unwrap().sync_data().unwrap();
        fill(&mut file);
        let (cached, length) = resident(&file.numbered(2));
        assert_eq!(length, 1 << 20);
        assert_eq!(cached, 0, "{cached} of {length} bytes still cached");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_path_that_is_not_a_regular_file_is_written_and_never_renamed() {
        use rustix::fs::{CWD, FileType, Mode, mknodat};
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        // A FIFO a collector reads, standing in for `/dev/null` or a terminal.
        let path = dir.path().join("tokens.fifo");
        mknodat(CWD, &path, FileType::Fifo, Mode::RUSR | Mode::WUSR, 0).unwrap();
        // Reads until the last writer closes; its result is waited for with a bound, so a
        // descriptor left open fails the test rather than hanging it.
        let (collected_tx, collected_rx) = std::sync::mpsc::channel();
        {
            let path = path.clone();
            std::thread::spawn(move || {
                let _ = collected_tx.send(std::fs::read_to_string(path).unwrap());
            });
        }
        let mut file = RotatingFile::open(&path, 100, 2).unwrap();
        for n in 0..5 {
            // Each batch passes the limit a regular file rotates at.
            let line = format!("{}\n", n.to_string().repeat(150));
            file.write_all(line.as_bytes()).unwrap();
            file.flush().unwrap();
        }
        let first_aside = file.numbered(1);
        drop(file);
        let collected = collected_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the reader saw the end of the stream");
        assert_eq!(
            collected.lines().count(),
            5,
            "every batch reached the reader"
        );
        assert!(std::fs::metadata(&path).unwrap().file_type().is_fifo());
        assert!(!first_aside.exists(), "nothing was renamed aside");
    }

    #[test]
    fn the_file_is_rotated_by_size_keeping_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.jsonl");
        let mut file = RotatingFile::open(&path, 100, 2).unwrap();
        for n in 0..5 {
            // Each batch passes the limit, so each flush rotates.
            file.write_all(format!("{n}{}\n", "x".repeat(120)).as_bytes())
                .unwrap();
            file.flush().unwrap();
        }
        file.write_all(b"last\n").unwrap();
        file.flush().unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(path.clone()), "last\n");
        assert!(read(file.numbered(1)).starts_with('4'));
        assert!(read(file.numbered(2)).starts_with('3'));
        assert!(
            !file.numbered(3).exists(),
            "only keep_files old files are kept"
        );
    }

    #[test]
    fn an_existing_file_is_appended_to_and_counts_toward_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.jsonl");
        std::fs::write(&path, "x".repeat(90)).unwrap();
        let mut file = RotatingFile::open(&path, 100, 1).unwrap();
        file.write_all(b"0123456789\n").unwrap();
        file.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        assert_eq!(
            std::fs::read_to_string(file.numbered(1)).unwrap().len(),
            101
        );
    }
}
