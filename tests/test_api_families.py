"""The HTTP API with the other families (categories, embeddings) and with a real client of the earlier tagger
API: the ``webuiapi`` package from PyPI (its ``TaggerInterface``), over real HTTP to uvicorn."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")

from tagger.api import create_app
from tagger.api.payload import legacy_caption
from tagger.engine import Tagger
from tagger.options import TagOptions
from tests.liveserver import LiveServer
from tests.modelgen import make_model_dir
from tests.test_families import BY_ID, build, family_embedding, family_expected, scene

PREFIX = "/tagger/v1"


def png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Tagger:
    root = tmp_path_factory.mktemp("api-family-models")
    for fam in ("pixai", "camie", "cl"):
        build(root, BY_ID[fam])
    # the WD14 stand-in under the catalog name the earlier extensions' wd14-vit-v2-git stands for
    make_model_dir(root / "wd-v1-4-vit-tagger-v2")
    return Tagger(root, "cpu", download=False, progress=False, threads=1)


@pytest.fixture(scope="module")
def server(engine: Tagger) -> Iterator[LiveServer]:
    with LiveServer(create_app(engine)) as live:
        yield live


def post(server: LiveServer, path: str, **body: Any) -> httpx.Response:
    return httpx.post(server.url + PREFIX + path, json=body, timeout=60, trust_env=False)


def test_other_categories_in_the_answer_and_its_caption(server: LiveServer, engine: Tagger) -> None:
    img = scene(300, 200)
    resp = post(server, "/interrogate", image=png_b64(img), model="camie-tagger-v2")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body["categories"]) == {"copyright", "artist", "meta", "year"}
    assert list(body["categories"]["copyright"]) == ["vocaloid"] and body["categories"]["meta"] == {}
    assert {"vocaloid", "some_artist", "2020"} <= set(body["caption"])  # the earlier shape holds them too
    direct = engine.tag_image("camie-tagger-v2", img)
    assert body["prompt"] == direct.result.prompt and body["caption"] == legacy_caption(direct.result, direct.labels)
    tuned = post(
        server,
        "/interrogate",
        image=png_b64(img),
        model="Camie Tagger v2",
        category_thresholds={"meta": 0.2, "artist": 0.9},
        exclude_categories="year",
    ).json()
    assert list(tuned["categories"]["meta"]) == ["highres"] and tuned["categories"]["artist"] == {}
    assert (
        "2020" not in tuned["prompt"]
        and "model 'Camie Tagger v2' is called 'camie-tagger-v2' here" in tuned["warnings"]
    )
    for bad_value in ({"meta": 3}, "meta", {"meta": None}, ["meta"]):
        bad = post(server, "/interrogate", image=png_b64(img), model="camie-tagger-v2", category_thresholds=bad_value)
        assert bad.status_code == 422 and bad.json()["field"] == "category_thresholds", (bad_value, bad.text)


def test_the_models_own_thresholds_apply_unless_the_request_gives_some(server: LiveServer) -> None:
    img = png_b64(scene(300, 200))
    own = post(server, "/interrogate", image=img, model="cl_tagger_1_02").json()  # cl_tagger's 0.45
    assert set(own["general"]) >= {"long_hair"} and "smile" not in own["general"]  # 0.5 and 0.4
    assert list(own["categories"]["quality"]) == ["best_quality"]  # only the best quality label
    given = post(server, "/interrogate", image=img, model="cl_tagger_1_02", general_threshold=0.35).json()
    assert "smile" in given["general"]
    old = post(server, "/interrogate", image=img, model="cl_tagger_1_02", threshold=0.35).json()
    assert old["general"] == given["general"] and "hatsune_miku" in old["character"]  # 0.46, as in the old API


def test_embedding_when_asked(server: LiveServer) -> None:
    fam = BY_ID["pixai"]
    img = scene(300, 200)
    want = family_embedding(fam.reference(img))
    body = post(server, "/interrogate", image=png_b64(img), model="pixai-tagger-v0.9", embedding=True).json()
    assert np.allclose(body["embedding"], want, atol=1e-3)
    assert "embedding" not in post(server, "/interrogate", image=png_b64(img), model="pixai-tagger-v0.9").json()
    batch = post(
        server, "/interrogate/batch", images=[png_b64(img), "nope", png_b64(img)], model="pixai-v0.9", embedding=True
    ).json()
    assert [r["ok"] for r in batch["results"]] == [True, False, True]
    assert np.allclose(batch["results"][2]["result"]["embedding"], want, atol=1e-3)
    refused = post(server, "/interrogate", image=png_b64(img), model="camie-tagger-v2", embedding=True)
    assert refused.status_code == 422 and refused.json()["field"] == "embedding"
    assert "has no embedding output" in refused.json()["error"]


def test_probabilities_follow_each_familys_reference(server: LiveServer, engine: Tagger) -> None:
    img = scene(350, 700)
    for name, fam in (("pixai-tagger-v0.9", BY_ID["pixai"]), ("cl_tagger_1_02", BY_ID["cl"])):
        probs = family_expected(fam.reference(img), fam.rows)
        body = post(server, "/interrogate", image=png_b64(img), model=name, general_threshold=0.0).json()
        for row, p in zip(fam.rows, probs, strict=True):
            if fam.categories[row.category] == "general" and row.name:
                assert body["general"][row.name] == pytest.approx(p, abs=2e-3), (name, row.name)


def test_the_webuiapi_client_with_its_default_model(server: LiveServer, engine: Tagger) -> None:
    """webuiapi (PyPI) posts {image, model: "wd14-vit-v2-git", threshold: 0.3} to tagger/v1/interrogate and reads
    the caption: served here by the WD14 stand-in in the folder named like the catalog model it stands for."""
    webuiapi = pytest.importorskip("webuiapi")
    port = int(server.url.rsplit(":", 1)[1])
    api = webuiapi.WebUIApi(host="127.0.0.1", port=port)
    tagger_api = webuiapi.TaggerInterface(api)
    assert "wd-v1-4-vit-tagger-v2" in tagger_api.tagger_interrogators()["models"]
    img = Image.new("RGB", (64, 48), (255, 0, 0))
    result = tagger_api.tagger_interrogate(img)  # the default model and threshold of the client
    direct = engine.tag_image("wd-v1-4-vit-tagger-v2", img, TagOptions(general_threshold=0.3, character_threshold=0.3))
    assert result.json["caption"] == legacy_caption(direct.result, direct.labels)
    assert "red_theme" in result.json["caption"] and "kirisame_marisa" in result.json["caption"]
    assert result.json["model"] == "wd-v1-4-vit-tagger-v2"
    assert "model 'wd14-vit-v2-git' is called 'wd-v1-4-vit-tagger-v2' here" in result.json["warnings"]
    # the other spellings of the earlier extensions (toriato's, picobyte's) answer the same
    for name in ("wd14-vit-v2", "WD14 ViT v2"):
        assert tagger_api.tagger_interrogate(img, model=name).json["caption"] == result.json["caption"]


def test_models_lists_the_families(server: LiveServer) -> None:
    models = {m["name"]: m for m in httpx.get(server.url + PREFIX + "/models", trust_env=False).json()["models"]}
    assert models["camie-tagger-v2"]["family"] == "camie" and models["camie-tagger-v2"]["downloaded"]
    assert models["cl_tagger_1_02"]["tags"] == len(BY_ID["cl"].rows)
    assert models["z3d-e621-convnext"]["family"] == "z3d" and not models["z3d-e621-convnext"]["downloaded"]
