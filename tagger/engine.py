"""The engine every front end uses: models by name, a shared session registry, and tagging calls.

It knows nothing of the WebUI, gradio or HTTP. One ``Tagger`` per process is the norm (the WebUI tab, the
API and the standalone server share one), and it is safe to call from several threads at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tagger import hub, paths
from tagger.errors import ImageError
from tagger.images import load_image, prepare
from tagger.options import TagOptions
from tagger.pipeline import Prediction, iter_predictions
from tagger.postprocess import TagResult, postprocess
from tagger.runtime import Device, LoadedModel, ModelRegistry, create_session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageTags:
    """One image's tags with where they came from."""

    source: Any
    result: TagResult
    model: str
    provider: str
    elapsed: float  # seconds for this call (whole batch time / images for batch calls)
    probs: np.ndarray | None = None


class Tagger:
    def __init__(
        self,
        models_dir: str | Path | None = None,
        device: str = "auto",
        *,
        download: bool = True,
        progress: bool = True,
        threads: int | None = None,
    ) -> None:
        self.models_dir = paths.models_dir(models_dir)
        self.device = Device.parse(device)
        self.download = download
        self.progress = progress
        self.threads = threads
        self._registry = ModelRegistry()
        self._device_lock = threading.Lock()

    # -- models ---------------------------------------------------------------------------------------
    def list_models(self) -> list[hub.ModelInfo]:
        return hub.list_models(self.models_dir)

    def resolve(self, model: str) -> hub.ModelFiles:
        return hub.resolve_model(model, self.models_dir, download=self.download, progress=self.progress)

    def load(self, model: str) -> LoadedModel:
        """The loaded model called ``model`` (catalog name, local folder name or folder path)."""
        return self._registry.get(model, lambda: create_session(self.resolve(model), self.device, self.threads))

    def set_device(self, device: str) -> None:
        """Change the device; loaded sessions are dropped so the next call reloads on the new one."""
        new = Device.parse(device)
        with self._device_lock:
            if new != self.device:
                self.device = new
                self._registry.unload_all()

    def loaded(self) -> list[LoadedModel]:
        return self._registry.loaded()

    def unload(self, model: str) -> bool:
        return self._registry.unload(model)

    def unload_all(self) -> int:
        return self._registry.unload_all()

    # -- tagging --------------------------------------------------------------------------------------
    def predict(self, model: str, image: Any) -> tuple[LoadedModel, np.ndarray]:
        """Probabilities for one image (path, bytes, file object or PIL image)."""
        loaded = self.load(model)
        tensor = prepare(load_image(image), loaded.size)
        return loaded, loaded.run(tensor[None])[0]

    def tag_image(self, model: str, image: Any, options: TagOptions | None = None) -> ImageTags:
        start = time.perf_counter()
        loaded, probs = self.predict(model, image)
        result = postprocess(probs, loaded.labels, options or TagOptions())
        return ImageTags(image, result, loaded.name, loaded.provider_label, time.perf_counter() - start, probs)

    def tag_many(
        self,
        model: str,
        sources: Iterable[Any],
        options: TagOptions | None = None,
        *,
        batch_size: int | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[ImageTags | ImageError]:
        """Tag a stream of images in order; a failed image yields its ImageError and the stream goes on."""
        loaded = self.load(model)
        opts = options or TagOptions()
        last = time.perf_counter()
        pred: Prediction[Any]
        for pred in iter_predictions(loaded, sources, batch_size=batch_size, cancel=cancel):
            now = time.perf_counter()
            if pred.error is not None:
                yield pred.error
            else:
                result = postprocess(pred.probs, loaded.labels, opts)
                yield ImageTags(pred.source, result, loaded.name, loaded.provider_label, now - last, pred.probs)
            last = now
