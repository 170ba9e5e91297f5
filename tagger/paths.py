"""Where models (and other per-user data) live, resolved on call and never at import time; which names can be
folders and files there."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ENV_MODELS_DIR = "TAGGER_MODELS_DIR"

# What a file or folder name cannot hold on one platform or another: Windows refuses \ / : * ? " < > | and
# control characters, and the names of its devices, with or without an extension.
_UNSAFE_CHARACTERS = re.compile(r'[\\/:*?"<>|\x00-\x1f]')
_WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
)
MAX_NAME_LENGTH = 255  # characters in one path component on the common file systems


def name_problem(name: str, *, max_length: int = MAX_NAME_LENGTH) -> str | None:
    """Why ``name`` cannot be one file or folder name on every platform, or None when it can.

    The one check of every name that becomes a folder or file of the user's: local model names, preset names,
    the folder of a quantised model. A name that passes is a single path component (no way out of the folder
    it is joined to), is not hidden, and means the same file on Linux, macOS and Windows.
    """
    if not name:
        return "empty; type a name first"
    if len(name) > max_length:
        return f"longer than {max_length} characters"
    bad = _UNSAFE_CHARACTERS.search(name)
    if bad:
        shown = repr(bad.group()) if bad.group() < " " else bad.group()
        return f'contains {shown}, which file names cannot hold (\\ / : * ? " < > | and control characters)'
    if name.startswith("."):
        return "starts with a dot (a hidden file; . and .. are folders already)"
    if name.endswith((" ", ".")):
        return "ends with a space or a dot (Windows drops them)"
    if name.split(".")[0].rstrip(" ").upper() in _WINDOWS_DEVICES:
        return "is the name of a Windows device (CON, PRN, AUX, NUL, COM1-9, LPT1-9)"
    return None


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
