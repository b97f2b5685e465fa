"""``connet server``: the control server and the relay server in one process."""

from __future__ import annotations

import asyncio

from connet_core.config import ServerSettings
from connet_core.control import Control, RelayEntry
from connet_core.model import HostPort
from connet_core.protocol.codes import CloseCode
from connet_core.plugins import Hooks, load_hooks
from connet_core.relay import RelayService, start_relay_service
from connet_core.supervise import TaskGroup


class Server:
    """``await Server(settings).run()`` serves until cancelled."""

    def __init__(self, settings: ServerSettings, hooks: Hooks | None = None) -> None:
        self.settings = settings
        self.hooks = hooks or load_hooks(settings.common.disable_plugins, plugin_settings=settings.common.plugins)
        self.control = Control(settings.control, self.hooks)
        self.relay: RelayService | None = None
        self.started = self.control.started

    async def run(self) -> None:
        s = self.settings
        await self.control.start()
        self.relay = await start_relay_service(self.hooks, s.common.transport, s.relay_addr, s.control.store_dir,
                                               s.control.handshake_idle_timeout, s.relay_tcp_addr)
        # the built-in relay needs no registration: control hands it its grant key directly
        port = self.relay.endpoint.local_address.port
        tcp = self.relay.tcp_address
        entry = RelayEntry(str(HostPort(s.relay_hostname, port)), self.relay.identity.der,
                           self.control.grant_key_for(self.relay.identity.der),
                           tcp_addr=str(HostPort(s.relay_hostname, tcp.port)) if tcp else "")
        self.relay.set_grant_key(entry.grant_key)
        self.control.add_relay(entry)
        try:
            async with TaskGroup() as tg:
                tg.create_task(self.control.serve())
                tg.create_task(self.relay.serve())
        finally:
            await self.relay.endpoint.close(CloseCode.SHUTDOWN, "shutdown")

    def status(self) -> dict:
        return {"role": "server", "control": self.control.status(),
                "relay": self.relay.status() if self.relay else None}
