"""The backends benchmark of issue 14: OpenVINO's bf16 (and fp32) against ONNX Runtime's fp32 on the CPU.

Run from any folder of an install with the ``bench`` and ``openvino`` extras::

    python -m bench.backends                     # ViT-B and SwinV2-B stand-ins, 8 images, 3 rounds
    python -m bench.backends --quick             # a smoke run (2 images, 1 round): the path, not the speed
    python -m bench.backends --markdown FILE     # also write the report there

Speed: for each model, rounds of fresh-process runs of the production path (``bench/worker.py``'s ``ours``,
through ``bench.run``'s Measurer: a quiet machine first, disturbed runs re-run) on the devices ``cpu`` (ONNX
Runtime fp32), ``cpu-bf16`` (OpenVINO with bf16 inference precision) and ``openvino`` (OpenVINO fp32), their
order rotating each round; the table gives medians, each ratio is the median of the per-round ratios.

Agreement: in this process, the same images tagged through ``cpu`` and through ``cpu-bf16`` by the engine's own
comparison (``tagger.validate.compare``, general threshold 0.35): the largest probability difference and whether
every image gets the same tags.

A CPU without bf16 units (no ``avx512_bf16`` or ``amx_bf16``) is named as such, and only OpenVINO fp32 is
measured, against ONNX Runtime fp32, speed and agreement alike.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import images as bench_images
from bench import models as bench_models
from bench.run import Config, Measurer, Results, _fmt, _holds, _machine, _median, _rotate, ratio_text, round_ratios
from tagger.backends import cpu_bf16_units, openvino_version
from tagger.engine import Tagger
from tagger.options import TagOptions
from tagger.validate import Side, ValidationReport, compare

DEVICES = {"cpu": "ONNX Runtime fp32", "cpu-bf16": "OpenVINO bf16", "openvino": "OpenVINO fp32"}
BASE = "cpu"  # every ratio and every agreement figure is against ONNX Runtime fp32
SPEED_TARGET = 2.0  # OpenVINO bf16 / ONNX Runtime fp32 images/s, on the heavy models (issue 14)
SPEED_TARGET_MODELS = ("vit", "swinv2")
MAX_DIFF = 0.01  # largest probability difference allowed against fp32
THRESHOLD = 0.35  # general threshold of the tag comparison
INSTALL = "pip install -e '.[openvino]'"


@dataclass
class Agreement:
    """One model's answers through ``device`` against ONNX Runtime fp32 (``tagger.validate.compare``'s report)."""

    device: str
    provider: str  # what really ran, as the engine reports it
    report: ValidationReport

    @property
    def holds(self) -> bool:
        r = self.report
        return r.images > 0 and r.identical_tag_sets == r.images and r.rating_agreement == 1.0


@dataclass
class Outcome:
    results: Results  # bench.run's: runs keyed (model, device)
    devices: tuple[str, ...]
    bf16_units: bool
    agreement: dict[str, Agreement] = field(default_factory=dict)  # by model


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def devices_for(bf16_units: bool) -> tuple[str, ...]:
    """The devices measured: bf16 only where the CPU has units for it (elsewhere OpenVINO runs it in fp32)."""
    return ("cpu", "cpu-bf16", "openvino") if bf16_units else ("cpu", "openvino")


def run(cfg: Config) -> Outcome:
    log = cfg.log
    cache = Path(cfg.cache).expanduser() if cfg.cache else bench_models.cache_dir()
    start = time.perf_counter()
    res = Results(cfg, started=dt.datetime.now().strftime("%Y-%m-%d %H:%M"), load_before=os.getloadavg())
    bf16 = cpu_bf16_units()
    out = Outcome(res, devices_for(bf16), bf16)
    if not bf16:
        log("this CPU has no bf16 units: measuring OpenVINO fp32 against ONNX Runtime fp32 only")
    models_dir = cache / "models"
    for name in cfg.models:
        bench_models.ensure_model(name, models_dir, log=log)
    paths = bench_images.ensure_images(cfg.images, bench_images.images_dir(cache), log=log)
    res.image_set = bench_images.describe(paths)

    measure = Measurer(cfg, res, models_dir)
    with tempfile.TemporaryDirectory(prefix="wd14-bench-backends-") as tmp:
        folder = bench_images.link_folder(paths, Path(tmp) / "set", cfg.images)
        for r in range(cfg.rounds):
            for model in cfg.models:
                for device in _rotate(out.devices, r):  # one model's backends back to back, order rotating
                    result = measure("ours", model, folder, device=device)
                    res.add(model, device, result)
                    log(f"[round {r + 1}/{cfg.rounds}] {bench_models.TITLES.get(model, model):10s} "
                        f"{DEVICES[device]:17s} {result['images_per_s']:7.2f} images/s  ran on {result['provider']}")  # fmt: skip
        compared = "cpu-bf16" if bf16 else "openvino"
        for model in cfg.models:
            a = out.agreement[model] = agreement(models_dir, model, folder, compared)
            log(f"[agreement] {bench_models.TITLES.get(model, model)}: {a.report.summary()}")
    res.load_after = os.getloadavg()
    res.elapsed_s = time.perf_counter() - start
    return out


def agreement(models_dir: Path, model: str, folder: Path, device: str) -> Agreement:
    """``folder`` tagged through ONNX Runtime fp32 and through ``device``: the engine's own comparison (the one
    ``python -m tagger devices --validate`` prints), with no probability cache on either side."""
    base, other = (Tagger(models_dir, device=d, download=False, progress=False) for d in (BASE, device))
    try:
        report = compare(Side(base, model, DEVICES[BASE]), Side(other, model, DEVICES[device]), folder,
                         TagOptions(general_threshold=THRESHOLD))  # fmt: skip
        provider = ", ".join(m.provider_label for m in other.loaded())
    finally:
        base.unload_all()
        other.unload_all()
    if report.failures:
        raise RuntimeError(f"{model} on {device}: {report.failures[0]}")
    if report.worst_image:  # the generated file behind the folder's link, which goes with the folder
        report.worst_image = str(Path(report.worst_image).resolve())
    return Agreement(device, provider, report)


# -- reporting ----------------------------------------------------------------------------------------------


def _ratio(res: Results, model: str, device: str) -> tuple[float | None, str]:
    """``device`` / ONNX Runtime fp32 images/s: the median of the per-round ratios, with their range."""
    return ratio_text(round_ratios(res, (model, device), (model, BASE)))


def report(out: Outcome) -> str:
    res, cfg = out.results, out.results.config
    lines = ["# Backends benchmark (issue 14)", "", f"`python -m bench.backends {' '.join(cfg.argv)}`".replace(" `", "`"), ""]  # fmt: skip
    lines.append(
        f"Measured {res.started} in {res.elapsed_s / 60:.1f} min: {_machine()}, OpenVINO {openvino_version()}."
    )
    if out.bf16_units:
        lines.append("This CPU has bf16 units (avx512_bf16 or amx_bf16): `cpu-bf16` runs OpenVINO with bf16 "
                     "inference precision.")  # fmt: skip
    else:
        lines.append("**This CPU has no bf16 units** (neither avx512_bf16 nor amx_bf16 among its flags): bf16 "
                     "gains nothing here, so only OpenVINO fp32 is measured against ONNX Runtime fp32 and the "
                     "bf16 targets are not measured.")  # fmt: skip
    lines.append(f"Load average before/after: {res.load_before[0]:.2f} / {res.load_after[0]:.2f}.")
    sizes = sorted({r["batch_size"] for runs in res.runs.values() for r in runs})
    lines.append(f"Images: {res.image_set}. Each run is a fresh process tagging the folder the production way "
                 f"(`tag DIR`'s path, batch size {', '.join(map(str, sizes)) or '—'}); {cfg.rounds} "
                 f"round{'s' if cfg.rounds != 1 else ''}, backends interleaved, medians.")  # fmt: skip
    shares = [r["foreign_cpu"] for runs in res.runs.values() for r in runs if r.get("foreign_cpu") is not None]
    if shares:
        lines.append(f"Other programs' share of the machine during the runs: median {statistics.median(shares):.1%}, "
                     f"at most {max(shares):.1%}; {res.reruns} runs re-run because of it, {res.contaminated} kept "
                     f"above {cfg.max_foreign:.0%}.")  # fmt: skip
    lines += ["", "| model | backend | ran on | images/s | s/image | load + warm-up (s) | peak RSS (MB) | CPU s/image "
              "| other programs |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for (model, device), runs in res.runs.items():
        ips = _median([r["images_per_s"] for r in runs])
        foreign = _median([r.get("foreign_cpu") for r in runs])
        lines.append(
            f"| {bench_models.TITLES.get(model, model)} | {DEVICES[device]} | "
            f"{', '.join(sorted({r['provider'] for r in runs}))} | {_fmt(ips)} | {_fmt(1 / ips if ips else None)} | "
            f"{_fmt(_median([r['session_s'] + r.get('warmup_s', 0.0) for r in runs]), 1)} | "
            f"{_fmt(_median([r['peak_rss_mb'] for r in runs]), 0)} | "
            f"{_fmt(_median([r['cpu_s_per_image'] for r in runs]), 3)} | "
            f"{'—' if foreign is None else f'{foreign:.0%}'} |"
        )
    lines += ["", f"Agreement with ONNX Runtime fp32 (`tagger.validate.compare`, as `python -m tagger devices "
              f"--validate`): every image through both, tags at general {THRESHOLD} and character 0.85:", "",
              "| model | backend | ran on | images | largest probability difference | mean difference | same tags "
              "| same top rating | lowest tag F1 |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for model, a in out.agreement.items():
        r = a.report
        lines.append(f"| {bench_models.TITLES.get(model, model)} | {DEVICES[a.device]} | {a.provider} | {r.images} | "
                     f"{r.max_abs_diff:.4f} | {r.mean_abs_diff:.6f} | {r.identical_tag_sets} | "
                     f"{r.rating_agreement:.0%} | {r.min_f1:.3f}{f' ({Path(r.worst_image).name})' if r.worst_image else ''} |")  # fmt: skip
    lines += ["", "| figure | target | measured | holds |", "|---|---|---:|---|"]
    lines += _target_rows(out)
    return "\n".join(lines) + "\n"


def _target_rows(out: Outcome) -> list[str]:
    rows = []
    for model in out.results.config.models:
        title = bench_models.TITLES.get(model, model)
        has_target = model in SPEED_TARGET_MODELS
        target = f">= {SPEED_TARGET:g}x" if has_target else "— (pipeline-bound model: no target)"
        if "cpu-bf16" in out.devices:
            value, shown = _ratio(out.results, model, "cpu-bf16")
            holds = _holds(value, SPEED_TARGET) if has_target else "—"
            rows.append(f"| {title}: OpenVINO bf16 / ONNX Runtime fp32, images/s | {target} | {shown} | {holds} |")
        else:
            rows.append(f"| {title}: OpenVINO bf16 / ONNX Runtime fp32, images/s | {target} | not measured: no bf16 "
                        "units on this CPU | — |")  # fmt: skip
        rows.append(f"| {title}: OpenVINO fp32 / ONNX Runtime fp32, images/s | — (no target) | "
                    f"{_ratio(out.results, model, 'openvino')[1]} | — |")  # fmt: skip
        a = out.agreement.get(model)
        if a is None:
            continue
        r = a.report
        versus = f"{DEVICES[a.device]} ({a.provider}) vs ONNX Runtime fp32"
        rows.append(f"| {title}: largest probability difference, {versus} | <= {MAX_DIFF} | {r.max_abs_diff:.4f} | "
                    f"{_holds(r.max_abs_diff, MAX_DIFF, higher=False)} |")  # fmt: skip
        shown = f"same on {r.identical_tag_sets} of {r.images} images, top rating on {r.rating_agreement:.0%}"
        rows.append(f"| {title}: tags at {THRESHOLD}, {versus} | identical on every image | {shown} | "
                    f"{'yes' if a.holds else '**no**'} |")  # fmt: skip
    return rows


# -- command line -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="python -m bench.backends",
                                description="OpenVINO bf16 and fp32 against ONNX Runtime fp32 on the CPU (issue 14).")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 images, 1 round")
    p.add_argument("--models", default="vit,swinv2",
                   help=f"comma-separated, of {', '.join(bench_models.MODEL_NAMES)} (default vit,swinv2)")  # fmt: skip
    p.add_argument("--images", type=int, help="images tagged per run (default 8; quick 2)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 1)")
    p.add_argument(
        "--cache", type=Path, help="cache folder (default $TAGGER_BENCH_CACHE or ~/.cache/wd14-tagger-bench)"
    )
    p.add_argument("--markdown", type=Path, help="also write the report to this file")
    p.add_argument("--no-wait", action="store_true", help="do not wait for other programs to go quiet, never re-run")
    a = p.parse_args(argv)
    names = tuple(m.strip() for m in a.models.split(",") if m.strip())
    unknown = [m for m in names if m not in bench_models.MODEL_NAMES]
    if unknown or not names:
        p.error(
            f"unknown model(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(bench_models.MODEL_NAMES)}"
        )
    for name, value in (("--images", a.images), ("--rounds", a.rounds)):
        if value is not None and value < 1:
            p.error(f"{name} must be at least 1")
    cfg = Config(models=names, images=8, rounds=3, cache=a.cache, markdown=a.markdown, log=_log)
    if a.quick:
        cfg.images, cfg.rounds, cfg.retries, cfg.quiet_wait, cfg.noise_budget = 2, 1, 1, 5.0, 30.0
    cfg.images = a.images or cfg.images
    cfg.rounds = a.rounds or cfg.rounds
    if a.no_wait:
        cfg.retries, cfg.quiet_wait = 0, 0.0
    cfg.argv = tuple(sys.argv[1:] if argv is None else argv)
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    if openvino_version() is None:
        print(f"OpenVINO is not installed, and this benchmark measures it: {INSTALL}", file=sys.stderr)
        return 2
    text = report(run(cfg))
    print(text)
    if cfg.markdown:
        cfg.markdown.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
