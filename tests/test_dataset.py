"""``python -m tagger dataset`` on a real local Ray (one per module), the generated model and real files.

Ray is the ``ray`` extra: without it these tests skip with that reason, except those that check what happens
without Ray (a clear error, and that nothing else imports it).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger import backends
from tagger.cache import DEFAULT_FLOOR
from tagger.cli import main
from tagger.engine import Tagger
from tagger.files import hash_file
from tagger.options import TagOptions
from tests.modelgen import NAMES, expected_probs

ROOT = Path(__file__).resolve().parent.parent
RAY_MISSING = "the ray extra is not installed (pip install -e '.[ray]'); the dataset command runs on Ray Data"
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "white": (255, 255, 255)}


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for the module (starting one costs seconds): 4 logical CPUs, so that an inference actor and
    decode and write tasks fit at once on CI's 2 cores."""
    ray = pytest.importorskip("ray", reason=RAY_MISSING)
    pytest.importorskip("ray.data", reason=RAY_MISSING)
    ray.init(address="local", num_cpus=4, include_dashboard=False, configure_logging=False)
    yield ray
    ray.shutdown()


def square(path: Path, rgb: tuple[int, int, int], fmt: str | None = None, side: int = 32) -> Path:
    """A solid image as large as the model's input: the model sees exactly its colour (the test oracle)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (side, side), rgb).save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return path


def dataset(model_root: Path, *args: str) -> int:
    return main(["dataset", *args, "--model", "test-model", "--models-dir", str(model_root)])


def read_out(out: Path):
    import pyarrow.parquet as pq

    return pq.read_table(out)  # the part files; readers skip the _errors folder


def read_errors(out: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    table = pq.read_table(out / "_errors")
    return dict(zip(table["key"].to_pylist(), table["error"].to_pylist(), strict=True))


def hidden_leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*") if p.is_file()]


# -- without Ray ---------------------------------------------------------------------------------------------


def test_nothing_but_the_dataset_command_imports_ray():
    code = (
        "import sys, tagger, tagger.engine, tagger.cli, tagger.webui, tagger.dataset, tagger.batch\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'pyarrow', 'fsspec'))\n"
        "print(bad)\nassert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_without_ray_a_clear_error(model_root, tmp_path, monkeypatch, capsys):
    square(tmp_path / "in" / "a.png", COLOURS["red"])
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where the extra is not installed
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    code = dataset(model_root, str(tmp_path / "in"), "-o", str(tmp_path / "out"))
    err = capsys.readouterr().err
    assert code == 2 and "pip install -e '.[ray]'" in err and "is not installed" in err
    assert not list((tmp_path / "out").rglob("*.parquet"))  # nothing tagged


def _flags(command: str) -> set[str]:
    from tagger.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {flag for action in sub.choices[command]._actions for flag in action.option_strings}


def test_dataset_takes_every_tag_option_of_tag():
    """Every tag option and caption-file flag of `tag` (thresholds by category, --exclude-categories, --escape,
    --rating-last, backups, --caption-from...) is a `dataset` flag spelled the same; only what needs one machine
    or one process's output stays `tag`'s."""
    tag_only = {"--format", "--cache", "--no-cache", "-r", "--recursive", "--metadata", "--workers",
                "--frequency-tags", "--frequency-csv", "--dry-run", "--stats"}  # fmt: skip
    assert _flags("tag") - _flags("dataset") == tag_only
    assert {"--threshold", "--exclude-categories", "--escape", "--caption-separator", "--no-backup"} <= _flags(
        "dataset"
    )


# -- small pieces that need pyarrow, not a cluster -------------------------------------------------------------


def test_memory_urls_are_refused_with_the_reason(model_root, tmp_path, capsys):
    pytest.importorskip("fsspec", reason=RAY_MISSING)
    pytest.importorskip("pyarrow", reason=RAY_MISSING)
    pytest.importorskip("ray", reason=RAY_MISSING)
    code = dataset(model_root, "memory://bucket/images", "-o", str(tmp_path / "out"))
    err = capsys.readouterr().err
    assert code == 2 and "memory://" in err and "other processes" in err


def test_refused_before_any_work_with_the_reason(model_root, tmp_path, capsys):
    """Options that cannot work stop the command before Ray starts, each with what to do."""
    for module in ("fsspec", "pyarrow", "ray"):
        pytest.importorskip(module, reason=RAY_MISSING)
    square(tmp_path / "in" / "a.png", COLOURS["red"])
    out = str(tmp_path / "out")
    cases = [
        (["--captions"], "file://", "beside local image files"),
        (["--embeddings"], str(tmp_path / "in"), "has no embedding output"),
        (["--json"], str(tmp_path / "in"), "add --captions"),
        (["--actors", "3:1"], str(tmp_path / "in"), "1 <= MIN <= MAX"),
        ([], str(tmp_path / "nowhere"), "no such file or folder"),
    ]
    for extra, src, reason in cases:
        src = (tmp_path / "in").as_uri() if src == "file://" else src
        assert dataset(model_root, src, "-o", out, *extra) == 2, extra
        assert reason in capsys.readouterr().err, extra
    (tmp_path / "file").write_text("x")
    assert dataset(model_root, str(tmp_path / "in"), "-o", str(tmp_path / "file")) == 2
    assert "is a file; give a folder" in capsys.readouterr().err


def test_devices_ray_cannot_give_each_actor_are_refused_before_anything(model_root, tmp_path, capsys):
    """Refused before Ray is even needed: each with what to use instead."""
    square(tmp_path / "in" / "a.png", COLOURS["red"])
    cases = [
        ("intel-gpu", "Ray has no Intel GPU resource"),
        ("intel-gpu:1", "--device intel-gpu"),
        ("cuda:1", "--gpus-per-actor"),
        ("tpu", "use auto, cuda, cpu, cpu-bf16, openvino"),
    ]
    for device, reason in cases:
        assert dataset(model_root, str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--device", device) == 2
        assert reason in capsys.readouterr().err, device
    assert not (tmp_path / "out").exists()


def test_actors_option():
    from tagger.dataset import parse_actors

    assert parse_actors("4") == (4, 4) and parse_actors("2:8") == (2, 8) and parse_actors("1-3") == (1, 3)
    for bad in ("0", "3:2", "a", "1:2:3"):
        with pytest.raises(ValueError, match="--actors"):
            parse_actors(bad)


def test_unreachable_cluster_fails_at_once_with_what_to_do(model_root, tmp_path):
    pytest.importorskip("ray", reason=RAY_MISSING)
    pytest.importorskip("pyarrow", reason=RAY_MISSING)
    square(tmp_path / "in" / "a.png", COLOURS["red"])
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tagger", "dataset", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
         "--model", "test-model", "--models-dir", str(model_root), "--address", f"127.0.0.1:{port}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in proc.stderr and "ray status" in proc.stderr
    assert time.monotonic() - start < 60  # Ray alone retries for many minutes


# -- on a local Ray --------------------------------------------------------------------------------------------


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """Good images in sub-folders and every kind of broken file."""
    d = tmp_path / "data"
    square(d / "red.png", COLOURS["red"])
    square(d / "sub" / "green.jpg", COLOURS["green"], "JPEG")
    square(d / "sub" / "deeper" / "blue.webp", COLOURS["blue"], "WEBP")
    square(d / "white.bmp", COLOURS["white"], "BMP")
    (d / "empty.png").write_bytes(b"")
    big = square(tmp_path / "big.png", COLOURS["blue"], side=300)
    (d / "truncated.png").write_bytes(big.read_bytes()[:150])
    (d / "text.jpg").write_text("not a jpeg")
    Image.new("1", (20000, 20000)).save(d / "bomb.png")  # 400 M pixels: over Pillow's decompression-bomb limit
    (d / "notes.txt").write_text("not an image, not listed")
    (d / "folder.png").mkdir()
    return d


def test_folder_to_parquet(ray_local, model_root, mixed_folder, tmp_path, capsys):
    from tagger.dataset import errors_schema, output_schema

    # the caption column is a caption file's text: plain unless --escape, as `tag DIR` writes captions
    engine = Tagger(model_root, "cpu", download=False, progress=False)
    options = TagOptions(general_threshold=0.5, escape=False)
    out = tmp_path / "out"
    code = dataset(model_root, str(mixed_folder), "-o", str(out), "--rows-per-file", "2", "--general-threshold", "0.5")
    err = capsys.readouterr().err
    assert code == 1, err  # some images failed
    assert "tagged 4, skipped 0 (already in OUT), failed 4" in err

    table = read_out(out)
    assert table.schema.remove_metadata() == output_schema().remove_metadata()
    rows = {Path(r["key"]).relative_to(mixed_folder).as_posix(): r for r in table.to_pylist()}
    assert sorted(rows) == ["red.png", "sub/deeper/blue.webp", "sub/green.jpg", "white.bmp"]
    parts = [read_out(f).num_rows for f in out.glob("part-*.parquet")]
    assert sum(parts) == 4 and len(parts) >= 2 and max(parts) <= 2  # at most --rows-per-file rows a file
    meta = json.loads(table.schema.metadata[b"wd14-tagger"])
    assert meta["floor"] == DEFAULT_FLOOR and meta["options"]["general_threshold"] == 0.5
    for name, row in rows.items():
        path = mixed_folder / name
        assert row["source"] == row["key"] == str(path)
        assert row["content_hash"] == hash_file(path, "blake2b", digest_size=16)
        assert row["model"] == "local:test-model"
        rgb = COLOURS[Path(name).stem]
        want = dict(zip(NAMES, expected_probs(tuple(c / 255 for c in reversed(rgb))), strict=True))
        general, character = dict(row["general"]), dict(row["character"])
        assert set(dict(row["rating"])) == {"general", "sensitive", "questionable", "explicit"}
        for tags in (general, character):
            assert all(p >= DEFAULT_FLOOR for p in tags.values())
            assert list(tags.values()) == sorted(tags.values(), reverse=True)
            for tag, p in tags.items():
                assert p == pytest.approx(want[tag], abs=2e-3 if name.endswith(".jpg") else 1e-5)
        assert {"solo", "long_hair", "low_probability"} <= set(general)  # 0.9, 0.5, 0.1: all above the floor
        assert "hakurei_reimu" in character  # 0.3: kept although under every default threshold
        # the caption is the engine's, as `tag` gives it for this image under the same options
        assert row["caption"] == engine.tag_image("test-model", path, options).result.prompt
    assert rows["red.png"]["caption"].startswith("red theme, solo")

    errors = read_errors(out)
    import pyarrow.parquet as pq

    assert pq.read_table(out / "_errors").schema.remove_metadata() == errors_schema().remove_metadata()
    assert {Path(k).name for k in errors} == {"empty.png", "truncated.png", "text.jpg", "bomb.png"}
    assert "empty" in errors[str(mixed_folder / "empty.png")]
    assert "decompression bomb" in errors[str(mixed_folder / "bomb.png")]
    assert "not an image" in errors[str(mixed_folder / "text.jpg")]
    assert not hidden_leftovers(out)

    # Run again: everything is skipped, nothing is written twice, the broken files are tried again.
    assert dataset(model_root, str(mixed_folder), "-o", str(out), "--general-threshold", "0.5") == 1
    assert "tagged 0, skipped 4 (already in OUT), failed 4" in capsys.readouterr().err
    assert read_out(out).num_rows == 4 and len(read_errors(out)) == 4  # the earlier run's errors made way


def test_captions_are_byte_identical_to_tag_dir(ray_local, model_root, tmp_path, capsys):
    a = tmp_path / "a"
    square(a / "red one.png", COLOURS["red"])
    square(a / "sub" / "green.jpg", COLOURS["green"], "JPEG")
    square(a / "日本語.webp", COLOURS["blue"], "WEBP")
    square(a / "pic.png", COLOURS["white"])
    square(a / "pic.jpg", COLOURS["red"], "JPEG")  # same caption name as pic.png: fails, as in `tag`
    (a / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (a / "red one.txt").write_text("hand written, long_hair\n", encoding="utf-8")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    opts = ["--existing", "append", "--json", "--general-threshold", "0.3", "--weights", "--exclude", "solo",
            "--rating-last", "--add", "masterpiece"]  # fmt: skip
    assert main(["tag", str(a), "-r", "--model", "test-model", "--models-dir", str(model_root), *opts]) == 1
    capsys.readouterr()
    out = tmp_path / "out"
    assert dataset(model_root, str(b), "-o", str(out), "--captions", *opts) == 1
    err = capsys.readouterr().err
    assert "tagged 4, skipped 0 (already in OUT), failed 2" in err

    written_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.suffix in (".txt", ".json", ".bak"))
    written_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.suffix in (".txt", ".json", ".bak"))
    # 4 captions (one appended to; plain text, as `tag` writes them), 4 sidecars, the appended one's backup
    assert written_a == written_b and len(written_a) == 9
    assert (b / "red one.txt.bak").read_text(encoding="utf-8") == "hand written, long_hair\n"
    for rel in written_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    errors = read_errors(out)
    assert (
        "[name].[extension].txt" in errors[str(b / "pic.png")] or "[name].[extension].txt" in errors[str(b / "pic.jpg")]
    )
    # OUT's caption column is the caption as `tag` writes it without an earlier caption to merge with
    rows = {Path(r["key"]).name: r for r in read_out(out).to_pylist()}
    assert rows["green.jpg"]["caption"] == (b / "sub" / "green.txt").read_text(encoding="utf-8")

    # A caption deleted since is written again from the model; OUT keeps its one row per image.
    (b / "sub" / "green.txt").unlink()
    assert dataset(model_root, str(b), "-o", str(out), "--captions", *opts) == 1
    assert "captions written again for 1" in capsys.readouterr().err
    assert (b / "sub" / "green.txt").read_bytes() == (a / "sub" / "green.txt").read_bytes()
    assert read_out(out).num_rows == 4


def test_listing_webdataset_shards_and_file_url(ray_local, model_root, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # a Parquet listing with paths relative to its folder
    listed = tmp_path / "listed"
    square(listed / "imgs" / "r.png", COLOURS["red"])
    square(listed / "imgs" / "g.png", COLOURS["green"])
    pq.write_table(pa.table({"image": ["imgs/r.png", "imgs/g.png", "imgs/missing.png"], "label": [1, 2, 3]}),
                   listed / "list.parquet")  # fmt: skip

    # a WebDataset shard: images with their text, another image format, a broken image
    def shard(path: Path, members: dict[str, bytes], cut: int | None = None) -> Path:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        data = buf.getvalue()
        path.write_bytes(data if cut is None else data[:cut])
        return path

    def png(rgb) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), rgb).save(buf, format="PNG")
        return buf.getvalue()

    shards = tmp_path / "shards"
    shards.mkdir()
    good = shard(shards / "000000.tar", {
        "s/000001.png": png(COLOURS["red"]), "s/000001.txt": b"a caption", "s/000002.png": png(COLOURS["blue"]),
        "s/000003.png": b"not a png",
    })  # fmt: skip
    # 512-byte blocks: header 1, data 1, header 2, data 2: broken off 40 bytes into the second image's data
    shard(shards / "000001.tar", {"t/000010.png": png(COLOURS["green"]), "t/000011.png": png(COLOURS["red"])},
          cut=3 * 512 + 40)  # fmt: skip

    # an fsspec URL: a file:// folder
    url_dir = tmp_path / "by_url"
    square(url_dir / "w.png", COLOURS["white"])

    out = tmp_path / "out"
    srcs = [str(listed / "list.parquet"), str(shards / "*.tar"), (url_dir.as_uri())]
    assert dataset(model_root, *srcs, "-o", str(out), "--general-threshold", "0.5") == 1
    err = capsys.readouterr().err
    assert "tagged 6, skipped 0 (already in OUT), failed 3" in err, err

    rows = {r["key"]: r for r in read_out(out).to_pylist()}
    assert set(rows) == {
        str(listed / "imgs" / "r.png"), str(listed / "imgs" / "g.png"),
        "s/000001", "s/000002", "t/000010", (url_dir / "w.png").as_uri(),
    }  # fmt: skip
    assert rows["s/000001"]["source"] == str(good) and rows["t/000010"]["source"] == str(shards / "000001.tar")
    assert rows["s/000001"]["caption"].startswith("red theme") and rows["s/000002"]["caption"].startswith("blue theme")
    assert rows["t/000010"]["caption"].startswith("hatsune miku")
    assert rows[(url_dir / "w.png").as_uri()]["caption"].startswith("white background")
    errors = read_errors(out)
    assert set(errors) == {str(listed / "imgs" / "missing.png"), "s/000003", str(shards / "000001.tar")}
    assert errors[str(listed / "imgs" / "missing.png")] == "file not found"
    assert "damaged after its first 1 image" in errors[str(shards / "000001.tar")]

    # The shard's tagged samples are skipped by key and content on a rerun.
    assert dataset(model_root, *srcs, "-o", str(out), "--general-threshold", "0.5") == 1
    assert "tagged 0, skipped 6 (already in OUT), failed 3" in capsys.readouterr().err


def test_families_embeddings_and_other_categories(ray_local, tmp_path, capsys):
    """Models of other families through the same engine: PixAI's normalised tensors (they cross the object store
    as float32) and its embedding output (the embedding column), Camie's other categories (the categories
    column); probabilities, captions and embeddings as the engine gives them for the same images."""
    from tests.test_families import BY_ID, OPAQUE, build, scene

    models = tmp_path / "models"
    for fam in ("pixai", "camie"):
        build(models, BY_ID[fam])
    folder = tmp_path / "images"
    folder.mkdir()
    for name, wh in OPAQUE.items():
        scene(*wh).save(folder / f"{name}.png")
    engine = Tagger(models, "cpu", download=False, progress=False, threads=1)
    for fam, extra in (("pixai-tagger-v0.9", ["--embeddings"]), ("camie-tagger-v2", [])):
        out = tmp_path / f"out-{fam}"
        args = ["dataset", str(folder), "-o", str(out), "--model", fam, "--models-dir", str(models), *extra]
        assert main(args) == 0, capsys.readouterr().err
        assert f"tagged {len(OPAQUE)}, skipped 0" in capsys.readouterr().err
        options = replace(engine.default_options(fam), escape=False)
        for row in read_out(out).to_pylist():
            want = engine.tag_image(fam, Path(row["key"]), options, embeddings=bool(extra))
            assert row["caption"] == want.result.prompt
            probs = dict(zip(want.labels.names, want.probs.tolist(), strict=True))
            tags = {**dict(row["general"]), **dict(row["character"])}
            tags.update({t: p for m in dict(row["categories"]).values() for t, p in dict(m).items()})
            assert tags == pytest.approx({t: p for t, p in probs.items() if p >= DEFAULT_FLOOR and t and t not in
                                          dict(row["rating"])}, abs=1e-5)  # fmt: skip
            if extra:
                assert np.allclose(row["embedding"], want.embedding, atol=1e-5)
            else:
                assert set(dict(row["categories"])) == {"copyright", "artist", "meta", "year"}
                assert dict(dict(row["categories"])["copyright"]) == pytest.approx({"vocaloid": 0.65}, abs=1e-5)


def test_resume_after_an_interrupted_run(ray_local, model_root, tmp_path, capsys):
    """A driver killed mid-run (SIGKILL: no cleanup at all) leaves complete files only; the rerun tags the rest,
    removes what a crash can leave behind (hidden temporary files, a block written twice) and ends with every
    image exactly once."""
    folder = tmp_path / "many"
    folder.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (500, 500, 3), dtype=np.uint8)
    for i in range(40):  # noise PNGs: slow enough to decode that the run can be stopped in the middle
        noise[0, 0, 0] = i  # each its own content
        Image.fromarray(noise).save(folder / f"{i:03}.png", compress_level=1)
    out = tmp_path / "out"
    address = ray_local.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "tagger", "dataset", str(folder), "-o", str(out), "--model", "test-model",
           "--models-dir", str(model_root), "--rows-per-file", "2", "--address", address]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, stderr.decode()[-3000:]  # killed, not finished
    # The job's workers outlive their driver by a moment (Ray then ends them): a write under way may still land.
    settled, seen = time.monotonic(), None
    while time.monotonic() - settled < 3 and time.monotonic() < deadline:
        now = sorted(out.glob("part-*.parquet"))
        if now != seen:
            settled, seen = time.monotonic(), now
        time.sleep(0.1)
    first = read_out(out).num_rows
    assert 0 < first < 40

    # What a crash can leave besides: a temporary file half written, a block that came out twice.
    (out / ".part-0123.parquet.abcd1234.tmp").write_bytes(b"PAR1 half written")
    part = sorted(out.glob("part-*.parquet"))[0]
    shutil.copy(part, out / "part-000000000000000000000000.parquet")

    assert dataset(model_root, str(folder), "-o", str(out), "--rows-per-file", "4") == 0
    err = capsys.readouterr().err
    counts = re.search(r"tagged (\d+), skipped (\d+) \(already in OUT\), failed 0", err)
    assert counts, err
    tagged, skipped = int(counts[1]), int(counts[2])
    assert tagged + skipped == 40 and skipped >= first, err
    assert "duplicate rows removed" in err
    keys = read_out(out)["key"].to_pylist()
    assert sorted(keys) == sorted(str(p) for p in folder.glob("*.png"))  # every image exactly once
    assert not hidden_leftovers(out)


def test_cpu_bf16_actors_run_on_openvino(ray_local, model_root, tmp_path, capsys):
    """cpu-bf16 asks Ray for CPUs only (no GPU) and each actor loads the model on OpenVINO: the probabilities and
    captions are those of `tag --device cpu-bf16` (on a CPU with bf16 units they differ from ONNX Runtime's fp32 by
    up to 0.003 on this model, so an actor that ran ONNX Runtime would show)."""
    if backends.openvino_version() is None:
        pytest.skip("OpenVINO is not installed (pip install openvino)")
    folder = tmp_path / "in"
    for name in ("red", "green"):
        square(folder / f"{name}.png", COLOURS[name])
    out = tmp_path / "out"
    assert dataset(model_root, str(folder), "-o", str(out), "--device", "cpu-bf16") == 0
    err = capsys.readouterr().err
    assert "on CPUs (cpu-bf16)" in err and "tagged 2, skipped 0" in err
    engine = Tagger(model_root, "cpu-bf16", download=False, progress=False)
    options = replace(engine.default_options("test-model"), escape=False)  # captions are plain unless --escape
    for row in read_out(out).to_pylist():
        tagged = engine.tag_image("test-model", row["key"], options)
        want = dict(zip(NAMES, tagged.probs.tolist(), strict=True))
        for tag, p in {**dict(row["general"]), **dict(row["character"])}.items():
            assert p == pytest.approx(want[tag], abs=1e-6), tag
        assert row["caption"] == tagged.result.prompt
