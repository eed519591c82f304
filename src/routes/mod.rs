//! The handlers: functions over the configuration snapshot, the request context and the
//! request. [`crate::gateway`] picks one by the route the edge matched.

pub mod api;
pub mod cors;
pub mod demo;
pub mod stream_api;
pub mod watch;

use http::HeaderMap;

use crate::error::RequestError;
use crate::request::{Context, Decision};
use crate::snapshot::Snapshot;

/// Identify the caller into `ctx`. `Err` is a credential that is present but invalid (401),
/// or a check that could not run (503); it is noted as an unauthenticated request.
pub async fn identify(
    snapshot: &Snapshot,
    ctx: &mut Context,
    headers: &HeaderMap,
) -> Result<(), RequestError> {
    match snapshot.auth.identify(headers).await {
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
