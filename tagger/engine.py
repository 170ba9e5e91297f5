"""The engine every front end uses: models by name, a shared session registry, and tagging calls.

It knows nothing of the WebUI, gradio or HTTP. One ``Tagger`` per process is the norm (the WebUI tab, the
API and the standalone server share one), and it is safe to call from several threads at once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tagger import hub, paths
from tagger.cache import CachedProbs, ProbCache, content_hash, file_hash
from tagger.errors import ImageError
from tagger.labels import Labels, read_labels
from tagger.options import TagOptions
from tagger.pipeline import Precomputed, Prediction, iter_predictions, prepare_source
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
    cached: bool = False  # answered from the probability cache, without the model
    # The cache entry behind a cached answer (``tag_image``): ``probs`` is exact only at or above its floor;
    # pass ``hit.mcut`` to postprocess and ask ``hit.serves(options)`` when re-formatting these probabilities.
    hit: CachedProbs | None = None


@dataclass(frozen=True)
class _Known:
    """A source paired with its content hash, on its way through the pipeline."""

    source: Any
    digest: str | None
    hit: CachedProbs | None = None


def image_digest(source: Any) -> str | None:
    """Content hash of a path, bytes or PIL image (the cache key); None when it cannot be read here."""
    try:
        if isinstance(source, (str, os.PathLike)):
            return file_hash(Path(os.fspath(source)))
        if isinstance(source, (bytes, bytearray, memoryview)):
            return content_hash(bytes(source))
        if hasattr(source, "tobytes") and hasattr(source, "mode") and hasattr(source, "size"):
            header = f"{source.mode}:{source.size[0]}x{source.size[1]}:".encode()
            return content_hash(header + source.tobytes())
    except (OSError, ValueError):
        return None
    return None


class _LockedModel:
    """A loaded model whose ``run`` goes through ``Tagger.run`` (the inference lock); all else delegated."""

    def __init__(self, loaded: LoadedModel, tagger: Tagger) -> None:
        self._loaded, self._tagger = loaded, tagger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loaded, name)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._tagger.run(self._loaded, batch)


class Tagger:
    def __init__(
        self,
        models_dir: str | Path | None = None,
        device: str = "auto",
        *,
        download: bool = True,
        progress: bool = True,
        threads: int | None = None,
        cache: ProbCache | None = None,
        on_load: Callable[[LoadedModel], None] | None = None,
        inference_lock: contextlib.AbstractContextManager[Any] | None = None,
    ) -> None:
        self.models_dir = paths.models_dir(models_dir)
        self.cache = cache
        self.on_load = on_load  # told of every session created (the CLI prints the provider from it)
        # Held around each model run only (never decoding or downloads): the WebUI's queue lock, so that
        # tagging and image generation never use the GPU at once.
        self.inference_lock = inference_lock
        self._labels: dict[str, Labels] = {}
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

        def create() -> LoadedModel:
            loaded = create_session(self.resolve(model), self.device, self.threads)
            if self.on_load is not None:
                self.on_load(loaded)
            return loaded

        return self._registry.get(model, create)

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

    # -- the probability cache -------------------------------------------------------------------------
    def model_key(self, model: str) -> tuple[hub.ModelFiles, str]:
        """The model's files and its cache key: id@revision plus the model file's size and mtime, so a
        re-downloaded or edited model never answers from an older model's cache entries."""
        files = self.resolve(model)
        st = files.model_path.stat()
        return files, f"{files.model_id}|{st.st_size}|{st.st_mtime_ns}"

    def labels(self, files: hub.ModelFiles) -> Labels:
        """The tag list of ``files``, read once (again if the csv file changes)."""
        st = files.tags_path.stat()
        key = f"{files.tags_path}|{st.st_size}|{st.st_mtime_ns}"
        if key not in self._labels:
            self._labels[key] = read_labels(files.tags_path)
        return self._labels[key]

    def _lookup(self, digest: str | None, mkey: str, opts: TagOptions) -> CachedProbs | None:
        if self.cache is None or digest is None:
            return None
        hit = self.cache.get(digest, mkey)
        return hit if hit is not None and hit.serves(opts) else None

    # -- tagging --------------------------------------------------------------------------------------
    def predict(self, model: str, image: Any) -> tuple[LoadedModel, np.ndarray]:
        """Probabilities for one image (path, bytes, file object or PIL image), always from the model."""
        loaded = self.load(model)
        tensor = prepare_source(image, loaded.size)[None]
        return loaded, self.run(loaded, tensor)[0]

    def run(self, loaded: LoadedModel, batch: np.ndarray) -> np.ndarray:
        """``loaded.run(batch)`` under the inference lock, if one was given."""
        if self.inference_lock is None:
            return loaded.run(batch)
        with self.inference_lock:
            return loaded.run(batch)

    def cached(
        self, model: str, image: Any, options: TagOptions, *, digest: str | None = None
    ) -> tuple[TagResult, hub.ModelFiles, CachedProbs] | None:
        """The result for ``image`` from the probability cache, or None (no cache, not seen, or not exact)."""
        if self.cache is None:
            return None
        files, mkey = self.model_key(model)
        hit = self._lookup(digest or image_digest(image), mkey, options)
        if hit is None:
            return None
        return postprocess(hit.probs, self.labels(files), options, mcut=hit.mcut), files, hit

    def remember(self, model: str, image: Any, probs: np.ndarray, labels: Labels, *, digest: str | None = None) -> None:
        """Store the model's answer for ``image`` in the probability cache (if there is one)."""
        if self.cache is None:
            return
        digest = digest or image_digest(image)
        if digest is not None:
            self.cache.put(digest, self.model_key(model)[1], probs, labels)

    def tag_image(self, model: str, image: Any, options: TagOptions | None = None) -> ImageTags:
        """Tag one image. With a cache, an image seen before under this model is answered without it."""
        start = time.perf_counter()
        opts = options or TagOptions()
        digest = image_digest(image) if self.cache is not None else None  # hashed once, used twice
        hit = self.cached(model, image, opts, digest=digest)
        if hit is not None:
            result, files, entry = hit
            elapsed = time.perf_counter() - start
            return ImageTags(image, result, files.name, "cache", elapsed, entry.probs, True, entry)
        loaded, probs = self.predict(model, image)
        self.remember(model, image, probs, loaded.labels, digest=digest)
        result = postprocess(probs, loaded.labels, opts)
        return ImageTags(image, result, loaded.name, loaded.provider_label, time.perf_counter() - start, probs)

    def iter_probs(
        self,
        model: str,
        sources: Iterable[Any],
        options: TagOptions | None = None,
        *,
        batch_size: int | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[tuple[Prediction[Any], Labels, tuple[float, float] | None, bool]]:
        """Probabilities for a stream of sources, in order: ``(prediction, labels, mcut, cached)``.

        Cache hits skip the model; the model is loaded only when the first image that needs it comes.
        ``prediction.source`` is the original source. The engine for batch captioning and the CLI.
        """
        opts = options or TagOptions()
        files, mkey = self.model_key(model) if self.cache is not None else (self.resolve(model), "")
        labels = self.labels(files)

        def load(item: _Known, size: int) -> np.ndarray | Precomputed:
            return Precomputed(item.hit.probs) if item.hit is not None else prepare_source(item.source, size)

        def lookups() -> Iterator[_Known]:
            for src in sources:
                if cancel is not None and cancel.is_set():
                    return
                digest = image_digest(src) if self.cache is not None else None
                yield _Known(src, digest, self._lookup(digest, mkey, opts))

        def mcut_of(item: _Known) -> tuple[float, float] | None:
            return item.hit.mcut if item.hit is not None else None

        stream = lookups()
        first_miss: _Known | None = None
        for item in stream:  # answer from the cache until an image needs the model
            if item.hit is None:
                first_miss = item
                break
            yield Prediction(item.source, probs=item.hit.probs), labels, mcut_of(item), True
        if first_miss is None:
            return
        loaded = self.load(model)
        rest = itertools.chain([first_miss], stream)
        runner = loaded if self.inference_lock is None else _LockedModel(loaded, self)
        for pred in iter_predictions(runner, rest, batch_size=batch_size, cancel=cancel, loader=load):
            item = pred.source
            cached = item.hit is not None
            if pred.error is None and not cached and self.cache is not None and item.digest is not None:
                self.cache.put(item.digest, mkey, pred.probs, loaded.labels)
            yield Prediction(item.source, pred.probs, pred.error), labels, mcut_of(item), cached

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
        opts = options or TagOptions()
        last = time.perf_counter()
        name = provider = ""
        for pred, labels, mcut, cached in self.iter_probs(model, sources, opts, batch_size=batch_size, cancel=cancel):
            now = time.perf_counter()
            if pred.error is not None:
                yield pred.error
            else:
                if not cached and not provider:
                    loaded = self.load(model)
                    name, provider = loaded.name, loaded.provider_label
                result = postprocess(pred.probs, labels, opts, mcut=mcut)
                yield ImageTags(
                    pred.source, result, name or model, "cache" if cached else provider, now - last, pred.probs, cached
                )
            last = now
