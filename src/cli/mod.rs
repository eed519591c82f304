//! Command line: `serve` (default), `emulate`, `sign`, `check`. `anyhow` lives here only.

pub mod explain;
pub mod inspect;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};

use crate::app::keys::{MissingKeys, load_signing_keys};
use crate::app::{self, App};
use crate::config::{
    ConfigErrors, EmulatorOptions, KeyLocation, Settings, StreamSettings, human_duration,
};
use crate::emulator::Emulator;
use crate::http::server;
use crate::identity::Identity;
use crate::request::route::Resource;
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
    /// Log format: `text` (human), `json` (one object per line), or `auto` (text on a
    /// terminal, JSON otherwise).
    #[arg(
        long,
        global = true,
        default_value = "text",
        env = "STREAMGATE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Auto,
    Text,
    Json,
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
    /// Show how the policy decides for one subject and video, and the claims it would mint.
    Explain(ExplainArgs),
    /// Read a password from stdin and print its argon2id hash for `users.<name>.password`.
    HashPassword,
    /// Decode a Stream token (or a URL carrying one): claims, expiry, signature against the
    /// configured keys, and, with --ip/--country, whether Stream would play it for that viewer.
    /// Exit 0 when Stream would accept it now, 1 otherwise.
    Inspect {
        /// The token, or a URL such as https://customer-x.cloudflarestream.com/<token>/iframe.
        token: String,
        /// The viewer's address, to judge the token's access rules.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// The viewer's country (ISO 3166-1 alpha-2), to judge country rules.
        #[arg(long)]
        country: Option<String>,
    },
    /// Generate a random API key: print it once, with the SHA-256 entry for `api_keys`.
    HashApiKey {
        /// The name the key gets in the policy.
        #[arg(long, default_value = "new-key")]
        name: String,
    },
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("who").args(["user", "api_key_name", "anonymous"])))]
struct ExplainArgs {
    /// Video uid or alias.
    #[arg(long)]
    video: String,
    /// A Basic user, or a JWT subject.
    #[arg(long)]
    user: Option<String>,
    /// An API key, by its name in `api_keys`.
    #[arg(long)]
    api_key_name: Option<String>,
    /// Groups the subject is in (comma-separated), as a JWT's groups claim would say.
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// A JWT claim, `name=value` (repeatable).
    #[arg(long, value_parser = parse_claim)]
    claim: Vec<(String, String)>,
    /// No credential at all (the default when no subject is given).
    #[arg(long, conflicts_with_all = ["groups", "claim"])]
    anonymous: bool,
    /// The viewer's address (for tokens bound to it, and to judge access rules).
    #[arg(long)]
    ip: Option<std::net::IpAddr>,
    /// The viewer's country, to judge country access rules as Stream would.
    #[arg(long)]
    country: Option<String>,
    /// When to decide, RFC 3339 (default: now).
    #[arg(long, value_parser = parse_time)]
    at: Option<u64>,
}

fn parse_claim(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err("write name=value".into()),
    }
}

fn parse_time(text: &str) -> Result<u64, String> {
    crate::config::parse_rfc3339(text)
        .ok_or_else(|| "expected an RFC 3339 time such as 2026-12-01T18:00:00Z".into())
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
    init_tracing(cli.log_format);
    let result = match cli.command.unwrap_or(Command::Serve { listen: None }) {
        Command::Serve { listen } => serve(&cli.config, listen),
        Command::Emulate { listen } => emulate(&cli.config, listen),
        Command::Sign {
            video,
            ttl,
            downloadable,
        } => sign(&cli.config, &video, ttl, downloadable),
        Command::Check => check(&cli.config),
        Command::Explain(args) => explain(&cli.config, args),
        Command::HashPassword => hash_password(),
        Command::Inspect { token, ip, country } => {
            return inspect(&cli.config, &token, ip, country.as_deref());
        }
        Command::HashApiKey { name } => hash_api_key(&name),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
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
        let shutdown = ShutdownSignal::install();
        let app = App::start(settings, keys, listen).await?;
        let gateway = app.gateway_origin();
        println!("streamgate listening on {gateway}");
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
        println!("shutting down");
        app.shutdown().await;
        Ok(())
    })
}

/// A video anonymous viewers may watch and one they may not, to print as examples.
fn example_aliases(settings: &Settings) -> (Option<String>, Option<String>) {
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
    let emulator = Emulator::new(crate::snapshot::emulator_settings(
        &settings, &keys, &options,
    ))?;
    let listen = listen.unwrap_or(options.listen);
    runtime()?.block_on(async move {
        let shutdown = ShutdownSignal::install();
        let listener = app::bind(listen, "Stream emulator").await?;
        let addr = listener.local_addr()?;
        println!("Stream emulator listening on {}", app::origin_for(addr));
        for key in &keys {
            println!("  trusts key {}", key.id());
        }
        server::serve(listener, Arc::new(emulator), shutdown.recv()).await;
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

fn check(path: &Path) -> anyhow::Result<()> {
    let settings = Settings::load(path).map_err(config_failure)?;
    let (keys, _) = load_signing_keys(&settings, MissingKeys::Skip).map_err(config_failure)?;
    // Reads issuer secrets, public keys and JWKS files.
    crate::snapshot::authenticator(&settings).map_err(config_failure)?;
    app::check_tls(&settings).map_err(config_failure)?;
    println!("{}: OK", settings.file);
    println!("  listen   {}", settings.listen);
    if let Some(tls) = &settings.tls {
        println!(
            "  tls      cert {}, key {}",
            tls.files.cert.display(),
            tls.files.key.display()
        );
        if let Some(addr) = tls.http_redirect_listen {
            println!("  redirect plain HTTP on {addr} to HTTPS");
        }
    }
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
    let identity = &settings.identity;
    println!("  api keys {}", identity.api_keys.len());
    println!("  users    {}", identity.users.len());
    for issuer in &identity.issuers {
        let algorithms: Vec<String> = issuer.algorithms.iter().map(|a| format!("{a:?}")).collect();
        println!("  issuer   {} ({})", issuer.issuer, algorithms.join(", "));
    }
    if !identity.trusted_proxies.is_empty() {
        let nets: Vec<String> = identity
            .trusted_proxies
            .nets()
            .iter()
            .map(|n| n.to_string())
            .collect();
        println!("  proxies  {}", nets.join(", "));
    }
    let origins = &settings.cors.allowed_origins;
    println!(
        "  embed    demo page {}; cross-origin /api/* from {}; token API {}",
        if settings.demo_page { "on" } else { "off" },
        if origins.is_empty() {
            "no other site".to_string()
        } else {
            origins.join(", ")
        },
        match (&settings.token_api.enabled, &settings.token_api.account_id) {
            (false, _) => "off".to_string(),
            (true, Some(account)) => format!("on for account {account}"),
            (true, None) => "on for any account id".to_string(),
        }
    );
    println!("  rules    {}", settings.policy.rules().len());
    for rule in settings.policy.rules() {
        println!("    - {}", crate::cli::explain::describe_rule(rule));
    }
    for warning in &settings.warnings {
        println!("warning: {warning}");
    }
    if keys.is_empty() && settings.signing_keys.iter().all(|k| !k.generate_if_missing) {
        bail!("no usable signing key");
    }
    Ok(())
}

fn explain(path: &Path, args: ExplainArgs) -> anyhow::Result<()> {
    let settings = Settings::load(path).map_err(config_failure)?;
    let (keys, _) = load_signing_keys(&settings, MissingKeys::Skip).map_err(config_failure)?;
    let question = crate::cli::explain::Question {
        asker: crate::cli::explain::Asker {
            user: args.user,
            api_key_name: args.api_key_name,
            groups: args.groups,
            claims: args.claim,
        },
        video: args.video,
        at: args.at.unwrap_or_else(crate::token::signer::unix_now),
        ip: args.ip,
        country: args.country,
    };
    let report = crate::cli::explain::explain(
        &settings,
        &question,
        keys.first().map(|k| k.id()),
        settings.nbf_backdate,
    )?;
    print!("{report}");
    Ok(())
}

fn inspect(
    path: &Path,
    token: &str,
    ip: Option<std::net::IpAddr>,
    country: Option<&str>,
) -> ExitCode {
    // The local offset can only be read safely while the process has one thread.
    let local_offset_secs = time::UtcOffset::current_local_offset()
        .ok()
        .map(|offset| i64::from(offset.whole_seconds()));
    // Keys are optional: without a readable configuration the signature is not checked.
    let keys: Vec<crate::emulator::VerifyingKeySpec> = Settings::load(path)
        .ok()
        .and_then(|settings| load_signing_keys(&settings, MissingKeys::Skip).ok())
        .map(|(keys, _)| {
            keys.iter()
                .map(|key| {
                    let (modulus, exponent) = key.public_components();
                    crate::emulator::VerifyingKeySpec {
                        id: key.id().to_string(),
                        modulus,
                        exponent,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let report = crate::cli::inspect::inspect(&crate::cli::inspect::Inspection {
        input: token,
        keys: &keys,
        ip,
        country,
        now: crate::token::signer::unix_now(),
        local_offset_secs,
    });
    match report {
        Ok(report) => {
            print!("{}", report.text);
            if report.acceptable {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(malformed) => {
            eprintln!("error: not a Stream token: {malformed}");
            ExitCode::FAILURE
        }
    }
}

fn hash_password() -> anyhow::Result<()> {
    use std::io::Read;
    let mut input = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut input)
        .context("cannot read the password from stdin")?;
    let password = input
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&input);
    let hash = crate::identity::basic::hash_password(password).map_err(|e| anyhow!(e))?;
    println!("{hash}");
    Ok(())
}

fn hash_api_key(name: &str) -> anyhow::Result<()> {
    use aws_lc_rs::rand::SecureRandom;
    use base64::Engine;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow!("the system random number generator failed"))?;
    let key = format!(
        "sg_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let digest = crate::identity::hash_api_key(&key);
    println!("key: {key}");
    println!("  (shown once: give it to the client; only its SHA-256 goes in the config)");
    println!();
    println!("api_keys:");
    println!("  - name: {name}");
    println!("    sha256: {digest}");
    Ok(())
}

/// SIGTERM and SIGINT (Ctrl-C), listened for from the moment this is created: a signal that
/// arrives right after the gateway announces itself is not lost to the default action.
struct ShutdownSignal {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    /// Register the handlers now (inside the runtime).
    fn install() -> Self {
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

    /// Resolves on the first SIGTERM or SIGINT.
    async fn recv(mut self) {
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
