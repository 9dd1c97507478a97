"""Claude Code itself (npm ``@anthropic-ai/claude-code``, pinned in scripts/install_claude_code.sh)
through a real gateway process: ``claude -p`` completes a prompt and a tool round trip (its
``Read`` tool) on a native provider (the scripted Anthropic upstream, which validates every
body with the anthropic SDK's types) and on a translated one (a scripted OpenAI upstream).

Claude Code is installed by the test into a cache directory (or taken from ``VTE_CLAUDE_CODE``);
the test is skipped, with the reason shown, only when npm cannot install it. It runs with a
fresh HOME, telemetry and non-essential traffic off, and reaches nothing but the gateway.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.anthropic_upstream import AnthropicUpstream, message, text_message
from tests.support import (
    CLIENT_KEY,
    ROOT,
    GatewayProcess,
    Reply,
    ScriptedUpstream,
    Stream,
    chunk,
    completion,
    gateway_yaml,
    running_gateway,
    serve_app_in_thread,
)

ANTHROPIC_KEY = "sk-ant-upstream-SECRET-0002"
MARKER = "vte-marker-8421"
PROVIDERS = """\
- name: claude
  type: anthropic
  base_url: {url}
  api_key: ${{TEST_ANTHROPIC_KEY}}
  prefix: claude
  models: [claude-test]
"""


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    for block in content or ():
        if isinstance(block, dict):
            if isinstance(block.get("text"), str):
                out.append(block["text"])
            if block.get("type") == "tool_result":
                out += _texts(block.get("content"))
    return out


def _wanted_file(body: dict[str, Any]) -> str | None:
    """The path after READ_FILE in the last user turn (Claude Code may put a system turn after
    it), when the request offers tools."""
    last = next((m for m in reversed(body["messages"]) if m.get("role") != "system"), {})
    if not body.get("tools") or last.get("role") != "user":
        return None
    for text in _texts(last.get("content")):
        if "READ_FILE " in text:
            return text.split("READ_FILE ", 1)[1].split()[0]
    return None


def anthropic_responder(body: dict[str, Any]) -> dict[str, Any]:
    """Claude's part of the script: ask Claude Code to Read the file, then report what it held."""
    results = [t for m in body["messages"] if m["role"] == "user" and isinstance(m["content"], list)
               for b in m["content"] if b.get("type") == "tool_result" for t in _texts(b.get("content"))]
    if results:
        return text_message("The file says: " + " ".join(results))
    path = _wanted_file(body)
    if path:
        return message([{"type": "tool_use", "id": "toolu_01read", "name": "Read", "input": {"file_path": path}}],
                       "tool_use")
    return text_message("NATIVE-OK")


class OpenAIResponder(ScriptedUpstream):
    """The same script on an OpenAI-compatible upstream (chat bodies, streamed or not)."""

    def _default(self, endpoint: str, body: Any) -> Reply | Stream:
        results = [str(m.get("content")) for m in body["messages"] if m.get("role") == "tool"]
        path = None if results else _wanted_file(body)
        if results:
            delta: dict[str, Any] = {"content": "The file says: " + " ".join(results)}
        elif path:
            delta = {"tool_calls": [{"index": 0, "id": "call_read", "type": "function", "function": {
                "name": "Read", "arguments": json.dumps({"file_path": path})}}]}
        else:
            delta = {"content": "TRANSLATED-OK"}
        finish = "tool_calls" if path else "stop"
        if not body.get("stream"):
            return Reply(completion(body["model"], delta.get("content"), tool_calls=delta.get("tool_calls"),
                                    finish=finish))
        usage = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
        return Stream([chunk(body["model"], {"role": "assistant", "content": ""}), chunk(body["model"], delta),
                       chunk(body["model"], {}, finish), chunk(body["model"], usage=usage, choices=False)])


@dataclass
class Stack:
    claude: AnthropicUpstream
    openai_up: OpenAIResponder
    gateway: GatewayProcess
    binary: str


def claude_binary() -> str:
    """Claude Code's binary: ``VTE_CLAUDE_CODE``, or installed (pinned) from npm into a cache."""
    if os.environ.get("VTE_CLAUDE_CODE"):
        return os.environ["VTE_CLAUDE_CODE"]
    try:
        out = subprocess.run([str(ROOT / "scripts" / "install_claude_code.sh")], capture_output=True, text=True,
                             timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"Claude Code could not be installed from npm: {exc}")
    if out.returncode != 0:
        pytest.skip(f"Claude Code could not be installed from npm (registry unreachable?): {out.stderr[-800:]}")
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = claude_binary()
    claude = AnthropicUpstream(api_key=ANTHROPIC_KEY, responder=anthropic_responder)
    up = OpenAIResponder().start()
    with serve_app_in_thread(claude.app) as server:
        text = gateway_yaml(up.url, PROVIDERS.format(url=server.url))
        with running_gateway(tmp_path_factory.mktemp("claude-code"), text,
                             env={"TEST_ANTHROPIC_KEY": ANTHROPIC_KEY}) as gw:
            yield Stack(claude, up, gw, binary)
    up.stop()


def run_claude(stack: Stack, model: str, prompt: str, workdir: Path) -> dict[str, Any]:
    """``claude -p prompt`` against the gateway; its JSON result."""
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
           "ANTHROPIC_BASE_URL": stack.gateway.url, "ANTHROPIC_AUTH_TOKEN": CLIENT_KEY,
           "ANTHROPIC_MODEL": model, "ANTHROPIC_SMALL_FAST_MODEL": model,
           "ANTHROPIC_DEFAULT_HAIKU_MODEL": model, "ANTHROPIC_DEFAULT_SONNET_MODEL": model,
           "ANTHROPIC_DEFAULT_OPUS_MODEL": model,
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1",
           "DISABLE_ERROR_REPORTING": "1", "DISABLE_COST_WARNINGS": "1"}
    out = subprocess.run([stack.binary, "-p", prompt, "--output-format", "json", "--allowedTools", "Read"],
                         capture_output=True, text=True, env=env, cwd=workdir, timeout=240, check=False)
    assert out.returncode == 0, f"claude exited {out.returncode}: {out.stdout[-2000:]} {out.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["is_error"] is False, result
    return result


@pytest.mark.timeout(300)
def test_claude_code_prompt_native(stack: Stack, tmp_path: Path) -> None:
    stack.claude.reset()
    result = run_claude(stack, "claude/claude-test", "Say hello.", tmp_path)
    assert result["result"] == "NATIVE-OK"
    main = [r for r in stack.claude.requests if r.path == "/v1/messages" and r.body.get("tools")]
    assert main, [r.path for r in stack.claude.requests]
    sent = main[-1]
    assert sent.query.get("beta") is None  # the gateway's own URL, whatever Claude Code appended
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY and "authorization" not in sent.headers
    assert sent.headers.get("anthropic-beta") and sent.body["model"] == "claude-test"
    assert len(sent.body["tools"]) >= 10 and "cache_control" in json.dumps(sent.body)
    assert all(r.error is None for r in stack.claude.requests), [r.error for r in stack.claude.requests]


@pytest.mark.timeout(300)
def test_claude_code_tool_round_trip_native(stack: Stack, tmp_path: Path) -> None:
    stack.claude.reset()
    target = tmp_path / "note.txt"
    target.write_text(MARKER + "\n")
    result = run_claude(stack, "claude/claude-test", f"READ_FILE {target}", tmp_path)
    assert MARKER in result["result"] and result["num_turns"] >= 2
    assert all(r.error is None for r in stack.claude.requests), [r.error for r in stack.claude.requests]


@pytest.mark.timeout(300)
def test_claude_code_prompt_translated(stack: Stack, tmp_path: Path) -> None:
    stack.openai_up.requests.clear()
    result = run_claude(stack, "up/gpt-4o", "Say hello.", tmp_path)
    assert result["result"] == "TRANSLATED-OK"
    chats = [r for r in stack.openai_up.requests if r.path.endswith("/chat/completions") and r.body.get("tools")]
    assert chats and len(chats[-1].body["tools"]) >= 10
    sent = chats[-1].body
    assert "cache_control" not in json.dumps(sent) and "reasoning_effort" not in sent  # gpt-4o would refuse it
    assert len(sent.get("user", "")) <= 64
    assert not any(k.startswith("anthropic-") for k in chats[-1].headers)


@pytest.mark.timeout(300)
def test_claude_code_tool_round_trip_translated(stack: Stack, tmp_path: Path) -> None:
    stack.openai_up.requests.clear()
    target = tmp_path / "note.txt"
    target.write_text(MARKER + "\n")
    result = run_claude(stack, "up/gpt-4o", f"READ_FILE {target}", tmp_path)
    assert MARKER in result["result"] and result["num_turns"] >= 2
    tool_turns = [m for r in stack.openai_up.requests if isinstance(r.body, dict)
                  for m in r.body.get("messages", ()) if m.get("role") == "tool"]
    assert tool_turns and tool_turns[0]["tool_call_id"] == "call_read"
