// The rater page: leases the next item, hands it to the shared blind-pair player (player.js)
// and moves on after each vote, until the server has nothing more for this rater.
(() => {
  "use strict";

  const root = document.getElementById("rater");
  const el = (id) => document.getElementById(id);

  function setMessage(text, isError = false) {
    el("message").textContent = text;
    el("message").classList.toggle("error", isError);
  }

  const player = window.BlindPair.create({
    root,
    protocol: root.dataset.protocol,
    clips: el("clips"),
    gate: el("gate"),
    template: el("clip-template"),
    submitScores: el("submit-scores"),
    voteUrl: root.dataset.voteUrl,
    csrf: root.dataset.csrf,
    setMessage,
    onVoted: () => {
      el("voted").textContent = String(Number(el("voted").textContent) + 1);
      return loadNext();
    },
    onRefused: (status) => {
      if (status === 409 || status === 404) setTimeout(loadNext, 2500);
    },
  });

  function showAssignment(data) {
    player.show(data);
    el("prompt-text").textContent = data.prompt;
    // A qualification item's "prompt" is its question ("Which clip is louder?"). Gold and
    // trap items carry no marker: they must look like any other pair.
    const isCheck = data.phase === "qualification";
    el("check-banner").hidden = !isCheck;
    el("prompt-label").textContent = isCheck ? "Question:" : "Prompt:";
    el("stage").hidden = false;
    el("done").hidden = true;
    setMessage("");
  }

  // Why the server has nothing more for this rater (its Rating-Done header).
  const DONE_REASONS = {
    quota: "You have cast as many votes as your account allows.",
    campaign_cap: "You have rated as many items as this campaign allows per rater.",
    session_complete: "You have finished this session.",
    no_session: "Open this study from your Prolific or MTurk link to continue.",
  };

  function showDone(response) {
    player.clear();
    // A finished crowd session goes to its completion page (the code, or MTurk's form).
    if (response && response.headers.get("Rating-Session") === "completed" && root.dataset.completeUrl) {
      window.location.assign(root.dataset.completeUrl);
      return;
    }
    const reason = response ? DONE_REASONS[response.headers.get("Rating-Done")] : null;
    if (reason) el("done-reason").textContent = reason;
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
    if (response.status === 204) return showDone(response);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      setMessage(body.detail || `The server answered ${response.status}.`, true);
      if (response.status >= 500 || response.status === 409) setTimeout(loadNext, 5000);
      return;
    }
    showAssignment(body);
  }

  loadNext();
})();
