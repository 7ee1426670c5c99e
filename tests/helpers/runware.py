"""A Runware imageInference task for the tests of every layer: small, valid, with overrides."""

from __future__ import annotations

import uuid

MODEL = "runware:glm-image@0"


def task(**fields) -> dict:
    return {
        "taskType": "imageInference",
        "taskUUID": str(uuid.uuid4()),
        "model": MODEL,
        "positivePrompt": "a sign that reads 'OPEN'",
        "width": 128,
        "height": 160,
        "steps": 10,
        **fields,
    }
