"""What the prior (AR) stage hands the decode stage through the job store, so any decode worker on any
machine continues a job without running the AR model again: the expanded prompt, the prior tokens (and an
edit's reference tokens and grids) as int32 arrays, and the seconds so far. One small `.npz` blob per job;
integers only, so the decode worker reads exactly what the prior worker wrote and the images match a
one-process run."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Handoff:
    prompt: str
    token_ids: np.ndarray  # (images, tokens) on the DiT grid
    image_token_ids: np.ndarray | None = None  # edits: (images, tokens) of the references, concatenated
    image_grids: np.ndarray | None = None  # edits: (images, references, 3) their (t, h, w) grids
    timings: dict[str, float] = field(default_factory=dict)  # queue, fetch, expansion, ar
    handed_at: float = 0.0  # when the prior stage ended (the decode stage's queue time starts)

    def to_bytes(self) -> bytes:
        arrays = {"token_ids": _compact(self.token_ids)}
        if self.image_token_ids is not None and self.image_grids is not None:
            arrays["image_token_ids"] = _compact(self.image_token_ids)
            arrays["image_grids"] = _compact(self.image_grids)
        meta = {"prompt": self.prompt, "timings": self.timings, "handed_at": self.handed_at}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, meta=np.array(json.dumps(meta)), **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Handoff:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            refs, grids = stored.get("image_token_ids"), stored.get("image_grids")
            return cls(meta["prompt"], stored["token_ids"], refs, grids, meta["timings"], meta["handed_at"])


def _compact(array: np.ndarray) -> np.ndarray:
    """Token ids and grids fit 32 bits (the AR vocabulary is ~16k)."""
    if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max):
        raise ValueError("a handoff holds 32-bit integers only")
    return array.astype(np.int32)
