// DisentTalk page: a face (example or upload, its face box from /v1/portraits), speech (typed text
// spoken by /v1/speech, an audio file or a recording) → POST /v1/generate → play and download;
// Live streams the same speech over WS /v1/stream (live.js).
import {startLive, stopLive} from "./live.js";

const $ = (id) => document.getElementById(id);
const state = {
  photo: null,        // {blob, name, face, summary}
  recorded: null,     // Blob from the microphone recorder
  secondsCost: 0.8,   // generation seconds per second of speech, learnt from each request
  last: null,         // {portraitId, audio, seconds}: what the downloads of the motion ask for
  videoUrl: null,
};

// -- small helpers ----------------------------------------------------------------------------
const headers = () => ($("api_key").value ? {"X-API-Key": $("api_key").value} : {});
function status(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}
const show = (id, on) => { $(id).hidden = !on; };

class ApiFailure extends Error {
  constructor(status, code, message, field) { super(message); Object.assign(this, {status, code, field}); }
}
async function failure(response) {
  try {
    const {error} = await response.json();
    return new ApiFailure(response.status, error.code, error.message, error.field);
  } catch (e) { return new ApiFailure(response.status, "http_error", response.statusText || "request failed"); }
}

// Where an error is shown: next to the input its `field` names, else in the status line.
const SLOTS = {image: "photo", face: "photo", portrait_id: "photo", text: "text", language: "text",
               voice: "text", audio: "audio"};
const OPTION_FIELDS = ["seed", "steps", "guidance", "lip_scale", "eye_scale", "global_scale", "crop_only"];
function clearErrors() {
  for (const slot of ["photo", "text", "audio", "options"]) show(`${slot}-error`, false);
  document.querySelectorAll("[aria-invalid=true]").forEach((el) => el.removeAttribute("aria-invalid"));
  status("");
}
function showError(err) {
  const field = err.field || "";
  const slot = SLOTS[field] || (OPTION_FIELDS.includes(field) ? "options" : null);
  const text = err.code && err.code !== "http_error" ? err.message : `${err.message}`;
  if (!slot) { status(err.status ? `${err.message} (${err.code})` : String(err.message || err), true); return; }
  if (slot === "options") $("options-error").closest("details").open = true;
  $(`${slot}-error`).textContent = text;
  show(`${slot}-error`, true);
  const input = $(slot === "options" ? field : slot);
  if (input) input.setAttribute("aria-invalid", "true");
  status("See the message above.", true);
}

// -- the model, the voices and the example photos ---------------------------------------------
async function loadModel() {
  try {
    const r = await fetch("v1/model", {headers: headers()});
    if (r.ok) { const m = await r.json(); $("model").textContent = `model ${m.name || m.uri} v${m.version || "?"}`; }
  } catch (e) { /* the badge is optional */ }
}

let languages = [];
async function loadVoices() {
  const r = await fetch("v1/voices");
  if (!r.ok) throw await failure(r);
  const body = await r.json();
  languages = body.languages;
  $("text").maxLength = body.max_text_chars;
  $("language").replaceChildren(...languages.map((l) => new Option(l.name, l.code)));
  fillLanguage();
}
function fillLanguage() {
  const lang = languages.find((l) => l.code === $("language").value);
  if (!lang) return;
  $("voice").replaceChildren(...lang.voices.map((v) => new Option(v.label, v.id, false, v.id === lang.default_voice)));
  $("sentences").replaceChildren(...lang.examples.map((sentence) => {
    const chip = document.createElement("button");
    Object.assign(chip, {type: "button", className: "chip", textContent: sentence, title: sentence});
    chip.addEventListener("click", () => { $("text").value = sentence; countText(); $("text").focus(); });
    return chip;
  }));
  if (!$("text").value) { $("text").placeholder = lang.examples[0] || ""; }
}
function countText() { $("text-count").textContent = `${$("text").value.length} / ${$("text").maxLength}`; }

async function loadExamples() {
  const r = await fetch("v1/examples");
  if (!r.ok) return;
  const {photos} = await r.json();
  $("examples").replaceChildren(...photos.map((p) => {
    const button = document.createElement("button");
    Object.assign(button, {type: "button", className: "example", title: `${p.label}: ${p.source}, ${p.licence}`});
    button.setAttribute("aria-pressed", "false");
    button.dataset.example = p.id;
    const img = new Image();
    Object.assign(img, {src: p.url, alt: "", width: 72, height: 72});
    button.append(img, document.createTextNode(p.label.split(",")[0]));
    button.addEventListener("click", () => chooseExample(p, button));
    return button;
  }));
  $("credits").textContent = photos.length ? `Example photos: ${photos.map((p) => `${p.label} (${p.source}, ${p.licence})`).join("; ")}.` : "";
}
async function chooseExample(example, button) {
  document.querySelectorAll(".example").forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
  $("photo").value = "";
  const r = await fetch(example.url);
  await setPhoto(await r.blob(), `${example.id}.jpg`);
}

// -- the photo, its faces and the one animated -------------------------------------------------
async function setPhoto(blob, name, face = null) {
  clearErrors();
  state.photo = null;
  const img = $("preview-img");
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
  show("preview", true);
  $("boxes").replaceChildren();
  $("preview-caption").textContent = "Finding the face…";
  const form = new FormData();
  form.append("image", blob, name);
  if (face !== null) form.append("face", String(face));
  try {
    const r = await fetch("v1/portraits", {method: "POST", body: form, headers: headers()});
    if (!r.ok) throw await failure(r);
    const summary = await r.json();
    state.photo = {blob, name, face, summary};
    drawFaces(summary);
    status("Now type what the face should say, then Generate.");
  } catch (err) {
    $("preview-caption").textContent = "";
    showError(err.field ? err : Object.assign(err, {field: "image"}));
  }
}

function drawFaces(summary) {
  const [w, h] = summary.image_size;
  const boxes = summary.faces.map((f, i) => {
    const [x, y, bw, bh] = f.box;
    const box = document.createElement("button");
    box.type = "button";
    box.className = `face-box${i === summary.face ? " chosen" : ""}${f.usable === false ? " unusable" : ""}`;
    Object.assign(box.style, {left: `${(100 * x) / w}%`, top: `${(100 * y) / h}%`,
                              width: `${(100 * bw) / w}%`, height: `${(100 * bh) / h}%`});
    box.setAttribute("aria-label", i === summary.face ? `Face ${i + 1}: animated`
      : f.usable === false ? `Face ${i + 1}: not usable (${f.problem || "unknown"})` : `Face ${i + 1}: animate this one`);
    box.disabled = i === summary.face || f.usable === false;
    box.addEventListener("click", () => setPhoto(state.photo.blob, state.photo.name, i));
    return box;
  });
  $("boxes").replaceChildren(...boxes);
  $("boxes").dataset.faces = String(summary.faces.length);
  const n = summary.faces.length;
  $("preview-caption").textContent = n > 1
    ? `${n} faces found; the green box is animated (choose another by its box).`
    : "Face found: the green box is what moves.";
}

$("photo").addEventListener("change", () => {
  const file = $("photo").files[0];
  document.querySelectorAll(".example").forEach((b) => b.setAttribute("aria-pressed", "false"));
  if (file) setPhoto(file, file.name);
});

// -- speech: typed text, a file or a recording -------------------------------------------------
const speechTab = () => ($("tab-text").getAttribute("aria-selected") === "true" ? "text" : "audio");
function selectTab(tab) {
  for (const name of ["text", "audio"]) {
    const on = name === tab;
    $(`tab-${name}`).setAttribute("aria-selected", String(on));
    $(`tab-${name}`).tabIndex = on ? 0 : -1;
    show(`panel-${name}`, on);
  }
}
for (const name of ["text", "audio"]) {
  $(`tab-${name}`).addEventListener("click", () => selectTab(name));
  $(`tab-${name}`).addEventListener("keydown", (e) => {
    if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
    const next = name === "text" ? "audio" : "text";
    selectTab(next);
    $(`tab-${next}`).focus();
  });
}

// The speech to animate: {blob, name, seconds} (seconds null when the browser cannot tell).
async function speech() {
  if (speechTab() === "text") {
    const r = await fetch("v1/speech", {
      method: "POST", headers: {...headers(), "Content-Type": "application/json"},
      body: JSON.stringify({text: $("text").value, language: $("language").value, voice: $("voice").value || null}),
    });
    if (!r.ok) throw await failure(r);
    return {blob: await r.blob(), name: "speech.wav", seconds: Number(r.headers.get("X-Seconds"))};
  }
  const file = $("audio").files[0] || state.recorded;
  if (!file) throw new ApiFailure(400, "missing_field", "Choose an audio file or record from the microphone.", "audio");
  return {blob: file, name: file.name || "recording.webm", seconds: await duration(file)};
}
function duration(blob) {
  return new Promise((resolve) => {
    const audio = new Audio();
    audio.preload = "metadata";
    audio.onloadedmetadata = () => resolve(Number.isFinite(audio.duration) ? audio.duration : null);
    audio.onerror = () => resolve(null);
    audio.src = URL.createObjectURL(blob);
  });
}

let recorder = null;
$("record").addEventListener("click", async () => {
  if (recorder) { recorder.stop(); return; }
  try {
    const media = await navigator.mediaDevices.getUserMedia({audio: true});
    const chunks = [];
    recorder = new MediaRecorder(media);
    recorder.ondataavailable = (e) => chunks.push(e.data);
    recorder.onstop = () => {
      state.recorded = new Blob(chunks, {type: recorder.mimeType});
      media.getTracks().forEach((t) => t.stop());
      recorder = null;
      $("record").textContent = "● Record from the microphone";
      $("record-state").textContent = `recorded ${(state.recorded.size / 1024).toFixed(0)} kB`;
    };
    recorder.start();
    $("record").textContent = "■ Stop recording";
    $("record-state").textContent = "recording…";
  } catch (e) { showError({field: "audio", message: `The microphone is not available (${e.message || e}).`}); }
});

// -- generating --------------------------------------------------------------------------------
function options(form) {
  for (const name of ["steps", "guidance", "seed"]) if ($(name).value !== "") form.append(name, $(name).value);
  for (const name of ["lip_scale", "eye_scale", "global_scale"]) form.append(name, $(name).value);
  form.append("crop_only", $("crop_only").checked ? "true" : "false");
}

function startOptions() {  // the stream's start message: the options of /v1/generate it takes
  const number = (id) => Number($(id).value);
  return {crop_only: true, seed: number("seed") || 0, lip_scale: number("lip_scale"),
          eye_scale: number("eye_scale"), global_scale: number("global_scale"),
          ...($("steps").value ? {steps: number("steps")} : {}),
          ...($("guidance").value ? {guidance: number("guidance")} : {}),
          ...($("api_key").value ? {api_key: $("api_key").value} : {})};
}

async function portraitId() {
  if (!state.photo) throw new ApiFailure(400, "missing_field", "Pick an example face or upload a photo first.", "image");
  return state.photo.summary.portrait_id;
}

async function post(portrait, audio, output) {
  const form = new FormData();
  form.append("portrait_id", portrait);
  form.append("audio", audio.blob, audio.name);
  form.append("output", output);
  options(form);
  const r = await fetch("v1/generate", {method: "POST", body: form, headers: headers()});
  if (r.status === 404 && state.photo) {  // the server forgot the portrait (restart, cache): send it again
    await setPhoto(state.photo.blob, state.photo.name, state.photo.face);
    if (state.photo) return post(state.photo.summary.portrait_id, audio, output);
  }
  if (!r.ok) throw await failure(r);
  return r;
}

function progress(seconds) {
  const expected = seconds ? 1 + state.secondsCost * seconds : null;
  const t0 = performance.now();
  show("empty", false);
  show("progress", true);
  const tick = () => {
    const elapsed = (performance.now() - t0) / 1000;
    $("progress-bar").value = expected ? Math.min(elapsed / expected, 0.97) : 0;
    if (!expected) $("progress-bar").removeAttribute("value");
    $("progress-text").textContent = expected
      ? `Making ${seconds.toFixed(1)} s of video: ${elapsed.toFixed(1)} s of about ${Math.ceil(expected)} s`
      : `Making the video: ${elapsed.toFixed(1)} s`;
  };
  tick();
  const timer = setInterval(tick, 100);
  return () => { clearInterval(timer); show("progress", false); return (performance.now() - t0) / 1000; };
}

$("inputs").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  $("generate").disabled = true;
  let done = null;
  try {
    const pid = await portraitId();
    status("Speaking the text…");
    const audio = await speech();
    status("Generating…");
    done = progress(audio.seconds);
    const r = await post(pid, audio, "mp4");
    const blob = await r.blob();
    const elapsed = done();
    done = null;
    const seconds = audio.seconds || Number(r.headers.get("X-Seconds")) || null;
    if (seconds) state.secondsCost = 0.5 * state.secondsCost + 0.5 * Math.max(elapsed - 1, 0.1) / seconds;
    state.last = {audio, portraitId: pid};
    showVideo(blob, r, elapsed, seconds);
  } catch (err) {
    if (done) done();
    showError(err);
    if (!state.videoUrl) show("empty", true);
  } finally { $("generate").disabled = false; }
});

function showVideo(blob, response, elapsed, seconds) {
  if (state.videoUrl) URL.revokeObjectURL(state.videoUrl);
  state.videoUrl = URL.createObjectURL(blob);
  const video = $("video");
  video.src = state.videoUrl;
  video.dataset.frames = response.headers.get("X-Frames");
  video.dataset.seconds = String(seconds || "");
  $("download-video").href = state.videoUrl;
  show("live-view", false);
  show("empty", false);
  show("output", true);
  const frames = response.headers.get("X-Frames"), fps = Number(response.headers.get("X-FPS"));
  $("result-info").textContent = `${frames} frames at ${fps} frames/s, made in ${elapsed.toFixed(1)} s.`;
  status(`Done: ${frames} frames in ${elapsed.toFixed(1)} s.`);
  video.play().catch(() => {});
  $("output").scrollIntoView({block: "nearest"});  // below the inputs on a phone
}

async function downloadMotion(kind) {
  if (!state.last) return;
  clearErrors();
  try {
    const r = await post(state.last.portraitId, state.last.audio, kind);
    const a = document.createElement("a");
    a.href = URL.createObjectURL(await r.blob());
    a.download = `disenttalk-motion.${kind}`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  } catch (err) { showError(err); }
}
$("download-json").addEventListener("click", () => downloadMotion("json"));
$("download-npz").addEventListener("click", () => downloadMotion("npz"));

// -- live --------------------------------------------------------------------------------------
$("live-start").addEventListener("click", async () => {
  clearErrors();
  show("empty", false);
  show("output", false);
  show("live-view", true);
  await startLive({useText: speechTab() === "text", file: $("audio").files[0] || state.recorded,
                   speech, portraitId, status, showError, startOptions});
});
$("live-stop").addEventListener("click", () => { status("Stopping: the last frames are on their way…"); stopLive(); });

// -- start ---------------------------------------------------------------------------------------
$("api_key").value = sessionStorage.getItem("disenttalk_api_key") || "";
$("api_key").addEventListener("change", () => sessionStorage.setItem("disenttalk_api_key", $("api_key").value));
$("language").addEventListener("change", fillLanguage);
$("text").addEventListener("input", countText);
status("Pick a face to start.");
loadModel();
loadExamples().catch(() => {});
loadVoices().then(countText).catch((err) => showError(err));
