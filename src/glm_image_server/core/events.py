"""Typed events an executor reports while it runs a batch: it never writes to the store or calls back into
the API, it says what happened, and the scheduler (which holds the claim) folds them into the job store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .handoff import Handoff
from .job import JobError, LogLevel
from .request import Stage
from .results import FinishedImage, JobResult, PreviewImage


class Cancelled(Exception):
    """Raised inside the engine when the cancel check says stop."""


@dataclass(frozen=True)
class JobLog:
    job_id: str
    message: str
    level: LogLevel = "INFO"


@dataclass(frozen=True)
class JobProgress:
    """Stage progress of the batch the job is in (AR tokens, DiT steps, VAE images)."""

    job_id: str
    stage: Stage
    done: int
    total: int


@dataclass(frozen=True)
class JobPreview:
    """A live preview of one of the job's images during the DiT stage (small, encoded)."""

    job_id: str
    preview: PreviewImage


@dataclass(frozen=True)
class JobImage:
    """One of the job's images is stored, before the job ends (its result will carry it too)."""

    job_id: str
    image: FinishedImage


@dataclass(frozen=True)
class JobHandedOff:
    """The job's prior stage is done: its handoff goes to the store, for a decode worker."""

    job_id: str
    handoff: Handoff


@dataclass(frozen=True)
class JobSucceeded:
    job_id: str
    result: JobResult


@dataclass(frozen=True)
class JobFailed:
    """The job ends without images: its input was bad, something broke, or it was cancelled."""

    job_id: str
    error: JobError


JobEvent = JobLog | JobProgress | JobPreview | JobImage | JobHandedOff | JobSucceeded | JobFailed
EventSink = Callable[[JobEvent], None]
