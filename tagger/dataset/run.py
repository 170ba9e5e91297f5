"""The run: joining or starting Ray, planning actors for the cluster, the pipeline, the summary."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagger.batch import BatchConfig, check_config
from tagger.dataset.common import DatasetError, require
from tagger.dataset.output import Holdings, OutputStore, prune_errors, scan_output
from tagger.dataset.sources import Entry, assign_captions, list_sources
from tagger.dataset.stages import Infer, ModelShip, WriteSpec, decode_block, embedding_problem, ship_model, write_block
from tagger.options import TagOptions
from tagger.runtime import available_cpus

log = logging.getLogger(__name__)

FILES_PER_TASK = 16  # listed files per decode task (a shard is a task of its own)
DECODE_MEMORY = 256 * 1024**2  # heap reserved per decode task: a large image decodes into ~100-200 MB
MAX_FAILURES_SHOWN = 100  # failures the summary keeps (OUT/_errors has them all)
# Devices whose actors ask Ray for CPUs only: ONNX Runtime's, and OpenVINO's on the CPU (tagger.backends).
CPU_DEVICES = ("cpu", "cpu-bf16", "openvino")


@dataclass
class DatasetConfig:
    sources: list[str]
    output: str
    model: str
    options: TagOptions = field(default_factory=TagOptions)
    models_dir: str | None = None
    device: str = "auto"  # auto | cuda | cpu | cpu-bf16 | openvino: auto uses the cluster's GPUs when it has any
    download: bool = True
    batch_size: int | None = None  # images per model run (as ``tag``): default 16 on a GPU, 1 on a CPU
    actors: tuple[int, int] | None = None  # (min, max) inference actors; None: one per GPU, else one per node
    threads: int | None = None  # CPU threads (and Ray CPUs) per actor; None: 1 with a GPU, else half a node's
    gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs and the device is not cpu
    rows_per_file: int = 1024
    address: str | None = None  # a Ray cluster to join; None: $RAY_ADDRESS, else a new one on this machine
    captions: BatchConfig | None = None  # also write caption files beside local images, as ``tag DIR``
    embeddings: bool = False
    path_column: str | None = None  # the column of a Parquet/CSV listing that holds the paths


@dataclass
class DatasetSummary:
    tagged: int = 0  # rows added to OUT
    skipped: int = 0  # already in OUT (same key, content and model)
    failed: int = 0
    recaptioned: int = 0  # already in OUT, tagged again only to write its missing caption file
    backups: int = 0  # captions kept as a backup before the run changed them (--captions)
    replaced: int = 0  # rows of images whose content changed since, removed for their new rows
    duplicates: int = 0  # rows that came out twice (a retry) and were removed
    elapsed: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # the first MAX_FAILURES_SHOWN
    output: str = ""
    complete: bool = False

    @property
    def images_per_s(self) -> float:
        return (self.tagged + self.recaptioned) / self.elapsed if self.elapsed > 0 else 0.0


def parse_actors(text: str) -> tuple[int, int]:
    """``"4"`` -> (4, 4); ``"2:8"`` (or ``2-8``) -> (2, 8): an autoscaling pool. Raises ValueError."""
    parts = text.replace("-", ":").split(":")
    if len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--actors: {text!r} is not N or MIN:MAX (e.g. 4, or 2:8 to scale between 2 and 8)")
    low, high = int(parts[0]), int(parts[-1])
    if low < 1 or high < low:
        raise ValueError(f"--actors: {text!r} needs 1 <= MIN <= MAX")
    return low, high


def _check_reachable(address: str) -> None:
    """Fail at once, with what to do, when nothing answers at a cluster address (Ray itself would retry for
    many minutes)."""
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise DatasetError(
            f"--address {address!r} is not HOST:PORT (the head node's GCS address, port 6379 by default) or "
            "ray://HOST:PORT (Ray Client, port 10001)"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as e:
        raise DatasetError(
            f"cannot reach the Ray cluster at {address} ({e.strerror or e}). Check the address (the head node's "
            "GCS address, HOST:6379 by default, or ray://HOST:10001 for Ray Client), that the cluster is up "
            "(`ray status` on the head node) and that no firewall is in between. Without --address and "
            "$RAY_ADDRESS the command starts Ray on this machine."
        ) from e


def connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (else ``$RAY_ADDRESS``; ``auto``: the one ``ray start`` began on this
    machine), or start Ray on this machine; True when this call started Ray (and so should stop it)."""
    ray = require("ray")
    require("ray.data")
    if ray.is_initialized():
        return False
    # "local", not None: without an address ray.init() would join the cluster named in /tmp/ray's address file,
    # which a crashed test or an old `ray start` can leave pointing at nothing (and then it retries for minutes).
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address not in ("auto", "local"):
        _check_reachable(address)
    # On this machine Ray gets twice its cores as CPUs: an inference actor holds its threads' CPUs even while it
    # waits, and decode tasks then share the cores with it, as `tag`'s decode threads share them with the model's.
    local = {"num_cpus": 2 * available_cpus()} if address == "local" else {}
    try:
        ray.init(address=address, log_to_driver=True, **local)
    except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError for a bad cluster
        where = "a Ray instance on this machine" if address == "local" else f"the Ray cluster at {address}"
        raise DatasetError(f"cannot start or join {where}: {type(e).__name__}: {e}") from e
    return address == "local"


def _listing_tables(entries: list[Entry], holdings: Holdings) -> list[Any]:
    """The listing as Arrow tables, one per decode task: files in groups, each shard alone."""
    pa = require("pyarrow")
    tables, group = [], []

    def flush() -> None:
        if group:
            data = {k: [r[k] for r in group] for k in group[0]}
            types = {"recaption": pa.bool_(), "done_keys": pa.list_(pa.string()),
                     "done_hashes": pa.list_(pa.string())}  # fmt: skip
            tables.append(pa.table({k: pa.array(v, types.get(k, pa.string())) for k, v in data.items()}))
            group.clear()

    for entry in entries:
        done = holdings.done.get(entry.source, {})
        recaption = bool(entry.caption and done.get(entry.source) and not Path(entry.caption).exists())
        group.append({
            "source": entry.source, "kind": entry.kind, "caption": entry.caption, "backup": entry.backup,
            "problem": entry.problem,
            "recaption": recaption, "done_keys": list(done), "done_hashes": list(done.values()),
        })  # fmt: skip
        if entry.kind == "tar" or len(group) >= FILES_PER_TASK:
            flush()
    flush()
    return tables


def dataset_device(device: str) -> str:
    """``--device`` as the dataset command takes it: auto, cuda, or one of ``CPU_DEVICES``; DatasetError for a
    device Ray cannot give each actor. ``auto`` is the cluster's GPUs when it has any, else ONNX Runtime on the
    CPUs: auto's bf16 check (tagger.backends) times one quiet machine, not nodes busy decoding, and one run's rows
    should come from one precision; cpu-bf16 asks for OpenVINO's bf16 on every node."""
    d = device.strip().lower()
    if d.startswith("cuda:"):
        raise DatasetError("--device cuda:N: on Ray each actor gets GPUs of its own (--gpus-per-actor); use cuda")
    if d.split(":")[0] == "intel-gpu":
        raise DatasetError(
            f"--device {device}: Ray has no Intel GPU resource, so it cannot give each actor a GPU of its own or "
            "place actors only on nodes that have one. On Ray use cpu-bf16 (OpenVINO on the CPUs' bf16 units), cpu "
            "or cuda; for an Intel GPU, tag on its machine: python -m tagger tag DIR --device intel-gpu"
        )
    if d not in ("auto", "cuda", *CPU_DEVICES):
        raise DatasetError(f"--device {device!r}: use auto, cuda, {', '.join(CPU_DEVICES)}")
    return d


def _plan(cfg: DatasetConfig, ray: Any, started: bool) -> tuple[tuple[int, int], int, float]:
    """(min, max) actors, threads per actor and GPUs per actor for this cluster.

    With GPUs: one actor per GPU (``--gpus-per-actor``), one thread each. Without: one actor per node, with half
    the node's (logical) CPUs as threads; the rest decode.
    """
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    node_cpus = [int(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    node_cpus = [c for c in node_cpus if c > 0] or [cpus]
    device = dataset_device(cfg.device)
    gpa = cfg.gpus_per_actor
    if gpa is None:
        gpa = 1.0 if device not in CPU_DEVICES and gpus >= 1 else 0.0
    if device in CPU_DEVICES:
        gpa = 0.0
    if gpa < 0:
        raise DatasetError("--gpus-per-actor must be 0 or more")
    if (device == "cuda" or gpa > 0) and gpus == 0:
        raise DatasetError("the Ray cluster has no GPUs (ray.cluster_resources()); use --device cpu, or add GPU nodes")
    actors = cfg.actors or ((max(1, int(gpus // gpa)),) * 2 if gpa > 0 else (len(node_cpus),) * 2)
    threads = cfg.threads or (1 if gpa > 0 else max(1, min(node_cpus) // 2))
    if threads > max(node_cpus):
        raise DatasetError(f"--threads {threads}: no node of the cluster has that many CPUs (at most {max(node_cpus)})")
    if actors[1] * threads >= cpus:
        message = (
            f"{actors[1]} actors x {threads} threads take all {cpus} CPUs of the cluster, and none is left to "
            "decode images: use fewer --actors or --threads"
        )
        if started:  # a cluster of this machine cannot grow
            raise DatasetError(message)
        log.warning("%s (unless the cluster grows)", message)
    return actors, threads, gpa


@dataclass(frozen=True)
class Plan:
    """How the run uses the cluster (``_plan``)."""

    actors: tuple[int, int]  # (min, max)
    threads: int  # per actor
    gpus: float  # per actor
    batch: int  # images per model run the driver expects (the actor's own default decides in the end)
    device: str  # what each actor loads the model on: cuda with GPUs, else one of CPU_DEVICES
    write_node: str | None = None  # the node every write task runs on (a local OUT is the driver's), else any


@contextlib.contextmanager
def _streaming_settings() -> Iterator[None]:
    """Ray Data's settings for this run, restored after it. Ray Data reserves a share of the cluster for each
    operator by default; with decode, inference and write the decode tasks got a third of the CPUs and ran one
    at a time on a 4-CPU node (measured: 22 images/s there, 28 without reservations, and decoding is what
    bounds throughput: see README). Without reservations its backpressure policies still cap each operator's
    tasks by how fast its output queue grows, so decoded images do not pile up ahead of a slow model."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved = ctx.op_resource_reservation_enabled
    ctx.op_resource_reservation_enabled = False
    try:
        yield
    finally:
        ctx.op_resource_reservation_enabled = saved


def _pipeline(ray: Any, tables: list[Any], prep: Any, ship: ModelShip, plan: Plan, cfg: DatasetConfig,
              spec: WriteSpec) -> Any:  # fmt: skip
    from ray.data import ActorPoolStrategy

    low, high = plan.actors
    # Two blocks in flight per actor: one runs while the next arrives. Not more: blocks queued at the first actor
    # to start would not reach the others, still loading their model (measured: 2 actors, 32 images, one did all).
    sizes = {"size": low} if low == high else {"min_size": low, "max_size": high}
    pool = ActorPoolStrategy(**sizes, max_tasks_in_flight_per_actor=2)
    gpu_args = {"num_gpus": plan.gpus} if plan.gpus else {}
    ds = ray.data.from_arrow(tables)
    # Decoding runs as tasks of their own: the memory reservation keeps Ray Data from fusing them into the
    # inference actors (fusion needs equal resources), where they would queue behind the model.
    ds = ds.map_batches(decode_block, batch_size=None, batch_format="pyarrow", fn_kwargs={"prep": prep},
                        num_cpus=1, memory=DECODE_MEMORY)  # fmt: skip
    ds = ds.map_batches(
        Infer,
        batch_size=max(8, 4 * plan.batch),  # rows per call: small enough that every actor gets work
        batch_format="pyarrow",
        compute=pool,
        fn_constructor_kwargs={
            "ship": ship,
            "device": plan.device,
            "threads": plan.threads,
            "batch_size": cfg.batch_size,
            "embeddings": cfg.embeddings,
        },
        num_cpus=plan.threads,
        **gpu_args,
    )
    # Writes kept on the driver's node ask for no CPU of it: actors may hold all of that node's CPUs (a restarted
    # one lands where there is room), and writes queued behind them would stop the run.
    where = {"label_selector": {"ray.io/node-id": plan.write_node}, "num_cpus": 0} if plan.write_node else {}
    return ds.map_batches(write_block, batch_size=cfg.rows_per_file, batch_format="pyarrow", fn_kwargs={"spec": spec},
                          **{"num_cpus": 1, **where})  # fmt: skip


def run_dataset(cfg: DatasetConfig, say: Callable[[str], None] = lambda text: None) -> DatasetSummary:
    """Tag every image of ``cfg.sources`` into the Parquet dataset ``cfg.output``. See the module docstring."""
    device = dataset_device(cfg.device)
    cpu = device if device in CPU_DEVICES else "cpu"  # what runs on CPUs: the driver's probe, actors without a GPU
    if cfg.captions is not None:
        check_config(cfg.captions)
    if cfg.rows_per_file < 1:
        raise DatasetError("--rows-per-file must be at least 1")
    for module in ("pyarrow", "fsspec", "ray"):
        require(module)
    store = OutputStore(cfg.output)
    store.check()
    entries = list(list_sources(cfg.sources, cfg.path_column))
    if cfg.captions is not None:
        assign_captions(entries, cfg.captions)
    shards = sum(e.kind == "tar" for e in entries)

    from tagger.engine import Tagger

    # The model is resolved (and downloaded, once) here on the driver, and loaded on its CPU to learn how an image
    # becomes its input and check it before any cluster work: a model that cannot be had fails now. On OpenVINO's
    # CPU devices it is loaded there, so that OpenVINO missing or refusing the model fails now too.
    tagger = Tagger(cfg.models_dir, cpu, download=cfg.download, progress=sys.stderr.isatty(), threads=1)
    probe = tagger.load(cfg.model)
    files, labels, prep = probe.files, probe.labels, probe.prepare or probe.size
    if cfg.embeddings and (problem := embedding_problem(probe)):
        raise DatasetError(problem)
    tagger.unload_all()
    del probe
    model_id = files.model_id

    store.remove_leftovers()
    holdings = scan_output(store, model_id, {e.source for e in entries})
    held = sum(len(v) for v in holdings.done.values())
    say(
        f"{len(entries) - shards} image files and {shards} WebDataset shards in SRC; {cfg.output} holds "
        f"{held} of their images tagged by {model_id}"
        + (f" ({holdings.duplicates} duplicate rows removed)" if holdings.duplicates else "")
    )

    started = connect(cfg.address)
    ray = require("ray")
    summary = DatasetSummary(output=cfg.output, duplicates=holdings.duplicates)
    start = time.perf_counter()
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        actors, threads, gpa = _plan(cfg, ray, started)
        say(
            f"Ray: {len(nodes)} node(s); {actors[0] if actors[0] == actors[1] else f'{actors[0]}-{actors[1]}'} "
            f"inference actor(s) x {threads} thread(s)" + (f", {gpa:g} GPU each" if gpa else f", on CPUs ({cpu})")
        )
        ship = ship_model(files, single_node=started and len(nodes) == 1)
        run = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"
        spec = WriteSpec(cfg.output, model_id, labels, cfg.options, run, cfg.captions, cfg.embeddings)
        replaced: set[tuple[str, str]] = set()
        tables = _listing_tables(entries, holdings)
        # A local OUT is the driver's folder: every write runs on the driver's node (the others may not see it).
        write_node = ship.driver_node if store.local and (len(nodes) > 1 or not started) else None
        plan = Plan(actors, threads, gpa, cfg.batch_size or (16 if gpa else 1), "cuda" if gpa else cpu, write_node)
        if tables:
            with _streaming_settings():
                ds = _pipeline(ray, tables, prep, ship, plan, cfg, spec)
                for counts in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                    for row in counts.to_pylist():
                        summary.tagged += row["tagged"]
                        summary.skipped += row["skipped"]
                        summary.failed += row["failed"]
                        summary.recaptioned += row["recaptioned"]
                        summary.backups += row["backups"]
                        room = MAX_FAILURES_SHOWN - len(summary.failures)
                        summary.failures += [_pair(f) for f in row["failures"][: max(0, room)]]
                        replaced.update(_pair(r) for r in row["replaced"])
        # The run is complete: remove what a write task killed mid-file left, any row a retry wrote twice, the
        # rows of images whose content changed, and the earlier runs' errors of images this run tried again.
        store.remove_leftovers()
        final = scan_output(store, model_id, drop=replaced)
        summary.duplicates += final.duplicates
        summary.tagged -= final.duplicates  # written twice by this run (a retried block), counted once
        summary.replaced = len(replaced)
        prune_errors(store, run, {e.source for e in entries})
        summary.complete = True
    finally:
        summary.elapsed = time.perf_counter() - start
        if started:
            ray.shutdown()
    return summary


def _pair(text: str) -> tuple[str, str]:
    first, second = text.split("\0", 1)
    return first, second
