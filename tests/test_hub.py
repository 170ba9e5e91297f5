"""tagger.hub against a local stand-in of the Hub (tests/hubstub.py): no test reaches the network."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tagger import catalog, hub
from tagger.catalog import CATALOG, by_name
from tagger.errors import ModelUnavailableError
from tests.hubstub import HubStub

HF_MAJOR = int(importlib.metadata.version("huggingface_hub").split(".")[0])
NAME = "wd-vit-tagger-v3"
MODEL = by_name(NAME)
V2_NAME = "wd-v1-4-moat-tagger-v2"  # pinned to the git tag v2.0
V2 = by_name(V2_NAME)
assert MODEL is not None and V2 is not None

ONNX = bytes(range(256)) * 1024  # 256 KiB of fake model: several chunks, so truncation falls mid-body
CSV = b'tag_id,name,category,count\n0,general,9,1\n1,1girl,0,5\n2,"quote""d",0,2\n3,hatsune_miku,4,3\n'


@pytest.fixture(autouse=True)
def hf_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A private HF cache, no offline flag, no proxy for 127.0.0.1, default timeouts."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT",
                "HF_HUB_ETAG_TIMEOUT", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStub]:
    """The stand-in Hub serving the catalog repos used here; HF_ENDPOINT points at it."""
    with HubStub() as server:
        server.add_repo(MODEL.repo_id, {"model.onnx": ONNX, "selected_tags.csv": CSV}, revision="main")
        server.add_repo(V2.repo_id, {"model.onnx": ONNX[::-1], "selected_tags.csv": CSV}, revision="v2.0")
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def put_model(folder: Path, onnx: bytes = ONNX, csv_name: str = "selected_tags.csv", onnx_name: str = "model.onnx"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / onnx_name).write_bytes(onnx)
    (folder / csv_name).write_bytes(CSV)
    return folder


def fill_cache(stub: HubStub, cache: Path, model=MODEL) -> None:
    """A real huggingface_hub cache layout, made by huggingface_hub itself from the stand-in."""
    from huggingface_hub import hf_hub_download

    for filename in model.files:
        hf_hub_download(model.repo_id, filename, revision=model.revision, endpoint=stub.url, cache_dir=cache)


def assert_unavailable_message(message: str, models_dir: Path, model=MODEL, *, downloads: bool = True) -> None:
    """What every "cannot have this model" message says: which model, what to do, where the files go."""
    assert message.startswith(f"Model '{model.name}' ({model.repo_id}) is not here")
    assert "\nTo get it:\n  - " in message
    assert model.revision in message and "model.onnx" in message and "selected_tags.csv" in message
    assert str((models_dir / model.name).absolute()) in message
    assert ("HF_ENDPOINT=https://hf-mirror.com" in message) is downloads


# -- downloads -------------------------------------------------------------------------------------------


def test_download_into_models_dir_then_no_request(stub: HubStub, models_dir: Path, hf_env: Path) -> None:
    files = hub.resolve_model(NAME, models_dir, progress=False)
    assert files.source == "download"
    assert files.model_path == models_dir / NAME / "model.onnx"
    assert files.tags_path == models_dir / NAME / "selected_tags.csv"
    assert files.model_path.read_bytes() == ONNX and files.tags_path.read_bytes() == CSV
    assert (files.repo_id, files.revision, files.model_id) == (MODEL.repo_id, "main", f"{MODEL.repo_id}@main")
    assert stub.count("GET") == 2
    assert not hf_env.exists() or not any(hf_env.rglob("model.onnx"))  # went to the models folder, not the cache

    stub.reset_requests()
    again = hub.resolve_model(NAME, models_dir, progress=False)
    assert again.source == "local" and again.model_path == files.model_path
    assert again.model_id == files.model_id
    assert stub.requests == []


def test_download_follows_the_hubs_redirects(stub: HubStub, models_dir: Path) -> None:
    # A renamed repository answers 307 to its new name; LFS files (the model) are sent from a content server
    # on another host. Both as on the real Hub.
    stub.repos["SmilingWolf/renamed"] = stub.repos.pop(MODEL.repo_id)
    stub.rename(MODEL.repo_id, "SmilingWolf/renamed")
    files = hub.resolve_model(NAME, models_dir, progress=False)
    assert files.model_path.read_bytes() == ONNX and files.tags_path.read_bytes() == CSV
    gets = sorted(r.path for r in stub.requests if r.method == "GET" and not r.path.startswith("/api/"))
    sha = hashlib.sha256(ONNX).hexdigest()
    assert gets == ["/SmilingWolf/renamed/resolve/main/selected_tags.csv", f"/cdn/{sha}/model.onnx"]


def test_download_model_and_repo_id_as_name(stub: HubStub, models_dir: Path) -> None:
    files = hub.download_model(MODEL.repo_id, models_dir, progress=True)  # the bar must not break anything
    assert files.name == NAME and files.source == "download"
    assert files.model_path.read_bytes() == ONNX
    stub.reset_requests()
    assert hub.download_model(NAME, models_dir).source == "local"
    assert stub.requests == []


def test_pinned_tag_revision(stub: HubStub, models_dir: Path) -> None:
    files = hub.resolve_model(V2_NAME, models_dir, progress=False)
    assert files.revision == "v2.0" and files.model_path.read_bytes() == ONNX[::-1]
    asked = [r.path for r in stub.requests if "/resolve/" in r.path]
    assert asked and all("/resolve/v2.0/" in path for path in asked)


def test_hf_cache_is_used_without_request(stub: HubStub, models_dir: Path, hf_env: Path) -> None:
    fill_cache(stub, hf_env, V2)
    stub.reset_requests()
    files = hub.resolve_model(V2_NAME, models_dir, progress=False)
    assert files.source == "cache"
    assert files.model_path.read_bytes() == ONNX[::-1] and files.tags_path.read_bytes() == CSV
    assert hf_env in files.model_path.parents
    assert files.model_id == f"{V2.repo_id}@v2.0"
    assert stub.requests == []
    assert not (models_dir / V2_NAME).exists()


def test_hf_home_is_read_at_call_time(
    stub: HubStub, models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "hf-home"
    fill_cache(stub, home / "hub")
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")  # any request would fail
    files = hub.resolve_model(NAME, models_dir, progress=False)
    assert files.source == "cache" and (home / "hub") in files.model_path.parents


def test_cache_works_offline(stub: HubStub, models_dir: Path, hf_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fill_cache(stub, hf_env)
    stub.reset_requests()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.resolve_model(NAME, models_dir).source == "cache"
    assert stub.requests == []


# -- failures --------------------------------------------------------------------------------------------


def test_offline_with_nothing_here(stub: HubStub, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # after huggingface_hub was imported: read at call time
    with pytest.raises(ModelUnavailableError) as info:
        hub.resolve_model(NAME, models_dir)
    message = str(info.value)
    assert_unavailable_message(message, models_dir, downloads=False)
    assert "offline" in message and "HF_HUB_OFFLINE" in message
    assert stub.url in message  # the current HF_ENDPOINT value
    assert stub.requests == []


def test_download_off(stub: HubStub, models_dir: Path) -> None:
    with pytest.raises(ModelUnavailableError) as info:
        hub.resolve_model(NAME, models_dir, download=False)
    assert_unavailable_message(str(info.value), models_dir, downloads=False)
    assert f"python -m tagger models download {NAME}" in str(info.value)
    assert stub.requests == []


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda s: s.repos.pop(MODEL.repo_id), "repository"),
        (lambda s: s.repos[MODEL.repo_id].revisions.pop("main"), "revision main was not found"),
        (lambda s: s.repos[MODEL.repo_id].revisions["main"].pop("model.onnx"), "model.onnx was not found"),
    ],
    ids=["repo", "revision", "file"],
)
def test_not_found(stub: HubStub, models_dir: Path, setup, expected: str) -> None:
    setup(stub)
    start = time.monotonic()
    with pytest.raises(ModelUnavailableError) as info:
        hub.resolve_model(NAME, models_dir, progress=False)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert_unavailable_message(message, models_dir)
    assert expected in message and "not found" in message
    assert info.value.__cause__ is not None
    assert stub.count("GET") == 0  # nothing downloaded when one file is missing
    assert not (models_dir / NAME / "selected_tags.csv").exists()


def test_connection_refused_fails_fast(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    start = time.monotonic()
    with pytest.raises(ModelUnavailableError) as info:
        hub.resolve_model(NAME, models_dir, progress=False)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert_unavailable_message(message, models_dir)
    assert f"cannot connect to {endpoint}" in message
    assert f"(it is {endpoint} now)" in message
    assert info.value.__cause__ is not None


def test_first_failed_download_leads_with_what_to_do(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As a new user meets it: the command line, the default (hidden) models folder, no connection.
    from tagger import cli, paths

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TAGGER_MODELS_DIR", raising=False)
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    assert cli.main(["models", "download", "wd-vit-v3"]) == 2
    lines = capsys.readouterr().err.splitlines()
    default_folder = paths.models_dir() / NAME
    assert lines[0] == (
        f"error: Model '{NAME}' ({MODEL.repo_id}) is not here and could not be downloaded: cannot connect to "
        f"{endpoint}."
    )
    assert lines[1:4] == [
        "To get it:",
        "  - connect this machine to the internet, then try again",
        "  - or set HF_ENDPOINT to a Hugging Face mirror this machine can reach, e.g. "
        f"HF_ENDPOINT=https://hf-mirror.com (it is {endpoint} now)",
    ]
    assert lines[4].startswith(f"  - or download model.onnx and selected_tags.csv from {endpoint}/{MODEL.repo_id}")
    assert lines[5:7] == [
        f"    {default_folder.absolute()}{os.sep}",
        "    (the default models folder; choose another with --models-dir DIR or TAGGER_MODELS_DIR)",
    ]
    # then the technical cause, in one short line (not the HTTP client's nested repr)
    assert len(lines) == 8 and lines[7].startswith("Cause: ConnectionRefusedError: ") and len(lines[7]) < 100

    # a folder the user chose needs no hint about choosing one
    with pytest.raises(ModelUnavailableError) as info:
        hub.resolve_model(NAME, models_dir, progress=False)
    assert "--models-dir" not in str(info.value) and str(models_dir / NAME) in str(info.value)


def test_timeout(stub: HubStub, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stub.head_delay = 3
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "0.5")
    start = time.monotonic()
    with pytest.raises(ModelUnavailableError) as info:
        hub.resolve_model(NAME, models_dir, progress=False)
    assert time.monotonic() - start < 2.5
    assert "did not answer in time" in str(info.value)
    assert_unavailable_message(str(info.value), models_dir)


def test_not_a_hub(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with HubStub() as other:  # answers 404 without Hub headers for every path
        monkeypatch.setenv("HF_ENDPOINT", other.url + "/not-hub")
        with pytest.raises(ModelUnavailableError) as info:
            hub.resolve_model(NAME, models_dir, progress=False)
    assert_unavailable_message(str(info.value), models_dir)


# -- damaged and interrupted downloads -----------------------------------------------------------------


def test_corrupt_file_is_fetched_again(stub: HubStub, models_dir: Path) -> None:
    stub.add_fault("model.onnx", "corrupt")
    files = hub.resolve_model(NAME, models_dir, progress=False)
    assert files.model_path.read_bytes() == ONNX
    assert stub.count("GET", "model.onnx") == 2


def test_corrupt_csv_is_fetched_again(stub: HubStub, models_dir: Path) -> None:
    stub.add_fault("selected_tags.csv", "corrupt")  # a regular file: checked against its git blob sha1
    files = hub.resolve_model(NAME, models_dir, progress=False)
    assert files.tags_path.read_bytes() == CSV
    assert stub.count("GET", "selected_tags.csv") == 2


def test_corrupt_twice_fails_and_leaves_nothing(stub: HubStub, models_dir: Path) -> None:
    stub.add_fault("model.onnx", "corrupt", "corrupt")
    with pytest.raises(ModelUnavailableError) as info:
        hub.resolve_model(NAME, models_dir, progress=False)
    message = str(info.value)
    assert "arrived damaged twice" in message and "sha256" in message
    assert_unavailable_message(message, models_dir)
    assert not (models_dir / NAME / "model.onnx").exists()
    assert hub.model_files_in(models_dir / NAME) is None


def test_interrupted_download_resumes(stub: HubStub, models_dir: Path) -> None:
    # huggingface_hub 2.x writes in 10 MiB chunks: a broken transfer resumes from the last whole chunk, so
    # the file must be larger than one chunk for the resume to show as a Range request.
    big = os.urandom(24 << 20)
    stub.add_repo(MODEL.repo_id, {"model.onnx": big, "selected_tags.csv": CSV}, revision="main")
    stub.add_fault("model.onnx", "truncate")
    files = hub.resolve_model(NAME, models_dir, progress=False)
    assert hashlib.sha256(files.model_path.read_bytes()).digest() == hashlib.sha256(big).digest()
    gets = [r for r in stub.requests if r.method == "GET" and r.path.endswith("model.onnx")]
    assert len(gets) == 2
    assert gets[0].range is None and gets[1].range is not None and gets[1].range.startswith("bytes=")
    assert int(gets[1].range[6:].rstrip("-")) > 0, "the second request should resume, not start over"
    assert not list((models_dir / NAME).rglob("*.incomplete"))


def test_server_error_on_download_is_retried(stub: HubStub, models_dir: Path) -> None:
    stub.add_fault("model.onnx", "503")  # retried by huggingface_hub (0.x) or by tagger.hub (2.x)
    files = hub.resolve_model(NAME, models_dir, progress=False)
    assert files.model_path.read_bytes() == ONNX
    assert stub.count("GET", "model.onnx") == 2


def test_server_errors_on_download_fail_clearly(stub: HubStub, models_dir: Path) -> None:
    if HF_MAJOR == 0:
        pytest.skip("huggingface_hub 0.x retries a 503 with back-off for ~20 s")
    stub.add_fault("model.onnx", "503", "503")
    with pytest.raises(ModelUnavailableError) as info:
        hub.resolve_model(NAME, models_dir, progress=False)
    assert "HTTP 503" in str(info.value)
    assert_unavailable_message(str(info.value), models_dir)
    assert stub.count("GET", "model.onnx") == 2


# -- local folders -----------------------------------------------------------------------------------------


def test_local_folder_of_catalog_model_wins(stub: HubStub, models_dir: Path) -> None:
    put_model(models_dir / NAME, onnx=b"hand-made")
    files = hub.resolve_model(NAME, models_dir)
    assert files.source == "local" and files.model_path.read_bytes() == b"hand-made"
    assert files.repo_id == MODEL.repo_id
    assert stub.requests == []


def test_empty_local_file_is_not_a_model(stub: HubStub, models_dir: Path) -> None:
    put_model(models_dir / NAME, onnx=b"")
    assert hub.model_files_in(models_dir / NAME) is None
    files = hub.resolve_model(NAME, models_dir, progress=False)
    assert files.source == "download" and files.model_path.read_bytes() == ONNX


def test_local_model_by_name(stub: HubStub, models_dir: Path) -> None:
    put_model(models_dir / "my-tagger", onnx_name="tagger.onnx", csv_name="tags.csv")
    files = hub.resolve_model("my-tagger", models_dir)
    assert (files.name, files.source, files.repo_id, files.revision) == ("my-tagger", "local", None, None)
    assert files.model_id == "local:my-tagger"
    assert files.model_path.name == "tagger.onnx" and files.tags_path.name == "tags.csv"
    assert stub.requests == []


def test_direct_folder_path(tmp_path: Path, models_dir: Path) -> None:
    folder = put_model(tmp_path / "elsewhere" / "some-model")
    files = hub.resolve_model(str(folder), models_dir)
    assert files.source == "local" and files.model_path == folder / "model.onnx"
    assert files.model_id == f"local:{folder.resolve()}"
    # a path into the models folder is the same model as its name
    put_model(models_dir / NAME)
    by_path = hub.resolve_model(str(models_dir / NAME), models_dir)
    assert by_path.name == NAME and by_path.model_id == f"{MODEL.repo_id}@main"


def test_unknown_name(models_dir: Path, tmp_path: Path) -> None:
    put_model(models_dir / "mine")
    with pytest.raises(ModelUnavailableError) as info:
        hub.resolve_model("no-such-model", models_dir)
    message = str(info.value)
    assert "no-such-model" in message and NAME in message and "mine" in message
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    with pytest.raises(ModelUnavailableError, match="holds no model"):
        hub.resolve_model(str(empty), models_dir)


def test_model_files_in(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    assert hub.model_files_in(folder) is None
    folder.mkdir()
    (folder / "model.onnx.incomplete").write_bytes(b"partial")
    (folder / "selected_tags.csv").write_bytes(CSV)
    assert hub.model_files_in(folder) is None
    (folder / "a.onnx").write_bytes(b"x")
    (folder / "other.csv").write_bytes(CSV)
    assert hub.model_files_in(folder) == (folder / "a.onnx", folder / "selected_tags.csv")
    (folder / "b.onnx").write_bytes(b"x")
    assert hub.model_files_in(folder) is None  # two models, neither called model.onnx
    (folder / "model.onnx").write_bytes(b"x")
    assert hub.model_files_in(folder) == (folder / "model.onnx", folder / "selected_tags.csv")
    (folder / "more.csv").write_bytes(CSV)
    (folder / "selected_tags.csv").unlink()
    assert hub.model_files_in(folder) is None  # two csv files, neither selected_tags.csv
    (folder / "more.csv").unlink()
    assert hub.model_files_in(folder) == (folder / "model.onnx", folder / "other.csv")


# -- listing -----------------------------------------------------------------------------------------------


def test_list_models(stub: HubStub, models_dir: Path, hf_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    infos = hub.list_models(models_dir)  # no models folder yet
    assert [i.name for i in infos] == [m.name for m in CATALOG]
    assert not any(i.downloaded for i in infos)
    assert all(i.size_bytes is None and i.path is None for i in infos)

    fill_cache(stub, hf_env, V2)
    put_model(models_dir / NAME)
    put_model(models_dir / "zz-custom", onnx_name="x.onnx", csv_name="tags.csv")
    put_model(models_dir / "A-custom")
    (models_dir / "no-csv").mkdir()
    (models_dir / "no-csv" / "model.onnx").write_bytes(b"x")
    (models_dir / ".cache").mkdir()
    stub.reset_requests()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")

    infos = hub.list_models(models_dir)
    by = {i.name: i for i in infos}
    assert [i.name for i in infos] == [m.name for m in CATALOG] + ["A-custom", "zz-custom"]
    vit = by[NAME]
    assert vit.downloaded and vit.path == models_dir / NAME and vit.family == "v3"
    assert vit.size_bytes == len(ONNX) + len(CSV) and vit.tags == MODEL.tags
    assert vit.display_name == MODEL.display_name and vit.repo_id == MODEL.repo_id
    v2 = by[V2_NAME]
    assert v2.downloaded and v2.path is not None and hf_env in v2.path.parents and v2.revision == "v2.0"
    custom = by["zz-custom"]
    assert (custom.family, custom.repo_id, custom.downloaded, custom.tags) == ("local", None, True, 4)
    assert custom.path == models_dir / "zz-custom"
    assert not by["wd-eva02-large-tagger-v3"].downloaded
    assert stub.requests == []


def test_import_is_lazy() -> None:
    code = "import sys, tagger.hub; assert 'huggingface_hub' not in sys.modules, 'imported at import time'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).parents[1])


# -- names: catalog names, repo ids and the older extensions' aliases -------------------------------------

# What the older WD14 tagger extensions called the models of this catalog, read from their tagger/utils.py:
# toriato's and Akegarasu's model list keys, picobyte's keys and display names. Scripts, presets and settings
# written for them must keep working here.
OLDER_EXTENSIONS_NAMES = {
    "wd14-vit-v2": "wd-v1-4-vit-tagger-v2",
    "wd14-vit-v2-git": "wd-v1-4-vit-tagger-v2",
    "wd14-convnext-v2": "wd-v1-4-convnext-tagger-v2",
    "wd14-convnext-v2-git": "wd-v1-4-convnext-tagger-v2",
    "wd14-swinv2-v2": "wd-v1-4-swinv2-tagger-v2",
    "wd14-swinv2-v2-git": "wd-v1-4-swinv2-tagger-v2",
    "wd14-convnextv2-v2": "wd-v1-4-convnextv2-tagger-v2",
    "wd14-convnextv2-v2-git": "wd-v1-4-convnextv2-tagger-v2",
    "wd14-moat-v2": "wd-v1-4-moat-tagger-v2",
    "wd-vit-v3": "wd-vit-tagger-v3",
    "wd-swinv2-v3": "wd-swinv2-tagger-v3",
    "wd-convnext-v3": "wd-convnext-tagger-v3",
    "wd-vit-large-tagger-v3": "wd-vit-large-tagger-v3",
    "wd-eva02-large-tagger-v3": "wd-eva02-large-tagger-v3",
    "wd14-vit.v2": "wd-v1-4-vit-tagger-v2",
    "wd14-convnext.v2": "wd-v1-4-convnext-tagger-v2",
    "wd14-convnextv2.v1": "wd-v1-4-convnextv2-tagger-v2",
    "wd14-swinv2-v1": "wd-v1-4-swinv2-tagger-v2",
    "wd-v1-4-moat-tagger.v2": "wd-v1-4-moat-tagger-v2",
    "WD14 ViT v2": "wd-v1-4-vit-tagger-v2",
    "WD14 ConvNeXT v2": "wd-v1-4-convnext-tagger-v2",
    "WD14 ConvNeXTV2 v1": "wd-v1-4-convnextv2-tagger-v2",
    "WD14 SwinV2 v1": "wd-v1-4-swinv2-tagger-v2",
    "WD14 moat tagger v2": "wd-v1-4-moat-tagger-v2",
}


@pytest.mark.parametrize(("name", "expected"), sorted(OLDER_EXTENSIONS_NAMES.items()))
def test_older_extensions_names_are_catalog_models(name: str, expected: str) -> None:
    assert catalog.canonical(name) == expected
    assert catalog.canonical(f"  {name.upper()} ") == expected


def test_older_extensions_names_of_the_other_families_name_their_own_models(models_dir: Path) -> None:
    # the v1 taggers, ML-Danbooru and Z3D are in the catalog now: their names (toriato's, picobyte's) land on
    # those models, never on a v2 model whose name looks alike
    expected = {
        "wd14-vit": "wd-v1-4-vit-tagger",
        "wd14-vit.v1": "wd-v1-4-vit-tagger",
        "WD14 ViT v1": "wd-v1-4-vit-tagger",
        "wd14-convnext": "wd-v1-4-convnext-tagger",
        "wd14-convnext.v1": "wd-v1-4-convnext-tagger",
        "WD14 ConvNeXT v1": "wd-v1-4-convnext-tagger",
        "mld-caformer.dec-5-97527": "ml-danbooru-caformer-dec-5-97527",
        "mld-tresnetd.6-30000": "ml-danbooru-tresnetd-6-30000",
        "Z3D-E621-Convnext": "z3d-e621-convnext",
    }
    for name, model in expected.items():
        assert catalog.canonical(name) == model
    for name in ("", "v2", "deepghs/ml-danbooru-onnx"):  # a repository holding two models names neither
        assert catalog.canonical(name) is None
    with pytest.raises(ModelUnavailableError, match=r"'wd-v1-4-vit-tagger' \(SmilingWolf/wd-v1-4-vit-tagger\)"):
        hub.resolve_model("wd14-vit", models_dir, download=False)


def test_aliases_are_unambiguous() -> None:
    owner: dict[str, str] = {}
    repos = [m.repo_id for m in CATALOG]
    for model in CATALOG:
        unique = repos.count(model.repo_id) == 1
        assert catalog.canonical(model.name) == model.name
        assert catalog.canonical(model.repo_id) == (model.name if unique else None)
        for spelling in (model.name, *([model.repo_id] if unique else []), *model.aliases):
            key = spelling.casefold()
            assert owner.setdefault(key, model.name) == model.name, f"{spelling!r} names two models"
            assert spelling == spelling.strip() and spelling
        for alias in model.aliases:
            assert catalog.canonical(alias) == model.name
            assert catalog.canonical(alias.swapcase()) == model.name
            assert by_name(alias) is None  # by_name stays exact: an alias is never a folder or cache key


@pytest.fixture
def catalog_stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStub]:
    """The stand-in Hub serving every catalog repository, each with content of its own."""
    with HubStub() as server:
        repos: dict[tuple[str, str], dict[str, bytes]] = {}
        for model in CATALOG:  # a repository may hold several models (ML-Danbooru's two)
            files = repos.setdefault((model.repo_id, model.revision), {})
            files.update({model.files[0]: repo_onnx(model), model.files[1]: CSV})
        for (repo_id, revision), files in repos.items():
            server.add_repo(repo_id, files, revision)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def repo_onnx(model) -> bytes:
    return f"{model.repo_id}/{model.model_file}".encode() * 64


@pytest.mark.parametrize(
    ("model", "alias"), [(m, a) for m in CATALOG for a in m.aliases], ids=[a for m in CATALOG for a in m.aliases]
)
def test_every_alias_downloads_its_model(catalog_stub: HubStub, tmp_path: Path, model, alias: str) -> None:
    models_dir = tmp_path / "models"
    files = hub.resolve_model(alias, models_dir, progress=False)
    assert (files.name, files.repo_id, files.revision, files.source) == (
        model.name, model.repo_id, model.revision, "download"
    )  # fmt: skip
    assert files.model_path == models_dir / model.name / model.files[0]
    assert files.model_path.read_bytes() == repo_onnx(model)
    asked = [r.path for r in catalog_stub.requests if "/resolve/" in r.path]
    assert asked and all(f"/{model.repo_id}/resolve/{model.revision}/" in path for path in asked)
    catalog_stub.reset_requests()
    again = hub.resolve_model(alias.upper(), models_dir)  # then found in the models folder, by any spelling
    assert (again.source, again.model_id) == ("local", files.model_id)
    assert catalog_stub.requests == []


def test_local_folder_named_like_an_alias_is_the_users_model(stub: HubStub, models_dir: Path) -> None:
    put_model(models_dir / "wd14-vit-v2", onnx=b"my own")  # e.g. copied from an older extension's folder
    files = hub.resolve_model("wd14-vit-v2", models_dir)
    assert (files.name, files.source, files.repo_id) == ("wd14-vit-v2", "local", None)
    assert files.model_path.read_bytes() == b"my own"
    assert stub.requests == []


def test_cli_model_by_an_older_name(stub: HubStub, models_dir: Path, solid_image, capsys) -> None:
    # Akegarasu's name for wd-vit-tagger-v3, on the command line: downloaded from the stand-in Hub, then used
    from tagger import cli
    from tests.modelgen import make_model_dir

    source = make_model_dir(models_dir.parent / "generated")
    repo = {name: (source / name).read_bytes() for name in MODEL.files}
    stub.add_repo(MODEL.repo_id, repo, revision=MODEL.revision)
    image = solid_image((255, 0, 0), "red.png")
    argv = ["tag", str(image), "--model", "wd-vit-v3", "--models-dir", str(models_dir), "--format", "json"]
    assert cli.main(argv) == 0
    assert (models_dir / NAME / "model.onnx").read_bytes() == repo["model.onnx"]
    assert "red_theme" in capsys.readouterr().out
