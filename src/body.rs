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

    /// Whether this body is streamed (passed on from upstream) rather than complete.
    pub fn is_stream(&self) -> bool {
        matches!(self, Body::Stream(_))
    }

    /// This body, calling `on_end` once with how it ended and how many bytes it carried:
    /// for what can only be known after the response head has gone (a proxied body that
    /// breaks off).
    pub fn on_end<F>(self, on_end: F) -> Self
    where
        F: for<'e> FnOnce(BodyEnd<'e>, u64) + Send + Sync + Unpin + 'static,
    {
        Body::stream(Observed {
            inner: self,
            bytes: 0,
            on_end: Some(on_end),
        })
    }
}

/// How a body ended, as [`Body::on_end`] reports it.
#[derive(Debug, Clone, Copy)]
pub enum BodyEnd<'e> {
    /// Sent to its end.
    Complete,
    /// Ended with an error (an upstream that stalled or broke off): the response is
    /// truncated.
    Failed(&'e (dyn std::error::Error + Send + Sync + 'static)),
    /// Dropped before its end: the viewer went away.
    Abandoned,
}

impl BodyEnd<'_> {
    /// The word the access log uses: `complete`, `truncated` or `abandoned`.
    pub fn label(&self) -> &'static str {
        match self {
            BodyEnd::Complete => "complete",
            BodyEnd::Failed(_) => "truncated",
            BodyEnd::Abandoned => "abandoned",
        }
    }
}

/// A body that reports its end (see [`Body::on_end`]).
struct Observed<F: for<'e> FnOnce(BodyEnd<'e>, u64)> {
    inner: Body,
    bytes: u64,
    on_end: Option<F>,
}

impl<F: for<'e> FnOnce(BodyEnd<'e>, u64)> Observed<F> {
    fn end(&mut self, how: BodyEnd<'_>) {
        if let Some(on_end) = self.on_end.take() {
            on_end(how, self.bytes);
        }
    }
}

impl<F: for<'e> FnOnce(BodyEnd<'e>, u64) + Unpin> hyper::body::Body for Observed<F> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.end(BodyEnd::Complete);
                }
            }
            Poll::Ready(Some(Err(error))) => this.end(BodyEnd::Failed(error.as_ref())),
            Poll::Ready(None) => this.end(BodyEnd::Complete),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<F: for<'e> FnOnce(BodyEnd<'e>, u64)> Drop for Observed<F> {
    fn drop(&mut self) {
        if hyper::body::Body::is_end_stream(&self.inner) {
            self.end(BodyEnd::Complete);
        } else {
            self.end(BodyEnd::Abandoned);
        }
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
