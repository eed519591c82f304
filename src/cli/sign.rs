//! `streamgate sign`: sign a token for one video and print it with its player URL.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::anyhow;

use super::load;
use crate::app::keys::MissingKeys;
use crate::app::{self};
use crate::config::{StreamSettings, human_duration};
use crate::request::route::Resource;
use crate::token::{Signer, TokenSettings, VideoUid};

/// Print a token for `video` with its player URL.
pub(super) fn run(
    path: &Path,
    video: &str,
    ttl: Option<Duration>,
    downloadable: bool,
) -> anyhow::Result<()> {
    let (settings, keys) = load(path, MissingKeys::Generate)?;
    let uid = match settings.catalogue.resolve(video) {
        Some(found) => found.uid,
        None => video
            .parse::<VideoUid>()
            .map_err(|_| anyhow!("`{video}` is neither a uid nor an alias in the catalogue"))?,
    };
    let token_settings = TokenSettings {
        ttl: ttl.unwrap_or(settings.default_token.ttl),
        downloadable: downloadable || settings.default_token.downloadable,
        access_rules: Arc::clone(&settings.default_token.access_rules),
        not_after: None,
    };
    let origin = match &settings.stream {
        StreamSettings::Origin(origin) => origin.clone(),
        StreamSettings::Emulator(options) => app::origin_for(options.listen),
    };
    let signer = Signer::new(keys, settings.nbf_backdate, 1);
    let issued = signer.sign_blocking(&uid, &token_settings)?;
    let token = issued.token.expose();
    let expires = UNIX_EPOCH + Duration::from_secs(issued.expires_at);
    println!("{token}");
    println!("url:     {origin}/{token}/{}", Resource::Iframe.path());
    println!("video:   {uid}");
    println!("key:     {}", signer.active_key().id());
    println!(
        "expires: {} (in {})",
        humantime::format_rfc3339_seconds(expires),
        human_duration(token_settings.ttl)
    );
    Ok(())
}
