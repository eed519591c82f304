//! A few recent verifications in front of a verification cache (moka): a repeat caller's
//! credential is answered by one slot load and a comparison instead of moka's read bookkeeping.
//!
//! Slots are picked by the key's first bytes (the keys are keyed hashes, so evenly spread);
//! two hot credentials that share a slot take turns in it and fall back to the cache behind
//! it, as every credential did before. A slot never outlives what the cache would keep: it
//! holds the instant the cached entry expires.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use thread_local::ThreadLocal;

/// How many slots a verification cache has in front of it.
pub const HOT_SLOTS: usize = 64;

/// A value a thread may answer with its own copy of.
pub trait ThreadCopy: Clone {
    /// An equal value whose reference counts only the calling thread writes.
    fn copy_for_thread(&self) -> Self;
}

struct Slot<V> {
    key: [u8; 32],
    value: V,
    until: Instant,
}

/// A thread's copy of a slot's value, valid while the slot still holds `source` (which the
/// copy keeps alive, so its address cannot be reused meanwhile).
struct Local<V> {
    source: Arc<Slot<V>>,
    value: V,
}

/// Recently verified credentials, by keyed hash.
pub struct HotSlots<V: Send + Sync> {
    slots: Box<[ArcSwapOption<Slot<V>>]>,
    /// Each thread's copies of the slots' values, by slot. A repeat caller is answered with
    /// the thread's copy: counting a reference to the shared value wrote to a cache line
    /// every core writes, on every authenticated request (as the token cache's hot slots
    /// found, see `token::cache`).
    local: ThreadLocal<RefCell<Vec<Option<Local<V>>>>>,
}

impl<V: ThreadCopy + Send + Sync> HotSlots<V> {
    pub fn new() -> Self {
        Self {
            slots: (0..HOT_SLOTS).map(|_| ArcSwapOption::empty()).collect(),
            local: ThreadLocal::new(),
        }
    }

    fn index(key: &[u8; 32]) -> usize {
        usize::from(u16::from_le_bytes([key[0], key[1]])) % HOT_SLOTS
    }

    /// The value verified for `key`, if a slot holds it and it has not expired at `now`.
    pub fn get(&self, key: &[u8; 32], now: Instant) -> Option<V> {
        let index = Self::index(key);
        let slot = self.slots[index].load();
        match slot.as_ref() {
            Some(slot) if slot.key == *key && now < slot.until => {
                Some(self.local_copy(index, slot))
            }
            _ => None,
        }
    }

    /// This thread's copy of `slot`'s value (held at `index`), made on the thread's first
    /// answer from it.
    fn local_copy(&self, index: usize, slot: &Arc<Slot<V>>) -> V {
        let local = self.local.get_or(|| RefCell::new(Vec::new()));
        let Ok(mut local) = local.try_borrow_mut() else {
            return slot.value.clone();
        };
        if local.len() != HOT_SLOTS {
            local.resize_with(HOT_SLOTS, || None);
        }
        let entry = &mut local[index];
        if let Some(held) = entry
            && Arc::ptr_eq(&held.source, slot)
        {
            return held.value.clone();
        }
        let value = slot.value.copy_for_thread();
        *entry = Some(Local {
            source: Arc::clone(slot),
            value: value.clone(),
        });
        value
    }

    /// Remember `value` for `key` until `until` (when the cache's entry expires).
    pub fn put(&self, key: [u8; 32], value: V, until: Instant) {
        let slot = &self.slots[Self::index(&key)];
        if slot
            .load()
            .as_deref()
            .is_some_and(|held| held.key == key && held.until >= until)
        {
            return;
        }
        slot.store(Some(Arc::new(Slot { key, value, until })));
    }
}

impl<V: ThreadCopy + Send + Sync> Default for HotSlots<V> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    impl ThreadCopy for &'static str {
        fn copy_for_thread(&self) -> Self {
            self
        }
    }

    fn key(first: u8, rest: u8) -> [u8; 32] {
        let mut key = [rest; 32];
        key[0] = first;
        key[1] = 0;
        key
    }

    #[test]
    fn a_slot_answers_its_own_key_until_it_expires() {
        let slots = HotSlots::new();
        let now = Instant::now();
        slots.put(key(1, 7), "alice", now + Duration::from_secs(10));
        assert_eq!(slots.get(&key(1, 7), now), Some("alice"));
        assert_eq!(
            slots.get(&key(1, 7), now + Duration::from_secs(9)),
            Some("alice")
        );
        assert_eq!(slots.get(&key(1, 7), now + Duration::from_secs(10)), None);
        assert_eq!(slots.get(&key(2, 7), now), None, "an empty slot");
    }

    #[test]
    fn another_key_in_the_same_slot_is_never_answered_with_the_first_ones_value() {
        let slots = HotSlots::new();
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        // Same slot (same first two bytes), different keys.
        slots.put(key(3, 1), "alice", later);
        assert_eq!(slots.get(&key(3, 2), now), None);
        slots.put(key(3, 2), "bob", later);
        assert_eq!(slots.get(&key(3, 2), now), Some("bob"));
        assert_eq!(slots.get(&key(3, 1), now), None, "alice's turn is over");
    }

    impl ThreadCopy for Arc<String> {
        fn copy_for_thread(&self) -> Self {
            Arc::new(String::clone(self))
        }
    }

    #[test]
    fn each_thread_answers_with_its_own_copy_until_the_slot_changes() {
        let slots: Arc<HotSlots<Arc<String>>> = Arc::new(HotSlots::new());
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        let shared = Arc::new("alice".to_string());
        slots.put(key(5, 1), Arc::clone(&shared), later);

        let first = slots.get(&key(5, 1), now).unwrap();
        assert_eq!(*first, "alice");
        assert!(
            !Arc::ptr_eq(&first, &shared),
            "a copy, not the shared value"
        );
        let again = slots.get(&key(5, 1), now).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the thread's copy is made once"
        );

        let theirs = {
            let slots = Arc::clone(&slots);
            std::thread::spawn(move || slots.get(&key(5, 1), now).unwrap())
                .join()
                .unwrap()
        };
        assert_eq!(*theirs, "alice");
        assert!(!Arc::ptr_eq(&theirs, &first), "another thread has its own");

        // A new value in the slot (same key, longer life) replaces the copy.
        slots.put(
            key(5, 1),
            Arc::new("alice, again".to_string()),
            later + Duration::from_secs(1),
        );
        assert_eq!(*slots.get(&key(5, 1), now).unwrap(), "alice, again");
        // Another key in the same slot is never answered with the copy of the first.
        slots.put(key(5, 2), Arc::new("bob".to_string()), later);
        assert_eq!(slots.get(&key(5, 1), now), None);
        assert_eq!(*slots.get(&key(5, 2), now).unwrap(), "bob");
    }
}
