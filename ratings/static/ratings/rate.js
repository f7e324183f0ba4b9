// The rater page: plays the leased clips, measures how long each was heard, unlocks the vote
// after the listening gate, and sends the vote with an idempotency key that survives retries
// and reloads. The server re-checks everything; this page only makes the honest path easy.
(() => {
  "use strict";

  const root = document.getElementById("rater");
  const protocol = root.dataset.protocol;
  const scored = protocol !== "preference";
  const el = (id) => document.getElementById(id);
  const RETRY_MAX_MS = 10000;

  let current = null; // {assignment, clips: [{slot, audio, needMs, node}], scores, sending}
  let selectedSlot = "A";

  function setMessage(text, isError = false) {
    el("message").textContent = text;
    el("message").classList.toggle("error", isError);
  }

  // A v4 UUID from getRandomValues: crypto.randomUUID exists only on secure origins, and
  // raters may reach a study server over plain http on a LAN.
  function uuid4() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  // One key per assignment, kept across reloads, so a vote resent after a lost response is
  // recognised by the server as the same vote.
  function idempotencyKey(assignmentId) {
    const storageKey = `vote-key-${assignmentId}`;
    let key = sessionStorage.getItem(storageKey);
    if (!key) {
      key = uuid4();
      sessionStorage.setItem(storageKey, key);
    }
    return key;
  }

  // Heard time is the union of played ranges: replaying a part does not count twice, and
  // seeking to the end does not count as listening.
  function heardMs(audio) {
    let seconds = 0;
    for (let i = 0; i < audio.played.length; i += 1) {
      seconds += audio.played.end(i) - audio.played.start(i);
    }
    return Math.round(seconds * 1000);
  }

  function gateOpen() {
    return current !== null && current.clips.every((clip) => heardMs(clip.audio) >= clip.needMs);
  }

  function scoresComplete() {
    return current.clips.every((clip) => current.scores[clip.slot] !== undefined);
  }

  function refresh() {
    if (current === null) return;
    for (const clip of current.clips) {
      const heard = heardMs(clip.audio);
      const share = clip.needMs > 0 ? Math.min(heard / clip.needMs, 1) : 1;
      clip.node.querySelector(".fill").style.width = `${Math.round(share * 100)}%`;
      const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;
      clip.node.querySelector(".heard").textContent = heard >= clip.needMs
        ? `Heard enough (${seconds(heard)})`
        : `Heard ${seconds(heard)} of the ${seconds(clip.needMs)} needed`;
      clip.node.classList.toggle("heard-enough", heard >= clip.needMs);
      clip.node.classList.toggle("playing", !clip.audio.paused);
      clip.node.classList.toggle("selected", scored && clip.slot === selectedSlot);
      // The icon is drawn in CSS: the pause sign (U+23F8) is missing from common fonts.
      clip.node.querySelector(".verb").textContent = clip.audio.paused ? "Play" : "Pause";
    }
    const open = gateOpen();
    const ready = open && !current.sending && (!scored || scoresComplete());
    if (scored) {
      el("submit-scores").disabled = !ready;
    } else {
      root.querySelectorAll("[data-choice]").forEach((button) => { button.disabled = !ready; });
    }
    const what = current.clips.length > 1 ? "each clip" : "the clip";
    el("gate").textContent = open
      ? (scored && !scoresComplete() ? "Now give a score to every clip." : "Voting is unlocked.")
      : `Listen to ${what} for the time shown to unlock voting.`;
  }

  function togglePlay(slot) {
    if (current === null) return;
    const clip = current.clips.find((c) => c.slot === slot);
    if (!clip) return;
    selectedSlot = slot;
    // One clip at a time: listening to both at once is not listening to either.
    for (const other of current.clips) {
      if (other !== clip) other.audio.pause();
    }
    if (clip.audio.paused) {
      clip.audio.play().catch(() => setMessage("The browser blocked playback; click Play.", true));
    } else {
      clip.audio.pause();
    }
    refresh();
  }

  function pauseAll() {
    if (current) current.clips.forEach((clip) => clip.audio.pause());
    refresh();
  }

  function buildClip(clipData) {
    const node = el("clip-template").content.firstElementChild.cloneNode(true);
    node.dataset.slot = clipData.slot;
    node.querySelectorAll(".slot").forEach((span) => { span.textContent = clipData.slot; });
    node.querySelector(".key").textContent = clipData.slot;
    const audio = node.querySelector("audio");
    audio.src = clipData.url;
    ["timeupdate", "play", "pause", "ended"].forEach((event) => audio.addEventListener(event, refresh));
    node.querySelector(".play").addEventListener("click", () => togglePlay(clipData.slot));
    const fieldset = node.querySelector(".scores");
    if (scored) {
      fieldset.hidden = false;
      fieldset.querySelectorAll("input").forEach((input) => {
        input.name = `score-${clipData.slot}`;
        input.addEventListener("change", () => setScore(clipData.slot, Number(input.value)));
      });
    }
    return { slot: clipData.slot, audio, needMs: clipData.required_listen_ms, node };
  }

  function setScore(slot, value) {
    if (current === null || !current.clips.some((clip) => clip.slot === slot)) return;
    current.scores[slot] = value;
    const input = root.querySelector(`input[name="score-${slot}"][value="${value}"]`);
    if (input) input.checked = true;
    refresh();
  }

  function showAssignment(data) {
    pauseAll();
    const clips = data.clips.map(buildClip);
    el("clips").replaceChildren(...clips.map((clip) => clip.node));
    el("prompt-text").textContent = data.prompt;
    current = { assignment: data.assignment, clips, scores: {}, sending: false };
    selectedSlot = "A";
    el("stage").hidden = false;
    el("done").hidden = true;
    setMessage("");
    refresh();
  }

  function showDone() {
    current = null;
    el("stage").hidden = true;
    el("done").hidden = false;
    setMessage("");
  }

  async function loadNext() {
    let response;
    try {
      response = await fetch(root.dataset.nextUrl, { headers: { Accept: "application/json" } });
    } catch (error) {
      setMessage("Cannot reach the server; trying again…", true);
      setTimeout(loadNext, 3000);
      return;
    }
    if (response.status === 204) return showDone();
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      setMessage(body.detail || `The server answered ${response.status}.`, true);
      if (response.status >= 500 || response.status === 409) setTimeout(loadNext, 5000);
      return;
    }
    showAssignment(body);
  }

  function voteBody(extra) {
    const listen = {};
    current.clips.forEach((clip) => { listen[clip.slot] = heardMs(clip.audio); });
    return {
      assignment: current.assignment,
      idempotency_key: idempotencyKey(current.assignment),
      listen_ms: listen,
      ...extra,
    };
  }

  async function submit(extra) {
    if (current === null || current.sending || !gateOpen()) return;
    current.sending = true;
    pauseAll();
    const body = JSON.stringify(voteBody(extra));
    const assignment = current.assignment;
    let delay = 1000;
    for (;;) {
      let response = null;
      try {
        response = await fetch(root.dataset.voteUrl, {
          method: "POST",
          headers: {
            "Content-Type": "application/json",
            Accept: "application/json",
            "X-CSRFToken": root.dataset.csrf,
          },
          body,
        });
      } catch (error) {
        response = null; // network failure: the vote may or may not have arrived
      }
      if (response !== null && response.ok) {
        sessionStorage.removeItem(`vote-key-${assignment}`);
        el("voted").textContent = String(Number(el("voted").textContent) + 1);
        return loadNext();
      }
      if (response !== null && response.status < 500 && response.status !== 429) {
        const error = await response.json().catch(() => ({}));
        current.sending = false;
        setMessage(error.detail || `The vote was refused (${response.status}).`, true);
        if (response.status === 409 || response.status === 404) setTimeout(loadNext, 2500);
        refresh();
        return;
      }
      // Same body, same key: the server stores it once however often it arrives.
      setMessage("Connection problem: resending your vote (it will be counted once)…", true);
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
  }

  function submitScores() {
    if (current !== null && scoresComplete()) submit({ scores: { ...current.scores } });
  }

  const CHOICE_KEYS = { 1: "A", 2: "B", 3: "tie", 4: "both_bad" };

  function onKey(event) {
    if (event.target.matches("input[type=text], textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
    if (current === null) return;
    const key = event.key.toLowerCase();
    if (key === "a" || key === "b") {
      togglePlay(key.toUpperCase());
    } else if (key === " ") {
      pauseAll();
    } else if (!scored && CHOICE_KEYS[key]) {
      submit({ choice: CHOICE_KEYS[key] });
    } else if (scored && /^[1-5]$/.test(key)) {
      setScore(selectedSlot, Number(key));
    } else if (scored && key === "tab" && current.clips.length > 1) {
      selectedSlot = selectedSlot === "A" ? "B" : "A";
      refresh();
    } else if (scored && key === "enter") {
      submitScores();
    } else {
      return;
    }
    event.preventDefault();
  }

  root.querySelectorAll("[data-choice]").forEach((button) => {
    button.addEventListener("click", () => submit({ choice: button.dataset.choice }));
  });
  if (scored) el("submit-scores").addEventListener("click", submitScores);
  document.addEventListener("keydown", onKey);
  setInterval(refresh, 250);
  loadNext();
})();
