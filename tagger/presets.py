"""Named sets of options saved as JSON files, one per preset, in a folder the user keeps across updates.

A preset holds every ``TagOptions`` field and the model name. Files are written atomically and read through
``options_from_mapping``, so a hand-edited preset with a bad value is refused with the field named; keys
that this version does not know (a preset saved by a newer version) are dropped and reported.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagger.errors import OptionsError, TaggerError
from tagger.files import write_atomic
from tagger.options import OPTION_FIELDS, TagOptions, options_from_mapping, options_to_dict
from tagger.paths import name_problem

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAX_NAME = 64


class PresetError(TaggerError):
    """A preset name is unusable, or a preset file cannot be read or written."""


@dataclass(frozen=True)
class Preset:
    name: str
    options: TagOptions
    model: str | None = None
    ignored: tuple[str, ...] = field(default=())  # keys in the file this version does not know


def check_name(name: str) -> str:
    """The trimmed name, or PresetError saying why it cannot be a file name on every platform."""
    name = (name or "").strip()
    problem = name_problem(name, max_length=MAX_NAME)
    if problem:
        raise PresetError(f"Preset name {name!r}: {problem}.")
    return name


class PresetStore:
    """The presets in ``folder`` (created when the first preset is saved)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / f"{check_name(name)}.json"

    def names(self) -> list[str]:
        try:
            files = [p for p in self.folder.iterdir() if p.suffix == ".json" and p.is_file()]
        except OSError:
            return []
        return sorted((p.stem for p in files), key=str.lower)

    def save(self, name: str, options: TagOptions, model: str | None = None) -> Path:
        target = self.path(name)
        record: dict[str, Any] = {"version": FORMAT_VERSION, "model": model, "options": options_to_dict(options)}
        text = json.dumps(record, ensure_ascii=False, indent=2) + "\n"
        try:
            write_atomic(target, text)
        except OSError as e:
            raise PresetError(f"Preset {name!r} could not be saved to {target}: {e.strerror or e}") from e
        return target

    def load(self, name: str) -> Preset:
        target = self.path(name)
        try:
            record = json.loads(target.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise PresetError(f"Preset {name!r} does not exist (looked for {target}).") from e
        except (OSError, ValueError) as e:
            raise PresetError(f"Preset {name!r} ({target}) could not be read: {e}") from e
        if not isinstance(record, dict) or not isinstance(record.get("options", {}), dict):
            raise PresetError(f"Preset {name!r} ({target}) is not a preset file.")
        raw = record.get("options", {})
        known = {k: v for k, v in raw.items() if k in OPTION_FIELDS}
        ignored = tuple(sorted(set(raw) - set(known)))
        if ignored:
            log.warning("preset %s: ignoring unknown options %s", name, ", ".join(ignored))
        try:
            options = options_from_mapping(known)
        except OptionsError as e:
            raise PresetError(f"Preset {name!r} ({target}): option {e}") from e
        model = record.get("model")
        return Preset(check_name(name), options, model if isinstance(model, str) and model else None, ignored)

    def delete(self, name: str) -> bool:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            return False
        except OSError as e:
            raise PresetError(f"Preset {name!r} could not be deleted: {e.strerror or e}") from e
        return True
