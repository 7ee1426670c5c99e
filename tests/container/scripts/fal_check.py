"""fal-client in a process of its own, against the container (it reads FAL_RUN_HOST, FAL_QUEUE_RUN_HOST,
FAL_KEY and SSL_CERT_FILE when it is imported; the test sets them). Prints one JSON line.
  fal_check.py submit          submit a text-to-image job with the text check, wait, print its result
  fal_check.py result ID       the status and result of an earlier request (after a restart)"""

from __future__ import annotations

import json
import sys

import fal_client

APP = "fal-ai/glm-image"


def main() -> None:
    if sys.argv[1] == "submit":
        updates: list[str] = []
        handle = fal_client.submit(
            APP,
            arguments={
                "prompt": "a sign that reads 'OPEN'",
                "image_size": {"width": 96, "height": 64},
                "num_inference_steps": 10,
                "seed": 3,
                "enable_text_check": True,  # RapidOCR (onnxruntime, OpenCV) in the image reads it back
            },
        )
        for update in handle.iter_events(with_logs=True, interval=0.2):
            updates.append(type(update).__name__)
        print(json.dumps({"request_id": handle.request_id, "result": handle.get(), "updates": updates}))
    else:
        request_id = sys.argv[2]
        status = fal_client.status(APP, request_id)
        print(json.dumps({"status": type(status).__name__, "result": fal_client.result(APP, request_id)}))


if __name__ == "__main__":
    main()
