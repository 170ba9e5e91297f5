"""Stand-in of the WebUI's ``modules.infotext_utils`` (send-to buttons), for tests only.

``parse_generation_parameters`` keeps only the behaviour the tagger must cope with (documented in
../shared/docs/webui-host.md): the text is trimmed and split into lines; when the last line holds three or
more ``name: value`` pairs it is read as generation parameters and is not part of the prompt; a line starting
with ``Negative prompt:`` starts the negative prompt.
"""

from __future__ import annotations

import re
from typing import Any

# A "name: value" pair: a name starting with a letter or digit (words, spaces, - and /), a colon, then a
# quoted value or anything up to the next comma.
PAIR = re.compile(r'\s*(\w[\w /-]+):\s*("(?:[^"\\]|\\.)+"|[^,]*)(?:,|$)')
NEGATIVE = "Negative prompt:"


class ParamBinding:
    def __init__(
        self,
        paste_button: Any,
        tabname: str,
        source_text_component: Any = None,
        source_image_component: Any = None,
        source_tabname: Any = None,
        override_settings_component: Any = None,
        paste_field_names: Any = None,
    ) -> None:
        self.paste_button = paste_button
        self.tabname = tabname
        self.source_text_component = source_text_component
        self.source_image_component = source_image_component
        self.source_tabname = source_tabname
        self.override_settings_component = override_settings_component
        self.paste_field_names = paste_field_names or []


registered_param_bindings: list[ParamBinding] = []
paste_fields: dict[str, list[tuple[Any, str]]] = {}  # tab -> its (component, infotext name) fields


def register_paste_params_button(binding: ParamBinding) -> None:
    registered_param_bindings.append(binding)


def parse_generation_parameters(text: str) -> dict[str, str]:
    lines = text.strip().split("\n")
    params: dict[str, str] = {}
    if len(PAIR.findall(lines[-1])) >= 3:
        params = dict(PAIR.findall(lines.pop()))
    prompt: list[str] = []
    negative: list[str] = []
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE):
            negative.append(line[len(NEGATIVE) :].strip())
        elif negative:
            negative.append(line)
        else:
            prompt.append(line)
    params["Prompt"] = "\n".join(prompt)
    params["Negative prompt"] = "\n".join(negative)
    return params


def paste(binding: ParamBinding, value: Any) -> dict[str, str]:
    """What the host does when the binding's button is clicked: read the source (through its preprocess,
    as gradio does for an event input) and parse it."""
    component = binding.source_text_component
    text = component.preprocess(value) if hasattr(component, "preprocess") else value
    return parse_generation_parameters(text)


def connect_paste_params_buttons() -> None:
    """What the host does once every tab is built: each registered send-to button, clicked, reads its text
    component (an event input: through the component's preprocess) and fills the target tab's fields from
    ``parse_generation_parameters``; a field the text does not name is left as it is."""
    import gradio as gr

    for binding in registered_param_bindings:
        fields = paste_fields.get(binding.tabname)
        if not fields or binding.source_text_component is None:
            continue

        def paste(text: str, fields: list[tuple[Any, str]] = fields) -> list[Any]:
            params = parse_generation_parameters(text)
            return [params[key] if key in params else gr.update() for _, key in fields]

        binding.paste_button.click(paste, [binding.source_text_component], [f for f, _ in fields])
