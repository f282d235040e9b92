"""gtr serve: an HTTP server over a bundle (FastAPI on uvicorn, the `serve` extra).

    from gtr.pipeline import Pipeline
    from gtr.serve import create_app
    app = create_app(Pipeline("mar-tiny-fp32.plan"), max_batch=16, max_wait_ms=10, queue=64)
    # uvicorn.run(app) -- or `gtr serve mar-tiny-fp32.plan`

Layer L3: imports the pipeline and below, never the command line or the `gtr` facade; no torch.
"""
from __future__ import annotations


def create_app(pipe, **settings):
    """The ASGI (FastAPI) app serving `pipe`; settings: see gtr.serve.app.create_app."""
    from gtr.extras import require
    require("gtr serve", "serve")
    from gtr.serve.app import create_app as _create
    return _create(pipe, **settings)


__all__ = ["create_app"]
