// evosearch report and dashboard: draws a run from the columns that evosearch/report.py load_run() makes.
// Report mode: the data and plotly.js are in the page (gzip + base64). Live mode: fetched from the dashboard server.
"use strict";
const MODE = document.body.dataset.mode;
const evo = (window.evo = { ready: false, renders: 0, errors: [], data: null });
window.addEventListener("error", (e) => evo.errors.push(String(e.message)));

const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s == null ? "" : s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
const fmt = (x, d = 6) => (x == null ? "–" : typeof x === "number" ? (Number.isInteger(x) ? String(x) : x.toPrecision(d).replace(/\.?0+$/, "")) : esc(x));
const PLOT_CFG = { displaylogo: false, responsive: true, displayModeBar: "hover" };
const STATUS_COLORS = { ok: "#2e9d57", pending: "#f2b705", duplicate: "#9aa4b2", syntax: "#e8710a", no_code: "#c58af9", timeout: "#d93025", memory: "#a142f4", crash: "#b3261e", invalid: "#f06292", rejected: "#795548", sampler_error: "#455a64" };

async function unpack(b64) {
  const bin = atob(b64.trim());
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return await new Response(stream).text();
}

async function loadPlotly() {
  evo.t0 = performance.now();
  const packed = $("#plotly-packed").textContent.trim();
  const s = document.createElement("script");
  if (packed) {
    s.textContent = await unpack(packed);
    evo.plotlyUnpackMs = Math.round(performance.now() - evo.t0);
    document.head.appendChild(s); // runs at once: defines window.Plotly
    return;
  }
  await new Promise((ok, fail) => { s.src = "plotly.min.js"; s.onload = ok; s.onerror = () => fail(new Error("plotly.min.js did not load")); document.head.appendChild(s); });
}

// ---- derived views ---------------------------------------------------------------------------------------------
function text(d, i) { return i == null ? null : d.strings[i]; }
function rowOf(d) { if (!d._row) { d._row = new Map(); d.programs.id.forEach((id, k) => d._row.set(id, k)); } return d._row; }
function editedParent(d, k) { const ps = d.programs.parents[k]; return ps && ps.length ? ps[ps.length - 1] : null; }

function bestProgram(d) {
  const P = d.programs; let best = null;
  P.id.forEach((id, k) => { if (P.status[k] === "ok" && P.score[k] != null && (best == null || P.score[k] > P.score[best])) best = k; });
  return best == null ? null : P.id[best];
}

function lineage(d, id) { // from the seed to id, following the edited (last) parent
  const rows = rowOf(d), chain = [], seen = new Set();
  let cur = id;
  while (cur != null && rows.has(cur) && !seen.has(cur)) { seen.add(cur); chain.push(cur); cur = editedParent(d, rows.get(cur)); }
  return chain.reverse();
}

// cumulative best of the ok programs for which keep(k) holds, ordered by key(k); only the improvements plus the end
function bestCurve(d, keep, key) {
  const P = d.programs, idx = [];
  P.id.forEach((_, k) => { if (P.status[k] === "ok" && P.score[k] != null && key(k) != null && keep(k)) idx.push(k); });
  idx.sort((a, b) => key(a) - key(b));
  const x = [], y = [], ids = []; let best = -Infinity;
  for (const k of idx) if (P.score[k] > best) { best = P.score[k]; x.push(key(k)); y.push(best); ids.push(P.id[k]); }
  const end = P.id.reduce((m, _, k) => Math.max(m, key(k) ?? -Infinity), -Infinity);
  if (x.length && end > x[x.length - 1]) { x.push(end); y.push(best); ids.push(ids[ids.length - 1]); }
  return { x, y, ids };
}

function islandsOf(d) { const s = new Set(d.programs.island.filter((i) => i != null)); return [...s].sort((a, b) => a - b); }

function bestTraces(d, key) {
  const P = d.programs;
  const traces = islandsOf(d).map((i) => ({ name: `island ${i}`, ...bestCurve(d, (k) => P.island[k] === i || P.island[k] == null, key), mode: "lines", line: { shape: "hv", width: 1.5 } }));
  traces.push({ name: "all islands", ...bestCurve(d, () => true, key), mode: "lines+markers", line: { shape: "hv", width: 3, color: "#111" }, marker: { size: 4 } });
  traces.forEach((t) => { t.customdata = t.ids; t.hovertemplate = "best %{y}<br>program %{customdata}<extra>%{fullData.name}</extra>"; delete t.ids; });
  return traces;
}

function outcomeTraces(d) {
  const P = d.programs, span = Math.max(1, P.id.reduce((m, x) => Math.max(m, x), -1) + 1), width = Math.ceil(span / Math.min(40, span)), bins = Math.ceil(span / width);
  const statuses = [...new Set(P.status)].sort((a, b) => (a === "ok" ? -1 : b === "ok" ? 1 : a < b ? -1 : 1));
  return statuses.map((s) => {
    const y = new Array(bins).fill(0);
    P.id.forEach((id, k) => { if (P.status[k] === s) y[Math.min(bins - 1, Math.floor(id / width))]++; });
    return { type: "bar", name: s, x: y.map((_, b) => b * width), y, width: width * 0.9, offset: 0, marker: { color: STATUS_COLORS[s] },
             hovertemplate: `${s}: %{y} of samples %{x}–%{x}+${width - 1}<extra></extra>` };
  });
}

function gist(t) { // the line that says what happened: a traceback's last, else the first
  const lines = (t || "").split("\n").filter((l) => l.trim());
  return ((lines[0] || "").startsWith("Traceback") ? lines[lines.length - 1] : lines[0] || "").trim();
}

function failureReasons(d) {
  const P = d.programs, groups = new Map();
  P.id.forEach((id, k) => {
    if (P.status[k] === "ok" || P.status[k] === "pending") return;
    const first = gist(text(d, P.reason[k]));
    const key = P.status[k] + "\u0000" + first.slice(0, 140);
    const g = groups.get(key) || { status: P.status[k], reason: first.slice(0, 140), count: 0, first: id, last: id };
    g.count++; g.last = id; groups.set(key, g);
  });
  return [...groups.values()].sort((a, b) => b.count - a.count);
}

function perModel(d) {
  const P = d.programs, out = new Map();
  P.id.forEach((id, k) => {
    if (id === 0 && !P.parents[k].length) return; // the seed is not a sample
    const m = P.model[k] || "?";
    const r = out.get(m) || { model: m, samples: 0, ok: 0, tokens_in: 0, tokens_out: 0, cost: null, retries: 0, sample_s: 0, timed: 0 };
    r.samples++; if (P.status[k] === "ok") r.ok++;
    r.tokens_in += P.tokens_in[k] || 0; r.tokens_out += P.tokens_out[k] || 0; r.retries += P.retries[k] || 0;
    if (P.cost[k] != null) r.cost = (r.cost || 0) + P.cost[k];
    if (P.sample_s[k] != null) { r.sample_s += P.sample_s[k]; r.timed++; }
    out.set(m, r);
  });
  return [...out.values()];
}

// ---- layout ----------------------------------------------------------------------------------------------------
const UI = { selected: null, lineageOf: null, query: "", status: "", page: 0, sort: "id", run: null, plots: new Set() };
const PAGE = 50;

function skeleton() {
  $("#app").innerHTML = `
  ${MODE === "live" ? `<section id="dash"><h2>Runs</h2><div id="runs"></div><div id="plot-compare" class="plot"></div></section>` : ""}
  <section id="overview"><h2>Run</h2><div id="overview-body"></div></section>
  <section><h2>Best score</h2><div class="grid2"><div id="plot-best-samples" class="plot"></div><div id="plot-best-time" class="plot"></div></div></section>
  <section><h2>Outcomes</h2><div class="grid2"><div id="plot-outcomes" class="plot"></div><div id="reasons" style="max-height:320px;overflow:auto"></div></div></section>
  <section id="lineage-section"><h2>Lineage</h2><div class="controls">program <input type="number" id="lineage-id" min="0" style="width:90px"> <button id="lineage-best">best</button> <span class="muted">each step: the edited parent → child, its diff, score change and the author's stated change</span></div><div id="lineage"></div></section>
  <section><h2>MAP-Elites archives</h2><div class="muted" id="archive-note"></div><div class="maps" id="maps"></div><div class="grid2"><div id="plot-coverage" class="plot"></div><div id="plot-qd" class="plot"></div></div></section>
  <section><h2>Models: tokens, cost, retries</h2><div id="models"></div></section>
  <section id="programs-section"><h2>Programs</h2><div class="controls"><input type="search" id="search" placeholder="search id, status, model, reason, rationale, code…" size="44">
    <select id="status-filter"><option value="">all outcomes</option></select>
    <select id="sort"><option value="id">by sample</option><option value="score">by score</option></select>
    <button id="prev">◀</button><span id="page"></span><button id="next">▶</button></div>
    <div id="table"></div><div id="detail"></div></section>
  <section><h2>Config</h2><div id="config"></div></section>`;
  $("#lineage-id").addEventListener("change", (e) => { UI.lineageOf = Number(e.target.value); drawLineage(evo.data); });
  $("#lineage-best").addEventListener("click", () => { UI.lineageOf = null; drawLineage(evo.data); });
  let timer = null;
  $("#search").addEventListener("input", (e) => { clearTimeout(timer); timer = setTimeout(() => { UI.query = e.target.value; UI.page = 0; drawTable(evo.data); }, 150); });
  $("#status-filter").addEventListener("change", (e) => { UI.status = e.target.value; UI.page = 0; drawTable(evo.data); });
  $("#sort").addEventListener("change", (e) => { UI.sort = e.target.value; UI.page = 0; drawTable(evo.data); });
  $("#prev").addEventListener("click", () => { UI.page = Math.max(0, UI.page - 1); drawTable(evo.data); });
  $("#next").addEventListener("click", () => { UI.page++; drawTable(evo.data); });
  $("#table").addEventListener("click", (e) => { const tr = e.target.closest("tr.row"); if (tr) select(Number(tr.dataset.id)); });
}

function plot(id, traces, layout) {
  const el = document.getElementById(id);
  if (!el) return;
  if (layout.title) Object.assign(layout.title, { x: 0.01, xanchor: "left" }); // clear of the mode bar on the right
  Plotly.react(el, traces, { margin: { l: 55, r: 10, t: 30, b: 40 }, height: 300, legend: { font: { size: 11 } }, ...layout }, PLOT_CFG);
  UI.plots.add(id);
}

function drawOverview(d) {
  const r = d.run, s = d.summary, c = d.config || {}, best = bestProgram(d), P = d.programs;
  const bestScore = best == null ? null : P.score[rowOf(d).get(best)];
  const counts = {}; P.status.forEach((x) => (counts[x] = (counts[x] || 0) + 1));
  const items = [["run", r.name], ["problem", r.problem], ["state", `${r.state}${r.pending ? `, ${r.pending} pending` : ""}`],
    ["samples", `${r.samples}${r.target ? ` of ${r.target}` : ""}`],
    ["evaluations", r.evaluations == null ? "–" : `${r.evaluations}${r.trials ? ` (${r.trials} tuning trials)` : ""}`],
    ["best score", fmt(bestScore)], ["best program", best],
    ["sampler", c.models && Object.keys(c.models).length ? Object.keys(c.models).join(", ") : c.sampler], ["islands", c.islands], ["seed", c.seed],
    ["outcomes", Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(", ")],
    ["last write", r.last_write ? new Date(r.last_write * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–"]];
  if (s && s.best) {
    items.push(["held-out (test)", `best ${fmt(s.best.test)} vs seed ${fmt(s.seed && s.seed.test)}`]);
    items.push(["train", `best ${fmt(s.best.train)} vs seed ${fmt(s.seed && s.seed.train)}`]);
  }
  if (r.missing_columns && r.missing_columns.length) items.push(["older store", `no ${r.missing_columns.join(", ")}`]);
  $("#overview-body").innerHTML = `<div class="kv">${items.map(([k, v]) => `<div><span class="muted">${esc(k)}</span> <b data-k="${esc(k)}">${esc(v)}</b></div>`).join("")}</div>
    ${d.insights && d.insights.length ? `<details><summary>latest insights (sample ${d.insights[d.insights.length - 1].at_sample})</summary><pre class="wrap">${esc(d.insights[d.insights.length - 1].text)}</pre></details>` : ""}`;
  document.body.dataset.samples = r.samples;
  document.body.dataset.best = bestScore == null ? "" : bestScore;
  $("#status").textContent = `${r.name} · ${r.samples} samples · best ${fmt(bestScore)} · ${MODE === "live" ? "live, refreshed " + new Date().toLocaleTimeString() : "report made " + new Date(r.generated * 1000).toISOString().slice(0, 19) + " UTC"}`;
}

function drawBest(d) {
  const P = d.programs;
  plot("plot-best-samples", bestTraces(d, (k) => P.id[k]), { title: { text: "best score over samples", font: { size: 13 } }, xaxis: { title: { text: "sample" } }, yaxis: { title: { text: "score" } } });
  plot("plot-best-time", bestTraces(d, (k) => P.t[k]), { title: { text: "best score over time", font: { size: 13 } }, xaxis: { title: { text: "seconds since start" } }, yaxis: { title: { text: "score" } } });
}

function drawOutcomes(d) {
  plot("plot-outcomes", outcomeTraces(d), { barmode: "stack", title: { text: "outcomes over samples", font: { size: 13 } }, xaxis: { title: { text: "sample" } }, yaxis: { title: { text: "samples" } } });
  const rows = failureReasons(d);
  $("#reasons").innerHTML = rows.length ? `<table id="reasons-table"><tr><th>outcome</th><th>reason</th><th class="num">count</th><th class="num">first</th><th class="num">last</th></tr>
    ${rows.slice(0, 60).map((g) => `<tr><td><span class="tag">${esc(g.status)}</span></td><td>${esc(g.reason)}</td><td class="num">${g.count}</td><td class="num">${g.first}</td><td class="num">${g.last}</td></tr>`).join("")}</table>`
    : `<p class="muted">no failed samples</p>`;
}

function diffHtml(t) {
  if (!t) return `<span class="muted">(no change in code)</span>`;
  return t.split("\n").map((l) => {
    const cls = l.startsWith("+++") || l.startsWith("---") ? "muted" : l.startsWith("@@") ? "hunk" : l[0] === "+" ? "add" : l[0] === "-" ? "del" : "";
    return cls === "add" || cls === "del" || cls === "hunk" ? `<span class="${cls}">${esc(l)}</span>` : esc(l) + "\n";
  }).join("");
}

function delta(a, b) {
  if (a == null || b == null) return "";
  const x = b - a;
  return `<span class="${x > 0 ? "up" : x < 0 ? "down" : "muted"}">${x >= 0 ? "+" : ""}${fmt(x)}</span>`;
}

function drawLineage(d) {
  const P = d.programs, rows = rowOf(d), target = UI.lineageOf != null && rows.has(UI.lineageOf) ? UI.lineageOf : bestProgram(d);
  $("#lineage-id").value = target == null ? "" : target;
  if (target == null) { $("#lineage").innerHTML = `<p class="muted">no scored program yet</p>`; return; }
  const chain = lineage(d, target);
  const steps = chain.map((id, n) => {
    const k = rows.get(id), parent = n ? chain[n - 1] : null, pk = parent == null ? null : rows.get(parent);
    const rat = text(d, P.rationale[k]);
    return `<div class="step" data-id="${id}"><b>program ${id}</b> ${parent == null ? "(root)" : `← ${parent}`} · island ${fmt(P.island[k])} · ${esc(P.edit_format[k] || (n ? "" : "seed"))} · ${esc(P.model[k] || "")}
      · <span class="tag ${esc(P.status[k])}">${esc(P.status[k])}</span> score <b>${fmt(P.score[k])}</b> ${pk == null ? "" : delta(P.score[pk], P.score[k])} ${P.archive[k] ? `· archive ${esc(P.archive[k])}` : ""}
      ${rat ? `<div class="rationale">“${esc(rat)}”</div>` : ""}
      ${n ? `<pre class="diff">${diffHtml(text(d, P.diff[k]))}</pre>` : `<details><summary>code</summary><pre>${esc(text(d, P.code[k]))}</pre></details>`}</div>`;
  });
  $("#lineage").innerHTML = `<p class="muted">${chain.length - 1} steps from program ${chain[0]} to program ${target}</p>` + steps.join("");
}

function drawArchives(d) {
  const A = d.archives, ax = A.axes;
  $("#archive-note").textContent = ax.length ? `each island's elites rebuilt from the store (committed ok programs, migrations and resets), on ${ax.map((a) => `${a.name} [${a.low}, ${a.high}] in ${a.bins} bins`).join(" × ")}; a cell shows its best score (over any further axes). ${A.cells} cells in all.` : "no behaviour descriptors in this store";
  if (!ax.length) return;
  const all = A.maps.flatMap((m) => m.z.flat()).filter((v) => v != null);
  const zmin = all.length ? Math.min(...all) : 0, zmax = all.length ? Math.max(...all) : 1;
  const centers = (a) => Array.from({ length: a.bins }, (_, i) => +(a.low + (i + 0.5) * (a.high - a.low) / a.bins).toPrecision(4));
  const maps = $("#maps");
  A.maps.forEach((m, i) => {
    let el = document.getElementById(`plot-archive-${i}`);
    if (!el) { el = document.createElement("div"); el.id = `plot-archive-${i}`; el.className = "plot"; maps.appendChild(el); }
    plot(el.id, [{ type: "heatmap", z: m.z, customdata: m.ids, x: centers(ax[0]), y: ax[1] ? centers(ax[1]) : [""], zmin, zmax, colorscale: "Viridis", showscale: i === A.maps.length - 1,
      hovertemplate: `${esc(ax[0].name)} %{x}<br>${ax[1] ? esc(ax[1].name) + " %{y}<br>" : ""}score %{z}<br>program %{customdata}<extra></extra>` }],
    { title: { text: `island ${i}: ${m.elites} elites`, font: { size: 13 } }, xaxis: { title: { text: ax[0].name } }, yaxis: { title: { text: ax[1] ? ax[1].name : "" } }, height: 280 });
    if (!el._evoClick) { el._evoClick = true; el.on("plotly_click", (ev) => { const id = ev.points[0].customdata; if (id != null) select(id); }); }
  });
  const Q = d.qd, H = A.history, src = Q ? "qd_metrics.json" : "rebuilt from the store";
  const cov = Q ? Object.entries(Q.islands).map(([i, c]) => ({ name: `island ${i}`, x: Q.commit, y: c.coverage, mode: "lines" })) : H.coverage.map((y, i) => ({ name: `island ${i}`, x: H.commit, y, mode: "lines" }));
  const qd = Q ? Object.entries(Q.islands).map(([i, c]) => ({ name: `island ${i}`, x: Q.commit, y: c.qd_score, mode: "lines" })) : H.qd_score.map((y, i) => ({ name: `island ${i}`, x: H.commit, y, mode: "lines" }));
  plot("plot-coverage", cov, { title: { text: `coverage (${src})`, font: { size: 13 } }, xaxis: { title: { text: "commit" } }, yaxis: { title: { text: "fraction of cells" } } });
  plot("plot-qd", qd, { title: { text: `QD score (${src})`, font: { size: 13 } }, xaxis: { title: { text: "commit" } }, yaxis: { title: { text: "sum of (score − offset)" } } });
}

function drawModels(d) {
  const rows = perModel(d), u = d.usage;
  $("#models").innerHTML = `<table id="models-table"><tr><th>model</th><th class="num">samples</th><th class="num">ok</th><th class="num">prompt tokens</th><th class="num">answer tokens</th><th class="num">cost (USD)</th><th class="num">retries</th><th class="num">mean sample s</th></tr>
    ${rows.map((r) => `<tr><td>${esc(r.model)}</td><td class="num">${r.samples}</td><td class="num">${r.ok} (${(100 * r.ok / Math.max(1, r.samples)).toFixed(0)}%)</td><td class="num">${r.tokens_in}</td><td class="num">${r.tokens_out}</td><td class="num">${r.cost == null ? "–" : r.cost.toFixed(4)}</td><td class="num">${r.retries}</td><td class="num">${r.timed ? (r.sample_s / r.timed).toFixed(3) : "–"}</td></tr>`).join("")}</table>
    ${u ? `<p class="muted">sampler's account: ${Object.entries(u).filter(([, v]) => typeof v !== "object" || v == null).map(([k, v]) => `${esc(k)} ${fmt(v)}`).join(" · ")}</p>` : ""}`;
}

function drawConfig(d) {
  const c = d.config || {};
  $("#config").innerHTML = `<div class="cfg">${Object.entries(c).map(([k, v]) => `<div><span class="muted">${esc(k)}</span> <code>${esc(typeof v === "object" && v != null ? JSON.stringify(v) : v)}</code></div>`).join("")}</div>`;
}

function haystack(d, k) {
  const P = d.programs;
  return [`#${P.id[k]}`, P.status[k], P.model[k], P.edit_format[k], P.archive[k], `island ${P.island[k]}`, text(d, P.reason[k]), text(d, P.rationale[k]), text(d, P.code[k])].join(" ").toLowerCase();
}

function drawTable(d) {
  const P = d.programs, q = UI.query.trim().toLowerCase();
  const sel = $("#status-filter"), known = new Set([...sel.options].map((o) => o.value));
  [...new Set(P.status)].forEach((s) => { if (!known.has(s)) sel.add(new Option(s, s)); });
  if (!d._hay) d._hay = [];
  const exact = /^#\d+$/.test(q) ? Number(q.slice(1)) : null; // "#12": program 12 only
  let idx = P.id.map((_, k) => k).filter((k) => (!UI.status || P.status[k] === UI.status) &&
    (!q || (exact != null ? P.id[k] === exact : (d._hay[k] ??= haystack(d, k)).includes(q))));
  if (UI.sort === "score") idx.sort((a, b) => (P.score[b] ?? -Infinity) - (P.score[a] ?? -Infinity));
  const pages = Math.max(1, Math.ceil(idx.length / PAGE));
  UI.page = Math.min(UI.page, pages - 1);
  $("#page").textContent = `page ${UI.page + 1} of ${pages} (${idx.length} programs)`;
  const rows = rowOf(d);
  $("#table").innerHTML = `<table id="programs-table"><tr><th class="num">id</th><th class="num">island</th><th>outcome</th><th class="num">score</th><th class="num">Δ parent</th><th>archive</th><th>format</th><th>model</th><th class="num">tokens</th><th>reason / rationale</th></tr>
    ${idx.slice(UI.page * PAGE, (UI.page + 1) * PAGE).map((k) => {
      const pk = rows.get(editedParent(d, k)), note = (P.status[k] === "ok" ? "" : text(d, P.reason[k])) || text(d, P.rationale[k]) || ""; // a failure: why
      return `<tr class="row${P.id[k] === UI.selected ? " sel" : ""}" data-id="${P.id[k]}"><td class="num">${P.id[k]}</td><td class="num">${fmt(P.island[k])}</td><td><span class="tag ${esc(P.status[k])}">${esc(P.status[k])}</span></td><td class="num">${fmt(P.score[k])}</td><td class="num">${pk == null ? "" : delta(P.score[pk], P.score[k])}</td><td>${esc(P.archive[k] || "")}</td><td>${esc(P.edit_format[k] || "")}</td><td>${esc(P.model[k] || "")}</td><td class="num">${P.tokens_in[k] == null ? "" : (P.tokens_in[k] || 0) + (P.tokens_out[k] || 0)}</td><td>${esc(gist(note).slice(0, 120))}</td></tr>`;
    }).join("")}</table>`;
}

function select(id) {
  UI.selected = id;
  drawDetail(evo.data);
  drawTable(evo.data);
  $("#detail").scrollIntoView({ block: "nearest" });
}

function drawDetail(d) {
  const P = d.programs, k = rowOf(d).get(UI.selected);
  if (k == null) { $("#detail").innerHTML = `<p class="muted">click a row (or an archive cell) to see its program, prompt and answer</p>`; return; }
  const pr = P.prompt[k] == null ? null : d.prompts[P.prompt[k]], parent = editedParent(d, k);
  const block = (title, body, cls = "") => (body == null || body === "" ? "" : `<h3>${title}</h3><pre class="${cls}">${body}</pre>`);
  $("#detail").innerHTML = `<h3>program ${P.id[k]} <button id="show-lineage">lineage</button></h3>
    <div class="kv"><div>island <b>${fmt(P.island[k])}</b></div><div>outcome <b>${esc(P.status[k])}</b></div><div>score <b>${fmt(P.score[k])}</b></div><div>parents <b>${esc((P.parents[k] || []).join(", "))}</b></div>
    <div>format <b>${esc(P.edit_format[k] || "–")}</b></div><div>model <b>${esc(P.model[k] || "–")}</b></div><div>archive <b>${esc(P.archive[k] || "–")}</b></div><div>cache <b>${esc(P.cache_hit[k] || "–")}</b></div><div>commit <b>${fmt(P.commit[k])}</b></div>${P.staleness[k] == null ? "" : `<div>staleness <b>${P.staleness[k]}</b></div>`}
    <div>tokens <b>${fmt(P.tokens_in[k])} + ${fmt(P.tokens_out[k])}</b></div><div>sample <b>${fmt(P.sample_s[k], 3)} s</b></div><div>eval <b>${fmt(P.eval_s[k], 3)} s</b></div></div>
    ${block("rationale", esc(text(d, P.rationale[k])), "wrap")}${block("reason", esc(text(d, P.reason[k])), "wrap")}${block("metrics", esc(text(d, P.metrics[k])), "wrap")}
    ${parent != null ? block(`diff from program ${parent}`, diffHtml(text(d, P.diff[k])), "diff") : ""}
    ${block("code", esc(text(d, P.code[k])))}
    ${pr ? block("prompt: system", esc(text(d, pr[0])), "wrap") + block("prompt: user", esc(text(d, pr[1])), "wrap") : ""}
    ${block("raw answer", esc(text(d, P.response[k])), "wrap")}`;
  $("#show-lineage").addEventListener("click", () => { UI.lineageOf = P.id[k]; drawLineage(d); $("#lineage-section").scrollIntoView(); });
}

function draw(d) {
  evo.data = d; d._row = null; d._hay = null;
  evo.timings = evo.timings || {};
  for (const f of [drawOverview, drawBest, drawOutcomes, drawLineage, drawArchives, drawModels, drawTable, drawDetail, drawConfig]) {
    const t = performance.now();
    f(d);
    evo.timings[f.name] = Math.round(performance.now() - t); // ms, read by benchmarks/report_pages.py
  }
  evo.renders++; evo.ready = true;
}

// ---- live mode (the dashboard) ---------------------------------------------------------------------------------
async function getJSON(url) { const r = await fetch(url, { cache: "no-store" }); if (!r.ok) throw new Error(`${url}: ${r.status}`); return r.json(); }

function clearMaps() { document.querySelectorAll("#maps .plot").forEach((el) => { Plotly.purge(el); el.remove(); }); }

async function live() {
  const stamps = {};
  let timer = null, busy = false;
  const tick = async () => {
    if (busy) return;
    busy = true;
    clearTimeout(timer);
    try {
      const runs = await getJSON("api/runs");
      evo.runs = runs;
      // follow the most recently written run until the user picks one
      if (!UI.pinned || !runs.some((r) => r.name === UI.run)) UI.run = runs.length ? runs[runs.length - 1].name : null;
      $("#runs").innerHTML = runs.length ? runs.map((r) => `<a data-run="${esc(r.name)}" class="${r.name === UI.run ? "cur" : ""}">${esc(r.name)}</a><span class="muted">${r.samples} samples, best ${fmt(r.best)}</span> &nbsp; `).join("")
        : `<span class="muted">no run folders here yet</span>`;
      const curves = await getJSON("api/compare");
      plot("plot-compare", curves.map((c) => ({ name: c.name, x: c.x, y: c.y, mode: "lines", line: { shape: "hv" } })), { title: { text: "run comparison: best score over samples", font: { size: 13 } }, xaxis: { title: { text: "sample" } }, yaxis: { title: { text: "score" } } });
      const cur = runs.find((r) => r.name === UI.run);
      const switched = cur && (!evo.data || evo.data.run.name !== cur.name);
      if (switched && evo.data) { clearMaps(); UI.selected = null; UI.lineageOf = null; UI.page = 0; }
      if (cur && (switched || stamps[cur.name] !== cur.stamp)) {
        const d = await getJSON(`api/run?name=${encodeURIComponent(cur.name)}`);
        stamps[cur.name] = d.run.stamp; // the stamp it was built at: a view the server held back is fetched again
        draw(d);
      }
      evo.ticks = (evo.ticks || 0) + 1;
    } catch (e) { $("#status").textContent = `dashboard: ${e.message} (retrying)`; }
    busy = false;
    timer = setTimeout(tick, (Number(new URLSearchParams(location.search).get("every")) || 3) * 1000);
  };
  $("#runs").addEventListener("click", (e) => {
    const a = e.target.closest("a[data-run]");
    if (!a) return;
    UI.run = a.dataset.run; UI.pinned = true;
    tick();
  });
  await tick();
}

(async function main() {
  try {
    await loadPlotly();
    const plotlyMs = Math.round(performance.now() - evo.t0);
    skeleton();
    if (MODE === "live") await live();
    else {
      const t = performance.now(), d = JSON.parse(await unpack($("#evo-data").textContent));
      evo.timings = { plotly: plotlyMs, unpack: Math.round(performance.now() - t) };
      draw(d);
    }
  } catch (e) {
    evo.errors.push(String(e && e.stack || e));
    $("#status").textContent = `could not draw this page: ${e.message}`;
    throw e;
  }
})();
