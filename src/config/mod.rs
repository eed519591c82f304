//! Configuration as plain data: parse the YAML (`raw`), validate it (`validate`, with the
//! identity and policy sections in their own files) into [`Settings`] (`settings`).
//!
//! [`Settings::from_yaml`] is pure (no file or environment access) so tests can feed it
//! strings; [`Settings::load`] reads the file. Nothing here builds a runtime object: keys are
//! read by [`crate::app::keys`], and everything else is built from the settings by
//! [`crate::snapshot::Snapshot::build`]. Every error names the file, the line and column
//! where known, and the field.

mod identity;
mod locate;
mod parse_error;
mod policy;
mod raw;
mod settings;
mod validate;

use std::path::Path;

pub use identity::IdentitySettings;
pub use locate::{Seg, display_path, locate};
pub use policy::lint;
pub use raw::parse_rfc3339;
pub use settings::*;

pub use crate::authz::ratelimit::{Rate, RateLimitSettings};
pub use crate::proxy::UpstreamSettings;
pub use crate::secret::KeyLocation;
use raw::RawConfig;
use validate::{Checker, check_access_rules, key, parse_origin, validate};

impl Settings {
    /// Read and validate the file at `path`. Key material is not read here.
    pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|error| {
            ConfigErrors(vec![ConfigError {
                file: file.clone(),
                position: None,
                field: String::new(),
                message: format!("cannot read the configuration: {error}"),
            }])
        })?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        Self::from_yaml(&source, &file, base_dir)
    }

    /// Parse and validate `source`; `file` names it in errors and relative key paths are
    /// resolved against `base_dir`.
    pub fn from_yaml(source: &str, file: &str, base_dir: &Path) -> Result<Settings, ConfigErrors> {
        let raw: RawConfig = serde_yaml::from_str(source)
            .map_err(|error| ConfigErrors(vec![parse_error::config_error(file, &error)]))?;
        let mut check = Checker {
            file,
            source,
            errors: Vec::new(),
        };
        let settings = validate(raw, &mut check, base_dir);
        if check.errors.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigErrors(check.errors))
        }
    }

    /// The origin tokens are redirected to, when it is known before start-up (not for the
    /// emulator, whose address is known once it listens).
    pub fn configured_origin(&self) -> Option<&str> {
        match &self.stream {
            StreamSettings::Origin(origin) => Some(origin),
            StreamSettings::Emulator(_) => None,
        }
    }
}

#[cfg(test)]
mod tests;
