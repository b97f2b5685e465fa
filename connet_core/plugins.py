"""The plugin manager and the one typed facade through which connet calls hooks.

Containment: the decision hooks (authentication, route selection) are called one
implementation at a time, so that whatever one plugin raises or returns is caught, checked
and reported as a :class:`PluginError` naming that plugin and the hook. The engines refuse
just the connection or request that needed the decision; nothing a plugin does ends a
daemon. ``Hooks.errors`` counts the failures by (plugin, hook) for the status report.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import pluggy

from connet_core import hookspecs
from connet_core.errors import PluginError, StoreError
from connet_core.hook_threads import HookThreads
from connet_core.model import PathCandidate, Principal, PrincipalKind, Role, RoutePolicy, Veto
from connet_core.plugin_settings import PluginKey, PluginSettings, SettingProblem, with_defaults

if TYPE_CHECKING:
    from connet_core.shared_state import SharedState
    from connet_core.store import Store
    from connet_core.transport import Transport

ENTRY_POINT_GROUP = "connet"
# How long the engines wait for an async hook (an LDAP or HTTP service, a database) before
# refusing the one request that needed it.
HOOK_TIMEOUT = 5.0
DEFAULT_PLUGINS = ("tokens", "cidr", "routes", "filestore", "memory", "quic")

# Hooks the facade calls one implementation at a time (see the module docstring). A hook
# wrapper around them would run outside that containment, so wrappers are refused there.
CONTAINED_HOOKS = ("connet_admit_address", "connet_authenticate", "connet_authorize", "connet_select_routes")


def entry_point_names() -> list[str]:
    """Names of every plugin installed in the entry-point group."""
    return sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})


def make_plugin_manager(
    disable: Iterable[str] = (), extra_plugins: Sequence[object] = ()
) -> pluggy.PluginManager:
    """Load every plugin of the entry-point group ``connet`` except those in ``disable``,
    then ``extra_plugins`` (objects or modules with hookimpls, as an embedding program
    passes them). Misspelled hook implementations are refused with :class:`PluginError`."""
    disable = set(disable)
    unknown = disable - set(entry_point_names())
    if unknown:
        raise PluginError(f"disable-plugins: no installed plugin named {', '.join(sorted(unknown))}")
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in disable:
        pm.set_blocked(name)
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        for plugin in extra_plugins:
            pm.register(plugin)
        # a hookimpl whose name matches no hookspec is almost always a typo
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r}: {exc}") from None
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"a plugin failed to load: {exc}") from None
    for hook in CONTAINED_HOOKS:
        for impl in getattr(pm.hook, hook).get_hookimpls():
            if impl.hookwrapper or impl.wrapper:
                raise PluginError(f"plugin {plugin_label(pm, impl.plugin)!r}: {hook} may not be a hook wrapper "
                                  "(connet calls each implementation on its own; see docs/hooks.md)")
    return pm


def plugin_label(pm: pluggy.PluginManager, plugin: object) -> str:
    """The name a plugin goes by in logs and metrics: its entry point name (pluggy registers
    entry points under it), a module's name, or for an object an embedding program
    registered, its class name (pluggy's own name for it is an id)."""
    name = pm.get_name(plugin)
    if name is None or name == str(id(plugin)):
        return type(plugin).__name__
    return name


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Hooks:
    """Typed facade over the hooks: keyword arguments only, results checked and combined."""

    def __init__(self, pm: pluggy.PluginManager,
                 plugin_settings: Mapping[str, Mapping[str, object]] | None = None) -> None:
        """``plugin_settings``: the validated values of ``[plugins.NAME]`` by plugin name, as
        the configuration built them; each plugin's hooks get its own, defaults filled in."""
        self.pm = pm
        self._hook = pm.hook
        self.errors: Counter[tuple[str, str]] = Counter()  # plugin failures by (plugin, hook)
        self._labels: dict[int, str] = {}
        self.hook_timeout = HOOK_TIMEOUT
        self._threads = HookThreads()
        self.declared = self.plugin_keys()
        given = plugin_settings or {}
        self.settings: dict[str, PluginSettings] = {
            name: with_defaults(keys, given.get(name, {})) for name, keys in self.declared.items()
        }

    def _label(self, plugin: object) -> str:
        label = self._labels.get(id(plugin))
        if label is None:
            label = self._labels[id(plugin)] = plugin_label(self.pm, plugin)
        return label

    def _failed(self, plugin: str, hook: str, what: str) -> PluginError:
        self.errors[(plugin, hook)] += 1
        return PluginError(f"plugin {plugin!r} failed in {hook}: {what}", plugin=plugin, hook=hook)

    def _call(self, caller: Any, check: Callable[[object], bool], expected: str, *, first: bool,
              **kwargs: object) -> list[tuple[str, Any]]:
        """Call each implementation of ``caller`` in pluggy's order and return the non-None
        results with the plugin that gave each (only the first if ``first``). An exception
        (not a cancellation) or a result ``check`` refuses becomes a PluginError."""
        hook = caller.name
        results: list[tuple[str, Any]] = []
        for impl in reversed(caller.get_hookimpls()):  # pluggy calls the last registered first
            try:
                result = impl.function(*self._arguments(impl, kwargs))
            except Exception as exc:  # a plugin's bug or outage: this decision fails, nothing else
                raise self._failed(self._label(impl.plugin), hook, f"raised {_describe(exc)}") from exc
            if result is None:
                continue
            if not check(result):
                if inspect.iscoroutine(result):
                    result.close()  # an async implementation by mistake: never awaited, say so once
                raise self._failed(self._label(impl.plugin), hook,
                                   f"returned {type(result).__name__}, expected {expected} or None")
            results.append((self._label(impl.plugin), result))
            if first:
                break
        return results

    async def _acall(self, caller: Any, check: Callable[[object], bool], expected: str, *, first: bool,
                     **kwargs: object) -> list[tuple[str, Any]]:
        """:meth:`_call` for the engines: an implementation may be async, and is awaited for
        at most ``hook_timeout`` seconds; a plain function runs in a worker thread
        (:mod:`connet_core.hook_threads`) under the same limit, so one that blocks holds a
        worker, not the event loop. A timeout is that plugin's failure. A cancellation of
        the caller propagates (it is no plugin's failure)."""
        hook = caller.name
        results: list[tuple[str, Any]] = []
        for impl in reversed(caller.get_hookimpls()):
            label = self._label(impl.plugin)
            limit = asyncio.timeout(self.hook_timeout)
            try:
                async with limit:
                    if inspect.iscoroutinefunction(impl.function):
                        result = impl.function(*self._arguments(impl, kwargs))
                    else:  # a plain function may block (a synchronous client library): never on the loop
                        result = await self._threads.run(impl.function, *self._arguments(impl, kwargs))
                    if inspect.isawaitable(result):
                        result = await result
            except TimeoutError as exc:
                what = f"timed out after {self.hook_timeout:g}s" if limit.expired() else f"raised {_describe(exc)}"
                raise self._failed(label, hook, what) from exc
            except Exception as exc:  # a plugin's bug or outage: this decision fails, nothing else
                raise self._failed(label, hook, f"raised {_describe(exc)}") from exc
            if result is None:
                continue
            if not check(result):
                raise self._failed(label, hook, f"returned {type(result).__name__}, expected {expected} or None")
            results.append((label, result))
            if first:
                break
        return results

    def _arguments(self, impl: Any, kwargs: Mapping[str, object]) -> list[object]:
        """The arguments ``impl`` names; ``plugin_settings`` is its own plugin's."""
        return [self.settings.get(self._label(impl.plugin), _NO_SETTINGS) if arg == "plugin_settings"
                else kwargs[arg] for arg in impl.argnames]

    def error_report(self) -> list[dict[str, object]]:
        """The plugin failures for a status report: one entry per (plugin, hook)."""
        return [{"plugin": plugin, "hook": hook, "count": count}
                for (plugin, hook), count in sorted(self.errors.items())]

    # settings
    def plugin_keys(self) -> dict[str, tuple[PluginKey, ...]]:
        """The keys each plugin declares, by plugin name. A bad declaration (not PluginKey
        objects, an unusable key, a key declared twice) is a PluginError naming the plugin."""
        declared: dict[str, tuple[PluginKey, ...]] = {}
        for plugin, keys in self._call(self._hook.connet_plugin_keys, _is_key_list, "a list of PluginKey",
                                       first=False):
            seen: set[str] = set()  # one name per key, whatever its place: hooks get them in one mapping
            for key in keys:
                problem = key.problem() or (f"key {key.key!r} declared twice" if key.key in seen else None)
                if problem is not None:
                    raise self._failed(plugin, "connet_plugin_keys", problem)
                seen.add(key.key)
            declared[plugin] = declared.get(plugin, ()) + tuple(keys)
        return declared

    # authentication
    def admit_address(self, kind: PrincipalKind, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        """The first refusal reason, or None if every plugin admits ``address``."""
        reasons = self._call(self._hook.connet_admit_address, _is_str, "a reason string", first=False,
                             kind=kind, address=address)
        return reasons[0][1] if reasons else None

    def authenticate(self, kind: PrincipalKind, token: str) -> Principal | Veto | None:
        """The veto rule: every implementation is asked; if any returns a :class:`Veto`, the
        token is refused (the first veto, its plugin named), whatever the others say;
        otherwise the first Principal wins (installed plugins before the trylast defaults);
        None if nobody knows the token."""
        return _verdict(self._call(self._hook.connet_authenticate, _is_principal_or_veto, "a Principal or a Veto",
                                   first=False, kind=kind, token=token))

    # the engines' calls: async implementations awaited, with a time limit
    async def admit_address_async(
        self, kind: PrincipalKind, address: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> str | None:
        reasons = await self._acall(self._hook.connet_admit_address, _is_str, "a reason string", first=False,
                                    kind=kind, address=address)
        return reasons[0][1] if reasons else None

    async def authenticate_async(self, kind: PrincipalKind, token: str) -> Principal | Veto | None:
        return _verdict(await self._acall(self._hook.connet_authenticate, _is_principal_or_veto,
                                          "a Principal or a Veto", first=False, kind=kind, token=token))

    async def authorize_async(
        self,
        principal: Principal,
        address: ipaddress.IPv4Address | ipaddress.IPv6Address,
        name: str | None = None,
        role: Role | None = None,
    ) -> str | None:
        reasons = await self._acall(self._hook.connet_authorize, _is_str, "a reason string", first=False,
                                    principal=principal, address=address, name=name, role=role)
        return reasons[0][1] if reasons else None

    def check_settings(self, section: str, files: bool) -> None:
        """Each enabled plugin's own checks of its settings (``connet_check_settings``). A
        :class:`SettingProblem` propagates for the configuration to report; anything else
        a plugin raises is its failure, named."""
        caller = self._hook.connet_check_settings
        for impl in reversed(caller.get_hookimpls()):
            try:
                impl.function(*self._arguments(impl, {"section": section, "files": files}))
            except SettingProblem:
                raise
            except Exception as exc:  # a bug in the plugin: stop with a line saying whose
                raise self._failed(self._label(impl.plugin), caller.name, f"raised {_describe(exc)}") from exc

    # command line
    def cli_commands(self) -> list[Any]:
        """The click commands plugins add to ``connet``."""
        commands: list[Any] = []
        for _, group in self._call(self._hook.connet_cli_commands, _is_command_list, "a list of click commands",
                                   first=False):
            commands.extend(group)
        return commands

    def authorize(
        self,
        principal: Principal,
        address: ipaddress.IPv4Address | ipaddress.IPv6Address,
        name: str | None = None,
        role: Role | None = None,
    ) -> str | None:
        reasons = self._call(self._hook.connet_authorize, _is_str, "a reason string", first=False,
                             principal=principal, address=address, name=name, role=role)
        return reasons[0][1] if reasons else None

    # route selection
    def select_routes(
        self,
        name: str,
        local_policy: RoutePolicy,
        remote_policy: RoutePolicy,
        candidates: Sequence[PathCandidate],
    ) -> list[PathCandidate]:
        """Ordered paths to try; paths either policy forbids are always dropped.

        The result must be candidates that were offered. A path returned as an equal copy
        (a plugin rebuilding PathCandidate objects) stands for the one offered candidate it
        equals; anything else is the plugin's error."""
        candidates = list(candidates)
        chosen = self._call(self._hook.connet_select_routes, _is_path_list, "a list of PathCandidate",
                            first=True, name=name, local_policy=local_policy, remote_policy=remote_policy,
                            candidates=list(candidates))
        if not chosen:
            ordered = candidates
        else:
            plugin, returned = chosen[0]
            ordered = []
            for path in returned:
                offered = _offered(path, candidates)
                if offered is None:
                    raise self._failed(plugin, "connet_select_routes",
                                       f"returned a path that was not a candidate: {path.kind.value} to {path.peer}")
                if not any(offered is o for o in ordered):
                    ordered.append(offered)
        return [c for c in ordered if local_policy.allows(c.kind) and remote_policy.allows(c.kind)]

    # storage
    def open_store(self, component: str, store_dir: Path) -> "Store":
        """The first store a plugin opens. A StoreError (an unusable store) propagates as
        it is; any other failure is the plugin's, named."""
        caller = self._hook.connet_open_store
        for impl in reversed(caller.get_hookimpls()):
            try:
                store = impl.function(*self._arguments(impl, {"component": component, "store_dir": store_dir}))
            except (StoreError, PluginError):
                raise
            except Exception as exc:  # a bug in the plugin: stop the component, saying whose
                raise self._failed(self._label(impl.plugin), caller.name, f"raised {_describe(exc)}") from exc
            if store is not None:
                return store
        raise PluginError("no plugin provides storage (is the 'filestore' plugin disabled?)")

    # shared state
    def shared_state(self, component: str) -> "SharedState":
        """The first shared state a plugin provides. Any failure is the plugin's, named."""
        from connet_core.shared_state import SharedState

        caller = self._hook.connet_shared_state
        for impl in reversed(caller.get_hookimpls()):
            try:
                state = impl.function(*self._arguments(impl, {"component": component}))
            except PluginError:
                raise
            except Exception as exc:  # a bug or a bad setting in the plugin: stop, saying whose
                raise self._failed(self._label(impl.plugin), caller.name, f"raised {_describe(exc)}") from exc
            if state is None:
                continue
            if not isinstance(state, SharedState):
                raise self._failed(self._label(impl.plugin), caller.name,
                                   f"returned {type(state).__name__}, expected a SharedState or None")
            return state
        raise PluginError("no plugin provides the shared state (is the 'memory' plugin disabled?)")

    # transport
    def transport_names(self) -> list[str]:
        names: list[str] = []
        for group in self._hook.connet_transport_names():
            names.extend(group)
        return names

    def transport(self, name: str) -> "Transport":
        transport = self._hook.connet_transport(name=name)
        if transport is None:
            known = ", ".join(self.transport_names()) or "none"
            raise PluginError(f"transport {name!r} is not provided by any plugin (known: {known})")
        return transport


_NO_SETTINGS = PluginSettings()


def _is_key_list(value: object) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(k, PluginKey) for k in value)


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _verdict(found: list[tuple[str, Any]]) -> Principal | Veto | None:
    """The veto rule: any Veto (the first, its plugin named) refuses; else the first Principal."""
    for plugin, result in found:
        if isinstance(result, Veto):
            return Veto(result.reason, plugin)
    return found[0][1] if found else None


def _is_command_list(value: object) -> bool:
    import click  # the command line's library, only when a plugin adds commands

    return isinstance(value, (list, tuple)) and all(isinstance(c, click.Command) and c.name for c in value)


def _is_principal_or_veto(value: object) -> bool:
    return isinstance(value, (Principal, Veto))


def _is_path_list(value: object) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(p, PathCandidate) for p in value)


def _offered(path: PathCandidate, candidates: list[PathCandidate]) -> PathCandidate | None:
    """The offered candidate ``path`` stands for: itself, or the only one equal to it."""
    for candidate in candidates:
        if candidate is path:
            return candidate
    equal = [c for c in candidates if c == path]
    return equal[0] if len(equal) == 1 else None


def load_hooks(disable: Iterable[str] = (), extra_plugins: Sequence[object] = (),
               plugin_settings: Mapping[str, Mapping[str, object]] | None = None) -> Hooks:
    return Hooks(make_plugin_manager(disable, extra_plugins), plugin_settings)
