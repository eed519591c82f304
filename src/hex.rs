//! Lowercase hex digits, written from a table: request ids, the audit trail's token ids and
//! JSON's `\u00XX` escapes are made on the request path, where `format!("{:02x}")` per byte
//! cost more than the rest of the work around it; digests and key ids elsewhere use the same.

/// The two lowercase hex digits of `byte`, high first.
#[inline]
pub fn digits(byte: u8) -> [u8; 2] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    [HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]]
}

/// `bytes` as lowercase hex, two digits per byte.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        for digit in digits(byte) {
            out.push(char::from(digit));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{digits, encode};

    #[test]
    fn every_byte_is_written_as_format_would() {
        for byte in 0..=u8::MAX {
            let expected = format!("{byte:02x}");
            assert_eq!(digits(byte), expected.as_bytes(), "byte {byte}");
        }
    }

    #[test]
    fn a_byte_string_is_its_bytes_digits_in_order() {
        assert_eq!(encode(&[]), "");
        assert_eq!(encode(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}
