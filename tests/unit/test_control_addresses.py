"""ControlAddresses: several control instances tried in turn, the next one after a loss, a
name with several addresses expanded (over the in-memory transport)."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from connet_core.certs import load_identity, write_test_certificates
from connet_core.component import Backoff
from connet_core.control_addresses import ControlAddresses, _expand
from connet_core.model import HostPort
from connet_core.testing import MemoryNetwork

ALPN = "connet-control/1"
log = logging.getLogger("test")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_test_certificates(tmp_path_factory.mktemp("certs"), ["localhost", "127.0.0.1"])


async def test_the_first_live_instance_then_the_next_one_after_a_loss(certs) -> None:
    network = MemoryNetwork()
    transport = network.transport()
    identity = load_identity(certs["cert"], certs["key"])
    one = await transport.bind(HostPort("127.0.0.1", 0), identity=identity, alpns=[ALPN])
    two = await transport.bind(HostPort("127.0.0.1", 0), identity=identity, alpns=[ALPN])
    dead = HostPort("127.0.0.1", 9)  # nobody listens: DialError at once
    client = await transport.bind(HostPort("127.0.0.1", 0), identity=None, alpns=[])
    addresses = ControlAddresses((dead, one.local_address, two.local_address), name="localhost", name_set=True,
                                 cafile=certs["ca"])

    async def dial() -> HostPort:
        conn = await addresses.dial(client, alpn=ALPN, timeout=0.2, backoff=Backoff(0.01, 0.05), logger=log,
                                    what="control server")
        conn.close()
        return addresses.current

    assert await dial() == one.local_address  # the dead one skipped
    assert await dial() == two.local_address  # after a loss: the next one first
    await two.close()
    assert await dial() == one.local_address  # round again, past the dead one and the closed one
    await one.close()
    with pytest.raises(TimeoutError):  # none left: it keeps trying, waiting its backoff each round
        async with asyncio.timeout(0.3):
            await dial()


async def test_a_name_with_several_addresses_of_one_family_is_several_instances(monkeypatch) -> None:
    loop = asyncio.get_running_loop()
    answers = {
        "control.example": [(socket.AF_INET, 0, 0, "", ("192.0.2.1", 1)), (socket.AF_INET, 0, 0, "", ("192.0.2.2", 1)),
                            (socket.AF_INET, 0, 0, "", ("192.0.2.1", 1))],
        "localhost": [(socket.AF_INET6, 0, 0, "", ("::1", 1, 0, 0)), (socket.AF_INET, 0, 0, "", ("127.0.0.1", 1))],
    }

    async def fake_getaddrinfo(host, port, **kwargs):  # the system resolver's answers, fixed
        return answers[host]

    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo)
    assert await _expand(HostPort("control.example", 1)) == [HostPort("192.0.2.1", 1), HostPort("192.0.2.2", 1)]
    # one address per family stays a name: the transport picks the family it can reach
    assert await _expand(HostPort("localhost", 1)) == [HostPort("localhost", 1)]
    assert await _expand(HostPort("198.51.100.7", 1)) == [HostPort("198.51.100.7", 1)]
    addresses = ControlAddresses((HostPort("control.example", 1),), name="control.example", name_set=False,
                                 cafile=None)
    assert [c for c, _ in await addresses.candidates()] == [HostPort("192.0.2.1", 1), HostPort("192.0.2.2", 1)]
