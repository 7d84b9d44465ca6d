// DisentTalk page: upload (or record) → POST /v1/generate → play; live: microphone → WS /v1/stream → frames.
"use strict";
const $ = (id) => document.getElementById(id);
const status = (text, error = false) => { $("status").textContent = text; $("status").classList.toggle("error", error); };
let recorded = null;   // Blob from the microphone recorder
let live = null;       // {ws, ctx, source, node, stream}

$("api_key").value = localStorage.getItem("disenttalk_api_key") || "";
$("api_key").addEventListener("change", () => localStorage.setItem("disenttalk_api_key", $("api_key").value));
const headers = () => ($("api_key").value ? {"X-API-Key": $("api_key").value} : {});

async function errorText(response) {
  try { const body = await response.json(); return `${response.status} ${body.error.code}: ${body.error.message}`; }
  catch (e) { return `${response.status} ${response.statusText}`; }
}

fetch("v1/model", {headers: headers()}).then(async (r) => {
  $("model").textContent = r.ok ? ((m) => `model: ${m.name || m.uri} v${m.version || "?"}`)(await r.json()) : "";
}).catch(() => {});

$("photo").addEventListener("change", () => {
  const file = $("photo").files[0];
  if (file) { $("photo-preview").src = URL.createObjectURL(file); status("Now an audio file, a recording, or go live."); }
});

function options(form) {
  for (const name of ["steps", "guidance", "seed"]) if ($(name).value !== "") form.append(name, $(name).value);
  for (const name of ["lip_scale", "eye_scale", "global_scale"]) form.append(name, $(name).value);
  form.append("crop_only", $("crop_only").checked ? "true" : "false");
}

$("generate").addEventListener("click", async () => {
  const photo = $("photo").files[0], audio = $("audio").files[0] || recorded;
  if (!photo || !audio) { status("Choose a photo and an audio file (or record one).", true); return; }
  const form = new FormData();
  form.append("image", photo);
  form.append("audio", audio, audio.name || "recording.webm");
  options(form);
  status("Generating…");
  $("generate").disabled = true;
  const t0 = performance.now();
  try {
    const r = await fetch("v1/generate", {method: "POST", body: form, headers: headers()});
    if (!r.ok) { status(await errorText(r), true); return; }
    const video = $("video");
    video.src = URL.createObjectURL(await r.blob());
    video.dataset.frames = r.headers.get("X-Frames");
    await video.play().catch(() => {});
    status(`Done: ${r.headers.get("X-Frames")} frames in ${((performance.now() - t0) / 1000).toFixed(1)} s.`);
  } catch (e) { status(`Request failed: ${e}`, true); }
  finally { $("generate").disabled = false; }
});

// -- recording a clip for /v1/generate ------------------------------------------------------
let recorder = null;
$("record").addEventListener("click", async () => {
  if (recorder) { recorder.stop(); return; }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({audio: true});
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (e) => chunks.push(e.data);
    recorder.onstop = () => {
      recorded = new Blob(chunks, {type: recorder.mimeType});
      stream.getTracks().forEach((t) => t.stop());
      recorder = null;
      $("record").textContent = "● Record from microphone";
      $("record-state").textContent = `recorded ${(recorded.size / 1024).toFixed(0)} kB`;
    };
    recorder.start();
    $("record").textContent = "■ Stop recording";
    $("record-state").textContent = "recording…";
  } catch (e) { status(`Microphone unavailable: ${e}`, true); }
});

// -- live mode: microphone → PCM16 chunks over the WebSocket → JPEG frames on a canvas ----------
async function portraitId() {
  const photo = $("photo").files[0];
  if (!photo) throw new Error("choose a photo first");
  const form = new FormData();
  form.append("image", photo);
  const r = await fetch("v1/portraits", {method: "POST", body: form, headers: headers()});
  if (!r.ok) throw new Error(await errorText(r));
  return (await r.json()).portrait_id;
}

function drawFrame(data, stats) {
  const view = new DataView(data);
  const n = view.getUint32(0);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(data, 4, n)));
  const jpeg = new Blob([new Uint8Array(data, 4 + n)], {type: "image/jpeg"});
  createImageBitmap(jpeg).then((bitmap) => {
    const canvas = $("live");
    if (canvas.width !== bitmap.width) { canvas.width = bitmap.width; canvas.height = bitmap.height; }
    canvas.getContext("2d").drawImage(bitmap, 0, 0);
  });
  stats.frames += 1;
  if (stats.first === null) stats.first = performance.now() - stats.started;
  const seconds = (performance.now() - stats.started) / 1000;
  $("live").dataset.frames = String(stats.frames);
  $("live-stats").textContent = `frame ${header.index} (t=${header.t.toFixed(2)} s) · ${stats.frames} frames · ` +
    `first after ${(stats.first / 1000).toFixed(2)} s · ${(stats.frames / seconds).toFixed(1)} frames/s`;
}

$("live-start").addEventListener("click", async () => {
  $("live-start").disabled = true;
  try {
    status("Preparing the portrait…");
    const pid = await portraitId();
    const media = await navigator.mediaDevices.getUserMedia({audio: {channelCount: 1, echoCancellation: true}});
    const ctx = new AudioContext();
    const url = new URL("v1/stream", location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    const stats = {frames: 0, first: null, started: 0};
    live = {ws, ctx, media};
    ws.onopen = () => ws.send(JSON.stringify({
      type: "start", portrait_id: pid, sample_rate: ctx.sampleRate, channels: 1, format: "pcm16",
      crop_only: true, seed: Number($("seed").value || 0), lip_scale: Number($("lip_scale").value),
      eye_scale: Number($("eye_scale").value), global_scale: Number($("global_scale").value),
      ...($("steps").value ? {steps: Number($("steps").value)} : {}),
      ...($("api_key").value ? {api_key: $("api_key").value} : {}),
    }));
    ws.onmessage = (event) => {
      if (typeof event.data !== "string") { drawFrame(event.data, stats); return; }
      const msg = JSON.parse(event.data);
      if (msg.type === "ready") {
        status(`Live: talk now (latency about ${msg.latency_s} s of audio + compute).`);
        startCapture(ctx, media, ws, stats);
        $("live-stop").disabled = false;
      } else if (msg.type === "error") {
        status(`${msg.error.code}: ${msg.error.message}`, true);
      } else if (msg.type === "end") {
        status(`Live stream ended: ${msg.frames} frames.`);
      }
    };
    ws.onclose = () => stopLive();
  } catch (e) {
    status(`Live mode failed: ${e.message || e}`, true);
    stopLive();
  }
});

function startCapture(ctx, media, ws, stats) {
  const source = ctx.createMediaStreamSource(media);
  const node = ctx.createScriptProcessor(4096, 1, 1);  // ~85 ms at 48 kHz
  stats.started = performance.now();
  node.onaudioprocess = (e) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    const input = e.inputBuffer.getChannelData(0);
    const pcm = new Int16Array(input.length);
    for (let i = 0; i < input.length; i++) pcm[i] = Math.max(-1, Math.min(1, input[i])) * 32767;
    ws.send(pcm.buffer);
  };
  source.connect(node);
  node.connect(ctx.destination);
  Object.assign(live, {source, node});
}

function stopLive() {
  if (!live) { $("live-start").disabled = false; return; }
  const {ws, ctx, media, node, source} = live;
  live = null;
  if (node) { node.disconnect(); source.disconnect(); }
  media && media.getTracks().forEach((t) => t.stop());
  ctx && ctx.close();
  if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({type: "end"}));
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
}
$("live-stop").addEventListener("click", () => { status("Stopping: the last frames are on their way…"); stopLive(); });
