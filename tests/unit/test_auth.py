"""Client keys: hashing, constant-time lookup, header forms and allow-lists."""

from __future__ import annotations

import hashlib

from pydantic import SecretStr

from vte_proxy.auth import KeyRing, key_from_headers
from vte_proxy.config import KeyConfig


def ring() -> KeyRing:
    return KeyRing((KeyConfig(name="a", key=SecretStr("sk-aaa"), models=("p/*",)),
                    KeyConfig(name="b", key_sha256=hashlib.sha256(b"sk-bbb").hexdigest(), status=True)))


def test_plain_and_hashed_keys_authenticate_to_their_names() -> None:
    r = ring()
    assert r.authenticate("sk-aaa").name == "a"  # type: ignore[union-attr]
    assert r.authenticate(b"sk-bbb").name == "b"  # type: ignore[union-attr]
    assert r.authenticate("sk-ccc") is None and r.authenticate("") is None and r.authenticate(None) is None


def test_only_digests_are_kept() -> None:
    assert "sk-aaa" not in repr(ring().keys)


def test_allow_list_globs_match_exposed_names() -> None:
    a = ring().authenticate("sk-aaa")
    assert a is not None and a.allows("p/x") and not a.allows("q/x") and not a.allows("p")
    b = ring().authenticate("sk-bbb")
    assert b is not None and b.allows("anything/at/all")


def test_key_is_read_from_bearer_and_api_key_headers() -> None:
    assert key_from_headers([(b"authorization", b"Bearer sk-1")]) == b"sk-1"
    assert key_from_headers([(b"authorization", b"bearer  sk-2 ")]) == b"sk-2"
    assert key_from_headers([(b"x-api-key", b"sk-3")]) == b"sk-3"
    assert key_from_headers([(b"x-goog-api-key", b"sk-4")]) == b"sk-4"
    assert key_from_headers([(b"authorization", b"Basic abc")]) is None
    assert key_from_headers([]) is None
