"""Client keys: who is calling and which exposed models they may use.

Only SHA-256 digests are kept. A presented key is hashed once and compared against every
configured digest with :func:`hmac.compare_digest`, so timing tells nothing about which key
(if any) was close.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from vte_proxy.config import KeyConfig, SystemPrompt


@dataclass(eq=False)
class ClientKey:
    name: str
    digest: bytes
    patterns: tuple[str, ...]
    status: bool
    system_prompt: SystemPrompt | None = None
    trace_content: bool = False  # prompts and completions may go into this key's trace spans
    # allows() results per exposed name; bounded by the names in the config.
    _allowed: dict[str, bool] = field(default_factory=dict, repr=False)

    def allows(self, model: str) -> bool:
        ok = self._allowed.get(model)
        if ok is None:
            ok = any(fnmatchcase(model, p) for p in self.patterns)
            if len(self._allowed) < 10_000:
                self._allowed[model] = ok
        return ok


def _digest(key: KeyConfig) -> bytes:
    if key.key is not None:
        return hashlib.sha256(key.key.get_secret_value().encode()).digest()
    assert key.key_sha256 is not None
    return bytes.fromhex(key.key_sha256)


class KeyRing:
    """The configured client keys."""

    def __init__(self, keys: tuple[KeyConfig, ...]) -> None:
        self.keys = [ClientKey(k.name, _digest(k), k.models, k.status, k.system_prompt, k.trace_content)
                     for k in keys]

    def authenticate(self, presented: str | bytes | None) -> ClientKey | None:
        if not presented:
            return None
        raw = presented.encode() if isinstance(presented, str) else presented
        digest = hashlib.sha256(raw).digest()
        found = None
        for k in self.keys:  # no early exit: every key is compared
            if hmac.compare_digest(digest, k.digest):
                found = k
        return found


def key_from_headers(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The client key from ``Authorization: Bearer``, ``x-api-key`` or ``x-goog-api-key``."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer":
                return token.strip()
        elif name in (b"x-api-key", b"x-goog-api-key"):
            return value.strip()
    return None
