// A version's page: its traffic (polling the server's counters; rates and per-interval latency
// percentiles from their differences) and its monitoring histograms and skew distances.
"use strict";

(function traffic() {
  const rate = document.getElementById("chart-rate");
  if (!rate || typeof Plotly === "undefined") return;
  const url = rate.dataset.url;
  const series = {t: [], rate: [], errors: [], p50: [], p90: [], p99: []};
  let last = null;
  // datarevision: the series arrays grow in place, and Plotly.react redraws only what it sees change
  const layout = (title, y) => ({title: {text: title}, height: 280, margin: {t: 40, l: 50, r: 20, b: 40},
                                 yaxis: {title: {text: y}, rangemode: "tozero"}, datarevision: series.t.length});
  Plotly.newPlot(rate, [], layout("requests per second", "req/s"), {displaylogo: false, responsive: true});
  Plotly.newPlot("chart-latency", [], layout("latency (per interval)", "ms"), {displaylogo: false, responsive: true});

  function quantile(deltas, q) {  // the upper bound of the bucket holding quantile q
    const total = deltas.length ? deltas[deltas.length - 1][1] : 0;
    if (!total) return null;
    for (const [le, count] of deltas) if (count >= q * total) return Number.isFinite(le) ? le * 1000 : null;
    return null;
  }

  async function poll() {
    try {
      const response = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}});
      if (response.ok) {
        const now = await response.json();
        const replicas = document.getElementById("replicas-now");
        if (replicas && now.replicas) {
          replicas.textContent = `${now.replicas.ready || 0} ready, ${now.replicas.starting || 0} starting`;
        }
        if (last) {
          const dt = Math.max(0.001, now.time - last.time);
          const deltas = Object.keys(now.buckets).map((le) => [le === "+Inf" ? Infinity : parseFloat(le),
                                                              now.buckets[le] - (last.buckets[le] || 0)])
                                                 .sort((a, b) => a[0] - b[0]);
          series.t.push(new Date(now.time * 1000));
          series.rate.push((now.requests - last.requests) / dt);
          series.errors.push((now.errors - last.errors) / dt);
          for (const q of [50, 90, 99]) series["p" + q].push(quantile(deltas, q / 100));
          Plotly.react(rate, [{x: series.t, y: series.rate, name: "requests/s", mode: "lines+markers"},
                              {x: series.t, y: series.errors, name: "errors/s", mode: "lines+markers"}],
                       layout("requests per second", "req/s"));
          Plotly.react("chart-latency", [50, 90, 99].map((q) => ({x: series.t, y: series["p" + q], name: "p" + q,
                                                                   mode: "lines+markers", connectgaps: false})),
                       layout("latency (per interval)", "ms"));
        }
        last = now;
      }
    } catch (err) { /* keep polling */ }
    setTimeout(poll, 5000);
  }
  poll();
})();

(function monitoring() {
  const source = document.getElementById("monitoring-data");
  const holder = document.getElementById("monitoring-charts");
  if (!source || !holder || typeof Plotly === "undefined") return;
  const data = JSON.parse(source.textContent);
  const features = Object.keys(data.histograms || {}).slice(0, 12);
  for (const name of features) {
    const h = data.histograms[name];
    const div = document.createElement("div");
    div.className = "chart";
    holder.appendChild(div);
    const traces = [{x: h.labels, y: h.training, type: "bar", name: "training"},
                    {x: h.labels, y: h.serving, type: "bar", name: `serving (${h.servingRows} rows)`}];
    const points = (data.timeline || {})[name] || [];
    const layout = {title: {text: name}, barmode: "group", height: 280, margin: {t: 40, l: 50, r: 20, b: 60}};
    if (points.length) {
      traces.push({x: points.map((p) => p.time), y: points.map((p) => p.distance), xaxis: "x2", yaxis: "y2",
                   mode: "lines+markers", name: "skew distance"});
      traces.push({x: points.map((p) => p.time), y: points.map((p) => p.threshold), xaxis: "x2", yaxis: "y2",
                   mode: "lines", name: "threshold", line: {dash: "dot"}});
      Object.assign(layout, {grid: {rows: 1, columns: 2, pattern: "independent"}});
    }
    Plotly.newPlot(div, traces, layout, {displaylogo: false, responsive: true});
  }
})();
