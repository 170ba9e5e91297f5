"""tagger.images: loading every kind of image file, the reference preprocessing and the fast path."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL
import pytest
from PIL import Image

from tagger import images
from tagger.errors import ImageError, TaggerError
from tagger.images import (
    IMAGE_EXTENSIONS,
    image_extensions,
    load_image,
    prepare,
    prepare_batch,
    reference_tensor,
)

PILLOW = tuple(int(part) for part in PIL.__version__.split(".")[:2])
S = 448
MAX_MAD = 0.5  # the contract: mean |prepare - reference_tensor| on the 0..255 scale
WHITE = (255, 255, 255)


# ------------------------------------------------------------------------------------------- helpers


def _png(width: int, height: int, bit_depth: int, color_type: int, rows: list[bytes], *extra: bytes) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB), with optional extra chunks."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    body = zlib.compress(b"".join(b"\x00" + row for row in rows))
    chunks = [chunk(b"IHDR", ihdr), *(chunk(c[:4], c[4:]) for c in extra), chunk(b"IDAT", body)]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks) + chunk(b"IEND", b"")


def _png16(array: np.ndarray, color_type: int, *extra: bytes) -> bytes:
    height, width = array.shape[:2]
    rows = [row.astype(">u2").tobytes() for row in array]
    return _png(width, height, 16, color_type, rows, *extra)


def _save(path: Path, img: Image.Image, **params: object) -> Path:
    img.save(path, **params)
    return path


def _px(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = img.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def _close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _scene(width: int, height: int) -> Image.Image:
    """Gradients, hard edges and texture: something like a drawing."""
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack(
        [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), ((x // 7 + y // 5) % 2) * 200 + 20],
        axis=-1,
    ).astype(np.uint8)
    arr[height // 4 : height // 2, width // 3 : width // 2] = (250, 30, 30)
    return Image.fromarray(arr)


def _mad(img: Image.Image) -> float:
    return float(np.abs(prepare(img, S) - reference_tensor(img, S)).mean())


# ------------------------------------------------------------------------------------- mode handling


def test_one_bit_png(tmp_path: Path) -> None:
    img = Image.new("1", (8, 4), 0)
    img.putpixel((0, 0), 1)
    out = load_image(_save(tmp_path / "bits.png", img))
    assert out.mode == "RGB"
    assert _px(out, (0, 0)) == WHITE
    assert _px(out, (1, 0)) == (0, 0, 0)


def test_greyscale_png(tmp_path: Path) -> None:
    img = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16))
    out = load_image(_save(tmp_path / "grey.png", img))
    assert out.mode == "RGB"
    assert _px(out, (5, 3)) == (53, 53, 53)


def test_grey_alpha_png_composites_on_white(tmp_path: Path) -> None:
    lum = np.zeros((2, 3), np.uint8)
    alpha = np.array([[0, 255, 128], [0, 255, 128]], np.uint8)
    img = Image.fromarray(np.stack([lum, alpha], axis=-1), mode="LA")
    out = load_image(_save(tmp_path / "la.png", img))
    assert _px(out, (0, 0)) == WHITE
    assert _px(out, (1, 0)) == (0, 0, 0)
    assert _close(_px(out, (2, 0)), (127, 127, 127), 1)


def test_palette_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (4, 2), 0)
    img.putpalette([255, 0, 0, 0, 0, 255])  # index 0 red (made transparent), index 1 blue
    img.putpixel((1, 0), 1)
    path = _save(tmp_path / "ptrans.png", img, transparency=0)
    assert Image.open(path).convert("RGB").getpixel((0, 0)) == (255, 0, 0)  # the naive way keeps red
    out = load_image(path)
    assert _px(out, (0, 0)) == WHITE
    assert _px(out, (1, 0)) == (0, 0, 255)


def test_palette_without_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (4, 2), 0)
    img.putpalette([10, 20, 30, 200, 100, 50])
    img.putpixel((3, 1), 1)
    out = load_image(_save(tmp_path / "p.png", img))
    assert _px(out, (0, 0)) == (10, 20, 30)
    assert _px(out, (3, 1)) == (200, 100, 50)


def test_rgb_png_is_unchanged(tmp_path: Path) -> None:
    img = _scene(33, 17)
    out = load_image(_save(tmp_path / "rgb.png", img))
    assert np.array_equal(np.asarray(out), np.asarray(img))


def test_rgba_hidden_colour_under_transparency_becomes_white(tmp_path: Path) -> None:
    arr = np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]], np.uint8)
    path = _save(tmp_path / "rgba.png", Image.fromarray(arr))
    assert Image.open(path).convert("RGB").getpixel((0, 0)) == (255, 0, 0)  # the silent failure
    out = load_image(path)
    assert _px(out, (0, 0)) == WHITE
    assert _px(out, (1, 0)) == (0, 0, 255)
    assert _close(_px(out, (2, 0)), (127, 127, 127), 1)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    img = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    img.paste((0, 0, 0, 0), (8, 0, 16, 16))
    path = _save(tmp_path / "cmyk.jpg", img, quality=95)
    assert Image.open(path).mode == "CMYK"
    out = load_image(path)
    assert out.mode == "RGB"
    assert _close(_px(out, (2, 8)), (255, 0, 0), 6)
    assert _close(_px(out, (13, 8)), WHITE, 6)


# Pillow < 10.3 opens 16-bit greyscale PNGs as 32-bit "I" (python-pillow/Pillow#7849).
GREY16_PNG_MODE = "I;16" if PILLOW >= (10, 3) else "I"


def test_sixteen_bit_grey_png_is_scaled_not_white(tmp_path: Path) -> None:
    values = np.linspace(0, 65535, 64 * 16).astype(np.uint16).reshape(16, 64)
    path = tmp_path / "grey16.png"
    path.write_bytes(_png16(values, 0))  # 16-bit greyscale on every Pillow
    assert Image.open(path).mode == GREY16_PNG_MODE
    naive = np.asarray(Image.open(path).convert("RGB"))
    assert (naive == 255).mean() > 0.9  # what a plain convert("RGB") gives: nearly all white
    out = np.asarray(load_image(path))
    expected = np.rint(values / 257.0)
    assert np.abs(out[:, :, 0] - expected).max() <= 1
    assert (out[:, :, 0] == out[:, :, 2]).all()
    assert 120 < out.mean() < 135


def test_dark_sixteen_bit_grey_png_stays_dark(tmp_path: Path) -> None:
    # At most 250 of 65535: black. As mode "I" (Pillow < 10.3) nothing but the format says 16-bit.
    values = np.array([[0, 100, 200, 250]] * 2, np.uint16)
    path = tmp_path / "dark16.png"
    path.write_bytes(_png16(values, 0))
    assert Image.open(path).mode == GREY16_PNG_MODE
    assert [_px(load_image(path), (x, 0))[0] for x in range(4)] == [0, 0, 1, 1]
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = tmp_path / "dark16_rot6.png"  # oriented: the transposed copy has no format to go by
    rotated.write_bytes(_png16(values, 0, b"eXIf" + exif.tobytes()[len(b"Exif\x00\x00") :]))
    out = load_image(rotated)
    assert out.size == (2, 4)
    assert [_px(out, (0, y))[0] for y in range(4)] == [0, 0, 1, 1]


def test_sixteen_bit_pgm_is_scaled_by_its_range() -> None:
    dark = np.array([[0, 100, 200]], ">u2")  # Pillow opens it as "I", scaled to 0..65535
    out = load_image(b"P5 3 1 65535\n" + dark.tobytes())
    assert [_px(out, (x, 0))[0] for x in range(3)] == [0, 0, 1]
    out = load_image(b"P5 3 1 1000\n" + np.array([[0, 500, 1000]], ">u2").tobytes())
    assert [_px(out, (x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_sixteen_bit_grey_png_colour_key_becomes_white(tmp_path: Path) -> None:
    values = np.array([[1000, 257 * 40, 1000]], np.uint16)
    path = tmp_path / "grey16_trns.png"
    path.write_bytes(_png16(values, 0, b"tRNS" + struct.pack(">H", 1000)))
    out = load_image(path)
    assert _px(out, (0, 0)) == WHITE
    assert _px(out, (1, 0)) == (40, 40, 40)


def test_sixteen_bit_big_endian_tiff(tmp_path: Path) -> None:
    values = np.arange(0, 60000, 5000, dtype=">u2")
    img = Image.new("I;16B", (4, 3))
    img.frombytes(values.tobytes())
    path = _save(tmp_path / "be16.tif", img)
    assert Image.open(path).mode == "I;16B"
    out = np.asarray(load_image(path))[:, :, 1]
    assert np.abs(out.ravel() - np.rint(values / 257.0)).max() <= 1


def test_int32_tiff_is_scaled_by_range(tmp_path: Path) -> None:
    wide = np.array([[0, 50000, 99990]], np.int32)  # beyond 16 bits: scaled by the maximum
    out = load_image(_save(tmp_path / "i32.tif", Image.fromarray(wide)))
    assert [_px(out, (x, 0))[0] for x in range(3)] == [0, 128, 255]
    sixteen = np.array([[0, 257 * 100, 65535]], np.int32)  # 16-bit range: / 257
    out = load_image(_save(tmp_path / "i16range.tif", Image.fromarray(sixteen)))
    assert [_px(out, (x, 0))[0] for x in range(3)] == [0, 100, 255]
    eight = np.array([[0, 77, 200]], np.int32)  # 8-bit range: kept
    out = load_image(_save(tmp_path / "i8range.tif", Image.fromarray(eight)))
    assert [_px(out, (x, 0))[0] for x in range(3)] == [0, 77, 200]


def test_float_tiff(tmp_path: Path) -> None:
    unit = np.array([[0.0, 0.5, 1.0, np.nan]], np.float32)
    path = _save(tmp_path / "f.tif", Image.fromarray(unit))
    assert Image.open(path).mode == "F"
    out = load_image(path)
    assert [_px(out, (x, 0))[0] for x in range(4)] == [0, 128, 255, 0]
    big = np.array([[-5.0, 100.0, 300.0]], np.float32)
    out = load_image(_save(tmp_path / "f255.tif", Image.fromarray(big)))
    assert [_px(out, (x, 0))[0] for x in range(3)] == [0, 100, 255]


def test_sixteen_bit_rgb_and_rgba_png(tmp_path: Path) -> None:
    rgb = np.array([[[65535, 32896, 0], [257 * 10, 257 * 20, 257 * 30]]], np.uint16)
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png16(rgb, 2))
    out = load_image(path)
    assert _close(_px(out, (0, 0)), (255, 128, 0), 1)
    assert _close(_px(out, (1, 0)), (10, 20, 30), 1)
    rgba = np.array([[[65535, 0, 0, 0], [0, 0, 65535, 65535]]], np.uint16)
    path = tmp_path / "rgba16.png"
    path.write_bytes(_png16(rgba, 6))
    out = load_image(path)
    assert _px(out, (0, 0)) == WHITE
    assert _px(out, (1, 0)) == (0, 0, 255)


def test_ycbcr_lab_hsv(tmp_path: Path) -> None:
    red = Image.new("RGB", (16, 16), (255, 0, 0)).convert("YCbCr")
    assert _close(_px(load_image(red), (1, 1)), (255, 0, 0), 2)
    for compression in ("jpeg", "tiff_lzw"):  # decoded by libtiff (to RGB) on every Pillow
        ycc = _save(tmp_path / f"ycbcr_{compression}.tif", red, compression=compression)
        assert Image.open(ycc).tag_v2[262] == 6  # PhotometricInterpretation: YCbCr
        assert _close(_px(load_image(ycc), (1, 1)), (255, 0, 0), 3)
    ycc = _save(tmp_path / "ycbcr.jpg", red, quality=95)
    assert _close(_px(load_image(ycc), (1, 1)), (255, 0, 0), 3)
    lab = _save(tmp_path / "lab.tif", Image.new("LAB", (4, 4), (255, 128, 128)))
    assert _close(_px(load_image(lab), (1, 1)), WHITE, 2)
    hsv = Image.new("HSV", (4, 4), (0, 255, 255))
    assert _px(load_image(hsv), (1, 1)) == (255, 0, 0)


@pytest.mark.skipif(
    PILLOW < (10, 1),
    reason="Pillow < 10.1 cannot read uncompressed YCbCr TIFFs, even its own: it unpacks their 3-byte "
    "pixels as 4-byte RGBX and fails with 'image file is truncated' (fixed by python-pillow/Pillow#7415)",
)
def test_uncompressed_ycbcr_tiff(tmp_path: Path) -> None:
    ycc = _save(tmp_path / "ycbcr.tif", Image.new("RGB", (4, 4), (255, 0, 0)).convert("YCbCr"))
    assert Image.open(ycc).mode == "YCbCr"
    assert _close(_px(load_image(ycc), (1, 1)), (255, 0, 0), 2)


def test_palette_alpha_tiff(tmp_path: Path) -> None:
    img = Image.new("PA", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255])
    img.putpixel((0, 0), (1, 0))
    img.putpixel((1, 0), (1, 255))
    out = load_image(_save(tmp_path / "pa.tif", img))
    assert _px(out, (0, 0)) == WHITE
    assert _px(out, (1, 0)) == (0, 0, 255)


def test_animated_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = _save(tmp_path / "anim.gif", frames[0], save_all=True, append_images=frames[1:], duration=40)
    assert _px(load_image(path), (3, 3)) == (255, 0, 0)
    opened = Image.open(path)
    opened.seek(2)
    assert _px(load_image(opened), (3, 3)) == (255, 0, 0)


def test_exif_orientation_rotates(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), WHITE)
    img.paste((255, 0, 0), (0, 0, 10, 10))  # red in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    path = _save(tmp_path / "rot6.jpg", img, exif=exif, quality=95)
    out = load_image(path)
    assert out.size == (20, 40)
    assert _close(_px(out, (15, 4)), (255, 0, 0), 12)  # now the top-right corner
    assert _close(_px(out, (4, 4)), WHITE, 12)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.filterwarnings("ignore:Truncated File Read")
def test_broken_exif_is_tolerated(tmp_path: Path) -> None:
    img = Image.new("RGB", (10, 6), (0, 128, 0))
    garbage = b"Exif\x00\x00MM\x00*\xff\xff\xff\xff garbage"
    # An IFD whose Orientation (0x0112) is 9: out of range, ignored.
    bad_value = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x09\x00\x00\x00"
    for index, exif in enumerate((garbage, bad_value)):
        out = load_image(_save(tmp_path / f"badexif{index}.jpg", img, exif=exif))
        assert out.size == (10, 6)
        assert _close(_px(out, (5, 3)), (0, 128, 0), 6)


def test_failing_exif_transpose_keeps_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(tmp_path / "rot.jpg", Image.new("RGB", (40, 20), (0, 0, 200)), exif=exif)

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("bad IFD")

    monkeypatch.setattr(images.ImageOps, "exif_transpose", broken)
    with caplog.at_level("WARNING", logger="tagger.images"):
        out = load_image(path)
    assert out.size == (40, 20)
    assert _close(_px(out, (20, 10)), (0, 0, 200), 6)
    assert "ignoring unreadable EXIF orientation" in caplog.text
    assert str(path) in caplog.text


def test_exif_orientation_of_a_pil_image_input(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    path = _save(tmp_path / "rot8.jpg", Image.new("RGB", (30, 12), (0, 0, 200)), exif=exif)
    opened = Image.open(path)
    out = load_image(opened)
    assert out.size == (12, 30)
    assert opened.size == (30, 12)  # the caller's image is left as it was


def test_premultiplied_modes() -> None:
    assert _px(load_image(Image.new("RGBa", (2, 2), (0, 0, 0, 0))), (0, 0)) == WHITE
    assert _px(load_image(Image.new("La", (2, 2), (0, 0))), (0, 0)) == WHITE
    assert _px(load_image(Image.new("La", (2, 2), (30, 255))), (0, 0)) == (30, 30, 30)


def test_pil_image_input_is_not_modified() -> None:
    arr = np.array([[[255, 0, 0, 0], [1, 2, 3, 255]]], np.uint8)
    original = Image.fromarray(arr)
    out = load_image(original)
    assert original.mode == "RGBA"
    assert np.array_equal(np.asarray(original), arr)
    assert _px(out, (0, 0)) == WHITE
    assert _px(out, (1, 0)) == (1, 2, 3)


# ------------------------------------------------------------------------------------ input kinds


def test_bytes_bytearray_memoryview_and_file_objects(tmp_path: Path) -> None:
    img = _scene(12, 9)
    path = _save(tmp_path / "in.png", img)
    data = path.read_bytes()
    expected = np.asarray(img)
    for source in (data, bytearray(data), memoryview(data), io.BytesIO(data)):
        assert np.array_equal(np.asarray(load_image(source)), expected)
    with path.open("rb") as fp:
        assert np.array_equal(np.asarray(load_image(fp)), expected)

    class Stream(io.RawIOBase):  # not seekable, like a socket or a pipe
        def __init__(self, payload: bytes) -> None:
            self._payload = io.BytesIO(payload)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            chunk = self._payload.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    assert np.array_equal(np.asarray(load_image(Stream(data))), expected)
    assert np.array_equal(np.asarray(load_image(str(path))), expected)


def test_name_overrides_source_in_errors() -> None:
    with pytest.raises(ImageError) as info:
        load_image(b"definitely not an image", name="upload.png")
    assert str(info.value).startswith("upload.png: ")
    assert info.value.source == "upload.png"
    with pytest.raises(ImageError) as info:
        load_image(b"definitely not an image")
    assert info.value.source == "<bytes>"


# ------------------------------------------------------------------------------------------ errors


def _error(source: object, **kwargs: object) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_image(source, **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, TaggerError)
    return info.value


def test_truncated_png(tmp_path: Path) -> None:
    data = _save(tmp_path / "full.png", _noise(64, 64)).read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    err = _error(path)
    assert err.source == str(path)
    assert "truncated or damaged" in err.reason


def test_truncated_jpeg(tmp_path: Path) -> None:
    data = _save(tmp_path / "full.jpg", _noise(64, 64), quality=90).read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    err = _error(path)
    assert str(err).startswith(f"{path}: ")
    assert "truncated" in err.reason


def test_empty_file_and_empty_data(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert "empty" in _error(path).reason
    assert "empty" in _error(b"").reason
    assert "empty" in _error(io.BytesIO()).reason


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is a text file, not a picture\n")
    err = _error(path)
    assert "not an image" in err.reason
    assert str(path) in str(err)


def test_directory_and_missing_file(tmp_path: Path) -> None:
    folder = tmp_path / "folder.png"
    folder.mkdir()
    assert "directory" in _error(folder).reason
    missing = tmp_path / "missing.png"
    err = _error(missing)
    assert err.reason == "file not found"
    assert err.source == str(missing)


def test_wrong_source_type() -> None:
    with pytest.raises(TypeError):
        load_image(12345)  # type: ignore[arg-type]


def _header_only_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height, with almost no pixel data: costs nothing to write."""
    return _png(width, height, 8, 2, [b"\x00\x00\x00"])


def test_decompression_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_header_only_png(20000, 20000))  # 400 M pixels: Pillow's error range
    err = _error(path)
    assert err.source == str(path)
    assert err.reason.startswith("image is too large (400000000 pixels, limit ")
    assert "MAX_IMAGE_PIXELS" in err.reason


def test_decompression_bomb_warning_range_is_refused_without_global_filters(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(_header_only_png(10000, 10000))  # 100 M: Pillow only warns; we refuse
    filters_before = list(warnings.filters)
    with pytest.warns(Image.DecompressionBombWarning):
        err = _error(path)
    assert warnings.filters == filters_before
    assert "image is too large (10000x10000, 100000000 pixels, limit" in err.reason


def test_lowered_pillow_limit_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(tmp_path / "small.png", _scene(64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    err = _error(path)
    assert "image is too large (4096 pixels, limit 1000)" in err.reason


def test_max_pixels(tmp_path: Path) -> None:
    path = _save(tmp_path / "hundred.png", _scene(100, 100))
    err = _error(path, max_pixels=5000)
    assert err.reason.startswith("image is too large (100x100, 10000 pixels, limit 5000)")
    assert "max_pixels" not in err.reason and "shrink the image below the limit" in err.reason  # no such setting
    assert load_image(path, max_pixels=10000).size == (100, 100)
    # Checked from the header, before decoding: this file has no pixel data to speak of.
    header_only = tmp_path / "header.png"
    header_only.write_bytes(_header_only_png(3000, 3000))
    assert "too large" in _error(header_only, max_pixels=1_000_000).reason
    assert "truncated or damaged" in _error(header_only).reason


def test_import_and_load_change_no_pillow_globals(tmp_path: Path) -> None:
    path = _save(tmp_path / "g.png", _scene(8, 8))
    script = f"""
import warnings
import numpy
from PIL import Image, ImageFile
before = (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS, Image._initialized, list(warnings.filters))
import tagger.images
assert Image._initialized == before[2], "plugins were loaded at import time"
tagger.images.load_image({str(path)!r})
after = (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS, before[2], list(warnings.filters))
assert before == after, (before, after)
"""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------------------------- preprocessing


def test_reference_tensor_layout() -> None:
    img = Image.new("RGB", (S, 200), (255, 0, 0))  # exactly S wide: padding only, no resize
    ref = reference_tensor(img, S)
    assert ref.shape == (S, S, 3)
    assert ref.dtype == np.float32
    top = (S - 200) // 2
    assert (ref[:top] == 255).all()
    assert (ref[top : top + 200] == [0, 0, 255]).all()  # BGR
    assert (ref[top + 200 :] == 255).all()


def test_reference_tensor_tiny_image_keeps_reference_offset() -> None:
    img = Image.new("RGB", (3, 2), (0, 0, 0))  # padded to 3x3 with the white row at the bottom
    ref = reference_tensor(img, S)
    assert (ref[0, S // 2] == 0).all()
    assert (ref[S - 1, S // 2] == 255).all()
    assert np.array_equal(prepare(img, S), ref)


def test_prepare_output_contract() -> None:
    out = prepare(Image.new("RGB", (900, 50), (0, 0, 255)), S)
    assert out.shape == (S, S, 3)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous
    assert (out[0] == 255).all() and (out[-1] == 255).all()
    assert np.array_equal(out[S // 2, S // 2], [255, 0, 0])  # blue in BGR
    assert out.min() >= 0 and out.max() <= 255


def test_prepare_flattens_non_rgb_input() -> None:
    rgba = Image.new("RGBA", (20, 10), (255, 0, 0, 0))
    assert (prepare(rgba, 32) == 255).all()
    assert (reference_tensor(rgba, 32) == 255).all()


SHAPES = [(50, 900), (1200, 40), (1, 1), (3, 2), (S, S), (1000, 999), (999, 1000), (449, 300), (2000, 1)]


@pytest.mark.parametrize("size", SHAPES, ids=[f"{w}x{h}" for w, h in SHAPES])
def test_prepare_is_exact_even_on_noise(size: tuple[int, int]) -> None:
    # Noise is the worst case for any shortcut that moves samples by a fraction of a pixel; resizing
    # first and then padding (the naive fast path) is off by 8/255 on 1000x999 noise.
    mad = _mad(_noise(*size))
    assert mad <= 0.01, f"mean |prepare - reference| = {mad:.4f} for noise {size}"


def _mode_cases(tmp_path: Path) -> dict[str, Callable[[], Image.Image]]:
    def file(name: str, img: Image.Image, **params: object) -> Callable[[], Image.Image]:
        path = _save(tmp_path / name, img, **params)
        return lambda: load_image(path)

    scene = _scene(300, 170)
    rgba = np.asarray(scene.convert("RGBA")).copy()
    rgba[:, ::3, 3] = 0
    rgba[::2, :, 3] = 90
    grey16 = (np.asarray(scene.convert("L")).astype(np.uint16) * 257).astype(np.uint16)
    rgb16 = tmp_path / "scene16.png"
    rgb16.write_bytes(_png16(np.asarray(scene).astype(np.uint16) * 257, 2))
    frames = [scene.convert("P"), _scene(300, 170).transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("P")]
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "1": file("m1.png", scene.convert("1")),
        "L": file("mL.png", scene.convert("L")),
        "LA": file("mLA.png", Image.fromarray(rgba).convert("LA")),
        "P+transparency": file("mPt.png", scene.convert("P"), transparency=0),
        "P": file("mP.png", scene.convert("P")),
        "RGB": file("mRGB.png", scene),
        "RGBA": file("mRGBA.png", Image.fromarray(rgba)),
        "CMYK-jpeg": file("mCMYK.jpg", scene.convert("CMYK"), quality=90),
        "I;16": file("m16.png", Image.fromarray(grey16)),
        "I": file("mI.tif", Image.fromarray(grey16.astype(np.int32) * 3)),
        "F": file("mF.tif", Image.fromarray(np.asarray(scene.convert("L"), np.float32) / 255)),
        "RGB16": lambda: load_image(rgb16),
        "YCbCr": lambda: load_image(scene.convert("YCbCr")),
        "YCbCr-tiff": file("mYCC.tif", scene.convert("YCbCr"), compression="tiff_lzw"),
        "gif": file("mA.gif", frames[0], save_all=True, append_images=frames[1:]),
        "exif6-jpeg": file("mExif.jpg", scene, exif=exif, quality=90),
        "tall": file("tall.png", _scene(50, 900)),
        "wide": file("wide.png", _scene(1200, 40)),
        "1x1": file("one.png", Image.new("RGB", (1, 1), (9, 99, 199))),
        "3x2": file("three.png", _scene(3, 2)),
        "exact": file("exact.png", _scene(S, S)),
        "near-square": file("near.png", _scene(1000, 999)),
        "huge-jpeg": file("huge.jpg", _scene(4000, 3000), quality=85),
    }


def test_prepare_matches_reference_on_every_mode_and_shape(tmp_path: Path) -> None:
    mads: dict[str, float] = {}
    for label, load in _mode_cases(tmp_path).items():
        img = load()
        assert img.mode == "RGB", label
        mads[label] = _mad(img)
    worst = max(mads, key=mads.__getitem__)
    summary = ", ".join(f"{k}={v:.4f}" for k, v in mads.items())
    assert mads[worst] <= MAX_MAD, f"worst MAD {mads[worst]:.4f} ({worst}); all: {summary}"
    print(f"worst MAD {mads[worst]:.5f} ({worst}); all: {summary}")
    assert mads[worst] <= 0.01, f"worst MAD {mads[worst]:.4f} ({worst}); all: {summary}"


def test_prepare_batch() -> None:
    arrays = [prepare(_scene(40, 30), 16), prepare(_scene(30, 40), 16), prepare(_noise(5, 5), 16)]
    batch = prepare_batch(arrays)
    assert batch.shape == (3, 16, 16, 3)
    assert batch.dtype == np.float32
    assert batch.flags.c_contiguous
    assert np.array_equal(batch[1], arrays[1])
    with pytest.raises(ValueError):
        prepare_batch([])
    with pytest.raises(ValueError):
        prepare_batch([arrays[0], prepare(_scene(4, 4), 8)])


def test_invalid_size() -> None:
    with pytest.raises(ValueError):
        prepare(_scene(4, 4), 0)
    with pytest.raises(ValueError):
        reference_tensor(_scene(4, 4), -3)


# ------------------------------------------------------------------------------------- extensions


def test_image_extensions() -> None:
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"} == IMAGE_EXTENSIONS
    assert ".avif" not in IMAGE_EXTENSIONS
    found = image_extensions()
    assert found >= IMAGE_EXTENSIONS
    avif = Image.registered_extensions().get(".avif")
    assert (".avif" in found) == (avif is not None and avif in Image.OPEN)
    assert found - IMAGE_EXTENSIONS <= {".avif"}


def test_eps_is_never_opened(tmp_path: Path) -> None:
    # Pillow hands EPS to Ghostscript; the loader does not even identify it.
    path = tmp_path / "doc.png"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    assert "not an image" in _error(path).reason
    assert "EPS" not in images._open_formats()
