"""The official MAR weights: where they come from, where they go, and a resumable, checked download.

Files land where gtr-export looks for them: $GTR_HOME/<model>/checkpoint-last.pth and $GTR_HOME/kl16.ckpt.
A transfer goes to <file>.part (resumed with an HTTP Range request when it is there; a 206 answer must
start at the requested byte, else the partial file is discarded and the transfer starts over), is
checked against the size the server announced and renamed into place; the sha256 of the finished file
is recorded beside it (<file>.sha256, `sha256sum -c` format) and every later run verifies it. The sha256
is recorded from what arrived, so it proves the file unchanged since, not that it is the official one:
that is what the size and format check is for (SIZES: a file far from its size, or not a checkpoint,
is refused before it is kept, and again when a recorded file is verified). One
process at a time works on a folder's files (an flock on the folder): a second one stops with one line.
Standard library only (urllib), so it works where torch is not installed.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from gtr.errors import DownloadError, PathError  # noqa: F401  (DownloadError: re-exported)

# name -> (path under $GTR_HOME, official URL: the links the MAR repository publishes; dl=1 makes
# Dropbox send the file itself instead of its preview page).
OFFICIAL = {
    "mar-b": ("mar-b/checkpoint-last.pth", "https://www.dropbox.com/scl/fi/f6dpuyjb7fudzxcyhvrhk/checkpoint-last.pth"
                                           "?rlkey=a6i4bo71vhfo4anp33n9ukujb&dl=1"),
    "mar-l": ("mar-l/checkpoint-last.pth", "https://www.dropbox.com/scl/fi/pxacc5b2mrt3ifw4cah6k/checkpoint-last.pth"
                                           "?rlkey=m48ovo6g7ivcbosrbdaz0ehqt&dl=1"),
    "mar-h": ("mar-h/checkpoint-last.pth", "https://www.dropbox.com/scl/fi/1qmfx6fpy3k7j9vcjjs3s/checkpoint-last.pth"
                                           "?rlkey=4lae281yzxb406atp32vzc83o&dl=1"),
    "kl16": ("kl16.ckpt", "https://www.dropbox.com/scl/fi/hhmuvaiacrarfg28qxhwz/kl16.ckpt"
                          "?rlkey=l44xipsezc8atcffdp4q7mwmh&dl=1"),
}
# The official files' sizes (bytes, about: MAR checkpoints hold the weights and their EMA in fp32, 2 x params
# x 4 B). A file far from its size, or one that is not a PyTorch checkpoint, is not the file: a wrong link
# or mirror, an error page, a truncated copy. It is refused before it is kept, and on every later run.
SIZES = {"mar-b": 1587 * 2**20, "mar-l": 3650 * 2**20, "mar-h": 7191 * 2**20, "kl16": 254 * 2**20}
SIZE_SLACK = 0.2  # accepted: within 20 % of the size above
CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80\x02")  # torch.save's zip format, its older pickle format
VAE = "kl16"  # every MAR model decodes with it, so downloading a model fetches it too
MIRROR_ENV = "GTR_MIRROR"  # base URL of a copy with the same layout (an internal mirror; the tests)
TIMEOUT = 60  # seconds without data before a transfer counts as interrupted
CHUNK = 1 << 20
# Some file hosts answer unknown clients with a web page; the official download script identifies as wget.
USER_AGENT = "Wget/1.21 (gtr-mar)"


@dataclass(frozen=True)
class Download:
    name: str
    url: str
    dest: Path

    @property
    def part(self) -> Path:
        return self.dest.with_name(self.dest.name + ".part")

    @property
    def checksum(self) -> Path:
        return self.dest.with_name(self.dest.name + ".sha256")


def downloads(models, home, mirror: str | None = None) -> list[Download]:
    """The files for these models (each MAR model brings kl16), from the official URLs or from
    mirror (default: $GTR_MIRROR) + the file's path under home."""
    mirror = os.environ.get(MIRROR_ENV) if mirror is None else mirror
    if mirror and not re.match(r"https?://[^/]", mirror):
        raise DownloadError(f"{MIRROR_ENV}={mirror!r} is not an http(s) URL (e.g. http://mirror.local/gtr)")
    names: list[str] = []
    for model in models:
        if model not in OFFICIAL:
            raise DownloadError(f"no official files for {model!r}; downloadable: {', '.join(OFFICIAL)}")
        names += [n for n in (model, VAE) if n not in names]
    return [Download(n, f"{mirror.rstrip('/')}/{OFFICIAL[n][0]}" if mirror else OFFICIAL[n][1], Path(home) / OFFICIAL[n][0])
            for n in names]


def about(name: str) -> str:
    """The official file's size in words ("about 254 MiB")."""
    size = SIZES[name]
    if size < 2**20:
        return f"about {size:,} bytes"
    return f"about {size / 2**30:.1f} GiB" if size >= 2**30 else f"about {size / 2**20:.0f} MiB"


def not_the_file(d: Download, path: Path) -> str | None:
    """Why the file at path is not d's official file (None: its size and first bytes fit)."""
    size = path.stat().st_size
    if abs(size - SIZES[d.name]) > SIZE_SLACK * SIZES[d.name]:
        return f"{size:,} bytes, the official {d.dest.name} is {about(d.name)}"
    with open(path, "rb") as f:
        if not f.read(4).startswith(CHECKPOINT_MAGIC):
            return "not a PyTorch checkpoint (its first bytes are neither a zip nor a pickle header)"
    return None


def state(d: Download) -> str:
    """What is on disk for d and what a download would do, in words (for --dry-run)."""
    if d.dest.is_file():
        if not d.checksum.is_file():
            return "present (placed by hand, not verified)"
        wrong = not_the_file(d, d.dest)
        if wrong:
            return f"present but not the official file ({wrong}): delete it and download it again"
        return "present, sha256 recorded"
    from gtr.runtime.files import check_writable
    try:
        check_writable(d.dest.parent, folder=True)
    except PathError as e:
        return f"missing, and cannot be downloaded there: {e}"
    if d.part.is_file():
        return f"partial ({d.part.stat().st_size:,} bytes of {about(d.name)}): would resume"
    return f"missing: would download {about(d.name)}"


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def fetch(d: Download, progress: bool = True) -> str:
    """Make d.dest hold the file: verify it if it is there, else download it. Returns what was done.
    A failed download leaves no folder it made empty behind (a partial file stays, for a resume)."""
    if d.dest.is_file():
        if not d.checksum.is_file():
            return "present (placed by hand, not verified)"
        recorded = d.checksum.read_text().split()[0]
        if sha256_file(d.dest) != recorded:
            raise DownloadError(f"{d.dest}: sha256 differs from the one recorded when it was downloaded (the file "
                                f"is damaged); delete it and download it again")
        wrong = not_the_file(d, d.dest)
        if wrong:
            raise DownloadError(f"{d.dest}: not the official file ({wrong}); delete it and download it again")
        return "present, sha256 verified"
    from gtr.runtime.files import check_writable
    made = [p for p in (d.dest.parent, *d.dest.parent.parents) if not p.exists()]
    try:
        check_writable(d.dest.parent, folder=True)
        d.dest.parent.mkdir(parents=True, exist_ok=True)
    except PathError as e:
        raise PathError(f"{e}; set GTR_HOME to a folder you can write") from None
    except OSError as e:
        raise PathError(f"{d.dest.parent}: cannot create it ({e.strerror or e}); set GTR_HOME to a folder "
                        f"you can write") from None
    try:
        with _folder_lock(d):
            if d.dest.is_file():  # another process finished it while we waited for nothing: verify instead
                return fetch(d, progress)
            _transfer(d, progress)
            wrong = not_the_file(d, d.part)
            if wrong:
                d.part.unlink()
                raise DownloadError(f"{d.name}: {d.url} sent a file that is not the official one ({wrong}); "
                                    f"nothing was kept")
            digest = sha256_file(d.part)
            os.replace(d.part, d.dest)  # atomic: dest is either absent or complete
            from gtr.runtime.files import atomic_write_text
            atomic_write_text(d.checksum, f"{digest}  {d.dest.name}\n")
    except BaseException:
        for folder in made:  # innermost first; stops at the first one that is not empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return f"downloaded, sha256 {digest[:16]}… recorded"


@contextlib.contextmanager
def _folder_lock(d: Download):
    """Hold an exclusive flock on the destination folder (nothing is left behind: the lock is on the
    folder itself); a second process appending to the same .part would interleave its writes."""
    fd = os.open(d.dest.parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(f"{d.name}: another process is downloading into {d.dest.parent}; wait for it to "
                                f"finish (or stop it), then run this again") from None
        yield
    finally:
        os.close(fd)  # releases the lock


def _unreachable(d: Download, reason) -> str:
    """The one line for a server that cannot be reached (no network, no name resolution, refused)."""
    host = urllib.parse.urlsplit(d.url).netloc
    if d.url != OFFICIAL[d.name][1]:
        return (f"{d.name}: cannot reach the mirror {host} ({reason}): the network or the mirror is unreachable; "
                f"check {MIRROR_ENV}={os.environ.get(MIRROR_ENV, '')!r}, or unset it for the official URLs")
    return (f"{d.name}: cannot reach {host} ({reason}): the network is unreachable from here; connect, or set "
            f"{MIRROR_ENV} to the base URL of a copy of the files (same layout, e.g. http://mirror.local/gtr)")


def _looks_like_html(head: bytes) -> bool:
    return head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html"))


def _resumed_at(response) -> int | None:
    """The first byte of a 206 answer's Content-Range (None when it has none that parses)."""
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", (response.headers.get("Content-Range") or "").strip())
    return int(m.group(1)) if m else None


def _transfer(d: Download, progress: bool, retried: bool = False) -> None:
    """Download d.url into d.part, continuing a partial file; raise DownloadError unless it is complete."""
    have = d.part.stat().st_size if d.part.is_file() else 0
    headers = {"User-Agent": USER_AGENT, **({"Range": f"bytes={have}-"} if have else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(d.url, headers=headers), timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        total = re.fullmatch(r"bytes \*/(\d+)", e.headers.get("Content-Range", "") or "")
        if e.code == 416 and total and int(total.group(1)) == have:
            return  # the partial file is already complete (stopped just before its rename)
        if e.code == 416:
            d.part.unlink()  # a partial file the server cannot continue: start again next time
        raise DownloadError(f"{d.name}: {d.url} answered HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(_unreachable(d, getattr(e, "reason", e))) from None
    with response:
        if "html" in response.headers.get("Content-Type", "").lower():
            raise DownloadError(f"{d.name}: {d.url} sent a web page instead of the file (the link may have "
                                f"moved or need a login); nothing was kept")
        start = have if response.status == 206 else 0  # 200: the server ignored the range, start over
        if response.status == 206 and _resumed_at(response) != have:
            # bytes from elsewhere than asked: appending them would make a wrong file with a "good" sha256
            d.part.unlink()
            if retried or have == 0:
                raise DownloadError(f"{d.name}: {d.url} answered a request for bytes {have}- with "
                                    f"{response.headers.get('Content-Range') or 'no Content-Range'}; nothing was kept")
            response.close()
            return _transfer(d, progress, retried=True)
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        if total is not None and abs(total - SIZES[d.name]) > SIZE_SLACK * SIZES[d.name]:
            d.part.unlink(missing_ok=True)  # nothing of a file that is not the one asked for
            if _looks_like_html(response.read(64)):
                raise DownloadError(f"{d.name}: {d.url} sent a web page instead of the file; nothing was kept")
            raise DownloadError(f"{d.name}: {d.url} offers {total:,} bytes, the official {d.dest.name} is "
                                f"{about(d.name)}: not the file (a wrong link or mirror?); nothing was kept")
        from gtr.runtime.progress import progress_bar
        with open(d.part, "ab" if start else "wb") as f, \
                progress_bar(total, d.name, "B", enabled=progress, initial=start, every=10.0) as bar:
            first, interrupted = True, False
            while True:
                try:
                    block = response.read(CHUNK)
                except (OSError, http.client.HTTPException):  # reset, timed out, cut chunked body
                    interrupted = True  # keep what arrived, for a resume
                    break
                if not block:
                    break
                if first and start == 0 and _looks_like_html(block):
                    f.close()
                    d.part.unlink()
                    raise DownloadError(f"{d.name}: {d.url} sent a web page instead of the file; nothing was kept")
                first = False
                f.write(block)
                bar.update(len(block))
    size = d.part.stat().st_size
    if interrupted or (total is not None and size != total):  # the size check
        if total is not None and size > total:
            d.part.unlink()
        of = f"{total:,}" if total is not None else "?"
        raise DownloadError(f"{d.name}: transfer interrupted at {size:,} of {of} bytes; run the same command again "
                            f"to resume")
