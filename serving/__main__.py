"""``mnist-serve`` / ``python -m serving``: every setting as a flag or an MNIST_SERVE_* variable."""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

import uvicorn
from pydantic import SecretStr
from pydantic_settings import CliApp, SettingsConfigDict

from serving.app import create_app
from serving.limits import HeadDeadlineProtocol
from serving.logs import configure_logging, logging_config
from serving.metrics import prepare_multiprocess_dir
from serving.settings import Settings

logger = logging.getLogger("mnist_serve.cli")

# uvicorn's knobs that protect the server from slow or idle clients.
KEEP_ALIVE_TIMEOUT_S = 5
BACKLOG = 2048
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class CliSettings(Settings):
    """The settings, parsed from flags first, then MNIST_SERVE_* variables, then defaults."""

    model_config = SettingsConfigDict(
        env_prefix="MNIST_SERVE_",
        extra="forbid",
        cli_prog_name="mnist-serve",
        cli_kebab_case=True,
        cli_implicit_flags=True,
    )


def parse_settings(argv: Sequence[str]) -> Settings:
    # ``--models`` is the short spelling the README uses for ``--models-dir``.
    args = ["--models-dir" if arg == "--models" else arg for arg in argv]
    args = [f"--models-dir={arg[9:]}" if arg.startswith("--models=") else arg for arg in args]
    parsed = CliApp.run(CliSettings, cli_args=args)
    return Settings.model_validate(parsed.model_dump())


def settings_as_environment(settings: Settings) -> dict[str, str]:
    """MNIST_SERVE_* variables that rebuild ``settings`` in each worker process."""
    environment: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, bool | list):
            value = json.dumps(value)
        environment[f"MNIST_SERVE_{name.upper()}"] = str(value)
    return environment


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


def uvicorn_options(settings: Settings) -> dict[str, object]:
    return {
        "host": settings.host,
        "port": settings.port,
        "http": DrainingHttpProtocol,
        "loop": "uvloop",
        # Worker processes set up logging only from this, so pass ours rather than None.
        "log_config": logging_config(settings.log_level),
        "access_log": False,
        "timeout_keep_alive": KEEP_ALIVE_TIMEOUT_S,
        "timeout_graceful_shutdown": settings.shutdown_grace_s,
        "backlog": BACKLOG,
    }


def single_process_server(settings: Settings) -> DrainingServer:
    """The app under a server whose readiness turns false on SIGTERM or SIGINT."""
    app = create_app(settings)
    server = app.state.server

    def start_draining() -> None:
        if not server.is_draining:
            logger.info("draining: readiness is now false; finishing accepted requests")
        server.is_draining = True

    return DrainingServer(uvicorn.Config(app, **uvicorn_options(settings)), on_exit=start_draining)


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_settings(sys.argv[1:] if argv is None else argv)
    configure_logging(settings.log_level)
    if settings.workers == 1:
        single_process_server(settings).run()
        return
    # Several processes: each worker rebuilds the settings from the environment, and
    # metrics are aggregated across them through prometheus-client's multiprocess files.
    os.environ.update(settings_as_environment(settings))
    prepare_multiprocess_dir()
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        workers=settings.workers,
        **uvicorn_options(settings),
    )


if __name__ == "__main__":
    main()
