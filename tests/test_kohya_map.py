"""README's map of kohya's tagger flags, checked against the real parser: every flag of kohya's script is in
it, every flag it names here exists, and each does what the kohya flag does (written out below)."""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import shlex
from pathlib import Path
from typing import Any

from tagger import cli

ROOT = Path(__file__).resolve().parent.parent

# kohya-ss/sd-scripts finetune/tag_images_by_wd14_tagger.py, setup_parser() at commit 48d368f.
KOHYA_FLAGS = [
    "train_data_dir",
    "--repo_id",
    "--model_dir",
    "--force_download",
    "--batch_size",
    "--max_data_loader_n_workers",
    "--output_path",
    "--caption_extention",
    "--caption_extension",
    "--thresh",
    "--general_threshold",
    "--character_threshold",
    "--meta_threshold",
    "--model_threshold",
    "--copyright_threshold",
    "--artist_threshold",
    "--recursive",
    "--remove_underscore",
    "--debug",
    "--undesired_tags",
    "--frequency_tags",
    "--onnx",
    "--append_tags",
    "--use_rating_tags",
    "--use_rating_tags_as_last_tag",
    "--use_quality_tags",
    "--use_quality_tags_as_last_tag",
    "--character_tags_first",
    "--always_first_tags",
    "--caption_separator",
    "--tag_replacement",
    "--character_tag_expand",
]

# kohya flag -> our arguments for it, and what they must set (``options.`` TagOptions, ``config.`` BatchConfig,
# ``args.`` the parsed namespace). An empty argument list: what kohya's flag asks for is our default.
SAME: dict[str, tuple[list[str], dict[str, Any]]] = {
    "--repo_id": (["--model", "wd-vit-tagger-v3"], {"args.model": "wd-vit-tagger-v3"}),
    "--model_dir": (["--models-dir", "m"], {"args.models_dir": "m"}),
    "--force_download": ([], {}),
    "--batch_size": (["--batch-size", "4"], {"config.batch_size": 4}),
    "--max_data_loader_n_workers": (["--workers", "3"], {"config.workers": 3}),
    "--output_path": (["--metadata", "meta.jsonl"], {"config.metadata": Path("meta.jsonl")}),
    "--caption_extension": (["--filename-format", "[name].caption"], {"config.filename_format": "[name].caption"}),
    "--caption_extention": (["--filename-format", "[name].caption"], {"config.filename_format": "[name].caption"}),
    "--thresh": (
        ["--general-threshold", "0.3", "--character-threshold", "0.3"],
        {"options.general_threshold": 0.3, "options.character_threshold": 0.3},
    ),
    "--general_threshold": (["--general-threshold", "0.3"], {"options.general_threshold": 0.3}),
    "--character_threshold": (["--character-threshold", "0.7"], {"options.character_threshold": 0.7}),
    "--recursive": (["--recursive"], {"config.recursive": True}),
    "--remove_underscore": ([], {"options.replace_underscores": True}),
    "--debug": (["--json"], {"config.json_sidecar": True}),
    "--undesired_tags": (["--exclude", "solo,1girl"], {"options.exclude_tags": ("solo", "1girl")}),
    "--frequency_tags": (["--frequency-tags"], {"args.frequency_tags": True}),
    "--onnx": ([], {}),
    "--append_tags": (["--existing", "append"], {"config.existing": "append"}),
    "--use_rating_tags": (["--rating"], {"options.include_rating": True, "options.rating_position": "first"}),
    "--use_rating_tags_as_last_tag": (
        ["--rating-last"],
        {"options.include_rating": True, "options.rating_position": "last"},
    ),
    "--character_tags_first": (["--character-tags-first"], {"options.character_first": True}),
    "--always_first_tags": (["--always-first-tags", "1girl,1boy"], {"options.always_first": ("1girl", "1boy")}),
    "--caption_separator": (["--caption-separator", ","], {"options.separator": ","}),
    "--tag_replacement": (["--tag-replacement", "a\\,b,c;d,e"], {"options.tag_replacement": "a\\,b,c;d,e"}),
    "--character_tag_expand": (["--character-tag-expand"], {"options.character_expand": True}),
    # The categories of the model families (cl_tagger has all four; Camie copyright, artist and meta).
    "--meta_threshold": (["--threshold", "meta=0.5"], {"options.category_thresholds": (("meta", 0.5),)}),
    "--model_threshold": (["--threshold", "model=0.6"], {"options.category_thresholds": (("model", 0.6),)}),
    "--copyright_threshold": (["--threshold", "copyright=0.4"], {"options.category_thresholds": (("copyright", 0.4),)}),
    "--artist_threshold": (["--threshold", "artist=0.7"], {"options.category_thresholds": (("artist", 0.7),)}),
    # A quality category's best tag is in by default (test_quality_tags_as_kohyas_use_quality_tags).
    "--use_quality_tags": ([], {"options.exclude_categories": ()}),
    "--use_quality_tags_as_last_tag": ([], {"options.exclude_categories": ()}),
}


def readme_map() -> dict[str, str]:
    """kohya flag -> the README's 'here' cell, from the first table under the kohya heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = text[text.index("#### From kohya's `tag_images_by_wd14_tagger.py`") :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = [line for line in itertools.takewhile(lambda line: line.startswith("|"), lines[start:])]
    assert table[:2] == ["| kohya | here |", "|---|---|"], table[:2]
    out = {}
    for row in table[2:]:
        kohya, here = (cell.strip() for cell in row.strip("|").split(" | "))
        for flag in re.findall(r"`([^`]+)`", kohya):
            out[flag] = here
    return out


def our_flags(cell: str) -> list[str]:
    """The first word of every `--flag ...` in a cell."""
    return [shlex.split(code)[0] for code in re.findall(r"`([^`]+)`", cell) if code.startswith("--")]


def parsed(argv: list[str]) -> dict[str, Any]:
    args = cli.build_parser().parse_args(["tag", "data", *argv])
    options, config = cli.options_from_args(args), cli.batch_config_from_args(args)
    return {"args": args, "options": options, "config": config}


def test_every_kohya_flag_is_in_the_map() -> None:
    assert sorted(readme_map()) == sorted(KOHYA_FLAGS)
    assert set(SAME) | {"train_data_dir"} == set(KOHYA_FLAGS)


def test_every_flag_the_map_names_is_ours() -> None:
    help_ = io.StringIO()
    with contextlib.redirect_stdout(help_):
        assert cli.main(["tag", "--help"]) == 0
    known = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", help_.getvalue()))
    named = {f for cell in readme_map().values() for f in our_flags(cell)}
    assert named and named <= known, sorted(named - known)


def test_each_flag_does_what_kohyas_does() -> None:
    table = readme_map()
    for kohya, (argv, wanted) in SAME.items():
        cell = table[kohya]
        given = {a for a in argv if a.startswith("--")}
        assert given <= set(our_flags(cell)), (kohya, cell)
        if not argv:
            assert "default" in cell or "none needed" in cell, (kohya, cell)
        got = parsed(argv)
        for path, value in wanted.items():
            owner, name = path.split(".")
            assert getattr(got[owner], name) == value, (kohya, path)
    assert "PATH" in table["train_data_dir"]


def test_category_thresholds_add_up_and_the_last_given_wins() -> None:
    got = parsed(["--threshold", "copyright=0.4", "--threshold", "artist=0.7,meta=0.2", "--threshold", "meta=0.3"])
    assert got["options"].category_thresholds == (("artist", 0.7), ("copyright", 0.4), ("meta", 0.3))


def test_quality_tags_as_kohyas_use_quality_tags() -> None:
    """cl_tagger's quality category: its most probable tag (only that one, whatever the threshold) is in the
    caption by default, as with kohya's --use_quality_tags; --exclude-categories quality leaves it out."""
    import numpy as np

    from tagger.labels import Labels
    from tagger.postprocess import postprocess

    rows = [("general", 9), ("1girl", 0), ("best_quality", 200), ("normal_quality", 200)]
    labels = Labels.from_rows(rows, {9: "rating", 0: "general", 200: "quality"}, single=("quality",))
    probs = np.array([0.9, 0.8, 0.2, 0.1], dtype=np.float32)
    assert postprocess(probs, labels, parsed([])["options"]).tags == ("1girl", "best quality")
    dropped = parsed(["--exclude-categories", "quality"])["options"]
    assert postprocess(probs, labels, dropped).tags == ("1girl",)
