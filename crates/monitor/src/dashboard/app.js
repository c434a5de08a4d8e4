// The national monitor's dashboard: draws the overview (flow heat map, health table,
// throughput and latency charts, clearing tables, alerts) with plain DOM and SVG, and keeps
// it live from the server-sent events of /events. No library, nothing fetched from elsewhere.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const SERIES_SECONDS = 300;

function yuan(fen) {
  const sign = fen < 0 ? "-" : "";
  const abs = Math.abs(fen);
  const whole = Math.floor(abs / 100).toLocaleString("en-US");
  return sign + "¥" + whole + "." + String(abs % 100).padStart(2, "0");
}

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function ago(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function heatColor(t) {
  // From dark teal (little) to hot orange (most).
  const a = [30, 60, 80], b = [255, 140, 40];
  const c = a.map((v, i) => Math.round(v + (b[i] - v) * t));
  return "rgb(" + c.join(",") + ")";
}

function percentiles(l) {
  return !l || l.p50 === null ? "—" : l.p50.toFixed(1) + " / " + l.p99.toFixed(1) + " ms";
}

function renderKpis(o) {
  const h = o.health, f = o.flows;
  const up = h.nodes.filter((n) => n.up).length;
  const items = [
    ["kpi-settlements", "settlements", String(f.settlements.total), false],
    ["kpi-cross", "cross-province settlements", String(f.settlements.cross_province), false],
    ["kpi-flow", "cross-province paid (net)", yuan(f.total_amount_fen), false],
    ["kpi-nodes", "nodes up", up + " / " + h.nodes.length, up < h.nodes.length],
    ["kpi-holds", "holds in flight", h.holds_in_flight + " (" + yuan(h.held_fen) + ")", false],
    ["kpi-oldest", h.oldest_hold_age_exact === false ? "oldest hold (at most)" : "oldest hold", h.oldest_hold_age_ms === null ? "none" : ago(h.oldest_hold_age_ms), false],
    ["kpi-p99", "latency p50 / p99", percentiles(h.latency_ms), false],
    ["kpi-cross-p99", "cross-province p50 / p99", percentiles(h.latency_ms.cross_province), false],
    ["kpi-alerts", "alerts", String(o.alerts.length), o.alerts.length > 0],
  ];
  const box = document.getElementById("kpis");
  box.replaceChildren();
  for (const [id, label, value, bad] of items) {
    const card = el("div", { class: "kpi" + (bad ? " bad" : ""), id });
    card.append(el("div", { class: "value" }, value), el("div", { class: "label" }, label));
    box.append(card);
  }
}

function renderAlerts(alerts) {
  const list = document.getElementById("alerts");
  list.replaceChildren();
  if (alerts.length === 0) {
    list.append(el("li", { class: "none" }, "No alerts: every node up, clearing reconciled."));
    return;
  }
  for (const a of alerts) {
    const item = el("li", { class: a.severity, "data-kind": a.kind });
    item.append(el("strong", {}, a.kind.replace(/_/g, " ") + " — " + a.subject + ": "), document.createTextNode(a.message));
    list.append(item);
  }
}

function renderHeatmap(flows) {
  const provinces = flows.provinces;
  const cells = new Map(flows.total.map((c) => [c.from + "-" + c.to, c]));
  const max = Math.max(1, ...flows.total.map((c) => c.amount_fen));
  const n = provinces.length;
  const label = 110, size = Math.max(90, Math.min(150, Math.floor(520 / Math.max(1, n))));
  const width = label + n * size + 10, height = 40 + n * size + 10;
  const root = svg("svg", { viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": "flow matrix heat map" });
  provinces.forEach((p, j) => {
    const t = svg("text", { x: label + j * size + size / 2, y: 22, "text-anchor": "middle", fill: "#8b9bab", "font-size": 13 }, p.name);
    t.append(svg("title", {}, p.name_zh + " " + p.code));
    root.append(t);
  });
  provinces.forEach((from, i) => {
    const y = 40 + i * size;
    const t = svg("text", { x: label - 8, y: y + size / 2 + 4, "text-anchor": "end", fill: "#8b9bab", "font-size": 13 }, from.name);
    t.append(svg("title", {}, from.name_zh + " " + from.code));
    root.append(t);
    provinces.forEach((to, j) => {
      const x = label + j * size;
      const cell = cells.get(from.code + "-" + to.code);
      const amount = cell ? cell.amount_fen : 0;
      const g = svg("g", {
        id: "flow-" + from.code + "-" + to.code, class: "flow-cell",
        "data-amount-fen": amount, "data-count": cell ? cell.count : 0,
      });
      const fill = from.code === to.code ? "#121a23" : amount > 0 ? heatColor(Math.sqrt(amount / max)) : "#1c2a38";
      g.append(svg("rect", { x: x + 2, y: y + 2, width: size - 4, height: size - 4, rx: 6, fill }));
      if (from.code !== to.code) {
        g.append(svg("text", { x: x + size / 2, y: y + size / 2 - 2, "text-anchor": "middle", fill: "#fff", "font-size": 15, "font-weight": 600 }, yuan(amount)));
        g.append(svg("text", { x: x + size / 2, y: y + size / 2 + 16, "text-anchor": "middle", fill: "#e6edf3", "font-size": 11 },
          (cell ? cell.count : 0) + " legs" + (cell && cell.refund_fen > 0 ? ", −" + yuan(cell.refund_fen) : "")));
        g.append(svg("title", {}, from.name + " paid " + yuan(amount) + " for " + to.name + "'s patients"));
      }
      root.append(g);
    });
  });
  document.getElementById("heatmap").replaceChildren(root);
  const hours = (flows.periods && flows.periods.hour) || [];
  const current = hours[0];
  document.getElementById("flow-period").textContent = current
    ? "This hour (" + current.period + ", UTC+8): " + yuan(current.flows.reduce((s, c) => s + c.amount_fen, 0)) + " in " + current.flows.reduce((s, c) => s + c.count, 0) + " legs"
    : "No cross-province payments yet.";
}

function renderHealth(health) {
  const body = document.querySelector("#health tbody");
  body.replaceChildren();
  const now = health.generated_ms;
  for (const n of health.nodes) {
    const row = el("tr", { id: "health-" + n.province, class: n.up ? "up" : "down", "data-state": n.state });
    row.append(
      el("td", {}, n.name + " (" + n.province + ")"),
      el("td", { class: "state-" + n.state }, n.up ? "UP" : n.state === "connecting" ? "CONNECTING" : "DOWN"),
      el("td", {}, (n.up ? "up " : "down ") + ago(now - n.since_ms)),
      el("td", { class: "num" }, String(n.cursor)),
      el("td", { class: "num" }, String(n.lag_entries)),
      el("td", { class: "num" }, String(n.holds_in_flight)),
      el("td", { class: "num" }, yuan(n.held_fen)),
      el("td", { class: "num oldest-hold" }, n.oldest_hold_age_ms === null ? "—" : (n.oldest_hold_age_exact ? "" : "≤ ") + ago(n.oldest_hold_age_ms)),
    );
    const links = el("td");
    for (const link of n.peer_links) links.append(el("span", { class: "link" + (link.state === "connected" ? "" : " down") }, link.name + " " + (link.state === "connected" ? "✓" : link.state)));
    row.append(links);
    body.append(row);
  }
}

function lineChart(container, seriesList, options) {
  const width = 560, height = 200, left = 44, bottom = 22, top = 10, right = 10;
  const root = svg("svg", { viewBox: "0 0 " + width + " " + height });
  const xs = seriesList.flatMap((s) => s.points.map((p) => p[0]));
  const ys = seriesList.flatMap((s) => s.points.map((p) => p[1]));
  const x1 = options.xMax, x0 = options.xMin;
  const yMax = Math.max(options.yMinMax || 1, ...ys) * 1.1;
  const sx = (x) => left + ((x - x0) / Math.max(1, x1 - x0)) * (width - left - right);
  const sy = (y) => height - bottom - (y / yMax) * (height - bottom - top);
  for (let k = 0; k <= 4; k++) {
    const v = (yMax * k) / 4, y = sy(v);
    root.append(svg("line", { x1: left, x2: width - right, y1: y, y2: y, stroke: "#263445" }));
    root.append(svg("text", { x: left - 6, y: y + 4, "text-anchor": "end", fill: "#8b9bab", "font-size": 10 }, v < 10 ? v.toFixed(1) : Math.round(v)));
  }
  root.append(svg("text", { x: left, y: height - 6, fill: "#8b9bab", "font-size": 10 }, options.xLabel));
  root.append(svg("text", { x: width - right, y: height - 6, fill: "#8b9bab", "font-size": 10, "text-anchor": "end" }, "now"));
  seriesList.forEach((s, index) => {
    if (s.points.length === 0) return;
    const d = s.points.map((p, i) => (i ? "L" : "M") + sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1)).join(" ");
    root.append(svg("path", { d, fill: "none", stroke: s.color, "stroke-width": 2 }));
    if (options.dots) {
      for (const p of s.points) root.append(svg("circle", { cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: 3, fill: s.color }));
    }
    root.append(svg("text", { x: left + 8 + index * 110, y: top + 10, fill: s.color, "font-size": 11 }, s.name));
  });
  if (xs.length === 0) root.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", fill: "#8b9bab" }, "no data yet"));
  container.replaceChildren(root);
}

function renderSeries(o) {
  const nowS = Math.floor(o.generated_ms / 1000);
  const from = nowS - SERIES_SECONDS;
  const bySecond = new Map(o.series.throughput.map((s) => [s.second, s]));
  const all = [], cross = [];
  for (let s = from; s <= nowS; s++) {
    const sample = bySecond.get(s);
    all.push([s, sample ? sample.settlements : 0]);
    cross.push([s, sample ? sample.cross_province : 0]);
  }
  lineChart(document.getElementById("throughput-chart"), [
    { name: "all", color: "#58a6ff", points: all },
    { name: "cross-province", color: "#ff8c28", points: cross },
  ], { xMin: from, xMax: nowS, xLabel: "−5 min", yMinMax: 1 });
  const latency = o.series.latency.filter((s) => s.at_ms / 1000 >= from && s.count > 0);
  const pick = (key) => latency.filter((s) => s[key] !== null).map((s) => [s.at_ms / 1000, s[key]]);
  lineChart(document.getElementById("latency-chart"), [
    { name: "p50", color: "#2ea043", points: pick("p50_ms") },
    { name: "p90", color: "#d29922", points: pick("p90_ms") },
    { name: "p99", color: "#f85149", points: pick("p99_ms") },
    { name: "cross p50", color: "#58a6ff", points: latency.filter((s) => s.cross_count > 0 && s.cross_p50_ms !== null).map((s) => [s.at_ms / 1000, s.cross_p50_ms]) },
    { name: "cross p99", color: "#ff8c28", points: latency.filter((s) => s.cross_count > 0 && s.cross_p99_ms !== null).map((s) => [s.at_ms / 1000, s.cross_p99_ms]) },
  ], { xMin: from, xMax: nowS, xLabel: "−5 min", yMinMax: 1, dots: true });
}

// Horizontal bars: one row per reason, labelled with its code and count.
function barChart(container, counts, color, empty) {
  const entries = Object.entries(counts || {}).filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]);
  container.replaceChildren();
  if (entries.length === 0) {
    container.append(el("div", { class: "muted" }, empty));
    return;
  }
  const width = 420, row = 18, label = 170;
  const max = Math.max(...entries.map(([, v]) => v));
  const root = svg("svg", { viewBox: "0 0 " + width + " " + (entries.length * row + 4) });
  entries.forEach(([reason, count], i) => {
    const y = i * row + 2;
    const w = Math.max(2, ((width - label - 50) * count) / max);
    const g = svg("g", { class: "bar", "data-reason": reason, "data-count": count });
    g.append(
      svg("text", { x: label - 6, y: y + 12, "text-anchor": "end", fill: "#e6edf3", "font-size": 11 }, reason.replace(/_/g, " ")),
      svg("rect", { x: label, y, width: w.toFixed(1), height: row - 4, fill: color, rx: 2 }),
      svg("text", { x: label + w + 6, y: y + 12, fill: "#8b9bab", "font-size": 11 }, String(count)),
    );
    root.append(g);
  });
  container.append(root);
}

function renderOutcomes(outcomes) {
  if (!outcomes) return;
  barChart(document.getElementById("refusals-chart"), outcomes.grantor_refusals, "#d29922", "no grantor refused yet");
  barChart(document.getElementById("replans-chart"), outcomes.replan_reasons, "#ff8c28", "no re-plans yet");
  barChart(document.getElementById("aborts-chart"), outcomes.legs_aborted, "#f85149", "no aborted legs yet");
  const o = outcomes.settlements_by_outcome || {};
  document.getElementById("outcome-summary").textContent = Object.keys(o).length === 0 ? "no settlements decided yet"
    : Object.entries(o).map(([k, v]) => k.replace(/_/g, " ") + ": " + v).join(" · ");
}

function renderClearing(clearing) {
  const body = document.querySelector("#clearing tbody");
  body.replaceChildren();
  for (const c of clearing.total) {
    const row = el("tr", { id: "clearing-" + c.payer + "-" + c.coordinator, "data-reconciled": c.reconciled });
    row.append(
      el("td", {}, c.payer_name), el("td", {}, c.coordinator_name),
      el("td", { class: "num" }, yuan(c.payer_net_fen)), el("td", { class: "num" }, yuan(c.coordinator_net_fen)),
      el("td", { class: "num" + (c.difference_fen ? " mismatch" : "") }, yuan(c.difference_fen)),
      el("td", { class: c.reconciled ? "ok" : "mismatch" }, c.reconciled ? "✓ reconciled" : "✗ mismatch"),
    );
    body.append(row);
  }
  const positions = document.querySelector("#positions tbody");
  positions.replaceChildren();
  for (const p of clearing.positions) {
    const row = el("tr");
    const who = p.net_fen > 0 ? p.b_name + "'s fund owes " + p.a_name + "'s " + yuan(p.net_fen)
      : p.net_fen < 0 ? p.a_name + "'s fund owes " + p.b_name + "'s " + yuan(-p.net_fen) : "even";
    row.append(el("td", {}, p.a_name + " ⇄ " + p.b_name), el("td", { class: "num" }, yuan(p.a_paid_for_b_fen)),
      el("td", { class: "num" }, yuan(p.b_paid_for_a_fen)), el("td", {}, who));
    positions.append(row);
  }
}

function render(o) {
  if (!o) return;
  renderKpis(o);
  renderAlerts(o.alerts);
  renderHeatmap(o.flows);
  renderHealth(o.health);
  renderSeries(o);
  renderClearing(o.clearing);
  renderOutcomes(o.outcomes);
  document.body.setAttribute("data-rendered-ms", String(o.generated_ms));
}

function connect() {
  const status = document.getElementById("live-status");
  if (!window.EventSource) return;
  const source = new EventSource("/events");
  source.addEventListener("overview", (event) => {
    status.textContent = "live";
    status.className = "pill live";
    render(JSON.parse(event.data));
  });
  source.onerror = () => { status.textContent = "reconnecting…"; status.className = "pill"; };
}

render(window.INITIAL_OVERVIEW);
connect();
