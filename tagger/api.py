"""The HTTP API: the earlier tagger extensions' routes, unchanged for their clients, plus richer ones.

``mount_api`` adds the routes to an existing FastAPI app (the WebUI's, on ``on_app_started``) and
``create_app`` makes a standalone app with only them. Nothing here imports gradio or the WebUI.

Routes, under the prefix (``/tagger/v1`` by default):

- ``GET interrogators`` -> ``{"models": [names]}`` (as the earlier extensions); ``GET models`` -> details.
- ``POST interrogate`` ``{"image": base64, "model": name, "threshold": 0.35, ...options}`` ->
  ``{"caption": {tag: probability}, "prompt": ..., "rating": ..., "general": ..., "character": ..., ...}``.
- ``POST interrogate/batch`` ``{"images": [base64, ...], "model": name, ...options}`` ->
  ``{"results": [{"index": 0, "ok": true, "result": {...}, "error": null}, ...], ...}`` in input order; a
  bad image gives its item an ``error`` and the others are still tagged.
- ``POST unload-interrogators`` (all; the earlier answer, a JSON string with the count), ``POST unload``
  ``{"model": name}`` (one, or all without a name), ``GET loaded``.

Errors are JSON ``{"error": message, "field": name or null, "detail": ...}`` with a 4xx status for bad
input (422 for validation errors, where ``detail`` keeps FastAPI's list). They are produced by the routes
themselves (a custom route class), not by app-wide exception handlers, so that mounting into the WebUI
does not change the error format of the host's own API.

This module does not use ``from __future__ import annotations``: FastAPI 0.94 with pydantic 1 (the
WebUI's versions) resolves endpoint and model annotations at runtime and needs real types.
"""

import base64
import binascii
import contextlib
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, get_origin, get_type_hints

import numpy as np
import pydantic
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBasic
from pydantic import BaseModel, Field, create_model
from starlette.exceptions import HTTPException

from tagger import __version__
from tagger.catalog import by_name
from tagger.engine import Tagger
from tagger.errors import ImageError, ModelFormatError, ModelUnavailableError, OptionsError, TaggerError
from tagger.images import load_image, prepare
from tagger.labels import Labels
from tagger.options import OPTION_FIELDS, TagOptions, options_from_mapping
from tagger.pipeline import default_batch_size
from tagger.postprocess import TagResult, postprocess
from tagger.runtime import LoadedModel

log = logging.getLogger(__name__)

PYDANTIC_V2 = int(pydantic.VERSION.split(".")[0]) >= 2
DEFAULT_PREFIX = "/tagger/v1"

# Names the earlier extensions (toriato's, picobyte's) gave the models this catalog has, so that scripts
# written for them keep working. Answers carry the catalog name in "model" and a warning.
LEGACY_MODEL_NAMES = {
    "wd14-vit-v2": "wd-v1-4-vit-tagger-v2",
    "wd14-vit-v2-git": "wd-v1-4-vit-tagger-v2",
    "wd14-vit.v2": "wd-v1-4-vit-tagger-v2",
    "wd-v1-4-vit-tagger.v2": "wd-v1-4-vit-tagger-v2",
    "wd14-convnext-v2": "wd-v1-4-convnext-tagger-v2",
    "wd14-convnext-v2-git": "wd-v1-4-convnext-tagger-v2",
    "wd14-convnext.v2": "wd-v1-4-convnext-tagger-v2",
    "wd-v1-4-convnext-tagger.v2": "wd-v1-4-convnext-tagger-v2",
    "wd14-convnextv2.v1": "wd-v1-4-convnextv2-tagger-v2",
    "wd-v1-4-convnextv2-tagger.v2": "wd-v1-4-convnextv2-tagger-v2",
    "wd14-swinv2-v2": "wd-v1-4-swinv2-tagger-v2",
    "wd14-swinv2-v2-git": "wd-v1-4-swinv2-tagger-v2",
    "wd14-swinv2-v1": "wd-v1-4-swinv2-tagger-v2",
    "wd-v1-4-swinv2-tagger.v2": "wd-v1-4-swinv2-tagger-v2",
    "wd14-moat-v2": "wd-v1-4-moat-tagger-v2",
    "wd-v1-4-moat-tagger.v2": "wd-v1-4-moat-tagger-v2",
}


@dataclass(frozen=True)
class ApiLimits:
    """Limits that keep one client from exhausting the server. All are per request."""

    # Base64 makes an image 4/3 larger: 50 MiB carries one ~37 MiB file, or a batch of ordinary ones.
    max_body_bytes: int = 50 * 1024 * 1024
    # 8192 x 8192: the largest images Stable Diffusion workflows make (upscaled 8K) pass; decoded RGB
    # that is 192 MiB. Checked from the image header before decoding. Pillow's own decompression-bomb
    # limit (89.5 megapixels) still applies on top.
    max_pixels: int = 8192 * 8192
    max_images_per_request: int = 64
    # A model not downloaded yet is fetched in the background; a request waits this long for it, then
    # answers 503 with Retry-After while the download goes on. Below the 60 s read timeout of common
    # reverse proxies (nginx's proxy_read_timeout default), so the client sees our answer, not theirs.
    download_timeout_s: float = 45.0
    # Images decoded at the same time, across all requests: bounds memory to ~4 x 192 MiB at max_pixels.
    max_concurrent_decodes: int = 4

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_pixels", "max_images_per_request", "max_concurrent_decodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"ApiLimits.{name} must be at least 1, not {getattr(self, name)!r}")
        if not self.download_timeout_s > 0:
            raise ValueError(f"ApiLimits.download_timeout_s must be positive, not {self.download_timeout_s!r}")


# -- request and response models (pydantic 1 and 2) ----------------------------------------------------


def _no_huge_ints(value: Any) -> Any:
    # pydantic 1 lets OverflowError escape from float("9" * 400): refuse such numbers as a field error.
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**1000:
        raise ValueError("number too large")
    return value


if PYDANTIC_V2:

    class _RequestModel(BaseModel):
        """Unknown fields are kept (and reported as warnings), never refused: older clients send extras."""

        model_config = pydantic.ConfigDict(extra="allow")

    def _unknown_fields(req: BaseModel) -> list[str]:
        return sorted(req.model_extra or {})

else:

    class _RequestModel(BaseModel):  # type: ignore[no-redef]
        """Unknown fields are kept (and reported as warnings), never refused: older clients send extras."""

        class Config:
            extra = "allow"

        _check_ints = pydantic.validator("*", pre=True, allow_reuse=True)(_no_huge_ints)

    def _unknown_fields(req: BaseModel) -> list[str]:
        return sorted(set(req.__dict__) - set(req.__fields__))


def _json_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[]" if not value else repr(list(value))
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _option_fields() -> dict[str, Any]:
    """Request fields for every TagOptions field, from its metadata: optional, with range and description.

    Tag lists accept a list of strings or one comma-separated string.
    """
    hints = get_type_hints(TagOptions)
    defs: dict[str, Any] = {}
    for name, f in OPTION_FIELDS.items():
        typ: Any = hints[name]
        if get_origin(typ) is tuple:
            typ = list[str] | str
        limits = {k: f.metadata[k] for k in ("ge", "le") if k in f.metadata}
        description = f"{f.metadata.get('description', '')} Default: {_json_text(f.default)}."
        defs[name] = (typ | None, Field(None, description=description, **limits))
    return defs


_MODEL_DESCRIPTION = (
    "Model name, as listed by GET interrogators: a catalog model or a folder in the models folder (the "
    "earlier extensions' names, such as wd14-vit-v2, are accepted too). A catalog model not downloaded yet "
    "is downloaded first."
)
_THRESHOLD_DESCRIPTION = (
    "The earlier extensions' threshold, with their meaning: minimum probability of every tag (0..1). Sets "
    "general_threshold, and character_threshold unless that is given."
)
_IMAGE_DESCRIPTION = (
    "The image file (PNG, JPEG, WebP, ...), base64-encoded. A data: URL prefix such as "
    "'data:image/png;base64,', line breaks and the URL-safe alphabet are accepted."
)


class _InterrogateFields(_RequestModel):
    image: str = Field(..., description=_IMAGE_DESCRIPTION)
    model: str = Field(..., description=_MODEL_DESCRIPTION)
    threshold: float | None = Field(None, ge=0.0, le=1.0, description=_THRESHOLD_DESCRIPTION)


class _BatchFields(_RequestModel):
    images: list[str] = Field(
        ...,
        description="The images, each base64-encoded as in POST interrogate; answered in this order.",
    )
    model: str = Field(..., description=_MODEL_DESCRIPTION)
    threshold: float | None = Field(None, ge=0.0, le=1.0, description=_THRESHOLD_DESCRIPTION)


InterrogateRequest = create_model(  # type: ignore[call-overload]
    "InterrogateRequest", __base__=_InterrogateFields, __module__=__name__, **_option_fields()
)
InterrogateRequest.__doc__ = "One image to tag, with the earlier extensions' fields and every tag option."
InterrogateBatchRequest = create_model(  # type: ignore[call-overload]
    "InterrogateBatchRequest", __base__=_BatchFields, __module__=__name__, **_option_fields()
)
InterrogateBatchRequest.__doc__ = "Several images to tag with one model and one set of options."


class UnloadRequest(_RequestModel):
    model: str | None = Field(None, description="The model to unload; all models when left out.")


_CAPTION_DESCRIPTION = (
    "The earlier extensions' answer: every rating (in the model's order), then the tags that passed, "
    "highest probability first, each with its probability."
)


class TagsOut(BaseModel):
    caption: dict[str, float] = Field(..., description=_CAPTION_DESCRIPTION)
    prompt: str = Field(..., description="The tags as a prompt, formatted by the options.")
    rating: dict[str, float] = Field(..., description="Every rating with its probability, highest first.")
    general: dict[str, float] = Field(..., description="General tags that passed, in prompt order (csv names).")
    character: dict[str, float] = Field(..., description="Character tags that passed, in prompt order.")


class InterrogateResponse(TagsOut):
    model: str = Field(..., description="The model that answered (its catalog or folder name).")
    provider: str = Field(..., description="Where it ran: CPU or CUDA.")
    provider_note: str | None = Field(
        None, description="Why CUDA was asked for and is not used, with the fix; null otherwise."
    )
    elapsed: float = Field(..., description="Seconds this request took on the server.")
    warnings: list[str] = Field(default_factory=list, description="Ignored fields, renamed models.")


class ItemError(BaseModel):
    error: str = Field(..., description="What is wrong with this image.")
    field: str = Field(..., description="Which image: images[i].")


class BatchItem(BaseModel):
    index: int = Field(..., description="Position of the image in the request.")
    ok: bool = Field(..., description="True when the image was tagged.")
    result: TagsOut | None = Field(None, description="The tags; null when the image failed.")
    error: ItemError | None = Field(None, description="Why the image failed; null when it was tagged.")


class InterrogateBatchResponse(BaseModel):
    results: list[BatchItem] = Field(..., description="One item per image, in request order.")
    model: str = Field(..., description="The model that answered.")
    provider: str = Field(..., description="Where it ran: CPU or CUDA.")
    provider_note: str | None = Field(None, description="Why CUDA is not used, with the fix; else null.")
    elapsed: float = Field(..., description="Seconds this request took on the server.")
    warnings: list[str] = Field(default_factory=list, description="Ignored fields, renamed models.")


class InterrogatorsResponse(BaseModel):
    models: list[str] = Field(..., description="Names of the catalog models and the local model folders.")


class ModelOut(BaseModel):
    name: str
    display_name: str
    family: str = Field(..., description="v3, v2 or local.")
    repo_id: str | None = Field(None, description="Hugging Face repository; null for local models.")
    revision: str | None = None
    downloaded: bool = Field(..., description="Its files are here (models folder or Hugging Face cache).")
    size_bytes: int | None = Field(None, description="Size of its files; null when not downloaded.")
    tags: int | None = Field(None, description="Number of tags the model knows.")
    loaded: bool = Field(..., description="In memory now.")
    loading: bool = Field(..., description="Being downloaded or loaded now.")


class ModelsResponse(BaseModel):
    models: list[ModelOut]


class LoadedOut(BaseModel):
    name: str
    provider: str = Field(..., description="CPU or CUDA.")
    provider_note: str | None = Field(None, description="Why CUDA is not used, with the fix; else null.")
    input_size: int = Field(..., description="Side of the square the model sees, in pixels.")
    fixed_batch: int | None = Field(None, description="Batch size the model is fixed to; null if dynamic.")
    threads: int = Field(..., description="CPU threads of its session.")


class LoadedResponse(BaseModel):
    models: list[LoadedOut]


class UnloadResponse(BaseModel):
    unloaded: int = Field(..., description="How many models were unloaded.")
    models: list[str] = Field(..., description="Their names.")
    loaded: list[LoadedOut] = Field(..., description="What is still loaded.")


class ErrorResponse(BaseModel):
    error: str = Field(..., description="What went wrong, naming the field.")
    field: str | None = Field(None, description="The request field at fault (image, model, images[2]...).")
    detail: Any = Field(None, description="More: FastAPI's validation errors, or the known models.")


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (401, "Missing or wrong credentials (when the server has --api-auth)."),
        (404, "Unknown model; detail.known lists the known ones."),
        (413, "Request body or number of images over the limit."),
        (422, "Invalid field: not base64, not an image, too many pixels, out of range..."),
        (503, "The model cannot be had now (offline, download failed, or still downloading)."),
    )
}


# -- errors ------------------------------------------------------------------------------------------------


class ApiError(HTTPException):
    """An error answer: status, message, the field at fault. An HTTPException, so that one raised while
    FastAPI reads the body passes through unchanged."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.message = message
        self.field = field
        self.info = detail


def _json_error(status: int, message: str, field: str | None, detail: Any = None, headers: Any = None) -> Response:
    return JSONResponse({"error": message, "field": field, "detail": detail}, status_code=status, headers=headers)


def _short(value: Any, limit: int = 200) -> Any:
    """A value as it can be echoed back in a JSON error: cut to a readable size (a whole base64 image is
    not), NaN and infinities (which JSON cannot carry) as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "..."
    if isinstance(value, (dict, list, tuple)):
        text = repr(value)
        if len(text) > limit:
            return text[:limit] + "..."
        if isinstance(value, dict):
            return {str(k): _short(v, limit) for k, v in value.items()}
        return [_short(v, limit) for v in value]
    return value


def _field_name(loc: Any) -> str:
    """``("body", "images", 3)`` -> ``images[3]``. Request fields are flat: the top-level name, plus the
    index into a list field; what follows (pydantic 2 names union members there) is left out."""
    parts = list(loc or ())
    if parts and parts[0] == "body":
        parts = parts[1:]
    if not parts or not isinstance(parts[0], str):
        return "body"
    name = parts[0]
    if len(parts) > 1 and isinstance(parts[1], int):
        name += f"[{parts[1]}]"
    return name


def _validation_response(exc: RequestValidationError, request: Request) -> Response:
    errors = [dict(err) for err in exc.errors()]
    for err in errors:
        for key in ("input", "ctx"):
            if key in err:
                err[key] = _short(err[key])
    detail = jsonable_encoder(errors, custom_encoder={Exception: str})
    if not errors:
        return _json_error(422, "invalid request", "body", detail)
    first = errors[0]
    kind = str(first.get("type", ""))
    if kind in ("json_invalid", "value_error.jsondecode"):
        reason = (first.get("ctx") or {}).get("error") or first.get("msg", "")
        field, problem = "body", f"not valid JSON ({reason})"
    else:
        field, problem = _field_name(first.get("loc")), str(first.get("msg", "invalid"))
    if field == "body" and kind in ("missing", "value_error.missing"):
        problem = "the request has no body; send a JSON object"
    message = f"{field}: {problem}"
    if field == "body":
        content_type = request.headers.get("content-type", "")
        if "json" not in content_type:
            message += f" (send a JSON object with Content-Type: application/json, not {content_type or 'none'})"
    if len(errors) > 1:
        others = list(dict.fromkeys(_field_name(e.get("loc")) for e in errors[1:]))
        message += f" (and {len(errors) - 1} more: {', '.join(others[:10])}; see detail)"
    return _json_error(422, message, field, detail)


def _error_response(exc: Exception, request: Request) -> Response:
    """The JSON answer for any exception raised while serving one of our routes."""
    if isinstance(exc, ApiError):
        return _json_error(exc.status_code, exc.message, exc.field, exc.info, exc.headers)
    if isinstance(exc, RequestValidationError):
        return _validation_response(exc, request)
    if isinstance(exc, HTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        field = "body" if exc.status_code == 400 else None  # FastAPI's "error parsing the body"
        if field:
            message = f"{field}: {message}"
        return _json_error(exc.status_code, message, field, None, getattr(exc, "headers", None))
    if isinstance(exc, OptionsError):
        return _json_error(422, str(exc), exc.field)
    if isinstance(exc, ImageError):
        return _json_error(422, str(exc), exc.source)
    if isinstance(exc, ModelUnavailableError):
        return _json_error(503, str(exc), "model")
    if isinstance(exc, ModelFormatError):
        log.error("%s", exc)
        return _json_error(500, str(exc), "model")
    if isinstance(exc, TaggerError):
        return _json_error(400, str(exc), None)
    log.exception("tagger API: unexpected error on %s %s", request.method, request.url.path)
    return _json_error(500, f"internal error ({type(exc).__name__}: {exc}); see the server log", None)


# -- request handling: auth, body limit, errors --------------------------------------------------------------


class _LimitedRequest(Request):
    """A request whose body may not grow past ``limit`` bytes while it is read (chunked bodies included)."""

    def __init__(self, scope: Any, receive: Any, limit: int) -> None:
        super().__init__(scope, receive)
        self._limit = limit

    async def stream(self) -> Any:  # type: ignore[override]
        received = 0
        async for chunk in super().stream():
            received += len(chunk)
            if received > self._limit:
                raise ApiError(413, f"request body is over the limit of {self._limit} bytes", "body")
            yield chunk


class _DocumentedBasicAuth(HTTPBasic):
    """Declares HTTP basic auth in the OpenAPI schema; the check itself runs before the body is read."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


class _TaggerRoute(APIRoute):
    """Checks credentials and the body size before FastAPI reads the body, and turns every error of our
    routes into the JSON error answer. ``api`` is set on a subclass made per ``mount_api`` call."""

    api: "_Api"

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        api = self.api

        async def route(request: Request) -> Response:
            try:
                api.check_auth(request)
                api.check_length(request)
                return await handler(_LimitedRequest(request.scope, request.receive, api.limits.max_body_bytes))
            except Exception as exc:
                try:
                    return _error_response(exc, request)
                except Exception:  # an answer must always go out, even if the error cannot be described
                    log.exception("tagger API: could not describe the error %r", exc)
                    return _json_error(500, f"internal error ({type(exc).__name__})", None)

        return route


# -- the work ------------------------------------------------------------------------------------------------


def decode_base64_image(text: str, label: str = "image") -> bytes:
    """The bytes of a base64 image field; raises ImageError naming ``label`` and the problem."""
    s = text.strip()
    if s[:8].lower().startswith(("http://", "https://")):
        raise ImageError(label, "is a URL; send the image file itself, base64-encoded")
    if s[:5].lower() == "data:":
        head, comma, s = s.partition(",")
        if not comma or not head.lower().endswith(";base64"):
            raise ImageError(label, "a data: URL must be base64-encoded (data:image/png;base64,...)")
    s = re.sub(r"\s+", "", s)
    if not s:
        raise ImageError(label, "is empty: no image data")
    if "-" in s or "_" in s:  # the URL-safe alphabet
        s = s.replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        data = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageError(label, f"is not valid base64 ({e})") from None
    if not data:
        raise ImageError(label, "is empty: no image data")
    return data


def legacy_caption(result: TagResult, labels: Labels) -> dict[str, float]:
    """The earlier extensions' ``caption``: every rating in the model's (csv) order, then the tags that
    passed, highest probability first (ties keep their order)."""
    caption = {labels.names[i]: result.rating[labels.names[i]] for i in labels.rating}
    tags = sorted([*result.character.items(), *result.general.items()], key=lambda kv: -kv[1])
    caption.update(tags)
    return caption


def _tags_out(result: TagResult, labels: Labels) -> TagsOut:
    return TagsOut(
        caption=legacy_caption(result, labels),
        prompt=result.prompt,
        rating=result.rating,
        general=result.general,
        character=result.character,
    )


def _loaded_out(m: LoadedModel) -> LoadedOut:
    return LoadedOut(
        name=m.name,
        provider=m.provider_label,
        provider_note=m.device_note or None,
        input_size=m.size,
        fixed_batch=m.fixed_batch,
        threads=m.threads,
    )


class _Api:
    """The state behind one mounted API: the engine, limits, locks and the model loads in progress."""

    def __init__(
        self,
        tagger: Tagger,
        limits: ApiLimits,
        queue_lock: contextlib.AbstractContextManager[Any] | None,
        auth: dict[str, str] | None,
    ) -> None:
        self.tagger = tagger
        self.limits = limits
        self.queue_lock: contextlib.AbstractContextManager[Any] = (
            queue_lock if queue_lock is not None else contextlib.nullcontext()
        )
        self.auth = [(u.encode("utf-8"), p.encode("utf-8")) for u, p in (auth or {}).items()]
        self.auth_enabled = auth is not None
        self.decode_slots = threading.BoundedSemaphore(limits.max_concurrent_decodes)
        self._loads: dict[str, tuple[Future[LoadedModel], float]] = {}
        self._loads_lock = threading.Lock()

    # -- checks before the body is read ---------------------------------------------------------------
    def check_auth(self, request: Request) -> None:
        if not self.auth_enabled:
            return
        scheme, _, param = request.headers.get("authorization", "").partition(" ")
        user = password = None
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(param.strip(), validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                decoded = ""
            if ":" in decoded:
                user, _, password = decoded.partition(":")
        ok = False
        if user is not None and password is not None:
            user_b, password_b = user.encode("utf-8"), password.encode("utf-8")
            for u, p in self.auth:  # every entry, without stopping early: no timing hint of which user exists
                ok |= secrets.compare_digest(u, user_b) & secrets.compare_digest(p, password_b)
        if not ok:
            message = "Incorrect username or password" if user is not None else "Authentication required"
            raise ApiError(401, message, None, None, {"WWW-Authenticate": "Basic"})

    def check_length(self, request: Request) -> None:
        value = request.headers.get("content-length")
        if value is None:
            return
        try:
            length = int(value)
        except ValueError:
            raise ApiError(400, f"Content-Length {value!r} is not a number", "body") from None
        if length > self.limits.max_body_bytes:
            raise ApiError(
                413,
                f"request body is {length} bytes, over the limit of {self.limits.max_body_bytes} bytes; "
                "send fewer or smaller images per request",
                "body",
            )

    # -- models ---------------------------------------------------------------------------------------
    def model_name(self, text: str, warnings: list[str]) -> str:
        """The catalog or folder name of the model ``text`` names; ApiError 404 when none."""
        wanted = text.strip()
        names = [m.name for m in self.tagger.list_models()]
        if wanted in names:
            return wanted
        entry = by_name(wanted)  # a repository id
        target = entry.name if entry else LEGACY_MODEL_NAMES.get(wanted.lower())
        if target in names:
            if target != wanted:
                warnings.append(f"model '{wanted}' is called '{target}' here")
            return target  # type: ignore[return-value]
        shown = text if len(text) <= 100 else text[:100] + "..."
        raise ApiError(
            404,
            f"Unknown model '{shown}'. Known models: {', '.join(names)} (GET interrogators lists them).",
            "model",
            {"known": names},
        )

    def loading(self) -> set[str]:
        with self._loads_lock:
            return set(self._loads)

    def load(self, name: str) -> LoadedModel:
        """The loaded model ``name``, loading (and downloading) it in a background thread if needed.

        Waits up to ``download_timeout_s``; after that answers 503 with Retry-After while the work goes on,
        so a client retrying later finds the model ready.
        """
        for m in self.tagger.loaded():
            if m.name == name:
                return m
        with self._loads_lock:
            entry = self._loads.get(name)
            if entry is None:
                entry = (Future(), time.monotonic())
                self._loads[name] = entry
                threading.Thread(
                    target=self._load_in_background, args=(name, entry[0]), name=f"tagger-load-{name}", daemon=True
                ).start()
        future, started = entry
        try:
            return future.result(timeout=self.limits.download_timeout_s)
        except FutureTimeout:
            model = by_name(name)
            here = any(m.name == name and m.downloaded for m in self.tagger.list_models())
            if model is not None and not here:
                doing = f"being downloaded from {model.repo_id} into {self.tagger.models_dir / name}"
            else:
                doing = "loading"
            raise ApiError(
                503,
                f"Model '{name}' is still {doing} (for {time.monotonic() - started:.0f} s); it goes on: "
                "try again in a while.",
                "model",
                {"loading": True},
                {"Retry-After": "10"},
            ) from None

    def _load_in_background(self, name: str, future: "Future[LoadedModel]") -> None:
        try:
            result: LoadedModel | None = self.tagger.load(name)
            error: BaseException | None = None
        except BaseException as e:  # handed to the waiting requests, which answer with it
            result, error = None, e
        # Forgotten before it is answered: a finished future must not keep the session alive after an
        # unload, and "loading" ends when the waiting requests are answered. They hold the future.
        with self._loads_lock:
            if self._loads.get(name, (None,))[0] is future:
                del self._loads[name]
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    # -- images and inference -------------------------------------------------------------------------
    def tensor(self, data: bytes, label: str, size: int) -> np.ndarray:
        """Decode and preprocess one image (under the decode limit); ImageError for any failure."""
        with self.decode_slots:
            try:
                return prepare(load_image(data, name=label, max_pixels=self.limits.max_pixels), size)
            except ImageError:
                raise
            except MemoryError:
                raise ImageError(label, "not enough memory to decode this image") from None
            except Exception as e:  # a decoder bug costs this image, never the server
                log.warning("%s: could not be decoded", label, exc_info=True)
                raise ImageError(label, f"could not be decoded ({type(e).__name__}: {e})") from e

    def cached(self, name: str, data: bytes, opts: TagOptions) -> tuple[TagsOut, str] | None:
        """The answer from the engine's probability cache when this image was seen under this model."""
        hit = self.tagger.cached(name, data, opts)
        if hit is None:
            return None
        result, files, _ = hit
        return _tags_out(result, self.tagger.labels(files)), files.name

    def infer(self, loaded: LoadedModel, batch: np.ndarray) -> np.ndarray:
        """Run the model under the host's queue lock: only inference, never decoding or downloads."""
        with self.queue_lock:
            return loaded.run(batch)


def _options(req: BaseModel, warnings: list[str]) -> TagOptions:
    """The TagOptions of a request.

    ``threshold`` keeps the earlier extensions' meaning, so that their clients get the tags they got: those
    extensions applied it to every non-rating tag, characters included (toriato's ``postprocess_tags`` over
    all rows after the ratings). It sets general_threshold, and character_threshold unless that is given.
    """
    given = {name: getattr(req, name) for name in OPTION_FIELDS if getattr(req, name) is not None}
    threshold = getattr(req, "threshold", None)
    if threshold is not None:
        if "general_threshold" in given and given["general_threshold"] != threshold:
            raise OptionsError("threshold", "conflicts with general_threshold (threshold is its old name): give one")
        given["general_threshold"] = threshold
        given.setdefault("character_threshold", threshold)
    for name in _unknown_fields(req)[:20]:
        shown = name if len(name) <= 60 else name[:60] + "..."
        warnings.append(f"unknown field '{shown}' ignored")
    return options_from_mapping(given)


def _provider_note(loaded: LoadedModel) -> str | None:
    return loaded.device_note or None


def _add_routes(router: APIRouter, api: _Api, prefix: str) -> None:
    """Add the routes straight to ``router`` (the app's own): every version of FastAPI keeps them there as
    they are, so that a later mount can find and replace them (newer ones nest an included router)."""
    route_class = type("TaggerRoute", (_TaggerRoute,), {"api": api})
    deps = [Depends(_DocumentedBasicAuth(scheme_name="HTTPBasic", auto_error=False))] if api.auth_enabled else []
    tags: list[Any] = ["tagger"]

    def add(path: str, endpoint: Callable[..., Any], method: str, **kwargs: Any) -> None:
        router.add_api_route(
            f"{prefix}/{path}",
            endpoint,
            methods=[method],
            dependencies=deps,
            tags=tags,
            responses=_ERRORS,
            route_class_override=route_class,
            **kwargs,
        )

    def interrogators() -> InterrogatorsResponse:
        """Names of the models (catalog and local), as the earlier tagger extensions answered."""
        return InterrogatorsResponse(models=[m.name for m in api.tagger.list_models()])

    def models() -> ModelsResponse:
        """Every model with whether it is downloaded, loaded or loading."""
        loaded = {m.name for m in api.tagger.loaded()}
        loading = api.loading()
        return ModelsResponse(
            models=[
                ModelOut(
                    name=m.name,
                    display_name=m.display_name,
                    family=m.family,
                    repo_id=m.repo_id,
                    revision=m.revision,
                    downloaded=m.downloaded,
                    size_bytes=m.size_bytes,
                    tags=m.tags,
                    loaded=m.name in loaded,
                    loading=m.name in loading,
                )
                for m in api.tagger.list_models()
            ]
        )

    def interrogate(req: InterrogateRequest) -> InterrogateResponse:  # type: ignore[valid-type]
        """Tag one image. The answer's ``caption`` is the earlier extensions' answer; the rest is new."""
        start = time.perf_counter()
        warnings: list[str] = []
        opts = _options(req, warnings)
        name = api.model_name(req.model, warnings)  # type: ignore[attr-defined]
        data = decode_base64_image(req.image, "image")  # type: ignore[attr-defined]
        hit = api.cached(name, data, opts)
        if hit is not None:  # seen before under this model: answered from the probability cache
            out, model_name = hit
            provider, note = "cache", None
        else:
            loaded = api.load(name)
            tensor = api.tensor(data, "image", loaded.size)
            probs = api.infer(loaded, tensor[None])[0]
            api.tagger.remember(name, data, probs, loaded.labels)
            out = _tags_out(postprocess(probs, loaded.labels, opts), loaded.labels)
            model_name, provider, note = loaded.name, loaded.provider_label, _provider_note(loaded)
        return InterrogateResponse(
            caption=out.caption,
            prompt=out.prompt,
            rating=out.rating,
            general=out.general,
            character=out.character,
            model=model_name,
            provider=provider,
            provider_note=note,
            elapsed=time.perf_counter() - start,
            warnings=warnings,
        )

    def interrogate_batch(req: InterrogateBatchRequest) -> InterrogateBatchResponse:  # type: ignore[valid-type]
        """Tag several images with one model; one item per image, in order. A bad image fails alone."""
        start = time.perf_counter()
        warnings: list[str] = []
        opts = _options(req, warnings)
        images: list[str] = req.images  # type: ignore[attr-defined]
        if not images:
            raise ApiError(422, "images: give at least one image", "images")
        if len(images) > api.limits.max_images_per_request:
            raise ApiError(
                413,
                f"images: {len(images)} images, over the limit of {api.limits.max_images_per_request} per request",
                "images",
            )
        name = api.model_name(req.model, warnings)  # type: ignore[attr-defined]
        items: list[BatchItem | None] = [None] * len(images)
        raw: list[bytes | None] = []
        for i, text in enumerate(images):
            try:
                raw.append(decode_base64_image(text, f"images[{i}]"))
            except ImageError as e:
                raw.append(None)
                items[i] = BatchItem(index=i, ok=False, error=ItemError(error=str(e), field=e.source))
        for i, data in enumerate(raw):
            hit = api.cached(name, data, opts) if data is not None else None
            if hit is not None:
                items[i] = BatchItem(index=i, ok=True, result=hit[0])
                raw[i] = None
        pending = [i for i, data in enumerate(raw) if data is not None]
        if not pending:  # every image answered from the cache: the model is not even loaded
            return InterrogateBatchResponse(
                results=[item for item in items if item is not None],
                model=name,
                provider="cache",
                provider_note=None,
                elapsed=time.perf_counter() - start,
                warnings=warnings,
            )
        loaded = api.load(name)
        ready: list[tuple[int, np.ndarray]] = []
        for i, data in enumerate(raw):
            if data is None:
                continue
            try:
                ready.append((i, api.tensor(data, f"images[{i}]", loaded.size)))
            except ImageError as e:
                items[i] = BatchItem(index=i, ok=False, error=ItemError(error=str(e), field=e.source))
        step = default_batch_size(loaded)
        for k in range(0, len(ready), step):
            chunk = ready[k : k + step]
            probs = api.infer(loaded, np.stack([t for _, t in chunk]))
            for (i, _), p in zip(chunk, probs, strict=True):
                api.tagger.remember(name, raw[i], p, loaded.labels)
                result = postprocess(p, loaded.labels, opts)
                items[i] = BatchItem(index=i, ok=True, result=_tags_out(result, loaded.labels))
        return InterrogateBatchResponse(
            results=[item for item in items if item is not None],
            model=loaded.name,
            provider=loaded.provider_label,
            provider_note=_provider_note(loaded),
            elapsed=time.perf_counter() - start,
            warnings=warnings,
        )

    def unload_interrogators() -> str:
        """Unload every model (the earlier extensions' route and answer, which holds the count)."""
        return f"Successfully unload {api.tagger.unload_all()} model(s)"

    def unload(req: UnloadRequest | None = None) -> UnloadResponse:
        """Unload one model by name, or all of them when no name is given."""
        model = req.model if req is not None else None
        if model is None:
            unloaded = [m.name for m in api.tagger.loaded()]
            count = api.tagger.unload_all()
        else:
            name = api.model_name(model, [])
            count = int(api.tagger.unload(name))
            unloaded = [name] if count else []
        return UnloadResponse(unloaded=count, models=unloaded, loaded=[_loaded_out(m) for m in api.tagger.loaded()])

    def loaded() -> LoadedResponse:
        """The models in memory and where each runs."""
        return LoadedResponse(models=[_loaded_out(m) for m in api.tagger.loaded()])

    add("interrogators", interrogators, "GET", response_model=InterrogatorsResponse, summary="List model names")
    add("models", models, "GET", response_model=ModelsResponse, summary="List models with details")
    add("interrogate", interrogate, "POST", response_model=InterrogateResponse, summary="Tag one image")
    add(
        "interrogate/batch",
        interrogate_batch,
        "POST",
        response_model=InterrogateBatchResponse,
        summary="Tag several images",
    )
    add("unload-interrogators", unload_interrogators, "POST", response_model=str, summary="Unload all models")
    add("unload", unload, "POST", response_model=UnloadResponse, summary="Unload one model or all")
    add("loaded", loaded, "GET", response_model=LoadedResponse, summary="Models in memory")


# -- public ---------------------------------------------------------------------------------------------------


def mount_api(
    app: FastAPI,
    tagger: Tagger,
    *,
    prefix: str = DEFAULT_PREFIX,
    queue_lock: contextlib.AbstractContextManager[Any] | None = None,
    auth: dict[str, str] | None = None,
    limits: ApiLimits | None = None,
) -> None:
    """Add the tagger routes under ``prefix`` to ``app``.

    ``queue_lock``: the host's lock (a ``threading.Lock`` or any reusable context manager) that serialises
    GPU work with image generation; it is held around model inference only. ``auth``: username -> password
    for HTTP basic auth, like the WebUI's ``--api-auth`` (None: no auth). ``limits``: see ApiLimits.
    """
    api = _Api(tagger, limits or ApiLimits(), queue_lock, auth)
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    # Mounting again (the WebUI's "Reload UI" runs on_app_started again) replaces the earlier routes:
    # Starlette would otherwise keep answering with the first ones.
    app.router.routes[:] = [
        r for r in app.router.routes if not (isinstance(r, _TaggerRoute) and r.path.startswith(prefix + "/"))
    ]
    _add_routes(app.router, api, prefix)
    app.openapi_schema = None  # regenerated with these routes on the next /openapi.json


def parse_api_auth(value: str | None) -> dict[str, str] | None:
    """The WebUI's ``--api-auth`` text (``user:password,user2:password2``) as ``mount_api``'s ``auth``.

    None or empty text: no auth. A password may hold ":" (split at the first one only).
    """
    if not value:
        return None
    auth: dict[str, str] = {}
    for item in value.split(","):
        user, colon, password = item.partition(":")
        if not colon or not user:
            raise ValueError(f"--api-auth entry {item!r} is not user:password")
        auth[user] = password
    return auth


def create_app(tagger: Tagger, **kwargs: Any) -> FastAPI:
    """A FastAPI app with only the tagger API (``mount_api``'s keyword arguments apply).

    Without a ``queue_lock`` one is made: one inference at a time, as ONNX Runtime already spreads one run
    over every core and parallel runs only compete for them.
    """
    app = FastAPI(
        title="WD14 tagger",
        version=__version__,
        description="Tag images with WD14 models. The earlier tagger extensions' routes work unchanged.",
    )
    kwargs.setdefault("queue_lock", threading.Lock())
    mount_api(app, tagger, **kwargs)
    return app
