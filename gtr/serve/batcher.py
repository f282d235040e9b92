"""Dynamic batching: requests with the same settings merge into one sampling call.

A request is a Job: a key (plan, cfg, temperature: what must be equal for images to share a sampling
call) and its items [(class, seed, index), ...]. One asyncio task takes the oldest waiting job, waits at
most `max_wait_s` from that job's arrival for company with the same key, then hands up to `max_batch`
items (whole jobs first come, first served; a job larger than the room left is split across calls) to
`run(items, plan, cfg, temperature)` in a worker thread, so the event loop keeps answering while the
numpy / onnxruntime loop runs. `run` returns one result per item (the app's: PNG bytes, encoded in the
same thread, so a batch's answers are ready together); a job's future gets the list of its results.
Each image has its own noise stream (gtr.plan.image_seed), so an image does not depend on what it was
batched with. A job submitted with on_step(step, steps) is told each AR step of the calls it is part of:
`run` then gets a `progress` keyword, called from the worker thread.

Backpressure: at most `queue_size` jobs wait; `submit` raises QueueFull beyond that (the app answers
503 with Retry-After) and Draining once shutdown has begun. A job cancelled before any of its items
started (client gone, timeout) is dropped: it costs no sampling.
"""
from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


class QueueFull(Exception):
    """The queue holds `queue_size` jobs already."""


class Draining(Exception):
    """The server is shutting down and takes no new jobs."""


@dataclass(eq=False)
class Job:
    key: tuple                    # (plan name, cfg, temperature)
    items: list                   # [(class or None, seed, index), ...]
    future: asyncio.Future
    arrived: float                # loop.time() at submit
    taken: int = 0                # items handed to sampling calls so far
    done: int = 0                 # items whose results are back
    results: list = field(default_factory=list)
    started: float | None = None  # loop.time() when its first sampling call began
    batch_sizes: list = field(default_factory=list)  # size of each sampling call it was part of
    sample_seconds: float = 0.0   # summed time of those calls
    cancelled: bool = False
    on_step: object = None        # on_step(step, steps), from the worker thread, after each AR step of its calls

    def __post_init__(self):
        self.results = [None] * len(self.items)


class Batcher:
    def __init__(self, run, max_batch: int = 16, max_wait_s: float = 0.01, queue_size: int = 64,
                 metrics=None):
        if max_batch < 1 or queue_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch and queue_size must be >= 1, max_wait_s >= 0")
        self._run = run
        self.max_batch, self.max_wait_s, self.queue_size = int(max_batch), float(max_wait_s), int(queue_size)
        self.metrics = metrics
        self._pending: deque[Job] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.draining = False
        self.busy = False  # a sampling call is running
        self.calls = 0     # sampling calls made

    # ---- lifetime (inside the event loop)

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="gtr-sample")
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="gtr-batcher")

    def close_intake(self) -> None:
        """Refuse new jobs from now on (shutdown began); jobs already queued still run."""
        self.draining = True

    async def stop(self) -> None:
        """Refuse new jobs, finish the queued ones, then stop the worker."""
        self.draining = True
        if self._task is not None:
            self._poke()
            await self._task
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # ---- jobs

    @property
    def depth(self) -> int:
        """Jobs waiting (some of their items not yet in a sampling call)."""
        return len(self._pending)

    @property
    def waiting_images(self) -> int:
        return sum(len(j.items) - j.taken for j in self._pending)

    def submit(self, key: tuple, items: list, on_step=None) -> Job:
        if self.draining or self._task is None:
            raise Draining("the server is shutting down")
        if len(self._pending) >= self.queue_size:
            raise QueueFull(f"the queue is full ({self.queue_size} requests waiting)")
        loop = asyncio.get_running_loop()
        job = Job(key=tuple(key), items=list(items), future=loop.create_future(), arrived=loop.time(),
                  on_step=on_step)
        self._pending.append(job)
        self._poke()
        return job

    def cancel(self, job: Job, reason: str = "client_gone") -> bool:
        """Take `job` out of the queue (its answer is no longer wanted). True if none of its items had
        started: then it cost nothing and counts as dropped."""
        job.cancelled = True
        if job in self._pending:
            self._pending.remove(job)
            self._poke()
        if not job.future.done():
            job.future.cancel()
        dropped = job.taken == 0
        if dropped and self.metrics is not None:
            self.metrics.dropped.inc(reason=reason)
        return dropped

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _company(self, key) -> int:
        return sum(len(j.items) - j.taken for j in self._pending if j.key == key)

    def _take(self, key) -> list[tuple[Job, int]]:
        """Up to max_batch (job, item index) pairs with `key`, oldest jobs first."""
        batch: list[tuple[Job, int]] = []
        for job in list(self._pending):
            if job.key != key:
                continue
            while job.taken < len(job.items) and len(batch) < self.max_batch:
                batch.append((job, job.taken))
                job.taken += 1
            if job.taken == len(job.items):
                self._pending.remove(job)
            if len(batch) == self.max_batch:
                break
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self.draining:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            first = self._pending[0]
            deadline = first.arrived + self.max_wait_s
            while self._pending and self._pending[0] is first and self._company(first.key) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            if not self._pending or self._pending[0] is not first:
                continue  # the oldest job went away while waiting: start over with the next
            batch = self._take(first.key)
            await self._sample(loop, first.key, batch)

    async def _sample(self, loop, key, batch) -> None:
        jobs = list(dict.fromkeys(job for job, _ in batch))
        started = loop.time()
        for job in jobs:
            job.started = started if job.started is None else job.started
            job.batch_sizes.append(len(batch))
        items = [job.items[i] for job, i in batch]
        listeners = [job.on_step for job in jobs if job.on_step is not None]
        run = functools.partial(self._run, items, *key)
        if listeners:  # run(..., progress=) only where a job listens: a run without the keyword still works

            def progress(step, steps):
                for listener in listeners:
                    listener(step, steps)
            run = functools.partial(run, progress=progress)
        self.busy = True
        t0 = time.perf_counter()
        try:
            results = list(await loop.run_in_executor(self._executor, run))
            if len(results) != len(items):
                raise RuntimeError(f"sampling returned {len(results)} results for {len(items)} items")
        except Exception as e:  # noqa: BLE001 - handed to every waiting request of the batch
            for job in jobs:
                if job in self._pending:
                    self._pending.remove(job)
                if not job.future.done():
                    job.future.set_exception(e)
            return
        finally:
            self.busy = False
            self.calls += 1
        seconds = time.perf_counter() - t0
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(batch))
            self.metrics.batch_seconds.observe(seconds)
            self.metrics.images.inc(len(batch))
        for job in jobs:
            job.sample_seconds += seconds
        for (job, i), result in zip(batch, results):
            job.results[i] = result
            job.done += 1
            if job.done == len(job.items) and not job.future.done():
                job.future.set_result(job.results)
