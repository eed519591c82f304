// streamgate demo page: play a video, sign a URL, show the token and the embed snippet.
// Served from the gateway itself; no external scripts.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const player = $("player");
  const form = $("sign-form");
  const input = $("video-id");
  const errorBox = $("error");
  const result = $("result");
  let countdown = null;

  // Pick a video from the list: play it through /watch and put it in the form.
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.play");
    if (!button) return;
    const video = button.dataset.video;
    player.src = "/watch/" + encodeURIComponent(video);
    $("now-playing").textContent = button.dataset.title || video;
    input.value = video;
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const video = input.value.trim();
    errorBox.hidden = true;
    result.hidden = true;
    $("sign-button").disabled = true;
    try {
      const response = await fetch("/api/getSignedURL", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ video_id: video }),
      });
      let body = null;
      try {
        body = await response.json();
      } catch (_) {
        body = null;
      }
      if (!response.ok) {
        const reason = body && body.error ? body.error : response.statusText;
        showError(response.status + ": " + reason);
        return;
      }
      showToken(video, body);
    } catch (error) {
      showError("the request failed: " + error);
    } finally {
      $("sign-button").disabled = false;
    }
  });

  $("copy-snippet").addEventListener("click", async () => {
    const snippet = $("embed-snippet");
    try {
      await navigator.clipboard.writeText(snippet.value);
    } catch (_) {
      snippet.select();
      document.execCommand("copy");
    }
    $("copy-snippet").textContent = "Copied";
    setTimeout(() => ($("copy-snippet").textContent = "Copy"), 1500);
  });

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function showToken(video, body) {
    const parts = body.token.split(".");
    $("token").textContent = body.token;
    $("header").textContent = pretty(decodePart(parts[0]));
    $("claims").textContent = pretty(decodePart(parts[1]));
    const link = $("signed-url");
    link.href = body.url;
    link.textContent = body.url;
    const expires = new Date(body.expires_at);
    $("expires").textContent =
      expires.toLocaleString() + " local, " + expires.toISOString().replace(".000Z", "Z") + " UTC";
    if (countdown) clearInterval(countdown);
    const tick = () => ($("time-left").textContent = timeLeft(expires));
    tick();
    countdown = setInterval(tick, 1000);
    $("embed-snippet").value =
      '<iframe src="' + escapeAttribute(location.origin + "/watch/" + encodeURIComponent(video)) +
      '" style="border: none; width: 100%; aspect-ratio: 16 / 9;"' +
      ' allow="accelerometer; gyroscope; autoplay; encrypted-media; picture-in-picture"' +
      " allowfullscreen></iframe>";
    result.hidden = false;
  }

  // The middle of a JWT is base64url JSON; show it, or say it cannot be read.
  function decodePart(part) {
    try {
      const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
      const padded = base64 + "===".slice((base64.length + 3) % 4);
      const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch (_) {
      return "(not readable)";
    }
  }

  function pretty(value) {
    return typeof value === "string" ? value : JSON.stringify(value, null, 2);
  }

  function timeLeft(expires) {
    let seconds = Math.floor((expires.getTime() - Date.now()) / 1000);
    if (seconds <= 0) return "expired";
    const hours = Math.floor(seconds / 3600);
    seconds -= hours * 3600;
    const minutes = Math.floor(seconds / 60);
    seconds -= minutes * 60;
    return (hours ? hours + " h " : "") + minutes + " min " + seconds + " s left";
  }

  function escapeAttribute(text) {
    return text.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;");
  }
})();
