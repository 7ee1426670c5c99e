"""Slow and greedy clients at the connection level, where uvicorn leaves them alone: a connection must
send a request's headers within `header_timeout_s` (else 408 and closed — the slowloris defence), and
one client address may hold at most `max_connections_per_client` connections (else 503 and closed).
Bodies have their own deadline in the gate (api/gate.py); idle keep-alive connections uvicorn's own."""

from __future__ import annotations

import asyncio
from collections import Counter

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..serving.admission import LimitsSettings

TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
BUSY = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def guarded_protocol(settings: LimitsSettings) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol with a header deadline and a per-address connection cap."""
    open_per_client: Counter[str] = Counter()

    class GuardedHttp(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        _counted: str | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = self.client[0] if self.client else "unknown"
            if open_per_client[address] >= settings.max_connections_per_client:
                transport.write(BUSY)
                transport.close()
                return
            open_per_client[address] += 1
            self._counted = address
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._timer = self.loop.call_later(settings.header_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _too_slow(self) -> None:
            if not self.transport.is_closing():
                self.transport.write(TIMEOUT)
                self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._timer is None:  # a keep-alive connection's next request
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._counted is not None:
                open_per_client[self._counted] -= 1
                if not open_per_client[self._counted]:
                    del open_per_client[self._counted]
                self._counted = None
            super().connection_lost(exc)

    return GuardedHttp
