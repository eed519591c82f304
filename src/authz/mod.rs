//! Authorization: one entry point, [`Authorizer::authorize`], that takes a request from an
//! identity to a [`Permit`] in fixed steps, cheapest first, and denies by default:
//!
//! rate limits → catalogue → policy → resource checks → permit.
//!
//! A [`Permit`] is the only way to the token settings: handlers ask it for a token (shared,
//! bound to the viewer, or narrowed for the token API) and never build settings themselves.
//! It also decides who may see the token: under a proxy-mode rule no token is handed out.

pub mod catalogue;
pub mod narrow;
pub mod policy;
pub mod ratelimit;

use std::borrow::Cow;
use std::sync::Arc;

use crate::error::RequestError;
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::request::route::Target;
use crate::request::{Context, Decision};
use crate::token::cache::{Replacement, TokenCache};
use crate::token::claims::Validity;
use crate::token::signer::unix_now;
use crate::token::{IssuedToken, TokenSettings};

use catalogue::{Catalogue, Video};
use narrow::TokenRequest;
use policy::{Denied, Mode, Policy, RuleMatch};
use ratelimit::MintLimiter;

/// Everything authorization needs from one configuration snapshot.
pub struct Authorizer {
    policy: Arc<Policy>,
    catalogue: Arc<Catalogue>,
    limiter: Arc<MintLimiter>,
    /// How to sign in, for an anonymous caller's refusal.
    sign_in: Arc<str>,
    metrics: Arc<Metrics>,
}

impl Authorizer {
    /// Authorize with `policy` over `catalogue`, limited by `limiter`; `sign_in` names the
    /// credentials this gateway accepts.
    pub fn new(
        policy: Arc<Policy>,
        catalogue: Arc<Catalogue>,
        limiter: Arc<MintLimiter>,
        sign_in: Arc<str>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            policy,
            catalogue,
            limiter,
            sign_in,
            metrics,
        }
    }

    /// The rate limits, kept by a reload that does not change them.
    pub fn limiter(&self) -> &Arc<MintLimiter> {
        &self.limiter
    }

    /// May the caller in `ctx` have a token for `video_id` to use on `target`? Records the
    /// decision and the deciding rule in `ctx` either way.
    ///
    /// `Err` is the refusal to send: 429 over a rate limit, 404 for an unknown video, 401 for
    /// an anonymous caller no rule admits, 403 otherwise.
    pub fn authorize<'a>(
        &'a self,
        ctx: &mut Context,
        video_id: &str,
        target: Target<'_>,
    ) -> Result<Permit<'a>, RequestError> {
        self.rate_limit(ctx)?;
        let video = self
            .catalogue
            .resolve(video_id)
            .ok_or_else(|| RequestError::NotFound(format!("no video `{video_id}`")))?;
        if ctx.logged {
            ctx.verdict.video = Some(video.uid);
        }
        let rule = self.decide(ctx, video)?;
        check_target(rule, target)?;
        Ok(Permit {
            video,
            settings: rule.grant().for_client(ctx.client),
            rule,
            now: ctx.unix_second(),
        })
    }

    /// The per-address rate limit, for a request whose credential is about to be verified:
    /// asked before any password, signature or key fetch, so that a flood from one address
    /// costs nothing expensive. Counts the request once (see [`Authorizer::authorize`]).
    /// `Err` is a 429 with `Retry-After`.
    pub fn limit_address(&self, ctx: &mut Context) -> Result<(), RequestError> {
        if ctx.address_limited || !self.limiter.limits_addresses() {
            return Ok(());
        }
        ctx.address_limited = true;
        self.limiter
            .check_address(ctx.client)
            .map_err(|wait| self.too_many(wait))
    }

    /// The per-subject limit, and the per-address one unless [`Authorizer::limit_address`]
    /// already counted this request.
    fn rate_limit(&self, ctx: &mut Context) -> Result<(), RequestError> {
        if !self.limiter.is_enabled() {
            return Ok(());
        }
        if let Some(principal) = ctx.identity.principal()
            && self.limiter.limits_subjects()
        {
            self.limiter
                .check_subject(principal.label())
                .map_err(|wait| self.too_many(wait))?;
        }
        self.limit_address(ctx)
    }

    fn too_many(&self, wait: std::time::Duration) -> RequestError {
        self.metrics.rate_limited();
        RequestError::TooManyRequests {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        }
    }

    /// Apply the policy, and note what it decided.
    fn decide<'a>(
        &'a self,
        ctx: &mut Context,
        video: &'a Video,
    ) -> Result<RuleMatch<'a>, RequestError> {
        match self.policy.decide(&ctx.identity, video, ctx.unix_second()) {
            Ok(rule) => {
                ctx.verdict.decision = Some(Decision::Allow);
                ctx.verdict.rule_index = Some(rule.rule_index());
                Ok(rule)
            }
            Err(denied) => {
                let (decision, rule) = match &denied {
                    Denied::ByRule(rule) => (Decision::DenyRule, Some(rule)),
                    Denied::OutsideWindow { rule, .. } => (Decision::OutsideWindow, Some(rule)),
                    Denied::NoRule => (Decision::DenyDefault, None),
                };
                ctx.verdict.decision = Some(decision);
                ctx.verdict.rule_index = rule.and_then(|r| self.policy.rule_index(r));
                Err(self.refusal(&ctx.identity, denied))
            }
        }
    }

    /// Anonymous callers are told to authenticate; known callers are told no, with the
    /// reason when it is a time window.
    fn refusal(&self, identity: &Identity, denied: Denied) -> RequestError {
        match denied {
            Denied::OutsideWindow { rule, reason } => {
                tracing::debug!(%rule, subject = crate::untrusted::clip(identity.subject(), crate::untrusted::LOG_CHARS), %reason, "outside the rule's window");
                return RequestError::Forbidden(format!("this video is {reason}"));
            }
            Denied::ByRule(rule) => {
                tracing::debug!(%rule, subject = crate::untrusted::clip(identity.subject(), crate::untrusted::LOG_CHARS), "denied by rule");
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

    /// The policy this authorizer applies.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// The resource checks: what the rule allows must cover what `target` is.
fn check_target(rule: RuleMatch<'_>, target: Target<'_>) -> Result<(), RequestError> {
    if let (Mode::Redirect, Target::File(path)) = (rule.mode(), target) {
        // Nothing to sign for: only proxy mode serves files below the player.
        return Err(file_in_redirect_mode(path));
    }
    if target.is_download() && !rule.downloadable() {
        return Err(RequestError::Forbidden(
            "downloads are not allowed for this video".into(),
        ));
    }
    Ok(())
}

/// The refusal for a file below the player under a redirect-mode rule.
pub fn file_in_redirect_mode(path: &str) -> RequestError {
    RequestError::NotFound(format!(
        "unknown resource `{path}`: files below the player are served in proxy mode only"
    ))
}

/// Permission to have a token for one video, and what it must carry. Only
/// [`Authorizer::authorize`] makes one; it borrows the snapshot's configuration.
pub struct Permit<'a> {
    video: &'a Video,
    rule: RuleMatch<'a>,
    /// The rule's shared settings, or settings bound to the viewer's address.
    settings: Cow<'a, Arc<TokenSettings>>,
    /// The Unix second the request arrived in, which a cached token's life is judged by.
    now: u64,
}

impl<'a> Permit<'a> {
    /// The video the permit is for.
    pub fn video(&self) -> &'a Video {
        self.video
    }

    /// The name of the rule that allowed the request.
    pub fn rule(&self) -> &'a str {
        self.rule.rule()
    }

    /// Redirect to Stream, or proxy it.
    pub fn mode(&self) -> Mode {
        self.rule.mode()
    }

    /// The settings a token under this permit carries.
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// A token the caller will see (a redirect's `Location`, `/api/getSignedURL`): the cached
    /// or a new one. `Err` is a 403 under a proxy-mode rule (see [`Permit::hand_out`]), or a
    /// signing failure (500, or 503 when signing timed out).
    pub async fn token(&self, cache: &TokenCache) -> Result<Arc<IssuedToken>, RequestError> {
        self.hand_out()?;
        self.cached_token(cache).await
    }

    /// The token for proxy mode's own request to Stream; the viewer never sees it. `Err` is a
    /// signing failure.
    pub async fn upstream_token(
        &self,
        cache: &TokenCache,
    ) -> Result<Arc<IssuedToken>, RequestError> {
        self.cached_token(cache).await
    }

    /// `Ok` when a token under this permit may leave the gateway. Under a proxy-mode rule it
    /// may not: one token serves every viewer of the rule and is bound to nothing (Stream sees
    /// the gateway's address), so a copy would play anywhere for its whole life.
    fn hand_out(&self) -> Result<(), RequestError> {
        match self.mode() {
            Mode::Redirect => Ok(()),
            Mode::Proxy => Err(RequestError::Forbidden(format!(
                "rule `{}` serves this video in proxy mode: its token never leaves the gateway; watch it at /watch/{}",
                self.rule(),
                self.video.alias
            ))),
        }
    }

    /// The cached (or a new) token: a rule's shared settings may use the cache's hot slots,
    /// settings made for one viewer do not.
    async fn cached_token(&self, cache: &TokenCache) -> Result<Arc<IssuedToken>, RequestError> {
        let uid = self.video.uid;
        match &self.settings {
            Cow::Borrowed(shared) => cache.token_at(uid, shared, self.now).await,
            // Boxed, like `token_at`'s miss: the cache's lookup-or-sign future is about a
            // KiB, which every request's future (a cache hit's too) would otherwise carry
            // and copy into place.
            Cow::Owned(for_viewer) => Box::pin(cache.token_unshared(uid, for_viewer)).await,
        }
        .map_err(RequestError::Signing)
    }

    /// For proxy mode's one retry after Stream refused `refused` (401/403): a replacement
    /// token, signed at most once per refused token however many requests saw the refusal
    /// (see [`TokenCache::replace_refused`]). `Ok(None)` when `refused` was itself a
    /// replacement less than [`REFUSED_TOKEN_COOL_DOWN`] old: nothing is signed and the
    /// refusal stands. `Err` is a signing failure.
    ///
    /// [`REFUSED_TOKEN_COOL_DOWN`]: crate::token::cache::REFUSED_TOKEN_COOL_DOWN
    pub async fn replacement_token(
        &self,
        cache: &TokenCache,
        refused: &Arc<IssuedToken>,
    ) -> Result<Option<Arc<IssuedToken>>, RequestError> {
        let replacement = cache
            .replace_refused(self.video.uid, &self.settings, refused, || {
                self.cached_token(cache)
            })
            .await?;
        Ok(match replacement {
            Replacement::Token(token) => Some(token),
            Replacement::CoolingDown => None,
        })
    }

    /// A token of its own for a caller of the token API: what `requested` asks for, within
    /// what this permit grants (see [`narrow::narrow`]), never cached. `Err` 403 under a
    /// proxy-mode rule, as for [`Permit::token`].
    pub async fn narrowed_token(
        &self,
        cache: &TokenCache,
        requested: TokenRequest,
    ) -> Result<IssuedToken, RequestError> {
        self.hand_out()?;
        let (settings, validity): (TokenSettings, Validity) =
            narrow::narrow(&self.settings, self.rule(), requested, unix_now())?;
        cache
            .sign_uncached(self.video.uid, Arc::new(settings), validity)
            .await
            .map_err(|error| RequestError::Signing(Arc::new(error)))
    }
}
