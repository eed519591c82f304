//! What the emulator serves once a token is accepted: route matching for
//! `/<token-or-uid>/<file>` and the (fake but well-formed) content of each file.
//!
//! The layout below the token, as a proxy sees it:
//!
//! | path | content |
//! |---|---|
//! | `iframe` | player page |
//! | `manifest/video.m3u8` | HLS master playlist: the renditions by relative URI, subtitles by absolute URI |
//! | `manifest/stream_<rendition>.m3u8` | VOD media playlist of [`SEGMENTS_PER_RENDITION`] segments |
//! | `manifest/seg_<rendition>_<n>.ts` | MPEG-TS-shaped segment, [`Rendition::segment_len_bytes`] |
//! | `manifest/subtitles_en.m3u8` | subtitles playlist of one segment |
//! | `manifest/subtitles_en_0.vtt` | WebVTT segment |
//! | `manifest/video.mpd` | DASH manifest: a `SegmentTemplate` naming the same `.ts` segments |
//! | `thumbnails/thumbnail.jpg` | JPEG |
//! | `downloads/default.mp4` | [`DOWNLOAD_LEN_BYTES`] of `ftyp` + `mdat` |

use std::fmt;
use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;

use super::http_file::Representation;

/// One video rendition, served as an HLS media playlist and MPEG-TS segments (and named by
/// the DASH manifest too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rendition {
    /// The name in its file names: `stream_<name>.m3u8`, `seg_<name>_<n>.ts`.
    pub name: &'static str,
    pub width: u32,
    pub height: u32,
    /// RFC 6381 codecs of the (muxed) video and audio.
    pub codecs: &'static str,
    /// 188-byte MPEG-TS packets in each segment.
    pub packets_per_segment: usize,
}

impl Rendition {
    /// Size of each of its segments.
    pub const fn segment_len_bytes(self) -> usize {
        self.packets_per_segment * TS_PACKET_LEN
    }

    /// Bits per second its segments take to play, as the playlists advertise it.
    pub const fn bandwidth_bps(self) -> u64 {
        (self.segment_len_bytes() as u64 * 8).div_ceil(SEGMENT_DURATION_SECS as u64)
    }

    /// `manifest/stream_<name>.m3u8`, below the token.
    pub fn media_playlist_path(self) -> String {
        format!("manifest/{}", self.media_playlist_file())
    }

    /// `manifest/seg_<name>_<index>.ts`, below the token.
    pub fn segment_path(self, index: usize) -> String {
        format!("manifest/{}", self.segment_file(index))
    }

    fn media_playlist_file(self) -> String {
        format!("stream_{}.m3u8", self.name)
    }

    fn segment_file(self, index: usize) -> String {
        format!("seg_{}_{index}.ts", self.name)
    }
}

/// The renditions, lowest first.
pub const RENDITIONS: [Rendition; 2] = [
    Rendition {
        name: "360p",
        width: 640,
        height: 360,
        codecs: "avc1.4d401e,mp4a.40.2",
        // 196,648 bytes: just over 192 KiB.
        packets_per_segment: 1046,
    },
    Rendition {
        name: "720p",
        width: 1280,
        height: 720,
        codecs: "avc1.64001f,mp4a.40.2",
        // 327,684 bytes: just over 320 KiB.
        packets_per_segment: 1743,
    },
];

/// Segments in each rendition's media playlist (numbered from 0).
pub const SEGMENTS_PER_RENDITION: usize = 5;
/// Playing time of each segment; the video lasts `SEGMENTS_PER_RENDITION` times this.
pub const SEGMENT_DURATION_SECS: u32 = 4;
/// Size of an MPEG-TS packet; every segment is a whole number of them.
pub const TS_PACKET_LEN: usize = 188;
/// The subtitles playlist, below the token (the master playlist names it by absolute URI).
pub const SUBTITLES_PLAYLIST_PATH: &str = "manifest/subtitles_en.m3u8";
/// The subtitles playlist's only segment, below the token.
pub const SUBTITLES_SEGMENT_PATH: &str = "manifest/subtitles_en_0.vtt";
/// [`SUBTITLES_PLAYLIST_PATH`] relative to the other manifests.
pub const SUBTITLES_PLAYLIST_FILE: &str = "subtitles_en.m3u8";
/// [`SUBTITLES_SEGMENT_PATH`] relative to the subtitles playlist (and the DASH manifest).
const SUBTITLES_SEGMENT_FILE: &str = "subtitles_en_0.vtt";
/// Size of `downloads/default.mp4`.
pub const DOWNLOAD_LEN_BYTES: usize = 4 * 1024 * 1024;
/// `Last-Modified` of every file: Mon, 02 Jun 2025 12:00:00 GMT.
pub const LAST_MODIFIED_UNIX_SECS: u64 = 1_748_865_600;

const PLAYER_PATH: &str = "iframe";
const HLS_MASTER_PATH: &str = "manifest/video.m3u8";
const DASH_MANIFEST_PATH: &str = "manifest/video.mpd";
const THUMBNAIL_PATH: &str = "thumbnails/thumbnail.jpg";
const DOWNLOAD_PATH: &str = "downloads/default.mp4";

/// Content that lasts as long as the token in its URL: never stored.
const NO_STORE: &str = "no-store";
/// Playlists that never change but are only for this viewer.
const PRIVATE_SHORT: &str = "private, max-age=60";
/// Media bytes that never change.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The files Stream serves under a video (or token) path segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `iframe`: the hosted player page.
    Player,
    /// `manifest/video.m3u8`: the HLS master playlist.
    HlsManifest,
    /// `manifest/stream_<name>.m3u8`: the media playlist of `RENDITIONS[_]`.
    HlsMediaPlaylist(usize),
    /// `manifest/seg_<name>_<index>.ts`: a segment of `RENDITIONS[rendition]`.
    HlsSegment { rendition: usize, index: usize },
    /// `manifest/subtitles_en.m3u8`.
    SubtitlesPlaylist,
    /// `manifest/subtitles_en_0.vtt`.
    SubtitlesSegment,
    /// `manifest/video.mpd`: the DASH manifest.
    DashManifest,
    /// `thumbnails/thumbnail.jpg`.
    Thumbnail,
    /// `downloads/default.mp4`: needs a `downloadable` token.
    Download,
}

impl Resource {
    /// The file at `path` below the token segment (exactly as written in Stream's URLs and
    /// the playlists: no dot segments, no leading zeros, no percent-encoding), if any.
    pub fn parse(path: &str) -> Option<Resource> {
        let fixed = match path {
            PLAYER_PATH => Some(Resource::Player),
            HLS_MASTER_PATH => Some(Resource::HlsManifest),
            DASH_MANIFEST_PATH => Some(Resource::DashManifest),
            SUBTITLES_PLAYLIST_PATH => Some(Resource::SubtitlesPlaylist),
            SUBTITLES_SEGMENT_PATH => Some(Resource::SubtitlesSegment),
            THUMBNAIL_PATH => Some(Resource::Thumbnail),
            DOWNLOAD_PATH => Some(Resource::Download),
            _ => None,
        };
        fixed.or_else(|| Resource::parse_rendition_file(path.strip_prefix("manifest/")?))
    }

    fn parse_rendition_file(file: &str) -> Option<Resource> {
        if let Some(name) = file
            .strip_prefix("stream_")
            .and_then(|rest| rest.strip_suffix(".m3u8"))
        {
            return Some(Resource::HlsMediaPlaylist(rendition_index(name)?));
        }
        let (name, index) = file
            .strip_prefix("seg_")?
            .strip_suffix(".ts")?
            .rsplit_once('_')?;
        let rendition = rendition_index(name)?;
        // Only the canonical spelling: `seg_360p_01.ts` is not a file.
        let index: usize = index.parse().ok()?;
        if index >= SEGMENTS_PER_RENDITION || RENDITIONS[rendition].segment_file(index) != file {
            return None;
        }
        Some(Resource::HlsSegment { rendition, index })
    }

    /// Every file under a token.
    #[cfg(test)]
    pub fn all() -> impl Iterator<Item = Resource> {
        let fixed = [
            Resource::Player,
            Resource::HlsManifest,
            Resource::SubtitlesPlaylist,
            Resource::SubtitlesSegment,
            Resource::DashManifest,
            Resource::Thumbnail,
            Resource::Download,
        ];
        let renditions = (0..RENDITIONS.len()).flat_map(|rendition| {
            std::iter::once(Resource::HlsMediaPlaylist(rendition)).chain(
                (0..SEGMENTS_PER_RENDITION)
                    .map(move |index| Resource::HlsSegment { rendition, index }),
            )
        });
        fixed.into_iter().chain(renditions)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Resource::Player => "text/html; charset=utf-8",
            Resource::HlsManifest | Resource::HlsMediaPlaylist(_) | Resource::SubtitlesPlaylist => {
                "application/vnd.apple.mpegurl"
            }
            Resource::HlsSegment { .. } => "video/mp2t",
            Resource::SubtitlesSegment => "text/vtt",
            Resource::DashManifest => "application/dash+xml",
            Resource::Thumbnail => "image/jpeg",
            Resource::Download => "video/mp4",
        }
    }

    pub fn cache_control(self) -> &'static str {
        match self {
            // Both name the token (the master playlist in its subtitles URI): a stored copy
            // would outlive it.
            Resource::Player | Resource::HlsManifest => NO_STORE,
            Resource::HlsMediaPlaylist(_)
            | Resource::SubtitlesPlaylist
            | Resource::DashManifest => PRIVATE_SHORT,
            Resource::HlsSegment { .. }
            | Resource::SubtitlesSegment
            | Resource::Thumbnail
            | Resource::Download => IMMUTABLE,
        }
    }
}

/// The path below the token.
impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Resource::Player => f.write_str(PLAYER_PATH),
            Resource::HlsManifest => f.write_str(HLS_MASTER_PATH),
            Resource::HlsMediaPlaylist(rendition) => {
                f.write_str(&RENDITIONS[rendition].media_playlist_path())
            }
            Resource::HlsSegment { rendition, index } => {
                f.write_str(&RENDITIONS[rendition].segment_path(index))
            }
            Resource::SubtitlesPlaylist => f.write_str(SUBTITLES_PLAYLIST_PATH),
            Resource::SubtitlesSegment => f.write_str(SUBTITLES_SEGMENT_PATH),
            Resource::DashManifest => f.write_str(DASH_MANIFEST_PATH),
            Resource::Thumbnail => f.write_str(THUMBNAIL_PATH),
            Resource::Download => f.write_str(DOWNLOAD_PATH),
        }
    }
}

fn rendition_index(name: &str) -> Option<usize> {
    RENDITIONS
        .iter()
        .position(|rendition| rendition.name == name)
}

/// Split a request path into its token-or-uid segment and the path below it. `None` when
/// there is no such segment, or it holds anything but the characters of a token or a uid
/// (base64url and dots) or is a dot segment (the query string is not part of `path`, so
/// thumbnail parameters never get here).
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let (segment, rest) = path.strip_prefix('/')?.split_once('/')?;
    let token_shaped = segment
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
    if !token_shaped || segment.bytes().all(|byte| byte == b'.') {
        return None;
    }
    Some((segment, rest))
}

/// The player page for `video_uid`: self-contained, no external URLs; the `<video>` element
/// points at the manifest relative to the page, so it carries the same token.
///
/// `video_uid` must be a validated uid (hex only), so it needs no HTML escaping.
pub fn player_page(video_uid: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>streamgate Stream emulator — video {video_uid}</title>
<style>
html, body {{ margin: 0; height: 100%; background: #111; color: #ddd; font: 14px sans-serif; }}
video {{ display: block; width: 100%; height: calc(100% - 2.5em); background: #000; }}
p {{ margin: 0.6em; }}
</style>
</head>
<body>
<video controls playsinline preload="none" poster="thumbnails/thumbnail.jpg" src="manifest/video.m3u8"></video>
<p>streamgate Stream emulator — video {video_uid}</p>
</body>
</html>
"#
    )
}

/// The HLS master playlist: the renditions by URI relative to the playlist, and one
/// subtitles track at `subtitles_uri` (the emulator makes it absolute, as some origins do,
/// so that a proxy must rewrite it).
pub fn hls_master_playlist(subtitles_uri: &str) -> String {
    let mut playlist = format!(
        "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"English\",LANGUAGE=\"en\",DEFAULT=NO,AUTOSELECT=YES,URI=\"{subtitles_uri}\"
"
    );
    for rendition in RENDITIONS {
        playlist.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},AVERAGE-BANDWIDTH={bandwidth},RESOLUTION={width}x{height},FRAME-RATE=30.000,CODECS=\"{codecs}\",SUBTITLES=\"subs\"\n{file}\n",
            bandwidth = rendition.bandwidth_bps(),
            width = rendition.width,
            height = rendition.height,
            codecs = rendition.codecs,
            file = rendition.media_playlist_file(),
        ));
    }
    playlist
}

/// A VOD media playlist of `files`, each lasting `duration_secs`.
fn media_playlist(duration_secs: u32, files: impl IntoIterator<Item = String>) -> String {
    let mut playlist = format!(
        "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:{duration_secs}
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-INDEPENDENT-SEGMENTS
"
    );
    for file in files {
        playlist.push_str(&format!("#EXTINF:{duration_secs}.000,\n{file}\n"));
    }
    playlist.push_str("#EXT-X-ENDLIST\n");
    playlist
}

const VIDEO_DURATION_SECS: u32 = SEGMENTS_PER_RENDITION as u32 * SEGMENT_DURATION_SECS;

/// The subtitles: one WebVTT file covering the whole video.
const SUBTITLES_VTT: &str = "WEBVTT

00:00:00.000 --> 00:00:04.000
streamgate Stream emulator

00:00:04.000 --> 00:00:20.000
(a test video: the picture is noise)
";

/// A static DASH manifest: the renditions' MPEG-TS segments through a relative
/// `SegmentTemplate`, the subtitles through a relative `BaseURL`.
fn dash_manifest() -> String {
    let representations: String = RENDITIONS
        .iter()
        .map(|rendition| {
            format!(
                "      <Representation id=\"{}\" bandwidth=\"{}\" width=\"{}\" height=\"{}\" codecs=\"{}\"/>\n",
                rendition.name,
                rendition.bandwidth_bps(),
                rendition.width,
                rendition.height,
                rendition.codecs,
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:full:2011" type="static" mediaPresentationDuration="PT{VIDEO_DURATION_SECS}S" minBufferTime="PT{SEGMENT_DURATION_SECS}S">
  <Period id="0" start="PT0S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp2t" segmentAlignment="true">
      <SegmentTemplate media="seg_$RepresentationID$_$Number$.ts" startNumber="0" timescale="1" duration="{SEGMENT_DURATION_SECS}"/>
{representations}    </AdaptationSet>
    <AdaptationSet id="1" contentType="text" mimeType="text/vtt" lang="en">
      <Representation id="subtitles_en" bandwidth="256">
        <BaseURL>{SUBTITLES_SEGMENT_FILE}</BaseURL>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"#
    )
}

/// A real 320×180 JPEG (a colour gradient).
pub const THUMBNAIL_JPEG: &[u8] = include_bytes!("assets/thumbnail.jpg");

/// xorshift32: cheap, deterministic filler that does not compress to nothing.
struct XorShift32(u32);

impl XorShift32 {
    /// Append `len` pseudo-random bytes to `out`.
    fn fill(&mut self, out: &mut Vec<u8>, len: usize) {
        let end = out.len() + len;
        while out.len() < end {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            let word = self.0.to_le_bytes();
            out.extend_from_slice(&word[..word.len().min(end - out.len())]);
        }
    }
}

/// The body of `downloads/default.mp4`: a valid MP4 *container* (an `ftyp` box, then an `mdat`
/// box) of [`DOWNLOAD_LEN_BYTES`], filled with deterministic pseudo-random bytes. It is not
/// playable video (there is no `moov` box); it only lets tests and the gateway see that a
/// download was served, byte for byte the same every time.
pub fn placeholder_mp4() -> Bytes {
    const FTYP: &[u8] = &[
        0, 0, 0, 28, b'f', b't', b'y', b'p', // box size and type
        b'i', b's', b'o', b'm', // major brand
        0, 0, 2, 0, // minor version
        b'i', b's', b'o', b'm', b'i', b's', b'o', b'2', b'm', b'p', b'4', b'1', // compatible
    ];
    let mdat_len = DOWNLOAD_LEN_BYTES - FTYP.len();
    let mut file = Vec::with_capacity(DOWNLOAD_LEN_BYTES);
    file.extend_from_slice(FTYP);
    file.extend_from_slice(&u32::try_from(mdat_len).unwrap_or(u32::MAX).to_be_bytes());
    file.extend_from_slice(b"mdat");
    let filler_len = DOWNLOAD_LEN_BYTES - file.len();
    XorShift32(0x5EED_F00D).fill(&mut file, filler_len);
    Bytes::from(file)
}

/// Segment `index` of `RENDITIONS[rendition]`: MPEG-TS packets (sync byte 0x47, one PID,
/// payload only, continuity counter counting) around pseudo-random payload, different for
/// every segment. Not decodable video; shaped enough for anything that checks packets.
pub fn ts_segment(rendition: usize, index: usize) -> Bytes {
    const SYNC_BYTE: u8 = 0x47;
    const PID: u16 = 0x0100;
    const PAYLOAD_UNIT_START: u8 = 0x40;
    const PAYLOAD_ONLY: u8 = 0x10;
    let packets = RENDITIONS[rendition].packets_per_segment;
    let mut segment = Vec::with_capacity(packets * TS_PACKET_LEN);
    // Any nonzero seed will do; this one differs per segment.
    let mut filler = XorShift32(0x7EA5_0000 ^ ((rendition as u32) << 8) ^ index as u32 ^ 1);
    for packet in 0..packets {
        let start = if packet == 0 { PAYLOAD_UNIT_START } else { 0 };
        let [pid_high, pid_low] = PID.to_be_bytes();
        segment.extend_from_slice(&[
            SYNC_BYTE,
            start | pid_high,
            pid_low,
            PAYLOAD_ONLY | (packet % 16) as u8,
        ]);
        filler.fill(&mut segment, TS_PACKET_LEN - 4);
    }
    Bytes::from(segment)
}

/// Every file whose bytes do not depend on the request, built once per process (the first
/// emulator builds it; later ones share it).
pub struct Library {
    /// Per rendition: its media playlist, then its segments.
    renditions: Vec<(Representation, Vec<Representation>)>,
    subtitles_playlist: Representation,
    subtitles_segment: Representation,
    dash_manifest: Representation,
    thumbnail: Representation,
    download: Representation,
}

impl Library {
    /// The process-wide library, built on first use.
    pub fn shared() -> &'static Library {
        static LIBRARY: LazyLock<Library> = LazyLock::new(Library::build);
        &LIBRARY
    }

    fn build() -> Library {
        let renditions = RENDITIONS
            .iter()
            .enumerate()
            .map(|(rendition_index, rendition)| {
                let playlist = media_playlist(
                    SEGMENT_DURATION_SECS,
                    (0..SEGMENTS_PER_RENDITION).map(|index| rendition.segment_file(index)),
                );
                let segments = (0..SEGMENTS_PER_RENDITION)
                    .map(|index| {
                        let resource = Resource::HlsSegment {
                            rendition: rendition_index,
                            index,
                        };
                        representation(resource, ts_segment(rendition_index, index))
                    })
                    .collect();
                (
                    representation(
                        Resource::HlsMediaPlaylist(rendition_index),
                        Bytes::from(playlist),
                    ),
                    segments,
                )
            })
            .collect();
        let subtitles_playlist =
            media_playlist(VIDEO_DURATION_SECS, [SUBTITLES_SEGMENT_FILE.to_owned()]);
        Library {
            renditions,
            subtitles_playlist: representation(
                Resource::SubtitlesPlaylist,
                Bytes::from(subtitles_playlist),
            ),
            subtitles_segment: representation(
                Resource::SubtitlesSegment,
                Bytes::from_static(SUBTITLES_VTT.as_bytes()),
            ),
            dash_manifest: representation(Resource::DashManifest, Bytes::from(dash_manifest())),
            thumbnail: representation(Resource::Thumbnail, Bytes::from_static(THUMBNAIL_JPEG)),
            download: representation(Resource::Download, placeholder_mp4()),
        }
    }

    /// The file for `resource`; `None` for the two that depend on the request (the player
    /// page names the video, the master playlist the host and token).
    pub fn file(&self, resource: Resource) -> Option<&Representation> {
        match resource {
            Resource::Player | Resource::HlsManifest => None,
            Resource::HlsMediaPlaylist(rendition) => Some(&self.renditions[rendition].0),
            Resource::HlsSegment { rendition, index } => Some(&self.renditions[rendition].1[index]),
            Resource::SubtitlesPlaylist => Some(&self.subtitles_playlist),
            Resource::SubtitlesSegment => Some(&self.subtitles_segment),
            Resource::DashManifest => Some(&self.dash_manifest),
            Resource::Thumbnail => Some(&self.thumbnail),
            Resource::Download => Some(&self.download),
        }
    }
}

/// `body` served as `resource`: its content type, caching, and the shared `Last-Modified`.
pub fn representation(resource: Resource, body: Bytes) -> Representation {
    Representation::new(
        body,
        resource.content_type(),
        resource.cache_control(),
        UNIX_EPOCH + Duration::from_secs(LAST_MODIFIED_UNIX_SECS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "ce800be43a9772f4bb02f35b860fb516";

    #[test]
    fn every_file_path_is_matched() {
        let mut count = 0;
        for resource in Resource::all() {
            let path = format!("/{UID}/{resource}");
            let (segment, rest) = split_path(&path).expect("path should split");
            assert_eq!((segment, Resource::parse(rest)), (UID, Some(resource)));
            count += 1;
        }
        assert_eq!(count, 7 + RENDITIONS.len() * (1 + SEGMENTS_PER_RENDITION));
    }

    #[test]
    fn misshapen_paths_have_no_token_segment() {
        for path in [
            "/",
            "",
            "/iframe",
            "//iframe",
            "/../iframe",
            "/./iframe",
            "/a%2Eb/iframe",
            "/a b/iframe",
            &format!("/{UID}"),
        ] {
            assert_eq!(split_path(path), None, "{path}");
        }
    }

    #[test]
    fn unknown_files_match_nothing() {
        for path in [
            "",
            "iframe/",
            "manifest/video.m3u8/extra",
            "manifest/../iframe",
            "manifest/./video.m3u8",
            "manifest//video.m3u8",
            "manifest%2Fvideo.m3u8",
            "manifest/stream_1080p.m3u8",
            "manifest/seg_360p_5.ts",
            "manifest/seg_360p_01.ts",
            "manifest/seg_360p_+1.ts",
            "manifest/seg_360p_.ts",
            "manifest/seg_1080p_0.ts",
            "manifest/seg_360p_0.m3u8",
            "manifest/subtitles_en_1.vtt",
            "stream_360p.m3u8",
            "downloads/other.mp4",
        ] {
            assert_eq!(Resource::parse(path), None, "{path}");
        }
    }

    #[test]
    fn subtitles_file_names_match_their_paths() {
        assert_eq!(
            SUBTITLES_PLAYLIST_PATH,
            format!("manifest/{SUBTITLES_PLAYLIST_FILE}")
        );
        assert_eq!(
            SUBTITLES_SEGMENT_PATH,
            format!("manifest/{SUBTITLES_SEGMENT_FILE}")
        );
    }

    #[test]
    fn player_page_names_the_video_and_uses_only_relative_urls() {
        let page = player_page(UID);
        assert!(page.contains(&format!("streamgate Stream emulator — video {UID}")));
        assert!(page.contains(r#"src="manifest/video.m3u8""#));
        assert!(!page.contains("http:") && !page.contains("https:") && !page.contains("//"));
    }

    #[test]
    fn hls_master_playlist_has_two_relative_renditions_and_the_given_subtitles_uri() {
        let uri = "http://example.test/tok.en.x/manifest/subtitles_en.m3u8";
        let playlist = hls_master_playlist(uri);
        assert!(playlist.starts_with("#EXTM3U\n"));
        assert_eq!(playlist.matches("#EXT-X-STREAM-INF:").count(), 2);
        let uris: Vec<&str> = playlist
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect();
        assert_eq!(uris, ["stream_360p.m3u8", "stream_720p.m3u8"]);
        assert_eq!(playlist.matches("://").count(), 1);
        assert!(playlist.contains("#EXT-X-MEDIA:TYPE=SUBTITLES,"));
        assert!(playlist.contains(&format!("URI=\"{uri}\"")));
    }

    #[test]
    fn media_playlists_list_every_segment_of_their_rendition() {
        let library = Library::shared();
        for (rendition_index, rendition) in RENDITIONS.iter().enumerate() {
            let playlist = library
                .file(Resource::HlsMediaPlaylist(rendition_index))
                .unwrap();
            let text = std::str::from_utf8(playlist.body()).unwrap();
            assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"));
            assert!(text.ends_with("#EXT-X-ENDLIST\n"));
            let files: Vec<&str> = text.lines().filter(|line| !line.starts_with('#')).collect();
            let expected: Vec<String> = (0..SEGMENTS_PER_RENDITION)
                .map(|index| rendition.segment_file(index))
                .collect();
            assert_eq!(files, expected);
            for file in files {
                let resource = Resource::parse(&format!("manifest/{file}")).unwrap();
                assert!(library.file(resource).is_some());
            }
        }
    }

    #[test]
    fn dash_manifest_template_names_served_segments() {
        let manifest = dash_manifest();
        assert!(manifest.contains("media=\"seg_$RepresentationID$_$Number$.ts\""));
        assert!(manifest.contains("startNumber=\"0\""));
        assert!(manifest.contains("mediaPresentationDuration=\"PT20S\""));
        for rendition in RENDITIONS {
            assert!(manifest.contains(&format!("<Representation id=\"{}\"", rendition.name)));
            let last = rendition.segment_path(SEGMENTS_PER_RENDITION - 1);
            assert!(Resource::parse(&last).is_some());
        }
        assert!(manifest.contains("<BaseURL>subtitles_en_0.vtt</BaseURL>"));
    }

    #[test]
    fn segments_are_whole_ts_packets_and_differ() {
        for (rendition_index, rendition) in RENDITIONS.iter().enumerate() {
            let segment = ts_segment(rendition_index, 0);
            assert_eq!(segment.len(), rendition.segment_len_bytes());
            assert_eq!(segment.len() % TS_PACKET_LEN, 0);
            assert!(
                segment
                    .chunks(TS_PACKET_LEN)
                    .all(|packet| packet[0] == 0x47)
            );
            assert!((192 * 1024..=330 * 1024).contains(&segment.len()));
            assert_eq!(ts_segment(rendition_index, 0), segment, "deterministic");
            assert_ne!(ts_segment(rendition_index, 1), segment);
        }
    }

    #[test]
    fn thumbnail_is_a_jpeg() {
        assert_eq!(&THUMBNAIL_JPEG[..3], &[0xFF, 0xD8, 0xFF]);
        assert_eq!(&THUMBNAIL_JPEG[THUMBNAIL_JPEG.len() - 2..], &[0xFF, 0xD9]);
    }

    #[test]
    fn placeholder_mp4_is_an_ftyp_box_then_an_mdat_box_filling_the_file() {
        let file = placeholder_mp4();
        assert_eq!(file.len(), DOWNLOAD_LEN_BYTES);
        assert_eq!(&file[4..8], b"ftyp");
        let ftyp_len = u32::from_be_bytes(file[..4].try_into().unwrap()) as usize;
        assert_eq!(&file[ftyp_len + 4..ftyp_len + 8], b"mdat");
        let mdat_len =
            u32::from_be_bytes(file[ftyp_len..ftyp_len + 4].try_into().unwrap()) as usize;
        assert_eq!(ftyp_len + mdat_len, file.len());
        assert_eq!(placeholder_mp4(), file, "content should be deterministic");
    }

    #[test]
    fn every_request_independent_file_is_in_the_library() {
        let library = Library::shared();
        for resource in Resource::all() {
            match library.file(resource) {
                Some(file) => assert!(!file.body().is_empty(), "{resource}"),
                None => assert!(matches!(resource, Resource::Player | Resource::HlsManifest)),
            }
        }
    }
}
