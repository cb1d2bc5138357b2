// The page: upload an image, draw the detections, filter them by score, show where a detection looked.
// Plain browser JavaScript, no dependencies, nothing fetched from outside this server.
"use strict";

const el = (id) => document.getElementById(id);
const canvas = el("canvas");
const ctx = canvas.getContext("2d");
const LEVEL_SHAPES = ["circle", "square", "triangle", "diamond", "circle", "square"];
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

const state = {
  file: null, image: null, detections: [], threshold: 0.5, selected: null,
  explained: null, levelsOn: [], scale: 1, pointsDrawn: 0, boxesDrawn: 0,
};
window.detrPage = state;  // for tests and curious users

function headers() {
  const key = el("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function colorFor(label) {
  const hue = (label * 137.508) % 360;  // golden angle: neighbouring labels get distant hues
  return `hsl(${hue}, 85%, 50%)`;
}

function viridis(t) {
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const c = VIRIDIS[i].map((v, k) => Math.round(v + f * (VIRIDIS[i + 1][k] - v)));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

function setStatus(text, isError = false) {
  el("status").textContent = text;
  el("status").classList.toggle("error", isError);
}

async function errorText(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

async function post(path, form) {
  // The response, or a sentence when no HTTP answer came at all (server down, connection cut).
  try {
    return await fetch(path, { method: "POST", body: form, headers: headers() });
  } catch (error) {
    return `no answer from the server (${error.message})`;
  }
}

function visible() {
  return state.detections.filter((d) => d.score >= state.threshold);
}

function drawMarker(shape, x, y, r) {
  ctx.beginPath();
  if (shape === "square") ctx.rect(x - r, y - r, 2 * r, 2 * r);
  else if (shape === "triangle") { ctx.moveTo(x, y - r); ctx.lineTo(x + r, y + r); ctx.lineTo(x - r, y + r); ctx.closePath(); }
  else if (shape === "diamond") { ctx.moveTo(x, y - r); ctx.lineTo(x + r, y); ctx.lineTo(x, y + r); ctx.lineTo(x - r, y); ctx.closePath(); }
  else ctx.arc(x, y, r, 0, 2 * Math.PI);
  ctx.fill();
  ctx.stroke();
}

function draw() {
  if (!state.image) return;
  const s = state.scale;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(state.image, 0, 0, canvas.width, canvas.height);
  const shown = visible();
  ctx.lineWidth = 2;
  ctx.font = "12px system-ui, sans-serif";
  for (const d of shown) {
    const [x0, y0, x1, y1] = d.box_xyxy.map((v) => v * s);
    ctx.strokeStyle = colorFor(d.label);
    ctx.globalAlpha = state.selected && state.selected !== d ? 0.35 : 1;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    const text = `${d.name} ${d.score.toFixed(2)}`;
    const width = ctx.measureText(text).width + 6;
    ctx.fillStyle = colorFor(d.label);
    ctx.fillRect(x0, Math.max(0, y0 - 16), width, 16);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, x0 + 3, Math.max(12, y0 - 4));
  }
  ctx.globalAlpha = 1;
  state.boxesDrawn = shown.length;
  state.pointsDrawn = 0;
  const explained = state.selected && state.explained && matchExplained(state.selected);
  if (explained) drawSampling(explained);
}

function drawSampling(explained) {
  const s = state.scale;
  let maxWeight = 0;
  for (const level of explained.sampling) for (const w of level.weights) maxWeight = Math.max(maxWeight, w);
  ctx.strokeStyle = "rgba(0, 0, 0, 0.6)";
  ctx.lineWidth = 1;
  const order = [];  // light points first, so the heaviest stay on top
  for (const level of explained.sampling) {
    if (!state.levelsOn[level.level]) continue;
    level.points.forEach((p, i) => order.push([level.weights[i], p, level.level]));
  }
  order.sort((a, b) => a[0] - b[0]);
  for (const [w, [x, y], level] of order) {
    ctx.fillStyle = viridis(w / maxWeight);
    drawMarker(LEVEL_SHAPES[level], x * s, y * s, 3 + 5 * Math.sqrt(w / maxWeight));
  }
  state.pointsDrawn = order.length;
  const [rx, ry] = explained.reference_point.map((v) => v * s);
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 3;
  ctx.beginPath(); ctx.moveTo(rx - 7, ry); ctx.lineTo(rx + 7, ry); ctx.moveTo(rx, ry - 7); ctx.lineTo(rx, ry + 7); ctx.stroke();
  el("legend-max").textContent = `0 … ${maxWeight.toFixed(3)}`;
}

function renderList() {
  const list = el("detections");
  list.replaceChildren();
  for (const d of visible()) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colorFor(d.label);
    item.append(swatch, `${d.name} ${d.score.toFixed(3)}  [${d.box_xyxy.map((v) => Math.round(v)).join(", ")}]`);
    item.classList.toggle("selected", d === state.selected);
    item.addEventListener("click", () => select(d));
    list.append(item);
  }
}

function refresh() {
  draw();
  renderList();
  const n = visible().length;
  if (state.image) setStatus(`${n} of ${state.detections.length} detections with score ≥ ${state.threshold.toFixed(2)}` +
    (state.timing ? ` (server ${state.timing.total_ms.toFixed(0)} ms, batch of ${state.timing.batch_size})` : ""));
}

function matchExplained(d) {
  // Explain lists each query once (its best class); a detection is found by its box, the query's box.
  if (!state.explained) return null;
  let best = null, bestDistance = Infinity;
  for (const e of state.explained.detections) {
    const distance = e.box_xyxy.reduce((sum, v, i) => sum + Math.abs(v - d.box_xyxy[i]), 0);
    if (distance < bestDistance) { best = e; bestDistance = distance; }
  }
  return bestDistance < 1 ? best : null;  // the same query: identical boxes up to float noise
}

async function select(d) {
  state.selected = state.selected === d ? null : d;
  refresh();
  if (!state.selected) return;
  if (!state.explained || !matchExplained(d)) {
    setStatus("asking the server where this detection looked…");
    const form = new FormData();
    form.append("image", state.file);
    form.append("threshold", String(Math.max(0, d.score - 1e-6)));
    form.append("top_k", String(Math.min(100, state.detections.length)));
    const response = await post("/v1/explain", form);
    if (typeof response === "string" || !response.ok) {
      setStatus(`explain failed: ${typeof response === "string" ? response : await errorText(response)}`, true);
      return;
    }
    state.explained = await response.json();
    const toggles = el("level-toggles");
    toggles.replaceChildren();
    state.levelsOn = state.explained.levels.map(() => true);
    for (const level of state.explained.levels) {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox"; box.checked = true; box.dataset.level = level.level;
      box.addEventListener("change", () => { state.levelsOn[level.level] = box.checked; draw(); });
      label.append(box, ` ${level.level} (${LEVEL_SHAPES[level.level]}, ${level.width}×${level.height})`);
      toggles.append(label);
    }
    el("levels").hidden = false;
    el("legend").hidden = false;
  }
  refresh();
  document.body.dataset.state = matchExplained(d) ? "explained" : "detected";
}

async function detect(file) {
  state.file = file; state.selected = null; state.explained = null; state.detections = [];
  document.body.dataset.state = "detecting";
  setStatus(`detecting objects in ${file.name}…`);
  const image = new Image();
  const url = URL.createObjectURL(file);
  const loaded = new Promise((resolve, reject) => { image.onload = resolve; image.onerror = reject; });
  image.src = url;
  const form = new FormData();
  form.append("image", file);
  form.append("threshold", "0");
  const response = await post("/v1/detect", form);
  if (typeof response === "string" || !response.ok) {
    setStatus(`${file.name}: ${typeof response === "string" ? response : await errorText(response)}`, true);
    document.body.dataset.state = "error";
    return;
  }
  const result = await response.json();
  try { await loaded; } catch (_) { setStatus(`${file.name}: the browser cannot display this image`, true); return; }
  state.image = image;
  state.scale = Math.min(1, 960 / image.naturalWidth);
  canvas.width = Math.round(image.naturalWidth * state.scale);
  canvas.height = Math.round(image.naturalHeight * state.scale);
  state.detections = result.detections;
  state.timing = result.timing;
  el("levels").hidden = true;
  el("legend").hidden = true;
  refresh();
  document.body.dataset.state = "detected";
}

canvas.addEventListener("click", (event) => {
  const rect = canvas.getBoundingClientRect();
  const x = (event.clientX - rect.left) * (canvas.width / rect.width) / state.scale;
  const y = (event.clientY - rect.top) * (canvas.height / rect.height) / state.scale;
  const hits = visible().filter((d) => d.box_xyxy[0] <= x && x <= d.box_xyxy[2] && d.box_xyxy[1] <= y && y <= d.box_xyxy[3]);
  hits.sort((a, b) => (a.box_xyxy[2] - a.box_xyxy[0]) * (a.box_xyxy[3] - a.box_xyxy[1]) - (b.box_xyxy[2] - b.box_xyxy[0]) * (b.box_xyxy[3] - b.box_xyxy[1]));
  if (hits.length) select(hits[0]);
});

el("threshold").addEventListener("input", (event) => {
  state.threshold = Number(event.target.value);
  el("threshold-value").textContent = state.threshold.toFixed(2);
  if (state.selected && state.selected.score < state.threshold) state.selected = null;
  refresh();
});

el("file-input").addEventListener("change", (event) => { if (event.target.files.length) detect(event.target.files[0]); });
const zone = el("drop-zone");
zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("over");
  if (event.dataTransfer.files.length) detect(event.dataTransfer.files[0]);
});

(function drawLegend() {
  const bar = el("legend-bar").getContext("2d");
  for (let x = 0; x < 160; x++) { bar.fillStyle = viridis(x / 159); bar.fillRect(x, 0, 1, 12); }
})();

async function loadInfo() {
  const health = await (await fetch("/health")).json();
  el("key-row").hidden = !health.auth_required;
  const response = await fetch("/v1/model", { headers: headers() });
  if (!response.ok) { el("model-info").textContent = `model info: ${await errorText(response)}`; return; }
  const info = await response.json();
  el("model-info").textContent = `${info.variant}; ${info.num_classes} classes; ${info.device}${info.amp ? " bf16" : ""}`;
}

el("api-key").value = localStorage.getItem("deformable-detr-api-key") || "";
el("api-key").addEventListener("change", () => {
  localStorage.setItem("deformable-detr-api-key", el("api-key").value);
  loadInfo();
});
loadInfo();
