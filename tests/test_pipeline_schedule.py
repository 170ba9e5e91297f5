"""How the pipeline schedules decoding beside inference (issue 14): the decode gate and ``workers=0``.

Real generated model, real image files, real decodes. One thing is faked and says so: ``slow_runs`` makes the
tiny model "heavy" by sleeping in each run, standing for a big model's seconds of CPU work (a heavy model
cannot be built small). Timing enters only through generous margins (a 0.15 s run against decodes of a few ms).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tagger.engine import Tagger
from tagger.errors import ImageError
from tagger.pipeline import Precomputed, Prediction, iter_predictions, prepare_source, runs_on_cpu
from tagger.runtime import CPU, CUDA, LoadedModel
from tests.modelgen import expected_probs

HEAVY_S = 0.15  # the fake heavy model's seconds per image: decodes of these images take a few ms


@dataclass
class Timeline:
    """(start, end, thread name) of every decode and (start, end) of every model run, from perf_counter."""

    decodes: list[tuple[float, float, str]] = field(default_factory=list)
    runs: list[tuple[float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def loader(self, known: dict[Path, np.ndarray] | None = None) -> Callable[[Path, Any], Any]:
        """A loader that decodes for real (``prepare_source``) and records when; sources in ``known`` are
        answered with ``Precomputed`` (a cache hit) without a decode."""

        def load(src: Path, prep: Any) -> np.ndarray | Precomputed:
            if known and src in known:
                return Precomputed(known[src])
            start = time.perf_counter()
            try:
                return prepare_source(src, prep)
            finally:
                with self.lock:
                    self.decodes.append((start, time.perf_counter(), threading.current_thread().name))

        return load

    def overlaps(self) -> int:
        """How many decodes overlapped a model run."""
        return sum(any(d0 < r1 and r0 < d1 for r0, r1 in self.runs) for d0, d1, _ in self.decodes)


def slow_runs(model: LoadedModel, timeline: Timeline, seconds: float = HEAVY_S) -> None:
    """A fake: each run of the real tiny model also sleeps ``seconds`` per image, standing for a heavy model's
    CPU time; every run's interval is recorded (seconds=0 records a real, fast run)."""
    real = model.run_outputs

    def run_outputs(
        batch: np.ndarray, *, embeddings: bool = False, on_start: Callable[[], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        began: list[float] = []

        def start() -> None:  # once the run lock is held, as the real run's time starts there
            if on_start is not None:
                on_start()
            began.append(time.perf_counter())
            time.sleep(seconds * len(batch))

        out = real(batch, embeddings=embeddings, on_start=start)
        timeline.runs.append((began[0], time.perf_counter()))
        return out

    model.run_outputs = run_outputs  # type: ignore[method-assign]


@pytest.fixture
def model(model_root: Path) -> LoadedModel:
    loaded = Tagger(model_root, "cpu", download=False, progress=False).load("test-model")
    assert runs_on_cpu(loaded)
    return loaded


def noise_images(folder: Path, count: int, side: int = 384) -> list[Path]:
    """Distinct real images: noise (so that a decode costs a few ms) tinted differently each."""
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 256, (side, side, 3)).astype(np.float32)
        pixels *= np.array([(i % 3 + 1) / 3, ((i + 1) % 4 + 1) / 4, 1.0], np.float32)
        path = folder / f"{i:02d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def outcome(preds: Iterator[Prediction[Path]]) -> list[tuple[Path, Any]]:
    return [(p.source, p.error.reason if p.error else p.probs.tolist()) for p in preds]  # type: ignore[union-attr]


def test_results_are_the_same_with_the_gate_without_it_and_in_series(model: LoadedModel, tmp_path: Path) -> None:
    paths = noise_images(tmp_path, 9)
    red = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (255, 0, 0)).save(red)  # square: no white padding
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    known = {paths[4]: np.full(len(model.labels.names), 0.25, np.float32)}  # a cache hit: no decode, no run
    sources = [red, *paths[:3], broken, *paths[3:]]

    timeline = Timeline()
    fast = outcome(iter_predictions(model, sources, workers=2, loader=timeline.loader(known)))
    serial = outcome(iter_predictions(model, sources, workers=0, loader=timeline.loader(known)))
    slow_runs(model, timeline)
    timeline.runs.clear()
    gated = outcome(iter_predictions(model, sources, workers=2, loader=timeline.loader(known)))
    gated_batches = outcome(iter_predictions(model, sources, workers=3, batch_size=3, loader=timeline.loader(known)))

    assert [s for s, _ in fast] == sources
    assert fast == serial == gated == gated_batches
    np.testing.assert_allclose(fast[0][1], expected_probs((0.0, 0.0, 1.0)), atol=1e-4)  # red through the model
    assert isinstance(fast[4][1], str)  # the broken file's reason, in its place
    assert fast[sources.index(paths[4])][1] == [0.25] * len(model.labels.names)  # answered without the model
    assert len({tuple(v) for _, v in fast if isinstance(v, list)}) == len(sources) - 1  # every image differs


def test_waiting_for_the_run_lock_holds_no_decode_back(model: LoadedModel, tmp_path: Path) -> None:
    """In the WebUI the run lock is the host's queue lock, which image generation holds for seconds: while the
    pipeline waits for it, nothing runs on our side, so the decoders go on (the gate closes once the lock is
    held), and that wait does not count as inference time."""
    timeline = Timeline()
    slow_runs(model, timeline)
    model.run_lock = threading.Lock()  # this model's own: the test holds it as generation would
    paths = noise_images(tmp_path, 12)
    model.run_lock.acquire()
    held_from = time.perf_counter()
    release = threading.Timer(1.0, model.run_lock.release)
    release.start()
    try:
        preds = list(iter_predictions(model, paths, workers=2, prefetch=8, loader=timeline.loader()))
    finally:
        release.join()
    held_until = held_from + 1.0
    assert all(p.probs is not None for p in preds) and len(timeline.runs) == 12
    during_wait = [d for d in timeline.decodes if d[1] < held_until]
    assert len(during_wait) >= 6, f"only {len(during_wait)} of 8 prefetched decodes were done while the lock was held"
    assert timeline.overlaps() == 0  # and still none during a run


def test_the_gate_keeps_decodes_out_of_heavy_runs(model: LoadedModel, tmp_path: Path) -> None:
    timeline = Timeline()
    slow_runs(model, timeline)
    paths = noise_images(tmp_path, 10)
    preds = list(iter_predictions(model, paths, workers=2, loader=timeline.loader()))
    assert [p.source for p in preds] == paths and all(p.probs is not None for p in preds)
    assert len(timeline.decodes) == 10 and len(timeline.runs) == 10
    assert timeline.overlaps() == 0, "a decode ran during a heavy model's run"
    # ...and the decoders worked in bursts, both at once, between the runs
    decodes = sorted(timeline.decodes)
    assert any(b0 < a1 for (_, a1, _), (b0, _, _) in itertools.pairwise(decodes))
    assert {name for _, _, name in decodes} == {"tagger-decode_0", "tagger-decode_1"}


def test_a_fast_model_keeps_decoding_beside_its_runs(model: LoadedModel, tmp_path: Path) -> None:
    timeline = Timeline()
    slow_runs(model, timeline, seconds=0.0)  # only records: the real tiny model's runs take well under a ms
    paths = noise_images(tmp_path, 16, side=768)  # decodes of ~10 ms each, against runs of well under 1 ms
    preds = list(iter_predictions(model, paths, workers=2, loader=timeline.loader()))
    assert [p.source for p in preds] == paths
    assert timeline.overlaps() > 0, "decoding never ran beside a run: the gate held back a fast model"


def test_on_a_gpu_decoding_overlaps_even_heavy_runs(model: LoadedModel, tmp_path: Path) -> None:
    """The CPU is idle while a GPU runs the model, so the gate stays open however long the runs take."""
    model.provider = CUDA  # a fake: the provider string of a CUDA session, which cannot exist on this machine
    assert not runs_on_cpu(model)
    timeline = Timeline()
    slow_runs(model, timeline)
    paths = noise_images(tmp_path, 8)
    preds = list(iter_predictions(model, paths, workers=2, batch_size=1, loader=timeline.loader()))
    assert [p.source for p in preds] == paths
    assert timeline.overlaps() > 0
    model.provider = CPU


def test_which_providers_count_as_the_cpu(model: LoadedModel) -> None:
    for provider, on_cpu in [(CPU, True), ("OpenVINO", True), ("OpenVINO-CPU", True), (CUDA, False),
                             ("OpenVINO-GPU", False), ("OpenVINO GPU.1", False)]:  # fmt: skip
        model.provider = provider
        assert runs_on_cpu(model) is on_cpu, provider
    model.provider = CPU


def test_workers_0_decodes_in_series_on_the_callers_thread(model: LoadedModel, tmp_path: Path) -> None:
    timeline = Timeline()
    slow_runs(model, timeline, seconds=0.0)
    paths = noise_images(tmp_path, 5)
    before = {t.name for t in threading.enumerate()}
    preds = list(iter_predictions(model, paths, workers=0, loader=timeline.loader()))
    assert [p.source for p in preds] == paths
    assert {name for _, _, name in timeline.decodes} == {threading.current_thread().name}
    # decode, run, decode, run: each image decoded only when its turn comes, never one ahead
    events = sorted([(d0, "decode") for d0, _, _ in timeline.decodes] + [(r0, "run") for r0, _ in timeline.runs])
    assert [kind for _, kind in events] == ["decode", "run"] * 5
    assert {t.name for t in threading.enumerate()} == before
    with pytest.raises(ValueError, match="workers: -1 is negative"):
        next(iter_predictions(model, paths, workers=-1))


def test_a_slow_caller_lets_the_decoders_work_while_it_takes_the_results(model: LoadedModel, tmp_path: Path) -> None:
    """The gate holds nothing while results are handed out: a caller slower than a decode (captions on a slow
    disk) gets the next images decoded meanwhile, and still no decode runs beside a heavy run."""
    timeline = Timeline()
    slow_runs(model, timeline)
    paths = noise_images(tmp_path, 10)
    taking: list[tuple[float, float]] = []  # when the caller held each result
    for _pred in iter_predictions(model, paths, workers=2, loader=timeline.loader()):
        start = time.perf_counter()
        time.sleep(HEAVY_S)  # the caller's own slow work on the result
        taking.append((start, time.perf_counter()))
    assert timeline.overlaps() == 0
    during = [d for d in timeline.decodes if any(t0 < d[0] < t1 for t0, t1 in taking)]
    assert during, "no decode ran while the slow caller had a result"


def test_a_failing_decoder_ends_the_stream_without_a_hang(model: LoadedModel, tmp_path: Path) -> None:
    timeline = Timeline()
    slow_runs(model, timeline)
    paths = noise_images(tmp_path, 8)
    real = timeline.loader()

    def load(src: Path, prep: Any) -> Any:
        if src == paths[3]:
            raise RuntimeError("a decoder bug")  # not an ImageError: it ends the call, as before the gate
        return real(src, prep)

    got: list[Path] = []

    def consume() -> None:
        with pytest.raises(RuntimeError, match="a decoder bug"):
            for pred in iter_predictions(model, paths, workers=2, loader=load):
                got.append(pred.source)

    _finishes(consume)
    assert got == paths[:3]
    assert not [t for t in threading.enumerate() if t.name.startswith("tagger-decode")]


def test_cancel_and_an_early_stop_under_the_gate(model: LoadedModel, tmp_path: Path) -> None:
    timeline = Timeline()
    slow_runs(model, timeline)
    paths = noise_images(tmp_path, 12)
    cancel = threading.Event()
    got: list[Prediction[Path]] = []

    def cancelled_run() -> None:
        for pred in iter_predictions(model, paths, workers=2, cancel=cancel, loader=timeline.loader()):
            got.append(pred)
            if len(got) == 2:
                cancel.set()

    _finishes(cancelled_run)
    assert [p.source for p in got] == paths[:2]
    assert len(timeline.runs) == 2
    assert len(timeline.decodes) <= 2 + 2 * 2  # at most the prefetch window beyond what was used
    assert not [t for t in threading.enumerate() if t.name.startswith("tagger-decode")]

    timeline.decodes.clear()

    def early_stop() -> None:  # the caller stops taking results while the gate is closed (after a run)
        stream = iter_predictions(model, paths, workers=2, loader=timeline.loader())
        assert next(stream).source == paths[0]
        stream.close()

    _finishes(early_stop)
    assert len(timeline.decodes) <= 1 + 2 * 2
    assert not [t for t in threading.enumerate() if t.name.startswith("tagger-decode")]


def _finishes(work: Callable[[], None], within: float = 60.0) -> None:
    """Run ``work`` in a thread and fail (instead of hanging the suite) when it does not end in time."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as e:  # handed to the test
            errors.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(within)
    assert not thread.is_alive(), "the pipeline hung"
    if errors:
        raise errors[0]


def test_image_errors_keep_their_place_under_the_gate(model: LoadedModel, tmp_path: Path) -> None:
    timeline = Timeline()
    slow_runs(model, timeline)
    paths = noise_images(tmp_path, 4)
    missing = tmp_path / "gone.png"
    sources = [paths[0], missing, paths[1], paths[2], missing, paths[3]]
    preds = list(iter_predictions(model, sources, workers=2, loader=timeline.loader()))
    assert [p.source for p in preds] == sources
    assert [p.error is not None for p in preds] == [False, True, False, False, True, False]
    assert all(isinstance(p.error, ImageError) and "gone.png" in str(p.error) for p in preds if p.error)
    assert timeline.overlaps() == 0
