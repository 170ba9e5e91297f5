"""Pure functions that turn engine results into what the page shows: no gradio, no model, easy to test."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import replace

from tagger.batch import ACTIONS, BatchPlan, BatchProgress, BatchStats, BatchSummary
from tagger.compare import REASONS, Comparison, Judged
from tagger.embedded import GenerationData
from tagger.hub import ModelInfo
from tagger.options import TagOptions
from tagger.postprocess import TagResult, format_tag

CHOICE_SEP = " · "
NOT_DOWNLOADED = "not downloaded"
NO_MODEL_LOADED = "No model loaded"
CANCELLING = "Cancelling after the current image…"


# -- models ------------------------------------------------------------------------------------------


def _size(n: int | None) -> str:
    if not n:
        return ""
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{max(1, round(n / 1e3))} kB"


def model_choice(info: ModelInfo) -> str:
    """One dropdown entry: the model's name, and whether (and how big) it is on disk."""
    if not info.downloaded:
        return f"{info.name}{CHOICE_SEP}{NOT_DOWNLOADED}"
    size = _size(info.size_bytes)
    local = "local" if info.family == "local" else "downloaded"
    return f"{info.name}{CHOICE_SEP}{local}" + (f", {size}" if size else "")


def model_choices(infos: Iterable[ModelInfo]) -> list[str]:
    return [model_choice(i) for i in infos]


def choice_to_model(choice: str | None) -> str:
    """The model name of a dropdown entry (a bare name typed by hand is returned as it is)."""
    text = (choice or "").strip()
    return text.split(CHOICE_SEP, 1)[0].strip()


def choice_for(name: str, choices: Sequence[str]) -> str | None:
    """The entry of ``choices`` for the model ``name``."""
    return next((c for c in choices if choice_to_model(c) == name), None)


# -- one image ---------------------------------------------------------------------------------------


def display_name(tag: str, options: TagOptions) -> str:
    """A tag as the bars show it: formatted like the prompt, without the backslash escapes."""
    return format_tag(tag, replace(options, escape=False))


def tag_confidences(result: TagResult, options: TagOptions, top: int) -> dict[str, float]:
    """The tags in the prompt (characters and general) with their probabilities, highest first."""
    merged = {**result.character, **result.general}
    ordered = sorted(merged.items(), key=lambda kv: -kv[1])[:top]
    return {display_name(name, options): round(p, 4) for name, p in ordered}


def rating_confidences(result: TagResult) -> dict[str, float]:
    return {name: round(p, 4) for name, p in result.rating.items()}


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def status_html(
    *,
    model: str | None = None,
    provider: str | None = None,
    elapsed: float | None = None,
    note: str = "",
    loaded: Sequence[str] = (),
    message: str = "",
    error: str = "",
    show_loaded: bool = False,
) -> str:
    """The status line: what ran where and how long it took, why CUDA is not used, or what went wrong."""
    parts: list[str] = []
    if error:
        parts.append(f"<div class='tagger-error' id='tagger_error'>{_esc(error)}</div>")
    if model:
        bits = [f"Model: <b>{_esc(model)}</b>"]
        if provider:
            bits.append(f"provider: <b>{_esc(provider)}</b>")
        if elapsed is not None:
            bits.append(f"time: <b>{elapsed * 1000:.0f} ms</b>" if elapsed < 1 else f"time: <b>{elapsed:.2f} s</b>")
        parts.append(f"<div class='tagger-status-line'>{', '.join(bits)}</div>")
    if message:
        parts.append(f"<div class='tagger-status-line'>{_esc(message)}</div>")
    if not model or show_loaded:
        text = f"Loaded: {', '.join(loaded)}" if loaded else NO_MODEL_LOADED
        parts.append(f"<div class='tagger-status-line tagger-loaded'>{_esc(text)}</div>")
    if note:
        parts.append(f"<div class='tagger-warning'>{_esc(note)}</div>")
    return "\n".join(parts)


# -- the image's own generation data -----------------------------------------------------------------

EMBEDDED_FOUND = "Generation data in this image:"
COMPARE_PENDING = "Interrogate to compare the embedded prompt with what the tagger sees."
NO_EMBEDDED_PROMPT = "No prompt to compare."
GROUPS = (
    ("confirmed", "Confirmed by the tagger"),
    ("weak", "Seen only weakly (below the threshold)"),
    ("not_judgeable", "Not judgeable by this model"),
    ("added", "Added by the tagger"),
)


def embedded_source_html(data: GenerationData) -> str:
    """Where the generation data was read, and what could not be read (said plainly)."""
    parts = [f"<span>{_esc(EMBEDDED_FOUND)}</span> <b>{_esc(data.source_label)}</b>"]
    if data.note:
        parts.append(f"<div class='tagger-warning'>{_esc(data.note)}</div>")
    return "<div class='tagger-embedded-source'>" + "".join(parts) + "</div>"


def _chip(j: Judged) -> str:
    title = f" title='{_esc(j.tag)}'" if j.tag and j.tag != j.text else ""
    if j.reason:
        detail = f"<i>{_esc(REASONS.get(j.reason, j.reason))}</i>"
    else:
        detail = f"<b>{j.probability:.2f}</b>" if j.probability is not None else ""
    return f"<span class='tagger-chip'{title}><span>{_esc(j.text)}</span> {detail}</span>"


def comparison_html(c: Comparison | None, waiting: str = COMPARE_PENDING) -> str:
    """The four groups as chips (probability, or why it cannot be judged); ``waiting`` until there is one."""
    if c is None:
        return f"<div class='tagger-compare-note'>{_esc(waiting)}</div>"
    sections = []
    for key, title in GROUPS:
        items: tuple[Judged, ...] = getattr(c, key)
        chips = "".join(_chip(j) for j in items) or "<span class='tagger-chip-none'>—</span>"
        sections.append(
            f"<div class='tagger-group tagger-group-{key}' data-group='{key}'>"
            f"<div class='tagger-group-title'><span>{_esc(title)}</span> <span>({len(items)})</span></div>"
            f"<div class='tagger-chips'>{chips}</div></div>"
        )
    return "<div class='tagger-groups'>" + "".join(sections) + "</div>"


# -- batch -------------------------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "…"
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h} h {m:02d} min"
    if m:
        return f"{m} min {s:02d} s"
    return f"{s} s"


def progress_html(p: BatchProgress | None, *, starting: str = "", cancelling: bool = False) -> str:
    """The batch's progress bar and counts; ``cancelling`` adds the line saying that a cancel is under way."""
    note = f"<div class='tagger-progress-cancelling'>{_esc(CANCELLING)}</div>" if cancelling else ""
    if p is None:
        return note or f"<div class='tagger-progress-text'>{_esc(starting or 'Starting…')}</div>"
    pct = 100.0 * p.done / p.total if p.total else 100.0
    text = (
        f"{p.done} / {p.total} images ({pct:.0f}%) · {p.tagged} tagged, {p.skipped} skipped, {p.failed} failed"
        f" · {p.rate:.1f} images/s · ETA {duration(p.eta)}"
    )
    current = f"<div class='tagger-progress-current'>{_esc(p.current)}</div>" if p.current else ""
    return (
        f"<div class='tagger-progress' role='progressbar' aria-valuemin='0' aria-valuemax='{p.total}' "
        f"aria-valuenow='{p.done}'><div class='tagger-progress-fill' style='width:{pct:.1f}%'></div></div>"
        f"<div class='tagger-progress-text'>{_esc(text)}</div>{note}{current}"
    )


def summary_html(s: BatchSummary) -> str:
    head = "Cancelled" if s.cancelled else "Done"
    text = (
        f"{head}: {s.tagged} tagged, {s.skipped} skipped, {s.failed} failed in {duration(s.elapsed)}"
        f" ({s.images_per_s:.1f} images/s)."
    )
    if s.backups:
        text += f" {s.backups} earlier captions kept as backups."
    return "\n".join([f"<div class='tagger-summary'>{_esc(text)}</div>", *_failures_html(s.failures)])


def _failures_html(failures: Sequence[tuple[str, str]]) -> list[str]:
    if not failures:
        return []
    rows = "".join(f"<tr><td>{_esc(path)}</td><td>{_esc(reason)}</td></tr>" for path, reason in failures[:200])
    more = f"<div>…and {len(failures) - 200} more (see the console).</div>" if len(failures) > 200 else ""
    return [
        "<details open class='tagger-failures'><summary>Failures</summary><table>"
        f"<thead><tr><th>Image</th><th>Reason</th></tr></thead><tbody>{rows}</tbody></table>{more}</details>"
    ]


def plan_html(plan: BatchPlan, stats: BatchStats | None, note: str = "") -> str:
    """A dry run: the images by what the batch would do with them, collisions, and the tag statistics."""
    counts = plan.counts
    bits = [f"{counts[a]} {a}" for a in ACTIONS]
    if counts["duplicate"]:
        bits.append(f"{counts['duplicate']} duplicate")
    bits.append(f"{counts['failed']} failed")
    text = f"Preview, nothing written: {len(plan.entries)} images: {', '.join(bits)}."
    if plan.backups:
        text += f" {len(plan.backups)} captions would be kept as a backup first."
    parts = [f"<div class='tagger-summary'>{_esc(text)}</div>"]
    lines = stats.summary_lines() if stats is not None else [note] if note else []
    parts += [f"<div class='tagger-status-line'>{_esc(line)}</div>" for line in lines]
    return "\n".join(parts + _failures_html(plan.failures))


def bar_chart_html(rows: Sequence[Sequence[object]], n: int = 25) -> str:
    """A horizontal bar chart of the first ``n`` rows of ``top_tags``."""
    rows = list(rows)[:n]
    if not rows:
        return "<div class='tagger-chart-empty'>No tags.</div>"
    peak = max(int(r[1]) for r in rows) or 1  # type: ignore[call-overload]
    lines = []
    for tag, count, share in rows:
        width = 100.0 * int(count) / peak  # type: ignore[call-overload]
        lines.append(
            f"<div class='tagger-bar-row'><span class='tagger-bar-label' title='{_esc(tag)}'>{_esc(tag)}</span>"
            f"<span class='tagger-bar'><span class='tagger-bar-fill' style='width:{width:.1f}%'></span></span>"
            f"<span class='tagger-bar-value'>{_esc(count)} ({_esc(share)}%)</span></div>"
        )
    return f"<div class='tagger-chart'>{''.join(lines)}</div>"
