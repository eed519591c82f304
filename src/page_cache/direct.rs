//! A log file written around the page cache.
//!
//! [`Direct`] gathers what is written and writes it by whole blocks with `O_DIRECT`: straight
//! from its buffer to the disk, no page cache page taken, filled, written back or dropped. The
//! partial last block is appended through the page cache at each flush, so a reader (`tail
//! -f`, a collector) sees every flushed line at once and never sees padding. The next direct
//! write covering that block has the kernel write the one cached page back and drop it first.
//! So at most one page of the file is ever cached, and closing it writes back and drops that.
//!
//! Mixing the two is safe because the kernel orders them: before a direct write it writes
//! back and drops the cached pages in its range, and a direct write it cannot order so
//! (ext4: a page it cannot drop) is made through the page cache instead.
//!
//! That saves what a trimmed file ([`super::Trimmed`]) still pays per byte. On the virtual
//! machine the benches ran on, under `wrk` on cache hits, a token's audit event (381 bytes)
//! cost the writer thread 0.27–0.39 µs through the page cache, trimmed, and 0.18–0.24 µs with
//! direct writes (README "Log files and the page cache"). Holding the partial block back while
//! batches keep coming, instead of appending it at each flush, saved nothing measurable, so
//! every flush leaves the file complete.
//!
//! The direct writes go to offsets the writer keeps. Before each batch's, it checks that the
//! file still ends where it left it (one `fstat`): a file truncated under it (`logrotate`'s
//! `copytruncate`) or appended to by someone else is continued from its new end. That suits a
//! file the writer owns (the audit trail's), not one written by others all the time: a line
//! appended between the check and the write would be overwritten. Standard error may be
//! shared so, and the log stays [`super::Trimmed`].
//!
//! Where the filesystem takes no direct writes (`tmpfs`; `statx` reports no alignment; a
//! pipe or a device is no regular file), or refuses one later (`EINVAL`), the file is written
//! through the page cache, trimmed, as before; nothing written is lost on the way.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::Trimmed;

/// What is gathered before a direct write must be made: the largest direct write.
const GATHER_BYTES: usize = 1024 * 1024;

/// The largest block (the direct writes' alignment) taken; a filesystem asking for more is
/// written through the page cache.
const MAX_BLOCK: usize = 64 * 1024;

/// A log file written by whole blocks with `O_DIRECT`, its partial last block through the
/// page cache (see the module's documentation). It keeps the file's end itself, and follows
/// the file when it is truncated or appended to between two batches.
pub struct Direct {
    /// The file opened for appending, through the page cache: the partial last block, and
    /// everything once direct writes are refused (trimmed then).
    buffered: Trimmed<File>,
    /// The same file opened with `O_DIRECT`; `None` when direct writes are not to be made.
    direct: Option<File>,
    /// Where the file is: its partial last block is read back from there.
    path: PathBuf,
    /// What every direct write's offset, length and memory address is a multiple of.
    block: usize,
    /// Holds the gathered bytes at `memory[start..start + GATHER_BYTES]`, `start` making
    /// them block-aligned. Never grown, so never moved.
    memory: Vec<u8>,
    start: usize,
    /// How many bytes are gathered.
    held: usize,
    /// The file offset of the first gathered byte: a multiple of `block`.
    base: u64,
    /// The file's length. What is gathered below it is already in the file (the partial
    /// last block, appended at the last flush).
    end: u64,
}

impl Direct {
    /// Write `file`, the file at `path` opened for appending, around the page cache when its
    /// filesystem takes direct writes, and through the page cache, trimmed, otherwise. The
    /// partial last block of what the file holds already is read back to be rewritten whole.
    pub fn new(file: File, path: &Path) -> Direct {
        let end = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
        let mut this = Direct {
            buffered: Trimmed::new(file),
            direct: None,
            path: path.to_path_buf(),
            block: 1,
            memory: Vec::new(),
            start: 0,
            held: 0,
            base: end,
            end,
        };
        if this.buffered.regular
            && let Some((direct, block)) = open_direct(this.buffered.get_ref(), path)
        {
            let memory = vec![0; GATHER_BYTES + block];
            let start = memory.as_ptr().align_offset(block);
            if start < block && GATHER_BYTES.is_multiple_of(block) {
                this.memory = memory;
                this.start = start;
                this.block = block;
                this.direct = Some(direct);
                this.continue_from(end);
            }
        }
        this
    }

    /// Go on after the file's first `length` bytes: its partial last block is read back, to
    /// be rewritten whole by the next direct write. When it cannot be read back, the file is
    /// written through the page cache from there.
    fn continue_from(&mut self, length: u64) {
        let base = length - length % self.block as u64;
        let held = (length - base) as usize;
        let tail = &mut self.memory[self.start..self.start + held];
        match read_tail(&self.path, self.buffered.get_ref(), base, tail) {
            Ok(()) => {
                self.base = base;
                self.held = held;
                self.end = length;
            }
            Err(error) => {
                self.end = length;
                self.stop_direct(&error);
            }
        }
    }

    /// Write through the page cache from now on; what was gathered is in the file already.
    fn stop_direct(&mut self, why: &io::Error) {
        tracing::warn!(
            error = %why,
            "a log file cannot be written with direct writes; it is written through the page cache from now on"
        );
        self.direct = None;
        self.memory = Vec::new();
        self.start = 0;
        self.held = 0;
        self.base = self.end;
    }

    /// Whether whole blocks are written with `O_DIRECT` (not through the page cache).
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Start the writeback of what is cached of the file, and drop what is on disk, without
    /// waiting (a file just rotated aside): see [`Trimmed::trim_all`].
    pub fn trim_all(&mut self) {
        let _ = self.flush();
        self.buffered.trim_all();
    }

    /// Close without waiting for the disk: what is gathered is written, what is cached
    /// dropped once on disk.
    pub fn close_in_background(mut self) {
        self.buffered.wait_on_close = false;
    }

    /// Write the whole blocks gathered with direct writes, and keep the partial last one
    /// gathered. When a direct write is refused, everything not yet in the file is appended
    /// through the page cache instead, and so is everything after.
    fn write_blocks(&mut self) -> io::Result<()> {
        if self.direct.is_none() {
            return Ok(());
        }
        self.follow_the_file()?;
        let Some(direct) = &self.direct else {
            return Ok(());
        };
        let whole = self.held - self.held % self.block;
        let mut done = 0;
        let refused = loop {
            if done == whole {
                break None;
            }
            let blocks = &self.memory[self.start + done..self.start + whole];
            match write_at(direct, blocks, self.base + done as u64) {
                Ok(0) => break Some(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(written) => {
                    done += written;
                    self.end = self.end.max(self.base + done as u64);
                    if !written.is_multiple_of(self.block) {
                        // A short write off the block: what follows cannot be aligned.
                        break Some(io::Error::from(io::ErrorKind::InvalidInput));
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == io::ErrorKind::InvalidInput => break Some(error),
                Err(error) => {
                    // The disk failed (full, an I/O error): what was not written stays
                    // gathered, to be written by the next flush.
                    self.consume(done);
                    return Err(error);
                }
            }
        };
        match refused {
            None => {
                self.consume(done);
                Ok(())
            }
            Some(error) => {
                // Written first, so that nothing gathered is left behind; on a failure the
                // next flush tries again.
                self.append_rest()?;
                self.stop_direct(&error);
                Ok(())
            }
        }
    }

    /// Make sure the file still ends where it was left. When it was truncated (`logrotate`'s
    /// `copytruncate`) or appended to by another writer, what is not yet in the file is
    /// appended where the file now ends, and the direct writes go on from there: one at the
    /// old end would leave a hole of zeros, or overwrite the other writer's lines.
    fn follow_the_file(&mut self) -> io::Result<()> {
        let length = self.buffered.get_ref().metadata()?.len();
        if length == self.end {
            return Ok(());
        }
        self.append_rest()?;
        let length = self.buffered.get_ref().metadata()?.len();
        self.continue_from(length);
        Ok(())
    }

    /// Drop the first `written` gathered bytes (a multiple of the block), now in the file.
    fn consume(&mut self, written: usize) {
        let written = written - written % self.block;
        let range = self.start + written..self.start + self.held;
        self.memory.copy_within(range, self.start);
        self.held -= written;
        self.base += written as u64;
    }

    /// Append, through the page cache, what is gathered and not yet in the file.
    fn append_rest(&mut self) -> io::Result<()> {
        let mut from = (self.end - self.base) as usize;
        while from < self.held {
            let written = self
                .buffered
                .write(&self.memory[self.start + from..self.start + self.held])?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            from += written;
            self.end = self.base + from as u64;
        }
        Ok(())
    }
}

impl Write for Direct {
    /// Gather `bytes` (as much as there is room for), writing the whole blocks gathered first
    /// when there is no room left.
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.direct.is_none() {
            return self.buffered.write(bytes);
        }
        if self.held == GATHER_BYTES {
            self.write_blocks()?;
            if self.direct.is_none() {
                return self.buffered.write(bytes);
            }
        }
        let taken = bytes.len().min(GATHER_BYTES - self.held);
        let at = self.start + self.held;
        self.memory[at..at + taken].copy_from_slice(&bytes[..taken]);
        self.held += taken;
        Ok(taken)
    }

    /// Write the whole blocks gathered with direct writes and append the partial last one
    /// through the page cache: every byte written so far is in the file.
    fn flush(&mut self) -> io::Result<()> {
        if self.direct.is_some() {
            self.write_blocks()?;
            if self.direct.is_some() {
                self.append_rest()?;
            }
        }
        self.buffered.flush()
    }
}

impl Drop for Direct {
    /// What is gathered is written; then `buffered`, dropped, writes back (and waits, unless
    /// closed in the background) and drops what is cached.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("direct", &self.direct.is_some())
            .field("block", &self.block)
            .field("base", &self.base)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

fn write_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<usize> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_at(file, bytes, offset)
    }
    #[cfg(not(unix))]
    {
        let _ = (file, bytes, offset);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// The file at `path` opened for direct writes, and the block its writes must be aligned
/// to: `None` unless it is `file` (the same inode) and its filesystem takes direct writes.
#[cfg(target_os = "linux")]
fn open_direct(file: &File, path: &Path) -> Option<(File, usize)> {
    use rustix::fs::{AtFlags, OFlags, StatxFlags};
    use std::os::unix::fs::OpenOptionsExt;

    let direct = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(OFlags::DIRECT.bits() as i32)
        .open(path)
        .ok()?;
    if !same_file(file, &direct).ok()? {
        return None;
    }
    let stat = rustix::fs::statx(
        &direct,
        "",
        AtFlags::EMPTY_PATH,
        StatxFlags::DIOALIGN | StatxFlags::BASIC_STATS,
    )
    .ok()?;
    if !StatxFlags::from_bits_retain(stat.stx_mask).contains(StatxFlags::DIOALIGN)
        || stat.stx_dio_offset_align == 0
        || stat.stx_dio_mem_align == 0
    {
        return None;
    }
    // Whole filesystem blocks: a direct write inside one would have it read and zeroed.
    let block = stat
        .stx_dio_offset_align
        .max(stat.stx_dio_mem_align)
        .max(stat.stx_blksize) as usize;
    (block.is_power_of_two() && block <= MAX_BLOCK).then_some((direct, block))
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_file: &File, _path: &Path) -> Option<(File, usize)> {
    None
}

/// Read the file's bytes from `base` into `tail` (to its end), through a read-only handle
/// on the same inode as `file`.
fn read_tail(path: &Path, file: &File, base: u64, tail: &mut [u8]) -> io::Result<()> {
    if tail.is_empty() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        let reader = File::open(path)?;
        if !same_file(file, &reader)? {
            return Err(io::ErrorKind::NotFound.into());
        }
        reader.read_exact_at(tail, base)
    }
    #[cfg(not(unix))]
    {
        let _ = (path, file, base);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Whether `a` and `b` are handles on the same inode (the path was not replaced between two
/// opens).
#[cfg(unix)]
fn same_file(a: &File, b: &File) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (a.metadata()?, b.metadata()?);
    Ok((a.dev(), a.ino()) == (b.dev(), b.ino()))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::super::{on_disk, resident};
    use super::*;
    use std::fs::OpenOptions;
    use std::path::PathBuf;

    // On the repository's disk, which takes direct writes (a `tmpfs` /tmp would not).
    fn directory() -> tempfile::TempDir {
        on_disk(".direct-test")
    }

    fn append(path: &Path) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
    }

    fn open(path: &Path) -> Direct {
        Direct::new(append(path), path)
    }

    /// A small deterministic generator (xorshift), so that a failure can be replayed.
    struct Sizes(u64);

    impl Sizes {
        fn next(&mut self, below: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % below as u64) as usize
        }
    }

    /// `count` numbered lines of varying lengths, as a writer thread's batch holds them.
    fn lines(first: usize, count: usize, sizes: &mut Sizes) -> Vec<u8> {
        let mut batch = Vec::new();
        for n in first..first + count {
            let pad = sizes.next(600);
            batch.extend_from_slice(format!("{n:08} {}\n", "x".repeat(pad)).as_bytes());
        }
        batch
    }

    /// Write batches of random sizes (empty ones, single short lines, several megabytes),
    /// flushing after each as the writer thread does, and check after every flush that the
    /// file holds exactly what was written. Returns everything written.
    fn write_and_check(direct: &mut Direct, path: &Path, seed: u64, batches: usize) -> Vec<u8> {
        let mut sizes = Sizes(seed);
        let mut expected = std::fs::read(path).unwrap_or_default();
        let mut number = 0;
        for round in 0..batches {
            let count = match sizes.next(10) {
                0 => 0,
                1..=5 => 1 + sizes.next(8),
                6..=8 => 1 + sizes.next(3000),
                _ => 1 + sizes.next(12_000),
            };
            let batch = lines(number, count, &mut sizes);
            number += count;
            // In pieces, as the writer thread hands over one slot's buffer at a time.
            let cut = if batch.is_empty() {
                0
            } else {
                sizes.next(batch.len())
            };
            direct.write_all(&batch[..cut]).unwrap();
            direct.write_all(&batch[cut..]).unwrap();
            direct.flush().unwrap();
            expected.extend_from_slice(&batch);
            let read = std::fs::read(path).unwrap();
            assert!(
                read == expected,
                "after batch {round} (seed {seed}): the file holds {} bytes, {} were written",
                read.len(),
                expected.len()
            );
        }
        expected
    }

    #[test]
    fn batches_of_any_size_are_in_the_file_after_each_flush() {
        let dir = directory();
        let path = dir.path().join("trail.log");
        let mut direct = open(&path);
        assert!(
            direct.is_direct(),
            "the repository's disk takes direct writes: {direct:?}"
        );
        let written = write_and_check(&mut direct, &path, 0x5eed, 120);
        assert!(written.len() > 8 * GATHER_BYTES, "{} bytes", written.len());
        drop(direct);
        assert_eq!(std::fs::read(&path).unwrap(), written);
    }

    #[test]
    fn at_most_the_partial_last_block_is_cached_and_nothing_once_closed() {
        let dir = directory();
        let path = dir.path().join("trail.log");
        let mut direct = open(&path);
        assert!(direct.is_direct());
        let batch = lines(0, 4000, &mut Sizes(7));
        for _ in 0..40 {
            direct.write_all(&batch).unwrap();
            direct.flush().unwrap();
        }
        let (cached, length) = resident(&path);
        assert!(length >= 40 * batch.len() as u64);
        assert!(
            cached <= direct.block as u64,
            "{cached} of {length} bytes cached (block {})",
            direct.block
        );
        drop(direct);
        let (cached, length) = resident(&path);
        assert_eq!(cached, 0, "{cached} of {length} bytes still cached");

        // The same batches through the page cache stay there: what the check relies on.
        let plain = dir.path().join("plain.log");
        let mut file = append(&plain);
        for _ in 0..40 {
            file.write_all(&batch).unwrap();
        }
        let (cached, length) = resident(&plain);
        assert!(
            cached * 10 >= length * 9,
            "{cached} of {length} bytes cached"
        );
    }

    #[test]
    fn a_file_reopened_is_continued_after_its_partial_last_block() {
        let dir = directory();
        let path = dir.path().join("trail.log");
        let mut first = open(&path);
        write_and_check(&mut first, &path, 11, 20);
        drop(first);
        let before = std::fs::metadata(&path).unwrap().len();
        let mut again = open(&path);
        assert!(again.is_direct());
        assert_ne!(before % again.block as u64, 0, "ends inside a block");
        let written = write_and_check(&mut again, &path, 12, 20);
        drop(again);
        assert_eq!(std::fs::read(&path).unwrap(), written);
    }

    #[test]
    fn a_file_truncated_under_the_writer_is_continued_from_its_new_end_without_a_hole() {
        let dir = directory();
        let path = dir.path().join("trail.log");
        let mut direct = open(&path);
        write_and_check(&mut direct, &path, 41, 10);
        // What `logrotate`'s `copytruncate` does once it has copied the file.
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        let written = write_and_check(&mut direct, &path, 42, 10);
        assert!(direct.is_direct());
        drop(direct);
        assert_eq!(std::fs::read(&path).unwrap(), written);
    }

    #[test]
    fn lines_another_writer_appends_are_kept_and_written_after() {
        let dir = directory();
        let path = dir.path().join("trail.log");
        let mut direct = open(&path);
        write_and_check(&mut direct, &path, 51, 10);
        append(&path)
            .write_all(b"a line from another writer\n")
            .unwrap();
        let written = write_and_check(&mut direct, &path, 52, 10);
        assert!(direct.is_direct());
        drop(direct);
        let file = std::fs::read(&path).unwrap();
        assert_eq!(file, written);
        assert!(
            file.windows(27)
                .any(|w| w == b"a line from another writer\n"),
            "the other writer's line was overwritten"
        );
    }

    #[test]
    fn a_refused_direct_write_falls_back_to_the_page_cache_losing_nothing() {
        let dir = directory();
        let path = dir.path().join("trail.log");
        let mut direct = open(&path);
        let mut expected = write_and_check(&mut direct, &path, 21, 5);
        assert!(direct.is_direct());
        // An alignment the disk does not take: the next direct write is refused (EINVAL).
        direct.block = 1;
        let mut sizes = Sizes(22);
        let batch = lines(0, 2000, &mut sizes);
        direct.write_all(&batch).unwrap();
        direct.flush().unwrap();
        expected.extend_from_slice(&batch);
        assert!(!direct.is_direct(), "{direct:?}");
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        let written = write_and_check(&mut direct, &path, 23, 10);
        drop(direct);
        assert_eq!(std::fs::read(&path).unwrap(), written);
    }

    #[test]
    fn a_file_on_a_filesystem_without_direct_writes_is_written_through_the_page_cache() {
        // /dev/shm is a tmpfs on Linux: its pages are its storage.
        let Ok(dir) = tempfile::Builder::new()
            .prefix(".direct-test")
            .tempdir_in("/dev/shm")
        else {
            panic!("/dev/shm is a tmpfs on Linux");
        };
        let path: PathBuf = dir.path().join("trail.log");
        let mut direct = open(&path);
        assert!(!direct.is_direct(), "{direct:?}");
        let written = write_and_check(&mut direct, &path, 31, 20);
        drop(direct);
        assert_eq!(std::fs::read(&path).unwrap(), written);
    }

    #[test]
    fn a_pipe_is_written_as_is() {
        let (reader, writer) = std::io::pipe().unwrap();
        let reader = std::thread::spawn(move || {
            let mut read = Vec::new();
            io::Read::read_to_end(&mut { reader }, &mut read).unwrap();
            read
        });
        let fd = std::os::fd::OwnedFd::from(writer);
        let mut direct = Direct::new(File::from(fd), Path::new("/dev/null"));
        assert!(!direct.is_direct());
        direct.write_all(b"a line\n").unwrap();
        direct.flush().unwrap();
        drop(direct);
        assert_eq!(reader.join().unwrap(), b"a line\n");
    }
}
