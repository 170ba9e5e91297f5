"""Every model family, run as its authors run it: for each, a stand-in ONNX model with that family's exact
contract (input name, layout and size, outputs, tag list file and format), and the tensor fed to it checked
against an independent implementation of that family's reference preprocessing, written here from the
sources named in ``tagger/families/known.py``. Then the tags, categories and default thresholds, and a
round trip through the probability cache.

The stand-ins compute their logits from the channel means of the tensor they are fed
(``modelgen.build_family_model``), so the expected probabilities follow from the reference tensor alone.
The session of each loaded model is wrapped by ``Recorder``, which keeps a copy of what the real session was
fed and hands everything on: the model and the code path are real.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tagger import cli
from tagger.batch import BatchConfig, BatchConfigError, run_batch
from tagger.cache import ProbCache
from tagger.engine import Tagger
from tagger.errors import ModelFormatError
from tagger.options import TagOptions
from tagger.postprocess import postprocess
from tests.modelgen import Row, _logit, build_family_model, family_embedding, family_expected, write_csv
from tests.test_images import _scene

PIXEL_BOUND = 0.5  # mean |fed - reference| allowed, in 0..255 pixel units (before normalisation)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)


# -- test images ---------------------------------------------------------------------------------------------


def scene(width: int, height: int, alpha: bool = False) -> Image.Image:
    """test_images' scene (gradients, hard edges, texture); with ``alpha``, a transparent band and a
    half-transparent one."""
    img = _scene(width, height)
    if not alpha:
        return img
    a = np.full((height, width), 255, dtype=np.uint8)
    a[:, : width // 6] = 0
    a[: height // 5, :] = 128
    rgba = img.convert("RGBA")
    rgba.putalpha(Image.fromarray(a))
    return rgba


OPAQUE = {"small": (300, 200), "large": (900, 500), "tall": (350, 700)}


# -- independent reference preprocessing, from each family's own code -------------------------------------------


def on_white(img: Image.Image) -> Image.Image:
    """RGBA pasted on white with its alpha as the mask (PixAI's handler, cl_tagger's pil_ensure_rgb)."""
    if img.mode != "RGBA":
        return img.convert("RGB")
    canvas = Image.new("RGB", img.size, (255, 255, 255))
    canvas.paste(img, mask=img.split()[3])
    return canvas


def chw01(img: Image.Image) -> np.ndarray:
    """torchvision's ToTensor: CHW float32 in 0..1."""
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0


def ref_pixai(img: Image.Image) -> np.ndarray:
    """pixai-labs/pixai-tagger-v0.9 handler: white background, Resize((448, 448)), ToTensor, Normalize(0.5)."""
    x = chw01(on_white(img).resize((448, 448), Image.BILINEAR))
    return (x - 0.5) / 0.5


def ref_camie(img: Image.Image, size: int = 512) -> np.ndarray:
    """Camais03's onnx_processing.preprocess_image (the opaque images here: it drops alpha unblended)."""
    img = img.convert("RGB")
    width, height = img.size
    aspect = width / height
    if aspect > 1:
        new_width, new_height = size, int(size / aspect)
    else:
        new_height, new_width = size, int(size * aspect)
    img = img.resize((new_width, new_height), Image.LANCZOS)
    canvas = Image.new("RGB", (size, size), (124, 116, 104))
    canvas.paste(img, ((size - new_width) // 2, (size - new_height) // 2))
    return (chw01(canvas) - IMAGENET_MEAN) / IMAGENET_STD


def ref_cl(img: Image.Image) -> np.ndarray:
    """cl_tagger's Space app.py preprocess_image: white, white square, BICUBIC 448, CHW, BGR, (x - 0.5) / 0.5."""
    img = on_white(img)
    w, h = img.size
    if w != h:
        side = max(w, h)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(img, ((side - w) // 2, (side - h) // 2))
        img = square
    x = chw01(img.resize((448, 448), Image.BICUBIC))[::-1]
    return (x - 0.5) / 0.5


def ref_mld(size: int) -> Callable[[Image.Image], np.ndarray]:
    """ML-Danbooru's demo: convert("RGB"), Resize((size, size)), ToTensor (no normalisation)."""
    return lambda img: chw01(img.convert("RGB").resize((size, size), Image.BILINEAR))


def ref_wd(img: Image.Image, size: int = 448) -> np.ndarray:
    """SmilingWolf's Space (and the Z3D Spaces): white square, BICUBIC when the side differs, BGR, 0..255, NHWC."""
    img = on_white(img)
    w, h = img.size
    side = max(w, h)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(img, ((side - w) // 2, (side - h) // 2))
    if side != size:
        square = square.resize((size, size), Image.BICUBIC)
    return np.asarray(square, dtype=np.float32)[:, :, ::-1]


def ref_stages(img: Image.Image) -> np.ndarray:
    """torchvision: Resize(416, bicubic) on the shorter side, CenterCrop(384), ToTensor, Normalize(ImageNet)."""
    img = on_white(img)
    w, h = img.size
    ow, oh = (416, int(416 * h / w)) if w < h else (int(416 * w / h), 416)
    img = img.resize((ow, oh), Image.BICUBIC)
    left, top = (ow - 384) // 2, (oh - 384) // 2
    img = img.crop((left, top, left + 384, top + 384))
    return (chw01(img) - IMAGENET_MEAN) / IMAGENET_STD


CUSTOM_MEAN = np.array([0.5, 0.4, 0.3], dtype=np.float32)
CUSTOM_STD = np.array([0.2, 0.25, 0.3], dtype=np.float32)


def ref_custom(img: Image.Image) -> np.ndarray:
    """The tagger.json below: letterbox to 256 on black (bilinear), 0..1, per-channel mean/std, RGB, NHWC."""
    img = on_white(img)
    w, h = img.size
    if w > h:
        nw, nh = 256, int(256 / (w / h))
    else:
        nw, nh = int(256 * (w / h)), 256
    canvas = Image.new("RGB", (256, 256), (0, 0, 0))
    canvas.paste(img.resize((nw, nh), Image.BILINEAR), ((256 - nw) // 2, (256 - nh) // 2))
    return (np.asarray(canvas, dtype=np.float32) / 255.0 - CUSTOM_MEAN) / CUSTOM_STD


# -- tag lists in each published format ------------------------------------------------------------------------


def csv_with_ips(path: Path, rows: tuple[Row, ...]) -> None:
    """deepghs' PixAI csv: tag_id, name, category, count and ips (the copyrights of a character, as JSON)."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["tag_id", "name", "category", "count", "ips"])
        for i, r in enumerate(rows):
            w.writerow([i, r.name, r.category, 10, json.dumps(["vocaloid"] if r.category == 4 else [])])


CL_NAMES = {
    9: "Rating",
    0: "General",
    4: "Character",
    3: "Copyright",
    1: "Artist",
    5: "Meta",
    20: "Quality",
    21: "Model",
}


def cl_mapping(path: Path, rows: tuple[Row, ...]) -> None:
    data = {str(i): {"tag": r.name, "category": CL_NAMES[r.category]} for i, r in enumerate(rows)}
    path.write_text(json.dumps(data), encoding="utf-8")


CAMIE_NAMES = {9: "rating", 0: "general", 4: "character", 3: "copyright", 1: "artist", 5: "meta", 10: "year"}


def camie_metadata(path: Path, rows: tuple[Row, ...]) -> None:
    mapping = {
        "idx_to_tag": {str(i): r.name for i, r in enumerate(rows)},
        "tag_to_category": {r.name: CAMIE_NAMES[r.category] for r in rows},
    }
    data = {"model_info": {"img_size": 512}, "dataset_info": {"tag_mapping": mapping, "total_tags": len(rows)}}
    path.write_text(json.dumps(data), encoding="utf-8")


def class_map(path: Path, rows: tuple[Row, ...]) -> None:
    """ML-Danbooru's class.json: output index -> tag name."""
    path.write_text(json.dumps({str(i): r.name for i, r in enumerate(rows)}), encoding="utf-8")


# -- the families ----------------------------------------------------------------------------------------------


def image_rows(code: int) -> tuple[Row, ...]:
    """Two tags that follow the image (on the channel means of the tensor as fed), so a wrong tensor shows."""
    return (
        Row("follows_first_channel", code, (3.0, -1.0, 0.0), -0.2),
        Row("follows_last_channel", code, (0.0, -1.0, 3.0), -0.2),
    )


def fixed(name: str, code: int, p: float) -> Row:
    return Row(name, code, (0.0, 0.0, 0.0), _logit(p))


@dataclass(frozen=True)
class Family:
    id: str
    folder: str  # in the models folder: a catalog name uses the catalog's description
    model_file: str
    labels_file: str
    write_labels: Callable[[Path, tuple[Row, ...]], None]
    rows: tuple[Row, ...]
    reference: Callable[[Image.Image], np.ndarray]
    pixel_scale: float  # tensor units per 0..255 pixel step (0.5/255 is half a pixel step in 0..1 units...)
    layout: str = "NCHW"
    size: int | None = 448
    input_name: str = "input"
    outputs: tuple[tuple[str, str], ...] = (("output", "logits"),)
    alpha: bool = True  # the reference flattens transparency onto white, as the loader does
    thresholds: dict[str, float] = field(default_factory=dict)  # the family's own defaults (from its sources)
    single: tuple[str, ...] = ()
    categories: dict[int, str] = field(default_factory=dict)  # category numbers as the tag list names them
    extra_files: dict[str, str] = field(default_factory=dict)
    embedding: bool = False

    @property
    def images(self) -> dict[str, Image.Image]:
        out = {k: scene(*wh) for k, wh in OPAQUE.items()}
        if self.size:
            out["exact"] = scene(self.size, self.size)
        if self.alpha:
            out["alpha"] = scene(320, 240, alpha=True)
        return out


BOORU = {9: "rating", 0: "general", 4: "character", 3: "copyright", 1: "artist", 5: "meta", 10: "year"}

FAMILIES = (
    Family(
        "pixai",
        "pixai-tagger-v0.9",
        "model.onnx",
        "selected_tags.csv",
        csv_with_ips,
        (
            *image_rows(0),
            fixed("", 0, 0.99),  # deepghs' csv has an empty placeholder row: never a tag
            fixed("solo", 0, 0.31),
            fixed("smile", 0, 0.29),
            fixed("hatsune_miku", 4, 0.86),
            fixed("kagamine_rin", 4, 0.84),
        ),
        ref_pixai,
        pixel_scale=1 / 127.5,
        outputs=(("prediction", "probs"), ("logits", "logits"), ("embedding", "embedding")),
        thresholds={"general": 0.30, "character": 0.85},
        categories=BOORU,
        embedding=True,
    ),
    Family(
        "camie",
        "camie-tagger-v2",
        "camie-tagger-v2.onnx",
        "camie-tagger-v2-metadata.json",
        camie_metadata,
        (
            fixed("general", 9, 0.2),
            fixed("sensitive", 9, 0.7),
            *image_rows(0),
            fixed("long_hair", 0, 0.62),
            fixed("smile", 0, 0.6),
            fixed("hatsune_miku", 4, 0.7),
            fixed("vocaloid", 3, 0.65),
            fixed("some_artist", 1, 0.62),
            fixed("highres", 5, 0.3),
            fixed("2020", 10, 0.9),
        ),
        ref_camie,
        pixel_scale=1 / (255 * 0.224),
        size=512,
        # the author takes the second output (the refined logits) through a sigmoid
        outputs=(("initial_predictions", "other"), ("refined_predictions", "logits"), ("selected_candidates", "other")),
        alpha=False,
        thresholds=dict.fromkeys(("general", "character", "copyright", "artist", "meta", "year"), 0.61),
        categories=CAMIE_NAMES,
    ),
    Family(
        "cl",
        "cl_tagger_1_02",
        "model.onnx",
        "tag_mapping.json",
        cl_mapping,
        (
            fixed("general", 9, 0.8),
            fixed("explicit", 9, 0.1),
            *image_rows(0),
            fixed("long_hair", 0, 0.5),
            fixed("smile", 0, 0.4),
            fixed("hatsune_miku", 4, 0.46),
            fixed("vocaloid", 3, 0.5),
            fixed("some_artist", 1, 0.44),
            fixed("highres", 5, 0.47),
            fixed("best_quality", 20, 0.3),  # quality: only the best counts, whatever its probability
            fixed("normal_quality", 20, 0.2),
            fixed("some_model", 21, 0.46),
        ),
        ref_cl,
        pixel_scale=1 / 127.5,
        thresholds=dict.fromkeys(("general", "character", "copyright", "artist", "meta", "model"), 0.45),
        single=("quality",),
        categories={k: v.lower() for k, v in CL_NAMES.items()},
    ),
    Family(
        "mldanbooru",
        "ml-danbooru-caformer-dec-5-97527",
        "ml_caformer_m36_dec-5-97527.onnx",
        "classes.json",
        class_map,
        (*image_rows(0), fixed("solo", 0, 0.76), fixed("smile", 0, 0.74)),
        ref_mld(448),
        pixel_scale=1 / 255,
        size=None,  # the export's height and width are symbolic: the description's 448 is used
        alpha=False,
        thresholds={"general": 0.75},
        categories={0: "general"},
    ),
    Family(
        "mldanbooru-tresnet",
        "ml-danbooru-tresnetd-6-30000",
        "TResnet-D-FLq_ema_6-30000.onnx",
        "classes.json",
        class_map,
        (*image_rows(0), fixed("solo", 0, 0.76)),
        ref_mld(640),  # the author's demo.py feeds the TResNet-D 640 px
        pixel_scale=1 / 255,
        size=None,
        alpha=False,
        thresholds={"general": 0.75},
        categories={0: "general"},
    ),
    Family(
        "z3d",
        "z3d-e621-convnext",
        "model.onnx",
        "tags-selected.csv",
        write_csv,
        (
            *image_rows(0),
            fixed("solo", 0, 0.4),
            fixed("canine", 5, 0.5),  # 5 is species in e621's numbering (meta in Danbooru's)
            fixed("conditional_dnp", 7, 0.36),
            fixed("some_artist", 1, 0.9),
            fixed("some_character", 4, 0.8),
        ),
        ref_wd,
        pixel_scale=1.0,
        layout="NHWC",
        input_name="input_1:0",
        outputs=(("predictions_sigmoid", "probs"),),
        alpha=False,  # the Z3D Spaces convert("RGB")
        categories={0: "general", 1: "artist", 3: "copyright", 4: "character", 5: "species", 7: "meta", 8: "lore"},
    ),
    Family(
        "wd-v1",
        "wd-v1-4-vit-tagger",
        "model.onnx",
        "selected_tags.csv",
        write_csv,
        (
            fixed("general", 9, 0.6),
            fixed("sensitive", 9, 0.3),
            *image_rows(0),
            fixed("solo", 0, 0.5),
            fixed("hatsune_miku", 4, 0.9),
        ),
        ref_wd,
        pixel_scale=1.0,
        layout="NHWC",
        input_name="input_1",
        outputs=(("predictions_sigmoid", "probs"),),
        categories={9: "rating", 0: "general", 4: "character"},
    ),
    Family(
        "deepghs-layout",
        "my-deepghs-tagger",  # not in the catalog: the folder's files say what it is
        "model.onnx",
        "selected_tags.csv",
        write_csv,
        (
            fixed("general", 9, 0.6),
            *image_rows(0),
            fixed("solo", 0, 0.45),
            fixed("smile", 0, 0.35),
            fixed("hatsune_miku", 4, 0.55),
            fixed("vocaloid", 3, 0.52),
            fixed("2021", 10, 0.3),
        ),
        ref_stages,
        pixel_scale=1 / (255 * 0.224),
        size=384,
        outputs=(("output", "probs"), ("logits", "logits"), ("embedding", "embedding")),
        thresholds={"general": 0.4, "character": 0.5, "copyright": 0.5},
        categories=BOORU,
        extra_files={
            "preprocess.json": json.dumps(
                {
                    "stages": [
                        {
                            "type": "resize",
                            "size": 416,
                            "interpolation": "bicubic",
                            "max_size": None,
                            "antialias": True,
                        },
                        {"type": "center_crop", "size": [384, 384]},
                        {"type": "maybe_to_tensor"},
                        {"type": "normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                    ]
                }
            ),
            "threshold.json": json.dumps(
                {
                    c: {"balanced": {"threshold": t}, "high_precision": {"threshold": 0.9}}
                    for c, t in (("general", 0.4), ("character", 0.5), ("copyright", 0.5))
                }
            ),
        },
        embedding=True,
    ),
    Family(
        "tagger-json",
        "my-custom-tagger",
        "net.onnx",
        "labels.csv",
        write_csv,
        (*image_rows(0), fixed("solo", 0, 0.4), fixed("watercolor", 2, 0.25), fixed("ink", 2, 0.15)),
        ref_custom,
        pixel_scale=1 / (255 * 0.3),
        layout="NHWC",
        size=256,
        input_name="pixels",
        outputs=(("feat", "embedding"), ("scores", "logits")),
        thresholds={"style": 0.2},
        categories={0: "general", 2: "style"},
        extra_files={
            "tagger.json": json.dumps(
                {
                    "family": "custom",
                    "model": "net.onnx",
                    "labels": {"file": "labels.csv", "format": "csv", "categories": {"0": "general", "2": "style"}},
                    "input": {
                        "layout": "NHWC",
                        "size": 256,
                        "channels": "RGB",
                        "scale": 1 / 255,
                        "mean": [0.5, 0.4, 0.3],
                        "std": [0.2, 0.25, 0.3],
                    },
                    "fit": {"mode": "letterbox", "pad_color": [0, 0, 0], "resize": "bilinear"},
                    "output": {"prediction": "scores", "activation": "sigmoid", "embedding": "feat"},
                    "thresholds": {"style": 0.2},
                }
            )
        },
        embedding=True,
    ),
)
BY_ID = {f.id: f for f in FAMILIES}


def build(root: Path, fam: Family) -> Path:
    folder = root / fam.folder
    folder.mkdir(parents=True)
    build_family_model(
        folder / fam.model_file,
        fam.rows,
        layout=fam.layout,
        size=fam.size,
        input_name=fam.input_name,
        outputs=fam.outputs,
    )
    fam.write_labels(folder / fam.labels_file, fam.rows)
    for name, text in fam.extra_files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("family-models")
    for fam in FAMILIES:
        build(root, fam)
    return root


class Recorder:
    """The real session, with a copy of every input it is fed."""

    def __init__(self, session: Any) -> None:
        self.session, self.fed = session, []

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
        (batch,) = feeds.values()
        self.fed.extend(np.array(x) for x in batch)
        return self.session.run(names, feeds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def recording_tagger(models: Path, fam: Family, **kwargs: Any) -> tuple[Tagger, Recorder]:
    tagger = Tagger(models, "cpu", download=False, progress=False, threads=1, **kwargs)
    loaded = tagger.load(fam.folder)
    recorder = Recorder(loaded.session)
    loaded.session = recorder
    return tagger, recorder


def expected_tags(fam: Family, probs: np.ndarray, opts: TagOptions) -> dict[str, set[str]]:
    """What should pass, category by category, at the thresholds of ``opts``: general and character their
    own, another category its given one, else the character threshold (copyright, artist) or the general
    one; a best-only category its most probable label; an excluded category nothing."""
    given = dict(opts.category_thresholds)
    out: dict[str, set[str]] = {}
    for row, p in zip(fam.rows, probs, strict=True):
        cat = fam.categories[row.category]
        if cat == "rating" or not row.name or cat in opts.exclude_categories or cat in fam.single:
            continue
        if cat in ("general", "character"):
            thr = opts.general_threshold if cat == "general" else opts.character_threshold
        else:
            thr = given.get(cat, opts.character_threshold if cat in ("copyright", "artist") else opts.general_threshold)
        if p >= thr:
            out.setdefault(cat, set()).add(row.name)
    for cat in fam.single:
        if cat not in opts.exclude_categories:
            rows = [(p, r.name) for r, p in zip(fam.rows, probs, strict=True) if fam.categories[r.category] == cat]
            out[cat] = {max(rows)[1]}
    return out


def got_tags(result: Any) -> dict[str, set[str]]:
    out = {name: set(tags) for name, tags in result.categories.items() if tags}
    if result.general:
        out["general"] = set(result.general)
    if result.character:
        out["character"] = set(result.character)
    return out


# -- the tensor each family is fed -----------------------------------------------------------------------------


@pytest.mark.parametrize("fam", FAMILIES, ids=[f.id for f in FAMILIES])
def test_the_tensor_fed_is_the_familys_reference(models: Path, fam: Family, tmp_path: Path) -> None:
    tagger, recorder = recording_tagger(models, fam)
    images = fam.images
    paths = []
    for name, img in images.items():
        paths.append(tmp_path / f"{name}.png")
        img.save(paths[-1])
    list(tagger.tag_many(fam.folder, paths))
    assert len(recorder.fed) == len(images)
    for (name, img), fed in zip(images.items(), recorder.fed, strict=True):
        ref = fam.reference(img)
        assert fed.shape == ref.shape and fed.dtype == np.float32, (name, fed.shape, ref.shape)
        mad_pixels = float(np.abs(fed - ref).mean()) / fam.pixel_scale
        assert mad_pixels <= PIXEL_BOUND, f"{fam.id}/{name}: mean |diff| {mad_pixels:.3f} pixel steps"


# -- tags, categories, thresholds, the cache ------------------------------------------------------------------------


@pytest.mark.parametrize("fam", FAMILIES, ids=[f.id for f in FAMILIES])
def test_tags_categories_and_the_models_own_thresholds(models: Path, fam: Family) -> None:
    tagger = Tagger(models, "cpu", download=False, progress=False, threads=1)
    img = scene(*OPAQUE["small"])
    want_probs = family_expected(fam.reference(img), fam.rows, fam.layout)
    opts = tagger.default_options(fam.folder)
    assert opts.general_threshold == fam.thresholds.get("general", 0.35)
    assert opts.character_threshold == fam.thresholds.get("character", 0.85)
    extra = {k: v for k, v in fam.thresholds.items() if k not in ("general", "character")}
    assert dict(opts.category_thresholds) == extra
    item = tagger.tag_image(fam.folder, img)  # no options: the model's own defaults
    assert np.allclose(item.probs, want_probs, atol=2e-3), fam.id
    assert got_tags(item.result) == expected_tags(fam, item.probs, opts)
    names = {fam.categories[r.category] for r in fam.rows} - {"rating", "general", "character"}
    assert set(item.labels.extra) == names
    assert "" not in item.result.merged() and all(t.strip() for t in item.result.tags)
    ratings = [r.name for r in fam.rows if fam.categories[r.category] == "rating"]
    assert sorted(item.result.rating) == sorted(ratings)


@pytest.mark.parametrize("fam", FAMILIES, ids=[f.id for f in FAMILIES])
def test_category_thresholds_and_switches_re_thresholded_from_the_cache(models: Path, fam: Family, tmp_path) -> None:
    cache = ProbCache(tmp_path / "probs.sqlite3")
    tagger = Tagger(models, "cpu", download=False, progress=False, threads=1, cache=cache)
    path = tmp_path / "img.png"
    scene(*OPAQUE["large"]).save(path)
    first = tagger.tag_image(fam.folder, path)
    assert not first.cached
    base = tagger.default_options(fam.folder)
    extra = [c for c in first.labels.extra if c not in fam.single]
    low = TagOptions(
        general_threshold=0.05,
        character_threshold=0.05,
        category_thresholds=dict.fromkeys(extra, 0.05),
        exclude_categories=tuple(extra[:1]),
    )
    for opts in (base, low):
        again = tagger.tag_image(fam.folder, path, opts)
        assert again.cached and again.provider == "cache"  # no model run: re-thresholded from the cache
        direct = postprocess(first.probs, first.labels, opts)
        assert again.result == direct
        assert got_tags(again.result) == expected_tags(fam, first.probs, opts)
    below_floor = TagOptions(category_thresholds=dict.fromkeys(extra, 0.001)) if extra else None
    if below_floor is not None:  # under the cache's floor only the model can answer exactly
        assert not tagger.tag_image(fam.folder, path, below_floor).cached


# -- embeddings ------------------------------------------------------------------------------------------------


EMBEDDERS = [f for f in FAMILIES if f.embedding]


@pytest.mark.parametrize("fam", EMBEDDERS, ids=[f.id for f in EMBEDDERS])
def test_embeddings_from_the_engine_and_beside_captions(models: Path, fam: Family, tmp_path: Path) -> None:
    img = scene(*OPAQUE["tall"])
    folder = tmp_path / "data"
    folder.mkdir()
    img.save(folder / "a.png")
    want = family_embedding(fam.reference(img), fam.layout)
    tagger = Tagger(models, "cpu", download=False, progress=False, threads=1, cache=ProbCache(tmp_path / "c.sqlite3"))
    item = tagger.tag_image(fam.folder, img, embeddings=True)
    assert item.embedding is not None and np.allclose(item.embedding, want, atol=1e-3)
    summary = run_batch(tagger, fam.folder, BatchConfig([folder], embeddings=True), TagOptions())
    assert summary.tagged == 1
    saved = np.load(folder / "a.npy")
    assert saved.dtype == np.float32 and saved.shape == want.shape and np.allclose(saved, want, atol=1e-3)
    assert (folder / "a.txt").read_text(encoding="utf-8")


def test_a_model_without_an_embedding_output_says_so(models: Path, tmp_path: Path) -> None:
    tagger = Tagger(models, "cpu", download=False, progress=False)
    with pytest.raises(ModelFormatError, match="has no embedding output"):
        tagger.tag_image("camie-tagger-v2", scene(40, 30), embeddings=True)
    (tmp_path / "d").mkdir()
    scene(40, 30).save(tmp_path / "d" / "x.png")
    with pytest.raises(BatchConfigError, match="no embedding output"):
        run_batch(tagger, "camie-tagger-v2", BatchConfig([tmp_path / "d"], embeddings=True), TagOptions())
    assert not (tmp_path / "d" / "x.txt").exists()


# -- the command line -----------------------------------------------------------------------------------------------


def test_cli_json_and_the_category_options(models: Path, tmp_path: Path) -> None:
    fam = BY_ID["camie"]
    path = tmp_path / "img.png"
    scene(*OPAQUE["small"]).save(path)
    base = ["tag", str(path), "--models-dir", str(models), "--model", "camie-v2", "--format", "json", "--no-cache"]

    def run(*extra: str) -> dict[str, Any]:
        out = io.StringIO()
        assert cli.main([*base, *extra], out=out) == 0
        return json.loads(out.getvalue())

    plain = run()
    assert plain["categories"] == {"copyright": {"vocaloid": pytest.approx(0.65, abs=1e-3)},
                                   "artist": {"some_artist": pytest.approx(0.62, abs=1e-3)},
                                   "meta": {}, "year": {"2020": pytest.approx(0.9, abs=1e-3)}}  # fmt: skip
    assert "some artist" in plain["prompt"] and "highres" not in plain["prompt"]
    tuned = run("--threshold", "artist=0.7", "--threshold", "meta=0.2", "--exclude-categories", "year")
    assert tuned["categories"]["artist"] == {} and "highres" in tuned["categories"]["meta"]
    assert "2020" not in tuned["prompt"] and tuned["categories"]["year"] == {}
    assert run("--general-threshold", "0.5")["general"].keys() >= {"long_hair", "smile"}
    assert fam.thresholds["general"] == 0.61  # without the flag, the model's own 0.61 leaves smile (0.6) out
    assert "smile" not in plain["general"]


def test_cli_refuses_a_bad_category_threshold(models: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "img.png"
    scene(20, 20).save(path)
    argv = ["tag", str(path), "--models-dir", str(models), "--model", "camie-tagger-v2", "--threshold", "artist"]
    assert cli.main(argv, out=io.StringIO()) == 2
    assert "--threshold" in capsys.readouterr().err  # the flag that was given


def test_json_sidecar_lists_every_category(models: Path, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    scene(64, 48).save(folder / "a.png")
    tagger = Tagger(models, "cpu", download=False, progress=False)
    run_batch(
        tagger, "cl_tagger_1_02", BatchConfig([folder], json_sidecar=True), tagger.default_options("cl_tagger_1_02")
    )
    record = json.loads((folder / "a.json").read_text(encoding="utf-8"))
    assert set(record["categories"]) == {"copyright", "artist", "meta", "quality", "model"}
    assert record["categories"]["quality"] == {
        "best_quality": pytest.approx(0.3, abs=1e-4),
        "normal_quality": pytest.approx(0.2, abs=1e-4),
    }
    assert "best quality" in (folder / "a.txt").read_text(encoding="utf-8")  # the best quality tag, below 0.45


# -- folders the repositories publish, recognised by their files ----------------------------------------------------


def test_a_downloaded_folder_of_each_published_layout_is_recognised(models: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "models"
    root.mkdir()
    # cl_tagger and Camie under names of the user's own; cl_tagger's files in the repository's sub-folder
    # (as a download of the catalog model leaves them), ML-Danbooru's class list as a plain list
    shutil.copytree(models / "cl_tagger_1_02", root / "my-cl")
    (root / "my-cl" / "tag_mapping.json").rename(root / "my-cl" / "cl_tagger_1_02_tag_mapping.json")
    shutil.copytree(models / "camie-tagger-v2", root / "my-camie")
    sub = root / "cl_tagger_1_02" / "cl_tagger_1_02"
    shutil.copytree(models / "cl_tagger_1_02", sub)
    shutil.copytree(models / "ml-danbooru-caformer-dec-5-97527", root / "my-mld")
    names = json.loads((root / "my-mld" / "classes.json").read_text(encoding="utf-8"))
    (root / "my-mld" / "classes.json").write_text(json.dumps([names[str(i)] for i in range(len(names))]))
    tagger = Tagger(root, "cpu", download=False, progress=False)
    img = scene(*OPAQUE["small"])
    for name, like in (("my-cl", "cl"), ("cl_tagger_1_02", "cl"), ("my-camie", "camie"), ("my-mld", "mldanbooru")):
        fam = BY_ID[like]
        item = tagger.tag_image(name, img)
        assert np.allclose(item.probs, family_expected(fam.reference(img), fam.rows), atol=2e-3), name
        assert tagger.describe(name).family == {"cl": "cl", "camie": "camie", "mldanbooru": "mldanbooru"}[like]
    listed = {m.name: m for m in tagger.list_models()}
    assert listed["cl_tagger_1_02"].downloaded and listed["my-cl"].family == "local"
    assert listed["my-cl"].tags == len(BY_ID["cl"].rows) and listed["my-mld"].tags == len(BY_ID["mldanbooru"].rows)


@pytest.mark.parametrize(
    ("description", "message"),
    [
        ({"input": {"layout": "NCWH"}}, r"tagger.json\.input\.layout: expected one of NHWC, NCHW"),
        ({"fit": {"mode": "pad", "pad_color": [0, 0, 300]}}, r"fit\.pad_color: expected three whole numbers"),
        ({"input": {"std": [1, 0, 1]}}, r"input\.std: expected three numbers .* none 0"),
        ({"thresholds": {"general": 2}}, r"thresholds: expected an object of category name -> number 0..1"),
        ({"colour": "red"}, r"unknown key 'colour'"),
        ({"labels": {"file": "missing.csv"}}, r"its tag list missing.csv is not in"),
    ],
)
def test_a_broken_tagger_json_is_named_with_its_key(tmp_path: Path, description: dict, message: str) -> None:
    folder = tmp_path / "mine"
    build(tmp_path, BY_ID["wd-v1"]).rename(folder)
    (folder / "tagger.json").write_text(json.dumps(description), encoding="utf-8")
    tagger = Tagger(tmp_path, "cpu", download=False, progress=False)
    with pytest.raises(ModelFormatError, match=message):
        tagger.tag_image("mine", scene(20, 20))
    assert "mine" not in {m.name for m in tagger.list_models()}  # the list skips it (with a warning)


def test_an_unknown_preprocess_stage_is_named(tmp_path: Path) -> None:
    folder = build(tmp_path, BY_ID["deepghs-layout"])
    stages = {"stages": [{"type": "random_rotate", "degrees": 5}, {"type": "to_tensor"}]}
    (folder / "preprocess.json").write_text(json.dumps(stages), encoding="utf-8")
    with pytest.raises(ModelFormatError, match=r"preprocess stages\[0\]: stage type 'random_rotate' is not known"):
        Tagger(tmp_path, "cpu", download=False).load(folder.name)


def test_a_described_model_that_does_not_match_its_description_is_refused(tmp_path: Path) -> None:
    folder = build(tmp_path, BY_ID["wd-v1"])  # NHWC, but described as Camie (NCHW): refused with what it is
    folder.rename(tmp_path / "camie-tagger-v2")
    (tmp_path / "camie-tagger-v2" / "model.onnx").rename(tmp_path / "camie-tagger-v2" / "camie-tagger-v2.onnx")
    camie_metadata(tmp_path / "camie-tagger-v2" / "camie-tagger-v2-metadata.json", BY_ID["wd-v1"].rows[:2])
    with pytest.raises(ModelFormatError, match=r"is not a camie tagger as described: expected one NCHW input"):
        Tagger(tmp_path, "cpu", download=False).load("camie-tagger-v2")


def test_an_int8_copy_carries_its_description(models: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime.quantization")
    from tagger.quantize import quantize_model

    target = quantize_model("camie-tagger-v2", models, out_name="camie-int8-test", download=False)
    try:
        desc = json.loads((target / "tagger.json").read_text(encoding="utf-8"))
        assert desc["family"] == "camie" and desc["fit"]["mode"] == "letterbox" and desc["output"]["prediction"] == 1
        tagger = Tagger(models, "cpu", download=False, progress=False)
        img = scene(*OPAQUE["small"])
        a, b = tagger.tag_image("camie-tagger-v2", img), tagger.tag_image("camie-int8-test", img)
        assert np.allclose(a.probs, b.probs, atol=0.02) and a.result.categories.keys() == b.result.categories.keys()
    finally:
        import shutil

        shutil.rmtree(target)


def test_the_readme_tagger_json_example_runs(tmp_path: Path) -> None:
    """README's tagger.json, as written, beside a stand-in with that contract: the tensor is its reference."""
    import re

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```json\n(.*?)```", text[text.index("### Your own ONNX tagger") :], re.S)
    assert example, "README has no tagger.json example"
    folder = tmp_path / "mine"
    folder.mkdir()
    rows = (fixed("general", 9, 0.7), *image_rows(0), fixed("hatsune_miku", 4, 0.9), fixed("some_artist", 1, 0.55))
    build_family_model(folder / "model.onnx", rows, outputs=(("logits", "logits"), ("embedding", "embedding")))
    write_csv(folder / "selected_tags.csv", rows)
    (folder / "tagger.json").write_text(example.group(1), encoding="utf-8")
    tagger, recorder = recording_tagger(tmp_path, Family("readme", "mine", "", "", write_csv, rows, ref_cl, 1 / 127.5))
    img = scene(300, 200, alpha=True)
    item = tagger.tag_image("mine", img, embeddings=True)
    rgb = ref_wd(img)[:, :, ::-1]  # SmilingWolf's white square and bicubic resize, back in R, G, B order
    ref = (rgb.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    assert float(np.abs(recorder.fed[0] - ref).mean()) * 127.5 <= PIXEL_BOUND
    assert item.result.categories == {"artist": {"some_artist": pytest.approx(0.55, abs=1e-4)}}
    assert np.allclose(item.embedding, family_embedding(ref), atol=1e-3)
