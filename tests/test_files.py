"""Writing the user's files: modes that follow the umask (so another user's training job can read captions),
atomic replacement, and the one file hash behind caption names and the probability cache."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tagger.files import hash_file, new_hash, write_atomic
from tagger.options import TagOptions
from tagger.presets import PresetStore

ROOT = Path(__file__).resolve().parent.parent
posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes and the umask are POSIX")


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@posix_only
@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_gets_the_mode_the_umask_gives(tmp_path: Path, mask: int, expected: int) -> None:
    with umask(mask):
        write_atomic(tmp_path / "sub" / "a.txt", "red theme, solo")
    assert mode(tmp_path / "sub" / "a.txt") == expected
    assert (tmp_path / "sub" / "a.txt").read_bytes() == b"red theme, solo"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["a.txt"]  # no temporary file left


@posix_only
@pytest.mark.parametrize("old_mode", [0o600, 0o640, 0o664])
def test_a_replaced_file_keeps_its_mode(tmp_path: Path, old_mode: int) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    target.chmod(old_mode)
    with umask(0o022):
        write_atomic(target, "new\nline")
    assert mode(target) == old_mode and target.read_bytes() == b"new\nline"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.mkdir()  # a folder where the file should go: the final rename fails
    with pytest.raises(OSError):
        write_atomic(target, "x")
    assert target.is_dir() and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


@posix_only
def test_presets_follow_the_umask_too(tmp_path: Path) -> None:
    with umask(0o022):
        path = PresetStore(tmp_path / "presets").save("portraits", TagOptions())
    assert mode(path) == 0o644


@posix_only
@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600)])
def test_cli_captions_and_sidecars_follow_the_umask(model_root: Path, tmp_path: Path, mask: int, expected: int):
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "a.png")
    args = [str(tmp_path), "--json", "--models-dir", str(model_root), "--model", "test-model", "--device", "cpu"]
    r = subprocess.run(
        [sys.executable, "-m", "tagger", "tag", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
        umask=mask,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert mode(tmp_path / "a.txt") == expected and mode(tmp_path / "a.json") == expected


def test_hash_file_any_algorithm_and_shake_lengths(tmp_path: Path) -> None:
    data = os.urandom((1 << 20) + 5)  # two read pieces
    (tmp_path / "f").write_bytes(data)
    assert hash_file(tmp_path / "f", "SHA256") == hashlib.sha256(data).hexdigest()
    assert hash_file(tmp_path / "f", "blake2b", digest_size=16) == hashlib.blake2b(data, digest_size=16).hexdigest()
    assert hash_file(tmp_path / "f", "shake_128") == hashlib.shake_128(data).hexdigest(16)
    assert hash_file(tmp_path / "f", "shake_256") == hashlib.shake_256(data).hexdigest(32)
    for bad in ("", "xyz", "sha-999"):
        with pytest.raises(ValueError, match="not a hash algorithm"):
            new_hash(bad)
