"""gtr serve: the API, batching invariance, backpressure, bad input, the command line and shutdown.

In-process tests drive the app through Starlette's TestClient (which runs the app's lifespan); the
lifecycle tests (SIGTERM, a client that goes away) run `gtr serve` as a real subprocess. Model: the
shipped mar-tiny (32x32 digits). No timed assertions.
"""
from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="gtr serve needs the serve extra (pip install 'gtr-mar[serve]')")
pytest.importorskip("httpx", reason="starlette's TestClient needs httpx")

from cli_helpers import one_line_error, run  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from gtr.pipeline import Pipeline  # noqa: E402
from gtr.serve import create_app  # noqa: E402
from gtr.serve.batcher import Batcher  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tiny_shipped() -> bool:
    return (ROOT / "gtr/assets/tiny/mar_tiny.safetensors").exists()


_EXPORTED: dict = {}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    if os.environ.get("GTR_SERVE_BUNDLE"):  # a mar-tiny bundle made earlier (`gtr-export --model mar-tiny`)
        return Path(os.environ["GTR_SERVE_BUNDLE"])
    if not tiny_shipped():
        pytest.skip("mar-tiny weights are not shipped in gtr/assets/tiny")
    if "path" not in _EXPORTED:  # once per session (test_serve_page.py uses it too)
        path = tmp_path_factory.mktemp("serve") / "mar-tiny-fp32.plan"
        r = run("export", "--model", "mar-tiny", "--plan", "gtr", "--plan", "mar-64", "-o", path)
        assert r.exit_code == 0, r.output
        _EXPORTED["path"] = path
    return _EXPORTED["path"]


@pytest.fixture(scope="module")
def pipe(bundle):
    with Pipeline(bundle, device="cpu") as p:
        yield p


def decode(b64_or_bytes) -> np.ndarray:
    raw = base64.b64decode(b64_or_bytes) if isinstance(b64_or_bytes, str) else b64_or_bytes
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Within one pixel level (float rounding of another batch shape)."""
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


class Gated:
    """A pipeline whose sampling calls wait for `gate` (and can be made to fail): makes queue states
    deterministic. Records the items of every call."""

    def __init__(self, pipe, fail=False):
        self.pipe, self.fail = pipe, fail
        self.gate = threading.Event()
        self.calls: list[list] = []
        self.config, self.plans, self.bundle = pipe.config, pipe.plans, pipe.bundle

    def plan(self, *a, **k):
        return self.pipe.plan(*a, **k)

    def generate_items(self, items, **settings):
        self.calls.append(list(items))
        assert self.gate.wait(60), "test gate never opened"
        if self.fail:
            raise RuntimeError("boom: a bug in sampling")
        return self.pipe.generate_items(items, **settings)


def wait_until(condition, what: str, limit: float = 30.0):
    """Poll `condition` until it holds (a bound against hanging, not a timing assertion)."""
    end = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < end, f"never happened: {what}"
        time.sleep(0.01)


def post(client, body, **headers):
    return client.post("/v1/generate", content=json.dumps(body) if not isinstance(body, (bytes, str)) else body,
                       headers=headers)


# ---- API

def test_model_health_metrics_page_and_schema(pipe):
    with TestClient(create_app(pipe, warmup=False)) as client:
        model = client.get("/v1/model").json()
        assert model["model"] == "mar-tiny" and model["num_classes"] == 10 and model["precision"] == "fp32"
        assert model["class_names"][3] == "three" and len(model["class_names"]) == 10
        assert [p["name"] for p in model["plans"]] == ["gtr", "mar-64"] and model["default_plan"] == "gtr"
        assert client.get("/health").json()["status"] == "ok"
        schema = client.get("/openapi.json").json()
        body = schema["paths"]["/v1/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert {"class", "seed", "plan", "cfg", "temperature", "num_images"} <= set(body["properties"])
        page = client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "src=\"http" not in page.text and "href=\"http" not in page.text  # no CDN
        post(client, {"class": 1})
        text = client.get("/metrics").text
        for series in ('gtr_requests_total{route="/v1/generate",status="200"} 1', "gtr_batch_size_bucket",
                       "gtr_request_seconds_count 1", "gtr_queue_depth 0", "gtr_images_total 1"):
            assert series in text, series


def test_png_and_json_answers_are_the_pipelines_images(pipe):
    with TestClient(create_app(pipe, warmup=False)) as client:
        r = post(client, {"class": 3, "seed": 5}, accept="image/png")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.headers["x-gtr-plan"] == "gtr"
        png = decode(r.content)
        r = post(client, {"class": 3, "seed": 5, "num_images": 3})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        data = r.json()
        assert data["plan"] == {"name": "gtr", "cfg": 2.0, "temperature": 1.0}
        assert set(data["timings"]) == {"queue_s", "sample_s", "total_s"} and data["num_images"] == 3
        images = [decode(b) for b in data["images"]]
    want = pipe.generate([3], seed=5, num_images=3, progress=False)  # gtr.load(B)([3], seed=5, num_images=3)
    assert all(close(a, b) for a, b in zip(images, want))
    assert close(png, want[0])


def test_cfg_and_temperature_overrides_reach_the_sampler(pipe):
    with TestClient(create_app(pipe, warmup=False)) as client:
        data = post(client, {"class": 4, "seed": 1, "cfg": 1.0, "temperature": 0.9}).json()
    assert data["plan"] == {"name": "gtr", "cfg": 1.0, "temperature": 0.9}
    want = pipe.generate_items([(4, 1, 0)], cfg=1.0, temperature=0.9)[0]
    assert close(decode(data["images"][0]), want)


# ---- batching

def test_concurrent_requests_merge_and_each_image_is_its_own(pipe, bundle, tmp_path):
    """4 concurrent requests -> one sampling call of 4; each image equals the same request served alone,
    gtr.load's image and gtr-run's PNG for that class, seed and index (within one pixel level)."""
    requests = [{"class": 7, "seed": 0}, {"class": 2, "seed": 11}, {"class": 7, "seed": 3}, {"class": None, "seed": 0}]
    app = create_app(pipe, max_batch=4, max_wait_ms=20_000, warmup=False)  # waits for company, then full: go
    with TestClient(app) as client:
        answers = [None] * len(requests)

        def ask(k):
            answers[k] = post(client, requests[k])

        threads = [threading.Thread(target=ask, args=(k,)) for k in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(a is not None and a.status_code == 200 for a in answers), answers
        assert app.state.batcher.calls == 1 and all(a.json()["batch_sizes"] == [4] for a in answers)
        batched = [decode(a.json()["images"][0]) for a in answers]
    with TestClient(create_app(pipe, max_batch=1, warmup=False)) as client:
        alone = [decode(post(client, r).json()["images"][0]) for r in requests]
    loaded = [pipe.generate(None if r["class"] is None else [r["class"]], seed=r["seed"], progress=False)[0]
              for r in requests]
    for b, a, g in zip(batched, alone, loaded):
        assert close(b, a) and close(b, g)
    assert not np.array_equal(batched[0], batched[2])  # another seed, another image
    out = tmp_path / "seven.png"
    r = run("run", bundle, "--class", 7, "--seed", 3, "-o", out)
    assert r.exit_code == 0, r.output
    assert close(batched[2], np.asarray(Image.open(out).convert("RGB")))


def test_batcher_splits_large_requests_and_keeps_settings_apart():
    import asyncio

    calls = []

    def fake_run(items, plan, cfg, temperature):
        calls.append((len(items), plan, cfg))
        return np.stack([np.full((2, 2, 3), i[1], np.uint8) for i in items])

    async def main():
        b = Batcher(fake_run, max_batch=3, max_wait_s=5.0, queue_size=8)
        b.start()
        big = b.submit(("gtr", 2.0, 1.0), [(1, 10, i) for i in range(5)])
        other = b.submit(("gtr", 1.0, 1.0), [(1, 20, 0)])
        small = b.submit(("gtr", 2.0, 1.0), [(2, 30, 0)])
        results = await asyncio.gather(big.future, other.future, small.future)
        await b.stop()
        return big, other, small, results

    big, other, small, results = asyncio.run(main())
    # big (5) + small (1) share the key: calls of 3 then 3; the cfg=1 request runs alone
    assert sorted(calls) == sorted([(3, "gtr", 2.0), (3, "gtr", 2.0), (1, "gtr", 1.0)])
    assert big.batch_sizes == [3, 3] and small.batch_sizes == [3] and other.batch_sizes == [1]
    results = [np.stack(r) for r in results]  # one result per item
    assert [r.shape[0] for r in results] == [5, 1, 1]
    assert (results[0][:, 0, 0, 0] == 10).all() and results[1][0, 0, 0, 0] == 20 and results[2][0, 0, 0, 0] == 30


def test_a_job_cancelled_before_its_batch_starts_is_dropped():
    import asyncio

    calls, gate = [], threading.Event()

    def slow_run(items, *settings):
        calls.append(list(items))
        gate.wait(30)
        return np.zeros((len(items), 2, 2, 3), np.uint8)

    async def main():
        from gtr.serve.metrics import Metrics
        metrics = Metrics()
        b = Batcher(slow_run, max_batch=1, max_wait_s=0.0, queue_size=4, metrics=metrics)
        b.start()
        first = b.submit(("gtr", 2.0, 1.0), [(1, 0, 0)])
        while not b.busy:
            await asyncio.sleep(0.005)
        gone = b.submit(("gtr", 2.0, 1.0), [(2, 0, 0)])
        assert b.cancel(gone, "client_gone") is True  # none of it had started: dropped
        gate.set()
        await first.future
        await b.stop()
        return metrics

    metrics = asyncio.run(main())
    assert calls == [[(1, 0, 0)]]
    assert metrics.dropped.value(reason="client_gone") == 1


# ---- backpressure

def test_full_queue_is_503_with_retry_after_and_the_loop_keeps_answering(pipe):
    gated = Gated(pipe)
    app = create_app(gated, max_batch=1, max_wait_ms=0, queue=1, warmup=False)
    with TestClient(app) as client:
        answers = {}
        first = threading.Thread(target=lambda: answers.setdefault("first", post(client, {"class": 1})))
        first.start()
        wait_until(lambda: app.state.batcher.busy, "the first request sampling")
        second = threading.Thread(target=lambda: answers.setdefault("second", post(client, {"class": 2})))
        second.start()
        wait_until(lambda: app.state.batcher.depth == 1, "the second request queued")
        full = post(client, {"class": 3})
        assert full.status_code == 503 and int(full.headers["retry-after"]) >= 1
        assert "queue is full" in full.json()["error"]
        assert client.get("/health").status_code == 200  # sampling runs in a worker thread
        assert "gtr_queue_depth 1" in client.get("/metrics").text
        gated.gate.set()
        first.join(60)
        second.join(60)
        assert answers["first"].status_code == 200 and answers["second"].status_code == 200
        assert 'gtr_requests_rejected_total{reason="queue_full"} 1' in client.get("/metrics").text


def test_timeout_is_503_and_a_queued_request_that_timed_out_never_samples(pipe):
    gated = Gated(pipe)
    app = create_app(gated, max_batch=1, max_wait_ms=0, queue=4, timeout_s=0.5, warmup=False)
    with TestClient(app) as client:
        answers = {}
        first = threading.Thread(target=lambda: answers.setdefault("first", post(client, {"class": 1})))
        first.start()
        wait_until(lambda: app.state.batcher.busy, "the first request sampling")
        late = post(client, {"class": 2})  # waits behind the gated call, then times out
        assert late.status_code == 503 and "timed out" in late.json()["error"] and "retry-after" in late.headers
        first.join(60)  # also timed out, while sampling
        assert answers["first"].status_code == 503
        gated.gate.set()
        wait_until(lambda: not app.state.batcher.busy, "the gated call to end")
        assert [c[0][0] for c in gated.calls] == [1]  # the queued request was dropped, not sampled
        assert 'gtr_requests_dropped_total{reason="timeout"} 1' in client.get("/metrics").text


# ---- bad input

BAD = [
    ({"class": 10}, 422, "out of range"),
    ({"class": -1}, 422, "class"),
    ({"class": 1.5}, 422, "class"),
    ({"class": "3"}, 422, "class"),
    ({"class": True}, 422, "class"),
    ({"seed": -1}, 422, "seed"),
    ({"seed": 2 ** 70}, 422, "seed"),
    ({"num_images": 0}, 422, "num_images"),
    ({"num_images": -3}, 422, "num_images"),
    ({"num_images": 10 ** 12}, 422, "num_images"),
    ({"plan": "mar-999"}, 422, "no plan 'mar-999'"),
    ({"cfg": -1}, 422, "cfg"),
    ({"cfg": 1e9}, 422, "cfg"),
    ({"temperature": 0}, 422, "temperature"),
    ({"clss": 3}, 422, "unknown field"),
    ("[3]", 422, "JSON object"),
    ('{"class": NaN}', 422, "class"),
    ('{"class": 3, "cfg": NaN}', 422, "cfg"),
    ('{"class": 3, "temperature": Infinity}', 422, "temperature"),
    ('{"cfg": 1e999}', 422, "cfg"),
    ('{"class": 3', 400, "malformed JSON"),
    ("not json", 400, "malformed JSON"),
    ("", 400, "empty body"),
    ("{\"seed\": " + "9" * 5000 + "}", 400, "number"),
]


@pytest.mark.parametrize("body,status,words", BAD, ids=[str(b)[:40] for b, _, _ in BAD])
def test_bad_input_is_a_4xx_with_one_line(pipe, body, status, words, _client):
    r = post(_client, body)
    assert r.status_code == status, r.text
    message = r.json()["error"]
    assert words in message and "\n" not in message and len(r.json()) == 1


@pytest.fixture(scope="module")
def _client(pipe):
    with TestClient(create_app(pipe, warmup=False, max_images=8)) as client:
        yield client


def test_oversized_body_png_for_many_and_unknown_routes(_client):
    r = _client.post("/v1/generate", content=b'{"class": 1, "plan": "' + b"x" * 70_000 + b'"}')
    assert r.status_code == 413 and "body" in r.json()["error"]
    r = _client.post("/v1/generate", content=b"x" * 70_000, headers={"content-length": "70000"})
    assert r.status_code == 413
    r = post(_client, {"class": 1, "num_images": 2}, accept="image/png")
    assert r.status_code == 406 and "num_images" in r.json()["error"]
    assert _client.get("/v1/nothing").status_code == 404 and "error" in _client.get("/v1/nothing").json()
    assert _client.get("/v1/generate").status_code == 405
    assert post(_client, {"num_images": 9}).status_code == 422  # max_images=8


def test_a_bug_is_a_500_with_one_line_and_a_logged_traceback(pipe, caplog):
    gated = Gated(pipe, fail=True)
    gated.gate.set()
    with TestClient(create_app(gated, warmup=False), raise_server_exceptions=False) as client:
        with caplog.at_level("ERROR", logger="gtr.serve"):
            r = post(client, {"class": 1})
        assert r.status_code == 500 and "internal error" in r.json()["error"]
        assert client.get("/health").status_code == 200
    assert any(rec.exc_info and "boom" in str(rec.exc_info[1]) for rec in caplog.records)


def test_imagenet_class_names_ship_with_the_package():
    from gtr.serve.app import class_names
    names = class_names(1000)
    assert len(names) == 1000 and names[0].startswith("tench") and names[207] == "golden retriever"
    assert class_names(10)[9] == "nine" and class_names(5)[4] == "class 4"
    assert class_names(26)[0] == "letter A" and class_names(26)[25] == "letter Z"


# ---- command line

def test_command_line_errors_are_one_line_before_serving(bundle, tmp_path):
    assert "missing.plan" in one_line_error(run("serve", tmp_path / "missing.plan", "--port", 0))
    assert "--port" in one_line_error(run("serve", bundle, "--port", 70000))
    assert "--max-batch" in one_line_error(run("serve", bundle, "--max-batch", 0))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert f"cannot listen on 127.0.0.1:{port}" in one_line_error(run("serve", bundle, "--port", port))
    assert "--host" in one_line_error(run("serve", bundle, "--host", "no.such.host.invalid", "--port", 0))


# ---- a real server process

class Server:
    """`python -m gtr serve BUNDLE --port 0 ...` as a subprocess; `url` once it says where it listens."""

    def __init__(self, bundle, *args):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "gtr", "serve", str(bundle), "--port", "0",
                                      "--no-access-log", *map(str, args)], stderr=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
        self.log: list[str] = []
        self.url = None
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.log.append(line)
                if " on http://" in line and self.url is None:
                    self.url = line.split(" on ", 1)[1].split("/ ", 1)[0]
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(120) or self.url is None:
            self.proc.kill()
            raise AssertionError("server did not start:\n" + "".join(self.log))

    def request(self, path, body=None, timeout=120):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def metric(self, name) -> float:
        for line in self.request("/metrics")[1].decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)


def test_sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_0(bundle, pipe):
    server = Server(bundle, "--max-batch", 2)
    try:
        answers = {}
        bodies = {"a": {"class": 6, "seed": 2, "num_images": 6}, "b": {"class": 9, "seed": 4, "num_images": 6}}
        threads = [threading.Thread(target=lambda k=k: answers.setdefault(k, server.request("/v1/generate", bodies[k])))
                   for k in bodies]
        for t in threads:
            t.start()
        wait_until(lambda: server.metric("gtr_queue_depth") >= 1 and server.metric("gtr_sampling") == 1,
                   "both requests in the server")
        server.proc.send_signal(signal.SIGTERM)

        def refused():
            try:
                status, _ = server.request("/health", timeout=5)
            except (urllib.error.URLError, ConnectionError):
                return True  # the listening socket is closed
            return status == 503
        wait_until(refused, "new requests refused after SIGTERM", limit=60)
        for t in threads:
            t.join(120)
        assert server.proc.wait(60) == 0, "".join(server.log)
        for k, (status, raw) in answers.items():
            assert status == 200, raw
            got = [decode(b) for b in json.loads(raw)["images"]]
            b = bodies[k]
            want = pipe.generate([b["class"]], seed=b["seed"], num_images=6, progress=False)
            assert len(got) == 6 and all(close(x, y) for x, y in zip(got, want))
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            server.request("/health", timeout=5)
    finally:
        server.stop()


def test_a_client_that_went_away_before_its_batch_is_dropped(bundle):
    server = Server(bundle, "--max-batch", 1)
    try:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        answer = {}
        long = threading.Thread(target=lambda: answer.setdefault(
            "long", server.request("/v1/generate", {"class": 1, "num_images": 16})))
        long.start()
        wait_until(lambda: server.metric("gtr_sampling") == 1, "the long request sampling")
        body = b'{"class": 5}'
        with socket.create_connection((host, int(port))) as s:  # send a request, then hang up
            s.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            wait_until(lambda: server.metric("gtr_queue_depth") == 1, "the second request queued")
        wait_until(lambda: server.metric('gtr_requests_dropped_total{reason="client_gone"}') == 1,
                   "the request of the client that went away dropped")
        long.join(120)
        assert answer["long"][0] == 200
        assert server.metric("gtr_images_total") == 16  # the dropped request made no image
        assert server.request("/health")[0] == 200
    finally:
        server.stop()
