"""The Python floor of ``make bench``: uvicorn (httptools, uvloop) and one pooled
``aiohttp.ClientSession`` with a raw ASGI function between them, and nothing else: no key check,
no routing, no limits, no metrics, no shaping. It is the stack vte-proxy is built on, so its
figures are what any gateway on that stack can reach on this core; vte-proxy's distance to it
is what vte-proxy's own code costs.

``POST`` bodies are passed to the zero-delay upstream (``FLOOR_JSON``) or, for a model named
``paced/...``, to the paced SSE upstream (``FLOOR_PACED``); answers come back as they are, a
stream a read at a time.

    python bench/asgi_floor.py --port 18112      # run.py starts it pinned to the gateway core
"""

from __future__ import annotations

import os
import sys
from typing import Any

import aiohttp
import uvicorn

JSON_URL = os.environ.get("FLOOR_JSON", "")
PACED_URL = os.environ.get("FLOOR_PACED", "")
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-upstream-bench"}
SESSION: list[aiohttp.ClientSession] = []


async def lifespan(receive: Any, send: Any) -> None:
    while (await receive())["type"] == "lifespan.startup":
        SESSION.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=20_000, limit_per_host=0)))
        await send({"type": "lifespan.startup.complete"})
    await SESSION[0].close()
    await send({"type": "lifespan.shutdown.complete"})


async def body_of(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    body = await body_of(receive)
    url = PACED_URL if b'"paced/' in body else JSON_URL
    async with SESSION[0].post(url, data=body, headers=HEADERS) as response:
        ctype = response.headers.get("content-type", "application/json").encode()
        if not ctype.startswith(b"text/event-stream"):
            data = await response.read()
            await send({"type": "http.response.start", "status": response.status,
                        "headers": [(b"content-type", ctype), (b"content-length", str(len(data)).encode())]})
            await send({"type": "http.response.body", "body": data})
            return
        await send({"type": "http.response.start", "status": response.status, "headers": [(b"content-type", ctype)]})
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    port = int(sys.argv[sys.argv.index("--port") + 1])
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", access_log=False,
                log_level="warning", lifespan="on")
