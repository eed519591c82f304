//! Text that came from a request (or a remote server), made safe to put in a log line or a
//! message: control characters and invisible direction overrides are escaped, so it cannot
//! start a forged line or hide what follows, and it is cut short, so it cannot flood the log.
//!
//! Structured fields given as `&str` are quoted and escaped by both log formats; what still
//! needs this wrapper is text written with `%` (Display) or interpolated into a message.

use std::fmt;

/// How many characters of untrusted text a log line keeps by default.
pub const LOG_CHARS: usize = 256;

/// Untrusted text, displayed escaped and cut to a number of characters (marked `…`).
#[derive(Clone, Copy)]
pub struct Untrusted<'a> {
    text: &'a str,
    max_chars: usize,
}

impl<'a> Untrusted<'a> {
    /// `text`, cut at [`LOG_CHARS`] characters.
    pub fn new(text: &'a str) -> Self {
        Self::limited(text, LOG_CHARS)
    }

    /// `text`, cut at `max_chars` characters.
    pub fn limited(text: &'a str, max_chars: usize) -> Self {
        Self { text, max_chars }
    }
}

/// Characters that would let text start a new line or reorder what a reader sees.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        let mut chars = self.text.chars();
        for c in chars.by_ref().take(self.max_chars) {
            if needs_escape(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        if chars.next().is_some() {
            f.write_char('…')?;
        }
        Ok(())
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// `text` cut at `max_chars` characters on a character boundary, for `&str` log fields
/// (which the log formats escape themselves).
pub fn clip(text: &str, max_chars: usize) -> &str {
    // A character is at least one byte: text no longer in bytes is short enough, without
    // walking its characters (the access log clips two fields of every request).
    if text.len() <= max_chars {
        return text;
    }
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_and_escapes_cannot_forge_a_log_line() {
        let forged =
            "x\n2026-01-01T00:00:00Z  INFO streamgate::reload: configuration reloaded\r\x1b[2K";
        let shown = Untrusted::new(forged).to_string();
        assert!(!shown.contains(['\n', '\r', '\x1b']), "{shown}");
        assert!(shown.starts_with("x\\n2026"), "{shown}");
        assert!(shown.ends_with("\\r\\u{1b}[2K"), "{shown}");
    }

    #[test]
    fn direction_overrides_and_unicode_line_separators_are_escaped() {
        let shown = Untrusted::new("a\u{202e}b\u{2028}c\u{2066}d").to_string();
        assert_eq!(shown, "a\\u{202e}b\\u{2028}c\\u{2066}d");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary_and_marked() {
        let long = "é".repeat(1000);
        let shown = Untrusted::new(&long).to_string();
        assert_eq!(shown.chars().count(), LOG_CHARS + 1);
        assert!(shown.ends_with('…'));
        assert_eq!(Untrusted::limited("abc", 3).to_string(), "abc");
        assert_eq!(Untrusted::limited("abcd", 3).to_string(), "abc…");
        assert_eq!(clip("héllo", 2), "hé");
        assert_eq!(clip("hé", 5), "hé");
        // At and around the byte-length shortcut.
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc");
        assert_eq!(clip("ééé", 3), "ééé");
        assert_eq!(clip("éééé", 3), "ééé");
        assert_eq!(clip("", 0), "");
        assert_eq!(clip("a", 0), "");
    }

    #[test]
    fn printable_text_is_kept_as_it_is() {
        let text = "welcome/manifest/video.m3u8?a=b c'\"\\";
        assert_eq!(Untrusted::new(text).to_string(), text);
    }
}
