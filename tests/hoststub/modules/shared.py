"""Stand-in of the WebUI's ``modules.shared``: settings, command-line options, job state."""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

_root = tempfile.mkdtemp(prefix="hoststub-")
data_path = _root
models_path = f"{_root}/models"


class OptionInfo:
    def __init__(
        self,
        default: Any = None,
        label: str = "",
        component: Any = None,
        component_args: Any = None,
        onchange: Any = None,
        section: Any = None,
        **kwargs: Any,
    ) -> None:
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.comment_after = ""

    def needs_restart(self) -> OptionInfo:
        self.comment_after += " (requires restart)"
        return self

    def needs_reload_ui(self) -> OptionInfo:
        self.comment_after += " (requires Reload UI)"
        return self


class Options:
    def __init__(self) -> None:
        object.__setattr__(self, "data", {})
        object.__setattr__(self, "data_labels", {})

    def add_option(self, key: str, info: OptionInfo) -> None:
        self.data_labels[key] = info
        self.data.setdefault(key, info.default)

    def set(self, key: str, value: Any) -> None:
        """Like the host's Settings page: store and run the option's onchange."""
        self.data[key] = value
        info = self.data_labels.get(key)
        if info is not None and info.onchange is not None:
            info.onchange()

    def __getattr__(self, key: str) -> Any:
        try:
            return self.data[key]
        except KeyError:
            raise AttributeError(key) from None


class State:
    def __init__(self) -> None:
        self.interrupted = False
        self.job = ""
        self.jobs: list[str] = []

    def begin(self, job: str = "(unknown)") -> None:
        self.job = job
        self.interrupted = False
        self.jobs.append(job)

    def end(self) -> None:
        self.job = ""

    def interrupt(self) -> None:
        self.interrupted = True


opts = Options()
state = State()
cmd_opts = argparse.Namespace(api=False, nowebui=False, api_auth=None, tagger_models_dir=None, tagger_device=None)
