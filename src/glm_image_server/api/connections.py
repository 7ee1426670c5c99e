"""Slow and greedy clients at the connection level, where uvicorn leaves them alone: headers within
`header_timeout_s` (else 408: the slowloris defence), at most `max_connections_per_client` per address
(else 503), and a head of at most MAX_HEAD_BYTES with a request line of at most MAX_URL_BYTES (else 431 or
414 in the dialect's format), counted before the parser buffers it; each refusal closes the connection.
Bodies have their limits in the gate (api/gate.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from http import HTTPStatus

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..serving.admission import LimitsSettings
from .dialect import dialect_of, discover, error_response

MAX_HEAD_BYTES, MAX_URL_BYTES = 64 * 1024, 16 * 1024
LINGER_S = 2.0
TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
BUSY = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def guarded_protocol(settings: LimitsSettings) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol with a header deadline, head and URL sizes and a per-address connection cap."""
    open_per_client: Counter[str] = Counter()
    dialects = discover()

    def release(address: str | None) -> None:
        if address is not None:
            open_per_client[address] -= 1
            if not open_per_client[address]:
                del open_per_client[address]

    class GuardedHttp(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        _counted: str | None = None
        _in_head = True  # the next bytes belong to a request's head (from its first byte to its blank line)
        _head_bytes = 0  # received of that head so far
        _start = b""  # the head's first bytes (its path names the dialect of a refusal)
        _tail = b""  # its last 3 bytes: the blank line may straddle two reads
        _refusal: tuple[int, str] | None = None
        _lingering = False

        def data_received(self, data: bytes) -> None:
            if self._lingering:
                return  # refused: what still comes is read and dropped until the close
            if self._in_head and (refusal := self._over(data)):
                self._refuse(*refusal)
                return
            super().data_received(data)

        def _over(self, data: bytes) -> tuple[int, str] | None:
            """Counts a head's bytes as they come, before the parser keeps them: past MAX_HEAD_BYTES
            unless its blank line came within them (a body, or the next request, may follow in one read);
            a 414 while its request line has not ended."""
            if not self._head_bytes:
                data = data.lstrip(b"\r\n")  # blank lines before a request line: skipped, not kept
            at, window = self._head_bytes - len(self._tail), self._tail + data
            self._head_bytes += len(data)
            self._start, self._tail = (self._start + data[:4096])[:4096], window[-3:]
            end = window.find(b"\r\n\r\n")
            if self._head_bytes <= MAX_HEAD_BYTES or (end != -1 and at + end + 4 <= MAX_HEAD_BYTES):
                return None
            if b"\r\n" not in self._start:
                return 414, f"the request line is over {MAX_URL_BYTES} bytes"
            return 431, f"the request's headers are over {MAX_HEAD_BYTES} bytes in all"

        def on_url(self, url: bytes) -> None:
            if len(self.url) + len(url) > MAX_URL_BYTES:
                self._refusal = (414, f"the request line is over {MAX_URL_BYTES} bytes")
                raise ValueError(self._refusal[1])  # the parser stops: send_400_response answers
            super().on_url(url)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._disarm()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_head, self._head_bytes, self._start, self._tail = True, 0, b"", b""
            super().on_message_complete()

        def send_400_response(self, msg: str) -> None:  # the parser's own refusals, as JSON
            self._refuse(*(self._refusal or (400, f"{msg} (not a valid HTTP/1.1 request)")))

        def _refuse(self, status: int, message: str) -> None:
            self._disarm()
            self._lingering = True
            if self.cycle is not None and not self.cycle.response_complete:
                self.keep_alive = False  # a pipelined request: closed once the one before is answered
                return
            path = self._start.split(b" ", 2)[1].decode("latin-1") if self._start.count(b" ") else ""
            response = error_response(dialect_of(dialects, path), status, message)
            headers = b"".join(name + b": " + value + b"\r\n" for name, value in response.raw_headers)
            line = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()
            self.transport.write(line + headers + b"connection: close\r\n\r\n" + response.body)
            # A lingering close: closing with the client's bytes unread would reset the connection and
            # could lose the answer on its way; so the rest is read and dropped for a moment first.
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

        def handle_websocket_upgrade(self) -> None:
            """The WebSocket protocol takes the connection over, and with it the address's slot."""
            counted, self._counted = self._counted, None
            super().handle_websocket_upgrade()
            websocket = self.transport.get_protocol()
            lost = websocket.connection_lost

            def connection_lost(exc: Exception | None) -> None:
                release(counted)
                lost(exc)

            websocket.connection_lost = connection_lost  # type: ignore[method-assign]

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

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            release(self._counted)
            self._counted = None
            super().connection_lost(exc)

    return GuardedHttp
