//! `stream audit [--json] [--fix [--yes]]`.

use anyhow::bail;
use clap::Args;

use super::{Session, configured_keys};
use crate::cloudflare::audit::{self, AuditInput, AuditReport, FindingKind, Severity};
use crate::cloudflare::{StreamApi, VideoEdit};
use crate::config::Settings;

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// One JSON document on stdout, for CI.
    #[arg(long)]
    pub json: bool,
    /// Set requireSignedURLs: true on the catalogue videos that lack it (asks first on a
    /// terminal).
    #[arg(long)]
    pub fix: bool,
    /// With --fix: do not ask (needed without a terminal).
    #[arg(long, requires = "fix")]
    pub yes: bool,
}

/// A video `--fix` protected.
#[derive(Debug, serde::Serialize)]
struct Fixed {
    video: String,
    uid: String,
}

pub(super) async fn run(
    session: &mut Session<'_>,
    settings: &Settings,
    api: &StreamApi,
    args: &AuditArgs,
) -> anyhow::Result<u8> {
    let configured = configured_keys(settings);
    for key in configured.iter().filter(|key| key.id.is_none()) {
        writeln!(
            session.err,
            "warning: {}: its key id cannot be read yet; not checked",
            key.field
        )?;
    }
    let key_ids = configured.iter().filter_map(|key| key.id.clone()).collect();
    let input = AuditInput::from_settings(settings, key_ids);
    let mut report = audit::run(api, &input).await?;
    let mut fixed = Vec::new();
    if args.fix {
        let targets: Vec<(String, String)> = report
            .unprotected()
            .into_iter()
            .map(|(alias, uid)| (alias.to_string(), uid.to_string()))
            .collect();
        if !targets.is_empty() {
            if !confirmed(session, args, &targets)? {
                print(session, api, &report, &fixed, args.json)?;
                bail!(
                    "--fix not confirmed: nothing changed (without a terminal, --fix needs --yes)"
                );
            }
            for (alias, uid) in targets {
                let edit = VideoEdit {
                    require_signed_urls: Some(true),
                    ..VideoEdit::default()
                };
                let video = api.edit_video(&uid, &edit).await?;
                if !video.requires_signed_urls() {
                    bail!(
                        "{alias} ({uid}): the API accepted the change but still answers requireSignedURLs: false"
                    );
                }
                report.findings.retain(|f| {
                    !(f.kind == FindingKind::Unprotected && f.uid.as_deref() == Some(&uid))
                });
                fixed.push(Fixed { video: alias, uid });
            }
        }
    }
    print(session, api, &report, &fixed, args.json)?;
    Ok(report.exit_code())
}

/// Whether `--fix` may go ahead: `--yes`, or a "y" typed on a terminal.
fn confirmed(
    session: &mut Session<'_>,
    args: &AuditArgs,
    targets: &[(String, String)],
) -> anyhow::Result<bool> {
    if args.yes {
        return Ok(true);
    }
    if !session.terminal {
        return Ok(false);
    }
    writeln!(
        session.err,
        "set requireSignedURLs: true on {} videos ({})? Their bare-uid URLs stop playing. [y/N]",
        targets.len(),
        targets
            .iter()
            .map(|(alias, _)| alias.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    let mut answer = String::new();
    session.input.read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

fn print(
    session: &mut Session<'_>,
    api: &StreamApi,
    report: &AuditReport,
    fixed: &[Fixed],
    json: bool,
) -> anyhow::Result<()> {
    let out = &mut *session.out;
    let counts = [Severity::Critical, Severity::Error, Severity::Warning].map(|s| report.count(s));
    if json {
        let document = serde_json::json!({
            "account_id": api.settings().account_id,
            "checked_at": crate::cloudflare::time::format_unix(session.now),
            "videos_checked": report.videos_checked,
            "keys_checked": report.keys_checked,
            "counts": {"critical": counts[0], "error": counts[1], "warning": counts[2]},
            "findings": report.findings,
            "fixed": fixed,
            "exit_code": report.exit_code(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&document)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "audit of account {}: {} catalogue videos, {} configured keys",
        api.settings().account_id,
        report.videos_checked,
        report.keys_checked
    )?;
    for finding in fixed {
        writeln!(
            out,
            "FIXED     {} ({}): requireSignedURLs is now true",
            finding.video, finding.uid
        )?;
    }
    for finding in &report.findings {
        let subject = match (&finding.video, &finding.uid, &finding.key_id) {
            (Some(video), Some(uid), _) => format!("{video} ({uid})"),
            (_, _, Some(key)) => format!("key {key}"),
            _ => String::new(),
        };
        writeln!(
            out,
            "{:<9} {subject}: {}",
            finding.severity.label().to_uppercase(),
            finding.message
        )?;
    }
    if report.findings.is_empty() {
        writeln!(
            out,
            "no findings: every catalogue video is on the account and requires signed URLs, every configured key exists"
        )?;
    } else {
        writeln!(
            out,
            "{} critical, {} errors, {} warnings (exit {})",
            counts[0],
            counts[1],
            counts[2],
            report.exit_code()
        )?;
        if counts[0] > 0 && fixed.is_empty() {
            writeln!(
                out,
                "`streamgate stream audit --fix` sets requireSignedURLs: true on the critical ones"
            )?;
        }
    }
    Ok(())
}
