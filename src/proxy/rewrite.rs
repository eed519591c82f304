//! Keeping the token out of every text body the viewer gets: Stream URLs of the token
//! (`<origin>/<token>/...` and `/<token>/...`) become the gateway's `/watch/<video>/...`, and
//! the token anywhere else (a query, a JSON or JavaScript string, an attribute, an error
//! page) becomes [`TOKEN_PLACEHOLDER`]. Streaming, in the upstream's chunks, holding back
//! only the bytes that could start a match cut off by the chunk's end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};

use crate::body::BoxError;

/// What a token outside a Stream URL becomes. It begins and ends with `~`, which no token
/// holds (tokens are base64url parts joined by dots), so the placeholder and the text around
/// it can never spell the token again.
pub const TOKEN_PLACEHOLDER: &str = "~token-withheld~";

/// Replaces one token's Stream URLs with the gateway's path for the video, and the token
/// anywhere else with [`TOKEN_PLACEHOLDER`].
#[derive(Clone)]
pub struct Rewriter {
    /// `<origin>/<token>/`, `/<token>/`, `<token>`: at each byte the first that matches
    /// wins, so a URL is taken whole before its token alone would be.
    patterns: [Vec<u8>; 3],
    /// What each pattern becomes: `/watch/<video>/` twice, then the placeholder.
    replacements: [Vec<u8>; 3],
    /// The bytes a pattern can start with: the scan looks closer only at these.
    starts: [bool; 256],
    longest: usize,
}

/// The token is a secret: never printed.
impl std::fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rewriter { .. }")
    }
}

impl Rewriter {
    /// `origin` without a trailing slash; `token` as signed (not empty); `video` as the
    /// viewer named it.
    pub fn new(origin: &str, token: &str, video: &str) -> Self {
        debug_assert!(!token.is_empty(), "a token is never empty");
        let gateway = format!("/watch/{video}/").into_bytes();
        let patterns = [
            format!("{origin}/{token}/").into_bytes(),
            format!("/{token}/").into_bytes(),
            token.as_bytes().to_vec(),
        ];
        let mut starts = [false; 256];
        for pattern in &patterns {
            if let Some(&first) = pattern.first() {
                starts[usize::from(first)] = true;
            }
        }
        Self {
            longest: patterns.iter().map(Vec::len).max().unwrap_or(1),
            patterns,
            replacements: [
                gateway.clone(),
                gateway,
                TOKEN_PLACEHOLDER.as_bytes().to_vec(),
            ],
            starts,
        }
    }

    /// `text` with every occurrence of the token rewritten.
    pub fn rewrite(&self, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        self.rewrite_prefix(text, true, &mut out);
        out
    }

    /// The pattern starting `text`, if one does: its length and replacement.
    fn match_at(&self, text: &[u8]) -> Option<(usize, &[u8])> {
        self.patterns
            .iter()
            .zip(&self.replacements)
            .find(|(pattern, _)| !pattern.is_empty() && text.starts_with(pattern))
            .map(|(pattern, replacement)| (pattern.len(), replacement.as_slice()))
    }

    /// Rewrite from the start of `text` onto `out`; unless `complete`, stop where a pattern
    /// could still be cut off by the end (the last `longest - 1` bytes). Returns how many
    /// input bytes the output covers.
    fn rewrite_prefix(&self, text: &[u8], complete: bool, out: &mut Vec<u8>) -> usize {
        let stop = if complete {
            text.len()
        } else {
            text.len().saturating_sub(self.longest - 1)
        };
        let mut i = 0;
        let mut copied = 0;
        while i < stop {
            if self.starts[usize::from(text[i])]
                && let Some((len, replacement)) = self.match_at(&text[i..])
            {
                out.extend_from_slice(&text[copied..i]);
                out.extend_from_slice(replacement);
                i += len;
                copied = i;
            } else {
                i += 1;
            }
        }
        out.extend_from_slice(&text[copied..i]);
        i
    }

    /// A `Location` value pointing into the token's URL space, rewritten; `None` when the
    /// token was anywhere else in it (it is then dropped: a redirect to a placeholder helps
    /// nobody).
    pub fn location(&self, location: &str) -> Option<String> {
        let rewritten = String::from_utf8(self.rewrite(location.as_bytes())).ok()?;
        (!rewritten.contains(TOKEN_PLACEHOLDER)).then_some(rewritten)
    }
}

/// A text body rewritten as it streams. Holds back fewer bytes than the longest pattern
/// between chunks, so its memory is bounded by the upstream's chunk size whatever the body's
/// length or line lengths. Trailers are not passed on (no response header crosses unless
/// allowed, and trailers are headers).
pub struct RewriteBody<B> {
    inner: B,
    rewriter: Rewriter,
    /// The tail of what arrived that could start a pattern still to be completed.
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

    /// `data` appended to what was held back, rewritten as far as it can be yet.
    fn feed(&mut self, data: &[u8]) -> Option<Bytes> {
        let mut out = Vec::with_capacity(self.pending.len() + data.len());
        if self.pending.is_empty() {
            let consumed = self.rewriter.rewrite_prefix(data, false, &mut out);
            self.pending.extend_from_slice(&data[consumed..]);
        } else {
            self.pending.extend_from_slice(data);
            let consumed = self.rewriter.rewrite_prefix(&self.pending, false, &mut out);
            self.pending.advance(consumed);
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    /// What was held back, rewritten (the body has ended).
    fn finish(&mut self) -> Option<Bytes> {
        let mut out = Vec::with_capacity(self.pending.len());
        self.rewriter.rewrite_prefix(&self.pending, true, &mut out);
        self.pending.clear();
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
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are dropped; data is rewritten.
                    if let Ok(data) = frame.into_data()
                        && let Some(out) = this.feed(&data)
                    {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(this.finish().map(|out| Ok(Frame::data(out))));
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
    const ORIGIN: &str = "https://customer-x.cloudflarestream.com";

    fn rewriter() -> Rewriter {
        Rewriter::new(ORIGIN, TOKEN, "intro")
    }

    fn chunked(
        bytes: &[u8],
        ends: &[usize],
    ) -> RewriteBody<impl hyper::body::Body<Data = Bytes, Error = BoxError> + Unpin> {
        let mut start = 0;
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> = ends
            .iter()
            .chain([&bytes.len()])
            .map(|&end| {
                let chunk = Bytes::copy_from_slice(&bytes[start..end]);
                start = end;
                Ok(Frame::data(chunk))
            })
            .collect();
        RewriteBody::new(
            StreamBody::new(futures_util::stream::iter(chunks)),
            rewriter(),
        )
    }

    #[test]
    fn absolute_and_root_relative_stream_urls_become_gateway_paths() {
        let text = format!(
            "#EXTM3U\n#EXT-X-MEDIA:TYPE=SUBTITLES,URI=\"{ORIGIN}/{TOKEN}/manifest/subs.m3u8\"\nstream_360p.m3u8\n/{TOKEN}/manifest/stream_720p.m3u8\n"
        );
        let out = String::from_utf8(rewriter().rewrite(text.as_bytes())).unwrap();
        assert_eq!(
            out,
            "#EXTM3U\n#EXT-X-MEDIA:TYPE=SUBTITLES,URI=\"/watch/intro/manifest/subs.m3u8\"\nstream_360p.m3u8\n/watch/intro/manifest/stream_720p.m3u8\n"
        );
    }

    #[test]
    fn the_token_anywhere_else_becomes_the_placeholder() {
        let p = TOKEN_PLACEHOLDER;
        let cases = [
            (
                format!("c.m3u8?token={TOKEN}&x=1"),
                format!("c.m3u8?token={p}&x=1"),
            ),
            (format!("var t = \"{TOKEN}\";"), format!("var t = \"{p}\";")),
            (
                format!("{{\"token\":\"{TOKEN}\"}}"),
                format!("{{\"token\":\"{p}\"}}"),
            ),
            (
                format!("<a src='{ORIGIN}/{TOKEN}'>"),
                format!("<a src='{ORIGIN}/{p}'>"),
            ),
            (
                format!("https://elsewhere.example/{TOKEN}x/keep"),
                format!("https://elsewhere.example/{p}x/keep"),
            ),
            // The first URL takes the slash the second would need: the second token is
            // still caught.
            (format!("/{TOKEN}/{TOKEN}/x"), format!("/watch/intro/{p}/x")),
            (format!("{TOKEN}{TOKEN}"), format!("{p}{p}")),
        ];
        for (text, expected) in cases {
            let out = String::from_utf8(rewriter().rewrite(text.as_bytes())).unwrap();
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn the_placeholder_cannot_complete_a_token_with_the_text_before_it() {
        // A token ending in `t`, after all of it but its last byte: a placeholder beginning
        // with `t` would complete the token with the text before it.
        let token = "eyJh.eyJz.abct";
        let rewriter = Rewriter::new(ORIGIN, token, "intro");
        let text = format!("{}{token}", &token[..token.len() - 1]);
        let out = String::from_utf8(rewriter.rewrite(text.as_bytes())).unwrap();
        assert!(!out.contains(token), "{out}");
    }

    #[test]
    fn locations_are_rewritten_or_dropped_never_leaked() {
        let r = rewriter();
        assert_eq!(
            r.location(&format!("{ORIGIN}/{TOKEN}/iframe?a=1"))
                .as_deref(),
            Some("/watch/intro/iframe?a=1")
        );
        assert_eq!(r.location("/elsewhere").as_deref(), Some("/elsewhere"));
        assert_eq!(
            r.location(&format!("https://other/{TOKEN}/x")).as_deref(),
            Some("https://other/watch/intro/x")
        );
        assert_eq!(r.location(&format!("https://other/?t={TOKEN}")), None);
    }

    #[tokio::test]
    async fn tokens_split_across_chunks_are_still_rewritten() {
        let text = format!("a\n{ORIGIN}/{TOKEN}/manifest/seg.ts\n\"{TOKEN}\"b");
        let expected = String::from_utf8(rewriter().rewrite(text.as_bytes())).unwrap();
        assert_eq!(
            expected,
            format!("a\n/watch/intro/manifest/seg.ts\n\"{TOKEN_PLACEHOLDER}\"b")
        );
        let bytes = text.as_bytes();
        for split in 1..bytes.len() {
            let out = chunked(bytes, &[split]).collect().await.unwrap().to_bytes();
            assert_eq!(out, expected, "split at {split}");
        }
        let every_byte: Vec<usize> = (1..bytes.len()).collect();
        let out = chunked(bytes, &every_byte)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(out, expected, "one byte per chunk");
    }

    #[tokio::test]
    async fn a_body_without_newlines_streams_in_bounded_pieces() {
        // 4 MiB with no newline, a token in the middle: each chunk comes out as it goes in,
        // holding back less than one pattern.
        const CHUNK: usize = 16 * 1024;
        let mut text = "a".repeat(2 * 1024 * 1024);
        text.push_str(&format!("{ORIGIN}/{TOKEN}/x"));
        text.push_str(&"b".repeat(2 * 1024 * 1024));
        let ends: Vec<usize> = (1..)
            .map(|i| i * CHUNK)
            .take_while(|&end| end < text.len())
            .collect();
        let mut body = chunked(text.as_bytes(), &ends);
        let longest = rewriter().longest;
        let mut out = Vec::new();
        let mut frames = 0;
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() <= CHUNK + longest, "{}", data.len());
            assert!(body.pending.len() < longest);
            out.extend_from_slice(&data);
            frames += 1;
        }
        assert!(
            frames >= ends.len(),
            "{frames} frames for {} chunks",
            ends.len() + 1
        );
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("a/watch/intro/xb"));
        assert!(!out.contains(TOKEN));
        assert_eq!(
            out.len(),
            text.len() - (ORIGIN.len() + TOKEN.len() + 2) + "/watch/intro/".len()
        );
    }

    #[tokio::test]
    async fn trailers_are_not_passed_on() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-token", http::HeaderValue::from_static(TOKEN));
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"text"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = RewriteBody::new(
            StreamBody::new(futures_util::stream::iter(frames)),
            rewriter(),
        );
        let collected = body.collect().await.unwrap();
        assert!(collected.trailers().is_none());
        assert_eq!(collected.to_bytes(), "text");
    }
}
