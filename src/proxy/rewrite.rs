//! Keeping Stream's URLs (and so the token) out of what the viewer sees: manifests, player
//! pages and `Location` headers that point at `<origin>/<token>/...` are rewritten to the
//! gateway's `/watch/<video>/...`, streaming, one line at a time.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};

use crate::body::BoxError;

/// A line longer than this is rewritten in pieces (keeping enough of a tail that a URL cut
/// between two pieces is still found), so a document without newlines cannot make the
/// gateway buffer it whole.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// Replaces Stream URLs of one token with the gateway's path for the video.
#[derive(Debug, Clone)]
pub struct Rewriter {
    /// `<origin>/<token>/`, then `/<token>/`: the longer first.
    patterns: [Vec<u8>; 2],
    token: String,
    /// `/watch/<video>/`.
    replacement: Vec<u8>,
}

impl Rewriter {
    /// `origin` without a trailing slash; `video` as the viewer named it.
    pub fn new(origin: &str, token: &str, video: &str) -> Self {
        Self {
            patterns: [
                format!("{origin}/{token}/").into_bytes(),
                format!("/{token}/").into_bytes(),
            ],
            replacement: format!("/watch/{video}/").into_bytes(),
            token: token.to_string(),
        }
    }

    fn longest_pattern(&self) -> usize {
        self.patterns.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// `text` with every occurrence of the patterns replaced.
    pub fn rewrite(&self, text: &[u8]) -> Vec<u8> {
        self.rewrite_prefix(text, true).0
    }

    /// Rewrite from the start of `text`; unless `complete`, stop where a pattern could still
    /// be cut off by the end. Returns the output and how many input bytes it covers.
    fn rewrite_prefix(&self, text: &[u8], complete: bool) -> (Vec<u8>, usize) {
        let stop = if complete {
            text.len()
        } else {
            text.len().saturating_sub(self.longest_pattern() - 1)
        };
        let mut out = Vec::with_capacity(text.len());
        let mut i = 0;
        'scan: while i < stop {
            for pattern in &self.patterns {
                if text[i..].starts_with(pattern) {
                    out.extend_from_slice(&self.replacement);
                    i += pattern.len();
                    continue 'scan;
                }
            }
            out.push(text[i]);
            i += 1;
        }
        (out, i)
    }

    /// A `Location` value pointing into the token's URL space, rewritten; `None` when it
    /// would still carry the token (it is then dropped rather than leaked).
    pub fn location(&self, location: &str) -> Option<String> {
        let rewritten = String::from_utf8(self.rewrite(location.as_bytes())).ok()?;
        (!rewritten.contains(&self.token)).then_some(rewritten)
    }
}

/// A body whose text is rewritten line by line as it streams.
pub struct RewriteBody<B> {
    inner: B,
    rewriter: Rewriter,
    /// The incomplete last line seen so far.
    pending: BytesMut,
    done: bool,
}

impl<B> RewriteBody<B> {
    pub fn new(inner: B, rewriter: Rewriter) -> Self {
        Self {
            inner,
            rewriter,
            pending: BytesMut::new(),
            done: false,
        }
    }

    /// Complete lines (or a piece of an oversized one) out of `pending`, rewritten.
    fn drain(&mut self, at_end: bool) -> Option<Bytes> {
        let (out, consumed) = if at_end {
            (self.rewriter.rewrite(&self.pending), self.pending.len())
        } else if let Some(newline) = self.pending.iter().rposition(|b| *b == b'\n') {
            let lines = &self.pending[..=newline];
            (self.rewriter.rewrite(lines), newline + 1)
        } else if self.pending.len() > MAX_LINE_BYTES {
            // Keep the tail that could hold the start of a URL.
            self.rewriter.rewrite_prefix(&self.pending, false)
        } else {
            return None;
        };
        let _ = self.pending.split_to(consumed);
        (!out.is_empty()).then(|| Bytes::from(out))
    }
}

impl<B> hyper::body::Body for RewriteBody<B>
where
    B: hyper::body::Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.pending.extend_from_slice(&data);
                        if let Some(out) = this.drain(false) {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    // Trailers: nothing of ours to rewrite.
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(this.drain(true).map(|out| Ok(Frame::data(out))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        // The length changes with the rewrite.
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";

    fn rewriter() -> Rewriter {
        Rewriter::new("https://customer-x.cloudflarestream.com", TOKEN, "intro")
    }

    #[test]
    fn absolute_and_root_relative_stream_urls_become_gateway_paths() {
        let text = format!(
            "#EXTM3U\n#EXT-X-MEDIA:TYPE=SUBTITLES,URI=\"https://customer-x.cloudflarestream.com/{TOKEN}/manifest/subs.m3u8\"\nstream_360p.m3u8\n/{TOKEN}/manifest/stream_720p.m3u8\nhttps://elsewhere.example/{TOKEN}x/keep\n"
        );
        let out = String::from_utf8(rewriter().rewrite(text.as_bytes())).unwrap();
        assert_eq!(
            out,
            format!(
                "#EXTM3U\n#EXT-X-MEDIA:TYPE=SUBTITLES,URI=\"/watch/intro/manifest/subs.m3u8\"\nstream_360p.m3u8\n/watch/intro/manifest/stream_720p.m3u8\nhttps://elsewhere.example/{TOKEN}x/keep\n"
            )
        );
    }

    #[test]
    fn locations_are_rewritten_or_dropped_never_leaked() {
        let r = rewriter();
        assert_eq!(
            r.location(&format!(
                "https://customer-x.cloudflarestream.com/{TOKEN}/iframe?a=1"
            ))
            .as_deref(),
            Some("/watch/intro/iframe?a=1")
        );
        assert_eq!(r.location("/elsewhere").as_deref(), Some("/elsewhere"));
        assert_eq!(
            r.location(&format!("https://other/{TOKEN}/x")).as_deref(),
            Some("https://other/watch/intro/x")
        );
    }

    #[tokio::test]
    async fn urls_split_across_chunks_are_still_rewritten() {
        let text = format!("a\nhttps://customer-x.cloudflarestream.com/{TOKEN}/manifest/seg.ts\nb");
        let bytes = text.as_bytes();
        for split in [1, 10, 30, 45, bytes.len() - 2] {
            let chunks: Vec<Result<Frame<Bytes>, BoxError>> = vec![
                Ok(Frame::data(Bytes::copy_from_slice(&bytes[..split]))),
                Ok(Frame::data(Bytes::copy_from_slice(&bytes[split..]))),
            ];
            let body = RewriteBody::new(
                StreamBody::new(futures_util::stream::iter(chunks)),
                rewriter(),
            );
            let out = body.collect().await.unwrap().to_bytes();
            assert_eq!(
                out, "a\n/watch/intro/manifest/seg.ts\nb",
                "split at {split}"
            );
        }
    }

    #[tokio::test]
    async fn a_long_line_is_rewritten_in_bounded_pieces() {
        let url = format!("https://customer-x.cloudflarestream.com/{TOKEN}/x");
        let text = format!("{}{url}{}", "a".repeat(MAX_LINE_BYTES), "b".repeat(10));
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> = text
            .as_bytes()
            .chunks(1000)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let body = RewriteBody::new(
            StreamBody::new(futures_util::stream::iter(chunks)),
            rewriter(),
        );
        let out = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
        assert!(
            out.contains("/watch/intro/x"),
            "{}",
            &out[out.len() - 100..]
        );
        assert!(!out.contains(TOKEN));
    }
}
