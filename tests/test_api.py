"""The HTTP API over real HTTP: a live uvicorn server on 127.0.0.1 serving the real FastAPI app, with the
generated test model and real PNG/JPEG files. Runs under both host pins (pydantic 1 / FastAPI 0.94 and
pydantic 2 / FastAPI 0.104). No test reaches the network: the Hub is tests/hubstub.py or a closed port.

(starlette's TestClient of FastAPI 0.94/0.104 does not work with httpx >= 0.28, so every test talks to a
live server, which is also closer to production.)
"""

from __future__ import annotations

import base64
import gc
import io
import json
import socket
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

import tagger.engine
from tagger.api import ApiLimits, create_app, mount_api, parse_api_auth
from tagger.catalog import CATALOG, by_name
from tagger.engine import Tagger
from tagger.options import OPTION_FIELDS, TagOptions, options_from_mapping
from tests.modelgen import RATING, ROWS, expected_probs, make_model_dir

PREFIX = "/tagger/v1"
RED, GREEN, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 0)


# -- helpers -----------------------------------------------------------------------------------------------


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 (a free port) in a thread; a context manager."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.url = ""

    def __enter__(self) -> LiveServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it: no 40 ms Nagle waits
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert self.thread.is_alive(), "uvicorn stopped at start"
            time.sleep(0.01)
        return self

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url + PREFIX, trust_env=False, **kwargs)

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class CountingLock:
    """A stand-in for the host's queue_lock (the engine's run_lock) that counts how often a model run took it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0

    def __enter__(self) -> CountingLock:
        self.lock.acquire()
        self.count += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def image_bytes(rgb: tuple[int, int, int] = RED, fmt: str = "PNG", size: tuple[int, int] = (40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format=fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png_b64(rgb: tuple[int, int, int] = RED) -> str:
    return b64(image_bytes(rgb))


def noise_png() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with (almost) no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def old_caption(rgb: tuple[int, int, int], threshold: float = 0.35) -> list[tuple[str, float]]:
    """What the earlier extension (toriato's) answered for a solid ``rgb`` image: every rating in csv order,
    then the tags at or above ``threshold`` by probability, highest first (a stable sort)."""
    # The model sees BGR. Probabilities are float32 and were compared with the threshold in float32.
    probs = expected_probs(tuple(c / 255 for c in reversed(rgb))).astype(np.float32)
    threshold = np.float32(threshold)
    ratings = [(r.name, float(p)) for r, p in zip(ROWS, probs, strict=True) if r.category == RATING]
    tags = [(r.name, float(p)) for r, p in zip(ROWS, probs, strict=True) if r.category != RATING and p >= threshold]
    return ratings + sorted(tags, key=lambda kv: -kv[1])


def starlette_json(value: Any) -> str:
    """JSON text as FastAPI's JSONResponse writes it (what the earlier extension's answers looked like)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))


def assert_error(resp: httpx.Response, status: int | tuple[int, ...], field: str | None) -> dict[str, Any]:
    statuses = status if isinstance(status, tuple) else (status,)
    assert resp.status_code in statuses, resp.text
    body = resp.json()
    assert set(body) == {"error", "field", "detail"}, body
    assert isinstance(body["error"], str) and body["error"]
    if field is not None:
        assert body["field"] == field, body
        assert field in body["error"], body
    return body


# -- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def hf_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A private, empty Hugging Face cache and an endpoint that refuses connections: nothing can reach the
    network, and the model list does not depend on this machine's cache."""
    with pytest.MonkeyPatch.context() as mp:
        for var in (
            "HF_HUB_OFFLINE",
            "TRANSFORMERS_OFFLINE",
            "HF_HOME",
            "HUGGINGFACE_HUB_CACHE",
            "HF_HUB_ETAG_TIMEOUT",
        ):
            mp.delenv(var, raising=False)
        mp.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-cache")))
        mp.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def queue_lock() -> CountingLock:
    return CountingLock()


@pytest.fixture(scope="module")
def engine(model_root: Path, queue_lock: CountingLock) -> Tagger:
    return Tagger(model_root, "cpu", download=False, progress=False, threads=1, run_lock=queue_lock)


@pytest.fixture(scope="module")
def server(engine: Tagger) -> Iterator[LiveServer]:
    with LiveServer(create_app(engine)) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def small_server(engine: Tagger) -> Iterator[LiveServer]:
    limits = ApiLimits(max_body_bytes=20_000, max_pixels=50 * 50, max_images_per_request=3)
    with LiveServer(create_app(engine, limits=limits)) as live:
        yield live


def interrogate(client: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("model", "test-model")
    resp = client.post("/interrogate", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


# -- the earlier extensions' routes and shapes ------------------------------------------------------------


def test_interrogators_old_shape_before_anything_loaded(client: httpx.Client, engine: Tagger) -> None:
    engine.unload_all()
    resp = client.get("/interrogators")
    assert resp.status_code == 200
    body = resp.json()
    assert list(body) == ["models"]
    assert body["models"] == [m.name for m in engine.list_models()]
    assert {"test-model", "test-model-b1"} <= set(body["models"])
    assert {m.name for m in CATALOG} <= set(body["models"])
    assert engine.loaded() == []  # listing loads nothing


@pytest.mark.parametrize(
    ("rgb", "threshold"),
    [(RED, 0.35), (RED, 0.5), (RED, 0.2), (GREEN, 0.35), (BLACK, 0.35), (BLACK, 0.9), (RED, 0.05), (RED, 1.0)],
)
def test_old_request_gets_the_old_caption_byte_for_byte(
    client: httpx.Client, rgb: tuple[int, int, int], threshold: float
) -> None:
    old_request = {"image": png_b64(rgb), "model": "test-model", "threshold": threshold}
    resp = client.post("/interrogate", json=old_request)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    caption = resp.json()["caption"]
    expected = old_caption(rgb, threshold)
    assert list(caption) == [name for name, _ in expected]  # ratings (csv order) first, then tags by probability
    for (name, want), got in zip(expected, caption.values(), strict=True):
        assert isinstance(got, float), name
        assert got == pytest.approx(want, abs=1e-5), name
        assert float(np.float32(got)) == got, name  # the model's float32 probability, not rounded
    # The exact text: "caption" first, compact separators, Python float repr, non-ASCII and quotes as JSON has them.
    assert resp.text.startswith('{"caption":' + starlette_json(caption) + ",")


def test_old_request_without_threshold_uses_035(client: httpx.Client) -> None:
    body = interrogate(client, image=png_b64(RED))
    assert list(body["caption"]) == [name for name, _ in old_caption(RED, 0.35)]


def test_old_unload_route_answers_the_old_string_with_count(client: httpx.Client, engine: Tagger) -> None:
    engine.unload_all()
    interrogate(client, image=png_b64(RED))
    interrogate(client, image=png_b64(RED), model="test-model-b1")
    resp = client.post("/unload-interrogators")
    assert resp.status_code == 200
    assert resp.json() == "Successfully unload 2 model(s)"
    assert engine.loaded() == []
    assert client.post("/unload-interrogators").json() == "Successfully unload 0 model(s)"


# -- image encodings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda d: "data:image/png;base64," + b64(d), id="data-url"),
        pytest.param(lambda d: "DATA:image/png;BASE64," + b64(d), id="data-url-upper"),
        pytest.param(lambda d: "\n".join(b64(d)[i : i + 76] for i in range(0, len(b64(d)), 76)) + "\n", id="wrapped"),
        pytest.param(lambda d: base64.urlsafe_b64encode(d).decode().rstrip("="), id="urlsafe-unpadded"),
        pytest.param(lambda d: "  " + b64(d) + "  ", id="spaces"),
    ],
)
def test_base64_forms(client: httpx.Client, encode: Any) -> None:
    body = interrogate(client, image=encode(noise_png()))
    assert body["caption"]
    body = interrogate(client, image=encode(image_bytes(RED)))
    assert "red_theme" in body["general"]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF"])
def test_image_formats(client: httpx.Client, fmt: str) -> None:
    data = image_bytes(GREEN, fmt)
    mime = "jpeg" if fmt == "JPEG" else fmt.lower()
    body = interrogate(client, image=f"data:image/{mime};base64,{b64(data)}")
    assert "hatsune_miku" in body["character"]
    assert "hatsune_miku" in body["caption"]


# -- new fields ---------------------------------------------------------------------------------------------


def test_new_response_fields(client: httpx.Client, engine: Tagger) -> None:
    body = interrogate(client, image=png_b64(RED))
    assert list(body) == [
        "caption",
        *("prompt", "rating", "general", "character"),
        *("model", "provider", "provider_note", "elapsed", "warnings"),
    ]  # a WD14 model, an image without generation data: no categories, embedding, embedded or comparison
    direct = engine.tag_image("test-model", image_bytes(RED)).result
    assert body["prompt"] == direct.prompt
    assert body["rating"] == direct.rating and list(body["rating"]) == list(direct.rating)
    assert body["general"] == direct.general and list(body["general"]) == list(direct.general)
    assert body["character"] == direct.character
    assert "red_theme" in body["general"] and "kirisame_marisa" in body["character"]
    assert body["model"] == "test-model"
    assert body["provider"] == "CPU"
    assert body["provider_note"] is None  # device "cpu": CUDA was not asked for
    assert 0 < body["elapsed"] < 30
    assert body["warnings"] == []


# Non-default values for every option, with what else must be set for the option to make a difference on a
# red image. Adding an option to TagOptions without a case here fails test_every_option_has_a_case.
OPTION_CASES: dict[str, dict[str, Any]] = {
    "general_threshold": {"general_threshold": 0.55},
    "character_threshold": {"character_threshold": 0.2},
    "general_mcut": {"general_mcut": True, "general_threshold": 0.8},
    "character_mcut": {"character_mcut": True, "character_threshold": 1.0},
    "additional_tags": {"additional_tags": ["masterpiece", "best quality"]},
    "exclude_tags": {"exclude_tags": "solo, Long Hair"},
    "sort": {"sort": "alpha"},
    "max_tags": {"max_tags": 3},
    "replace_underscores": {"replace_underscores": False},
    "escape": {"escape": False},
    "weights": {"weights": True},
    "include_rating": {"include_rating": True},
    "exclude_categories": {"exclude_categories": ["character"]},  # kirisame_marisa (0.88) goes
    # test-model-cats has copyright tags: vocaloid (0.5) passes at 0.4, not at the character threshold it falls back to
    "category_thresholds": {"category_thresholds": {"copyright": 0.4}, "model": "test-model-cats"},
    "rating_position": {"rating_position": "last", "include_rating": True},
    "character_first": {"character_first": True},
    "character_expand": {"character_expand": True, "character_threshold": 0.1},
    "always_first": {"always_first": ["long hair"]},
    "separator": {"separator": ","},
    "tag_replacement": {"tag_replacement": "solo,alone"},
}


def test_every_option_has_a_case() -> None:
    assert set(OPTION_CASES) == set(OPTION_FIELDS)


@pytest.mark.parametrize("option", sorted(OPTION_CASES))
def test_every_option_field_works(client: httpx.Client, engine: Tagger, option: str) -> None:
    fields = dict(OPTION_CASES[option])
    model = fields.pop("model", "test-model")
    baseline = {k: v for k, v in fields.items() if k != option}
    body = interrogate(client, image=png_b64(RED), model=model, **fields)
    direct = engine.tag_image(model, image_bytes(RED), options_from_mapping(fields)).result
    got = (body["prompt"], body["general"], body["character"], body["rating"])
    assert got == (direct.prompt, direct.general, direct.character, direct.rating)
    without = interrogate(client, image=png_b64(RED), model=model, **baseline)
    assert (without["prompt"], without["general"], without["character"]) != got[:3], f"{option} had no effect"


def test_tag_lists_as_list_or_comma_string(client: httpx.Client) -> None:
    as_list = interrogate(client, image=png_b64(RED), additional_tags=["a b", "c"], exclude_tags=["solo"])
    as_text = interrogate(client, image=png_b64(RED), additional_tags=" a b , c,", exclude_tags="solo")
    assert as_list["prompt"] == as_text["prompt"]
    assert as_list["prompt"].startswith("a b, c, ")
    assert "solo" not in as_list["general"]


def test_threshold_keeps_its_old_meaning(client: httpx.Client) -> None:
    old = interrogate(client, image=png_b64(RED), threshold=0.55)
    new = interrogate(client, image=png_b64(RED), general_threshold=0.55, character_threshold=0.55)
    both = interrogate(client, image=png_b64(RED), general_threshold=0.55, threshold=0.55)
    assert old["general"] == new["general"] == both["general"]
    assert old["character"] == new["character"] == both["character"]
    assert "long_hair" not in old["general"] and "solo" in old["general"]
    # As in the earlier extensions, threshold applies to character tags too (0.3-probability hakurei_reimu)...
    low = interrogate(client, image=png_b64(RED), threshold=0.2)
    assert "hakurei_reimu" in low["character"] and "low_probability" not in low["general"]
    # ...unless character_threshold is given; without threshold, characters use their own default (0.85).
    mixed = interrogate(client, image=png_b64(RED), threshold=0.2, character_threshold=0.85)
    assert list(mixed["character"]) == ["kirisame_marisa"] and mixed["general"] == low["general"]
    assert list(interrogate(client, image=png_b64(RED), general_threshold=0.2)["character"]) == ["kirisame_marisa"]
    resp = client.post(
        "/interrogate",
        json={"image": png_b64(RED), "model": "test-model", "threshold": 0.2, "general_threshold": 0.5},
    )
    assert_error(resp, 422, "threshold")


def test_unknown_fields_are_ignored_with_a_warning(client: httpx.Client) -> None:
    body = interrogate(client, image=png_b64(RED), queue="", name_in_queue="x", general_treshold=0.9)
    assert body["general"] == interrogate(client, image=png_b64(RED))["general"]
    assert body["warnings"] == [
        "unknown field 'general_treshold' ignored",
        "unknown field 'name_in_queue' ignored",
        "unknown field 'queue' ignored",
    ]


def test_model_by_repo_id_and_earlier_names(client: httpx.Client) -> None:
    # wd14-vit-v2 (toriato's name) is wd-v1-4-vit-tagger-v2 here; it is not downloaded and this tagger may
    # not download, so the answer is 503 naming the catalog model, its repository and its folder.
    resp = client.post("/interrogate", json={"image": png_b64(RED), "model": "wd14-vit-v2"})
    body = assert_error(resp, 503, "model")
    model = by_name("wd-v1-4-vit-tagger-v2")
    assert model is not None
    assert model.name in body["error"] and model.repo_id in body["error"]
    resp = client.post("/interrogate", json={"image": png_b64(RED), "model": model.repo_id})
    assert_error(resp, 503, "model")


# -- models, loaded, unload ---------------------------------------------------------------------------------


def test_models_route(client: httpx.Client, engine: Tagger) -> None:
    engine.unload_all()
    interrogate(client, image=png_b64(RED))
    resp = client.get("/models")
    assert resp.status_code == 200
    models = {m["name"]: m for m in resp.json()["models"]}
    assert list(models) == [m.name for m in engine.list_models()]
    local = models["test-model"]
    assert local == {
        "name": "test-model",
        "display_name": "test-model (local)",
        "family": "local",
        "repo_id": None,
        "revision": None,
        "downloaded": True,
        "size_bytes": local["size_bytes"],
        "tags": len(ROWS),
        "loaded": True,
        "loading": False,
    }
    assert local["size_bytes"] > 0
    assert models["test-model-b1"]["loaded"] is False
    catalog = models["wd-vit-tagger-v3"]
    assert catalog["downloaded"] is False and catalog["size_bytes"] is None
    assert catalog["repo_id"] == "SmilingWolf/wd-vit-tagger-v3" and catalog["family"] == "v3"
    assert catalog["tags"] == 10861


def test_loaded_and_unload_one(client: httpx.Client, engine: Tagger) -> None:
    engine.unload_all()
    assert client.get("/loaded").json() == {"models": []}
    interrogate(client, image=png_b64(RED))
    interrogate(client, image=png_b64(RED), model="test-model-b1")
    loaded = {m["name"]: m for m in client.get("/loaded").json()["models"]}
    assert loaded["test-model"] == {
        "name": "test-model",
        "provider": "CPU",
        "provider_note": None,
        "input_size": 32,
        "fixed_batch": None,
        "threads": 1,
    }
    assert loaded["test-model-b1"]["fixed_batch"] == 1

    resp = client.post("/unload", json={"model": "test-model"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["unloaded"] == 1 and body["models"] == ["test-model"]
    assert [m["name"] for m in body["loaded"]] == ["test-model-b1"]
    assert client.post("/unload", json={"model": "test-model"}).json()["unloaded"] == 0  # not loaded now
    assert_error(client.post("/unload", json={"model": "no-such-model"}), 404, "model")

    body = client.post("/unload").json()  # no body: all
    assert body == {"unloaded": 1, "models": ["test-model-b1"], "loaded": []}
    assert engine.loaded() == []


# -- several images -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["test-model", "test-model-b1"])
def test_batch_in_order_with_per_item_errors(client: httpx.Client, queue_lock: CountingLock, model: str) -> None:
    images = [png_b64(RED), "not base64 at all!", png_b64(GREEN), b64(b"GIF89a but not really"), png_b64(BLACK)]
    before = queue_lock.count
    resp = client.post("/interrogate/batch", json={"images": images, "model": model, "threshold": 0.5})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model"] == model and body["provider"] == "CPU" and body["elapsed"] > 0
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["ok"] for r in results] == [True, False, True, False, True]
    for i in (1, 3):
        assert results[i]["result"] is None
        assert results[i]["error"]["field"] == f"images[{i}]"
        assert results[i]["error"]["error"].startswith(f"images[{i}]: ")
    assert "base64" in results[1]["error"]["error"]
    assert "not an image" in results[3]["error"]["error"]
    for i, rgb in ((0, RED), (2, GREEN), (4, BLACK)):
        single = interrogate(client, image=png_b64(rgb), model=model, threshold=0.5)
        assert results[i]["error"] is None
        expected = {k: single[k] for k in ("caption", "prompt", "rating", "general", "character")}
        assert results[i]["result"] == expected
    # On CPU a dynamic-batch model runs one image per run, as does a fixed batch-1 model: one lock per run.
    assert queue_lock.count - before == 3 + 3


def test_batch_limits(client: httpx.Client, small_server: LiveServer) -> None:
    assert_error(client.post("/interrogate/batch", json={"images": [], "model": "test-model"}), 422, "images")
    assert_error(client.post("/interrogate/batch", json={"images": "abc", "model": "test-model"}), 422, "images")
    with small_server.client() as small:
        resp = small.post("/interrogate/batch", json={"images": [png_b64(RED)] * 4, "model": "test-model"})
        assert_error(resp, 413, "images")
        resp = small.post("/interrogate/batch", json={"images": [png_b64(RED)] * 3, "model": "test-model"})
        assert resp.status_code == 200
    resp = client.post("/interrogate/batch", json={"images": [png_b64(RED)], "model": "nope"})
    assert_error(resp, 404, "model")
    resp = client.post("/interrogate/batch", json={"images": [png_b64(RED)], "model": "test-model", "max_tags": -1})
    assert_error(resp, 422, "max_tags")


# -- bad input: 4xx naming the field, never 5xx, the server keeps serving -------------------------------------

GOOD = {"model": "test-model"}
DROP = object()  # leave the field out


def _bad_requests() -> list[Any]:
    truncated = noise_png()
    truncated = truncated[: len(truncated) * 2 // 3]
    cases = [
        ("not-base64", {"image": "this is not base64!"}, 422, "image", "base64"),
        ("not-an-image", {"image": b64(b"hello, I am not an image at all")}, 422, "image", "not an image"),
        ("empty", {"image": ""}, 422, "image", "empty"),
        ("blank", {"image": "  \n "}, 422, "image", "empty"),
        ("data-url-empty", {"image": "data:image/png;base64,"}, 422, "image", "empty"),
        ("data-url-not-base64", {"image": "data:image/png," + b64(image_bytes())}, 422, "image", "base64"),
        ("url", {"image": "https://example.com/a.png"}, 422, "image", "URL"),
        ("truncated", {"image": b64(truncated)}, 422, "image", "truncated"),
        ("bomb", {"image": b64(png_header_only(9000, 8000))}, 422, "image", "too large"),
        ("image-missing", {"image": DROP}, 422, "image", "required"),
        ("image-null", {"image": None}, 422, "image", ""),
        ("image-list", {"image": [png_b64()]}, 422, "image", ""),
        ("unknown-model", {"model": "no-such-model"}, 404, "model", "test-model"),
        ("empty-model", {"model": ""}, 404, "model", "Known models"),
        ("path-as-model", {"model": "/etc"}, 404, "model", "Unknown model"),
        ("model-missing", {"model": DROP}, 422, "model", ""),
        ("threshold-above", {"threshold": 1.5}, 422, "threshold", ""),
        ("threshold-below", {"threshold": -0.1}, 422, "threshold", ""),
        ("threshold-text", {"threshold": "high"}, 422, "threshold", ""),
        ("general-above", {"general_threshold": 2}, 422, "general_threshold", ""),
        ("character-below", {"character_threshold": -1}, 422, "character_threshold", ""),
        ("huge-number", {"general_threshold": 10**400}, 422, "general_threshold", ""),
        ("mcut-not-bool", {"general_mcut": "maybe"}, 422, "general_mcut", ""),
        ("sort-unknown", {"sort": "random"}, 422, "sort", ""),
        ("max-tags-negative", {"max_tags": -1}, 422, "max_tags", ""),
        ("max-tags-text", {"max_tags": "many"}, 422, "max_tags", ""),
        ("tags-object", {"exclude_tags": {"a": 1}}, 422, "exclude_tags", ""),
        ("weights-list", {"weights": [True]}, 422, "weights", ""),
    ]
    return [pytest.param(body, status, field, words, id=name) for name, body, status, field, words in cases]


@pytest.mark.parametrize(("fields", "status", "field", "words"), _bad_requests())
def test_bad_input_is_a_4xx_naming_the_field(
    client: httpx.Client, fields: dict[str, Any], status: int, field: str, words: str
) -> None:
    body = {k: v for k, v in {"image": png_b64(RED), **GOOD, **fields}.items() if v is not DROP}
    resp = client.post("/interrogate", content=json.dumps(body), headers={"content-type": "application/json"})
    err = assert_error(resp, status, field)
    assert words in err["error"]
    if status == 422 and err["detail"] is not None and field not in ("image",):
        assert isinstance(err["detail"], list)  # FastAPI's validation errors, kept
    if status == 404:
        assert "test-model" in err["detail"]["known"]
    assert "red_theme" in interrogate(client, image=png_b64(RED))["general"]  # still serving


@pytest.mark.parametrize(
    ("content", "content_type", "words"),
    [
        (b'{"image": "abc", ', "application/json", "not valid JSON"),
        (b"", "application/json", "no body"),
        (b"[1, 2]", "application/json", "body"),
        (b'"just a string"', "application/json", "body"),
        (b"image=abc&model=test-model", "application/x-www-form-urlencoded", "Content-Type: application/json"),
        (b"\xff\xfe\x00garbage", "application/json", "body"),
        (
            b'{"image": "eA==", "model": "test-model", "weights": NaN, "max_tags": Infinity}',
            "application/json",
            "max_tags: ",  # the first problem, then the others by name
        ),
        (b'{"image": "eA==", "model": "test-model", "general_threshold": -Infinity}', "application/json", "general"),
    ],
)
def test_bad_bodies(client: httpx.Client, content: bytes, content_type: str, words: str) -> None:
    resp = client.post("/interrogate", content=content, headers={"content-type": content_type})
    err = assert_error(resp, (400, 422), None)
    assert words in err["error"]
    if b"NaN" in content:
        assert "(and 1 more: weights; see detail)" in err["error"]
        if "input" in err["detail"][0]:  # pydantic 2 echoes the input: as text, JSON has no NaN
            assert [e["input"] for e in err["detail"]] == ["inf", "nan"]
    assert client.get("/interrogators").status_code == 200


def test_image_over_max_pixels(small_server: LiveServer) -> None:
    with small_server.client() as small:
        resp = small.post("/interrogate", json={"image": b64(image_bytes(RED, size=(60, 60))), **GOOD})
        err = assert_error(resp, 422, "image")
        assert "too large" in err["error"] and "limit 2500" in err["error"]
        ok = small.post("/interrogate", json={"image": b64(image_bytes(RED, size=(50, 50))), **GOOD})
        assert ok.status_code == 200


def test_body_too_large(small_server: LiveServer) -> None:
    big = {"image": b64(noise_png()), **GOOD}  # ~37 KB of JSON, limit 20 000 bytes
    with small_server.client() as small:
        err = assert_error(small.post("/interrogate", json=big), 413, "body")
        assert "20000" in err["error"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer, caught while reading
            data = json.dumps(big).encode()
            for i in range(0, len(data), 1000):
                yield data[i : i + 1000]

        resp = small.post("/interrogate", content=chunks(), headers={"content-type": "application/json"})
        assert "content-length" not in resp.request.headers
        assert_error(resp, 413, "body")
        assert small.post("/interrogate", json={"image": png_b64(RED), **GOOD}).status_code == 200


# -- auth ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_server(engine: Tagger) -> Iterator[LiveServer]:
    auth = {"alice": "s3cret", "bob": "pässwörd:with colon"}
    with LiveServer(create_app(engine, auth=auth, limits=ApiLimits(max_body_bytes=5_000))) as live:
        yield live


ROUTES = [
    ("GET", "/interrogators", None),
    ("GET", "/models", None),
    ("GET", "/loaded", None),
    ("POST", "/interrogate", {"image": png_b64(RED), **GOOD}),
    ("POST", "/interrogate/batch", {"images": [png_b64(RED)], **GOOD}),
    ("POST", "/unload", {}),
    ("POST", "/unload-interrogators", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_auth(auth_server: LiveServer, method: str, path: str, body: Any) -> None:
    with auth_server.client() as c:
        resp = c.request(method, path, json=body)
        assert_error(resp, 401, None)
        assert resp.headers["www-authenticate"] == "Basic"
        for wrong in (("alice", "wrong"), ("mallory", "s3cret"), ("alice", ""), ("bob", "pässwörd")):
            resp = c.request(method, path, json=body, auth=wrong)
            assert resp.status_code == 401, wrong
        resp = c.request(method, path, json=body, headers={"authorization": "Basic %%%"})
        assert resp.status_code == 401
        for right in (("alice", "s3cret"), ("bob", "pässwörd:with colon")):
            user, password = right
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            resp = c.request(method, path, json=body, headers={"authorization": f"Basic {token}"})
            assert resp.status_code == 200, resp.text


def test_parse_api_auth() -> None:
    assert parse_api_auth(None) is None and parse_api_auth("") is None
    assert parse_api_auth("alice:s3cret,bob:a:b") == {"alice": "s3cret", "bob": "a:b"}
    for bad in ("alice", "alice:x,", ":x"):
        with pytest.raises(ValueError, match="user:password"):
            parse_api_auth(bad)


def test_auth_is_checked_before_the_body(auth_server: LiveServer) -> None:
    big = {"image": b64(noise_png()), **GOOD}  # over this server's 5 000-byte limit
    with auth_server.client() as c:
        assert c.post("/interrogate", json=big).status_code == 401
        assert c.post("/interrogate", json=big, auth=("alice", "s3cret")).status_code == 413
        schema = httpx.get(auth_server.url + "/openapi.json", trust_env=False).json()
        assert schema["components"]["securitySchemes"]["HTTPBasic"]["scheme"] == "basic"


# -- OpenAPI ------------------------------------------------------------------------------------------------


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref:
        return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    for option in node.get("anyOf", []):  # pydantic 2 writes Optional[X] as anyOf [X, null]
        if "$ref" in option:
            return _resolve(schema, option)
    return node


def _ranges(node: dict[str, Any]) -> tuple[Any, Any]:
    for option in [node, *node.get("anyOf", [])]:
        if "minimum" in option or "maximum" in option:
            return option.get("minimum"), option.get("maximum")
    return None, None


def test_openapi_schema_documents_every_field(server: LiveServer) -> None:
    resp = httpx.get(server.url + "/openapi.json", trust_env=False)
    assert resp.status_code == 200
    schema = resp.json()
    paths = schema["paths"]
    for path in ("interrogators", "models", "interrogate", "interrogate/batch", "unload-interrogators", "unload"):
        assert f"{PREFIX}/{path}" in paths
    for path, name in (("interrogate", "InterrogateRequest"), ("interrogate/batch", "InterrogateBatchRequest")):
        post = paths[f"{PREFIX}/{path}"]["post"]
        request = _resolve(schema, post["requestBody"]["content"]["application/json"]["schema"])
        assert request["title"] == name
        props = request["properties"]
        for field, f in OPTION_FIELDS.items():
            assert props[field]["description"].startswith(f.metadata["description"]), field
            if field != "category_thresholds":  # an object: its values' range is in the description
                assert _ranges(props[field]) == (f.metadata.get("ge"), f.metadata.get("le")), field
        assert _ranges(props["threshold"]) == (0, 1)
        for field in ("model", "threshold", "image" if path == "interrogate" else "images"):
            assert props[field]["description"]
        assert set(request["required"]) == {"image" if path == "interrogate" else "images", "model"}
        assert {"404", "413", "422", "503"} <= set(post["responses"])
    response = _resolve(
        schema, paths[f"{PREFIX}/interrogate"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    )
    for field in ("caption", "prompt", "rating", "general", "character", "model", "provider", "provider_note"):
        assert response["properties"][field]["description"], field
    assert httpx.get(server.url + "/docs", trust_env=False).status_code == 200


def test_mount_into_an_existing_app_keeps_its_error_format(engine: Tagger) -> None:
    from fastapi import FastAPI

    host = FastAPI()

    @host.post("/sdapi/v1/thing")
    def thing(x: int) -> dict[str, int]:
        return {"x": x}

    mount_api(host, engine, prefix="/custom/")
    with LiveServer(host) as live, httpx.Client(base_url=live.url, trust_env=False) as c:
        assert c.get("/custom/interrogators").status_code == 200
        assert c.get("/tagger/v1/interrogators").status_code == 404
        host_error = c.post("/sdapi/v1/thing?x=abc").json()
        assert "error" not in host_error and "detail" in host_error  # the host's own handler, untouched
        assert_error(c.post("/custom/interrogate", json={"model": "test-model"}), 422, "image")
        # Mounting again (the WebUI's Reload UI) replaces the routes: here with auth turned on.
        mount_api(host, engine, prefix="/custom", auth={"u": "p"})
        assert c.get("/custom/interrogators").status_code == 401
        assert c.get("/custom/interrogators", auth=("u", "p")).status_code == 200
        assert sum(1 for r in host.routes if getattr(r, "path", "") == "/custom/interrogate") == 1
        assert "HTTPBasic" in c.get("/openapi.json").json()["components"]["securitySchemes"]


# -- the host's queue lock ----------------------------------------------------------------------------------


def test_queue_lock_is_held_around_inference_only(client: httpx.Client, queue_lock: CountingLock) -> None:
    interrogate(client, image=png_b64(RED))  # loaded
    before = queue_lock.count
    interrogate(client, image=png_b64(RED))
    assert queue_lock.count == before + 1
    assert_error(client.post("/interrogate", json={"image": "bad!", **GOOD}), 422, "image")
    assert queue_lock.count == before + 1  # a failed decode never takes the lock

    # The host is generating: the lock is busy. Decoding errors and other routes still answer at once;
    # tagging waits for the lock, and the event loop is free meanwhile.
    results: dict[str, Any] = {}
    with queue_lock.lock:

        def tag() -> None:
            with httpx.Client(base_url=client.base_url, trust_env=False, timeout=30) as c:
                results["resp"] = c.post("/interrogate", json={"image": png_b64(GREEN), **GOOD})
                results["at"] = time.monotonic()

        worker = threading.Thread(target=tag)
        worker.start()
        time.sleep(0.5)
        assert worker.is_alive() and "resp" not in results
        assert client.get("/interrogators").status_code == 200
        assert client.post("/interrogate", json={"image": "bad!", **GOOD}).status_code == 422
        released = time.monotonic()
    worker.join(30)
    assert results["resp"].status_code == 200
    assert "hatsune_miku" in results["resp"].json()["character"]
    assert results["at"] >= released


# -- models not here yet: download through the API, or a clear refusal -----------------------------------------


def test_not_downloaded_and_download_off(client: httpx.Client, engine: Tagger) -> None:
    resp = client.post("/interrogate", json={"image": png_b64(RED), "model": "wd-vit-tagger-v3"})
    err = assert_error(resp, 503, "model")
    model = by_name("wd-vit-tagger-v3")
    assert model is not None
    assert model.repo_id in err["error"]
    assert str((engine.models_dir / model.name).absolute()) in err["error"]
    assert "model.onnx" in err["error"]


def test_download_refused_when_the_hub_cannot_be_reached(tmp_path: Path) -> None:
    online = Tagger(tmp_path / "models", "cpu", download=True, progress=False)
    with LiveServer(create_app(online)) as live, live.client() as c:
        resp = c.post("/interrogate", json={"image": png_b64(RED), "model": "wd-vit-tagger-v3"})
        err = assert_error(resp, 503, "model")
        assert "cannot connect" in err["error"] and "SmilingWolf/wd-vit-tagger-v3" in err["error"]


def test_download_through_the_api_with_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.hubstub import HubStub

    files = make_model_dir(tmp_path / "src")
    model = by_name("wd-vit-tagger-v3")
    assert model is not None
    online = Tagger(tmp_path / "models", "cpu", download=True, progress=False)
    app = create_app(online, limits=ApiLimits(download_timeout_s=0.3))
    with HubStub() as hub, LiveServer(app) as live, live.client() as c:
        repo_files = {"model.onnx": (files / "model.onnx").read_bytes()}
        repo_files["selected_tags.csv"] = (files / "selected_tags.csv").read_bytes()
        hub.add_repo(model.repo_id, repo_files, revision=model.revision)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        hub.head_delay = 1.0  # slower than the API waits
        request = {"image": png_b64(RED), "model": model.name}
        resp = c.post("/interrogate", json=request)
        err = assert_error(resp, 503, "model")
        assert "still being downloaded" in err["error"] and model.repo_id in err["error"]
        assert resp.headers["retry-after"] == "10"
        status = {m["name"]: m for m in c.get("/models").json()["models"]}[model.name]
        assert status["loading"] is True and status["loaded"] is False
        deadline = time.monotonic() + 20
        while True:  # the download went on: a later request finds the model
            resp = c.post("/interrogate", json=request)
            if resp.status_code == 200 or time.monotonic() > deadline:
                break
            assert resp.status_code == 503, resp.text
            time.sleep(0.2)
        assert resp.status_code == 200, resp.text
        assert "red_theme" in resp.json()["general"] and resp.json()["model"] == model.name
        assert hub.count("GET", "model.onnx") == 1  # waiting requests did not start downloads of their own
        status = {m["name"]: m for m in c.get("/models").json()["models"]}[model.name]
        assert status["downloaded"] is True and status["loaded"] is True and status["loading"] is False


def test_download_with_the_cache_on_is_single_flight_and_never_blocks_past_the_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the probability cache on (as in serve and the WebUI) the cache key needs the model's files: the
    download must still run once, in the background, and every request answer 503 after the wait."""
    from tagger.cache import ProbCache
    from tests.hubstub import HubStub

    files = make_model_dir(tmp_path / "src")
    model = by_name("wd-vit-tagger-v3")
    assert model is not None
    cache = ProbCache(tmp_path / "cache.sqlite3")
    online = Tagger(tmp_path / "models", "cpu", download=True, progress=False, cache=cache)
    app = create_app(online, limits=ApiLimits(download_timeout_s=0.3))
    with HubStub() as hub, LiveServer(app) as live:
        repo_files = {name: (files / name).read_bytes() for name in ("model.onnx", "selected_tags.csv")}
        hub.add_repo(model.repo_id, repo_files, revision=model.revision)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        hub.head_delay = 3.0  # far longer than the requests wait
        request = {"image": png_b64(RED), "model": model.name}
        answers: list[httpx.Response] = []

        def ask() -> None:
            with live.client() as c:
                answers.append(c.post("/interrogate", json=request))

        clients = [threading.Thread(target=ask) for _ in range(4)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(60)
        assert hub.count("GET", "model.onnx") == 0, "a request waited for the whole download"
        for resp in answers:
            err = assert_error(resp, 503, "model")
            assert "still being downloaded" in err["error"] and resp.headers["retry-after"] == "10"
        with live.client() as c:
            status = {m["name"]: m for m in c.get("/models").json()["models"]}[model.name]
            assert status["loading"] is True and status["downloaded"] is False
            deadline = time.monotonic() + 30
            while (resp := c.post("/interrogate", json=request)).status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.2)
        assert resp.status_code == 200, resp.text
        assert "red_theme" in resp.json()["general"]
        assert hub.count("GET", "model.onnx") == 1  # five requests, one download


# -- load: many clients while another keeps unloading --------------------------------------------------------


def test_concurrent_clients_with_unloads(model_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """8 clients x 25 requests against a live server while another client unloads every few requests: every
    answer is 200 and right, nothing deadlocks, and no session outlives the test but the registry's."""
    sessions: list[weakref.ref[Any]] = []
    real_create = tagger.engine.create_session

    def spy(*args: Any, **kwargs: Any) -> Any:
        loaded = real_create(*args, **kwargs)
        sessions.append(weakref.ref(loaded))
        return loaded

    monkeypatch.setattr(tagger.engine, "create_session", spy)
    engine = Tagger(model_root, "cpu", download=False, progress=False, threads=1)
    images = {rgb: png_b64(rgb) for rgb in (RED, GREEN)}
    expected = {RED: ("general", "red_theme"), GREEN: ("character", "hatsune_miku")}
    done = [0]
    done_lock = threading.Lock()
    failures: list[str] = []
    stop = threading.Event()
    unloads = [0]

    def client_thread(n: int, base: str) -> None:
        with httpx.Client(base_url=base, trust_env=False, timeout=30) as c:
            for i in range(25):
                rgb = (RED, GREEN)[(n + i) % 2]
                try:
                    resp = c.post("/interrogate", json={"image": images[rgb], "model": "test-model"})
                    kind, tag = expected[rgb]
                    if resp.status_code != 200 or tag not in resp.json()[kind]:
                        failures.append(f"{resp.status_code}: {resp.text[:200]}")
                except httpx.HTTPError as e:
                    failures.append(repr(e))
                with done_lock:
                    done[0] += 1

    def unloader(base: str) -> None:
        with httpx.Client(base_url=base, trust_env=False, timeout=30) as c:
            last = 0
            while not stop.is_set():
                if done[0] - last >= 3:
                    last = done[0]
                    resp = c.post("/unload-interrogators")
                    if resp.status_code != 200:
                        failures.append(f"unload {resp.status_code}")
                    unloads[0] += 1
                time.sleep(0.005)

    with LiveServer(create_app(engine)) as live:
        base = live.url + PREFIX
        clients = [threading.Thread(target=client_thread, args=(n, base), daemon=True) for n in range(8)]
        unload_thread = threading.Thread(target=unloader, args=(base,), daemon=True)
        start = time.monotonic()
        unload_thread.start()
        for t in clients:
            t.start()
        for t in clients:
            t.join(max(0.1, 60 - (time.monotonic() - start)))
        stop.set()
        unload_thread.join(10)
        assert not any(t.is_alive() for t in clients), "clients still running after 60 s: deadlock?"
        assert not unload_thread.is_alive()
        assert failures == []
        assert done[0] == 200
        assert unloads[0] >= 10
        assert len(sessions) >= 2  # unloads really happened under load
        assert len(engine.loaded()) <= 1
    gc.collect()
    alive = [ref for ref in sessions if ref() is not None]
    assert len(alive) == len(engine.loaded()) <= 1


def test_tag_options_default_is_the_api_default(client: httpx.Client, engine: Tagger) -> None:
    body = interrogate(client, image=png_b64(BLACK))
    assert body["prompt"] == engine.tag_image("test-model", image_bytes(BLACK), TagOptions()).result.prompt


def test_answers_from_the_probability_cache(model_root: Path, tmp_path: Path) -> None:
    """An image seen before is answered from the cache, without the model, with the same tags."""
    from tagger.cache import ProbCache

    cached_engine = Tagger(model_root, "cpu", download=False, progress=False, cache=ProbCache(tmp_path / "c.sqlite3"))
    with LiveServer(create_app(cached_engine)) as live, live.client() as c:
        body = {"image": png_b64(RED), "model": "test-model", "general_threshold": 0.55}
        first = c.post("/interrogate", json=body).json()
        assert first["provider"] == "CPU"
        c.post("/unload")
        again = c.post("/interrogate", json=body).json()
        assert again["provider"] == "cache" and cached_engine.loaded() == []
        assert again["caption"] == first["caption"] and again["prompt"] == first["prompt"]
        lower = c.post("/interrogate", json={**body, "general_threshold": 0.3}).json()
        assert lower["provider"] == "cache" and "long_hair" in lower["general"] and "long_hair" not in first["general"]
        batch = c.post("/interrogate/batch", json={"images": [png_b64(RED)] * 2, "model": "test-model"}).json()
        assert batch["provider"] == "cache" and [r["ok"] for r in batch["results"]] == [True, True]
        assert cached_engine.loaded() == []
        mixed = c.post(
            "/interrogate/batch", json={"images": [png_b64(GREEN), png_b64(RED)], "model": "test-model"}
        ).json()
        assert mixed["provider"] == "CPU" and "hatsune_miku" in mixed["results"][0]["result"]["character"]


def test_our_routes_answer_before_another_extensions_on_the_same_paths(
    engine: Tagger, caplog: pytest.LogCaptureFixture
) -> None:
    """The older tagger extensions serve /tagger/v1/... too; Starlette answers with the first match."""
    from fastapi import FastAPI

    app = FastAPI()
    app.add_api_route(f"{PREFIX}/interrogate", lambda: {"theirs": True}, methods=["POST"])
    app.add_api_route("/elsewhere", lambda: {"theirs": True}, methods=["GET"])
    with caplog.at_level("WARNING", logger="tagger.api"):
        mount_api(app, engine)
    assert f"{PREFIX}/interrogate" in caplog.text and "another extension also serves" in caplog.text
    with LiveServer(app) as live, live.client() as c:
        assert "red_theme" in c.post("/interrogate", json={"image": png_b64(RED), **GOOD}).json()["general"]
        assert httpx.get(live.url + "/elsewhere", trust_env=False).json() == {"theirs": True}


def test_a_model_by_its_display_name(client: httpx.Client) -> None:
    """GET models shows display names; a client that sends one back gets that model, with a warning."""
    shown = {m["display_name"]: m["name"] for m in client.get("/models").json()["models"]}
    display = next(d for d, n in shown.items() if n == "test-model")
    assert display != "test-model"
    body = interrogate(client, image=png_b64(RED), model=display)
    assert body["model"] == "test-model" and any("test-model" in w for w in body["warnings"])
