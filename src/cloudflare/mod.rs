//! Cloudflare Stream's management API, the subset the operator's commands need: signing keys
//! (create, list, delete) and videos (list, get, edit), plus the audit that compares the
//! account with the configuration.
//!
//! Requests go through the shared upstream client ([`crate::http::client`]). The account id
//! and the API token come from the configuration's `cloudflare:` section, the environment
//! (`CLOUDFLARE_ACCOUNT_ID`, `CLOUDFLARE_API_TOKEN`) or a file, never the command line; the
//! token is held in a [`crate::secret::Secret`] and never appears in an error or a log line.
//!
//! Above this module: `cli` (the `stream` commands) and `app` (the periodic audit in
//! `serve`). Below it: `config`, `http`, `secret`, `untrusted`.

pub mod api;
pub mod audit;
pub mod time;

pub use api::{
    AccountKey, AccountVideo, ApiError, ApiSettings, CreatedKey, CredentialError, RetryPolicy,
    StreamApi, VideoEdit,
};
pub use audit::{AuditInput, AuditReport, Finding, FindingKind, Severity};

use crate::config::Settings;

/// The API settings for `settings`: its `cloudflare:` section, then the environment read
/// through `env` (see [`ApiSettings::resolve`]).
pub fn api_settings(
    settings: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ApiSettings, CredentialError> {
    let cloudflare = &settings.cloudflare;
    ApiSettings::resolve(
        cloudflare.account_id.as_deref(),
        cloudflare.api_token.as_ref(),
        cloudflare.api_base.as_deref(),
        env,
    )
}
