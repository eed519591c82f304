//! The periodic audit of the Cloudflare account (`cloudflare.audit_interval`): the same
//! checks as `streamgate stream audit`, run by `serve` against the configuration in force.
//!
//! Results go to `streamgate_unprotected_videos` and `/readyz` (a warning; readiness is
//! unchanged: the gateway keeps serving). A failed audit is logged without secrets, counted
//! in `streamgate_stream_audit_failures_total`, and keeps the last audit's figures.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::app::live::Live;
use crate::cloudflare::audit::{self, AuditInput, Severity};
use crate::cloudflare::{StreamApi, api_settings};
use crate::config::Settings;
use crate::http::client::{ClientOptions, HttpsClient};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::token::signer::Clock;

/// Audit every `interval` (the first right away) until `stop`.
pub fn spawn(
    live: Arc<Live<Snapshot>>,
    metrics: Arc<Metrics>,
    clock: Clock,
    interval: Duration,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let client = match crate::http::client::build(&ClientOptions::default()) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "cannot build the HTTP client; the Stream audit is off");
                return;
            }
        };
        tokio::pin!(stop);
        let mut ticks = tokio::time::interval(interval.max(Duration::from_secs(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = ticks.tick() => {
                    let snapshot = live.current();
                    let key_ids = snapshot
                        .cache
                        .signer()
                        .keys()
                        .iter()
                        .map(|key| key.id().to_string())
                        .collect();
                    run_once(&snapshot.settings, key_ids, &client, &metrics, clock.now()).await;
                }
            }
        }
    })
}

/// One audit of the account against `config` and the configured `key_ids`, recorded in
/// `metrics`.
pub async fn run_once(
    config: &Settings,
    key_ids: Vec<String>,
    client: &HttpsClient,
    metrics: &Metrics,
    now: u64,
) {
    let env = |name: &str| std::env::var(name).ok();
    let settings = match api_settings(config, &env) {
        Ok(settings) => settings,
        Err(error) => {
            metrics.stream_audit_failed(now);
            tracing::error!(%error, "Stream audit not run");
            return;
        }
    };
    let api = StreamApi::new(settings, client.clone()).with_notice(Arc::new(|message| {
        tracing::warn!("{message}");
    }));
    let input = AuditInput::from_settings(config, key_ids);
    match audit::run(&api, &input).await {
        Ok(report) => {
            let unprotected = report.count(Severity::Critical) as u64;
            let errors = report.count(Severity::Error) as u64;
            metrics.stream_audit_done(now, unprotected, errors);
            for finding in &report.findings {
                let subject = finding
                    .video
                    .as_deref()
                    .or(finding.key_id.as_deref())
                    .unwrap_or_default();
                match finding.severity {
                    Severity::Critical | Severity::Error => tracing::warn!(
                        severity = finding.severity.label(),
                        subject,
                        uid = finding.uid.as_deref(),
                        "Stream audit: {}",
                        finding.message
                    ),
                    Severity::Warning => {
                        tracing::info!(subject, "Stream audit: {}", finding.message)
                    }
                }
            }
            tracing::info!(
                unprotected,
                errors,
                videos = report.videos_checked,
                keys = report.keys_checked,
                "Stream audit done"
            );
        }
        Err(error) => {
            metrics.stream_audit_failed(now);
            // The error names the call and Cloudflare's codes; never the token.
            tracing::error!(%error, "Stream audit failed; the last audit's figures stay");
        }
    }
}
