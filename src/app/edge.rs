//! What wraps every gateway request: a request id, one access-log line, and the operator
//! endpoints (`/readyz`) that need more than one configuration snapshot can see.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use http::header::HeaderName;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::Body;
use crate::app::live::Live;
use crate::app::reload::Reloader;
use crate::error::json_response;
use crate::gateway::Gateway;
use crate::http::server::Handler;
use crate::metrics::{self, Metrics, Outcome};

/// The request id header: accepted from the client when sane, else generated; always
/// returned.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the gateway learned about a request, for the access log. The gateway fills the
/// costly fields only when `enabled` (the hit path clones nothing for an unused log).
#[derive(Debug, Clone, Default)]
pub struct AccessNote {
    pub enabled: bool,
    pub video: Option<Arc<str>>,
    pub subject: Option<String>,
    pub decision: &'static str,
    pub rule: Option<Arc<str>>,
    /// The deciding rule's position (always filled, for metrics).
    pub rule_index: Option<usize>,
}

/// The gateway as served: request ids, access log, `/readyz`, then the live gateway.
pub struct Ops {
    gateway: Arc<Live<Gateway>>,
    metrics: Arc<Metrics>,
    /// Serve `/metrics` here (false when it has a listener of its own).
    serve_metrics: bool,
    reloader: Option<Arc<Reloader>>,
    access_log: bool,
    id_prefix: u32,
    /// Where the in-process emulator listens, checked by `/readyz`.
    emulator: Option<SocketAddr>,
}

impl Ops {
    pub fn new(
        gateway: Arc<Live<Gateway>>,
        metrics: Arc<Metrics>,
        serve_metrics: bool,
        reloader: Option<Arc<Reloader>>,
        emulator: Option<SocketAddr>,
        access_log: bool,
    ) -> Self {
        Self {
            gateway,
            metrics,
            serve_metrics,
            reloader,
            access_log,
            id_prefix: {
                let mut bytes = [0u8; 4];
                let _ = SystemRandom::new().fill(&mut bytes);
                u32::from_be_bytes(bytes)
            },
            emulator,
        }
    }

    fn request_id(&self, req: &Request<Incoming>) -> HeaderValue {
        let sane = |v: &&HeaderValue| {
            let bytes = v.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= 128
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
        };
        if let Some(id) = req.headers().get(&REQUEST_ID).filter(sane) {
            return id.clone();
        }
        // A random per-process prefix, the thread's slot and a per-thread counter: unique, no
        // system call and no cache line shared between cores per request.
        let (slot, n) = next_local_id();
        hex_request_id(self.id_prefix, slot, n)
    }

    /// `/readyz`: 200 when the policy is loaded, a signing key is usable and the Stream
    /// emulator (when in-process) answers; 503 otherwise. JSON detail either way.
    async fn readiness(&self) -> Response<Body> {
        let gateway = self.gateway.current();
        let settings = gateway.settings();
        let signer = gateway.cache().signer();
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
        let ready = key_ok && emulator_ok != Some(false);
        let body = serde_json::json!({
            "ready": ready,
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
            "reload": status.map(|s| serde_json::json!({
                "ok": s.reloads_ok,
                "failed": s.reloads_failed,
                "last_error": s.last_error,
                "needs_restart": s.needs_restart,
            })),
        });
        let code = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(code, &body)
    }
}

impl Handler for Ops {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let id = self.request_id(&req);
        let method = req.method().clone();
        // Nothing is collected when no subscriber would record the line.
        let log = self.access_log
            && tracing::enabled!(target: "streamgate::access", tracing::Level::INFO);
        let path = log.then(|| req.uri().path().to_string());
        let mut note = AccessNote {
            enabled: log,
            ..AccessNote::default()
        };
        let route = route_of(req.uri().path());
        let reads = matches!(*req.method(), Method::GET | Method::HEAD);
        let mut response = match route {
            metrics::Route::Ready if reads => self.readiness().await,
            metrics::Route::Metrics if reads && self.serve_metrics => {
                metrics_response(&self.metrics)
            }
            _ => {
                let gateway = self.gateway.current();
                gateway.serve(req, peer, &mut note).await
            }
        };
        self.metrics
            .request(route, response.status().as_u16(), started.elapsed());
        if let Some(outcome) = outcome_of(note.decision) {
            self.metrics.decision(outcome, note.rule_index);
        }
        if let Some(path) = path {
            let note = Some(&note);
            tracing::info!(
                target: "streamgate::access",
                request_id = id.to_str().unwrap_or(""),
                method = %method,
                path = %path,
                status = response.status().as_u16(),
                latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                peer = %peer.ip(),
                video = note.and_then(|n| n.video.as_deref()).unwrap_or(""),
                subject = note.and_then(|n| n.subject.as_deref()).unwrap_or(""),
                decision = note.map_or("", |n| n.decision),
                rule = note.and_then(|n| n.rule.as_deref()).unwrap_or(""),
                "request"
            );
        }
        response.headers_mut().insert(REQUEST_ID, id);
        response
    }
}

/// `prefix`, `slot` and `n` as 8 + 4 + 12 lowercase hex digits, written directly: `format!`
/// cost more than the rest of a cache hit's bookkeeping together.
fn hex_request_id(prefix: u32, slot: u64, n: u64) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let value = (u128::from(prefix) << 64)
        | (u128::from(slot & 0xffff) << 48)
        | u128::from(n & 0xffff_ffff_ffff);
    let mut id = [0u8; 24];
    for (i, digit) in id.iter_mut().rev().enumerate() {
        *digit = HEX[((value >> (4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// This thread's slot and its next sequence number.
fn next_local_id() -> (u64, u64) {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SLOTS: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static SLOT: u64 = SLOTS.fetch_add(1, Ordering::Relaxed) & 0xffff;
        static NEXT: Cell<u64> = const { Cell::new(0) };
    }
    let n = NEXT.with(|next| {
        let n = next.get();
        next.set(n.wrapping_add(1));
        n & 0xffff_ffff_ffff
    });
    (SLOT.with(|slot| *slot), n)
}

/// Which route a path is, for the request metrics.
fn route_of(path: &str) -> metrics::Route {
    match path {
        "/healthz" => metrics::Route::Health,
        "/readyz" => metrics::Route::Ready,
        "/metrics" => metrics::Route::Metrics,
        "/api/getSignedURL" => metrics::Route::Api,
        "/" | "/sign-in" | "/favicon.ico" => metrics::Route::Page,
        _ if path.starts_with(crate::routes::demo::ASSETS_PREFIX) => metrics::Route::Page,
        _ if path.starts_with("/accounts/") && path.ends_with("/token") => metrics::Route::TokenApi,
        _ => match path.strip_prefix("/watch/") {
            Some(rest) => match rest.split_once('/') {
                None => metrics::Route::Watch,
                Some((_, below)) if crate::routes::Resource::is_documented(below) => {
                    metrics::Route::Watch
                }
                Some(_) => metrics::Route::WatchFile,
            },
            None => metrics::Route::Other,
        },
    }
}

fn outcome_of(decision: &str) -> Option<Outcome> {
    Some(match decision {
        "allow" => Outcome::Allow,
        "deny" => Outcome::DenyRule,
        "no_rule" => Outcome::DenyDefault,
        "outside_window" => Outcome::OutsideWindow,
        "unauthenticated" => Outcome::Unauthenticated,
        _ => return None,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_24_hex_digits_of_prefix_slot_and_sequence() {
        for (prefix, slot, n) in [
            (0u32, 0u64, 0u64),
            (0xa35c_6096, 1, 4),
            (u32::MAX, 0xffff, 0xffff_ffff_ffff),
            (0x1234_5678, 0x1_0002, 0x1_0000_0000_0003),
        ] {
            let expected = format!(
                "{prefix:08x}{:04x}{:012x}",
                slot & 0xffff,
                n & 0xffff_ffff_ffff
            );
            assert_eq!(hex_request_id(prefix, slot, n), expected.as_str());
        }
    }
}
