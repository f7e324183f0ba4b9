// The blind-pair player shared by the rating page and the playground: it plays the leased
// clips one at a time, measures how long each was heard, unlocks the vote after the listening
// gate, and sends the vote with an idempotency key that survives retries and reloads. The
// server re-checks everything; this module only makes the honest path easy.
//
//   const player = BlindPair.create({root, protocol, clips, gate, template, voteUrl, csrf,
//     setMessage, onVoted, onRefused, voteExtra});
//   (csrf: the token, or a function that returns the current one)
//   player.show(lease);   // a lease as GET /api/v1/assignments/next/ returns it
//   player.clear();       // nothing on stage: keys and buttons do nothing
window.BlindPair = (() => {
  "use strict";

  const RETRY_MAX_MS = 10000;
  const CHOICE_KEYS = { 1: "A", 2: "B", 3: "tie", 4: "both_bad" };
  // Shortcuts never fire while the person is typing (a prompt, a comment).
  const TYPING = "input[type=text], input[type=search], input:not([type]), textarea, select, [contenteditable]";

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

  function create(options) {
    const { root, protocol, voteUrl, csrf } = options;
    const scored = protocol !== "preference";
    const setMessage = options.setMessage || (() => {});
    const onVoted = options.onVoted || (() => {});
    const onRefused = options.onRefused || (() => {});
    const voteExtra = options.voteExtra || (() => ({}));
    const choiceButtons = () => root.querySelectorAll("[data-choice]");

    let current = null; // {assignment, clips: [{slot, audio, needMs, node}], scores, sending}
    let selectedSlot = "A";

    function gateOpen() {
      return current !== null && current.clips.every((clip) => heardMs(clip.audio) >= clip.needMs);
    }

    function scoresComplete() {
      return current.clips.every((clip) => current.scores[clip.slot] !== undefined);
    }

    function refreshClip(clip) {
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

    function refresh() {
      if (current === null) return;
      current.clips.forEach(refreshClip);
      const open = gateOpen();
      const ready = open && !current.sending && (!scored || scoresComplete());
      if (scored) {
        options.submitScores.disabled = !ready;
      } else {
        choiceButtons().forEach((button) => { button.disabled = !ready; });
      }
      const what = current.clips.length > 1 ? "each clip" : "the clip";
      options.gate.textContent = open
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

    function setScore(slot, value) {
      if (current === null || !current.clips.some((clip) => clip.slot === slot)) return;
      current.scores[slot] = value;
      const input = root.querySelector(`input[name="score-${slot}"][value="${value}"]`);
      if (input) input.checked = true;
      refresh();
    }

    function buildClip(clipData) {
      const node = options.template.content.firstElementChild.cloneNode(true);
      node.dataset.slot = clipData.slot;
      node.querySelectorAll(".slot").forEach((span) => { span.textContent = clipData.slot; });
      node.querySelector(".key").textContent = clipData.slot;
      const audio = node.querySelector("audio");
      audio.src = clipData.url;
      ["timeupdate", "play", "pause", "ended"].forEach((event) => audio.addEventListener(event, refresh));
      node.querySelector(".play").addEventListener("click", () => togglePlay(clipData.slot));
      const fieldset = node.querySelector(".scores");
      if (scored && fieldset) {
        fieldset.hidden = false;
        fieldset.querySelectorAll("input").forEach((input) => {
          input.name = `score-${clipData.slot}`;
          input.addEventListener("change", () => setScore(clipData.slot, Number(input.value)));
        });
      }
      return { slot: clipData.slot, audio, needMs: clipData.required_listen_ms, node };
    }

    function show(lease) {
      pauseAll();
      const clips = lease.clips.map(buildClip);
      options.clips.replaceChildren(...clips.map((clip) => clip.node));
      current = { assignment: lease.assignment, clips, scores: {}, sending: false };
      selectedSlot = "A";
      refresh();
    }

    function clear() {
      if (current) current.clips.forEach((clip) => clip.audio.pause());
      current = null;
    }

    function voteBody(extra) {
      const listen = {};
      current.clips.forEach((clip) => { listen[clip.slot] = heardMs(clip.audio); });
      return {
        assignment: current.assignment,
        idempotency_key: idempotencyKey(current.assignment),
        listen_ms: listen,
        ...voteExtra(),
        ...extra,
      };
    }

    async function post(body) {
      const token = typeof csrf === "function" ? csrf() : csrf;
      try {
        return await fetch(voteUrl, {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": token },
          body,
        });
      } catch (error) {
        return null; // network failure: the vote may or may not have arrived
      }
    }

    async function submit(extra) {
      if (current === null || current.sending || !gateOpen()) return;
      current.sending = true;
      pauseAll();
      const body = JSON.stringify(voteBody(extra));
      const assignment = current.assignment;
      let delay = 1000;
      for (;;) {
        const response = await post(body);
        if (response !== null && response.ok) {
          sessionStorage.removeItem(`vote-key-${assignment}`);
          const result = await response.json().catch(() => ({}));
          return onVoted(result, assignment);
        }
        if (response !== null && response.status < 500 && response.status !== 429) {
          const error = await response.json().catch(() => ({}));
          current.sending = false;
          setMessage(error.detail || error.error || `The vote was refused (${response.status}).`, true);
          onRefused(response.status, error);
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

    function onKey(event) {
      if (event.target.matches(TYPING) || event.ctrlKey || event.metaKey || event.altKey) return;
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

    choiceButtons().forEach((button) => {
      button.addEventListener("click", () => submit({ choice: button.dataset.choice }));
    });
    if (scored) options.submitScores.addEventListener("click", submitScores);
    document.addEventListener("keydown", onKey);
    setInterval(refresh, 250);

    return { show, clear, pauseAll, active: () => current !== null };
  }

  return { create, heardMs };
})();
