"""The engine every front end uses: models by name, a shared session registry, and tagging calls.

It knows nothing of the WebUI, gradio or HTTP. One ``Tagger`` per process is the norm (the WebUI tab, the
API and the standalone server share one), and it is safe to call from several threads at once.

Every tagging call of every front end (the tab, the API, the CLI, batch captions) goes through
``iter_probs``: cache lookups first, the model loaded only when an image needs it, decoding overlapped with
inference, answers remembered in the cache. Downloads and session loads run once per model however many
callers ask (``wait`` bounds how long a caller waits for one; past it ``ModelBusyError`` says what is still
going on, and the work goes on).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from tagger import backends, hub, paths
from tagger.cache import CachedProbs, ProbCache, content_hash, file_hash
from tagger.catalog import by_name, canonical
from tagger.errors import ImageError, ModelFormatError, ModelUnavailableError, TaggerError
from tagger.families.description import WD14, ModelDescription
from tagger.families.readers import load_labels
from tagger.labels import Labels
from tagger.options import TagOptions, with_model_defaults
from tagger.pipeline import Precomputed, Prediction, iter_predictions, prepare_source
from tagger.postprocess import TagResult, postprocess
from tagger.runtime import Device, LoadedModel, ModelRegistry, auto_precision, create_session

log = logging.getLogger(__name__)
T = TypeVar("T")


class ModelBusyError(TaggerError):
    """The model is still being downloaded or loaded after the caller's ``wait``; the work goes on."""

    def __init__(self, model: str, doing: str, seconds: float) -> None:
        self.model, self.doing, self.seconds = model, doing, seconds
        super().__init__(f"Model '{model}' is still {doing} (for {seconds:.0f} s); it goes on: try again in a while.")


@dataclass(frozen=True)
class ImageTags:
    """One image's tags with where they came from."""

    source: Any
    result: TagResult
    model: str
    provider: str  # LoadedModel.provider_label ("CPU", "CUDA", "OpenVINO CPU bf16"...), or "cache" for the cache's
    elapsed: float  # seconds for this image (whole call time / images for several)
    probs: np.ndarray
    labels: Labels
    cached: bool = False  # answered from the probability cache, without the model
    # The cache entry behind a cached answer: ``probs`` is exact only at or above its floor; pass
    # ``hit.mcut`` to postprocess and ask ``hit.serves(options)`` when re-formatting these probabilities.
    hit: CachedProbs | None = None
    note: str = ""  # why the GPU is not used although it was wanted or offered, with the fix; else empty
    embedding: np.ndarray | None = None  # the model's image embedding, when asked for (``embeddings=True``)


@dataclass(frozen=True)
class _Out:
    """What ``_stream`` yields per source: the prediction, the tag list, the cache entry that answered (or
    None), the model that ran (None for answers from the cache) and the model's name."""

    pred: Prediction[Any]
    labels: Labels
    hit: CachedProbs | None
    loaded: LoadedModel | None
    name: str


@dataclass(frozen=True)
class _Known:
    """A source paired with its content hash and cache entry, on its way through the pipeline."""

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


def _cache_key(files: hub.ModelFiles, precision: str = "fp32") -> str:
    """The probability cache's key of a model: id@revision plus the model file's size and mtime, so a
    re-downloaded or edited model never answers from an older model's cache entries; a model run other than by
    the WD14 contract adds a digest of its description (a changed tagger.json is another model), and a
    precision other than fp32 adds its name (bf16 answers never mix with fp32 ones)."""
    key = files.file_key
    desc = files.description or WD14
    if desc != WD14:
        key += "|" + content_hash(repr(desc).encode())[:12]
    if precision != "fp32":
        key += f"|{precision}"
    return key


class _Once:
    """Work done once per key however many threads ask for it (a download, a session load).

    The first caller starts it: in its own thread when it waits as long as it takes (the CLI, the tab: a
    progress tracker following tqdm in that thread sees the download), else in a background thread with the
    caller's context variables. Every caller waits up to its ``wait`` for the result and gets
    ``ModelBusyError`` after that while the work goes on. A finished job is forgotten, so a failed download
    is tried again by the next caller.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, tuple[Future[Any], str, str, float]] = {}
        self._lock = threading.Lock()

    def run(self, key: str, model: str, doing: str, work: Callable[[], T], wait: float | None) -> T:
        inline = False
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                job = (Future(), model, doing, time.monotonic())
                self._jobs[key] = job
                inline = wait is None
                if not inline:
                    ctx = contextvars.copy_context()
                    thread = threading.Thread(
                        target=ctx.run, args=(self._work, key, job[0], work), name=f"tagger-{key}", daemon=True
                    )
                    thread.start()
        future, _, doing, started = job
        if inline:  # a caller that waits for as long as it takes does the work itself (its progress bars too)
            self._work(key, future, work)
        try:
            return future.result(timeout=wait)
        except FutureTimeout:
            raise ModelBusyError(model, doing, time.monotonic() - started) from None

    def _work(self, key: str, future: Future[Any], work: Callable[[], Any]) -> None:
        try:
            result, error = work(), None
        except BaseException as e:  # handed to every waiting caller
            result, error = None, e
        with self._lock:
            if self._jobs.get(key, (None,))[0] is future:
                del self._jobs[key]
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def busy(self) -> dict[str, str]:
        """Model name -> what is being done for it now ("downloaded ...", "loading")."""
        with self._lock:
            return {model: doing for _, model, doing, _ in self._jobs.values()}


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
        run_lock: contextlib.AbstractContextManager[Any] | None = None,
    ) -> None:
        """``run_lock`` is held around each model run, never around decoding or downloads: the WebUI passes
        its queue lock, so that tagging and image generation never use the GPU at once. By default one run
        at a time: ONNX Runtime already spreads a run over every core, and parallel runs only compete."""
        self.models_dir = paths.models_dir(models_dir)
        self.cache = cache
        self.on_load = on_load  # told of every session created (the CLI prints the provider from it)
        self.run_lock = run_lock if run_lock is not None else threading.Lock()
        self.device = Device.parse(device)
        self.download = download
        self.progress = progress
        self.threads = threads
        self._labels: dict[str, Labels] = {}
        self._registry = ModelRegistry()
        self._once = _Once()
        self._device_lock = threading.Lock()

    # -- models ---------------------------------------------------------------------------------------
    def list_models(self) -> list[hub.ModelInfo]:
        return hub.list_models(self.models_dir)

    def busy(self) -> dict[str, str]:
        """Models being downloaded or loaded now, with what is being done."""
        return self._once.busy()

    def resolve(self, model: str, *, wait: float | None = None) -> hub.ModelFiles:
        """The files of ``model``; a catalog model not here yet is downloaded (once, however many ask)."""
        try:
            return hub.resolve_model(model, self.models_dir, download=False, progress=False)
        except ModelUnavailableError:
            if not self.download:
                raise
        entry = by_name(model)
        doing = f"being downloaded from {entry.repo_id} into {self.models_dir / entry.name}" if entry else "resolving"

        def fetch() -> hub.ModelFiles:
            return hub.resolve_model(model, self.models_dir, download=True, progress=self.progress)

        return self._once.run(f"files:{model}", model, doing, fetch, wait)

    def load(self, model: str, *, wait: float | None = None) -> LoadedModel:
        """The loaded model called ``model`` (catalog name, local folder name or folder path)."""
        loaded = self._acquire(model, wait)
        self._registry.release(loaded)
        return loaded

    def _acquire(self, model: str, wait: float | None) -> LoadedModel:
        """The loaded model, held until ``_registry.release``: an unload meanwhile frees it afterwards."""
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            loaded = self._registry.acquire(model)
            if loaded is not None:
                return loaded
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            files = self.resolve(model, wait=left)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._once.run(f"load:{model}", model, "loading", lambda f=files: self._create(model, f), left)

    def _create(self, model: str, files: hub.ModelFiles) -> None:
        if self._registry.has(model):
            return
        loaded = create_session(files, self.device, self.threads, self.labels(files))  # the tag list read once
        loaded.run_lock = self.run_lock
        if self.on_load is not None:
            self.on_load(loaded)
        self._registry.add(model, loaded)

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
        """Unload ``model``: its memory goes back as soon as no call is using it (at once when idle)."""
        return self._registry.unload(model)

    def unload_all(self) -> int:
        return self._registry.unload_all()

    # -- the probability cache -------------------------------------------------------------------------
    def precision(self, files: hub.ModelFiles) -> str | None:
        """What the model of ``files`` computes in on this engine's device (fp32, bf16, fp16), known before it is
        loaded; None when ``auto`` has not checked it on this machine yet (the check comes with its first load)."""
        if self.device.kind == "auto":
            return auto_precision(files, self.threads)
        return backends.planned_precision(self.device)

    def iter_cached(self, model: str, sources: Iterable[Any]) -> Iterator[tuple[Any, Labels, CachedProbs | None]]:
        """``(source, labels, cache entry or None)`` for each source from the probability cache alone: the model
        is never downloaded, loaded or run (a batch's dry-run statistics). The caller checks
        ``entry.serves(options)``. ModelUnavailableError when the model's files are not here, TaggerError
        without a cache."""
        if self.cache is None:
            raise TaggerError("the probability cache is off, so there are no stored probabilities to read")
        files = hub.resolve_model(model, self.models_dir, download=False, progress=False)
        precision, labels = self.precision(files), self.labels(files)
        key = _cache_key(files, precision) if precision is not None else None  # None: auto has not checked it yet
        for src in sources:
            digest = image_digest(src)
            yield src, labels, self.cache.get(digest, key) if digest is not None and key is not None else None

    def labels(self, files: hub.ModelFiles) -> Labels:
        """The tag list of ``files``, read once (again if the file changes)."""
        desc = files.description or WD14
        st = files.tags_path.stat()
        key = f"{files.tags_path}|{st.st_size}|{st.st_mtime_ns}|{desc.labels!r}|{desc.single}"
        if key not in self._labels:
            self._labels[key] = load_labels(desc.labels, files.tags_path, single=desc.single)
        return self._labels[key]

    def describe(self, model: str) -> ModelDescription:
        """How ``model`` is run (a catalog model's entry, a local folder's files); WD14 when it cannot be told
        without downloading. Never downloads."""
        entry = by_name(model) or by_name(canonical(model) or "")
        if entry is not None:
            return entry.model_description
        try:
            files = hub.resolve_model(model, self.models_dir, download=False, progress=False)
        except (ModelUnavailableError, ModelFormatError):
            return WD14
        return files.description or WD14

    def model_categories(self, model: str) -> tuple[str, ...]:
        """The categories ``model`` has beyond rating, general and character: from its tag list when it is
        here, else what its catalog entry says it will have. Never downloads."""
        try:
            files = hub.resolve_model(model, self.models_dir, download=False, progress=False)
            return self.labels(files).extra
        except (TaggerError, OSError):
            entry = by_name(model) or by_name(canonical(model) or "")
            return entry.categories if entry is not None else ()

    def default_options(self, model: str, base: TagOptions | None = None) -> TagOptions:
        """``base`` (default ``TagOptions()``) with ``model``'s own default thresholds, where it has any: what a
        front end starts from when the user gave no threshold."""
        return with_model_defaults(base or TagOptions(), self.describe(model).thresholds)

    # -- tagging --------------------------------------------------------------------------------------
    def _stream(
        self,
        model: str,
        sources: Iterable[Any],
        options: TagOptions,
        *,
        batch_size: int | None,
        cancel: threading.Event | None,
        wait: float | None,
        max_pixels: int | None,
        decode_slots: threading.Semaphore | None,
        workers: int | None = None,
        embeddings: bool = False,
    ) -> Iterator[_Out]:
        files = self.resolve(model, wait=wait)
        labels = self.labels(files)
        held: LoadedModel | None = None  # the model once loaded (before the cache lookups when auto must check it)
        try:
            mkey = ""
            if self.cache is not None:
                precision = self.precision(files)
                if precision is None:  # auto's check (at the first load) decides the precision: the key needs it
                    held = self._acquire(model, wait)
                    precision = held.precision
                mkey = _cache_key(files, precision)

            def decode(item: _Known, prep: Any) -> np.ndarray | Precomputed:
                if item.hit is not None:
                    return Precomputed(item.hit.probs)
                with decode_slots if decode_slots is not None else contextlib.nullcontext():
                    return prepare_source(item.source, prep, max_pixels)

            def lookups() -> Iterator[_Known]:
                for src in sources:
                    if cancel is not None and cancel.is_set():
                        return
                    digest = image_digest(src) if self.cache is not None else None
                    # an embedding is not cached: asking for one runs the model (its probabilities are stored)
                    look = self.cache is not None and digest is not None and not embeddings
                    hit = self.cache.get(digest, mkey) if look else None  # type: ignore[union-attr, arg-type]
                    yield _Known(src, digest, hit if hit is not None and hit.serves(options, labels) else None)

            stream = lookups()
            first_miss: _Known | None = None
            for item in stream:  # answer from the cache until an image needs the model
                if item.hit is None:
                    first_miss = item
                    break
                yield _Out(Prediction(item.source, probs=item.hit.probs), labels, item.hit, None, files.name)
            if first_miss is None:
                return
            loaded = held = held if held is not None else self._acquire(model, wait)
            if self.cache is not None:  # answers are stored under what really ran (auto may have chosen otherwise)
                mkey = _cache_key(files, loaded.precision)
            if embeddings and loaded.embedding_name is None:
                raise ModelFormatError(
                    f"Model '{loaded.name}' has no embedding output, so it gives no embeddings "
                    "(PixAI's tagger has one; a tagger.json can name a model's embedding output)."
                )
            rest = itertools.chain([first_miss], stream)
            preds = iter_predictions(
                loaded, rest, batch_size=batch_size, workers=workers, cancel=cancel, loader=decode,
                embeddings=embeddings,
            )  # fmt: skip
            for pred in preds:
                item = pred.source
                if pred.error is None and item.hit is None and self.cache is not None and item.digest is not None:
                    self.cache.put(item.digest, mkey, pred.probs, loaded.labels)
                out = Prediction(item.source, pred.probs, pred.error, pred.embedding)
                yield _Out(out, labels, item.hit, loaded, loaded.name)
        finally:
            if held is not None:  # the model is held from its load to the end of the stream
                self._registry.release(held)

    def iter_probs(
        self,
        model: str,
        sources: Iterable[Any],
        options: TagOptions | None = None,
        *,
        batch_size: int | None = None,
        cancel: threading.Event | None = None,
        workers: int | None = None,
        embeddings: bool = False,
    ) -> Iterator[tuple[Prediction[Any], Labels, tuple[float, float] | None, bool]]:
        """Probabilities for a stream of sources, in order: ``(prediction, labels, mcut, cached)``.

        Cache hits skip the model; the model is loaded only when the first image that needs it comes.
        ``prediction.source`` is the original source. ``workers``: decoding threads (default: what the
        machine can use, ``pipeline.default_workers``). ``embeddings`` fills ``prediction.embedding`` (every
        image then runs the model; ModelFormatError when it has no embedding output). The engine for batch
        captioning.
        """
        opts = options or self.default_options(model)
        stream = self._stream(
            model, sources, opts, batch_size=batch_size, cancel=cancel, wait=None, max_pixels=None,
            decode_slots=None, workers=workers, embeddings=embeddings,
        )  # fmt: skip
        for out in stream:
            yield out.pred, out.labels, out.hit.mcut if out.hit is not None else None, out.hit is not None

    def tag_many(
        self,
        model: str,
        sources: Iterable[Any],
        options: TagOptions | None = None,
        *,
        batch_size: int | None = None,
        cancel: threading.Event | None = None,
        wait: float | None = None,
        max_pixels: int | None = None,
        decode_slots: threading.Semaphore | None = None,
        embeddings: bool = False,
    ) -> Iterator[ImageTags | ImageError]:
        """Tag a stream of images in order; a failed image yields its ImageError and the stream goes on.

        ``wait``: seconds to wait for a download or load before ``ModelBusyError`` (None: as long as it
        takes). ``max_pixels`` refuses larger images from their header; ``decode_slots`` bounds how many
        images are decoded at once across callers sharing it. ``embeddings`` fills ``ImageTags.embedding``
        (every image then runs the model).
        """
        opts = options or self.default_options(model)
        last = time.perf_counter()
        stream = self._stream(
            model,
            sources,
            opts,
            batch_size=batch_size,
            cancel=cancel,
            wait=wait,
            max_pixels=max_pixels,
            decode_slots=decode_slots,
            embeddings=embeddings,
        )
        for out in stream:
            now = time.perf_counter()
            pred, hit, loaded = out.pred, out.hit, out.loaded
            if pred.error is not None:
                yield pred.error
            else:
                assert pred.probs is not None
                result = postprocess(pred.probs, out.labels, opts, mcut=hit.mcut if hit is not None else None)
                provider, note = ("cache", "") if loaded is None else (loaded.provider_label, loaded.device_note)
                yield ImageTags(
                    pred.source,
                    result,
                    out.name,
                    provider,
                    now - last,
                    pred.probs,
                    out.labels,
                    hit is not None,
                    hit,
                    note,
                    pred.embedding,
                )
            last = now

    def tag_image(
        self,
        model: str,
        image: Any,
        options: TagOptions | None = None,
        *,
        wait: float | None = None,
        embeddings: bool = False,
    ) -> ImageTags:
        """Tag one image (``tag_many`` for one); raises the ImageError of an image that cannot be read."""
        start = time.perf_counter()
        (item,) = list(self.tag_many(model, [image], options, wait=wait, embeddings=embeddings))
        if isinstance(item, ImageError):
            raise item
        return replace(item, elapsed=time.perf_counter() - start)
