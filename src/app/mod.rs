//! Start and stop a whole gateway: listeners (HTTPS and its HTTP redirect when `tls` is
//! configured), the optional in-process emulator, shutdown.

pub mod edge;
pub mod live;
pub mod reload;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::edge::{MetricsOnly, Ops};
use crate::app::live::Live;
use crate::app::reload::Reloader;
use crate::config::active_first;
use crate::config::{
    ConfigError, ConfigErrors, EmulatorOptions, Settings, StreamSettings, build_authenticator,
    load_tls,
};
use crate::emulator::{Emulator, EmulatorError, EmulatorSettings, VerifyingKeySpec};
use crate::gateway::Gateway;
use crate::http::server;
use crate::http::tls::{self, CertStore};
use crate::metrics::{CacheCounts, Metrics};
use crate::token::cache::TokenCache;
use crate::token::{Signer, SigningKey};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} for the {what}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the Stream emulator: {0}")]
    Emulator(#[from] EmulatorError),
    #[error("invalid identity configuration\n{0}")]
    Identity(#[from] ConfigErrors),
    #[error("invalid TLS configuration\n{0}")]
    Tls(ConfigErrors),
    #[error("cannot build the client for the Stream origin (upstream.ca_file): {0}")]
    Upstream(#[source] crate::proxy::ClientError),
}

/// A running gateway (and emulator, when configured).
pub struct App {
    gateway: Arc<Live<Gateway>>,
    metrics: Arc<Metrics>,
    metrics_addr: Option<SocketAddr>,
    reloader: Option<Arc<Reloader>>,
    refused_connections: Arc<std::sync::atomic::AtomicU64>,
    gateway_addr: SocketAddr,
    emulator_addr: Option<SocketAddr>,
    https: Option<Https>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl App {
    /// Bind and start serving. `listen` overrides the configured gateway address (port 0
    /// picks a free port; [`App::gateway_addr`] tells which).
    pub async fn start(
        settings: Settings,
        keys: Vec<SigningKey>,
        listen: Option<SocketAddr>,
    ) -> Result<App, StartError> {
        let auth = build_authenticator(&settings)?;
        let keys = active_first(&settings, keys);
        // Before anything listens: a bad certificate or key must not half-start the gateway.
        let tls = load_https(&settings)?;
        let settings = Arc::new(settings);
        let signer = Arc::new(Signer::new(
            keys,
            settings.nbf_backdate,
            settings.max_signing_in_flight,
        ));
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut live_emulator = None;
        let mut metrics_addr = None;

        let (origin, emulator_addr) = match &settings.stream {
            StreamSettings::Origin(origin) => (origin.clone(), None),
            StreamSettings::Emulator(options) => {
                let emulator = Emulator::new(emulator_settings(&settings, signer.keys(), options))?;
                let listener = bind(options.listen, "Stream emulator").await?;
                let addr = local_addr(&listener, options.listen);
                let live = Arc::new(Live::new(Arc::new(emulator)));
                tasks.push(tokio::spawn(server::serve(
                    listener,
                    Arc::clone(&live),
                    until_stopped(stopped.clone()),
                )));
                live_emulator = Some(live);
                (origin_for(addr), Some(addr))
            }
        };

        let listen = listen.unwrap_or(settings.listen);
        let listener = match bind(listen, "gateway").await {
            Ok(listener) => listener,
            Err(error) => {
                // Do not leave the emulator running behind a gateway that never started.
                let _ = stop.send(true);
                return Err(error);
            }
        };
        let gateway_addr = local_addr(&listener, listen);
        let redirect = match settings.tls.as_ref().and_then(|t| t.http_redirect_listen) {
            Some(addr) => match bind(addr, "HTTP to HTTPS redirect").await {
                Ok(redirect) => {
                    let redirect_addr = local_addr(&redirect, addr);
                    Some((redirect, redirect_addr))
                }
                Err(error) => {
                    let _ = stop.send(true);
                    return Err(error);
                }
            },
            None => None,
        };
        if let Some(jwt) = &auth.jwt {
            jwt.spawn_refresh(until_stopped(stopped.clone()));
        }
        let config_path = PathBuf::from(&settings.file);
        let access_log = settings.access_log;
        let metrics_listen = settings.metrics_listen;
        let metrics = Metrics::new();
        metrics.set_rules(settings.policy.rules().iter().map(|r| &*r.name));
        metrics.set_config_generation(1);
        let connections = server::ConnectionBuilder::with_limits(&settings.limits)
            .observed_by(Arc::clone(&metrics));
        let refused_connections = connections.refused_counter();
        let cache = Arc::new(
            TokenCache::new(signer, settings.cache_capacity, settings.min_remaining)
                .with_sign_timeout(settings.request_timeout)
                .observed_by(Arc::clone(&metrics)),
        );
        let gateway = match Gateway::with_cache(settings, auth, cache, origin.clone()) {
            Ok(gateway) => Arc::new(Live::new(Arc::new(
                gateway.observed_by(Arc::clone(&metrics)),
            ))),
            Err(error) => {
                let _ = stop.send(true);
                return Err(StartError::Upstream(error));
            }
        };
        // Only a configuration that came from a file can be reloaded.
        let reloader = config_path.is_file().then(|| {
            let reloader = Arc::new(Reloader::new(
                config_path,
                Arc::clone(&gateway),
                live_emulator.clone(),
                origin,
                Arc::clone(&metrics),
            ));
            tasks.push(Arc::clone(&reloader).spawn_watch(until_stopped(stopped.clone())));
            reloader
        });
        {
            let gateway = Arc::clone(&gateway);
            metrics.set_cache_source(Box::new(move || {
                let stats = gateway.current().cache().stats();
                CacheCounts {
                    hits: stats.hits,
                    misses: stats.misses,
                    evictions: stats.evictions,
                    entries: stats.entries,
                }
            }));
        }
        if let Some(addr) = metrics_listen {
            match bind(addr, "metrics").await {
                Ok(listener) => {
                    metrics_addr = Some(local_addr(&listener, addr));
                    tasks.push(tokio::spawn(server::serve(
                        listener,
                        Arc::new(MetricsOnly {
                            metrics: Arc::clone(&metrics),
                        }),
                        until_stopped(stopped.clone()),
                    )));
                }
                Err(error) => {
                    let _ = stop.send(true);
                    return Err(error);
                }
            }
        }
        let ops = Arc::new(Ops::new(
            Arc::clone(&gateway),
            Arc::clone(&metrics),
            metrics_listen.is_none(),
            reloader.clone(),
            emulator_addr,
            access_log,
        ));
        {
            // Rate-limit state of quiet callers is dropped once a minute.
            let gateway = Arc::clone(&gateway);
            let stop = until_stopped(stopped.clone());
            tasks.push(tokio::spawn(async move {
                tokio::pin!(stop);
                loop {
                    tokio::select! {
                        () = &mut stop => break,
                        () = tokio::time::sleep(Duration::from_secs(60)) => {
                            gateway.current().forget_idle_rate_limits();
                        }
                    }
                }
            }));
        }
        let https = match tls {
            Some(tls) => Some(tls.spawn(
                listener,
                redirect,
                &ops,
                connections,
                gateway_addr.port(),
                &stopped,
                &mut tasks,
            )),
            None => {
                tasks.push(tokio::spawn(server::serve_with(
                    listener,
                    Arc::clone(&ops),
                    connections,
                    until_stopped(stopped),
                )));
                None
            }
        };

        Ok(App {
            gateway,
            metrics,
            metrics_addr,
            reloader,
            refused_connections,
            gateway_addr,
            emulator_addr,
            https,
            stop,
            tasks,
        })
    }

    /// Where the gateway listens.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway_addr
    }

    /// Where the in-process emulator listens, if one runs.
    pub fn emulator_addr(&self) -> Option<SocketAddr> {
        self.emulator_addr
    }

    /// `https://<addr>` when the gateway serves TLS, else `http://<addr>` (a wildcard address
    /// shown as loopback).
    pub fn gateway_origin(&self) -> String {
        let scheme = if self.https.is_some() {
            "https"
        } else {
            "http"
        };
        origin_with_scheme(scheme, self.gateway_addr)
    }

    /// The certificate in use and its reload counts, when the gateway serves TLS.
    pub fn tls(&self) -> Option<&Arc<CertStore>> {
        self.https.as_ref().map(|https| &https.certs)
    }

    /// Where the plain-HTTP redirect to HTTPS listens, if configured.
    pub fn http_redirect_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().and_then(|https| https.redirect_addr)
    }

    /// The gateway serving now (a reload replaces it).
    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.current()
    }

    /// Connections closed on accept because `limits.max_connections` were open.
    pub fn refused_connections(&self) -> u64 {
        self.refused_connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Where `/metrics` is served on its own listener (`metrics_listen`), if configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The live reloader, when the configuration came from a file.
    pub fn reloader(&self) -> Option<&Arc<Reloader>> {
        self.reloader.as_ref()
    }

    /// Stop accepting, let in-flight requests finish (bounded), and wait for the servers.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// What serving HTTPS needs, loaded before anything listens.
struct TlsSetup {
    certs: Arc<CertStore>,
    config: Arc<rustls::ServerConfig>,
    reload_interval: Duration,
}

/// Load the certificate and key and build the rustls configuration, when `tls` is set.
fn load_https(settings: &Settings) -> Result<Option<TlsSetup>, StartError> {
    let (Some(certs), Some(options)) =
        (load_tls(settings).map_err(StartError::Tls)?, &settings.tls)
    else {
        return Ok(None);
    };
    let config = tls::server_config(Arc::clone(&certs)).map_err(|error| {
        StartError::Tls(ConfigErrors(vec![ConfigError {
            file: settings.file.clone(),
            position: None,
            field: "tls".into(),
            message: error.to_string(),
        }]))
    })?;
    Ok(Some(TlsSetup {
        certs,
        config,
        reload_interval: options.reload_interval,
    }))
}

impl TlsSetup {
    /// Serve the gateway over HTTPS on `listener` and the redirect on `redirect`, and watch
    /// the certificate files, until `stopped`.
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        self,
        listener: TcpListener,
        redirect: Option<(TcpListener, SocketAddr)>,
        gateway: &Arc<Ops>,
        connections: server::ConnectionBuilder,
        https_port: u16,
        stopped: &watch::Receiver<bool>,
        tasks: &mut Vec<JoinHandle<()>>,
    ) -> Https {
        tasks.push(tokio::spawn(server::serve_tls_with(
            listener,
            self.config,
            Arc::clone(gateway),
            connections,
            until_stopped(stopped.clone()),
        )));
        tasks.push(tokio::spawn(
            Arc::clone(&self.certs).watch(self.reload_interval, until_stopped(stopped.clone())),
        ));
        let redirect_addr = redirect.map(|(listener, addr)| {
            tasks.push(tokio::spawn(server::serve(
                listener,
                Arc::new(tls::HttpsRedirect::new(https_port)),
                until_stopped(stopped.clone()),
            )));
            addr
        });
        Https {
            certs: self.certs,
            redirect_addr,
        }
    }
}

/// The TLS side of a running gateway.
struct Https {
    certs: Arc<CertStore>,
    redirect_addr: Option<SocketAddr>,
}

/// What the emulator needs from the configuration: the public halves of every key and the
/// catalogue's uids.
pub fn emulator_settings(
    settings: &Settings,
    keys: &[Arc<SigningKey>],
    options: &EmulatorOptions,
) -> EmulatorSettings {
    EmulatorSettings {
        keys: keys
            .iter()
            .map(|key| {
                let (modulus, exponent) = key.public_components();
                VerifyingKeySpec {
                    id: key.id().to_string(),
                    modulus,
                    exponent,
                }
            })
            .collect(),
        video_uids: settings
            .catalogue
            .videos()
            .map(|video| video.uid.as_str().to_string())
            .collect(),
        country_header: options.country_header.clone(),
        client_ip_header: options.client_ip_header.clone(),
        leeway: options.leeway,
    }
}

/// `http://<addr>`, with a wildcard address replaced by loopback so a browser can follow it.
pub fn origin_for(addr: SocketAddr) -> String {
    origin_with_scheme("http", addr)
}

fn origin_with_scheme(scheme: &str, addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

pub(crate) async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

fn local_addr(listener: &TcpListener, requested: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(requested)
}

/// Resolves once `stop` has been set to true (or its sender is gone).
pub(crate) async fn until_stopped(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
