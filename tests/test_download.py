"""gtr download / gtr-export --download against an HTTP server on 127.0.0.1 started by the test.

The server serves small files in the official layout (mar-b/checkpoint-last.pth, kl16.ckpt) through
$GTR_MIRROR and can cut a transfer short, send an HTML page instead, or ignore Range requests.
No test contacts the official URLs.
"""
import hashlib
import http.server
import os
import re
import threading

import pytest

from gtr import download as dl
from cli_helpers import one_line_error, run

# Small stand-ins: a checkpoint's first bytes (torch.save's zip header), then noise. The fixture makes
# these sizes the "official" ones; the tests of the size check put the real sizes back.
FILES = {"/mar-b/checkpoint-last.pth": b"PK\x03\x04" + os.urandom(300_000), "/kl16.ckpt": b"PK\x03\x04" + os.urandom(70_000)}
REAL_SIZES = dict(dl.SIZES)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests = []        # (path, Range header) of every request
        self.cut_once = set()     # paths whose next transfer stops halfway
        self.html = set()         # paths answered with a web page
        self.ranges = True        # False: ignore Range, always send the whole file
        self.lie = False          # True: answer a Range with 206 but send the file from byte 0

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    timeout = 10  # a stuck client cannot hold the test

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv, path = self.server, self.path
        srv.requests.append((path, self.headers.get("Range")))
        if path in srv.html:
            page = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        if path not in FILES:
            self.send_error(404)
            return
        data, start = FILES[path], 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and srv.ranges:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            if srv.lie:  # claims a partial answer, sends (and says) bytes from the start
                start = 0
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if path in srv.cut_once:  # announce the whole body, send half, hang up
            srv.cut_once.discard(path)
            body = body[: len(body) // 2]
        self.wfile.write(body)


@pytest.fixture()
def server(monkeypatch, tmp_path):
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("GTR_MIRROR", srv.url)
    monkeypatch.setenv("GTR_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(dl, "TIMEOUT", 10)
    monkeypatch.setitem(dl.SIZES, "mar-b", len(FILES["/mar-b/checkpoint-last.pth"]))
    monkeypatch.setitem(dl.SIZES, "kl16", len(FILES["/kl16.ckpt"]))
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def home_files(tmp_path):
    home = tmp_path / "home"
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()) if home.exists() else []


def test_dry_run_prints_official_urls_and_destinations(monkeypatch, tmp_path):
    monkeypatch.delenv("GTR_MIRROR", raising=False)
    monkeypatch.setenv("GTR_HOME", str(tmp_path / "home"))
    r = run("download", "mar-b", "--dry-run")
    assert r.exit_code == 0, r.output
    assert dl.OFFICIAL["mar-b"][1] in r.output and dl.OFFICIAL["kl16"][1] in r.output
    assert "www.dropbox.com" in r.output
    assert str(tmp_path / "home" / "mar-b" / "checkpoint-last.pth") in r.output
    assert str(tmp_path / "home" / "kl16.ckpt") in r.output
    assert "[missing: would download about 1.5 GiB]" in r.output and "[missing: would download about 254 MiB]" in r.output
    assert r.output.splitlines()[-1] == "to download: about 1.8 GiB"
    assert not (tmp_path / "home").exists()  # nothing fetched, nothing created
    assert "downloadable: mar-b, mar-l, mar-h, kl16" in one_line_error(run("download", "mar-xl", "--dry-run"))


def test_download_records_and_verifies_sha256(server, tmp_path):
    r = run("download", "mar-b")
    assert r.exit_code == 0, r.output
    assert "kl16: 0.1/0.1 MiB (" in r.output and "\r" not in r.output  # not a terminal: progress lines
    assert home_files(tmp_path) == ["kl16.ckpt", "kl16.ckpt.sha256", "mar-b/checkpoint-last.pth",
                                    "mar-b/checkpoint-last.pth.sha256"]
    for rel, data in (("mar-b/checkpoint-last.pth", FILES["/mar-b/checkpoint-last.pth"]), ("kl16.ckpt", FILES["/kl16.ckpt"])):
        path = tmp_path / "home" / rel
        assert path.read_bytes() == data
        assert (path.parent / (path.name + ".sha256")).read_text() == f"{hashlib.sha256(data).hexdigest()}  {path.name}\n"
    # again: verified from disk, no request
    n = len(server.requests)
    r = run("download", "mar-b", "kl16")
    assert r.exit_code == 0 and r.output.count("sha256 verified") == 2, r.output
    assert len(server.requests) == n
    # a damaged file is caught by its recorded sha256
    ckpt = tmp_path / "home" / "kl16.ckpt"
    data = bytearray(ckpt.read_bytes())
    data[1000] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    assert "sha256 differs" in one_line_error(run("download", "kl16"))
    r = run("download", "kl16", "--dry-run")
    assert "present, sha256 recorded" in r.output and server.url in r.output


def test_interrupted_transfer_resumes(server, tmp_path):
    server.cut_once.add("/kl16.ckpt")
    msg = one_line_error(run("download", "kl16"))
    assert "interrupted at 35,002 of 70,004 bytes" in msg and "again to resume" in msg
    assert home_files(tmp_path) == ["kl16.ckpt.part"]  # no file appears before it is complete
    assert "partial (35,002 bytes of about 70,004 bytes): would resume" in run("download", "kl16", "--dry-run").output
    r = run("download", "kl16")
    assert r.exit_code == 0, r.output
    assert server.requests[-1] == ("/kl16.ckpt", "bytes=35002-")
    assert (tmp_path / "home" / "kl16.ckpt").read_bytes() == FILES["/kl16.ckpt"]
    assert home_files(tmp_path) == ["kl16.ckpt", "kl16.ckpt.sha256"]


def test_server_without_ranges_starts_over(server, tmp_path):
    server.ranges = False
    part = tmp_path / "home" / "kl16.ckpt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes of an older attempt")
    assert run("download", "kl16").exit_code == 0
    assert (tmp_path / "home" / "kl16.ckpt").read_bytes() == FILES["/kl16.ckpt"]


def test_html_page_instead_of_file(server, tmp_path):
    server.html.add("/mar-b/checkpoint-last.pth")
    msg = one_line_error(run("download", "mar-b"))
    assert "web page instead of the file" in msg and "nothing was kept" in msg
    assert not any(f.startswith("mar-b") for f in home_files(tmp_path))


def test_html_without_content_type_is_caught_too(server, tmp_path, monkeypatch):
    page = b"  <!doctype html><html>moved</html>"
    monkeypatch.setitem(FILES, "/kl16.ckpt", page)
    assert "web page" in one_line_error(run("download", "kl16"))
    assert home_files(tmp_path) == []


def test_export_download_fetches_then_uses_the_files(server, tmp_path):
    """gtr-export --download fetches into $GTR_HOME and goes on to load them (these are not real
    checkpoints, so loading fails: with a checkpoint error, not 'missing weights')."""
    r = run("export", "--model", "mar-b", "--download", "-o", tmp_path / "b.plan")
    assert "not a PyTorch checkpoint" in one_line_error(r)
    assert "mar-b: downloaded" in r.output and "kl16: downloaded" in r.output
    assert "missing weights" not in r.output
    assert (tmp_path / "home" / "mar-b" / "checkpoint-last.pth").is_file() and not (tmp_path / "b.plan").exists()
    assert "no official files for 'mar-test'" in one_line_error(
        run("export", "--model", "mar-test", "--download", "-o", tmp_path / "t.plan"))


def test_a_206_from_the_wrong_offset_starts_over(server, tmp_path):
    """A server that answers a resume with bytes from another offset: appended, they would make a wrong
    file whose sha256 is then recorded as good. The partial file is discarded and the transfer restarts."""
    server.cut_once.add("/kl16.ckpt")
    one_line_error(run("download", "kl16"))  # leaves 35,002 bytes in kl16.ckpt.part
    server.lie = True
    r = run("download", "kl16")
    assert r.exit_code == 0, r.output
    assert server.requests[-2] == ("/kl16.ckpt", "bytes=35002-") and server.requests[-1] == ("/kl16.ckpt", None)
    assert (tmp_path / "home" / "kl16.ckpt").read_bytes() == FILES["/kl16.ckpt"]
    assert home_files(tmp_path) == ["kl16.ckpt", "kl16.ckpt.sha256"]


def test_a_second_process_on_the_same_folder_stops_with_one_line(server, tmp_path):
    import subprocess
    import sys
    home = tmp_path / "home"
    home.mkdir()
    (home / "kl16.ckpt.part").write_bytes(FILES["/kl16.ckpt"][:1000])  # the first process's bytes so far
    # another process holds the folder (as a running download does) until we close its stdin
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()", str(home)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        msg = one_line_error(run("download", "kl16"))
        assert "another process is downloading into" in msg
        assert (home / "kl16.ckpt.part").read_bytes() == FILES["/kl16.ckpt"][:1000] and server.requests == []
    finally:
        holder.communicate("", timeout=10)
    assert run("download", "kl16").exit_code == 0  # once it is done, the download goes ahead
    assert (home / "kl16.ckpt").read_bytes() == FILES["/kl16.ckpt"]
    assert home_files(tmp_path) == ["kl16.ckpt", "kl16.ckpt.sha256"]


def test_offline_says_the_network_is_unreachable_and_leaves_no_folder(monkeypatch, tmp_path):
    """No network: the name of the official host does not resolve (as on a machine without one)."""
    import socket

    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.delenv("GTR_MIRROR", raising=False)
    monkeypatch.setenv("GTR_HOME", str(tmp_path / "home"))
    line = one_line_error(run("download", "mar-b"))
    assert "cannot reach www.dropbox.com" in line and "network is unreachable" in line and "GTR_MIRROR" in line
    assert not (tmp_path / "home").exists()  # no empty folder left behind


def test_an_unreachable_mirror_is_named(monkeypatch, tmp_path):
    import socket
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("GTR_MIRROR", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("GTR_HOME", str(tmp_path / "home"))
    line = one_line_error(run("download", "kl16"))
    assert f"cannot reach the mirror 127.0.0.1:{port}" in line and "GTR_MIRROR" in line
    assert not (tmp_path / "home").exists()


def test_a_10_byte_file_from_a_mirror_is_refused(server, tmp_path, monkeypatch):
    """The official sizes are known: a mirror serving 10 bytes as kl16.ckpt is not serving the file."""
    monkeypatch.setattr(dl, "SIZES", REAL_SIZES)
    monkeypatch.setitem(FILES, "/kl16.ckpt", b"0123456789")
    line = one_line_error(run("download", "kl16"))
    assert "offers 10 bytes" in line and "about 254 MiB" in line and "nothing was kept" in line
    assert home_files(tmp_path) == []
    assert "sha256 verified" not in run("download", "kl16").output


def test_a_file_of_the_right_size_that_is_no_checkpoint_is_refused(server, tmp_path, monkeypatch):
    monkeypatch.setitem(FILES, "/kl16.ckpt", os.urandom(dl.SIZES["kl16"]))  # size fits, first bytes do not
    line = one_line_error(run("download", "kl16"))
    assert "not a PyTorch checkpoint" in line and "nothing was kept" in line
    assert home_files(tmp_path) == []


def test_a_recorded_file_far_from_its_size_is_not_verified(monkeypatch, tmp_path):
    """A 10-byte kl16.ckpt with its sha256 recorded (as an older gtr could leave from a bad mirror):
    the sha256 matches, but the file is not the official one, and both commands say so."""
    home = tmp_path / "home"
    home.mkdir()
    data = b"PK\x03\x04012345"
    (home / "kl16.ckpt").write_bytes(data)
    (home / "kl16.ckpt.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  kl16.ckpt\n")
    monkeypatch.setenv("GTR_HOME", str(home))
    line = one_line_error(run("download", "kl16"))
    assert "not the official file (10 bytes, the official kl16.ckpt is about 254 MiB)" in line
    assert "delete it" in line
    r = run("download", "kl16", "--dry-run")
    assert r.exit_code == 0 and "present but not the official file" in r.output and "sha256 recorded" not in r.output


@pytest.mark.parametrize("value, words", [("file", "is a file, not a folder"), ("", "is set but empty")])
def test_gtr_home_that_is_no_folder_is_named(monkeypatch, tmp_path, value, words):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("GTR_HOME", str(tmp_path / value) if value else "")
    for args in (["download", "mar-b"], ["download", "mar-b", "--dry-run"]):
        r = run(*args)
        line = one_line_error(r)
        assert line.startswith("Error: GTR_HOME") and words in line and "would download" not in r.output
    assert list(tmp_path.iterdir()) == [tmp_path / "file"]


def test_dry_run_under_a_file_says_it_cannot_download_there(monkeypatch, tmp_path):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("GTR_HOME", str(tmp_path / "file" / "sub"))
    r = run("download", "kl16", "--dry-run")
    assert r.exit_code == 0 and "would download" not in r.output
    assert "cannot be downloaded there" in r.output and "is a file, not a folder" in r.output
