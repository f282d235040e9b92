"""Prometheus text exposition (format 0.0.4) for the server, stdlib only: counters, gauges, histograms.

No client library: the server keeps a handful of series and writes them itself, so `gtr serve` needs
nothing beyond its ASGI stack.
"""
from __future__ import annotations

import bisect
import threading

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Latency buckets in seconds (a request's time from arrival to answer) and batch-size buckets in images.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    def esc(v):
        return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    text = ",".join(f'{k}="{esc(v)}"' for k, v in sorted(labels.items()))
    return "{" + text + "}"


def _num(v: float) -> str:
    return repr(float(v)) if v != int(v) else str(int(v))


class Counter:
    def __init__(self, name: str, help: str, labelnames=()):
        self.name, self.help, self.labelnames = name, help, tuple(labelnames)
        self._values: dict[tuple, float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels) -> None:
        key = tuple(str(labels[k]) for k in self.labelnames)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels) -> float:
        return self._values.get(tuple(str(labels[k]) for k in self.labelnames), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        values = dict(self._values) or ({(): 0.0} if not self.labelnames else {})
        for key, v in sorted(values.items()):
            lines.append(f"{self.name}{_labels(dict(zip(self.labelnames, key)))} {_num(v)}")
        return lines


class Gauge:
    """A value read when scraped (`fn`), e.g. the queue depth."""

    def __init__(self, name: str, help: str, fn):
        self.name, self.help, self.fn = name, help, fn

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge", f"{self.name} {_num(self.fn())}"]


class Histogram:
    def __init__(self, name: str, help: str, buckets):
        self.name, self.help, self.buckets = name, help, tuple(buckets)
        self._counts = [0] * (len(self.buckets) + 1)  # the last: above every bucket (+Inf only)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, v: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.buckets, v)] += 1
            self._sum += v

    @property
    def count(self) -> int:
        return sum(self._counts)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative = 0
        for bound, c in zip(self.buckets + (float("inf"),), counts):
            cumulative += c
            le = "+Inf" if bound == float("inf") else _num(bound)
            lines.append(f'{self.name}_bucket{{le="{le}"}} {cumulative}')
        lines += [f"{self.name}_sum {_num(total)}", f"{self.name}_count {cumulative}"]
        return lines


class Metrics:
    """Every series of one server. `queue_depth` / `queue_images`: callables read at scrape time."""

    def __init__(self, queue_depth=lambda: 0, queue_images=lambda: 0, busy=lambda: 0):
        self.requests = Counter("gtr_requests_total", "HTTP requests answered, by route and status.",
                                ("route", "status"))
        self.latency = Histogram("gtr_request_seconds",
                                 "Time from arrival to answer of POST /v1/generate requests answered 200.",
                                 LATENCY_BUCKETS)
        self.batch_size = Histogram("gtr_batch_size", "Images per sampling call.", BATCH_BUCKETS)
        self.batch_seconds = Histogram("gtr_batch_seconds", "Time of one sampling call.", LATENCY_BUCKETS)
        self.images = Counter("gtr_images_total", "Images generated.")
        self.dropped = Counter("gtr_requests_dropped_total",
                               "Requests dropped from the queue before sampling: client gone or timed out.",
                               ("reason",))
        self.rejected = Counter("gtr_requests_rejected_total",
                                "Requests refused without queueing: queue full or shutting down.", ("reason",))
        self._gauges = [Gauge("gtr_queue_depth", "Requests waiting for a sampling call.", queue_depth),
                        Gauge("gtr_queue_images", "Images waiting for a sampling call.", queue_images),
                        Gauge("gtr_sampling", "1 while a sampling call runs.", busy)]

    def render(self) -> str:
        lines: list[str] = []
        for series in (self.requests, self.latency, self.batch_size, self.batch_seconds, self.images,
                       self.dropped, self.rejected, *self._gauges):
            lines += series.render()
        return "\n".join(lines) + "\n"
