"""Progress while sampling: the pipeline's step callback and gtr serve's server-sent events.

POST /v1/generate with `Accept: text/event-stream` answers one `step` event per AR step of the sampling
calls the request's images are in, then a `result` event holding the JSON answer (or an `error` event).
Model: the shipped mar-tiny with plans gtr and mar-64 (the module fixtures of test_serve.py).
"""
from __future__ import annotations

import http.client
import json
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="gtr serve needs the serve extra (pip install 'gtr-mar[serve]')")
pytest.importorskip("httpx", reason="starlette's TestClient needs httpx")

from fastapi.testclient import TestClient  # noqa: E402
from test_serve import Gated, Server, bundle, close, decode, pipe, post, wait_until  # noqa: E402,F401

from gtr.serve import create_app  # noqa: E402

STREAM = {"accept": "text/event-stream"}


def events(text: str) -> list[tuple[str, dict]]:
    """[(event, data)] of an event stream; comment lines (keep-alive) are skipped."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = block.split("\n")
        data = "\n".join(line[5:].strip() for line in lines if line.startswith("data:"))
        if data:
            name = next((line[6:].strip() for line in lines if line.startswith("event:")), "message")
            out.append((name, json.loads(data)))
    return out


def test_the_progress_callback_sees_every_step_and_changes_no_bits(pipe):
    items, seen = [(3, 5, 0), (8, 1, 2)], []
    with_progress = pipe.generate_items(items, plan="gtr", progress=lambda step, steps: seen.append((step, steps)))
    steps = pipe.plans["gtr"].num_steps
    assert steps > 1 and seen == [(s, steps) for s in range(1, steps + 1)]
    assert np.array_equal(with_progress, pipe.generate_items(items, plan="gtr"))


def test_the_event_stream_is_a_step_per_ar_step_then_the_json_answer(pipe):
    body = {"class": 3, "seed": 5, "plan": "mar-64", "temperature": 0.9}
    with TestClient(create_app(pipe, warmup=False)) as client:
        r = post(client, body, **STREAM)
        plain = post(client, body).json()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache" and r.headers["x-gtr-plan"] == "mar-64"
    got = events(r.text)
    assert [name for name, _ in got] == ["step"] * 64 + ["result"]
    assert [d for _, d in got[:-1]] == [{"plan": "mar-64", "step": s, "steps": 64} for s in range(1, 65)]
    result = got[-1][1]
    assert result["plan"] == {"name": "mar-64", "cfg": 2.0, "temperature": 0.9} and result["num_images"] == 1
    assert result["images"] == plain["images"]  # the same PNG bytes as without progress
    want = pipe.generate([3], seed=5, plan="mar-64", temperature=0.9, progress=False)[0]
    assert close(decode(result["images"][0]), want)


def test_requests_merged_into_one_call_each_get_its_steps(pipe):
    app = create_app(pipe, max_batch=2, max_wait_ms=20_000, warmup=False)  # waits for company, then full: go
    with TestClient(app) as client:
        answers = {}
        threads = [threading.Thread(target=lambda k=k: answers.setdefault(k, post(client, {"class": k}, **STREAM)))
                   for k in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert app.state.batcher.calls == 1
    for k in (1, 2):
        got = events(answers[k].text)
        assert [d["step"] for name, d in got if name == "step"] == list(range(1, pipe.plans["gtr"].num_steps + 1))
        assert got[-1][0] == "result" and got[-1][1]["batch_sizes"] == [2] and got[-1][1]["class"] == k


def test_refusals_are_json_before_the_stream_and_a_timeout_is_an_error_event(pipe):
    gated = Gated(pipe)
    app = create_app(gated, max_batch=1, max_wait_ms=0, queue=1, timeout_s=0.5, warmup=False)
    with TestClient(app) as client:
        bad = post(client, {"class": 10}, **STREAM)
        assert bad.status_code == 422 and "out of range" in bad.json()["error"]
        answers = {}
        first = threading.Thread(target=lambda: answers.setdefault("first", post(client, {"class": 1}, **STREAM)))
        first.start()
        wait_until(lambda: app.state.batcher.busy, "the first request sampling")
        second = threading.Thread(target=lambda: answers.setdefault("second", post(client, {"class": 2}, **STREAM)))
        second.start()
        wait_until(lambda: app.state.batcher.depth == 1, "the second request queued")
        full = post(client, {"class": 3}, **STREAM)
        assert full.status_code == 503 and "queue is full" in full.json()["error"] and "retry-after" in full.headers
        first.join(60)
        second.join(60)
        gated.gate.set()
        wait_until(lambda: not app.state.batcher.busy, "the gated call to end")
        for k in ("first", "second"):
            assert answers[k].status_code == 200
            assert events(answers[k].text) == [("error", {"error": "timed out after 0.5 s", "status": 503})]
        assert [c[0][0] for c in gated.calls] == [1]  # the queued request timed out and was never sampled
        assert 'gtr_requests_dropped_total{reason="timeout"} 1' in client.get("/metrics").text


def test_a_real_server_streams_steps_while_sampling_and_drops_a_stream_whose_client_left(bundle):
    server = Server(bundle, "--max-batch", 1)
    host, port = server.url.removeprefix("http://").rsplit(":", 1)

    def open_stream(body: dict):
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        conn.request("POST", "/v1/generate", json.dumps(body), STREAM)
        return conn, conn.getresponse()  # once the headers are in: the request is queued

    def read_event(r) -> tuple[str, dict]:
        block = b""
        while True:
            line = r.readline()
            assert line, f"the stream ended early: {block!r}"
            if line != b"\n":
                block += line
            elif events(block.decode()):
                return events(block.decode())[0]
            else:
                block = b""  # a comment (keep-alive)

    try:
        conn, long = open_stream({"class": 1, "plan": "mar-64", "num_images": 6})  # 6 calls of one image
        assert long.status == 200 and long.headers["content-type"].startswith("text/event-stream")
        got = [read_event(long)]
        assert got[0] == ("step", {"plan": "mar-64", "step": 1, "steps": 64})
        assert server.metric("gtr_sampling") == 1  # the first step came while its call still ran
        gone_conn, gone = open_stream({"class": 5})  # queued behind the long request's images
        assert gone.status == 200
        gone.close()
        gone_conn.close()
        wait_until(lambda: server.metric('gtr_requests_dropped_total{reason="client_gone"}') == 1,
                   "the stream of the client that left dropped", limit=60)
        while got[-1][0] == "step":
            got.append(read_event(long))
        conn.close()
        assert [name for name, _ in got] == ["step"] * (6 * 64) + ["result"] and len(got[-1][1]["images"]) == 6
        assert server.metric("gtr_images_total") == 6  # the dropped request made no image
    finally:
        server.stop()
