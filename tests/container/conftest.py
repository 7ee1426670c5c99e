"""scripts/test runs this layer in the background and ends it with SIGTERM when the run is cut short:
turned into KeyboardInterrupt, so that the fixtures still remove the containers and the volume."""

from __future__ import annotations

import signal


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _interrupt)
