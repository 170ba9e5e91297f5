"""The streaming pipeline: decode and preprocess in a small thread pool, overlapped with inference.

Memory stays bounded by the prefetch window whatever the number of inputs: sources are pulled from an
iterator lazily, and at most ``prefetch`` decoded tensors exist at once. Results come out in input order.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from tagger.errors import ImageError
from tagger.families.preprocess import Preparer
from tagger.images import load_image, prepare
from tagger.runtime import CUDA, LoadedModel, available_cpus

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Prediction(Generic[T]):
    """One input's outcome: probabilities, or the error that stopped this input (and only this one)."""

    source: T
    probs: np.ndarray | None = None
    error: ImageError | None = None
    embedding: np.ndarray | None = None  # the model's image embedding, when it was asked for


@dataclass(frozen=True)
class Precomputed:
    """What a loader returns instead of a tensor when the probabilities are already known (cache hit):
    the item keeps its place in the output order and never reaches the model."""

    probs: np.ndarray


def default_batch_size(model: LoadedModel) -> int:
    """On CPU one image per run is fastest per image (see docs); on a GPU large batches are."""
    if model.fixed_batch:
        return model.fixed_batch
    return 16 if model.provider == CUDA else 1


def default_workers(model: LoadedModel) -> int:
    """Decoding threads when the caller names none: what the machine can use. With CUDA, the CPUs the process
    may use (up to 16: enough to feed a fast GPU, with the prefetch window's memory bounded), since they are
    idle while the GPU runs the model; on the CPU at most 4, since each run already spreads over every core
    and more decoders would only take time from it."""
    cpus = available_cpus()
    return max(1, min(16 if model.provider == CUDA else 4, cpus))


def _source_name(source: Any) -> str:
    return str(source) if not isinstance(source, (bytes, bytearray)) else "<bytes>"


def prepare_source(source: Any, size: int | Preparer, max_pixels: int | None = None) -> np.ndarray:
    """Decode and preprocess one source; every failure becomes an ImageError naming it.

    ``size`` is the WD14 input side, or the model's preparer (``LoadedModel.prepare``, from its description).
    """
    try:
        img = load_image(source, max_pixels=max_pixels)
        return size(img) if callable(size) else prepare(img, size)
    except ImageError:
        raise
    except MemoryError as e:
        raise ImageError(_source_name(source), "not enough memory to decode this image") from e
    except Exception as e:  # a decoder bug must cost one image, never the batch
        raise ImageError(_source_name(source), f"could not be decoded ({type(e).__name__}: {e})") from e


def iter_predictions(
    model: LoadedModel,
    sources: Iterable[T],
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    prefetch: int | None = None,
    cancel: threading.Event | None = None,
    loader: Callable[[T, Any], np.ndarray | Precomputed] | None = None,
    embeddings: bool = False,
) -> Iterator[Prediction[T]]:
    """Predict every source, in order, streaming. Stops between images once ``cancel`` is set.

    ``loader(source, prepare)`` decodes one source into a tensor (it runs in the pool; ``prepare`` is the
    model's preparer, for ``prepare_source``); it may return ``Precomputed`` for a source whose probabilities
    are known, which then skips the model. ``embeddings`` also fills ``Prediction.embedding`` where the model
    has an embedding output.
    """
    batch_size = model.fixed_batch or batch_size or default_batch_size(model)
    workers = workers or default_workers(model)
    prefetch = max(prefetch or 0, batch_size * 2, workers * 2)
    load = loader or (lambda src, prep: prepare_source(src, prep))
    prep = model.prepare or model.size
    it = iter(sources)
    pending: deque[tuple[T, Future[np.ndarray | Precomputed]]] = deque()

    def cancelled() -> bool:
        return cancel is not None and cancel.is_set()

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tagger-decode") as pool:

        def fill() -> None:
            while len(pending) < prefetch and not cancelled():
                try:
                    src = next(it)
                except StopIteration:
                    return
                pending.append((src, pool.submit(load, src, prep)))

        batch: list[Prediction[T]] = []  # in input order; failed ones carry their error
        tensors: list[np.ndarray] = []

        def flush() -> Iterator[Prediction[T]]:
            if tensors:
                probs, embs = model.run_outputs(np.stack(tensors), embeddings=embeddings)
                rows = iter(range(len(probs)))
                for pred in batch:
                    if pred.error is None and pred.probs is None:
                        row = next(rows)
                        pred.probs = probs[row]
                        pred.embedding = embs[row] if embs is not None else None
            yield from batch
            batch.clear()
            tensors.clear()

        try:
            fill()
            while pending:
                if cancelled():
                    break
                src, fut = pending.popleft()
                fill()
                try:
                    loaded = fut.result()
                except ImageError as e:
                    batch.append(Prediction(src, error=e))
                else:
                    if isinstance(loaded, Precomputed):
                        batch.append(Prediction(src, probs=loaded.probs))
                    else:
                        tensors.append(loaded)
                        batch.append(Prediction(src))
                if len(tensors) >= batch_size or (not tensors and batch):
                    yield from flush()
            if not cancelled():
                yield from flush()
        finally:
            for _, fut in pending:
                fut.cancel()
