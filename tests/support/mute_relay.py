"""``connet relay`` that welcomes clients and then never answers another stream of theirs.

A real relay process (the project's own relay, transport and protocol) with one behaviour
changed: after the identity proof and its Welcome, every later stream (more grants, tunnel
requests) is accepted and left unanswered, as a relay that hangs would. The QUIC
connection itself stays alive (the transport still answers keepalives), so the client sees
no ConnectionLost, only a step timing out.

    python tests/support/mute_relay.py relay --config relay.toml
"""

from __future__ import annotations

import asyncio

from connet_core import cli, relay


async def _never_answer(self: relay.RelayService, client: relay.RelayClient, stream: object) -> None:
    await asyncio.get_running_loop().create_future()  # a hung relay: wait until the process stops


relay.RelayService._serve_stream = _never_answer  # type: ignore[method-assign]

if __name__ == "__main__":
    cli.main()
