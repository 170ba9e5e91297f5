"""Training captions (issue #13): each kohya-style option against captions written out by hand here.

The expectations are literal strings worked out from kohya-ss/sd-scripts' finetune/tag_images_by_wd14_tagger.py
(commit 48d368f) and this project's documented differences, never the implementation's own output.
"""

from __future__ import annotations

import numpy as np
import pytest

from tagger.errors import OptionsError
from tagger.labels import CHARACTER, GENERAL, RATING, Labels
from tagger.options import TagOptions, options_from_mapping, options_to_dict, parse_tag_replacement
from tagger.postprocess import expand_character, postprocess

# A tag list with what training captions run into: characters with a series (and a costume), kaomoji with
# underscores and parentheses, a tag with a comma in its name.
TAGS = [
    ("general", RATING, 0.20),
    ("sensitive", RATING, 0.70),
    ("questionable", RATING, 0.05),
    ("explicit", RATING, 0.01),
    ("1girl", GENERAL, 0.95),
    ("solo", GENERAL, 0.90),
    ("long_hair", GENERAL, 0.80),
    ("(o)_(o)", GENERAL, 0.60),
    ("^_^", GENERAL, 0.55),
    ("pokemon_(creature)", GENERAL, 0.50),
    ('tag "quoted", comma\'s', GENERAL, 0.45),
    ("smile", GENERAL, 0.40),
    ("low", GENERAL, 0.10),
    ("kirisame_marisa", CHARACTER, 0.88),
    ("hatsune_miku_(vocaloid)", CHARACTER, 0.92),
    ("raiden_shogun_(mysterious_costume)_(genshin_impact)", CHARACTER, 0.91),
    ("ganyu_(genshin_impact)", CHARACTER, 0.97),
    ("hakurei_reimu", CHARACTER, 0.30),
]
LABELS = Labels.from_rows([(n, c) for n, c, _ in TAGS])
PROBS = np.array([p for _, _, p in TAGS], dtype=np.float32)


def caption(**kw: object) -> str:
    return postprocess(PROBS, LABELS, TagOptions(**{"escape": False, **kw})).prompt  # type: ignore[arg-type]


def test_caption_spelling_keeps_kaomoji_whole_and_nothing_escaped() -> None:
    assert caption() == (
        "ganyu (genshin impact), 1girl, hatsune miku (vocaloid), raiden shogun (mysterious costume) (genshin impact), "
        'solo, kirisame marisa, long hair, (o)_(o), ^_^, pokemon (creature), tag "quoted", comma\'s, smile'
    )
    # the prompt for the WebUI keeps its escapes, the kaomoji's underscores too
    prompt = postprocess(PROBS, LABELS, TagOptions()).prompt
    assert "\\(o\\)_\\(o\\), ^_^, pokemon \\(creature\\)" in prompt
    assert "ganyu \\(genshin impact\\)" in prompt


def test_character_first_with_the_rating_last() -> None:
    assert caption(character_first=True, include_rating=True, rating_position="last") == (
        "ganyu (genshin impact), hatsune miku (vocaloid), raiden shogun (mysterious costume) (genshin impact), "
        'kirisame marisa, 1girl, solo, long hair, (o)_(o), ^_^, pokemon (creature), tag "quoted", comma\'s, '
        "smile, sensitive"
    )


def test_rating_first_and_an_excluded_rating() -> None:
    assert caption(include_rating=True, max_tags=2) == "sensitive, ganyu (genshin impact), 1girl"
    # kohya checks the rating against --undesired_tags as well
    assert caption(include_rating=True, max_tags=1, exclude_tags=("Sensitive",)) == "ganyu (genshin impact)"


def test_character_tag_expand_splits_at_the_last_parenthesis() -> None:
    # kohya: chara_name_(series) -> chara_name, series; chara_name_(costume)_(series) -> chara_name_(costume), series
    assert expand_character("hatsune_miku_(vocaloid)") == ["hatsune_miku", "vocaloid"]
    assert expand_character("raiden_shogun_(mysterious_costume)_(genshin_impact)") == [
        "raiden_shogun_(mysterious_costume)",
        "genshin_impact",
    ]
    assert expand_character("kirisame_marisa") == ["kirisame_marisa"]
    assert expand_character("odd)") == ["odd)"]  # no "(": left whole
    # a series found twice is written once; general tags are never expanded
    assert caption(character_expand=True, character_first=True, general_threshold=0.5) == (
        "ganyu, genshin impact, hatsune miku, vocaloid, raiden shogun (mysterious costume), kirisame marisa, "
        "1girl, solo, long hair, (o)_(o), ^_^, pokemon (creature)"
    )
    # underscores kept: the parts keep theirs
    assert caption(character_expand=True, replace_underscores=False, max_tags=1) == "ganyu, genshin_impact"
    # an exclude may drop one part of an expansion
    assert caption(character_expand=True, exclude_tags=("genshin impact",), max_tags=1) == "ganyu"


def test_tag_replacement_with_escaped_separators() -> None:
    text = (
        "1girl,1woman; long_hair , very long hair\\, silky;"
        'tag "quoted"\\, comma\'s,quoted;smile,;pokemon (creature),pokemon\\;creature;'
    )
    assert parse_tag_replacement(text) == (
        ("1girl", "1woman"),
        ("long_hair", "very long hair, silky"),
        ('tag "quoted", comma\'s', "quoted"),
        ("smile", ""),
        ("pokemon (creature)", "pokemon;creature"),
    )
    assert caption(tag_replacement=text, character_threshold=0.99) == (
        "1woman, solo, very long hair, silky, (o)_(o), ^_^, pokemon;creature, quoted"
    )
    # a character is replaced whole before it is expanded, or each part after
    assert caption(tag_replacement="ganyu_(genshin_impact),ganyu", character_expand=True, max_tags=1) == "ganyu"
    assert caption(tag_replacement="genshin impact,GI", character_expand=True, max_tags=1) == "ganyu, GI"
    # the rating is replaced too, and an exclude also matches what a tag was replaced by
    assert caption(tag_replacement="sensitive,rating:sensitive", include_rating=True, max_tags=1) == (
        "rating:sensitive, ganyu (genshin impact)"
    )
    assert (
        caption(tag_replacement="1girl,woman", exclude_tags=("woman",), character_threshold=0.99, max_tags=1) == "solo"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [("a,b,c", "is not source,target"), ("solo", "is not source,target"), (" ,b", "no source"), ("a\\,b", "is not")],
)
def test_tag_replacement_errors_name_the_field_and_the_item(text: str, problem: str) -> None:
    with pytest.raises(OptionsError, match=f"tag_replacement: .*{problem}"):
        TagOptions(tag_replacement=text)


def test_always_first_tags_in_the_order_given_when_found() -> None:
    # kohya moves each --always_first_tags tag found to the front in turn (the last given ends up first);
    # here the order given is kept. A tag the model did not find is not added.
    assert caption(always_first=("smile", "1boy", "Long_Hair"), character_threshold=0.99) == (
        'smile, long hair, 1girl, solo, (o)_(o), ^_^, pokemon (creature), tag "quoted", comma\'s'
    )
    # before the characters of character_first, after the rating and the additional tags; kept by max_tags
    assert caption(
        always_first=("smile",), character_first=True, include_rating=True, additional_tags=("my_lora",), max_tags=2
    ) == ("sensitive, my_lora, smile, ganyu (genshin impact)")


def test_caption_separator() -> None:
    assert caption(separator=",", max_tags=3) == "ganyu (genshin impact),1girl,hatsune miku (vocaloid)"
    assert caption(separator=" | ", max_tags=2) == "ganyu (genshin impact) | 1girl"
    for bad in ("", "  ", "\n"):
        with pytest.raises(OptionsError, match="separator"):
            TagOptions(separator=bad)


def test_plain_items_have_neither_escapes_nor_weights() -> None:
    r = postprocess(PROBS, LABELS, TagOptions(weights=True, additional_tags=("my \\(lora\\)",), max_tags=1))
    assert r.tags == ("my \\(lora\\)", "(ganyu \\(genshin impact\\):0.97)")
    assert r.plain == ("my (lora)", "ganyu (genshin impact)")


def test_the_new_options_go_through_mappings_and_refuse_bad_values() -> None:
    opts = options_from_mapping(
        {"always_first": "1girl, 1boy", "rating_position": "last", "separator": ",", "tag_replacement": "a,b"}
    )
    assert opts.always_first == ("1girl", "1boy") and opts.rating_position == "last"
    assert options_from_mapping(options_to_dict(opts)) == opts
    with pytest.raises(OptionsError, match="rating_position: expected 'first' or 'last'"):
        options_from_mapping({"rating_position": "middle"})
    with pytest.raises(OptionsError, match="character_expand"):
        options_from_mapping({"character_expand": "yes"})
    with pytest.raises(OptionsError, match="separator: longer than 8"):
        options_from_mapping({"separator": ", " * 5})
