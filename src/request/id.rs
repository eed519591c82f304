//! Request ids: taken from the client's `X-Request-Id` when sane, else generated without a
//! system call or a shared cache line.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};

/// The request id header: accepted from the client when sane, else generated; always
/// returned.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Makes request ids for one process.
#[derive(Debug, Clone, Copy)]
pub struct RequestIds {
    prefix: u32,
}

impl Default for RequestIds {
    fn default() -> Self {
        let mut bytes = [0u8; 4];
        let _ = SystemRandom::new().fill(&mut bytes);
        Self {
            prefix: u32::from_be_bytes(bytes),
        }
    }
}

impl RequestIds {
    /// The client's id when it is 1–128 plain characters, else a new one.
    pub fn for_request(&self, headers: &HeaderMap) -> HeaderValue {
        let sane = |v: &&HeaderValue| {
            let bytes = v.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= 128
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
        };
        // Found by comparing names, not by a lookup: hashing this custom name costs more than
        // comparing it with a request's few headers (most are standard names, unequal at
        // their first word). The first value, as a lookup finds.
        let sent = headers
            .iter()
            .find_map(|(name, value)| (*name == REQUEST_ID).then_some(value));
        if let Some(id) = sent.filter(sane) {
            return id.clone();
        }
        // A random per-process prefix, the thread's slot and a per-thread counter: unique, no
        // system call and no cache line shared between cores per request.
        let (slot, n) = next_local_id();
        hex_request_id(self.prefix, slot, n)
    }
}

/// Give a response its `X-Request-Id`, replacing any it has. A redirect's headers carry the
/// header empty as their last entry, for this to fill (`routes::watch`): that value is
/// overwritten where it stands, without hashing the name again to find it. Only when no name
/// in the map has two values, so that the last entry is the header's only value.
pub fn set_request_id(headers: &mut HeaderMap, id: HeaderValue) {
    if headers.len() == headers.keys_len()
        && let Some((name, value)) = headers.iter_mut().last()
        && *name == REQUEST_ID
        && value.is_empty()
    {
        *value = id;
        return;
    }
    headers.insert(REQUEST_ID, id);
}

/// `prefix`, `slot` and `n` as 8 + 4 + 12 lowercase hex digits, written directly: `format!`
/// cost more than the rest of a cache hit's bookkeeping together.
fn hex_request_id(prefix: u32, slot: u64, n: u64) -> HeaderValue {
    let value = (u128::from(prefix) << 64)
        | (u128::from(slot & 0xffff) << 48)
        | u128::from(n & 0xffff_ffff_ffff);
    // Two digits per byte of the low 12 bytes: a loop over bytes, not 24 shifts of a u128.
    let mut id = [0u8; 24];
    for (pair, byte) in id.chunks_exact_mut(2).zip(&value.to_be_bytes()[4..]) {
        pair.copy_from_slice(&crate::hex::digits(*byte));
    }
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// This thread's slot and its next sequence number.
fn next_local_id() -> (u64, u64) {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SLOTS: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static SLOT: u64 = SLOTS.fetch_add(1, Ordering::Relaxed) & 0xffff;
        static NEXT: Cell<u64> = const { Cell::new(0) };
    }
    let n = NEXT.with(|next| {
        let n = next.get();
        next.set(n.wrapping_add(1));
        n & 0xffff_ffff_ffff
    });
    (SLOT.with(|slot| *slot), n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_24_hex_digits_of_prefix_slot_and_sequence() {
        for (prefix, slot, n) in [
            (0u32, 0u64, 0u64),
            (0xa35c_6096, 1, 4),
            (u32::MAX, 0xffff, 0xffff_ffff_ffff),
            (0x1234_5678, 0x1_0002, 0x1_0000_0000_0003),
        ] {
            let expected = format!(
                "{prefix:08x}{:04x}{:012x}",
                slot & 0xffff,
                n & 0xffff_ffff_ffff
            );
            assert_eq!(hex_request_id(prefix, slot, n), expected.as_str());
        }
    }

    #[test]
    fn a_sane_client_id_is_kept_and_anything_else_replaced() {
        let ids = RequestIds::default();
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(ids.for_request(&headers), "abc-123");
        headers.insert(REQUEST_ID, HeaderValue::from_static("a b"));
        assert_eq!(ids.for_request(&headers).len(), 24);
        // The first value decides, as a lookup would; other headers are no id.
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, HeaderValue::from_static("abc"));
        headers.insert("x-request-ids", HeaderValue::from_static("abc"));
        assert_eq!(ids.for_request(&headers).len(), 24);
        headers.append(REQUEST_ID, HeaderValue::from_static("first"));
        headers.append(REQUEST_ID, HeaderValue::from_static("second"));
        assert_eq!(ids.for_request(&headers), "first");
    }

    #[test]
    fn a_response_gets_exactly_one_request_id() {
        const ID: &str = "fde615cf0001000000003d28";
        let id = HeaderValue::from_static(ID);
        let ids = |headers: &HeaderMap| -> Vec<String> {
            headers
                .get_all(REQUEST_ID)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        };
        // The redirect's empty placeholder, last: filled in place.
        let mut headers = HeaderMap::new();
        headers.insert(http::header::LOCATION, HeaderValue::from_static("/x"));
        headers.insert(REQUEST_ID, HeaderValue::from_static(""));
        set_request_id(&mut headers, id.clone());
        assert_eq!(ids(&headers), [ID]);
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[http::header::LOCATION], "/x");
        // No such header: added.
        let mut headers = HeaderMap::new();
        headers.insert(http::header::LOCATION, HeaderValue::from_static("/x"));
        set_request_id(&mut headers, id.clone());
        assert_eq!(ids(&headers), [ID]);
        // Already set, or set twice, or empty but not last: replaced, never added beside.
        for values in [&["other"][..], &["", "other"], &["other", ""]] {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(REQUEST_ID, HeaderValue::from_static(value));
            }
            headers.insert(http::header::LOCATION, HeaderValue::from_static("/x"));
            set_request_id(&mut headers, id.clone());
            assert_eq!(ids(&headers), [ID], "{values:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("other"));
        headers.append(REQUEST_ID, HeaderValue::from_static(""));
        set_request_id(&mut headers, id.clone());
        assert_eq!(ids(&headers), [ID]);
    }
}
