"""The echo provider through a real gateway, driven by the SDKs' stream helpers: Python's and
Node's ``responses.stream()`` and ``chat.completions.stream()`` must accept what it sends."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support import CLIENT_KEY, OPENAI_JS, GatewayProcess, gateway_yaml, npm_package, running_gateway

EVENTS = ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
          "response.output_text.delta", "response.output_text.done", "response.content_part.done",
          "response.output_item.done", "response.completed"]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with running_gateway(tmp_path_factory.mktemp("echo"), gateway_yaml("http://127.0.0.1:9/v1")) as g:
        yield g


def squeeze(types: list[str]) -> list[str]:
    return [t for i, t in enumerate(types) if i == 0 or t != types[i - 1]]


def test_python_sdk_responses_stream_helper(gw: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    with client.responses.stream(model="demo/echo", input="one two three") as stream:
        types = [ev.type for ev in stream]
        final = stream.get_final_response()
    assert squeeze(types) == EVENTS
    assert final.output_text == "one two three" and final.status == "completed"


def test_python_sdk_chat_stream_helper(gw: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    with client.chat.completions.stream(model="demo/echo",
                                        messages=[{"role": "user", "content": "four five"}]) as stream:
        deltas = [ev.delta for ev in stream if ev.type == "content.delta"]
        final = stream.get_final_completion()
    assert deltas == ["", "four ", "five"] or deltas == ["four ", "five"]
    assert final.choices[0].message.content == "four five"


def test_node_sdk_stream_helpers(gw: GatewayProcess) -> None:
    sdk = npm_package(OPENAI_JS)
    script = Path(__file__).parent / "js" / "echo_helpers.mjs"
    node = shutil.which("node") or "node"
    out = subprocess.run([node, str(script), str(sdk), gw.url + "/v1", CLIENT_KEY, "demo/echo"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert squeeze(got["types"]) == EVENTS
    assert (got["output_text"], got["status"]) == ("one two three", "completed")
    assert got["chat"] == "four five" and "".join(got["deltas"]) == "four five"
