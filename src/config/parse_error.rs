//! serde_yaml's errors, made safe to show: the field and what was expected, never the value.
//!
//! serde's messages quote what they refused (`invalid type: string "<the secret>", expected
//! struct RawSecretRef`), so an inline secret or a pasted PEM would reach the log and
//! `/readyz`. Every message is rebuilt here from its shape:
//!
//! * serde's forms that carry a value (`invalid type`, `invalid value`, `unknown variant`)
//!   keep only what was expected, and the kind of thing found;
//! * serde's forms without one (`missing field`, `duplicate field`, `invalid length`,
//!   `unknown field` with a plain field name) are kept;
//! * anything else is libyaml's syntax error (fixed strings) or serde_yaml's own fixed
//!   messages, kept up to the first position, without the context that follows it.
//!
//! The deserializers in [`super::raw`] and [`crate::token::claims`] report through
//! `invalid_value`, so their messages take the first path too.

use super::ConfigError;

/// serde's message forms, as they start (after the field path and `": "`).
const INVALID_TYPE: &str = "invalid type: ";
const INVALID_VALUE: &str = "invalid value: ";
const UNKNOWN_VARIANT: &str = "unknown variant ";
const UNKNOWN_FIELD: &str = "unknown field ";
const UNTAGGED: &str = "data did not match any variant of untagged enum ";
/// Forms that never hold a value, kept as they are.
const VALUE_FREE: [&str; 4] = [
    "missing field ",
    "duplicate field ",
    "invalid length ",
    super::raw::DUPLICATE_ENTRY,
];

/// Where serde's message ends and the rest of the expectation begins.
const EXPECTED: &str = ", expected ";

/// A parse failure as a [`ConfigError`] naming `file`, the position, the field and what was
/// expected; the refused value is never part of it.
pub(super) fn config_error(file: &str, error: &serde_yaml::Error) -> ConfigError {
    let (field, message) = describe(&error.to_string());
    ConfigError {
        file: file.to_string(),
        position: error.location().map(|l| (l.line(), l.column())),
        field,
        message,
    }
}

/// `(field, message)` from serde_yaml's text, `"<path>: <message> at line L column C"` (the
/// path is absent at the root).
fn describe(text: &str) -> (String, String) {
    let forms = [
        INVALID_TYPE,
        INVALID_VALUE,
        UNKNOWN_VARIANT,
        UNKNOWN_FIELD,
        UNTAGGED,
    ]
    .into_iter()
    .chain(VALUE_FREE);
    // The earliest form that starts the text or follows `": "` (the path never holds one:
    // its keys are the file's keys, and a value is only ever quoted after the form).
    let found = forms
        .filter_map(|form| {
            text.match_indices(form)
                .map(|(at, _)| at)
                .find(|&at| at == 0 || text[..at].ends_with(": "))
                .map(|at| (at, form))
        })
        .min_by_key(|(at, _)| *at);
    let Some((at, form)) = found else {
        return match split_path(text) {
            Some((field, message)) => (field.to_string(), other_message(message)),
            None => (String::new(), syntax_message(text)),
        };
    };
    let field = if at == 0 {
        String::new()
    } else {
        text[..at - 2].to_string()
    };
    // serde_yaml appends the position last; anything before it may be the value.
    let message = match text.rfind(" at line ") {
        Some(end) if end > at => &text[at..end],
        _ => &text[at..],
    };
    (field, value_free(form, message))
}

/// The message of one serde form, without the value it may quote.
fn value_free(form: &str, message: &str) -> String {
    let expected = message
        .rfind(EXPECTED)
        .map(|at| plain_expectation(&message[at + EXPECTED.len()..]));
    match (form, expected) {
        (INVALID_TYPE, Some(expected)) => {
            let found = found_kind(&message[INVALID_TYPE.len()..]);
            format!("expected {expected}, found {found}")
        }
        (INVALID_TYPE | INVALID_VALUE, None) => "not a valid value here".to_string(),
        (INVALID_VALUE, Some(expected)) => format!("invalid value: expected {expected}"),
        (UNKNOWN_VARIANT, Some(expected)) => format!("unknown value: expected {expected}"),
        (UNKNOWN_VARIANT, None) => "unknown value".to_string(),
        (UNKNOWN_FIELD, expected) => {
            // The field's name is a key of the file: shown when it looks like one, so a pasted
            // secret that YAML read as a key is not.
            let name = message[UNKNOWN_FIELD.len()..]
                .strip_prefix('`')
                .and_then(|rest| rest.split_once('`'))
                .map(|(name, _)| name)
                .filter(|name| is_plain_key(name));
            let named = name.map_or("unknown field".to_string(), |name| {
                format!("unknown field `{name}`")
            });
            match expected {
                Some(expected) => format!("{named}, expected {expected}"),
                None => format!("{named}: this section has no fields"),
            }
        }
        (UNTAGGED, _) if message.ends_with("OneOrMany") => {
            "expected a string or a list of strings".to_string()
        }
        (UNTAGGED, _) => "does not match any of the accepted forms".to_string(),
        _ => message.to_string(),
    }
}

/// serde's description of what was found, by kind only (`string "<value>"` → `a string`).
fn found_kind(unexpected: &str) -> &'static str {
    const KINDS: [(&str, &str); 8] = [
        ("string", "a string"),
        ("integer", "a number"),
        ("floating point", "a number"),
        ("boolean", "true or false"),
        ("sequence", "a list"),
        ("map", "a mapping"),
        ("unit value", "an empty value"),
        ("character", "a character"),
    ];
    KINDS
        .iter()
        .find(|(prefix, _)| unexpected.starts_with(prefix))
        .map_or("another kind of value", |(_, kind)| kind)
}

/// serde's expectations in the words of the configuration reference.
fn plain_expectation(expected: &str) -> String {
    match expected {
        "struct RawKey" => {
            "a mapping with `file:` or `env:` (keys are never written inline)".into()
        }
        "struct RawSecretRef" => {
            "a mapping with `file:` or `env:` (secrets are never written inline)".into()
        }
        "a sequence" => "a list".into(),
        "a boolean" => "true or false".into(),
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number".into(),
        _ if expected.starts_with("struct ") || expected.starts_with("a map") => "a mapping".into(),
        _ => expected.to_string(),
    }
}

/// A name that reads as a configuration key.
fn is_plain_key(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `("<path>", "<message>")` when `text` starts with a field path (no spaces) and `": "`,
/// the message without the position serde_yaml appends.
fn split_path(text: &str) -> Option<(&str, &str)> {
    let (path, rest) = text.split_once(": ")?;
    if path.is_empty() || path.contains(char::is_whitespace) {
        return None;
    }
    let message = rest.rfind(" at line ").map_or(rest, |end| &rest[..end]);
    Some((path, message))
}

/// A message of another type's `Deserialize`: known fixed texts only, since an unknown
/// one may quote its input.
fn other_message(message: &str) -> String {
    match message {
        // std's `SocketAddr` (`listen`, `metrics_listen`, ...).
        "invalid socket address syntax" => {
            "expected an address and port such as 127.0.0.1:8080".to_string()
        }
        _ => "not a valid value here".to_string(),
    }
}

/// libyaml's problem (a fixed string), without its position and the context after it.
fn syntax_message(text: &str) -> String {
    let problem = text.split(" at line ").next().unwrap_or(text);
    let problem = problem.split(", while ").next().unwrap_or(problem);
    format!("the YAML cannot be read here: {problem}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-VALUE-never-shown";

    fn parse_error(source: &str) -> ConfigError {
        match super::super::Settings::from_yaml(source, "test.yaml", std::path::Path::new("/")) {
            Ok(_) => panic!("should not parse:\n{source}"),
            Err(errors) => errors.0.into_iter().next().unwrap(),
        }
    }

    fn with(section: &str) -> String {
        format!(
            "stream:\n  emulator:\n    listen: 127.0.0.1:0\nsigning_keys:\n  - file: key.json\n{section}"
        )
    }

    #[test]
    fn an_inline_secret_is_named_by_field_and_not_quoted() {
        let error = parse_error(&with(&format!(
            "jwt_issuers:\n  - issuer: https://idp\n    audience: a\n    algorithms: [HS256]\n    secret: \"{SECRET}\"\n"
        )));
        assert_eq!(error.field, "jwt_issuers[0].secret");
        assert_eq!(error.position.map(|p| p.0), Some(10));
        assert!(
            error.message.contains("`file:` or `env:`") && error.message.contains("a string"),
            "{error}"
        );
        assert!(!error.to_string().contains(SECRET), "{error}");
    }

    #[test]
    fn a_pem_pasted_into_signing_keys_is_not_quoted() {
        let pem =
            format!("-----BEGIN PRIVATE KEY-----\n    MIIE{SECRET}\n    -----END PRIVATE KEY-----");
        let source = format!(
            "stream:\n  emulator:\n    listen: 127.0.0.1:0\nsigning_keys:\n  - \"{pem}\"\n"
        );
        let error = parse_error(&source);
        assert_eq!(error.field, "signing_keys[0]");
        assert!(error.message.contains("never written inline"), "{error}");
        let shown = error.to_string();
        assert!(
            !shown.contains(SECRET) && !shown.contains("BEGIN"),
            "{shown}"
        );
    }

    #[test]
    fn no_serde_form_quotes_its_value() {
        for (section, field) in [
            (format!("mode: {SECRET}\n"), "mode"),
            (format!("listen: {SECRET}\n"), "listen"),
            (format!("token:\n  ttl: {SECRET}\n"), "token.ttl"),
            (format!("cache:\n  capacity: {SECRET}\n"), "cache.capacity"),
            (format!("demo_page: {SECRET}\n"), "demo_page"),
            (
                format!("trusted_proxies: [{SECRET}]\n"),
                "trusted_proxies[0]",
            ),
            (
                format!("videos:\n  intro:\n    uid: {SECRET}\n"),
                "videos.intro.uid",
            ),
            (
                format!("api_keys:\n  - name: ci\n    sha256: {SECRET}\n"),
                "api_keys[0].sha256",
            ),
            (
                format!(
                    "rules:\n  - name: r\n    videos: [\"*\"]\n    subjects: [anyone]\n    not_before: {SECRET}\n"
                ),
                "rules[0].not_before",
            ),
            (
                format!(
                    "rules:\n  - name: r\n    videos: [\"*\"]\n    subjects: [anyone]\n    countries: {{block: [{SECRET}]}}\n"
                ),
                "rules[0].countries.block[0]",
            ),
            (
                format!(
                    "token:\n  access_rules:\n    - {{type: ip.src, action: allow, ip: [{SECRET}]}}\n"
                ),
                // Internally tagged: serde buffers the entry, and the path stops at the list.
                "token.access_rules",
            ),
            (
                "rules:\n  - name: r\n    videos: [\"*\"]\n    subjects: [anyone]\n    ttl: 25h\n"
                    .to_string(),
                "rules[0].ttl",
            ),
        ] {
            let error = parse_error(&with(&section));
            assert_eq!(error.field, field, "{error}");
            assert!(error.position.is_some(), "{error}");
            assert!(!error.to_string().contains(SECRET), "{error}");
            assert!(error.message.contains("expected"), "{error}");
        }
    }

    #[test]
    fn keys_that_are_not_plain_names_are_not_shown() {
        let error = parse_error(&with(&format!("token:\n  {SECRET}: 1\n")));
        assert_eq!(error.field, "token");
        assert!(
            error.message.starts_with("unknown field, expected"),
            "{error}"
        );
        let error = parse_error(&with("token:\n  tll: 1h\n"));
        assert!(error.message.starts_with("unknown field `tll`"), "{error}");
    }

    #[test]
    fn syntax_errors_keep_libyamls_problem_only() {
        let error = parse_error(&format!("stream:\n  @{SECRET}: 1\n"));
        assert!(
            error.message.starts_with("the YAML cannot be read here"),
            "{error}"
        );
        assert!(error.position.is_some());
        assert!(!error.to_string().contains(SECRET), "{error}");
    }

    #[test]
    fn describe_separates_the_path_and_drops_the_value() {
        assert_eq!(
            describe(
                "a.b[2]: invalid value: string \"x: invalid type: y\", expected z at line 3 column 4"
            ),
            (
                "a.b[2]".to_string(),
                "invalid value: expected z".to_string()
            )
        );
        assert_eq!(
            describe("missing field `stream`"),
            (String::new(), "missing field `stream`".to_string())
        );
    }
}
