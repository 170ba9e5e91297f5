"""How far two ways of running a model agree on the user's own images, and how fast each is.

One comparison for every fast path: an int8 copy against its model (``python -m tagger quantize --validate``),
and a device against another (``python -m tagger devices MODEL --device cpu-bf16 --validate FOLDER``, OpenVINO
bf16 against ONNX Runtime fp32). Both sides go through the engine's own tagging path (``Tagger.tag_many``), in
chunks, one side after the other, so memory stays bounded and each side's time is its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from tagger.errors import ImageError, TaggerError
from tagger.options import TagOptions


@dataclass(frozen=True)
class Side:
    """One way of running: an engine (``tagger.engine.Tagger``, with its device) and a model name in it."""

    tagger: Any
    model: str
    label: str = ""  # how the report names it (default: the model's name)

    @property
    def name(self) -> str:
        return self.label or self.model


@dataclass
class ValidationReport:
    """How a candidate's tags (int8 copy, bf16 device) compare with the reference's on the same images."""

    reference: str
    candidate: str
    images: int = 0  # compared (decoded by both)
    failed: int = 0  # could not be read
    mean_f1: float = float("nan")  # of the tag sets (general + character) at the options given
    min_f1: float = float("nan")
    worst_image: str | None = None  # the image with the lowest F1
    max_abs_diff: float = float("nan")  # largest |p_candidate - p_reference| over every tag and image
    mean_abs_diff: float = float("nan")
    rating_agreement: float = float("nan")  # share of images whose top rating is the same
    identical_tag_sets: int = 0
    reference_s_per_image: float = float("nan")  # wall time per image through the engine's tagging path
    candidate_s_per_image: float = float("nan")
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        """Reference time / candidate time per image (> 1: the candidate is faster)."""
        if not self.candidate_s_per_image or self.candidate_s_per_image != self.candidate_s_per_image:
            return float("nan")
        return self.reference_s_per_image / self.candidate_s_per_image

    def summary(self) -> str:
        """A few lines for a person (the CLI prints this)."""
        if not self.images:
            return f"{self.candidate} vs {self.reference}: no image could be compared ({self.failed} failed)"
        lines = [
            f"{self.candidate} vs {self.reference} on {self.images} images"
            + (f" ({self.failed} unreadable, skipped)" if self.failed else ""),
            f"  tag agreement: mean F1 {self.mean_f1:.4f}, lowest {self.min_f1:.4f}"
            + (f" ({self.worst_image})" if self.worst_image and self.min_f1 < 1 else "")
            + f", identical tag sets {self.identical_tag_sets}/{self.images}",
            f"  probabilities: largest difference {self.max_abs_diff:.4f}, mean {self.mean_abs_diff:.5f}",
            f"  top rating agrees on {self.rating_agreement:.1%} of images",
            f"  speed: {self.reference} {self.reference_s_per_image * 1000:.0f} ms/image, {self.candidate} "
            f"{self.candidate_s_per_image * 1000:.0f} ms/image ({self.speedup:.2f}x)",
        ]
        return "\n".join(lines)


def tag_set_f1(a: Iterable[str], b: Iterable[str]) -> float:
    """F1 of two tag sets (1.0 when both are empty)."""
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return 2 * len(sa & sb) / (len(sa) + len(sb))


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def compare(
    reference: Side,
    candidate: Side,
    folder: str | os.PathLike[str],
    options: TagOptions | None = None,
    *,
    recursive: bool = False,
    limit: int | None = None,
    chunk: int = 32,
) -> ValidationReport:
    """Tag the images of ``folder`` both ways and compare (see ``ValidationReport``).

    Images go in chunks of ``chunk``, first one side then the other. ``limit`` caps the number of images.
    Unreadable images are counted and skipped. Neither side should have a probability cache that could answer
    for the other (the engines' cache keys carry the precision, so a bf16 side never gets fp32 answers).
    """
    from tagger.batch import iter_images

    opts = options or TagOptions()
    folder = Path(folder)
    if not folder.is_dir():
        raise TaggerError(f"{folder}: not a folder of images")
    report = ValidationReport(reference.name, candidate.name)
    images: Iterable[Path] = (image for image, _ in iter_images([folder], recursive))
    if limit is not None:
        images = islice(images, limit)
    f1s: list[float] = []
    abs_sum, n_values, max_diff, same_rating = 0.0, 0, 0.0, 0
    times = [0.0, 0.0]
    worst: tuple[float, str] | None = None
    for paths in _chunks(images, max(1, chunk)):
        results = []
        for i, side in enumerate((reference, candidate)):
            start = time.perf_counter()
            results.append(list(side.tagger.tag_many(side.model, paths, opts)))  # one item per image, in order
            times[i] += time.perf_counter() - start
        for path, a, b in zip(paths, results[0], results[1], strict=True):
            if isinstance(a, ImageError) or isinstance(b, ImageError):
                report.failed += 1
                err = a if isinstance(a, ImageError) else b
                report.failures.append((str(path), err.reason if isinstance(err, ImageError) else str(err)))
                continue
            tags_a = set(a.result.general) | set(a.result.character)
            tags_b = set(b.result.general) | set(b.result.character)
            f1 = tag_set_f1(tags_a, tags_b)
            f1s.append(f1)
            report.identical_tag_sets += tags_a == tags_b
            if worst is None or f1 < worst[0]:
                worst = (f1, str(path))
            diff = np.abs(np.asarray(a.probs, np.float64) - np.asarray(b.probs, np.float64))
            max_diff = max(max_diff, float(diff.max()) if diff.size else 0.0)
            abs_sum += float(diff.sum())
            n_values += diff.size
            same_rating += a.result.top_rating == b.result.top_rating
    report.images = len(f1s)
    if f1s:
        report.mean_f1 = float(np.mean(f1s))
        report.min_f1 = float(np.min(f1s))
        report.worst_image = worst[1] if worst and worst[0] < 1 else None
        report.max_abs_diff = max_diff
        report.mean_abs_diff = abs_sum / max(n_values, 1)
        report.rating_agreement = same_rating / len(f1s)
    attempted = report.images + report.failed
    if attempted:
        # Failed images cost both sides the same decode attempt; spread the time over all attempted.
        report.reference_s_per_image = times[0] / attempted
        report.candidate_s_per_image = times[1] / attempted
    return report
