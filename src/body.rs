//! The response body every handler returns: a buffer the gateway wrote itself, or a stream
//! passed on from upstream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use http_body_util::combinators::BoxBody;
use hyper::body::{Frame, SizeHint};

/// The error a streamed body can end with (an upstream failure or timeout mid-body).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: `Full` for what the gateway writes (no allocation beyond the bytes),
/// `Stream` for a proxied upstream body.
#[derive(Debug)]
pub enum Body {
    Full(Full<Bytes>),
    Stream(BoxBody<Bytes, BoxError>),
}

impl Body {
    /// A complete body.
    pub fn new(bytes: Bytes) -> Self {
        Body::Full(Full::new(bytes))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Body::new(Bytes::new())
    }

    /// A streamed body.
    pub fn stream<B>(body: B) -> Self
    where
        B: hyper::body::Body<Data = Bytes, Error = BoxError> + Send + Sync + 'static,
    {
        Body::Stream(BoxBody::new(body))
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Both variants are Unpin.
        match self.get_mut() {
            Body::Full(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            Body::Stream(stream) => Pin::new(stream).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(full) => full.is_end_stream(),
            Body::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(full) => full.size_hint(),
            Body::Stream(stream) => stream.size_hint(),
        }
    }
}
