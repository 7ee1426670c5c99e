"""Slow and greedy clients at the connection level, where uvicorn leaves them alone: a connection must
send a request's headers within `header_timeout_s` (else 408 and closed — the slowloris defence), one
client address may hold at most `max_connections_per_client` connections (else 503 and closed), and a
request's head is at most MAX_HEAD_BYTES with a request line of at most MAX_URL_BYTES (else 431 or 414,
in the dialect's format where the path is known, and closed) — checked before the parser buffers it, so
a connection pins at most that much until its headers are in. Bodies have their own size limit and
deadline in the gate (api/gate.py); idle keep-alive connections uvicorn's own."""

from __future__ import annotations

import asyncio
from collections import Counter
from http import HTTPStatus

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..serving.admission import LimitsSettings
from .dialect import dialect_of, discover
from .errors import error_response

MAX_HEAD_BYTES, MAX_URL_BYTES = 64 * 1024, 16 * 1024
LINGER_S = 2.0
TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
BUSY = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def guarded_protocol(settings: LimitsSettings) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol with a header deadline and a per-address connection cap."""
    open_per_client: Counter[str] = Counter()
    dialects = discover()

    class GuardedHttp(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        _counted: str | None = None
        _head: bytes | None = b""  # the request head received so far; None while its body comes
        _lingering = False

        def data_received(self, data: bytes) -> None:
            if self._lingering:
                return  # refused: what still comes is read and dropped until the close
            if self._head is not None:
                head = self._head + data
                if refusal := oversized(head):
                    self._refuse(*refusal)
                    return
                self._head = None if b"\r\n\r\n" in head else head
            super().data_received(data)

        def on_message_complete(self) -> None:
            self._head = b""  # what comes next is another request's head
            super().on_message_complete()

        def send_400_response(self, msg: str) -> None:  # the parser's own refusals, as JSON
            self._refuse(400, f"{msg} (not a valid HTTP/1.1 request)", "")

        def _refuse(self, status: int, message: str, path: str) -> None:
            self._disarm()
            response = error_response(dialect_of(dialects, path), status, message)
            headers = b"".join(name + b": " + value + b"\r\n" for name, value in response.raw_headers)
            line = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()
            self.transport.write(line + headers + b"connection: close\r\n\r\n" + response.body)
            # A lingering close: closing with the client's bytes unread would reset the connection and
            # could lose the answer on its way; so the rest is read and dropped for a moment first.
            self._lingering = True
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)

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


def oversized(head: bytes) -> tuple[int, str, str] | None:
    """(status, message, path) when a request head received so far is past the limits, else None."""
    line_end = head.find(b"\r\n")
    line = head[: line_end if line_end >= 0 else MAX_URL_BYTES + 1]
    path = line.split(b" ", 2)[1].decode("latin-1") if line.count(b" ") else ""
    if len(line) > MAX_URL_BYTES:
        return 414, f"the request line is over {MAX_URL_BYTES} bytes", path
    head_end = head.find(b"\r\n\r\n")
    if (head_end if head_end >= 0 else len(head)) > MAX_HEAD_BYTES:
        return 431, f"the request's headers are over {MAX_HEAD_BYTES} bytes in all", path
    return None
