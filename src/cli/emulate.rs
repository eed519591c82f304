//! `streamgate emulate`: run only the local Stream emulator, trusting the configured keys.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::serve::ShutdownSignal;
use super::{load_reporting, runtime};
use crate::app::keys::{MissingKeys, load_emulator_api};
use crate::app::{self};
use crate::config::{EmulatorOptions, StreamSettings};
use crate::emulator::Emulator;
use crate::http::server;
use crate::token::SigningKey;

/// Run the emulator on `listen` (default: `stream.emulator.listen`) until a signal.
pub(super) fn run(path: &Path, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let (settings, keys) = load_reporting(path, MissingKeys::Generate, true)?;
    let options = match &settings.stream {
        StreamSettings::Emulator(options) => options.clone(),
        StreamSettings::Origin(_) => EmulatorOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            country_header: http::HeaderName::from_static("cf-ipcountry"),
            client_ip_header: None,
            leeway: Duration::from_secs(5),
            unprotected: Vec::new(),
        },
    };
    let keys: Vec<Arc<SigningKey>> = keys.into_iter().map(Arc::new).collect();
    let mut emulator_settings = crate::snapshot::emulator_settings(&settings, &keys, &options);
    // Read once: the account keeps what its API changes for as long as this runs.
    emulator_settings.api = load_emulator_api(&settings)?;
    let api_enabled = emulator_settings.api.is_some();
    let emulator = Emulator::new(emulator_settings)?;
    let listen = listen.unwrap_or(options.listen);
    runtime()?.block_on(async move {
        let mut shutdown = ShutdownSignal::install();
        let listener = app::bind(listen, "Stream emulator").await?;
        let addr = listener.local_addr()?;
        println!("Stream emulator listening on {}", app::origin_for(addr));
        for key in &keys {
            println!("  trusts key {}", key.id());
        }
        if api_enabled {
            println!(
                "  management API at {}/client/v4 (cloudflare.account_id, cloudflare.api_token)",
                app::origin_for(addr)
            );
        }
        server::serve(listener, Arc::new(emulator), shutdown.recv()).await;
        Ok(())
    })
}
