"""The probability cache: exact re-thresholding without the model, robustness of the SQLite file."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger.batch import BatchConfig, run_batch
from tagger.cache import ProbCache, content_hash, file_hash
from tagger.engine import Tagger
from tagger.labels import Labels
from tagger.options import TagOptions
from tagger.postprocess import postprocess

RNG = np.random.default_rng(7)
BIG = Labels.from_rows(
    [(r, 9) for r in ("general", "sensitive", "questionable", "explicit")]
    + [(f"tag_{i}", 4 if i % 7 == 3 else 0) for i in range(3000)]
)


def realistic_probs(n: int) -> np.ndarray:
    """Mostly tiny probabilities with a few confident ones, like a real tagger's output."""
    p = RNG.beta(0.08, 6.0, size=n).astype(np.float32)
    hot = RNG.choice(n, size=40, replace=False)
    p[hot] = RNG.uniform(0.2, 1.0, size=40).astype(np.float32)
    return p


OPTION_SETS = [
    TagOptions(),
    TagOptions(general_threshold=0.05, character_threshold=0.3),
    TagOptions(general_threshold=0.01),
    TagOptions(general_mcut=True, character_mcut=True),
    TagOptions(exclude_tags=("tag_1", "tag 2"), weights=True, sort="alpha", max_tags=12, include_rating=True),
    TagOptions(replace_underscores=False, escape=False, additional_tags=("x",)),
]


def test_cached_results_are_identical_for_every_option(tmp_path):
    cache = ProbCache(tmp_path / "c.sqlite3")
    for i in range(30):
        probs = realistic_probs(len(BIG))
        cache.put(f"img{i}", "m", probs, BIG)
        hit = cache.get(f"img{i}", "m")
        assert hit is not None
        for opts in OPTION_SETS:
            assert hit.serves(opts)
            cached = postprocess(hit.probs, BIG, opts, mcut=(hit.mcut_general, hit.mcut_character))
            assert cached == postprocess(probs, BIG, opts), (i, opts)
    assert not cache.get("img0", "other-model")
    assert not cache.get("nope", "m")
    # a threshold under the floor cannot be served exactly: the caller must run the model
    assert not hit.serves(TagOptions(general_threshold=0.005))


def test_entries_are_compact(tmp_path):
    cache = ProbCache(tmp_path / "c.sqlite3")
    labels = Labels.from_rows([(f"t{i}", 9 if i < 4 else 0) for i in range(10861)])
    for i in range(200):
        cache.put(f"i{i}", "m", realistic_probs(10861), labels)
    per_entry = cache.size_bytes() / 200
    assert per_entry < 10861 * 4 / 4, f"{per_entry:.0f} bytes per entry: not compact"


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    out = []
    for i, rgb in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 200, 200), (10, 10, 10)]):
        out.append(tmp_path / "imgs" / f"{i}.png")
        out[-1].parent.mkdir(exist_ok=True)
        Image.new("RGB", (40, 40), rgb).save(out[-1])
    return out


def test_engine_reinterrogates_from_cache(model_root, tmp_path, images):
    cache = ProbCache(tmp_path / "c.sqlite3")
    t = Tagger(model_root, "cpu", download=False, cache=cache)
    first = t.tag_image("test-model", images[0])
    assert not first.cached and first.provider == "CPU"
    t.unload_all()
    again = t.tag_image("test-model", images[0], TagOptions(general_threshold=0.55, weights=True))
    assert again.cached and again.provider == "cache" and t.loaded() == []
    direct = Tagger(model_root, "cpu", download=False).tag_image(
        "test-model", images[0], TagOptions(general_threshold=0.55, weights=True)
    )
    assert again.result == direct.result
    # PIL images (the UI's input) and bytes (the API's) are keyed by content too
    with Image.open(images[1]) as im:
        pil = im.convert("RGB")
    assert not t.tag_image("test-model", pil).cached and t.tag_image("test-model", pil.copy()).cached
    data = images[2].read_bytes()
    assert not t.tag_image("test-model", data).cached and t.tag_image("test-model", data).cached
    # under the floor, the model answers
    assert not t.tag_image("test-model", images[0], TagOptions(general_threshold=0.001)).cached


def test_a_changed_model_file_misses(model_root, tmp_path, images):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(model_root / "test-model", models / "m")
    cache = ProbCache(tmp_path / "c.sqlite3")
    t = Tagger(models, "cpu", download=False, cache=cache)
    t.tag_image("m", images[0])
    assert t.tag_image("m", images[0]).cached
    st = (models / "m" / "model.onnx").stat()
    os.utime(models / "m" / "model.onnx", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert not t.tag_image("m", images[0]).cached


def test_batch_rethreshold_without_the_model(model_root, tmp_path, images):
    cache_path = tmp_path / "c.sqlite3"
    folder = images[0].parent
    run_batch(Tagger(model_root, "cpu", cache=ProbCache(cache_path)), "test-model", BatchConfig([folder]), TagOptions())
    new_opts = TagOptions(general_threshold=0.5, exclude_tags=("solo",), weights=True, escape=False)  # as captions
    fresh = Tagger(model_root, "cpu", cache=ProbCache(cache_path))
    s = run_batch(fresh, "test-model", BatchConfig([folder], existing="overwrite"), new_opts)
    assert s.tagged == 5 and fresh.loaded() == [], "the model must not be loaded when every image is cached"
    reference = Tagger(model_root, "cpu")
    for img in images:
        assert img.with_suffix(".txt").read_text() == reference.tag_image("test-model", img, new_opts).result.prompt
    # a mix: one new image needs the model, the cached ones keep their order
    Image.new("RGB", (40, 40), (255, 0, 255)).save(folder / "9.png")
    out = list(fresh.tag_many("test-model", sorted(folder.glob("*.png")), new_opts))
    assert [o.cached for o in out] == [True] * 5 + [False]
    assert [Path(o.source).name for o in out] == ["0.png", "1.png", "2.png", "3.png", "4.png", "9.png"]


def test_corrupt_file_is_set_aside_and_rebuilt(tmp_path, caplog):
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    cache = ProbCache(path)
    with caplog.at_level(logging.WARNING):
        cache.put("a", "m", realistic_probs(len(BIG)), BIG)
    assert cache.get("a", "m") is not None
    assert any("moved to" in r.message for r in caplog.records)
    assert len(list(tmp_path.glob("c.sqlite3.broken-*"))) == 1


def test_foreign_database_is_set_aside(tmp_path):
    path = tmp_path / "c.sqlite3"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE important(x)")
        other.execute("INSERT INTO important VALUES (42)")
    cache = ProbCache(path)
    cache.put("a", "m", realistic_probs(len(BIG)), BIG)
    assert cache.stats()["entries"] == 1
    aside = next(tmp_path.glob("c.sqlite3.broken-*"))
    with sqlite3.connect(aside) as other:
        assert other.execute("SELECT x FROM important").fetchone() == (42,)


def test_concurrent_readers_and_writers(tmp_path):
    path = tmp_path / "c.sqlite3"
    writer, reader = ProbCache(path), ProbCache(path)  # two connections, as two processes would have
    probs = {f"k{i}": realistic_probs(len(BIG)) for i in range(60)}
    errors: list[BaseException] = []

    def write():
        try:
            for k, p in probs.items():
                writer.put(k, "m", p, BIG)
        except BaseException as e:
            errors.append(e)

    def read():
        try:
            for _ in range(5):
                for k, p in probs.items():
                    hit = reader.get(k, "m")
                    if hit is not None:
                        assert np.array_equal(hit.probs[p >= 0.01], p[p >= 0.01])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert reader.stats()["entries"] == 60


def test_size_cap_and_clear(tmp_path):
    cache = ProbCache(tmp_path / "c.sqlite3", max_bytes=64 * 1024)
    for i in range(600):
        cache.put(f"k{i}", "m", realistic_probs(len(BIG)), BIG)
    stats = cache.stats()
    assert stats["entries"] < 600 and cache.get("k599", "m") is not None and cache.get("k0", "m") is None
    assert cache.clear() == stats["entries"] and cache.stats()["entries"] == 0


def test_size_cap_holds_across_short_runs(tmp_path):
    """Ten runs of 40 images, each a new ProbCache as a new CLI process would be, far fewer writes than any
    periodic check would wait for. The cap counts the pages in use; the file may also hold up to SLACK of
    free pages (evictions free pages that later writes reuse; an insert can split a page between checks)."""
    cap, slack = 64 * 1024, 4 * 4096
    path = tmp_path / "c.sqlite3"
    for run in range(10):
        cache = ProbCache(path, max_bytes=cap)
        for i in range(40):
            cache.put(f"r{run}i{i}", "m", realistic_probs(len(BIG)), BIG)
            assert cache.size_bytes() <= cap + slack, (run, i)
        assert cache.get(f"r{run}i39", "m") is not None  # the newest entries are the ones kept
        cache.close()
        on_disk = sum(p.stat().st_size for p in tmp_path.glob("c.sqlite3*"))
        assert on_disk <= cap + slack, f"run {run}: {on_disk} bytes on disk"
    assert cache.get("r0i0", "m") is None


def test_a_cache_over_a_smaller_cap_shrinks_when_opened(tmp_path):
    path = tmp_path / "c.sqlite3"
    big = ProbCache(path)
    for i in range(100):
        big.put(f"k{i}", "m", realistic_probs(len(BIG)), BIG)
    big.close()
    assert ProbCache(path).stats()["bytes"] > 256 * 1024
    small = ProbCache(path, max_bytes=128 * 1024)
    assert small.stats()["bytes"] <= 128 * 1024 and small.get("k99", "m") is not None


def test_content_hash_is_of_bytes(tmp_path):
    assert content_hash(b"abc") == content_hash(bytearray(b"abc")) != content_hash(b"abd")
    big = tmp_path / "big.bin"  # over the 1 MiB read size: a path and its bytes get the same key
    big.write_bytes(os.urandom(3 << 19))
    assert file_hash(big) == content_hash(big.read_bytes())


def test_cli_second_run_answers_from_cache(model_root, tmp_path, images):
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    cache = tmp_path / "cli-cache.sqlite3"

    def cli(*args: str) -> subprocess.CompletedProcess:
        base = [sys.executable, "-m", "tagger", "tag", str(images[0]), "--models-dir", str(model_root)]
        cmd = [*base, "--model", "test-model", "--cache", str(cache), *args]
        return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)

    first = cli()
    assert "model test-model on CPU" in first.stderr
    second = cli("--general-threshold", "0.55")
    assert second.returncode == 0 and "model test-model" not in second.stderr  # the model was never loaded
    assert second.stdout != first.stdout and "long hair" not in second.stdout
    nocache = cli("--general-threshold", "0.55", "--no-cache")
    assert nocache.stdout == second.stdout and "model test-model on CPU" in nocache.stderr
    info = subprocess.run(
        [sys.executable, "-m", "tagger", "cache", "--cache", str(cache)], cwd=root, capture_output=True, text=True
    )
    assert "1 entries" in info.stdout and "local:test-model" in info.stdout
    cleared = subprocess.run(
        [sys.executable, "-m", "tagger", "cache", "clear", "--cache", str(cache)],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert "removed 1 entries" in cleared.stdout


def cache_cli(capsys, *args: str) -> tuple[int, str, str]:
    """``python -m tagger ARGS`` in this process: exit status, stdout, stderr."""
    import io

    from tagger.cli import main

    out = io.StringIO()
    rc = main(list(args), out=out)
    return rc, out.getvalue(), capsys.readouterr().err


def test_cache_option_takes_a_folder(model_root, tmp_path, images, capsys):
    folder = tmp_path / "cachedir"
    folder.mkdir()
    rc, out, _ = cache_cli(capsys, "cache", "--cache", str(folder))
    assert rc == 0 and "no probability cache there" in out and not list(folder.iterdir())  # info creates nothing
    tag = ["tag", str(images[0]), "--models-dir", str(model_root), "--model", "test-model", "--cache", str(folder)]
    assert cache_cli(capsys, *tag)[0] == 0
    assert "model test-model on CPU" not in cache_cli(capsys, *tag)[2]  # the second answer came from the cache
    rc, out, _ = cache_cli(capsys, "cache", "info", "--cache", str(folder))
    assert rc == 0 and out.startswith(f"{folder / 'probs.sqlite3'}: 1 entries")
    rc, out, _ = cache_cli(capsys, "cache", "clear", "--cache", str(folder))
    assert rc == 0 and "removed 1 entries" in out


def test_a_file_that_is_not_a_cache_is_refused_and_left_alone(model_root, tmp_path, images, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n" * 20)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE important(x)")
    tag = ["tag", str(images[0]), "--models-dir", str(model_root), "--model", "test-model"]
    for path, what in [(notes, "not a database"), (other, "an SQLite database of another program")]:
        for args in (
            ["cache", "clear", "--cache", str(path)],
            ["cache", "--cache", str(path)],
            [*tag, "--cache", str(path)],
        ):
            rc, _, err = cache_cli(capsys, *args)
            assert rc == 2 and f"{path} is not a tagger probability cache ({what}" in err
            assert "nothing was changed" in err
    assert notes.read_text() == "my notes\n" * 20 and sorted(p.name for p in tmp_path.iterdir()) == [
        "imgs", "notes.txt", "other.db"
    ]  # fmt: skip
    rc, _, err = cache_cli(capsys, "cache", "--cache", str(notes / "x.sqlite3"))
    assert rc == 2 and f"{notes} is a file, not a folder" in err


def test_a_cache_that_cannot_be_opened_is_skipped_with_one_warning(tmp_path, caplog):
    (tmp_path / "file").write_text("x")
    cache = ProbCache(tmp_path / "file" / "c.sqlite3")  # its folder is a file: it can never be made
    with caplog.at_level(logging.WARNING):
        for i in range(3):
            cache.put(f"k{i}", "m", realistic_probs(len(BIG)), BIG)
            assert cache.get(f"k{i}", "m") is None
    assert len([r for r in caplog.records if "cannot be opened" in r.message]) == 1
