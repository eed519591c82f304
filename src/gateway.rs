//! The gateway's request path: route → identity → policy → token → response.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::Body;
use crate::cache::TokenCache;
use crate::catalogue::Video;
use crate::config::Settings;
use crate::error::RequestError;
use crate::identity::{Identity, identify};
use crate::policy::{Denied, Permit};
use crate::routes::{self, Resource, Route};
use crate::server::Handler;
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
    cache: TokenCache,
    /// Where tokens are played: `https://customer-<code>.cloudflarestream.com` or the emulator.
    origin: String,
}

impl Gateway {
    /// A gateway that signs with `signer` and redirects to `origin` (no trailing slash).
    pub fn new(settings: Arc<Settings>, signer: Arc<Signer>, origin: String) -> Self {
        let cache = TokenCache::new(signer, settings.cache_capacity, settings.min_remaining);
        Self {
            settings,
            cache,
            origin,
        }
    }

    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<Body>, RequestError> {
        let route = routes::match_route(req.method(), req.uri().path(), req.uri().query())?;
        match route {
            Route::Watch {
                video,
                resource,
                query,
            } => {
                let minted = self.mint(req.headers(), video, resource).await?;
                routes::watch::redirect(&self.origin, &minted, resource, query)
            }
            Route::GetSignedUrl => routes::api::get_signed_url(self, req).await,
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
        video_id: &str,
        resource: Resource,
    ) -> Result<Minted<'_>, RequestError> {
        let identity = identify(headers, &self.settings.api_keys)?;
        let video = self
            .settings
            .catalogue
            .resolve(video_id)
            .ok_or_else(|| RequestError::NotFound(format!("no video `{video_id}`")))?;
        let permit = self
            .settings
            .policy
            .decide(&identity, video)
            .map_err(|denied| refusal(&identity, denied))?;
        if resource == Resource::Download && !permit.token_settings().downloadable {
            return Err(RequestError::Forbidden(
                "downloads are not allowed for this video".into(),
            ));
        }
        let token = self
            .cache
            .token(video.uid, permit.token_settings())
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
}

/// Anonymous callers are told to authenticate; known callers are told no.
fn refusal(identity: &Identity, denied: Denied) -> RequestError {
    if let Denied::ByRule(rule) = &denied {
        tracing::debug!(%rule, subject = identity.subject(), "denied by rule");
    }
    match identity {
        Identity::Anonymous => RequestError::CredentialsRequired,
        Identity::ApiKey { .. } => {
            RequestError::Forbidden("the policy does not allow you to watch this video".into())
        }
    }
}

impl Handler for Gateway {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let method = req.method().clone();
        let response = match self.route(req).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        };
        tracing::trace!(%peer, %method, status = response.status().as_u16(), "request");
        response
    }
}
