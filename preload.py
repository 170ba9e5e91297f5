"""Run by the WebUI for every extension before any script loads: the Tagger's command-line flags, and room for
an older tagger extension beside this one (see ``scripts/tagger_script.py``)."""

import importlib.util
import sys
from pathlib import Path

EXTENSION_ROOT = Path(__file__).resolve().parent


def preload(parser):
    parser.add_argument(
        "--tagger-models-dir",
        type=str,
        default=None,
        help="Tagger: folder of the WD14 tagger models (overrides the setting; default: models/tagger)",
    )
    parser.add_argument(
        "--tagger-device",
        type=str,
        default=None,
        help="Tagger: where the tagger models run: auto, cpu, cpu-bf16, openvino, cuda[:N] or intel-gpu[:N] "
        "(overrides the setting; cpu-bf16, openvino and intel-gpu need OpenVINO, which install.py then installs)",
    )
    older_taggers_keep_their_name()


def older_taggers_keep_their_name(extensions_dir=None):
    """Give ``sys.modules["tagger"]`` to the ``tagger`` folders of the older tagger extensions beside this one.

    Theirs have no ``__init__.py``: a namespace package, which a regular package anywhere on ``sys.path`` beats.
    Forge keeps every extension's folder on ``sys.path``, so their ``import tagger`` would find ours and fail.
    Only the package object is made (none of their code runs); each of their modules still loads from their
    folder when their scripts import it. Returns those folders."""
    if "tagger" in sys.modules:
        return []
    extensions_dir = Path(extensions_dir) if extensions_dir else EXTENSION_ROOT.parent
    try:
        folders = sorted(
            d / "tagger"
            for d in extensions_dir.iterdir()
            if d.resolve() != EXTENSION_ROOT and (d / "tagger").is_dir() and not (d / "tagger" / "__init__.py").exists()
        )
    except OSError:
        return []
    if not folders:
        return []
    spec = importlib.util.spec_from_loader("tagger", None, is_package=True)
    spec.submodule_search_locations = [str(f) for f in folders]
    sys.modules["tagger"] = importlib.util.module_from_spec(spec)
    return folders
