//! The gateway's request path: route → identity → policy → token → response.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::Body;
use crate::cache::TokenCache;
use crate::catalogue::Video;
use crate::client_addr::client_address;
use crate::config::Settings;
use crate::error::{Audience, RequestError, prefers_html};
use crate::identity::{Authenticator, Identity};
use crate::policy::{Denied, Permit};
use crate::routes::{self, Resource, Route};
use crate::server::Handler;
use crate::token::signer::unix_now;
use crate::token::{IssuedToken, Signer};

/// A token minted (or reused) for one request, with what decided it. Borrows from the
/// gateway's configuration.
pub struct Minted<'a> {
    pub video: &'a Video,
    pub token: Arc<IssuedToken>,
    pub permit: Permit<'a>,
    pub identity: Identity,
}

/// The gateway service: one per configuration, shared by every connection.
pub struct Gateway {
    settings: Arc<Settings>,
    auth: Authenticator,
    cache: TokenCache,
    /// Where tokens are played: `https://customer-<code>.cloudflarestream.com` or the emulator.
    origin: String,
    /// `WWW-Authenticate` values for a 401, precomputed from what is configured.
    challenges: Vec<HeaderValue>,
    /// How to sign in, for the 401's reason.
    sign_in: Arc<str>,
}

impl Gateway {
    /// A gateway that identifies callers with `auth`, signs with `signer` and redirects to
    /// `origin` (no trailing slash).
    pub fn new(
        settings: Arc<Settings>,
        auth: Authenticator,
        signer: Arc<Signer>,
        origin: String,
    ) -> Self {
        let cache = TokenCache::new(signer, settings.cache_capacity, settings.min_remaining);
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
        Self {
            settings,
            auth,
            cache,
            origin,
            challenges,
            sign_in,
        }
    }

    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, RequestError> {
        let route = routes::match_route(req.method(), req.uri().path(), req.uri().query())?;
        match route {
            Route::Watch {
                video,
                resource,
                query,
            } => {
                let minted = self.mint(req.headers(), peer, video, resource).await?;
                routes::watch::redirect(&self.origin, &minted, resource, query)
            }
            Route::GetSignedUrl => routes::api::get_signed_url(self, req, peer).await,
            Route::Health => Ok(crate::error::json_response(
                StatusCode::OK,
                &serde_json::json!({"status": "ok"}),
            )),
        }
    }

    /// Identify the caller, apply the policy to `video_id` and `resource`, and get a token.
    pub(crate) async fn mint(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        video_id: &str,
        resource: Resource,
    ) -> Result<Minted<'_>, RequestError> {
        let identity = self.auth.identify(headers).await?;
        let video = self
            .settings
            .catalogue
            .resolve(video_id)
            .ok_or_else(|| RequestError::NotFound(format!("no video `{video_id}`")))?;
        let permit = self
            .settings
            .policy
            .decide(&identity, video, unix_now())
            .map_err(|denied| self.refusal(&identity, denied))?;
        if resource == Resource::Download && !permit.downloadable() {
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
        let token = self
            .cache
            .token(video.uid, &settings)
            .await
            .map_err(RequestError::Signing)?;
        tracing::debug!(
            video = %video.uid,
            rule = permit.rule(),
            subject = identity.subject(),
            "token issued"
        );
        Ok(Minted {
            video,
            token,
            permit,
            identity,
        })
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

impl Handler for Gateway {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let method = req.method().clone();
        let html = prefers_html(req.headers());
        // Only a browser being sent to sign in needs the original URL afterwards.
        let uri = (html && self.settings.identity.login_url.is_some()).then(|| req.uri().clone());
        let response = match self.route(req, peer).await {
            Ok(response) => response,
            Err(error) => error.render(&Audience {
                html,
                challenges: &self.challenges,
                login: uri.as_ref().and_then(|uri| self.login_location(uri)),
            }),
        };
        tracing::trace!(%peer, %method, status = response.status().as_u16(), "request");
        response
    }
}
