"""fal-client in a process of its own (it reads FAL_RUN_HOST & co. when it is imported, so a second
server needs a second process): `subscribe`, then an image-to-image edit whose `image_urls` is the first
result's URL. Prints one JSON line: the two results' image URLs and the status updates it saw."""

from __future__ import annotations

import json

import fal_client

SMALL = {"image_size": {"width": 96, "height": 64}, "num_inference_steps": 10}


def main() -> None:
    seen: list[str] = []
    first = fal_client.subscribe(
        "fal-ai/glm-image",
        arguments={"prompt": "a red square", **SMALL},
        with_logs=True,
        on_queue_update=lambda update: seen.append(type(update).__name__),
    )
    url = first["images"][0]["url"]
    edit = fal_client.subscribe(
        "fal-ai/glm-image/image-to-image",
        arguments={"prompt": "make it blue", "image_urls": [url], **SMALL},
    )
    print(json.dumps({"first": url, "edit": edit["images"][0]["url"], "updates": seen}))


if __name__ == "__main__":
    main()
