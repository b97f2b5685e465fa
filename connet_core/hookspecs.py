"""Every hook connet calls, in one place. Each docstring is the contract.

Plugins implement these with ``@connet_core.hookimpl``; the rest of connet calls them only
through :class:`connet_core.plugins.Hooks`. The authentication hooks may be async
(``async def``): the engine awaits them with a time limit (``Hooks.hook_timeout``, 5 s), and
a timeout refuses the one request; written as plain functions they run in a hook worker
thread under the same limit, so one that blocks never blocks the event loop. Route selection
must be synchronous and pure (it runs on the loop).
Objects that do I/O (stores, transports) are handed out by factory hooks.

Every hook but the transport ones may name a ``plugin_settings`` argument: it gets the
calling plugin's own settings (:class:`connet_core.plugin_settings.PluginSettings`, the keys
it declared with ``connet_plugin_keys``, defaults filled in), so plugins keep no global state
and several components can live in one process. pluggy passes an implementation only the
arguments it names, so a plugin without settings ignores it. The default plugins' tokens and
address rules are such settings too (``[server] tokens`` is the tokens plugin's key).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Sequence

import pluggy

from connet_core.model import PathCandidate, Principal, PrincipalKind, Role, RoutePolicy

if TYPE_CHECKING:
    from pathlib import Path

    import click

    from connet_core.plugin_settings import PluginKey, PluginSettings
    from connet_core.shared_state import SharedState
    from connet_core.store import Store
    from connet_core.transport import Transport

PROJECT = "connet"
hookspec = pluggy.HookspecMarker(PROJECT)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# --- settings -----------------------------------------------------------------------------


@hookspec
def connet_plugin_keys() -> "Sequence[PluginKey]":
    """The settings this plugin takes: a list of :class:`connet_core.plugin_settings.PluginKey`
    (key, kind, default, one-line doc).

    Every implementation is called once, when the hooks are loaded. Users set the keys in a
    ``[plugins.NAME]`` table or as ``CONNET_PLUGINS__NAME__KEY`` (NAME: the plugin's entry
    point name); connet validates them like its own keys and hands the values to this
    plugin's hooks as ``plugin_settings``. A key declared with ``section="server"`` (or
    control, relay) is a key of that core section instead (``[server] tokens`` is the tokens
    plugin's), with its flag. A bad declaration stops loading with one line.
    """


@hookspec
def connet_check_settings(section: str, plugin_settings: "PluginSettings", files: bool) -> None:
    """Check this plugin's settings beyond their types (keys that need each other, one that
    is required) for the command about to run, whose section is ``section`` ("server",
    "control", "relay" or "client"). Raise
    :class:`connet_core.plugin_settings.SettingProblem` (key, message): connet reports one
    line naming ``section.key`` and where it was set, exit code 2. ``files``: also open the
    files the settings name (``connet check``, and a daemon starting); False when only the
    configuration is loaded. Called for enabled plugins only.
    """


@hookspec
def connet_cli_commands() -> "Sequence[click.Command]":
    """Commands this plugin adds to the ``connet`` command line: a list of ``click.Command``
    (or ``click.Group``) objects, each named (``connet NAME ...``). Every implementation is
    called when a command that is not built in is run, or ``connet --help`` lists them. A
    name that exists already stops with one line; raise ``click.ClickException`` (or a
    ``connet_core.errors.ConfigError``) for a one-line error of your command.
    """


# --- authentication ---------------------------------------------------------------------


@hookspec
def connet_admit_address(kind: PrincipalKind, address: IPAddress, plugin_settings: "PluginSettings") -> str | None:
    """Decide whether ``address`` may talk to this server at all, before any token is read.

    ``kind`` says whether a client or a relay is connecting. ``address`` is already folded
    (IPv4-mapped IPv6 is given as IPv4). Return a reason string (for the log, never sent) to
    refuse, or None for no objection. Every implementation is called; any reason refuses.
    """


@hookspec
def connet_authenticate(kind: PrincipalKind, token: str, plugin_settings: "PluginSettings") -> Principal | None:
    """Map a presented token to a principal, or veto it.

    Every implementation is asked (the veto rule): return a ``Principal`` to accept the
    token, None for "not a token I know", or ``connet_core.model.Veto(reason)`` to refuse it
    whatever the other plugins say. Any veto refuses; otherwise the first Principal wins
    (installed plugins are asked before the ``trylast`` defaults); when every implementation
    returns None the peer is refused with ``auth-failed``. A vetoed peer gets ``auth-failed``
    too; only the log has the reason and the vetoing plugin. Implementations
    must compare tokens in constant time and never log them. Called again for live sessions
    whenever tokens may have changed: a session whose token now yields None is closed.
    """


@hookspec
def connet_authorize(
    principal: Principal,
    address: IPAddress,
    name: str | None,
    role: Role | None,
    plugin_settings: "PluginSettings",
) -> str | None:
    """Decide whether ``principal`` connecting from ``address`` may announce ``name`` as ``role``.

    Called once per session with ``name`` and ``role`` None (may this principal connect from
    here at all), then per announcement. Return a reason string to refuse (the peer gets only
    ``forbidden``), None for no objection. Every implementation is called; any reason refuses.
    """


# --- route selection ----------------------------------------------------------------------


@hookspec(firstresult=True)
def connet_select_routes(
    name: str,
    local_policy: RoutePolicy,
    remote_policy: RoutePolicy,
    candidates: Sequence[PathCandidate],
    plugin_settings: "PluginSettings",
) -> list[PathCandidate] | None:
    """Order the paths a source should try for a new connection to a destination ``name``.

    ``candidates`` are the paths that are up right now. Return them (or a subset) best
    first; a path is tried only if returned. The caller still drops any path whose kind
    either policy forbids. The first non-None result wins; None defers to the next plugin.
    """


# --- storage ------------------------------------------------------------------------------


@hookspec(firstresult=True)
def connet_open_store(component: str, store_dir: "Path", plugin_settings: "PluginSettings") -> "Store | None":
    """Open the store for ``component`` ("control" or "relay") rooted at ``store_dir``.

    The first non-None result wins. Raise :class:`connet_core.errors.StoreError` for a store
    that exists but is unusable (corrupt, unreadable); that stops the component with a clear
    message. Returning None everywhere is an error: some plugin must provide storage.
    """


# --- shared state -------------------------------------------------------------------------


@hookspec(firstresult=True)
def connet_shared_state(component: str, plugin_settings: "PluginSettings") -> "SharedState | None":
    """The state control instances share (:class:`connet_core.shared_state.SharedState`): who
    is connected, what each client announces, which relays exist, the grant and reset secrets.

    ``component`` is "control" (also for the control half of ``connet server``). The first
    non-None result wins: a plugin that is not configured (the ``redis`` plugin without a
    url) returns None, and the ``memory`` default (``trylast``) keeps the state in this one
    process. Creating it must not do I/O; ``SharedState.open`` does.
    """


# --- transport ----------------------------------------------------------------------------


@hookspec
def connet_transport_names() -> Sequence[str]:
    """Names of the transports this plugin provides (``transport`` config key values).

    Every implementation is called; the names are used to validate configuration and to
    list choices in ``--help``. Names must be unique across plugins.
    """


@hookspec(firstresult=True)
def connet_transport(name: str) -> "Transport | None":
    """Return the transport called ``name``, or None if this plugin does not provide it.

    The first non-None result wins. Creating the transport must not do I/O; binding does.
    """
