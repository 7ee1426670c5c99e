"""A worker process's entry points, the composition root of the worker side: from one Settings, each part
gets its slice — the engine, reference loading, the post stage's checkers, prompt expansion and storage
(the executor), and the worker that runs it: on a thread of its own (a Ray Serve replica, or beside the
API in tests), as `glm-image worker`, a process of its own, or as one of `serve`'s supervised processes.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING

from ..config import Settings
from ..media.fetch import ImageFetcher
from ..media.references import ReferenceLoader
from ..media.storage import open_storage
from ..post.stage import load_post
from ..slices import EngineSettings, FetchSettings, PostSettings, PricingSettings, WorkerSettings
from ..store import open_store
from ..store.contract import JobStore
from .executor import LocalExecutor
from .plan import plan_for
from .plan_table import worker_lines
from .prompting import PromptExpander
from .supervisor import Supervisor, settings_env
from .worker import Worker

if TYPE_CHECKING:
    from ..engine.engine import Engine

log = logging.getLogger(__name__)


def build_executor(settings: Settings, engine: Engine | None = None) -> LocalExecutor:
    """A worker's executor: its engine (loaded unless given), references, post stage, expansion, storage."""
    if engine is None:
        from ..engine.loader import load_engine

        engine = load_engine(EngineSettings.from_settings(settings))
    storage = open_storage(settings.storage_url, settings.files_dir)
    references = ReferenceLoader(ImageFetcher(FetchSettings.from_settings(settings)), storage)
    post = load_post(PostSettings.from_settings(settings), PricingSettings.from_settings(settings), storage)
    expander = None
    if settings.expansion_base_url:
        expander = PromptExpander(
            settings.expansion_base_url,
            settings.expansion_model,
            settings.expansion_api_key,
            settings.expansion_timeout_s,
        )
    return LocalExecutor(engine, references, post, expander, keep_references=settings.role == "all")


def _loaded(settings: Settings, store: JobStore, engine: Engine | None) -> tuple[Worker, LocalExecutor]:
    """A worker on `store` and its executor; its heartbeat runs first, so /ready shows it loading."""
    worker = Worker(WorkerSettings.from_settings(settings), store)
    worker.start_heartbeat()
    executor = build_executor(settings, engine)
    worker.device = str(executor.engine.device)
    return worker, executor


def start_worker(settings: Settings, store: JobStore | None = None, engine: Engine | None = None) -> Worker:
    """A worker on `store` (default: the one in `settings`), loading its model (unless `engine` is given)
    and then running jobs on a thread of this process; `run_worker` for a process of its own."""
    worker, executor = _loaded(settings, store or open_store(settings), engine)
    worker.start_thread(executor)
    return worker


def run_worker(settings: Settings) -> None:
    """`glm-image worker`: one worker process on the store in `settings`, until SIGTERM/SIGINT."""
    os.nice(settings.worker_nice)  # the API process (and its event loop) goes first on a shared CPU
    worker, executor = _loaded(settings, open_store(settings), None)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: worker.stop(timeout=0))
    worker.serve(executor)


def supervise(settings: Settings, store: JobStore) -> Supervisor:
    """`serve`'s worker processes, one per entry of its plan (logged first), started: each reads
    `settings` from its environment, with its entry's role, GPU, quantization and offload."""
    plan = plan_for(settings)
    for line in worker_lines(plan):
        log.info("%s", line)
    if not plan.fits_every_gpu:
        log.warning("the worker plan is not expected to fit its GPUs (`glm-image plan` shows why)")
    supervisor = Supervisor(WorkerSettings.from_settings(settings), settings_env(settings), store, plan)
    supervisor.start()
    return supervisor
