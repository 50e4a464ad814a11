// Train page: the config form -> validation at each field, the YAML (downloadable), start / stop / resume runs.
"use strict";
(() => {
  const form = document.getElementById("train-form");
  const yamlBox = document.getElementById("yaml"), download = document.getElementById("download");
  const runsBody = document.querySelector("#runs tbody");

  function body() {
    const values = {};
    for (const input of form.querySelectorAll("input[name], select[name]")) {
      if (input.name !== "run_name" && input.value.trim() !== "") values[input.name] = input.value.trim();
    }
    return { run_name: form.elements["run_name"].value.trim(), values };
  }

  function clearErrors() {
    form.querySelectorAll(".field-error, #errors").forEach((n) => { n.textContent = ""; });
    form.querySelectorAll(".invalid").forEach((n) => n.classList.remove("invalid"));
  }

  function showErrors(err) {
    const list = err.errors || [err.error || err];
    for (const e of list) {
      const input = e.field ? form.querySelector(`[name="${e.field}"]`) : null;
      if (input) {
        input.closest("details")?.setAttribute("open", "");
        input.closest("label").classList.add("invalid");
      }
      studio.showError({ field: e.field, message: e.message, fix: e.fix || "" }, form);
    }
    const first = form.querySelector(".invalid");
    if (first) first.scrollIntoView({ block: "center" });
  }

  async function send(url) {
    clearErrors();
    const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body()) });
    const data = await res.json();
    if (!res.ok) { showErrors(data); return null; }
    yamlBox.textContent = data.yaml;
    download.href = URL.createObjectURL(new Blob([data.yaml], { type: "application/x-yaml" }));
    download.download = `${body().run_name || "config"}.yaml`;
    download.hidden = false;
    return data;
  }

  async function action(id, verb) {
    try { await studio.api("POST", `/api/train/runs/${id}/${verb}`); } catch (err) { studio.showError(err); }
    refreshRuns();
  }

  async function refreshRuns() {
    let data;
    try { data = await studio.api("GET", "/api/train/runs"); } catch (err) { return; }
    if (!data.runs.length) {
      const empty = document.createElement("tr");
      empty.innerHTML = "<td colspan=3 class=muted>No runs yet: fill in the form and press Start training.</td>";
      runsBody.replaceChildren(empty);
      return;
    }
    runsBody.replaceChildren(...data.runs.map((run) => {
      const tr = document.createElement("tr");
      tr.dataset.run = run.id;
      const name = document.createElement("td");
      const link = document.createElement("a");
      link.href = `/monitor?runs=${run.id}`;
      link.textContent = run.name;
      name.append(link);
      const status = document.createElement("td");
      status.className = "status " + run.status;
      status.textContent = run.status;
      if (run.message) status.title = run.message;
      const buttons = document.createElement("td");
      const live = ["starting", "running", "stopping"].includes(run.status);
      const button = (label, verb) => {
        const b = document.createElement("button");
        b.type = "button"; b.textContent = label; b.className = verb;
        b.addEventListener("click", () => action(run.id, verb));
        return b;
      };
      if (live && run.status !== "stopping") buttons.append(button("Stop", "stop"));
      if (!live && run.status !== "finished") buttons.append(button("Resume", "resume"));
      tr.append(name, status, buttons);
      if (run.status === "failed" && run.message) {
        const msg = document.createElement("tr");
        msg.className = "run-message";
        const td = document.createElement("td");
        td.colSpan = 3;
        const pre = document.createElement("pre");
        pre.textContent = run.message;
        td.append(pre);
        msg.append(td);
        return [tr, msg];
      }
      return [tr];
    }).flat());
  }

  document.getElementById("validate").addEventListener("click", () => send("/api/train/validate"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = await send("/api/train/start");
    if (data) {
      const note = document.getElementById("errors");
      note.className = "ok";
      note.innerHTML = "";
      const a = document.createElement("a");
      a.href = `/monitor?runs=${data.run.id}`;
      a.textContent = `run '${data.run.name}' started: watch it in the monitor`;
      note.append(a);
      refreshRuns();
    }
  });
  refreshRuns();
  setInterval(refreshRuns, 2000);
})();
