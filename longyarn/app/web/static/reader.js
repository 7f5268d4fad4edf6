// The reading room's own script: choices and actions without a page load, the next paragraph
// streamed in as it is written (server-sent events), number keys for choices, and a character
// count. Every page works without it: forms post, and a page being written refreshes itself.
(() => {
  "use strict";

  const GONE = "The reading room could not be reached; your story is saved as it was; check your connection and choose again.";
  let following = null;

  const $ = (selector) => document.querySelector(selector);

  function setBusy(busy) {
    document.querySelectorAll("form.move button, form.move textarea, #tools form button").forEach((control) => {
      control.disabled = busy;
    });
  }

  function say(message) {
    const problem = $("#problem");
    if (!problem) return;
    problem.textContent = message || "";
    problem.hidden = !message;
  }

  // Show the story as stored now: the page's content, fetched again and swapped in.
  async function refresh(focusLatest) {
    const response = await fetch(location.pathname + location.search, { headers: { Accept: "text/html" } });
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const main = page.querySelector("main");
    if (!main) { location.reload(); return; }
    $("main").replaceChildren(...main.childNodes);
    countCharacters();
    const article = $("article.story");
    if (article && article.dataset.writing) { follow(article.dataset.stream); return; }
    const latest = $("#latest");
    if (focusLatest && latest) {
      latest.focus({ preventScroll: true });
      latest.scrollIntoView({ block: "nearest" });
    }
  }

  function follow(address) {
    if (following) following.close();
    setBusy(true);
    const writing = $("#writing");
    const status = $("#writing-status");
    const streaming = $("#streaming");
    if (writing) writing.hidden = false;
    if (streaming) streaming.scrollIntoView({ block: "nearest" });
    const source = new EventSource(address);
    following = source;
    const data = (event) => JSON.parse(event.data || "{}");
    const end = () => { source.close(); if (following === source) following = null; };
    const words = (event) => { if (status) status.textContent = data(event).words || status.textContent; };
    source.addEventListener("queued", words);
    source.addEventListener("phase", words);
    source.addEventListener("elsewhere", words);
    source.addEventListener("text", (event) => {
      const piece = data(event);
      if (!streaming) return;
      if (piece.replace !== undefined) streaming.textContent = piece.replace;
      else streaming.textContent += piece.append || "";
    });
    source.addEventListener("done", () => { end(); refresh(true); });
    source.addEventListener("idle", () => { end(); refresh(true); });
    source.addEventListener("failed", (event) => {
      end();
      refresh(false).then(() => say(data(event).message));
    });
    // A dropped stream is reopened by the browser (the server said "retry"); a refused one is not.
    source.onerror = () => { if (source.readyState === EventSource.CLOSED) { end(); refresh(false); } };
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target.closest("form.move");
    if (!form) return;
    event.preventDefault();
    if (following) return;
    say("");
    const body = new URLSearchParams(new FormData(form));
    setBusy(true);
    let response;
    try {
      response = await fetch(form.getAttribute("action"), {
        method: "POST",
        body,
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRF-Token": body.get("csrf") || "" },
      });
    } catch (error) {
      setBusy(false);
      say(GONE);
      return;
    }
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      if (response.status === 409) await refresh(false);  // the page was stale: show where they are
      setBusy(false);
      say(answer.message || GONE);
      return;
    }
    if (answer.stream) follow(answer.stream);
    else refresh(true);
  });

  // 1 to 9 take a choice, unless the reader is typing.
  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey || !/^[1-9]$/.test(event.key)) return;
    const typing = event.target.closest && event.target.closest("input, textarea, select, [contenteditable]");
    if (typing) return;
    const button = document.querySelector(`.choices button[data-key="${event.key}"]`);
    if (button && !button.disabled) { event.preventDefault(); button.click(); }
  });

  function countCharacters() {
    const action = $("#action-text");
    const count = $("#action-count");
    if (!action || !count) return;
    const update = () => {
      const left = action.maxLength - action.value.length;
      count.textContent = action.value ? `${left} left.` : "";
    };
    action.addEventListener("input", update);
    update();
  }

  countCharacters();
  const article = $("article.story");
  if (article && article.dataset.writing) follow(article.dataset.stream);  // a reload mid-paragraph
})();
