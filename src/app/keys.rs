//! Signing keys: read every configured key from its file or environment variable (creating
//! development keys when asked), for [`crate::snapshot::Snapshot::build`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::{ConfigError, ConfigErrors, KeyLocation, Settings};
use crate::emulator::ApiAccess;
use crate::secret::Secret;
use crate::token::SigningKey;

/// Whether missing development keys may be created while loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingKeys {
    /// Create keys marked `generate_if_missing` whose file is absent (serve, emulate).
    Generate,
    /// Report them as errors.
    Fail,
    /// Leave them out of the result without an error (check: they will be generated).
    Skip,
}

/// What happened while loading keys, for the operator.
#[derive(Debug, Default)]
pub struct KeyLoadReport {
    /// Files created with a fresh development key.
    pub generated: Vec<PathBuf>,
}

/// Read and parse every configured signing key.
pub fn load_signing_keys(
    settings: &Settings,
    missing: MissingKeys,
) -> Result<(Vec<SigningKey>, KeyLoadReport), ConfigErrors> {
    let mut keys = Vec::new();
    let mut errors = Vec::new();
    let mut report = KeyLoadReport::default();
    for source in &settings.signing_keys {
        let fail = |message: String| ConfigError {
            file: settings.file.clone(),
            position: source.position,
            field: source.field.clone(),
            message,
        };
        let material = match &source.location {
            KeyLocation::Env(var) => match std::env::var(var) {
                Ok(value) => value,
                Err(_) => {
                    errors.push(fail(
                        "the environment variable named by `env` is not set or not UTF-8".into(),
                    ));
                    continue;
                }
            },
            KeyLocation::File(path) => {
                let absent = source.generate_if_missing && !path.exists();
                if absent && missing == MissingKeys::Skip {
                    continue;
                }
                if absent && missing == MissingKeys::Generate {
                    if let Err(message) = write_generated_key(path) {
                        errors.push(fail(message));
                        continue;
                    }
                    report.generated.push(path.clone());
                }
                match std::fs::read_to_string(path) {
                    Ok(text) => text,
                    Err(error) => {
                        // io::Error's text names no path; the path (a configured value)
                        // is not repeated either.
                        errors.push(fail(format!(
                            "cannot read the file named by `file`: {error}"
                        )));
                        continue;
                    }
                }
            }
        };
        match SigningKey::from_material(source.id.as_deref(), &material) {
            Ok(key) => keys.push(key),
            Err(error) => errors.push(fail(error.to_string())),
        }
    }
    let mut seen = HashMap::new();
    for (key, source) in keys.iter().zip(&settings.signing_keys) {
        if let Some(first) = seen.insert(key.id().to_string(), &source.field) {
            errors.push(ConfigError {
                file: settings.file.clone(),
                position: source.position,
                field: source.field.clone(),
                message: format!("holds the same key id as {first}"),
            });
        }
    }
    if errors.is_empty() {
        Ok((keys, report))
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The account id and API token the emulator's management API accepts: `cloudflare.account_id`
/// (else `CLOUDFLARE_ACCOUNT_ID`) and the token from `cloudflare.api_token` (else
/// `CLOUDFLARE_API_TOKEN`). `Ok(None)` when either is absent (the API is then disabled);
/// `Err` when a configured token cannot be read or is empty. Errors never hold the token.
pub fn load_emulator_api(settings: &Settings) -> Result<Option<ApiAccess>, ConfigErrors> {
    let cloudflare = &settings.cloudflare;
    let fail = |message: &str| {
        ConfigErrors(vec![ConfigError {
            file: settings.file.clone(),
            position: None,
            field: "cloudflare.api_token".into(),
            message: message.into(),
        }])
    };
    let configured = cloudflare.api_token.is_some();
    let token = match cloudflare.api_token_location() {
        KeyLocation::Env(var) => std::env::var(var).ok(),
        KeyLocation::File(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            // io::Error's text names no path; the path (a configured value) is not repeated.
            Err(error) => {
                return Err(fail(&format!(
                    "cannot read the file named by `file`: {error}"
                )));
            }
        },
    };
    let token = token.map(|token| token.trim().to_string());
    let token = match token {
        Some(token) if !token.is_empty() => token,
        Some(_) if configured => return Err(fail("the API token is empty")),
        None if configured => {
            return Err(fail(
                "the environment variable named by `env` is not set or not UTF-8",
            ));
        }
        _ => return Ok(None),
    };
    Ok(cloudflare
        .resolved_account_id()
        .map(|account_id| ApiAccess {
            account_id,
            token: Secret::new(token),
        }))
}

fn write_generated_key(path: &Path) -> Result<(), String> {
    let generated = crate::token::keys::generate().map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the key file's directory: {e}"))?;
    }
    write_private_file(path, generated.cloudflare_json.expose())
        .map_err(|e| format!("cannot write the key file: {e}"))
}

/// Create `path` readable by its owner only, failing if it exists.
pub fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
listen: 127.0.0.1:0
stream:
  emulator:
    listen: 127.0.0.1:0
signing_keys:
  - file: key.json
token:
  ttl: 1h
";

    #[test]
    fn bad_key_material_names_the_key_entry() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key.json"), "not a key").unwrap();
        let settings = Settings::from_yaml(CONFIG, "test.yaml", dir.path()).unwrap();
        let errors = load_signing_keys(&settings, MissingKeys::Fail).unwrap_err();
        let error = &errors.0[0];
        assert_eq!(error.field, "signing_keys[0]");
        assert_eq!(error.position.map(|p| p.0), Some(6));
        assert!(error.message.contains("not recognised"), "{error}");
        assert!(!error.to_string().contains("not a key"));
    }

    #[test]
    fn missing_dev_key_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let source = CONFIG.replace(
            "  - file: key.json\n",
            "  - file: keys/dev.json\n    generate_if_missing: true\n",
        );
        let settings = Settings::from_yaml(&source, "test.yaml", dir.path()).unwrap();
        assert!(load_signing_keys(&settings, MissingKeys::Fail).is_err());
        let (keys, report) = load_signing_keys(&settings, MissingKeys::Generate).unwrap();
        assert_eq!(report.generated.len(), 1);
        let (again, report) = load_signing_keys(&settings, MissingKeys::Generate).unwrap();
        assert!(report.generated.is_empty());
        assert_eq!(keys[0].id(), again[0].id());
    }
}
