"""The WebUI prompt parser (tagger/prompt.py): a table of syntax cases, each checked item by item, and the
writing back (untouched prompts exactly as written; dropped items with their brackets and separators)."""

from __future__ import annotations

import pytest

from tagger.prompt import AND, BREAK, EMBEDDING, NETWORK, TAG, parse

R, S = 1.1, 1 / 1.1  # ( ) and [ ]


def items(text: str) -> list[tuple[str, str, float, bool]]:
    return [(t.kind, t.key, round(t.weight, 4), t.fixed) for t in parse(text).tokens]


def tag(key: str, weight: float = 1.0, fixed: bool = False) -> tuple[str, str, float, bool]:
    return (TAG, key, round(weight, 4), fixed)


CASES = [
    # plain items: commas and new lines separate them; spaces around are not part of them
    ("1girl, solo,long hair", [tag("1girl"), tag("solo"), tag("long hair")]),
    ("a\nb,  , c", [tag("a"), tag("b"), tag("c")]),
    # emphasis: ( ) x1.1, [ ] /1.1, nested brackets multiply, (x:w) sets w
    ("(smile)", [tag("smile", R)]),
    ("((smile))", [tag("smile", R * R)]),
    ("[bad]", [tag("bad", S)]),
    ("[[bad]]", [tag("bad", S * S)]),
    ("(long hair:1.3)", [tag("long hair", 1.3)]),
    ("((long hair:1.3))", [tag("long hair", 1.3 * R)]),
    ("(red eyes, blue hair:0.8)", [tag("red eyes", 0.8), tag("blue hair", 0.8)]),
    ("(a, (b:1.5), [c])", [tag("a", R), tag("b", R * 1.5), tag("c", R * S)]),
    ("(tag: 1.25 )", [tag("tag", 1.25)]),
    ("{{nai}}", [tag("nai", 1.05 * 1.05)]),  # NovelAI's braces
    # a group ends an item even without a comma
    ("blue (eyes:1.1)", [tag("blue"), tag("eyes", 1.1)]),
    # escapes: a backslashed bracket is text; compared without the backslash
    (r"pokemon \(creature\)", [tag("pokemon (creature)")]),
    (r"(pokemon \(creature\):1.2)", [tag("pokemon (creature)", 1.2)]),
    (r"\[not weak\]", [tag("[not weak]")]),
    (r"a\, b", [tag("a, b")]),
    # a colon not followed by a weight is text
    ("re:zero, (re:zero)", [tag("re:zero"), tag("re:zero", R)]),
    ("rating:explicit", [tag("rating:explicit")]),
    # case and underscores do not matter for comparison
    ("Long_Hair", [tag("long hair")]),
    # extra networks: any <kind:name:...>, where they stand
    ("<lora:myStyle_v2:0.8>, 1girl", [(NETWORK, "lora:mystyle_v2", 1.0, False), tag("1girl")]),
    ("<lyco:thing:1:0.5>,<hypernet:h:1>", [(NETWORK, "lyco:thing", 1.0, False), (NETWORK, "hypernet:h", 1.0, False)]),
    ("(<lora:x:1>:1.2)", [(NETWORK, "lora:x", 1.2, False)]),
    ("a <b", [tag("a <b")]),  # not an extra network: text
    # embeddings, ComfyUI style
    (
        "embedding:EasyNegative, (embedding:bad_hands:1.2)",
        [(EMBEDDING, "embedding:easynegative", 1.0, False), (EMBEDDING, "embedding:bad hands", 1.2, False)],
    ),
    # BREAK (any nesting, with or without commas) and AND (composable sub-prompts, each with its weight)
    ("a BREAK b", [tag("a"), (BREAK, "break", 1.0, False), tag("b")]),
    ("a, BREAK, b", [tag("a"), (BREAK, "break", 1.0, False), tag("b")]),
    ("(a BREAK b)", [tag("a", R), (BREAK, "break", R, False), tag("b", R)]),
    ("BREAKFAST", [tag("breakfast")]),
    ("cat AND dog:0.5", [tag("cat"), (AND, "and", 1.0, False), tag("dog")]),
    ("BRAND, ANDROID", [tag("brand"), tag("android")]),
    # scheduling [a:b:when], [a:when], [a::when]; alternation [a|b]: their items are "fixed"
    ("[cat:dog:0.5]", [tag("cat", fixed=True), tag("dog", fixed=True)]),
    ("[cat:10]", [tag("cat", fixed=True)]),
    ("[cat::10]", [tag("cat", fixed=True)]),
    ("[cat|dog|bird]", [tag("cat", fixed=True), tag("dog", fixed=True), tag("bird", fixed=True)]),
    ("[(cat:1.2):dog:0.5]", [tag("cat", 1.2, True), tag("dog", fixed=True)]),
    ("[a:b:c:0.5]", [tag("a:b:c:0.5", S)]),  # not a schedule (three colons): text in [ ]
    ("[a:b]", [tag("a:b", S)]),  # no step: text in [ ]
    # what is not syntax is text, and an unclosed group runs to the end (as the WebUI reads it)
    ("x), y]", [tag("x)"), tag("y]")]),
    ("(unclosed, a", [tag("unclosed", R), tag("a", R)]),
    ("", []),
    (",,, \n ", []),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0] or "empty" for c in CASES])
def test_syntax_table(text: str, expected: list) -> None:
    assert items(text) == expected


@pytest.mark.parametrize("text", [c[0] for c in CASES], ids=[c[0] or "empty" for c in CASES])
def test_written_back_exactly_when_nothing_is_dropped(text: str) -> None:
    assert parse(text).render(lambda t: False) == text


@pytest.mark.parametrize(
    ("text", "dropped", "expected"),
    [
        ("a, b, c", {"b"}, "a, c"),
        ("a, b, c", {"a"}, "b, c"),
        ("a, b, c", {"c"}, "a, b"),
        ("a,\nb,\nc", {"b"}, "a,\nc"),
        ("(a, b:1.2), c", {"b"}, "(a:1.2), c"),
        ("(a, b:1.2), c", {"a", "b"}, "c"),
        ("x (a) , c", {"a"}, "x , c"),  # the comma survives the group
        ("((smile)), 1girl", {"smile"}, "1girl"),
        ("[cat:dog:0.5], x", {"cat"}, "[:dog:0.5], x"),
        ("[cat:dog:0.5], x", {"cat", "dog"}, "x"),
        ("a BREAK b", {"b"}, "a"),
        ("a BREAK b BREAK c", {"b"}, "a BREAK c"),
        ("cat AND dog:0.5", {"cat"}, "dog:0.5"),
        ("<lora:x:1>, a", {"lora:x"}, "a"),
        ("a, <lora:x:1>", {"lora:x"}, "a"),
    ],
)
def test_dropping_items(text: str, dropped: set[str], expected: str) -> None:
    assert parse(text).render(lambda t: t.key in dropped) == expected


def test_plain_text_and_weights_of_the_items() -> None:
    (a, b) = parse(r"(pokemon \(creature\):1.2), Long_Hair").tokens
    assert a.text == r"pokemon \(creature\)" and a.plain == "pokemon (creature)" and a.weight == 1.2
    assert b.plain == "Long_Hair" and b.key == "long hair"
    assert [t.kind for t in parse("a BREAK <lora:x:1> AND b").tags()] == [TAG, NETWORK, TAG]
