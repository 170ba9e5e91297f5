"""Error answers: every failure of our routes becomes ``{"error": message, "field": name, "detail": ...}``.

They are produced by the routes themselves (``routes.TaggerRoute``), not by app-wide exception handlers, so
that mounting into the WebUI does not change the error format of the host's own API.
"""

import logging
import math
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tagger.engine import ModelBusyError
from tagger.errors import ImageError, ModelFormatError, ModelUnavailableError, OptionsError, TaggerError

log = logging.getLogger(__name__)

# How long a client is told to wait before asking again for a model that is still being downloaded or loaded.
RETRY_AFTER_S = 10


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


def json_error(status: int, message: str, field: str | None, detail: Any = None, headers: Any = None) -> Response:
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
        return json_error(422, "invalid request", "body", detail)
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
    return json_error(422, message, field, detail)


def error_response(exc: Exception, request: Request) -> Response:
    """The JSON answer for any exception raised while serving one of our routes."""
    if isinstance(exc, ApiError):
        return json_error(exc.status_code, exc.message, exc.field, exc.info, exc.headers)
    if isinstance(exc, RequestValidationError):
        return _validation_response(exc, request)
    if isinstance(exc, HTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        field = "body" if exc.status_code == 400 else None  # FastAPI's "error parsing the body"
        if field:
            message = f"{field}: {message}"
        return json_error(exc.status_code, message, field, None, getattr(exc, "headers", None))
    if isinstance(exc, OptionsError):
        return json_error(422, str(exc), exc.field)
    if isinstance(exc, ImageError):
        return json_error(422, str(exc), exc.source)
    if isinstance(exc, ModelBusyError):
        return json_error(503, str(exc), "model", {"loading": True}, {"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, ModelUnavailableError):
        return json_error(503, str(exc), "model")
    if isinstance(exc, ModelFormatError):
        log.error("%s", exc)
        return json_error(500, str(exc), "model")
    if isinstance(exc, TaggerError):
        return json_error(400, str(exc), None)
    log.exception("tagger API: unexpected error on %s %s", request.method, request.url.path)
    return json_error(500, f"internal error ({type(exc).__name__}: {exc}); see the server log", None)
