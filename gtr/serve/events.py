"""Server-sent events (text/event-stream) for POST /v1/generate with `Accept: text/event-stream`.

The stream of one request: a `step` event after each AR step of the sampling calls its images are in
({"plan", "step", "steps"}, step 1..steps), then one `result` event (the JSON answer of the request) or
one `error` event ({"error", "status"}). A comment line every KEEPALIVE_S seconds keeps a quiet stream
(a request waiting in the queue) open through proxies.
"""
from __future__ import annotations

import asyncio
import json

KEEPALIVE_S = 15.0
KEEPALIVE = b": keep-alive\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no buffering in nginx and the like


def sse(event: str, data: dict) -> bytes:
    """One event: its name and one line of JSON."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class StepFeed:
    """A job's AR steps, from the sampling thread into the event loop. Create it in the loop, give
    `on_step` to Batcher.submit and the job's future to `watch`; `next` then returns (step, steps) for
    each step in order and None once the job is over."""

    def __init__(self):
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()

    def on_step(self, step: int, steps: int) -> None:  # in the sampling thread
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (step, steps))

    def watch(self, future: asyncio.Future) -> None:
        # A done callback runs after the steps the thread queued before the call returned.
        future.add_done_callback(lambda _: self._queue.put_nowait(None))

    async def next(self, timeout: float):
        """The next (step, steps), or None at the end; asyncio.TimeoutError after `timeout` seconds."""
        return await asyncio.wait_for(self._queue.get(), timeout)
