"""``python -m tagger dataset`` on a two-node Ray cluster simulated on this machine (``ray.cluster_utils``),
with one node lost mid-run: the run completes and OUT holds every image exactly once.

A module of its own: the cluster's head replaces the local Ray of ``test_dataset.py``, which is shut down when
that module ends.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger.cli import main

RAY_MISSING = "the ray extra is not installed (pip install -e '.[ray]'); the dataset command runs on Ray Data"


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason=RAY_MISSING)
    pytest.importorskip("ray.data", reason=RAY_MISSING)
    from ray.cluster_utils import Cluster

    # Where nodes other than the driver's keep the model copy that reaches them through the object store (the
    # nodes' processes inherit it from here).
    monkeypatch.setenv("TAGGER_RAY_MODELS", str(tmp_path / "node-models"))
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    c.add_node(num_cpus=2)
    ray.init(address=c.address)
    yield ray, c
    ray.shutdown()
    c.shutdown()


def working_on(node) -> list[str]:
    """What the node's worker processes are doing (their titles: ``ray::MapWorker(MapBatches(Infer))``...), read
    from /proc: the raylet starts them."""
    raylet = node.all_processes["raylet"][0].process.pid
    titles = []
    for pid in Path(f"/proc/{raylet}/task/{raylet}/children").read_text().split():
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if "MapBatches" in title:
            titles.append(title)
    return titles


def test_a_node_lost_mid_run(cluster, model_root, tmp_path, capsys):
    ray, c = cluster
    folder = tmp_path / "images"
    folder.mkdir()
    noise = np.random.default_rng(1).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    for i in range(32):  # noise PNGs: slow enough to decode that the node can be lost in the middle
        noise[0, 0, 0] = i  # each its own content
        Image.fromarray(noise).save(folder / f"{i:03}.png", compress_level=1)
    out = tmp_path / "out"
    driver_node = ray.get_runtime_context().get_node_id()
    second = next(n for n in c.worker_nodes)
    assert second.node_id != driver_node

    result: dict[str, int] = {}
    args = ["dataset", str(folder), "-o", str(out), "--model", "test-model", "--models-dir", str(model_root),
            "--actors", "2", "--threads", "1", "--rows-per-file", "2"]  # fmt: skip
    run = threading.Thread(target=lambda: result.setdefault("code", main(args)))
    run.start()
    deadline = time.monotonic() + 120
    while not list(out.glob("part-*.parquet")) and run.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    busy = working_on(second)
    c.remove_node(second, allow_graceful=False)  # the node dies: its raylet and every worker on it, at once
    third = c.add_node(num_cpus=2)  # and another takes its place, as an autoscaler would
    run.join(timeout=180)
    assert not run.is_alive()
    err = capsys.readouterr().err
    assert busy, "nothing of the run was on the second node: the test lost no work"
    done_before = len(list(out.glob("part-*.parquet")))
    assert result["code"] == 0, err[-3000:]
    assert "tagged 32, skipped 0 (already in OUT), failed 0" in err, err[-3000:]

    import pyarrow.parquet as pq

    keys = pq.read_table(out)["key"].to_pylist()
    assert sorted(keys) == sorted(str(p) for p in folder.glob("*.png"))  # every image exactly once
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no half-written file
    assert done_before >= 1

    # How the model reaches a node other than the driver's (where the actors above ran is Ray's choice): a task
    # placed on the new node gets the files the driver resolved through the object store and loads them.
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from tagger.dataset.stages import ship_model
    from tagger.engine import Tagger

    files = Tagger(model_root, "cpu", download=False).resolve("test-model")
    ship = ship_model(files, single_node=False)

    @ray.remote(scheduling_strategy=NodeAffinitySchedulingStrategy(third.node_id, soft=False))
    def load_there(ship):
        from tagger.runtime import Device, create_session

        model = create_session(ship.files_here(), Device.parse("cpu"), 1)
        return ray.get_runtime_context().get_node_id(), str(model.files.model_path), model.size

    node, path, size = ray.get(load_there.remote(ship))
    assert node == third.node_id and size == 32
    assert Path(path) == tmp_path / "node-models" / ship.digest / "model.onnx"
    assert Path(path).read_bytes() == files.model_path.read_bytes()
