//! Command line: `serve` (default), `emulate`, `sign`, `check`. `anyhow` lives here only.

mod check;
mod emulate;
pub mod explain;
mod hash;
pub mod inspect;
mod serve;
mod sign;
pub mod stream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::{Parser, Subcommand};

use crate::app::keys::{MissingKeys, load_signing_keys};
use crate::config::{ConfigErrors, Settings};
use crate::log_writer;
use crate::token::SigningKey;
use crate::token::claims::MAX_TTL;

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
    /// The signing-key history `serve` records and `stream keys delete` reads (default:
    /// `.streamgate/key-history.json` beside the configuration file).
    #[arg(long, global = true, env = "STREAMGATE_KEY_HISTORY")]
    key_history: Option<PathBuf>,
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
        /// Serve `/metrics` on this address instead of `metrics_listen` (port 0 picks a free
        /// port).
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
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
    Explain(explain::ExplainArgs),
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
    /// Cloudflare Stream's API for the configured account: signing keys, videos, the audit.
    /// The account id and API token come from the `cloudflare:` section or
    /// CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN, never from the command line.
    #[command(subcommand)]
    Stream(stream::StreamCommand),
    /// Generate a random API key: print it once, with the SHA-256 entry for `api_keys`.
    HashApiKey {
        /// The name the key gets in the policy.
        #[arg(long, default_value = "new-key")]
        name: String,
    },
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
    // Dropped when the command returns: every line logged before is written.
    let _log = init_tracing(cli.log_format);
    let result = match cli.command.unwrap_or(Command::Serve {
        listen: None,
        metrics_listen: None,
    }) {
        Command::Serve {
            listen,
            metrics_listen,
        } => serve::run(
            &cli.config,
            listen,
            metrics_listen,
            cli.key_history.as_deref(),
        ),
        Command::Emulate { listen } => emulate::run(&cli.config, listen),
        Command::Sign {
            video,
            ttl,
            downloadable,
        } => sign::run(&cli.config, &video, ttl, downloadable),
        Command::Check => check::run(&cli.config),
        Command::Explain(args) => explain::run(&cli.config, args),
        Command::HashPassword => hash::hash_password(),
        Command::Inspect { token, ip, country } => {
            return inspect::run(&cli.config, &token, ip, country.as_deref());
        }
        Command::HashApiKey { name } => hash::hash_api_key(&name),
        Command::Stream(command) => {
            return match stream::main(&cli.config, cli.key_history.as_deref(), command) {
                Ok(code) => ExitCode::from(code),
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Install the log subscriber writing through [`log_writer`]; the guard flushes it.
fn init_tracing(format: LogFormat) -> Option<log_writer::LogGuard> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    // Lines are formatted on the thread that logs them and written by a thread of their own.
    // When stderr is a file, its written pages are dropped from the page cache as it grows.
    let stderr = crate::page_cache::Trimmed::new(std::io::stderr());
    let (writer, guard) = match log_writer::spawn(stderr, log_writer::QUEUE_BYTES) {
        Ok((writer, guard)) => (writer, guard),
        Err(error) => {
            eprintln!("error: cannot start the log writer: {error}");
            return None;
        }
    };
    let ansi = std::io::stderr().is_terminal();
    if json || !ansi {
        // The access log formats its lines itself, in the same shape (colours aside).
        log_writer::install_direct(&writer, json);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    Some(guard)
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
        // A notice, on stderr: what a command prints on stdout (a token, a key document) is
        // its answer, for scripts to read.
        eprintln!(
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
