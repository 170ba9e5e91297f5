"""The Tagger page: layout and event wiring. The same page is the WebUI tab and the standalone site.

Handlers take ``{component: value}`` inputs and return ``{component: value}`` outputs, so an error can update
the status line alone: the page never shows gradio's "needed N outputs" error. Expected failures
(``TaggerError``: a missing model, a broken image, a bad option) are shown as they are; anything else is
logged with its traceback and shown as an unexpected error.
"""

from __future__ import annotations

import html
import logging
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from tagger.batch import (
    BatchConfig,
    BatchConfigError,
    BatchProgress,
    BatchSummary,
    batch_stats,
    check_roots,
    plan_batch,
    run_batch,
    top_tags,
    write_counts_csv,
)
from tagger.cache import CachedProbs
from tagger.engine import Tagger
from tagger.errors import TaggerError
from tagger.host import Host
from tagger.labels import Labels
from tagger.options import TagOptions, parse_tag_list
from tagger.postprocess import normalize_tag, postprocess
from tagger.presets import PresetStore
from tagger.ui import compat, render
from tagger.ui.controls import OptionControls
from tagger.ui.embedded_panel import EmbeddedPanel

log = logging.getLogger(__name__)

TOP_TAGS = 40  # tags shown as bars
BATCH_POLL_S = 0.25  # how often the batch progress is refreshed
EXISTING_CHOICES = ["skip", "overwrite", "append", "prepend"]
TABLE_HEADERS = ["Tag", "Images", "Share %"]


def table_update(rows: list[list[object]]) -> Any:
    """The frequency table showing ``rows``, hidden while it has none (the chart beside it then says so).

    The headers travel with the rows: given no rows, gradio drops the component's headers and shows 1, 2, 3.
    """
    return gr.update(value={"headers": TABLE_HEADERS, "data": rows}, visible=bool(rows))


@dataclass(frozen=True)
class LastPrediction:
    """The last image's raw probabilities, so option changes re-format it without running the model."""

    model: str
    probs: np.ndarray
    labels: Labels
    provider: str
    elapsed: float
    note: str
    hit: CachedProbs | None = None  # the probability cache's entry when it answered: exact above its floor


@dataclass
class _RunningBatch:
    """A batch in progress: its cancel switch and the last progress its worker reported."""

    cancel: threading.Event
    latest: BatchProgress | None = None


class TaggerPage:
    """Builds the page for one ``Tagger`` and ``Host``; holds no per-user state (that lives in gr.State)."""

    def __init__(self, tagger: Tagger, host: Host) -> None:
        self.tagger = tagger
        self.host = host
        self._batches: dict[str, _RunningBatch] = {}
        self._batches_lock = threading.Lock()

    # -- building ----------------------------------------------------------------------------------------

    def build(self, *, css: str | None = None, head_js: str | None = None, theme: Any = None) -> gr.Blocks:
        defaults = self.host.defaults()
        initial = self.tagger.default_options(defaults.model, defaults.options())  # with the model's own thresholds
        with gr.Blocks(analytics_enabled=False, css=css, title="Tagger", theme=theme) as demo:
            self.last = gr.State(None)
            self.batch_token = gr.State("")
            with gr.Row(elem_id="tagger_main", equal_height=False):
                with gr.Column(scale=1, elem_id="tagger_left"):
                    self._build_inputs(defaults)
                    self._build_options(initial, defaults)
                with gr.Column(scale=1, elem_id="tagger_right"):
                    self._build_outputs()
            self._wire()
            if head_js:
                demo.load(None, None, None, **compat.js(head_js))
            demo.load(self.page_loaded, [self.model], [self.model, self.status], queue=False)
        self.demo = demo
        return demo

    def _build_inputs(self, defaults: Any) -> None:
        with gr.Tabs(elem_id="tagger_mode"):
            with gr.Tab("Single image", elem_id="tagger_single_tab"):
                self.image = compat.TaggerImage(
                    label="Image",
                    type="pil",
                    image_mode="RGBA",
                    elem_id="tagger_image",
                    height=360,
                    **compat.image_sources(),
                )
                self.interrogate_btn = gr.Button("Interrogate", variant="primary", elem_id="tagger_interrogate")
            with gr.Tab("Batch from folder", elem_id="tagger_batch_tab"):
                self.batch_input = gr.Textbox(
                    label="Input folder",
                    placeholder="one folder (or image file) per line",
                    lines=2,
                    elem_id="tagger_batch_input",
                )
                self.batch_recursive = gr.Checkbox(label="Include sub-folders", elem_id="tagger_batch_recursive")
                self.batch_output = gr.Textbox(
                    label="Output folder",
                    placeholder="empty: captions next to the images",
                    elem_id="tagger_batch_output",
                )
                with gr.Row():
                    self.batch_format = gr.Textbox(
                        label="Caption file name",
                        value="[name].txt",
                        info="[name], [extension], [hash:sha256]",
                        elem_id="tagger_batch_format",
                    )
                    self.batch_existing = gr.Radio(
                        label="Existing captions",
                        choices=EXISTING_CHOICES,
                        value="skip",
                        elem_id="tagger_batch_existing",
                    )
                self.batch_json = gr.Checkbox(
                    label="Also write a JSON file with all probabilities", elem_id="tagger_batch_json"
                )
                self.batch_merge = gr.Checkbox(
                    label="Caption images that carry their prompt from it and the tags together",
                    info="The embedded tags the tagger confirms and the words it cannot judge (trigger words), "
                    "without LoRAs, quality or score tags, then its own tags",
                    elem_id="tagger_batch_merge",
                )
                with gr.Row():
                    self.batch_escape = gr.Checkbox(
                        label="Escape brackets in caption files",
                        info="Only for captions used as WebUI prompts: trainers read captions as plain text.",
                        elem_id="tagger_batch_escape",
                    )
                    self.batch_backup = gr.Checkbox(
                        label="Keep a caption the batch changes as .bak",
                        value=True,
                        elem_id="tagger_batch_backup",
                    )
                with gr.Row():
                    self.batch_metadata = gr.Textbox(
                        label="Metadata file for the whole run",
                        placeholder="optional: a .json or .jsonl file",
                        elem_id="tagger_batch_metadata",
                        scale=3,
                    )
                    self.batch_workers = gr.Number(
                        label="Decoding threads (0: automatic)",
                        value=0,
                        precision=0,
                        minimum=0,
                        maximum=256,
                        elem_id="tagger_batch_workers",
                        scale=1,
                    )
                with gr.Row():
                    self.batch_start = gr.Button("Start batch", variant="primary", elem_id="tagger_batch_start")
                    self.batch_preview = gr.Button("Preview (dry run)", elem_id="tagger_batch_preview")
                    self.batch_cancel = gr.Button("Cancel", elem_id="tagger_batch_cancel")
        with gr.Row(elem_id="tagger_model_row"):
            choices = self._model_choices()
            value = render.choice_for(defaults.model, choices)
            if value is None:  # a model outside the catalog and the models folder (a path): keep it usable
                value = defaults.model
                choices.append(value)
            self.model = gr.Dropdown(label="Model", choices=choices, value=value, elem_id="tagger_model", scale=4)
            self.model.do_not_save_to_config = True  # the start follows Settings, not the WebUI's ui-config.json
            self.refresh_btn = gr.Button("Refresh", elem_id="tagger_model_refresh", scale=1, min_width=80)
        with gr.Row(elem_id="tagger_unload_row"):
            self.unload_after = gr.Checkbox(
                label="Unload model after interrogation", value=defaults.unload_after, elem_id="tagger_unload_after"
            )
            self.unload_after.do_not_save_to_config = True
            self.unload_btn = gr.Button("Unload all models", elem_id="tagger_unload_all")

    def _build_options(self, initial: TagOptions, defaults: Any) -> None:
        with gr.Accordion("Thresholds", open=True, elem_id="tagger_thresholds"):
            self.controls = OptionControls.build(initial, "thresholds")
            OptionControls.build(
                initial, "categories", into=self.controls, shown_categories=self.tagger.model_categories(defaults.model)
            )
        with gr.Accordion("Tags to add and exclude", open=True, elem_id="tagger_tag_lists"):
            OptionControls.build(initial, "tags", into=self.controls)
        with gr.Accordion("Formatting", open=False, elem_id="tagger_format"):
            OptionControls.build(initial, "format", into=self.controls)
        with gr.Accordion("Training captions: order and spelling", open=False, elem_id="tagger_captions"):
            OptionControls.build(initial, "captions", into=self.controls)
        with gr.Accordion("Presets", open=False, elem_id="tagger_presets"):
            with gr.Row():
                self.preset = gr.Dropdown(
                    label="Preset", choices=self._presets().names(), elem_id="tagger_preset", scale=3
                )
                self.preset_name = gr.Textbox(
                    label="Preset name", placeholder="name to save under", elem_id="tagger_preset_name", scale=3
                )
            with gr.Row():
                self.preset_load = gr.Button("Load preset", elem_id="tagger_preset_load")
                self.preset_save = gr.Button("Save preset", elem_id="tagger_preset_save")
                self.preset_delete = gr.Button("Delete preset", elem_id="tagger_preset_delete")
            folder = html.escape(str(self._presets().folder))
            self.preset_info = gr.HTML(f"<span>Stored in</span> <code>{folder}</code>", elem_id="tagger_preset_info")

    def _build_outputs(self) -> None:
        self.status = gr.HTML(render.status_html(), elem_id="tagger_status")
        # Copying is the textbox's own button (gradio 3.41 and 4.x, in the WebUI and the standalone page).
        self.prompt = compat.SendableTextbox(
            label="Prompt", lines=4, max_lines=12, elem_id="tagger_prompt", show_copy_button=True, interactive=True
        )
        self.prompt.outgoing = self.host.send_text
        self.send_buttons: list[Any] = []
        if self.host.send_targets():
            with gr.Row(elem_id="tagger_send_row"):
                self.send_buttons = self.host.add_send_buttons(self.image, self.prompt)
        self.embedded = EmbeddedPanel(self.host)  # shown for images that carry their generation data
        self.embedded.build(self.image)
        self.ratings = gr.Label(label="Rating", num_top_classes=4, elem_id="tagger_ratings")
        self.tags = gr.Label(label="Tags (click one to exclude it)", num_top_classes=TOP_TAGS, elem_id="tagger_tags")
        with gr.Group(visible=False, elem_id="tagger_batch_results") as self.batch_results:
            self.batch_progress = gr.HTML(elem_id="tagger_batch_progress")
            self.batch_summary = gr.HTML(elem_id="tagger_batch_summary")
            self.batch_table = gr.Dataframe(
                headers=TABLE_HEADERS,
                datatype=["str", "number", "number"],
                label="Most frequent tags",
                interactive=False,
                wrap=True,
                visible=False,
                elem_id="tagger_batch_top",
            )
            self.batch_chart = gr.HTML(elem_id="tagger_batch_chart")
            self.batch_csv = gr.File(label="Tag counts (CSV)", interactive=False, elem_id="tagger_batch_csv")

    def _wire(self) -> None:
        c = self.controls
        panel = self.embedded
        tag_outputs = [self.prompt, self.ratings, self.tags, self.status, self.last, self.model, *panel.outputs]
        run_inputs = {self.image, self.model, self.unload_after, *c, *panel.switches}
        rows = list(c.categories.rows.values()) if c.categories is not None else []
        # A model's own categories show once its tag list is here (after a first download, too).
        self.interrogate_btn.click(self.tag_and_compare, run_inputs, tag_outputs).then(
            self.show_categories, [self.model], rows, queue=False
        )
        if self.host.defaults().interrogate_on_drop:
            # Only when wanted: gradio 4.40 can lose the result of an event that starts while another of the
            # same session finishes (an upload event and a quick click on Interrogate), leaving it pending.
            # For the same reason a drop starts this one event, which shows the generation data as well.
            self.image.upload(self.tag_dropped_and_compare, run_inputs, tag_outputs)
            self.image.clear(panel.show, [self.image, *panel.switches], panel.outputs, queue=False)
        else:
            self.image.change(panel.show, [self.image, *panel.switches], panel.outputs, queue=False)
        self.model.change(self.show_categories, [self.model], rows, queue=False)
        # A model chosen by hand starts at its own default thresholds (a preset's model keeps the preset's).
        threshold_outputs = [c.components[n] for n in ("general_threshold", "character_threshold")]
        threshold_outputs += list(c.categories.thresholds.values()) if c.categories is not None else []
        self.model.input(self.model_thresholds, [self.model], threshold_outputs, queue=False)
        retag_inputs = {self.last, *c, panel.state, *panel.switches}
        retag_outputs = [self.prompt, self.ratings, self.tags, self.status, *panel.outputs]
        for comp in c:
            comp.change(self.retag_and_compare, retag_inputs, retag_outputs, queue=False)
        for switch in panel.switches:
            switch.change(self.switch_embedded, retag_inputs, panel.outputs, queue=False)
        exclude = c.components["exclude_tags"]
        self.tags.select(self.exclude_selected, [exclude], [exclude], queue=False).then(
            self.retag_and_compare, retag_inputs, retag_outputs, queue=False
        )
        self.refresh_btn.click(self.refresh_models, [self.model], [self.model], queue=False)
        self.unload_btn.click(self.unload_all, None, [self.status], queue=False)

        preset_inputs = {self.preset, self.preset_name, self.model, *c}
        self.preset_save.click(self.save_preset, preset_inputs, [self.preset, self.status], queue=False)
        self.preset_load.click(self.load_preset, {self.preset}, [self.model, self.status, *c], queue=False)
        self.preset_delete.click(self.delete_preset, {self.preset}, [self.preset, self.status], queue=False)

        batch_inputs = {
            self.batch_token,
            self.batch_input,
            self.batch_recursive,
            self.batch_output,
            self.batch_format,
            self.batch_existing,
            self.batch_json,
            self.batch_escape,
            self.batch_backup,
            self.batch_metadata,
            self.batch_workers,
            self.batch_merge,
            self.model,
            *c,
        }
        batch_outputs = [
            self.batch_results,
            self.batch_progress,
            self.batch_summary,
            self.batch_table,
            self.batch_chart,
            self.batch_csv,
            self.status,
            self.model,
        ]
        self.batch_start.click(self.new_batch_token, None, [self.batch_token], queue=False).then(
            self.run_batch, batch_inputs, batch_outputs
        )
        self.batch_cancel.click(self.cancel_batch, [self.batch_token], None, queue=False)
        self.batch_preview.click(self.preview_batch, batch_inputs, batch_outputs)

    # -- helpers -----------------------------------------------------------------------------------------

    def _model_choices(self) -> list[str]:
        return render.model_choices(self.tagger.list_models())

    def _model_update(self, current: str) -> Any:
        choices = self._model_choices()
        value = render.choice_for(render.choice_to_model(current), choices)
        if value is None:
            value = current
            choices.append(current)
        return gr.update(choices=choices, value=value)

    def _presets(self) -> PresetStore:
        return PresetStore(self.host.presets_dir())

    def _loaded_names(self) -> list[str]:
        return [m.name for m in self.tagger.loaded()]

    def _unchanged(self) -> dict[Any, Any]:
        """No change (an empty dict would be read by gradio 3 as one output value)."""
        return {self.status: gr.update()}

    def _error(self, message: str) -> str:
        return render.status_html(error=message, loaded=self._loaded_names())

    def _tag_views(self, result: Any, options: TagOptions) -> tuple[str, dict[str, float], dict[str, float]]:
        return (
            result.prompt,
            render.rating_confidences(result),
            render.tag_confidences(result, options, TOP_TAGS),
        )

    def _status_for(self, last: LastPrediction, message: str = "", show_loaded: bool = False) -> str:
        return render.status_html(
            model=last.model,
            provider=last.provider,
            elapsed=last.elapsed,
            note=last.note,
            message=message,
            loaded=self._loaded_names(),
            show_loaded=show_loaded,
        )

    # -- single image ------------------------------------------------------------------------------------

    def interrogate(self, data: dict[Any, Any], progress: Any = gr.Progress(track_tqdm=True)) -> dict[Any, Any]:  # noqa: B008 - gradio's way of asking for a progress tracker
        return self._guard(self._interrogate, data, progress)

    def interrogate_on_drop(
        self,
        data: dict[Any, Any],
        progress: Any = gr.Progress(track_tqdm=True),  # noqa: B008
    ) -> dict[Any, Any]:
        if not self.host.defaults().interrogate_on_drop:
            return self._unchanged()
        return self._guard(self._interrogate, data, progress)

    def _interrogate(self, data: dict[Any, Any], progress: Any) -> dict[Any, Any]:
        image = data[self.image]
        if image is None:
            return {self.status: self._error("No image: drop, paste or upload an image first.")}
        options = self.controls.options(data)
        model = render.choice_to_model(data[self.model])
        if not model:
            return {self.status: self._error("No model chosen.")}
        progress(0, desc=f"Tagging with {model}…")  # a download on first use shows its tqdm bar here
        with self.host.job("tagger"):
            tags = self.tagger.tag_image(model, image, options)
        message = ""
        if data[self.unload_after] and self.tagger.unload(model):
            message = "Model unloaded after use."
        last = LastPrediction(tags.model, tags.probs, tags.labels, tags.provider, tags.elapsed, tags.note, tags.hit)
        prompt, ratings, bars = self._tag_views(tags.result, options)
        return {
            self.prompt: prompt,
            self.ratings: ratings,
            self.tags: bars,
            self.status: self._status_for(last, message, show_loaded=bool(message)),
            self.last: last,
            self.model: self._model_update(data[self.model]),
        }

    # -- the image's own generation data, beside its tags -------------------------------------------------------

    def _panel_options(self, data: dict[Any, Any]) -> TagOptions | None:
        try:
            return self.controls.options(data)
        except TaggerError:  # the tag views already say what is wrong with the options
            return None

    def _with_embedded(self, data: dict[Any, Any], out: dict[Any, Any]) -> dict[Any, Any]:
        """A tagging answer plus the panel: the image's generation data, compared when it was tagged."""
        panel = self.embedded
        try:
            views = panel.tagged(
                data[self.image],
                out.get(self.last),
                self._panel_options(data),
                data[panel.keep_networks],
                data[panel.send_settings],
            )
        except Exception:  # the tags are shown whatever happens to the comparison
            log.exception("tagger: the image's generation data could not be shown")
            return out
        return {**out, **views}

    def tag_and_compare(self, data: dict[Any, Any], progress: Any = gr.Progress(track_tqdm=True)) -> dict[Any, Any]:  # noqa: B008
        """Interrogate, and show the image's generation data compared with its tags."""
        return self._with_embedded(data, self.interrogate(data, progress))

    def tag_dropped_and_compare(
        self,
        data: dict[Any, Any],
        progress: Any = gr.Progress(track_tqdm=True),  # noqa: B008
    ) -> dict[Any, Any]:
        return self._with_embedded(data, self.interrogate_on_drop(data, progress))

    def retag_and_compare(self, data: dict[Any, Any]) -> dict[Any, Any]:
        """Re-format the last image's tags, and compare them again with its generation data."""
        out = self.retag(data)
        if self.prompt not in out:
            return out
        return {**out, **self.switch_embedded(data)}

    def switch_embedded(self, data: dict[Any, Any]) -> dict[Any, Any]:
        panel = self.embedded
        options = self._panel_options(data)
        return panel.refresh(
            data[panel.state], data[self.last], options, data[panel.keep_networks], data[panel.send_settings]
        )

    def retag(self, data: dict[Any, Any]) -> dict[Any, Any]:
        """Apply changed options to the last image's probabilities (no model run)."""
        last: LastPrediction | None = data[self.last]
        if last is None:
            return self._unchanged()

        def run(data: dict[Any, Any]) -> dict[Any, Any]:
            options = self.controls.options(data)
            hit = last.hit
            result = postprocess(last.probs, last.labels, options, mcut=hit.mcut if hit else None)
            prompt, ratings, bars = self._tag_views(result, options)
            message = ""
            if hit is not None and not hit.serves(options, last.labels):
                message = f"Thresholds under {hit.floor} need the model: press Interrogate to run it again."
            status = self._status_for(last, message)
            return {self.prompt: prompt, self.ratings: ratings, self.tags: bars, self.status: status}

        return self._guard(run, data)

    def exclude_selected(self, current: str, evt: gr.SelectData) -> str:
        """Add the clicked tag to the exclude list (once; comparison ignores case, underscores, escapes)."""
        tag = str(evt.value if not isinstance(evt.value, dict) else evt.value.get("label", "")).strip()
        tags = list(parse_tag_list(current or ""))
        if tag and normalize_tag(tag) not in {normalize_tag(t) for t in tags}:
            tags.append(tag)
        return ", ".join(tags)

    def refresh_models(self, current: str) -> Any:
        return self._model_update(current)

    def show_categories(self, choice: str) -> dict[Any, Any]:
        """Show the threshold and include switch of each category the chosen model has (beyond general and
        character), hide the others."""
        categories = self.controls.categories
        if categories is None:
            return {}
        return categories.visibility(self.tagger.model_categories(render.choice_to_model(choice)))

    def model_thresholds(self, choice: str) -> dict[Any, Any]:
        """The thresholds the chosen model starts at: its own defaults over the Tagger settings'."""
        model = render.choice_to_model(choice)
        options = self.tagger.default_options(model, self.host.defaults().options())
        c = self.controls
        out = {c.components[n]: getattr(options, n) for n in ("general_threshold", "character_threshold")}
        if c.categories is not None:
            out.update(
                {
                    comp: v
                    for comp, v in c.categories.updates(options).items()
                    if comp in c.categories.thresholds.values()
                }
            )
        return out

    def unload_all(self) -> str:
        n = self.tagger.unload_all()
        return render.status_html(message=f"Unloaded {n} model(s)." if n else "")

    def status_now(self) -> str:
        return render.status_html(loaded=self._loaded_names())

    def page_loaded(self, current: str) -> tuple[Any, str]:
        """Each page (re)load: the models as they are on disk now, the chosen one kept, and those loaded.

        The page is built once, at the start; models downloaded or added since then show on a reload."""
        return self._model_update(current), self.status_now()

    # -- presets -----------------------------------------------------------------------------------------

    def save_preset(self, data: dict[Any, Any]) -> dict[Any, Any]:
        def run(data: dict[Any, Any]) -> dict[Any, Any]:
            name = (data[self.preset_name] or "").strip() or (data[self.preset] or "")
            options = self.controls.options(data)
            store = self._presets()
            path = store.save(name, options, render.choice_to_model(data[self.model]))
            return {
                self.preset: gr.update(choices=store.names(), value=path.stem),
                self.status: render.status_html(message=f"Preset saved: {path}", loaded=self._loaded_names()),
            }

        return self._guard(run, data)

    def load_preset(self, data: dict[Any, Any]) -> dict[Any, Any]:
        def run(data: dict[Any, Any]) -> dict[Any, Any]:
            name = data[self.preset]
            if not name:
                return {self.status: self._error("Choose a preset to load.")}
            preset = self._presets().load(name)
            out = self.controls.updates(preset.options)
            if preset.model:
                out[self.model] = self._model_update(preset.model)
            note = f" (ignored options unknown to this version: {', '.join(preset.ignored)})" if preset.ignored else ""
            out[self.status] = render.status_html(message=f"Preset loaded: {name}{note}", loaded=self._loaded_names())
            return out

        return self._guard(run, data)

    def delete_preset(self, data: dict[Any, Any]) -> dict[Any, Any]:
        def run(data: dict[Any, Any]) -> dict[Any, Any]:
            name = data[self.preset]
            if not name:
                return {self.status: self._error("Choose a preset to delete.")}
            store = self._presets()
            store.delete(name)
            return {
                self.preset: gr.update(choices=store.names(), value=None),
                self.status: render.status_html(message=f"Preset deleted: {name}", loaded=self._loaded_names()),
            }

        return self._guard(run, data)

    # -- batch -------------------------------------------------------------------------------------------

    def new_batch_token(self) -> str:
        return uuid.uuid4().hex

    def cancel_batch(self, token: str) -> None:
        """Ask the batch to stop after its current image. The batch's own progress updates say so from its
        next poll until it stops: one stream writes the progress, so no later update can hide the notice."""
        with self._batches_lock:
            running = self._batches.get(token or "")
        if running is not None:
            running.cancel.set()

    def _batch_config(self, data: dict[Any, Any]) -> BatchConfig:
        inputs = [
            Path(line.strip()).expanduser() for line in (data[self.batch_input] or "").splitlines() if line.strip()
        ]
        if not inputs:
            raise TaggerError("Batch: type the folder of the images to caption.")
        output = (data[self.batch_output] or "").strip()
        batch_size = self.host.defaults().batch_size
        roots = self.host.batch_roots()
        if roots == ():
            raise TaggerError(
                "Batch from folder is off on this server: it was started without --batch-root, and it can be "
                "reached from other machines. Start it with --batch-root FOLDER to allow a folder."
            )
        metadata = (data[self.batch_metadata] or "").strip()
        config = BatchConfig(
            inputs=inputs,
            recursive=bool(data[self.batch_recursive]),
            output_dir=Path(output).expanduser() if output else None,
            filename_format=(data[self.batch_format] or "").strip(),
            existing=data[self.batch_existing] or "skip",
            json_sidecar=bool(data[self.batch_json]),
            caption_from="merge" if data.get(self.batch_merge) else "tags",
            batch_size=batch_size or None,
            roots=roots,
            escape=bool(data[self.batch_escape]),
            backup=bool(data[self.batch_backup]),
            metadata=Path(metadata).expanduser() if metadata else None,
            workers=int(data[self.batch_workers] or 0) or None,
        )
        try:
            check_roots(config)
        except BatchConfigError as e:
            raise TaggerError(f"Batch: {e}. The server allows more with --batch-root FOLDER.") from e
        return config

    def preview_batch(self, data: dict[Any, Any]) -> dict[Any, Any]:
        """A dry run: what the batch would write where, and (from the probability cache alone) what these
        options make of the images; nothing is written and the model is not run."""
        shown = {self.batch_results: gr.update(visible=True), self.batch_progress: "", self.batch_csv: None}
        try:
            config = self._batch_config(data)
            options = self.controls.options(data)
            plan = plan_batch(config)
        except TaggerError as e:
            return {**shown, self.status: self._error(str(e))}
        model = render.choice_to_model(data[self.model])
        stats, note = None, ""
        try:
            stats = batch_stats(self.tagger, model, config, options, plan)
        except TaggerError as e:  # the model's files are not here, or no cache: the plan alone
            note = f"No tag statistics: {e}"
        rows = top_tags(stats.after, stats.cached) if stats else []
        return {
            **shown,
            self.batch_summary: render.plan_html(plan, stats, note),
            self.batch_table: table_update(rows),
            self.batch_chart: render.bar_chart_html(rows),
            self.status: render.status_html(loaded=self._loaded_names()),
        }

    def run_batch(self, data: dict[Any, Any]) -> Iterator[dict[Any, Any]]:
        """Run a batch in a worker thread and stream its progress into the page."""
        token = data[self.batch_token] or uuid.uuid4().hex
        shown = {self.batch_results: gr.update(visible=True)}
        try:
            config = self._batch_config(data)
            options = self.controls.options(data)
        except TaggerError as e:
            yield {**shown, self.batch_progress: "", self.status: self._error(str(e))}
            return
        model = render.choice_to_model(data[self.model])
        running = _RunningBatch(threading.Event())
        cancel = running.cancel
        with self._batches_lock:
            self._batches[token] = running
        outcome: dict[str, Any] = {}

        def report(p: BatchProgress) -> None:
            running.latest = p

        def work() -> None:
            try:
                with self.host.job("tagger-batch"):
                    outcome["summary"] = run_batch(self.tagger, model, config, options, progress=report, cancel=cancel)
            except TaggerError as e:
                outcome["error"] = str(e)
            except Exception as e:
                log.exception("batch failed")
                outcome["error"] = f"Unexpected error ({type(e).__name__}: {e}); see the console for details."

        worker = threading.Thread(target=work, name="tagger-batch", daemon=True)
        try:
            yield {
                **shown,
                self.batch_progress: render.progress_html(None, starting=f"Loading {model}…"),
                self.batch_summary: "",
                self.batch_chart: "",
                self.batch_table: table_update([]),
                self.batch_csv: None,
            }
            worker.start()
            while worker.is_alive():
                worker.join(BATCH_POLL_S)
                if self.host.interrupted():
                    cancel.set()
                if running.latest is not None or cancel.is_set():
                    yield {self.batch_progress: render.progress_html(running.latest, cancelling=cancel.is_set())}
        finally:
            if worker.is_alive():  # the page went away: stop the batch too
                cancel.set()
            with self._batches_lock:
                self._batches.pop(token, None)
        if "error" in outcome:
            yield {self.batch_progress: "", self.status: self._error(outcome["error"])}
            return
        summary: BatchSummary = outcome["summary"]
        # gradio copies the CSV into its own file cache when it sends this last update, before it asks the
        # generator for more; the folder goes then (or when the generator is closed, or at exit).
        with tempfile.TemporaryDirectory(prefix="tagger-batch-") as folder:
            yield self._batch_result(summary, running.latest, data[self.model], Path(folder))

    def _batch_result(
        self, summary: BatchSummary, last: BatchProgress | None, model_choice: str, folder: Path
    ) -> dict[Any, Any]:
        rows = top_tags(summary.tag_counts, summary.tagged)
        csv_path = None
        if summary.tag_counts:
            csv_path = str(write_counts_csv(folder / "tag-counts.csv", summary.tag_counts, summary.tagged))
        return {
            self.batch_progress: render.progress_html(last) if last else "",
            self.batch_summary: render.summary_html(summary),
            self.batch_table: table_update(rows),
            self.batch_chart: render.bar_chart_html(rows),
            self.batch_csv: csv_path,
            self.status: render.status_html(loaded=self._loaded_names()),
            self.model: self._model_update(model_choice),
        }

    # -- errors ------------------------------------------------------------------------------------------

    def _guard(self, fn: Callable[..., dict[Any, Any]], *args: Any) -> dict[Any, Any]:
        try:
            return fn(*args)
        except TaggerError as e:
            return {self.status: self._error(str(e))}
        except gr.Error:
            raise
        except Exception as e:
            log.exception("tagger: unexpected error")
            return {self.status: self._error(f"Unexpected error ({type(e).__name__}: {e}); see the console.")}


def build_page(tagger: Tagger, host: Host, **kwargs: Any) -> TaggerPage:
    page = TaggerPage(tagger, host)
    page.build(**kwargs)
    return page
