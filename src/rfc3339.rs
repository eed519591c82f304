//! RFC 3339 times as the configuration, Cloudflare's API and the emulator write them.

use std::time::{Duration, SystemTime};

/// An RFC 3339 time such as `2026-12-01T18:00:00Z`, `2026-12-01t18:00:00.25z` or
/// `2026-12-01 19:00:00+01:00`: `T`, `t` or a space between date and time, fractions to the
/// nanosecond, and `Z` or a `±HH:MM` offset. `None` for anything else (never a panic).
pub fn parse(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let (local, offset) = match text.strip_suffix(['Z', 'z']) {
        Some(local) => (local, None),
        None => {
            let (local, offset) = text.split_at_checked(text.len().checked_sub(6)?)?;
            let ahead = match offset.as_bytes().first()? {
                b'+' => true,
                b'-' => false,
                _ => return None,
            };
            let (hours, minutes) = offset[1..].split_once(':')?;
            let (hours, minutes): (u64, u64) = (hours.parse().ok()?, minutes.parse().ok()?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            (
                local,
                Some((ahead, Duration::from_secs(hours * 3600 + minutes * 60))),
            )
        }
    };
    if !local.contains(['T', 't', ' ']) {
        return None;
    }
    let as_utc =
        humantime::parse_rfc3339(&format!("{}Z", local.replacen(['t', ' '], "T", 1))).ok()?;
    match offset {
        None => Some(as_utc),
        // A local time ahead of UTC by the offset.
        Some((true, offset)) => as_utc.checked_sub(offset),
        Some((false, offset)) => as_utc.checked_add(offset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn unix(text: &str) -> Option<f64> {
        parse(text).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64())
    }

    #[test]
    fn zones_separators_and_fractions_are_read() {
        let noon = 1_796_126_400.0; // 2026-12-01T12:00:00Z
        assert_eq!(unix("2026-12-01T12:00:00Z"), Some(noon));
        assert_eq!(unix(" 2026-12-01t12:00:00z "), Some(noon));
        assert_eq!(unix("2026-12-01 13:30:00+01:30"), Some(noon));
        assert_eq!(unix("2026-12-01T07:00:00-05:00"), Some(noon));
        assert_eq!(unix("2026-12-01T12:00:00.25Z"), Some(noon + 0.25));
    }

    #[test]
    fn anything_else_is_none_not_a_panic() {
        for bad in [
            "",
            "2026-12-01",
            "yesterday",
            "2026-12-01T12:00:00",
            "2026-12-01T12:00:00+1:00",
            "2026-12-01T12:00:00+24:00",
            "2026-12-01T12:00:00*01:00",
            "é",
            "2026-12-01Tééé",
            "ééééééé",
            "éééa",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
