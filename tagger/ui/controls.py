"""The option controls, built from ``OPTION_FIELDS`` so that a new engine option appears in the page at once.

Each field's kind picks the control (bool: checkbox, bounded float: slider, int: number, tag list: textbox,
``Literal``: radio); its ``description`` becomes the control's help text and its default the start value.
Only the short labels below are written by hand, and a field without one still gets a control.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

import gradio as gr

from tagger.labels import EXTRA_ORDER
from tagger.options import OPTION_FIELDS, TagOptions, literal_choices, options_from_mapping
from tagger.postprocess import category_threshold

LABELS: dict[str, str] = {
    "general_threshold": "General tags threshold",
    "character_threshold": "Character tags threshold",
    "general_mcut": "MCut: choose the general threshold automatically",
    "character_mcut": "MCut: choose the character threshold automatically",
    "additional_tags": "Additional tags",
    "exclude_tags": "Exclude tags",
    "sort": "Sort tags by",
    "max_tags": "Most tags in the prompt (0: no limit)",
    "replace_underscores": "Replace underscores with spaces",
    "escape": "Escape brackets in the prompt",
    "weights": "Write confidences as weights, as (tag:0.95)",
    "include_rating": "Add the top rating",
    "rating_position": "Rating position",
    "character_first": "Character tags first",
    "character_expand": "Split name_(series) into name, series",
    "always_first": "Always-first tags",
    "separator": "Tag separator",
    "tag_replacement": "Replace tags",
}
PLACEHOLDERS: dict[str, str] = {
    "additional_tags": "comma-separated, e.g. masterpiece, best quality",
    "exclude_tags": "comma-separated, e.g. simple background, solo",
    "always_first": "comma-separated, e.g. 1girl, 1boy",
    "tag_replacement": "e.g. 1girl,woman;long hair,very long hair",
}
# Where each field goes on the page; a field in no group lands in "format".
GROUPS: dict[str, tuple[str, ...]] = {
    "thresholds": ("general_threshold", "general_mcut", "character_threshold", "character_mcut"),
    "tags": ("additional_tags", "exclude_tags"),
    "categories": ("category_thresholds", "exclude_categories"),
    # kohya-style order and spelling of training captions (issue #13)
    "captions": (
        "include_rating",
        "rating_position",
        "character_first",
        "character_expand",
        "always_first",
        "separator",
        "tag_replacement",
    ),
}
# The fields the per-category controls (``CategoryControls``) stand for, instead of one control each.
CATEGORY_FIELDS = GROUPS["categories"]
# Categories with a threshold and an include switch, shown for the models that have them; general and
# character have an include switch only (their thresholds are the fields above).
CATEGORY_NAMES: tuple[str, ...] = EXTRA_ORDER
INCLUDE_ONLY = ("general", "character")


def label_of(name: str) -> str:
    return LABELS.get(name) or name.replace("_", " ").capitalize()


def group_of(name: str) -> str:
    return next((g for g, names in GROUPS.items() if name in names), "format")


def make_control(name: str, value: Any) -> Any:
    """The gradio component for option ``name`` starting at ``value``."""
    f = OPTION_FIELDS[name]
    meta, default = f.metadata, f.default
    common: dict[str, Any] = {"label": label_of(name), "elem_id": f"tagger_opt_{name}"}
    info = meta.get("description")
    if info:
        common["info"] = info
    if isinstance(default, bool):
        return gr.Checkbox(value=bool(value), **common)
    if isinstance(default, float) and "ge" in meta and "le" in meta:
        return gr.Slider(minimum=meta["ge"], maximum=meta["le"], step=0.01, value=float(value), **common)
    if isinstance(default, int):
        return gr.Number(value=int(value), precision=0, minimum=meta.get("ge"), maximum=meta.get("le"), **common)
    if isinstance(default, float):
        return gr.Number(value=float(value), **common)
    if isinstance(default, tuple):
        return gr.Textbox(
            value=", ".join(value), lines=1, max_lines=4, placeholder=PLACEHOLDERS.get(name, ""), **common
        )
    choices = literal_choices(name)
    if choices:
        return gr.Radio(choices=list(choices), value=str(value), **common)
    return gr.Textbox(value=str(value), placeholder=PLACEHOLDERS.get(name, ""), **common)


def to_control_value(name: str, value: Any) -> Any:
    """A TagOptions value as its control holds it (tag lists as comma-separated text)."""
    if isinstance(value, tuple):
        return ", ".join(value)
    return value


def category_label(category: str, kind: str) -> str:
    """``Copyright tags threshold`` / ``Include copyright tags``."""
    return f"{category.capitalize()} tags threshold" if kind == "threshold" else f"Include {category} tags"


@dataclass
class CategoryControls:
    """A threshold slider and an include switch per category beyond general and character (one row each,
    shown only for the models that have the category), and include switches for general and character:
    together they stand for ``category_thresholds`` and ``exclude_categories``."""

    thresholds: dict[str, Any]  # category -> slider
    includes: dict[str, Any]  # category -> checkbox
    rows: dict[str, Any]  # category -> the row holding its controls

    @classmethod
    def build(cls, initial: TagOptions, shown: typing.Collection[str]) -> CategoryControls:
        out = cls({}, {}, {})
        info = OPTION_FIELDS["category_thresholds"].metadata
        with gr.Row(elem_id="tagger_include_core"):
            for name in INCLUDE_ONLY:
                out.includes[name] = out._include(name, initial)
        for name in CATEGORY_NAMES:
            with gr.Row(visible=name in shown, elem_id=f"tagger_category_{name}") as row:
                out.thresholds[name] = gr.Slider(
                    minimum=info["ge"],
                    maximum=info["le"],
                    step=0.01,
                    value=category_threshold(name, initial),
                    label=category_label(name, "threshold"),
                    elem_id=f"tagger_threshold_{name}",
                    scale=3,
                )
                out.includes[name] = out._include(name, initial)
            out.rows[name] = row
        for comp in [*out.thresholds.values(), *out.includes.values()]:
            comp.do_not_save_to_config = True
        return out

    @staticmethod
    def _include(name: str, initial: TagOptions) -> Any:
        return gr.Checkbox(
            value=name not in initial.exclude_categories,
            label=category_label(name, "include"),
            elem_id=f"tagger_include_{name}",
            scale=1,
        )

    def components(self) -> list[Any]:
        return [*self.thresholds.values(), *self.includes.values()]

    def values(self, data: dict[Any, Any]) -> dict[str, Any]:
        """The two option fields from an event's inputs (only what the event sent)."""
        out: dict[str, Any] = {}
        given = {name: data[c] for name, c in self.thresholds.items() if c in data}
        if given:
            out["category_thresholds"] = given
        if any(c in data for c in self.includes.values()):
            out["exclude_categories"] = [name for name, c in self.includes.items() if c in data and not data[c]]
        return out

    def updates(self, options: TagOptions) -> dict[Any, Any]:
        out: dict[Any, Any] = {c: category_threshold(name, options) for name, c in self.thresholds.items()}
        out.update({c: name not in options.exclude_categories for name, c in self.includes.items()})
        return out

    def visibility(self, shown: typing.Collection[str]) -> dict[Any, Any]:
        """``{row: update}`` showing the rows of the categories in ``shown`` only."""
        return {row: gr.update(visible=name in shown) for name, row in self.rows.items()}


@dataclass
class OptionControls:
    """The controls of every option field, by field name, in ``OPTION_FIELDS`` order; the per-category ones
    (``category_thresholds``, ``exclude_categories``) in ``categories``."""

    components: dict[str, Any]
    categories: CategoryControls | None = None

    @classmethod
    def build(
        cls,
        initial: TagOptions,
        group: str | None = None,
        into: OptionControls | None = None,
        *,
        shown_categories: typing.Collection[str] = (),
    ) -> OptionControls:
        """Create the controls of ``group`` (all fields when None) in the current layout; of the categories
        beyond general and character, ``shown_categories`` are visible at first."""
        out = into or cls({})
        for name in OPTION_FIELDS:
            if group is None or group_of(name) == group:
                if name in CATEGORY_FIELDS:
                    if out.categories is None:
                        out.categories = CategoryControls.build(initial, shown_categories)
                    continue
                comp = make_control(name, getattr(initial, name))
                # Their start comes from the Tagger settings: the WebUI's ui-config.json must not override it.
                comp.do_not_save_to_config = True
                out.components[name] = comp
        return out

    def __iter__(self) -> typing.Iterator[Any]:
        extra = self.categories.components() if self.categories is not None else []
        return iter([*self.components.values(), *extra])

    def options(self, data: dict[Any, Any]) -> TagOptions:
        """TagOptions from an event's ``{component: value}`` inputs; OptionsError names a bad field."""
        values = {name: data[c] for name, c in self.components.items() if c in data}
        if self.categories is None:
            return options_from_mapping(values)
        cats = self.categories.values(data)
        thresholds = cats.pop("category_thresholds", {})
        base = options_from_mapping({**values, **cats})
        # A slider at the value its category falls back to stays unset, so that it follows the general or
        # character threshold (and options round-trip through the controls).
        given = {name: v for name, v in thresholds.items() if v != category_threshold(name, base)}
        return options_from_mapping({**values, **cats, "category_thresholds": given})

    def updates(self, options: TagOptions) -> dict[Any, Any]:
        """``{component: value}`` outputs that show ``options``."""
        out = {c: to_control_value(name, getattr(options, name)) for name, c in self.components.items()}
        if self.categories is not None:
            out.update(self.categories.updates(options))
        return out
