"""The plugin manager and the one typed facade through which connet calls hooks."""

from __future__ import annotations

import ipaddress
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import pluggy

from connet_core import hookspecs
from connet_core.errors import PluginError
from connet_core.model import PathCandidate, Principal, PrincipalKind, Role, RoutePolicy

if TYPE_CHECKING:
    from connet_core.config import AuthSettings
    from connet_core.store import Store
    from connet_core.transport import Transport

ENTRY_POINT_GROUP = "connet"
DEFAULT_PLUGINS = ("tokens", "cidr", "routes", "filestore", "quic")


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
    return pm


class Hooks:
    """Typed facade over the hooks: keyword arguments only, results checked and combined."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._hook = pm.hook

    # authentication
    def admit_address(
        self, settings: "AuthSettings", kind: PrincipalKind, address: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> str | None:
        """The first refusal reason, or None if every plugin admits ``address``."""
        reasons = self._hook.connet_admit_address(settings=settings, kind=kind, address=address)
        return next((r for r in reasons if r is not None), None)

    def authenticate(self, settings: "AuthSettings", kind: PrincipalKind, token: str) -> Principal | None:
        return self._hook.connet_authenticate(settings=settings, kind=kind, token=token)

    def authorize(
        self,
        settings: "AuthSettings",
        principal: Principal,
        address: ipaddress.IPv4Address | ipaddress.IPv6Address,
        name: str | None = None,
        role: Role | None = None,
    ) -> str | None:
        reasons = self._hook.connet_authorize(
            settings=settings, principal=principal, address=address, name=name, role=role
        )
        return next((r for r in reasons if r is not None), None)

    # route selection
    def select_routes(
        self,
        name: str,
        local_policy: RoutePolicy,
        remote_policy: RoutePolicy,
        candidates: Sequence[PathCandidate],
    ) -> list[PathCandidate]:
        """Ordered paths to try; paths either policy forbids are always dropped."""
        ordered = self._hook.connet_select_routes(
            name=name, local_policy=local_policy, remote_policy=remote_policy, candidates=list(candidates)
        )
        if ordered is None:
            ordered = list(candidates)
        return [c for c in ordered if local_policy.allows(c.kind) and remote_policy.allows(c.kind)]

    # storage
    def open_store(self, component: str, store_dir: Path) -> "Store":
        store = self._hook.connet_open_store(component=component, store_dir=store_dir)
        if store is None:
            raise PluginError("no plugin provides storage (is the 'filestore' plugin disabled?)")
        return store

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


def load_hooks(disable: Iterable[str] = (), extra_plugins: Sequence[object] = ()) -> Hooks:
    return Hooks(make_plugin_manager(disable, extra_plugins))
