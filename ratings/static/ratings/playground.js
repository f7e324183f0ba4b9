// The playground: a visitor's prompt becomes a request; its status is polled while two clips
// are generated, and the pair goes to the shared blind-pair player (player.js) only once the
// server says it is ready with a lease, so half a pair is never shown. After the vote the page
// shows what the server reveals and offers the preferred clip for download.
(() => {
  "use strict";

  const root = document.getElementById("playground");
  const el = (id) => document.getElementById(id);
  const POLL_MS = 500;
  const VIEWS = ["prompt-form", "progress", "failed", "stage", "result"];
  const CHOICE_WORDS = {
    A: "You preferred clip A.",
    B: "You preferred clip B.",
    tie: "You found them about the same.",
    both_bad: "You found both clips bad.",
  };

  let statusUrl = null; // the request on screen, if any
  let pollTimer = null;
  let example = null; // {id, text} of the chip the prompt came from, while it is unchanged

  // Read fresh for every POST: a guest's first request logs them in, which rotates the token.
  function csrfToken() {
    const name = `${root.dataset.csrfCookie}=`;
    const cookie = document.cookie.split("; ").find((part) => part.startsWith(name));
    return cookie ? decodeURIComponent(cookie.slice(name.length)) : root.dataset.csrf;
  }

  function setMessage(text, isError = false) {
    el("message").textContent = text;
    el("message").classList.toggle("error", isError);
  }

  function showView(name) {
    VIEWS.forEach((view) => { el(view).hidden = view !== name; });
  }

  const player = window.BlindPair.create({
    root,
    protocol: "preference",
    clips: el("clips"),
    gate: el("gate"),
    template: el("clip-template"),
    voteUrl: root.dataset.voteUrl,
    csrf: csrfToken,
    setMessage,
    voteExtra: () => {
      const comment = el("comment").value.trim();
      return comment ? { comment } : {};
    },
    onVoted: () => {
      player.clear();
      setMessage("");
      return poll();
    },
    onRefused: (status) => {
      if (status === 409 || status === 404) setTimeout(poll, 1500);
    },
  });

  async function api(url, options = {}) {
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    if (options.method === "POST") {
      headers["Content-Type"] = "application/json";
      headers["X-CSRFToken"] = csrfToken();
    }
    const response = await fetch(url, { ...options, headers });
    const body = await response.json().catch(() => ({}));
    return { response, body };
  }

  // --- The prompt -----------------------------------------------------------------------

  function updateCount() {
    el("prompt-count").textContent = String(el("prompt-input").value.length);
    if (example && el("prompt-input").value !== example.text) example = null;
  }

  async function loadExamples() {
    let examples;
    try {
      const { response, body } = await api(root.dataset.examplesUrl);
      if (!response.ok) return;
      examples = Array.isArray(body) ? body : body.results || [];
    } catch (error) {
      return; // examples are a convenience: the prompt box works without them
    }
    const chips = examples.map((item) => {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip";
      chip.textContent = item.text;
      chip.addEventListener("click", () => {
        el("prompt-input").value = item.text;
        updateCount();
        example = item;
        el("prompt-input").focus();
      });
      return chip;
    });
    el("examples").append(...chips);
    el("examples").hidden = chips.length === 0;
  }

  async function submitPrompt(event) {
    event.preventDefault();
    const text = el("prompt-input").value.trim();
    if (!text) {
      setMessage("Type a prompt or pick an example first.", true);
      return;
    }
    el("prompt-submit").disabled = true;
    setMessage("");
    try {
      const payload = example && example.text === text ? { example: example.id } : { prompt: text };
      const { response, body } = await api(root.dataset.requestsUrl, {
        method: "POST",
        body: JSON.stringify(payload),
      });
      if (!response.ok) {
        setMessage(body.error || body.detail || `The server answered ${response.status}.`, true);
        return;
      }
      follow(body.url, body.id);
    } catch (error) {
      setMessage("Cannot reach the server; try again in a moment.", true);
    } finally {
      el("prompt-submit").disabled = false;
    }
  }

  function newPrompt() {
    stopPolling();
    player.clear();
    statusUrl = null;
    history.replaceState(null, "", root.dataset.pageUrl);
    el("comment").value = "";
    showView("prompt-form");
    setMessage("");
    el("prompt-input").focus();
  }

  // --- Following a request --------------------------------------------------------------

  function follow(url, id) {
    statusUrl = url;
    if (id !== undefined) history.replaceState(null, "", `${root.dataset.pageUrl}?request=${id}`);
    showProgress({ status: "queued", clips_done: 0, clips_total: 2 });
    poll();
  }

  function stopPolling() {
    clearTimeout(pollTimer);
    pollTimer = null;
  }

  async function poll() {
    stopPolling();
    const url = statusUrl;
    if (url === null) return;
    let result;
    try {
      result = await api(url);
    } catch (error) {
      setMessage("Cannot reach the server; trying again…", true);
      pollTimer = setTimeout(poll, 3000);
      return;
    }
    if (url !== statusUrl) return; // the visitor moved on meanwhile
    const { response, body } = result;
    if (!response.ok) {
      setMessage(body.error || body.detail || `The server answered ${response.status}.`, true);
      if (response.status >= 500) pollTimer = setTimeout(poll, 3000);
      else showView("prompt-form");
      return;
    }
    render(body);
  }

  function render(status) {
    root.querySelectorAll(".request-prompt").forEach((q) => { q.textContent = status.prompt || ""; });
    if (status.status === "failed") return showFailed(status);
    if (status.status === "ready" && status.voted) return showResult(status);
    if (status.status === "ready" && status.lease) return showPair(status.lease);
    if (status.status === "ready") {
      // Ready but no lease to vote with (it lapsed): nothing can be voted on here.
      player.clear();
      showView("failed");
      el("failed-text").textContent = "This pair can no longer be rated. Try a new prompt.";
      el("retry").hidden = true;
      return;
    }
    showProgress(status);
    pollTimer = setTimeout(poll, POLL_MS);
  }

  function showProgress(status) {
    const total = status.clips_total || 2;
    const done = Math.min(status.clips_done || 0, total);
    el("progress-bar").max = total;
    // Queued: an indeterminate bar, since nothing is being made yet.
    if (status.status === "queued") el("progress-bar").removeAttribute("value");
    else el("progress-bar").value = done;
    el("progress-text").textContent = status.status === "queued"
      ? "Queued: waiting for a free generator…"
      : `Generating clip ${Math.min(done + 1, total)} of ${total}…`;
    if (el("progress").hidden) {
      player.clear();
      showView("progress");
    }
  }

  function showFailed(status) {
    player.clear();
    el("failed-text").textContent = status.error || "Making the clips failed.";
    el("retry").hidden = false;
    el("retry").disabled = false;
    showView("failed");
  }

  function showPair(lease) {
    if (!el("stage").hidden) return; // already on stage: keep what has been heard
    player.show(lease);
    showView("stage");
    setMessage("");
  }

  function showResult(status) {
    player.clear();
    const reveal = status.reveal || {};
    el("result-choice").textContent = CHOICE_WORDS[reveal.choice] || "";
    el("reveal").hidden = !(reveal.A && reveal.B);
    el("reveal-a").textContent = reveal.A || "";
    el("reveal-b").textContent = reveal.B || "";
    el("download").hidden = !reveal.download_url;
    if (reveal.download_url) el("download").href = reveal.download_url;
    showView("result");
  }

  async function retry() {
    el("retry").disabled = true;
    setMessage("");
    try {
      const { response, body } = await api(`${statusUrl}retry/`, { method: "POST", body: "{}" });
      if (!response.ok) {
        setMessage(body.error || body.detail || `The server answered ${response.status}.`, true);
        el("retry").disabled = false;
        return;
      }
      showProgress({ status: "queued", clips_done: 0, clips_total: 2 });
      poll();
    } catch (error) {
      setMessage("Cannot reach the server; try again in a moment.", true);
      el("retry").disabled = false;
    }
  }

  el("prompt-input").addEventListener("input", updateCount);
  // Enter sends the prompt (Shift+Enter still breaks the line), as in a chat box.
  el("prompt-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      el("prompt-form").requestSubmit();
    }
  });
  el("prompt-form").addEventListener("submit", submitPrompt);
  el("retry").addEventListener("click", retry);
  root.querySelectorAll(".new-prompt").forEach((button) => button.addEventListener("click", newPrompt));
  loadExamples();
  if (root.dataset.resumeUrl) follow(root.dataset.resumeUrl);
  else showView("prompt-form");
})();
