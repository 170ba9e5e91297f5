"""The page's part for images that carry their generation data: the embedded prompt, negative prompt and
settings beside the tagged prompt, the comparison in four groups, and the embedded and merged prompts, each
with its own send-to buttons.

It shows itself when a dropped image carries generation data (reading it decodes nothing and runs no model),
compares once the image is tagged, and follows option changes from the probabilities the page keeps. An
image without generation data leaves it hidden, and the page works as it did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from tagger.compare import compare
from tagger.embedded import GenerationData, read_generation_data
from tagger.host import Host
from tagger.options import TagOptions
from tagger.prompt import EMBEDDING, NETWORK, parse
from tagger.ui import compat, render


@dataclass(frozen=True)
class Shown:
    """What the panel shows: the image's generation data, and whether the page's last prediction is of this
    image (so that a threshold change may compare them)."""

    data: GenerationData | None
    tagged: bool = False


def without_networks(prompt: str) -> str:
    """``prompt`` without its LoRA/extra-network and embedding references (written back otherwise as it was)."""
    return parse(prompt).render(lambda t: t.kind in (NETWORK, EMBEDDING))


class EmbeddedPanel:
    def __init__(self, host: Host) -> None:
        self.host = host

    def build(self, image: Any) -> None:
        """Create the components in the current layout; ``image`` is what img2img receives with a prompt."""
        self.state = gr.State(Shown(None))
        with gr.Group(visible=False, elem_id="tagger_embedded") as self.group:
            self.source = gr.HTML(elem_id="tagger_embedded_source")
            self.prompt = self._sendable(image, "embedded", label="Embedded prompt")
            with gr.Row(elem_id="tagger_embedded_details"):
                self.negative = gr.Textbox(
                    label="Embedded negative prompt", lines=2, max_lines=8, interactive=False,
                    elem_id="tagger_embedded_negative", show_copy_button=True,
                )  # fmt: skip
                self.settings = gr.Textbox(
                    label="Embedded settings", lines=2, max_lines=8, interactive=False,
                    elem_id="tagger_embedded_settings",
                )  # fmt: skip
            self.comparison = gr.HTML(elem_id="tagger_comparison")
            self.merged = self._sendable(
                image,
                "merged",
                label="Merged prompt",
                info="The embedded prompt without what the tagger contradicts, plus what it adds",
            )
            with gr.Row(elem_id="tagger_embedded_switches"):
                self.keep_networks = gr.Checkbox(
                    label="Keep LoRA and embedding references", value=True, elem_id="tagger_keep_networks"
                )
                self.send_settings = gr.Checkbox(
                    label="Send the embedded negative prompt and settings too",
                    info="As PNG Info does: steps, sampler, seed, size...",
                    value=False,
                    elem_id="tagger_send_settings",
                )

    def _sendable(self, image: Any, name: str, **textbox: Any) -> Any:
        """A prompt box that the send-to buttons under it hand to the host (a row of them where it has tabs)."""
        box = compat.SendableTextbox(
            lines=3, max_lines=12, elem_id=f"tagger_{name}_prompt", show_copy_button=True, interactive=True, **textbox
        )
        box.outgoing = self.host.send_text
        if self.host.send_targets():
            with gr.Row(elem_id=f"tagger_send_{name}_row"):
                self.host.add_send_buttons(image, box, name=name)
        return box

    @property
    def outputs(self) -> list[Any]:
        return [
            self.state,
            self.group,
            self.source,
            self.prompt,
            self.negative,
            self.settings,
            self.comparison,
            self.merged,
        ]

    @property
    def switches(self) -> list[Any]:
        return [self.keep_networks, self.send_settings]

    # -- what it shows ---------------------------------------------------------------------------------------

    def views(self, shown: Shown, last: Any, options: TagOptions | None, keep: bool, send: bool) -> dict[Any, Any]:
        """Every output for ``shown`` (with ``last``, the page's LastPrediction, once the image is tagged)."""
        data = shown.data
        if data is None:
            return {self.state: shown, self.group: gr.update(visible=False), self.comparison: "", self.merged: ""}
        embedded = data.prompt if keep else without_networks(data.prompt)
        comparison = None
        waiting = render.COMPARE_PENDING if data.prompt.strip() else render.NO_EMBEDDED_PROMPT
        if shown.tagged and last is not None and options is not None and data.prompt.strip():
            mcut = last.hit.mcut if last.hit is not None else None
            comparison = compare(data.prompt, last.probs, last.labels, options, mcut=mcut)
        merged = comparison.merged(keep) if comparison is not None else ""
        if send:  # what PNG Info would send: the negative prompt and the settings line after the prompt
            embedded = data.infotext(embedded)
            merged = data.infotext(merged) if merged else ""
        return {
            self.state: shown,
            self.group: gr.update(visible=True),
            self.source: render.embedded_source_html(data),
            self.prompt: embedded,
            self.negative: data.negative_prompt,
            self.settings: data.settings_line,
            self.comparison: render.comparison_html(comparison, waiting),
            self.merged: merged,
        }

    def show(self, image: Any, keep: bool, send: bool) -> dict[Any, Any]:
        """A new image (or none): its generation data, at once; the comparison waits for its tags."""
        data = read_generation_data(image) if image is not None else None
        return self.views(Shown(data), None, None, keep, send)

    def tagged(self, image: Any, last: Any, options: TagOptions | None, keep: bool, send: bool) -> dict[Any, Any]:
        """The image was tagged (``last`` is its prediction; None when tagging failed)."""
        data = read_generation_data(image) if image is not None else None
        return self.views(Shown(data, last is not None), last, options, keep, send)

    def refresh(
        self, shown: Shown | None, last: Any, options: TagOptions | None, keep: bool, send: bool
    ) -> dict[Any, Any]:
        """Options or switches changed: the same image, shown again (compared when ``last`` is its own)."""
        shown = shown or Shown(None)
        if shown.data is None:
            return {self.state: shown}
        return self.views(shown, last if shown.tagged else None, options, keep, send)
