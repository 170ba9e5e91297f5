"""What every part of the dataset command shares: its error, and the optional packages and URLs it opens."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tagger.errors import TaggerError

_RAY_EXTRA = "pip install -e '.[ray]' (ray[data], pyarrow and fsspec)"


class DatasetError(TaggerError):
    """The dataset run cannot start or go on (Ray missing, cluster unreachable, bad SRC or OUT)."""


def require(module: str) -> Any:
    """Import an optional package of the ray extra; DatasetError with the install command when it is missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise DatasetError(
            f"the dataset command runs on Ray Data, and {e.name or module} is not installed here: {_RAY_EXTRA}"
        ) from e


def is_url(text: str) -> bool:
    """A URL (``s3://...``, ``file://...``), not a local path."""
    return "://" in text


def url_fs(url: str) -> tuple[Any, str]:
    """fsspec's filesystem and path for ``url``; DatasetError when it cannot be opened from every node."""
    fsspec = require("fsspec")
    if url.split("://", 1)[0].lower() == "memory":
        raise DatasetError(
            f"{url}: memory:// files live inside one process, and Ray's workers are other processes that cannot "
            "see them; give a folder, or a URL of storage every node can read (file://, s3://, gs://, ...)"
        )
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:  # an unknown protocol, or its package missing (s3fs, gcsfs...)
        raise DatasetError(f"{url}: cannot open this URL ({e})") from e


def open_source(source: str) -> Any:
    """A binary file object for a local path or a URL."""
    if is_url(source):
        fsspec = require("fsspec")
        return fsspec.open(source, "rb").open()
    return open(source, "rb")


def absolute(path: Path | str) -> str:
    """The path made absolute and normal (``..`` folded), links left as named: an image's key."""
    return os.path.normpath(Path(path).expanduser().absolute())
