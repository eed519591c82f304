#!/bin/sh
# Makes the emulator's real clip: 6 s of ffmpeg's `testsrc2` test pattern (a moving
# colour chart with a running clock) with a 440 Hz tone, in H.264 Main + AAC-LC.
#
# Outputs, in src/emulator/assets/clip/ (committed; `src/emulator/content.rs` embeds them
# with `include_bytes!`, so a build never runs this):
#   default.mp4        640x360, progressive with the `moov` box first (faststart): the download
#   seg_360p_<n>.ts    the same 360p encode cut into three 2 s MPEG-TS segments (stream copy)
#   seg_240p_<n>.ts    a 426x240 encode, cut the same way
# The emulator writes the playlists itself (content.rs), so ffmpeg's are deleted; the
# script checks them first (three segments of 2.000 s each per rendition).
#
# Made with ffmpeg 5.1.9-0+deb12u1 and libx264 0.164.3095+gitbaee400-3 (Debian 12; ffmpeg's
# native AAC encoder):
#   apt-get install -y ffmpeg && sh src/emulator/assets/make-clip.sh
# Deterministic with the same ffmpeg and libx264 (two runs gave the same bytes): one encoder
# thread, bit-exact flags, no metadata or encoder strings. Another version may give other
# bytes (and then other ETags); the segment layout is checked below. After re-running it,
# update the renditions' CODECS in content.rs if the profile or level printed at the end
# changed, and run `cargo test --lib emulator`.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out="$here/clip"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
rm -f "$out"/*.mp4 "$out"/*.ts

duration=6
segment_secs=2
fps=30
gop=$((fps * segment_secs)) # one keyframe at the start of every segment

# Shared by both encodes: the pattern, the tone, and the settings that make the bytes repeat.
encode() { # encode WIDTH HEIGHT VIDEO_KBPS OUTPUT
    ffmpeg -hide_banner -loglevel error -y \
        -f lavfi -i "testsrc2=size=${1}x${2}:rate=${fps}:duration=${duration}" \
        -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=${duration},volume=0.3" \
        -map 0:v -map 1:a -shortest \
        -c:v libx264 -profile:v main -level:v 3.0 -pix_fmt yuv420p -preset medium \
        -b:v "${3}k" -maxrate "${3}k" -bufsize "$((2 * $3))k" -x264-params threads=1 \
        -g "$gop" -keyint_min "$gop" -sc_threshold 0 -flags:v +bitexact \
        -c:a aac -b:a 48k -ac 1 -flags:a +bitexact \
        -fflags +bitexact -map_metadata -1 -map_chapters -1 \
        -movflags +faststart "$4"
}

segment() { # segment INPUT NAME
    ffmpeg -hide_banner -loglevel error -y -i "$1" -map 0 -c copy \
        -fflags +bitexact -map_metadata -1 \
        -f hls -hls_time "$segment_secs" -hls_playlist_type vod -hls_list_size 0 \
        -hls_segment_filename "$out/seg_${2}_%d.ts" "$work/stream_$2.m3u8"
    extinf=$(grep -c '^#EXTINF:2.0' "$work/stream_$2.m3u8")
    if [ "$extinf" -ne $((duration / segment_secs)) ]; then
        echo "stream_$2.m3u8 does not hold $((duration / segment_secs)) segments of 2 s:" >&2
        cat "$work/stream_$2.m3u8" >&2
        exit 1
    fi
}

encode 640 360 160 "$out/default.mp4"
encode 426 240 80 "$work/240p.mp4"
segment "$out/default.mp4" 360p
segment "$work/240p.mp4" 240p

# The profile and level the renditions' CODECS must name (avc1.4d401e: Main, level 3.0).
for file in "$out/default.mp4" "$work/240p.mp4"; do
    ffprobe -hide_banner -loglevel error -of compact \
        -show_entries stream=codec_name,profile,level,width,height,sample_rate,channels "$file"
done
ls -l "$out"
