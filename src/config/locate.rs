//! Find the line and column of a field path (`rules[2].videos[1]`) in block-style YAML.
//!
//! serde_yaml reports positions for errors it finds itself; checks that need the whole
//! document (unknown aliases, key files) run after parsing, and use this to point the
//! operator at the right line. Flow-style collections resolve to the line of their key.

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl Seg {
    pub fn key(name: &str) -> Self {
        Seg::Key(name.to_string())
    }
}

/// Render a path the way operators read it: `rules[2].videos[1]`.
pub fn display_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Seg::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

struct Line<'a> {
    /// 1-based line number.
    number: usize,
    indent: usize,
    text: &'a str,
}

/// 1-based `(line, column)` of the deepest part of `path` found in `source`.
pub fn locate(source: &str, path: &[Seg]) -> Option<(usize, usize)> {
    let lines: Vec<Line<'_>> = source
        .lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let text = raw.trim_start();
            if text.is_empty() || text.starts_with('#') || text.starts_with("---") {
                return None;
            }
            Some(Line {
                number: i + 1,
                indent: raw.len() - text.len(),
                text,
            })
        })
        .collect();

    let mut range = 0..lines.len();
    let mut found = None;
    // Column at which the keys of the current mapping start; `None` = take the first line's.
    let mut key_column: Option<usize> = None;
    for seg in path {
        if range.is_empty() {
            break;
        }
        match seg {
            Seg::Key(name) => {
                let block: &[Line<'_>] = &lines[range.clone()];
                let column = key_column.unwrap_or_else(|| key_position(&block[0]).0);
                let Some(hit) = block.iter().position(|line| {
                    let (col, text) = key_position(line);
                    col == column && starts_with_key(text, name)
                }) else {
                    return found;
                };
                let line = &block[hit];
                let (col, text) = key_position(line);
                found = Some((line.number, col + 1));
                let after_colon = text[name.len()..].trim_start().trim_start_matches(':');
                let inline = after_colon.trim();
                let start = range.start + hit + 1;
                if !inline.is_empty() && !inline.starts_with('#') {
                    // Value on the same line (scalar or flow collection): nothing deeper to find.
                    range = start..start;
                } else {
                    let end = (start..range.end)
                        .find(|&i| {
                            let l = &lines[i];
                            l.indent < col || (l.indent == col && !l.text.starts_with('-'))
                        })
                        .unwrap_or(range.end);
                    range = start..end;
                    key_column = None;
                }
            }
            Seg::Index(index) => {
                let block = &lines[range.clone()];
                let Some(dash_indent) = block
                    .iter()
                    .find(|l| l.text.starts_with('-'))
                    .map(|l| l.indent)
                else {
                    return found;
                };
                let items: Vec<usize> = block
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.indent == dash_indent && l.text.starts_with('-'))
                    .map(|(i, _)| range.start + i)
                    .collect();
                let Some(&item) = items.get(*index) else {
                    return found;
                };
                let end = items.get(index + 1).copied().unwrap_or(range.end);
                let line = &lines[item];
                let content_column =
                    dash_indent + 1 + (line.text.len() - line.text[1..].trim_start().len());
                found = Some((line.number, content_column));
                range = item..end;
                key_column = Some(content_column - 1);
            }
        }
    }
    found
}

/// Where a line's key starts, looking past a leading `- `.
fn key_position<'a>(line: &Line<'a>) -> (usize, &'a str) {
    if let Some(rest) = line.text.strip_prefix('-') {
        let trimmed = rest.trim_start();
        (line.indent + 1 + rest.len() - trimmed.len(), trimmed)
    } else {
        (line.indent, line.text)
    }
}

fn starts_with_key(text: &str, name: &str) -> bool {
    let unquoted = text
        .strip_prefix('"')
        .and_then(|t| t.strip_prefix(name))
        .and_then(|t| t.strip_prefix('"'))
        .or_else(|| text.strip_prefix(name));
    unquoted.is_some_and(|rest| rest.trim_start().starts_with(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
listen: 127.0.0.1:8080
# comment
videos:
  intro:
    uid: abc
    tags: [public]
rules:
  - name: first
    videos: [intro]
  - name: second
    videos:
      - intro
      - missing
    subjects: [anyone]
";

    fn path(parts: &[&str]) -> Vec<Seg> {
        parts
            .iter()
            .map(|p| match p.parse::<usize>() {
                Ok(i) => Seg::Index(i),
                Err(_) => Seg::key(p),
            })
            .collect()
    }

    #[test]
    fn finds_nested_keys_and_list_items() {
        assert_eq!(locate(DOC, &path(&["listen"])), Some((1, 1)));
        assert_eq!(
            locate(DOC, &path(&["videos", "intro", "uid"])),
            Some((5, 5))
        );
        assert_eq!(locate(DOC, &path(&["rules", "1", "name"])), Some((10, 5)));
        assert_eq!(
            locate(DOC, &path(&["rules", "1", "videos", "1"])),
            Some((13, 9))
        );
        assert_eq!(
            locate(DOC, &path(&["rules", "1", "subjects"])),
            Some((14, 5))
        );
    }

    #[test]
    fn flow_collections_resolve_to_their_key() {
        assert_eq!(
            locate(DOC, &path(&["rules", "0", "videos", "0"])),
            Some((9, 5))
        );
    }

    #[test]
    fn missing_parts_fall_back_to_the_deepest_found() {
        assert_eq!(locate(DOC, &path(&["nope"])), None);
        assert_eq!(locate(DOC, &path(&["rules", "7"])), Some((7, 1)));
        assert_eq!(
            display_path(&path(&["rules", "1", "videos", "1"])),
            "rules[1].videos[1]"
        );
    }
}
