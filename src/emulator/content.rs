//! What the emulator serves once a token is accepted: route matching for
//! `/<token-or-uid>/<file>` and the content of each file.
//!
//! Every video plays [`CLIP`], a real 6 s clip (a test pattern with a 440 Hz tone, H.264 Main
//! and AAC-LC, made once by `assets/make-clip.sh` and embedded), so a browser shows a video
//! playing. One video, [`SYNTHETIC_VIDEO_UID`], plays [`SYNTHETIC`] instead: the same layout
//! with large pseudo-random bodies (a 4 MiB download, segments of 196,648 and 327,684 bytes),
//! which no player can decode but which give the proxy benches and the large-body tests
//! bodies of a realistic size.
//!
//! The layout below the token, as a proxy sees it:
//!
//! | path | content |
//! |---|---|
//! | `iframe` | player page |
//! | `manifest/video.m3u8` | HLS master playlist: the renditions by relative URI, subtitles by absolute URI |
//! | `manifest/stream_<rendition>.m3u8` | VOD media playlist of [`Media::segments_per_rendition`] segments |
//! | `manifest/seg_<rendition>_<n>.ts` | MPEG-TS segment, [`Rendition::segment_len_bytes`] |
//! | `manifest/subtitles_en.m3u8` | subtitles playlist of one segment |
//! | `manifest/subtitles_en_0.vtt` | WebVTT segment |
//! | `manifest/video.mpd` | DASH manifest: a `SegmentTemplate` naming the same `.ts` segments |
//! | `thumbnails/thumbnail.jpg` | JPEG |
//! | `downloads/default.mp4` | the clip's progressive MP4 (or [`SYNTHETIC_DOWNLOAD_LEN_BYTES`] of `ftyp` + `mdat`) |

use std::fmt;
use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;

use super::http_file::Representation;

/// One video rendition, served as an HLS media playlist and MPEG-TS segments (and named by
/// the DASH manifest too).
#[derive(PartialEq, Eq)]
pub struct Rendition {
    /// The name in its file names: `stream_<name>.m3u8`, `seg_<name>_<n>.ts`.
    pub name: &'static str,
    pub width: u32,
    pub height: u32,
    /// RFC 6381 codecs of the (muxed) video and audio.
    pub codecs: &'static str,
    segments: Segments,
}

/// Where a rendition's segments come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Segments {
    /// Encoded MPEG-TS files, in playing order.
    Files(&'static [&'static [u8]]),
    /// Each segment this many 188-byte MPEG-TS packets around pseudo-random payload, from a
    /// generator seeded with `seed` and the segment's index.
    Synthetic { packets: usize, seed: u32 },
}

impl Rendition {
    /// Size of its segment `index` (below [`Media::segments_per_rendition`]).
    pub const fn segment_len_bytes(&self, index: usize) -> usize {
        match self.segments {
            Segments::Files(files) => files[index].len(),
            Segments::Synthetic { packets, .. } => packets * TS_PACKET_LEN,
        }
    }

    /// `manifest/stream_<name>.m3u8`, below the token.
    pub fn media_playlist_path(&self) -> String {
        format!("manifest/{}", self.media_playlist_file())
    }

    /// `manifest/seg_<name>_<index>.ts`, below the token.
    pub fn segment_path(&self, index: usize) -> String {
        format!("manifest/{}", self.segment_file(index))
    }

    fn media_playlist_file(&self) -> String {
        format!("stream_{}.m3u8", self.name)
    }

    fn segment_file(&self, index: usize) -> String {
        format!("seg_{}_{index}.ts", self.name)
    }

    /// The bytes of its segment `index`.
    fn segment(&self, index: usize) -> Bytes {
        match self.segments {
            Segments::Files(files) => Bytes::from_static(files[index]),
            Segments::Synthetic { packets, seed } => ts_segment(packets, seed ^ index as u32),
        }
    }
}

/// Its name and size only: the segments' bytes would fill a log.
impl fmt::Debug for Rendition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rendition({} {}x{})", self.name, self.width, self.height)
    }
}

/// What a video plays: its renditions (each cut into the same number of segments of one
/// duration) and its download.
#[derive(Debug, PartialEq, Eq)]
pub struct Media {
    /// The renditions, lowest first.
    pub renditions: &'static [Rendition],
    /// Segments in each rendition's media playlist (numbered from 0).
    pub segments_per_rendition: usize,
    /// Playing time of each segment; the video lasts `segments_per_rendition` times this.
    pub segment_duration_secs: u32,
    /// What the second subtitle cue says the picture is.
    subtitle: &'static str,
    download: Download,
}

/// The body of `downloads/default.mp4`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Download {
    /// A progressive MP4 file.
    File(&'static [u8]),
    /// [`placeholder_mp4`] of this size.
    Synthetic { len_bytes: usize },
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Download::File(file) => write!(f, "File({} bytes)", file.len()),
            Download::Synthetic { len_bytes } => write!(f, "Synthetic({len_bytes} bytes)"),
        }
    }
}

impl Media {
    /// What `video_uid` plays: [`SYNTHETIC`] for [`SYNTHETIC_VIDEO_UID`], [`CLIP`] for every
    /// other video.
    pub fn for_video(video_uid: &str) -> &'static Media {
        if video_uid == SYNTHETIC_VIDEO_UID {
            &SYNTHETIC
        } else {
            &CLIP
        }
    }

    /// Playing time of the whole video.
    pub const fn duration_secs(&self) -> u32 {
        self.segments_per_rendition as u32 * self.segment_duration_secs
    }

    /// Size of `downloads/default.mp4`.
    pub const fn download_len_bytes(&self) -> usize {
        match self.download {
            Download::File(file) => file.len(),
            Download::Synthetic { len_bytes } => len_bytes,
        }
    }

    /// Bits per second its largest segment takes to play: the `BANDWIDTH` the playlists
    /// advertise for `rendition`.
    pub fn peak_bandwidth_bps(&self, rendition: &Rendition) -> u64 {
        (0..self.segments_per_rendition)
            .map(|index| rendition.segment_len_bytes(index))
            .max()
            .map_or(0, |len| self.bits_per_second(len))
    }

    /// Bits per second the whole rendition takes to play: its `AVERAGE-BANDWIDTH`.
    pub fn average_bandwidth_bps(&self, rendition: &Rendition) -> u64 {
        let total: usize = (0..self.segments_per_rendition)
            .map(|index| rendition.segment_len_bytes(index))
            .sum();
        (total as u64 * 8).div_ceil(u64::from(self.duration_secs()))
    }

    fn bits_per_second(&self, segment_len_bytes: usize) -> u64 {
        (segment_len_bytes as u64 * 8).div_ceil(u64::from(self.segment_duration_secs))
    }

    fn rendition_index(&self, rendition: &Rendition) -> usize {
        self.renditions
            .iter()
            .position(|candidate| std::ptr::eq(candidate, rendition))
            .expect("a resource names a rendition of the media it was parsed for")
    }
}

/// The real clip every video but [`SYNTHETIC_VIDEO_UID`] plays: 6 s of `testsrc2` with a
/// 440 Hz tone, H.264 Main level 3.0 and AAC-LC mono at 48 kHz, in 2 s MPEG-TS segments (a
/// keyframe starts each). The 360p segments are the download's own stream, cut without
/// re-encoding. Made by `assets/make-clip.sh`.
pub static CLIP: Media = Media {
    renditions: &[
        Rendition {
            name: "240p",
            width: 426,
            height: 240,
            codecs: "avc1.4d401e,mp4a.40.2",
            segments: Segments::Files(&[
                include_bytes!("assets/clip/seg_240p_0.ts"),
                include_bytes!("assets/clip/seg_240p_1.ts"),
                include_bytes!("assets/clip/seg_240p_2.ts"),
            ]),
        },
        Rendition {
            name: "360p",
            width: 640,
            height: 360,
            codecs: "avc1.4d401e,mp4a.40.2",
            segments: Segments::Files(&[
                include_bytes!("assets/clip/seg_360p_0.ts"),
                include_bytes!("assets/clip/seg_360p_1.ts"),
                include_bytes!("assets/clip/seg_360p_2.ts"),
            ]),
        },
    ],
    segments_per_rendition: 3,
    segment_duration_secs: 2,
    subtitle: "(a test pattern with a 440 Hz tone)",
    download: Download::File(include_bytes!("assets/clip/default.mp4")),
};

/// The large-body video: what [`SYNTHETIC_VIDEO_UID`] plays. Well-formed containers of
/// pseudo-random bytes, byte for byte the same in every process: 5 segments of 4 s per
/// rendition (360p: 196,648 bytes, just over 192 KiB; 720p: 327,684 bytes, just over
/// 320 KiB) and a download of [`SYNTHETIC_DOWNLOAD_LEN_BYTES`]. Not decodable; it exists so
/// that the proxy benches (`benches/outside.rs`) and the large-body tests move bodies of the
/// size real videos have.
pub static SYNTHETIC: Media = Media {
    renditions: &[
        Rendition {
            name: "360p",
            width: 640,
            height: 360,
            codecs: "avc1.4d401e,mp4a.40.2",
            segments: Segments::Synthetic {
                packets: 1046,
                seed: 0x7EA5_0001,
            },
        },
        Rendition {
            name: "720p",
            width: 1280,
            height: 720,
            codecs: "avc1.64001f,mp4a.40.2",
            segments: Segments::Synthetic {
                packets: 1743,
                seed: 0x7EA5_0101,
            },
        },
    ],
    segments_per_rendition: 5,
    segment_duration_secs: 4,
    subtitle: "(a test video: the picture is noise)",
    download: Download::Synthetic {
        len_bytes: SYNTHETIC_DOWNLOAD_LEN_BYTES,
    },
};

/// The one video uid that plays [`SYNTHETIC`] (when an emulator's settings list it; nothing
/// else about the video differs).
pub const SYNTHETIC_VIDEO_UID: &str = "b16b0d1e5b16b0d1e5b16b0d1e5b16b0";
/// Size of [`SYNTHETIC`]'s `downloads/default.mp4`.
pub const SYNTHETIC_DOWNLOAD_LEN_BYTES: usize = 4 * 1024 * 1024;
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

/// The files Stream serves under a video (or token) path segment. The renditions' files are
/// those of the [`Media`] the path was parsed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `iframe`: the hosted player page.
    Player,
    /// `manifest/video.m3u8`: the HLS master playlist.
    HlsManifest,
    /// `manifest/stream_<name>.m3u8`: the media playlist of a rendition.
    HlsMediaPlaylist(&'static Rendition),
    /// `manifest/seg_<name>_<index>.ts`: a segment of a rendition.
    HlsSegment {
        rendition: &'static Rendition,
        index: usize,
    },
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
    /// The file at `path` below the token segment of a video that plays `media` (exactly as
    /// written in Stream's URLs and the playlists: no dot segments, no leading zeros, no
    /// percent-encoding), if any.
    pub fn parse(path: &str, media: &'static Media) -> Option<Resource> {
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
        fixed.or_else(|| Resource::parse_rendition_file(path.strip_prefix("manifest/")?, media))
    }

    fn parse_rendition_file(file: &str, media: &'static Media) -> Option<Resource> {
        let rendition_named = |name: &str| {
            media
                .renditions
                .iter()
                .find(|rendition| rendition.name == name)
        };
        if let Some(name) = file
            .strip_prefix("stream_")
            .and_then(|rest| rest.strip_suffix(".m3u8"))
        {
            return Some(Resource::HlsMediaPlaylist(rendition_named(name)?));
        }
        let (name, index) = file
            .strip_prefix("seg_")?
            .strip_suffix(".ts")?
            .rsplit_once('_')?;
        let rendition = rendition_named(name)?;
        // Only the canonical spelling: `seg_360p_01.ts` is not a file.
        let index: usize = index.parse().ok()?;
        if index >= media.segments_per_rendition || rendition.segment_file(index) != file {
            return None;
        }
        Some(Resource::HlsSegment { rendition, index })
    }

    /// Every file under a token of a video that plays `media`.
    #[cfg(test)]
    pub fn all(media: &'static Media) -> impl Iterator<Item = Resource> {
        let fixed = [
            Resource::Player,
            Resource::HlsManifest,
            Resource::SubtitlesPlaylist,
            Resource::SubtitlesSegment,
            Resource::DashManifest,
            Resource::Thumbnail,
            Resource::Download,
        ];
        let renditions = media.renditions.iter().flat_map(|rendition| {
            std::iter::once(Resource::HlsMediaPlaylist(rendition)).chain(
                (0..media.segments_per_rendition)
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
            Resource::HlsMediaPlaylist(rendition) => f.write_str(&rendition.media_playlist_path()),
            Resource::HlsSegment { rendition, index } => {
                f.write_str(&rendition.segment_path(index))
            }
            Resource::SubtitlesPlaylist => f.write_str(SUBTITLES_PLAYLIST_PATH),
            Resource::SubtitlesSegment => f.write_str(SUBTITLES_SEGMENT_PATH),
            Resource::DashManifest => f.write_str(DASH_MANIFEST_PATH),
            Resource::Thumbnail => f.write_str(THUMBNAIL_PATH),
            Resource::Download => f.write_str(DOWNLOAD_PATH),
        }
    }
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
/// points at the manifest relative to the page, so it carries the same token (or, through a
/// proxying gateway, stays below `/watch/<video>/`). No script: a browser that plays HLS
/// natively (Safari, Chromium) plays the clip; one that does not (Firefox) shows the poster.
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

/// The HLS master playlist of `media`: the renditions by URI relative to the playlist, and
/// one subtitles track at `subtitles_uri` (the emulator makes it absolute, as some origins
/// do, so that a proxy must rewrite it).
pub fn hls_master_playlist(media: &Media, subtitles_uri: &str) -> String {
    let mut playlist = format!(
        "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"English\",LANGUAGE=\"en\",DEFAULT=NO,AUTOSELECT=YES,URI=\"{subtitles_uri}\"
"
    );
    for rendition in media.renditions {
        playlist.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={average},RESOLUTION={width}x{height},FRAME-RATE=30.000,CODECS=\"{codecs}\",SUBTITLES=\"subs\"\n{file}\n",
            peak = media.peak_bandwidth_bps(rendition),
            average = media.average_bandwidth_bps(rendition),
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

/// The subtitles of `media`: one WebVTT file of two cues covering the whole video.
fn subtitles_vtt(media: &Media) -> String {
    let first_cue_end = cue_time(media.segment_duration_secs);
    let end = cue_time(media.duration_secs());
    format!(
        "WEBVTT

00:00:00.000 --> {first_cue_end}
streamgate Stream emulator

{first_cue_end} --> {end}
{subtitle}
",
        subtitle = media.subtitle,
    )
}

/// `hh:mm:ss.000`, a WebVTT cue time.
fn cue_time(secs: u32) -> String {
    format!(
        "{:02}:{:02}:{:02}.000",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A static DASH manifest of `media`: the renditions' MPEG-TS segments through a relative
/// `SegmentTemplate`, the subtitles through a relative `BaseURL`.
fn dash_manifest(media: &Media) -> String {
    let representations: String = media
        .renditions
        .iter()
        .map(|rendition| {
            format!(
                "      <Representation id=\"{}\" bandwidth=\"{}\" width=\"{}\" height=\"{}\" codecs=\"{}\"/>\n",
                rendition.name,
                media.peak_bandwidth_bps(rendition),
                rendition.width,
                rendition.height,
                rendition.codecs,
            )
        })
        .collect();
    let duration_secs = media.duration_secs();
    let segment_duration_secs = media.segment_duration_secs;
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:full:2011" type="static" mediaPresentationDuration="PT{duration_secs}S" minBufferTime="PT{segment_duration_secs}S">
  <Period id="0" start="PT0S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp2t" segmentAlignment="true">
      <SegmentTemplate media="seg_$RepresentationID$_$Number$.ts" startNumber="0" timescale="1" duration="{segment_duration_secs}"/>
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

/// The synthetic `downloads/default.mp4`: a valid MP4 *container* (an `ftyp` box, then an
/// `mdat` box) of `len` bytes, filled with deterministic pseudo-random bytes. It is not
/// playable video (there is no `moov` box); it only lets tests and benches move a large
/// download, byte for byte the same every time.
fn placeholder_mp4(len: usize) -> Bytes {
    const FTYP: &[u8] = &[
        0, 0, 0, 28, b'f', b't', b'y', b'p', // box size and type
        b'i', b's', b'o', b'm', // major brand
        0, 0, 2, 0, // minor version
        b'i', b's', b'o', b'm', b'i', b's', b'o', b'2', b'm', b'p', b'4', b'1', // compatible
    ];
    let mdat_len = len - FTYP.len();
    let mut file = Vec::with_capacity(len);
    file.extend_from_slice(FTYP);
    file.extend_from_slice(&u32::try_from(mdat_len).unwrap_or(u32::MAX).to_be_bytes());
    file.extend_from_slice(b"mdat");
    let filler_len = len - file.len();
    XorShift32(0x5EED_F00D).fill(&mut file, filler_len);
    Bytes::from(file)
}

/// A synthetic segment of `packets` MPEG-TS packets (sync byte 0x47, one PID, payload only,
/// continuity counter counting) around pseudo-random payload from `seed` (nonzero). Not
/// decodable video; shaped enough for anything that checks packets.
fn ts_segment(packets: usize, seed: u32) -> Bytes {
    const SYNC_BYTE: u8 = 0x47;
    const PID: u16 = 0x0100;
    const PAYLOAD_UNIT_START: u8 = 0x40;
    const PAYLOAD_ONLY: u8 = 0x10;
    let mut segment = Vec::with_capacity(packets * TS_PACKET_LEN);
    let mut filler = XorShift32(seed);
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

/// Every file whose bytes do not depend on the request, for the clip and for the synthetic
/// video, built once per process (the first emulator builds it; later ones share it).
pub struct Library {
    clip: VideoFiles,
    synthetic: VideoFiles,
}

impl Library {
    /// The process-wide library, built on first use.
    pub fn shared() -> &'static Library {
        static LIBRARY: LazyLock<Library> = LazyLock::new(|| Library {
            clip: VideoFiles::build(&CLIP),
            synthetic: VideoFiles::build(&SYNTHETIC),
        });
        &LIBRARY
    }

    /// The files `video_uid` plays (see [`Media::for_video`]).
    pub fn video(&self, video_uid: &str) -> &VideoFiles {
        if std::ptr::eq(Media::for_video(video_uid), &SYNTHETIC) {
            &self.synthetic
        } else {
            &self.clip
        }
    }
}

/// The request-independent files of one [`Media`].
pub struct VideoFiles {
    media: &'static Media,
    /// Per rendition, in `media.renditions` order: its media playlist, then its segments.
    renditions: Vec<(Representation, Vec<Representation>)>,
    subtitles_playlist: Representation,
    subtitles_segment: Representation,
    dash_manifest: Representation,
    thumbnail: Representation,
    download: Representation,
}

impl VideoFiles {
    fn build(media: &'static Media) -> VideoFiles {
        let renditions = media
            .renditions
            .iter()
            .map(|rendition| {
                let playlist = media_playlist(
                    media.segment_duration_secs,
                    (0..media.segments_per_rendition).map(|index| rendition.segment_file(index)),
                );
                let segments = (0..media.segments_per_rendition)
                    .map(|index| {
                        let resource = Resource::HlsSegment { rendition, index };
                        representation(resource, rendition.segment(index))
                    })
                    .collect();
                (
                    representation(Resource::HlsMediaPlaylist(rendition), Bytes::from(playlist)),
                    segments,
                )
            })
            .collect();
        let subtitles_playlist =
            media_playlist(media.duration_secs(), [SUBTITLES_SEGMENT_FILE.to_owned()]);
        let download = match media.download {
            Download::File(file) => Bytes::from_static(file),
            Download::Synthetic { len_bytes } => placeholder_mp4(len_bytes),
        };
        VideoFiles {
            media,
            renditions,
            subtitles_playlist: representation(
                Resource::SubtitlesPlaylist,
                Bytes::from(subtitles_playlist),
            ),
            subtitles_segment: representation(
                Resource::SubtitlesSegment,
                Bytes::from(subtitles_vtt(media)),
            ),
            dash_manifest: representation(
                Resource::DashManifest,
                Bytes::from(dash_manifest(media)),
            ),
            thumbnail: representation(Resource::Thumbnail, Bytes::from_static(THUMBNAIL_JPEG)),
            download: representation(Resource::Download, download),
        }
    }

    /// What these files play: the media to parse this video's paths for.
    pub fn media(&self) -> &'static Media {
        self.media
    }

    /// The file for `resource` (parsed for [`VideoFiles::media`]); `None` for the two that
    /// depend on the request (the player page names the video, the master playlist the host
    /// and token).
    pub fn file(&self, resource: Resource) -> Option<&Representation> {
        match resource {
            Resource::Player | Resource::HlsManifest => None,
            Resource::HlsMediaPlaylist(rendition) => {
                Some(&self.renditions[self.media.rendition_index(rendition)].0)
            }
            Resource::HlsSegment { rendition, index } => {
                Some(&self.renditions[self.media.rendition_index(rendition)].1[index])
            }
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
    const BOTH: [&Media; 2] = [&CLIP, &SYNTHETIC];

    #[test]
    fn every_file_path_is_matched() {
        for media in BOTH {
            let mut count = 0;
            for resource in Resource::all(media) {
                let path = format!("/{UID}/{resource}");
                let (segment, rest) = split_path(&path).expect("path should split");
                assert_eq!(
                    (segment, Resource::parse(rest, media)),
                    (UID, Some(resource))
                );
                count += 1;
            }
            assert_eq!(
                count,
                7 + media.renditions.len() * (1 + media.segments_per_rendition)
            );
        }
    }

    #[test]
    fn only_the_synthetic_video_uid_plays_the_synthetic_media() {
        assert_eq!(Media::for_video(SYNTHETIC_VIDEO_UID), &SYNTHETIC);
        assert_eq!(Media::for_video(UID), &CLIP);
        let library = Library::shared();
        assert!(std::ptr::eq(library.video(UID).media(), &CLIP));
        assert!(std::ptr::eq(
            library.video(SYNTHETIC_VIDEO_UID).media(),
            &SYNTHETIC
        ));
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
            for media in BOTH {
                assert_eq!(Resource::parse(path, media), None, "{path}");
            }
        }
        // Each media has only its own renditions and segments.
        for path in ["manifest/stream_720p.m3u8", "manifest/seg_360p_3.ts"] {
            assert_eq!(Resource::parse(path, &CLIP), None, "{path}");
            assert!(Resource::parse(path, &SYNTHETIC).is_some(), "{path}");
        }
        assert_eq!(Resource::parse("manifest/seg_240p_0.ts", &SYNTHETIC), None);
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
    fn hls_master_playlist_lists_the_relative_renditions_and_the_given_subtitles_uri() {
        let uri = "http://example.test/tok.en.x/manifest/subtitles_en.m3u8";
        for (media, expected) in [
            (&CLIP, ["stream_240p.m3u8", "stream_360p.m3u8"]),
            (&SYNTHETIC, ["stream_360p.m3u8", "stream_720p.m3u8"]),
        ] {
            let playlist = hls_master_playlist(media, uri);
            assert!(playlist.starts_with("#EXTM3U\n"));
            assert_eq!(playlist.matches("#EXT-X-STREAM-INF:").count(), 2);
            let uris: Vec<&str> = playlist
                .lines()
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .collect();
            assert_eq!(uris, expected);
            assert_eq!(playlist.matches("://").count(), 1);
            assert!(playlist.contains("#EXT-X-MEDIA:TYPE=SUBTITLES,"));
            assert!(playlist.contains(&format!("URI=\"{uri}\"")));
        }
    }

    #[test]
    fn advertised_bandwidth_covers_every_segment() {
        for media in BOTH {
            for rendition in media.renditions {
                let peak = media.peak_bandwidth_bps(rendition);
                let average = media.average_bandwidth_bps(rendition);
                assert!(0 < average && average <= peak, "{rendition:?}");
                for index in 0..media.segments_per_rendition {
                    let bits = rendition.segment_len_bytes(index) as u64 * 8;
                    assert!(bits <= peak * u64::from(media.segment_duration_secs));
                }
            }
        }
        // The synthetic 360p segment: 196,648 bytes every 4 s.
        let synthetic_360p = &SYNTHETIC.renditions[0];
        assert_eq!(SYNTHETIC.peak_bandwidth_bps(synthetic_360p), 393_296);
    }

    #[test]
    fn media_playlists_list_every_segment_of_their_rendition() {
        let library = Library::shared();
        for uid in [UID, SYNTHETIC_VIDEO_UID] {
            let video = library.video(uid);
            let media = video.media();
            for rendition in media.renditions {
                let playlist = video.file(Resource::HlsMediaPlaylist(rendition)).unwrap();
                let text = std::str::from_utf8(playlist.body()).unwrap();
                assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"));
                assert!(text.ends_with("#EXT-X-ENDLIST\n"));
                let files: Vec<&str> = text.lines().filter(|line| !line.starts_with('#')).collect();
                let expected: Vec<String> = (0..media.segments_per_rendition)
                    .map(|index| rendition.segment_file(index))
                    .collect();
                assert_eq!(files, expected);
                for file in files {
                    let resource = Resource::parse(&format!("manifest/{file}"), media).unwrap();
                    assert!(video.file(resource).is_some());
                }
            }
        }
    }

    #[test]
    fn dash_manifest_template_names_served_segments() {
        for (media, duration) in [(&CLIP, "PT6S"), (&SYNTHETIC, "PT20S")] {
            let manifest = dash_manifest(media);
            assert!(manifest.contains("media=\"seg_$RepresentationID$_$Number$.ts\""));
            assert!(manifest.contains("startNumber=\"0\""));
            assert!(manifest.contains(&format!("mediaPresentationDuration=\"{duration}\"")));
            for rendition in media.renditions {
                assert!(manifest.contains(&format!("<Representation id=\"{}\"", rendition.name)));
                let last = rendition.segment_path(media.segments_per_rendition - 1);
                assert!(Resource::parse(&last, media).is_some());
            }
            assert!(manifest.contains("<BaseURL>subtitles_en_0.vtt</BaseURL>"));
        }
    }

    #[test]
    fn subtitles_cover_the_whole_video() {
        let clip = subtitles_vtt(&CLIP);
        assert!(clip.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:02.000\n"));
        assert!(clip.contains("\n00:00:02.000 --> 00:00:06.000\n(a test pattern"));
        let synthetic = subtitles_vtt(&SYNTHETIC);
        assert!(synthetic.contains("\n00:00:04.000 --> 00:00:20.000\n(a test video"));
        assert_eq!(cue_time(3_725), "01:02:05.000");
    }

    #[test]
    fn clip_segments_are_whole_ts_packets_as_many_as_the_playlists_list() {
        for rendition in CLIP.renditions {
            let Segments::Files(files) = rendition.segments else {
                panic!("the clip's segments are files");
            };
            assert_eq!(files.len(), CLIP.segments_per_rendition, "{rendition:?}");
            for (index, file) in files.iter().enumerate() {
                assert_eq!(rendition.segment_len_bytes(index), file.len());
                assert_eq!(file.len() % TS_PACKET_LEN, 0, "{rendition:?} {index}");
                assert!(file.chunks(TS_PACKET_LEN).all(|packet| packet[0] == 0x47));
                // Small, as the script makes them: under 64 KiB of video a second.
                assert!(
                    (8 * 1024..128 * 1024).contains(&file.len()),
                    "{rendition:?}"
                );
            }
        }
    }

    #[test]
    fn clip_download_is_a_faststart_mp4() {
        let Download::File(file) = CLIP.download else {
            panic!("the clip's download is a file");
        };
        assert_eq!(&file[4..8], b"ftyp");
        let ftyp_len = u32::from_be_bytes(file[..4].try_into().unwrap()) as usize;
        // `moov` right after `ftyp`: a browser can start playing before the rest arrives.
        assert_eq!(&file[ftyp_len + 4..ftyp_len + 8], b"moov");
        assert!((64 * 1024..512 * 1024).contains(&file.len()));
        assert_eq!(CLIP.download_len_bytes(), file.len());
    }

    #[test]
    fn synthetic_segments_are_whole_ts_packets_and_differ() {
        for rendition in SYNTHETIC.renditions {
            let segment = rendition.segment(0);
            assert_eq!(segment.len(), rendition.segment_len_bytes(0));
            assert_eq!(segment.len() % TS_PACKET_LEN, 0);
            assert!(
                segment
                    .chunks(TS_PACKET_LEN)
                    .all(|packet| packet[0] == 0x47)
            );
            assert!((192 * 1024..=330 * 1024).contains(&segment.len()));
            assert_eq!(rendition.segment(0), segment, "deterministic");
            assert_ne!(rendition.segment(1), segment);
        }
    }

    #[test]
    fn thumbnail_is_a_jpeg() {
        assert_eq!(&THUMBNAIL_JPEG[..3], &[0xFF, 0xD8, 0xFF]);
        assert_eq!(&THUMBNAIL_JPEG[THUMBNAIL_JPEG.len() - 2..], &[0xFF, 0xD9]);
    }

    #[test]
    fn placeholder_mp4_is_an_ftyp_box_then_an_mdat_box_filling_the_file() {
        let file = placeholder_mp4(SYNTHETIC_DOWNLOAD_LEN_BYTES);
        assert_eq!(file.len(), SYNTHETIC_DOWNLOAD_LEN_BYTES);
        assert_eq!(SYNTHETIC.download_len_bytes(), SYNTHETIC_DOWNLOAD_LEN_BYTES);
        assert_eq!(&file[4..8], b"ftyp");
        let ftyp_len = u32::from_be_bytes(file[..4].try_into().unwrap()) as usize;
        assert_eq!(&file[ftyp_len + 4..ftyp_len + 8], b"mdat");
        let mdat_len =
            u32::from_be_bytes(file[ftyp_len..ftyp_len + 4].try_into().unwrap()) as usize;
        assert_eq!(ftyp_len + mdat_len, file.len());
        assert_eq!(
            placeholder_mp4(SYNTHETIC_DOWNLOAD_LEN_BYTES),
            file,
            "content should be deterministic"
        );
    }

    #[test]
    fn every_request_independent_file_is_in_the_library() {
        let library = Library::shared();
        for uid in [UID, SYNTHETIC_VIDEO_UID] {
            let video = library.video(uid);
            for resource in Resource::all(video.media()) {
                match video.file(resource) {
                    Some(file) => assert!(!file.body().is_empty(), "{resource}"),
                    None => assert!(matches!(resource, Resource::Player | Resource::HlsManifest)),
                }
            }
            let download = video.file(Resource::Download).unwrap();
            assert_eq!(download.body().len(), video.media().download_len_bytes());
        }
    }
}
