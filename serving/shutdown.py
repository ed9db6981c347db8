"""Graceful shutdown: on SIGTERM lose no request the server accepted.

uvicorn alone closes its listener (resetting connections still in the kernel's accept
queue), closes idle connections that may hold an unread request, and re-raises the
signal so the process exits 143. These classes close the door first, let in-flight and
already-sent requests finish, flip readiness at once, and exit 0.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn

from serving.limits import HeadDeadlineProtocol

logger = logging.getLogger("mnist_serve.shutdown")

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Seconds a new or idle connection may still bring a request once shutdown begins.
LAST_REQUEST_WINDOW_S = 1.0
# Longest wait for the kernel's accept queue to empty before the listener closes.
ACCEPT_QUEUE_DRAIN_S = 1.0
# Linux ``SO_ATTACH_FILTER`` and a classic-BPF program of one instruction, "ret #0": on a
# listening socket it drops every incoming packet, so no new handshake completes.
_SO_ATTACH_FILTER = 26
_TCP_INFO_UNACKED_OFFSET = 24  # struct tcp_info: for a listener, its accept queue length


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


_DROP_ALL = (_SockFilter * 1)(_SockFilter(0x06, 0, 0, 0))
_DROP_ALL_PROGRAM = bytes(_SockFprog(1, _DROP_ALL))


def stop_new_handshakes(listener: socket.socket) -> bool:
    """Make a listening socket drop new connection attempts; False where unsupported.

    Closing a listener resets the connections still in its accept queue: clients that
    had sent a request see it cut off. Dropping SYNs first, then accepting the queue,
    leaves none there; refused clients retry their SYN and find the port closed.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        listener.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, _DROP_ALL_PROGRAM)
    except OSError:
        return False
    return True


def accept_queue_length(listener: socket.socket) -> int:
    info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int(struct.unpack_from("I", info, _TCP_INFO_UNACKED_OFFSET)[0])


class DrainingHttpProtocol(HeadDeadlineProtocol):
    """At shutdown, a new or idle connection may still send one request, then closes.

    uvicorn closes such connections at once, but a request may already be in the socket,
    unread: its client would see the connection cut. This gives it
    ``LAST_REQUEST_WINDOW_S`` to arrive; it is served with ``Connection: close``.
    """

    _is_last_request = False

    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self._is_last_request = True
            self.loop.call_later(LAST_REQUEST_WINDOW_S, self._close_if_idle)
        else:
            self.cycle.keep_alive = False

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._is_last_request and self.cycle is not None:
            self.cycle.keep_alive = False

    def _close_if_idle(self) -> None:
        is_idle = self.cycle is None or self.cycle.response_complete
        if is_idle and not self.transport.is_closing():
            self.transport.close()


class DrainingServer(uvicorn.Server):
    """uvicorn, with a shutdown that loses no request it accepted.

    On SIGTERM or SIGINT readiness turns false at once (``on_exit``); the listener stops
    taking connections without resetting any the kernel already accepted; every request
    received finishes (for up to ``timeout_graceful_shutdown``); then the app's shutdown
    drains the batch queues. uvicorn would then re-raise the signal, so the process died
    of it (exit 143); a drain that went as planned is a success, so this exits 0.
    """

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original_handlers = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original_handlers.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self._close_the_door()
        await super().shutdown(sockets=sockets)

    async def _close_the_door(self) -> None:
        """Stop new handshakes, then let the event loop accept what the kernel queued."""
        listeners = [listener for server in self.servers for listener in server.sockets]
        if not all(stop_new_handshakes(listener) for listener in listeners):
            return
        deadline = time.monotonic() + ACCEPT_QUEUE_DRAIN_S
        while any(accept_queue_length(listener) for listener in listeners):
            if time.monotonic() > deadline:
                logger.warning("accept queue not drained in %.1f s", ACCEPT_QUEUE_DRAIN_S)
                return
            await asyncio.sleep(0.005)
