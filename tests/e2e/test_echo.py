"""The SDKs' stream helpers through a real gateway: Python's and Node's ``responses.stream()``
and ``chat.completions.stream()`` must accept what the echo provider sends, and what an
OpenAI-shaped upstream sends once the gateway has passed it on."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support import (
    CLIENT_KEY,
    OPENAI_JS,
    GatewayProcess,
    ScriptedUpstream,
    Stream,
    gateway_yaml,
    npm_package,
    running_gateway,
)
from vte_proxy.providers.echo import _response_events

EVENTS = ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
          "response.output_text.delta", "response.output_text.done", "response.content_part.done",
          "response.output_item.done", "response.completed"]


@pytest.fixture(scope="module")
def gw(module_upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with running_gateway(tmp_path_factory.mktemp("echo"), gateway_yaml(module_upstream.url)) as g:
        yield g


def openai_responses_stream(text: str) -> Stream:
    """OpenAI's Responses event sequence for ``text`` (the echo provider writes exactly that)."""
    done = {"id": "resp_up", "object": "response", "created_at": 1, "status": "completed", "model": "gpt-4o",
            "usage": {"input_tokens": 3, "output_tokens": 3, "total_tokens": 6}, "incomplete_details": None,
            "error": None, "instructions": None, "metadata": {}, "parallel_tool_calls": True, "temperature": 1.0,
            "top_p": 1.0, "tool_choice": "auto", "tools": [],
            "output": [{"type": "message", "id": "msg_up", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}]}
    return Stream([ev.decode() + "\n\n" for ev in _response_events(done, text)], done=False)


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


def test_python_sdk_responses_stream_helper_on_an_upstream(gw: GatewayProcess,
                                                           module_upstream: ScriptedUpstream) -> None:
    module_upstream.push(openai_responses_stream("six seven"))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    with client.responses.stream(model="up/gpt-4o", input="six seven") as stream:
        types = [ev.type for ev in stream]
        final = stream.get_final_response()
    assert squeeze(types) == EVENTS
    assert (final.output_text, final.model) == ("six seven", "up/gpt-4o")


def test_node_sdk_responses_stream_helper_on_an_upstream(gw: GatewayProcess, module_upstream: ScriptedUpstream) -> None:
    module_upstream.push(openai_responses_stream("one two three"))
    sdk = npm_package(OPENAI_JS)
    script = Path(__file__).parent / "js" / "echo_helpers.mjs"
    out = subprocess.run([shutil.which("node") or "node", str(script), str(sdk), gw.url + "/v1", CLIENT_KEY,
                          "up/gpt-4o"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)  # the chat helper there gets the scripted upstream's default stream
    assert squeeze(got["types"]) == EVENTS and got["output_text"] == "one two three"
    assert got["chat"] == "Hello world"
