"""Birthday probing between this client and one peer when one of the two NATs is hard and
the other easy (connet_core/protocol/birthday.py has the packets, the key and the budget).

* The **easy** side sends probes from its one endpoint socket to random ports of the hard
  side's public IP, paced, until a direct connection to the peer exists or the budget is
  spent. It answers nothing: the hard side's dial is an ordinary incoming connection, which
  the identity proof checks as always.
* The **hard** side opens ``HARD_SOCKETS`` sockets, sends one probe from each to the easy
  side's public address (one NAT mapping each) and waits for a genuine probe on any of them.
  Hand-over: it closes the sockets, binds a dial-only QUIC endpoint on the winning socket's
  port (the NAT keeps that mapping: it follows the conntrack entry, not the socket) and dials
  the peer from there; the proven connection joins the peer like any other, and the extra
  endpoint closes with it. The client's own socket stays the one for control and the others.

Both start only once control told each about the other, after a short head start for the
ordinary punch (which, if it works, ends the attempt before a probe is sent).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Awaitable, Callable

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from connet_core.client.state import PEER_DIAL_TIMEOUT, ClientState, Peer, prove_over
from connet_core.model import HostPort
from connet_core.protocol import birthday as bd
from connet_core.protocol.messages import ALPN_PEER
from connet_core.transport import Connection, Endpoint, Trust

log = logging.getLogger("connet.client")

EASY_HEAD_START = 1.5  # the hard side's sockets are open by then (they take ~0.3 s)
HARD_HEAD_START = 1.0
HARD_WAIT = bd.EASY_PROBES / bd.PROBES_PER_SECOND + 2.0  # the easy side's whole budget, and slack

BindExtra = Callable[[int], Awaitable[Endpoint]]  # a dial-only endpoint on this local port


def roles(own_nat: str, peer_nat: str) -> str | None:
    """Our part in a birthday attempt with this peer, or None when there is none to play."""
    if own_nat == "hard" and peer_nat == "easy":
        return "hard"
    if own_nat == "easy" and peer_nat == "hard":
        return "easy"
    return None


def attempt_id(a: bytes, b: bytes) -> bytes:
    """The same 8 bytes on both sides, from the two certificate hashes (one per pair and run)."""
    return hashlib.sha256(b"connet birthday" + min(a, b) + max(a, b)).digest()[:8]


def peer_key(state: ClientState, peer: Peer, attempt: bytes) -> bytes | None:
    public = x509.load_der_x509_certificate(peer.certificate).public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        return None
    return bd.pair_key(state.identity.key, public, attempt)


async def _until_direct(peer: Peer, seconds: float) -> bool:
    """Wait up to ``seconds``; whether the peer has a direct connection by then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while peer.active() is None:
        left = deadline - loop.time()
        if left <= 0:
            return False
        peer.changed.clear()
        try:
            await asyncio.wait_for(peer.changed.wait(), left)
        except TimeoutError:
            return False
    return True


async def probe_as_easy(state: ClientState, endpoint: Endpoint, peer: Peer, peer_ip: str) -> int:
    """Spray the budget at the hard side's IP until a direct connection exists; probes sent."""
    send = getattr(endpoint, "send_probe", None)
    attempt = attempt_id(state.identity.hash, peer.hash)
    key = peer_key(state, peer, attempt)
    if send is None or key is None or await _until_direct(peer, EASY_HEAD_START):
        return 0
    loop = asyncio.get_running_loop()
    prober = bd.EasyProber(key, attempt, peer_ip, started=loop.time())
    while True:
        for ip, port, packet in prober.due(loop.time()):
            send(packet, HostPort(ip, port))
        due = prober.next_time()
        if due is None or await _until_direct(peer, max(0.0, due - loop.time())):
            prober.stop()
            break
    log.info("peer %s: birthday probing sent %d probes to %s (%s)", peer.label, prober.sent, peer_ip,
             "direct path up" if peer.active() is not None else "no direct path")
    return prober.sent


class _ProbeSocket(asyncio.DatagramProtocol):
    def __init__(self, index: int, on_datagram: Callable[[int, bytes, tuple[str, int]], None]) -> None:
        self.index = index
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(self.index, data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP for a probe the easy side's NAT dropped: expected, the probe did its job


async def probe_as_hard(state: ClientState, peer: Peer, peer_addr: HostPort,
                        bind_extra: BindExtra) -> tuple[Connection, Endpoint] | None:
    """Open the sockets, probe, and on a genuine answer dial the peer from the winning port."""
    attempt = attempt_id(state.identity.hash, peer.hash)
    key = peer_key(state, peer, attempt)
    if key is None or await _until_direct(peer, HARD_HEAD_START):
        return None
    loop = asyncio.get_running_loop()
    won: asyncio.Future[int] = loop.create_future()
    prober = bd.HardProber(key, attempt, (peer_addr.host, peer_addr.port), started=loop.time())

    def on_datagram(index: int, data: bytes, source: tuple[str, int]) -> None:
        winner = prober.received(index, data, source)
        if winner is not None and not won.done():
            won.set_result(winner)

    transports: list[asyncio.DatagramTransport] = []
    port = None
    try:
        for index in range(prober.sockets):
            transport, _ = await loop.create_datagram_endpoint(
                lambda i=index: _ProbeSocket(i, on_datagram), local_addr=("0.0.0.0", 0))  # type: ignore[misc]
            transports.append(transport)  # type: ignore[arg-type]
        target = (peer_addr.host, peer_addr.port)
        deadline = loop.time() + HARD_WAIT
        while not won.done() and loop.time() < deadline and peer.active() is None:
            for index, packet in prober.due(loop.time()):
                transports[index].sendto(packet, target)
            try:
                await asyncio.wait_for(asyncio.shield(won), min(0.25, max(0.0, deadline - loop.time())))
            except TimeoutError:
                pass  # the resend, the deadline, a direct path: looked at above
        if won.done():
            port = transports[won.result()].get_extra_info("sockname")[1]
    finally:
        for transport in transports:
            transport.close()
    sent = prober.sends
    if port is None:
        log.info("peer %s: birthday probing found no path (%d probes from %d sockets)", peer.label, sent,
                 len(transports))
        return None
    log.info("peer %s: birthday probe answered on port %d after %d probes; dialing from it", peer.label, port, sent)
    await asyncio.sleep(0)  # let the closed socket go before its port is bound again
    endpoint = await bind_extra(port)
    try:
        conn = await endpoint.dial(peer_addr, alpn=ALPN_PEER, trust=Trust(pinned_der=peer.certificate),
                                   timeout=PEER_DIAL_TIMEOUT)
        await prove_over(conn, state.identity, ALPN_PEER)
    except BaseException:
        await endpoint.close()
        raise
    return conn, endpoint


async def close_with(conn: Connection, endpoint: Endpoint) -> None:
    """The extra endpoint lives as long as the connection dialed from it."""
    try:
        await conn.wait_closed()
    finally:
        await endpoint.close()


def own_nat(state: ClientState, bound_port: int) -> str:
    """What peers should assume of our NAT (it chooses birthday probing's roles).

    One observer (control) cannot tell mapping behaviour apart, so this is the port
    heuristic: a NAT that kept our socket's port towards control most likely keeps one
    mapping for every destination ("easy"); one that changed it may map per destination
    ("hard"). A wrong "hard" only spends the probe budget (birthday probing also meets
    through an easy NAT); a router mapping makes us "easy" whatever the port."""
    if state.port_mapping is not None:
        return "easy"
    if state.observed is None:
        return ""
    return "easy" if state.observed.port == bound_port else "hard"


def peer_nat(peer: Peer) -> str:
    kinds = {info.nat for info in peer.matched.values()}
    return kinds.pop() if len(kinds) == 1 else ""
