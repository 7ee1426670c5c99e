// @runware/sdk-js as a user runs it, pointed at our server by its `url` option (over the WebSocket):
// an inference with two results, an upload, and an edit that uses the upload as its reference (and the
// same edit without it, to tell whether the reference was used). Prints one JSON line per step.
// Environment: RUNWARE_URL (ws://host:port/v1), RUNWARE_KEY, REFERENCE (a PNG as a data URI).
import { Runware } from "@runware/sdk-js";

const MODEL = "runware:glm-image@0";

const print = (step, value) => console.log(JSON.stringify({ step, value }));
const small = { model: MODEL, width: 128, height: 128, steps: 10, outputFormat: "PNG" };

const runware = new Runware({
  apiKey: process.env.RUNWARE_KEY,
  url: process.env.RUNWARE_URL,
  timeoutDuration: 170_000, // the tiny model on a shared CPU: slower than the SDK's 60 s default
});
await runware.ensureConnection();

const two = await runware.imageInference({
  ...small,
  positivePrompt: "two posters that read 'JS'",
  numberResults: 2,
  includeCost: true,
});
print("inference", two);

const upload = await runware.imageUpload({ image: process.env.REFERENCE });
print("upload", upload);

const edit = { ...small, positivePrompt: "make it a poster", seed: 1234 };
print("edit", await runware.imageInference({ ...edit, referenceImages: [upload.imageUUID] }));
print("no-reference", await runware.imageInference(edit));

await runware.disconnect();
process.exit(0);
