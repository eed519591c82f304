//! An upstream body that fails when no data arrives for too long, or too little, so a stalled
//! or slow-dripping origin cannot hold a viewer's connection (and the gateway's memory)
//! forever.
//!
//! Both limits are measured over the idle timeout: no gap between two pieces may be longer,
//! and every whole idle timeout must bring at least `min_rate × idle timeout` bytes. A body
//! that keeps up with that may take as long as it needs (a large download to a slow viewer:
//! the rate seen here is the slower of the origin's and the viewer's).

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

/// Why an upstream body ended early: it kept coming, but too slowly.
#[derive(Debug, thiserror::Error)]
#[error(
    "the Stream origin sent {bytes} bytes in {window:?}, under the minimum of {min_rate} bytes/s"
)]
pub struct TooSlow {
    pub bytes: u64,
    pub window: Duration,
    pub min_rate: u64,
}

/// Wraps an upstream body; each frame must arrive within `idle` of the previous one, and
/// each `idle` must bring at least `min_rate × idle` bytes (0: no minimum rate).
pub struct IdleBody<B> {
    inner: B,
    idle: Duration,
    /// Fires at the earliest moment the body could have been idle too long. Not moved on
    /// each frame (a timer-wheel update per frame): when it fires, it is moved to `idle`
    /// after the last frame if that is still ahead.
    deadline: Pin<Box<Sleep>>,
    /// When the last frame arrived.
    last: Instant,
    /// Bytes owed per window (`min_rate × idle`).
    min_window_bytes: u64,
    min_rate: u64,
    window_bytes: u64,
    window_end: Instant,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, idle: Duration, min_rate: u64) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            last: Instant::now(),
            min_window_bytes: (min_rate as f64 * idle.as_secs_f64()) as u64,
            min_rate,
            window_bytes: 0,
            window_end: Instant::now() + idle,
        }
    }

    /// Count `bytes` that just arrived; `Err` when the window that ended brought too few.
    fn arrived(&mut self, bytes: u64, now: Instant) -> Result<(), TooSlow> {
        self.window_bytes += bytes;
        if now < self.window_end {
            return Ok(());
        }
        let window = self.idle + now.saturating_duration_since(self.window_end);
        if self.window_bytes < self.min_window_bytes {
            return Err(TooSlow {
                bytes: self.window_bytes,
                window,
                min_rate: self.min_rate,
            });
        }
        self.window_bytes = 0;
        self.window_end = now + self.idle;
        Ok(())
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
                let now = Instant::now();
                this.last = now;
                if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(|f| f.data_ref())) {
                    let bytes = data.map_or(0, |d| d.len() as u64);
                    if let Err(too_slow) = this.arrived(bytes, now) {
                        return Poll::Ready(Some(Err(Box::new(too_slow))));
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => loop {
                if this.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let due = this.last + this.idle;
                if due <= Instant::now() {
                    return Poll::Ready(Some(Err(Box::new(IdleTimeout(this.idle)))));
                }
                // A frame came since the timer was set: wait for the rest of the idle time.
                this.deadline.as_mut().reset(due);
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
        let mut body = IdleBody::new(StreamBody::new(stalled), Duration::from_secs(3), 0);
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
        let body = IdleBody::new(StreamBody::new(Box::pin(chunks)), Duration::from_secs(3), 1);
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_after_frames_is_cut_one_idle_time_after_the_last_frame() {
        // Frames at 2 s and 4 s keep the body alive past the first timer (3 s); the stall
        // after them is cut at 4 + 3 = 7 s, not at the timer's first deadline nor later.
        let two = futures_util::stream::iter(0..2).then(|i| async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<_, BoxError>(Frame::data(Bytes::from(vec![i; 4])))
        });
        let stalled = two.chain(futures_util::stream::pending());
        let started = Instant::now();
        let mut body = IdleBody::new(
            StreamBody::new(Box::pin(stalled)),
            Duration::from_secs(3),
            0,
        );
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_ok());
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.is::<IdleTimeout>(), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_drip_is_cut_at_the_end_of_a_window_short_of_the_minimum_rate() {
        // One byte every 100 ms (10 bytes/s) never stalls for a second, but falls short of
        // 100 bytes/s.
        let drip = futures_util::stream::iter(0..1000).then(|_| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"d")))
        });
        let started = Instant::now();
        let body = IdleBody::new(StreamBody::new(Box::pin(drip)), Duration::from_secs(1), 100);
        let error = body.collect().await.unwrap_err();
        let too_slow = error.downcast_ref::<TooSlow>().expect("too slow");
        assert!(too_slow.bytes < 100, "{too_slow}");
        let cut_after = started.elapsed();
        assert!(
            cut_after >= Duration::from_secs(1) && cut_after < Duration::from_millis(1300),
            "{cut_after:?}"
        );
    }
}
