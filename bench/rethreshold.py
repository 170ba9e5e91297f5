"""The probability-cache figure of issue 6: re-thresholding tagged images from the cache vs the model.

Target: re-thresholding 1,000 tagged images from the cache is >= 50x faster than re-running the model,
with identical captions. The folder is tagged once with the cache on (old options); then the captions are
re-written with new options twice: by running the model again (no cache), and from the cache (a fresh
engine: no session is even created). Both write through ``run_batch``, the production path, and their
captions are compared byte for byte. The cache side is timed on ``count`` (1,000) entries repeating the
folder's images; the model side is timed on the folder itself and scaled per image to ``count`` (running a
ViT-B over 1,000 images would take ~7 minutes here), which the table row says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class RethresholdResult:
    images: int  # images re-written from the cache
    cache_s: float  # wall time to re-write every caption from the cache with the new options
    model_s: float  # wall time to do the same by running the model again (per image x images)
    identical: bool  # the captions of both ways are byte-identical
    model_measured_on: int = 0  # images the model side was really timed on

    @property
    def speedup(self) -> float:
        return self.model_s / self.cache_s if self.cache_s > 0 else float("inf")


def measure_rethreshold(models_dir: Path, model: str, folder: Path, count: int = 1000) -> RethresholdResult:
    import tempfile
    import time

    from bench.images import link_folder
    from tagger.batch import BatchConfig, run_batch
    from tagger.cache import ProbCache
    from tagger.engine import Tagger
    from tagger.options import TagOptions

    old = TagOptions()
    new = TagOptions(general_threshold=0.5, character_threshold=0.7, exclude_tags=("tag_3",), weights=True)
    images = sorted(p for p in folder.iterdir() if p.is_file())
    with tempfile.TemporaryDirectory(prefix="rethreshold-") as tmp:
        root = Path(tmp)
        cache_file = root / "probs.sqlite3"
        # tagged once, with the cache on (what a user's first run leaves behind)
        run_batch(Tagger(models_dir, "cpu", cache=ProbCache(cache_file)), model,
                  BatchConfig([folder], output_dir=root / "first"), old)  # fmt: skip

        by_model = Tagger(models_dir, "cpu")
        by_model.load(model)  # session creation is not part of either side
        start = time.perf_counter()
        run_batch(by_model, model, BatchConfig([folder], output_dir=root / "model", existing="overwrite"), new)
        model_per_image = (time.perf_counter() - start) / len(images)

        cached = Tagger(models_dir, "cpu", cache=ProbCache(cache_file))
        run_batch(cached, model, BatchConfig([folder], output_dir=root / "cache", existing="overwrite"), new)
        identical = all(
            (root / "cache" / (p.stem + ".txt")).read_bytes() == (root / "model" / (p.stem + ".txt")).read_bytes()
            for p in images
        )
        many = link_folder(images, root / "many", count)
        start = time.perf_counter()
        summary = run_batch(cached, model, BatchConfig([many], output_dir=root / "many-out", existing="overwrite"), new)
        cache_s = time.perf_counter() - start
        assert not cached.loaded(), "the cache side must not create a session"
    return RethresholdResult(summary.tagged, cache_s, model_per_image * summary.tagged, identical, len(images))
