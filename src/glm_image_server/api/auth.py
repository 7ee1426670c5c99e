"""API keys: each dialect asks for them its own way, and reports a wrong one in its own format."""

from __future__ import annotations

import hmac


def key_ok(keys: list[str], key: str | None) -> bool:
    """True when no keys are configured, or `key` is one of them (compared in constant time)."""
    if not keys:
        return True
    return key is not None and any(hmac.compare_digest(key.encode(), k.encode()) for k in keys)


def presented_key(authorization: str, schemes: tuple[str, ...] = ("bearer",)) -> str | None:
    """The key in an Authorization header whose scheme is one of `schemes` (lower case)."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() in schemes else None
