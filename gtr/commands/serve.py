"""gtr serve: an HTTP server over a bundle (gtr.serve: FastAPI on uvicorn)."""
from __future__ import annotations

import socket

import click

from gtr import inputs
from gtr.commands.errors import friendly_errors
from gtr.commands.numbers import Float, Int
from gtr.runtime.backends import BACKENDS
from gtr.runtime.providers import DEVICES


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, bound here so that a bad host or a port in use is a one-line
    error before the bundle loads (uvicorn then serves on it)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise click.ClickException(f"--host {host}: {e.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: reuse TIME_WAIT, not a live port
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, told when shutdown begins (the app refuses new requests from then on) and
        exiting 0 after a graceful shutdown instead of re-raising the signal."""
        on_exit = None

        def handle_exit(self, sig, frame):
            if self.on_exit is not None:
                self.on_exit()
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    return Server


def _log_config(level: str) -> dict:
    import copy

    from uvicorn.config import LOGGING_CONFIG
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["gtr.serve"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=Int(inputs.PORT), default=8000, show_default=True,
              help="Port to listen on (0: any free port; the address is printed).")
@click.option("--max-batch", type=Int(inputs.BATCH), default=16, show_default=True,
              help="Most images in one sampling call (1: no batching).")
@click.option("--max-wait-ms", type=Float(inputs.MAX_WAIT_MS), default=10.0, show_default=True,
              help="How long the oldest waiting request waits for company before its call starts.")
@click.option("--queue", type=Int(inputs.QUEUE), default=64, show_default=True,
              help="Requests that may wait; more are answered 503 with Retry-After.")
@click.option("--timeout", "timeout_s", type=Float(inputs.TIMEOUT_S), default=120.0, show_default=True,
              help="Seconds a request may take from arrival (then 503).")
@click.option("--read-timeout", "read_timeout_s", type=Float(inputs.READ_TIMEOUT_S), default=10.0, show_default=True,
              help="Seconds a client may pause while sending its request body (then 408 and the connection "
                   "is closed).")
@click.option("--max-images", type=Int(inputs.BATCH), default=16, show_default=True,
              help="Most images (num_images) in one request.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="onnxruntime execution provider.")
@click.option("--threads", type=Int(inputs.THREADS), help="onnxruntime threads (default: the runtime's choice).")
@click.option("--backend", type=click.Choice(("auto",) + BACKENDS), default="auto", show_default=True,
              help="auto: the bundle's TensorRT engines when they match this GPU (gtr-build), else onnxruntime.")
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="Log one line per request.")
@click.option("--log-level", type=click.Choice(("debug", "info", "warning", "error")), default="info",
              show_default=True)
@friendly_errors
def serve_cmd(bundle, host, port, max_batch, max_wait_ms, queue, timeout_s, read_timeout_s, max_images, device,
              threads, backend, access_log, log_level):
    """Serve a .plan bundle over HTTP: POST /v1/generate, GET /v1/model, /health, /metrics, a web page at /.

    Concurrent requests with the same plan, cfg and temperature are merged into one sampling call of up
    to --max-batch images; an image does not depend on what it was batched with. SIGTERM (or Ctrl+C)
    finishes the requests in flight, refuses new ones and exits 0.

    \b
    Examples:
      gtr serve mar-tiny-fp32.plan                      # http://127.0.0.1:8000/
      curl -d '{"class": 3, "seed": 0}' -H 'Accept: image/png' localhost:8000/v1/generate -o three.png
      gtr serve mar-l-fp16.plan --host 0.0.0.0 --max-batch 32 --queue 256 --device cuda
    """
    from gtr.extras import require
    require("gtr serve", "serve", "runtime")
    import uvicorn

    from gtr.pipeline import Pipeline
    from gtr.serve import create_app

    sock = _listen(host, port)
    try:
        pipe = Pipeline(bundle, device=device, backend=backend, threads=threads)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        if pipe.random_weights:
            click.echo("note: this bundle holds RANDOM (untrained) weights; images are noise", err=True)

        def ready():
            click.echo(f"gtr serve: {bundle} ({pipe.config.name}, {pipe.bundle.precision}, plans "
                       f"{', '.join(pipe.plans)}; {pipe.device_name}) on http://{shown}:{bound}/ "
                       f"(max batch {max_batch}, max wait {max_wait_ms:g} ms, queue {queue})", err=True)

        app = create_app(pipe, max_batch=max_batch, max_wait_ms=max_wait_ms, queue=queue, timeout_s=timeout_s,
                         read_timeout_s=read_timeout_s, max_images=max_images, close_pipeline=True, on_ready=ready)
        config = uvicorn.Config(app, log_config=_log_config(log_level), log_level=log_level, access_log=access_log,
                                lifespan="on", timeout_graceful_shutdown=None, server_header=False)
        server = _server_class()(config)
        server.on_exit = app.state.batcher.close_intake
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise click.ClickException("the server did not start (see the log above)")
