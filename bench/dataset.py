"""The Ray benchmark of issue 11: what ``dataset`` on Ray costs next to ``tag DIR``, and how it scales with actors.

Run from any folder of an install with the ``bench`` and ``ray`` extras::

    python -m bench.dataset                  # 512 images; ViT-B scaling on 64 images; 3 rounds
    python -m bench.dataset --quick          # a smoke run: 24 images, the trivial model for scaling too, 1 round
    python -m bench.dataset --device cuda --actors-scaling 1,2,4,8 --gpus-per-actor 1   # on a GPU node

Two figures, each from fresh processes, interleaved over the rounds (medians shown):

1. Overhead: the same images (the trivial stand-in model, so that the pipeline is the whole cost, as on a fast
   GPU) through ``tag DIR`` and through ``dataset`` on this machine, as wall time of the command: ``dataset``
   once starting its own Ray (what a user runs) and once joining a Ray already running (a cluster). Target: the
   second within 1.3x of ``tag DIR``.
2. Scaling: the ViT-B stand-in through ``dataset`` with 1 actor x 1 thread and with N actors x 1 thread each,
   images per second as the command reports it (after Ray is up). Target: 2 actors >= 1.8x of 1.

The stand-in models and images come from ``bench/models.py`` and ``bench/images.py`` (built once, cached).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import images as bench_images
from bench import models as bench_models

REPO = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"tagged (\d+), skipped (\d+).*? in ([\d.]+) s \(([\d.]+) images/s\)")


@dataclass
class Config:
    images: int = 512
    unique: int = 64  # distinct files behind the links of the overhead set (generating 512 large images is slow)
    scaling_images: int = 64  # the actors' start (model load) is in the time: enough images to amortise it
    scaling_model: str = "vit"
    actors: tuple[int, ...] = (1, 2)
    parts: tuple[str, ...] = ("overhead", "scaling")
    rounds: int = 3
    device: str = "cpu"
    gpus_per_actor: float | None = None
    batch_size: int | None = None
    cpus: int | None = None  # logical CPUs of the Ray the benchmark starts (default: max(4, this machine's))
    cache: Path | None = None
    markdown: Path | None = None
    argv: tuple[str, ...] = ()


@dataclass
class Run:
    wall_s: float
    tagged: int
    elapsed_s: float  # as the command reports it (tag: the batch; dataset: after Ray is up)
    images_per_s: float


@dataclass
class Results:
    config: Config
    runs: dict[str, list[Run]] = field(default_factory=dict)
    machine: str = ""
    load: tuple[float, float] = (0.0, 0.0)

    def add(self, name: str, run: Run) -> None:
        self.runs.setdefault(name, []).append(run)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def command(args: list[str], env: dict[str, str] | None = None) -> Run:
    """Run ``python -m tagger ARGS`` in a fresh process; its wall time and the summary line it prints."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tagger", *args], cwd=REPO, env=full_env, capture_output=True,
                          text=True, check=False)  # fmt: skip
    wall = time.perf_counter() - start
    found = SUMMARY.search(proc.stderr)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"python -m tagger {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    tagged, _, elapsed, rate = found.groups()
    return Run(wall, int(tagged), float(elapsed), float(rate))


def run(cfg: Config) -> Results:
    import ray

    res = Results(cfg, machine=_machine())
    models_dir = (cfg.cache or bench_models.cache_dir()) / "models"
    for name in {"trivial", cfg.scaling_model}:
        bench_models.ensure_model(name, models_dir, log=log)
    unique = bench_images.ensure_images(min(cfg.unique, cfg.images), bench_images.images_dir(cfg.cache), log=log)
    scaling = bench_images.ensure_images(cfg.scaling_images, bench_images.images_dir(cfg.cache), log=log)
    res.load = (os.getloadavg()[0], 0.0)
    with tempfile.TemporaryDirectory(prefix="tagger-bench-ray-") as tmp:
        work = Path(tmp)
        overhead = bench_images.link_folder(unique, work / "overhead", cfg.images)
        scale_dir = bench_images.link_folder(scaling, work / "scaling", cfg.scaling_images)
        cpus = cfg.cpus or max(4, os.cpu_count() or 1)
        log(f"starting Ray on this machine with {cpus} logical CPUs (the drivers below join it)")
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, configure_logging=False)
        address = ray.get_runtime_context().gcs_address
        device = ["--device", cfg.device] + (["--gpus-per-actor", str(cfg.gpus_per_actor)] if cfg.gpus_per_actor
                                             is not None else [])  # fmt: skip
        batch = ["--batch-size", str(cfg.batch_size)] if cfg.batch_size else []
        common = ["--models-dir", str(models_dir), *batch]
        no_ray = {"RAY_ADDRESS": ""}
        try:
            for r in range(cfg.rounds):
                log(f"round {r + 1}/{cfg.rounds}")
                out = work / f"r{r}"
                tag_dir = ["tag", str(overhead), "--output-dir", str(out / "captions"), "--no-cache"]
                own = ["dataset", str(overhead), "-o", str(out / "own"), *device]
                joined = ["dataset", str(overhead), "-o", str(out / "joined"), "--address", address, *device]
                trivial = ["--model", "trivial", *common]
                variants = []
                if "overhead" in cfg.parts:
                    variants += [("tag DIR", tag_dir + trivial), ("dataset, own Ray", own + trivial),
                                 ("dataset, joined Ray", joined + trivial)]  # fmt: skip
                for actors in cfg.actors if "scaling" in cfg.parts else ():
                    scale = ["dataset", str(scale_dir), "-o", str(out / f"scale{actors}"), "--address", address,
                             "--actors", str(actors), "--threads", "1", "--model", cfg.scaling_model]  # fmt: skip
                    variants.append((f"scaling {actors}", scale + common + device))
                for name, args in variants[r % len(variants) :] + variants[: r % len(variants)]:
                    result = command(args, env=no_ray if "own" in name else None)
                    log(f"  {name}: {result.wall_s:.1f} s wall, {result.images_per_s:.2f} images/s")
                    res.add(name, result)
        finally:
            ray.shutdown()
    res.load = (res.load[0], os.getloadavg()[0])
    return res


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _ratio(res: Results, a: str, b: str, key: str) -> tuple[float, float, float]:
    """The median of the per-round ratios a/b of ``key``, with their range."""
    pairs = zip(res.runs.get(a, []), res.runs.get(b, []), strict=False)
    ratios = [getattr(x, key) / getattr(y, key) for x, y in pairs if getattr(y, key) > 0]
    if not ratios:
        return float("nan"), float("nan"), float("nan")
    return _median(ratios), min(ratios), max(ratios)


def report(res: Results) -> str:
    cfg = res.config
    lines = [
        "# Ray benchmark (issue 11)",
        "",
        f"`python -m bench.dataset {' '.join(cfg.argv)}`".replace(" `", "`"),
        "",
        f"Machine: {res.machine}. Load average {res.load[0]:.1f} before, {res.load[1]:.1f} after. Medians of "
        f"{cfg.rounds} interleaved round(s).",
        "",
        "| run | images | wall s | images/s (command's own) |",
        "|---|---:|---:|---:|",
    ]
    for name, runs in res.runs.items():
        model = "trivial" if not name.startswith("scaling") else cfg.scaling_model
        lines.append(
            f"| {name} ({model}) | {runs[0].tagged} | {_median([r.wall_s for r in runs]):.1f} | "
            f"{_median([r.images_per_s for r in runs]):.2f} |"
        )
    lines += ["", "| figure | target | measured (range) | holds |", "|---|---|---:|---|"]
    for variant in ("dataset, own Ray", "dataset, joined Ray") if "overhead" in cfg.parts else ():
        med, low, high = _ratio(res, variant, "tag DIR", "wall_s")
        holds = "yes" if med <= 1.3 else "no"
        lines.append(f"| wall time, {variant} / tag DIR | <= 1.3 | {med:.2f}x ({low:.2f}-{high:.2f}) | {holds} |")
    base = f"scaling {cfg.actors[0]}"
    for actors in cfg.actors[1:] if "scaling" in cfg.parts else ():
        med, low, high = _ratio(res, f"scaling {actors}", base, "images_per_s")
        target = 0.9 * actors / cfg.actors[0]
        holds = "yes" if med >= target else "no"
        lines.append(
            f"| images/s, {actors} actors x 1 thread / {cfg.actors[0]} x 1 ({cfg.scaling_model}) | >= {target:.1f} | "
            f"{med:.2f}x ({low:.2f}-{high:.2f}) | {holds} |"
        )
    return "\n".join(lines) + "\n"


def _machine() -> str:
    from bench.run import _machine as machine

    try:
        import ray

        return f"{machine()}, ray {ray.__version__}"
    except ImportError:
        return machine()


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="python -m bench.dataset", description="The Ray benchmark (issue 11).")
    p.add_argument("--quick", action="store_true", help="a smoke run: 24 images, trivial model for scaling, 1 round")
    p.add_argument("--images", type=int, help="images through tag DIR and dataset (default 512)")
    p.add_argument("--scaling-images", type=int, help="images of the scaling runs (default 64)")
    p.add_argument("--scaling-model", choices=bench_models.MODEL_NAMES, help="stand-in of the scaling runs (vit)")
    p.add_argument("--actors-scaling", help="actor counts compared, the first the base (default 1,2)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    p.add_argument("--parts", default="overhead,scaling", help="what to measure (default overhead,scaling)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda: the dataset runs' --device")
    p.add_argument("--gpus-per-actor", type=float, help="the dataset runs' --gpus-per-actor")
    p.add_argument("--batch-size", type=int, help="images per model run (default: the engine's)")
    p.add_argument("--cpus", type=int, help="logical CPUs of the Ray started here (default max(4, CPUs))")
    p.add_argument("--cache", type=Path, help="cache folder (default $TAGGER_BENCH_CACHE or ~/.cache/...)")
    p.add_argument("--markdown", type=Path, help="also write the tables to this file")
    a = p.parse_args(argv)
    cfg = Config()
    if a.quick:
        cfg.images, cfg.unique, cfg.scaling_images, cfg.scaling_model, cfg.rounds = 24, 8, 8, "trivial", 1
    cfg.images = a.images or cfg.images
    cfg.scaling_images = a.scaling_images or cfg.scaling_images
    cfg.scaling_model = a.scaling_model or cfg.scaling_model
    cfg.rounds = a.rounds or cfg.rounds
    if a.actors_scaling:
        cfg.actors = tuple(int(x) for x in a.actors_scaling.split(","))
    cfg.device, cfg.gpus_per_actor, cfg.batch_size, cfg.cpus = a.device, a.gpus_per_actor, a.batch_size, a.cpus
    cfg.cache, cfg.markdown = a.cache, a.markdown
    cfg.parts = tuple(x.strip() for x in a.parts.split(",") if x.strip())
    if not cfg.parts or set(cfg.parts) - {"overhead", "scaling"}:
        p.error("--parts takes overhead, scaling or both")
    cfg.argv = tuple(sys.argv[1:] if argv is None else argv)
    return cfg


def main(argv: list[str] | None = None) -> int:
    try:
        import ray  # noqa: F401
    except ImportError:
        log("the Ray benchmark needs the ray extra: pip install -e '.[bench,ray]'")
        return 2
    cfg = parse_args(argv)
    text = report(run(cfg))
    print(text)
    if cfg.markdown:
        cfg.markdown.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
