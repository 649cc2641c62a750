// wfe-sqlite console: refresh the page's live region every few seconds without a full reload.
// The server renders (and escapes) every fragment; this file only swaps it in. No framework.
"use strict";

(function () {
  const region = document.getElementById("region");
  if (!region || !region.dataset.refresh) {
    return;
  }
  const seconds = Math.max(1, Number(region.dataset.refresh) || 5);
  const state = document.getElementById("live-state");
  const toggle = document.getElementById("live-toggle");
  let paused = false;
  let busy = false;

  function show(text, kind) {
    if (!state) return;
    state.textContent = text;
    state.className = "live-state" + (kind ? " " + kind : "");
  }

  function staleReason(status) {
    // What the header says when the region could not be refreshed: a reason, not a status code.
    if (status === 404) return "stale: no longer there";
    if (status === 503) return "stale: database unavailable";
    if (status === 421) return "stale: wrong host name";
    return "stale: the server answered " + status;
  }

  function interacting() {
    // Leave the region alone while someone selects text in it or types in a field of it.
    const selection = window.getSelection();
    if (selection && !selection.isCollapsed && region.contains(selection.anchorNode)) return true;
    const focused = document.activeElement;
    return Boolean(focused && region.contains(focused) && focused.matches("input, select, textarea"));
  }

  async function refresh() {
    if (paused || busy || document.hidden || interacting()) return;
    busy = true;
    try {
      const response = await fetch(window.location.href, {
        headers: { "X-Console-Fragment": "1" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (response.status === 401) {
        window.location.reload(); // the session ended: show the sign-in form
        return;
      }
      if (!response.ok) {
        show(staleReason(response.status), "stale");
        return;
      }
      const html = await response.text();
      const open = new Set();
      region.querySelectorAll("details[data-key][open]").forEach(function (d) { open.add(d.dataset.key); });
      region.innerHTML = html;
      region.querySelectorAll("details[data-key]").forEach(function (d) {
        if (open.has(d.dataset.key)) d.open = true;
      });
      show("live · " + new Date().toISOString().slice(11, 19) + " UTC", ""); // UTC, as every time on the pages
    } catch (error) {
      show("offline: the console does not answer", "stale");
    } finally {
      busy = false;
    }
  }

  if (toggle) {
    toggle.addEventListener("click", function () {
      paused = !paused;
      toggle.textContent = paused ? "Resume" : "Pause";
      toggle.setAttribute("aria-pressed", paused ? "true" : "false");
      show(paused ? "paused" : "live", paused ? "paused" : "");
      if (!paused) refresh();
    });
  }
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) refresh();
  });
  window.setInterval(refresh, seconds * 1000);
})();
