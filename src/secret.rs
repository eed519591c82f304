//! Secrets are redacted by type: `Debug` and `Display` never show the value.

use std::fmt;

/// A value that must never reach logs, errors or `Debug` output (tokens, keys, API keys).
///
/// Read it deliberately with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wrap a secret value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret value itself; call sites that use it are the ones to audit.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("hunter2".to_string());
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(secret.expose(), "hunter2");
    }
}

/// Where a secret (a signing key, an issuer's shared secret) is read from: never inline in
/// the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocation {
    File(std::path::PathBuf),
    Env(String),
}
