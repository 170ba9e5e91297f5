"""Image loading and preprocessing for WD14 models.

``load_image`` turns whatever the user handed us into an RGB image flattened onto opaque white, or raises
``ImageError`` with a reason a user can act on. ``reference_tensor`` is the model author's preprocessing,
step by step; ``prepare`` is the production path, which gives the same tensor (within a rounding step of
1/255 on a handful of pixels) without padding large images to a square first.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import re
from pathlib import Path
from typing import IO, TypeAlias

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "image_extensions",
    "load_image",
    "prepare",
    "prepare_batch",
    "reference_tensor",
]

logger = logging.getLogger(__name__)

ImageSource: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes] | Image.Image"

#: Extensions (lower case, with the dot) that every supported Pillow opens. See ``image_extensions()``.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

_WHITE_RGB = (255, 255, 255)
_WHITE_RGBA = (255, 255, 255, 255)
_ALPHA_MODES = frozenset({"LA", "PA", "RGBA", "RGBa"})
_BICUBIC = Image.Resampling.BICUBIC
_BICUBIC_SUPPORT = 2.0  # Pillow's bicubic filter support, in source pixels at scale 1
_EXIF_ORIENTATION = 0x0112
# Formats never opened: Pillow hands EPS to Ghostscript, an external interpreter, on load.
_UNSAFE_FORMATS = frozenset({"EPS"})
_BOMB_SIZE = re.compile(r"\((\d+) pixels\)")
# Formats whose mode "I" images hold 16-bit samples, however dark: Pillow < 10.3 opens 16-bit greyscale
# PNGs as "I" (not "I;16"), and every Pillow opens PGM/PPM with more than 8 bits as "I" scaled to 0..65535.
_SIXTEEN_BIT_I_FORMATS = frozenset({"PNG", "PPM"})


def image_extensions() -> frozenset[str]:
    """``IMAGE_EXTENSIONS`` plus ``.avif`` when this Pillow can open AVIF files."""
    return _image_extensions()


@functools.lru_cache(maxsize=1)
def _image_extensions() -> frozenset[str]:
    fmt = Image.registered_extensions().get(".avif")  # imports Pillow's plugins: kept out of import time
    if fmt is not None and fmt in Image.OPEN:
        return IMAGE_EXTENSIONS | {".avif"}
    return IMAGE_EXTENSIONS


@functools.lru_cache(maxsize=1)
def _open_formats() -> tuple[str, ...]:
    Image.init()
    return tuple(fmt for fmt in Image.ID if fmt not in _UNSAFE_FORMATS)


# --------------------------------------------------------------------------------------------- loading


def load_image(
    source: ImageSource,
    *,
    name: str | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """Load ``source`` (path, bytes, binary file object or PIL image) as RGB composited on white.

    Applies the EXIF orientation, keeps the first frame of animations and maps every Pillow mode
    (alpha, palette, CMYK, 16-bit, 32-bit int, float...) to 8-bit RGB. ``name`` is what errors show
    as the source. ``max_pixels`` refuses larger images from their header, before decoding. Pillow's
    decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) always applies to encoded input.

    Raises ``ImageError`` for anything that is not a readable image.
    """
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive number of pixels, not {max_pixels!r}")
    if isinstance(source, Image.Image):
        label = name or "<image>"
        return _finish(source, label, max_pixels, owned=False)
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        if len(source) == 0:
            raise ImageError(label, "the image data is empty (0 bytes)")
        return _load_stream(io.BytesIO(source), label, max_pixels)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return _load_path(path, name or str(path), max_pixels)
    if hasattr(source, "read"):
        file_name = getattr(source, "name", None)
        label = name or (str(file_name) if isinstance(file_name, (str, os.PathLike)) else "<file>")
        return _load_file_object(source, label, max_pixels)
    raise TypeError(f"cannot load an image from a {type(source).__name__}")


def read_error(label: str, exc: OSError) -> ImageError:
    """The ImageError for a file that cannot be opened or read, worded the same wherever files are read."""
    if isinstance(exc, FileNotFoundError):
        return ImageError(label, "file not found")
    if isinstance(exc, IsADirectoryError):
        return ImageError(label, "is a directory, not an image file")
    if isinstance(exc, PermissionError):
        return ImageError(label, "permission denied: the file cannot be read")
    return ImageError(label, f"cannot read the file ({exc.strerror or exc})")


def _load_path(path: Path, label: str, max_pixels: int | None) -> Image.Image:
    try:
        if path.is_dir():
            raise ImageError(label, "is a directory, not an image file")
        fp = path.open("rb")
    except OSError as exc:
        raise read_error(label, exc) from exc
    with fp:
        try:
            empty = os.fstat(fp.fileno()).st_size == 0
        except OSError:
            empty = False
        if empty:
            raise ImageError(label, "the file is empty (0 bytes)")
        # The image stays usable after the file closes: every frame we use is loaded before that.
        return _load_stream(fp, label, max_pixels)


def _load_file_object(fp: IO[bytes], label: str, max_pixels: int | None) -> Image.Image:
    seekable = getattr(fp, "seekable", None)
    if not (callable(seekable) and seekable()):
        try:
            data = fp.read()
        except OSError as exc:
            raise ImageError(label, f"cannot read the data ({exc})") from exc
        if not data:
            raise ImageError(label, "the image data is empty (0 bytes)")
        return _load_stream(io.BytesIO(data), label, max_pixels)
    return _load_stream(fp, label, max_pixels)


def _load_stream(fp: IO[bytes], label: str, max_pixels: int | None) -> Image.Image:
    try:
        img = Image.open(fp, formats=_open_formats())
    except UnidentifiedImageError:
        if _stream_is_empty(fp):
            raise ImageError(label, "the image data is empty (0 bytes)") from None
        raise ImageError(
            label, "not an image, or an image format Pillow cannot read (the file may be damaged)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(label, _bomb_reason(exc)) from None
    except MemoryError:
        raise ImageError(label, "not enough memory to read the image header") from None
    except Exception as exc:
        raise ImageError(label, f"the image header is damaged ({_describe(exc)})") from exc
    return _finish(img, label, max_pixels, owned=True)


def _stream_is_empty(fp: IO[bytes]) -> bool:
    try:
        return fp.seek(0, io.SEEK_END) == 0
    except (OSError, ValueError, AttributeError):
        return False


def _finish(img: Image.Image, label: str, max_pixels: int | None, *, owned: bool) -> Image.Image:
    """Check the size, decode the first frame, orient it and flatten it to RGB on white."""
    width, height = img.size
    pixels = width * height
    if owned and Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS:
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse here without touching
        # the process-wide warning filters.
        raise ImageError(label, _too_large(pixels, int(Image.MAX_IMAGE_PIXELS), width, height, bomb=True))
    if max_pixels is not None and pixels > max_pixels:
        raise ImageError(label, _too_large(pixels, max_pixels, width, height, bomb=False))
    if width < 1 or height < 1:
        raise ImageError(label, f"the image has no pixels ({width}x{height})")
    try:
        if img.tell() != 0:
            img.seek(0)
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(label, _bomb_reason(exc)) from None
    except MemoryError:
        raise ImageError(label, f"not enough memory to decode a {width}x{height} image") from None
    except Exception as exc:
        raise ImageError(label, f"the file is truncated or damaged ({_describe(exc)})") from exc
    sixteen_bit = _holds_sixteen_bit(img)  # read before orienting: a transposed copy has no format
    img = _apply_exif_orientation(img, label)
    try:
        return _to_rgb_on_white(img, sixteen_bit=sixteen_bit)
    except MemoryError:
        raise ImageError(label, f"not enough memory to convert a {width}x{height} image") from None
    except Exception as exc:
        raise ImageError(label, f"cannot convert {img.mode} pixels to RGB ({_describe(exc)})") from exc


def _apply_exif_orientation(img: Image.Image, label: str) -> Image.Image:
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation not in range(2, 9):
            return img
        # A new image, never the caller's. Not ``in_place=True``: Pillow < 10 has no such argument.
        return ImageOps.exif_transpose(img)
    except Exception as exc:  # broken EXIF must not cost the image
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", label, _describe(exc))
        return img


def _to_rgb_on_white(img: Image.Image, *, sixteen_bit: bool = False) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparent pixels become white (alpha-composited).

    ``sixteen_bit``: a mode "I" image holds 16-bit samples (see ``_holds_sixteen_bit``).
    """
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _numeric_to_rgb(img, sixteen_bit=sixteen_bit or _holds_sixteen_bit(img))
    if mode == "La":  # premultiplied; Pillow has no direct La -> RGBA conversion
        lum, alpha = img.split()
        return _composite_on_white(Image.merge("RGBa", (lum, lum, lum, alpha)).convert("RGBA"))
    palette_alpha = mode == "P" and img.palette is not None and img.palette.mode == "RGBA"
    if mode in _ALPHA_MODES or palette_alpha or "transparency" in img.info:
        try:
            rgba = img.convert("RGBA")
        except ValueError:  # a transparency entry Pillow cannot apply: ignore it
            logger.debug("ignoring unusable transparency %r of a %s image", img.info.get("transparency"), mode)
            return img.convert("RGB")
        return _composite_on_white(rgba)
    return img.convert("RGB")


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    canvas = Image.new("RGBA", rgba.size, _WHITE_RGBA)
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def _holds_sixteen_bit(img: Image.Image) -> bool:
    return img.mode == "I" and img.format in _SIXTEEN_BIT_I_FORMATS


def _numeric_to_rgb(img: Image.Image, *, sixteen_bit: bool = False) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale to RGB, scaled by the mode's nominal range.

    Pillow's own conversions clip these to 0..255, which turns a 16-bit greyscale PNG white.
    Other "I" images have no nominal range: it is guessed from their maximum.
    """
    raw = np.asarray(img)
    if img.mode.startswith("I;16") or sixteen_bit:
        scaled = raw.astype(np.float32) / 257.0
    elif img.mode == "I":
        peak = int(raw.max()) if raw.size else 0
        if peak <= 255:
            scaled = raw.astype(np.float32)
        elif peak <= 65535:
            scaled = raw.astype(np.float32) / 257.0
        else:
            scaled = raw.astype(np.float64) * (255.0 / peak)
    else:  # "F"
        values = np.where(np.isfinite(raw), raw, 0.0).astype(np.float32)
        peak = float(values.max()) if values.size else 0.0
        scaled = values * 255.0 if peak <= 1.0 else values
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    key = img.info.get("transparency")
    if isinstance(key, (int, float)) and not isinstance(key, bool):  # colour key, e.g. PNG tRNS
        grey[raw == key] = 255
    return Image.fromarray(grey).convert("RGB")


def _too_large(pixels: int, limit: int, width: int, height: int, *, bomb: bool) -> str:
    if bomb:
        advice = (
            "Pillow refuses images this big as a possible decompression bomb; shrink the image, "
            "or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
        )
    else:
        advice = "shrink the image below the limit and send it again"
    size = f"{width}x{height}, " if width and height else ""
    return f"image is too large ({size}{pixels} pixels, limit {limit}): {advice}"


def _bomb_reason(exc: Exception) -> str:
    match = _BOMB_SIZE.search(str(exc))
    pixels = int(match.group(1)) if match else 0
    limit = int(Image.MAX_IMAGE_PIXELS or 0)
    if pixels:
        return _too_large(pixels, limit, 0, 0, bomb=True)
    return f"image is too large ({exc}): shrink the image, or raise PIL.Image.MAX_IMAGE_PIXELS"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------- preprocessing


def reference_tensor(img: Image.Image, size: int) -> np.ndarray:
    """The model author's preprocessing: pad to a white square, bicubic to ``size``, float32 BGR.

    ``img`` should already be RGB on white (``load_image`` output); other modes are flattened first.
    Returns shape ``(size, size, 3)``, values 0..255, no batch axis.
    """
    _check_size(size)
    img = _to_rgb_on_white(img)
    width, height = img.size
    side = max(width, height)
    padded = Image.new("RGB", (side, side), _WHITE_RGB)
    padded.paste(img, ((side - width) // 2, (side - height) // 2))
    if side != size:
        padded = padded.resize((size, size), _BICUBIC)
    return _to_bgr_float(padded)


def prepare(img: Image.Image, size: int) -> np.ndarray:
    """Production preprocessing: the same tensor as ``reference_tensor``, cheaper on large images.

    A larger image is not padded to a square before resizing: only the band of the square that holds
    the image (plus the filter's reach into the white border) is resampled, with the reference's exact
    sample positions, and the rest of the output is white. Smaller images take the reference path.
    Returns a C-contiguous float32 BGR array of shape ``(size, size, 3)``.
    """
    _check_size(size)
    img = _to_rgb_on_white(img)
    width, height = img.size
    side = max(width, height)
    if width == height:
        return _to_bgr_float(img if side == size else img.resize((size, size), _BICUBIC))
    if side <= size:  # padding is free here; small upscales follow the reference literally
        return reference_tensor(img, size)

    scale = side / size
    offset = (side - min(width, height)) // 2  # where the reference pastes the image in the square
    first, stop, band_start, band_stop = _band(offset, min(width, height), side, size)
    box_start, box_stop = first * scale - band_start, stop * scale - band_start
    canvas = Image.new("RGB", (size, size), _WHITE_RGB)
    # Two explicit passes, horizontal first like the reference resize of the square (Pillow >= 13 may
    # otherwise pick the vertical pass first, whose intermediate clipping changes results).
    if width > height:
        across = img.resize((size, height), _BICUBIC)  # horizontal pass; white rows stay white
        band = Image.new("RGB", (size, band_stop - band_start), _WHITE_RGB)
        band.paste(across, (0, offset - band_start))
        rows = band.resize((size, stop - first), _BICUBIC, box=(0, box_start, size, box_stop))
        canvas.paste(rows, (0, first))
    else:
        band = Image.new("RGB", (band_stop - band_start, height), _WHITE_RGB)
        band.paste(img, (offset - band_start, 0))
        cols = band.resize((stop - first, height), _BICUBIC, box=(box_start, 0, box_stop, height))
        canvas.paste(cols.resize((stop - first, size), _BICUBIC), (first, 0))
    return _to_bgr_float(canvas)


def _band(offset: int, extent: int, side: int, size: int) -> tuple[int, int, int, int]:
    """Output rows [first, stop) that the image reaches when ``side`` is resized to ``size`` (shrinking),
    and the source rows [band_start, band_stop) of the padded square that those rows read.

    Mirrors Pillow's ``precompute_coeffs``: output row ``i`` reads source rows around
    ``(i + 0.5) * scale`` within ``support``; rows outside the band read only white padding.
    """
    scale = side / size
    support = _BICUBIC_SUPPORT * scale
    first = max(0, math.floor((offset - support) / scale - 0.5) - 1)
    stop = min(size, math.ceil((offset + extent + support) / scale - 0.5) + 2)
    band_start = max(int((first + 0.5) * scale - support + 0.5), 0)
    band_stop = min(int((stop - 0.5) * scale + support + 0.5), side)
    return first, stop, min(band_start, offset), max(band_stop, offset + extent)


def _to_bgr_float(img: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(img)[:, :, ::-1], dtype=np.float32)


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, not {size!r}")


def prepare_batch(images: list[np.ndarray]) -> np.ndarray:
    """Stack prepared ``(S, S, 3)`` arrays into one C-contiguous float32 ``(N, S, S, 3)`` batch."""
    if not images:
        raise ValueError("prepare_batch needs at least one image")
    shape = np.shape(images[0])
    if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 3:
        raise ValueError(f"expected arrays of shape (S, S, 3), got {shape}")
    batch = np.empty((len(images), *shape), dtype=np.float32)
    for index, array in enumerate(images):
        if np.shape(array) != shape:
            raise ValueError(f"image {index} has shape {np.shape(array)}, expected {shape}")
        batch[index] = array
    return batch
