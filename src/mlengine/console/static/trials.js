// Trials charts (Plotly, served from the pinned plotly wheel): the objective of every trial
// with the best so far, and parallel coordinates of hyperparameters against the objective.
"use strict";

(function trialsCharts() {
  const source = document.getElementById("trials-data");
  if (!source || typeof Plotly === "undefined") return;
  const data = JSON.parse(source.textContent);
  const trials = data.trials.slice().sort((a, b) => a[0] - b[0]);
  const maximize = data.goal !== "MINIMIZE";
  const ids = trials.map((t) => t[0]);
  const values = trials.map((t) => t[1]);
  const best = [];
  for (const v of values) {
    const last = best.length ? best[best.length - 1] : v;
    best.push(maximize ? Math.max(last, v) : Math.min(last, v));
  }
  const layout = (title) => ({title: {text: title}, margin: {t: 40, l: 60, r: 20, b: 40}, height: 320});
  Plotly.newPlot("chart-objective", [
    {x: ids, y: values, mode: "markers", type: "scatter", name: data.metric},
    {x: ids, y: best, mode: "lines", type: "scatter", name: "best so far", line: {shape: "hv"}},
  ], {...layout(`${data.metric} per trial (${maximize ? "maximize" : "minimize"})`),
      xaxis: {title: {text: "trial"}}}, {responsive: true, displaylogo: false});

  const dimensions = data.params.map((name, i) => {
    const raw = trials.map((t) => t[2][i]);
    if (raw.every((v) => typeof v === "number")) return {label: name, values: raw};
    const labels = Array.from(new Set(raw.map(String))).sort();
    return {label: name, values: raw.map((v) => labels.indexOf(String(v))),
            tickvals: labels.map((_, k) => k), ticktext: labels};
  });
  dimensions.push({label: data.metric, values: values});
  Plotly.newPlot("chart-parallel", [{
    type: "parcoords", dimensions: dimensions,
    line: {color: values, colorscale: "Viridis", showscale: true, reversescale: !maximize},
  }], {...layout("hyperparameters against the objective"), margin: {t: 90, l: 60, r: 40, b: 30}},
  {responsive: true, displaylogo: false});
})();
