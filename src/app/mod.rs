//! Start and stop a whole gateway: listeners (HTTPS and its HTTP redirect when `tls` is
//! configured), the optional in-process emulator, shutdown.

pub mod edge;
pub mod key_history;
pub mod keys;
pub mod live;
pub mod redirect;
pub mod reload;
pub mod stream_audit;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::edge::{Edge, MetricsOnly};
use crate::app::live::Live;
use crate::app::reload::Reloader;
use crate::config::{ConfigError, ConfigErrors, Settings, StreamSettings, TlsSettings};
use crate::emulator::EmulatorAccount;
use crate::http::server;
use crate::http::tls::{self, CertStore, TlsFile};
use crate::metrics::{CacheCounts, Metrics};
use crate::snapshot::{BuildError, Fixed, Snapshot};
use crate::token::SigningKey;
use crate::token::signer::Clock;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} for the {what}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("invalid configuration\n{0}")]
    Build(#[from] BuildError),
    #[error("invalid TLS configuration\n{0}")]
    Tls(ConfigErrors),
    #[error("cannot open the audit trail (audit_trail)")]
    Audit(#[source] crate::audit::AuditError),
}

/// A running gateway (and emulator, when configured).
pub struct App {
    live: Arc<Live<Snapshot>>,
    metrics: Arc<Metrics>,
    metrics_addr: Option<SocketAddr>,
    reloader: Option<Arc<Reloader>>,
    refused_connections: Arc<std::sync::atomic::AtomicU64>,
    gateway_addr: SocketAddr,
    emulator_addr: Option<SocketAddr>,
    https: Option<Https>,
    /// Turns true when shutdown begins (see [`App::begin_drain`]).
    drain: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    audit: Option<Arc<crate::audit::AuditTrail>>,
}

/// Listeners bound before anything serves, so that a failure starts nothing.
struct Listeners {
    gateway: (TcpListener, SocketAddr),
    emulator: Option<(TcpListener, SocketAddr)>,
    redirect: Option<(TcpListener, SocketAddr)>,
    metrics: Option<(TcpListener, SocketAddr)>,
}

/// How to start, beyond the configuration.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Listen here instead of the configured address (port 0 picks a free port;
    /// [`App::gateway_addr`] tells which).
    pub listen: Option<SocketAddr>,
    /// Serve `/metrics` here instead of `metrics_listen` (port 0 picks a free port;
    /// [`App::metrics_addr`] tells which).
    pub metrics_listen: Option<SocketAddr>,
    /// The clock tokens are stamped and reused by: the system's, unless a test moves one.
    pub clock: Clock,
    /// Record which key signs, and since when, in this file at start and after each reload
    /// (see [`key_history`]); not recorded when `None`.
    pub key_history: Option<PathBuf>,
}

impl App {
    /// Bind and start serving. `listen` overrides the configured gateway address (port 0
    /// picks a free port; [`App::gateway_addr`] tells which).
    pub async fn start(
        settings: Settings,
        keys: Vec<SigningKey>,
        listen: Option<SocketAddr>,
    ) -> Result<App, StartError> {
        let options = StartOptions {
            listen,
            ..StartOptions::default()
        };
        Self::start_with(settings, keys, options).await
    }

    /// [`App::start`] with every option.
    pub async fn start_with(
        settings: Settings,
        keys: Vec<SigningKey>,
        options: StartOptions,
    ) -> Result<App, StartError> {
        // Before anything listens: a bad certificate or key must not half-start the gateway.
        let tls = load_https(&settings).map_err(StartError::Tls)?;
        let audit = match &settings.audit_trail {
            Some(sink) => Some(Arc::new(
                crate::audit::AuditTrail::open(sink).map_err(StartError::Audit)?,
            )),
            None => None,
        };
        let listeners = bind_all(&settings, &options).await?;
        let origin = match (&settings.stream, &listeners.emulator) {
            (StreamSettings::Origin(origin), _) => origin.clone(),
            (StreamSettings::Emulator(_), Some((_, addr))) => origin_for(*addr),
            (StreamSettings::Emulator(_), None) => unreachable!("the emulator's listener is bound"),
        };
        let emulator_account = match &settings.stream {
            StreamSettings::Emulator(_) => {
                let api = keys::load_emulator_api(&settings)
                    .map_err(|errors| StartError::Build(BuildError::Config(errors)))?;
                Some(Arc::new(EmulatorAccount::new(api)))
            }
            StreamSettings::Origin(_) => None,
        };
        let metrics = Metrics::new();
        let fixed = Fixed {
            origin,
            metrics: Arc::clone(&metrics),
            clock: options.clock.clone(),
            audit: audit.clone(),
            emulator_account,
        };
        let (snapshot, emulator) = Snapshot::build(settings, keys, &fixed, None)?;
        if let Some(path) = &options.key_history {
            key_history::record_snapshot(path, &snapshot, fixed.clock.now());
        }
        metrics.set_rules(snapshot.settings.policy.rules().iter().map(|r| &*r.name));
        metrics.set_config_generation(1);
        let settings = Arc::clone(&snapshot.settings);
        let live = Arc::new(Live::new(Arc::new(snapshot)));

        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let emulator_addr = listeners.emulator.as_ref().map(|(_, addr)| *addr);
        let live_emulator = match (emulator, listeners.emulator) {
            (Some(emulator), Some((listener, _))) => {
                let live = Arc::new(Live::new(Arc::new(emulator)));
                tasks.push(tokio::spawn(server::serve(
                    listener,
                    Arc::clone(&live),
                    until_stopped(stopped.clone()),
                )));
                Some(live)
            }
            _ => None,
        };
        let (drain, draining) = watch::channel(false);
        let connections = server::ConnectionBuilder::with_limits(&settings.limits)
            .observed_by(Arc::clone(&metrics))
            .draining_on(draining.clone());
        let refused_connections = connections.refused_counter();
        // Only a configuration that came from a file can be reloaded.
        let config_path = PathBuf::from(&settings.file);
        let reloader = config_path.is_file().then(|| {
            let reloader = Arc::new(
                Reloader::new(config_path, Arc::clone(&live), live_emulator, fixed)
                    .recording_key_history(options.key_history.clone()),
            );
            tasks.push(Arc::clone(&reloader).spawn_watch(until_stopped(stopped.clone())));
            reloader
        });
        {
            let live = Arc::clone(&live);
            metrics.set_cache_source(Box::new(move || {
                let stats = live.current().cache.stats();
                CacheCounts {
                    hits: stats.hits,
                    misses: stats.misses,
                    evictions: stats.evictions,
                    entries: stats.entries,
                }
            }));
        }
        let metrics_addr = listeners.metrics.map(|(listener, addr)| {
            tasks.push(tokio::spawn(server::serve(
                listener,
                Arc::new(MetricsOnly {
                    metrics: Arc::clone(&metrics),
                }),
                until_stopped(stopped.clone()),
            )));
            addr
        });
        let edge = Arc::new(Edge::new(
            Arc::clone(&live),
            Arc::clone(&metrics),
            reloader.clone(),
            emulator_addr,
            draining,
        ));
        if let Some(interval) = settings.cloudflare.audit_interval {
            tasks.push(stream_audit::spawn(
                Arc::clone(&live),
                Arc::clone(&metrics),
                options.clock.clone(),
                interval,
                until_stopped(stopped.clone()),
            ));
        }
        tasks.push(forget_idle_rate_limits(
            Arc::clone(&live),
            Arc::clone(&metrics),
            until_stopped(stopped.clone()),
        ));
        let (listener, gateway_addr) = listeners.gateway;
        let https = match tls {
            Some(tls) => Some(tls.spawn(
                listener,
                listeners.redirect,
                &edge,
                &live,
                connections,
                gateway_addr.port(),
                &stopped,
                &mut tasks,
            )),
            None => {
                tasks.push(tokio::spawn(server::serve_with(
                    listener,
                    edge,
                    connections,
                    until_stopped(stopped),
                )));
                None
            }
        };

        Ok(App {
            live,
            metrics,
            metrics_addr,
            reloader,
            refused_connections,
            gateway_addr,
            emulator_addr,
            https,
            drain,
            stop,
            tasks,
            audit,
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

    /// The configuration snapshot serving now (a reload replaces it).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.current()
    }

    /// Connections closed on accept because `limits.max_connections` were open.
    pub fn refused_connections(&self) -> u64 {
        self.refused_connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forget the rate-limit state of callers whose limits have recovered now, as the
    /// gateway does every 10 s; returns how many callers are still tracked.
    pub fn forget_idle_rate_limits(&self) -> usize {
        sweep_rate_limits(&self.live, &self.metrics)
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

    /// Begin shutdown without stopping: `/readyz` answers 503 from now on, and the gateway
    /// keeps serving while asking clients to leave (HTTP/1 responses carry
    /// `Connection: close`, HTTP/2 connections are sent GOAWAY). [`App::shutdown`] then
    /// stops; in between, load balancers have [`App::drain_period`] to stop sending traffic.
    pub fn begin_drain(&self) {
        if !self.drain.send_replace(true) {
            self.metrics.set_draining();
            tracing::info!(
                drain = ?self.drain_period(),
                "shutdown begun: /readyz answers 503, connections are asked to close"
            );
        }
    }

    /// Whether [`App::begin_drain`] has been called.
    pub fn is_draining(&self) -> bool {
        *self.drain.borrow()
    }

    /// How long to keep serving between [`App::begin_drain`] and [`App::shutdown`]
    /// (`limits.shutdown_drain`).
    pub fn drain_period(&self) -> Duration {
        self.live.current().settings.limits.shutdown_drain
    }

    /// [`App::begin_drain`], serve for [`App::drain_period`], then [`App::shutdown`].
    pub async fn drain_and_shutdown(self) {
        self.begin_drain();
        tokio::time::sleep(self.drain_period()).await;
        self.shutdown().await;
    }

    /// Stop accepting, close idle connections, let in-flight requests finish (bounded by
    /// `limits.shutdown_deadline`), and wait for the servers.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        // Every request has ended: write the last token events.
        if let Some(audit) = &self.audit {
            audit.close();
        }
    }
}

/// What serving HTTPS needs, loaded before anything listens.
struct TlsSetup {
    certs: Arc<CertStore>,
    config: Arc<rustls::ServerConfig>,
    reload_interval: Duration,
}

/// Read and check the TLS certificate and key, when configured (`streamgate check`).
pub fn check_tls(settings: &Settings) -> Result<(), ConfigErrors> {
    load_https(settings).map(|_| ())
}

/// Load the certificate and key and build the rustls configuration, when `tls` is set.
/// Errors name the field.
fn load_https(settings: &Settings) -> Result<Option<TlsSetup>, ConfigErrors> {
    let Some(options) = &settings.tls else {
        return Ok(None);
    };
    let fail = |field: &str, position, error: &dyn std::error::Error| {
        ConfigErrors(vec![ConfigError {
            file: settings.file.clone(),
            position,
            field: field.to_string(),
            message: error.to_string(),
        }])
    };
    let certs = CertStore::load(options.files.clone()).map_err(|error| {
        let (field, position) = tls_field(options, error.file());
        fail(field, position, &error)
    })?;
    let config = tls::server_config(Arc::clone(&certs))
        .map_err(|error| fail("tls", options.positions[0], &error))?;
    Ok(Some(TlsSetup {
        certs,
        config,
        reload_interval: options.reload_interval,
    }))
}

/// The configuration field a TLS file came from, and where it is in the file.
fn tls_field(
    options: &TlsSettings,
    file: Option<TlsFile>,
) -> (&'static str, Option<(usize, usize)>) {
    match file {
        Some(TlsFile::Cert) => ("tls.cert", options.positions[1]),
        Some(TlsFile::Key) => ("tls.key", options.positions[2]),
        None => ("tls", options.positions[0]),
    }
}

/// Bind every configured listener, or none: a gateway that cannot bind all of them does not
/// start.
async fn bind_all(settings: &Settings, options: &StartOptions) -> Result<Listeners, StartError> {
    let emulator = match &settings.stream {
        StreamSettings::Emulator(options) => {
            Some(bind_at(options.listen, "Stream emulator").await?)
        }
        StreamSettings::Origin(_) => None,
    };
    let gateway = bind_at(options.listen.unwrap_or(settings.listen), "gateway").await?;
    let redirect = match settings.tls.as_ref().and_then(|t| t.http_redirect_listen) {
        Some(addr) => Some(bind_at(addr, "HTTP to HTTPS redirect").await?),
        None => None,
    };
    let metrics = match options.metrics_listen.or(settings.metrics_listen) {
        Some(addr) => Some(bind_at(addr, "metrics").await?),
        None => None,
    };
    Ok(Listeners {
        gateway,
        emulator,
        redirect,
        metrics,
    })
}

/// Forget the rate-limit state of callers whose limits have recovered, and the failed
/// sign-ins of addresses and user names quiet for `auth.failed_sign_ins.max_backoff`; how
/// many rate-limit callers are kept (also reported as `streamgate_rate_limit_keys`).
fn sweep_rate_limits(live: &Live<Snapshot>, metrics: &Metrics) -> usize {
    let snapshot = live.current();
    let limiter = snapshot.authz.limiter();
    limiter.forget_idle();
    snapshot.auth.throttle.forget_idle();
    let keys = limiter.keys();
    metrics.set_rate_limit_keys(keys);
    keys
}

/// How often the rate limiter forgets callers whose limits have recovered.
const FORGET_IDLE_RATE_LIMITS_EVERY: Duration = Duration::from_secs(10);

/// Drop the rate-limit state of quiet callers every [`FORGET_IDLE_RATE_LIMITS_EVERY`] and
/// report how many are kept (`streamgate_rate_limit_keys`), until `stop`.
fn forget_idle_rate_limits(
    live: Arc<Live<Snapshot>>,
    metrics: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(FORGET_IDLE_RATE_LIMITS_EVERY) => {
                    let (live, metrics) = (Arc::clone(&live), Arc::clone(&metrics));
                    // Sweeping walks every key: keep it off the runtime's workers.
                    let _ = tokio::task::spawn_blocking(move || {
                        sweep_rate_limits(&live, &metrics)
                    })
                    .await;
                }
            }
        }
    })
}

impl TlsSetup {
    /// Serve the gateway over HTTPS on `listener` and the redirect on `redirect`, and watch
    /// the certificate files, until `stopped`.
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        self,
        listener: TcpListener,
        redirect: Option<(TcpListener, SocketAddr)>,
        gateway: &Arc<Edge>,
        live: &Arc<Live<Snapshot>>,
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
                Arc::new(redirect::HttpsRedirect::new(
                    https_port,
                    Arc::clone(live),
                    Arc::clone(&self.certs),
                )),
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

/// [`bind`], and the address bound (the port chosen for port 0).
async fn bind_at(
    addr: SocketAddr,
    what: &'static str,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = bind(addr, what).await?;
    let bound = listener.local_addr().unwrap_or(addr);
    Ok((listener, bound))
}

/// Resolves once `stop` has been set to true (or its sender is gone).
pub(crate) async fn until_stopped(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
