// ferkit page: upload an image -> boxes, labels and probability bars; live camera -> frames over a WebSocket.
"use strict";

// Same order and colours as ferkit.labels.CLASSES / ferkit.inference.annotate.CLASS_COLORS.
const COLORS = {
  Angry: "rgb(230,57,70)", Disgust: "rgb(106,153,78)", Fear: "rgb(155,93,229)", Happy: "rgb(255,183,3)",
  Sad: "rgb(33,118,174)", Surprise: "rgb(247,127,0)", Neutral: "rgb(160,160,160)",
};
let CLASSES = Object.keys(COLORS);
const $ = (id) => document.getElementById(id);

function setStatus(el, text, isError = false) {
  el.textContent = text;
  el.classList.toggle("error", isError);
}

// Boxes are positioned in percent of the analysed image, so they follow the displayed size.
function drawBoxes(stage, faces, width, height) {
  const boxes = new Map([...stage.querySelectorAll(".face-box")].map((b) => [b.dataset.key, b]));
  faces.forEach((f, i) => {
    const key = String(f.track ?? i);
    let box = boxes.get(key);
    if (!box) {
      box = document.createElement("div");
      box.className = "face-box";
      box.dataset.key = key;
      const label = document.createElement("div");
      label.className = "face-label";
      box.appendChild(label);
      stage.appendChild(box);
    }
    boxes.delete(key);
    const [x, y, w, h] = f.box;
    box.style.left = (100 * x) / width + "%";
    box.style.top = (100 * y) / height + "%";
    box.style.width = (100 * w) / width + "%";
    box.style.height = (100 * h) / height + "%";
    box.style.setProperty("--c", COLORS[f.label] || "#fff");
    box.classList.toggle("below", y < 0.06 * height);
    box.firstChild.textContent = `${i + 1}: ${f.label} ${f.score.toFixed(2)}`;
  });
  boxes.forEach((b) => b.remove());
}

function drawCards(container, faces) {
  const cards = new Map([...container.querySelectorAll(".face-card")].map((c) => [c.dataset.key, c]));
  faces.forEach((f, i) => {
    const key = String(f.track ?? i);
    let card = cards.get(key);
    if (!card) {
      card = document.createElement("div");
      card.className = "face-card";
      card.dataset.key = key;
      card.innerHTML = "<h3></h3>" + CLASSES.map((c) =>
        `<div class="bar-row" data-class="${c}"><span>${c}</span><div class="bar" style="--c:${COLORS[c] || "#888"}">` +
        `<span></span></div><span class="v"></span></div>`).join("");
      container.appendChild(card);
    }
    cards.delete(key);
    card.style.order = i;
    card.querySelector("h3").textContent = `Face ${i + 1}: ${f.label} (${(100 * f.score).toFixed(0)}%)`;
    for (const c of CLASSES) {
      const row = card.querySelector(`.bar-row[data-class="${c}"]`);
      const p = f.probs[c] ?? 0;
      row.querySelector(".bar > span").style.width = (100 * p).toFixed(1) + "%";
      row.querySelector(".v").textContent = (100 * p).toFixed(1) + "%";
    }
  });
  cards.forEach((c) => c.remove());
}

async function errorText(resp) {
  try {
    const j = await resp.json();
    return j.detail || resp.statusText;
  } catch (e) {
    return resp.statusText || `HTTP ${resp.status}`;
  }
}

// ---- upload ----
async function upload(file) {
  const status = $("upload-status");
  if (!file) return;
  setStatus(status, `Analysing ${file.name}…`);
  const form = new FormData();
  form.append("file", file, file.name);
  let resp;
  try {
    resp = await fetch("/api/predict", { method: "POST", body: form });
  } catch (e) {
    setStatus(status, `The server did not answer: ${e}`, true);
    return;
  }
  const img = $("upload-image");
  const stage = $("upload-stage");
  if (!resp.ok) {
    stage.hidden = true;  // do not leave the previous image's results under this file's error
    drawCards($("upload-faces"), []);
    setStatus(status, `${file.name}: ${await errorText(resp)}`, true);
    return;
  }
  const r = await resp.json();
  if (img.src) URL.revokeObjectURL(img.src);
  stage.querySelectorAll(".face-box").forEach((b) => b.remove());
  img.onload = () => {
    stage.hidden = false;
    drawBoxes(stage, r.faces, r.width, r.height);
  };
  img.src = URL.createObjectURL(file);
  drawCards($("upload-faces"), r.faces);
  const n = r.faces.length;
  setStatus(status, n ? `${n} face${n > 1 ? "s" : ""} found in ${file.name} (${r.ms.toFixed(0)} ms on the server).`
    : `No face found in ${file.name}.`);
}

function setupUpload() {
  const zone = $("drop-zone");
  const input = $("file-input");
  input.addEventListener("change", () => upload(input.files[0]));
  ["dragenter", "dragover"].forEach((t) => zone.addEventListener(t, (e) => {
    e.preventDefault();
    zone.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((t) => zone.addEventListener(t, (e) => {
    e.preventDefault();
    zone.classList.remove("over");
  }));
  zone.addEventListener("drop", (e) => upload(e.dataTransfer.files[0]));
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") input.click();
  });
}

// ---- live camera ----
const live = { stream: null, ws: null, running: false, canvas: document.createElement("canvas"), frames: 0, t0: 0 };

function sendFrame() {
  const video = $("live-video");
  if (!live.running || !live.ws || live.ws.readyState !== WebSocket.OPEN || !video.videoWidth) return;
  const w = Math.min(640, video.videoWidth);
  const h = Math.round((video.videoHeight * w) / video.videoWidth);
  live.canvas.width = w;
  live.canvas.height = h;
  live.canvas.getContext("2d").drawImage(video, 0, 0, w, h);
  live.canvas.toBlob((blob) => {
    if (blob && live.running && live.ws.readyState === WebSocket.OPEN) live.ws.send(blob);
  }, "image/jpeg", 0.8);
}

function onLiveResult(event) {
  const r = JSON.parse(event.data);
  if (r.error) {
    setStatus($("live-status"), r.error, true);
    setTimeout(sendFrame, 200);
    return;
  }
  if (r.faces) {
    drawBoxes($("live-stage"), r.faces, r.width, r.height);
    drawCards($("live-faces"), r.faces);
    live.frames += 1;
    const now = performance.now();
    if (now - live.t0 >= 1000) {
      $("fps").textContent = `${((1000 * live.frames) / (now - live.t0)).toFixed(1)} fps · ${r.ms.toFixed(0)} ms on the server`;
      live.frames = 0;
      live.t0 = now;
    }
    setStatus($("live-status"), r.faces.length ? "" : "No face in view.");
  }
  sendFrame();
}

async function startLive() {
  const status = $("live-status");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus(status, "This browser gives no camera access here (the page needs localhost or https).", true);
    return;
  }
  try {
    live.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (e) {
    setStatus(status, `No camera: ${e.message || e.name}`, true);
    return;
  }
  const video = $("live-video");
  video.srcObject = live.stream;
  $("live-stage").hidden = false;
  $("live-start").disabled = true;
  $("live-stop").disabled = false;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  live.ws = new WebSocket(`${proto}//${location.host}/api/live`);
  live.ws.onmessage = onLiveResult;
  live.ws.onerror = () => setStatus(status, "The live connection failed.", true);
  live.ws.onclose = () => { if (live.running) stopLive("The live connection closed."); };
  live.running = true;
  live.frames = 0;
  live.t0 = performance.now();
  const begin = () => sendFrame();
  live.ws.onopen = () => (video.readyState >= 2 ? begin() : video.addEventListener("loadeddata", begin, { once: true }));
  setStatus(status, "Starting…");
}

function stopLive(message = "") {
  live.running = false;
  if (live.ws) live.ws.close();
  if (live.stream) live.stream.getTracks().forEach((t) => t.stop());
  live.ws = null;
  live.stream = null;
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
  $("fps").textContent = "– fps";
  setStatus($("live-status"), message, Boolean(message));
}

async function loadHealth() {
  try {
    const resp = await fetch("/api/health");
    const h = await resp.json();
    CLASSES = h.classes;
    $("model-info").textContent = `Model: ${h.model} · detector: ${h.detector} · upload limit ${h.max_upload_mb} MB`;
    if (!h.live) {
      $("live-start").disabled = true;
      setStatus($("live-status"), "The live camera needs the 'websockets' package on the server.", true);
    }
  } catch (e) {
    $("model-info").textContent = "The server did not answer.";
  }
}

setupUpload();
$("live-start").addEventListener("click", startLive);
$("live-stop").addEventListener("click", () => stopLive());
loadHealth();
