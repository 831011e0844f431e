// The latentsearch web UI: plain JavaScript over the server's JSON API, no build step, no CDN.
// Every text from the server is written with textContent (never parsed as HTML).
"use strict";

const $ = (id) => document.getElementById(id);
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
  "#c7c7c7", "#dbdb8d", "#9edae5"];
const TOKEN_KEY = "latentsearch-token";
const MAP_SAMPLE = 2000;

const state = {
  collections: [], name: null, info: null, token: localStorage.getItem(TOKEN_KEY) || "",
  map: null, view: null, hits: [], selected: null, image: null, seq: 0,
};

// -- HTTP ---------------------------------------------------------------------------------------

async function api(method, path, body, isForm) {
  const headers = {};
  if (state.token) headers.Authorization = "Bearer " + state.token;
  let payload;
  if (body !== undefined) {
    if (isForm) payload = body;
    else { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
  }
  const response = await fetch(path, { method, headers, body: payload });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const error = new Error((data && data.error) || `the server answered ${response.status}`);
    error.status = response.status;
    if (response.status === 401 || response.status === 403) $("token-form").hidden = false;
    throw error;
  }
  return data;
}

const base = () => `/api/collections/${encodeURIComponent(state.name)}`;

async function fileURL(id, what = "file") {
  // <img src> cannot send a token, so the image is fetched and shown from a blob.
  const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
  const response = await fetch(`${base()}/items/${id}/${what}`, { headers });
  if (!response.ok) throw new Error(`no ${what} image for item ${id}`);
  return URL.createObjectURL(await response.blob());
}

// -- small DOM helpers --------------------------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "style") for (const [name, v] of Object.entries(value)) node.style.setProperty(name, v);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function status(message, isError) {
  $("status").textContent = message;
  $("status").classList.toggle("error", !!isError);
}

const colour = (cluster) => (cluster < 0 ? "#9aa0aa" : COLOURS[cluster % COLOURS.length]);
const snippet = (text, n) => (!text ? "" : text.length > n ? text.slice(0, n - 1) + "…" : text);
const label = (item) => item.source || item.key || `#${item.id}`;
const pathTail = (text) => (/^(\/|[A-Za-z]:\\)/.test(text) ? text.split(/[\\/]/).pop() : text);
const shortLabel = (item) => (item.source ? pathTail(item.source) : label(item));
const metaText = (m) => (m && Object.keys(m).length ? JSON.stringify(m) : "");

// -- collections --------------------------------------------------------------------------------

async function loadCollections() {
  try {
    const data = await api("GET", "/api/collections");
    state.collections = data.collections;
  } catch (error) {
    status(error.status === 401 || error.status === 403 ? "This server needs a token to read: enter it above." : error.message, true);
    return;
  }
  const select = $("collection");
  select.replaceChildren(...state.collections.map((c) => el("option", { value: c.name, text: c.name })));
  const wanted = new URLSearchParams(location.hash.slice(1)).get("collection");
  const first = state.collections.find((c) => c.name === wanted) || state.collections[0];
  if (first) { select.value = first.name; await selectCollection(first.name); }
  else status("This server serves no collection.", true);
}

async function selectCollection(name) {
  state.name = name;
  state.info = state.collections.find((c) => c.name === name);
  state.hits = []; state.selected = null; state.map = null;
  history.replaceState(null, "", "#collection=" + encodeURIComponent(name));
  const info = state.info;
  $("info").textContent = `${info.items.toLocaleString()} items · ${info.encoder || "vectors only"} · ${info.index_in_use}`;
  const queries = info.queries || [];
  $("drop").hidden = !queries.includes("image");
  $("query").disabled = !queries.includes("text");
  $("query").placeholder = queries.includes("text") ? "Search by meaning…" : "This collection takes image queries: drop an image below";
  clearImage();
  $("results").replaceChildren();
  $("clusters").replaceChildren("Search to see how the nearest neighbours group.");
  $("detail").hidden = true;
  status("");
  await loadMap(null, []);
}

// -- search -------------------------------------------------------------------------------------

function readWhere() {
  const text = $("where").value.trim();
  if (!text) return null;
  let where;
  try { where = JSON.parse(text); } catch (e) { throw new Error(`'where' is not valid JSON: ${e.message}`); }
  if (where === null || typeof where !== "object" || Array.isArray(where)) {
    throw new Error('\'where\' must be a JSON object such as {"topic": "space"}');
  }
  return where;
}

async function search(event) {
  if (event) event.preventDefault();
  if (!state.name) return;
  const seq = ++state.seq;
  let where;
  try { where = readWhere(); } catch (error) { status(error.message, true); return; }
  const k = Math.max(1, parseInt($("k").value, 10) || 10);
  const groupBy = $("documents").checked ? "document" : null;
  const started = performance.now();
  let data, mapQuery;
  status("Searching…");
  try {
    if (state.image) {
      const form = new FormData();
      form.append("file", state.image);
      form.append("k", String(k));
      form.append("vector", "true");
      if (where) form.append("where", JSON.stringify(where));
      if (groupBy) form.append("group_by", groupBy);
      data = await api("POST", `${base()}/search/image`, form, true);
      mapQuery = { vector: data.vector };
    } else {
      const text = $("query").value.trim();
      if (!text) { status("Type a query, or drop an image.", true); return; }
      data = await api("POST", `${base()}/search`, { query: text, k, where, mode: $("mode").value, group_by: groupBy });
      mapQuery = text;
    }
  } catch (error) { status(error.message, true); return; }
  if (seq !== state.seq) return; // a newer search has started
  const ms = Math.round(performance.now() - started);
  state.hits = data.hits; state.selected = null;
  let line = `${data.hits.length} hit${data.hits.length === 1 ? "" : "s"} in ${ms} ms`;
  if (data.filter) {
    line += data.filter.matches
      ? ` · ${data.filter.matches.toLocaleString()} item${data.filter.matches === 1 ? "" : "s"} match the filter`
      : ` · no item matches the filter${data.filter.explanation ? ": " + data.filter.explanation : ""}`;
  }
  status(line);
  renderHits(data.hits);
  const ids = data.hits.map((h) => h.id);
  await Promise.all([loadClusters(mapQuery, where, k, seq), loadMap(mapQuery, ids, seq)]);
}

function renderHits(hits) {
  const box = $("results");
  if (!hits.length) { box.replaceChildren(el("p", { class: "muted", text: "Nothing found." })); return; }
  const images = hits.every((h) => h.modality === "image");
  box.className = images ? "grid" : "";
  box.replaceChildren(...hits.map((h, i) => {
    const head = el("div", { class: "head" },
      el("span", { text: `${i + 1}.` }), el("span", { class: "score", text: h.score.toFixed(4) }),
      el("span", { text: `#${h.id}` }), el("span", { text: images ? shortLabel(h) : snippet(label(h), 80), title: label(h) }));
    const card = el("div", { class: "hit", "data-id": String(h.id), onclick: () => showItem(h.id) }, head);
    if (h.modality === "image") {
      const img = el("img", { alt: label(h) });
      fileURL(h.id).then((url) => { img.src = url; }).catch(() => { img.alt = "no file"; });
      card.prepend(img);
    }
    if (h.text && h.modality !== "image") card.append(el("div", { class: "text", text: snippet(h.text, 400) }));
    const meta = metaText(h.metadata);
    if (meta && !images) card.append(el("div", { class: "meta", text: snippet(meta, 300) }));
    return card;
  }));
}

async function loadClusters(query, where, k, seq) {
  const box = $("clusters");
  try {
    const data = await api("POST", `${base()}/clusters`, { query, where, k: Math.min(200, Math.max(2, k * 3, 30)) });
    if (seq !== state.seq) return;
    box.className = "";
    box.replaceChildren(...data.clusters.map((c) => el("div", { class: "cluster" },
      el("div", {}, el("span", { class: "label", text: pathTail(c.label) }), el("span", { class: "muted", text: ` · ${c.size} items · score ${c.score.toFixed(3)}` })),
      ...c.members.slice(0, 3).map((m) => el("div", { class: "meta", onclick: () => showItem(m.id) },
        `#${m.id} ${snippet(m.text || shortLabel(m), 120)}`)))));
  } catch (error) {
    box.className = "muted";
    box.replaceChildren(`No clusters: ${error.message}`);
  }
}

// -- item detail --------------------------------------------------------------------------------

async function showItem(id) {
  state.selected = id;
  for (const card of document.querySelectorAll(".hit")) card.classList.toggle("selected", card.dataset.id === String(id));
  drawMap();
  const box = $("detail");
  let item;
  try { item = await api("GET", `${base()}/items/${id}`); } catch (error) { status(error.message, true); return; }
  const rows = [el("div", { class: "head" }, el("strong", { text: `#${item.id}` }), " ", el("span", { class: "muted", text: `${item.modality}` }))];
  for (const key of ["key", "source", "document"]) {
    if (item[key]) rows.push(el("div", { class: "meta", text: `${key}: ${item[key]}` }));
  }
  if (item.modality === "image") {
    const img = el("img", { alt: label(item), class: "original" });
    fileURL(item.id).then((url) => { img.src = url; }).catch(() => img.remove());
    rows.push(img);
  }
  if (state.info.decodes) {
    const img = el("img", { alt: `item ${item.id} decoded`, class: "decoded" });
    const figure = el("figure", {}, img, el("figcaption", { class: "muted", text: "decoded from its latent" }));
    fileURL(item.id, "decoded").then((url) => { img.src = url; }).catch(() => figure.remove());
    rows.push(figure);
  }
  if (item.text) rows.push(el("div", { class: "text", text: item.text }));
  const meta = metaText(item.metadata);
  if (meta) rows.push(el("div", { class: "meta", text: meta }));
  box.replaceChildren(...rows);
  box.hidden = false;
}

// -- the map ------------------------------------------------------------------------------------

async function loadMap(query, ids, seq) {
  try {
    const data = await api("POST", `${base()}/map`, { query, ids, sample: MAP_SAMPLE });
    if (seq !== undefined && seq !== state.seq) return;
    state.map = data;
    $("map-info").textContent = `${data.sampled.toLocaleString()} of ${data.items.toLocaleString()} items · ${data.projection.toUpperCase()}` +
      (data.stored_clustering ? " · stored clusters" : " · quick k-means");
    $("legend").replaceChildren(...data.clusters.slice(0, 20).map((c) =>
      el("span", { style: { "--c": colour(c.id) }, text: snippet(pathTail(c.label), 40), title: c.label })));
  } catch (error) {
    state.map = null;
    $("map-info").textContent = `(${error.message})`;
    $("legend").replaceChildren();
  }
  drawMap();
}

function drawMap() {
  const canvas = $("map");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 560, height = canvas.clientHeight || 420;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const m = state.map;
  if (!m) { state.view = null; return; }
  const xs = m.x.concat(m.marked.map((p) => p.x), m.query ? [m.query.x] : []);
  const ys = m.y.concat(m.marked.map((p) => p.y), m.query ? [m.query.y] : []);
  const minX = Math.min(...xs), maxX = Math.max(...xs), minY = Math.min(...ys), maxY = Math.max(...ys);
  const pad = 14, spanX = maxX - minX || 1, spanY = maxY - minY || 1;
  const scale = Math.min((width - 2 * pad) / spanX, (height - 2 * pad) / spanY);
  const offX = (width - spanX * scale) / 2, offY = (height - spanY * scale) / 2;
  const at = (x, y) => [offX + (x - minX) * scale, height - (offY + (y - minY) * scale)];
  const marked = new Set(m.marked.map((p) => p.id));
  ctx.globalAlpha = marked.size ? 0.35 : 0.8;
  for (let i = 0; i < m.ids.length; i++) {
    const [px, py] = at(m.x[i], m.y[i]);
    ctx.fillStyle = colour(m.cluster[i]);
    ctx.beginPath(); ctx.arc(px, py, 2.5, 0, 2 * Math.PI); ctx.fill();
  }
  ctx.globalAlpha = 1;
  if (m.query) star(ctx, ...at(m.query.x, m.query.y)); // under the hits, which are often on it
  const clusterOf = new Map(m.ids.map((id, i) => [id, m.cluster[i]]));
  for (const p of m.marked) {
    const [px, py] = at(p.x, p.y);
    ctx.fillStyle = clusterOf.has(p.id) ? colour(clusterOf.get(p.id)) : "#2f6fdf";
    ctx.strokeStyle = p.id === state.selected ? "#000" : "#fff";
    ctx.lineWidth = p.id === state.selected ? 2.5 : 1.5;
    ctx.beginPath(); ctx.arc(px, py, p.id === state.selected ? 7 : 5, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
  }
  if (state.selected != null && !marked.has(state.selected)) {
    const i = m.ids.indexOf(state.selected);
    if (i >= 0) {
      const [px, py] = at(m.x[i], m.y[i]);
      ctx.strokeStyle = "#000"; ctx.lineWidth = 2.5;
      ctx.beginPath(); ctx.arc(px, py, 7, 0, 2 * Math.PI); ctx.stroke();
    }
  }
  state.view = { at };
}

function star(ctx, x, y) {
  ctx.beginPath();
  for (let i = 0; i < 10; i++) {
    const r = i % 2 ? 5 : 12, a = -Math.PI / 2 + (i * Math.PI) / 5;
    ctx.lineTo(x + r * Math.cos(a), y + r * Math.sin(a));
  }
  ctx.closePath();
  ctx.fillStyle = "#111"; ctx.strokeStyle = "#ffd400"; ctx.lineWidth = 2;
  ctx.fill(); ctx.stroke();
}

function nearestPoint(event) {
  const m = state.map;
  if (!m || !state.view) return null;
  const rect = $("map").getBoundingClientRect();
  const cx = event.clientX - rect.left, cy = event.clientY - rect.top;
  let best = null, bestD = 64; // within 8 px
  const consider = (id, x, y) => {
    const [px, py] = state.view.at(x, y);
    const d = (px - cx) ** 2 + (py - cy) ** 2;
    if (d < bestD) { bestD = d; best = id; }
  };
  m.marked.forEach((p) => consider(p.id, p.x, p.y));
  if (best == null) for (let i = 0; i < m.ids.length; i++) consider(m.ids[i], m.x[i], m.y[i]);
  return best;
}

// -- images: choose or drop ---------------------------------------------------------------------

function setImage(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) { status(`${file.name} is not an image`, true); return; }
  state.image = file;
  $("image-name").textContent = file.name;
  $("image-clear").hidden = false;
  $("query").value = "";
  $("mode").value = "dense";
  search();
}

function clearImage() {
  state.image = null;
  $("image").value = "";
  $("image-name").textContent = "";
  $("image-clear").hidden = true;
}

// -- wiring -------------------------------------------------------------------------------------

function main() {
  $("search-form").addEventListener("submit", search);
  $("collection").addEventListener("change", (e) => selectCollection(e.target.value));
  $("query").addEventListener("input", () => { if (state.image) clearImage(); });
  $("image").addEventListener("change", (e) => setImage(e.target.files[0]));
  $("image-clear").addEventListener("click", clearImage);
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); setImage(e.dataTransfer.files[0]); });
  $("map").addEventListener("click", (e) => { const id = nearestPoint(e); if (id != null) showItem(id); });
  $("map").addEventListener("mousemove", (e) => { $("map").style.cursor = nearestPoint(e) != null ? "pointer" : "crosshair"; });
  window.addEventListener("resize", drawMap);
  $("token-button").addEventListener("click", () => { $("token-form").hidden = !$("token-form").hidden; $("token").value = state.token; });
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("token").value.trim();
    if (state.token) localStorage.setItem(TOKEN_KEY, state.token); else localStorage.removeItem(TOKEN_KEY);
    $("token-form").hidden = true;
    loadCollections();
  });
  loadCollections();
}

main();
