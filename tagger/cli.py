"""Command line: ``python -m tagger tag|models|serve ...``. Exit 0 ok, 1 some images failed, 2 usage/model."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from tagger import __version__, paths
from tagger.catalog import DEFAULT_MODEL
from tagger.errors import ImageError, OptionsError, TaggerError
from tagger.options import TagOptions, parse_category_thresholds, parse_tag_list

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

TAG_EXAMPLES = """\
examples:
  python -m tagger tag photo.png                       # prompt for one image
  python -m tagger tag a.jpg b.png --format json       # one JSON object per image
  python -m tagger tag img.png --model wd-vit-tagger-v3 --general-threshold 0.3 --exclude "solo, 1girl"
  python -m tagger tag img.png --model ./my-model-folder --device cuda
  python -m tagger tag dataset/ -r                     # caption files beside every image, resumable
  python -m tagger tag dataset/ --output-dir captions --existing append --json
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", metavar="DIR", help="models folder (default: $TAGGER_MODELS_DIR or per-user)")
    p.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")


def _add_tag_options(p: argparse.ArgumentParser) -> None:
    d = TagOptions()
    g = p.add_argument_group("tag options")
    g.add_argument(
        "--general-threshold",
        type=float,
        default=None,
        metavar="F",
        help=f"minimum probability of a general tag (default: the model's own, else {d.general_threshold})",
    )
    g.add_argument(
        "--character-threshold",
        type=float,
        default=None,
        metavar="F",
        help=f"minimum probability of a character tag (default: the model's own, else {d.character_threshold})",
    )
    g.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="CATEGORY=F",
        dest="category_thresholds",
        help="minimum probability in another category the model has (copyright=0.5, artist=0.4, meta=0.6...; "
        "repeatable; default: the model's own, else the character threshold for copyright and artist and the "
        "general one for the others)",
    )
    g.add_argument(
        "--exclude-categories",
        default="",
        metavar="LIST",
        help="comma-separated categories never output, e.g. artist,meta (the model's categories: see --format json)",
    )
    g.add_argument("--mcut", action="store_true", help="pick both thresholds by MCut (largest gap)")
    g.add_argument("--general-mcut", action="store_true", help="MCut for general tags only")
    g.add_argument("--character-mcut", action="store_true", help="MCut for character tags only")
    g.add_argument("--add", default="", metavar="TAGS", help="comma-separated tags put first in every prompt")
    g.add_argument("--exclude", default="", metavar="TAGS", help="comma-separated tags never output")
    g.add_argument("--sort", choices=("confidence", "alpha"), default=d.sort, help="tag order")
    g.add_argument("--max-tags", type=int, default=0, metavar="N", help="most model tags per prompt (0: all)")
    g.add_argument("--weights", action="store_true", help="write tags as (tag:0.95)")
    g.add_argument("--keep-underscores", action="store_true", help="keep long_hair instead of 'long hair'")
    g.add_argument("--no-escape", action="store_true", help="do not backslash-escape ( ) [ ] \\")
    g.add_argument("--rating", action="store_true", help="put the top rating first in the prompt")  # fmt: skip


def options_from_args(args: argparse.Namespace, base: TagOptions | None = None) -> TagOptions:
    """The options the flags give; a threshold not given is ``base``'s (the model's defaults)."""
    base = base or TagOptions()
    given = dict(base.category_thresholds)
    given.update(parse_category_thresholds(",".join(args.category_thresholds)))
    return TagOptions(
        general_threshold=base.general_threshold if args.general_threshold is None else args.general_threshold,
        character_threshold=base.character_threshold if args.character_threshold is None else args.character_threshold,
        category_thresholds=given,
        exclude_categories=parse_tag_list(args.exclude_categories),
        general_mcut=args.mcut or args.general_mcut,
        character_mcut=args.mcut or args.character_mcut,
        additional_tags=parse_tag_list(args.add),
        exclude_tags=parse_tag_list(args.exclude),
        sort=args.sort,
        max_tags=args.max_tags,
        replace_underscores=not args.keep_underscores,
        escape=not args.no_escape,
        weights=args.weights,
        include_rating=args.rating,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tagger", description="WD14 image tagger: images in, Stable Diffusion tag prompts out."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tag = sub.add_parser("tag", help="tag images", epilog=TAG_EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    tag.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    tag.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME|DIR", help=f"model (default {DEFAULT_MODEL})")
    tag.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]", help="where to run (default auto)")
    tag.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="images per model run (default: 1 on CPU, 16 on CUDA, the model's fixed size)",
    )
    tag.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="what to print for images tagged without caption files",
    )
    tag.add_argument("--offline", action="store_true", help="never download; use only files already here")
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
    cap.add_argument("--output-dir", metavar="DIR", help="write captions here, mirroring the input's sub-folders")
    cap.add_argument(
        "--filename-format",
        default="[name].txt",
        metavar="FMT",
        help="caption file name; tokens [name] [extension] [hash:ALGO] (default [name].txt)",
    )
    cap.add_argument(
        "--existing",
        choices=("skip", "overwrite", "append", "prepend"),
        default=None,
        help="what to do with captions that exist (default skip: never touched, image not even read)",
    )
    cap.add_argument("--json", action="store_true", help="also write a .json sidecar with all probabilities")
    cap.add_argument(
        "--embeddings",
        action="store_true",
        help="also write the model's image embedding as a .npy file beside each caption (models with an "
        "embedding output, such as PixAI's)",
    )
    _add_tag_options(tag)
    _common(tag)

    serve = sub.add_parser("serve", help="serve the Tagger page and the HTTP API (standalone, no WebUI)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=7861, help="port (default 7861)")
    serve.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]", help="where to run (default auto)")
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
    quant.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]", help="where to run the comparison")
    quant.add_argument("--offline", action="store_true", help="never download; use only files already here")
    _add_tag_options(quant)
    _common(quant)

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
    batch_flags = args.captions or args.recursive or args.output_dir or args.json or args.existing or args.embeddings
    return bool(batch_flags or args.filename_format != "[name].txt" or any(Path(p).is_dir() for p in args.paths))


def cmd_tag(args: argparse.Namespace, out: TextIO) -> int:
    from tagger.cache import ProbCache, cache_file
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
        return _tag_to_captions(tagger, args, opts)
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
            _emit(out, json.dumps(record, ensure_ascii=False))
        else:
            _emit(out, f"{item.source}: {r.prompt}")
    if failed:
        _print_err(f"{failed} of {len(sources)} images failed")
    return EXIT_FAILED if failed else EXIT_OK


def _tag_to_captions(tagger: Any, args: argparse.Namespace, opts: TagOptions) -> int:
    import threading

    from tagger.batch import BatchConfig, run_batch

    config = BatchConfig(
        inputs=[Path(p) for p in args.paths],
        recursive=args.recursive,
        output_dir=Path(args.output_dir) if args.output_dir else None,
        filename_format=args.filename_format,
        existing=args.existing or "skip",
        json_sidecar=args.json,
        batch_size=args.batch_size,
        embeddings=args.embeddings,
    )
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
    _print_err(
        f"tagged {summary.tagged}, skipped {summary.skipped} (caption exists), failed {summary.failed} "
        f"in {summary.elapsed:.1f} s ({summary.images_per_s:.2f} images/s)"
    )
    if summary.failures:
        _print_err("failed:")
        for path, reason in summary.failures:
            _print_err(f"  {path}: {reason}")
    return EXIT_FAILED if summary.failed else EXIT_OK


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
    handlers = {"tag": cmd_tag, "models": cmd_models, "cache": cmd_cache, "serve": cmd_serve, "quantize": cmd_quantize}
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
