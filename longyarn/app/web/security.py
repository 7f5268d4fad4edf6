"""What a public web app needs around the reader's pages: the identity cookie, CSRF, response
headers, and bounded request bodies.

- Identity: the reader's token (see `longyarn.app.session.reader_identity`: 192 random bits,
  stored hashed, compared in constant time) lives in an HttpOnly, SameSite=Lax cookie, never
  in an address. An old `?reader=` link signs in once and is redirected to a clean address.
- CSRF: a request that changes anything carries a token derived from the reader's own secret
  (an HMAC), in a form field or the X-CSRF-Token header, and must not come from another site
  (Sec-Fetch-Site, Origin). Derived, not stored: every worker and every host checks it with no
  shared server secret, and a page from another site can neither read the cookie nor compute it.
- Headers: a Content-Security-Policy with no inline script or style and nothing from elsewhere,
  no referrer sent to other sites, no framing, no MIME sniffing.
- Bodies: a Content-Length above the limit is refused before a byte is read, a longer body is
  cut off as it arrives, and a body that stalls is dropped after a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from longyarn.app.session.reader_identity import ReaderToken

READER_COOKIE = "longyarn_reader"
COOKIE_MAX_AGE_S = 400 * 24 * 3600  # the longest a browser keeps a cookie (Chrome caps it there)
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
MAX_BODY_BYTES = 16 * 1024  # the longest form: a 500-character action, escaped, and a few fields
BODY_TIMEOUT_S = 10.0

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    # Addresses are sent to this site only (so browsers send a real Origin with forms).
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}
# Pages hold a reader's own story and their CSRF token: never kept by a cache.
PRIVATE = "no-store"

FORGED_REQUEST = (
    "This request did not come from a page of this reading room, so nothing was changed; "
    "reload the page and try again."
)


def csrf_token(token: ReaderToken) -> str:
    """The CSRF token of the reader whose cookie holds `token`."""
    digest = hmac.new(token.secret.encode(), b"longyarn reader csrf v1", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def check_csrf(request: Request, token: ReaderToken | None, submitted: str | None) -> None:
    """Raise 403 unless the request comes from this site with the reader's CSRF token."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise HTTPException(403, FORGED_REQUEST)
    origin = request.headers.get("origin")
    if origin == "null":  # an opaque origin: only a browser's own word that it is this site will do
        if site != "same-origin":
            raise HTTPException(403, FORGED_REQUEST)
    elif origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, FORGED_REQUEST)
    if token is None or not submitted:
        raise HTTPException(403, FORGED_REQUEST)
    if not hmac.compare_digest(submitted.encode(), csrf_token(token).encode()):
        raise HTTPException(403, FORGED_REQUEST)


def set_reader_cookie(response: Response, request: Request, token: ReaderToken) -> None:
    """Keep `token` in the reader's browser (HttpOnly: no script reads it)."""
    response.set_cookie(
        READER_COOKIE, str(token), max_age=COOKIE_MAX_AGE_S, path="/", httponly=True,
        samesite="lax", secure=request.url.scheme == "https",
    )


class Guard:
    """ASGI middleware: security headers on every response, and bounded request bodies."""

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int = MAX_BODY_BYTES,
        body_timeout_s: float = BODY_TIMEOUT_S,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                if b"cache-control" not in present:
                    headers.append((b"cache-control", PRIVATE.encode()))
            await send(message)

        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await _too_large(scope, receive, send_with_headers, self.max_body_bytes)
            return
        await self.app(scope, self._bounded(receive), send_with_headers)

    def _bounded(self, receive: Receive) -> Receive:
        received = 0
        body_done = False

        async def bounded_receive() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()  # after the body: the disconnect, whenever it comes
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except asyncio.TimeoutError:
                raise HTTPException(
                    408, "The request's body arrived too slowly, so nothing was changed; try again."
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_body_bytes:
                    raise HTTPException(413, _too_large_words(self.max_body_bytes))
            else:
                body_done = True
            return message

        return bounded_receive


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large_words(limit: int) -> str:
    return (
        f"The request was larger than the {limit // 1024} KiB this reading room accepts, so "
        "nothing was changed; send less."
    )


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    response = Response(
        _too_large_words(limit), status_code=413, media_type="text/plain; charset=utf-8",
        headers={"connection": "close"},
    )
    await response(scope, receive, send)

