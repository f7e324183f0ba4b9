// Live training curves: draws the job's curve as SVG polylines and, while the job is queued or
// running, polls the API and redraws. No chart library: two small line charts do not need one.
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

  // A chart's series come from its data-series attribute: names, or prefixes ending in "*"
  // (e.g. "reward_*" draws one line per reward model).
  function seriesKeys(svg, curve) {
    const keys = [];
    for (const pattern of (svg.dataset.series || "").split(",").map((p) => p.trim()).filter(Boolean)) {
      if (pattern.endsWith("*")) {
        const prefix = pattern.slice(0, -1);
        for (const point of curve) {
          for (const key of Object.keys(point)) {
            if (key.startsWith(prefix) && !keys.includes(key)) keys.push(key);
          }
        }
      } else if (!keys.includes(pattern)) {
        keys.push(pattern);
      }
    }
    return keys;
  }

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function draw(svg, curve, keys) {
    svg.replaceChildren();
    const series = keys
      .map((key) => ({ key, points: curve.filter((p) => Number.isFinite(p[key])).map((p) => [p.step, p[key]]) }))
      .filter((s) => s.points.length > 0);
    if (!series.length) {
      svg.append(el("text", { x: 210, y: 110, "text-anchor": "middle", class: "muted" }, "no points yet"));
      return;
    }
    const all = series.flatMap((s) => s.points);
    const [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
    if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
    const left = 48, right = 410, top = 12, bottom = 190;
    const sx = (x) => left + ((x - x0) / Math.max(x1 - x0, 1)) * (right - left);
    const sy = (y) => bottom - ((y - y0) / (y1 - y0)) * (bottom - top);
    svg.append(el("line", { x1: left, y1: bottom, x2: right, y2: bottom, stroke: "#999" }));
    svg.append(el("line", { x1: left, y1: top, x2: left, y2: bottom, stroke: "#999" }));
    for (const y of [y0, (y0 + y1) / 2, y1]) {
      svg.append(el("text", { x: left - 4, y: sy(y) + 4, "text-anchor": "end", "font-size": 11 }, y.toFixed(3)));
    }
    svg.append(el("text", { x: left, y: 208, "font-size": 11 }, `step ${x0}`));
    svg.append(el("text", { x: right, y: 208, "text-anchor": "end", "font-size": 11 }, `step ${x1}`));
    series.forEach((s, i) => {
      const colour = COLOURS[i % COLOURS.length];
      const points = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
      svg.append(el("polyline", { points, fill: "none", stroke: colour, "stroke-width": 1.6, "data-series": s.key }));
      svg.append(el("text", { x: right - 4, y: top + 12 + 13 * i, "text-anchor": "end", "font-size": 11, fill: colour }, s.key));
    });
  }

  function render(curve) {
    for (const svg of document.querySelectorAll("svg.chart[data-series]")) {
      draw(svg, curve, seriesKeys(svg, curve));
    }
  }

  window.ShowCurves = function ({ api, active, initial }) {
    render(initial);
    if (!active) return;
    const timer = setInterval(async () => {
      try {
        const response = await fetch(api, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (!response.ok) return;
        const job = await response.json();
        render(job.curve);
        document.getElementById("job-status").textContent = job.status;
        document.getElementById("job-status").className = `status ${job.status}`;
        document.getElementById("job-step").textContent = `${job.step} / ${job.steps}`;
        document.getElementById("job-phase").textContent = job.phase || "\u2014";
        document.getElementById("job-progress").value = job.step;
        if (!["queued", "running"].includes(job.status)) {
          clearInterval(timer);
          location.reload(); // the metrics tables are rendered by the server
        }
      } catch (error) {
        // A failed poll is retried on the next tick; the page keeps its last state.
      }
    }, 3000);
  };
})();
