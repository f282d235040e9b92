"""gtr serve and slow, oversized, truncated and abandoned requests, from a raw socket on loopback
against a real uvicorn server (the app over a stand-in pipeline: these are HTTP tests, not model tests).

Every client gets an answer it can read: 413 after an oversized body was read (and thrown away), 408
when the body stalls, and the server keeps serving the next client."""
from __future__ import annotations

import json
import select
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi", reason="gtr serve needs the serve extra (pip install 'gtr-mar[serve]')")
pytest.importorskip("uvicorn", reason="gtr serve needs the serve extra (pip install 'gtr-mar[serve]')")

from serve_stub import LiveServer, StubPipe  # noqa: E402

from gtr.serve import create_app  # noqa: E402
from gtr.serve.guard import DISCARD  # noqa: E402

READ_TIMEOUT = 0.5


@pytest.fixture(scope="module")
def server():
    pipe = StubPipe()
    with LiveServer(create_app(pipe, warmup=False, read_timeout_s=READ_TIMEOUT)) as port:
        yield port, pipe


def head(length: int, extra: bytes = b"") -> bytes:
    return (b"POST /v1/generate HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % length)


def exchange(port: int, data: bytes, limit: float = 10.0) -> tuple[int, dict, bytes, float]:
    """Send `data`, read until the server closes; (status, headers, body, seconds until the close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as s:
        t0 = time.monotonic()
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):  # a socket.timeout here means the server never closed
            out += chunk
        seconds = time.monotonic() - t0
    top, _, body = out.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body, seconds


def test_a_normal_request_over_a_raw_socket(server):
    port, _ = server
    body = json.dumps({"class": 1, "seed": 2}).encode()
    status, headers, answer, _ = exchange(port, head(len(body), b"Connection: close\r\n") + body)
    assert status == 200 and json.loads(answer)["class"] == 1


def test_an_oversized_body_is_read_then_answered_413(server):
    port, pipe = server
    calls = pipe.calls
    body = b"x" * (1 << 20)  # 1 MiB: over the 64 KiB limit, under the discard bound
    status, headers, answer, _ = exchange(port, head(len(body)) + body)
    assert status == 413 and headers["connection"] == "close"
    assert "over 65536 bytes" in json.loads(answer)["error"] and pipe.calls == calls


def test_oversized_bodies_under_load_all_get_their_413(server):
    """Many clients sending large bodies at once: each reads its 413 (none is cut off mid-send)."""
    port, _ = server
    results, errors = [], []
    body = b"x" * (512 << 10)

    def client():
        try:
            results.append(exchange(port, head(len(body)) + body)[0])
        except OSError as e:  # BrokenPipeError / ConnectionResetError: what a premature close gives
            errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and results == [413] * 12


def test_a_body_announced_beyond_the_discard_bound_is_refused_unread(server):
    port, _ = server
    status, headers, answer, seconds = exchange(port, head(DISCARD * 100))
    assert status == 413 and headers["connection"] == "close" and seconds < 5


def test_a_stalled_body_gets_408_and_the_connection_is_closed(server):
    port, pipe = server
    calls = pipe.calls
    status, headers, answer, seconds = exchange(port, head(50) + b'{"class": 1,')  # 12 of 50 bytes
    assert status == 408 and headers["connection"] == "close"
    assert "not received within 0.5 s" in json.loads(answer)["error"]
    assert READ_TIMEOUT <= seconds < READ_TIMEOUT + 5 and pipe.calls == calls


def test_a_client_that_trickles_is_timed_out_too(server):
    """The read timeout bounds the whole body, not each pause: a byte every 0.2 s does not hold a worker."""
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head(50))
        t0, out = time.monotonic(), b""
        while not select.select([s], [], [], 0.2)[0]:  # until the server answers
            assert time.monotonic() - t0 < READ_TIMEOUT + 4, "no answer to a trickling client"
            s.sendall(b" ")
        while chunk := s.recv(65536):
            out += chunk
    assert out.startswith(b"HTTP/1.1 408")


def test_abandoned_requests_leave_the_server_serving(server):
    port, _ = server
    for data in (head(50), head(50) + b'{"cla', b"POST /v1/gen"):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(data)  # and go away
    body = json.dumps({"class": 3}).encode()
    status, _, answer, _ = exchange(port, head(len(body), b"Connection: close\r\n") + body)
    assert status == 200 and json.loads(answer)["class"] == 3


def test_an_empty_plan_name_is_a_422(server):
    port, _ = server
    body = json.dumps({"class": 1, "plan": ""}).encode()
    status, _, answer, _ = exchange(port, head(len(body), b"Connection: close\r\n") + body)
    assert status == 422 and "plan" in json.loads(answer)["error"]
