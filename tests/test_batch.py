"""Batch captioning through the real engine, the generated model and real files on disk."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from tagger.batch import BatchConfig, BatchConfigError, merge_tags, run_batch
from tagger.engine import Tagger
from tagger.options import TagOptions

ROOT = Path(__file__).resolve().parent.parent
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
CAPTION = TagOptions(escape=False)  # caption files are written without the WebUI's escapes


@pytest.fixture
def tagger(model_root: Path) -> Tagger:
    return Tagger(model_root, "cpu", download=False, progress=False)


def img(path: Path, rgb=RED, size=(40, 30), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path, format=fmt)
    return path


def run(tagger: Tagger, inputs, **kw) -> object:
    opts = kw.pop("options", TagOptions())
    return run_batch(tagger, "test-model", BatchConfig(inputs=[Path(i) for i in inputs], **kw), opts)


def cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tagger", "tag", *args], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=120, **kw,
    )  # fmt: skip


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    img(d / "red one.png", RED)
    img(d / "[brackets] (1).JPG", GREEN, fmt="JPEG")
    img(d / "日本語.webp", BLUE, fmt="WEBP")
    img(d / "sub" / "deeper" / "x.PNG", RED)
    img(d / "sub" / "y.bmp", GREEN, fmt="BMP")
    (d / "notes.txt.bak").write_text("not an image")
    (d / "readme.md").write_text("# hi")
    (d / "folder.png").mkdir()  # a folder named like an image is not an image
    return d


def test_folder_captions_beside_each_image(tagger, dataset):
    s = run(tagger, [dataset])
    assert (s.tagged, s.skipped, s.failed) == (3, 0, 0)
    red = (dataset / "red one.txt").read_bytes()
    assert red.startswith(b"red theme, solo") and b"\n" not in red and not red.startswith(b"\xef\xbb\xbf")
    assert "hatsune miku" in (dataset / "[brackets] (1).txt").read_text(encoding="utf-8")
    assert "blue theme" in (dataset / "日本語.txt").read_text(encoding="utf-8")
    assert not (dataset / "sub" / "y.txt").exists()  # not recursive
    s = run(tagger, [dataset], recursive=True)
    assert (s.tagged, s.skipped) == (2, 3)
    assert "red theme" in (dataset / "sub" / "deeper" / "x.txt").read_text()
    assert s.tag_counts["red theme"] == 1 and s.tag_counts["solo"] == 2


def test_output_dir_mirrors_subfolders(tagger, dataset, tmp_path):
    out = tmp_path / "captions"
    s = run(tagger, [dataset], recursive=True, output_dir=out)
    assert s.tagged == 5
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.txt")) == sorted(
        ["red one.txt", "[brackets] (1).txt", "日本語.txt", "sub/deeper/x.txt", "sub/y.txt"]
    )
    assert not (dataset / "red one.txt").exists()


def test_filename_format_tokens(tagger, tmp_path):
    p = img(tmp_path / "a.png")
    run(tagger, [tmp_path], filename_format="[name].[extension].txt")
    assert (tmp_path / "a.png.txt").exists()
    run(tagger, [tmp_path], filename_format="[hash:md5].txt")
    assert (tmp_path / f"{hashlib.md5(p.read_bytes()).hexdigest()}.txt").exists()


@pytest.mark.parametrize(("algo", "hex_digits"), [("shake_128", 32), ("SHAKE_256", 64)])
def test_shake_hash_names_have_a_documented_length(tagger, tmp_path, algo, hex_digits):
    p = img(tmp_path / "a.png")
    s = run(tagger, [tmp_path], filename_format=f"[hash:{algo}].txt")
    assert (s.tagged, s.failed) == (1, 0)
    digest = hashlib.new(algo.lower(), p.read_bytes()).hexdigest(hex_digits // 2)
    assert [c.name for c in tmp_path.glob("*.txt")] == [f"{digest}.txt"] and len(digest) == hex_digits


@pytest.mark.parametrize(
    "fmt", ["../[name].txt", "/tmp/[name].txt", "a/../../[name].txt", "[nope].txt", "[hash:xyz].txt", ""]
)
def test_escaping_or_bad_formats_refused_before_writing(tagger, tmp_path, fmt):
    img(tmp_path / "in" / "a.png")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(BatchConfigError):
        run(tagger, [tmp_path / "in"], filename_format=fmt)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_backslash_in_a_name_cannot_inject_a_separator(tagger, tmp_path):
    img(tmp_path / "in" / "a\\..\\..\\b.png")
    with pytest.raises(BatchConfigError, match="outside the output folder"):
        run(tagger, [tmp_path / "in"], output_dir=tmp_path / "out")
    assert not list(tmp_path.rglob("*.txt")) and not (tmp_path / "out").exists()


HAND = "hand written, My_Tag, long hair\n"


@pytest.mark.parametrize("mode", ["skip", "overwrite", "append", "prepend"])
def test_existing_caption_policies(tagger, tmp_path, mode):
    img(tmp_path / "a.png", RED)
    cap = tmp_path / "a.txt"
    cap.write_bytes(HAND.encode())
    # a broken image whose caption exists: with skip it must not even be read
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "broken.txt").write_bytes(b"keep me")
    s = run(tagger, [tmp_path], existing=mode)
    text = cap.read_text(encoding="utf-8")
    if mode == "skip":
        assert cap.read_bytes() == HAND.encode() and (tmp_path / "broken.txt").read_bytes() == b"keep me"
        assert (s.skipped, s.failed, s.tagged) == (2, 0, 0)
        return
    assert s.failed == 1 and (tmp_path / "broken.txt").read_bytes() == b"keep me"
    tags = text.split(", ")
    if mode == "overwrite":
        assert tags[0] == "red theme" and "hand written" not in tags
    elif mode == "append":
        assert tags[:3] == ["hand written", "My_Tag", "long hair"] and "red theme" in tags
        assert tags.count("long hair") == 1 and "solo" in tags
    else:
        assert tags[-3:] == ["hand written", "My_Tag", "long hair"] and tags[0] == "red theme"
        assert tags.count("long hair") == 1


def test_merge_tags_rules():
    assert merge_tags(["A_b", "c"], ["a b", "d", "C"], "append") == ["A_b", "c", "d"]
    assert merge_tags(["x"], ["y", "X"], "prepend") == ["y", "x"]


def test_broken_files_reported_and_batch_goes_on(tagger, tmp_path):
    img(tmp_path / "good1.png", RED)
    img(tmp_path / "good2.png", GREEN)
    (tmp_path / "empty.png").write_bytes(b"")
    full = tmp_path / "full.png"
    img(full, BLUE, size=(200, 200))
    (tmp_path / "truncated.png").write_bytes(full.read_bytes()[:200])
    full.unlink()
    (tmp_path / "text.jpg").write_text("hello, I am not a jpeg")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 M pixels: over Pillow's decompression-bomb limit
    s = run(tagger, [tmp_path])
    assert s.tagged == 2 and s.failed == 4
    reasons = dict((Path(p).name, r) for p, r in s.failures)
    assert set(reasons) == {"empty.png", "truncated.png", "text.jpg", "bomb.png"}
    assert all(reasons.values())
    assert not (tmp_path / "empty.txt").exists() and (tmp_path / "good2.txt").exists()


def test_json_sidecar(tagger, tmp_path):
    img(tmp_path / "g.png", GREEN)
    run(tagger, [tmp_path], json_sidecar=True)
    data = json.loads((tmp_path / "g.json").read_text(encoding="utf-8"))
    assert data["model"] == "local:test-model"
    assert set(data["rating"]) == {"general", "sensitive", "questionable", "explicit"}
    assert data["character"]["hatsune_miku"] > 0.99 and "hakurei_reimu" in data["character"]
    assert min(data["general"].values()) >= 0.01 and "low_probability" in data["general"]


def test_progress_and_cancel(tagger, tmp_path):
    for i in range(12):
        img(tmp_path / f"{i:02}.png", RED)
    cancel = threading.Event()
    seen = []

    def progress(p):
        seen.append(p)
        if p.done == 3:
            cancel.set()

    s = run_batch(
        tagger, "test-model", BatchConfig([tmp_path], batch_size=1), TagOptions(), progress=progress, cancel=cancel
    )
    assert s.cancelled and 3 <= s.tagged < 12
    assert seen[0].total == 12 and seen[-1].done == s.tagged
    written = sorted(tmp_path.glob("*.txt"))
    assert len(written) == s.tagged and all(p.read_text().startswith("red theme") for p in written)
    s2 = run(tagger, [tmp_path])
    assert s2.skipped == s.tagged and s2.tagged == 12 - s.tagged


def test_cli_summary_and_exit_status(model_root, tmp_path):
    img(tmp_path / "ok.png", RED)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    r = cli(str(tmp_path), "--models-dir", str(model_root), "--model", "test-model", "--device", "cpu")
    assert r.returncode == 1, r.stderr
    assert "tagged 1, skipped 0 (caption exists), failed 1" in r.stderr
    assert f"{tmp_path / 'bad.png'}:" in r.stderr
    r = cli(
        str(tmp_path / "ok.png"),
        "--captions",
        "--existing",
        "overwrite",
        "--models-dir",
        str(model_root),
        "--model",
        "test-model",
    )
    assert r.returncode == 0 and "tagged 1" in r.stderr


def test_same_stem_images_never_share_a_caption_silently(tagger, tmp_path):
    img(tmp_path / "pic.png", RED)
    img(tmp_path / "pic.jpg", GREEN, fmt="JPEG")
    img(tmp_path / "other.png", BLUE)
    s = run(tagger, [tmp_path], batch_size=16)  # both images are in one model run before anything is written
    assert (s.tagged, s.skipped, s.failed) == (2, 0, 1)
    # the first in the walk's sorted order keeps the caption; the second is reported with the way out
    expected = tagger.tag_image("test-model", tmp_path / "pic.jpg", CAPTION).result.prompt
    assert (tmp_path / "pic.txt").read_text(encoding="utf-8") == expected
    [(path, reason)] = s.failures
    assert path == str(tmp_path / "pic.png") and "pic.jpg" in reason and "[name].[extension].txt" in reason
    again = run(tagger, [tmp_path])  # a rerun still says so: the collision is not taken for a finished caption
    assert (again.tagged, again.skipped, again.failed) == (0, 2, 1)
    both = run(tagger, [tmp_path], filename_format="[name].[extension].txt")
    assert (both.tagged, both.failed) == (3, 0)
    assert (tmp_path / "pic.png.txt").read_text() == tagger.tag_image(
        "test-model", tmp_path / "pic.png", CAPTION
    ).result.prompt


def test_same_names_from_two_folders_into_one_output_folder(tagger, tmp_path):
    img(tmp_path / "a" / "pic.png", RED)
    img(tmp_path / "b" / "pic.png", GREEN)
    s = run(tagger, [tmp_path / "a", tmp_path / "b"], output_dir=tmp_path / "out")
    assert (s.tagged, s.failed) == (1, 1) and "own output folder" in s.failures[0][1]
    assert (tmp_path / "out" / "pic.txt").read_text().startswith("red theme")
    s = run(tagger, [tmp_path / "a", tmp_path / "b"], output_dir=tmp_path / "out2", filename_format="caption.txt")
    assert s.failed == 1 and "put [name] in the filename format" in s.failures[0][1]


def test_the_same_image_twice_or_identical_content_under_a_hash_name_is_no_failure(tagger, tmp_path):
    p = img(tmp_path / "a.png", RED)
    s = run(tagger, [p, tmp_path])  # the file named, and again in its folder
    assert (s.tagged, s.skipped, s.failed) == (1, 1, 0)
    (tmp_path / "copy.png").write_bytes(p.read_bytes())
    s = run(tagger, [tmp_path], filename_format="[hash:sha1].txt")
    assert (s.tagged, s.skipped, s.failed) == (1, 1, 0)


def test_cli_same_stem_collision_exits_1_and_names_the_fix(model_root, tmp_path):
    img(tmp_path / "pic.png", RED)
    img(tmp_path / "pic.jpg", GREEN, fmt="JPEG")
    r = cli(str(tmp_path), "--models-dir", str(model_root), "--model", "test-model", "--device", "cpu")
    assert r.returncode == 1, r.stderr
    assert "tagged 1, skipped 0 (caption exists), failed 1" in r.stderr
    assert f"{tmp_path / 'pic.png'}: not tagged: its caption {tmp_path / 'pic.txt'} is already" in r.stderr
    assert "--filename-format '[name].[extension].txt'" in r.stderr


# The child restores Python's own Ctrl-C handler: a shell starts background jobs with SIGINT ignored, and an
# ignored signal stays ignored across exec, so without this the test fails whenever CI runs in the background.
CHILD_WITH_CTRL_C = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('tagger', run_name='__main__', alter_sys=True)"
)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="the gate image is a named pipe (POSIX)")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_midway_then_resumed(model_root, tmp_path, sig):
    """Stopped while it waits on the middle image, a named pipe: the test knows the child got that far when its
    own open() of the pipe returns, so the signal lands mid-batch however fast or slow the machine is."""
    data = tmp_path / "data"
    for i in range(80):
        img(data / ("first" if i < 40 else "second") / f"img{i:04}.png", (i % 256, 40, 200), size=(300, 200))
    gate = data / "gate.png"
    os.mkfifo(gate)
    n = 81
    inputs = [str(data / "first"), str(gate), str(data / "second")]
    args = [*inputs, "--models-dir", str(model_root), "--model", "test-model", "--device", "cpu", "--batch-size", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD_WITH_CTRL_C, "tag", *args], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def unblock_if_the_child_ends_first() -> None:  # else the open() below would wait forever
        proc.wait()
        with contextlib.suppress(OSError):  # the pipe may be gone by then
            os.close(os.open(gate, os.O_RDONLY | os.O_NONBLOCK))

    threading.Thread(target=unblock_if_the_child_ends_first, daemon=True).start()
    with open(gate, "wb"):  # returns once the child opens the pipe to read the gate image: it waits there now
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(sig)
        _, err = proc.communicate()
    written = sorted(data.rglob("*.txt"))
    assert 0 < len(written) < n, "the run should have been stopped mid-way"
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "run the same command again to resume" in err, err
    else:
        assert proc.returncode == -signal.SIGKILL
    clean = Tagger(model_root, "cpu", download=False)
    for cap in written:  # every caption there is complete: exactly what a clean run writes
        image = cap.with_suffix(".png")
        assert cap.read_text(encoding="utf-8") == clean.tag_image("test-model", image, CAPTION).result.prompt, cap
    assert not list(data.rglob(".*.tmp")) or sig == signal.SIGKILL  # Ctrl-C leaves no temporary files
    gate.unlink()
    img(gate, (0, 40, 200), size=(300, 200))
    done_before = len(written)
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert f"tagged {n - done_before}, skipped {done_before}" in r.stderr
    assert len(list(data.rglob("*.txt"))) == n
