"""HOOK for the probability-cache figure of issue 6 (to be filled in with the cache).

Target: re-thresholding 1,000 tagged images from the cache is >= 50x faster than re-running the model,
with identical captions. ``bench.run`` calls ``measure_rethreshold`` once per benchmark and prints its
figures as the row "re-threshold 1,000 images from the cache vs re-running the model"; while it returns
None the row reads "not measured yet".

To fill it in: tag ``folder`` once with the cache enabled, then time (a) re-writing every caption with
other options from the cache and (b) the same re-run through the model, compare the captions, and return a
``RethresholdResult``. Measure in this process or spawn ``bench.worker`` as the other figures do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class RethresholdResult:
    images: int
    cache_s: float  # wall time to re-write every caption from the cache with the new options
    model_s: float  # wall time to do the same by running the model again
    identical: bool  # the captions of both ways are byte-identical

    @property
    def speedup(self) -> float:
        return self.model_s / self.cache_s if self.cache_s > 0 else float("inf")


def measure_rethreshold(models_dir: Path, model: str, folder: Path) -> RethresholdResult | None:
    """Not implemented until the probability cache exists: returns None (the table says so)."""
    del models_dir, model, folder
    return None
