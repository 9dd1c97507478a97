"""The one look at each upstream event of a stream: :class:`StreamWatcher` rewrites ``model``
to the exposed name, notes usage and the finish, and judges whether the stream was complete;
:func:`usage_of` and :func:`set_model` do the same for a decoded answer or event.

This is the pass-through hot path (:mod:`vte_proxy.shaping` calls :meth:`StreamWatcher.process`
for every event): an event is never decoded unless it must be; the ``model`` field is
rewritten by replacing bytes, and only events that carry usage (or a model name it does not
recognise) are parsed.
"""

from __future__ import annotations

from typing import Any

import orjson

from vte_proxy.sse import DONE, data_of, with_data


def usage_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """Usage from a chat/completions chunk or answer, or from a Responses API event/answer."""
    usage = obj.get("usage")
    if isinstance(usage, dict):
        return usage
    response = obj.get("response")
    if isinstance(response, dict) and isinstance(response.get("usage"), dict):
        return response["usage"]  # type: ignore[no-any-return]
    return None


def set_model(obj: dict[str, Any], exposed: str) -> None:
    if "model" in obj:
        obj["model"] = exposed
    response = obj.get("response")
    if isinstance(response, dict) and "model" in response:
        response["model"] = exposed


class StreamWatcher:
    """Looks at each upstream event once: rewrites ``model``, notes usage and the finish,
    and drops the usage-only chunk the gateway asked for when the client did not. It is the
    one judge of whether a stream was complete (:meth:`complete`)."""

    __slots__ = ("_exposed", "_needles", "_rewrite", "done", "finished", "keep_usage", "usage")

    def __init__(self, exposed: str, upstream_model: str, keep_usage: bool) -> None:
        self._exposed = exposed
        self._rewrite = exposed != upstream_model
        self._needles: list[tuple[bytes, bytes]] = []
        if self._rewrite:
            self._learn(upstream_model)
        self.keep_usage = keep_usage
        self.usage: dict[str, Any] | None = None
        self.finished = False
        self.done = False

    def _learn(self, upstream_model: str) -> None:
        old, new = orjson.dumps(upstream_model), orjson.dumps(self._exposed)
        self._needles += [(b'"model":' + old, b'"model":' + new), (b'"model": ' + old, b'"model": ' + new)]

    @property
    def complete(self) -> bool:
        """Whether the stream ended properly: ``[DONE]``, or every answer finished."""
        return self.done or self.finished

    def get_usage(self) -> dict[str, Any] | None:
        return self.usage

    def process(self, ev: bytes) -> bytes | None:
        """The event to send on, or None to drop it."""
        if ev == DONE:
            self.done = True
            return ev
        # Plain `in` tests, not any(<generator>): this runs for every event of every stream. A
        # finish_reason key cannot occur inside a JSON string (its quotes would be escaped).
        if not self.finished and (b'"finish_reason":"' in ev or b'"finish_reason": "' in ev
                                  or (b"response." in ev and _is_terminal(ev))):
            self.finished = True
        decode = b'"usage":{' in ev or b'"usage": {' in ev
        if self._rewrite:
            # The known upstream names replaced by bytes (bytes.replace returns the very same
            # object when there was nothing to replace: one scan per needle, no `in` first).
            renamed = False
            for old, new in self._needles:
                replaced = ev.replace(old, new)
                if replaced is not ev:
                    ev, renamed = replaced, True
            decode = decode or (not renamed and b'"model"' in ev)
        return self._decoded(ev) if decode else ev

    def _decoded(self, ev: bytes) -> bytes | None:
        """The slow path, for events with usage or a model name not seen before."""
        obj = _json_object(ev)
        if obj is None:
            return ev
        usage = usage_of(obj)
        if usage is not None:
            self.usage = usage
            if not self.keep_usage and obj.get("choices") == [] and obj.get("object") != "response":
                return None
        if not self._rewrite:
            return ev
        upstream = obj.get("model") or (obj.get("response") or {}).get("model")
        if isinstance(upstream, str) and upstream != self._exposed:
            self._learn(upstream)  # the upstream names the model its own way: match it cheaply next time
        set_model(obj, self._exposed)
        return with_data(ev, orjson.dumps(obj))


# The events that end a Responses stream (the answer complete, cut by a limit, or failed).
TERMINAL_EVENTS = frozenset((b"response.completed", b"response.incomplete", b"response.failed"))


def _is_terminal(ev: bytes) -> bool:
    """Whether ``ev`` is a Responses stream's last event, by its ``event:`` line or, without
    one, its ``type``: never by words that a text delta may contain."""
    if ev.startswith(b"event:"):
        return ev[6:ev.find(b"\n")].strip() in TERMINAL_EVENTS if b"\n" in ev else False
    obj = _json_object(ev)
    kind = obj.get("type") if obj is not None else None
    return isinstance(kind, str) and kind.encode() in TERMINAL_EVENTS


def _json_object(ev: bytes) -> dict[str, Any] | None:
    payload = data_of(ev)
    if payload is None:
        return None
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None
