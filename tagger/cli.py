"""Command line: ``python -m tagger tag|models|serve ...``. Exit 0 ok, 1 some images failed, 2 usage/model."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import typing
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from tagger import __version__, paths
from tagger.catalog import DEFAULT_MODEL
from tagger.errors import ImageError, OptionsError, TaggerError
from tagger.options import (
    OPTION_FIELDS,
    TAG_LIST_FIELDS,
    TagOptions,
    literal_choices,
    options_from_mapping,
    parse_category_thresholds,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

TAG_EXAMPLES = """\
examples:
  python -m tagger tag photo.png                       # prompt for one image
  python -m tagger tag a.jpg b.png --format json       # one JSON object per image
  python -m tagger tag img.png --model wd-vit-tagger-v3 --general-threshold 0.3 --exclude "solo, 1girl"
  python -m tagger tag img.png --model ./my-model-folder --device cuda
  python -m tagger tag dataset/ -r                     # caption files beside every image, resumable
  python -m tagger tag dataset/ --output-dir captions --existing append --json
  python -m tagger tag dataset/ -r --character-tags-first --rating-last --always-first-tags "1girl, 1boy"
  python -m tagger tag dataset/ --general-threshold 0.4 --exclude solo --dry-run --stats   # nothing written
"""

DATASET_EXAMPLES = """\
examples:
  python -m tagger dataset images/ --output tags/        # Ray on this machine; run it again to resume
  python -m tagger dataset 'shards/*.tar' -o s3://bucket/tags --address HEAD:6379 --actors 8
  python -m tagger dataset list.csv -o out/ --path-column file --captions --model wd-vit-tagger-v3
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", metavar="DIR", help="models folder (default: $TAGGER_MODELS_DIR or per-user)")
    p.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")


# The command line's names of the TagOptions fields: (the flag that sets it, the flag that turns a switch off).
# A field not named here gets --field-name; (None, None) gives it no flag of its own. Help texts are the fields'
# descriptions, as in the API's schema and the page, so the three say the same.
FLAGS: dict[str, tuple[str | None, str | None]] = {
    "additional_tags": ("--add", None),
    "exclude_tags": ("--exclude", None),
    "replace_underscores": (None, "--keep-underscores"),
    "escape": ("--escape", "--no-escape"),
    "include_rating": ("--rating", None),
    "rating_position": (None, None),  # --rating-last
    "character_first": ("--character-tags-first", None),
    "character_expand": ("--character-tag-expand", None),
    "always_first": ("--always-first-tags", None),
    "separator": ("--caption-separator", None),
    "category_thresholds": ("--threshold", None),
}
METAVARS = {"general_threshold": "F", "character_threshold": "F", "max_tags": "N", "separator": "SEP",
            "tag_replacement": "'A,B;C,D'", "exclude_categories": "LIST"}  # fmt: skip
HELP_NOTES = {
    "escape": "Printed prompts are escaped unless --no-escape; caption files only with --escape.",
    "include_rating": "--rating-last puts it last.",
    "general_threshold": "A model with its own default (Camie, cl_tagger) starts from that instead.",
    "character_threshold": "A model with its own default (Camie, cl_tagger) starts from that instead.",
    "category_thresholds": "Here: --threshold copyright=0.5, repeatable.",
    "exclude_categories": "The model's categories: see --format json.",
}
OFF_HELP = {"replace_underscores": "keep long_hair as it is (default: 'long hair'; kaomoji such as ^_^ keep theirs)"}


def flag_of(name: str) -> str | None:
    """The flag that sets the TagOptions field ``name`` on the command line (error messages name it)."""
    on, off = FLAGS.get(name, ("--" + name.replace("_", "-"), None))
    return on or off


def _add_tag_options(p: argparse.ArgumentParser) -> None:
    """A flag for every TagOptions field, from its type, default and description (``FLAGS`` names them).

    Every default is None, so that only what was given reaches ``options_from_args``."""
    g = p.add_argument_group("tag options")
    hints = typing.get_type_hints(TagOptions)
    for name, f in OPTION_FIELDS.items():
        on, off = FLAGS.get(name, ("--" + name.replace("_", "-"), None))
        help_ = " ".join(x for x in (f.metadata.get("description", ""), HELP_NOTES.get(name, "")) if x)
        if isinstance(f.default, bool):
            if on:
                g.add_argument(on, dest=name, action="store_const", const=True, default=None, help=help_)
            if off:
                off_help = OFF_HELP.get(name) or f"the opposite of {on}"
                g.add_argument(off, dest=name, action="store_const", const=False, default=None, help=off_help)
            continue
        if not on:
            continue
        if name == "category_thresholds":  # repeatable: --threshold copyright=0.5 --threshold artist=0.4
            g.add_argument(on, dest=name, action="append", default=None, metavar="CATEGORY=F", help=help_)
            continue
        kind: dict[str, Any] = {"metavar": METAVARS.get(name, "TAGS" if name in TAG_LIST_FIELDS else "TEXT")}
        choices = literal_choices(name)
        if choices:
            kind = {"choices": choices}
        elif hints[name] in (int, float):
            kind["type"] = hints[name]
        default = f.default if not isinstance(f.default, tuple) else ", ".join(f.default)
        shown = f" (default {default!r})" if default not in ("", 0) and not choices else ""
        g.add_argument(on, dest=name, default=None, help=help_ + shown, **kind)
    g.add_argument("--mcut", action="store_true", help="pick both thresholds by MCut (largest gap)")
    g.add_argument("--rating-last", action="store_true", help="put the top rating last (--rating puts it first)")


# The devices (runtime.DEVICES; not imported here: the command line starts without numpy).
DEVICE_METAVAR = "DEVICE"
DEVICE_HELP = (
    "auto, cpu, cpu-bf16, openvino, cuda[:N] or intel-gpu[:N]; cpu-bf16 (the CPU's bf16 units), openvino (the CPU "
    "at fp32) and intel-gpu run on OpenVINO: pip install openvino"
)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME|DIR", help=f"model (default {DEFAULT_MODEL})")
    p.add_argument(
        "--device", default="auto", metavar=DEVICE_METAVAR, help=f"where to run (default auto): {DEVICE_HELP}"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="images per model run (default: 1 on CPU, 16 on CUDA, the model's fixed size)",
    )
    p.add_argument("--offline", action="store_true", help="never download; use only files already here")


def _add_caption_file_options(g: argparse._ArgumentGroup, skip: str = "never touched, image not even read") -> None:
    """The caption file flags of ``tag`` that ``dataset --captions`` takes too."""
    g.add_argument("--output-dir", metavar="DIR", help="write captions here, mirroring the input's sub-folders")
    g.add_argument(
        "--filename-format",
        default="[name].txt",
        metavar="FMT",
        help="caption file name; tokens [name] [extension] [hash:ALGO] (default [name].txt)",
    )
    g.add_argument(
        "--existing",
        choices=("skip", "overwrite", "append", "prepend"),
        default=None,
        help=f"what to do with captions that exist (default skip: {skip})",
    )
    g.add_argument("--json", action="store_true", help="also write a .json sidecar with all probabilities")
    g.add_argument(
        "--no-backup",
        action="store_true",
        help="do not keep a caption that --existing overwrite/append/prepend changes (default: NAME.txt.bak)",
    )
    g.add_argument("--backup-dir", metavar="DIR", help="keep those captions here instead, mirroring their folders")
    g.add_argument(
        "--caption-from",
        choices=("tags", "merge"),
        default="tags",
        help="merge: an image carrying its prompt (A1111, NovelAI, ComfyUI) is captioned with the embedded tags "
        "the tagger confirms and the words it cannot judge (trigger words; not LoRAs, quality or score tags), "
        "then the tagger's own (default tags: the tags alone)",
    )


def options_from_args(args: argparse.Namespace, base: TagOptions | None = None) -> TagOptions:
    """The TagOptions the flags give over ``base`` (the model's defaults): a threshold not given is base's, and
    ``--threshold`` adds to base's category thresholds. OptionsError names the flag of a bad value."""
    base = base or TagOptions()
    given = {name: getattr(args, name) for name in OPTION_FIELDS if getattr(args, name, None) is not None}
    if args.mcut:
        given.update(general_mcut=True, character_mcut=True)
    if args.rating_last:
        given.update(include_rating=True, rating_position="last")
    try:
        if "category_thresholds" in given:
            extra = parse_category_thresholds(",".join(given["category_thresholds"]))
            given["category_thresholds"] = {**dict(base.category_thresholds), **dict(extra)}
        return options_from_mapping(given, base=base)
    except OptionsError as e:
        raise OptionsError(flag_of(e.field) or e.field, e.problem) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tagger", description="WD14 image tagger: images in, Stable Diffusion tag prompts out."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tag = sub.add_parser("tag", help="tag images", epilog=TAG_EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    tag.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    _add_model_options(tag)
    tag.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="what to print for images tagged without caption files",
    )
    tag.add_argument(
        "--cache",
        metavar="FILE|DIR",
        help="probability cache file, or a folder for it (default: $TAGGER_CACHE or per-user)",
    )
    tag.add_argument("--no-cache", action="store_true", help="neither read nor write the probability cache")
    cap = tag.add_argument_group(
        "caption files",
        "Given a folder, or any of these options, captions are written beside each image "
        "(or under --output-dir) instead of printed.",
    )
    cap.add_argument("--captions", action="store_true", help="write caption files for image files too")
    cap.add_argument("-r", "--recursive", action="store_true", help="walk sub-folders")
    _add_caption_file_options(cap)
    cap.add_argument(
        "--embeddings",
        action="store_true",
        help="also write the model's image embedding as a .npy file beside each caption (models with an "
        "embedding output, such as PixAI's)",
    )
    cap.add_argument(
        "--metadata",
        metavar="FILE",
        help="also write one file for the whole run: FILE.json (image -> tags, size, probabilities) or FILE.jsonl",
    )
    cap.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="image decoding threads (default: what the machine can use; 0: decode in series, no threads)",
    )
    cap.add_argument("--frequency-tags", action="store_true", help="print how many images got each tag")
    cap.add_argument("--frequency-csv", metavar="FILE", help="write those counts as CSV (tag,images,share_percent)")
    cap.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be written where (new, skip, overwrite, append, prepend) and collisions; write nothing",
    )
    cap.add_argument(
        "--stats",
        action="store_true",
        help="with --dry-run (implied): tag counts before/after the excludes and against the captions there, from "
        "the probability cache alone",
    )
    _add_tag_options(tag)
    _common(tag)

    ds = sub.add_parser(
        "dataset",
        help="tag a dataset into a Parquet dataset on Ray, on one machine or a cluster (pip install -e '.[ray]')",
        description="Tag every image of SRC into the Parquet dataset OUT with Ray Data: decoding on the CPUs, "
        "the model in a pool of actors (one per GPU when the cluster has GPUs). Run it again to resume: images "
        "already in OUT (same key, content and model) are skipped.",
        epilog=DATASET_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ds.add_argument(
        "sources",
        nargs="+",
        metavar="SRC",
        help="a folder (sub-folders too), a glob, a URL (s3://, gs://, file://...), a .parquet/.csv/.txt listing "
        "of image paths, or WebDataset .tar shards",
    )
    ds.add_argument("-o", "--output", required=True, metavar="OUT", help="the Parquet dataset: a folder or a URL")
    _add_model_options(ds)
    ray = ds.add_argument_group("Ray")
    ray.add_argument("--address", metavar="ADDR", help="the Ray cluster to join: HOST:6379, ray://HOST:10001, or auto "
                     "(the one `ray start` began here); default $RAY_ADDRESS, else Ray starts here")  # fmt: skip
    ray.add_argument("--actors", metavar="N|MIN:MAX", help="inference actors, or a range to autoscale in "
                     "(default: one per GPU, else one per node)")  # fmt: skip
    ray.add_argument("--gpus-per-actor", type=float, metavar="F", help="GPUs per actor (default 1 when the cluster "
                     "has GPUs and --device is not cpu)")  # fmt: skip
    ray.add_argument("--threads", type=int, metavar="N", help="CPU threads per actor (default 1 with a GPU, else "
                     "half a node's CPUs)")  # fmt: skip
    ray.add_argument("--rows-per-file", type=int, default=1024, metavar="N",
                     help="images per write task: each Parquet file holds at most N rows (default 1024)")  # fmt: skip
    ray.add_argument("--embeddings", action="store_true", help="add the embedding column (models that have one); "
                     "with --captions also the .npy file beside each caption, as tag")  # fmt: skip
    ray.add_argument("--path-column", metavar="NAME", help="the column of a Parquet/CSV listing holding the paths")
    dcap = ds.add_argument_group("caption files", "With --captions, also a caption file beside each local image "
                                 "(or under --output-dir), exactly as `tag DIR` writes it.")  # fmt: skip
    dcap.add_argument("--captions", action="store_true", help="write caption files for local images too")
    _add_caption_file_options(dcap, skip="never touched")
    _add_tag_options(ds)
    _common(ds)

    serve = sub.add_parser("serve", help="serve the Tagger page and the HTTP API (standalone, no WebUI)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=7861, help="port (default 7861)")
    serve.add_argument(
        "--device", default="auto", metavar=DEVICE_METAVAR, help=f"where to run (default auto): {DEVICE_HELP}"
    )
    serve.add_argument(
        "--auth",
        metavar="USER:PASS[,USER:PASS]",
        help="ask for a user and password (HTTP basic) on the page, the API and the docs (default: $TAGGER_AUTH)",
    )
    serve.add_argument("--auth-file", metavar="FILE", help="user:password entries, one a line or comma-separated")
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="listen beyond this machine without --auth (anyone who reaches the port can use the page)",
    )
    serve.add_argument(
        "--batch-root",
        action="append",
        metavar="DIR",
        help="a folder the page's 'Batch from folder' may read and write in (repeatable; default: the current "
        "folder when listening on 127.0.0.1, none otherwise)",
    )
    _common(serve)

    quant = sub.add_parser(
        "quantize",
        help="make an int8 copy of a model (opt-in, faster on CPU), and check it on your images",
        epilog="examples:\n  python -m tagger quantize wd-vit-tagger-v3\n"
        "  python -m tagger quantize wd-vit-tagger-v3 --validate my_images/   # then: tag ... --model wd-vit-tagger-v3-int8",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    quant.add_argument("name", metavar="NAME|DIR", help="the model to quantise")
    quant.add_argument("--out", metavar="NAME", help="name of the int8 model folder (default NAME-int8)")
    quant.add_argument("--force", action="store_true", help="replace an existing int8 copy")
    quant.add_argument("--validate", metavar="FOLDER", help="compare the int8 copy's tags with NAME's on these images")
    quant.add_argument("-r", "--recursive", action="store_true", help="with --validate: walk sub-folders")
    quant.add_argument("--limit", type=int, metavar="N", help="with --validate: at most N images")
    quant.add_argument(
        "--device",
        default="auto",
        metavar=DEVICE_METAVAR,
        help=f"where to run the comparison (default auto): {DEVICE_HELP}",
    )
    quant.add_argument("--offline", action="store_true", help="never download; use only files already here")
    _add_tag_options(quant)
    _common(quant)

    dev = sub.add_parser(
        "devices",
        help="where models can run here (ONNX Runtime, OpenVINO, bf16 units, GPUs); compare a device on your images",
        epilog="examples:\n  python -m tagger devices\n"
        "  python -m tagger devices wd-vit-tagger-v3                       # what auto chooses for it here\n"
        "  python -m tagger devices wd-vit-tagger-v3 --device cpu-bf16 --validate my_images/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dev.add_argument("name", nargs="?", metavar="NAME|DIR", help="a model: load it where auto would, and say where")
    dev.add_argument("--device", default="cpu-bf16", metavar=DEVICE_METAVAR,
                     help="with --validate: the device to check (default cpu-bf16)")  # fmt: skip
    dev.add_argument("--against", default="cpu", metavar=DEVICE_METAVAR,
                     help="with --validate: the reference device (default cpu: ONNX Runtime fp32)")  # fmt: skip
    dev.add_argument(
        "--validate", metavar="FOLDER", help="compare NAME's tags on --device with --against on these images"
    )
    dev.add_argument("-r", "--recursive", action="store_true", help="with --validate: walk sub-folders")
    dev.add_argument("--limit", type=int, metavar="N", help="with --validate: at most N images")
    dev.add_argument("--offline", action="store_true", help="never download; use only files already here")
    _add_tag_options(dev)
    _common(dev)

    cache = sub.add_parser("cache", help="show or clear the probability cache")
    cache.add_argument("action", nargs="?", choices=("info", "clear"), default="info")
    cache.add_argument(
        "--cache", metavar="FILE|DIR", help="cache file, or the folder holding it (default: $TAGGER_CACHE or per-user)"
    )
    cache.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")

    models = sub.add_parser("models", help="list models, or download one")
    models.add_argument("action", nargs="?", choices=("list", "download"), default="list")
    models.add_argument("name", nargs="?", help="model to download")
    _common(models)
    return parser


def _print_err(msg: str) -> None:
    print(msg, file=sys.stderr)  # noqa: T201


def _emit(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()


def _caption_mode(args: argparse.Namespace) -> bool:
    batch_flags = [args.captions, args.recursive, args.output_dir, args.json, args.existing, args.no_backup,
                   args.backup_dir, args.metadata, args.frequency_tags, args.frequency_csv, args.dry_run, args.stats,
                   args.caption_from != "tags", args.embeddings]  # fmt: skip
    return any(batch_flags) or args.filename_format != "[name].txt" or any(Path(p).is_dir() for p in args.paths)


def cmd_tag(args: argparse.Namespace, out: TextIO) -> int:
    from tagger.cache import ProbCache, cache_file
    from tagger.compare import report
    from tagger.embedded import read_generation_data
    from tagger.engine import Tagger

    def on_load(loaded: Any) -> None:
        _print_err(f"model {loaded.name} on {loaded.provider_label} ({loaded.threads} threads)")
        if loaded.device_note:
            _print_err(loaded.device_note)

    cache = None
    if not args.no_cache:
        path = paths.cache_path(args.cache)
        named = args.cache or os.environ.get(paths.ENV_CACHE)  # a damaged default cache is set aside and rebuilt
        cache = ProbCache(cache_file(path) if named else path)
    tagger = Tagger(
        args.models_dir, args.device, download=not args.offline, progress=sys.stderr.isatty(), cache=cache,
        on_load=on_load,
    )  # fmt: skip
    opts = options_from_args(args, tagger.default_options(args.model))
    if _caption_mode(args):
        return _tag_to_captions(tagger, args, opts, out)
    failed = 0
    sources = [Path(p) for p in args.paths]
    for item in tagger.tag_many(args.model, sources, opts, batch_size=args.batch_size):
        if isinstance(item, ImageError):
            failed += 1
            _print_err(f"error: {item}")
            continue
        r = item.result
        if args.format == "json":
            record = {"path": str(item.source), "prompt": r.prompt, "rating": r.rating,
                      "general": r.general, "character": r.character}  # fmt: skip
            if item.labels.extra:  # the model's other categories, each with the tags that passed
                record["categories"] = {name: r.categories.get(name, {}) for name in item.labels.extra}
            # With the image's own generation data, that and the comparison too (nothing for other images).
            mcut = item.hit.mcut if item.hit is not None else None
            record.update(report(read_generation_data(item.source), item.probs, item.labels, opts, mcut=mcut))
            _emit(out, json.dumps(record, ensure_ascii=False))
        else:
            _emit(out, f"{item.source}: {r.prompt}")
    if failed:
        _print_err(f"{failed} of {len(sources)} images failed")
    return EXIT_FAILED if failed else EXIT_OK


def batch_config_from_args(args: argparse.Namespace) -> Any:
    """The BatchConfig the caption flags give."""
    from tagger.batch import BatchConfig

    return BatchConfig(
        inputs=[Path(p) for p in args.paths],
        recursive=args.recursive,
        output_dir=Path(args.output_dir) if args.output_dir else None,
        filename_format=args.filename_format,
        existing=args.existing or "skip",
        json_sidecar=args.json,
        batch_size=args.batch_size,
        embeddings=args.embeddings,
        escape=bool(args.escape),  # caption files: plain text unless --escape
        backup=not args.no_backup,
        backup_dir=Path(args.backup_dir) if args.backup_dir else None,
        metadata=Path(args.metadata) if args.metadata else None,
        workers=args.workers,
        caption_from=args.caption_from,
    )


def _tag_to_captions(tagger: Any, args: argparse.Namespace, opts: TagOptions, out: TextIO) -> int:
    import threading

    from tagger.batch import run_batch, write_counts_csv

    config = batch_config_from_args(args)
    if args.dry_run or args.stats:
        return _dry_run(tagger, args, config, opts, out)
    cancel = threading.Event()
    reporter = _ProgressReporter(sys.stderr)
    try:
        summary = run_batch(tagger, args.model, config, opts, progress=reporter, cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        reporter.close()
        _print_err("interrupted: every caption written so far is complete; run the same command again to resume")
        return 130
    reporter.close()
    kept = f"; {summary.backups} earlier captions kept as backups" if summary.backups else ""
    _print_err(
        f"tagged {summary.tagged}, skipped {summary.skipped} (caption exists), failed {summary.failed} "
        f"in {summary.elapsed:.1f} s ({summary.images_per_s:.2f} images/s){kept}"
    )
    if config.metadata is not None:
        _print_err(f"metadata: {config.metadata}")
    if args.frequency_tags:  # kohya's --frequency_tags report: most frequent first
        _emit(out, "Tag frequencies:")
        for tag, count in sorted(summary.tag_counts.items(), key=lambda kv: (-kv[1], kv[0])):
            _emit(out, f"{tag}: {count}")
    if args.frequency_csv:
        path = write_counts_csv(Path(args.frequency_csv), summary.tag_counts, summary.tagged)
        _print_err(f"tag counts: {path}")
    if summary.failures:
        _print_err("failed:")
        for path, reason in summary.failures:
            _print_err(f"  {path}: {reason}")
    return EXIT_FAILED if summary.failed else EXIT_OK


def _dry_run(tagger: Any, args: argparse.Namespace, config: Any, opts: TagOptions, out: TextIO) -> int:
    """What a run would write where, and (--stats) what these options make of the cached images; no writes."""
    from tagger.batch import batch_stats, plan_batch

    plan = plan_batch(config)
    for line in plan.lines():
        _emit(out, line)
    _emit(out, plan.summary())
    if args.stats:
        for line in batch_stats(tagger, args.model, config, opts, plan).lines():
            _emit(out, line)
    return EXIT_FAILED if plan.failures else EXIT_OK


class _ProgressReporter:
    """A tqdm bar on a terminal; otherwise a quiet line every few seconds (logs, CI, pipes)."""

    def __init__(self, stream: TextIO, every_s: float = 5.0) -> None:
        self.stream = stream
        self.every_s = every_s
        self.bar: Any = None
        self.last = 0.0
        self.tty = stream.isatty()

    def __call__(self, p: Any) -> None:
        import time

        if self.tty:
            if self.bar is None:
                try:
                    from tqdm import tqdm
                except ImportError:
                    self.tty = False
                else:
                    self.bar = tqdm(total=p.total, unit="img", file=self.stream, dynamic_ncols=True)
            if self.bar is not None:
                self.bar.n = p.done
                self.bar.set_postfix(tagged=p.tagged, skipped=p.skipped, failed=p.failed, refresh=False)
                self.bar.refresh()
                return
        now = time.monotonic()
        if p.done == p.total or now - self.last >= self.every_s:
            self.last = now
            eta = f", eta {p.eta:.0f} s" if p.eta is not None else ""
            self.stream.write(f"{p.done}/{p.total} images ({p.rate:.2f}/s{eta}), {p.failed} failed\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_dataset(args: argparse.Namespace, out: TextIO) -> int:
    from tagger.batch import BatchConfig
    from tagger.dataset import DatasetConfig, parse_actors, run_dataset
    from tagger.engine import Tagger

    try:
        actors = parse_actors(args.actors) if args.actors else None
    except ValueError as e:
        _print_err(f"error: {e}")
        return EXIT_USAGE
    file_flags = [args.output_dir, args.json, args.existing, args.no_backup, args.backup_dir,
                  args.filename_format != "[name].txt", args.caption_from != "tags"]  # fmt: skip
    if any(file_flags) and not args.captions:
        _print_err(
            "error: --output-dir, --filename-format, --existing, --json, --no-backup, --backup-dir and --caption-from "
            "are for caption files: add --captions"
        )
        return EXIT_USAGE
    captions = None
    if args.captions:
        captions = BatchConfig(
            inputs=[],
            output_dir=Path(args.output_dir) if args.output_dir else None,
            filename_format=args.filename_format,
            existing=args.existing or "skip",
            json_sidecar=args.json,
            embeddings=args.embeddings,
            escape=bool(args.escape),
            backup=not args.no_backup,
            backup_dir=Path(args.backup_dir) if args.backup_dir else None,
            caption_from=args.caption_from,
        )
    # As cmd_tag: the flags over the model's own defaults (from its catalog entry or its files here; nothing is
    # downloaded for it), and the caption text plain unless --escape, as caption files are.
    base = Tagger(args.models_dir, "cpu", download=False).default_options(args.model)
    options = replace(options_from_args(args, base), escape=bool(args.escape))
    cfg = DatasetConfig(
        sources=list(args.sources), output=args.output, model=args.model, options=options,
        models_dir=args.models_dir, device=args.device, download=not args.offline, batch_size=args.batch_size,
        actors=actors, threads=args.threads, gpus_per_actor=args.gpus_per_actor, rows_per_file=args.rows_per_file,
        address=args.address, captions=captions, embeddings=args.embeddings, path_column=args.path_column,
    )  # fmt: skip
    try:
        s = run_dataset(cfg, say=_print_err)
    except KeyboardInterrupt:
        _print_err("interrupted: every file in OUT so far is complete; run the same command again to resume")
        return 130
    extra = f", captions written again for {s.recaptioned}" if s.recaptioned else ""
    extra += f", {s.replaced} changed images re-tagged" if s.replaced else ""
    extra += f", {s.duplicates} duplicate rows removed" if s.duplicates else ""
    extra += f"; {s.backups} earlier captions kept as backups" if s.backups else ""
    _print_err(
        f"tagged {s.tagged}, skipped {s.skipped} (already in OUT), failed {s.failed}{extra} in {s.elapsed:.1f} s "
        f"({s.images_per_s:.2f} images/s) -> {s.output}"
    )
    if s.failures:
        _print_err(f"failed (all in {s.output.rstrip('/')}/_errors):")
        for key, reason in s.failures[:20]:
            _print_err(f"  {key}: {reason}")
        if len(s.failures) > 20:
            _print_err(f"  ... and {len(s.failures) - 20} more")
    return EXIT_FAILED if s.failed else EXIT_OK


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    from tagger.server import load_auth, serve

    try:
        serve(
            host=args.host, port=args.port, models_dir=args.models_dir, device=args.device,
            auth=load_auth(args.auth, args.auth_file), insecure_no_auth=args.insecure_no_auth,
            batch_roots=args.batch_root,
        )  # fmt: skip
    except ImportError as e:
        _print_err(f"error: the page needs the ui and api extras ({e.name} is missing): pip install -e '.[ui,api]'")
        return EXIT_USAGE
    return EXIT_OK


def cmd_quantize(args: argparse.Namespace, out: TextIO) -> int:
    from tagger.engine import Tagger
    from tagger.quantize import int8_name, quantize_model, validate_quantized

    models_dir = paths.models_dir(args.models_dir)
    target = models_dir / (args.out or int8_name(args.name))
    if target.exists() and not args.force and args.validate:
        _print_err(f"using the existing int8 copy {target} (--force makes it again)")
    else:
        target = quantize_model(
            args.name, models_dir, out_name=args.out, overwrite=args.force, download=not args.offline
        )
        _emit(out, f"int8 model written to {target}; use it with --model {target.name}")
    if not args.validate:
        return EXIT_OK
    tagger = Tagger(models_dir, args.device, download=not args.offline, progress=sys.stderr.isatty())
    report = validate_quantized(
        tagger,
        args.name,
        target.name,
        args.validate,
        options_from_args(args, tagger.default_options(args.name)),
        recursive=args.recursive,
        limit=args.limit,
    )
    _emit(out, report.summary())
    return EXIT_OK if report.images else EXIT_FAILED


def cmd_devices(args: argparse.Namespace, out: TextIO) -> int:
    from tagger import backends
    from tagger.engine import Tagger
    from tagger.runtime import Device, installed_runtimes
    from tagger.validate import Side, compare

    for line in backends.describe_machine(installed_runtimes()):
        _emit(out, line)
    if not args.name:
        if args.validate:
            _print_err("devices --validate: name the model to compare (python -m tagger devices NAME --validate DIR)")
            return EXIT_USAGE
        return EXIT_OK
    models_dir = paths.models_dir(args.models_dir)
    if not args.validate:
        loaded = Tagger(models_dir, "auto", download=not args.offline, progress=sys.stderr.isatty()).load(args.name)
        _emit(out, f"auto runs {loaded.name} on {loaded.provider_label} ({loaded.threads} threads)")
        if loaded.device_note:
            _emit(out, f"  {loaded.device_note}")
        choices = backends.Choices(loaded.files, loaded.threads)
        verdict = choices.get() if backends.auto_candidates() else None
        if verdict is not None:
            _emit(out, f"  checked once here: {verdict.reason} (stored in {choices.path}; delete it to check again)")
        return EXIT_OK
    sides = []
    for text in (args.against, args.device):
        device = Device.parse(text)
        tagger = Tagger(models_dir, str(device), download=not args.offline, progress=sys.stderr.isatty())
        loaded = tagger.load(args.name)
        if loaded.device_note:
            _print_err(loaded.device_note)
        sides.append(Side(tagger, args.name, f"{device} ({loaded.provider_label})"))
    report = compare(sides[0], sides[1], args.validate, options_from_args(args, sides[0].tagger.default_options(args.name)),
                     recursive=args.recursive, limit=args.limit)  # fmt: skip
    _emit(out, report.summary())
    return EXIT_OK if report.images else EXIT_FAILED


def cmd_cache(args: argparse.Namespace, out: TextIO) -> int:
    from tagger.cache import CacheUnavailable, ProbCache, cache_file

    path = cache_file(paths.cache_path(args.cache))
    if not path.exists():
        what = "nothing to clear" if args.action == "clear" else "nothing cached yet"
        _emit(out, f"{path}: no probability cache there ({what})")
        return EXIT_OK
    cache = ProbCache(path)
    try:
        if args.action == "clear":
            _emit(out, f"removed {cache.clear()} entries from {cache.path}")
            return EXIT_OK
        st = cache.stats()
    except CacheUnavailable as e:
        _print_err(f"error: probability cache {path} cannot be used: {e}")
        return EXIT_FAILED
    finally:
        cache.close()
    _emit(out, f"{st['path']}: {st['entries']} entries, {int(st['bytes']) / 1e6:.1f} MB")  # type: ignore[call-overload]
    for m in st["models"]:  # type: ignore[attr-defined]
        _emit(out, f"  {m}")
    return EXIT_OK


def cmd_models(args: argparse.Namespace, out: TextIO) -> int:
    from tagger import hub

    models_dir = paths.models_dir(args.models_dir)
    if args.action == "download":
        if not args.name:
            _print_err("models download: name the model to download (see: python -m tagger models)")
            return EXIT_USAGE
        files = hub.download_model(args.name, models_dir, progress=sys.stderr.isatty())
        _emit(out, f"{files.name}: {files.model_path.parent}")
        return EXIT_OK
    _emit(out, f"models folder: {models_dir}")
    for m in hub.list_models(models_dir):
        state = "downloaded" if m.downloaded else "not downloaded"
        size = f"{m.size_bytes / 1e6:.0f} MB" if m.size_bytes else ""
        where = m.repo_id or str(m.path)
        _emit(out, f"  {m.name:32} {m.family:5} {state:15} {size:>8}  {where}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    out = out or sys.stdout
    handlers = {
        "tag": cmd_tag, "dataset": cmd_dataset, "models": cmd_models, "cache": cmd_cache, "serve": cmd_serve,
        "quantize": cmd_quantize, "devices": cmd_devices,
    }  # fmt: skip
    try:
        return handlers[args.command](args, out)
    except OptionsError as e:
        _print_err(f"error: option {e}")
        return EXIT_USAGE
    except TaggerError as e:
        _print_err(f"error: {e}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _print_err("interrupted")
        return 130
