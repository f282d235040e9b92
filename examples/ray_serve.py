"""gtr serve under Ray Serve: the same FastAPI app, one pipeline per replica, Ray's proxy in front.

    pip install 'gtr-mar[cpu,serve]' 'ray[serve]'
    GTR_BUNDLE=mar-tiny-fp32.plan serve run examples.ray_serve:app      # or: python examples/ray_serve.py
    curl -d '{"class": 3}' -H 'Accept: image/png' localhost:8000/v1/generate -o three.png

Each replica builds its own Pipeline and app (`__serve_build_asgi_app__` runs on the replica, so no
onnxruntime session is pickled) and batches its own requests; replicas hold no state, so Ray can route
any request to any of them. Ray's own @serve.batch is not needed: the app batches already.
"""
from __future__ import annotations

import os

from ray import serve

BUNDLE = os.environ.get("GTR_BUNDLE", "mar-tiny-fp32.plan")
REPLICAS = int(os.environ.get("GTR_REPLICAS", "2"))


@serve.deployment(num_replicas=REPLICAS, ray_actor_options={"num_cpus": 1})
@serve.ingress()
class GtrServe:
    def __init__(self, bundle: str, threads: int = 1, **settings):
        self.bundle, self.threads, self.settings = bundle, threads, settings

    def __serve_build_asgi_app__(self):
        from gtr.pipeline import Pipeline
        from gtr.serve import create_app
        pipe = Pipeline(self.bundle, device="auto", threads=self.threads)
        return create_app(pipe, close_pipeline=True, **self.settings)


def build(bundle: str = BUNDLE, **settings):
    """The Ray Serve application (max_batch, max_wait_ms, queue, timeout_s: as gtr serve's options)."""
    return GtrServe.bind(os.path.abspath(bundle), **settings)


app = build(max_batch=16, max_wait_ms=10, queue=64)

if __name__ == "__main__":
    import time
    serve.run(app, route_prefix="/")
    print(f"serving {BUNDLE} on http://127.0.0.1:8000/ with {REPLICAS} replicas (Ctrl+C to stop)")
    while True:
        time.sleep(3600)
