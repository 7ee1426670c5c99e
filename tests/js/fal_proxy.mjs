// fal's JavaScript client, unmodified, against glm-image-server through fal's proxy convention: the only
// setup is fal.config({ proxyUrl: { url, when: "always" }, credentials }). Run by
// tests/e2e/test_fal_js_client.py; each scenario prints JSON lines that the test checks.
//
// env: SERVER_URL (the server's base URL), FAL_CREDENTIALS (its key), SCENARIO, PNG_PATH (for "upload")
import { readFileSync } from "node:fs";
import { createFalClient } from "@fal-ai/client";

const T2I = "fal-ai/glm-image";
const I2I = "fal-ai/glm-image/image-to-image";
const SMALL = { image_size: { width: 96, height: 64 }, num_inference_steps: 10 };

const client = (credentials = process.env.FAL_CREDENTIALS) =>
  createFalClient({
    proxyUrl: { url: `${process.env.SERVER_URL}/api/fal/proxy`, when: "always" },
    credentials,
  });
const fal = client();
const print = (value) => console.log(JSON.stringify(value));

async function run() {
  const result = await fal.run(T2I, { input: { prompt: "a sign that reads 'OPEN'", seed: 7, ...SMALL } });
  print({ requestId: result.requestId, data: result.data });
}

async function subscribe(mode) {
  // 100 steps: long enough to be seen running, with several log lines arriving while it runs.
  const updates = [];
  const result = await fal.subscribe(T2I, {
    input: { prompt: `logs by ${mode}`, ...SMALL, num_inference_steps: 100 },
    logs: true,
    mode,
    pollInterval: 100,
    onQueueUpdate: (update) => updates.push(structuredClone(update)),
  });
  const everything = await fal.queue.status(T2I, { requestId: result.requestId, logs: true });
  print({
    mode,
    statuses: updates.map((update) => update.status),
    logs: updates.at(-1).logs,
    server_logs: everything.logs,
    images: result.data.images.length,
  });
}

async function queue() {
  const long = { prompt: "long", image_size: "square_hd", num_inference_steps: 100 };
  const running = await fal.queue.submit(T2I, { input: long });
  const queued = await fal.queue.submit(T2I, { input: { prompt: "cancelled while queued", ...SMALL } });
  // Behind `queued` at least, whether or not the worker has taken the long one yet.
  const behind = await fal.queue.submit(T2I, { input: { prompt: "behind it", ...SMALL } });
  const queuedStatus = await fal.queue.status(T2I, { requestId: behind.request_id });
  await fal.queue.cancel(T2I, { requestId: behind.request_id });
  await fal.queue.cancel(T2I, { requestId: queued.request_id });
  await fal.queue.cancel(T2I, { requestId: running.request_id });
  // An invalid input: fal's ValidationError, as from fal itself.
  const invalid = await fal.queue
    .submit(I2I, { input: { prompt: "no reference", ...SMALL, image_urls: [] } })
    .catch((error) => ({ error: error.status, detail: error.body.detail }));
  const ok = await fal.queue.submit(T2I, { input: { prompt: "kept", seed: 3, ...SMALL } });
  let status;
  for (const deadline = Date.now() + 120_000; Date.now() < deadline; ) {
    status = await fal.queue.status(T2I, { requestId: ok.request_id, logs: true });
    if (status.status === "COMPLETED") break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const result = await fal.queue.result(T2I, { requestId: ok.request_id });
  const cancelled = await fal.queue.status(T2I, { requestId: queued.request_id });
  print({ submitted: running, queued_status: queuedStatus, invalid, status, result, cancelled });
}

async function upload() {
  const png = new Blob([readFileSync(process.env.PNG_PATH)], { type: "image/png" });
  const url = await fal.storage.upload(png);
  const edit = await fal.subscribe(I2I, { input: { prompt: "edit the upload", image_urls: [url], ...SMALL } });
  // A Blob in the input is uploaded by the client itself, then sent as its URL.
  const automatic = await fal.run(I2I, { input: { prompt: "edit a blob", image_urls: [png], ...SMALL } });
  print({ uploaded: url, edit: edit.data, automatic: automatic.data });
}

async function chain() {
  const first = await fal.run(T2I, { input: { prompt: "first", seed: 1, ...SMALL } });
  const url = first.data.images[0].url;
  const edit = await fal.subscribe(I2I, { input: { prompt: "edit the result", image_urls: [url], ...SMALL } });
  print({ first: url, edit: edit.data });
}

async function wrongKey() {
  try {
    await client("not-the-key").run(T2I, { input: { prompt: "x", ...SMALL } });
    print({ refused: false });
  } catch (error) {
    print({ refused: true, status: error.status, body: error.body });
  }
}

const scenarios = {
  run,
  polling: () => subscribe("polling"),
  streaming: () => subscribe("streaming"),
  queue,
  upload,
  chain,
  "wrong-key": wrongKey,
};
await scenarios[process.env.SCENARIO]();
