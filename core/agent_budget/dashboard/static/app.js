// agent-budget dashboard: fetches /api/report, draws it, and refreshes itself.
// No framework, no build step. Text from the store is set with textContent (never as HTML).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const COLORS = [
  "#2f6fde", "#e8833a", "#2a9d63", "#c8407a", "#7b5cd6",
  "#1fa2b5", "#b58b1f", "#6f7d8c", "#d23c3c", "#4aa0ff",
];
const OTHER = "(other)";
const OTHER_COLOR = "#b8bfcc";

const params = new URLSearchParams(window.location.search);
const token = params.get("token");
let generation = 0;
let timer = null;

function $(id) { return document.getElementById(id); }

// Styles go through the CSSOM (node.style), which the page's CSP allows; style attributes
// would not be.
function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "style") Object.assign(node.style, value);
    else node.setAttribute(key, String(value));
  }
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function int(n) { return Number(n).toLocaleString("en-US"); }
function usd(text) { return "$" + text; }
function shortUsd(value) {
  if (value === 0) return "$0";
  if (value >= 100) return "$" + value.toFixed(0);
  if (value >= 1) return "$" + value.toFixed(2).replace(/\.00$/, "");
  return "$" + Number(value.toPrecision(2));
}
function utc(ts, withDate) {
  const iso = new Date(ts * 1000).toISOString();
  return withDate ? iso.slice(0, 16).replace("T", " ") : iso.slice(11, 16);
}

function query() {
  const out = new URLSearchParams();
  for (const name of ["since", "until", "bucket", "rollup", "top"]) {
    if (params.get(name)) out.set(name, params.get(name));
  }
  for (const scope of params.getAll("scope")) if (scope) out.append("scope", scope);
  return out.toString();
}

async function load() {
  clearTimeout(timer);
  const headers = token ? { Authorization: "Bearer " + token } : {};
  let refresh = 10;
  try {
    const response = await fetch("/api/report?" + query(), { headers, cache: "no-store" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    refresh = body.refresh_seconds || refresh;
    render(body);
    $("error").hidden = true;
    generation += 1;
    document.body.dataset.generation = String(generation);
    document.body.dataset.state = "ready";
    $("status").textContent =
      "updated " + new Date().toISOString().slice(11, 19) + " UTC · refreshes every " + refresh + " s";
  } catch (err) {
    $("error").textContent = "Could not load the report: " + err.message;
    $("error").hidden = false;
    document.body.dataset.state = "error";
    $("status").textContent = "retrying in " + refresh + " s";
  }
  timer = setTimeout(load, refresh * 1000);
}

function render(report) {
  $("store").textContent = report.store;
  const period = report.period;
  $("period-label").textContent =
    "· " + utc(period.since, true) + " to " + utc(period.until, true) + " UTC";
  const totals = report.totals;
  setCard("total-cost", usd(totals.cost_usd), totals.cost_usd);
  setCard("total-calls", int(totals.calls), totals.calls);
  setCard("total-tokens", int(totals.tokens), totals.tokens);
  setCard("total-refusals", int(report.refusals.count), report.refusals.count);
  setCard("total-alerts", int(report.alerts.count), report.alerts.count);
  const scopeOrder = report.top_spenders.map((row) => row.scope);
  const modelOrder = report.by_model.slice(0, 10).map((row) => row.model);
  drawChart($("chart-scope"), period, report.series_by_scope, "scope", scopeOrder, 900, 260);
  drawChart($("chart-model"), period, report.series_by_model, "model", modelOrder, 560, 220);
  renderSpenders(report.top_spenders, scopeOrder);
  renderLimits(report.limits);
  renderEvents($("refusals"), report.refusals.recent, (event) => [
    utc(event.timestamp, true), event.scope, event.caller, event.limit_type, event.model,
  ]);
  renderEvents($("alerts"), report.alerts.recent, (event) => [
    utc(event.timestamp, true), event.scope, event.level, event.message,
  ]);
}

function setCard(id, text, value) {
  const node = $(id);
  node.textContent = text;
  node.dataset.value = String(value);
}

function colorOf(name, order) {
  if (name === OTHER) return OTHER_COLOR;
  const index = order.indexOf(name);
  return COLORS[(index < 0 ? order.length : index) % COLORS.length];
}

// A stacked bar per time bucket: one segment per scope (or model), largest spender lowest.
function drawChart(container, period, rows, key, order, width, height) {
  const margin = { top: 10, right: 10, bottom: 26, left: 56 };
  const names = [...order];
  for (const row of rows) if (!names.includes(row[key])) names.push(row[key]);
  const buckets = period.buckets;
  const byBucket = new Map(buckets.map((b) => [b, new Map()]));
  for (const row of rows) {
    if (!byBucket.has(row.bucket)) byBucket.set(row.bucket, new Map());
    byBucket.get(row.bucket).set(row[key], row);
  }
  let max = 0;
  for (const segments of byBucket.values()) {
    let sum = 0;
    for (const row of segments.values()) sum += row.cost_nanos / 1e9;
    max = Math.max(max, sum);
  }
  const { top, ticks } = niceScale(max);
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `spend per ${key} over time`,
  });
  for (let i = 0; i <= ticks; i += 1) {
    const y = margin.top + plotH - (plotH * i) / ticks;
    chart.append(svg("line", { class: i ? "grid" : "axis", x1: margin.left, x2: width - margin.right, y1: y, y2: y }));
    chart.append(svg("text", { class: "tick", x: margin.left - 6, y: y + 4, "text-anchor": "end" }, shortUsd((top * i) / ticks)));
  }
  const step = plotW / Math.max(buckets.length, 1);
  const barW = Math.max(1, step * 0.72);
  const labelEvery = Math.max(1, Math.ceil(buckets.length / 8));
  buckets.forEach((bucket, index) => {
    const x = margin.left + index * step + (step - barW) / 2;
    let y = margin.top + plotH;
    const segments = byBucket.get(bucket) || new Map();
    for (const name of names) {
      const row = segments.get(name);
      if (!row || !row.cost_nanos) continue;
      const h = top ? (plotH * row.cost_nanos) / 1e9 / top : 0;
      y -= h;
      const rect = svg("rect", {
        x: x.toFixed(2), y: y.toFixed(2), width: barW.toFixed(2), height: Math.max(h, 0.5).toFixed(2),
        fill: colorOf(name, order), "data-series": name, "data-bucket": bucket, "data-cost-nanos": row.cost_nanos,
      });
      rect.append(svg("title", {}, `${name} · ${utc(bucket, true)} UTC · $${row.cost_usd} · ${int(row.calls)} calls`));
      chart.append(rect);
    }
    if (index % labelEvery === 0) {
      const label = period.bucket === "day" ? utc(bucket, true).slice(5, 10) : utc(bucket, false);
      chart.append(svg("text", { class: "tick", x: x + barW / 2, y: height - 8, "text-anchor": "middle" }, label));
    }
  });
  const legend = el("div", { class: "legend" });
  for (const name of names) {
    const item = el("span");
    item.append(el("i", { class: "swatch", style: { background: colorOf(name, order) } }));
    item.append(document.createTextNode(name));
    legend.append(item);
  }
  if (!rows.length) legend.append(el("span", { class: "muted" }, "no calls in this period"));
  container.replaceChildren(chart, legend);
}

// A round step (1, 2, 2.5 or 5 times a power of ten) with at most five steps to the top.
function niceScale(value) {
  if (value <= 0) return { top: 0, ticks: 4 };
  const power = Math.pow(10, Math.floor(Math.log10(value / 5)));
  for (const m of [1, 2, 2.5, 5, 10]) {
    const step = m * power;
    if (value / step <= 5) {
      const ticks = Math.max(1, Math.ceil(value / step - 1e-9));
      return { top: step * ticks, ticks };
    }
  }
  return { top: value, ticks: 4 };
}

function renderSpenders(rows, order) {
  const body = $("spenders").tBodies[0];
  body.replaceChildren();
  for (const row of rows) {
    const tr = el("tr", { "data-scope": row.scope });
    const name = el("td");
    name.append(el("i", { class: "swatch", style: { background: colorOf(row.scope, order) } }));
    name.append(document.createTextNode(row.scope));
    tr.append(name);
    tr.append(el("td", { class: "num calls", "data-value": row.calls }, int(row.calls)));
    tr.append(el("td", { class: "num tokens", "data-value": row.tokens }, int(row.tokens)));
    tr.append(el("td", { class: "num cost", "data-value": row.cost_usd }, row.cost_usd));
    body.append(tr);
  }
  if (!rows.length) body.append(emptyRow(4, "no calls in this period"));
}

function renderLimits(rows) {
  const body = $("limits").tBodies[0];
  body.replaceChildren();
  for (const row of rows) {
    const tr = el("tr", { "data-scope": row.scope, "data-limit": row.limit });
    tr.append(el("td", {}, row.scope));
    tr.append(el("td", {}, row.limit));
    tr.append(el("td", {}, row.window));
    tr.append(el("td", { class: "num used", "data-value": row.used }, fmt(row.used, row.unit)));
    tr.append(el("td", { class: "num reserved", "data-value": row.reserved }, fmt(row.reserved, row.unit)));
    tr.append(el("td", { class: "num limit", "data-value": row.limit_value }, fmt(row.limit_value, row.unit)));
    tr.append(el("td", { class: "num remaining", "data-value": row.remaining }, fmt(row.remaining, row.unit)));
    tr.append(el("td", { class: "unit" }, row.unit));
    const pct = Math.min(row.pct_used, 1);
    const bar = el("div", { class: "bar" + (row.pct_used > 1 ? " bad" : row.pct_used >= 0.8 ? " warn" : "") });
    bar.append(el("span", { style: { width: (pct * 100).toFixed(1) + "%" } }));
    const cell = el("td", { class: "bar-cell" });
    const wrap = el("div", { class: "bar-wrap" });
    wrap.append(bar, el("span", { class: "pct" }, (row.pct_used * 100).toFixed(1) + "%"));
    cell.append(wrap);
    tr.append(cell);
    body.append(tr);
  }
  if (!rows.length) body.append(emptyRow(9, "no scope with limits in this store"));
}

function fmt(value, unit) {
  return unit === "USD" ? "$" + value : int(value);
}

function renderEvents(table, events, cells) {
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const event of events) {
    const tr = el("tr", { "data-kind": event.kind });
    cells(event).forEach((text, i, all) => {
      const td = el("td", {}, text);
      if (event.kind === "alert" && i === 2) td.className = "level-" + text;
      if (i === all.length - 1 && event.kind === "alert") td.classList.add("message");
      tr.append(td);
    });
    body.append(tr);
  }
  if (!events.length) body.append(emptyRow(table.tHead.rows[0].cells.length, "none in this period"));
}

function emptyRow(span, text) {
  const tr = el("tr");
  tr.append(el("td", { colspan: span, class: "empty" }, text));
  return tr;
}

function setupControls() {
  const period = $("period");
  const wanted = (params.get("since") || "24h") + "|" + (params.get("bucket") || "hour");
  if ([...period.options].some((o) => o.value === wanted)) period.value = wanted;
  $("scope").value = params.get("scope") || "";
  $("rollup").value = params.get("rollup") || "";
  $("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    const [since, bucket] = period.value.split("|");
    params.set("since", since);
    params.set("bucket", bucket);
    for (const [name, id] of [["scope", "scope"], ["rollup", "rollup"]]) {
      const value = $(id).value.trim();
      if (value) params.set(name, value); else params.delete(name);
    }
    window.history.replaceState(null, "", "?" + params.toString());
    load();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupControls();
  load();
});
