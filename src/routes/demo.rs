//! `GET /`: the demo and embed page. It lists the videos the visitor may watch now, plays one
//! in an `<iframe src="/watch/<video>">`, and has a form that posts to `/api/getSignedURL`
//! and shows the token, its decoded claims and the snippet to embed the video elsewhere.
//!
//! Plain HTML, CSS and JavaScript compiled into the binary: no build step and nothing loaded
//! from elsewhere, so it works offline with the emulator. The page is rendered for the
//! visitor (their name, their videos) and never cached.

use std::fmt::Write as _;

use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use http::request::Parts;
use http::{HeaderValue, Response, StatusCode};

use crate::Body;
use crate::authz::policy::Mode;
use crate::error::{RequestError, escape_html};
use crate::identity::{Identity, PrincipalKind};
use crate::request::Context;
use crate::request::route::Asset;
use crate::snapshot::Snapshot;
use crate::token::signer::unix_now;

/// Most videos listed on the page; a bigger catalogue says how many more there are.
const MAX_LISTED: usize = 200;

/// A static file's content and type.
fn content(asset: Asset) -> (&'static str, &'static str) {
    match asset {
        Asset::Script => (
            include_str!("../web/demo.js"),
            "text/javascript; charset=utf-8",
        ),
        Asset::Style => (include_str!("../web/demo.css"), "text/css; charset=utf-8"),
        Asset::Icon => (include_str!("../web/favicon.svg"), "image/svg+xml"),
    }
}

/// Serve a static file. The page names them with the release in the query, so a browser
/// may keep them for a day.
pub fn asset(asset: Asset) -> Response<Body> {
    let (content, content_type) = content(asset);
    let mut response = Response::new(Body::new(Bytes::from_static(content.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// `GET /sign-in`: a visitor who is signed in goes back to `/`; one who is not is asked to
/// sign in (a Basic challenge, or the configured login page).
pub async fn sign_in(
    snapshot: &Snapshot,
    ctx: &mut Context,
    head: &Parts,
) -> Result<Response<Body>, RequestError> {
    let identity = super::identify_visitor(snapshot, ctx, &head.headers).await?;
    if identity.is_authenticated() {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SEE_OTHER;
        response
            .headers_mut()
            .insert(LOCATION, HeaderValue::from_static("/"));
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok(response);
    }
    let identity_settings = &snapshot.settings.identity;
    if !snapshot.auth.basic_enabled() && identity_settings.login_url.is_none() {
        return Err(RequestError::NotFound(
            "this gateway has no sign-in page: present an API key, or your identity provider's session".into(),
        ));
    }
    Err(RequestError::SignIn)
}

/// `GET /`: the page for this visitor.
pub async fn home(
    snapshot: &Snapshot,
    ctx: &mut Context,
    head: &Parts,
) -> Result<Response<Body>, RequestError> {
    let settings = &snapshot.settings;
    let identity = super::identify_visitor(snapshot, ctx, &head.headers).await?;
    let now = unix_now();
    let mut listed = Vec::new();
    let mut more = 0usize;
    for video in settings.catalogue.videos() {
        let Ok(permit) = settings.policy.decide(&identity, video, now) else {
            continue;
        };
        if listed.len() < MAX_LISTED {
            listed.push((video, permit.downloadable(), permit.mode()));
        } else {
            more += 1;
        }
    }

    let mut page = String::with_capacity(8 * 1024);
    let _ = write!(
        page,
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>streamgate</title>
<link rel="stylesheet" href="/assets/demo.css?v={version}">
<link rel="icon" href="/assets/favicon.svg?v={version}" type="image/svg+xml">
</head>
<body>
<header>
<h1>streamgate</h1>
<p id="whoami">{whoami}</p>
</header>
<main>
<section id="videos">
<h2>Videos you may watch</h2>
"#,
        version = env!("CARGO_PKG_VERSION"),
        whoami = whoami(snapshot, &identity),
    );
    if listed.is_empty() {
        page.push_str(
            "<p id=\"no-videos\">No videos are open to you right now. Sign in to see more.</p>\n",
        );
    } else {
        page.push_str("<ul id=\"video-list\">\n");
        for (video, downloadable, mode) in &listed {
            let alias = escape_html(&video.alias);
            let title = escape_html(video.title.as_deref().unwrap_or(&video.alias));
            // Without a title the alias is the title; it is not repeated.
            let alias_line = if video.title.is_some() {
                format!("<code>{alias}</code>")
            } else {
                String::new()
            };
            let _ = writeln!(
                page,
                r#"<li><button type="button" class="play" data-video="{alias}" data-title="{title}"><img src="/watch/{alias}/thumbnails/thumbnail.jpg?height=90" alt="" width="160" height="90" loading="lazy"><span class="title">{title}</span>{alias_line}<span class="uid">{uid}</span>{extras}</button></li>"#,
                uid = video.uid,
                extras = match (downloadable, mode) {
                    (true, Mode::Proxy) =>
                        "<span class=\"tag\">download</span><span class=\"tag\">proxied</span>",
                    (true, Mode::Redirect) => "<span class=\"tag\">download</span>",
                    (false, Mode::Proxy) => "<span class=\"tag\">proxied</span>",
                    (false, Mode::Redirect) => "",
                },
            );
        }
        page.push_str("</ul>\n");
        if more > 0 {
            let _ = writeln!(page, "<p class=\"more\">…and {more} more.</p>");
        }
    }
    page.push_str("</section>\n");

    let first = listed.first().map(|(video, ..)| video);
    let _ = write!(
        page,
        r#"<section id="player-section">
<h2 id="now-playing">{now_playing}</h2>
<div class="frame">{player}</div>
</section>
<section id="sign">
<h2>Get a signed URL</h2>
<form id="sign-form">
<label for="video-id">Video id or alias</label>
<input id="video-id" name="video_id" value="{first_alias}" required autocomplete="off" spellcheck="false">
<button id="sign-button" type="submit">Sign</button>
</form>
<p id="error" role="alert" hidden></p>
<div id="result" hidden>
<dl>
<dt>Token</dt><dd><pre id="token"></pre></dd>
<dt>Signed URL</dt><dd><a id="signed-url" rel="noreferrer" target="player"></a></dd>
<dt>Expires</dt><dd><span id="expires"></span> (<span id="time-left"></span>)</dd>
<dt>Header</dt><dd><pre id="header"></pre></dd>
<dt>Claims</dt><dd><pre id="claims"></pre></dd>
<dt>Embed this video on your site</dt>
<dd><textarea id="embed-snippet" readonly rows="3"></textarea><button id="copy-snippet" type="button">Copy</button></dd>
</dl>
</div>
</section>
</main>
<footer><p>Tokens are signed by this gateway; <code>/watch/&lt;video&gt;</code> always signs a fresh or cached one for whoever opens it.</p></footer>
<script src="/assets/demo.js?v={version}"></script>
</body>
</html>
"#,
        now_playing = match first {
            Some(video) => escape_html(video.title.as_deref().unwrap_or(&video.alias)),
            None => "Nothing to play".to_string(),
        },
        player = match first {
            Some(video) => format!(
                r#"<iframe id="player" name="player" src="/watch/{}" title="Video player" allow="accelerometer; gyroscope; autoplay; encrypted-media; picture-in-picture" allowfullscreen></iframe>"#,
                escape_html(&video.alias)
            ),
            None => r#"<iframe id="player" name="player" title="Video player" allow="accelerometer; gyroscope; autoplay; encrypted-media; picture-in-picture" allowfullscreen></iframe>"#.to_string(),
        },
        first_alias = first.map_or(String::new(), |video| escape_html(&video.alias)),
        version = env!("CARGO_PKG_VERSION"),
    );

    let mut response = Response::new(Body::new(Bytes::from(page)));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    // Signed URLs carry tokens: never leak them in a Referer.
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(policy) = HeaderValue::try_from(content_security_policy(&snapshot.origin)) {
        headers.insert(CONTENT_SECURITY_POLICY, policy);
    }
    Ok(response)
}

/// Everything from this gateway; the player and thumbnails also from the Stream origin
/// (where `/watch` redirects); no inline script.
fn content_security_policy(stream_origin: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self' {stream_origin}; frame-src 'self' {stream_origin}; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
    )
}

/// "Signed in as …" or an invitation to sign in.
fn whoami(snapshot: &Snapshot, identity: &Identity) -> String {
    match identity.principal() {
        Some(principal) => {
            let how = match &principal.kind {
                PrincipalKind::ApiKey => "API key".to_string(),
                PrincipalKind::User => "password".to_string(),
                PrincipalKind::Jwt { issuer } => format!("a session from {}", issuer.iss),
            };
            let groups = if principal.groups.is_empty() {
                String::new()
            } else {
                let names: Vec<&str> = principal.groups.iter().map(|g| &**g).collect();
                format!(" · groups: {}", escape_html(&names.join(", ")))
            };
            format!(
                "Signed in as <strong id=\"subject\">{}</strong> with {}{groups}",
                escape_html(&principal.name),
                escape_html(&how),
            )
        }
        None => {
            let settings = &snapshot.settings.identity;
            let sign_in = if snapshot.auth.basic_enabled() || settings.login_url.is_some() {
                " <a id=\"sign-in\" href=\"/sign-in\">Sign in</a>"
            } else {
                ""
            };
            format!("Not signed in: you see the videos open to anyone.{sign_in}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_found_only_by_exact_name() {
        assert_eq!(Asset::from_path("/assets/demo.js"), Some(Asset::Script));
        assert_eq!(Asset::from_path("/assets/demo.css"), Some(Asset::Style));
        assert_eq!(Asset::from_path("/assets/favicon.svg"), Some(Asset::Icon));
        assert_eq!(Asset::from_path("/assets/../demo.js"), None);
        assert_eq!(Asset::from_path("/assets/"), None);
    }

    #[test]
    fn the_policy_allows_the_stream_origin_for_frames_and_images_only() {
        let csp = content_security_policy("https://customer-x.cloudflarestream.com");
        assert!(csp.contains("frame-src 'self' https://customer-x.cloudflarestream.com"));
        assert!(csp.contains("img-src 'self' https://customer-x.cloudflarestream.com"));
        assert!(csp.contains("script-src 'self';"));
        assert!(!csp.contains("unsafe-inline"));
    }
}
