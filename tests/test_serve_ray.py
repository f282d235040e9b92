"""examples/ray_serve.py: the gtr serve app under Ray Serve (2 replicas) answers the pipeline's image.
Skips where Ray Serve is not installed (it is not in the dev extra: pip install 'ray[serve]')."""
from __future__ import annotations

import json
import socket
import sys
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="gtr serve needs the serve extra")
pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'ray[serve]')")

from test_serve import bundle, close, decode, pipe  # noqa: E402,F401  (the module fixtures and helpers)

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_serve_example_answers_the_pipelines_images(bundle, pipe, monkeypatch):
    import ray
    from ray import serve

    monkeypatch.setenv("GTR_BUNDLE", str(bundle))
    monkeypatch.setenv("GTR_REPLICAS", "2")
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("examples.ray_serve", None)
    from examples import ray_serve

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(ray_serve.build(str(bundle), max_batch=4), route_prefix="/", name="gtr")
        base = f"http://127.0.0.1:{port}"
        for cls, seed in ((3, 0), (8, 5), (3, 0)):
            req = urllib.request.Request(base + "/v1/generate", data=json.dumps({"class": cls, "seed": seed}).encode(),
                                         method="POST")
            with urllib.request.urlopen(req, timeout=120) as r:
                data = json.loads(r.read())
            assert close(decode(data["images"][0]), pipe.generate([cls], seed=seed, progress=False)[0])
        with urllib.request.urlopen(base + "/v1/model", timeout=60) as r:
            assert json.loads(r.read())["model"] == "mar-tiny"
        with urllib.request.urlopen(base + "/health", timeout=60) as r:
            assert r.status == 200
    finally:
        serve.shutdown()
        ray.shutdown()
