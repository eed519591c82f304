//! `streamgate stream keys|videos|audit`: the operator's commands against Cloudflare Stream's
//! API, for the account in the configuration's `cloudflare:` section (or
//! `CLOUDFLARE_ACCOUNT_ID` and `CLOUDFLARE_API_TOKEN`).
//!
//! Each command is an async function over a [`Session`] (where output goes, the terminal,
//! the clock, the environment), so tests run them in-process against the emulator.

mod audit;
mod keys;
pub mod sync;
mod videos;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Subcommand;

use crate::cloudflare::{ApiSettings, RetryPolicy, StreamApi};
use crate::config::{KeyLocation, Settings};
use crate::token::SigningKey;

pub use audit::AuditArgs;

/// `streamgate stream ...`
#[derive(Debug, Clone, Subcommand)]
pub enum StreamCommand {
    /// Signing keys on the account: create, list, delete.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The account's videos next to the catalogue; propose catalogue entries.
    #[command(subcommand)]
    Videos(VideosCommand),
    /// Check that the account protects every catalogue video and holds every configured key.
    /// Exit 0: clean (warnings allowed); 1: the audit could not run; 2: a catalogue video is
    /// publicly playable; 3: other errors (missing videos or keys, allowedOrigins).
    Audit(AuditArgs),
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Create a signing key; its private key is shown only once: written to --out (mode
    /// 0600, never overwriting) or printed with --print (for a Kubernetes Secret).
    Create {
        /// Write Cloudflare's answer (id, pem, jwk) to this new file.
        #[arg(long, required_unless_present = "print", conflicts_with = "print")]
        out: Option<PathBuf>,
        /// Print Cloudflare's answer on stdout (everything else goes to stderr).
        #[arg(long)]
        print: bool,
    },
    /// List the account's keys: which the configuration uses, which signs.
    List,
    /// Delete a key, which revokes every URL signed with it. Refused while the configuration
    /// uses it, and until the longest token ttl has passed since it stopped signing.
    Delete {
        /// The key id (32 hex characters).
        id: String,
        /// Delete even if configured or its tokens may be live (they stop playing).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum VideosCommand {
    /// The account's videos with their catalogue aliases and protection.
    List,
    /// Propose catalogue entries for the account's videos the catalogue lacks, as a diff.
    Sync {
        /// Apply the proposal to the configuration file (comments are kept; nothing is
        /// removed).
        #[arg(long)]
        write: bool,
    },
}

/// The environment as the commands read it (a function, so tests need not set variables).
pub type Env<'a> = &'a (dyn Fn(&str) -> Option<String> + Sync);

/// Where a command reads and writes, and what it takes from outside.
pub struct Session<'a> {
    /// The configuration file.
    pub config: PathBuf,
    /// The signing-key history `serve` keeps (see [`crate::app::key_history`]).
    pub key_history: PathBuf,
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    /// Where a confirmation is read from.
    pub input: &'a mut dyn BufRead,
    /// Whether `input` is a terminal someone can answer on.
    pub terminal: bool,
    /// Unix seconds now.
    pub now: u64,
    pub env: Env<'a>,
    /// The 429 retry policy, when not the default.
    pub retry: Option<RetryPolicy>,
}

/// Run `command`; `Ok` is the exit status (see [`StreamCommand::Audit`]), `Err` a failure
/// (exit 1).
pub async fn run(session: &mut Session<'_>, command: StreamCommand) -> anyhow::Result<u8> {
    let settings = Settings::load(&session.config).map_err(super::config_failure)?;
    for warning in &settings.warnings {
        writeln!(session.err, "warning: {}: {warning}", settings.file)?;
    }
    let api = api_for(session, &settings)?;
    match command {
        StreamCommand::Keys(KeysCommand::Create { out, print }) => {
            keys::create(session, &settings, &api, out.as_deref(), print).await
        }
        StreamCommand::Keys(KeysCommand::List) => keys::list(session, &settings, &api).await,
        StreamCommand::Keys(KeysCommand::Delete { id, force }) => {
            keys::delete(session, &settings, &api, &id, force).await
        }
        StreamCommand::Videos(VideosCommand::List) => videos::list(session, &settings, &api).await,
        StreamCommand::Videos(VideosCommand::Sync { write }) => {
            videos::sync(session, &settings, &api, write).await
        }
        StreamCommand::Audit(args) => audit::run(session, &settings, &api, &args).await,
    }
}

/// `streamgate stream ...` from the binary: real stdio, the system clock and environment.
pub(super) fn main(
    config: &Path,
    key_history: Option<&Path>,
    command: StreamCommand,
) -> anyhow::Result<u8> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let mut input = stdin.lock();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let env = |name: &str| std::env::var(name).ok();
    let mut session = Session {
        config: config.to_path_buf(),
        key_history: key_history
            .map(Path::to_path_buf)
            .unwrap_or_else(|| crate::app::key_history::default_path(config)),
        out: &mut out,
        err: &mut err,
        input: &mut input,
        terminal,
        now: crate::token::signer::unix_now(),
        env: &env,
        retry: None,
    };
    super::runtime()?.block_on(run(&mut session, command))
}

/// The API client for the configured account.
fn api_for(session: &Session<'_>, settings: &Settings) -> anyhow::Result<StreamApi> {
    let mut api_settings: ApiSettings =
        crate::cloudflare::api_settings(settings, session.env).context("cannot call Cloudflare")?;
    if let Some(retry) = &session.retry {
        api_settings.retry = retry.clone();
    }
    let client = crate::http::client::build(&crate::http::client::ClientOptions::default())
        .context("cannot build the HTTP client")?;
    Ok(
        StreamApi::new(api_settings, client)
            .with_notice(Arc::new(|message| eprintln!("{message}"))),
    )
}

/// A configured signing key as the commands see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConfiguredKey {
    /// Its id, when the config or its material says (material that cannot be read yet, a
    /// development key not generated, leaves it unknown).
    id: Option<String>,
    /// `signing_keys[i]`.
    field: String,
    /// New tokens are signed with it.
    signs: bool,
}

/// Every configured key, in configuration order, with its id where it can be known.
fn configured_keys(settings: &Settings) -> Vec<ConfiguredKey> {
    let signing = settings
        .signing_keys
        .iter()
        .position(|source| source.active)
        .unwrap_or(0);
    settings
        .signing_keys
        .iter()
        .enumerate()
        .map(|(i, source)| {
            let id = source
                .id
                .as_ref()
                .map(|id| id.to_ascii_lowercase())
                .or_else(|| {
                    let material = match &source.location {
                        KeyLocation::File(path) => std::fs::read_to_string(path).ok()?,
                        KeyLocation::Env(name) => std::env::var(name).ok()?,
                    };
                    SigningKey::from_material(None, &material)
                        .ok()
                        .map(|key| key.id().to_string())
                });
            ConfiguredKey {
                id,
                field: source.field.clone(),
                signs: i == signing,
            }
        })
        .collect()
}

/// `text` padded to `width` characters (never cut).
fn pad(text: &str, width: usize) -> String {
    format!("{text:<width$}")
}
