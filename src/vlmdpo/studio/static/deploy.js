// Export & deploy page: export runs, start/stop `vlmdpo serve`, show each endpoint's curl and Python snippets.
"use strict";
(() => {
  const exportForm = document.getElementById("export-form");
  const serveForm = document.getElementById("serve-form");
  let timer = null;
  let seen = null;  // ids of the finished exports at the last refresh

  const el = (tag, props = {}, ...children) => { const e = Object.assign(document.createElement(tag), props); e.append(...children); return e; };
  const statusTag = (s) => el("span", { className: "status " + s, textContent: s });
  const clearErrors = () => document.querySelectorAll(".field-error, #errors").forEach((e) => { e.textContent = ""; });

  function renderExports(exports) {
    const rows = exports.map((x) => el("tr", {}, el("td", { textContent: `#${x.id}` }), el("td", {}, statusTag(x.status)),
      el("td", { textContent: x.mode }), el("td", { textContent: x.output_dir }),
      el("td", {}, el("pre", { className: "log", textContent: x.message || x.log || "" }))));
    const table = el("table", { className: "table" }, el("tr", {}, ...["export", "status", "mode", "folder", "log"].map((h) => el("th", { textContent: h }))), ...rows);
    document.getElementById("exports").replaceChildren(exports.length ? table : "");
  }

  function renderServers(servers) {
    const cards = servers.map((s) => {
      const stop = el("button", { type: "button", textContent: "Stop", disabled: !["starting", "running"].includes(s.status) });
      stop.onclick = async () => {
        try { await studio.api("POST", `/api/deploy/servers/${s.id}/stop`); } catch (err) { studio.showError(err, null); }
        refresh();
      };
      const card = el("section", { className: "card server", id: `server-${s.id}` },
        el("h2", {}, `${s.name} `, statusTag(s.status), ` port ${s.port} · pid ${s.pid} `, stop),
        el("div", { className: "muted", textContent: `serving ${s.source} at ${s.url}` }));
      if (s.status === "failed") card.append(el("pre", { className: "log", textContent: s.message || "" }));
      if (["starting", "running"].includes(s.status)) {
        card.append(el("h3", { textContent: "curl" }), el("pre", { className: "snippet curl", textContent: s.curl }),
                    el("h3", { textContent: "Python (openai)" }), el("pre", { className: "snippet python", textContent: s.python }));
      }
      return card;
    });
    document.getElementById("servers").replaceChildren(...cards);
  }

  async function refresh() {
    const state = await studio.api("GET", "/api/deploy/state");
    const select = exportForm.elements.run;
    if (select.options.length === 1) {
      for (const run of state.runs) select.appendChild(el("option", { value: run.output_dir, textContent: `${run.name} (${run.status})` }));
    }
    const sources = [...state.exports.filter((x) => x.status === "finished").map((x) => x.output_dir), ...state.runs.map((r) => r.output_dir)];
    const finished = state.exports.filter((x) => x.status === "finished");
    const fresh = finished.find((x) => seen !== null && !seen.has(x.id));  // an export that just finished: serve it next
    if (fresh) serveForm.elements.source.value = fresh.output_dir;
    else if (!serveForm.elements.source.value && sources.length) serveForm.elements.source.value = sources[0];
    seen = new Set(finished.map((x) => x.id));
    document.getElementById("served-sources").replaceChildren(...sources.map((v) => el("option", { value: v })));
    renderExports(state.exports);
    renderServers(state.servers);
    const busy = state.exports.some((x) => x.status === "running") || state.servers.some((s) => s.status === "starting");
    clearTimeout(timer);
    timer = setTimeout(() => refresh().catch(() => {}), busy ? 1000 : 5000);
  }

  exportForm.elements.run.addEventListener("change", (ev) => { if (ev.target.value) exportForm.elements.source.value = ev.target.value; });

  exportForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors();
    const f = exportForm.elements;
    try {
      const x = await studio.api("POST", "/api/deploy/export", { source: f.source.value, mode: f.mode.value, dtype: f.dtype.value,
                                                                 output: f.output.value || null, force: f.force.checked });
      if (x.status === "finished") serveForm.elements.source.value = x.output_dir;
      await refresh();
    } catch (err) { studio.showError(err, exportForm); }
  });

  serveForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors();
    const f = serveForm.elements;
    try {
      await studio.api("POST", "/api/deploy/serve", { source: f.source.value, name: f.name.value || null, port: f.port.value || null });
      await refresh();
    } catch (err) { studio.showError(err, serveForm); }
  });

  refresh().catch((err) => studio.showError(err, null));
})();
