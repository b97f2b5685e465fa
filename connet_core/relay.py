"""The relay server: splices a source's stream to a destination's stream of the same name.

Clients reach it with a per-name grant from control and prove the key of the certificate
the grant names; the relay keeps no per-client state beyond live connections, so a restart
needs no resync. Inside each relayed stream the two clients run TLS end to end: the relay
forwards ciphertext only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from connet_core.certs import make_identity
from connet_core.component import RECONNECT_CEILING, Backoff, default_store_dir, persistent_secret, spawn
from connet_core.control_addresses import ControlAddresses
from connet_core.config import RelaySettings
from connet_core.errors import ConnectionLost, ProtocolError, StoreError, StreamReset
from connet_core.forward import splice
from connet_core.relay_datagrams import RelayedFlows
from connet_core.logs import log_listening
from connet_core.model import HostPort, Role, certificate_hash
from connet_core.plugins import Hooks, load_hooks
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.identity import Authorize, AuthorizeAt, Refused
from connet_core.protocol.identity_io import verify
from connet_core.protocol.grants import Grant, check_grant
from connet_core.protocol.messages import (
    ALPN_RELAY,
    ALPN_RELAYS,
    Connect,
    Connected,
    ConnectRefused,
    Hello,
    RelayRegister,
    RelayRegistered,
    Welcome,
)
from connet_core.protocol.streams import MessageStream
from connet_core.store import Store
from connet_core.supervise import TaskGroup, attempt, close_code, contained, describe, pause
from connet_core.transport import (
    CloseInfo, Connection, Endpoint, Stream, TLSIdentity, TransportOptions, listen_over_tcp,
)

log = logging.getLogger("connet.relay")

STEP_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class RelayIdentity:
    tls: TLSIdentity
    der: bytes

    @property
    def hash(self) -> bytes:
        return certificate_hash(self.der)


async def load_or_create_identity(store: Store) -> RelayIdentity:
    """The relay's certificate survives restarts (clients pin it): kept in the store."""
    cert_pem = await store.get("identity", "cert.pem")
    key_pem = await store.get("identity", "key.pem")
    if cert_pem is not None and key_pem is not None:
        try:
            der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
            serialization.load_pem_private_key(key_pem, password=None)
        except ValueError:
            raise StoreError("store: the relay identity (identity/cert.pem, identity/key.pem) is corrupt") from None
        return RelayIdentity(TLSIdentity(cert_pem, key_pem), der)
    tls, der, _ = make_identity("connet-relay")
    await store.put("identity", "key.pem", tls.key_pem)
    await store.put("identity", "cert.pem", tls.cert_pem)
    return RelayIdentity(tls, der)


@dataclass(eq=False)
class RelayClient:
    conn: Connection
    certificate: bytes
    hash: bytes
    grants: dict[tuple[str, Role], Grant] = field(default_factory=dict)

    def allowed(self, name: str, role: Role, now: float) -> bool:
        grant = self.grants.get((name, role))
        return grant is not None and grant.expires_at >= now


@dataclass
class RelayCounters:
    bytes_relayed: int = 0
    streams_active: int = 0
    streams_total: int = 0
    refused: int = 0


class RelayService:
    """Serves clients on a bound endpoint; needs the grant key control gave it."""

    def __init__(self, endpoint: Endpoint, identity: RelayIdentity, store: Store) -> None:
        self.endpoint = endpoint
        self.identity = identity
        self.store = store
        self.grant_key: bytes | None = None
        self.grant_key_ready = asyncio.Event()
        self.clients: set[RelayClient] = set()
        self.tcp_address: HostPort | None = None  # QUIC over TLS-over-TCP too (connet_core.transport.TcpEndpoint)
        self.counters = RelayCounters()
        self.udp = RelayedFlows()  # UDP flows' datagrams (docs/udp.md)
        self._tg: asyncio.TaskGroup | None = None

    def set_grant_key(self, key: bytes) -> None:
        self.grant_key = key
        self.grant_key_ready.set()

    async def serve(self) -> None:
        async with TaskGroup() as tg:
            self._tg = tg
            while True:
                conn = await self.endpoint.accept()
                tg.create_task(contained(self._serve_client(conn), f"relay client {conn.remote_address}", log))

    def _check_grants(self, client: RelayClient, grants: tuple[bytes, ...]) -> int:
        assert self.grant_key is not None
        now = time.time()
        accepted = 0
        for data in grants:
            grant = check_grant(self.grant_key, data, client.hash, now)
            if grant is not None:
                client.grants[(grant.name, grant.role)] = grant
                accepted += 1
        return accepted

    async def _serve_client(self, conn: Connection) -> None:
        address = conn.remote_address
        if conn.alpn != ALPN_RELAY:
            conn.close(CloseCode.PROTOCOL_ERROR, "unexpected protocol")
            return
        try:
            await asyncio.wait_for(self.grant_key_ready.wait(), STEP_TIMEOUT)
            stream = await asyncio.wait_for(conn.accept_stream(), STEP_TIMEOUT)
        except (TimeoutError, ConnectionLost, StreamReset):
            conn.close(CloseCode.TIMEOUT, "no proof")
            return

        async def granted(request: Authorize) -> RelayClient | Refused:
            # asked only once the key is proven: grants are checked for a proven holder
            client = RelayClient(conn, request.certificate, request.hash)
            if self._check_grants(client, request.grants) == 0:
                return Refused(CloseCode.GRANT_INVALID, "no valid grant")
            return client

        outcome = await verify(MessageStream(stream), listener_hash=self.identity.hash, alpn=ALPN_RELAY,
                               authorize=granted, authorize_at=AuthorizeAt.PROOF, step_timeout=STEP_TIMEOUT)
        if isinstance(outcome, Refused):
            what = {CloseCode.PROOF_FAILED: " failed the identity proof", CloseCode.GRANT_INVALID: " presented no valid grant"}
            log.warning("relay client %s%s", address, what.get(outcome.code, f": {outcome.reason}"),
                        extra={"peer": str(address)})
            conn.close(outcome.code, outcome.reason)
            return
        client = outcome.context
        self.clients.add(client)
        log.info(
            "relay client %s connected (%s)", address,
            ", ".join(f"{role.value}:{name}" for name, role in sorted(client.grants)), extra={"peer": str(address)},
        )
        assert self._tg is not None
        try:
            while True:
                stream = await conn.accept_stream()
                spawn(self._tg, self._serve_stream(client, stream), f"relay client {address}: stream {stream.stream_id}", log)
        except ConnectionLost:
            pass  # the client is gone; nothing of it is kept
        finally:
            self.clients.discard(client)

    async def _serve_stream(self, client: RelayClient, stream: Stream) -> None:
        messages = MessageStream(stream)
        try:
            request = await messages.recv((Connect, Hello), timeout=STEP_TIMEOUT)
            if isinstance(request, Hello):
                # more grants for the proven key (a client learns names after connecting)
                if request.certificate != client.certificate:
                    raise ProtocolError("grants for another certificate", CloseCode.GRANT_INVALID)
                self._check_grants(client, request.grants)
                await messages.send(Welcome())
                await stream.write_eof()
                return
            await self._relay(client, messages, request)
        except ProtocolError as exc:
            log.warning("relay client %s: stream %d: %s", client.conn.remote_address, stream.stream_id, exc,
                        extra={"peer": str(client.conn.remote_address)})
            stream.reset(exc.code)
        except (ConnectionLost, StreamReset):
            stream.reset(CloseCode.DESTINATION_UNREACHABLE)

    async def _relay(self, source: RelayClient, messages: MessageStream, request: Connect) -> None:
        now = time.time()
        if not source.allowed(request.name, Role.SOURCE, now):
            self.counters.refused += 1
            await messages.send(ConnectRefused(CloseCode.GRANT_INVALID, "no grant for this name"))
            await messages.stream.write_eof()
            return
        destinations = [
            c for c in self.clients
            if c.allowed(request.name, Role.DESTINATION, now) and (not request.peer or c.hash == request.peer)
        ]
        if not destinations:
            self.counters.refused += 1
            await messages.send(ConnectRefused(CloseCode.NOT_FOUND, "no such destination here"))
            await messages.stream.write_eof()
            return
        destination = destinations[0]
        outbound = await destination.conn.open_stream()
        self.counters.streams_active += 1
        self.counters.streams_total += 1
        try:
            # the TCP client's address travels on for the destination's PROXY protocol header,
            # the protocol so a UDP destination knows the flow
            await MessageStream(outbound).send(Connect(request.name, peer=source.hash, client_addr=request.client_addr,
                                                       client_dest=request.client_dest, protocol=request.protocol))
            await messages.send(Connected())
            with self.udp.forwarding(request.protocol, source.conn, messages.stream.stream_id,
                                     destination.conn, outbound.stream_id):
                moved = await splice(messages.stream, outbound, initial_to_b=messages.take_remaining())
            self.counters.bytes_relayed += moved
            log.debug("relayed a stream for %r: %d bytes", request.name, moved, extra={"endpoint": request.name})
        finally:
            self.counters.streams_active -= 1

    def status(self) -> dict:
        return {
            "addr": str(self.endpoint.local_address),
            "tcp_addr": str(self.tcp_address) if self.tcp_address else None,
            "certificate_sha256": self.identity.hash.hex(),
            "registered": self.grant_key is not None,
            "clients": [
                {"addr": str(c.conn.remote_address),
                 "carrier": getattr(c.conn, "carrier", "udp"),
                 "grants": sorted(f"{role.value}:{name}" for name, role in c.grants)}
                for c in self.clients
            ],
            "bytes_relayed": self.counters.bytes_relayed,
            "streams_active": self.counters.streams_active,
            "streams_total": self.counters.streams_total,
            "streams_refused": self.counters.refused,
            "udp": self.udp.status(),
            # the endpoint's own (an optional transport attribute: Retry, datagrams dropped)
            "counters": dict(getattr(self.endpoint, "counters", {})),
        }


async def start_relay_service(hooks: Hooks, transport_name: str, addr: HostPort, store_dir: Path | None,
                              handshake_timeout: float | None = None, tcp_addr: HostPort | None = None) -> RelayService:
    store = hooks.open_store("relay", store_dir or default_store_dir("relay"))
    identity = await load_or_create_identity(store)
    transport = hooks.transport(transport_name)
    options = TransportOptions(stateless_reset_key=await persistent_secret(store, "reset-key"))
    if handshake_timeout:  # handshake-idle-timeout
        options = dataclasses.replace(options, handshake_timeout=handshake_timeout)
    endpoint = await transport.bind(addr, identity=identity.tls, alpns=[ALPN_RELAY], options=options)
    log_listening(log, "relay", "udp", endpoint.local_address)
    service = RelayService(endpoint, identity, store)
    if tcp_addr is not None:  # for clients whose UDP is blocked
        try:
            service.tcp_address = await listen_over_tcp(endpoint, tcp_addr)
        except BaseException:
            await endpoint.close(CloseCode.SHUTDOWN, "shutdown")
            raise
        log_listening(log, "relay", "tcp", service.tcp_address)
    log.info("relay certificate sha256 %s", identity.hash.hex())
    return service


class Relay:
    """A relay on its own (``connet relay``): registers with control, then serves."""

    def __init__(self, settings: RelaySettings, hooks: Hooks | None = None) -> None:
        self.settings = settings
        self.hooks = hooks or load_hooks(settings.common.disable_plugins, plugin_settings=settings.common.plugins)
        self.service: RelayService | None = None
        self.started = asyncio.Event()
        self.control_connected = False
        self._control: ControlAddresses | None = None  # set by the registration loop

    async def run(self) -> None:
        s = self.settings
        self.service = await start_relay_service(self.hooks, s.common.transport, s.addr, s.store_dir,
                                                 s.handshake_idle_timeout, s.tcp_addr)
        # grants control issued before a restart stay valid: serve them before re-registering
        remembered = await self.service.store.get("control", "grant-key")
        if remembered is not None:
            self.service.set_grant_key(remembered)
        try:
            async with TaskGroup() as tg:
                tg.create_task(self.service.serve())
                tg.create_task(self._register_loop())
                self.started.set()
        finally:
            await self.service.endpoint.close(CloseCode.SHUTDOWN, "shutdown")

    async def _register_loop(self) -> None:
        assert self.service is not None
        s = self.settings
        service = self.service
        backoff = Backoff(0.5, RECONNECT_CEILING)
        refused_backoff = Backoff(5.0, 60.0)  # a refused token will not fix itself soon: wait longer each time
        addresses = ControlAddresses(s.control_addrs or (s.control_addr,), name=s.control_name,
                                     name_set=s.control_name_set, cafile=s.control_cas)
        self._control = addresses
        while True:
            conn = await addresses.dial(service.endpoint, alpn=ALPN_RELAYS, timeout=s.handshake_idle_timeout or STEP_TIMEOUT,
                                        backoff=backoff, logger=log, what="control server")
            try:
                with attempt() as tried:
                    closed = await self._registered_session(conn)
            except BaseException as exc:
                conn.close(close_code(exc), "relay stopping")
                raise
            finally:
                if self.control_connected:  # it was registered: start over with short waits
                    backoff.reset()
                    refused_backoff.reset()
                self.control_connected = False
            error = tried.error
            if error is None:
                log.warning("lost the control server %s: %s", addresses.current, CloseCode.describe(closed.code))
                refused = closed.code in (CloseCode.AUTH_FAILED, CloseCode.FORBIDDEN)
            elif isinstance(error, ConnectionLost):
                log.error("control server %s refused the relay: %s", addresses.current, CloseCode.describe(error.code))
                refused = error.code in (CloseCode.AUTH_FAILED, CloseCode.FORBIDDEN)
            else:
                log.warning("relay registration failed: %s; retrying", describe(error))
                conn.close(close_code(error), "registration failed")
                refused = False
            conn.close(CloseCode.OK)
            await pause(refused_backoff.next_delay() if refused else backoff.next_delay())

    async def _registered_session(self, conn: Connection) -> CloseInfo:
        """Register over ``conn`` and stay registered until it closes (how, returned)."""
        assert self.service is not None
        s = self.settings
        service = self.service
        messages = MessageStream(await conn.open_stream())
        port = service.endpoint.local_address.port
        tcp_port = service.tcp_address.port if service.tcp_address else 0
        await messages.send(RelayRegister(s.token, s.hostname, port, service.identity.der, metadata=s.metadata,
                                          tcp_port=tcp_port))
        registered = await messages.recv(RelayRegistered, timeout=STEP_TIMEOUT)
        if registered.grant_key != service.grant_key:
            await service.store.put("control", "grant-key", registered.grant_key)
        service.set_grant_key(registered.grant_key)
        self.control_connected = True
        log.info("registered with control server %s as %s:%d", self._control.current if self._control else None, s.hostname, port)
        return await conn.wait_closed()

    def status(self) -> dict:
        return {"role": "relay", "control_connected": self.control_connected, "metadata": self.settings.metadata,
                **(self.service.status() if self.service else {})}
