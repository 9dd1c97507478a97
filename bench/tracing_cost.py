#!/usr/bin/env python3
"""Micro-benchmark: what tracing costs a request, in process (no sockets, no uvicorn).

Drives the gateway's ASGI app directly with ``POST /v1/chat/completions`` to the built-in echo
provider (JSON and streamed answers) and prints the microseconds per request, best of
``--rounds`` rounds of ``--requests`` each, in CPU time of the process (all its threads: the
export thread included), so a busy machine disturbs it less than wall-clock time. Modes:

  off      no telemetry block, no OTEL_* variables (the default)
  ratio0   tracing on, sample_ratio 0 (spans are created but not recorded)
  on       tracing on, every span recorded and queued (the export is held back until the end,
           so this is the cost on the request path, without the export thread's work)
  down     tracing on, the collector unreachable and known to be (measured once the first
           export has failed: requests are then not traced, but one probe every 5 s)
  dead     tracing on with the default settings, the collector unreachable, measured at once:
           the first export is still retrying (up to 10 s), so the queue fills and the requests
           after that are not traced

``--bytecodes`` counts the Python bytecodes one request executes instead (exact and
repeatable, whatever else the machine does; C code such as the JSON codec is not counted).

Compare ``off`` with the same script run against another checkout (``PYTHONPATH=/path/to/it``)
to see what the tracing hooks cost when tracing is off:

  .venv/bin/python bench/tracing_cost.py off
  PYTHONPATH=/work/main .venv/bin/python bench/tracing_cost.py off
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

KEY = "sk-bench-key-000000"
BODY = orjson.dumps({"model": "demo/echo", "messages": [{"role": "user", "content": "one two three four"}]})
STREAM_BODY = orjson.dumps({"model": "demo/echo", "stream": True,
                            "messages": [{"role": "user", "content": "one two three four"}]})


def config(mode: str) -> str:
    text = f"""version: 1
keys: [{{name: bench, key: {KEY}}}]
providers: [{{name: demo, type: echo, prefix: demo, models: [echo]}}]
"""
    if mode != "off":
        with socket.socket() as s:  # a port nobody listens on: every export fails fast
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ratio = 0 if mode == "ratio0" else 1
        text += f"telemetry: {{otlp_endpoint: 'http://127.0.0.1:{port}', sample_ratio: {ratio}}}\n"
    return text


class Driver:
    """Runs the app's lifespan and sends it requests through plain ASGI callables."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.create_task(self.app(scope, self._to_app.get, self._from_app.put))
        await self._to_app.put({"type": "lifespan.startup"})
        message = await self._from_app.get()
        assert message["type"] == "lifespan.startup.complete", message

    async def stop(self) -> None:
        await self._to_app.put({"type": "lifespan.shutdown"})
        await self._from_app.get()
        assert self._task is not None
        await self._task

    async def request(self, body: bytes) -> int:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                 "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8050),
                 "headers": [(b"host", b"bench"), (b"authorization", f"Bearer {KEY}".encode()),
                             (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                             (b"user-agent", b"bench"), (b"accept", b"*/*")]}
        sent = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)  # the client never leaves
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await self.app(scope, receive, send)
        return status


ENV = {"on": {"OTEL_BSP_SCHEDULE_DELAY": "3600000", "OTEL_BSP_MAX_QUEUE_SIZE": "100000000",
              "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100000000"},
       "down": {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_EXPORTER_OTLP_TIMEOUT": "0.5"}}


async def wait_until_down(driver: Driver) -> None:
    tracer = driver.app.accounting.tracing.current
    deadline = time.monotonic() + 30
    while not tracer.processor.exporter.down:
        assert time.monotonic() < deadline, "the dead collector was not noticed"
        await asyncio.sleep(0.05)


class BytecodeCounter:
    """Counts the bytecodes executed while active (sys.settrace with opcode events)."""

    def __init__(self) -> None:
        self.count = 0

    def trace(self, frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            self.count += 1
        return self.trace


async def bytecodes(driver: Driver, body: bytes) -> int:
    counter = BytecodeCounter()
    sys.settrace(counter.trace)
    try:
        await driver.request(body)
    finally:
        sys.settrace(None)
    return counter.count


async def measure(mode: str, requests: int, rounds: int, count: bool = False) -> dict[str, float]:
    from vte_proxy.app import create_app

    os.environ.update(ENV.get(mode, {}))

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gateway.yaml")
        Path(path).write_text(config(mode))  # noqa: ASYNC240 - before the gateway starts
        driver = Driver(create_app(path))
        await driver.start()
        out = {}
        for name, body in (("json", BODY), ("stream", STREAM_BODY)):
            for _ in range(200):  # warm up
                assert await driver.request(body) == 200
            if mode == "down":
                await wait_until_down(driver)
            if count:  # the smallest of a few (a probe request, when down, costs more)
                out[name] = out[name + "_median"] = float(min([await bytecodes(driver, body) for _ in range(5)]))
                continue
            times = []
            for _ in range(rounds):
                started = time.process_time()  # CPU time: what other processes on the machine do not add
                for _ in range(requests):
                    await driver.request(body)
                times.append((time.process_time() - started) / requests * 1e6)
            out[name] = min(times)
            out[name + "_median"] = statistics.median(times)
        await driver.stop()
    loaded = any(m.startswith("opentelemetry") for m in sys.modules)
    out["otel_loaded"] = float(loaded)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["off", "ratio0", "on", "down", "dead"])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--bytecodes", action="store_true", help="count bytecodes per request instead of timing")
    args = parser.parse_args()
    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        del os.environ[name]
    result = asyncio.run(measure(args.mode, args.requests, args.rounds, args.bytecodes))
    import vte_proxy

    if args.bytecodes:
        print(f"{args.mode:7s} {os.path.dirname(vte_proxy.__file__)}: json {result['json']:.0f} bytecodes/request, "
              f"stream {result['stream']:.0f} bytecodes/request")
        return

    print(f"{args.mode:7s} {os.path.dirname(vte_proxy.__file__)}: json {result['json']:.1f} us/request "
          f"(median {result['json_median']:.1f}), stream {result['stream']:.1f} us/request "
          f"(median {result['stream_median']:.1f}); opentelemetry imported: {bool(result['otel_loaded'])}")


if __name__ == "__main__":
    main()
