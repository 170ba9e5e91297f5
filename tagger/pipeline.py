"""The streaming pipeline: decode and preprocess in a small thread pool, beside inference.

Memory stays bounded by the prefetch window whatever the number of inputs: sources are pulled from an
iterator lazily, and at most ``prefetch`` decoded tensors exist at once. Results come out in input order.

On the CPU a model run already spreads over every core, and a parallel region is as slow as its slowest
thread: a decode running beside it takes a core from it and can cost the run more than the decode saves (a
ViT-B ran 5-22% slower overlapped than in series on a 2-core machine). So while inference is the heavier
stage (measured as the images go), a gate keeps decodes out of runs: the decoders work in bursts, all of them
at once, between runs, and each run has the cores to itself (``_Gate``). Where inference is cheap next to
decoding (a fast GPU, a tiny model) decoding overlaps it fully.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
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


def runs_on_cpu(model: LoadedModel) -> bool:
    """Whether the model's runs use the CPU's cores (so that decoding beside them slows them): every provider
    but CUDA and those naming a GPU (OpenVINO's ``GPU`` device)."""
    return model.provider != CUDA and "GPU" not in model.provider.upper()


def default_workers(model: LoadedModel) -> int:
    """Decoding threads when the caller names none: what the machine can use. On a GPU, the CPUs the process
    may use (up to 16: enough to feed a fast GPU, with the prefetch window's memory bounded), since they are
    idle while the GPU runs the model; on the CPU at most 4, since each run already spreads over every core
    and more decoders would only take time from it."""
    cpus = available_cpus()
    return max(1, min(4 if runs_on_cpu(model) else 16, cpus))


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


class _Mean:
    """A running mean of seconds per item."""

    def __init__(self) -> None:
        self.seconds, self.items = 0.0, 0

    def add(self, seconds: float, items: int = 1) -> None:
        self.seconds += seconds
        self.items += items

    @property
    def value(self) -> float | None:
        return self.seconds / self.items if self.items else None


class _Gate:
    """Keeps decodes out of model runs on the CPU (see the module's docstring).

    A decoder ``enter``s before each decode and ``leave``s after it. The consumer ``close``s the gate before a
    run (no decode starts; those under way are waited for) and ``open``s it before it waits for an image not
    decoded yet, so it never waits on a decode it holds back, and the decoders then work in a burst, all at
    once. ``end`` opens it for good when the stream is over: a decoder that has not started skips its image
    (nobody will read it), so closing the pool never waits on the gate. Closed is a flag, not a held lock: the
    consumer may hand results to its caller meanwhile.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.closed = False
        self._ended = False
        self._decoding = 0
        self._decode = _Mean()  # seconds per decoded tensor, measured in the decoders

    def enter(self) -> bool:
        """Wait while the gate is closed; False when the stream is over (skip the decode)."""
        with self._cond:
            while self.closed and not self._ended:
                self._cond.wait()
            if self._ended:
                return False
            self._decoding += 1
            return True

    def leave(self, seconds: float | None) -> None:
        """A decode is over; ``seconds`` is its time when it decoded a tensor (None: a cache hit or an error)."""
        with self._cond:
            self._decoding -= 1
            if seconds is not None:
                self._decode.add(seconds)
            if not self._decoding:
                self._cond.notify_all()

    def decode_seconds(self) -> float | None:
        """Mean seconds per decoded image so far (None before the first)."""
        with self._cond:
            return self._decode.value

    def close(self) -> None:
        with self._cond:
            self.closed = True
            while self._decoding:
                self._cond.wait()

    def open(self) -> None:
        with self._cond:
            if self.closed:
                self.closed = False
                self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._ended, self.closed = True, False
            self._cond.notify_all()


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
    are known, which then skips the model. ``workers``: decoding threads (None: ``default_workers``; 0: no
    threads, each source decoded in series on the caller's thread when its turn comes). ``embeddings`` also
    fills ``Prediction.embedding`` where the model has an embedding output.
    """
    batch_size = model.fixed_batch or batch_size or default_batch_size(model)
    workers = default_workers(model) if workers is None else workers
    if workers < 0:
        raise ValueError(f"workers: {workers} is negative (0 decodes in series, without threads)")
    prefetch = max(prefetch or 0, batch_size * 2, workers * 2)
    load = loader or (lambda src, prep: prepare_source(src, prep))
    prep = model.prepare or model.size
    it = iter(sources)
    # (source, its decode in the pool; None: decoded on this thread when its turn comes, workers=0)
    pending: deque[tuple[T, Future[np.ndarray | Precomputed | None] | None]] = deque()
    gate = _Gate()
    gate_runs = workers > 0 and runs_on_cpu(model)
    infer, caller = _Mean(), _Mean()  # seconds per image in model runs; per result handed to the caller

    def cancelled() -> bool:
        return cancel is not None and cancel.is_set()

    def decode(src: T) -> np.ndarray | Precomputed | None:  # in the pool
        if not gate.enter():
            return None  # the stream is over: nobody reads this
        seconds = None
        try:
            start = time.perf_counter()
            loaded = load(src, prep)
            if not isinstance(loaded, Precomputed):
                seconds = time.perf_counter() - start
            return loaded
        finally:
            gate.leave(seconds)

    def heavy() -> bool:
        """Whether inference takes longer per image than decoding (so far; True before both are measured)."""
        dec, inf = gate.decode_seconds(), infer.value
        return dec is None or inf is None or inf > dec

    with (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tagger-decode")
        if workers
        else contextlib.nullcontext()
    ) as pool:

        def fill() -> None:
            while len(pending) < prefetch and not cancelled():
                try:
                    src = next(it)
                except StopIteration:
                    return
                pending.append((src, pool.submit(decode, src) if pool is not None else None))

        batch: list[Prediction[T]] = []  # in input order; failed ones carry their error
        tensors: list[np.ndarray] = []

        def flush() -> Iterator[Prediction[T]]:
            if tensors:
                started: list[float] = []

                def on_start() -> None:  # the run lock is held: the model runs now
                    if gate_runs and heavy():
                        gate.close()  # the run gets every core: no decode starts, those under way end first
                    else:
                        gate.open()
                    started.append(time.perf_counter())

                probs, embs = model.run_outputs(np.stack(tensors), embeddings=embeddings, on_start=on_start)
                infer.add(time.perf_counter() - started[0], len(tensors))  # the run alone, not the wait for its lock
                rows = iter(range(len(probs)))
                for pred in batch:
                    if pred.error is None and pred.probs is None:
                        row = next(rows)
                        pred.probs = probs[row]
                        pred.embedding = embs[row] if embs is not None else None
            for pred in batch:
                # A caller slower than a decode (captions on a slow disk) lets the decoders work meanwhile;
                # a fast one keeps them waiting for a burst when the decoded images are used up.
                dec = gate.decode_seconds()
                if gate.closed and caller.value is not None and dec is not None and caller.value > dec:
                    gate.open()
                start = time.perf_counter()
                yield pred
                caller.add(time.perf_counter() - start)
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
                    if fut is None:
                        loaded = load(src, prep)
                    else:
                        if not fut.done():
                            gate.open()  # never wait on a decode the gate holds back
                        loaded = fut.result()
                except ImageError as e:
                    batch.append(Prediction(src, error=e))
                else:
                    if isinstance(loaded, Precomputed):
                        batch.append(Prediction(src, probs=loaded.probs))
                    else:
                        assert loaded is not None  # only decodes after the stream's end skip their image
                        tensors.append(loaded)
                        batch.append(Prediction(src))
                if len(tensors) >= batch_size or (not tensors and batch):
                    yield from flush()
            if not cancelled():
                yield from flush()
        finally:
            for _, fut in pending:
                if fut is not None:
                    fut.cancel()
            gate.end()
