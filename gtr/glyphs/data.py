"""The mar-glyphs data set: the capital letters A-Z rendered from the Latin fonts Debian packages ship.

The font packages are listed in font_packages.txt next to this file; `install_fonts()` installs them
with apt-get (as root), nothing is downloaded from elsewhere. `find_faces()` walks the system font
folders and keeps every face (a file, or one face of a collection) that has all 26 capitals in its
character map; faces whose 26 rendered glyphs are identical to an earlier face's (the same face
shipped as .ttf and .otf, say) are kept once.

Rendering (`render_face`): each letter is drawn at 192 px, cropped to its ink bounding box, scaled so
the box's longer side is 52 px (aspect kept, Lanczos on an 8-bit image), centred on a 64x64 black
canvas; white ink on black, mapped to [-1, 1] and repeated to 3 channels (the VAE is RGB).

Split: by family, so that no weight or style of a held-out family is seen in training. A family is
held out when crc32 of its lower-cased name is 0 mod 5 (about a fifth of the families). The generator
trains on 'train'; the letter classifier and the Frechet reference use 'heldout'.

The rendered set is cached as an .npz under the gtr cache folder, keyed by the font files (found without rendering).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SIZE = 64
BOX = 52  # the longer side of a letter's ink box after scaling
RENDER_PX = 192
FONT_DIRS = ("/usr/share/fonts",)
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".pfb", ".t1")
PACKAGES_FILE = Path(__file__).resolve().parent / "font_packages.txt"
HELDOUT_MOD = 5  # a family is held out when crc32(family) % HELDOUT_MOD == 0
MIN_FACES = 100  # fewer faces than this: the font packages are not installed
FORMAT = 3  # of the cached .npz; part of its file name


class FontsMissing(RuntimeError):
    """The font packages are not installed (and could not be)."""


def font_packages(path: Path = PACKAGES_FILE) -> list[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def install_fonts(log=print) -> None:
    """apt-get install the font packages (root only; a no-op once they are there)."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise FontsMissing("installing the font packages needs apt-get as root: "
                           f"apt-get install $(grep -v '^#' {PACKAGES_FILE})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"apt-get install {len(font_packages())} font packages ...")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *font_packages()]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            raise FontsMissing(f"{' '.join(cmd[:3])} failed: {tail[0]}")


@dataclass(frozen=True)
class Face:
    path: str
    index: int  # face index inside a .ttc collection
    family: str
    style: str

    @property
    def name(self) -> str:
        return f"{self.family} {self.style}".strip()

    @property
    def heldout(self) -> bool:
        return zlib.crc32(self.family.lower().encode()) % HELDOUT_MOD == 0


def _has_capitals(path: Path, index: int) -> bool:
    from fontTools.ttLib import TTFont

    try:
        font = TTFont(str(path), fontNumber=index, lazy=True)
        cmap = font.getBestCmap() or {}
    except Exception:  # a file fontTools cannot read (Type 1, damaged): let FreeType decide
        return path.suffix.lower() in (".pfb", ".t1")
    return all(ord(c) in cmap for c in LETTERS)


def _collection_size(path: Path) -> int:
    if path.suffix.lower() != ".ttc":
        return 1
    from fontTools.ttLib import TTCollection

    try:
        return len(TTCollection(str(path), lazy=True).fonts)
    except Exception:
        return 0


def _render_letter(font, letter: str) -> np.ndarray | None:
    """One letter as float32 [SIZE, SIZE] in [0, 1] (ink = 1), or None when it has no ink."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(letter)
    if right <= left or bottom <= top:
        return None
    pad = 4
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), letter, fill=255, font=font)
    box = canvas.getbbox()
    if box is None:
        return None
    ink = canvas.crop(box)
    w, h = ink.size
    scale = BOX / max(w, h)
    ink = ink.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    out = Image.new("L", (SIZE, SIZE), 0)
    out.paste(ink, ((SIZE - ink.size[0]) // 2, (SIZE - ink.size[1]) // 2))
    return np.asarray(out, dtype=np.float32) / 255.0


def render_face(face: Face) -> np.ndarray | None:
    """The 26 capitals of a face as float32 [26, SIZE, SIZE] in [0, 1], or None if one has no ink."""
    from PIL import ImageFont

    try:
        font = ImageFont.truetype(face.path, RENDER_PX, index=face.index)
    except OSError:
        return None
    letters = [_render_letter(font, c) for c in LETTERS]
    if any(x is None for x in letters):
        return None
    return np.stack(letters)


def _font_files(dirs=FONT_DIRS) -> list[Path]:
    files = []
    for d in dirs:
        if Path(d).is_dir():
            files += [p for p in Path(d).rglob("*") if p.suffix.lower() in FONT_SUFFIXES and p.is_file()]
    return sorted(files)


def find_faces(dirs=FONT_DIRS) -> list[tuple[Face, np.ndarray]]:
    """Every usable face with its rendered capitals, in sorted path order, duplicates dropped.

    Dropped: faces missing a capital, faces where some capital has no ink, faces whose 26 glyphs are
    all alike (a symbol font that maps A-Z to one shape), and repeats of a rendered face or a name."""
    from PIL import ImageFont

    kept, seen_pixels, seen_names = [], set(), set()
    for path in _font_files(dirs):
        for index in range(_collection_size(path)):
            if not _has_capitals(path, index):
                continue
            try:
                family, style = ImageFont.truetype(str(path), 12, index=index).getname()
            except OSError:
                continue
            face = Face(str(path), index, family or path.stem, style or "")
            glyphs = render_face(face)
            if glyphs is None or np.abs(glyphs - glyphs[0]).max() < 0.05:
                continue
            digest = hashlib.sha1(np.round(glyphs * 8).astype(np.uint8).tobytes()).hexdigest()
            if digest in seen_pixels or face.name.lower() in seen_names:
                continue
            seen_pixels.add(digest)
            seen_names.add(face.name.lower())
            kept.append((face, glyphs))
    return kept


def _cache_dir() -> Path:
    from gtr.paths import cache_dir

    return cache_dir() / "glyphs"


def build(dirs=FONT_DIRS, cache: Path | None = None, log=print) -> Path:
    """Render every face once into an .npz (uint8 glyphs, labels, face names, held-out flags) and
    return its path. The file name carries a hash of the font files (paths and sizes), known before
    anything is rendered: a cached set is found without rendering, and new fonts make a new file."""
    files = [[str(p), p.stat().st_size] for p in _font_files(dirs)]
    key = hashlib.sha1(json.dumps([FORMAT, files]).encode()).hexdigest()[:12]
    cache = Path(cache) if cache else _cache_dir()
    path = cache / f"glyphs-{key}.npz"
    if path.is_file():
        return path
    faces = find_faces(dirs)
    if len(faces) < MIN_FACES:
        raise FontsMissing(f"found {len(faces)} usable font faces under {', '.join(dirs)} (need {MIN_FACES}); "
                           f"install them: apt-get install $(grep -v '^#' {PACKAGES_FILE})")
    names = [f.name for f, _ in faces]
    cache.mkdir(parents=True, exist_ok=True)
    glyphs = np.stack([g for _, g in faces])  # [F, 26, 64, 64]
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, glyphs=np.round(glyphs * 255).astype(np.uint8), names=np.array(names),
                            families=np.array([f.family for f, _ in faces]), paths=np.array([f.path for f, _ in faces]),
                            heldout=np.array([f.heldout for f, _ in faces]))
    os.replace(tmp, path)
    log(f"rendered {len(faces)} faces ({int(sum(f.heldout for f, _ in faces))} held out) -> {path}")
    return path


def load_faces(install: bool = False, log=print) -> dict:
    """{"glyphs" uint8 [F, 26, 64, 64], "names", "families", "paths", "heldout" bool [F]}; renders on
    first use.
    With install=True, missing fonts are apt-get installed first."""
    try:
        path = build(log=log)
    except FontsMissing:
        if not install:
            raise
        install_fonts(log=log)
        path = build(log=log)
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def to_images(glyphs_u8: np.ndarray) -> np.ndarray:
    """uint8 [..., 64, 64] glyphs -> float32 [N, 3, 64, 64] in [-1, 1]."""
    x = glyphs_u8.reshape(-1, SIZE, SIZE).astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(np.repeat(x[:, None], 3, axis=1))


def load_split(split: str, install: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 [N, 3, 64, 64] in [-1, 1], labels int64 [N] with A = 0) of 'train' or 'heldout'."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    faces = load_faces(install=install)
    keep = faces["heldout"] if split == "heldout" else ~faces["heldout"]
    glyphs = faces["glyphs"][keep]
    labels = np.tile(np.arange(len(LETTERS), dtype=np.int64), len(glyphs))
    return to_images(glyphs), labels
