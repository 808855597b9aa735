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
    const b = await post("/api/batch", { annotator: annotator(), n: 10 });
    queue = b.items; showProgress(b.progress); refreshStats();
    clearTimeout(pollTimer);
    if (!queue.length && b.exhausted) status("Every item is labeled: the campaign is complete. Thank you!");
    else if (!queue.length) {
      status(b.selecting ? "The model is choosing the next round… (a few seconds)" : "Nothing to label right now: waiting for the round to finish.");
      pollTimer = setTimeout(fetchBatch, 1500);
    } else status("");
    render();
  } catch (e) { status(e.message, true); }
}

async function answer(label) {
  if (busy || !current) return;
  busy = true;
  const item = current;
  try {
    const r = await post("/api/labels", { annotator: annotator(), labels: [{ id: item.id, label: label }] });
    answered.push(item); queue.shift(); showProgress(r.progress);
    // the last answer stays on screen (in its own line) until the next one, whatever the status says
    $("last").textContent = label === null ? `Skipped ${item.id}.` : `Saved ${item.id} as “${label}”.`;
    status("");
    render();
    if (!queue.length) await fetchBatch();
    refreshStats();
  } catch (e) { status(e.message, true); }
  finally { busy = false; }
}

function undo() {
  if (busy || !answered.length) return;
  const item = answered.pop(); queue.unshift(item); render();
  status(`Back to ${item.id}: your next answer replaces the previous one (both are kept in the history).`);
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

function curve(points, key) {
  const svg = $("curve"); svg.replaceChildren();
  const ns = "http://www.w3.org/2000/svg";
  const t = document.createElementNS(ns, "text"); t.setAttribute("x", 8); t.setAttribute("y", 14);
  t.setAttribute("font-size", 10); t.setAttribute("fill", "#6b7482");
  if (!points.length) { t.textContent = "appears once two classes have 2+ labels"; svg.appendChild(t); return; }
  const xs = points.map((p) => p.n_labels), x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const X = (v) => 30 + 220 * (v - x0) / (x1 - x0), Y = (v) => 100 - 85 * v;
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.map((p) => `${X(p.n_labels)},${Y(p[key])}`).join(" "));
  line.setAttribute("fill", "none"); line.setAttribute("stroke", "#2f6fec"); line.setAttribute("stroke-width", 2);
  svg.appendChild(line);
  for (const p of points) {
    const c = document.createElementNS(ns, "circle"); c.setAttribute("cx", X(p.n_labels)); c.setAttribute("cy", Y(p[key]));
    c.setAttribute("r", 3); c.setAttribute("fill", "#2f6fec"); svg.appendChild(c);
  }
  const last = points[points.length - 1];
  t.textContent = `${key.replace("_", " ")} ${last[key].toFixed(3)} at ${last.n_labels} labels`; svg.appendChild(t);
}

let statsPending = false;
async function refreshStats() {
  if (statsPending) return; statsPending = true;
  try {
    const s = await api("/api/stats");
    $("t-labels").textContent = s.labels.answers;
    $("t-rounds").textContent = s.rounds.length;
    $("t-positives").textContent = s.positives_found === null ? "–" : s.positives_found;
    if (s.positive_class !== null) $("t-positives-label").textContent = `“${s.positive_class}” found`;
    $("t-disagree").textContent = s.disagreements.items;
    bars($("per-round"), s.rounds.map((r) => ["round " + r.round, r.labeled]));
    bars($("class-counts"), Object.entries(s.class_counts));
    curve(s.learning_curve, s.positive_class !== null ? "average_precision" : "macro_f1");
    showProgress(s.progress);
  } catch (e) { /* the dashboard is best effort */ }
  finally { statsPending = false; }
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
  $("undo").addEventListener("click", undo);
  const who = params.get("annotator") || localStorage.getItem("datascout-annotator") || "";
  $("annotator").value = who;
  $("annotator").addEventListener("change", () => { localStorage.setItem("datascout-annotator", annotator()); answered = []; fetchBatch(); });
  document.addEventListener("keydown", (ev) => {
    if (ev.target.tagName === "INPUT" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (/^[1-9]$/.test(ev.key)) {
      const name = config.classes[Number(ev.key) - 1];
      if (name !== undefined) {
        const b = box.querySelector(`button[data-label="${CSS.escape(name)}"]`);
        if (b) { b.classList.add("flash"); setTimeout(() => b.classList.remove("flash"), 150); }
        answer(name); ev.preventDefault();
      }
    } else if (ev.key === "s") { answer(null); ev.preventDefault(); }
    else if (ev.key === "u") { undo(); ev.preventDefault(); }
  });
  refreshStats(); setInterval(refreshStats, 5000);
  await fetchBatch();
}
start().catch((e) => status(e.message, true));
