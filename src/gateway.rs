//! The gateway's request path: route → identity → policy → token → response.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::Body;
use crate::app::edge::AccessNote;
use crate::authz::catalogue::Video;
use crate::authz::policy::{Denied, Mode, Permit};
use crate::config::Settings;
use crate::error::{Audience, RequestError, prefers_html};
use crate::http::client_addr::client_address;
use crate::http::server::Handler;
use crate::identity::{Authenticator, Identity};
use crate::proxy::{self, ClientError, Forward, Upstream, UpstreamError};
use crate::routes::{self, Resource, Route, Target};
use crate::token::cache::TokenCache;
use crate::token::signer::unix_now;
use crate::token::{IssuedToken, Signer, TokenSettings};

/// A token minted (or reused) for one request, with what decided it. Borrows from the
/// gateway's configuration.
pub struct Minted<'a> {
    pub video: &'a Video,
    pub token: Arc<IssuedToken>,
    pub permit: Permit<'a>,
    pub identity: Identity,
    /// The settings the token was minted with (shared, or bound to the viewer's address).
    pub settings: Cow<'a, Arc<TokenSettings>>,
}

/// What the policy grants one request, before a token is signed for it.
pub struct Authorized<'a> {
    pub video: &'a Video,
    pub permit: Permit<'a>,
    pub identity: Identity,
    /// The settings a token must carry (shared, or bound to the caller's address).
    pub settings: Cow<'a, Arc<TokenSettings>>,
}

/// The gateway service: one per configuration, shared by every connection.
pub struct Gateway {
    settings: Arc<Settings>,
    auth: Authenticator,
    cache: Arc<TokenCache>,
    /// Where tokens are played: `https://customer-<code>.cloudflarestream.com` or the emulator.
    origin: String,
    /// The client proxy mode fetches Stream through.
    upstream: Upstream,
    /// `WWW-Authenticate` values for a 401, precomputed from what is configured.
    challenges: Vec<HeaderValue>,
    /// How to sign in, for the 401's reason.
    sign_in: Arc<str>,
    /// Token-minting rate limits (off unless configured).
    limiter: crate::authz::ratelimit::MintLimiter,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Gateway {
    /// A gateway that identifies callers with `auth`, signs with `signer` and redirects to
    /// (or proxies) `origin` (no trailing slash). Fails only on a bad `upstream.ca_file`.
    pub fn new(
        settings: Arc<Settings>,
        auth: Authenticator,
        signer: Arc<Signer>,
        origin: String,
    ) -> Result<Self, ClientError> {
        let cache = Arc::new(TokenCache::new(
            signer,
            settings.cache_capacity,
            settings.min_remaining,
        ));
        Self::with_cache(settings, auth, cache, origin)
    }

    /// A gateway that shares an existing token cache (and its signer): a reload that changes
    /// neither the keys nor the cache settings keeps every token minted so far. Tokens under
    /// rules whose settings changed are never served again: the settings are part of the key.
    pub fn with_cache(
        settings: Arc<Settings>,
        auth: Authenticator,
        cache: Arc<TokenCache>,
        origin: String,
    ) -> Result<Self, ClientError> {
        let upstream = Upstream::new(origin.clone(), settings.upstream.clone())?;
        let realm = &settings.identity.realm;
        let mut challenges = vec![];
        if auth.basic_enabled() {
            challenges.push(format!("Basic realm=\"{realm}\", charset=\"UTF-8\""));
        }
        challenges.push(format!("Bearer realm=\"{realm}\""));
        let challenges = challenges
            .into_iter()
            .filter_map(|c| HeaderValue::try_from(c).ok())
            .collect();
        let mut ways = vec!["an API key (Authorization: Bearer <key> or X-Api-Key)"];
        if auth.basic_enabled() {
            ways.push("a user name and password (HTTP Basic)");
        }
        if auth.jwt.is_some() {
            ways.push("a session token from your identity provider");
        }
        let sign_in = ways.join(", or ").into();
        let limiter = crate::authz::ratelimit::MintLimiter::new(&settings.rate_limit);
        Ok(Self {
            settings,
            auth,
            cache,
            origin,
            upstream,
            challenges,
            sign_in,
            limiter,
            metrics: None,
        })
    }

    pub fn cache(&self) -> &Arc<TokenCache> {
        &self.cache
    }

    /// The configuration this gateway serves.
    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    /// Report upstream latency, upstream errors and rate limiting to `metrics`.
    pub fn observed_by(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Drop rate-limit state of callers that have been quiet (run periodically).
    pub fn forget_idle_rate_limits(&self) {
        self.limiter.forget_idle();
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        note: &mut AccessNote,
    ) -> Result<Response<Body>, RequestError> {
        let route = routes::match_route(req.method(), req.uri().path(), req.uri().query())?;
        match route {
            Route::Watch {
                video,
                target,
                query,
            } => {
                let minted = self.mint(req.headers(), peer, video, target, note).await?;
                match (minted.permit.mode(), target) {
                    (Mode::Redirect, Target::Player) => {
                        routes::watch::redirect(&self.origin, &minted, Resource::Iframe, query)
                    }
                    (Mode::Redirect, Target::Resource(resource)) => {
                        routes::watch::redirect(&self.origin, &minted, resource, query)
                    }
                    (Mode::Redirect, Target::File(path)) => Err(file_in_redirect_mode(path)),
                    // The player page references its manifests relatively: give it a URL
                    // whose directory is the video's.
                    (Mode::Proxy, Target::Player) => Ok(routes::watch::to_player(video, query)),
                    // Boxed, like the other routes below: their futures are large, and the
                    // cache-hit redirect would otherwise carry (and move) all that space.
                    (Mode::Proxy, target) => {
                        Box::pin(self.proxy(
                            req.method(),
                            req.headers(),
                            peer,
                            video,
                            target,
                            query,
                            minted,
                        ))
                        .await
                    }
                }
            }
            Route::GetSignedUrl => {
                Box::pin(routes::api::get_signed_url(self, req, peer, note)).await
            }
            Route::ApiOptions { allow } => {
                let cors = self.cors(req.headers(), req.uri())?;
                Ok(crate::routes::cors::preflight(
                    req.headers(),
                    &cors,
                    allow,
                    self.settings.cors.max_age,
                ))
            }
            Route::Health => Ok(crate::error::json_response(
                StatusCode::OK,
                &serde_json::json!({"status": "ok"}),
            )),
            Route::Home | Route::SignIn | Route::Asset(_) if !self.settings.demo_page => Err(
                RequestError::NotFound("no such route (the demo page is turned off)".into()),
            ),
            Route::Home => Box::pin(routes::demo::home(self, req.headers())).await,
            Route::SignIn => Box::pin(routes::demo::sign_in(self, req.headers())).await,
            Route::Asset(asset) => Ok(routes::demo::asset(asset)),
            Route::StreamToken { account_id, video } => {
                let (account_id, video) = (account_id.to_owned(), video.to_owned());
                let answer =
                    routes::stream_api::create_token(self, req, peer, note, &account_id, &video);
                Ok(Box::pin(answer).await)
            }
        }
    }

    /// Whether the request's `Origin` may call `/api/*` (see [`crate::routes::cors`]).
    fn cors(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<crate::routes::cors::Cors, RequestError> {
        crate::routes::cors::check(
            headers,
            uri,
            &self.settings.cors,
            self.settings.identity.public_url.as_deref(),
        )
    }

    /// Identify the caller, apply the policy to `video_id` and `target`, and get a token.
    pub(crate) async fn mint(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        video_id: &str,
        target: Target<'_>,
        note: &mut AccessNote,
    ) -> Result<Minted<'_>, RequestError> {
        let identity = self.identify(headers, note).await?;
        let authorized = self.authorize(identity, headers, peer, video_id, target, note)?;
        let token = self
            .cached_token(authorized.video.uid, &authorized.settings)
            .await?;
        tracing::debug!(
            video = %authorized.video.uid,
            rule = authorized.permit.rule(),
            subject = authorized.identity.subject(),
            "token issued"
        );
        Ok(Minted {
            video: authorized.video,
            token,
            permit: authorized.permit,
            identity: authorized.identity,
            settings: authorized.settings,
        })
    }

    /// The cached (or a new) token for `uid` under `settings`: a rule's shared grant may use
    /// the cache's hot slots, settings made for one viewer do not.
    #[allow(
        clippy::ptr_arg,
        reason = "whether the settings are borrowed (shared) or owned is what decides"
    )]
    async fn cached_token(
        &self,
        uid: crate::token::VideoUid,
        settings: &Cow<'_, Arc<TokenSettings>>,
    ) -> Result<Arc<IssuedToken>, RequestError> {
        match settings {
            Cow::Borrowed(shared) => self.cache.token(uid, shared).await,
            Cow::Owned(for_viewer) => self.cache.token_unshared(uid, for_viewer).await,
        }
        .map_err(RequestError::Signing)
    }

    /// Who is asking: anonymous, or the principal behind a valid credential.
    pub(crate) async fn identify(
        &self,
        headers: &HeaderMap,
        note: &mut AccessNote,
    ) -> Result<Identity, RequestError> {
        let identity = self.auth.identify(headers).await.inspect_err(|_| {
            note.decision = "unauthenticated";
        })?;
        if note.enabled {
            note.subject = identity.principal().map(|p| p.label());
        }
        Ok(identity)
    }

    /// Apply the rate limits and the policy to `identity` asking for `video_id` and `target`:
    /// what a token for it must carry, or why there is none.
    pub(crate) fn authorize(
        &self,
        identity: Identity,
        headers: &HeaderMap,
        peer: SocketAddr,
        video_id: &str,
        target: Target<'_>,
        note: &mut AccessNote,
    ) -> Result<Authorized<'_>, RequestError> {
        if self.limiter.is_enabled() {
            let client =
                client_address(peer.ip(), headers, &self.settings.identity.trusted_proxies);
            let subject = identity.principal().map(|p| p.label());
            self.limiter
                .check(subject.as_deref(), client)
                .map_err(|wait| {
                    if let Some(metrics) = &self.metrics {
                        metrics.rate_limited();
                    }
                    RequestError::TooManyRequests {
                        retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                    }
                })?;
        }
        let video = self
            .settings
            .catalogue
            .resolve(video_id)
            .ok_or_else(|| RequestError::NotFound(format!("no video `{video_id}`")))?;
        if note.enabled {
            note.video = Some(Arc::clone(&video.alias));
        }
        let permit = match self.settings.policy.decide(&identity, video, unix_now()) {
            Ok(permit) => permit,
            Err(denied) => {
                let (decision, rule) = match &denied {
                    Denied::ByRule(rule) => ("deny", Some(Arc::clone(rule))),
                    Denied::OutsideWindow { rule, .. } => {
                        ("outside_window", Some(Arc::clone(rule)))
                    }
                    Denied::NoRule => ("no_rule", None),
                };
                note.decision = decision;
                note.rule_index = rule
                    .as_deref()
                    .and_then(|r| self.settings.policy.rule_index(r));
                if note.enabled {
                    note.rule = rule;
                }
                return Err(self.refusal(&identity, denied));
            }
        };
        note.decision = "allow";
        note.rule_index = Some(permit.rule_index());
        if note.enabled {
            note.rule = Some(Arc::from(permit.rule()));
        }
        if let (Mode::Redirect, Target::File(path)) = (permit.mode(), target) {
            // Nothing to sign for: only proxy mode serves files below the player.
            return Err(file_in_redirect_mode(path));
        }
        if target.is_download() && !permit.downloadable() {
            return Err(RequestError::Forbidden(
                "downloads are not allowed for this video".into(),
            ));
        }
        let grant = permit.grant();
        let settings = if grant.bind_client_ip {
            let client =
                client_address(peer.ip(), headers, &self.settings.identity.trusted_proxies);
            grant.for_client(client)
        } else {
            Cow::Borrowed(&grant.settings)
        };
        Ok(Authorized {
            video,
            permit,
            identity,
            settings,
        })
    }

    /// Fetch the target from Stream with the minted token and stream it back. A token the
    /// origin refuses is dropped from the cache and signed again once before the refusal is
    /// passed on.
    #[allow(clippy::too_many_arguments)]
    async fn proxy(
        &self,
        method: &http::Method,
        headers: &HeaderMap,
        peer: SocketAddr,
        video: &str,
        target: Target<'_>,
        query: Option<&str>,
        minted: Minted<'_>,
    ) -> Result<Response<Body>, RequestError> {
        let client_ip = client_address(peer.ip(), headers, &self.settings.identity.trusted_proxies);
        let mut request = Forward {
            method,
            headers,
            token: minted.token.token.expose(),
            path: target.upstream_path(),
            query,
            video,
            client_ip,
        };
        let response = self.forward(&request).await?;
        if !proxy::refused_token(response.status()) {
            return Ok(self.upstream_status(response));
        }
        tracing::warn!(
            video = %minted.video.uid,
            status = response.status().as_u16(),
            "the Stream origin refused a token; signing a new one"
        );
        drop(response);
        self.cache
            .invalidate(minted.video.uid, &minted.settings)
            .await;
        let fresh = self
            .cached_token(minted.video.uid, &minted.settings)
            .await?;
        request.token = fresh.token.expose();
        let response = self.forward(&request).await?;
        if !proxy::refused_token(response.status()) {
            return Ok(self.upstream_status(response));
        }
        self.upstream_error(crate::metrics::UpstreamErrorKind::Refused);
        let reason = proxy::short_reason(response, 1024, Duration::from_secs(2)).await;
        tracing::warn!(video = %minted.video.uid, %reason, "the Stream origin refused a fresh token");
        Err(RequestError::Forbidden(format!(
            "the Stream origin refused the token: {reason}"
        )))
    }

    /// Anonymous callers are told to authenticate; known callers are told no, with the reason
    /// when it is a time window.
    fn refusal(&self, identity: &Identity, denied: Denied) -> RequestError {
        match denied {
            Denied::OutsideWindow { rule, reason } => {
                tracing::debug!(%rule, subject = identity.subject(), %reason, "outside the rule's window");
                return RequestError::Forbidden(format!("this video is {reason}"));
            }
            Denied::ByRule(rule) => {
                tracing::debug!(%rule, subject = identity.subject(), "denied by rule");
            }
            Denied::NoRule => {}
        }
        match identity {
            Identity::Anonymous => RequestError::CredentialsRequired(Arc::clone(&self.sign_in)),
            Identity::Authenticated(_) => {
                RequestError::Forbidden("the policy does not allow you to watch this video".into())
            }
        }
    }

    /// One upstream exchange, timed and counted.
    async fn forward(&self, request: &Forward<'_>) -> Result<Response<Body>, RequestError> {
        use crate::metrics::UpstreamErrorKind;
        let started = std::time::Instant::now();
        match self.upstream.forward(request).await {
            Ok(response) => {
                if let Some(metrics) = &self.metrics {
                    metrics.upstream(started.elapsed());
                }
                Ok(response)
            }
            Err(error) => {
                self.upstream_error(match error {
                    UpstreamError::Timeout(_) => UpstreamErrorKind::Timeout,
                    UpstreamError::Connect(_) => UpstreamErrorKind::Connect,
                    UpstreamError::Failed(_) => UpstreamErrorKind::Body,
                });
                Err(upstream_failure(error))
            }
        }
    }

    fn upstream_error(&self, kind: crate::metrics::UpstreamErrorKind) {
        if let Some(metrics) = &self.metrics {
            metrics.upstream_error(kind);
        }
    }

    /// Stream's own failures are reported as a bad gateway, not passed on as our 5xx.
    fn upstream_status(&self, response: Response<Body>) -> Response<Body> {
        if response.status().is_server_error() {
            self.upstream_error(crate::metrics::UpstreamErrorKind::Status5xx);
        }
        upstream_status(response)
    }

    /// Where a browser that must sign in goes: `login_url?return_to=<this request>`. The
    /// return address is this request's own path, made absolute only with the configured
    /// `public_url`, never from the Host header, so it cannot point elsewhere.
    fn login_location(&self, uri: &Uri) -> Option<HeaderValue> {
        let identity = &self.settings.identity;
        let login = identity.login_url.as_deref()?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        if !path.starts_with('/') || path.starts_with("//") {
            return None;
        }
        let return_to = match &identity.public_url {
            Some(origin) => format!("{origin}{path}"),
            None => path.to_string(),
        };
        let separator = if login.contains('?') { '&' } else { '?' };
        let location = format!(
            "{login}{separator}return_to={}",
            utf8_percent_encode(&return_to, QUERY_VALUE)
        );
        HeaderValue::try_from(location).ok()
    }
}

/// Characters escaped in a query parameter value.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn file_in_redirect_mode(path: &str) -> RequestError {
    RequestError::NotFound(format!(
        "unknown resource `{path}`: files below the player are served in proxy mode only"
    ))
}

/// Upstream failures: refused, unreachable or TLS → 502; no answer in time → 504.
fn upstream_failure(error: UpstreamError) -> RequestError {
    tracing::warn!(%error, "proxying to the Stream origin failed");
    match error {
        UpstreamError::Timeout(_) => RequestError::GatewayTimeout(error.to_string()),
        UpstreamError::Connect(_) => {
            RequestError::BadGateway("cannot reach the Stream origin".into())
        }
        UpstreamError::Failed(_) => {
            RequestError::BadGateway("the exchange with the Stream origin failed".into())
        }
    }
}

/// Stream's own failures are reported as a bad gateway, not passed on as our 5xx.
fn upstream_status(response: Response<Body>) -> Response<Body> {
    let status = response.status();
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), "the Stream origin failed");
        return RequestError::BadGateway(format!("the Stream origin answered {}", status.as_u16()))
            .into_response();
    }
    response
}

impl Handler for Gateway {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        self.serve(req, peer, &mut AccessNote::default()).await
    }
}

impl Gateway {
    /// Answer one request, noting what was decided in `note` for the access log.
    pub async fn serve(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        note: &mut AccessNote,
    ) -> Response<Body> {
        let method = req.method().clone();
        let html = prefers_html(req.headers());
        // Only a browser being sent to sign in needs the original URL afterwards.
        let uri = (html && self.settings.identity.login_url.is_some()).then(|| req.uri().clone());
        // A page on another site may call `/api/*` only from a listed origin.
        let (cors, refused) = if req.uri().path().starts_with("/api/") {
            match self.cors(req.headers(), req.uri()) {
                Ok(cors) => (Some(cors), None),
                Err(refused) => (None, Some(refused)),
            }
        } else {
            (None, None)
        };
        // No timer per request here: a tokio timer on every cache hit costs measurably. The
        // waits that can be long carry their own limits (signing, upstream, request bodies).
        let answered = match refused {
            Some(refused) => Err(refused),
            None => self.route(req, peer, note).await,
        };
        let mut response = match answered {
            Ok(response) => response,
            Err(error) => error.render(&Audience {
                html,
                challenges: &self.challenges,
                login: uri.as_ref().and_then(|uri| self.login_location(uri)),
            }),
        };
        if let Some(cors) = &cors {
            crate::routes::cors::decorate(&mut response, cors);
        }
        tracing::trace!(%peer, %method, status = response.status().as_u16(), "request");
        response
    }
}
