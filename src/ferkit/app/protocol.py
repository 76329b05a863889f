"""uvicorn's HTTP/1.1 protocol (h11) with a deadline for request headers.

uvicorn times out idle keep-alive connections between requests, but not a client that connects and then
sends nothing, or half a request line, or headers one byte at a time: each such connection is held forever
and counts against ``--max-connections``. ``with_header_timeout`` gives every connection ``seconds`` to
deliver complete request headers, after it opens and after each response; slower clients are disconnected.
(The body's own deadline is ``ferkit.app.server.BodyLimit``'s.)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderTimeoutH11Protocol(H11Protocol):
    """H11Protocol that closes connections whose request headers do not arrive within ``header_timeout``."""

    header_timeout: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        if not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout_expired)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # closed already, or upgraded to a WebSocket
        if self.conn.their_state is h11.IDLE:  # no complete request since the timer was armed
            self.transport.close()


class _ClientFaultsWithoutTraceback(logging.Filter):
    """uvicorn logs a client's invalid UTF-8 WebSocket text frame with a full traceback, as if the server had
    failed; it is the client's fault (uvicorn closes the socket with 1007): one warning line is enough."""

    MESSAGES = ("Invalid UTF-8 sequence received from client",)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(self.MESSAGES):
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_client_faults() -> None:
    """Install the filter above on uvicorn's error logger (once; after ``uvicorn.Config`` set up logging)."""
    log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _ClientFaultsWithoutTraceback) for f in log.filters):
        log.addFilter(_ClientFaultsWithoutTraceback())


def with_header_timeout(seconds: float) -> type[H11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with this header deadline."""
    return type("HeaderTimeoutH11Protocol", (HeaderTimeoutH11Protocol,), {"header_timeout": float(seconds)})
