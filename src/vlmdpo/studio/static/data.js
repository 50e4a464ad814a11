// Data page: pick (folder listing) or upload data, check it, page through pairs, stats with histograms.
"use strict";
(() => {
  const $ = (sel) => document.querySelector(sel);
  const pick = $("#pick"), upload = $("#upload"), statsForm = $("#stats-form");
  const state = { path: "", format: "auto", page: 0 };
  const el = (tag, attrs = {}, ...kids) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const kid of kids) if (kid != null) node.append(kid);
    return node;
  };
  const clearErrors = () => document.querySelectorAll(".field-error, #errors").forEach((n) => { n.textContent = ""; });
  const query = (extra = {}) => new URLSearchParams({ path: state.path, format: state.format, ...extra }).toString();

  // ------------------------------------------------------------------ folder listing
  async function browse(path) {
    const box = $("#browser");
    try {
      const data = await studio.api("GET", "/api/data/browse?" + new URLSearchParams({ path }));
      box.replaceChildren();
      if (data.path) box.append(el("div", { class: "muted" }, data.path));
      if (data.parent !== null && data.parent !== undefined) {
        box.append(el("a", { href: "#", class: "entry dir", onclick: (e) => { e.preventDefault(); browse(data.parent); } }, "↑ up"));
      }
      for (const entry of data.entries) {
        const dataFile = /\.(jsonl|json|parquet)$/i.test(entry.name);
        if (entry.kind !== "dir" && !dataFile) continue;
        box.append(el("a", {
          href: "#", class: "entry " + entry.kind, title: entry.path,
          onclick: (e) => {
            e.preventDefault();
            pick.path.value = entry.path;
            if (entry.kind === "dir") browse(entry.path);
          },
        }, (entry.kind === "dir" ? "▸ " : "") + entry.name + (entry.kind === "dir" ? "/" : "")));
      }
    } catch (err) { studio.showError(err, pick); }
  }

  // ------------------------------------------------------------------ check
  async function check() {
    clearErrors();
    state.path = pick.path.value.trim();
    state.format = pick.format.value;
    state.page = 0;
    const box = $("#check-result");
    box.textContent = "Checking…";
    try {
      const r = await studio.api("GET", "/api/data/check?" + query());
      box.replaceChildren(
        el("p", { class: r.ok ? "ok" : "error", id: "check-summary" },
          `${r.ok ? "✓ valid" : "✗ problems found"}: read ${r.read}, kept ${r.kept}, skipped ${r.skipped}`),
        ...r.notes.map((n) => el("div", { class: "muted" }, n)));
      for (const group of r.groups) {
        const table = el("table", { class: "table problems" },
          el("thead", {}, el("tr", {}, el("th", {}, "where"), el("th", {}, "field"), el("th", {}, "problem"), el("th", {}, "fix"))));
        const body = el("tbody");
        for (const e of group.errors) {
          body.append(el("tr", { class: "clickable", title: "open this row", onclick: () => openRow(e) },
            el("td", {}, el("code", {}, e.where)), el("td", {}, e.field), el("td", {}, e.message), el("td", {}, e.fix)));
        }
        table.append(body);
        box.append(el("details", { open: "" }, el("summary", {}, `${group.kind} (${group.count})`), table));
      }
      showPage();
    } catch (err) { box.textContent = ""; studio.showError(err, pick); }
  }

  // ------------------------------------------------------------------ pairs
  function messageNode(msg) {
    const node = el("div", { class: "msg " + msg.role }, el("span", { class: "role" }, msg.role));
    for (const p of msg.parts) {
      if (p.type === "image") {
        node.append(el("figure", {}, p.src ? el("img", { src: p.src, alt: p.label, loading: "lazy" }) : null,
          el("figcaption", {}, `image ${p.index}: ${p.label}`)));
      } else node.append(el("span", { class: "text" }, p.type === "text" ? p.text : `<${p.type}>`));
    }
    return node;
  }

  function pairNode(pair) {
    const side = (label, cls, prompt, msgs) => el("div", { class: "side " + cls }, el("h3", {}, label),
      ...(prompt ? prompt.map(messageNode) : []), ...msgs.map(messageNode));
    const contrast = pair.rejected_prompt !== null && pair.rejected_prompt !== undefined;
    return el("article", { class: "pair", id: `pair-${pair.row}` },
      el("header", {}, el("code", {}, `${pair.file}:${pair.row}`), " ", el("span", { class: "muted" }, pair.id)),
      el("div", { class: "prompt" }, ...pair.prompt.map(messageNode)),
      el("div", { class: "sides" }, side("chosen", "chosen", null, pair.chosen),
        side(contrast ? "rejected (sees other images)" : "rejected", "rejected", contrast ? pair.rejected_prompt : null, pair.rejected)),
      el("details", {}, el("summary", {}, "as text (vlmdpo data show)"), el("pre", {}, pair.text)));
  }

  async function showPage() {
    const box = $("#pairs");
    try {
      const r = await studio.api("GET", "/api/data/preview?" + query({ page: state.page, size: 5 }));
      box.replaceChildren(...r.pairs.map(pairNode));
      if (!r.pairs.length) box.textContent = "No valid pairs on this page.";
      $("#page-label").textContent = `page ${state.page + 1}`;
      $("#prev").disabled = state.page === 0;
      $("#next").disabled = !r.more;
    } catch (err) { studio.showError(err, pick); }
  }

  async function openRow(e) {
    const box = $("#pairs");
    try {
      const r = await studio.api("GET", "/api/data/row?" + query({ row: `${e.file}:${e.row}` }));
      const note = el("div", { class: "row-focus" }, el("p", {}, el("strong", {}, `${e.where}`), ` field '${e.field}': ${e.message}`,
        e.fix ? ` → ${e.fix}` : ""));
      if (r.pair) note.append(pairNode(r.pair));
      else note.append(el("p", { class: "error" }, r.problem), r.raw ? el("pre", { class: "raw" }, r.raw) : "");
      box.replaceChildren(note);
      $("#page-label").textContent = "one row";
      box.scrollIntoView({ behavior: "smooth" });
    } catch (err) { studio.showError(err, pick); }
  }

  // ------------------------------------------------------------------ stats
  function histChart(title, h) {
    const wrap = el("div", { class: "chart" });
    const xs = h.counts.map((_, i) => (h.edges[i] + h.edges[i + 1]) / 2);
    const opts = {
      title, width: 300, height: 170, legend: { show: false },
      scales: { x: { time: false } },
      axes: [{ size: 30 }, { size: 36 }],
      series: [{}, { label: "rows", fill: "rgba(48,86,211,0.35)", stroke: "#3056d3", paths: uPlot.paths.bars({ size: [0.9] }) }],
    };
    new uPlot(opts, [xs.length > 1 ? xs : [h.edges[0]], h.counts], wrap);
    return wrap;
  }

  async function stats() {
    clearErrors();
    if (!state.path) { state.path = pick.path.value.trim(); state.format = pick.format.value; }
    const out = $("#stats"), hists = $("#hists");
    out.textContent = "Computing…";
    try {
      const s = await studio.api("GET", "/api/data/stats?" + query({ model: statsForm.model.value.trim() }));
      const line = (label, v) => el("tr", {}, el("th", {}, label), el("td", {}, v));
      const sum = (x) => (x ? `min ${x.min} · median ${x.median} · mean ${x.mean} · max ${x.max}` : "–");
      const rows = [line("rows", `${s.rows} (read ${s.read}, skipped ${s.skipped})`),
        line("images per row", Object.entries(s.images_per_row).map(([k, v]) => `${k}: ${v}`).join(", ") || "–"),
        line("unique images", String(s.unique_images)), line("image width", sum(s.image_width)),
        line("image height", sum(s.image_height))];
      for (const side of ["prompt", "chosen", "rejected"]) rows.push(line(`${side} chars`, sum(s.chars[side])));
      if (s.tokens) for (const side of ["prompt", "chosen", "rejected"]) rows.push(line(`${side} tokens`, sum(s.tokens[side])));
      rows.push(line("duplicates", `${s.duplicate_prompts} duplicate prompts of ${s.distinct_prompts} distinct`));
      rows.push(line("image-contrast rows", String(s.image_contrast_rows)));
      out.replaceChildren(el("table", { class: "table kv" }, el("tbody", {}, ...rows)));
      hists.replaceChildren(...Object.entries(s.histograms).map(([k, h]) => histChart(k, h)));
    } catch (err) { out.textContent = ""; studio.showError(err, statsForm); }
  }

  // ------------------------------------------------------------------ upload
  async function doUpload() {
    clearErrors();
    const form = new FormData();
    for (const f of upload.elements["files"].files) form.append("files", f, f.name);
    try {
      const r = await studio.api("POST", "/api/data/upload?" + new URLSearchParams({ name: upload.elements["name"].value.trim() }), form);
      pick.path.value = r.data_files.length === 1 ? `${r.path}/${r.data_files[0]}` : r.path;
      browse(r.path);
      check();
    } catch (err) { studio.showError(err, upload); }
  }

  pick.addEventListener("submit", (e) => { e.preventDefault(); check(); });
  upload.addEventListener("submit", (e) => { e.preventDefault(); doUpload(); });
  statsForm.addEventListener("submit", (e) => { e.preventDefault(); stats(); });
  $("#prev").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); showPage(); });
  $("#next").addEventListener("click", () => { state.page += 1; showPage(); });
  const initial = new URLSearchParams(location.search).get("path");
  if (initial) { pick.path.value = initial; check(); }
  browse("");
})();
