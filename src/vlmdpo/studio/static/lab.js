// Lab page: base and tuned answers side by side (streamed), their implicit rewards, and a verdict button row.
"use strict";
(() => {
  const form = document.getElementById("lab-form");
  const verdict = document.getElementById("verdict-form");
  const status = document.getElementById("worker-status");
  const images = [];  // confined paths on the server
  let last = null;    // the request and answers the verdict buttons refer to
  let generating = false;

  const side = (name) => document.getElementById(name);
  const setStatus = (text) => { status.textContent = text; };
  const clearErrors = () => document.querySelectorAll(".field-error, #errors").forEach((e) => { e.textContent = ""; });

  async function loadRuns() {
    const data = await studio.api("GET", "/api/lab/models");
    const select = form.elements.run;
    for (const run of data.runs) {  // one group per run: its final model and checkpoints, the best marked
      const group = document.createElement("optgroup");
      group.label = `${run.name} (${run.status})`;
      for (const m of run.models) {
        const opt = document.createElement("option");
        opt.value = m.path;
        opt.dataset.base = run.base || "";
        opt.textContent = `${run.name}: ${m.name}${m.step !== null ? ` (step ${m.step})` : ""}${m.best ? " ★ best" : ""}`;
        group.appendChild(opt);
      }
      if (run.models.length) select.appendChild(group);
    }
    if (data.worker) setStatus(`worker running on port ${data.worker.port}`);
    const params = new URLSearchParams(location.search);  // /lab?tuned=DIR&base=NAME, e.g. from the Monitor page
    if (params.get("base")) form.elements.base.value = params.get("base");
    if (params.get("tuned")) { form.elements.tuned.value = params.get("tuned"); warm(); }
  }

  // Load both models in the worker as soon as they are named, while the prompt is being written.
  async function warm() {
    const f = form.elements;
    if (!f.base.value.trim() || !f.tuned.value.trim()) return;
    clearErrors();
    setStatus("loading both models in the worker…");
    try {
      const w = await studio.api("POST", "/api/lab/worker", { base: f.base.value, tuned: f.tuned.value });
      if (!generating) setStatus(`models loaded (worker on port ${w.port})`);
    } catch (err) { if (!generating) setStatus(""); studio.showError(err, form); }
  }

  form.elements.run.addEventListener("change", (ev) => {
    const opt = ev.target.selectedOptions[0];
    if (!opt.value) return;
    form.elements.tuned.value = opt.value;
    if (!form.elements.base.value && opt.dataset.base) form.elements.base.value = opt.dataset.base;
    warm();
  });
  form.elements.base.addEventListener("change", warm);
  form.elements.tuned.addEventListener("change", warm);

  function addImage(path) {
    images.push(path);
    const box = document.createElement("span");
    box.className = "lab-thumb";
    const img = document.createElement("img");
    img.src = "/api/lab/image?path=" + encodeURIComponent(path);
    img.alt = path;
    const drop = document.createElement("button");
    drop.type = "button";
    drop.textContent = "×";
    drop.title = "remove";
    drop.onclick = () => { images.splice(images.indexOf(path), 1); box.remove(); };
    box.append(img, drop);
    document.getElementById("images").appendChild(box);
  }

  form.elements.upload.addEventListener("change", async (ev) => {
    clearErrors();
    for (const file of ev.target.files) {
      const data = await new Promise((ok) => { const r = new FileReader(); r.onload = () => ok(r.result); r.readAsDataURL(file); });
      try { addImage((await studio.api("POST", "/api/lab/upload", { name: file.name, data })).path); }
      catch (err) { studio.showError(err, form); }
    }
    ev.target.value = "";
  });

  document.getElementById("add-image").addEventListener("click", async () => {
    clearErrors();
    const path = form.elements.image_path.value.trim();
    const res = await fetch("/api/lab/image?path=" + encodeURIComponent(path));
    if (!res.ok) { studio.showError({ ...(await res.json()).error, field: "image_path" }, form); return; }
    addImage(path);
    form.elements.image_path.value = "";
  });

  function request() {
    const f = form.elements;
    return { base: f.base.value, tuned: f.tuned.value, images: [...images], prompt: f.prompt.value,
             max_tokens: f.max_tokens.value, temperature: f.temperature.value, top_p: f.top_p.value, seed: f.seed.value };
  }

  function showEvent(event, answers) {
    if (event.side === undefined) return;
    const box = side(event.side);
    if (event.text) { answers[event.side] += event.text; box.querySelector(".text").textContent = answers[event.side]; }
    if (event.error) { box.querySelector(".text").classList.add("error"); box.querySelector(".text").textContent += "\n" + event.error; answers.failed = true; }
    if (event.finish) box.querySelector("h2 small").textContent += ` · ${event.finish}`;
  }

  async function readStream(res, answers) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const line = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        if (line.startsWith("data: ")) showEvent(JSON.parse(line.slice(6)), answers);
      }
    }
  }

  async function reward(req, answers) {
    for (const name of ["left", "right"]) side(name).querySelector(".reward b").textContent = "scoring…";
    try {
      const r = await studio.api("POST", "/api/lab/reward", { ...req, answers: [answers.left, answers.right] });
      ["left", "right"].forEach((name, i) => {
        const s = r.scores[i];
        side(name).querySelector(".reward b").textContent = s === null ? "n/a" : s.toFixed(4);
        side(name).querySelector(".reward").title = `beta ${r.beta} × (log p_tuned − log p_base)`;
      });
    } catch (err) {
      for (const name of ["left", "right"]) side(name).querySelector(".reward b").textContent = "failed";
      studio.showError(err, null);
    }
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors();
    const req = request();
    const answers = { left: "", right: "", failed: false };
    for (const name of ["left", "right"]) {
      side(name).querySelector(".text").textContent = "";
      side(name).querySelector(".text").classList.remove("error");
      side(name).querySelector(".reward b").textContent = "–";
    }
    side("left").querySelector("h2 small").textContent = req.base;
    side("right").querySelector("h2 small").textContent = req.tuned;
    verdict.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    document.getElementById("generate").disabled = true;
    generating = true;
    setStatus("starting the worker and generating…");
    try {
      const res = await fetch("/api/lab/generate", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(req) });
      if (!res.ok) { studio.showError((await res.json()).error, form); setStatus(""); return; }
      setStatus("generating…");
      await readStream(res, answers);
      setStatus("done");
      if (!answers.failed) {
        last = { ...req, answers: [answers.left, answers.right] };
        verdict.querySelectorAll("button").forEach((b) => { b.disabled = false; });
        await reward(req, answers);
      }
    } finally {
      generating = false;
      document.getElementById("generate").disabled = false;
    }
  });

  document.getElementById("stop-worker").addEventListener("click", async () => {
    const r = await studio.api("DELETE", "/api/lab/worker");
    setStatus(r.stopped.length ? "worker stopped" : "no worker running");
  });

  verdict.querySelectorAll("button[data-choice]").forEach((button) => button.addEventListener("click", async () => {
    clearErrors();
    const out = document.getElementById("verdict-status");
    try {
      const r = await studio.api("POST", "/api/lab/prefer", { ...last, choice: button.dataset.choice, dataset: verdict.elements.dataset.value });
      out.className = "ok";
      out.textContent = `${r.kind === "tie" ? "tie recorded in" : "pair appended to"} ${r.path} (${r.rows} rows)`;
      verdict.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    } catch (err) { out.textContent = ""; studio.showError(err, verdict); }
  }));

  loadRuns().catch((err) => studio.showError(err, null));
})();
