// demo.py's page: plain JavaScript, no library. Every model call is a POST of JSON to the server, which checks the
// values and answers with PNG data URLs or with {"error": one line}.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, details: null, tab: "draw", mask: null, source: { source: "test", index: 0 },
                pictureLoaded: false, frames: [], playing: null, drawing: false };
const SETTINGS = ["class", "temperature", "guidance", "steps", "top_k", "seed", "n"];
const KEEP_RESULTS = 6;   // pictures kept on the Draw and Edit tabs, newest first

function showError(text) {
  const box = $("error");
  box.textContent = text ? String(text).split(/\s+/).join(" ") : "";
  box.title = box.textContent;
  box.hidden = !text;
}

async function call(path, body) {
  let response;
  try {
    response = await fetch(path, body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  } catch (e) {
    throw new Error("the server cannot be reached; is demo.py still running?");
  }
  let answer;
  try {
    answer = await response.json();
  } catch (e) {
    throw new Error(`the server answered ${response.status} without a message`);
  }
  if (!response.ok || answer.error) throw new Error(answer.error || `the server answered ${response.status}`);
  return answer;
}

// --- models ---------------------------------------------------------------------------------------------------------

async function loadModels() {
  const listing = await call("/api/models");
  const select = $("model");
  const previous = select.value;
  select.textContent = "";
  for (const m of listing.models) {
    const option = document.createElement("option");
    option.value = m.id;
    option.textContent = m.label + (m.training ? " (training now)" : "");
    select.appendChild(option);
  }
  const skipped = $("skipped");
  skipped.hidden = listing.skipped.length === 0;
  skipped.querySelector("summary").textContent = `${listing.skipped.length} .pt file(s) could not be read`;
  skipped.querySelector("ul").textContent = "";
  for (const reason of listing.skipped) {
    const item = document.createElement("li");
    item.textContent = reason;
    skipped.querySelector("ul").appendChild(item);
  }
  const none = listing.models.length === 0;
  $("empty").hidden = !none;
  $("main").hidden = none;
  if (none) {
    $("empty-text").textContent = `No trained model under ${listing.root}. Train a tokenizer, then a prior:`;
    $("empty-commands").textContent = listing.train.join("\n");
    $("model-info").textContent = "";
    return;
  }
  if (listing.models.some((m) => m.id === previous)) select.value = previous;
  await chooseModel(select.value);
}

async function chooseModel(id) {
  $("model-info").textContent = "loading…";
  const details = await call("/api/model", { model: id });
  state.model = id;
  state.details = details;
  const caps = details.capabilities;
  const can = [caps.kv_cache && "KV cache", caps.reverse_process && "reverse process",
               caps.edits.length && "edits: " + caps.edits.join(", ")].filter(Boolean).join("; ");
  $("model-info").textContent = `${details.kind} on ${details.dataset}, ${details.epoch} epochs, ` +
    `${details.grid.join("×")} tokens; ${can}; ${details.device}`;
  const cls = $("class");
  cls.textContent = "";
  for (const [value, text] of [["all", "every class"], ["none", "no class"],
                               ...details.classes.map((c) => [c, c])]) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = text;
    cls.appendChild(option);
  }
  $("steps-field").hidden = !caps.sampling_steps;
  setDefaults();
  setUpEditor();
  showTab(state.tab);
}

function setDefaults() {
  const d = state.details.defaults;
  for (const name of ["temperature", "guidance", "steps", "top_k", "seed", "n"]) {
    $(name).value = d[name] === null || d[name] === undefined ? "" : d[name];
  }
  $("class").value = "all";
}

function settings() {
  const values = { model: state.model };
  for (const name of SETTINGS) {
    const field = $(name);
    if (!field.disabled && !(name === "steps" && $("steps-field").hidden)) values[name] = field.value.trim();
  }
  return values;
}

// --- tabs -----------------------------------------------------------------------------------------------------------

function showTab(tab) {
  state.tab = tab;
  for (const button of document.querySelectorAll(".tabs button")) {
    button.classList.toggle("active", button.dataset.tab === tab);
  }
  for (const name of ["draw", "edit", "watch"]) $("tab-" + name).hidden = name !== tab;
  if (tab === "edit" && state.details && !state.pictureLoaded) {
    state.pictureLoaded = true;
    guarded(loadTest)();
  }
  const caps = state.details ? state.details.capabilities : {};
  const reverse = tab === "watch" && caps.reverse_process;
  $("temperature").disabled = reverse;
  $("top_k").disabled = reverse;
  $("n-label").textContent = tab === "edit" ? "Results" : "Samples per row";
  $("settings-hint").textContent = reverse ?
    "The reverse process is drawn at temperature 1 with all codes, as generator.py --show-process draws it." : "";
}

// --- pictures -------------------------------------------------------------------------------------------------------

function figure(picture, seconds) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.alt = picture.title;
  img.onload = () => {  // whole multiples of the pixels, as wide as the tab allows
    const room = Math.max(320, $("work").clientWidth - 40);
    const scale = Math.max(1, Math.min(6, Math.floor(room / img.naturalWidth), Math.floor(640 / img.naturalHeight)));
    img.style.width = img.naturalWidth * scale + "px";
  };
  img.src = picture.png;
  const caption = document.createElement("figcaption");
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = picture.title + (seconds === undefined ? "" : ` (${seconds.toFixed(2)} s)`);
  const link = document.createElement("a");
  link.href = picture.png;
  link.download = picture.file;
  link.textContent = "PNG";
  const code = document.createElement("code");
  code.textContent = picture.command;
  caption.append(title, link, code);
  if (picture.note) {
    const note = document.createElement("div");
    note.className = "note";
    note.textContent = picture.note;
    caption.appendChild(note);
  }
  fig.append(img, caption);
  return fig;
}

function addResult(container, answer) {
  for (const picture of answer.pictures.slice().reverse()) {
    container.prepend(figure(picture, answer.seconds));
  }
  while (container.children.length > KEEP_RESULTS) container.lastChild.remove();
}

// Run one request of a tab: its status line says what is running, how long the model took and the page waited.
async function run(tab, work) {
  const status = $(tab + "-status");
  const started = performance.now();
  status.textContent = "working…";
  showError("");
  try {
    const answer = await work();
    const waited = (performance.now() - started) / 1000;
    status.textContent = `${answer.summary} (${waited.toFixed(2)} s with the page)`;
    return answer;
  } catch (e) {
    status.textContent = "";
    showError(e.message);
    return null;
  }
}

// --- draw -----------------------------------------------------------------------------------------------------------

async function draw() {
  const answer = await run("draw", () => call("/api/draw", settings()));
  if (answer) addResult($("draw-out"), answer);
}

// --- edit -----------------------------------------------------------------------------------------------------------

function imageSize() {
  const [, height, width] = state.details.image_shape;
  return [height, width];
}

function setUpEditor() {
  const [height, width] = imageSize();
  for (const id of ["picture", "mask"]) {
    $(id).width = width;
    $(id).height = height;
  }
  const g = state.details.grid[0];
  $("grid-lines").style.backgroundImage =
    "linear-gradient(to right, rgba(80,140,255,.45) 1px, transparent 1px)," +
    "linear-gradient(to bottom, rgba(80,140,255,.45) 1px, transparent 1px)";
  $("grid-lines").style.backgroundSize = `${100 / g}% ${100 / g}%`;
  const choices = $("edit-choices");
  choices.textContent = "";
  const edits = ["inpaint", "outpaint", "complete"];
  const can = state.details.capabilities.edits;
  for (const kind of edits) {
    const label = document.createElement("label");
    const radio = document.createElement("input");
    radio.type = "radio";
    radio.name = "edit";
    radio.value = kind;
    radio.disabled = !can.includes(kind);
    label.title = radio.disabled ? `the ${state.details.kind} prior cannot ${kind}` : "";
    radio.addEventListener("change", () => setRegion(kind));
    label.append(radio, " " + kind + (radio.disabled ? " (not this prior)" : ""));
    choices.appendChild(label);
    choices.appendChild(document.createElement("br"));
  }
  $("edit").disabled = can.length === 0;
  const first = choices.querySelector("input:not([disabled])");
  state.mask = new Uint8Array(height * width);
  if (first) {
    first.checked = true;
    setRegion(first.value);
  }
  drawMask();
  state.pictureLoaded = false;  // the test split is read when the Edit tab is first opened
}

function editKind() {
  const checked = document.querySelector("input[name=edit]:checked");
  return checked ? checked.value : "";
}

function setRegion(kind) {
  const region = state.details.regions[kind];
  if (!region) return;
  state.mask = Uint8Array.from(region.flat());
  drawMask();
}

function drawMask() {
  const canvas = $("mask");
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(canvas.width, canvas.height);
  state.mask.forEach((painted, i) => {
    if (painted) image.data.set([230, 40, 40, 120], i * 4);
  });
  ctx.putImageData(image, 0, 0);
}

async function showPicture(png) {
  const img = new Image();
  await new Promise((resolve, reject) => { img.onload = resolve; img.onerror = reject; img.src = png; });
  const ctx = $("picture").getContext("2d");
  ctx.clearRect(0, 0, img.width, img.height);
  ctx.drawImage(img, 0, 0);
}

async function loadTest() {
  const index = $("index").value.trim();
  try {
    const answer = await call("/api/image", { model: state.model, source: "test", index });
    await showPicture(answer.png);
    state.source = { source: "test", index };
    $("picture-info").textContent = `a ${answer.class} (of ${answer.count} test images)`;
    showError("");
  } catch (e) {
    showError(e.message);
  }
}

function ownPicture(text) {
  state.source = { source: "picture" };
  $("picture-info").textContent = text;
}

function blank() {
  const canvas = $("picture");
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = state.details.image_shape[0] === 1 ? "#000000" : "#ffffff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  $("pen-colour").value = state.details.image_shape[0] === 1 ? "#ffffff" : "#000000";
  ownPicture("your drawing (class: the Class setting)");
}

async function upload(file) {
  if (!file) return;
  const text = await new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error("the file could not be read"));
    reader.readAsDataURL(file);
  });
  try {
    const answer = await call("/api/image", { model: state.model, source: "picture", image: text });
    await showPicture(answer.png);
    ownPicture(`${file.name} (class: the Class setting)`);
    showError("");
  } catch (e) {
    showError(e.message);
  }
  $("upload").value = "";
}

function paintAt(event) {
  const canvas = $("mask");
  const rect = canvas.getBoundingClientRect();
  const x = Math.floor((event.clientX - rect.left) / rect.width * canvas.width);
  const y = Math.floor((event.clientY - rect.top) / rect.height * canvas.height);
  const radius = Number($("brush").value) - 1;
  const tool = document.querySelector("input[name=tool]:checked").value;
  const ctx = $("picture").getContext("2d");
  ctx.fillStyle = $("pen-colour").value;
  for (let dy = -radius; dy <= radius; dy++) {
    for (let dx = -radius; dx <= radius; dx++) {
      const px = x + dx, py = y + dy;
      if (px < 0 || py < 0 || px >= canvas.width || py >= canvas.height || dx * dx + dy * dy > radius * radius + 1) {
        continue;
      }
      if (tool === "pen") ctx.fillRect(px, py, 1, 1);
      else state.mask[py * canvas.width + px] = tool === "region" ? 1 : 0;
    }
  }
  if (tool === "pen") {
    if (state.source.source !== "picture") ownPicture("your picture (class: the Class setting)");
  } else {
    drawMask();
  }
}

async function edit() {
  const values = { ...settings(), edit: editKind(), mask: Array.from(state.mask), ...state.source };
  if (state.source.source === "picture") values.image = $("picture").toDataURL("image/png");
  const answer = await run("edit", () => call("/api/edit", values));
  if (answer) addResult($("edit-out"), answer);
}

// --- watch ----------------------------------------------------------------------------------------------------------

async function watch() {
  stop();
  const answer = await run("watch", () => call("/api/watch", settings()));
  if (!answer) return;
  state.frames = answer.frames;
  $("frame").max = state.frames.length - 1;
  $("frame").value = state.frames.length - 1;
  $("watch-out").hidden = false;
  showFrame(state.frames.length - 1, answer.seconds);
}

function showFrame(i, seconds) {
  const frame = state.frames[i];
  $("frame-name").textContent = `${frame.title} (frame ${i + 1} of ${state.frames.length})`;
  const out = $("watch-picture");
  out.textContent = "";
  out.appendChild(figure(frame, seconds));
}

function stop() {
  if (state.playing) clearInterval(state.playing);
  state.playing = null;
  $("play").textContent = "Play";
}

function play() {
  if (state.playing) return stop();
  if (!state.frames.length) return;
  let i = Number($("frame").value) >= state.frames.length - 1 ? 0 : Number($("frame").value);
  $("play").textContent = "Pause";
  state.playing = setInterval(() => {
    $("frame").value = i;
    showFrame(i);
    if (++i >= state.frames.length) stop();
  }, 300);
}

// --- wiring ---------------------------------------------------------------------------------------------------------

function guarded(work) {
  return (...args) => Promise.resolve(work(...args)).catch((e) => showError(e.message));
}

window.addEventListener("DOMContentLoaded", () => {
  $("model").addEventListener("change", guarded((e) => chooseModel(e.target.value)));
  $("rescan").addEventListener("click", guarded(loadModels));
  $("defaults").addEventListener("click", () => setDefaults());
  for (const button of document.querySelectorAll(".tabs button")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  $("settings").addEventListener("submit", (e) => e.preventDefault());
  $("draw").addEventListener("click", guarded(draw));
  $("edit").addEventListener("click", guarded(edit));
  $("watch").addEventListener("click", guarded(watch));
  $("load-test").addEventListener("click", guarded(loadTest));
  $("blank").addEventListener("click", () => blank());
  $("upload").addEventListener("change", guarded((e) => upload(e.target.files[0])));
  $("frame").addEventListener("input", (e) => { stop(); showFrame(Number(e.target.value)); });
  $("play").addEventListener("click", () => play());
  const wrap = $("canvas-wrap");
  wrap.addEventListener("pointerdown", (e) => { state.drawing = true; wrap.setPointerCapture(e.pointerId); paintAt(e); });
  wrap.addEventListener("pointermove", (e) => { if (state.drawing) paintAt(e); });
  wrap.addEventListener("pointerup", () => { state.drawing = false; });
  wrap.addEventListener("pointercancel", () => { state.drawing = false; });
  guarded(loadModels)();
});
