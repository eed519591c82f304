//! Log files that do not fill the page cache.
//!
//! A gateway writes hundreds of bytes of log and audit trail per request: at 100,000 requests
//! a second, about 80 MB a second. Left to the kernel, every written page stays cached until
//! memory runs short. The cache grows by gigabytes of log nobody reads again. It is counted
//! against the container's memory limit and pushes out pages worth keeping. And every page
//! written is a page newly taken from free memory, which costs more than the copy into it:
//! on the virtual machine the benches ran on, appending 1 GB took 3.4–3.7 s of system time,
//! and overwriting cached pages 0.08 s.
//!
//! [`Trimmed`] wraps a log file. Every [`STEP`] written, it asks the kernel to start writing
//! back what lies more than a step behind the end of the file, and drops from the cache what
//! already went to disk (`posix_fadvise(POSIX_FADV_DONTNEED)`, which never discards data that
//! is not yet on disk). So a log file keeps a few steps cached (a reader following the
//! file's end still reads from memory), and the pages dropped are reused for the next ones.
//! Appending 1 GB that way took 0.36–0.45 s of system time on the same machine, writing back
//! included. When the file is closed at shutdown, what is left is written, waited for, and
//! dropped. A file rotated aside is not waited for (the writer thread must not stall on the
//! disk): [`Trimmed::trim_all`] starts its writeback, and closing it in the background a
//! rotation later, long written by then, drops it.
//!
//! Only regular files are trimmed: a pipe, a terminal or `/dev/null` is written as is.
//!
//! [`Direct`] goes further for a file its writer owns (the audit trail's): it writes whole
//! blocks with `O_DIRECT`, past the cache, and only the partial last block through it; where
//! direct writes are not taken, it writes a [`Trimmed`] file.

use std::io::{self, Write};
#[cfg(target_os = "linux")]
use std::num::NonZeroU64;
use std::os::fd::AsFd;

mod direct;
pub use direct::Direct;

/// How much is written between two trims, and how much at the file's end stays cached.
pub const STEP: u64 = 16 * 1024 * 1024;

/// A log file whose written pages are handed to the disk and dropped from the page cache a
/// few [`STEP`]s behind its end (see the module's documentation).
pub struct Trimmed<W: Write + AsFd> {
    inner: W,
    /// Whether `inner` is a regular file (only those are trimmed).
    regular: bool,
    /// Bytes written since the last trim.
    since: u64,
    /// Where the last trim ended: everything before was advised at least once.
    trimmed_to: u64,
    /// Whether closing waits for what is left to reach the disk.
    wait_on_close: bool,
}

impl<W: Write + AsFd> Trimmed<W> {
    /// Wrap `inner`: trimmed when it is a regular file, written as is otherwise.
    pub fn new(inner: W) -> Trimmed<W> {
        let regular = is_regular(&inner);
        Trimmed {
            inner,
            regular,
            since: 0,
            trimmed_to: 0,
            wait_on_close: true,
        }
    }

    /// The file written to.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Start the writeback of the whole file and drop what is already on disk, without
    /// waiting (a file just rotated aside).
    pub fn trim_all(&mut self) {
        if self.regular {
            let _ = self.inner.flush();
            drop_cached(&self.inner, 0, None);
        }
    }

    /// Close without waiting for the disk: [`Trimmed::trim_all`], then close.
    pub fn close_in_background(mut self) {
        self.wait_on_close = false;
    }

    /// Trim once a step has been written since the last time.
    fn step(&mut self) {
        if !self.regular || self.since < STEP {
            return;
        }
        self.since = 0;
        let Some(end) = position(&self.inner) else {
            return;
        };
        let to = end.saturating_sub(STEP);
        // Each range is advised in three trims running: the first starts its writeback, a
        // later one finds it written and drops it.
        let from = self.trimmed_to.saturating_sub(2 * STEP).min(to);
        drop_cached(&self.inner, from, Some(to - from));
        self.trimmed_to = to;
    }

    /// Write back what is left (waiting for it unless closed in the background), and drop
    /// what is on disk from the cache.
    fn finish(&mut self) {
        if !self.regular {
            return;
        }
        let _ = self.inner.flush();
        if self.wait_on_close {
            sync_data(&self.inner);
        }
        drop_cached(&self.inner, 0, None);
    }
}

impl<W: Write + AsFd> Write for Trimmed<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.since += written as u64;
        Ok(written)
    }

    /// Flush, then trim when a step has been written since the last trim. The writer thread
    /// flushes after each batch, so trims come between batches.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()?;
        self.step();
        Ok(())
    }
}

impl<W: Write + AsFd> Drop for Trimmed<W> {
    fn drop(&mut self) {
        self.finish();
    }
}

fn is_regular(file: &impl AsFd) -> bool {
    #[cfg(target_os = "linux")]
    {
        rustix::fs::fstat(file)
            .map(|stat| rustix::fs::FileType::from_raw_mode(stat.st_mode).is_file())
            .unwrap_or(false)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        false
    }
}

/// The file offset: the end of what was last appended.
fn position(file: &impl AsFd) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        rustix::fs::tell(file).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        None
    }
}

/// `POSIX_FADV_DONTNEED` over `len` bytes from `from` (to the end when `None`): starts the
/// writeback of dirty pages there and drops the clean ones. Advice: a failure changes
/// nothing written, so it is ignored.
fn drop_cached(file: &impl AsFd, from: u64, len: Option<u64>) {
    #[cfg(target_os = "linux")]
    {
        let len = match len {
            Some(len) => match NonZeroU64::new(len) {
                Some(len) => Some(len),
                None => return,
            },
            None => None,
        };
        let _ = rustix::fs::fadvise(file, from, len, rustix::fs::Advice::DontNeed);
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, from, len);
    }
}

fn sync_data(file: &impl AsFd) {
    #[cfg(target_os = "linux")]
    {
        let _ = rustix::fs::fdatasync(file);
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
    }
}

/// How many bytes of the file at `path` are in the page cache, and its length, as `fincore`
/// (util-linux) counts them: with `mincore` or `cachestat`, which look without reading. (A
/// read that must not wait, `RWF_NOWAIT`, is no probe: a miss still starts the read, and a fast
/// disk answers it before the check is over.)
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn resident(path: &std::path::Path) -> (u64, u64) {
    let output = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .expect("fincore runs (Debian: apt-get install util-linux-extra)");
    assert!(
        output.status.success(),
        "fincore {}: {output:?}",
        path.display()
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let cached = text.trim().parse().expect("fincore prints a byte count");
    (cached, std::fs::metadata(path).unwrap().len())
}

/// A new directory on the disk the repository is on: a `tmpfs` /tmp keeps its pages whatever
/// the advice, and takes no direct writes.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn on_disk(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_MANIFEST_DIR"))
        .unwrap()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::fs::File;

    /// What a writer thread does: batches of whole lines, a flush after each.
    fn write_batches(sink: &mut impl Write, bytes: u64) {
        let line = [b'x'; 255]
            .iter()
            .copied()
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        let batch = line.repeat(1024);
        let mut written = 0;
        while written < bytes {
            sink.write_all(&batch).unwrap();
            sink.flush().unwrap();
            written += batch.len() as u64;
        }
    }

    /// A new file in `dir`, and a [`Trimmed`] writing to it through a second handle (the
    /// first stays free for `sync_data`).
    fn trimmed_file(
        dir: &tempfile::TempDir,
        name: &str,
    ) -> (std::path::PathBuf, File, Trimmed<File>) {
        let path = dir.path().join(name);
        let file = File::create(&path).unwrap();
        let trimmed = Trimmed::new(file.try_clone().unwrap());
        (path, file, trimmed)
    }

    fn directory() -> tempfile::TempDir {
        on_disk(".page-cache-test")
    }

    #[test]
    fn a_closed_log_file_is_on_disk_and_out_of_the_page_cache() {
        let dir = directory();
        let path = dir.path().join("trimmed.log");
        let mut trimmed = Trimmed::new(File::create(&path).unwrap());
        write_batches(&mut trimmed, 6 * STEP);
        drop(trimmed);
        let (cached, length) = resident(&path);
        assert!(length >= 6 * STEP);
        assert_eq!(cached, 0, "{cached} of {length} bytes still cached");

        // The same lines through the file alone stay cached: what the check above relies on.
        let plain = dir.path().join("plain.log");
        write_batches(&mut File::create(&plain).unwrap(), 6 * STEP);
        let (cached, length) = resident(&plain);
        assert!(
            cached * 10 >= length * 9,
            "{cached} of {length} bytes cached"
        );
    }

    #[test]
    fn an_open_log_file_keeps_only_its_last_steps_cached() {
        let dir = directory();
        let (path, file, mut trimmed) = trimmed_file(&dir, "open.log");
        write_batches(&mut trimmed, 4 * STEP);
        // What the first trims left dirty is now written: the next trims drop it.
        file.sync_data().unwrap();
        write_batches(&mut trimmed, 4 * STEP);
        let (cached, length) = resident(&path);
        // Eight steps written; the last two (and pages still being written) may stay, and
        // the newest step, which a reader following the file wants, is never advised.
        assert!(cached <= 5 * STEP, "{cached} of {length} bytes cached");
        assert!(cached >= STEP, "{cached} of {length} bytes cached");
    }

    #[test]
    fn a_file_closed_in_the_background_drops_what_is_already_on_disk() {
        let dir = directory();
        let (path, file, mut trimmed) = trimmed_file(&dir, "rotated.log");
        // Less than the steps a trim keeps: nothing dropped while the file is open.
        write_batches(&mut trimmed, STEP);
        file.sync_data().unwrap();
        let (cached, length) = resident(&path);
        assert_eq!(cached, length, "dropped before the file was closed");
        trimmed.close_in_background();
        let (cached, length) = resident(&path);
        assert_eq!(cached, 0, "{cached} of {length} bytes still cached");
    }

    #[test]
    fn a_pipe_is_written_as_is() {
        let (reader, writer) = std::io::pipe().unwrap();
        let mut trimmed = Trimmed::new(writer);
        assert!(!trimmed.regular);
        trimmed.write_all(b"a line\n").unwrap();
        trimmed.flush().unwrap();
        drop(trimmed);
        let mut read = String::new();
        io::Read::read_to_string(&mut { reader }, &mut read).unwrap();
        assert_eq!(read, "a line\n");
    }
}
