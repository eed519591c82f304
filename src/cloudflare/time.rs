//! The API's timestamps: RFC 3339 with optional fractional seconds and offset.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An RFC 3339 time such as `2026-12-01T18:00:00.123456Z` or `2026-12-01T19:00:00+01:00`,
/// to the nanosecond; `None` for anything else.
pub fn parse(text: &str) -> Option<SystemTime> {
    crate::rfc3339::parse(text)
}

/// `at` in RFC 3339 to the second (`2026-12-01T18:00:00Z`).
pub fn format_secs(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Unix seconds in RFC 3339.
pub fn format_unix(secs: u64) -> String {
    format_secs(UNIX_EPOCH + Duration::from_secs(secs))
}

/// `at` in RFC 3339 to the nanosecond, as a paging cursor.
pub fn format_nanos(at: SystemTime) -> String {
    humantime::format_rfc3339_nanos(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_and_offsets_are_kept() {
        let z = parse("2026-12-01T18:00:00.250Z").unwrap();
        assert_eq!(
            z.duration_since(UNIX_EPOCH).unwrap().subsec_millis(),
            250,
            "{z:?}"
        );
        assert_eq!(
            parse("2026-12-01T19:00:00.250+01:00").unwrap(),
            z,
            "an offset ahead of UTC"
        );
        assert_eq!(parse("2026-12-01T17:30:00.250-00:30").unwrap(), z);
        assert_eq!(format_secs(z), "2026-12-01T18:00:00Z");
        assert_eq!(parse(&format_nanos(z)).unwrap(), z);
    }

    #[test]
    fn anything_else_is_refused_without_panicking() {
        for bad in [
            "",
            "yesterday",
            "2026-12-01",
            "2026-12-01T18:00:00+25:00",
            "ééééééé",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
