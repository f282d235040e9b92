"""The HTTP app: FastAPI routes over one Pipeline and one Batcher.

    POST /v1/generate   {class, seed, plan?, cfg?, temperature?, num_images?} -> PNG (Accept: image/png)
                        or JSON {images: [base64 PNG], plan, timings, ...}, or with Accept:
                        text/event-stream a step event per AR step, then that JSON (gtr/serve/events.py)
    GET  /v1/model      model, precision, plans, class names, limits
    GET  /health        200 {"status": "ok"}; 503 while shutting down
    GET  /metrics       Prometheus text
    GET  /              the web page
    GET  /openapi.json  the schema (no /docs: Swagger UI would load from a CDN)

Bad input is a 4xx with a one-line JSON body {"error": "..."}; a bug is a 500 {"error": "internal error"}
whose traceback goes to the log.
"""
from __future__ import annotations

import asyncio
import base64
import io
import logging
import time
from contextlib import asynccontextmanager
from importlib import resources

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gtr import inputs
from gtr._version import __version__
from gtr.configs import check_classes
from gtr.errors import GtrError, PlanError, RequestError
from gtr.serve.batcher import Batcher, Draining, QueueFull
from gtr.serve.guard import Guard
from gtr.serve.events import HEADERS as EVENT_HEADERS
from gtr.serve.events import KEEPALIVE, KEEPALIVE_S, StepFeed, sse
from gtr.serve.metrics import CONTENT_TYPE, Metrics
from gtr.serve.page import PAGE

log = logging.getLogger("gtr.serve")

MAX_SEED = inputs.MAX_SEED
MAX_BODY = 64 * 1024  # bytes of a request body; more is 413
ROUTES = ("/", "/v1/generate", "/v1/model", "/health", "/metrics", "/openapi.json")


class GenerateRequest(BaseModel):
    """One request: num_images images of one class, images 0..num_images-1 of (seed, class)."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    class_: int | None = Field(None, alias="class", ge=0, le=inputs.CLASS.hi,
                               description="Class id (0..num_classes-1); null or absent: unconditional.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Run seed; image i is image i of gtr-run --seed.")
    plan: str | None = Field(None, min_length=1, max_length=200,
                             description="One of the bundle's plans (default: the first).")
    cfg: float | None = Field(None, ge=inputs.CFG.lo, le=inputs.CFG.hi, allow_inf_nan=False,
                              description="CFG scale override.")
    temperature: float | None = Field(None, gt=0, le=10, allow_inf_nan=False,
                                      description="Diffusion temperature override.")
    num_images: int = Field(1, ge=1, description="Images of this class and seed (indices 0..num_images-1).")


def class_names(num_classes: int) -> list[str]:
    """Names shown on the page: ImageNet's for 1000-class models, digits for 10, letters for 26
    (mar-glyphs), else the ids."""
    if num_classes == 1000:
        text = resources.files("gtr").joinpath("assets/imagenet_classes.txt").read_text(encoding="utf-8")
        names = [line.strip() for line in text.splitlines() if line.strip()]
        if len(names) == 1000:
            return names
    if num_classes == 10:
        return ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    if num_classes == 26:
        return [f"letter {chr(ord('A') + i)}" for i in range(26)]
    return [f"class {i}" for i in range(num_classes)]


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message.strip().splitlines()[0] if message.strip() else "error"},
                        status_code=status, headers=headers)


def _validation_message(e: ValidationError) -> tuple[int, str]:
    err = e.errors(include_url=False)[0]
    if err["type"] == "json_invalid":
        return 400, f"malformed JSON: {err.get('ctx', {}).get('error', err['msg'])}"
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return 422, f"unknown field {loc!r}; fields: class, seed, plan, cfg, temperature, num_images"
    if err["type"] == "model_type":
        return 422, "the body must be a JSON object, e.g. {\"class\": 3, \"seed\": 0}"
    value = err.get("input")
    shown = "" if isinstance(value, (dict, list)) else f" (got {value!r:.60})"
    return 422, f"{loc}: {err['msg']}{shown}" if loc else err["msg"]


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


async def _client_gone(receive) -> None:
    """Returns when the client disconnects (the body is already read, so only a disconnect comes)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def create_app(pipe, *, max_batch: int = 16, max_wait_ms: float = 10.0, queue: int = 64,
               timeout_s: float = 120.0, max_images: int = 16, max_body: int = MAX_BODY,
               read_timeout_s: float = 10.0, warmup: bool = True, close_pipeline: bool = False,
               on_ready=None) -> FastAPI:
    """An ASGI app serving `pipe` (a gtr Pipeline, or anything with its generate_items / plan / config).

    max_batch: images per sampling call; max_wait_ms: how long the oldest request waits for company;
    queue: requests that may wait (more: 503); timeout_s: per request, from arrival (then 503);
    max_images: num_images limit of one request; warmup: one image before serving; on_ready(): called
    once the app is ready (the server prints its address there); read_timeout_s: to send a body (then 408).
    Each number is checked against its range in gtr.inputs (InputError)."""
    for name, value, r in (("max_batch", max_batch, inputs.BATCH), ("max_wait_ms", max_wait_ms, inputs.MAX_WAIT_MS),
                           ("queue", queue, inputs.QUEUE), ("timeout_s", timeout_s, inputs.TIMEOUT_S),
                           ("max_images", max_images, inputs.BATCH), ("read_timeout_s", read_timeout_s,
                                                                      inputs.READ_TIMEOUT_S)):
        r.check(value, name)
    metrics = Metrics(queue_depth=lambda: batcher.depth, queue_images=lambda: batcher.waiting_images,
                      busy=lambda: int(batcher.busy))  # read at scrape time
    config = pipe.config
    names = class_names(config.num_classes)
    plans = pipe.plans if isinstance(pipe.plans, dict) else {}
    default_plan = next(iter(plans), None)

    def run(items, plan, cfg, temperature, **progress):  # in the batcher's worker thread: sampling, PNGs
        return [_png(p) for p in pipe.generate_items(items, plan=plan, cfg=cfg, temperature=temperature,
                                                     **progress)]

    batcher = Batcher(run, max_batch=max_batch, max_wait_s=max_wait_ms / 1000.0, queue_size=queue,
                      metrics=metrics)
    retry_after = str(max(1, int(round(max_wait_ms / 1000.0 + 1))))

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        if warmup:
            await asyncio.get_running_loop().run_in_executor(None, run, [(0 if config.num_classes else None, 0, 0)],
                                                             default_plan, None, None)
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            await batcher.stop()
            if close_pipeline:
                pipe.close()

    app = FastAPI(title="gtr serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Images from a gtr .plan bundle, with dynamic batching.")
    app.state.batcher, app.state.metrics, app.state.pipeline = batcher, metrics, pipe

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception):  # a bug: log the traceback, answer one line
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=e)
        return _error(500, "internal error (a bug in gtr serve; the traceback is in the server log)")

    @app.exception_handler(404)
    async def not_found(request: Request, e):
        return _error(404, f"no route {request.url.path}; see /openapi.json")

    @app.exception_handler(405)
    async def bad_method(request: Request, e):
        return _error(405, f"{request.method} is not allowed on {request.url.path}")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE)

    @app.get("/health")
    async def health():
        if batcher.draining:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        return {"status": "ok", "queue": batcher.depth}

    @app.get("/metrics", response_class=Response)
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/model")
    async def model():
        bundle = getattr(pipe, "bundle", None)
        return {
            "model": config.name, "num_classes": config.num_classes, "image_size": config.img_size,
            "precision": getattr(bundle, "precision", None), "device": getattr(pipe, "device_name", None),
            "random_weights": bool(getattr(pipe, "random_weights", False)),
            "plans": [{"name": p.name, "cfg": p.cfg, "temperature": p.temperature, "steps": p.num_steps}
                      for p in plans.values()],
            "default_plan": default_plan, "class_names": names,
            "limits": {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "queue": queue,
                       "timeout_s": timeout_s, "max_images": max_images, "max_body": max_body},
            "gtr_version": __version__,
        }

    schema = GenerateRequest.model_json_schema(by_alias=True)
    schema["properties"]["num_images"]["maximum"] = max_images

    @app.post("/v1/generate", openapi_extra={"requestBody": {"required": True, "content": {
              "application/json": {"schema": schema}}}},
              responses={200: {"content": {"image/png": {}, "application/json": {}, "text/event-stream": {}},
                                "description": "a PNG (Accept: image/png), step events then the JSON "
                                               "(Accept: text/event-stream), else JSON with base64 PNGs"},
                         400: {"description": "malformed JSON"}, 406: {"description": "PNG for several images"},
                         413: {"description": "body too large"}, 422: {"description": "bad value"},
                         503: {"description": "queue full, timed out or shutting down (Retry-After)"}})
    async def generate(request: Request):
        arrived = time.perf_counter()
        body = await request.body()
        if not body.strip():
            return _error(400, "empty body: send a JSON object, e.g. {\"class\": 3, \"seed\": 0}")
        try:
            req = GenerateRequest.model_validate_json(body)
        except ValidationError as e:
            return _error(*_validation_message(e))
        if req.num_images > max_images:
            return _error(422, f"num_images: at most {max_images} per request (got {req.num_images})")
        accept = request.headers.get("accept", "")
        want_events = "text/event-stream" in accept
        want_png = "image/png" in accept and "application/json" not in accept and not want_events
        if want_png and req.num_images > 1:
            return _error(406, "a PNG answer holds one image: ask for JSON (Accept: application/json) "
                               "for num_images > 1")
        try:
            plan = pipe.plan(req.plan, req.cfg, req.temperature)
            check_classes([req.class_], config.num_classes)
        except (RequestError, PlanError) as e:
            return _error(422, str(e))
        key = (plan.name, plan.cfg, plan.temperature)
        items = [(req.class_, req.seed, i) for i in range(req.num_images)]
        feed = StepFeed() if want_events else None
        try:
            job = batcher.submit(key, items, on_step=feed.on_step if feed else None)
        except QueueFull as e:
            metrics.rejected.inc(reason="queue_full")
            return _error(503, f"busy: {e}; retry later", {"Retry-After": retry_after})
        except Draining as e:
            metrics.rejected.inc(reason="shutting_down")
            return _error(503, str(e), {"Retry-After": retry_after})
        if want_events:
            feed.watch(job.future)
            return StreamingResponse(stream(feed, job, arrived, req, plan), media_type="text/event-stream",
                                     headers={**EVENT_HEADERS, "X-Gtr-Plan": plan.name})

        gone = asyncio.ensure_future(_client_gone(request.receive))
        try:
            left = timeout_s - (time.perf_counter() - arrived)
            done, _ = await asyncio.wait({job.future, gone}, timeout=max(left, 0),
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if job.future not in done:
            if gone in done:
                batcher.cancel(job, "client_gone")
                return _error(499, "client closed the request")  # nobody reads it
            batcher.cancel(job, "timeout")
            return _error(503, f"timed out after {timeout_s:g} s", {"Retry-After": retry_after})
        status, data, pngs = answer(job, arrived, req, plan)
        if status != 200:
            return _error(status, data["error"])
        headers = {"X-Gtr-Plan": plan.name, "X-Gtr-Seconds": f"{data['timings']['total_s']:.4f}",
                   "X-Gtr-Batch-Size": ",".join(map(str, job.batch_sizes))}
        if want_png:
            return Response(pngs[0], media_type="image/png", headers=headers)
        return JSONResponse(data, headers=headers)

    def answer(job, arrived, req, plan) -> tuple[int, dict, list | None]:
        """(status, JSON body, PNGs) of a finished job."""
        try:
            pngs = job.future.result()
        except GtrError as e:  # the request was checked above; reaching here means the bundle refused it
            return 422, {"error": str(e).strip().splitlines()[0]}, None
        except Exception as e:  # noqa: BLE001 - a bug
            log.error("sampling failed for %s", job.items[:1], exc_info=e)
            return 500, {"error": "internal error (a bug in gtr serve; the traceback is in the server log)"}, None
        total = time.perf_counter() - arrived
        queued = (job.started - job.arrived) if job.started is not None else 0.0
        metrics.latency.observe(total)
        timings = {"queue_s": round(queued, 4), "sample_s": round(job.sample_seconds, 4), "total_s": round(total, 4)}
        return 200, {
            "images": [base64.b64encode(p).decode("ascii") for p in pngs],
            "class": req.class_, "seed": req.seed, "num_images": req.num_images,
            "plan": {"name": plan.name, "cfg": plan.cfg, "temperature": plan.temperature},
            "batch_sizes": job.batch_sizes, "timings": timings,
        }, pngs

    async def stream(feed, job, arrived, req, plan):
        """The events of a queued job (gtr/serve/events.py): its steps, then its answer; the same
        timeout as a JSON request; a client that goes away takes its job out of the queue."""
        try:
            while (left := timeout_s - (time.perf_counter() - arrived)) > 0:
                try:
                    step = await feed.next(min(left, KEEPALIVE_S))
                except asyncio.TimeoutError:
                    yield KEEPALIVE
                    continue
                if step is None:
                    status, data, _ = answer(job, arrived, req, plan)
                    yield sse("result", data) if status == 200 else sse("error", {**data, "status": status})
                    return
                yield sse("step", {"plan": plan.name, "step": step[0], "steps": step[1]})
            batcher.cancel(job, "timeout")
            yield sse("error", {"error": f"timed out after {timeout_s:g} s", "status": 503})
        finally:
            if not job.future.done():
                batcher.cancel(job, "client_gone")

    app.add_middleware(Guard, metrics=metrics, max_body=max_body, read_timeout_s=read_timeout_s, routes=ROUTES)
    return app
