//! The edge of the request path: what wraps every gateway request. It loads the snapshot
//! once, makes the request context (id, client address, route), answers the operator
//! endpoints that need more than one snapshot can see (`/readyz`, `/metrics`), hands the rest
//! to [`crate::gateway`], then records the request in the metrics and the access log from
//! the same context.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{self, Poll};
use std::time::{Duration, Instant};

use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::Body;
use crate::app::live::Live;
use crate::app::reload::Reloader;
use crate::authz::policy::rfc3339;
use crate::body::BodyEnd;
use crate::error::{Audience, RequestError, json_response, prefers_html};
use crate::gateway;
use crate::http::server::Handler;
use crate::log_writer::log_field;
use crate::metrics::{self, Metrics};
use crate::request::Context;
use crate::request::id::{RequestIds, set_request_id};
use crate::request::route::{self, Route};
use crate::snapshot::Snapshot;
use crate::untrusted::{LOG_CHARS, clip};

/// The gateway as served: the edge, then the live snapshot's handlers.
pub struct Edge {
    live: Arc<Live<Snapshot>>,
    metrics: Arc<Metrics>,
    reloader: Option<Arc<Reloader>>,
    ids: RequestIds,
    /// Where the in-process emulator listens, checked by `/readyz`.
    emulator: Option<SocketAddr>,
    /// True once shutdown has begun: `/readyz` answers 503.
    draining: tokio::sync::watch::Receiver<bool>,
}

impl Edge {
    pub fn new(
        live: Arc<Live<Snapshot>>,
        metrics: Arc<Metrics>,
        reloader: Option<Arc<Reloader>>,
        emulator: Option<SocketAddr>,
        draining: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            live,
            metrics,
            reloader,
            ids: RequestIds::default(),
            emulator,
            draining,
        }
    }

    /// `/readyz`: 200 when the policy is loaded, a signing key is usable, the Stream
    /// emulator (when in-process) answers and shutdown has not begun; 503 otherwise. JSON
    /// detail either way.
    async fn readiness(&self, snapshot: &Snapshot) -> Response<Body> {
        let settings = &snapshot.settings;
        let signer = snapshot.cache.signer();
        let key_ok = !signer.keys().is_empty();
        let emulator_ok = match self.emulator {
            None => None,
            Some(addr) => Some(
                tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
                    .await
                    .is_ok_and(|c| c.is_ok()),
            ),
        };
        let status = self.reloader.as_ref().map(|r| r.status());
        let draining = *self.draining.borrow();
        let ready = key_ok && emulator_ok != Some(false) && !draining;
        // The periodic Stream audit warns; it never makes the gateway unready.
        let audit = self.metrics.stream_audit();
        let warnings = audit
            .as_ref()
            .map(stream_audit_warnings)
            .unwrap_or_default();
        let body = serde_json::json!({
            "ready": ready,
            "draining": draining,
            "policy": {
                "rules": settings.policy.rules().len(),
                "videos": settings.catalogue.len(),
                "generation": status.as_ref().map_or(1, |s| s.generation),
            },
            "signing_key": {
                "usable": key_ok,
                "active": signer.keys().first().map(|k| k.id().to_string()),
                "configured": signer.keys().len(),
            },
            "emulator_reachable": emulator_ok,
            // Only that the last reload failed, and when: the reason names fields of the
            // configuration, which is the operator's business (it is in the log).
            "reload": status.map(|s| serde_json::json!({
                "ok": s.reloads_ok,
                "failed": s.reloads_failed,
                "last_failed": s.last_failed_at.is_some(),
                "last_failed_at": s.last_failed_at.map(rfc3339),
                "needs_restart": s.needs_restart,
            })),
            "stream_audit": audit.map(|a| serde_json::json!({
                "ok": a.ok,
                "at": rfc3339(a.at),
                "unprotected_videos": a.unprotected_videos,
                "errors": a.errors,
            })),
            "warnings": warnings,
        });
        let code = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(code, &body)
    }
}

/// The `/readyz` warning lines for the last Stream audit.
fn stream_audit_warnings(audit: &crate::metrics::StreamAuditStatus) -> Vec<String> {
    let mut warnings = Vec::new();
    if audit.unprotected_videos > 0 {
        warnings.push(format!(
            "{} catalogue videos are publicly playable (requireSignedURLs false): run `streamgate stream audit --fix`",
            audit.unprotected_videos
        ));
    }
    if audit.errors > 0 {
        warnings.push(format!(
            "the Stream audit found {} errors (missing videos or keys, allowedOrigins): run `streamgate stream audit`",
            audit.errors
        ));
    }
    if !audit.ok {
        warnings.push(format!(
            "the last Stream audit could not run (at {}); see the log",
            rfc3339(audit.at)
        ));
    }
    warnings
}

impl Handler for Edge {
    fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send {
        let started = Instant::now();
        // Split before the future is made, and the work written in the block itself rather
        // than an `async fn`: an `async fn` keeps its arguments for its whole life beside its
        // own copy of them, so the request (and then its head) would be held three times in
        // every request's future, which is copied into place per request.
        let (head, body) = req.into_parts();
        async move {
            let snapshot = self.live.guard();
            let settings = &snapshot.settings;
            let id = self.ids.for_request(&head.headers);
            let matched = route::route(&head.method, head.uri.path(), head.uri.query());
            let client = settings
                .identity
                .client_address
                .resolve(peer.ip(), &head.headers);
            let mut ctx = Context::new(id, peer, client, matched.label);
            // Nothing is collected when no subscriber would record the line.
            ctx.logged = settings.access_log
                && tracing::enabled!(target: "streamgate::access", tracing::Level::INFO);
            let mut response = match matched.route {
                Ok(Route::Ready) => self.readiness(&snapshot).await,
                Ok(Route::Metrics) if settings.metrics_public => metrics_response(&self.metrics),
                route => {
                    // The deadline model: every route has `request_timeout` to produce its
                    // response head (proxied ones included: the upstream's own
                    // `response_timeout` can only be shorter); a proxied body is then bounded by
                    // the upstream's idle timeout and minimum rate (see `proxy::idle`).
                    let timeout = settings.request_timeout;
                    let deadline = tokio::time::Instant::from_std(started) + timeout;
                    ctx.deadline = Some(deadline);
                    // Made inside `Within`, which is awaited in place: the request's future holds
                    // one copy of the route's future, not a second for a pinned temporary.
                    match Within::new(
                        gateway::serve(&snapshot, &mut ctx, route, &head, body),
                        deadline,
                    )
                    .await
                    {
                        Ok(response) => response,
                        Err(_) => RequestError::Timeout(timeout).render(&Audience {
                            html: prefers_html(&head.headers),
                            challenges: &snapshot.challenges,
                            login: None,
                        }),
                    }
                }
            };
            let status = response.status().as_u16();
            let latency = started.elapsed();
            self.metrics.request(ctx.label, status, latency);
            if let Some(decision) = ctx.verdict.decision {
                self.metrics.decision(decision, ctx.verdict.rule_index);
            }
            if ctx.logged {
                let fields = AccessFields::new(&snapshot, &ctx, &head, status, latency);
                if response.body().is_stream() {
                    // A streamed body may still break off: the line is written when it ends.
                    let line = AccessLine::new(&fields, &ctx.id, &head.method);
                    response = response.map(|body| {
                        body.on_end(move |end, bytes| {
                            line.fields()
                                .write(end.label(), Some(bytes), started.elapsed());
                        })
                    });
                } else {
                    fields.write(BodyEnd::Complete.label(), None, latency);
                }
            }
            set_request_id(response.headers_mut(), ctx.id);
            response
        }
    }
}

pin_project_lite::pin_project! {
    /// `future`'s output if it is ready by `deadline`, else `Err(())`. Unlike
    /// `tokio::time::timeout`, a future ready at its first poll (a cache hit's redirect) is
    /// answered without making a timer, which costs a clock read and a reference counted in
    /// the runtime's handle (written from every core); the timer is made, boxed, at the first
    /// `Pending`.
    struct Within<F> {
        #[pin]
        future: F,
        deadline: tokio::time::Instant,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F> Within<F> {
    fn new(future: F, deadline: tokio::time::Instant) -> Self {
        Self {
            future,
            deadline,
            timer: None,
        }
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, ()>;

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let deadline = *this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().poll(cx).map(Err)
    }
}

/// How much of a request path an access-log line keeps. Paths longer than the router
/// accepts (`MAX_PATH_BYTES`) are refused with 414 but still logged, cut here.
const ACCESS_PATH_CHARS: usize = 1024;

/// One access-log line's fields, borrowed from the request context: written at once for a
/// body that is complete, or kept as an [`AccessLine`] until a streamed body ends. String
/// fields are escaped by the log format (quoted in text, JSON strings in JSON) and cut short
/// here.
struct AccessFields<'a> {
    /// When the request arrived: the line is stamped that plus the time until the body
    /// ended, with no read of the clock.
    arrived: std::time::SystemTime,
    /// As the `X-Request-Id` value holds it: plain by construction (`request::id`).
    request_id: &'a [u8],
    method: &'a str,
    path: &'a str,
    status: u16,
    latency: Duration,
    peer: std::net::IpAddr,
    client: std::net::IpAddr,
    video: &'a str,
    subject: &'a str,
    decision: &'static str,
    rule: &'a str,
}

impl<'a> AccessFields<'a> {
    fn new(
        snapshot: &'a Snapshot,
        ctx: &'a Context,
        head: &'a Parts,
        status: u16,
        latency: Duration,
    ) -> Self {
        Self {
            arrived: ctx.arrived,
            request_id: ctx.id.as_bytes(),
            method: head.method.as_str(),
            path: clip(head.uri.path(), ACCESS_PATH_CHARS),
            status,
            latency,
            peer: ctx.peer.ip(),
            client: ctx.client,
            video: ctx
                .verdict
                .video
                .and_then(|uid| snapshot.settings.catalogue.by_uid(&uid))
                .map_or("", |video| &video.alias),
            subject: ctx
                .identity
                .principal()
                .map_or("", |p| clip(p.label(), LOG_CHARS)),
            decision: ctx.verdict.decision.map_or("", |d| d.label()),
            rule: ctx
                .verdict
                .rule_index
                .and_then(|index| snapshot.authz.policy().rules().get(index))
                .map_or("", |rule| &rule.name),
        }
    }

    /// Write the line: `body` is how the body ended (`complete`, `truncated` when an upstream
    /// body broke off, `abandoned` when the viewer went away), `body_bytes` what a streamed
    /// body carried, `duration` until the body ended.
    fn write(&self, body: &'static str, body_bytes: Option<u64>, duration: Duration) {
        if let Some(direct) = crate::log_writer::direct() {
            return self.write_direct(direct, body, body_bytes, duration);
        }
        tracing::info!(
            target: "streamgate::access",
            request_id = std::str::from_utf8(self.request_id).unwrap_or(""),
            method = %self.method,
            path = self.path,
            status = self.status,
            latency_ms = self.latency.as_secs_f64() * 1000.0,
            duration_ms = duration.as_secs_f64() * 1000.0,
            body,
            body_bytes,
            truncated = body == "truncated",
            peer = %self.peer,
            client = %self.client,
            video = self.video,
            subject = self.subject,
            decision = self.decision,
            rule = self.rule,
            "request"
        );
    }

    /// [`AccessFields::write`] without `tracing`'s formatting: the same fields, in the same
    /// order.
    fn write_direct(
        &self,
        direct: &crate::log_writer::Direct,
        body: &'static str,
        body_bytes: Option<u64>,
        duration: Duration,
    ) {
        direct.info(
            self.arrived + duration,
            "streamgate::access",
            "request",
            |record| {
                record
                    // Plain by construction: a request id is generated or kept only when plain
                    // (`request::id`), a method is token characters, `body` a fixed label.
                    .plain_bytes(log_field!("request_id"), self.request_id)
                    .plain_bare(log_field!("method"), self.method)
                    .str(log_field!("path"), self.path)
                    .u64(log_field!("status"), u64::from(self.status))
                    .millis(log_field!("latency_ms"), self.latency)
                    .millis(log_field!("duration_ms"), duration)
                    .plain(log_field!("body"), body);
                if let Some(bytes) = body_bytes {
                    record.u64(log_field!("body_bytes"), bytes);
                }
                record
                    .bool(log_field!("truncated"), body == "truncated")
                    .ip(log_field!("peer"), self.peer)
                    .ip(log_field!("client"), self.client)
                    // An alias is validated plain at load (`is_valid_alias`); a decision is a
                    // fixed label.
                    .plain(log_field!("video"), self.video)
                    .str(log_field!("subject"), self.subject)
                    .plain(log_field!("decision"), self.decision)
                    .str(log_field!("rule"), self.rule);
            },
        );
    }
}

/// [`AccessFields`] owned, for a line written when a streamed body ends.
struct AccessLine {
    arrived: std::time::SystemTime,
    request_id: HeaderValue,
    method: http::Method,
    path: String,
    status: u16,
    latency: Duration,
    peer: std::net::IpAddr,
    client: std::net::IpAddr,
    video: String,
    subject: String,
    decision: &'static str,
    rule: Arc<str>,
}

impl AccessLine {
    fn new(fields: &AccessFields<'_>, request_id: &HeaderValue, method: &http::Method) -> Self {
        Self {
            arrived: fields.arrived,
            request_id: request_id.clone(),
            method: method.clone(),
            path: fields.path.to_string(),
            status: fields.status,
            latency: fields.latency,
            peer: fields.peer,
            client: fields.client,
            video: fields.video.to_string(),
            subject: fields.subject.to_string(),
            decision: fields.decision,
            rule: Arc::from(fields.rule),
        }
    }

    fn fields(&self) -> AccessFields<'_> {
        AccessFields {
            arrived: self.arrived,
            request_id: self.request_id.as_bytes(),
            method: self.method.as_str(),
            path: &self.path,
            status: self.status,
            latency: self.latency,
            peer: self.peer,
            client: self.client,
            video: &self.video,
            subject: &self.subject,
            decision: self.decision,
            rule: &self.rule,
        }
    }
}

/// `GET /metrics` in the Prometheus/OpenMetrics text format.
pub fn metrics_response(metrics: &Metrics) -> Response<Body> {
    let mut response = Response::new(Body::new(bytes::Bytes::from(metrics.encode())));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

/// A listener of its own for `/metrics` (and `/healthz`), e.g. on an internal port.
pub struct MetricsOnly {
    pub metrics: Arc<Metrics>,
}

impl Handler for MetricsOnly {
    async fn handle(&self, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        match req.uri().path() {
            "/metrics" => metrics_response(&self.metrics),
            "/healthz" => json_response(StatusCode::OK, &serde_json::json!({"status": "ok"})),
            _ => json_response(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "only /metrics and /healthz here", "status": 404}),
            ),
        }
    }
}
