// datascout labeling page: lease a batch, label with the keyboard, every answer is POSTed
// (and committed) at once. Item text is always inserted with textContent, never as HTML.
// A token (when the server has one) never goes into a URL: it comes from a field, or once from the
// URL fragment (#token=...), which is then cleared; it lives in sessionStorage and travels only in
// the Authorization header. Images are fetched with that header and shown through blob: URLs.
"use strict";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const TOKEN_KEY = "datascout-token";
let token = sessionStorage.getItem(TOKEN_KEY) || "";
(function tokenFromFragment() {
  const frag = new URLSearchParams(location.hash.slice(1));
  if (!frag.has("token")) return;
  setToken(frag.get("token"));
  frag.delete("token");
  const rest = frag.toString();
  history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
})();
let config = null, queue = [], answered = [], busy = false, current = null, pollTimer = null, imageUrl = null;
const pending = [];  // keys pressed while an answer is being saved: applied in order, none lost
// rare-concept campaigns label a page of cards at once: each starts at the model's guess
const GRID_N = 24, GRID_COLS = 4;
let gridMode = false, grid = [], gridFocus = 0;

function setToken(t) {
  token = (t || "").trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
}
function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}
async function call(path, opts) {
  const r = await fetch(path, Object.assign({}, opts, { headers: headers(opts && opts.headers) }));
  if (r.status === 401) askToken(token ? "The token was not accepted: type it again." : "This server needs a token.");
  return r;
}
async function api(path, opts) {
  const r = await call(path, opts);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
  return body;
}
function post(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}
function askToken(message) {
  const form = $("token-form"), wasHidden = form.hidden;
  form.hidden = false;
  $("token-note").textContent = message;
  if (wasHidden) $("token").focus();  // once: a failing poll must not keep stealing the focus
}
function status(text, isError) { const s = $("status"); s.textContent = text || ""; s.classList.toggle("error", !!isError); }
function annotator() { return $("annotator").value.trim(); }

function render() {
  current = queue[0] || null;
  const text = $("item-text"), img = $("item-image");
  $("queue").textContent = current ? `${queue.length} left in this batch` : "";
  for (const b of $("classes").querySelectorAll("button")) b.classList.remove("guessed", "earlier");
  const guess = current && current.prediction;
  $("guess").hidden = !guess;
  if (guess) {
    $("guess-label").textContent = guess.label;
    $("guess-prob").textContent = `(${Math.round(100 * guess.probability)}%)`;
    const b = classButton(guess.label); if (b) b.classList.add("guessed");
  }
  const before = current && current.earlier !== undefined;
  $("before").hidden = !before;
  if (before) {
    $("before").textContent = current.earlier === null ? "You skipped this item: your next answer replaces that."
      : `You answered “${current.earlier}”: your next answer replaces it.`;
    const b = current.earlier === null ? null : classButton(current.earlier); if (b) b.classList.add("earlier");
  }
  if (!current) { text.textContent = ""; img.hidden = true; $("item-id").textContent = ""; return; }
  $("item-id").textContent = current.id;
  if (current.kind === "image") {
    text.textContent = ""; img.hidden = false; img.removeAttribute("src");
    img.alt = "item " + current.id;
    showImage(current).catch((e) => status(e.message, true));
  } else { img.hidden = true; img.removeAttribute("src"); text.textContent = current.text; }
}

async function showImage(item) {
  const r = await call("/api/items/" + encodeURIComponent(item.id) + "/image");
  if (!r.ok) { const b = await r.json().catch(() => ({})); throw new Error(b.error || ("HTTP " + r.status)); }
  const blob = await r.blob();
  if (current !== item) return;  // moved on meanwhile
  if (imageUrl) URL.revokeObjectURL(imageUrl);
  imageUrl = URL.createObjectURL(blob);
  $("item-image").src = imageUrl;
}

async function download(link) {  // an export, fetched with the token header and saved from a blob: URL
  try {
    const r = await call(link.getAttribute("href"));
    if (!r.ok) { const b = await r.json().catch(() => ({})); throw new Error(b.error || ("HTTP " + r.status)); }
    const url = URL.createObjectURL(await r.blob());
    const a = document.createElement("a"); a.href = url; a.download = link.getAttribute("download");
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (e) { status(e.message, true); }
}

async function fetchBatch() {
  if (!annotator()) { status("Type your name to start."); return; }
  try {
    const b = await post("/api/batch", { annotator: annotator(), n: gridMode ? GRID_N : 10 });
    queue = b.items; showProgress(b.progress); refreshStats();
    clearTimeout(pollTimer);
    if (!queue.length && b.exhausted) status("Every item is labeled: the campaign is complete. Thank you!");
    else if (!queue.length) {
      status(b.selecting ? "The model is choosing the next round… (a few seconds)"
        : "Nothing to hand out right now: this round's items are answered or leased to others (see the dashboard); the next round follows their answers.");
      pollTimer = setTimeout(fetchBatch, 1500);
    } else status("");
    if (gridMode) { grid = queue.map((it) => ({ item: it, pos: !!it.prediction && it.prediction.label === config.positive_class })); gridFocus = 0; renderGrid(); }
    else render();
  } catch (e) { status(e.message, true); }
}

let toppingUp = false;
async function topUp() {  // lease more while the last items of the batch are being labeled
  if (toppingUp) return; toppingUp = true;
  try {
    const b = await post("/api/batch", { annotator: annotator(), n: 10 });
    const have = new Set(queue.map((it) => it.id).concat(current ? [current.id] : []));
    const fresh = b.items.filter((it) => !have.has(it.id));  // our own leases come back first
    if (fresh.length) { queue.push(...fresh); $("queue").textContent = `${queue.length} left in this batch`; }
  } catch (e) { /* the next fetch will say what is wrong */ }
  finally { toppingUp = false; }
}

function renderGrid() {
  const box = $("grid"); box.replaceChildren();
  grid.forEach((g, i) => {
    const c = document.createElement("div");
    c.className = "gcard" + (g.pos ? " pos" : "") + (i === gridFocus ? " focus" : "");
    c.dataset.id = g.item.id;
    const mark = document.createElement("span"); mark.className = "gmark";
    mark.textContent = g.pos ? config.positive_class : "–";
    c.appendChild(mark);
    if (g.item.kind === "image") {
      const img = document.createElement("img"); img.alt = "item " + g.item.id; c.appendChild(img);
      call("/api/items/" + encodeURIComponent(g.item.id) + "/image").then(async (r) => {
        if (r.ok) img.src = URL.createObjectURL(await r.blob());
      }).catch(() => {});
    } else {
      const t = document.createElement("div"); t.className = "gtext"; t.textContent = g.item.text; c.appendChild(t);
    }
    c.addEventListener("click", () => { gridFocus = i; g.pos = !g.pos; renderGrid(); });
    box.appendChild(c);
  });
  $("queue").textContent = grid.length ? `${grid.length} on this page` : "";
}

async function gridKey(key) {
  if (!grid.length) return;
  const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -GRID_COLS, ArrowDown: GRID_COLS };
  if (key in moves) { gridFocus = Math.min(grid.length - 1, Math.max(0, gridFocus + moves[key])); renderGrid(); }
  else if (key === " ") { grid[gridFocus].pos = !grid[gridFocus].pos; renderGrid(); }
  else if (key === "Enter") await saveGrid();
}

async function saveGrid() {
  const negative = config.classes.find((c) => c !== config.positive_class);
  const labels = grid.map((g) => ({ id: g.item.id, label: g.pos ? config.positive_class : negative }));
  try {
    const r = await post("/api/labels", { annotator: annotator(), labels: labels });
    const n = labels.filter((x) => x.label === config.positive_class).length;
    $("last").textContent = `Saved ${labels.length} items: ${n} “${config.positive_class}”, ${labels.length - n} not.`;
    showProgress(r.progress); grid = []; renderGrid();
    await fetchBatch();
    refreshStats();
  } catch (e) { status(e.message, true); }
}

function setMode(toGrid) {
  gridMode = toGrid;
  for (const id of ["card", "classes", "actions", "single-hint"]) $(id).hidden = toGrid;
  $("grid-view").hidden = !toGrid;
  $("to-grid").hidden = toGrid; $("to-single").hidden = !toGrid;
  answered = []; grid = []; pending.length = 0;
  fetchBatch();
}

function classButton(name) { return $("classes").querySelector(`button[data-label="${CSS.escape(name)}"]`); }

// Every decision goes through one queue: a key pressed while the previous answer is being saved
// waits its turn and applies to the item shown by then, so three quick presses label three items.
function act(action) { pending.push(action); if (!busy) drain(); }

async function drain() {
  busy = true;
  try {
    while (pending.length) {
      const action = pending.shift();
      if (action.kind === "undo") { undo(); continue; }
      if (action.kind === "grid") { await gridKey(action.key); continue; }
      if (!current) { pending.length = 0; break; }  // nothing shown: the keys have nothing to label
      const label = action.kind === "accept" ? (current.prediction ? current.prediction.label : undefined) : action.label;
      if (label === undefined) { status("No model guess for this item yet: choose a class with 1-9."); continue; }
      if (!(await save(current, label))) { pending.length = 0; break; }  // an error: stop, say why
    }
  } finally { busy = false; }
}

async function save(item, label) {
  try {
    const r = await post("/api/labels", { annotator: annotator(), labels: [{ id: item.id, label: label }] });
    delete item.earlier;
    answered.push({ item: item, label: label }); queue.shift(); showProgress(r.progress);
    // the last answer stays on screen (in its own line) until the next one, whatever the status says
    $("last").textContent = label === null ? `Skipped ${item.id}.` : `Saved ${item.id} as “${label}”.`;
    status("");
    render();
    if (!queue.length) await fetchBatch();
    else if (queue.length <= 3) topUp();  // the next items are there before this batch runs out
    refreshStats();
    return true;
  } catch (e) { status(e.message, true); return false; }
}

function answer(label) { act({ kind: "label", label: label }); }

function undo() {
  if (!answered.length) return;
  const last = answered.pop();
  last.item.earlier = last.label;  // shown, and its button highlighted, when we come back
  queue.unshift(last.item); render();
  status(`Back to ${last.item.id}: your next answer replaces the previous one (both are kept in the history).`);
}

function showProgress(p) {
  if (!p) return;
  $("round-label").textContent = "Round " + p.round;
  $("round-count").textContent = `${p.done} / ${p.selected} done`;
  $("round-bar").style.width = (p.selected ? 100 * p.done / p.selected : 0) + "%";
}

function bars(el, rows) {
  el.replaceChildren();
  const max = Math.max(1, ...rows.map((r) => r[1]));
  for (const [name, n] of rows) {
    const row = document.createElement("div"); row.className = "row";
    const a = document.createElement("span"); a.className = "name"; a.textContent = name; a.title = name;
    const track = document.createElement("div"); const f = document.createElement("div");
    f.className = "fill"; f.style.width = (100 * n / max) + "%"; track.appendChild(f);
    const c = document.createElement("span"); c.className = "n"; c.textContent = n;
    row.append(a, track, c); el.appendChild(row);
  }
}

function svgEl(name, attrs, text) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

// The learning curve: the audit estimate (labels never trained on) with its 95% interval as the
// main line, the cross-validated figure on the actively chosen labels as a dashed secondary line.
function curve(points, key, auditName) {
  const svg = $("curve"); svg.replaceChildren();
  const L = 34, R = 270, T = 10, B = 120;
  const audit = points.filter((p) => p.audit && p.audit.value !== null && p.audit.value !== undefined);
  const cv = points.filter((p) => typeof p[key] === "number");
  if (!audit.length && !cv.length) {
    svg.appendChild(svgEl("text", { x: 8, y: 16 }, "appears once the model is trained on 2+ classes"));
    return;
  }
  const xs = points.map((p) => p.n_labels), x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const X = (v) => L + (R - L) * (v - x0) / (x1 - x0), Y = (v) => B - (B - T) * v;
  svg.appendChild(svgEl("line", { x1: L, y1: B, x2: R, y2: B, stroke: "#9aa3af" }));
  svg.appendChild(svgEl("line", { x1: L, y1: T, x2: L, y2: B, stroke: "#9aa3af" }));
  for (const v of [0, 0.5, 1]) {
    svg.appendChild(svgEl("text", { x: L - 4, y: Y(v) + 3, "text-anchor": "end" }, v.toFixed(1)));
    svg.appendChild(svgEl("line", { x1: L, y1: Y(v), x2: R, y2: Y(v), stroke: "#e3e6eb" }));
  }
  svg.appendChild(svgEl("text", { x: L, y: B + 12 }, String(x0)));
  svg.appendChild(svgEl("text", { x: R, y: B + 12, "text-anchor": "end" }, String(x1)));
  svg.appendChild(svgEl("text", { x: (L + R) / 2, y: B + 24, "text-anchor": "middle" }, "labels"));
  svg.appendChild(svgEl("text", { x: 8, y: (T + B) / 2, transform: `rotate(-90 8 ${(T + B) / 2})`, "text-anchor": "middle" },
    key.replace("_", " ")));
  if (cv.length) svg.appendChild(svgEl("polyline", { points: cv.map((p) => `${X(p.n_labels)},${Y(p[key])}`).join(" "),
    fill: "none", stroke: "#9aa3af", "stroke-width": 1.5, "stroke-dasharray": "4 3", class: "cv-line" }));
  for (const p of audit) {
    const ci = p.audit.ci;
    if (ci) svg.appendChild(svgEl("line", { x1: X(p.n_labels), y1: Y(ci[0]), x2: X(p.n_labels), y2: Y(ci[1]),
      stroke: "#2f6fec", "stroke-opacity": 0.45, "stroke-width": 5, class: "audit-ci" }));
  }
  if (audit.length) svg.appendChild(svgEl("polyline", { points: audit.map((p) => `${X(p.n_labels)},${Y(p.audit.value)}`).join(" "),
    fill: "none", stroke: "#2f6fec", "stroke-width": 2, class: "audit-line" }));
  for (const p of audit) svg.appendChild(svgEl("circle", { cx: X(p.n_labels), cy: Y(p.audit.value), r: 3, fill: "#2f6fec" }));
  $("curve-legend").textContent = `solid: ${auditName} on the audit sample, with its 95% interval` +
    (cv.length ? "; dashed: cross-validated on the chosen labels (biased toward hard items)" : "");
}

function clock(unix) { return new Date(unix * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }); }

function auditLine(a) {
  if (!a || a.value === null || a.value === undefined)
    return `Audit: ${a ? a.labels : 0} random items labeled so far; the honest estimate appears once the model is trained on 2+ classes.`;
  const name = a.metric.replace("_", " ");
  let line = `Audit (${a.labels} random items, never trained on): ${name} ${a.value.toFixed(3)}`;
  if (a.ci) line += ` [95% ${a.ci[0].toFixed(3)}–${a.ci[1].toFixed(3)}]`;
  if (a.positives_remaining) line += `; ~${Math.round(a.positives_remaining.value)} positives left in the pool`;
  return line + ".";
}

let statsPending = false, statsAgain = false;
async function refreshStats() {
  if (statsPending) { statsAgain = true; return; }  // one more once this one is in: never stale
  statsPending = true;
  try {
    const s = await api("/api/stats");
    $("t-labels").textContent = s.labels.items_labeled;
    $("t-labels-label").textContent = s.labels.relabels ? `items labeled (${s.labels.relabels} relabel${s.labels.relabels === 1 ? "" : "s"})` : "items labeled";
    $("t-rounds").textContent = s.rounds.length;
    $("t-positives-tile").hidden = s.positive_class === null;  // rare-concept campaigns only
    if (s.positive_class !== null) {
      $("t-positives").textContent = s.positives_found;
      $("t-positives-label").textContent = `“${s.positive_class}” found`;
    }
    $("t-disagree").textContent = s.disagreements.items;
    $("t-leased").textContent = s.leases.live;
    $("t-leased-label").textContent = s.leases.by_annotator.length
      ? "leased: " + s.leases.by_annotator.map((x) => `${x.annotator} ${x.items} until ${clock(x.until)}`).join(", ")
      : "leased now";
    $("t-review").textContent = s.review.open;
    $("audit").textContent = auditLine(s.audit);
    $("stopping").textContent = s.stopping ? "Stopping: " + s.stopping.message + "." : "";
    bars($("per-round"), s.rounds.map((r) => ["round " + r.round, r.labeled]));
    bars($("class-counts"), Object.entries(s.class_counts));
    const key = s.positive_class !== null ? "average_precision" : "accuracy";
    curve(s.learning_curve, key, key.replace("_", " "));
    showProgress(s.progress);
  } catch (e) { console.error("dashboard: " + e.message); }  // best effort: the labeling goes on
  finally {
    statsPending = false;
    if (statsAgain) { statsAgain = false; refreshStats(); }
  }
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  setToken($("token").value); $("token").value = "";
  $("token-form").hidden = true;
  (config ? fetchBatch() : start()).catch((e) => status(e.message, true));
});

async function start() {
  config = await api("/api/config");
  $("campaign-name").textContent = "· " + config.name;
  const box = $("classes");
  config.classes.forEach((name, i) => {
    const b = document.createElement("button"); b.type = "button"; b.dataset.label = name;
    if (i < 9) { const k = document.createElement("kbd"); k.textContent = String(i + 1); b.append(k, " "); }
    b.append(name); b.addEventListener("click", () => answer(name)); box.appendChild(b);
  });
  for (const id of ["x-csv", "x-jsonl", "x-ls"])
    $(id).addEventListener("click", (ev) => { if (token) { ev.preventDefault(); download(ev.currentTarget); } });
  $("skip").addEventListener("click", () => answer(null));
  $("undo").addEventListener("click", () => act({ kind: "undo" }));
  const who = params.get("annotator") || localStorage.getItem("datascout-annotator") || "";
  $("annotator").value = who;
  $("annotator").addEventListener("change", () => { localStorage.setItem("datascout-annotator", annotator()); answered = []; fetchBatch(); });
  // Enter in the name field hands the keyboard back to the item: label keys never go into a field
  $("annotator").addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); $("annotator").blur(); } });
  document.addEventListener("keydown", (ev) => {
    if (ev.target.tagName === "INPUT" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.target.tagName === "BUTTON" && (ev.key === "Enter" || ev.key === " ")) ev.target.blur();
    if (ev.key === "g" && config.positive_class !== null) { setMode(!gridMode); ev.preventDefault(); return; }
    if (gridMode) {
      if (["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", " ", "Enter"].includes(ev.key)) {
        act({ kind: "grid", key: ev.key }); ev.preventDefault();
      }
      return;
    }
    if (/^[1-9]$/.test(ev.key)) {
      const name = config.classes[Number(ev.key) - 1];
      if (name !== undefined) {
        const b = classButton(name);
        if (b) { b.classList.add("flash"); setTimeout(() => b.classList.remove("flash"), 150); }
        answer(name); ev.preventDefault();
      }
    } else if (ev.key === "Enter") { act({ kind: "accept" }); ev.preventDefault(); }
    else if (ev.key === "s") { answer(null); ev.preventDefault(); }
    else if (ev.key === "u") { act({ kind: "undo" }); ev.preventDefault(); }
  });
  refreshStats(); setInterval(refreshStats, 5000);
  if (config.positive_class !== null) {  // a rare concept: the grid first, one at a time on "g"
    $("view-switch").hidden = false;
    $("to-grid").addEventListener("click", () => setMode(true));
    $("to-single").addEventListener("click", () => setMode(false));
    setMode(params.get("view") !== "single");
    return;
  }
  await fetchBatch();
}
start().catch((e) => status(e.message, true));
