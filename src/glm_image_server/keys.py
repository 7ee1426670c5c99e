"""API keys as configured: each a secret, optionally named (`name:key`), so logs and metrics say whose work
a job was without showing the key. A job records only its key's owner, a stable hash of the secret (renaming
a key keeps its jobs)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
NO_KEYS = "-"  # the label of work done on a server without keys


@dataclass(frozen=True)
class ApiKey:
    secret: str
    name: str | None = None

    @property
    def owner(self) -> str:
        return owner_hash(self.secret)

    @property
    def label(self) -> str:
        """What logs and metrics call it: its name, else its owner hash."""
        return self.name or self.owner


def no_empty_keys(keys: list[str]) -> list[str]:
    """The configured keys, unless one is empty (an unset variable passed as a key, named or not)."""
    if any(not key.strip() for key in keys):
        raise ValueError("an API key is empty (is the variable you passed unset?)")
    for key in keys:
        name, colon, secret = key.partition(":")
        if colon and not secret.strip() and NAME.match(name):
            raise ValueError(f"the API key named {name!r} is empty (is the variable you passed unset?)")
    return keys


def owner_hash(secret: str) -> str:
    """A stable, non-reversible name for a key (what jobs record as their `owner`)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def parse_key(entry: str) -> ApiKey:
    """`name:key` names a key (the name: letters, digits and `_.@-`, up to 64); anything else is a plain
    key, as before names existed. A key containing `:` is unambiguous with a name in front (`n:ab:cd`)."""
    name, colon, secret = entry.partition(":")
    if colon and secret and NAME.match(name):
        return ApiKey(secret, name)
    return ApiKey(entry)


def parse_keys(entries: Sequence[str]) -> list[ApiKey]:
    return [parse_key(entry) for entry in entries]


def owner_label(entries: Sequence[str], owner: str | None) -> str:
    """The name (or hash) of the configured key whose owner hash is `owner`; `-` without keys."""
    if owner is None:
        return NO_KEYS
    return next((key.label for key in parse_keys(entries) if key.owner == owner), owner)
