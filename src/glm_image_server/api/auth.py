"""API keys: each dialect asks for them its own way, and reports a wrong one in its own format. `keys`
are the configured entries (`key` or `name:key`, keys.py)."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from ..keys import owner_hash, parse_keys


def key_ok(keys: Sequence[str], key: str | None) -> bool:
    """True when no keys are configured, or `key` is one of them (compared in constant time)."""
    if not keys:
        return True
    if not key:
        return False
    return any(hmac.compare_digest(key.encode(), k.secret.encode()) for k in parse_keys(keys))


def presented_key(authorization: str, schemes: tuple[str, ...] = ("bearer",)) -> str | None:
    """The key in an Authorization header whose scheme is one of `schemes` (lower case)."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() in schemes else None


def owner_of(keys: Sequence[str], key: str | None) -> str | None:
    """A stable, non-reversible name for the key a job was submitted with (None: no keys configured)."""
    return owner_hash(key) if keys and key else None
