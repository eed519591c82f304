//! The handler currently serving, swapped whole when the configuration is reloaded.
//!
//! Each request loads the current snapshot once and keeps it to the end, so it sees the old
//! configuration or the new one, never a mix.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::Body;
use crate::http::server::Handler;

/// A [`Handler`] whose implementation can be replaced while it serves.
pub struct Live<H> {
    current: ArcSwap<H>,
}

impl<H> Live<H> {
    pub fn new(handler: Arc<H>) -> Self {
        Self {
            current: ArcSwap::new(handler),
        }
    }

    /// The handler serving now.
    pub fn current(&self) -> Arc<H> {
        self.current.load_full()
    }

    /// The handler serving now, for the length of one request: unlike [`Live::current`], it
    /// does not count a reference in the snapshot shared by every core (an atomic write to
    /// one cache line per request, which two cores serving at once pass back and forth), but
    /// in a slot of this thread's own. Hold it no longer than a request.
    pub fn guard(&self) -> arc_swap::Guard<Arc<H>> {
        self.current.load()
    }

    /// Serve new requests with `handler`; requests already running finish with the old one.
    pub fn replace(&self, handler: Arc<H>) {
        self.current.store(handler);
    }
}

impl<H: Handler> Handler for Live<H> {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let handler = self.current.load_full();
        handler.handle(req, peer).await
    }
}
