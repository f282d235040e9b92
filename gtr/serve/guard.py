"""ASGI middleware in front of the app: request bodies are read under limits, every answer is counted.

A request body (POST, PUT, PATCH) is read here, whole, before the app sees it:
- over `max_body` bytes: the rest is read and thrown away, up to DISCARD bytes, so that a client still
  sending is not cut off and can read the answer; then 413 and the connection is closed. A body
  announced (Content-Length) larger than DISCARD is answered 413 at once, unread, and closed.
- not complete within `read_timeout_s` (a client that announced more than it sends, or stalls): 408
  and the connection is closed. The request's own --timeout starts after this, as before.
"""
from __future__ import annotations

import asyncio

from starlette.responses import JSONResponse

DISCARD = 4 * 2 ** 20  # bytes of an oversized body read and thrown away before the 413


class Guard:
    def __init__(self, app, metrics, max_body: int, read_timeout_s: float, routes=()):
        self.app, self.metrics, self.max_body, self.read_timeout_s = app, metrics, max_body, read_timeout_s
        self.routes = set(routes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in self.routes else "other"

        async def counted_send(message):
            if message["type"] == "http.response.start":
                self.metrics.requests.inc(route=route, status=message["status"])
            await send(message)

        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, counted_send)
        status, body = await self._read(scope, receive)
        if status == "gone":
            return None
        if status is not None:
            message = {413: f"request body over {self.max_body} bytes",
                       408: f"request body not received within {self.read_timeout_s:g} s"}[status]
            response = JSONResponse({"error": message}, status_code=status, headers={"Connection": "close"})
            return await response(scope, receive, counted_send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: waits for http.disconnect

        return await self.app(scope, replay, counted_send)

    async def _read(self, scope, receive):
        """(None, body), or (413 / 408 / "gone", b"") when the body is too big, too slow, or abandoned."""
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > DISCARD):
            return 413, b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout_s
        chunks, size, more = [], 0, True
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                return 408, b""
            if message["type"] == "http.disconnect":
                return "gone", b""
            data = message.get("body", b"")
            size += len(data)
            if size > DISCARD:
                return 413, b""
            if size <= self.max_body:
                chunks.append(data)
            more = message.get("more_body", False)
        return (413, b"") if size > self.max_body else (None, b"".join(chunks))
