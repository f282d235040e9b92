"""A folder of generated samples: file names, the run record, the resume check, npz packing.

Files are named by (class, index) alone, so any worker that makes an image writes it to the same
name. The run record (gtr-run.json) holds the settings that decide the pixels; a run with other
settings is refused instead of mixing two runs in one folder; a record that is damaged or not gtr's is
an error naming it, never overwritten. Claiming a folder is one step under a
lock (`claim`), so two workers starting at once cannot both be accepted; a worker holds the record
shared while it runs, so a record whose run died before its first image (no image, nobody running)
gives way to new settings. numpy + pillow only (flock: POSIX).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from gtr.inputs import InputError, parse_json
from gtr.runtime.files import atomic_write

RECORD = "gtr-run.json"
RECORD_KEYS = {"bundle", "plan", "seed", "batch", "num_images"}  # what gtr.pipeline records
MAX_RECORD = 2 ** 20  # bytes read of a record (a real one is under 4 KiB)
IMAGE_GLOBS = ("class*.png", "uncond_*.png")


def image_name(label: int | None, index: int) -> str:
    """'class0088_00012.png' (class 88, its 13th image); 'uncond_00012.png' when unconditional."""
    return f"{'uncond' if label is None else f'class{int(label):04d}'}_{index:05d}.png"


def is_complete(path, size: int) -> bool:
    """True when path is a PNG that decodes to a size x size RGB image (what a finished write leaves)."""
    try:
        with Image.open(path) as im:
            if im.format != "PNG" or im.mode != "RGB" or im.size != (size, size):
                return False
            im.verify()  # every chunk's checksum, up to the end marker
        with Image.open(path) as im:
            im.load()  # and the pixels decode (verify leaves the file unusable, hence the reopen)
        return True
    except (OSError, SyntaxError, ValueError):  # missing, truncated or not an image
        return False


class FolderTaken(Exception):
    """The folder belongs to a run with other settings; `differ` names them, `live` says whether that
    run is writing it now."""

    def __init__(self, differ: list[str], live: bool):
        super().__init__(", ".join(differ))
        self.differ, self.live = differ, live


def holds_images(folder) -> bool:
    return any(next(Path(folder).glob(g), None) is not None for g in IMAGE_GLOBS)


def read_record(data: bytes, where) -> dict | None:
    """The run record in `data` (the bytes of `where`): None when empty (new, or a claim that died before
    writing it); InputError, naming the file and what to do, when it is not a gtr run record."""
    if not data.strip():
        return None
    fix = "it is not a gtr run record: remove it, or use another folder"
    record = parse_json(data, str(where), fix)
    if not isinstance(record, dict) or not record or not set(record) <= RECORD_KEYS:
        raise InputError(f"{where}: not a gtr run record (a JSON object of {', '.join(sorted(RECORD_KEYS))}); "
                         f"remove it, or use another folder")
    return record


def _differ(old: dict | None, record: dict) -> list[str] | None:
    """None when there is no record yet; else the settings that differ from `record` ([] = same run)."""
    if old is None:
        return None
    return sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))


@contextlib.contextmanager
def claim(folder, record: dict):
    """Make `folder` this run's for the `with` block: create it and its record, or join a run with the
    same settings. Raises FolderTaken when the folder holds another run's images, or another run with
    other settings is writing it now. A record with no image and no live run is replaced.

    Two flocks, neither leaving a file behind: claims take turns on the folder itself, and a run holds
    its record shared while it writes (so "nobody holds it" means the run that wrote it is gone)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record_fd = os.open(folder / RECORD, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        folder_fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(folder_fd, fcntl.LOCK_EX)  # one claim at a time
            with open(record_fd, "r+b", closefd=False) as f:
                differ = _differ(read_record(f.read(MAX_RECORD), folder / RECORD), record)
                if differ:
                    if holds_images(folder):
                        raise FolderTaken(differ, live=False)
                    try:  # exclusive only if no run holds the record now
                        fcntl.flock(record_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        raise FolderTaken(differ, live=True) from None
                    differ = None  # a run that died before its first image: its settings give way
                if differ is None:
                    f.seek(0)
                    f.truncate()
                    f.write((json.dumps(record, indent=1, sort_keys=True) + "\n").encode("utf-8"))
                    f.flush()
                    os.fsync(record_fd)
            fcntl.flock(record_fd, fcntl.LOCK_SH)
        finally:
            os.close(folder_fd)  # ends the claim's turn
        yield
    finally:
        os.close(record_fd)


def pack_npz(paths, out, size: int) -> int:
    """Pack PNGs (in order) into out as the uint8 array arr_0 [N, size, size, 3] that common FID
    evaluators read. Streamed image by image into the .npy member, so memory stays one image even
    for 50,000; written atomically. Returns N."""
    paths = paths if hasattr(paths, "__len__") else list(paths)  # a RunPaths stays lazy
    header = {"descr": "|u1", "fortran_order": False, "shape": (len(paths), size, size, 3)}

    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z, \
                z.open("arr_0.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            for p in paths:
                if not is_complete(p, size):
                    raise FileNotFoundError(f"{p}: missing or not a {size}x{size} PNG; nothing was packed")
                with Image.open(p) as im:
                    member.write(np.asarray(im, dtype=np.uint8).tobytes())

    atomic_write(os.fspath(out), write)
    return len(paths)
