"""What the Tagger page needs from whoever hosts it, and the standalone implementation.

The page (``tagger.ui``) never imports the WebUI: it asks a ``Host`` for its defaults, where presets live,
how to send a prompt to other tabs, and how to mark a job the host shows as running. Model runs hold the
engine's ``run_lock`` (the WebUI's queue lock there), so tagging never collides with image generation. ``tagger.webui.WebUIHost`` implements this for AUTOMATIC1111 and Forge; ``StandaloneHost``
below is what ``python -m tagger serve`` uses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tagger import paths
from tagger.catalog import DEFAULT_MODEL
from tagger.options import TagOptions


@dataclass(frozen=True)
class HostDefaults:
    """The page's starting values; in the WebUI they come from the "Tagger" settings section."""

    model: str = DEFAULT_MODEL
    general_threshold: float = TagOptions().general_threshold
    character_threshold: float = TagOptions().character_threshold
    unload_after: bool = False
    batch_size: int = 0  # 0: the engine's choice (1 on CPU, 16 on CUDA)
    interrogate_on_drop: bool = False

    def options(self) -> TagOptions:
        """TagOptions with the host's thresholds and the engine's defaults for everything else."""
        return TagOptions(general_threshold=self.general_threshold, character_threshold=self.character_threshold)


class Host:
    """The interface the page is built against. Subclasses override what their host offers."""

    name = "host"

    def defaults(self) -> HostDefaults:
        return HostDefaults()

    def presets_dir(self) -> Path:
        """Where named option sets are stored (outside any git checkout, so updates never lose them)."""
        raise NotImplementedError

    def send_targets(self) -> tuple[str, ...]:
        """Tabs a prompt can be sent to (``("txt2img", "img2img")`` in the WebUI); empty: no send-to row."""
        return ()

    def send_text(self, prompt: str) -> str:
        """The prompt as the send-to buttons hand it to the host (the WebUI protects weighted tags here)."""
        return prompt

    def add_send_buttons(self, image: Any, prompt: Any, name: str = "") -> list[Any]:
        """Create the send-to buttons of the textbox ``prompt`` in the current gradio layout and wire them;
        return them. ``name`` tells the rows of several textboxes apart (``tagger_send_<name>_txt2img``)."""
        return []

    @contextlib.contextmanager
    def job(self, name: str) -> Iterator[None]:
        """Mark a tagging job as running where the host shows its jobs (the WebUI's progress and Interrupt)."""
        yield

    def interrupted(self) -> bool:
        """True when the host's own Interrupt button was pressed during our job."""
        return False

    def batch_roots(self) -> tuple[Path, ...] | None:
        """The folders "Batch from folder" may read and write in (resolved); None: anywhere. The WebUI's
        user is this machine's user, so its tab may batch anywhere; the standalone server says where."""
        return None


class StandaloneHost(Host):
    """The host of ``python -m tagger serve``: no other tabs, presets in the per-user data folder, batches in
    ``batch_roots`` only (None: anywhere; ``serve`` always gives them)."""

    name = "standalone"

    def __init__(
        self,
        defaults: HostDefaults | None = None,
        presets_dir: str | Path | None = None,
        *,
        batch_roots: Sequence[str | Path] | None = None,
    ) -> None:
        self._defaults = defaults or HostDefaults()
        self._presets_dir = Path(presets_dir) if presets_dir else None
        self._batch_roots = None if batch_roots is None else tuple(Path(r).expanduser().resolve() for r in batch_roots)

    def defaults(self) -> HostDefaults:
        return self._defaults

    def presets_dir(self) -> Path:
        return self._presets_dir or paths.user_data_dir() / "presets"

    def batch_roots(self) -> tuple[Path, ...] | None:
        return self._batch_roots
