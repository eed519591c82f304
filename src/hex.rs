//! Lowercase hex digits, written from a table: request ids, the audit trail's token ids and
//! JSON's `\u00XX` escapes are made on the request path, where `format!("{:02x}")` per byte
//! cost more than the rest of the work around it.

/// The two lowercase hex digits of `byte`, high first.
#[inline]
pub fn digits(byte: u8) -> [u8; 2] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    [HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]]
}

#[cfg(test)]
mod tests {
    use super::digits;

    #[test]
    fn every_byte_is_written_as_format_would() {
        for byte in 0..=u8::MAX {
            let expected = format!("{byte:02x}");
            assert_eq!(digits(byte), expected.as_bytes(), "byte {byte}");
        }
    }
}
