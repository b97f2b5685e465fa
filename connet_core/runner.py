"""Running a component as a daemon: event loop, signals, exit codes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from typing import Protocol

from connet_core.config import Config
from connet_core.errors import ConfigError, ConnetError, PluginError, StoreError, TransportError
from connet_core.model import HostPort
from connet_core.plugins import Hooks, load_hooks
from connet_core.status import connet_version
from connet_core.supervise import describe, retryable

log = logging.getLogger("connet")

# seconds a stopping component gets to say goodbye before the process exits regardless
# (exit within 2 s): cancelling every task, then closing its connections with a code and
# flushing them (at most 1 s, see the QUIC plugin's UDP close)
SHUTDOWN_GRACE = 1.5


class Component(Protocol):
    async def run(self) -> None: ...

    def status(self) -> dict: ...


def build(config: Config, hooks: Hooks) -> Component:
    if config.command == "client":
        from connet_core.client import Client

        assert config.client is not None
        return Client(config.client, hooks)
    if config.command == "server":
        from connet_core.server import Server

        assert config.server is not None
        return Server(config.server, hooks)
    if config.command == "control":
        from connet_core.control import Control

        assert config.control is not None
        return Control(config.control, hooks)
    if config.command == "relay":
        from connet_core.relay import Relay

        assert config.relay is not None
        return Relay(config.relay, hooks)
    raise ConfigError(f"unknown command {config.command!r}")


def status_addr(config: Config) -> HostPort | None:
    """The status endpoint of the component ``config`` runs (``[server]``: its control part's)."""
    section = config.client or config.control or config.relay or (config.server and config.server.control)
    return getattr(section, "status_addr", None)


async def serve(component: Component, status: HostPort | None = None, transport: str | None = None) -> None:
    """Run until SIGINT/SIGTERM; the first signal stops gracefully, a second exits at once.
    With ``status``, the status endpoint runs beside the component in one task group, and
    names ``transport`` in its reports."""
    from connet_core.status import run_with_status

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            os._exit(128 + signum)
        log.info("stopping (%s)", signal.Signals(signum).name)
        main.cancel()
        # the stop is bounded by design (connections closed with a code and flushed within
        # 1 s); this is the backstop should something still hang: exit anyway, and say so.
        # A thread, not a loop timer: it must fire while the loop is blocked, and after the
        # loop is gone (the interpreter joining a worker thread stuck in a read).
        backstop = threading.Timer(SHUTDOWN_GRACE, overdue)
        backstop.daemon = True
        backstop.start()

    def overdue() -> None:
        log.error("still stopping %.1f s after the signal: exiting now", SHUTDOWN_GRACE)
        sys.stderr.flush()
        os._exit(1)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await run_with_status(component, status, transport)
    except asyncio.CancelledError:
        if signals_seen == 0:
            raise
    except BaseExceptionGroup as group:
        # connections that failed while everything was being cancelled are part of the
        # stop, not an error of it; anything else (a bug) keeps its traceback
        if signals_seen == 0 or retryable(group) is None:
            raise
        log.debug("stopped; meanwhile: %s", describe(group))


def run(config: Config) -> int:
    """Run the component for ``config`` until a signal; the process exit code."""
    try:
        hooks = load_hooks(config.common.disable_plugins, plugin_settings=config.common.plugins)
        component = build(config, hooks)
        # what ``auto`` (or a plugin's own name) resolves to: creating a transport does no I/O
        transport = hooks.transport(config.common.transport).name
    except (ConfigError, PluginError, StoreError) as exc:
        print(f"connet: error: {exc}", file=sys.stderr)
        return 2
    log.info("connet %s %s, transport %s", connet_version(), config.command, transport,
             extra={"event": "start", "command": config.command, "transport": transport})
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(component, status_addr(config), transport))
    except (ConnetError, OSError, BaseExceptionGroup) as exc:
        cause = _first_expected(exc)
        if cause is None:
            raise
        print(f"connet: error: {cause}", file=sys.stderr)
        return 2 if isinstance(cause, (ConfigError, PluginError, StoreError)) else 1
    return 0


def _first_expected(exc: BaseException) -> BaseException | None:
    """The error to show the user: task groups wrap what a component raised."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_expected(inner)
            if found is not None:
                return found
        return None
    # bugs (anything else) keep their traceback: they are ours to fix, not the user's
    return exc if isinstance(exc, (ConfigError, PluginError, StoreError, TransportError, OSError)) else None
