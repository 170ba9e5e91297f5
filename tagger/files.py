"""Writing and hashing the user's files: the one copy that captions, sidecars and presets all use."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

# SHAKE digests have no length of their own: these give 32 and 64 hex digits, as long as md5's and sha256's.
SHAKE_BYTES = {"shake_128": 16, "shake_256": 32}
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write ``text`` (UTF-8, no BOM, ``\\n`` line ends; bytes as they are) so that ``path`` is either the old
    file or the new one.

    A new file gets the mode any file the user creates gets (0666 less the umask, and the folder's default
    ACL), not ``mkstemp``'s 0600: a training job running as another user must be able to read captions. The
    temporary file is created with that mode by the kernel itself, so the umask is never read or changed
    (changing it would race with other threads). A file being replaced keeps its own mode.
    """
    with atomic_file(path, binary=isinstance(text, bytes)) as fh:
        fh.write(text)


@contextlib.contextmanager
def atomic_file(path: Path, *, binary: bool = False) -> Iterator[IO[Any]]:
    """A file to write ``path`` through, as ``write_atomic`` does: it replaces ``path`` when the block ends
    without an exception, and is removed (``path`` untouched) when one escapes. For files written piece by
    piece (a metadata file of a whole batch)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with contextlib.suppress(FileNotFoundError):
            mode = path.stat().st_mode & 0o7777
            if hasattr(os, "fchmod"):
                os.fchmod(fd, mode)
            else:  # Windows: only the read-only bit exists
                tmp.chmod(mode)
        opened = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        with opened as fh:
            fd = -1  # the file object owns it now
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        with contextlib.suppress(OSError):
            dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new hidden file beside ``path``, opened for writing with mode 0666 (the kernel applies the umask)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, _CREATE_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def new_hash(algo: str, **params: Any) -> Any:
    """hashlib's hash object for ``algo`` (any case); ValueError naming it when this Python cannot make it.

    ``hashlib.algorithms_available`` can list names that OpenSSL then refuses (md4, ripemd160, whirlpool on
    OpenSSL 3), so the only test is making one.
    """
    try:
        return hashlib.new(algo.lower(), **params)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{algo!r} is not a hash algorithm this Python can compute ({e})") from e


def hash_file(path: Path, algo: str, **params: Any) -> str:
    """The hex digest of the file's bytes with ``algo`` (``params`` such as blake2b's ``digest_size``).

    SHAKE algorithms give ``SHAKE_BYTES`` bytes. Reads in 1 MiB pieces: images of any size, little memory.
    """
    h = new_hash(algo, **params)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    length = SHAKE_BYTES.get(h.name)
    return h.hexdigest(length) if length else h.hexdigest()
