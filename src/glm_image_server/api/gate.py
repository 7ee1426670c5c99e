"""The first thing every HTTP request meets: the API key (before a byte of the body is read; a signed URL
stands for it), failed-key throttling per address, and the body, read within a size cap and a deadline so
a slow or huge body never reaches a route. Errors in the dialect's format."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..serving.admission import LimitsSettings, TokenBuckets
from .auth import key_ok, owner_of, presented_key
from .dialect import Dialect, dialect_of, error_response

log = logging.getLogger("glm_image_server")
BODY_METHODS = ("POST", "PUT", "PATCH")


class Gate:
    def __init__(
        self, app: ASGIApp, settings: LimitsSettings, auth_failures: TokenBuckets, dialects: Sequence[Dialect]
    ) -> None:
        self.app, self.settings, self.auth_failures, self.dialects = app, settings, auth_failures, dialects

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        dialect = dialect_of(self.dialects, scope["path"])
        client = (scope.get("client") or ("unknown", 0))[0]
        headers = dict(scope["headers"])
        if dialect is not None and scope["path"].startswith(dialect.signed_prefixes):
            valid, refusal = self._signed_url(scope, dialect, client)
        else:
            valid, refusal = self._api_key(headers, dialect, scope.setdefault("state", {}), client)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if scope["method"] in BODY_METHODS and dialect is not None:
            limit = self.settings.max_body_bytes if valid else self.settings.max_unauthenticated_body_bytes
            try:
                receive = await self._buffered(headers, receive, limit)
            except HTTPException as exc:
                await error_response(dialect, exc.status_code, exc.detail)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _api_key(
        self, headers: dict[bytes, bytes], dialect: Dialect | None, state: dict, client: str
    ) -> tuple[bool, JSONResponse | None]:
        """(whether the key is good, the response refusing the request or None); notes the owner."""
        schemes = dialect.key_schemes if dialect is not None else ()
        key = presented_key(headers.get(b"authorization", b"").decode("latin-1"), schemes)
        keys = self.settings.api_keys
        valid = key_ok(keys, key)
        state["owner"], state["authenticated"] = (owner_of(keys, key) if valid else None), valid
        if valid or dialect is None or (dialect.wrong_key is None and key is None):
            return valid, None
        # A wrong or missing key: 429 after too many from one address; None if it may come in the body.
        if wait := self.auth_failures.take(client):
            log.warning("too many failed API keys from %s", client)
            return False, error_response(dialect, 429, "too many requests with a wrong API key", wait)
        return False, None if dialect.wrong_key is None else error_response(dialect, 401, dialect.wrong_key)

    def _signed_url(self, scope: Scope, dialect: Dialect, client: str) -> tuple[bool, JSONResponse | None]:
        """A signed URL: its grant, noted with its owner, stands for the key."""
        grant, state = dialect.grant(scope), scope.setdefault("state", {})  # type: ignore[misc]
        state["owner"], state["authenticated"], state["grant"] = (grant and grant.owner), bool(grant), grant
        if grant is not None:
            return True, None
        noun = dialect.signed_noun
        if wait := self.auth_failures.take(client):
            return False, error_response(dialect, 429, f"too many requests with a bad {noun}", wait)
        return False, error_response(dialect, 403, f"this {noun} is not valid (altered, or expired)")

    async def _buffered(self, headers: dict[bytes, bytes], receive: Receive, limit: int) -> Receive:
        """The whole body, read within `limit` bytes and the body deadline, replayed to the app."""
        too_big = HTTPException(413, f"the request body is larger than {limit} bytes")
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            raise too_big
        body = bytearray()
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        raise HTTPException(400, "the client went away while sending the body")
                    body += message.get("body", b"")
                    if len(body) > limit:
                        raise too_big
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            message = f"the body took longer than {self.settings.body_timeout_s:g} s"
            raise HTTPException(408, message) from None
        pending: list[Message] = [{"type": "http.request", "body": bytes(body), "more_body": False}]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        return replay
