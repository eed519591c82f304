//! `streamgate serve` (the default): run the gateway, and the emulator when the configuration
//! says so, until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use super::{load, runtime};
use crate::app::keys::MissingKeys;
use crate::app::{self, App};
use crate::config::Settings;
use crate::identity::Identity;

/// Run the gateway from the configuration at `path` until SIGTERM or SIGINT, then drain.
pub(super) fn run(
    path: &Path,
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    key_history: Option<&Path>,
) -> anyhow::Result<()> {
    let key_history = key_history
        .map(Path::to_path_buf)
        .unwrap_or_else(|| app::key_history::default_path(path));
    let (settings, keys) = load(path, MissingKeys::Generate)?;
    let (open_alias, protected_alias) = example_aliases(&settings);
    let has_users = !settings.identity.users.is_empty();
    let demo_page = settings.demo_page;
    let token_api = settings.token_api.enabled.then(|| {
        settings
            .token_api
            .account_id
            .clone()
            .unwrap_or_else(|| "<account id>".into())
    });
    runtime()?.block_on(async move {
        let mut shutdown = ShutdownSignal::install();
        let options = app::StartOptions {
            listen,
            metrics_listen,
            key_history: Some(key_history),
            ..app::StartOptions::default()
        };
        let app = App::start_with(settings, keys, options).await?;
        let gateway = app.gateway_origin();
        println!("streamgate listening on {gateway}");
        if let Some(addr) = app.metrics_addr() {
            println!("metrics on {}/metrics", app::origin_for(addr));
        }
        if let Some(addr) = app.http_redirect_addr() {
            println!("redirecting plain HTTP on {} to HTTPS", app::origin_for(addr));
        }
        match app.emulator_addr() {
            Some(addr) => println!("Stream emulator on {} (stands in for Cloudflare)", app::origin_for(addr)),
            None => println!("Stream origin {}", app.snapshot().origin),
        }
        if demo_page {
            println!("open {gateway}/ in a browser for the demo page");
        }
        println!("try:");
        if let Some(alias) = open_alias {
            println!("  curl -i {gateway}/watch/{alias}");
            println!("  curl -sL {gateway}/watch/{alias}    # follow the redirect to the player");
        }
        if let Some(alias) = protected_alias {
            println!("  curl -i -H 'X-Api-Key: <key>' {gateway}/watch/{alias}");
            if has_users {
                println!("  curl -i -u <user>:<password> {gateway}/watch/{alias}");
            }
        }
        println!(
            "  curl -s -X POST -H 'Content-Type: application/json' -d '{{\"video_id\":\"<video>\"}}' {gateway}/api/getSignedURL"
        );
        if let Some(account) = token_api {
            println!(
                "  curl -s -X POST -H 'Authorization: Bearer <key>' {gateway}/accounts/{account}/stream/<video>/token"
            );
        }
        shutdown.recv().await;
        // Keep serving while load balancers notice /readyz and the connections told to
        // close go; a second signal cuts the drain short.
        let drain = app.drain_period();
        // Begun before it is announced: whoever reads the line finds /readyz answering 503.
        app.begin_drain();
        println!(
            "draining for {}: /readyz answers 503, connections are asked to close (signal again to stop now)",
            crate::config::human_duration(drain)
        );
        tokio::select! {
            () = tokio::time::sleep(drain) => {}
            () = shutdown.recv() => {}
        }
        println!("shutting down");
        app.shutdown().await;
        Ok(())
    })
}

/// A video anonymous viewers may watch and one they may not, to print as examples.
pub(super) fn example_aliases(settings: &Settings) -> (Option<String>, Option<String>) {
    let mut videos: Vec<_> = settings.catalogue.videos().collect();
    videos.sort_by(|a, b| a.alias.cmp(&b.alias));
    let allowed = |video: &&Arc<crate::authz::catalogue::Video>| {
        settings
            .policy
            .decide(
                &Identity::Anonymous,
                video,
                crate::token::signer::unix_now(),
            )
            .is_ok()
    };
    let open = videos
        .iter()
        .find(|v| allowed(v))
        .map(|v| v.alias.to_string());
    let protected = videos
        .iter()
        .find(|v| !allowed(v))
        .map(|v| v.alias.to_string());
    (open, protected)
}

/// SIGTERM and SIGINT (Ctrl-C), listened for from the moment this is created: a signal that
/// arrives right after the gateway announces itself is not lost to the default action.
pub(super) struct ShutdownSignal {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    /// Register the handlers now (inside the runtime).
    pub(super) fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                terminate: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Resolves on the next SIGTERM or SIGINT.
    pub(super) async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = next(&mut self.terminate) => {},
                () = next(&mut self.interrupt) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
