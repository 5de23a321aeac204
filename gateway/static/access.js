// Read access for pricefeed's page (docs/ACCESS.md): takes a token from ?access_token= on
// the page's own URL, or from a prompt, and keeps it in the pricefeed_token cookie, which
// the browser then sends with the stream and every REST read (an EventSource cannot set
// headers). Says clearly when the gateway refuses the stream or the token expires.
// Loaded before app.js; app.js hands each EventSource to pricefeedAccess.watch().
"use strict";

(() => {
  const COOKIE = "pricefeed_token";
  const PROBE_URL = "/api/watchlist";   // any read: its JSON says why a token is refused

  function setToken(token) {
    // SameSite=Strict: no other site can make the browser send it.
    document.cookie = `${COOKIE}=${encodeURIComponent(token)}; path=/; SameSite=Strict`;
  }

  // A token in the address bar is taken once and removed from it, so it does not stay in
  // the history, a bookmark or a screenshot.
  const url = new URL(window.location.href);
  const given = url.searchParams.get("access_token");
  if (given) {
    setToken(given.trim());
    url.searchParams.delete("access_token");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }

  let banner = null;

  function showBanner(text) {
    if (banner === null) {
      banner = document.createElement("div");
      banner.id = "access-banner";
      banner.setAttribute("role", "alert");
      banner.style.cssText = "margin:0.5rem 0;padding:0.6rem 0.8rem;border-radius:6px;" +
        "background:#fdecea;color:#611a15;border:1px solid #f5c2c0;font-size:0.95rem";
      const message = document.createElement("span");
      message.className = "access-message";
      const button = document.createElement("button");
      button.type = "button";
      button.id = "access-token-button";
      button.textContent = "Enter an access token";
      button.style.marginLeft = "0.8rem";
      button.addEventListener("click", askForToken);
      banner.append(message, button);
      const header = document.querySelector("header");
      header.after(banner);
    }
    banner.querySelector(".access-message").textContent = text;
    banner.hidden = false;
  }

  function showNote(text) {
    const note = document.createElement("p");
    note.id = "access-delayed";
    note.textContent = text;
    note.style.cssText = "margin:0.4rem 0;color:#7a5b00;font-size:0.9rem";
    document.querySelector("header").after(note);
  }

  function showStatus(text) {
    const box = document.getElementById("status");
    if (!box) return;
    box.dataset.state = "down";
    document.body.dataset.state = "down";
    document.getElementById("status-text").textContent = text;
  }

  function askForToken() {
    const token = window.prompt("Access token for this gateway (a JWT):");
    if (token && token.trim()) {
      setToken(token.trim());
      window.location.reload();
    }
  }

  // The stream failed for good: ask a REST read why; a 401/403 is about the token.
  async function explainFailure() {
    let response;
    try {
      response = await fetch(PROBE_URL);
    } catch (_) {
      return;                            // unreachable: app.js's status dot says so
    }
    if (response.status !== 401 && response.status !== 403) return;
    let detail = "";
    try {
      detail = (await response.json()).detail || "";
    } catch (_) { /* no JSON body */ }
    const what = response.status === 401 ? "Access refused" : "Not allowed";
    showBanner(`${what}: ${detail || "this gateway needs an access token"}.`);
    showStatus("access refused");
  }

  let delayedShown = false;

  function watch(source) {
    // A delayed entitlement's prices come as `event: delayed`: shown like live ones, and
    // the page says they are delayed.
    source.addEventListener("delayed", (event) => {
      if (!delayedShown) {
        delayedShown = true;
        showNote("Delayed data: these prices are not real time (your access is delayed).");
      }
      if (typeof source.onmessage === "function") source.onmessage(event);
    });
    source.addEventListener("open", () => { if (banner !== null) banner.hidden = true; });
    source.addEventListener("expired", () => {
      source.close();                    // reconnecting with the same token would be refused
      showBanner("Your access token has expired: prices have stopped. Enter a new token.");
      showStatus("access token expired");
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) explainFailure();
    });
  }

  window.pricefeedAccess = { watch, askForToken };
})();
