//! The API's timestamps: RFC 3339 with optional fractional seconds and offset.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An RFC 3339 time such as `2026-12-01T18:00:00.123456Z` or `2026-12-01T19:00:00+01:00`,
/// to the nanosecond; `None` for anything else.
pub fn parse(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if let Some(local) = text.strip_suffix(['Z', 'z']) {
        return humantime::parse_rfc3339(&format!("{}Z", local.replacen('t', "T", 1))).ok();
    }
    let split = text.len().checked_sub(6)?;
    if !text.is_char_boundary(split) {
        return None;
    }
    let (local, offset) = text.split_at(split);
    let sign: i64 = match offset.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (hours, minutes) = offset[1..].split_once(':')?;
    let (hours, minutes): (u64, u64) = (hours.parse().ok()?, minutes.parse().ok()?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    let utc = humantime::parse_rfc3339(&format!("{}Z", local.replacen('t', "T", 1))).ok()?;
    let offset = Duration::from_secs(hours * 3600 + minutes * 60);
    // The local time is ahead of UTC by a positive offset.
    if sign > 0 {
        utc.checked_sub(offset)
    } else {
        utc.checked_add(offset)
    }
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
