//! `streamgate check`: validate the configuration and its keys, and summarise them.

use std::path::Path;

use anyhow::bail;

use super::config_failure;
use crate::app;
use crate::app::keys::{MissingKeys, load_signing_keys};
use crate::config::{KeyLocation, Settings, StreamSettings, human_duration};

/// Validate the configuration at `path` and its keys; `Err` lists every problem.
pub(super) fn run(path: &Path) -> anyhow::Result<()> {
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
    match (settings.metrics_listen, settings.metrics_public) {
        (Some(addr), false) => println!("  metrics  /metrics on {addr} only"),
        (Some(addr), true) => println!("  metrics  /metrics on {addr} and on the public listener"),
        (None, true) => println!("  metrics  /metrics on the public listener"),
        (None, false) => println!("  metrics  off (set metrics_listen)"),
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
        let names = match (&issuer.name, issuer.shares_local_names) {
            (Some(name), false) => format!("; rules name its subjects user:{name}:<sub>"),
            (Some(name), true) => {
                format!("; its subjects are also local names (user:<sub>, or user:{name}:<sub>)")
            }
            (None, false) => {
                "; no `name`: only authenticated and claim: rules cover its tokens".to_string()
            }
            (None, true) => "; its subjects are also local names (user:<sub>)".to_string(),
        };
        println!(
            "  issuer   {} ({}){names}",
            issuer.issuer,
            algorithms.join(", ")
        );
    }
    let client_address = &identity.client_address;
    if !client_address.trusted.is_empty() {
        let nets: Vec<String> = client_address
            .trusted
            .nets()
            .iter()
            .map(|n| n.to_string())
            .collect();
        println!(
            "  proxies  {}; the viewer's address from {} only",
            nets.join(", "),
            client_address.header.name()
        );
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
