// The birth report page: reads the inline JSON payload, draws the charts as SVG and the attention
// maps on canvases, with a slider over the saved checkpoints. No library, no network.
"use strict";
const P = JSON.parse(document.getElementById("payload").textContent);
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];
const DASHES = ["", "6 3", "2 3", "8 3 2 3", "1 2"];
const WIDTHS = [3.2, 1.8, 2.0, 1.5, 1.3];
const SVGNS = "http://www.w3.org/2000/svg";
const WINDOW_COLORS = ["#5dade2", "#f5b041", "#58d68d", "#ec7063"];

function el(tag, attrs, parent, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVGNS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
const fmt = (v) => (v === null || v === undefined ? "n/a" : Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3));

function ticks(lo, hi, n) {
  const step0 = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(step0 || 1)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(+v.toFixed(10));
  return out;
}

// One line chart: SVG axes and curves, a legend beside it (click toggles a curve), a hover read-out.
function chart(panel, parent) {
  const outer = el("div", { class: "chart-box", "data-panel": panel.name }, parent);
  const box = el("div", { class: "chart" }, outer);
  const W = 400, H = 260, m = { l: 52, r: 12, t: 26, b: 40 };
  const svg = el("svg:svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}` }, box);
  // a log panel is drawn on log10 of its values, its ticks read as powers of ten
  const tf = panel.log ? (v) => Math.log10(Math.max(v, 1e-6)) : (v) => v;
  const tickText = panel.log ? (v) => `1e${v}` : (v) => String(v);
  const all = panel.series.flatMap((s) => s.values.filter((v) => v !== null).map(tf)).concat(panel.lines.map((l) => tf(l.value)));
  const iters = panel.series.flatMap((s) => s.iters);
  const x0 = Math.min(...iters), xt = ticks(x0, Math.max(...iters, x0 + 1), 5);
  const x1 = Math.max(...iters, x0 + 1, xt[xt.length - 1] + (xt[1] - xt[0] || 1) * (xt[xt.length - 1] < Math.max(...iters)));
  let [y0, y1] = panel.ylim || [Math.min(0, ...all), Math.max(...all) * 1.05 || 1];
  const X = (v) => m.l + ((v - x0) / (x1 - x0)) * (W - m.l - m.r);
  const Yl = (v) => H - m.b - ((v - y0) / (y1 - y0)) * (H - m.t - m.b);  // of drawn (transformed) values
  const Y = (v) => Yl(tf(v));
  el("svg:text", { x: W / 2, y: 16, "text-anchor": "middle", "font-weight": "600" }, svg).innerHTML = panel.title;
  el("svg:line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, stroke: "#444" }, svg);
  el("svg:line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, stroke: "#444" }, svg);
  for (const v of ticks(x0, x1, 5).filter((v) => v <= x1)) {
    el("svg:line", { x1: X(v), x2: X(v), y1: H - m.b, y2: H - m.b + 4, stroke: "#444" }, svg);
    el("svg:text", { x: X(v), y: H - m.b + 16, "text-anchor": "middle" }, svg, String(v));
  }
  for (const v of panel.log ? ticks(Math.floor(y0), Math.ceil(y1), 5).filter(Number.isInteger) : ticks(y0, y1, 5)) {
    el("svg:line", { x1: m.l - 4, x2: m.l, y1: Yl(v), y2: Yl(v), stroke: "#444" }, svg);
    el("svg:text", { x: m.l - 6, y: Yl(v) + 4, "text-anchor": "end" }, svg, tickText(v));
  }
  el("svg:text", { x: (W + m.l) / 2, y: H - 6, "text-anchor": "middle" }, svg, "iteration");
  el("svg:text", { x: 12, y: (H - m.b + m.t) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(H - m.b + m.t) / 2})` }, svg, panel.ylabel);
  const legend = el("ul", { class: "legend" }, box);
  const items = [], lines = [];
  (panel.windows || []).forEach((w, i) => {  // steps with something frozen or an intervention: shaded
    const color = WINDOW_COLORS[i % WINDOW_COLORS.length], a = X(Math.max(w.start, x0)), b = X(Math.min(w.end, x1));
    const g = el("svg:rect", { x: a, y: m.t, width: Math.max(b - a, 1), height: H - m.t - m.b, fill: color,
      "fill-opacity": 0.15, class: "window" }, svg);
    lines.push({ label: w.label, node: g, color, dash: "", width: 6 });
  });
  panel.lines.forEach((l, i) => {
    const g = el("svg:line", { x1: m.l, x2: W - m.r, y1: Y(l.value), y2: Y(l.value), stroke: "#888", "stroke-width": 1,
      "stroke-dasharray": ["5 3", "2 2", "", "6 2 2 2"][i % 4], class: "hline" }, svg);
    lines.push({ label: l.label, node: g, color: "#888", dash: "5 3", width: 1 });
  });
  panel.series.forEach((s, i) => {
    const pts = s.iters.map((it, j) => [it, s.values[j]]).filter((p) => p[1] !== null);
    const d = pts.map((p, j) => `${j ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join("");
    const g = el("svg:path", { d, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": WIDTHS[i % WIDTHS.length],
      "stroke-dasharray": DASHES[i % DASHES.length], "stroke-opacity": i === 0 ? 0.55 : 1, class: "curve", "data-key": s.key }, svg);
    items.push({ label: s.label, node: g, color: COLORS[i % COLORS.length], dash: DASHES[i % DASHES.length], width: 3, series: s });
  });
  for (const it of items.concat(lines)) {
    const li = el("li", { "data-key": it.series ? it.series.key : "line" }, legend);
    el("span", { class: "swatch", style: `border-top: 3px ${it.dash ? "dashed" : "solid"} ${it.color}` }, li);
    el("span", {}, li).innerHTML = it.label;
    li.addEventListener("click", () => {
      const off = li.classList.toggle("off");
      it.node.style.display = off ? "none" : "";
    });
  }
  if (panel.note) el("p", { class: "note" }, outer).innerHTML = panel.note;
  const tip = document.getElementById("tip");
  svg.addEventListener("mousemove", (ev) => {
    const r = svg.getBoundingClientRect(), it = x0 + ((ev.clientX - r.left - m.l) / (W - m.l - m.r)) * (x1 - x0);
    const rows = items.filter((i) => i.series && i.node.style.display !== "none").map((i) => {
      const s = i.series, j = s.iters.reduce((b, v, k) => (Math.abs(v - it) < Math.abs(s.iters[b] - it) ? k : b), 0);
      return `${i.label}: ${fmt(s.values[j])} (iter ${s.iters[j]})`;
    });
    tip.innerHTML = rows.join("<br>");
    tip.style.display = rows.length ? "block" : "none";
    tip.style.left = ev.clientX + 14 + "px";
    tip.style.top = ev.clientY + 10 + "px";
  });
  svg.addEventListener("mouseleave", () => (tip.style.display = "none"));
  return outer;
}

// Blues colour map, 0 -> white, 1 -> dark blue (as the PNG figures).
function blues(v) {
  const a = [247, 251, 255], b = [8, 48, 107], t = Math.max(0, Math.min(1, v));
  return `rgb(${a.map((c, i) => Math.round(c + (b[i] - c) * Math.sqrt(t))).join(",")})`;
}

function heatmap(canvas, A, values, layer) {
  const T = A.T, cell = Math.max(8, Math.floor(540 / T)), pad = 16, size = pad + T * cell;
  canvas.width = size + 4; canvas.height = size + pad + 4;
  const c = canvas.getContext("2d");
  c.clearRect(0, 0, canvas.width, canvas.height);
  for (let q = 0; q < T; q++) for (let s = 0; s <= q; s++) {
    c.fillStyle = blues(values[q * T + s]);
    c.fillRect(pad + s * cell, pad + q * cell, cell, cell);
  }
  c.font = `${Math.min(12, cell + 1)}px "DejaVu Sans Mono", monospace`;
  c.fillStyle = "#222"; c.textAlign = "center"; c.textBaseline = "middle";
  A.chars.forEach((ch, i) => {
    c.fillText(ch, pad + i * cell + cell / 2, pad / 2);                 // keys, on top
    c.fillText(ch, pad / 2, pad + i * cell + cell / 2);                 // queries, on the left
  });
  c.fillText("key \u2192", pad + T * cell - 24, size + pad / 2 + 2);
  if (layer > 0) for (const [q, s, trig] of A.boxes) {
    c.strokeStyle = trig ? "red" : "limegreen"; c.lineWidth = 1.5;
    c.strokeRect(pad + s * cell + 0.75, pad + q * cell + 0.75, cell - 1.5, cell - 1.5);
  }
  canvas.onmousemove = (ev) => {
    const r = canvas.getBoundingClientRect(), s = Math.floor((ev.clientX - r.left - pad) / cell), q = Math.floor((ev.clientY - r.top - pad) / cell);
    const tip = document.getElementById("tip");
    if (q < 0 || s < 0 || q >= T || s > q) { tip.style.display = "none"; return; }
    tip.textContent = `query ${q} '${A.chars[q]}' \u2192 key ${s} '${A.chars[s]}': ${values[q * T + s].toFixed(3)}`;
    tip.style.display = "block"; tip.style.left = ev.clientX + 14 + "px"; tip.style.top = ev.clientY + 10 + "px";
  };
  canvas.onmouseleave = () => (document.getElementById("tip").style.display = "none");
}

function colorbar(parent) {
  const cb = el("canvas", { width: 30, height: 260, class: "colorbar" }, parent), c = cb.getContext("2d");
  for (let y = 0; y < 240; y++) { c.fillStyle = blues(1 - y / 239); c.fillRect(0, y + 10, 12, 1); }
  c.font = "10px sans-serif"; c.fillStyle = "#222";
  c.fillText("1", 15, 14); c.fillText("0.5", 15, 132); c.fillText("0", 15, 252);
}

function attentionView(A, parent) {
  const sec = el("section", { id: "attention" }, parent);
  el("h2", {}, sec, "Attention over training");
  const shown = A.T === A.seq_length ? `all ${A.T} positions` : `positions 1\u2013${A.T} of ${A.seq_length}`;
  const trig = A.triggers ? ` Triggers (${A.fixed ? "fixed" : "random, of this sequence"}): ${A.triggers.join(" ")}.` : "";
  el("p", {}, sec, `One evaluation sequence (${shown}); queries are rows, keys are columns.${trig} ` +
    `\u23ce is a newline, \u2423 a space. Patterns as the run used them: with its clamps active at that step.`);
  const ctl = el("div", { class: "controls" }, sec);
  const lab = el("label", {}, ctl, "checkpoint ");
  const slider = el("input", { type: "range", min: 0, max: A.steps.length - 1, value: A.steps.length - 1, step: 1, id: "step-slider" }, lab);
  const stepText = el("span", { id: "step-label" }, ctl);
  const heads = A.maps[0][0].length;
  let headSel = null;
  if (heads > 1) {
    const hl = el("label", {}, ctl, "head ");
    headSel = el("select", { id: "head-select" }, hl);
    for (let h = 0; h < heads; h++) el("option", { value: h }, headSel, String(h + 1));
  }
  const key = el("span", {}, ctl);
  el("span", { class: "boxkey", style: "border-color: red" }, key);
  key.appendChild(document.createTextNode(A.box_label));
  el("span", { class: "boxkey", style: "border-color: limegreen" }, key);
  key.appendChild(document.createTextNode("other repeated token (layer 2)"));
  const row = el("div", { class: "attn" }, sec);
  const canvases = A.maps[0].map((_, layer) => {
    const fig = el("figure", {}, row);
    el("figcaption", {}, fig, `layer ${layer + 1}`);
    return el("canvas", { class: "attn-map", "data-layer": layer }, fig);
  });
  colorbar(row);
  const draw = () => {
    const i = +slider.value, h = headSel ? +headSel.value : 0;
    stepText.textContent = `step ${A.steps[i]} (${i + 1} of ${A.steps.length} saved)`;
    canvases.forEach((cv, layer) => {
      heatmap(cv, A, A.maps[i][layer][h], layer);
      cv.parentNode.querySelector("figcaption").textContent = `layer ${layer + 1}` + (A.clamps[i][layer] ? ` (${A.clamps[i][layer]})` : "");
    });
    sec.dataset.step = A.steps[i];
  };
  slider.addEventListener("input", draw);
  if (headSel) headSel.addEventListener("change", draw);
  draw();
}

function table(rows, parent, head) {
  const t = el("table", {}, parent);
  if (head) { const tr = el("tr", {}, t); head.forEach((h) => el("th", {}, tr, h)); }
  for (const r of rows) { const tr = el("tr", {}, t); r.forEach((c) => el("td", {}, tr, c)); }
  return t;
}

function tlView(tl, parent) {
  const sec = el("section", { id: "transformer-lens" }, parent);
  el("h2", {}, sec, "TransformerLens export");
  if (tl.error) { el("p", {}, sec, `Not available: ${tl.error}`); return; }
  el("p", {}, sec, `birth.interop.to_transformer_lens on the latest checkpoint, ${tl.n_seqs} evaluation sequences: ` +
    `max |\u0394logit| = ${tl.max_logit_diff.toExponential(2)}, max |\u0394attention| = ${tl.max_attention_diff.toExponential(2)}. ` +
    `Head scores on ${tl.head_tokens[0]} sequences of ${tl.head_tokens[1]} repeated random tokens: birth's own ` +
    `(the head_* metrics) beside TransformerLens' detect_head ("mul") on the exported model.`);
  const rows = [], H = tl.heads;
  H.previous.birth.forEach((hs, layer) => hs.forEach((_, h) => rows.push([`${layer + 1}`, `${h + 1}`,
    ...["previous", "induction", "duplicate"].flatMap((k) => [H[k].birth[layer][h].toFixed(3), H[k].transformer_lens[layer][h].toFixed(3)])])));
  table(rows, sec, ["layer", "head", "previous (birth)", "previous (TL)", "induction (birth)", "induction (TL)",
    "duplicate (birth)", "duplicate (TL)"]);
}

function runView(run, parent) {
  parent.innerHTML = "";
  el("h2", {}, parent, `Run ${run.name}`);
  el("p", {}, parent, `status: ${run.status}; steps: ${run.steps ?? "n/a"}; wall time: ${run.wall_seconds ?? "n/a"} s`);
  table(Object.entries(run.summary).map(([k, v]) => [k, fmt(v)]), parent, ["final metric (last evaluation)", "value"]);
  el("h2", {}, parent, "Curves");
  const charts = el("div", { class: "charts", id: "charts" }, parent);
  run.panels.forEach((p) => chart(p, charts));
  if (run.attention) attentionView(run.attention, parent);
  if (run.tl) tlView(run.tl, parent);
  const det = el("details", {}, parent);
  el("summary", {}, det, "Config (config.yaml)");
  el("pre", { id: "config" }, det, run.config);
}

function reproductionTop(top) {
  el("p", {}, top).innerHTML = `Command: <code></code>`;
  top.querySelector("code").textContent = P.command;
  el("h2", {}, top, "Claims");
  const t = table(P.claims.map((c) => [c.id, c.claim, c.figure, c.rule, c.measured, c.verdict + (c.reason ? `: ${c.reason}` : "")]),
    top, ["#", "claim", "figure", "rule", "measured", "verdict"]);
  t.id = "claims";
  t.querySelectorAll("tr").forEach((tr, i) => { if (i) tr.lastChild.className = P.claims[i - 1].verdict; });
  el("h2", {}, top, "Figures");
  for (const f of P.figures) { el("p", {}, top, f.name); el("img", { class: "figure", src: f.src, alt: f.name }, top); }
  el("h2", {}, top, `Runs (${P.runs.length} of ${P.runs_total} shown)`);
  if (P.damaged && P.damaged.length) {
    el("p", { id: "damaged" }, top, `Skipped, no whole checkpoint to read: ${P.damaged.join(", ")}`);
  }
  const sel = el("select", { id: "run-select" }, el("label", {}, top, "run "));
  P.runs.forEach((r, i) => el("option", { value: i }, sel, r.name));
  sel.addEventListener("change", () => runView(P.runs[+sel.value], document.getElementById("run")));
}

document.getElementById("title").textContent = P.title;
if (P.kind === "reproduction") reproductionTop(document.getElementById("top"));
if (P.runs.length) runView(P.runs[0], document.getElementById("run"));
document.body.dataset.ready = "1";
