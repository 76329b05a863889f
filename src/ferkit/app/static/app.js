// ferkit page: a photo -> boxes, labels and probability cards; a video -> the annotated clip, a timeline per
// face and a summary; the live camera -> frames over a WebSocket. One static file, no build step, no CDN.
"use strict";

// Same order and colours as ferkit.labels.CLASSES / ferkit.inference.annotate.CLASS_COLORS.
const COLORS = {
  Angry: "rgb(230,57,70)", Disgust: "rgb(106,153,78)", Fear: "rgb(155,93,229)", Happy: "rgb(255,183,3)",
  Sad: "rgb(33,118,174)", Surprise: "rgb(247,127,0)", Neutral: "rgb(160,160,160)",
};
let CLASSES = Object.keys(COLORS);
const MAX_DISPLAY = 640; // px: the widest a photo or camera picture is shown
const $ = (id) => document.getElementById(id);
const color = (label) => COLORS[label] || "#888";
// Black or white text, whichever reads better on the class colour.
const ink = (label) => {
  const [r, g, b] = (color(label).match(/\d+/g) || [136, 136, 136]).map(Number);
  return 0.299 * r + 0.587 * g + 0.114 * b < 140 ? "#fff" : "#000";
};
const pct = (p) => (100 * p).toFixed(1) + "%";

function setStatus(el, text, isError = false) {
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

// ---- the stage: a picture with a box per face ----

// Width the stage (and so the picture) is shown at: the container's width, at most MAX_DISPLAY px and at most
// 75% of the window's height for tall pictures, small pictures at most doubled.
function fitStage(stage, natW, natH) {
  if (!natW || !natH) return;
  const avail = stage.parentElement.clientWidth || MAX_DISPLAY;
  const maxH = Math.max(240, 0.75 * window.innerHeight);
  const w = Math.min(avail, MAX_DISPLAY, (maxH * natW) / natH, 2 * natW);
  stage.style.width = `${Math.floor(w)}px`;
  stage.dataset.natW = natW;
  stage.dataset.natH = natH;
  compactLabels(stage);
}

// Labels keep inside the picture (right-aligned near its right edge), and shrink to the face's number when
// full labels would overlap each other (many faces close together).
function compactLabels(stage) {
  const boxes = [...stage.querySelectorAll(".face-box")];
  const edge = stage.getBoundingClientRect().right;
  boxes.forEach((b) => b.classList.remove("compact", "flip"));
  boxes.forEach((b) => b.classList.toggle("flip", b.firstChild.getBoundingClientRect().right > edge + 1));
  const r = boxes.map((b) => b.firstChild.getBoundingClientRect());
  const overlap = r.some((a, i) => r.some((b, j) => i < j && a.left < b.right && b.left < a.right &&
    a.top < b.bottom && b.top < a.bottom));
  if (overlap) boxes.forEach((b) => b.classList.add("compact"));
}

// Boxes are positioned in percent of the analysed picture, so they follow the displayed size.
function drawBoxes(stage, faces, width, height) {
  const boxes = new Map([...stage.querySelectorAll(".face-box")].map((b) => [b.dataset.key, b]));
  faces.forEach((f, i) => {
    const key = String(f.track ?? i + 1);
    let box = boxes.get(key);
    if (!box) {
      box = el("div", { class: "face-box", "data-key": key });
      const label = el("div", { class: "face-label" });
      label.append(el("span", { class: "n" }), el("span", { class: "long" }));
      box.appendChild(label);
      stage.appendChild(box);
    }
    boxes.delete(key);
    const [x, y, w, h] = f.box;
    box.style.left = (100 * x) / width + "%";
    box.style.top = (100 * y) / height + "%";
    box.style.width = (100 * w) / width + "%";
    box.style.height = (100 * h) / height + "%";
    box.style.setProperty("--c", color(f.label));
    box.style.setProperty("--t", ink(f.label));
    box.classList.toggle("below", y < 0.06 * height);
    box.title = `Face ${key}: ${f.label} ${pct(f.score)}`;
    box.querySelector(".n").textContent = key;
    box.querySelector(".long").textContent = ` ${f.label} ${f.score.toFixed(2)}`;
  });
  boxes.forEach((b) => b.remove());
  compactLabels(stage);
}

function drawCards(container, faces) {
  const cards = new Map([...container.querySelectorAll(".face-card")].map((c) => [c.dataset.key, c]));
  faces.forEach((f, i) => {
    const key = String(f.track ?? i + 1);
    let card = cards.get(key);
    if (!card) {
      card = el("div", { class: "face-card", "data-key": key });
      card.innerHTML = "<h3></h3>" + CLASSES.map((c) =>
        `<div class="bar-row" data-class="${c}"><span>${c}</span><div class="bar" style="--c:${color(c)}">` +
        `<span></span></div><span class="v"></span></div>`).join("");
      container.appendChild(card);
    }
    cards.delete(key);
    card.style.order = i;
    card.style.setProperty("--c", color(f.label));
    card.style.setProperty("--t", ink(f.label));
    const h3 = card.querySelector("h3");
    h3.innerHTML = "";
    h3.append(el("span", { class: "num" }, key), `${f.label} (${(100 * f.score).toFixed(0)}%)`);
    for (const c of CLASSES) {
      const row = card.querySelector(`.bar-row[data-class="${c}"]`);
      const p = f.probs[c] ?? 0;
      row.querySelector(".bar > span").style.width = pct(p);
      row.querySelector(".v").textContent = pct(p);
    }
  });
  cards.forEach((c) => c.remove());
}

// Hovering a box highlights its card and the other way round (same data-key, same section).
function linkHover(section) {
  const stage = section.querySelector(".stage");
  const set = (key) => {
    section.querySelectorAll(".face-box, .face-card").forEach((e) => e.classList.toggle("hl", e.dataset.key === key));
    stage.classList.toggle("has-hl", key !== null);
  };
  section.addEventListener("mouseover", (e) => {
    const t = e.target.closest(".face-box, .face-card");
    set(t ? t.dataset.key : null);
  });
  section.addEventListener("mouseleave", () => set(null));
}

async function errorText(resp) {
  try {
    const j = await resp.json();
    return j.detail || resp.statusText;
  } catch (e) {
    return resp.statusText || `HTTP ${resp.status}`;
  }
}

function save(name, blob) {
  const a = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

const stem = (name) => name.replace(/\.[^.]*$/, "") || "result";
const csvCell = (v) => (/[",\n]/.test(String(v)) ? `"${String(v).replace(/"/g, '""')}"` : String(v));

// The columns of `ferkit predict --format csv`, plus the track for videos.
function toCsv(source, rows) {
  const head = ["source", "frame", "time", "face", "track", "x", "y", "w", "h", "label", "score", ...CLASSES];
  const lines = [head.join(",")];
  for (const { frame, time, faces } of rows) {
    faces.forEach((f, k) => lines.push([source, frame ?? "", time == null ? "" : time.toFixed(3), k, f.track ?? "",
      ...f.box, f.label, f.score.toFixed(6), ...CLASSES.map((c) => (f.probs[c] ?? 0).toFixed(6))].map(csvCell).join(",")));
  }
  return new Blob([lines.join("\n") + "\n"], { type: "text/csv" });
}

const jsonBlob = (obj) => new Blob([JSON.stringify(obj, null, 2)], { type: "application/json" });

// ---- photo ----
const photo = { file: null, result: null, url: null, ctrl: null };

function clearPhoto() {
  $("upload-result").hidden = true;
  $("upload-empty").hidden = false;
  $("upload-stage").querySelectorAll(".face-box").forEach((b) => b.remove());
  drawCards($("upload-faces"), []);
  const img = $("upload-image");
  img.removeAttribute("src");
  if (photo.url) URL.revokeObjectURL(photo.url);
  photo.url = photo.result = null;
}

const BROWSER_IMAGES = /^image\/(png|jpeg|gif|webp|bmp|avif)$/;

async function upload(file) {
  if (!file) return;
  const status = $("upload-status");
  if (photo.ctrl) photo.ctrl.abort();
  const ctrl = (photo.ctrl = new AbortController());
  clearPhoto(); // never leave the previous photo's results under this one's progress or error
  $("upload-empty").hidden = true;
  $("upload-progress").hidden = false;
  setStatus(status, `Analysing ${file.name}…`);
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    // TIFF, PGM/PPM and the like: the server sends the picture back as it read it, for the browser to show
    const shown = BROWSER_IMAGES.test(file.type);
    const resp = await fetch(`/api/predict${shown ? "" : "?preview=true"}`, { method: "POST", body: form, signal: ctrl.signal });
    if (!resp.ok) throw new Error(await errorText(resp));
    const r = await resp.json();
    const url = shown ? URL.createObjectURL(file) : null;
    const img = $("upload-image");
    await new Promise((resolve, reject) => {
      img.onload = resolve;
      img.onerror = () => reject(new Error("the browser cannot show this image (the server read it)"));
      img.src = url || r.preview;
    });
    if (ctrl.signal.aborted) return;
    Object.assign(photo, { file, result: r, url });
    $("upload-empty").hidden = true;
    $("upload-result").hidden = false;
    const stage = $("upload-stage");
    fitStage(stage, r.width, r.height);
    drawBoxes(stage, r.faces, r.width, r.height);
    drawCards($("upload-faces"), r.faces);
    const n = r.faces.length;
    const notes = r.warnings && r.warnings.length ? ` Note: ${r.warnings.join("; ")}` : "";
    setStatus(status, (n ? `${n} face${n > 1 ? "s" : ""} found in ${file.name} (${r.ms.toFixed(0)} ms on the server).`
      : `No face found in ${file.name}. Faces need to be upright, visible and at least about 30 px wide.`) + notes);
  } catch (e) {
    if (ctrl.signal.aborted) return;
    clearPhoto();
    $("upload-empty").hidden = true; // the error says it all
    setStatus(status, `${file.name}: ${e.message === "Failed to fetch" ? "the server did not answer" : e.message}`, true);
  } finally {
    if (photo.ctrl === ctrl) {
      $("upload-progress").hidden = true;
      photo.ctrl = null;
    }
  }
}

// The annotated image at full size (a server preview's size for TIFF and the like): the photo with the same
// boxes, numbers and labels as on screen.
function annotatedPng() {
  const img = $("upload-image");
  const r = photo.result;
  const c = el("canvas");
  c.width = img.naturalWidth;
  c.height = img.naturalHeight;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  const sx = c.width / r.width, sy = c.height / r.height;
  const lw = Math.max(2, Math.round(Math.min(c.width, c.height) / 300));
  const fs = Math.max(12, Math.round(Math.min(c.width, c.height) / 40));
  g.font = `600 ${fs}px system-ui, sans-serif`;
  g.textBaseline = "top";
  r.faces.forEach((f, i) => {
    const [x, y, w, h] = [f.box[0] * sx, f.box[1] * sy, f.box[2] * sx, f.box[3] * sy];
    g.strokeStyle = g.fillStyle = color(f.label);
    g.lineWidth = lw;
    g.strokeRect(x, y, w, h);
    const text = `${i + 1} ${f.label} ${f.score.toFixed(2)}`;
    const tw = g.measureText(text).width + 8;
    const ty = y - fs - 6 >= 0 ? y - fs - 6 : y + h;
    g.fillRect(x - lw / 2, ty, tw, fs + 6);
    g.fillStyle = "#000";
    g.fillText(text, x + 4, ty + 3);
  });
  c.toBlob((blob) => save(`${stem(photo.file.name)}-annotated.png`, blob), "image/png");
}

function setupDrop(zone, input, handle) {
  input.addEventListener("change", () => {
    handle(input.files[0]);
    input.value = ""; // the same file again is a new upload
  });
  ["dragenter", "dragover"].forEach((t) => zone.addEventListener(t, (e) => {
    e.preventDefault();
    zone.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((t) => zone.addEventListener(t, (e) => {
    e.preventDefault();
    zone.classList.remove("over");
  }));
  zone.addEventListener("drop", (e) => handle(e.dataTransfer.files[0]));
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      input.click();
    }
  });
}

// ---- video ----
const vid = { file: null, result: null, ctrl: null };

function clearVideo() {
  $("video-result").hidden = true;
  $("video-empty").hidden = false;
  const player = $("video-player");
  player.pause();
  player.removeAttribute("src");
  player.load();
  $("video-charts").innerHTML = "";
  $("video-tracks").querySelector("tbody").innerHTML = "";
  vid.result = null;
}

function videoProgress(ev) {
  const bar = $("video-progress");
  if (ev.frames) {
    bar.value = ev.progress;
    setStatus($("video-status"), `Analysing ${vid.file.name}: frame ${ev.frame} of ${ev.frames} (${Math.round(100 * ev.progress)}%)…`);
  } else if (ev.frame) {
    bar.removeAttribute("value");
    setStatus($("video-status"), `Analysing ${vid.file.name}: frame ${ev.frame}…`);
  }
}

async function uploadVideo(file) {
  if (!file) return;
  if (vid.ctrl) vid.ctrl.abort();
  const ctrl = (vid.ctrl = new AbortController());
  clearVideo();
  vid.file = file;
  $("video-empty").hidden = true;
  const bar = $("video-progress");
  bar.hidden = false;
  bar.removeAttribute("value"); // indeterminate while the upload travels
  $("video-cancel").hidden = false;
  const status = $("video-status");
  setStatus(status, `Uploading ${file.name}…`);
  const form = new FormData();
  form.append("file", file, file.name);
  let final = null;
  try {
    const resp = await fetch("/api/video", { method: "POST", body: form, signal: ctrl.signal });
    if (!resp.ok) throw new Error(await errorText(resp));
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const ev = JSON.parse(line);
        if (ev.stage === "progress") videoProgress(ev);
        else final = ev;
      }
    }
    if (!final) throw new Error("the server stopped before the result");
    if (final.stage === "error") throw new Error(final.detail);
    showVideo(final.result);
  } catch (e) {
    clearVideo();
    if (ctrl.signal.aborted) setStatus(status, `${file.name}: cancelled.`);
    else setStatus(status, `${file.name}: ${e.message === "Failed to fetch" ? "the server did not answer" : e.message}`, true);
  } finally {
    if (vid.ctrl === ctrl) {
      vid.ctrl = null;
      bar.hidden = true;
      $("video-cancel").hidden = true;
    }
  }
}

function showVideo(r) {
  vid.result = r;
  $("video-empty").hidden = true;
  $("video-result").hidden = false;
  const player = $("video-player");
  player.src = r.video_url;
  const link = $("video-file");
  link.href = r.video_url;
  link.download = `${stem(vid.file.name)}-annotated.webm`;
  const tbody = $("video-tracks").querySelector("tbody");
  tbody.innerHTML = "";
  if (!r.tracks.length) {
    const td = el("td", { colspan: 4 }, "No face found in this video.");
    tbody.appendChild(el("tr")).appendChild(td);
  }
  for (const t of r.tracks) {
    const tr = el("tr", { "data-key": t.track });
    const num = el("span", { class: "num", style: `--c:${color(t.label)};--t:${ink(t.label)}` }, String(t.track));
    tr.appendChild(el("td")).appendChild(num);
    tr.appendChild(el("td", {}, `${t.first.toFixed(1)}–${t.last.toFixed(1)} s (${t.frames} frames)`));
    tr.appendChild(el("td", {}, `${t.label} ${pct(t.score)}`));
    const stack = el("div", { class: "stack", title: CLASSES.map((c) => `${c} ${pct(t.probs[c] ?? 0)}`).join(", ") });
    for (const c of CLASSES) stack.appendChild(el("span", { style: `width:${pct(t.probs[c] ?? 0)};background:${color(c)}` }));
    tr.appendChild(el("td")).appendChild(stack);
    tbody.appendChild(tr);
  }
  const charts = $("video-charts");
  charts.innerHTML = "";
  for (const t of r.tracks) charts.appendChild(timelineChart(t, r));
  const n = r.tracks.length;
  setStatus($("video-status"), `${vid.file.name}: ${n ? `${n} face${n > 1 ? "s" : ""} followed` : "no face found"} in ` +
    `${r.duration.toFixed(1)} s of video (${r.frames} frames, every ${r.every === 1 ? "" : r.every + "th "}frame ` +
    `analysed, ${(r.ms / 1000).toFixed(1)} s on the server).`);
}

// One face's probabilities over time: a line per class, plain SVG; a cursor follows the player.
function timelineChart(track, r) {
  const W = 480, H = 150, L = 28, R = 8, T = 8, B = 20;
  const pts = r.timeline.flatMap((fr) => fr.faces.filter((f) => f.track === track.track).map((f) => [fr.time, f.probs]));
  const t1 = Math.max(r.duration, 1e-3);
  const X = (t) => L + ((W - L - R) * t) / t1;
  const Y = (p) => T + (H - T - B) * (1 - p);
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `face ${track.track}: expression probabilities over time`);
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
    return e;
  };
  for (const p of [0, 0.5, 1]) {
    add("line", { x1: L, x2: W - R, y1: Y(p), y2: Y(p), stroke: "#e3e3e3" });
    add("text", { x: L - 4, y: Y(p) + 4, "text-anchor": "end", "font-size": 11, fill: "#666" }, p.toFixed(1));
  }
  add("text", { x: L, y: H - 5, "font-size": 11, fill: "#666" }, "0 s");
  add("text", { x: W - R, y: H - 5, "text-anchor": "end", "font-size": 11, fill: "#666" }, `${r.duration.toFixed(1)} s`);
  for (const c of CLASSES) {
    const d = pts.map(([t, probs]) => `${X(t).toFixed(1)},${Y(probs[c] ?? 0).toFixed(1)}`).join(" ");
    const line = add("polyline", { points: pts.length === 1 ? `${d} ${(X(pts[0][0]) + 3).toFixed(1)},${d.split(",")[1]}` : d,
      fill: "none", stroke: color(c), "stroke-width": c === track.label ? 2.5 : 1.5, "data-class": c });
    line.appendChild(document.createElementNS(NS, "title")).textContent = c;
  }
  const cursor = add("line", { x1: L, x2: L, y1: T, y2: H - B, stroke: "#333", "stroke-dasharray": "3 3", class: "cursor" });
  $("video-player").addEventListener("timeupdate", (e) => {
    const x = X(Math.min(e.target.currentTime, t1)).toFixed(1);
    cursor.setAttribute("x1", x);
    cursor.setAttribute("x2", x);
  });
  const box = el("div", { class: "chart", "data-key": track.track });
  const h3 = box.appendChild(el("h3"));
  h3.append(el("span", { class: "num", style: `--c:${color(track.label)};--t:${ink(track.label)}` }, String(track.track)),
    `Face ${track.track}: mostly ${track.label}`);
  box.appendChild(svg);
  const legend = box.appendChild(el("div", { class: "legend" }));
  for (const c of CLASSES) {
    const item = legend.appendChild(el("span"));
    item.append(el("i", { style: `--c:${color(c)}` }), c);
  }
  return box;
}

function videoCsv() {
  const r = vid.result;
  return toCsv(vid.file.name, r.timeline.map((fr) => ({ frame: fr.frame, time: fr.time, faces: fr.faces })));
}

// ---- live camera ----
const live = {
  stream: null, ws: null, running: false, paused: false, waiting: false, ping: null,
  canvas: document.createElement("canvas"), frames: 0, t0: 0, ms: [],
};

function sendFrame() {
  const video = $("live-video");
  if (!live.running || live.paused || live.waiting || !live.ws || live.ws.readyState !== WebSocket.OPEN || !video.videoWidth) return;
  const w = Math.min(640, video.videoWidth);
  const h = Math.round((video.videoHeight * w) / video.videoWidth);
  live.canvas.width = w;
  live.canvas.height = h;
  live.canvas.getContext("2d").drawImage(video, 0, 0, w, h);
  live.waiting = true;
  live.canvas.toBlob((blob) => {
    if (blob && live.running && live.ws && live.ws.readyState === WebSocket.OPEN) live.ws.send(blob);
    else live.waiting = false;
  }, "image/jpeg", 0.8);
}

function onLiveResult(event) {
  const r = JSON.parse(event.data);
  if (r.pong) return; // the answer to a paused page's keep-alive, not to a frame
  live.waiting = false;
  if (r.error) {
    setStatus($("live-status"), r.error, true);
    setTimeout(sendFrame, 200);
    return;
  }
  if (r.faces) {
    const stage = $("live-stage");
    if (stage.dataset.natW !== String(r.width)) fitStage(stage, r.width, r.height);
    drawBoxes(stage, r.faces, r.width, r.height);
    drawCards($("live-faces"), r.faces);
    live.frames += 1;
    live.ms.push(r.ms);
    const now = performance.now();
    if (now - live.t0 >= 1000) {
      const ms = live.ms.reduce((a, b) => a + b, 0) / live.ms.length;
      $("fps").textContent = `${((1000 * live.frames) / (now - live.t0)).toFixed(1)} fps`;
      $("server-ms").textContent = `${ms.toFixed(0)} ms per frame on the server`;
      live.frames = 0;
      live.ms = [];
      live.t0 = now;
    }
    if (!live.paused) setStatus($("live-status"), r.faces.length ? "" : "No face in view.");
  }
  sendFrame();
}

async function startLive() {
  const status = $("live-status");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus(status, "This browser gives no camera access here (the page needs localhost or https).", true);
    return;
  }
  $("live-start").disabled = true;
  setStatus(status, "Asking for the camera…");
  try {
    live.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (e) {
    $("live-start").disabled = false;
    setStatus(status, `No camera: ${e.message || e.name}`, true);
    return;
  }
  const video = $("live-video");
  video.srcObject = live.stream;
  $("live-empty").hidden = true;
  $("live-result").hidden = false;
  $("live-stop").disabled = false;
  video.addEventListener("loadedmetadata", () => fitStage($("live-stage"), video.videoWidth, video.videoHeight), { once: true });
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  live.ws = new WebSocket(`${proto}//${location.host}/api/live`);
  live.ws.onmessage = onLiveResult;
  live.ws.onerror = () => setStatus(status, "The live connection failed.", true);
  live.ws.onclose = (e) => { if (live.running) stopLive(`The live connection closed${e.reason ? `: ${e.reason}` : "."}`); };
  Object.assign(live, { running: true, paused: document.hidden, waiting: false, frames: 0, ms: [], t0: performance.now() });
  const begin = () => sendFrame();
  live.ws.onopen = () => (video.readyState >= 2 ? begin() : video.addEventListener("loadeddata", begin, { once: true }));
  setStatus(status, "Starting…");
}

function stopLive(message = "") {
  live.running = false;
  live.waiting = false;
  clearInterval(live.ping);
  if (live.ws) live.ws.close();
  if (live.stream) live.stream.getTracks().forEach((t) => t.stop());
  live.ws = null;
  live.stream = null;
  $("live-video").srcObject = null;
  $("live-stage").querySelectorAll(".face-box").forEach((b) => b.remove());
  drawCards($("live-faces"), []);
  $("live-result").hidden = true;
  $("live-empty").hidden = false;
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
  $("fps").textContent = "– fps";
  $("server-ms").textContent = "";
  setStatus($("live-status"), message, Boolean(message));
}

// A hidden tab sends no frames (and its camera picture stops); it resumes where it was when shown again.
function onVisibility() {
  if (!live.running) return;
  const video = $("live-video");
  live.paused = document.visibilityState === "hidden";
  clearInterval(live.ping);
  if (live.paused) {
    // the server closes a socket silent for 150 s: a paused page says it is still there
    live.ping = setInterval(() => { if (live.ws && live.ws.readyState === WebSocket.OPEN) live.ws.send("ping"); }, 20000);
    video.pause();
    $("fps").textContent = "paused";
    setStatus($("live-status"), "Paused while this tab is hidden.");
  } else {
    video.play().catch(() => {});
    Object.assign(live, { frames: 0, ms: [], t0: performance.now() });
    setStatus($("live-status"), "");
    sendFrame();
  }
}

// ---- page ----
async function loadHealth() {
  try {
    const resp = await fetch("/api/health");
    const h = await resp.json();
    CLASSES = h.classes;
    const acc = h.model_accuracy ? ` (${h.model_accuracy})` : "";
    $("model-info").textContent = `Model: ${h.model_title}${acc} · face detector: ${h.detector_title}`;
    $("photo-limits").textContent = `PNG, JPEG, GIF, BMP, TIFF, WebP or PGM/PPM, up to ${h.max_upload_mb} MB`;
    $("video-limits").textContent = `MP4, WebM, AVI, MOV or MKV, up to ${h.max_video_mb} MB and ${h.max_video_seconds} s`;
    if (!h.live) {
      $("live-start").disabled = true;
      setStatus($("live-status"), "The live camera needs the 'websockets' package on the server.", true);
    }
  } catch (e) {
    setStatus($("model-info"), "The server did not answer; reload the page when it runs.", true);
  }
}

function refit() {
  for (const id of ["upload-stage", "live-stage"]) {
    const s = $(id);
    if (s.dataset.natW && s.offsetParent) fitStage(s, Number(s.dataset.natW), Number(s.dataset.natH));
  }
}

setupDrop($("drop-zone"), $("file-input"), upload);
setupDrop($("video-drop"), $("video-input"), uploadVideo);
linkHover($("photo-section"));
linkHover($("live-section"));
$("upload-json").addEventListener("click", () => {
  const { preview, ...result } = photo.result; // the preview is the picture itself, not a result
  save(`${stem(photo.file.name)}.json`, jsonBlob({ source: photo.file.name, ...result }));
});
$("upload-csv").addEventListener("click", () => save(`${stem(photo.file.name)}.csv`, toCsv(photo.file.name, [{ faces: photo.result.faces }])));
$("upload-png").addEventListener("click", annotatedPng);
$("video-json").addEventListener("click", () => save(`${stem(vid.file.name)}.json`, jsonBlob({ source: vid.file.name, ...vid.result })));
$("video-csv").addEventListener("click", () => save(`${stem(vid.file.name)}.csv`, videoCsv()));
$("video-cancel").addEventListener("click", () => vid.ctrl && vid.ctrl.abort());
$("live-start").addEventListener("click", startLive);
$("live-stop").addEventListener("click", () => stopLive());
document.addEventListener("visibilitychange", onVisibility);
// Leaving the page cancels a video job: the aborted request closes the connection, and the server stops.
window.addEventListener("pagehide", () => vid.ctrl && vid.ctrl.abort());
window.addEventListener("resize", refit);
if (window.ResizeObserver) new ResizeObserver(refit).observe(document.querySelector("main"));
loadHealth();
