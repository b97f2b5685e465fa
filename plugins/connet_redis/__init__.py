"""Plugin ``redis``: control instances share their state through Redis (docs/scaling.md).

Active when ``[plugins.redis] url`` is set (``CONNET_PLUGINS__REDIS__URL``); otherwise it
returns None and the ``memory`` default keeps the state in the one process. Needs the extra
``connet[redis]`` (the ``redis`` package's asyncio client), imported only when configured.
"""

from __future__ import annotations

from connet_core import hookimpl
from connet_core.errors import PluginError
from connet_core.plugin_settings import PluginKey, PluginSettings

__all__ = ["connet_plugin_keys", "connet_shared_state"]

DEFAULT_EXPIRY = 10.0
DEFAULT_REFRESH = 2.0


@hookimpl
def connet_plugin_keys() -> list[PluginKey]:
    return [
        PluginKey("url", "string", None, "redis://[:password@]host:port/db shared by every control instance"),
        PluginKey("key-prefix", "string", "connet", "prefix of every key and channel (several deployments, one Redis)"),
        PluginKey("expiry", "number", DEFAULT_EXPIRY,
                  "seconds after which a silent instance's announcements expire from the others"),
        PluginKey("refresh-interval", "number", DEFAULT_REFRESH,
                  "seconds between refreshes of this instance's keys and checks of the others'"),
    ]


@hookimpl
def connet_shared_state(component: str, plugin_settings: PluginSettings) -> object | None:
    url = plugin_settings.get("url")
    if not url:
        return None
    expiry = float(plugin_settings.get("expiry") or DEFAULT_EXPIRY)  # type: ignore[arg-type]
    refresh = float(plugin_settings.get("refresh-interval") or DEFAULT_REFRESH)  # type: ignore[arg-type]
    if not 0 < refresh <= expiry / 2:
        raise PluginError(f"plugins.redis: refresh-interval ({refresh:g}) must be positive and at most half "
                          f"of expiry ({expiry:g}), or live instances expire between refreshes", plugin="redis")
    try:
        from connet_redis.state import RedisState
    except ImportError as exc:
        raise PluginError(f"plugins.redis: url is set but the redis client is missing ({exc}); "
                          "install connet[redis]", plugin="redis") from None
    return RedisState(str(url), prefix=str(plugin_settings.get("key-prefix") or "connet"), expiry=expiry,
                      refresh=refresh)
