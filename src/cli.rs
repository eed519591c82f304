//! Command line: `serve` (default), `emulate`, `sign`, `check`. `anyhow` lives here only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};

use crate::app::{self, App};
use crate::config::{
    ConfigErrors, EmulatorOptions, KeyLocation, MissingKeys, Settings, StreamSettings,
    human_duration, load_signing_keys,
};
use crate::emulator::Emulator;
use crate::identity::Identity;
use crate::policy::{Action, Subject, VideoSelector};
use crate::routes::Resource;
use crate::server;
use crate::token::claims::MAX_TTL;
use crate::token::{Signer, SigningKey, TokenSettings, VideoUid};

#[derive(Debug, Parser)]
#[command(
    name = "streamgate",
    version,
    about = "A gateway that signs Cloudflare Stream URLs on the fly"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        default_value = "config.yaml",
        env = "STREAMGATE_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (and the emulator, when the config says so). The default.
    Serve {
        /// Listen on this address instead of the configured one (port 0 picks a free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run only the local Stream emulator, trusting the configured keys.
    Emulate {
        /// Listen on this address instead of `stream.emulator.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Sign a token for a video (uid or alias) and print it with its player URL.
    Sign {
        /// Video uid or alias.
        video: String,
        /// Token lifetime, e.g. 10m or 2h (at most 24h); default: `token.ttl`.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
        /// Let the token fetch MP4 downloads.
        #[arg(long)]
        downloadable: bool,
    },
    /// Validate the configuration and its keys; print a summary or every error (exit 1).
    Check,
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| format!("{e}; use e.g. 90s, 10m, 1h"))?;
    if ttl > MAX_TTL || ttl < Duration::from_secs(1) {
        return Err("must be between 1s and 24h".into());
    }
    Ok(ttl)
}

/// Parse the command line, run the command, and map failures to exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command.unwrap_or(Command::Serve { listen: None }) {
        Command::Serve { listen } => serve(&cli.config, listen),
        Command::Emulate { listen } => emulate(&cli.config, listen),
        Command::Sign {
            video,
            ttl,
            downloadable,
        } => sign(&cli.config, &video, ttl, downloadable),
        Command::Check => check(&cli.config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Load settings and keys, printing every configuration error.
fn load(path: &Path, missing: MissingKeys) -> anyhow::Result<(Settings, Vec<SigningKey>)> {
    load_reporting(path, missing, false)
}

/// [`load`], optionally printing a newly generated development key in Cloudflare's
/// `POST /stream/keys` format so other tools can be pointed at the emulator.
fn load_reporting(
    path: &Path,
    missing: MissingKeys,
    print_generated: bool,
) -> anyhow::Result<(Settings, Vec<SigningKey>)> {
    let settings = Settings::load(path).map_err(config_failure)?;
    for warning in &settings.warnings {
        eprintln!("warning: {}: {warning}", settings.file);
    }
    let (keys, report) = load_signing_keys(&settings, missing).map_err(config_failure)?;
    for path in report.generated {
        println!(
            "generated a development signing key in Cloudflare's format (id, pem, jwk): {}",
            path.display()
        );
        if print_generated {
            // A development key for the emulator only: real Stream never trusts it.
            let document = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read back {}", path.display()))?;
            println!("{document}");
        }
    }
    Ok((settings, keys))
}

fn config_failure(errors: ConfigErrors) -> anyhow::Error {
    anyhow!("invalid configuration\n{errors}")
}

fn serve(path: &Path, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let (settings, keys) = load(path, MissingKeys::Generate)?;
    let (open_alias, protected_alias) = example_aliases(&settings);
    runtime()?.block_on(async move {
        let app = App::start(settings, keys, listen).await?;
        let gateway = app::origin_for(app.gateway_addr());
        println!("streamgate listening on {gateway}");
        match app.emulator_addr() {
            Some(addr) => println!("Stream emulator on {} (stands in for Cloudflare)", app::origin_for(addr)),
            None => println!("Stream origin {}", app.gateway().origin()),
        }
        println!("try:");
        if let Some(alias) = open_alias {
            println!("  curl -i {gateway}/watch/{alias}");
            println!("  curl -sL {gateway}/watch/{alias}    # follow the redirect to the player");
        }
        if let Some(alias) = protected_alias {
            println!("  curl -i -H 'X-Api-Key: <key>' {gateway}/watch/{alias}");
        }
        println!(
            "  curl -s -X POST -H 'Content-Type: application/json' -d '{{\"video_id\":\"<video>\"}}' {gateway}/api/getSignedURL"
        );
        shutdown_signal().await;
        println!("shutting down");
        app.shutdown().await;
        Ok(())
    })
}

/// A video anonymous viewers may watch and one they may not, to print as examples.
fn example_aliases(settings: &Settings) -> (Option<String>, Option<String>) {
    let mut videos: Vec<_> = settings.catalogue.videos().collect();
    videos.sort_by(|a, b| a.alias.cmp(&b.alias));
    let allowed = |video: &&Arc<crate::catalogue::Video>| {
        settings.policy.decide(&Identity::Anonymous, video).is_ok()
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

fn emulate(path: &Path, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let (settings, keys) = load_reporting(path, MissingKeys::Generate, true)?;
    let options = match &settings.stream {
        StreamSettings::Emulator(options) => options.clone(),
        StreamSettings::Origin(_) => EmulatorOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            country_header: http::HeaderName::from_static("cf-ipcountry"),
            client_ip_header: None,
            leeway: Duration::from_secs(5),
        },
    };
    let keys: Vec<Arc<SigningKey>> = keys.into_iter().map(Arc::new).collect();
    let emulator = Emulator::new(app::emulator_settings(&settings, &keys, &options))?;
    let listen = listen.unwrap_or(options.listen);
    runtime()?.block_on(async move {
        let listener = app::bind(listen, "Stream emulator").await?;
        let addr = listener.local_addr()?;
        println!("Stream emulator listening on {}", app::origin_for(addr));
        for key in &keys {
            println!("  trusts key {}", key.id());
        }
        server::serve(listener, Arc::new(emulator), shutdown_signal()).await;
        Ok(())
    })
}

fn sign(path: &Path, video: &str, ttl: Option<Duration>, downloadable: bool) -> anyhow::Result<()> {
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

fn check(path: &Path) -> anyhow::Result<()> {
    let settings = Settings::load(path).map_err(config_failure)?;
    let (keys, _) = load_signing_keys(&settings, MissingKeys::Skip).map_err(config_failure)?;
    println!("{}: OK", settings.file);
    println!("  listen   {}", settings.listen);
    match &settings.stream {
        StreamSettings::Origin(origin) => println!("  stream   {origin}"),
        StreamSettings::Emulator(options) => {
            println!("  stream   built-in emulator on {}", options.listen)
        }
    }
    for (source, key) in settings
        .signing_keys
        .iter()
        .zip(keys.iter().map(Some).chain(std::iter::repeat(None)))
    {
        let from = match &source.location {
            KeyLocation::File(file) => format!("file {}", file.display()),
            KeyLocation::Env(var) => format!("env {var}"),
        };
        match key {
            Some(key) => println!("  key      {} ({from})", key.id()),
            None => println!("  key      not yet generated ({from}); serve or emulate creates it"),
        }
    }
    let token = &settings.default_token;
    println!(
        "  tokens   ttl {}, reused until {} remain, nbf {} early, cache {} entries",
        human_duration(token.ttl),
        human_duration(settings.min_remaining),
        human_duration(settings.nbf_backdate),
        settings.cache_capacity
    );
    let mut aliases: Vec<&str> = settings.catalogue.videos().map(|v| &*v.alias).collect();
    aliases.sort_unstable();
    println!("  videos   {} ({})", aliases.len(), aliases.join(", "));
    println!("  api keys {}", settings.api_keys.len());
    println!("  rules    {}", settings.policy.rules().len());
    for rule in settings.policy.rules() {
        let videos = match &rule.videos {
            VideoSelector::All => "every video".to_string(),
            VideoSelector::Some { uids, tags } => {
                let mut tags: Vec<String> = tags.iter().map(|t| format!("tag:{t}")).collect();
                tags.sort();
                format!("{} video(s) {}", uids.len(), tags.join(" "))
                    .trim_end()
                    .to_string()
            }
        };
        let subjects: Vec<String> = rule
            .subjects
            .iter()
            .map(|s| match s {
                Subject::Anyone => "anyone".to_string(),
                Subject::Authenticated => "authenticated".to_string(),
                Subject::ApiKey(name) => format!("api_key:{name}"),
            })
            .collect();
        let action = match rule.action {
            Action::Allow => "allow",
            Action::Deny => "deny",
        };
        println!(
            "    - {}: {action} {} on {videos} (ttl {}{}{})",
            rule.name,
            subjects.join(", "),
            human_duration(rule.token.ttl),
            if rule.token.downloadable {
                ", downloadable"
            } else {
                ""
            },
            if rule.token.access_rules.is_empty() {
                String::new()
            } else {
                format!(", {} access rule(s)", rule.token.access_rules.len())
            }
        );
    }
    for warning in &settings.warnings {
        println!("warning: {warning}");
    }
    if keys.is_empty() && settings.signing_keys.iter().all(|k| !k.generate_if_missing) {
        bail!("no usable signing key");
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
