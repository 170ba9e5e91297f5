"""Generation data read from images written here the way each tool writes them (tests/geninfo.py), compared
with the stand-in model's known probabilities (tests/modelgen.py), and carried by the CLI, the API and batch
captions. The WebUI tab is tested in test_ui_page.py and test_ui_browser.py."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tagger.compare import compare, report
from tagger.embedded import GenerationData, is_infotext, parse_infotext, parse_settings, read_generation_data
from tagger.labels import Labels
from tagger.options import TagOptions
from tests import geninfo
from tests.modelgen import CATEGORY_ROWS, ROWS, expected_probs

PROMPT, NEGATIVE, SETTINGS = parse_infotext(geninfo.INFOTEXT)
LABELS = Labels.from_rows([(r.name, r.category) for r in ROWS])
RED = expected_probs((0.0, 0.0, 1.0))  # a pure red image: B, G, R means


# -- reading ----------------------------------------------------------------------------------------------


def test_the_infotext_is_split_by_the_webuis_rule() -> None:
    assert PROMPT == "masterpiece, (solo:1.2), long_hair, hakurei reimu, smile, <lora:myStyle:0.8>, sks_style, 東方"
    assert NEGATIVE == "(worst quality:1.4), bad hands"
    assert parse_settings(SETTINGS) == {
        "Steps": "20",
        "Sampler": "DPM++ 2M",
        "Schedule type": "Karras",
        "CFG scale": "7",
        "Seed": "1234",
        "Size": "64x48",
        "Lora hashes": "myStyle: 0123abcd",
    }
    # A last line with fewer than three "name: value" pairs is prompt; weighted tags can look like settings.
    assert parse_infotext("a, b\nrating: safe, x: y") == ("a, b\nrating: safe, x: y", "", "")
    assert parse_infotext("(solo:0.9), (long hair:0.5), (smile:0.36)")[0] == ""
    assert parse_infotext("p\nNegative prompt: n1\nn2") == ("p", "n1\nn2", "")
    assert is_infotext(geninfo.INFOTEXT) and not is_infotext("(solo:0.9), (long hair:0.5), (smile:0.36)")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_a1111_parameters_and_exif_user_comment(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"img{suffix}"
    (geninfo.a1111_png if suffix == ".png" else geninfo.a1111_exif)(path)
    expected = GenerationData("a1111" if suffix == ".png" else "a1111-exif", PROMPT, NEGATIVE, SETTINGS)
    assert read_generation_data(path) == expected
    assert read_generation_data(path.read_bytes()) == expected
    with Image.open(path) as im:  # an image as the page gets it: decoded and converted
        assert read_generation_data(im.convert("RGBA")) == expected
    assert expected.infotext() == geninfo.INFOTEXT


@pytest.mark.parametrize(
    ("comment", "big_endian"),
    [
        (b"UNICODE\0" + geninfo.INFOTEXT.encode("utf-16-le"), False),  # little-endian EXIF, its byte order
        (b"UNICODE\0" + geninfo.INFOTEXT.encode("utf-16-le"), True),  # a writer that got the order wrong
        (b"\0" * 8 + geninfo.INFOTEXT.encode("utf-8"), True),  # undefined code: read as UTF-8, as the WebUI does
    ],
    ids=["utf16-le", "utf16-le-in-big-endian-exif", "undefined-utf8"],
)
def test_other_user_comment_encodings(tmp_path: Path, comment: bytes, big_endian: bool) -> None:
    path = geninfo.a1111_exif(tmp_path / "img.jpg", comment=comment, big_endian=big_endian)
    data = read_generation_data(path)
    assert data is not None and (data.prompt, data.negative_prompt) == (PROMPT, NEGATIVE)


def test_ascii_user_comment(tmp_path: Path) -> None:
    path = geninfo.a1111_exif(
        tmp_path / "img.webp", comment=b"ASCII\x00\x00\x001girl, solo\nSteps: 2, Seed: 3, Size: 1x1"
    )
    assert read_generation_data(path) == GenerationData("a1111-exif", "1girl, solo", "", "Steps: 2, Seed: 3, Size: 1x1")


def test_novelai(tmp_path: Path) -> None:
    path = geninfo.novelai_png(tmp_path / "nai.png", "1girl, {{smile}}, [long hair]", "lowres, bad anatomy")
    data = read_generation_data(path)
    assert data is not None and data.source == "novelai"
    assert (data.prompt, data.negative_prompt) == ("1girl, {{smile}}, [long hair]", "lowres, bad anatomy")
    assert data.settings == {
        "Steps": "28",
        "Sampler": "Euler a",
        "CFG scale": "5.0",
        "Seed": "3141592",
        "Size": "64x48",
    }


def test_comfyui_prompt_graph_and_workflow(tmp_path: Path) -> None:
    pos, neg = "beautiful scenery, (solo:1.1), embedding:bad_style", "text, watermark"
    settings = {
        "Steps": "20",
        "Sampler": "Euler",
        "Schedule type": "Normal",
        "CFG scale": "8",
        "Seed": "156680208700286",
        "Size": "64x48",
    }
    both = read_generation_data(
        geninfo.comfy_png(tmp_path / "a.png", geninfo.comfy_prompt(pos, neg), geninfo.comfy_workflow("other", "other"))
    )
    assert both is not None and both.source == "comfyui"  # the graph that ran wins over the editor's
    assert (both.prompt, both.negative_prompt, both.settings, both.note) == (pos, neg, settings, "")
    workflow = geninfo.comfy_workflow(pos, neg)
    only = read_generation_data(geninfo.comfy_png(tmp_path / "b.png", None, workflow))
    assert only is not None and only.source == "comfyui-workflow"
    assert (only.prompt, only.negative_prompt, only.settings) == (pos, neg, settings)
    # The newer editor writes links as objects.
    names = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    workflow["links"] = [dict(zip(names, link, strict=True)) for link in workflow["links"]]
    objects = read_generation_data(geninfo.comfy_png(tmp_path / "c.png", None, workflow))
    assert objects is not None and (objects.prompt, objects.negative_prompt) == (pos, neg)


def test_comfyui_follows_single_paths_and_linked_text(tmp_path: Path) -> None:
    graph = geninfo.comfy_prompt("unused", "text, watermark")
    # The positive goes through a ControlNet (which passes positive and negative) and a timestep range, and
    # its text comes from a string node.
    graph["10"] = {
        "class_type": "ControlNetApplyAdvanced",
        "inputs": {"positive": ["11", 0], "negative": ["7", 0], "strength": 1.0},
    }
    graph["11"] = {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["6", 0]}}
    graph["12"] = {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "1girl, red theme"}}
    graph["6"]["inputs"]["text"] = ["12", 0]
    graph["3"]["inputs"]["positive"] = ["10", 0]
    data = read_generation_data(geninfo.comfy_png(tmp_path / "c.png", graph))
    assert data is not None and (data.prompt, data.negative_prompt, data.note) == (
        "1girl, red theme",
        "text, watermark",
        "",
    )


def test_comfyui_says_when_the_prompt_cannot_be_found_without_guessing(tmp_path: Path) -> None:
    combined = geninfo.comfy_prompt("a", "n")
    combined["10"] = {
        "class_type": "ConditioningCombine",
        "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["7", 0]},
    }
    combined["3"]["inputs"]["positive"] = ["10", 0]
    data = read_generation_data(geninfo.comfy_png(tmp_path / "d.png", combined))
    assert data is not None and data.prompt == ""
    assert "cannot be found without guessing" in data.note and "node 10 (ConditioningCombine)" in data.note

    two = geninfo.comfy_prompt("first prompt", "n")
    two["13"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "second prompt", "clip": ["4", 1]}}
    two["14"] = {**two["3"], "inputs": {**two["3"]["inputs"], "positive": ["13", 0]}}
    data = read_generation_data(geninfo.comfy_png(tmp_path / "e.png", two))
    assert data is not None and data.prompt == "" and "2 samplers have different positive prompts" in data.note

    no_sampler = {k: v for k, v in geninfo.comfy_prompt("a", "b").items() if k != "3"}
    data = read_generation_data(geninfo.comfy_png(tmp_path / "f.png", no_sampler))
    assert data is not None and data.prompt == "" and "no sampler" in data.note


def test_images_without_generation_data(tmp_path: Path) -> None:
    assert read_generation_data(geninfo.plain(tmp_path / "plain.png")) is None
    jpeg = tmp_path / "plain.jpg"
    Image.new("RGB", (8, 8)).save(jpeg)
    assert read_generation_data(jpeg) is None
    assert read_generation_data(b"not an image") is None
    assert read_generation_data(tmp_path / "missing.png") is None
    broken = geninfo.comfy_png(tmp_path / "broken.png", None)  # no chunk at all
    assert read_generation_data(broken) is None
    garbage = geninfo.a1111_exif(tmp_path / "garbage.jpg", comment=b"\0" * 8)
    assert read_generation_data(garbage) is None


# -- comparing ----------------------------------------------------------------------------------------------


def groups(c: Any) -> dict[str, list[tuple[str, Any]]]:
    def row(j: Any) -> tuple[str, Any]:
        return (j.text, round(j.probability, 4) if j.reason == "" else j.reason)

    return {g: [row(j) for j in getattr(c, g)] for g in ("confirmed", "weak", "not_judgeable", "added")}


def test_four_groups_against_the_stand_in_models_probabilities() -> None:
    c = compare(PROMPT, RED, LABELS, TagOptions())
    assert groups(c) == {
        "confirmed": [("solo", 0.9), ("long_hair", 0.5), ("smile", 0.36)],
        "weak": [("hakurei reimu", 0.3)],  # a character below the character threshold (0.85)
        "not_judgeable": [
            ("masterpiece", "quality"),
            ("<lora:myStyle:0.8>", "network"),
            ("sks_style", "unknown"),
            ("東方", "unknown"),
        ],
        "added": [
            ("red theme", round(float(RED[4]), 4)),
            ("kirisame marisa", 0.88),
            ("^_^", 0.7),
            ("pokemon (creature)", 0.6),
            ('tag "quoted", comma\'s', 0.4),
        ],
    }
    assert [j.tag for j in c.confirmed] == ["solo", "long_hair", "smile"]  # the model's own names
    tail = r"""red theme, kirisame marisa, ^_^, pokemon \(creature\), tag "quoted", comma's"""
    assert c.merged() == f"masterpiece, (solo:1.2), long_hair, smile, <lora:myStyle:0.8>, sks_style, 東方, {tail}"
    assert c.merged(keep_networks=False) == f"masterpiece, (solo:1.2), long_hair, smile, sks_style, 東方, {tail}"
    assert c.caption_tags() == [
        "solo",
        "long hair",
        "smile",
        "sks_style",
        "東方",
        *tail.split(", ")[:4],
        'tag "quoted", comma\'s',
    ]


def test_the_options_move_items_between_groups() -> None:
    higher = compare(PROMPT, RED, LABELS, TagOptions(general_threshold=0.55, character_threshold=0.2))
    assert groups(higher)["confirmed"] == [("solo", 0.9), ("hakurei reimu", 0.3)]
    assert groups(higher)["weak"] == [("long_hair", 0.5), ("smile", 0.36)]
    assert "long_hair" not in higher.merged() and "hakurei reimu" in higher.merged()
    # MCut: the largest gap of the general probabilities lies between smile (0.36) and low_probability (0.1).
    mcut = compare(PROMPT, RED, LABELS, TagOptions(general_mcut=True, character_mcut=True))
    assert mcut.thresholds["general"] == pytest.approx((0.36 + 0.1) / 2)
    assert mcut.thresholds["character"] == pytest.approx((0.88 + 0.3) / 2)
    assert groups(mcut)["confirmed"] == [("solo", 0.9), ("long_hair", 0.5), ("smile", 0.36)]
    # An excluded tag leaves the merged prompt and the caption, as it leaves the tagged prompt.
    excluded = compare(PROMPT, RED, LABELS, TagOptions(exclude_tags=("Solo",), weights=True))
    assert "solo" not in excluded.merged().lower() and "solo" not in excluded.caption_tags()
    assert "(red theme:1.00)" in excluded.merged()  # the tagger's items as its prompt writes them


def test_the_other_categories_are_judged_at_their_own_thresholds() -> None:
    """A model with copyright, artist and meta tags: each is judged at its category's threshold, as the tagged
    prompt takes it (given, else the character threshold for copyright and artist, the general one for meta),
    and an excluded category's tags leave the merge and the caption as excluded tags do."""
    labels = Labels.from_rows([(r.name, r.category) for r in CATEGORY_ROWS])
    red = expected_probs((0.0, 0.0, 1.0), CATEGORY_ROWS)
    prompt = "vocaloid, some_artist, solo"
    plain = compare(prompt, red, labels, TagOptions())
    assert plain.thresholds == {"general": 0.35, "character": 0.85, "copyright": 0.85, "artist": 0.85, "meta": 0.35}
    assert groups(plain)["weak"] == [("vocaloid", 0.5), ("some_artist", 0.3)]
    assert ("highres", 0.7) in groups(plain)["added"] and "highres" in plain.merged()
    given = TagOptions(category_thresholds={"copyright": 0.4})
    tuned = compare(prompt, red, labels, given)
    assert groups(tuned)["confirmed"] == [("vocaloid", 0.5), ("solo", 0.9)]
    assert tuned.to_dict()["thresholds"]["copyright"] == 0.4
    assert "vocaloid" in tuned.merged() and "vocaloid" in tuned.caption_tags()
    off = compare(
        prompt,
        red,
        labels,
        TagOptions(category_thresholds={"copyright": 0.4}, exclude_categories=("copyright", "meta")),
    )
    assert groups(off)["confirmed"] == [("vocaloid", 0.5), ("solo", 0.9)]  # the tagger sees it ...
    assert "vocaloid" not in off.merged() and "vocaloid" not in off.caption_tags()  # ... and it is excluded
    assert "highres" not in off.merged() and all(j.tag != "highres" for j in off.added)


def test_ratings_duplicates_schedules_and_embeddings() -> None:
    c = compare(
        "general, solo, Solo, [hakurei reimu:solo:0.5], embedding:bad, rating:safe, score_9", RED, LABELS, TagOptions()
    )
    assert groups(c)["not_judgeable"] == [
        ("general", "rating"),
        ("embedding:bad", "embedding"),
        ("rating:safe", "rating"),
        ("score_9", "quality"),
    ]
    assert groups(c)["confirmed"] == [("solo", 0.9)] and groups(c)["weak"] == [("hakurei reimu", 0.3)]
    assert "[hakurei reimu:solo:0.5]" in c.merged()  # a scheduled item stays: its schedule would change
    assert "embedding:bad" not in c.merged(keep_networks=False)


def test_report_is_empty_without_generation_data() -> None:
    assert report(None, RED, LABELS, TagOptions()) == {}
    nothing = report(GenerationData("comfyui", "", note="ComfyUI: ..."), RED, LABELS, TagOptions())
    assert nothing["comparison"] is None and nothing["embedded"]["note"] == "ComfyUI: ..."


# -- the command line, the API, batch captions ---------------------------------------------------------------


def test_cli_json_carries_the_embedded_prompt_and_the_groups(model_root: Path, tmp_path: Path) -> None:
    from tagger.cli import main

    made = geninfo.a1111_png(tmp_path / "made.png")
    plain = geninfo.plain(tmp_path / "plain.png")
    out = io.StringIO()
    argv = ["tag", str(made), str(plain), "--model", "test-model", "--models-dir", str(model_root)]
    assert main([*argv, "--format", "json", "--device", "cpu"], out=out) == 0
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert list(second) == ["path", "prompt", "rating", "general", "character"]  # as before
    assert first["embedded"] == {
        "source": "a1111",
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE,
        "settings": parse_settings(SETTINGS),
        "note": None,
    }
    comparison = first["comparison"]
    assert [j["text"] for j in comparison["confirmed"]] == ["solo", "long_hair", "smile"]
    assert comparison["weak"] == [{"text": "hakurei reimu", "tag": "hakurei_reimu", "probability": pytest.approx(0.3)}]
    assert comparison["merged_prompt"].startswith("masterpiece, (solo:1.2), long_hair, smile, <lora:myStyle:0.8>")
    assert comparison["thresholds"] == {"general": 0.35, "character": 0.85}


def _post(app: Any, path: str, body: dict[str, Any]) -> Any:
    from tests.test_webui_glue import _requests

    (answer,) = _requests(app, [("POST", path, {"json": body})])
    return answer


def test_api_answers_carry_them_only_for_images_with_generation_data(model_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from tagger.api import create_app
    from tagger.engine import Tagger

    app = create_app(Tagger(model_root, "cpu", download=False, progress=False))
    made = base64.b64encode(geninfo.a1111_exif(tmp_path / "made.webp").read_bytes()).decode()
    plain = base64.b64encode(geninfo.plain(tmp_path / "plain.png").read_bytes()).decode()
    one = _post(app, "/tagger/v1/interrogate", {"image": made, "model": "test-model", "general_threshold": 0.55})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["embedded"]["source"] == "a1111-exif" and body["embedded"]["prompt"] == PROMPT
    assert body["embedded"]["settings"]["Lora hashes"] == "myStyle: 0123abcd"
    assert [j["text"] for j in body["comparison"]["weak"]] == ["long_hair", "hakurei reimu", "smile"]
    assert body["comparison"]["not_judgeable"][1] == {"text": "<lora:myStyle:0.8>", "reason": "network"}
    assert body["comparison"]["thresholds"]["general"] == 0.55
    assert "<lora" not in body["comparison"]["merged_prompt_without_networks"]
    batch = _post(app, "/tagger/v1/interrogate/batch", {"images": [plain, made, "x"], "model": "test-model"})
    items = batch.json()["results"]
    assert set(items[0]) == {"index", "ok", "result", "error"} and items[2]["result"] is None
    assert "embedded" not in items[0]["result"] and "comparison" not in items[0]["result"]
    assert items[1]["result"]["comparison"]["confirmed"][0]["text"] == "solo"
    plain_one = _post(app, "/tagger/v1/interrogate", {"image": plain, "model": "test-model"}).json()
    assert "embedded" not in plain_one and plain_one["provider_note"] is None  # null fields that were set stay


def test_batch_captions_from_the_merge(model_root: Path, tmp_path: Path) -> None:
    from tagger.batch import BatchConfig, run_batch
    from tagger.engine import Tagger

    folder = tmp_path / "in"
    folder.mkdir()
    geninfo.a1111_png(folder / "made.png")
    geninfo.novelai_png(folder / "nai.png", "1girl, {solo}, hakurei_reimu, masterpiece", "lowres")
    geninfo.plain(folder / "plain.png")
    tagger = Tagger(model_root, "cpu", download=False, progress=False)
    tagged = run_batch(tagger, "test-model", BatchConfig([folder], output_dir=tmp_path / "tags"), TagOptions())
    merged = run_batch(
        tagger, "test-model", BatchConfig([folder], output_dir=tmp_path / "merge", caption_from="merge"), TagOptions()
    )
    assert tagged.tagged == merged.tagged == 3

    def caption(kind: str, name: str) -> str:
        return (tmp_path / kind / f"{name}.txt").read_text(encoding="utf-8")

    assert caption("merge", "plain") == caption("tags", "plain")  # no generation data: the tags, as always
    made = caption("merge", "made")
    assert made.startswith("solo, long hair, smile, sks_style, 東方, red theme")  # trigger words kept
    assert "masterpiece" not in made and "lora" not in made and "hakurei" not in made
    assert caption("merge", "nai").startswith("1girl, solo, red theme")  # 1girl is no tag of the stand-in: kept
    assert merged.tag_counts["sks_style"] == 1 and tagged.tag_counts["sks_style"] == 0


def test_the_merge_is_exact_on_the_engines_own_probabilities(model_root: Path, tmp_path: Path) -> None:
    """The tab and the API compare the probabilities the engine gave for that image (padding included)."""
    from tagger.engine import Tagger

    tags = Tagger(model_root, "cpu", download=False, progress=False).tag_image(
        "test-model", geninfo.a1111_png(tmp_path / "m.png", rgb=(0, 255, 0))
    )
    c = compare(PROMPT, tags.probs, tags.labels, TagOptions())
    by_name = dict(zip(tags.labels.names, np.asarray(tags.probs).tolist(), strict=True))
    assert all(j.probability == by_name[j.tag] for j in (*c.confirmed, *c.weak, *c.added))
    assert next(j.tag for j in c.added) == "hatsune_miku"  # a green image: the character the prompt lacks
