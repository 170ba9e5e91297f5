"""Formatting and selection: pure functions, checked against probabilities computed independently."""

from __future__ import annotations

import numpy as np
import pytest

from tagger.errors import OptionsError
from tagger.labels import Labels, read_labels
from tagger.options import TagOptions, options_from_mapping, parse_tag_list
from tagger.postprocess import format_tag, mcut_threshold, normalize_tag, postprocess
from tests.modelgen import ROWS, expected_probs, write_csv

LABELS = Labels.from_rows([(r.name, r.category) for r in ROWS])
RED = expected_probs((0.0, 0.0, 1.0))  # mean B, G, R of a pure red image
GREEN = expected_probs((0.0, 1.0, 0.0))


def test_csv_is_read_by_category_with_quoting(tmp_path):
    write_csv(tmp_path / "t.csv")
    labels = read_labels(tmp_path / "t.csv")
    assert labels.names == tuple(r.name for r in ROWS)
    assert 'tag "quoted", comma\'s' in labels.names
    assert [labels.names[i] for i in labels.rating] == ["general", "sensitive", "questionable", "explicit"]
    assert [labels.names[i] for i in labels.character] == [
        "hatsune_miku",
        "kirisame_marisa",
        "hakurei_reimu",
        "shiroko_(blue_archive)",
    ]


def test_default_thresholds_select_expected_tags():
    r = postprocess(RED, LABELS, TagOptions())
    # every general tag >= 0.35 and character >= 0.85, computed from the oracle, highest first
    want = sorted(
        [
            (n, p)
            for n, p, row in zip(LABELS.names, RED, ROWS, strict=True)
            if (row.category == 0 and p >= 0.35) or (row.category == 4 and p >= 0.85)
        ],
        key=lambda kv: -kv[1],
    )
    merged = {**r.general, **r.character}
    assert list(r.general) == sorted(r.general, key=lambda n: -dict(want)[n])
    assert [normalize_tag(t) for t in r.tags] == [normalize_tag(n) for n in sorted(merged, key=lambda n: -merged[n])]
    assert set(r.general) | set(r.character) == {n for n, _ in want}
    assert "red_theme" in r.general and "blue_theme" not in r.general
    assert "kirisame_marisa" in r.character and "hakurei_reimu" not in r.character
    assert "smile" in r.general and "low_probability" not in r.general
    assert list(r.rating) == sorted(r.rating, key=lambda n: -r.rating[n]) and len(r.rating) == 4
    assert r.prompt.startswith("red theme, solo, kirisame marisa, ^_^, pokemon \\(creature\\), long hair")


def test_threshold_change_changes_tags():
    low = postprocess(RED, LABELS, TagOptions(general_threshold=0.35))
    high = postprocess(RED, LABELS, TagOptions(general_threshold=0.55))
    assert "long_hair" in low.general and "long_hair" not in high.general
    assert "pokemon_(creature)" in high.general  # p = 0.6
    char = postprocess(GREEN, LABELS, TagOptions(character_threshold=0.2))
    assert {"hatsune_miku", "kirisame_marisa", "hakurei_reimu"} == set(char.character)


def test_excludes_are_case_underscore_and_escape_insensitive():
    opts = TagOptions(exclude_tags=("Long Hair", "POKEMON_\\(creature\\)", "red_theme"))
    r = postprocess(RED, LABELS, opts)
    assert "long_hair" not in r.general and "pokemon_(creature)" not in r.general and "red_theme" not in r.general
    assert "solo" in r.general


def test_formatting_options():
    assert format_tag("long_hair", TagOptions()) == "long hair"
    assert format_tag("^_^", TagOptions()) == "^_^"
    assert format_tag("pokemon_(creature)", TagOptions()) == "pokemon \\(creature\\)"
    assert format_tag("pokemon_(creature)", TagOptions(escape=False, replace_underscores=False)) == "pokemon_(creature)"
    assert format_tag("a\\b[c]", TagOptions()) == "a\\\\b\\[c\\]"
    r = postprocess(RED, LABELS, TagOptions(weights=True, max_tags=2))
    assert r.prompt == f"(red theme:{RED[4]:.2f}), (solo:0.90)"
    assert len(r.general) + len(r.character) == 2


def test_alpha_sort_rating_additional_and_no_duplicates():
    opts = TagOptions(sort="alpha", include_rating=True, additional_tags=("my_lora", "Solo", "my lora"))
    r = postprocess(RED, LABELS, opts)
    top_rating = max(("general", "sensitive", "questionable", "explicit"), key=lambda n: RED[LABELS.names.index(n)])
    assert r.tags[0] == top_rating
    assert r.tags[1] == "my_lora"  # user tags go in as typed
    assert r.tags.count("solo") == 0 and "Solo" in r.tags  # the model's solo duplicates the user's Solo
    assert "my lora" not in r.tags
    model_tags = list(r.tags[3:])
    assert model_tags == sorted(model_tags, key=str.lower)


def test_mcut():
    assert mcut_threshold(np.array([0.9, 0.85, 0.2, 0.1])) == pytest.approx(0.525)
    r = postprocess(RED, LABELS, TagOptions(general_mcut=True))
    g = np.sort(RED[LABELS.general])[::-1]
    gaps = g[:-1] - g[1:]
    thr = (g[gaps.argmax()] + g[gaps.argmax() + 1]) / 2
    assert set(r.general) == {LABELS.names[i] for i in LABELS.general if RED[i] >= thr}
    # character MCut floors at 0.15
    c = postprocess(
        np.where(np.isin(np.arange(len(RED)), LABELS.character), 0.01, RED), LABELS, TagOptions(character_mcut=True)
    )
    assert c.character == {}


def test_normalize_tag():
    assert normalize_tag("  Long_Hair ") == normalize_tag("long hair") == "long hair"
    assert normalize_tag("pokemon \\(creature\\)") == "pokemon (creature)"


def test_options_validation_names_the_field():
    with pytest.raises(OptionsError, match="general_threshold"):
        TagOptions(general_threshold=1.5)
    with pytest.raises(OptionsError, match="character_threshold"):
        options_from_mapping({"character_threshold": "high"})
    with pytest.raises(OptionsError, match="sort"):
        options_from_mapping({"sort": "random"})
    with pytest.raises(OptionsError, match="max_tags"):
        options_from_mapping({"max_tags": -1})
    with pytest.raises(OptionsError, match="bogus"):
        options_from_mapping({"bogus": 1})
    with pytest.raises(OptionsError, match="weights"):
        options_from_mapping({"weights": "yes"})
    opts = options_from_mapping({"exclude_tags": "a, b ,,c", "max_tags": 3.0})
    assert opts.exclude_tags == ("a", "b", "c") and opts.max_tags == 3
    assert parse_tag_list(["x ", ""]) == ("x",)


def test_wrong_length_probabilities_refused():
    with pytest.raises(ValueError, match="probabilities"):
        postprocess(np.zeros(3), LABELS, TagOptions())
