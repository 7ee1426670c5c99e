"""A worker process's entry points: its executor (the engine, reference loading, the post stage's
checkers, prompt expansion and storage) built from the settings, and the worker that runs it — on a
thread of its own (a Ray Serve replica) or as `glm-image worker`, a process of its own.
"""

from __future__ import annotations

import os

from ..config import Settings
from ..media.fetch import ImageFetcher
from ..media.references import ReferenceLoader
from ..media.storage import open_storage
from ..post.safety import load_checker
from ..post.stage import PostContext
from ..post.text_check import load_text_checker
from ..store import open_store
from .executor import LocalExecutor
from .prompting import PromptExpander
from .worker import Worker, default_worker_id


def build_executor(settings: Settings, engine=None) -> LocalExecutor:
    """A worker's executor: the engine (loaded from `settings` unless given), reference loading, the
    safety and text checkers, prompt expansion and storage."""
    if engine is None:
        from ..engine.loader import load_engine

        engine = load_engine(settings)
    storage = open_storage(settings)
    references = ReferenceLoader(ImageFetcher(settings), storage)
    checker = load_checker(settings.safety_checker, settings.safety_threshold, settings.safety_labels)
    expander = None
    if settings.expansion_base_url:
        expander = PromptExpander(
            settings.expansion_base_url,
            settings.expansion_model,
            settings.expansion_api_key,
            settings.expansion_timeout_s,
        )
    post = PostContext(
        storage, checker, settings, load_text_checker(settings.text_checker, settings.text_check_threads)
    )
    return LocalExecutor(engine, references, post, expander)


def start_worker(settings: Settings) -> Worker:
    """A worker on the store in `settings`, loading its model and then running jobs on a thread of this
    process (a Ray Serve worker replica; `run_worker` for a process of its own)."""
    store = open_store(settings)
    worker = Worker(settings, store, settings.worker_id or default_worker_id(), settings.device)
    worker.start_heartbeat()
    executor = build_executor(settings)
    worker.device = str(executor.engine.device)
    worker.start_thread(executor)
    return worker


def run_worker(settings: Settings) -> None:
    """`glm-image worker`: one worker process on the store in `settings`, until SIGTERM/SIGINT."""
    import signal

    os.nice(settings.worker_nice)  # the API process (and its event loop) goes first on a shared CPU
    store = open_store(settings)
    worker = Worker(settings, store, settings.worker_id or default_worker_id(), settings.device)
    worker.start_heartbeat()
    executor = build_executor(settings)
    worker.device = str(executor.engine.device)

    def stop(_signum, _frame) -> None:
        worker.stop(timeout=0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.serve(executor)
