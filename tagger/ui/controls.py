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

from tagger.options import OPTION_FIELDS, TagOptions, literal_choices, options_from_mapping

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


@dataclass
class OptionControls:
    """The controls of every option field, by field name, in ``OPTION_FIELDS`` order."""

    components: dict[str, Any]

    @classmethod
    def build(cls, initial: TagOptions, group: str | None = None, into: OptionControls | None = None) -> OptionControls:
        """Create the controls of ``group`` (all fields when None) in the current layout."""
        out = into or cls({})
        for name in OPTION_FIELDS:
            if group is None or group_of(name) == group:
                comp = make_control(name, getattr(initial, name))
                # Their start comes from the Tagger settings: the WebUI's ui-config.json must not override it.
                comp.do_not_save_to_config = True
                out.components[name] = comp
        return out

    def __iter__(self) -> typing.Iterator[Any]:
        return iter(self.components.values())

    def options(self, data: dict[Any, Any]) -> TagOptions:
        """TagOptions from an event's ``{component: value}`` inputs; OptionsError names a bad field."""
        return options_from_mapping({name: data[c] for name, c in self.components.items() if c in data})

    def updates(self, options: TagOptions) -> dict[Any, Any]:
        """``{component: value}`` outputs that show ``options``."""
        return {c: to_control_value(name, getattr(options, name)) for name, c in self.components.items()}
