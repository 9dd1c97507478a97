"""The key pool at the upstream boundary: a 429/401/403 answer rests or removes the key and the
same request goes out again with another key, before anything is returned."""

from __future__ import annotations

import pytest

from tests.support import Reply, ScriptedUpstream
from vte_proxy.config import ProviderConfig
from vte_proxy.errors import UpstreamError
from vte_proxy.providers.openai import bearer
from vte_proxy.upstream import Upstream


def provider(url: str, *keys: str) -> ProviderConfig:
    return ProviderConfig.model_validate({
        "name": "p", "type": "openai", "base_url": url, "models": ["m"], "cooldown": "7s",
        "api_keys": [{"name": f"k{i}", "key": k} for i, k in enumerate(keys)]})


async def test_keys_are_rested_or_removed_and_the_request_goes_out_again(upstream: ScriptedUpstream) -> None:
    upstream.key_replies["sk-a"] = Reply({"error": {"message": "slow"}}, 429,
                                         headers={"retry-after": "Wed, 21 Oct 2099 07:28:00 GMT"})
    upstream.key_replies["sk-b"] = Reply({"error": {"message": "no"}}, 403)
    up = Upstream(provider(upstream.url, "sk-a", "sk-b", "sk-c"), auth=bearer)
    assert up.pool is not None
    up.pool.keys[0].weight, up.pool.keys[1].weight = 1e6, 1e6  # the bad keys first
    try:
        for _ in range(3):
            response = await up.send("GET", upstream.url + "/models", {"accept": "application/json"})
            assert response.status == 200
            await response.aclose()
        assert up.pool.states() == {"k0": "cooling", "k1": "disabled", "k2": "ready"}
        assert up.pool.seconds_left()["k0"] == 24 * 3600  # a far HTTP date is capped at a day
        used = [r.headers["authorization"] for r in upstream.requests]
        assert sorted(used[:2]) == ["Bearer sk-a", "Bearer sk-b"] and used[2:] == ["Bearer sk-c"] * 3
    finally:
        await up.aclose()


async def test_no_key_ready_raises_a_retryable_keys_error(upstream: ScriptedUpstream) -> None:
    upstream.key_replies["sk-a"] = Reply({"error": {"message": "slow"}}, 429)  # no Retry-After: cooldown
    upstream.key_replies["sk-b"] = Reply({"error": {"message": "no"}}, 401)
    up = Upstream(provider(upstream.url, "sk-a", "sk-b"), auth=bearer)
    try:
        with pytest.raises(UpstreamError) as info:
            await up.send("POST", upstream.url + "/chat/completions", {}, b"{}")
        err = info.value
        assert (err.status, err.code, err.reason, err.retryable) == (429, "upstream_keys_cooling", "keys", True)
        assert err.headers == {"retry-after": "7"}
        assert up.pool is not None
        up.pool.disable("k0")
        with pytest.raises(UpstreamError) as info:
            await up.send("POST", upstream.url + "/chat/completions", {}, b"{}")
        assert (info.value.status, info.value.code) == (503, "upstream_keys_rejected")
        assert len(upstream.requests) == 2  # the second call never reached the upstream
    finally:
        await up.aclose()
