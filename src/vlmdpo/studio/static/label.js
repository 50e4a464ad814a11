// Label page: one candidates row at a time; click an answer or press 1-9 to pick the best, s to skip, u/Backspace to undo.
"use strict";
(() => {
  const form = document.getElementById("open-form");
  let state = null;  // {session, total, done, index, ...} as the server sent it
  let current = null;  // the item on screen
  let busy = false;
  let worst = null;  // an answer marked worst (Shift+digit) before the best is picked; rows of 3+ answers

  const $ = (id) => document.getElementById(id);

  function textOf(messages) {
    return messages.map((m) => {
      const parts = typeof m.content === "string" ? [m.content]
        : m.content.map((p) => (p.type === "image" ? "[image]" : (p.text || "")));
      return `${m.role}: ${parts.join(" ")}`;
    }).join("\n");
  }

  function showProgress() {
    $("progress-text").textContent = `${state.done} of ${state.total} labelled`;
    $("progress-bar").style.width = `${(100 * state.done) / Math.max(1, state.total)}%`;
  }

  async function show(s) {
    state = s;
    if (s.index === null || s.index === undefined) {
      $("queue").hidden = true;
      $("finished").hidden = false;
      $("finished-text").textContent = `${s.done} of ${s.total} rows decided; labels in ${s.labels}, pairs in ${s.pairs}.`;
      current = null;
      return;
    }
    current = await studio.api("GET", `/api/label/${s.session}/item/${s.index}`);
    $("finished").hidden = true;
    $("queue").hidden = false;
    $("label-images").replaceChildren(...current.images.map((src) => Object.assign(document.createElement("img"), { src, alt: "image" })));
    $("prompt").textContent = textOf(current.prompt);
    $("answers").replaceChildren(...current.candidates.map((text, k) => {
      const card = document.createElement("section");
      card.className = "answer" + (current.decision && current.decision.best === k ? " chosen" : "") + (worst === k ? " worst" : "");
      const head = document.createElement("h2");
      head.innerHTML = `<kbd>${k + 1}</kbd> answer ${k + 1}`;
      const body = document.createElement("pre");
      body.textContent = text;
      const pick = document.createElement("button");
      pick.type = "button";
      pick.className = "primary pick";
      pick.textContent = "Best";
      pick.onclick = () => decide({ best: k });
      const bad = document.createElement("button");
      bad.type = "button";
      bad.className = "label-worst";
      bad.textContent = "Worst";
      bad.hidden = current.candidates.length < 3;  // with two answers the other one is the worst
      bad.onclick = () => markWorst(k);
      card.append(head, body, pick, " ", bad);
      return card;
    }));
    showProgress();  // last: the page is whole when its progress changes
  }

  async function act(method, url, body) {
    if (busy) return;
    busy = true;
    try {
      $("errors").textContent = "";
      const s = await studio.api(method, url, body);
      $("saved").textContent = s.undone ? `undid ${s.undone.id}` : (s.pairs_written !== undefined ? `${s.pairs_written} pair(s) in ${s.pairs}` : "");
      await show(s);
    } catch (err) { studio.showError(err, null); } finally { busy = false; }
  }

  function markWorst(k) {
    if (!current || current.candidates.length < 3) return;
    worst = worst === k ? null : k;
    document.querySelectorAll("#answers .answer").forEach((card, i) => card.classList.toggle("worst", i === worst));
  }

  function decide(what) {
    if (!current) return;
    const body = { id: current.id, ...what };
    if (worst !== null && what.best !== undefined && what.best !== worst) body.worst = worst;
    worst = null;
    act("POST", `/api/label/${state.session}/decide`, body);
  }
  const undo = () => state && act("POST", `/api/label/${state.session}/undo`);

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    document.querySelectorAll(".field-error").forEach((e) => { e.textContent = ""; });
    const f = form.elements;
    try {
      await show(await studio.api("POST", "/api/label/open", { candidates: f.candidates.value, labels: f.labels.value || null,
                                                               pairs: f.pairs.value || null, labeler: f.labeler.value || null }));
      f.labels.value = state.labels;
      f.pairs.value = state.pairs;
    } catch (err) { studio.showError(err, form); }
  });

  $("skip").addEventListener("click", () => decide({ skip: true }));
  $("undo").addEventListener("click", undo);
  $("undo-last").addEventListener("click", undo);

  document.addEventListener("keydown", (ev) => {
    if (!state || ev.ctrlKey || ev.metaKey || ev.altKey || ev.target.closest("input, textarea, select")) return;
    const digit = /^Digit[1-9]$/.test(ev.code) ? Number(ev.code.slice(5)) : null;
    if (digit && current && digit <= current.candidates.length) {
      if (ev.shiftKey) markWorst(digit - 1); else decide({ best: digit - 1 });
    }
    else if (ev.key === "s" && current) decide({ skip: true });
    else if (ev.key === "u" || ev.key === "Backspace") { ev.preventDefault(); undo(); }
  });

  const params = new URLSearchParams(location.search);
  if (params.get("candidates")) { form.elements.candidates.value = params.get("candidates"); form.requestSubmit(); }
})();
