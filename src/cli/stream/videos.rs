//! `stream videos list|sync`.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, anyhow};

use super::sync::{self, NewEntry};
use super::{Session, pad};
use crate::cloudflare::{AccountVideo, StreamApi};
use crate::config::Settings;
use crate::untrusted::Untrusted;

/// `stream videos list`: every account video, with its catalogue alias, then catalogue
/// videos the account lacks.
pub(super) async fn list(
    session: &mut Session<'_>,
    settings: &Settings,
    api: &StreamApi,
) -> anyhow::Result<u8> {
    let videos = api.list_videos().await?;
    let aliases: HashMap<String, &str> = settings
        .catalogue
        .videos()
        .map(|video| (video.uid.to_string(), &*video.alias))
        .collect();
    let out = &mut *session.out;
    writeln!(
        out,
        "{} videos on account {}, {} in the catalogue",
        videos.len(),
        api.settings().account_id,
        settings.catalogue.len()
    )?;
    writeln!(
        out,
        "{} {} {} {} {} NAME",
        pad("ALIAS", 20),
        pad("UID", 32),
        pad("SIGNED", 6),
        pad("READY", 5),
        pad("ORIGINS", 24),
    )?;
    for video in &videos {
        let uid = video.uid.to_ascii_lowercase();
        let alias = aliases.get(&uid).copied().unwrap_or("-");
        writeln!(out, "{}", row(alias, video))?;
    }
    let on_account: HashSet<String> = videos.iter().map(|v| v.uid.to_ascii_lowercase()).collect();
    for video in settings.catalogue.videos() {
        if !on_account.contains(&video.uid.to_string()) {
            writeln!(
                out,
                "{} {} not on the account",
                pad(&video.alias, 20),
                pad(&video.uid.to_string(), 32)
            )?;
        }
    }
    Ok(0)
}

fn row(alias: &str, video: &AccountVideo) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let origins = if video.allowed_origins().is_empty() {
        "any".to_string()
    } else {
        let listed: Vec<String> = video
            .allowed_origins()
            .iter()
            .map(|o| Untrusted::limited(o, 40).to_string())
            .collect();
        listed.join(",")
    };
    let signed = if video.requires_signed_urls() {
        "yes"
    } else {
        "NO"
    };
    format!(
        "{} {} {} {} {} {}",
        pad(alias, 20),
        pad(&Untrusted::limited(&video.uid, 40).to_string(), 32),
        pad(signed, 6),
        pad(yes_no(video.is_ready()), 5),
        pad(&origins, 24),
        Untrusted::limited(video.name().unwrap_or(""), 60)
    )
}

/// `stream videos sync [--write]`.
pub(super) async fn sync(
    session: &mut Session<'_>,
    settings: &Settings,
    api: &StreamApi,
    write: bool,
) -> anyhow::Result<u8> {
    let videos = api.list_videos().await?;
    let aliases: HashSet<String> = settings
        .catalogue
        .videos()
        .map(|video| video.alias.to_string())
        .collect();
    let uids: HashSet<String> = settings
        .catalogue
        .videos()
        .map(|video| video.uid.to_string())
        .collect();
    let (entries, skipped) = sync::propose(&aliases, &uids, &videos);
    for uid in &skipped {
        writeln!(
            session.err,
            "warning: skipped an account video whose uid is not 32 hex characters: {uid}"
        )?;
    }
    let on_account: HashSet<String> = videos.iter().map(|v| v.uid.to_ascii_lowercase()).collect();
    let missing: Vec<_> = settings
        .catalogue
        .videos()
        .filter(|video| !on_account.contains(&video.uid.to_string()))
        .collect();
    let out = &mut *session.out;
    if entries.is_empty() {
        writeln!(
            out,
            "the catalogue lists every one of the account's {} videos",
            videos.len()
        )?;
    } else {
        writeln!(out, "--- {}", settings.file)?;
        writeln!(
            out,
            "+++ {} (with {} new videos)",
            settings.file,
            entries.len()
        )?;
        writeln!(out, "@@ videos: @@")?;
        for line in sync::render(&entries, 2).lines() {
            writeln!(out, "+{line}")?;
        }
    }
    for video in &missing {
        writeln!(
            out,
            "not on the account (kept in the catalogue; remove it by hand if it is gone): {} {}",
            video.alias, video.uid
        )?;
    }
    if !write || entries.is_empty() {
        if !entries.is_empty() {
            writeln!(
                out,
                "{} entries proposed; `streamgate stream videos sync --write` adds them (they get no tags: add tags for the rules that should cover them)",
                entries.len()
            )?;
        }
        return Ok(0);
    }
    write_entries(&session.config, settings, &entries)?;
    writeln!(
        out,
        "added {} entries to {}",
        entries.len(),
        session.config.display()
    )?;
    Ok(0)
}

/// Add `entries` to the configuration file: edit its text, check the result loads with every
/// old and new entry, then replace the file atomically (keeping its permissions).
fn write_entries(path: &Path, settings: &Settings, entries: &[NewEntry]) -> anyhow::Result<()> {
    let source =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let edited = sync::insert(&source, entries)?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let checked = Settings::from_yaml(&edited, &settings.file, base_dir).map_err(|errors| {
        anyhow!("not written: the edited configuration does not load\n{errors}")
    })?;
    let complete =
        settings.catalogue.videos().all(|video| {
            checked.catalogue.by_alias(&video.alias).map(|v| v.uid) == Some(video.uid)
        }) && entries.iter().all(|entry| {
            checked
                .catalogue
                .by_alias(&entry.alias)
                .is_some_and(|video| video.uid.to_string() == entry.uid)
        });
    if !complete {
        anyhow::bail!("not written: the edited configuration lost or changed a catalogue entry");
    }
    // Unchanged since read: another editor's save is not overwritten.
    let again =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if again != source {
        anyhow::bail!(
            "not written: {} changed while syncing; run again",
            path.display()
        );
    }
    replace_atomically(path, &edited).with_context(|| format!("cannot write {}", path.display()))
}

/// Write a sibling file with `path`'s permissions, flush it, rename it over `path`.
fn replace_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config.yaml".into());
    let staging = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&staging)?;
        if let Ok(meta) = std::fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&staging, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    written
}
