//! An upstream body that fails when no data arrives for too long, so a stalled origin cannot
//! hold a viewer's connection (and the gateway's memory) forever.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::body::BoxError;

/// Why an upstream body ended early.
#[derive(Debug, thiserror::Error)]
#[error("the Stream origin sent nothing for {0:?} in the middle of a body")]
pub struct IdleTimeout(pub Duration);

/// Wraps an upstream body; each frame must arrive within `idle` of the previous one.
pub struct IdleBody<B> {
    inner: B,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl<B> hyper::body::Body for IdleBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = Instant::now() + this.idle;
                this.deadline.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(IdleTimeout(this.idle))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_after_the_idle_time() {
        let stalled = futures_util::stream::iter(vec![Ok::<_, BoxError>(Frame::data(
            Bytes::from_static(b"first"),
        ))])
        .chain(futures_util::stream::pending());
        let mut body = IdleBody::new(StreamBody::new(stalled), Duration::from_secs(3));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "first");
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.is::<IdleTimeout>(), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_is_never_cut() {
        let chunks = futures_util::stream::iter(0..5).then(|i| async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<_, BoxError>(Frame::data(Bytes::from(vec![i; 4])))
        });
        let body = IdleBody::new(StreamBody::new(Box::pin(chunks)), Duration::from_secs(3));
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 20);
    }
}
