"""A folder of generated samples: file names, the run record, the resume check, npz packing.

Files are named by (class, index) alone, so any worker that makes an image writes it to the same
name. The run record (gtr-run.json) holds the settings that decide the pixels; a run with other
settings is refused instead of mixing two runs in one folder. numpy + pillow only.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from gtr.runtime.files import atomic_write, atomic_write_text

RECORD = "gtr-run.json"


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


def check_record(folder, record: dict) -> list[str]:
    """Write the run record into a new folder; in a used one, return the settings that differ."""
    path = Path(folder) / RECORD
    try:
        old = json.loads(path.read_text())
    except FileNotFoundError:
        atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
        return []
    except (OSError, ValueError):
        return [RECORD]  # unreadable: treat as another run's
    return sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))


def pack_npz(paths, out, size: int) -> int:
    """Pack PNGs (in order) into out as the uint8 array arr_0 [N, size, size, 3] that common FID
    evaluators read. Streamed image by image into the .npy member, so memory stays one image even
    for 50,000; written atomically. Returns N."""
    paths = list(paths)
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
