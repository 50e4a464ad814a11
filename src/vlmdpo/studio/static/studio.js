// vlmdpo studio: shared helpers for every page (plain JavaScript, no build step).
"use strict";
const studio = {
  // POST/GET JSON; on an error response, throws {field, message, fix} as the server sent it.
  async api(method, url, body) {
    const opts = { method, headers: {} };
    if (body instanceof FormData) opts.body = body;
    else if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
    const res = await fetch(url, opts);
    const data = res.headers.get("content-type")?.includes("json") ? await res.json() : await res.text();
    if (!res.ok) throw (data && data.error) || { field: null, message: String(data), fix: "" };
    return data;
  },
  // Show an error next to the input named err.field (or in the page's #errors box).
  showError(err, form) {
    const text = err.message + (err.fix ? " → " + err.fix : "");
    const input = form && err.field ? form.querySelector(`[name="${err.field}"]`) : null;
    const box = (input && input.closest("label")?.querySelector(".field-error")) || document.getElementById("errors");
    if (box) { box.textContent = text; box.classList.add("error"); } else alert(text);
  },
};
