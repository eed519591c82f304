//! A few recent verifications in front of a verification cache (moka): a repeat caller's
//! credential is answered by one slot load and a comparison instead of moka's read bookkeeping.
//!
//! Slots are picked by the key's first bytes (the keys are keyed hashes, so evenly spread);
//! two hot credentials that share a slot take turns in it and fall back to the cache behind
//! it, as every credential did before. A slot never outlives what the cache would keep: it
//! holds the instant the cached entry expires.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;

/// How many slots a verification cache has in front of it.
pub const HOT_SLOTS: usize = 64;

struct Slot<V> {
    key: [u8; 32],
    value: V,
    until: Instant,
}

/// Recently verified credentials, by keyed hash.
pub struct HotSlots<V> {
    slots: Box<[ArcSwapOption<Slot<V>>]>,
}

impl<V: Clone> HotSlots<V> {
    pub fn new() -> Self {
        Self {
            slots: (0..HOT_SLOTS).map(|_| ArcSwapOption::empty()).collect(),
        }
    }

    fn slot(&self, key: &[u8; 32]) -> &ArcSwapOption<Slot<V>> {
        &self.slots[usize::from(u16::from_le_bytes([key[0], key[1]])) % HOT_SLOTS]
    }

    /// The value verified for `key`, if a slot holds it and it has not expired at `now`.
    pub fn get(&self, key: &[u8; 32], now: Instant) -> Option<V> {
        let slot = self.slot(key).load();
        match slot.as_deref() {
            Some(slot) if slot.key == *key && now < slot.until => Some(slot.value.clone()),
            _ => None,
        }
    }

    /// Remember `value` for `key` until `until` (when the cache's entry expires).
    pub fn put(&self, key: [u8; 32], value: V, until: Instant) {
        let slot = self.slot(&key);
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

impl<V: Clone> Default for HotSlots<V> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
}
