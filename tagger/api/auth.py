"""HTTP basic auth, as the WebUI's ``--api-auth``: checked before the body is read."""

import base64
import secrets

from fastapi.security import HTTPBasic
from starlette.requests import Request

from tagger.api.errors import ApiError


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


class BasicAuth:
    """The credentials a mounted API (or ``serve``'s whole app) accepts."""

    def __init__(self, users: dict[str, str] | None) -> None:
        self.enabled = users is not None
        self._users = [(u.encode("utf-8"), p.encode("utf-8")) for u, p in (users or {}).items()]

    def problem(self, authorization: str) -> str | None:
        """None when the ``Authorization`` header's value carries known credentials, else what is wrong."""
        if not self.enabled:
            return None
        scheme, _, param = authorization.partition(" ")
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
            for u, p in self._users:  # every entry, without stopping early: no timing hint of which user exists
                ok |= secrets.compare_digest(u, user_b) & secrets.compare_digest(p, password_b)
        if ok:
            return None
        return "Incorrect username or password" if user is not None else "Authentication required"

    def check(self, request: Request) -> None:
        """Raise ApiError 401 for a request without known credentials."""
        problem = self.problem(request.headers.get("authorization", ""))
        if problem is not None:
            raise ApiError(401, problem, None, None, {"WWW-Authenticate": "Basic"})


class DocumentedBasicAuth(HTTPBasic):
    """Declares HTTP basic auth in the OpenAPI schema; the check itself runs before the body is read."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None
