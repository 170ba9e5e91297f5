"""One measured variant in a fresh process, so that peak memory and warm caches belong to it alone.

``python -m bench.worker VARIANT --models-dir DIR --model NAME --folder DIR [--batch-size N]`` prints one
JSON object on its last line of output. Variants:

- ``ours``: the production folder-captioning path as the command line runs it, ``tagger.batch.run_batch``
  writing a caption per image into a temporary output folder (decode pool, prefetch, batching, postprocess,
  atomic writes) with a fresh probability cache (hashing each file, storing its probabilities); ``--no-cache``
  leaves the cache out.
- ``serial``: the same as ``ours`` with ``workers=0``: our own code, each image decoded on the calling thread
  and then run, in series (the older taggers' schedule, without their slower steps); same cache setting.
- ``baseline``: ``bench.baseline.BaselineTagger`` on the same session (same options, same threads).
- ``ceiling``: inference only: the same session fed tensors prepared beforehand, at ours' batch size.
- ``stages``: our stages one after another on one thread, timed each: decode (``load_image``),
  preprocess (``prepare``), inference (``LoadedModel.run``), postprocess (``postprocess``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.noise import ForeignCPU

VARIANTS = ("ours", "serial", "baseline", "ceiling", "stages")
WARMUP_RUNS = 2


def _rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # pragma: no cover - psutil is in the bench extra
        return float("nan")


def _peak_rss_mb() -> float:
    """This process's peak RSS. Linux: VmHWM, which starts afresh at exec (``ru_maxrss`` does not: a child
    started by a big parent reports the parent's size)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


class RssSampler:
    """Samples this process's resident size every ``interval`` seconds in a thread while the block runs:
    ``median_mb`` is its typical size during the run, which, unlike the peak, no rare coincidence of large
    decodes moves. Linux only (``/proc/self/statm``); elsewhere ``median_mb`` stays None."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self.median_mb: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def _run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        statm = Path("/proc/self/statm")
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(int(statm.read_text().split()[1]) * page / 2**20)
            except (OSError, ValueError, IndexError):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.samples:
            self.median_mb = statistics.median(self.samples)


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _images_in(folder: Path) -> list[Path]:
    from tagger.batch import iter_images

    return [image for image, _ in iter_images([folder])]


def run_variant(
    variant: str,
    models_dir: Path,
    model: str,
    folder: Path,
    batch_size: int | None = None,
    use_cache: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    from tagger.engine import Tagger
    from tagger.pipeline import default_batch_size

    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    tagger = Tagger(models_dir, device=device, download=False, progress=False)
    t0 = time.perf_counter()
    loaded = tagger.load(model)
    session_s = time.perf_counter() - t0
    bs = loaded.fixed_batch or batch_size or default_batch_size(loaded)
    # The first runs of a new session are slow (memory arena growth, page faults: 1.8 s then 1.5 s then
    # ~1.0 s for the ViT-B here). Every variant gets the same warm-up, so that none pays it inside its timing
    # and none skips it by having touched memory first; a real run amortises it over thousands of images.
    t0 = time.perf_counter()
    warm = np.full((bs, loaded.size, loaded.size, 3), 255.0, np.float32)
    for _ in range(WARMUP_RUNS):
        loaded.run(warm)
    del warm
    warmup_s = time.perf_counter() - t0
    result: dict[str, Any] = {
        "variant": variant,
        "model": model,
        "batch_size": bs,
        "threads": loaded.threads,
        "provider": loaded.provider_label,  # what really ran: a CUDA request can fall back to the CPU
        "device_note": loaded.device_note,
        "session_s": session_s,
        "warmup_s": warmup_s,
        "rss_loaded_mb": _rss_mb(),
    }
    first: list[float] = []
    with tempfile.TemporaryDirectory(prefix="wd14-bench-out-") as out, ForeignCPU() as foreign, RssSampler() as rss:
        cpu0 = _cpu_s()
        start = time.perf_counter()
        if variant in ("ours", "serial"):
            workers = 0 if variant == "serial" else None
            n = _run_ours(tagger, model, folder, Path(out), batch_size, first, start, use_cache, workers)
        elif variant == "baseline":
            n, stages = _run_baseline(loaded, folder, Path(out), first, start)
            result["stages_ms"] = stages
        elif variant == "ceiling":
            n, start, cpu0 = _run_ceiling(loaded, folder, bs, first)  # timed after the tensors are ready
        else:
            n, stages = _run_stages(loaded, folder, bs)
            result["stages_ms"] = stages
        wall = time.perf_counter() - start
        cpu = _cpu_s() - cpu0
    result.update(
        images=n,
        wall_s=wall,
        images_per_s=n / wall if wall > 0 else 0.0,
        first_result_s=first[0] if first else None,
        cpu_s_per_image=cpu / n if n else None,
        peak_rss_mb=_peak_rss_mb(),
        median_rss_mb=rss.median_mb,
        foreign_cpu=foreign.share,  # share of the machine other programs used meanwhile (None: unknown)
    )
    return result


def _run_ours(tagger: Any, model: str, folder: Path, out: Path, batch_size: int | None, first: list[float],
              start: float, use_cache: bool, workers: int | None) -> int:  # fmt: skip
    from tagger.batch import BatchConfig, run_batch
    from tagger.options import TagOptions

    def progress(p: Any) -> None:
        if not first and p.tagged:
            first.append(time.perf_counter() - start)

    cache = None
    if use_cache:  # as the command line does by default: a probability cache, here a fresh one
        from tagger.cache import ProbCache

        cache = tagger.cache = ProbCache(out / ".probs.sqlite3")
    config = BatchConfig(inputs=[folder], output_dir=out, existing="overwrite", batch_size=batch_size, workers=workers)
    try:
        summary = run_batch(tagger, model, config, TagOptions(), progress=progress)
    finally:
        if cache is not None:
            cache.close()
    if summary.failed:
        raise SystemExit(
            f"{'serial' if workers == 0 else 'ours'}: {summary.failed} images failed: {summary.failures[:3]}"
        )
    return summary.tagged


def _run_baseline(
    loaded: Any, folder: Path, out: Path, first: list[float], start: float
) -> tuple[int, dict[str, float]]:
    from bench.baseline import BaselineTagger

    base = BaselineTagger(loaded.session, loaded.files.tags_path)
    images = _images_in(folder)

    def on_result(done: int) -> None:
        if not first:
            first.append(time.perf_counter() - start)

    n = base.run_folder(images, out, on_result)
    return n, base.times.per_image_ms()


def _run_ceiling(loaded: Any, folder: Path, bs: int, first: list[float]) -> tuple[int, float, float]:
    from tagger.pipeline import prepare_source

    tensors = [prepare_source(p, loaded.size) for p in _images_in(folder)]
    batches = [np.stack(tensors[i : i + bs]) for i in range(0, len(tensors), bs)]
    cpu0, start = _cpu_s(), time.perf_counter()
    for batch in batches:
        loaded.run(batch)
        if not first:
            first.append(time.perf_counter() - start)
    return len(tensors), start, cpu0


def _run_stages(loaded: Any, folder: Path, bs: int) -> tuple[int, dict[str, float]]:
    from tagger.images import load_image, prepare
    from tagger.options import TagOptions
    from tagger.postprocess import postprocess

    totals = dict.fromkeys(("decode", "preprocess", "inference", "postprocess"), 0.0)
    options = TagOptions()
    images = _images_in(folder)
    for path in images:
        t0 = time.perf_counter()
        img = load_image(path)
        t1 = time.perf_counter()
        tensor = prepare(img, loaded.size)
        t2 = time.perf_counter()
        probs = loaded.run(np.repeat(tensor[None], bs, axis=0))[0]  # inference at ours' batch size, per image
        t3 = time.perf_counter()
        postprocess(probs, loaded.labels, options)
        t4 = time.perf_counter()
        totals["decode"] += t1 - t0
        totals["preprocess"] += t2 - t1
        totals["inference"] += (t3 - t2) / bs
        totals["postprocess"] += t4 - t3
    n = len(images)
    return n, {k: 1000 * v / max(n, 1) for k, v in totals.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--no-cache", action="store_true", help="ours, serial: no probability cache (the CLI's --no-cache)"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    args = parser.parse_args(argv)
    result = run_variant(
        args.variant, args.models_dir, args.model, args.folder, args.batch_size, not args.no_cache, args.device
    )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
