//! The proxy's body rewriter: a body streamed in any chunks comes out as the whole body
//! rewritten at once, and the token planted in it never reaches the viewer.
//!
//! Two plantings: [`Planting::StreamUrls`] puts the token only in Stream URLs
//! (`<origin>/<token>/...` and `/<token>/...`, in text that cannot itself spell the token);
//! [`Planting::Anywhere`] also puts it bare, in a query, in a JSON or JavaScript string and
//! in HTML attributes, which a viewer must never see either. Either way every planted Stream
//! URL must come out as a gateway path (a rewriter that dropped the text would not pass).

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures_util::FutureExt as _;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;

use crate::body::BoxError;
use crate::proxy::rewrite::{RewriteBody, Rewriter};

/// A line far longer than any chunk or pattern (a document without newlines).
const LONG_LINE_BYTES: usize = 64 * 1024 + 1;

/// Where the token may be planted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planting {
    /// Only Stream URLs (the rewriter's documented job).
    StreamUrls,
    /// Anywhere in the text.
    Anywhere,
}

/// A body with the token planted in it, and where the upstream cut it into chunks.
#[derive(Debug, Arbitrary)]
pub struct Input {
    origin: OriginChoice,
    token: [Vec<u8>; 3],
    video: VideoChoice,
    first: [Piece; 4],
    pieces: Vec<Piece>,
    /// Chunk boundaries, as fractions of the body's length (out of 65536).
    cuts: Vec<u16>,
}

#[derive(Debug, Arbitrary)]
enum OriginChoice {
    Cloudflare,
    Emulator(u16),
}

#[derive(Debug, Arbitrary)]
enum VideoChoice {
    Alias,
    Uid,
}

#[derive(Debug, Arbitrary)]
enum Piece {
    Text(String),
    Newline,
    /// A line longer than [`LONG_LINE_BYTES`].
    LongLine(u8, u8),
    /// A chunk ends here.
    Cut,
    /// `<origin>/<token>/<path>`, maybe with a chunk ending inside it.
    OriginUrl(String, Option<u8>),
    /// `/<token>/<path>`, maybe with a chunk ending inside it.
    RootRelative(String, Option<u8>),
    /// The token alone.
    Bare,
    /// `...?token=<token>&...`.
    Query(String),
    /// `"<token>"`, as in JSON or JavaScript.
    Quoted,
    /// `src='<origin>/<token>'` (no trailing slash).
    Attribute,
}

impl Input {
    fn origin(&self) -> String {
        match self.origin {
            OriginChoice::Cloudflare => "https://customer-x.cloudflarestream.com".into(),
            OriginChoice::Emulator(port) => format!("http://127.0.0.1:{port}"),
        }
    }

    /// A JWT-shaped token: three non-empty base64url parts joined by dots.
    fn token(&self) -> String {
        let part = |bytes: &Vec<u8>| {
            let mut part = URL_SAFE_NO_PAD.encode(bytes);
            // Long enough that it cannot turn up by chance.
            while part.len() < 8 {
                part.push('A');
            }
            part
        };
        format!(
            "eyJ{}.{}.{}",
            part(&self.token[0]),
            part(&self.token[1]),
            part(&self.token[2])
        )
    }

    fn video(&self) -> &'static str {
        match self.video {
            VideoChoice::Alias => "intro",
            VideoChoice::Uid => "ce800be43a9772f4bb02f35b860fb516",
        }
    }

    /// The body, with the token planted as `planting` allows, where its pieces ask for a
    /// chunk to end, and how many Stream URLs it plants.
    fn body(&self, planting: Planting, origin: &str, token: &str) -> (Vec<u8>, Vec<usize>, usize) {
        let urls_only = planting == Planting::StreamUrls;
        // Filler that cannot spell the token: every token has a `.` and is cut off by `/`.
        let filler = |text: &str| {
            if urls_only {
                text.replace('.', ",")
            } else {
                text.to_string()
            }
        };
        let mut body = String::new();
        let mut cuts = Vec::new();
        let mut urls = 0;
        // A URL, with a chunk ending `cut` bytes into it.
        let mut url = |body: &mut String, cuts: &mut Vec<usize>, url: String, cut: &Option<u8>| {
            if let Some(cut) = cut {
                cuts.push(body.len() + usize::from(*cut) % (url.len() + 1));
            }
            body.push_str(&url);
            urls += 1;
        };
        for piece in self.first.iter().chain(&self.pieces) {
            match piece {
                Piece::Text(text) => body.push_str(&filler(text)),
                Piece::Newline => body.push('\n'),
                Piece::LongLine(byte, extra) => {
                    let c = char::from(b'a' + byte % 26);
                    let len = LONG_LINE_BYTES + usize::from(*extra) * 64;
                    body.extend(std::iter::repeat_n(c, len));
                }
                Piece::Cut => cuts.push(body.len()),
                Piece::OriginUrl(path, cut) => url(
                    &mut body,
                    &mut cuts,
                    format!("{origin}/{token}/{}", filler(path)),
                    cut,
                ),
                Piece::RootRelative(path, cut) => url(
                    &mut body,
                    &mut cuts,
                    format!("/{token}/{}", filler(path)),
                    cut,
                ),
                // What only `Anywhere` plants is a Stream URL here.
                _ if urls_only => url(&mut body, &mut cuts, format!("{origin}/{token}/x"), &None),
                Piece::Bare => body.push_str(token),
                Piece::Query(name) => body.push_str(&format!("seg.ts?{name}={token}&x=1")),
                Piece::Quoted => body.push_str(&format!("\"{token}\"")),
                Piece::Attribute => body.push_str(&format!("src='{origin}/{token}'")),
            }
        }
        (body.into_bytes(), cuts, urls)
    }
}

/// Chunk boundaries in a body of `len` bytes: at `fractions` of it (out of 65536), and at
/// `cuts`.
fn chunk_ends(fractions: &[u16], cuts: Vec<usize>, len: usize) -> Vec<usize> {
    let mut ends: Vec<usize> = fractions
        .iter()
        .map(|cut| usize::from(*cut) * len / 65536)
        .chain(cuts)
        .chain([len])
        .collect();
    ends.sort_unstable();
    ends.dedup();
    ends
}

/// Stream `body` through the rewriter in the chunks ending at `ends`.
fn streamed(rewriter: Rewriter, body: &[u8], ends: &[usize]) -> Vec<u8> {
    let mut start = 0;
    let chunks: Vec<Result<Frame<Bytes>, BoxError>> = ends
        .iter()
        .map(|&end| {
            let chunk = Bytes::copy_from_slice(&body[start..end]);
            start = end;
            Ok(Frame::data(chunk))
        })
        .collect();
    let body = RewriteBody::new(
        StreamBody::new(futures_util::stream::iter(chunks)),
        rewriter,
    );
    body.collect()
        .now_or_never()
        .expect("a body of ready chunks is read at once")
        .expect("the chunks carry no error")
        .to_bytes()
        .to_vec()
}

/// Rewrite the planted body in chunks and check the output.
pub fn check(input: Input, planting: Planting) {
    let origin = input.origin();
    let token = input.token();
    let (body, cuts, urls) = input.body(planting, &origin, &token);
    let rewriter = Rewriter::new(&origin, &token, input.video());
    let whole = rewriter.rewrite(&body);
    let ends = chunk_ends(&input.cuts, cuts, body.len());
    let out = streamed(rewriter.clone(), &body, &ends);
    assert!(
        out == whole,
        "the chunks {ends:?} changed the output:\n{}\nvs\n{}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&whole)
    );
    let leaked = out.windows(token.len()).any(|w| w == token.as_bytes());
    assert!(
        !leaked,
        "the token reached the viewer:\n{}",
        String::from_utf8_lossy(&out)
    );
    // Each planted URL holds `/<token>/`, which no other match can take whole (a token has
    // no `/`), so each one becomes a gateway path.
    let gateway = format!("/watch/{}/", input.video());
    let rewritten = out
        .windows(gateway.len())
        .filter(|w| *w == gateway.as_bytes())
        .count();
    assert!(
        rewritten >= urls,
        "{urls} Stream URLs planted, {rewritten} gateway paths out:\n{}",
        String::from_utf8_lossy(&out)
    );
    if let Ok(text) = std::str::from_utf8(&body)
        && let Some(location) = rewriter.location(text)
    {
        assert!(!location.contains(&token), "a Location kept the token");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planted_stream_urls_never_reach_the_viewer_in_any_chunking() {
        super::super::property(|input| check(input, Planting::StreamUrls));
    }

    #[test]
    fn a_token_planted_anywhere_never_reaches_the_viewer() {
        super::super::property(|input| check(input, Planting::Anywhere));
    }
}
