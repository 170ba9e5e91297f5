"""The few places where gradio 3.41 (AUTOMATIC1111 1.10) and gradio 4.x (Forge) differ, in one module.

- ``gr.Image(source="upload")`` became ``gr.Image(sources=[...])``;
- an event's browser-side function is ``_js=`` in 3.x and ``js=`` in 4.x;
- ``Component.update(...)`` is gone in 4.x: everything here returns ``gr.update(...)``, which both have;
- the queue's concurrency is ``concurrency_count`` in 3.x and ``default_concurrency_limit`` in 4.x.
"""

from __future__ import annotations

import abc
import base64
import io
import logging
from typing import Any

import gradio as gr

from tagger.errors import ImageError
from tagger.images import load_image

log = logging.getLogger(__name__)

GRADIO_VERSION = tuple(int(p) for p in gr.__version__.split(".")[:2] if p.isdigit())
GRADIO_4 = GRADIO_VERSION >= (4, 0)


def js(code: str) -> dict[str, str]:
    """The keyword that attaches browser-side code to an event listener."""
    return {"js": code} if GRADIO_4 else {"_js": code}


def image_sources() -> dict[str, Any]:
    """Upload (which includes drag-and-drop) and paste from the clipboard."""
    return {"sources": ["upload", "clipboard"]} if GRADIO_4 else {"source": "upload"}


def _raw_image_bytes(payload: Any) -> bytes | str | None:
    """What the browser sent for an image: a data URL (3.x) or an uploaded file (4.x)."""
    if isinstance(payload, str):
        data = payload.split(",", 1)[1] if payload.startswith("data:") else payload
        try:
            return base64.b64decode(data, validate=False)
        except ValueError:
            return None
    path = getattr(payload, "path", None) or (payload.get("path") if isinstance(payload, dict) else None)
    return path


def subclass(base: type, name: str, namespace: dict[str, Any]) -> Any:
    """A subclass of the gradio component ``base`` that the front end renders as ``base``.

    gradio 4's component metaclass writes a ``.pyi`` stub next to the module of every component subclass
    (into this package, at import time); its other work concerns ``EVENTS`` and ``__init__``, which these
    subclasses do not define, so under gradio 4 the class is created without it.
    """
    namespace = {"__module__": __name__, "__qualname__": name, "is_template": True, **namespace}
    meta = type(base)
    if GRADIO_4:
        return abc.ABCMeta.__new__(meta, name, (base,), namespace)
    return meta(name, (base,), namespace)


def _image_preprocess(self: Any, payload: Any) -> Any:
    try:
        return gr.Image.preprocess(self, payload)
    except Exception as e:  # Pillow raises many types for broken files
        raw = _raw_image_bytes(payload)
        reason = f"{type(e).__name__}: {e}"
        if raw is not None:
            try:
                load_image(io.BytesIO(raw) if isinstance(raw, bytes) else raw)
            except ImageError as ie:
                reason = ie.reason
            except Exception:  # the engine's loader failed another way; keep gradio's reason
                log.debug("engine loader failed on the rejected upload", exc_info=True)
        log.warning("uploaded image could not be read: %s", reason)
        raise gr.Error(f"This image could not be read: {reason}") from e


# ``gr.Image`` whose undecodable uploads become a readable message instead of gradio's bare "Error".
TaggerImage = subclass(gr.Image, "TaggerImage", {"preprocess": _image_preprocess})


def _text_preprocess(self: Any, payload: Any) -> Any:
    value = gr.Textbox.preprocess(self, payload)
    return self.outgoing(value) if isinstance(value, str) else value


# The prompt box. What another component's event reads from it goes through ``outgoing`` first: the WebUI
# adapter uses that to protect weighted tags from the host's parameter parser.
SendableTextbox = subclass(
    gr.Textbox, "SendableTextbox", {"preprocess": _text_preprocess, "outgoing": staticmethod(lambda text: text)}
)


def enable_queue(demo: gr.Blocks, concurrency: int) -> None:
    """Turn on the queue (progress and streaming need it) with ``concurrency`` events running at once."""
    if GRADIO_4:
        demo.queue(default_concurrency_limit=concurrency)
    else:
        demo.queue(concurrency_count=concurrency)
