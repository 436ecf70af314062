"""A pure-ASGI middleware in front of MLflow's scoring app: body size limit, body-read timeout, input checks.

For every HTTP request it reads the whole body first, then hands the app the same body:

* a ``Content-Length`` above ``max_body_bytes`` is answered 413 before a byte of the body is read, and a body
  that grows past it while streaming (chunked, no length) is answered 413 as soon as it does; uvicorn reads and
  drops the rest, so the client still gets the answer;
* a body that has not fully arrived ``body_timeout`` seconds after the request's headers (e.g. a
  ``Content-Length`` larger than the bytes sent) is answered 400, and the connection is closed;
* on ``POST /invocations`` the content type and the texts are checked (``embalance.server.checks``): 415 or 400
  with a message naming the bad value and its position. Only valid requests reach MLflow.

Every error is JSON like MLflow's own: ``{"error_code": "...", "message": "..."}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from embalance.server import checks

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

INVOCATIONS = "/invocations"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RequestGuard:
    """Wraps an ASGI app; see the module's docstring. ``max_body_bytes`` >= 1, ``body_timeout`` > 0 seconds."""

    def __init__(self, app: App, *, max_body_bytes: int, body_timeout: float) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"`max_body_bytes` must be >= 1, but got {max_body_bytes}.")
        if not body_timeout > 0:
            raise ValueError(f"`body_timeout` must be > 0 seconds, but got {body_timeout}.")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan (and websockets, which the scoring app has none of)
            await self.app(scope, receive, send)
            return
        try:
            body = await self.read_body(scope, receive)
            if body is None:  # the client went away
                return
            if scope["method"] == "POST" and scope["path"].rstrip("/") == INVOCATIONS:
                mime = checks.media_type(_header(scope, b"content-type"))
                checks.check_body(mime, body)
                # MLflow compares the media type exactly (and only knows charset=utf-8): hand it the plain form
                headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
                scope = {**scope, "headers": [*headers, (b"content-type", mime.encode())]}
        except checks.RequestError as e:
            await self.answer(send, e)
            return
        await self.app(scope, _replay(body, receive), send)

    async def read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body within the limits, or None if the client disconnected; RequestError otherwise."""
        limit = self.max_body_bytes
        declared = _header(scope, b"content-length")
        expected = int(declared) if declared is not None and declared.strip().isdigit() else None
        if expected is not None and expected > limit:
            raise checks.RequestError(413, f"The body is {expected} bytes, above this server's limit of {limit} bytes (--max-body-bytes).", "REQUEST_TOO_LARGE")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - loop.time()))
            except TimeoutError:
                of = f"{size} of the {expected} bytes announced" if expected is not None else f"{size} bytes"
                raise checks.RequestError(
                    400,
                    f"The body did not arrive in full within {self.body_timeout:g} s (--body-timeout): {of} came. "
                    "Check that Content-Length matches the body.",
                    close=True,
                ) from None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise checks.RequestError(413, f"The body is larger than this server's limit of {limit} bytes (--max-body-bytes).", "REQUEST_TOO_LARGE")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def answer(send: Send, error: checks.RequestError) -> None:
        body = error.body()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if error.close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body already read, in one message, then defers to the server's (disconnects)."""
    done = False

    async def replayed() -> Message:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
