//! The working memory of argon2 password checks, kept and reused.
//!
//! argon2id's default parameters need 19 MiB per check. Left to the argon2 crate, every
//! check allocates and frees that much, and glibc keeps what was freed in the pool of
//! whichever blocking thread ran the check: under a flood of wrong passwords the process grew
//! to 437–798 MiB and never gave it back. Here a check borrows a buffer from a free list and
//! returns it. Since a check runs only while it holds one of `max_password_checks` permits,
//! at most that many buffers ever exist, so the memory for password checks is at most
//! `max_password_checks × m` (the largest `m` of the configured hashes), whatever the
//! traffic. Buffers are allocated on first use and then kept for the life of the process
//! (a reload with the same sizes reuses them).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use argon2::password_hash::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Reusable argon2 working memory, one buffer per check running at once.
pub struct WorkingMemory {
    blocks_per_check: usize,
    free: Mutex<Vec<Box<[Block]>>>,
    allocated: AtomicUsize,
}

impl WorkingMemory {
    /// Memory for checking any of `hashes` (PHC strings) and hashes with the argon2 crate's
    /// default parameters (the dummy hash unknown users are checked against).
    pub fn for_hashes<'a>(hashes: impl IntoIterator<Item = &'a str>) -> Self {
        let blocks_per_check = hashes
            .into_iter()
            .filter_map(|phc| PasswordHash::new(phc).ok())
            .filter_map(|hash| Params::try_from(&hash).ok())
            .map(|params| params.block_count())
            .chain([Params::default().block_count()])
            .max()
            .unwrap_or_default();
        Self {
            blocks_per_check,
            free: Mutex::default(),
            allocated: AtomicUsize::new(0),
        }
    }

    /// Whether this memory fits checks of `other`'s hashes (so that it can replace it).
    pub fn fits(&self, other: &WorkingMemory) -> bool {
        self.blocks_per_check >= other.blocks_per_check
    }

    /// Keep at most `buffers` free buffers (after `max_password_checks` went down).
    pub fn keep_at_most(&self, buffers: usize) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        let dropped = free.len().saturating_sub(buffers);
        free.truncate(buffers);
        self.allocated.fetch_sub(dropped, Ordering::AcqRel);
    }

    /// How many buffers exist (free or in use).
    pub fn buffers(&self) -> usize {
        self.allocated.load(Ordering::Acquire)
    }

    /// Bytes of one buffer.
    pub fn bytes_per_check(&self) -> usize {
        self.blocks_per_check * std::mem::size_of::<Block>()
    }

    /// Whether `password` matches the argon2 PHC string `phc` (blocking: run it where the
    /// caller bounds concurrency). A string that does not parse matches nothing.
    pub fn verify(&self, phc: &str, password: &[u8]) -> bool {
        let Some(check) = Check::parse(phc) else {
            tracing::error!("a configured password hash is not a usable argon2 PHC string");
            return false;
        };
        let mut blocks = self.take();
        let matched = check.matches(password, &mut blocks);
        self.put(blocks);
        matched
    }

    fn take(&self) -> Box<[Block]> {
        let reused = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        reused.unwrap_or_else(|| {
            self.allocated.fetch_add(1, Ordering::AcqRel);
            vec![Block::default(); self.blocks_per_check].into_boxed_slice()
        })
    }

    fn put(&self, blocks: Box<[Block]>) {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(blocks);
    }
}

impl std::fmt::Debug for WorkingMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkingMemory")
            .field("bytes_per_check", &self.bytes_per_check())
            .field("buffers", &self.buffers())
            .finish()
    }
}

/// One PHC string, parsed for a check.
struct Check<'a> {
    hash: PasswordHash<'a>,
    argon2: Argon2<'static>,
    expected: Output,
}

impl<'a> Check<'a> {
    fn parse(phc: &'a str) -> Option<Self> {
        let hash = PasswordHash::new(phc).ok()?;
        let algorithm = Algorithm::try_from(hash.algorithm).ok()?;
        let version = match hash.version {
            Some(version) => Version::try_from(version).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(&hash).ok()?;
        let expected = hash.hash?;
        Some(Self {
            argon2: Argon2::new(algorithm, version, params),
            expected,
            hash,
        })
    }

    fn matches(&self, password: &[u8], blocks: &mut [Block]) -> bool {
        let Some(salt) = self.hash.salt else {
            return false;
        };
        let mut salt_bytes = [0u8; 64];
        let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
            return false;
        };
        let mut out = [0u8; Output::MAX_LENGTH];
        let out = &mut out[..self.expected.len()];
        if self
            .argon2
            .hash_password_into_with_memory(password, salt, &mut *out, blocks)
            .is_err()
        {
            return false;
        }
        // `Output`'s equality is constant-time.
        Output::new(out).is_ok_and(|computed| computed == self.expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};

    fn phc(password: &str, m_kib: u32) -> String {
        let params = Params::new(m_kib, 1, 1, None).unwrap();
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    #[test]
    fn matches_exactly_what_the_argon2_crate_verifies() {
        let hash = phc("correct horse", 8 * 1024);
        let memory = WorkingMemory::for_hashes([hash.as_str()]);
        assert!(memory.verify(&hash, b"correct horse"));
        assert!(!memory.verify(&hash, b"correct hors"));
        assert!(!memory.verify(&hash, b""));
        assert!(!memory.verify("not a hash", b"correct horse"));
        // A hash made with the crate's defaults, as `hash-password` writes them.
        let default = Argon2::default()
            .hash_password(b"pw", &SaltString::encode_b64(b"saltsaltsaltsalt").unwrap())
            .unwrap()
            .to_string();
        assert!(memory.verify(&default, b"pw"));
    }

    #[test]
    fn buffers_are_sized_for_the_largest_hash_and_reused() {
        let small = phc("a", 8 * 1024);
        let large = phc("b", 32 * 1024);
        let memory = WorkingMemory::for_hashes([small.as_str(), large.as_str()]);
        assert_eq!(memory.bytes_per_check(), 32 * 1024 * 1024);
        for _ in 0..3 {
            assert!(memory.verify(&large, b"b"));
            assert!(memory.verify(&small, b"a"));
        }
        assert_eq!(memory.buffers(), 1, "one check at a time needs one buffer");
        memory.keep_at_most(0);
        assert_eq!(memory.buffers(), 0);
        // With no hash, the defaults (19 MiB) are still covered.
        let defaults = WorkingMemory::for_hashes([]);
        assert_eq!(defaults.bytes_per_check(), 19 * 1024 * 1024);
        assert!(memory.fits(&defaults) && !defaults.fits(&memory));
    }
}
