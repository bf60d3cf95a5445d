// mlengine console: live logs (polling the console's logs endpoint with the API's cursor) and
// click-to-sort tables. No build step, no framework.
"use strict";

(function liveLogs() {
  const pre = document.getElementById("logs");
  if (!pre) return;
  const url = pre.dataset.url;
  const task = document.getElementById("log-task");
  const severity = document.getElementById("log-severity");
  const status = document.getElementById("log-status");
  const stateBadge = document.getElementById("job-state");
  const MAX_LINES = 5000;
  let cursor = null, timer = null, active = pre.dataset.active === "true", quietPolls = 0, generation = 0;

  function append(entries) {
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
    const frag = document.createDocumentFragment();
    for (const e of entries) {
      const line = document.createElement("div");
      line.className = "log " + String(e.severity || "DEFAULT");
      line.textContent = `${e.timestamp || ""} ${e.severity || ""} [${e.taskName || ""}] ${e.message || ""}`;
      frag.appendChild(line);
    }
    pre.appendChild(frag);
    while (pre.childElementCount > MAX_LINES) pre.removeChild(pre.firstChild);
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  async function poll() {
    clearTimeout(timer);
    const mine = generation;
    const params = new URLSearchParams();
    if (cursor) params.set("cursor", cursor);
    if (task && task.value) params.set("task", task.value);
    if (severity && severity.value) params.set("severity", severity.value);
    let delay = 1000;
    try {
      const response = await fetch(`${url}?${params}`, {credentials: "same-origin", headers: {Accept: "application/json"}});
      if (mine !== generation) return;  // the filters changed meanwhile
      if (!response.ok) {
        status.textContent = `Logs unavailable (${response.status}); retrying`;
        delay = 5000;
      } else {
        const data = await response.json();
        cursor = data.cursor;
        append(data.entries);
        active = data.active;
        if (stateBadge && data.state) { stateBadge.textContent = data.state; stateBadge.className = "state " + data.state; }
        quietPolls = data.entries.length ? 0 : quietPolls + 1;
        status.textContent = active ? "live" : "job ended";
        if (!active && quietPolls >= 2) return;  // nothing more will come
      }
    } catch (err) {
      status.textContent = "Connection lost; retrying";
      delay = 5000;
    }
    timer = setTimeout(poll, delay);
  }

  function restart() {
    generation += 1;
    cursor = null;
    quietPolls = 0;
    pre.textContent = "";
    poll();
  }
  if (task) task.addEventListener("change", restart);
  if (severity) severity.addEventListener("change", restart);
  poll();
})();

(function sortableTables() {
  for (const table of document.querySelectorAll("table.sortable")) {
    const headers = table.querySelectorAll("thead th");
    headers.forEach((th, index) => {
      th.classList.add("clickable");
      th.addEventListener("click", () => {
        const body = table.tBodies[0];
        const rows = Array.from(body.rows).filter((r) => r.cells.length > index);
        const descending = th.dataset.sorted === "asc";
        headers.forEach((h) => delete h.dataset.sorted);
        th.dataset.sorted = descending ? "desc" : "asc";
        const key = (row) => row.cells[index].textContent.trim();
        rows.sort((a, b) => {
          const x = key(a), y = key(b);
          const nx = parseFloat(x), ny = parseFloat(y);
          let order;
          if (x === "" || y === "") order = x === y ? 0 : (x === "" ? 1 : -1);
          else if (!Number.isNaN(nx) && !Number.isNaN(ny)) order = nx - ny;
          else order = x.localeCompare(y);
          return descending ? -order : order;
        });
        for (const row of rows) body.appendChild(row);
      });
    });
  }
})();

(function confirmations() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
})();
