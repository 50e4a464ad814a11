// Monitor page: live charts from each run's metrics.jsonl (server-sent events), progress, log, reading.
"use strict";
(() => {
  const CHARTS = [
    { title: "loss", keys: ["loss", "eval_loss"] },
    { title: "reward accuracy", keys: ["rewards/accuracies", "eval_rewards/accuracies"] },
    { title: "reward margin", keys: ["rewards/margins", "eval_rewards/margins"] },
    { title: "chosen / rejected rewards", keys: ["rewards/chosen", "rewards/rejected", "eval_rewards/chosen", "eval_rewards/rejected"] },
    { title: "learning rate", keys: ["learning_rate"] },
    { title: "pairs / s", keys: ["pairs/s"] },
  ];
  const COLORS = ["#3056d3", "#d35730", "#1e8e3e", "#8e44ad", "#c29d0b", "#16a085"];
  const DASH = { train: [], eval: [6, 4] };
  const picker = document.getElementById("run-picker"), chartsBox = document.getElementById("charts");
  const rows = {}; // run id -> metrics rows
  const names = {};
  let source = null, charts = [];
  const selected = new Set((new URLSearchParams(location.search).get("runs") || "").split(",").filter(Boolean).map(Number));

  // Tick labels with as many decimals as the tick spacing needs (DPO's rewards are often ~1e-3 early on).
  function ticks(u, splits) {
    const step = splits.length > 1 ? Math.abs(splits[1] - splits[0]) : 1;
    const big = Math.max(...splits.map((v) => Math.abs(v)));
    if (big > 0 && big < 1e-3) return splits.map((v) => v.toExponential(1));
    const decimals = Math.min(8, Math.max(0, Math.ceil(-Math.log10(step || 1))));
    return splits.map((v) => v.toFixed(decimals));
  }

  function chartWidth() {
    return Math.max(320, Math.floor((chartsBox.clientWidth - 2 * 14) / 3) - 14);
  }

  function build() {
    chartsBox.replaceChildren();
    charts = CHARTS.map((spec, ci) => {
      const series = [{ label: "step" }];
      const keys = [];
      [...selected].forEach((id, ri) => spec.keys.forEach((key, ki) => {
        const isEval = key.startsWith("eval_");
        series.push({
          label: `${names[id] || id} ${key}`, stroke: COLORS[(ri * spec.keys.length + ki) % COLORS.length],
          dash: isEval ? DASH.eval : DASH.train, width: 1.5, spanGaps: true, points: { show: isEval },
        });
        keys.push([id, key]);
      }));
      const wrap = document.createElement("div");
      wrap.className = "chart";
      chartsBox.append(wrap);
      const plot = new uPlot({
        title: CHARTS[ci].title, width: chartWidth(), height: 220, scales: { x: { time: false } },
        axes: [{}, { values: ticks, size: 60 }],
        legend: { live: false }, series,
      }, [[], ...keys.map(() => [])], wrap);
      return { plot, keys };
    });
    redraw();
  }

  function redraw() {
    let points = 0;
    for (const { plot, keys } of charts) {
      const steps = new Set();
      for (const [id, key] of keys) for (const r of rows[id] || []) if (typeof r[key] === "number") steps.add(r.step);
      const xs = [...steps].sort((a, b) => a - b);
      const ys = keys.map(([id, key]) => {
        const at = new Map();
        for (const r of rows[id] || []) if (typeof r[key] === "number") at.set(r.step, r[key]);
        points += at.size;
        return xs.map((x) => (at.has(x) ? at.get(x) : null));
      });
      plot.setData([xs, ...ys]);
    }
    chartsBox.dataset.points = String(points);
  }

  function fmtTime(s) {
    if (s === null || s === undefined) return "–";
    s = Math.round(s);
    return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min` : s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
  }

  const statusOf = {};
  function showStatus(s) {
    statusOf[s.run.id] = s;
    const box = document.getElementById("progress");
    box.replaceChildren(...[...selected].filter((id) => statusOf[id]).map((id) => {
      const st = statusOf[id];
      const div = document.createElement("div");
      div.className = "run-progress";
      div.dataset.run = id;
      const pct = st.total ? Math.min(100, (100 * st.step) / st.total) : 0;
      div.innerHTML = `<span class="name"></span> <span class="status ${st.run.status}">${st.run.status}</span>
        <span class="bar"><span style="width:${pct}%"></span></span>
        <span class=muted>step ${st.step}${st.total ? " / " + st.total : ""} · ETA ${fmtTime(st.eta_s)}</span>`;
      div.querySelector(".name").textContent = st.run.name;
      return div;
    }));
    const first = statusOf[[...selected][0]];
    if (!first) return;
    document.getElementById("log").textContent = first.log || "(no output yet)";
    const reading = document.getElementById("reading");
    reading.replaceChildren(...first.reading.map((line) => { const li = document.createElement("li"); li.textContent = line; return li; }));
    if (first.run.status === "failed" && first.run.message) {
      const li = document.createElement("li");
      li.className = "error";
      li.textContent = "The run failed: " + first.run.message.split("\n").slice(-3).join(" ");
      reading.append(li);
    }
    const best = document.getElementById("best");
    best.replaceChildren();
    if (first.best) {
      const p = document.createElement("p");
      p.textContent = `Best model: ${first.best.name} (step ${first.best.step}, eval loss ${first.best.eval_loss?.toFixed(4) ?? "–"}). `;
      const button = document.createElement("button");
      button.type = "button"; button.id = "use-best";
      const using = first.using === first.best.path;
      button.textContent = using ? "✓ used by the lab and export" : "Use it in the lab and export";
      button.disabled = using;
      button.addEventListener("click", async () => {
        try {
          await studio.api("POST", `/api/monitor/runs/${first.run.id}/use`, { model: first.best.path });
          first.using = first.best.path;
          showStatus(first);
        } catch (err) { studio.showError(err); }
      });
      p.append(button);
      best.append(p);
    }
  }

  function connect() {
    if (source) source.close();
    for (const id of Object.keys(rows)) delete rows[id];
    build();
    if (!selected.size) return;
    source = new EventSource("/api/monitor/stream?runs=" + [...selected].join(","));
    source.addEventListener("metrics", (e) => {
      const msg = JSON.parse(e.data);
      (rows[msg.run] = rows[msg.run] || []).push(...msg.rows);
      redraw();
    });
    source.addEventListener("status", (e) => showStatus(JSON.parse(e.data)));
  }

  async function loadRuns() {
    const data = await studio.api("GET", "/api/train/runs");
    if (!data.runs.length) { picker.textContent = "No runs yet: start one on the Train page."; return; }
    if (!selected.size) selected.add(data.runs[0].id);
    picker.replaceChildren(document.createTextNode("Runs: "));
    for (const run of data.runs) {
      names[run.id] = run.name;
      const label = document.createElement("label");
      label.className = "pick";
      const box = document.createElement("input");
      box.type = "checkbox"; box.value = run.id; box.checked = selected.has(run.id);
      box.addEventListener("change", () => {
        if (box.checked) selected.add(run.id); else selected.delete(run.id);
        history.replaceState(null, "", "?runs=" + [...selected].join(","));
        connect();
      });
      label.append(box, ` ${run.name} `);
      const status = document.createElement("small");
      status.className = "status " + run.status;
      status.textContent = run.status;
      label.append(status);
      picker.append(label);
    }
    connect();
  }
  loadRuns().catch((err) => studio.showError(err));
})();
