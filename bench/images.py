"""A deterministic generated image set, cached: the same files on every machine for a given count.

Each image is a smooth random colour field with random shapes and a little grain, so that JPEG and PNG
sizes resemble real illustrations (a 1024 px JPEG ~0.2-0.4 MB, a 2048x1536 JPEG ~1 MB, a 1024 px PNG
~1-2 MB) and decoding costs what it costs on real files. The mix repeats every 8 images:

==========  ===========================================  =====
kind        what                                         share
==========  ===========================================  =====
jpeg1024    JPEG q90, longest side 1024 (square, 4:3,     3/8
            3:4)
jpeg2048    JPEG q90, 2048x1536 (a large photo)          2/8
png1024     PNG RGB, longest side 1024                   2/8
png_alpha   PNG RGBA, 1024 px, transparent background    1/8
==========  ===========================================  =====

Files live in ``<cache>/images/v<version>/`` (``bench.models.cache_dir()``); image ``i`` is always the same
file, so a set of 200 is the first 200 of a set of 2,000.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from bench.models import cache_dir

IMAGES_VERSION = 1
PATTERN = ("jpeg1024", "jpeg2048", "png1024", "jpeg1024", "png_alpha", "jpeg1024", "jpeg2048", "png1024")
_SIZES_1024 = ((1024, 1024), (1024, 768), (768, 1024), (1024, 1024), (832, 1024))


def kind_of(index: int) -> str:
    return PATTERN[index % len(PATTERN)]


def _file_name(index: int) -> str:
    kind = kind_of(index)
    return f"{index:05d}_{kind}.{'jpg' if kind.startswith('jpeg') else 'png'}"


def render(index: int) -> Image.Image:
    """Image ``index`` of the set (RGB, or RGBA for ``png_alpha``), from its own seed."""
    kind = kind_of(index)
    rng = np.random.default_rng(10_007 * (index + 1))
    size = (2048, 1536) if kind == "jpeg2048" else _SIZES_1024[index % len(_SIZES_1024)]
    w, h = size
    # A smooth colour field: a small random grid upscaled with bicubic.
    grid = rng.integers(0, 256, (rng.integers(3, 8), rng.integers(3, 8), 3), dtype=np.uint8)
    img = Image.fromarray(grid).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(12, 40))):  # flat shapes with hard edges, as in line art
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(20, w // 3)), y0 + int(rng.integers(20, h // 3))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = int(rng.integers(0, 3))
        if shape == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif shape == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(2, 12)))
    img = img.filter(ImageFilter.GaussianBlur(1.2))
    grain = 6.0 if kind.startswith("jpeg") else 2.5  # photos are grainier than PNG illustrations
    arr = np.asarray(img, dtype=np.int16) + rng.normal(0.0, grain, (h, w, 1)).astype(np.int16)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if kind == "png_alpha":  # a figure on a transparent background, soft edges
        mask = Image.new("L", size, 0)
        md = ImageDraw.Draw(mask)
        md.ellipse((w * 0.15, h * 0.08, w * 0.85, h * 0.95), fill=255)
        md.rectangle((w * 0.3, h * 0.5, w * 0.7, h), fill=255)
        img = img.convert("RGBA")
        img.putalpha(mask.filter(ImageFilter.GaussianBlur(3)))
    return img


def _write(index: int, path: Path) -> None:
    img = render(index)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if kind_of(index).startswith("jpeg"):
        img.save(tmp, "JPEG", quality=90)
    else:
        img.save(tmp, "PNG", compress_level=6)
    tmp.replace(path)


def images_dir(cache: Path | None = None) -> Path:
    """The folder of this version of the set inside ``cache`` (default ``bench.models.cache_dir()``)."""
    return (cache or cache_dir()) / "images" / f"v{IMAGES_VERSION}"


def ensure_images(count: int, root: Path | None = None, *, log: Callable[[str], None] | None = None) -> list[Path]:
    """Paths of images ``0 .. count-1`` in ``root`` (default ``images_dir()``), generated on first use."""
    folder = root or images_dir()
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / _file_name(i) for i in range(count)]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    if missing and log:
        log(f"generating {len(missing)} images in {folder} (once; cached)")
    for i in missing:
        _write(i, paths[i])
    return paths


def link_folder(images: list[Path], folder: Path, count: int) -> Path:
    """A folder of ``count`` entries that repeat ``images`` cyclically, as symbolic links (copies where links
    are not allowed): a large input folder without generating or storing thousands of files."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        src = images[i % len(images)]
        dst = folder / f"{i:06d}{src.suffix}"
        if dst.exists() or dst.is_symlink():
            continue
        try:
            dst.symlink_to(src)
        except OSError:
            dst.write_bytes(src.read_bytes())
    return folder


def describe(paths: list[Path]) -> str:
    """``"48 images (18 jpeg1024, ...), 40.2 MB"``."""
    kinds: dict[str, int] = {}
    for p in paths:
        kind = p.stem.split("_", 1)[1] if "_" in p.stem else "?"
        kinds[kind] = kinds.get(kind, 0) + 1
    size = sum(p.stat().st_size for p in paths) / 1e6
    parts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    return f"{len(paths)} images ({parts}), {size:.1f} MB"
