//! The handlers: functions over the configuration snapshot, the request context and the
//! request. [`crate::gateway`] picks one by the route the edge matched.

pub mod api;
pub mod cors;
pub mod demo;
pub mod stream_api;
pub mod watch;

use http::HeaderMap;

use crate::error::RequestError;
use crate::identity::{AuthError, Identity};
use crate::request::{Context, Decision};
use crate::snapshot::Snapshot;

/// Identify the caller into `ctx`, on a route that mints tokens. The per-address rate limit
/// is asked first, before any credential is verified (429). `Err` is then a credential that
/// is present but invalid (401), a sign-in refused before checking after failed ones (429),
/// or a check that could not run (503); it is noted as an unauthenticated request.
pub async fn identify(
    snapshot: &Snapshot,
    ctx: &mut Context,
    headers: &HeaderMap,
) -> Result<(), RequestError> {
    snapshot.authz.limit_address(ctx)?;
    match identify_caller(snapshot, ctx, headers).await {
        Ok(identity) => {
            ctx.identity = identity;
            Ok(())
        }
        Err(error) => {
            ctx.verdict.decision = Some(Decision::Unauthenticated);
            Err(error.into())
        }
    }
}

/// Identify the visitor of a page into `ctx`, and return who it is. As [`identify`], but the
/// per-address rate limit counts only a request that carries a credential to verify: an
/// anonymous page view mints nothing and checks nothing.
pub async fn identify_visitor(
    snapshot: &Snapshot,
    ctx: &mut Context,
    headers: &HeaderMap,
) -> Result<Identity, RequestError> {
    if snapshot.auth.presents_credential(headers) {
        snapshot.authz.limit_address(ctx)?;
    }
    let identity = identify_caller(snapshot, ctx, headers).await?;
    ctx.identity = identity.clone();
    Ok(identity)
}

/// Ask the authenticator, from the viewer's address; count refused and throttled sign-ins
/// (`streamgate_failed_sign_ins_total`, `streamgate_sign_ins_throttled_total{reason}`).
async fn identify_caller(
    snapshot: &Snapshot,
    ctx: &Context,
    headers: &HeaderMap,
) -> Result<Identity, AuthError> {
    let identified = snapshot.auth.identify(headers, ctx.client).await;
    match &identified {
        Err(AuthError::Throttled { reason, .. }) => snapshot.metrics.sign_in_throttled(*reason),
        Err(error) if error.is_failed_credential() => snapshot.metrics.failed_sign_in(),
        _ => {}
    }
    identified
}

/// Record in the audit trail (when one is configured) that this request was given `token`
/// under `permit`: minted for it, or reused.
pub(crate) fn audit_token(
    snapshot: &Snapshot,
    ctx: &Context,
    permit: &crate::authz::Permit<'_>,
    token: &crate::token::IssuedToken,
    via: crate::audit::Via,
) {
    let Some(audit) = &snapshot.audit else {
        return;
    };
    let who = ctx
        .identity
        .principal()
        .map_or(crate::identity::ANONYMOUS_AUDIT_JSON, |p| p.audit_json());
    let video = permit.video();
    audit.token(&crate::audit::TokenEvent {
        // Stamped with the request's arrival: the token is handed out within it.
        at: ctx.arrived,
        token,
        reused: !token.first_hand_out(),
        who,
        video_uid: &video.uid,
        video_alias: &video.alias,
        rule: permit.rule(),
        client: ctx.client,
        request_id: ctx.id.as_bytes(),
        via,
    });
}
