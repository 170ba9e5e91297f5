"""Stand-in of how the WebUI loads extensions, reduced to what decides which ``tagger`` package an import finds.

Read in the hosts' source (A1111 v1.10.1 ``modules/script_loading.py`` and ``modules/scripts.py``
``load_scripts``; Forge main, the same files):

- every extension's ``preload.py`` is loaded with ``importlib.util.spec_from_file_location`` (not put in
  ``sys.modules``) and its ``preload(parser)`` called, before any script loads;
- each ``scripts/*.py`` is loaded the same way, under the file's base name; an exception is reported (here:
  recorded in ``errors``) and loading goes on with the next script;
- A1111: while a script loads, its extension's folder is first on ``sys.path``; ``sys.path`` is restored after;
- Forge: before the first script loads, every extension's folder is put on ``sys.path`` and stays there; each
  script's own folder is put first while it loads.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

errors: list[tuple[str, str]] = []  # (script path, traceback) of every script that raised


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def preload_extensions(extension_dirs: list[Path], parser: argparse.ArgumentParser) -> None:
    for d in sorted(extension_dirs, key=lambda p: p.name):
        if (d / "preload.py").is_file():
            _load(d / "preload.py").preload(parser)


def load_scripts(extension_dirs: list[Path], host: str) -> None:
    """Load every extension's scripts in the order given, as ``host`` ("a1111" or "forge") does."""
    assert host in ("a1111", "forge")
    scripts = [(d, p) for d in extension_dirs for p in sorted((d / "scripts").glob("*.py"))]
    if host == "forge":
        for d, _ in scripts:
            if str(d) not in sys.path:
                sys.path = [str(d), *sys.path]
    syspath = sys.path
    for basedir, path in scripts:
        try:
            sys.path = [str(basedir), *sys.path]
            _load(path)
        except Exception:
            errors.append((str(path), traceback.format_exc()))
        finally:
            sys.path = syspath
