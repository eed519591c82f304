//! `stream keys create|list|delete`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::{Session, configured_keys, pad};
use crate::app::key_history::{KeyHistory, Retirement, longest_ttl};
use crate::cloudflare::StreamApi;
use crate::cloudflare::time::format_unix;
use crate::config::{Settings, human_duration};
use crate::token::SigningKey;

/// `stream keys create`: a new key, its answer written to `out` (a new file, mode 0600) or
/// printed, and the `signing_keys` entry to paste.
pub(super) async fn create(
    session: &mut Session<'_>,
    settings: &Settings,
    api: &StreamApi,
    out: Option<&Path>,
    print: bool,
) -> anyhow::Result<u8> {
    // The private key is shown once: hold the file before asking for it, so that a path that
    // cannot be written fails before a key exists that no one has.
    let mut file = match out {
        Some(path) => Some(reserve(path)?),
        None if print => None,
        None => bail!("say where the key goes: --out FILE or --print"),
    };
    let created = match api.create_key().await {
        Ok(created) => created,
        Err(error) => {
            if let Some(path) = out {
                let _ = std::fs::remove_file(path);
            }
            return Err(error.into());
        }
    };
    let answer = created.answer.expose();
    match (&mut file, out) {
        (Some(file), Some(path)) => {
            let written = file
                .write_all(answer.as_bytes())
                .and_then(|()| file.write_all(b"\n"))
                .and_then(|()| file.sync_all());
            if let Err(error) = written {
                // The only copy of the private key: hand it over rather than lose it.
                writeln!(
                    session.err,
                    "error: cannot write {}: {error}; the key is printed below instead",
                    path.display()
                )?;
                writeln!(session.out, "{answer}")?;
            }
        }
        _ => writeln!(session.out, "{answer}")?,
    }
    // The loader must be able to read what was written.
    let readable = SigningKey::from_material(Some(&created.id), answer);
    // With --print, stdout carries the key alone (for a pipe into a Secret).
    let notes: &mut dyn Write = if print {
        &mut *session.err
    } else {
        &mut *session.out
    };
    if let Err(error) = readable {
        writeln!(
            notes,
            "warning: the key answer is not usable as a signing key: {error}"
        )?;
    }
    let created_at = created.created.as_deref().unwrap_or("now");
    let created_at = crate::untrusted::Untrusted::limited(created_at, 40);
    match out {
        Some(path) => {
            writeln!(
                notes,
                "created signing key {} ({created_at}); its private key is in {} (mode 0600), the only copy",
                created.id,
                path.display()
            )?;
            let file = entry_path(&session.config, path).display().to_string();
            paste_entry(notes, &settings.file, &created.id, &file)?;
        }
        None => {
            writeln!(
                notes,
                "created signing key {} ({created_at}); the JSON above is its only copy: store it as a secret, e.g.",
                created.id
            )?;
            writeln!(
                notes,
                "  streamgate stream keys create --print | kubectl -n streamgate create secret generic streamgate-signing-key --from-file=key.json=/dev/stdin"
            )?;
            paste_entry(
                notes,
                &settings.file,
                &created.id,
                "/etc/streamgate/keys/key.json   # or env: STREAM_SIGNING_KEY holding the JSON",
            )?;
        }
    }
    Ok(0)
}

/// The `signing_keys` entry to paste into `config_file` for key `id` read from `file`.
fn paste_entry(
    notes: &mut dyn std::io::Write,
    config_file: &str,
    id: &str,
    file: &str,
) -> std::io::Result<()> {
    writeln!(
        notes,
        "add it to signing_keys in {config_file}, first to sign with it (keep the old key after it until its tokens expire):"
    )?;
    writeln!(notes, "  - id: {id}")?;
    writeln!(notes, "    file: {file}")
}

/// `path` as the configuration should name it: relative paths there are read from the
/// configuration's directory, so a path relative to elsewhere is made absolute.
fn entry_path(config: &Path, path: &Path) -> std::path::PathBuf {
    let config_dir = config.parent().unwrap_or(Path::new(""));
    if path.is_absolute() || config_dir.as_os_str().is_empty() || config_dir == Path::new(".") {
        return path.to_path_buf();
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// Create `path` for the key: new (never overwriting), readable by its owner only.
fn reserve(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} exists; not overwriting it (it may hold a key): choose another --out",
                path.display()
            )
        } else {
            anyhow::anyhow!("cannot create {}: {error}", path.display())
        }
    })
}

/// `stream keys list`.
pub(super) async fn list(
    session: &mut Session<'_>,
    settings: &Settings,
    api: &StreamApi,
) -> anyhow::Result<u8> {
    let mut keys = api.list_keys().await?;
    keys.sort_by(|a, b| a.created.cmp(&b.created));
    let configured = configured_keys(settings);
    let history = KeyHistory::load(&session.key_history).ok();
    let max_ttl = longest_ttl(settings);
    let out = &mut *session.out;
    writeln!(
        out,
        "{} signing keys on account {}",
        keys.len(),
        api.settings().account_id
    )?;
    writeln!(
        out,
        "{} {} {} HISTORY",
        pad("ID", 32),
        pad("CREATED", 28),
        pad("CONFIG", 22)
    )?;
    for key in &keys {
        let id = key.id.to_ascii_lowercase();
        let config = match configured.iter().find(|c| c.id.as_deref() == Some(&id)) {
            Some(c) if c.signs => format!("{}, signs", c.field),
            Some(c) => format!("{}, trusted", c.field),
            None => "not configured".into(),
        };
        let history = match history.as_ref().map(|h| h.retirement(&id, max_ttl)) {
            None => "history unreadable".into(),
            Some(Retirement::NeverSigned) => "never signed here".into(),
            Some(Retirement::Signing { since }) => format!("signing since {}", format_unix(since)),
            Some(Retirement::Stopped { live_until, .. }) if live_until > session.now => {
                format!("tokens may be live until {}", format_unix(live_until))
            }
            Some(Retirement::Stopped { stopped, .. }) => {
                format!("stopped {}, tokens expired", format_unix(stopped))
            }
        };
        let created = key.created.as_deref().unwrap_or("-");
        writeln!(
            out,
            "{} {} {} {history}",
            pad(
                &crate::untrusted::Untrusted::limited(&key.id, 40).to_string(),
                32
            ),
            pad(
                &crate::untrusted::Untrusted::limited(created, 28).to_string(),
                28
            ),
            pad(&config, 22)
        )?;
    }
    for c in &configured {
        let on_account =
            c.id.as_deref()
                .is_some_and(|id| keys.iter().any(|k| k.id.eq_ignore_ascii_case(id)));
        if !on_account {
            let id = c.id.as_deref().unwrap_or("(id not known yet)");
            writeln!(
                out,
                "{}: {id} is configured but not on this account: Stream refuses its tokens",
                c.field
            )?;
        }
    }
    Ok(0)
}

/// `stream keys delete`.
pub(super) async fn delete(
    session: &mut Session<'_>,
    settings: &Settings,
    api: &StreamApi,
    id: &str,
    force: bool,
) -> anyhow::Result<u8> {
    let id = id.trim().to_ascii_lowercase();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("a key id is 32 hex characters (see `streamgate stream keys list`)");
    }
    let mut refusals = Vec::new();
    let configured = configured_keys(settings);
    if let Some(c) = configured.iter().find(|c| c.id.as_deref() == Some(&id)) {
        refusals.push(format!(
            "{} uses it{}: remove it from the configuration and reload first",
            c.field,
            if c.signs { " to sign" } else { "" }
        ));
    }
    if configured.iter().any(|c| c.id.is_none()) {
        refusals.push(
            "a configured key's id cannot be read (set `id:` on every signing_keys entry), so it may be this one"
                .into(),
        );
    }
    let max_ttl = longest_ttl(settings);
    let history_path = session.key_history.display().to_string();
    match KeyHistory::load(&session.key_history) {
        Err(error) => refusals.push(format!("{error} ({history_path})")),
        Ok(history) => match history.retirement(&id, max_ttl) {
            Retirement::NeverSigned => writeln!(
                session.err,
                "note: the key history ({history_path}) has no record of this gateway signing with it. \
                 Other gateways on this account must share that file, or be checked, before a key goes"
            )?,
            Retirement::Signing { since } => refusals.push(format!(
                "the key history says it signs (since {}); a gateway that stopped using it has not reloaded since",
                format_unix(since)
            )),
            Retirement::Stopped {
                stopped,
                live_until,
            } if live_until > session.now => refusals.push(format!(
                "it stopped signing at {}, and tokens it signed may play until {} (the longest ttl, {}, later); \
                 deleting it now cuts those viewers off. Wait {}",
                format_unix(stopped),
                format_unix(live_until),
                human_duration(Duration::from_secs(live_until - stopped)),
                human_duration(Duration::from_secs(live_until - session.now)),
            )),
            Retirement::Stopped { stopped, .. } => writeln!(
                session.err,
                "it stopped signing at {}: every token it signed has expired",
                format_unix(stopped)
            )?,
        },
    }
    if !refusals.is_empty() {
        if !force {
            let mut message = format!("not deleting key {id}:");
            for refusal in &refusals {
                message.push_str("\n  - ");
                message.push_str(refusal);
            }
            message
                .push_str("\n(--force deletes it anyway; every URL signed with it stops playing)");
            bail!(message);
        }
        for refusal in &refusals {
            writeln!(session.err, "warning: --force: {refusal}")?;
        }
    }
    api.delete_key(&id)
        .await
        .with_context(|| format!("cannot delete key {id}"))?;
    writeln!(
        session.out,
        "deleted key {id}: every URL signed with it is refused from now on"
    )?;
    Ok(0)
}
