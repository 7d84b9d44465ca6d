// Live: speech → PCM16 chunks over WS /v1/stream → JPEG frames on the canvas, with statistics.
// Typed text (spoken by /v1/speech) or an audio file is played and sent at real-time pace, as a
// microphone would; without either, the microphone itself is streamed.
const $ = (id) => document.getElementById(id);
const CHUNK_S = 0.1;      // audio sent per message, as it plays: the server takes audio at most
                          // stream.ahead_s (2 s) ahead of real time and closes 4413 far past it
const CLOSED = {          // close codes of /v1/stream without an error message (docs/serving.md)
  1001: "the server is shutting down",
  1006: "the server refused the connection (this page's origin or the API key) or it was lost",
  1008: "the server refused the stream (this page's origin or the API key)",
  1011: "the server failed",
  1013: "the server is busy or has too many streams open; try again shortly",
  4408: "it timed out (no audio for a while, or the longest session reached)",
  4413: "too much audio, or audio sent faster than it plays",
};
let live = null;          // {ws, ctx, media, node, source, timer, stats}

function setButtons(running) {
  $("live-start").disabled = running;
  $("live-stop").disabled = !running;
}

// deps: {speech, portraitId, startOptions, status, showError, file, useText}
export async function startLive(deps) {
  setButtons(true);
  try {
    deps.status("Preparing…");
    const pid = await deps.portraitId();
    const useFile = deps.useText || deps.file;
    const audio = useFile ? await deps.speech() : null;
    const ctx = useFile ? new AudioContext({sampleRate: 16000}) : new AudioContext();
    const buffer = audio ? await ctx.decodeAudioData(await audio.blob.arrayBuffer()) : null;
    const media = audio ? null : await navigator.mediaDevices.getUserMedia({audio: {channelCount: 1, echoCancellation: true}});
    const url = new URL("v1/stream", location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    const stats = {frames: 0, first: null, started: 0, sent: 0, recent: [], fps: 25, sampleRate: ctx.sampleRate};
    live = {ws, ctx, media, stats};
    resetStats();
    ws.onopen = () => ws.send(JSON.stringify({type: "start", portrait_id: pid, sample_rate: ctx.sampleRate,
                                              channels: 1, format: "pcm16", ...deps.startOptions()}));
    ws.onmessage = (event) => onMessage(event, deps, buffer);
    ws.onclose = (event) => {
      if (event.code !== 1000 && event.code !== 1005 && live && !live.failed) {
        deps.status(`The stream closed: ${event.reason || CLOSED[event.code] || `code ${event.code}`}`, true);
      }
      closeLive();
    };
  } catch (err) {
    deps.showError(err);
    closeLive();
  }
}

function onMessage(event, deps, buffer) {
  if (!live) return;
  if (typeof event.data !== "string") { drawFrame(event.data); return; }
  const msg = JSON.parse(event.data);
  if (msg.type === "ready") {
    live.stats.fps = msg.fps;
    const most = msg.limits ? `; at most ${Math.round(msg.limits.max_session_s / 60)} min` : "";
    deps.status(buffer ? `Live: streaming the speech (about ${msg.latency_s} s behind it).`
                       : `Live: talk now (about ${msg.latency_s} s behind you${most}).`);
    if (buffer) sendBuffer(buffer); else sendMicrophone();
  } else if (msg.type === "error") {
    live.failed = true;
    deps.showError({status: 1, code: msg.error.code, message: msg.error.message, field: msg.error.field});
  } else if (msg.type === "end") {
    deps.status(`Live stream ended: ${msg.frames} frames.`);
  }
}

function pcm16(samples) {
  const pcm = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) pcm[i] = Math.max(-1, Math.min(1, samples[i])) * 32767;
  return pcm.buffer;
}

// A decoded buffer: heard through the speakers and sent in CHUNK_S messages as it plays.
function sendBuffer(buffer) {
  const {ws, ctx, stats} = live;
  const samples = buffer.getChannelData(0);
  const source = ctx.createBufferSource();
  source.buffer = buffer;
  source.connect(ctx.destination);
  const t0 = ctx.currentTime;
  source.start(t0);
  stats.started = performance.now();
  const pump = () => {
    if (!live || ws.readyState !== WebSocket.OPEN) return;
    const due = Math.min(samples.length, Math.round((ctx.currentTime - t0 + CHUNK_S) * ctx.sampleRate));
    if (due > stats.sent) {
      ws.send(pcm16(samples.subarray(stats.sent, due)));
      stats.sent = due;
    }
    if (stats.sent >= samples.length) stopLive();  // all sent: the last frames follow
  };
  pump();
  live.timer = setInterval(pump, CHUNK_S * 500);
  Object.assign(live, {source});
}

function sendMicrophone() {
  const {ws, ctx, media, stats} = live;
  const source = ctx.createMediaStreamSource(media);
  const node = ctx.createScriptProcessor(4096, 1, 1);  // ~85 ms at 48 kHz
  stats.started = performance.now();
  node.onaudioprocess = (e) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    const input = e.inputBuffer.getChannelData(0);
    ws.send(pcm16(input));
    stats.sent += input.length;
  };
  source.connect(node);
  node.connect(ctx.destination);
  Object.assign(live, {source, node});
}

function drawFrame(data) {
  const stats = live.stats;
  const view = new DataView(data);
  const n = view.getUint32(0);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(data, 4, n)));
  const jpeg = new Blob([new Uint8Array(data, 4 + n)], {type: "image/jpeg"});
  createImageBitmap(jpeg).then((bitmap) => {
    const canvas = $("live");
    if (canvas.width !== bitmap.width) { canvas.width = bitmap.width; canvas.height = bitmap.height; }
    canvas.getContext("2d").drawImage(bitmap, 0, 0);
  });
  const now = performance.now();
  stats.frames += 1;
  if (stats.first === null) stats.first = (now - stats.started) / 1000;
  stats.recent.push(now);
  while (stats.recent.length && now - stats.recent[0] > 2000) stats.recent.shift();
  const window = (now - stats.recent[0]) / 1000;
  const fps = stats.recent.length > 1 && window > 0 ? (stats.recent.length - 1) / window : 0;
  const lag = stats.sent / stats.sampleRate - (header.index + 1) / stats.fps;
  $("live").dataset.frames = String(stats.frames);
  $("stat-first").textContent = `${stats.first.toFixed(2)} s`;
  $("stat-fps").textContent = fps.toFixed(1);
  $("stat-frames").textContent = String(stats.frames);
  $("stat-lag").textContent = `${Math.max(lag, 0).toFixed(2)} s`;
}

function resetStats() {
  for (const [id, text] of [["stat-first", "–"], ["stat-fps", "–"], ["stat-frames", "0"], ["stat-lag", "–"]]) {
    $(id).textContent = text;
  }
  $("live").dataset.frames = "0";
}

// The input ends (the Stop button, or all of a buffer sent): the server flushes the last frames
// and closes the stream, and closeLive cleans up.
export function stopLive() {
  if (!live) { setButtons(false); return; }
  const {ws, media, node, source, timer} = live;
  clearInterval(timer);
  if (node) { node.disconnect(); node.onaudioprocess = null; }
  if (source && source.buffer === undefined) source.disconnect();  // the microphone's source
  if (media) media.getTracks().forEach((t) => t.stop());
  if (!live.ended && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({type: "end"}));
  live.ended = true;
  $("live-stop").disabled = true;
}

function closeLive() {
  if (live) {
    const {ctx, source} = live;
    stopLive();
    if (source && source.buffer) { try { source.stop(); } catch (e) { /* already over */ } }
    live = null;
    setTimeout(() => ctx.close(), 200);
  }
  setButtons(false);
}
