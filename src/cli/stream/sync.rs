//! `stream videos sync`: catalogue entries for the account's videos the catalogue lacks,
//! written into the configuration as text (so comments, order and formatting survive).

use std::collections::HashSet;

use crate::authz::catalogue::is_valid_alias;
use crate::cloudflare::AccountVideo;

/// Longest derived alias before a `-2` suffix.
const MAX_SLUG_CHARS: usize = 48;
/// Characters of a title kept.
const MAX_TITLE_CHARS: usize = 200;

/// One catalogue entry to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub alias: String,
    pub uid: String,
    pub title: Option<String>,
}

/// Entries for every video in `account` whose uid is not in `uids`, with aliases derived
/// from their names, unique against `aliases` (case-insensitively) and each other. Videos
/// whose uid is not 32 hex characters are skipped (returned second, escaped for display).
pub fn propose(
    aliases: &HashSet<String>,
    uids: &HashSet<String>,
    account: &[AccountVideo],
) -> (Vec<NewEntry>, Vec<String>) {
    let mut taken: HashSet<String> = aliases.iter().map(|a| a.to_ascii_lowercase()).collect();
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    for video in account {
        let uid = video.uid.to_ascii_lowercase();
        if uid.len() != 32 || !uid.bytes().all(|b| b.is_ascii_hexdigit()) {
            skipped.push(crate::untrusted::Untrusted::limited(&video.uid, 64).to_string());
            continue;
        }
        if uids.contains(&uid) {
            continue;
        }
        let title = video
            .name()
            .map(|name| crate::untrusted::clip(name.trim(), MAX_TITLE_CHARS).to_string())
            .filter(|name| !name.is_empty());
        let alias = unique_alias(title.as_deref(), &uid, &taken);
        taken.insert(alias.to_ascii_lowercase());
        entries.push(NewEntry { alias, uid, title });
    }
    (entries, skipped)
}

/// `name` as an alias: lowercase ASCII letters and digits, other runs as `-`.
pub fn slug(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= MAX_SLUG_CHARS {
            break;
        }
    }
    slug.trim_end_matches('-').to_string()
}

fn unique_alias(title: Option<&str>, uid: &str, taken: &HashSet<String>) -> String {
    let base = title.map(slug).unwrap_or_default();
    let base = if base.is_empty() || !is_valid_alias(&base) {
        format!("video-{}", &uid[..8])
    } else {
        base
    };
    let free = |alias: &str| is_valid_alias(alias) && !taken.contains(&alias.to_ascii_lowercase());
    if free(&base) {
        return base;
    }
    (2..1000)
        .map(|n| format!("{base}-{n}"))
        .find(|alias| free(alias))
        .unwrap_or_else(|| format!("video-{uid}"))
}

/// A YAML mapping key: plain when it cannot be read as anything but a string.
fn yaml_key(alias: &str) -> String {
    let plain = alias.starts_with(|c: char| c.is_ascii_alphabetic())
        && !matches!(
            alias.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "true" | "false" | "on" | "off" | "null"
        );
    if plain {
        alias.to_string()
    } else {
        yaml_string(alias)
    }
}

/// A YAML double-quoted string; control characters and invisible reordering characters
/// are written as escapes.
pub fn yaml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control()
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{feff}'
                )
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c) =>
            {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The lines of `entries` as catalogue entries indented by `indent` spaces.
pub fn render(entries: &[NewEntry], indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut text = String::new();
    for entry in entries {
        text.push_str(&format!("{pad}{}:\n", yaml_key(&entry.alias)));
        text.push_str(&format!("{pad}  uid: {}\n", entry.uid));
        if let Some(title) = &entry.title {
            text.push_str(&format!("{pad}  title: {}\n", yaml_string(title)));
        }
    }
    text
}

/// Why the entries could not be placed in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error(
        "`videos:` is written in flow style (`{{...}}`) at line {0}; rewrite it as a block mapping, or add the entries by hand"
    )]
    FlowMapping(usize),
}

/// `source` with `entries` added at the end of its top-level `videos:` mapping (created at
/// the end of the file when absent). Everything else is kept byte for byte: comments, the
/// order of entries, their tags, blank lines.
pub fn insert(source: &str, entries: &[NewEntry]) -> Result<String, EditError> {
    if entries.is_empty() {
        return Ok(source.to_string());
    }
    let lines: Vec<&str> = source.split_inclusive('\n').collect();
    let Some(start) = lines.iter().position(|line| is_videos_key(line)) else {
        let mut out = source.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("\nvideos:\n");
        out.push_str(&render(entries, 2));
        return Ok(out);
    };
    let value = strip_comment(&lines[start]["videos:".len()..]).trim();
    let mut out = String::with_capacity(source.len() + entries.len() * 80);
    match value {
        "" => {}
        "{}" | "~" | "null" => {
            // An empty flow mapping or null: the key line becomes a block mapping's head.
            for line in &lines[..start] {
                out.push_str(line);
            }
            let comment = lines[start]
                .find(" #")
                .map(|at| lines[start][at..].trim_end().to_string())
                .unwrap_or_default();
            out.push_str(&format!("videos:{comment}\n"));
            out.push_str(&render(entries, 2));
            for line in &lines[start + 1..] {
                out.push_str(line);
            }
            return Ok(out);
        }
        _ => return Err(EditError::FlowMapping(start + 1)),
    }
    // The block runs until the next line that starts a top-level key; comments at column 0
    // inside it (the shipped config has one) do not end it.
    let mut last_content = start;
    let mut indent = None;
    for (i, line) in lines.iter().enumerate().skip(start + 1) {
        let trimmed = line.trim_start();
        if trimmed.trim().is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let this_indent = line.len() - trimmed.len();
        if this_indent == 0 {
            break;
        }
        indent.get_or_insert(this_indent);
        last_content = i;
    }
    for line in &lines[..=last_content] {
        out.push_str(line);
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&render(entries, indent.unwrap_or(2)));
    for line in &lines[last_content + 1..] {
        out.push_str(line);
    }
    Ok(out)
}

fn is_videos_key(line: &str) -> bool {
    line.strip_prefix("videos:")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\n', '\r', '#']))
}

/// `text` before a ` #` comment.
fn strip_comment(text: &str) -> &str {
    match text.find('#') {
        Some(at) if at == 0 || text[..at].ends_with([' ', '\t']) => &text[..at],
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(uid: &str, name: Option<&str>) -> AccountVideo {
        serde_json::from_value(serde_json::json!({
            "uid": uid,
            "created": "2026-01-01T00:00:00Z",
            "meta": name.map(|n| serde_json::json!({"name": n})),
        }))
        .unwrap()
    }

    const U1: &str = "11111111111111111111111111111111";
    const U2: &str = "22222222222222222222222222222222";
    const U3: &str = "33333333333333333333333333333333";
    const U4: &str = "44444444444444444444444444444444";

    #[test]
    fn slugs_are_lowercase_ascii_with_single_dashes() {
        assert_eq!(slug("  Town Hall — Q3 2026!  "), "town-hall-q3-2026");
        assert_eq!(slug("Été à Paris"), "t-paris");
        assert_eq!(slug("…"), "");
        assert_eq!(slug(&"a".repeat(100)).len(), MAX_SLUG_CHARS);
    }

    #[test]
    fn aliases_are_unique_valid_and_fall_back_to_the_uid() {
        let aliases: HashSet<String> = ["Intro".to_string()].into();
        let uids: HashSet<String> = [U4.to_string()].into();
        let account = [
            video(U1, Some("intro")),
            video(U2, Some("intro")),
            video(U3, Some("ⅲ")),
            video(U4, Some("already listed")),
            video("../etc", Some("bad uid")),
            video(&"a".repeat(32), Some(&"b".repeat(32))),
        ];
        let (entries, skipped) = propose(&aliases, &uids, &account);
        let got: Vec<&str> = entries.iter().map(|e| e.alias.as_str()).collect();
        assert_eq!(
            got,
            ["intro-2", "intro-3", "video-33333333", "video-aaaaaaaa"]
        );
        assert_eq!(skipped, ["../etc"]);
        for entry in &entries {
            assert!(is_valid_alias(&entry.alias), "{entry:?}");
        }
    }

    #[test]
    fn titles_are_quoted_and_escaped() {
        assert_eq!(yaml_string("a \"b\" \\ c"), r#""a \"b\" \\ c""#);
        assert_eq!(yaml_string("x\ny\u{202e}"), r#""x\u000ay\u202e""#);
        assert_eq!(yaml_key("2024-recap"), "\"2024-recap\"");
        assert_eq!(yaml_key("yes"), "\"yes\"");
        assert_eq!(yaml_key("recap-2024"), "recap-2024");
    }

    const ENTRY: &[NewEntry] = &[];

    fn one() -> Vec<NewEntry> {
        vec![NewEntry {
            alias: "new-one".into(),
            uid: U1.into(),
            title: Some("New one".into()),
        }]
    }

    #[test]
    fn entries_go_at_the_end_of_the_videos_block_keeping_comments() {
        let source = "\
stream: {origin: https://x.example}
videos:
  # the first
  welcome:
    uid: ce800be43a9772f4bb02f35b860fb516
    tags: [public]   # keep me

# a column-0 comment inside the block
    # and an indented one
  town-hall:
    uid: 8f2c6a04b7d94e1fa3c5d6e7f8091a2b

# ── next section ──
rules: []
";
        let edited = insert(source, &one()).unwrap();
        let expected = source.replace(
            "    uid: 8f2c6a04b7d94e1fa3c5d6e7f8091a2b\n",
            "    uid: 8f2c6a04b7d94e1fa3c5d6e7f8091a2b\n  new-one:\n    uid: 11111111111111111111111111111111\n    title: \"New one\"\n",
        );
        assert_eq!(edited, expected);
        assert_eq!(insert(source, ENTRY).unwrap(), source);
    }

    #[test]
    fn an_empty_or_absent_videos_key_gets_a_block() {
        let edited = insert("a: 1\nvideos: {}   # none yet\nb: 2\n", &one()).unwrap();
        assert_eq!(
            edited,
            "a: 1\nvideos: # none yet\n  new-one:\n    uid: 11111111111111111111111111111111\n    title: \"New one\"\nb: 2\n"
        );
        let edited = insert("a: 1", &one()).unwrap();
        assert!(
            edited.starts_with("a: 1\n\nvideos:\n  new-one:\n"),
            "{edited}"
        );
        let edited = insert("videos:\nb: 2\n", &one()).unwrap();
        assert!(edited.starts_with("videos:\n  new-one:\n"), "{edited}");
        assert!(edited.ends_with("b: 2\n"), "{edited}");
        assert_eq!(
            insert("videos: {a: {uid: x}}\n", &one()),
            Err(EditError::FlowMapping(1))
        );
        // A key that merely starts with `videos` is not it.
        let edited = insert("videos_old: 1\n", &one()).unwrap();
        assert!(edited.contains("\nvideos:\n"), "{edited}");
    }
}
