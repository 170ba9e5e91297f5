"""Training captions (issue #13): each kohya-style option against captions written out by hand here.

The expectations are literal strings worked out from kohya-ss/sd-scripts' finetune/tag_images_by_wd14_tagger.py
(commit 48d368f) and this project's documented differences, never the implementation's own output.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger import cli
from tagger.batch import BatchConfig, BatchConfigError, merge_tags, run_batch
from tagger.engine import Tagger
from tagger.errors import OptionsError
from tagger.labels import CHARACTER, GENERAL, RATING, Labels
from tagger.options import TagOptions, options_from_mapping, options_to_dict, parse_tag_replacement
from tagger.postprocess import expand_character, postprocess
from tagger.presets import PresetStore

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


def test_other_categories_sort_with_the_general_tags() -> None:
    """As kohya does with cl_tagger's categories: only character tags go first and are expanded; a copyright
    tag (whose name may well end in _(series)) and an artist sort with the general tags by confidence."""
    from tests.modelgen import ARTIST, COPYRIGHT

    rows = [*TAGS, ("fate_(series)", COPYRIGHT, 0.93), ("some_artist", ARTIST, 0.85)]
    labels = Labels.from_rows([(n, c) for n, c, _ in rows])
    probs = np.array([p for _, _, p in rows], dtype=np.float32)
    opts = TagOptions(
        escape=False,
        general_threshold=0.85,
        character_threshold=0.9,
        category_thresholds={"copyright": 0.8, "artist": 0.8},
        character_first=True,
        character_expand=True,
    )
    assert postprocess(probs, labels, opts).prompt == (
        "ganyu, genshin impact, hatsune miku, vocaloid, raiden shogun (mysterious costume), "
        "1girl, fate (series), solo, some artist"
    )


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


# -- batch captions through the real engine, the generated model and real files ------------------------------

# A square image is not padded, so the model sees pure colour: tests/modelgen.py's rows give a red image
# red_theme (~1.0), solo 0.9, kirisame_marisa 0.88, ^_^ 0.7, pokemon_(creature) 0.6, long_hair 0.5,
# 'tag "quoted", comma's' 0.4, smile 0.36, hakurei_reimu 0.3, shiroko_(blue_archive) 0.15 and the rating
# general 0.5; a green one hatsune_miku (~1.0) instead of red_theme.
RED_CAPTION = 'red theme, solo, kirisame marisa, ^_^, pokemon (creature), long hair, tag "quoted", comma\'s, smile'
GREEN_CAPTION = RED_CAPTION.replace("red theme", "hatsune miku")


def square(path: Path, rgb: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), rgb).save(path)
    return path


def tag(model_root: Path, *argv: str) -> tuple[int, str]:
    """``python -m tagger tag ARGV`` in this process, with the test model; (exit status, stdout)."""
    out = io.StringIO()
    code = cli.main(["tag", *argv, "--models-dir", str(model_root), "--model", "test-model", "--device", "cpu"], out)
    return code, out.getvalue()


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_caption_files_are_plain_text_and_escaped_only_on_request(model_root: Path, tmp_path: Path) -> None:
    red = square(tmp_path / "data" / "red.png", (255, 0, 0))
    assert tag(model_root, str(red.parent)) == (0, "")
    assert (red.parent / "red.txt").read_text(encoding="utf-8") == RED_CAPTION
    tag(model_root, str(red.parent), "--escape", "--existing", "overwrite", "--no-backup")
    assert (red.parent / "red.txt").read_text(encoding="utf-8") == RED_CAPTION.replace(
        "pokemon (creature)", "pokemon \\(creature\\)"
    )
    # a prompt printed for the WebUI keeps its escapes unless --no-escape
    assert tag(model_root, str(red))[1] == f"{red}: " + RED_CAPTION.replace("(creature)", "\\(creature\\)") + "\n"
    assert tag(model_root, str(red), "--no-escape")[1] == f"{red}: {RED_CAPTION}\n"


def test_kohya_style_flags_on_the_command_line(model_root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    square(data / "red.png", (255, 0, 0))
    cases = [
        (
            ["--character-tags-first", "--rating-last"],
            'kirisame marisa, red theme, solo, ^_^, pokemon (creature), long hair, tag "quoted", comma\'s, smile, '
            "general",
        ),
        (
            ["--character-tag-expand", "--character-threshold", "0.1", "--rating"],
            'general, red theme, solo, kirisame marisa, ^_^, pokemon (creature), long hair, tag "quoted", comma\'s, '
            "smile, hakurei reimu, shiroko, blue archive",
        ),
        (
            ["--caption-separator", ",", "--tag-replacement", 'solo,alone;tag "quoted"\\, comma\'s,quoted;smile,'],
            "red theme,alone,kirisame marisa,^_^,pokemon (creature),long hair,quoted",
        ),
        (
            ["--always-first-tags", "smile, long_hair, 1boy", "--add", "my_lora"],
            "my_lora, smile, long hair, red theme, solo, kirisame marisa, ^_^, pokemon (creature), "
            'tag "quoted", comma\'s',
        ),
        (["--keep-underscores", "--max-tags", "5"], "red_theme, solo, kirisame_marisa, ^_^, pokemon_(creature)"),
    ]
    for argv, want in cases:
        assert tag(model_root, str(data), "--existing", "overwrite", "--no-backup", *argv)[0] == 0
        assert (data / "red.txt").read_text(encoding="utf-8") == want, argv
    code, _ = tag(model_root, str(data), "--tag-replacement", "a,b,c")
    assert code == 2  # a usage error naming the flag (checked on stderr by test_bad_flags_name_themselves)


def test_bad_flags_name_themselves(model_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    red = square(tmp_path / "red.png", (255, 0, 0))
    for argv, message in [
        (["--tag-replacement", "a,b,c"], "error: option --tag-replacement: 'a,b,c' is not source,target"),
        (["--caption-separator", " "], "error: option --caption-separator: ' ' holds no visible character"),
        (["--captions", "--workers", "-1"], "error: workers: -1 is not between 0 and 256"),
        (["--metadata", str(tmp_path / "meta.txt")], "name it .json (one object) or .jsonl"),
    ]:
        assert tag(model_root, str(red), *argv)[0] == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not (tmp_path / "red.txt").exists()


def test_a_changed_caption_is_kept_first(model_root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    square(data / "red.png", (255, 0, 0))
    square(data / "sub" / "green.png", (0, 255, 0))
    hand = b"hand written, my_tag\n"
    (data / "red.txt").write_bytes(hand)
    tag(model_root, str(data), "-r", "--existing", "overwrite")
    assert (data / "red.txt.bak").read_bytes() == hand  # the caption as it was, byte for byte
    assert (data / "red.txt").read_text(encoding="utf-8") == RED_CAPTION
    assert not (data / "sub" / "green.txt.bak").exists()  # there was nothing to keep
    # a run that changes nothing leaves the caption and its backup alone
    tag(model_root, str(data), "-r", "--existing", "overwrite")
    assert (data / "red.txt.bak").read_bytes() == hand
    # a run that changes it keeps the caption it replaces (the .bak is always the one before this run)
    tag(model_root, str(data), "-r", "--existing", "append", "--add", "extra")
    assert (data / "red.txt.bak").read_text(encoding="utf-8") == RED_CAPTION
    assert (data / "red.txt").read_text(encoding="utf-8") == RED_CAPTION + ", extra"
    # a backup folder mirrors the captions' folders; --no-backup keeps nothing
    keep = tmp_path / "kept"
    tag(model_root, str(data), "-r", "--existing", "overwrite", "--backup-dir", str(keep), "--max-tags", "1")
    extra = b", extra"
    assert files(keep) == {"red.txt": RED_CAPTION.encode() + extra, "sub/green.txt": GREEN_CAPTION.encode() + extra}
    before = files(data)
    tag(model_root, str(data), "-r", "--existing", "overwrite", "--no-backup")
    after = files(data)
    baks = {k: v for k, v in before.items() if k.endswith(".bak")}
    assert set(baks) == {"red.txt.bak", "sub/green.txt.bak"} and {k: after[k] for k in baks} == baks
    assert set(after) == set(before) and after["red.txt"] == RED_CAPTION.encode()


def test_dry_run_counts_actions_and_collisions_and_writes_nothing(model_root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for name in ("a.png", "b.png", "pic.png", "pic.jpg", "sub/c.png"):
        square(data / name, (255, 0, 0))
    (data / "a.txt").write_text("earlier", encoding="utf-8")
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in data.rglob("*") if p.is_file()}
    code, out = tag(model_root, str(data), "-r", "--existing", "overwrite", "--dry-run")
    assert code == 1  # an image would fail
    lines = out.splitlines()
    assert f"overwrite  {data / 'a.png'} -> {data / 'a.txt'} (backup {data / 'a.txt.bak'})" in lines
    assert f"new        {data / 'b.png'} -> {data / 'b.txt'}" in lines
    assert f"new        {data / 'pic.jpg'} -> {data / 'pic.txt'}" in lines  # first in sorted order
    assert f"new        {data / 'sub' / 'c.png'} -> {data / 'sub' / 'c.txt'}" in lines
    collision = next(line for line in lines if line.startswith("failed"))
    assert f"{data / 'pic.png'}: not tagged: its caption {data / 'pic.txt'} is already the caption of" in collision
    assert lines[-1] == (
        "dry run, nothing written: 5 images: 3 new, 0 skip, 1 overwrite, 0 append, 0 prepend, 0 duplicate, "
        "1 failed; 1 captions would be kept as a backup first"
    )
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in data.rglob("*") if p.is_file()} == before
    # skip: the caption there is left, and nothing would be backed up
    code, out = tag(model_root, str(data / "a.png"), str(data / "b.png"), "--dry-run")
    assert code == 0 and out.splitlines()[-1].startswith("dry run, nothing written: 2 images: 1 new, 1 skip, 0 ")


def test_stats_from_the_cache_before_writing(model_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    square(data / "1-red.png", (255, 0, 0))
    square(data / "2-green.png", (0, 255, 0))
    tag(model_root, str(data))  # captions at the defaults, probabilities into the cache
    square(data / "3-blue.png", (0, 0, 255))  # not in the cache
    before = files(data)
    capsys.readouterr()
    code, out = tag(model_root, str(data), "--stats", "--general-threshold", "0.45", "--exclude", "solo")
    assert code == 0 and files(data) == before
    assert "model test-model on" not in capsys.readouterr().err  # the model was not loaded
    # at 0.45 each image has 6 tags (red theme or hatsune miku, solo, kirisame marisa, ^_^, pokemon (creature),
    # long hair); solo is excluded; against the captions written at 0.35 each loses solo, smile and the quoted
    # tag, which a trainer reads back as two (tag "quoted" and comma's): 4 tags an image
    stats = out.splitlines()
    assert (
        "probability cache: 2 of 3 images (1 not in it, or under its floor at these thresholds: a run tags them)"
        in stats
    )
    assert "tags per image: 6.0 before the excludes, 5.0 after; 2 images lose tags to the excludes" in stats
    assert "excluded: solo (2 images)" in stats
    assert (
        "against the 2 caption files there now: 0 images gain tags (0 in all), 2 lose tags (8 in all), 0 unchanged"
        in stats
    )
    top = stats[stats.index("top tags (of 2 images): before excludes -> after") + 1 :]
    assert top == [
        "  ^_^: 2 -> 2",
        "  kirisame marisa: 2 -> 2",
        "  long hair: 2 -> 2",
        "  pokemon (creature): 2 -> 2",
        "  hatsune miku: 1 -> 1",
        "  red theme: 1 -> 1",
    ]


def test_one_metadata_file_for_the_whole_run(model_root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    red, green = square(data / "red.png", (255, 0, 0)), square(data / "green.png", (0, 255, 0))
    meta = tmp_path / "meta.json"
    tag(model_root, str(data), "--metadata", str(meta))
    record = json.loads(meta.read_text(encoding="utf-8"))
    assert list(record) == [str(green), str(red)]  # kohya's layout: image path -> tags and size
    assert record[str(red)]["tags"] == RED_CAPTION and record[str(red)]["image_size"] == [32, 32]
    assert record[str(green)]["character"]["hatsune_miku"] > 0.99 and record[str(red)]["model"] == "local:test-model"
    assert min(record[str(red)]["general"].values()) >= 0.01 and "existing" not in record[str(red)]
    # a second run skips both; the file still lists them, with the captions they have
    (data / "red.txt").write_text("edited by hand", encoding="utf-8")
    lines = tmp_path / "meta.jsonl"
    tag(model_root, str(data), "--metadata", str(lines))
    rows = [json.loads(line) for line in lines.read_text(encoding="utf-8").splitlines()]
    assert rows == [
        {"image_path": str(green), "caption": GREEN_CAPTION, "image_size": [32, 32], "existing": True},
        {"image_path": str(red), "caption": "edited by hand", "image_size": [32, 32], "existing": True},
    ]


def test_frequency_report_and_csv(model_root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for name, rgb in (("a.png", (255, 0, 0)), ("b.png", (255, 0, 0)), ("c.png", (0, 255, 0))):
        square(data / name, rgb)
    counts = tmp_path / "counts.csv"
    code, out = tag(model_root, str(data), "--frequency-tags", "--frequency-csv", str(counts), "--rating")
    assert code == 0
    shared = [
        "general",
        "kirisame marisa",
        "long hair",
        "pokemon (creature)",
        "smile",
        "solo",
        'tag "quoted", comma\'s',
    ]
    want = ["Tag frequencies:", "^_^: 3", *(f"{t}: 3" for t in shared), "red theme: 2", "hatsune miku: 1"]
    assert out.splitlines() == want
    rows = counts.read_text(encoding="utf-8-sig").splitlines()
    assert rows[0] == "tag,images,share_percent" and rows[1] == "^_^,3,100.0" and rows[-1] == "hatsune miku,1,33.3"
    assert '"tag ""quoted"", comma\'s",3,100.0' in rows


def test_decoding_threads_follow_workers(model_root: Path, tmp_path: Path) -> None:
    for i in range(6):
        square(tmp_path / f"{i}.png", (255, 0, 0))
    seen: set[str] = set()

    def watch(_: object) -> None:
        seen.update(t.name for t in threading.enumerate() if t.name.startswith("tagger-decode"))

    tagger = Tagger(model_root, "cpu", download=False)
    config = BatchConfig([tmp_path], workers=1, batch_size=1, existing="overwrite")
    run_batch(tagger, "test-model", config, TagOptions(), progress=watch)
    assert seen == {"tagger-decode_0"}
    seen.clear()  # 0: every image decoded in series on the caller's thread, no decoding thread at all
    config = BatchConfig([tmp_path], workers=0, batch_size=1, existing="overwrite")
    summary = run_batch(tagger, "test-model", config, TagOptions(), progress=watch)
    assert summary.tagged == 6 and seen == set()
    with pytest.raises(BatchConfigError, match="workers: 257 is not between 0 and 256"):
        run_batch(tagger, "test-model", BatchConfig([tmp_path], workers=257), TagOptions())


def test_presets_keep_the_caption_options(tmp_path: Path) -> None:
    opts = TagOptions(
        character_first=True,
        character_expand=True,
        always_first=("1girl", "1boy"),
        separator=",",
        tag_replacement="a\\,b,c",
        include_rating=True,
        rating_position="last",
    )
    store = PresetStore(tmp_path)
    store.save("training", opts)
    assert store.load("training").options == opts


def test_append_knows_a_tag_with_the_separator_read_back_in_two() -> None:
    existing = ['tag "quoted"', "comma's", "solo"]  # how 'tag "quoted", comma's' reads back from a caption
    assert merge_tags(existing, ['tag "quoted", comma\'s', "Solo", "new"], "append") == [*existing, "new"]
    assert merge_tags(["a", "b"], ["a | b", "c"], "prepend", " | ") == ["c", "a", "b"]
