// stablecnn serve: draw a digit (or what the model knows) and see what the model makes of it.
// The heading follows the model card's (neutral until the card is read, or if it has none).
//
// The pad keeps the strokes (lists of points in the canvas's own 280 x 280 pixels) so that undo
// can draw the others again. A change asks for a prediction after DEBOUNCE_MS of calm, or at
// once when MAX_WAIT_MS have passed while drawing goes on; one request is in flight at a time
// and the latest drawing is sent when it returns. The server frames the picture as MNIST's
// digits were and answers with the probabilities, the 28 x 28 input it used and the first
// convolution's feature maps (see stablecnn/serve/server.py for the API).
"use strict";

const DEBOUNCE_MS = 120;
const MAX_WAIT_MS = 350;
const LINE_WIDTH = 20; // of 280: after the framing, about MNIST's 2-3 pixel strokes

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ctx = pad.getContext("2d");
const strokes = [];
let current = null; // the stroke being drawn: {id, points}
let model = null; // GET /api/model
let mode = "draw"; // "draw" or "file" (a picture dropped or chosen)
let dirty = false, busy = false, timer = 0, lastSent = 0, seq = 0;

// -- the pad -----------------------------------------------------------------------------------
function paper() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = ctx.fillStyle = "#000";
  ctx.lineWidth = LINE_WIDTH;
  ctx.lineCap = ctx.lineJoin = "round";
}

function drawStroke(points) {
  if (points.length === 1) {
    ctx.beginPath();
    ctx.arc(points[0][0], points[0][1], LINE_WIDTH / 2, 0, 2 * Math.PI);
    ctx.fill();
    return;
  }
  ctx.beginPath();
  ctx.moveTo(points[0][0], points[0][1]);
  for (const [x, y] of points.slice(1)) ctx.lineTo(x, y);
  ctx.stroke();
}

function redraw() {
  paper();
  strokes.forEach((s) => drawStroke(s.points));
  updateTools();
}

function point(event) {
  const r = pad.getBoundingClientRect();
  return [
    ((event.clientX - r.left) * pad.width) / r.width,
    ((event.clientY - r.top) * pad.height) / r.height,
  ];
}

pad.addEventListener("pointerdown", (event) => {
  if (event.pointerType === "mouse" && event.button !== 0) return;
  event.preventDefault();
  if (mode === "file") startOver();
  pad.setPointerCapture(event.pointerId);
  current = { id: event.pointerId, points: [point(event)] };
  strokes.push(current);
  drawStroke(current.points);
  updateTools();
  changed();
});

pad.addEventListener("pointermove", (event) => {
  if (!current || event.pointerId !== current.id) return;
  const coalesced = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  const last = current.points[current.points.length - 1];
  for (const e of coalesced.length ? coalesced : [event]) current.points.push(point(e));
  ctx.beginPath(); // only the new segments: a long stroke is not drawn again at every move
  ctx.moveTo(last[0], last[1]);
  for (const [x, y] of current.points.slice(current.points.length - (coalesced.length || 1))) {
    ctx.lineTo(x, y);
  }
  ctx.stroke();
  changed();
});

function endStroke(event) {
  if (!current || event.pointerId !== current.id) return;
  current = null;
  changed(0);
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function undo() {
  if (mode === "file") return startOver();
  if (!strokes.length) return;
  strokes.pop();
  current = null;
  redraw();
  changed(0);
}

function startOver() {
  strokes.length = 0;
  current = null;
  mode = "draw";
  $("source").textContent = "";
  redraw();
  changed(0);
}

$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", startOver);
document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") {
    event.preventDefault();
    undo();
  }
});

function updateTools() {
  const empty = mode === "draw" && strokes.length === 0;
  $("undo").disabled = empty;
  $("clear").disabled = empty;
  $("hint").hidden = !empty;
}

// -- asking the server -------------------------------------------------------------------------
function changed(delay = DEBOUNCE_MS) {
  dirty = true;
  clearTimeout(timer);
  if (performance.now() - lastSent >= MAX_WAIT_MS) delay = 0;
  timer = setTimeout(flush, delay);
}

async function flush() {
  if (busy || !dirty || mode !== "draw") return;
  dirty = false;
  if (!strokes.length) {
    seq += 1; // an answer still on its way is for a drawing that is gone
    showNothing();
    return;
  }
  busy = true;
  lastSent = performance.now();
  try {
    const body = { image: pad.toDataURL("image/png"), feature_maps: wantMaps() };
    await ask(JSON.stringify(body), "application/json", "");
  } finally {
    busy = false;
    if (dirty) changed(0);
  }
}

async function ask(body, type, query) {
  const mine = ++seq;
  setStatus("");
  try {
    const response = await fetch("api/predict" + query, {
      method: "POST",
      headers: { "Content-Type": type },
      body,
    });
    const answer = await response.json();
    if (mine !== seq) return; // a newer request was sent since
    if (!response.ok) {
      showNothing();
      setStatus(answer.error || `the server answered ${response.status}`);
      return;
    }
    show(answer);
  } catch (error) {
    if (mine === seq) setStatus(`no answer from the server (${error.message})`);
  }
}

function wantMaps() {
  return Boolean(model && model.feature_maps && $("show-maps").checked);
}

function setStatus(text) {
  $("status").textContent = text;
}

// -- a picture dropped or chosen ---------------------------------------------------------------
async function predictFile(file) {
  if (!file) return;
  if (model && file.size > model.max_body_bytes) {
    setStatus(`${file.name} is ${file.size.toLocaleString()} bytes; the limit is ` +
      `${model.max_body_bytes.toLocaleString()}`);
    return;
  }
  strokes.length = 0;
  current = null;
  mode = "file";
  dirty = false;
  clearTimeout(timer);
  paper();
  updateTools();
  $("source").textContent = `${file.name}: draw on the pad to start over`;
  preview(file);
  const query = wantMaps() ? "?feature_maps=1" : "";
  await ask(file, file.type || "application/octet-stream", query);
}

function preview(file) {
  // the picture as the browser shows it, fitted on the pad (the server reads the file itself)
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => {
    if (mode !== "file") return URL.revokeObjectURL(url);
    const scale = Math.min(pad.width / img.width, pad.height / img.height);
    const w = img.width * scale, h = img.height * scale;
    ctx.drawImage(img, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    URL.revokeObjectURL(url);
  };
  img.onerror = () => URL.revokeObjectURL(url);
  img.src = url;
}

$("file").addEventListener("change", (event) => {
  predictFile(event.target.files[0]);
  event.target.value = ""; // the same file may be chosen again
});
const drop = $("drop");
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (event) => {
    event.preventDefault();
    drop.classList.add("dragging");
  });
}
drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("dragging");
  predictFile(event.dataTransfer.files[0]);
});
// a picture dropped beside the pad must not make the browser leave the page
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

// -- showing the answer ------------------------------------------------------------------------
function percent(p) {
  return p < 0.0005 ? "<0.1%" : p > 0.9995 && p < 1 ? ">99.9%" : `${(100 * p).toFixed(1)}%`;
}

function label(k) {
  const name = model ? model.classes[k] : String(k);
  return name === String(k) ? name : `${k} ${name}`;
}

function show(answer) {
  const k = answer.class;
  const out = $("prediction");
  out.textContent = answer.name;
  out.dataset.class = String(k);
  $("confidence").textContent = percent(answer.probabilities[k]);
  $("quick").textContent = `${label(k)} · ${percent(answer.probabilities[k])}`;
  $("bars").querySelectorAll("li").forEach((li, i) => {
    const p = answer.probabilities[i];
    li.classList.toggle("top", i === k);
    li.querySelector(".fill").style.width = `${(100 * p).toFixed(2)}%`;
    li.querySelector(".value").textContent = percent(p);
    li.setAttribute("aria-label", `${label(i)}: ${percent(p)}`);
  });
  drawInput(answer.input);
  if (answer.feature_maps) drawMaps(answer.feature_maps);
}

function showNothing() {
  const out = $("prediction");
  out.textContent = "–";
  out.dataset.class = "";
  $("confidence").textContent = "";
  $("quick").textContent = "";
  $("bars").querySelectorAll("li").forEach((li) => {
    li.classList.remove("top");
    li.querySelector(".fill").style.width = "0";
    li.querySelector(".value").textContent = "";
  });
  const seen = $("seen");
  seen.getContext("2d").clearRect(0, 0, seen.width, seen.height);
  $("maps").querySelectorAll("canvas").forEach((c) => {
    c.getContext("2d").clearRect(0, 0, c.width, c.height);
  });
}

function drawInput(input) {
  // grey (H, W) rows, or colour (3, H, W) channels
  const colour = Array.isArray(input[0][0]);
  const h = colour ? input[0].length : input.length;
  const w = colour ? input[0][0].length : input[0].length;
  const seen = $("seen");
  seen.width = w;
  seen.height = h;
  const image = new ImageData(w, h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const o = 4 * (y * w + x);
      for (let c = 0; c < 3; c++) image.data[o + c] = colour ? input[c][y][x] : input[y][x];
      image.data[o + 3] = 255;
    }
  }
  seen.getContext("2d").putImageData(image, 0, 0);
}

// a diverging scale (PuOr): negative purple, zero near white, positive orange
const NEG = [84, 39, 136], ZERO = [247, 247, 247], POS = [179, 88, 6];

function drawMaps(maps) {
  const [count, h, w] = maps.shape;
  const holder = $("maps");
  if (holder.children.length !== count) buildMaps(count, h, w);
  let scale = 0;
  for (const m of maps.values) for (const row of m) for (const v of row) scale = Math.max(scale, Math.abs(v));
  scale = scale || 1;
  maps.values.forEach((m, c) => {
    const canvas = holder.children[c];
    const image = new ImageData(w, h);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const t = Math.max(-1, Math.min(1, m[y][x] / scale));
        const end = t < 0 ? NEG : POS;
        const o = 4 * (y * w + x);
        for (let i = 0; i < 3; i++) image.data[o + i] = ZERO[i] + (end[i] - ZERO[i]) * Math.abs(t);
        image.data[o + 3] = 255;
      }
    }
    canvas.getContext("2d").putImageData(image, 0, 0);
  });
}

function buildMaps(count, h, w) {
  const holder = $("maps");
  holder.replaceChildren();
  for (let c = 0; c < count; c++) {
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    canvas.title = `channel ${c}`;
    holder.append(canvas);
  }
}

// -- the model card ----------------------------------------------------------------------------
function describe(card) {
  const heading = card.heading || "Draw or drop a picture";
  $("heading").textContent = heading;
  document.title = `${heading} · stablecnn`;
  const rows = [
    ["Model", card.name],
    ["Dataset", card.dataset || "unknown"],
    ["Test accuracy", card.test_accuracy == null ? "not recorded" :
      `${(100 * card.test_accuracy).toFixed(2)}%` + (card.test_tta ?
        ` with test-time augmentation ${card.test_tta} (not applied here)` : "")],
    ["Epochs", card.epochs == null ? "unknown" : String(card.epochs)],
    ["Parameters", card.parameters.toLocaleString()],
    ["Input", `${card.input_shape.join(" × ")} (${card.channels === 1 ? "grey" : "colour"})`],
    ["Preprocessing", card.preprocessing === "mnist-framing" ?
      "MNIST framing: ink cropped, fitted in 20 × 20, centred by its centre of mass" :
      "resized as a whole"],
    ["Normalisation", card.normalization],
    ["Checkpoint", card.checkpoint],
  ];
  const dl = $("card");
  dl.replaceChildren();
  for (const [term, value] of rows) {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = term;
    dd.textContent = value;
    dl.append(dt, dd);
  }
  $("summary").textContent = card.summary;
  $("model-line").textContent = `${card.name} on ${card.dataset || "unknown data"}` +
    (card.test_accuracy == null ? "" : `, ${(100 * card.test_accuracy).toFixed(2)}% on its test set` +
      (card.test_tta ? ` with test-time augmentation ${card.test_tta}` : ""));
  const [h, w] = card.input_shape.slice(-2);
  $("seen-note").textContent = card.channels === 1 ?
    `The ${h} × ${w} input after the MNIST framing: light ink on black, as in training.` :
    `The ${h} × ${w} colour input: the picture resized as a whole.`;
  const bars = $("bars");
  bars.replaceChildren();
  card.classes.forEach((name, k) => {
    const li = document.createElement("li");
    li.dataset.class = String(k);
    for (const part of ["name", "track", "value"]) {
      const span = document.createElement("span");
      span.className = part;
      li.append(span);
    }
    li.querySelector(".name").textContent = label(k);
    const fill = document.createElement("span");
    fill.className = "fill";
    li.querySelector(".track").append(fill);
    bars.append(li);
  });
  const maps = card.feature_maps;
  if (maps) {
    $("maps-note").textContent = `Layer ${maps.layer}, ${maps.description}: its output before ` +
      `the activation, ${maps.shape.join(" × ")}; orange positive, purple negative.`;
    buildMaps(...maps.shape);
  } else {
    $("maps-note").textContent = "This model has no convolution at its top level.";
    $("show-maps").disabled = true;
  }
}

$("show-maps").addEventListener("change", () => {
  if (mode === "draw") changed(0);
});

async function start() {
  paper();
  updateTools();
  try {
    const response = await fetch("api/model");
    model = await response.json();
    describe(model);
    document.body.dataset.ready = "true";
  } catch (error) {
    setStatus(`could not read the model card (${error.message})`);
  }
}

start();
