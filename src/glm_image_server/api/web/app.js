// The playground: a client of this server's public fal queue API (submit, status stream, result,
// cancel). Defaults and ranges come from /playground/config (the fal input schema); nothing here
// duplicates them. The gallery and the API key live in this browser's local storage.
"use strict";

const $ = (selector) => document.querySelector(selector);
const KEY_STORE = "glm-image.api-key";
const GALLERY_STORE = "glm-image.gallery";
const GALLERY_MAX = 60;

let config = null;
let fields = {};
let refs = []; // {name, dataUri}
let running = null; // {cancelUrl, started, timer, aborter}
let codeLang = "curl";

// --- talking to the server -------------------------------------------------------------------------

function authHeaders() {
  const key = localStorage.getItem(KEY_STORE);
  return key ? { Authorization: `Key ${key}` } : {};
}

async function call(method, url, body) {
  const headers = authHeaders();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  return { status: response.status, ok: response.ok, data };
}

// Reads a text/event-stream (fetch, so the API key goes in a header) and calls onEvent per `data:` event.
async function readEvents(url, onEvent, signal) {
  const response = await fetch(url, { headers: authHeaders(), signal });
  if (!response.ok) {
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    return { status: response.status, data };
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return { status: 200 };
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data) onEvent(JSON.parse(data));
    }
  }
}

// --- the form ----------------------------------------------------------------------------------------

function field(name) { return fields[name] || {}; }

function setRange(input, name) {
  const f = field(name);
  if (f.minimum !== undefined) input.min = f.minimum;
  if (f.maximum !== undefined) input.max = f.maximum;
  if (f.default !== undefined && f.default !== null) input.value = f.default;
}

function fillForm() {
  const size = $("#size");
  for (const [name, wh] of Object.entries(config.size_presets)) {
    size.add(new Option(`${name.replaceAll("_", " ")} (${wh.width}×${wh.height})`, name));
  }
  size.add(new Option("custom…", "custom"));
  size.value = field("image_size").default || Object.keys(config.size_presets)[0];
  for (const id of ["#width", "#height"]) {
    $(id).min = config.size.min; $(id).max = config.size.max; $(id).step = config.size.multiple;
  }
  $("#width").value = 1024; $("#height").value = 1024;
  setRange($("#steps"), "num_inference_steps");
  setRange($("#guidance"), "guidance_scale");
  setRange($("#num-images"), "num_images");
  const seed = field("seed").anyOf ? field("seed").anyOf.find((s) => s.type === "integer") : field("seed");
  if (seed) { $("#seed").min = seed.minimum ?? 0; $("#seed").max = seed.maximum ?? ""; }
  for (const format of field("output_format").enum || ["jpeg"]) $("#format").add(new Option(format, format));
  $("#format").value = field("output_format").default || "jpeg";
  $("#safety").checked = Boolean(field("enable_safety_checker").default);
  $("#expand").checked = false;
  if (!config.prompt_expansion) {
    $("#expand").disabled = true;
    $("#expand-reason").hidden = false;
    $("#expand-reason").textContent = "Prompt expansion is off: this server has no expansion endpoint configured.";
  }
  $("#max-refs").textContent = config.max_references;
  rollSeed();
}

function rollSeed() {
  $("#seed").value = Math.floor(Math.random() * 2 ** 32);
}

function mode() { return document.querySelector('input[name="mode"]:checked').value; }

function clearErrors() {
  document.querySelectorAll("[data-error]").forEach((el) => { el.textContent = ""; });
  document.querySelectorAll(".invalid").forEach((el) => el.classList.remove("invalid"));
  $("#err-general").textContent = "";
}

const FIELD_INPUTS = {
  prompt: ["#prompt"], image_size: ["#size", "#width", "#height"], num_inference_steps: ["#steps"],
  guidance_scale: ["#guidance"], num_images: ["#num-images"], seed: ["#seed"], image_urls: ["#ref-input"],
};

function showError(name, message) {
  const slot = document.querySelector(`[data-error="${name}"]`);
  if (!slot) { $("#err-general").textContent = message; return; }
  slot.textContent = message;
  for (const id of FIELD_INPUTS[name] || []) $(id).classList.add("invalid");
}

function checkNumber(name, input, label) {
  const f = field(name);
  const value = Number(input.value);
  if (input.value === "" || !Number.isFinite(value)) return `${label} must be a number`;
  if (f.type === "integer" && !Number.isInteger(value)) return `${label} must be a whole number`;
  if (f.minimum !== undefined && value < f.minimum) return `${label} must be at least ${f.minimum}`;
  if (f.maximum !== undefined && value > f.maximum) return `${label} must be at most ${f.maximum}`;
  return null;
}

function currentSize() {
  const preset = $("#size").value;
  if (preset !== "custom") return { preset, ...config.size_presets[preset] };
  return { width: Number($("#width").value), height: Number($("#height").value) };
}

// The request body from the form, or null after showing what is wrong next to each field.
function buildBody({ quiet = false } = {}) {
  if (!quiet) clearErrors();
  const errors = {};
  const body = { prompt: $("#prompt").value.trim() };
  if (!body.prompt) errors.prompt = "Write a prompt first.";
  const size = currentSize();
  const { multiple, min, max } = config.size;
  if (size.preset) body.image_size = size.preset;
  else {
    const bad = [size.width, size.height].some((s) => !Number.isInteger(s) || s % multiple || s < min || s > max);
    if (bad) errors.image_size = `Width and height must be multiples of ${multiple} from ${min} to ${max}; got ${$("#width").value}×${$("#height").value}.`;
    body.image_size = { width: size.width, height: size.height };
  }
  for (const [name, id, label] of [["num_inference_steps", "#steps", "Steps"], ["guidance_scale", "#guidance", "Guidance"], ["num_images", "#num-images", "Images"]]) {
    const problem = checkNumber(name, $(id), label);
    if (problem) errors[name] = problem; else body[name] = Number($(id).value);
  }
  if ($("#seed-random").checked && !quiet) rollSeed();
  const seed = Number($("#seed").value);
  if (!Number.isInteger(seed) || seed < 0) errors.seed = "The seed must be a whole number, 0 or more.";
  body.seed = seed;
  body.output_format = $("#format").value;
  body.enable_safety_checker = $("#safety").checked;
  if (config.prompt_expansion) body.enable_prompt_expansion = $("#expand").checked;
  if (mode() === "edit") {
    if (!refs.length) errors.image_urls = "Add at least one reference image for an edit.";
    body.image_urls = refs.map((r) => r.dataUri);
  }
  if (Object.keys(errors).length) {
    if (!quiet) for (const [name, message] of Object.entries(errors)) showError(name, message);
    return null;
  }
  return body;
}

// fal's error bodies in words, next to their fields: a 422 `detail` list, or a message.
function showServerError(data, status) {
  const detail = data && data.detail;
  if (Array.isArray(detail)) {
    for (const item of detail) {
      const name = Array.isArray(item.loc) ? item.loc[1] : null;
      showError(FIELD_INPUTS[name] ? name : "general", item.msg);
    }
  } else if (status === 401) {
    $("#key-form").hidden = false;
    $("#err-key").textContent = typeof detail === "string" ? detail : "This server needs an API key.";
    $("#api-key").focus();
  } else {
    $("#err-general").textContent = (data && (data.error || data.detail)) || `The server answered ${status}.`;
  }
}

// A finished job's error from its last status: cancelled, or fal's "field: message" text in words.
function showJobError(status) {
  if (status.error_type === "request_cancelled") { $("#run-status").textContent = "Cancelled"; return; }
  const match = /^([a-z_]+)[.\d]*: (.*)$/s.exec(status.error);
  if (match && FIELD_INPUTS[match[1]]) showError(match[1], match[2]);
  else $("#err-general").textContent = status.error;
}

// --- references ------------------------------------------------------------------------------------

function readAsDataUri(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

async function addReferences(files) {
  for (const file of files) {
    if (!file.type.startsWith("image/")) continue;
    if (refs.length >= config.max_references) {
      showError("image_urls", `At most ${config.max_references} reference images.`);
      break;
    }
    refs.push({ name: file.name || "pasted image", dataUri: await readAsDataUri(file) });
  }
  renderThumbs();
}

function renderThumbs() {
  const list = $("#thumbs");
  list.replaceChildren();
  refs.forEach((ref, i) => {
    const item = document.createElement("li");
    const img = document.createElement("img");
    img.src = ref.dataUri; img.alt = ref.name;
    const remove = document.createElement("button");
    remove.type = "button"; remove.textContent = "×"; remove.setAttribute("aria-label", `Remove ${ref.name}`);
    remove.addEventListener("click", () => { refs.splice(i, 1); renderThumbs(); });
    item.append(img, remove);
    list.append(item);
  });
}

function setMode(value) {
  document.querySelector(`input[name="mode"][value="${value}"]`).checked = true;
  $("#refs").hidden = value !== "edit";
}

// --- running ---------------------------------------------------------------------------------------

const STAGES = { ar: ["AR tokens", 0, 0.45], dit: ["DiT steps", 0.45, 0.95], vae: ["VAE images", 0.95, 1] };

function showStatus(status) {
  if (status.status === "IN_QUEUE") {
    $("#run-status").textContent = `In queue, position ${status.queue_position}`;
  } else if (status.status === "IN_PROGRESS") {
    $("#run-status").textContent = "Generating";
    const p = status.progress;
    if (p && STAGES[p.stage]) {
      const [label, from, to] = STAGES[p.stage];
      $("#run-stage").textContent = `${label} ${p.done}/${p.total}`;
      $("#run-bar").value = from + (to - from) * (p.total ? p.done / p.total : 0);
    }
    if (status.preview) {
      $("#preview").src = status.preview.url;
      $("#preview").hidden = false;
      $("#preview").dataset.step = status.preview.step;
    }
  } else if (status.status === "COMPLETED") {
    $("#run-bar").value = 1;
    $("#run-status").textContent = status.error ? "Finished with an error" : "Done";
  }
}

function startRun(cancelUrl) {
  const started = performance.now();
  running = {
    cancelUrl, started, aborter: new AbortController(),
    timer: setInterval(() => { $("#run-elapsed").textContent = `${((performance.now() - started) / 1000).toFixed(1)} s`; }, 100),
  };
  $("#run").hidden = false;
  $("#preview").hidden = true;
  $("#preview").removeAttribute("src");
  $("#run-bar").value = 0;
  $("#run-stage").textContent = "";
  $("#cancel").disabled = false;
  $("#generate").disabled = true;
}

function endRun() {
  if (!running) return;
  clearInterval(running.timer);
  running = null;
  $("#cancel").disabled = true;
  $("#generate").disabled = false;
}

async function generate(event) {
  event.preventDefault();
  if (running) return;
  const body = buildBody();
  if (!body) return;
  const endpoint = mode() === "edit" ? config.endpoints.image_to_image : config.endpoints.text_to_image;
  $("#run").hidden = false;
  $("#run-status").textContent = "Submitting…";
  let submitted;
  try {
    submitted = await call("POST", `/queue/${endpoint}`, body);
  } catch (err) {
    $("#err-general").textContent = `Could not reach the server: ${err.message}`;
    return;
  }
  if (!submitted.ok) {
    $("#run").hidden = true;
    showServerError(submitted.data, submitted.status);
    return;
  }
  const job = submitted.data;
  startRun(job.cancel_url);
  showStatus({ status: "IN_QUEUE", queue_position: job.queue_position });
  let last = null;
  try {
    const ended = await readEvents(`${job.status_url}/stream?previews=1`, (status) => { last = status; showStatus(status); }, running.aborter.signal);
    if (ended.status !== 200) showServerError(ended.data, ended.status);
    else if (last && last.error) showJobError(last);
    else {
      const result = await call("GET", job.response_url);
      if (result.ok) addToGallery(job.request_id, body, result.data, (performance.now() - running.started) / 1000);
      else showServerError(result.data, result.status);
    }
  } catch (err) {
    $("#err-general").textContent = `Lost the connection to the server: ${err.message}`;
  } finally {
    endRun();
  }
}

async function cancelRun() {
  if (!running) return;
  $("#cancel").disabled = true;
  $("#run-status").textContent = "Cancelling…";
  await call("PUT", running.cancelUrl);
}

// --- the gallery -----------------------------------------------------------------------------------

function gallery() {
  try { return JSON.parse(localStorage.getItem(GALLERY_STORE)) || []; } catch (_) { return []; }
}

function cost(result) {
  const pricing = config.pricing;
  if (pricing.mode === "megapixel") {
    const pixels = result.images.reduce((sum, im) => sum + im.width * im.height, 0);
    return (pixels / 1e6) * pricing.per_megapixel;
  }
  return (result.timings.inference || 0) * pricing.per_gpu_second;
}

function addToGallery(id, body, result, elapsed) {
  const settings = { ...body };
  delete settings.image_urls; // data URIs would fill the local storage
  const entries = result.images.map((image, i) => ({
    id: `${id}-${i}`, url: image.url, width: image.width, height: image.height, format: image.content_type,
    seed: result.seed + i, prompt: result.prompt, timings: result.timings, cost: cost(result) / result.images.length,
    elapsed, settings, mode: body.image_urls ? "edit" : "t2i", created: Date.now(),
  }));
  const all = [...entries.reverse(), ...gallery()].slice(0, GALLERY_MAX);
  localStorage.setItem(GALLERY_STORE, JSON.stringify(all));
  renderGallery();
}

function button(label, action) {
  const b = document.createElement("button");
  b.type = "button"; b.textContent = label;
  b.addEventListener("click", action);
  return b;
}

function renderGallery() {
  const list = $("#gallery");
  list.replaceChildren();
  for (const entry of gallery()) {
    const item = document.createElement("li");
    const img = document.createElement("img");
    img.src = entry.url; img.alt = entry.prompt; img.tabIndex = 0; img.loading = "lazy";
    const open = () => { $("#viewer-img").src = entry.url; $("#viewer-img").alt = entry.prompt; $("#viewer").showModal(); };
    img.addEventListener("click", open);
    img.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
    const prompt = document.createElement("p");
    prompt.className = "prompt"; prompt.textContent = entry.prompt;
    const meta = document.createElement("p");
    meta.className = "meta";
    const inference = entry.timings && entry.timings.inference !== undefined ? `${entry.timings.inference.toFixed(2)} s inference` : "";
    meta.textContent = `seed ${entry.seed} · ${entry.width}×${entry.height} · ${inference} · ${entry.elapsed.toFixed(1)} s total · $${entry.cost.toFixed(4)}`;
    const download = document.createElement("a");
    download.href = entry.url; download.download = `glm-image-${entry.seed}`; download.textContent = "Download";
    const tools = document.createElement("div");
    tools.className = "tools";
    tools.append(
      button("Open", open),
      download,
      button("Use as reference", () => useAsReference(entry)),
      button("Reuse settings", () => reuseSettings(entry)),
      button("Copy seed", () => copySeed(entry.seed)),
    );
    item.append(img, prompt, meta, tools);
    list.append(item);
  }
}

async function useAsReference(entry) {
  clearErrors();
  try {
    const response = await fetch(entry.url);
    if (!response.ok) throw new Error(`the image answered ${response.status} (it may have expired)`);
    setMode("edit");
    await addReferences([new File([await response.blob()], `seed-${entry.seed}`, { type: entry.format })]);
  } catch (err) {
    $("#err-general").textContent = `Could not use it as a reference: ${err.message}`;
  }
}

function reuseSettings(entry) {
  const s = entry.settings;
  $("#prompt").value = s.prompt;
  if (typeof s.image_size === "string") $("#size").value = s.image_size;
  else { $("#size").value = "custom"; $("#width").value = s.image_size.width; $("#height").value = s.image_size.height; }
  $("#custom-size").hidden = $("#size").value !== "custom";
  $("#steps").value = s.num_inference_steps;
  $("#guidance").value = s.guidance_scale;
  $("#num-images").value = s.num_images;
  $("#seed-random").checked = false; $("#seed").disabled = false; $("#seed").value = entry.seed;
  $("#format").value = s.output_format;
  $("#safety").checked = s.enable_safety_checker;
  setMode(entry.mode === "edit" ? "edit" : "t2i");
  $("#prompt").focus();
}

async function copySeed(seed) {
  try { await navigator.clipboard.writeText(String(seed)); } catch (_) { $("#seed").value = seed; }
}

// --- the code panel --------------------------------------------------------------------------------

function snippet(lang, body, endpoint) {
  const origin = location.origin;
  const host = location.host;
  const shown = { ...body };
  if (shown.image_urls) shown.image_urls = shown.image_urls.map((_, i) => `https://example.com/reference-${i}.png`);
  const json = JSON.stringify(shown, null, 2);
  const size = typeof body.image_size === "string" ? config.size_presets[body.image_size] : body.image_size;
  if (lang === "curl") {
    return `curl -s -X POST ${origin}/queue/${endpoint} \\\n  -H "Authorization: Key $FAL_KEY" \\\n  -H "Content-Type: application/json" \\\n  -d '${json.replaceAll("'", "'\\''")}'\n# then GET the status_url (or status_url/stream) and the response_url it returns`;
  }
  if (lang === "python") {
    const scheme = location.protocol === "https:" ? "" : "# fal_client speaks https: serve with --ssl-certfile/--ssl-keyfile\n";
    return `${scheme}import os\nos.environ["FAL_RUN_HOST"] = "${host}"\nos.environ["FAL_QUEUE_RUN_HOST"] = "${host}/queue"\nos.environ["FAL_KEY"] = "your-api-key"\nimport fal_client\n\nresult = fal_client.subscribe("${endpoint}", arguments=${json.replaceAll("true", "True").replaceAll("false", "False")}, with_logs=True)\nprint(result["images"][0]["url"])`;
  }
  if (lang === "js") {
    return `import { fal } from "@fal-ai/client";\n\n// requests go to this server through a proxy URL\nfal.config({ credentials: "your-api-key", proxyUrl: "${origin}" });\nconst result = await fal.subscribe("${endpoint}", { input: ${json.replaceAll("\n", "\n  ")}, logs: true });\nconsole.log(result.data.images[0].url);`;
  }
  const extra = `extra_body={"seed": ${body.seed}, "num_inference_steps": ${body.num_inference_steps}, "guidance_scale": ${body.guidance_scale}}`;
  const common = `prompt=${JSON.stringify(body.prompt)},\n    size="${size.width}x${size.height}",\n    n=${body.num_images},\n    output_format="${body.output_format}",\n    ${extra},`;
  const call = body.image_urls
    ? `client.images.edit(\n    image=[open("reference-0.png", "rb")],\n    ${common}\n)`
    : `client.images.generate(\n    model="glm-image",\n    ${common}\n)`;
  return `from openai import OpenAI\n\nclient = OpenAI(base_url="${origin}/v1", api_key="your-api-key")\nresult = ${call}\n# result.data[0].b64_json holds the image`;
}

function renderCode() {
  if ($("#code").hidden) return;
  const body = buildBody({ quiet: true });
  const endpoint = mode() === "edit" ? config.endpoints.image_to_image : config.endpoints.text_to_image;
  $("#code-text").textContent = body ? snippet(codeLang, body, endpoint) : "Fill in the form (a prompt at least) to see the request.";
  document.querySelectorAll(".code-tabs button").forEach((b) => b.setAttribute("aria-selected", String(b.dataset.lang === codeLang)));
}

// --- the ops view ----------------------------------------------------------------------------------

function cells(row, values) {
  for (const value of values) {
    const cell = document.createElement("td");
    cell.textContent = value;
    row.append(cell);
  }
}

function seconds(value) { return value === null || value === undefined ? "–" : `${value.toFixed(2)} s`; }

async function refreshOps() {
  if ($("#view-ops").hidden) return;
  const ops = await call("GET", "/ops");
  if (!ops.ok) {
    $("#ops-error").textContent = ops.status === 401 ? "The ops view needs the API key (top right)." : `The server answered ${ops.status}.`;
    if (ops.status === 401) $("#key-form").hidden = false;
    return;
  }
  $("#ops-error").textContent = "";
  $("#ops-queue").textContent = ops.data.queue_depth;
  $("#ops-ready").textContent = ops.data.ready ? "ready" : "not ready (no worker with its model loaded)";
  const workers = $("#ops-workers");
  workers.replaceChildren();
  for (const w of ops.data.workers) {
    const row = document.createElement("tr");
    cells(row, [w.id, w.device, w.state, w.jobs.length, w.restarts]);
    workers.append(row);
  }
  const jobs = $("#ops-jobs");
  jobs.replaceChildren();
  for (const j of ops.data.jobs) {
    const row = document.createElement("tr");
    const queued = j.started_at ? j.started_at - j.created_at : null;
    const total = j.finished_at ? j.finished_at - j.created_at : null;
    cells(row, [j.id.slice(0, 8), j.app, j.status, j.size, seconds(queued), seconds(j.timings && j.timings.inference), seconds(total)]);
    row.title = j.error || "";
    jobs.append(row);
  }
}

function showTab(name) {
  for (const tab of ["play", "ops"]) {
    $(`#tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`#view-${tab}`).hidden = tab !== name;
  }
  refreshOps();
}

// --- wiring ----------------------------------------------------------------------------------------

function wire() {
  $("#form").addEventListener("submit", generate);
  $("#cancel").addEventListener("click", cancelRun);
  $("#dice").addEventListener("click", () => { rollSeed(); $("#seed-random").checked = false; $("#seed").disabled = false; });
  $("#seed-random").addEventListener("change", () => { $("#seed").disabled = $("#seed-random").checked; });
  $("#size").addEventListener("change", () => { $("#custom-size").hidden = $("#size").value !== "custom"; });
  document.querySelectorAll('input[name="mode"]').forEach((r) => r.addEventListener("change", () => setMode(mode())));
  $("#ref-input").addEventListener("change", async (e) => { await addReferences([...e.target.files]); e.target.value = ""; });
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); addReferences([...e.dataTransfer.files]); });
  document.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData ? e.clipboardData.files : [])].filter((f) => f.type.startsWith("image/"));
    if (files.length) { setMode("edit"); addReferences(files); }
  });
  $("#show-code").addEventListener("click", () => {
    $("#code").hidden = !$("#code").hidden;
    $("#show-code").setAttribute("aria-expanded", String(!$("#code").hidden));
    renderCode();
  });
  document.querySelectorAll(".code-tabs button").forEach((b) => b.addEventListener("click", () => { codeLang = b.dataset.lang; renderCode(); }));
  $("#form").addEventListener("input", renderCode);
  $("#form").addEventListener("change", renderCode);
  $("#tab-play").addEventListener("click", () => showTab("play"));
  $("#tab-ops").addEventListener("click", () => showTab("ops"));
  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("#api-key").value.trim();
    if (key) localStorage.setItem(KEY_STORE, key); else localStorage.removeItem(KEY_STORE);
    $("#err-key").textContent = key ? "Saved in this browser." : "Removed.";
    refreshOps();
  });
  setInterval(refreshOps, 2000);
}

async function init() {
  const response = await fetch("/playground/config");
  config = await response.json();
  fields = config.fields;
  fillForm();
  wire();
  if (config.api_key_required) {
    $("#key-form").hidden = false;
    $("#api-key").value = localStorage.getItem(KEY_STORE) || "";
  }
  renderGallery();
  document.body.dataset.ready = "1";
}

init();
