"""Where models (and other per-user data) live. Resolved on call, never at import time."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_MODELS_DIR = "TAGGER_MODELS_DIR"


def user_data_dir() -> Path:
    """The per-user data folder of the standalone tool (XDG on Linux, AppData on Windows)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "wd14-tagger"


def models_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The models folder: ``explicit`` (``--models-dir``), else ``$TAGGER_MODELS_DIR``, else the default.

    Not created here: a folder is made only when something is written into it.
    """
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_MODELS_DIR)
    if env:
        return Path(env).expanduser()
    return user_data_dir() / "models"


ENV_CACHE = "TAGGER_CACHE"


def cache_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The probability cache file: ``explicit`` (``--cache``), else ``$TAGGER_CACHE``, else per-user."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    return user_data_dir() / "cache" / "probs.sqlite3"
