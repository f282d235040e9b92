"""A stand-in for a gtr Pipeline that answers at once (blank 8x8 images), with real plans and the
bundle's plan rules, so that server tests about HTTP behaviour need no model; and a real uvicorn
server over an app on a loopback port, in a thread."""
from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace

import numpy as np

from gtr.errors import UnknownPlanError
from gtr.plan import build_plan


class StubPipe:
    def __init__(self, num_classes: int = 10):
        self.config = SimpleNamespace(name="stub", num_classes=num_classes, img_size=8)
        self.plans = {"gtr": build_plan("gtr", (8, 8), cfg=2.0), "mar-4": build_plan("mar-4", (8, 8))}
        self.calls = 0

    def plan(self, name=None, cfg=None, temperature=None):
        name = name or next(iter(self.plans))
        if name not in self.plans:
            raise UnknownPlanError(f"the bundle has no plan {name!r}; it has: {', '.join(self.plans)}")
        plan = self.plans[name]
        plan = plan if cfg is None else plan.replace(cfg=cfg)
        return plan if temperature is None else plan.replace(temperature=temperature)

    def generate_items(self, items, plan=None, cfg=None, temperature=None, **progress):
        self.calls += 1
        return np.zeros((len(items), 8, 8, 3), np.uint8)

    def close(self):
        pass


class LiveServer:
    """uvicorn serving `app` on 127.0.0.1:<free port> in a thread (`with LiveServer(app) as port:`)."""

    def __init__(self, app):
        import uvicorn
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> int:
        self.thread.start()
        end = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < end and self.thread.is_alive(), "the server did not start"
            time.sleep(0.01)
        return self.sock.getsockname()[1]

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
