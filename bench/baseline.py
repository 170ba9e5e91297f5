"""The older taggers' way, rebuilt from its description (no code of theirs is copied or fetched).

One image at a time, in series: Pillow opens the file and alpha-composites it onto white, OpenCV pads it to
a white square (``cv2.copyMakeBorder``) and shrinks it with ``INTER_AREA`` (``INTER_CUBIC`` to enlarge),
one ``session.run`` at batch 1, then a pandas frame of names and confidences for the tags, split by
position (the first four rows are the ratings), thresholds applied in Python, and a caption written.

It runs on the *same* onnxruntime session as ours (same options and threads), so the comparison is about
the pipeline and nothing else.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

_ESCAPE = re.compile(r"([\\()])")


@dataclass
class StageTimes:
    """Seconds spent per stage, summed over the images."""

    decode: float = 0.0
    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0
    images: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def per_image_ms(self) -> dict[str, float]:
        n = max(self.images, 1)
        return {k: 1000 * getattr(self, k) / n for k in ("decode", "preprocess", "inference", "postprocess")}


class BaselineTagger:
    """``tag(path)``: the whole per-image routine of the older extensions."""

    def __init__(self, session: Any, tags_csv: Path, *, threshold: float = 0.35, character_threshold: float = 0.85):
        import pandas as pd

        self.session = session
        self.tags = pd.read_csv(tags_csv)
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        self.height = int(inp.shape[1])
        self.output_name = session.get_outputs()[0].name
        self.threshold = threshold
        self.character_threshold = character_threshold
        self.character_names = set(self.tags.loc[self.tags["category"] == 4, "name"])
        self.times = StageTimes()

    def _image_to_input(self, path: Path) -> np.ndarray:
        import cv2

        t0 = time.perf_counter()
        image = Image.open(path)
        image = image.convert("RGBA")  # alpha composite in Pillow, onto an opaque white canvas
        canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
        canvas.alpha_composite(image)
        image = canvas.convert("RGB")
        t1 = time.perf_counter()
        array = np.asarray(image)[:, :, ::-1]  # RGB -> BGR
        h, w = array.shape[:2]
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        array = cv2.copyMakeBorder(
            array, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=(255, 255, 255)
        )
        interpolation = cv2.INTER_AREA if side > self.height else cv2.INTER_CUBIC
        if side != self.height:
            array = cv2.resize(array, (self.height, self.height), interpolation=interpolation)
        array = np.expand_dims(array.astype(np.float32), 0)
        t2 = time.perf_counter()
        self.times.decode += t1 - t0
        self.times.preprocess += t2 - t1
        return array

    def tag(self, path: Path) -> tuple[dict[str, float], dict[str, float]]:
        """``(ratings, tags)`` of one image, tags above their thresholds."""
        array = self._image_to_input(path)
        t0 = time.perf_counter()
        confidences = self.session.run([self.output_name], {self.input_name: array})[0]
        t1 = time.perf_counter()
        frame = self.tags[["name"]].copy()
        frame["confidents"] = confidences[0]
        ratings = dict(frame[:4].values)
        everything = dict(frame[4:].values)
        tags = {
            name: float(p)
            for name, p in everything.items()
            if p >= (self.character_threshold if name in self.character_names else self.threshold)
        }
        self.times.postprocess += time.perf_counter() - t1
        self.times.inference += t1 - t0
        self.times.images += 1
        return ratings, tags

    def caption(self, tags: dict[str, float]) -> str:
        ordered = sorted(tags.items(), key=lambda kv: -kv[1])
        return ", ".join(_ESCAPE.sub(r"\\\1", name.replace("_", " ")) for name, _ in ordered)

    def run_folder(self, images: list[Path], output_dir: Path, on_result: Callable[[int], None] | None = None) -> int:
        """Tag ``images`` one by one and write ``<output_dir>/<stem>.txt`` for each; returns the count."""
        output_dir.mkdir(parents=True, exist_ok=True)
        done = 0
        for path in images:
            _, tags = self.tag(path)
            t0 = time.perf_counter()
            (output_dir / f"{path.stem}.txt").write_text(self.caption(tags), encoding="utf-8")
            self.times.postprocess += time.perf_counter() - t0
            done += 1
            if on_result:
                on_result(done)
        return done
