"""Checks every scoring request in the HTTP process, before it can join a batch.

LitServe decodes requests inside the inference worker, one batch at a time, and an exception there fails every
request of that batch: a bad request batched with good ones would take them down with it. So requests are read
here instead (``sarm.serve.requests``): a bad one is answered with its 4xx at once and never queued; a good one is
forwarded to the LitServe route as the checked payload (JSON, whatever content type the client sent), so the worker
only ever sees payloads this module wrote. The LitServe route itself is not reachable from outside (404).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sarm.serve.requests import BadRequest, parse_json


class CheckedRoutes:
    """Pure ASGI middleware: ``routes`` maps a public path to the reader of its body (body → payload); each is
    forwarded to ``target``, the LitServe route."""

    def __init__(self, app, routes: dict[str, Callable[[Any], dict]], target: str, max_body_bytes: int):
        self.app, self.routes, self.target, self.max_body_bytes = app, routes, target, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path == self.target:
            return await _answer(send, 404, "Not Found")
        read = self.routes.get(path)
        if read is None:
            return await self.app(scope, receive, send)
        if scope["method"] != "POST":
            return await _answer(send, 405, f"{path}: use POST", [(b"allow", b"POST")])
        try:
            payload = read(parse_json(await self._body(receive)))
        except BadRequest as err:
            return await _answer(send, err.status, err.message)
        data = json.dumps(payload).encode()
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        forwarded = dict(scope, path=self.target, raw_path=self.target.encode(), headers=headers)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()  # after the body: the client's disconnect, when it comes

        return await self.app(forwarded, replay, send)

    async def _body(self, receive) -> bytes:
        """The request body; one over ``max_body_bytes`` is read to its end but not kept, then refused (a client
        that sends all of its body before reading the answer, as most do, gets the 413 rather than a reset)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest(400, "body: the client disconnected before sending it")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= self.max_body_bytes:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if size > self.max_body_bytes:
            raise BadRequest(413, f"body: {size} bytes, more than this server's max_body_bytes ({self.max_body_bytes})")
        return b"".join(chunks)


async def _answer(send, status: int, detail: str, headers: list | None = None) -> None:
    """A JSON ``{"detail": ...}`` response, the shape FastAPI and LitServe give their own errors."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})
