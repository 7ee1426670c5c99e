"""Batching in the engine and the store: no request's images depend on its neighbours, and claims group
compatible jobs. (Batching through a running server: tests/e2e/test_server_batching.py.)"""

from __future__ import annotations

import numpy as np
import torch
from helpers.jobs import make_job
from helpers.stores import sqlite_store

from glm_image_server.core.request import GenerationRequest
from glm_image_server.engine.prior import generate_prior_tokens

TARGET = "a shop sign that reads 'OPEN'"
NEIGHBOURS = [
    "x",
    "a much longer prompt about a cat on a mat under a hat that reads 'HELLO WORLD' in red letters",
    "poster",
    "一张海报\uff0c上面写着\u201c你好\u201d",
]


def test_ar_tokens_and_images_do_not_depend_on_the_batch(pipe, engine) -> None:
    def tokens(prompts: list[str], seeds: list[int]) -> torch.Tensor:
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        return generate_prior_tokens(pipe, prompts, 128, 96, None, generators).token_ids

    alone = tokens([TARGET], [7])[0]
    for position in (0, 2, 4):
        prompts, seeds = [*NEIGHBOURS], [100, 101, 102, 103]
        prompts.insert(position, TARGET)
        seeds.insert(position, 7)
        assert torch.equal(tokens(prompts, seeds)[position], alone)

    def request(prompt: str, seed: int, n: int = 1) -> GenerationRequest:
        return GenerationRequest(
            prompt=prompt, width=128, height=96, num_inference_steps=4, seed=seed, num_images=n
        )

    (single,) = engine.generate([request(TARGET, 7)])
    batch = [request(p, 100 + i, n=2 if i == 1 else 1) for i, p in enumerate(NEIGHBOURS)]
    batch.insert(2, request(TARGET, 7))
    together = engine.generate(batch)
    assert np.array_equal(np.asarray(together[2].images[0]), np.asarray(single.images[0]))
    # And each neighbour equals its own single run.
    (first,) = engine.generate([request(NEIGHBOURS[0], 100)])
    assert np.array_equal(np.asarray(together[0].images[0]), np.asarray(first.images[0]))


def test_steps_and_guidance_share_one_ar_batch_and_keep_their_bytes(engine, monkeypatch) -> None:
    """The AR stage depends on size and references only: requests that differ in steps and guidance run
    one batched AR call, and each one's image is the same as alone."""
    from glm_image_server.engine import engine as engine_module

    calls = []

    def counted(*args, **kwargs):
        calls.append(len(args[1]))  # rows in the AR call
        return generate_prior_tokens(*args, **kwargs)

    monkeypatch.setattr(engine_module, "generate_prior_tokens", counted)
    batch = [
        GenerationRequest(prompt=p, width=96, height=64, num_inference_steps=steps, guidance_scale=g, seed=i)
        for i, (p, steps, g) in enumerate((("a", 2, 1.5), ("b", 4, 3.0), ("c", 3, 5.0)))
    ]
    together = engine.generate(batch)
    assert calls == [3]  # one AR call for the three rows
    for request, result in zip(batch, together, strict=True):
        (alone,) = engine.generate([request])
        assert np.array_equal(np.asarray(result.images[0]), np.asarray(alone.images[0]))
    assert calls == [3, 1, 1, 1]


def test_claim_batch_groups_by_key_in_order(tmp_path) -> None:
    store = sqlite_store(tmp_path / "jobs.sqlite3")

    def claim() -> list[str]:
        return [j.id for j in store.claim_batch("w", 8, lease_s=60)]

    a, b, c, big, d = (
        make_job(width=w, num_images=n) for w, n in ((64, 1), (96, 1), (64, 1), (64, 7), (64, 1))
    )
    for each in (a, b, c, big, d):
        store.create(each)
    assert claim() == [a.id, c.id, d.id]  # big does not fit after three
    assert claim() == [b.id]  # the oldest queued heads the next batch
    assert claim() == [big.id]
    assert claim() == []
