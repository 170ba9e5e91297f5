"""Limits that keep one client from exhausting the server, and the request body reader that enforces them."""

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from tagger.api.errors import ApiError


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


class LimitedRequest(Request):
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


def check_length(request: Request, limit: int) -> None:
    """Refuse a body whose declared length is over ``limit`` before reading any of it."""
    value = request.headers.get("content-length")
    if value is None:
        return
    try:
        length = int(value)
    except ValueError:
        raise ApiError(400, f"Content-Length {value!r} is not a number", "body") from None
    if length > limit:
        raise ApiError(
            413,
            f"request body is {length} bytes, over the limit of {limit} bytes; send fewer or smaller images per request",
            "body",
        )
