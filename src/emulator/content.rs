//! What the emulator serves once a token is accepted: route matching for
//! `/<token-or-uid>/<resource>` and the (fake but well-formed) content of each resource.

use bytes::Bytes;

/// The resources Stream serves under a video (or token) path segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `iframe`: the hosted player page.
    Player,
    /// `manifest/video.m3u8`: the HLS master playlist.
    HlsManifest,
    /// `manifest/video.mpd`: the DASH manifest.
    DashManifest,
    /// `thumbnails/thumbnail.jpg`.
    Thumbnail,
    /// `downloads/default.mp4`: needs a `downloadable` token.
    Download,
}

impl Resource {
    /// The path below the token segment, as in Stream's URLs.
    pub fn path(self) -> &'static str {
        match self {
            Resource::Player => "iframe",
            Resource::HlsManifest => "manifest/video.m3u8",
            Resource::DashManifest => "manifest/video.mpd",
            Resource::Thumbnail => "thumbnails/thumbnail.jpg",
            Resource::Download => "downloads/default.mp4",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Resource::Player => "text/html; charset=utf-8",
            Resource::HlsManifest => "application/vnd.apple.mpegurl",
            Resource::DashManifest => "application/dash+xml",
            Resource::Thumbnail => "image/jpeg",
            Resource::Download => "video/mp4",
        }
    }

    const ALL: [Resource; 5] = [
        Resource::Player,
        Resource::HlsManifest,
        Resource::DashManifest,
        Resource::Thumbnail,
        Resource::Download,
    ];
}

/// Split a request path into its token-or-uid segment and the resource asked for.
/// `None` when the path has no such shape or names no known resource (the query string is not
/// part of `path`, so thumbnail parameters never get here).
pub fn match_path(path: &str) -> Option<(&str, Resource)> {
    let (segment, rest) = path.strip_prefix('/')?.split_once('/')?;
    if segment.is_empty() {
        return None;
    }
    let resource = Resource::ALL
        .into_iter()
        .find(|resource| resource.path() == rest)?;
    Some((segment, resource))
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

/// An HLS master playlist with two renditions. The media playlists it names are not served:
/// players get as far as the master playlist, which is all the gateway's flow needs.
pub const HLS_MASTER_PLAYLIST: &str = "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-STREAM-INF:BANDWIDTH=2800000,AVERAGE-BANDWIDTH=2400000,RESOLUTION=1280x720,FRAME-RATE=30.000,CODECS=\"avc1.64001f,mp4a.40.2\"
stream_720p.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=900000,AVERAGE-BANDWIDTH=750000,RESOLUTION=640x360,FRAME-RATE=30.000,CODECS=\"avc1.4d401e,mp4a.40.2\"
stream_360p.m3u8
";

/// A small static DASH manifest with the same two renditions; its segments are not served.
pub const DASH_MANIFEST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011" type="static" mediaPresentationDuration="PT10S" minBufferTime="PT2S">
  <Period id="0" start="PT0S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4" segmentAlignment="true">
      <Representation id="720p" bandwidth="2800000" width="1280" height="720" codecs="avc1.64001f">
        <BaseURL>video_720p.mp4</BaseURL>
      </Representation>
      <Representation id="360p" bandwidth="900000" width="640" height="360" codecs="avc1.4d401e">
        <BaseURL>video_360p.mp4</BaseURL>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"#;

/// A real 320×180 JPEG (a colour gradient).
pub const THUMBNAIL_JPEG: &[u8] = include_bytes!("assets/thumbnail.jpg");

/// Total size of [`placeholder_mp4`], in bytes.
pub const DOWNLOAD_LEN_BYTES: usize = 64 * 1024;

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
    // xorshift32: cheap, deterministic filler that does not compress to nothing.
    let mut state: u32 = 0x5EED_F00D;
    while file.len() < DOWNLOAD_LEN_BYTES {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        file.extend_from_slice(&state.to_le_bytes());
    }
    file.truncate(DOWNLOAD_LEN_BYTES);
    Bytes::from(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "ce800be43a9772f4bb02f35b860fb516";

    #[test]
    fn every_stream_resource_path_is_matched() {
        for resource in Resource::ALL {
            let path = format!("/{UID}/{}", resource.path());
            assert_eq!(match_path(&path), Some((UID, resource)));
        }
    }

    #[test]
    fn unknown_or_misshapen_paths_match_nothing() {
        for path in [
            "/",
            "",
            "/iframe",
            "//iframe",
            &format!("/{UID}"),
            &format!("/{UID}/"),
            &format!("/{UID}/iframe/"),
            &format!("/{UID}/manifest/video.m3u8/extra"),
            &format!("/{UID}/manifest/stream_720p.m3u8"),
            &format!("/{UID}/downloads/other.mp4"),
        ] {
            assert_eq!(match_path(path), None, "{path}");
        }
    }

    #[test]
    fn player_page_names_the_video_and_uses_only_relative_urls() {
        let page = player_page(UID);
        assert!(page.contains(&format!("streamgate Stream emulator — video {UID}")));
        assert!(page.contains(r#"src="manifest/video.m3u8""#));
        assert!(!page.contains("http:") && !page.contains("https:") && !page.contains("//"));
    }

    #[test]
    fn hls_master_playlist_has_two_relative_renditions() {
        assert!(HLS_MASTER_PLAYLIST.starts_with("#EXTM3U\n"));
        assert_eq!(HLS_MASTER_PLAYLIST.matches("#EXT-X-STREAM-INF:").count(), 2);
        assert!(!HLS_MASTER_PLAYLIST.contains("://"));
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
}
