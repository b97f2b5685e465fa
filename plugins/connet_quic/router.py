"""One UDP socket that both accepts and dials QUIC connections: the endpoint.

Datagrams are routed by destination connection ID to connections of both roles (the map
of aioquic's asyncio server, extended to client-role connections). The socket is read and
written in batches (:mod:`connet_quic._udp`: GRO, GSO): a connection answers a whole read
batch at once, and a GRO run of its datagrams reaches the library in one call where the
library takes runs. The connections themselves (:mod:`connet_quic.connection`) know nothing
of the endpoint but the capabilities it wires into them (:mod:`connet_quic.wiring`).

Stateless reset (RFC 9000 10.3, :mod:`connet_quic._reset`): a short-header datagram that
routes to no connection is first checked for being a reset of one of ours (its last 16
bytes against the reset tokens the peers at that address gave us); if it is none, it is
answered with a reset of its own, rate-limited and always shorter than the trigger.

Admission (:mod:`connet_quic.admission`): a client Initial that routes to no connection is
accepted, answered with a Retry (address validation, when under load) or dropped before the
library sees it, so that a flood of them cannot take the CPU and memory that established
connections and real clients need. What is dropped is counted (``counters``, exported by the
engines' status) and logged at most once per cause per ``CauseLog`` interval.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, Sequence

from connet_core.errors import ConnectionLost, DialError, TransportError
from connet_core.model import HostPort
from connet_core.protocol.codes import CloseCode
from connet_core.transport import CloseInfo, TLSIdentity, Trust, TransportOptions

from connet_quic._adapter import CONNECTION_ID_LENGTH
from connet_quic._udp import BatchedUdpSocket, segments
from connet_quic._reset import ResetKey, TokenBucket, reset_token_of, stateless_reset
from connet_quic._reset import RESET_BURST, RESET_RATE, VERSION_NEGOTIATION_BURST, VERSION_NEGOTIATION_RATE
from connet_quic import _memory
from connet_quic.addresses import Address, SocketFamily, bind_socket, canonical, resolve
from connet_quic.admission import Admission, Ticket, Verdict, retry_packet
from connet_quic.connection import QuicEndpointConnection
from connet_quic.inbox import Inbox
from connet_quic.library import PacketHeader, QuicLibrary, QuicLibraryConnection
from connet_quic.refusals import Refusals, limit_library_log
from connet_quic.dial_trust import trust_anchors
from connet_quic.tcp_pipe import PIPE_HOST_PREFIX, PipePaths, TcpPaths
from connet_quic.wiring import ConnectionWiring, Datagrams, contained

DatagramFilter = Callable[[HostPort, bool], bool]


class QuicEndpoint(TcpPaths):
    """One UDP socket that listens and dials (implements :class:`connet_core.transport.Endpoint`).

    Create with :meth:`QuicEndpoint.open`. ``set_datagram_filter`` is a fault hook for tests.
    """

    def __init__(
        self,
        library: QuicLibrary[QuicLibraryConnection],
        *,
        identity: TLSIdentity | None,
        alpns: Sequence[str],
        options: TransportOptions,
    ) -> None:
        if alpns and identity is None:
            raise TransportError("an endpoint that accepts connections needs a TLS identity")
        self._lib = library
        self._loop = asyncio.get_running_loop()
        self._options = options
        self._alpns = list(alpns)
        self._server_config = (
            library.configuration(
                is_client=False,
                alpns=self._alpns,
                idle_timeout=options.idle_timeout,
                max_datagram_size=options.max_datagram_size,
                initial_rtt=options.initial_rtt,
                probe_path_mtu=options.probe_datagram_size > 0,
                cert_pem=identity.cert_pem,
                key_pem=identity.key_pem,
            )
            if identity is not None and alpns
            else None
        )
        default_config = library.configuration(
            is_client=True,
            alpns=["x"],
            idle_timeout=options.idle_timeout,
            max_datagram_size=options.max_datagram_size,
            initial_rtt=None,
            probe_path_mtu=options.probe_datagram_size > 0,
        )
        self._supported_versions = library.supported_versions(default_config)
        self._by_cid: dict[bytes, QuicEndpointConnection] = {}
        self._connections: set[QuicEndpointConnection] = set()
        # accepted connections whose handshake is under way, with their share of the caps
        self._pending_accepts: dict[QuicEndpointConnection, Ticket] = {}
        self._admission = Admission()
        self._vn_limiter = TokenBucket(VERSION_NEGOTIATION_RATE, VERSION_NEGOTIATION_BURST)
        self._refusals = Refusals(lambda: self._local)
        self.counters = self._refusals.counters  # what the engines' status exports
        self._failed_since_release = 0  # handshakes (see _memory)
        limit_library_log()
        self._accepted: Inbox[QuicEndpointConnection] = Inbox()
        self._udp: BatchedUdpSocket | None = None
        # connections that received datagrams in the current read batch: they answer once
        self._received_in_batch: dict[QuicEndpointConnection, None] = {}
        self._family = SocketFamily()
        self._socket_address = self._family.socket_address
        self._local = HostPort("", 0)
        self._filter: DatagramFilter | None = None
        self._closed = False
        self._reset_key = ResetKey(options.stateless_reset_key)
        self._reset_limiter = TokenBucket(RESET_RATE, RESET_BURST)
        # connections by the address they talk to: a stateless reset is looked for only
        # among the connections to the address it came from, so an unknown-CID flood costs
        # a dict lookup, not a scan of every connection
        self._by_remote: dict[Address, set[QuicEndpointConnection]] = {}
        # QUIC over TLS-over-TCP where UDP is blocked: one more path (connet_quic.tcp_pipe)
        self._identity = identity
        self._pipes = PipePaths(received=self._run_received, batch_done=self._answer_batch, lost=self._pipe_lost)
        self._wiring = ConnectionWiring(
            loop=self._loop,
            library=library,
            options=options,
            send=self._send_datagrams,
            route=self._route,
            unroute=self._unroute,
            accepted=self._handshake_finished,
            closed=self._connection_closed,
            terminated=self._connection_terminated,
            pipe_peer=self._pipes.peer_of,
        )

    @classmethod
    async def open(
        cls,
        library: QuicLibrary[QuicLibraryConnection],
        address: HostPort,
        *,
        identity: TLSIdentity | None,
        alpns: Sequence[str],
        options: TransportOptions,
    ) -> "QuicEndpoint":
        endpoint = cls(library, identity=identity, alpns=alpns, options=options)
        await endpoint._bind(address)
        return endpoint

    async def _bind(self, address: HostPort) -> None:
        sock, self._family = await bind_socket(self._loop, address)
        self._socket_address = self._family.socket_address
        try:
            self._udp = BatchedUdpSocket(
                self._loop, sock, deliver=self._buffer_received, batch_done=self._answer_batch
            )
        except BaseException:
            sock.close()
            raise
        name = sock.getsockname()
        self._local = HostPort(name[0], name[1])

    # Endpoint API

    @property
    def local_address(self) -> HostPort:
        return self._local

    def set_datagram_filter(self, allow: DatagramFilter | None) -> None:
        """Fault hook for tests: ``allow(peer, outgoing)`` is called for every datagram
        received from (``outgoing`` False) or sent to (``outgoing`` True) ``peer`` (a
        normalized HostPort); returning False drops the datagram silently, as a dead path
        would. ``None`` removes the filter."""
        self._filter = allow

    async def accept(self) -> QuicEndpointConnection:
        return await self._accepted.get()

    def send_probe(self, data: bytes, address: HostPort) -> None:
        """A non-QUIC datagram to an IP literal (birthday probing, connet_core/protocol/birthday.py)."""
        self._sendto(data, (address.host, address.port))

    async def dial(
        self, address: HostPort, *, alpn: str, trust: Trust, timeout: float | None = None
    ) -> QuicEndpointConnection:
        """Dial from this endpoint's socket.

        Trust: ``pinned_der`` — the pinned certificate is the only trust anchor and, after
        the handshake, must be exactly the one presented (SHA-256 compared);
        ``server_name`` is then checked only when given (the engine passes the common
        name of the peer's identity; without it the exact match is the whole check).
        ``cafile`` — normal verification against that bundle; neither — certifi's bundle;
        for both, ``server_name`` defaults to the dialed host. Raises DialError.
        """
        if self._closed:
            raise DialError("endpoint is closed")
        remote = await resolve(self._loop, address, self._family, self._local)
        return await self._dial_path(remote, address, alpn=alpn, trust=trust, timeout=timeout)

    async def _dial_path(
        self, remote: Address, address: HostPort, *, alpn: str, trust: Trust, timeout: float | None
    ) -> QuicEndpointConnection:
        cadata, server_name = trust_anchors(trust, address)
        config = self._lib.configuration(
            is_client=True,
            alpns=[alpn],
            idle_timeout=self._options.idle_timeout,
            max_datagram_size=self._options.max_datagram_size,
            initial_rtt=self._options.initial_rtt,
            probe_path_mtu=self._options.probe_datagram_size > 0,
            server_name=server_name,
            cadata=cadata,
            pinned_der=trust.pinned_der,
        )
        quic = self._lib.new_connection(
            config, max_streams=self._options.max_streams, reset_token=self._reset_key.token
        )
        deadline = self._loop.time() + (timeout if timeout is not None else self._options.handshake_timeout)
        connection = QuicEndpointConnection(
            self._wiring, quic, is_dialer=True, remote=remote, handshake_deadline=deadline,
            pinned_der=trust.pinned_der,
        )
        self._add_connection(connection)
        # routable before the first datagram leaves: the answer may come back at once
        connection.add_connection_id(self._lib.host_cid(quic))
        quic.connect(remote, now=self._loop.time())
        connection.transmit()
        try:
            await connection.wait_handshake()
        except asyncio.CancelledError:
            connection.close(CloseCode.SHUTDOWN, "dial cancelled")  # the peer learns at once
            raise
        return connection

    async def close(self, code: int = CloseCode.OK, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        self._accepted.close(ConnectionLost(code, "endpoint closed", by_peer=False))
        for connection in list(self._connections):
            connection.close(code, reason)  # sends CONNECTION_CLOSE now
            connection.terminate()
        self._by_cid.clear()
        self._pipes.close()
        if self._udp is not None:
            await self._udp.close(flush=True)  # the CONNECTION_CLOSEs above must leave

    async def abort(self) -> None:
        """Test hook: vanish as a crashed process would — close the socket without
        sending anything (no CONNECTION_CLOSE), so the peers still believe in their
        connections. Local users see ConnectionLost(SHUTDOWN). Not part of the seam."""
        if self._closed:
            return
        self._closed = True
        self._accepted.close(ConnectionLost(CloseCode.SHUTDOWN, "endpoint aborted", by_peer=False))
        for connection in list(self._connections):
            connection.vanish(CloseInfo(CloseCode.SHUTDOWN, "endpoint aborted", by_peer=False))
        self._by_cid.clear()
        self._pipes.close(abort=True)
        if self._udp is not None:
            await self._udp.close(flush=False)  # drops anything still queued: nothing may leave

    # sending

    def _sendto(self, data: bytes, addr: Address) -> None:
        self._send_run([data], addr)

    def _send_run(self, run: list[bytes], addr: Address) -> None:
        """Datagrams to one address (the test fault filter sees each send)."""
        if self._filter is not None and not self._filter(HostPort(addr[0], addr[1]), True):
            return
        if addr[0].startswith(PIPE_HOST_PREFIX):  # over TCP; never by UDP, also once the pipe is gone
            pipe = self._pipes.pipe_for(addr[0])
            if pipe is not None:
                pipe.send(run)
            return
        self._udp.send(run, self._socket_address(addr))  # type: ignore[union-attr]

    def _send_datagrams(self, datagrams: Datagrams) -> int:
        """A connection's datagrams, in runs per address (one address but while it
        migrates); the bytes handed over (dropped by the fault filter or not)."""
        sent = 0
        start = 0
        while start < len(datagrams):
            addr = datagrams[start][1]
            end = start + 1
            while end < len(datagrams) and datagrams[end][1] == addr:
                end += 1
            run = [data for data, _ in datagrams[start:end]]
            start = end
            sent += sum(map(len, run))
            self._send_run(run, addr)
        return sent

    # receiving

    def _answer_batch(self) -> None:
        """After a read batch: every connection that received sends its answer once."""
        batch = self._received_in_batch
        if not batch:
            return
        self._received_in_batch = {}
        pending = self._pending_accepts
        for connection in batch:
            contained(connection, "sending", connection.transmit)
            if connection in pending and connection.sent_nothing:
                # A client's first Initial is always answered (an ACK at least). Nothing to
                # send means the library could not decrypt it: garbage shaped like an Initial.
                # Forget it now instead of holding its state until the handshake timeout.
                connection.fail(CloseCode.PROTOCOL_ERROR, "undecryptable Initial")

    def _buffer_received(self, buffer: bytes, segment: int, raw_addr: Any) -> None:
        """One datagram, or a GRO run of same-sized ones from one address."""
        if raw_addr[0].startswith(PIPE_HOST_PREFIX):
            return  # the pipes' addresses (RFC 6666 discard prefix) never come by UDP
        self._run_received(buffer, segment, raw_addr)

    def _run_received(self, buffer: bytes, segment: int, raw_addr: Any) -> None:  # also a pipe's records
        if segment < len(buffer) and self._filter is None:
            connection = self._run_owner(buffer, segment)
            if connection is not None:
                addr = canonical(raw_addr)
                if contained(connection, "on datagrams", connection.segments_received, buffer, segment, addr):
                    self._received_in_batch[connection] = None
                return
        for data in segments(buffer, segment):
            self._datagram_received(data, raw_addr)

    def _run_owner(self, buffer: bytes, segment: int) -> QuicEndpointConnection | None:
        """The established connection every datagram of a run is for, if there is one:
        all short-header packets with one connection ID. Anything else (handshakes,
        several connections from one peer socket) goes one datagram at a time."""
        end = 1 + CONNECTION_ID_LENGTH
        cid = buffer[1:end]
        for start in range(0, len(buffer), segment):
            if buffer[start] & 0x80 or buffer[start + 1:start + end] != cid:
                return None
        connection = self._by_cid.get(cid)
        if connection is None or not connection.handshake_settled():
            return None
        return connection

    def _datagram_received(self, data: bytes, raw_addr: Any) -> None:
        addr = canonical(raw_addr)
        if self._filter is not None and not self._filter(HostPort(*addr), False):
            return
        lib = self._lib
        header = lib.parse_header(data)
        if header is None:
            self._dropped("not_quic", addr)
            return
        if lib.needs_version_negotiation(header, self._supported_versions):
            if self._server_config is not None:
                if self._vn_limiter.take(self._loop.time()):
                    self.counters["quic_version_negotiations_sent"] += 1
                    self._sendto(lib.version_negotiation(header, self._supported_versions), addr)
                else:
                    self._dropped("unroutable", addr, "version negotiation over its rate")
            return
        connection = self._by_cid.get(header.destination_cid)
        if connection is None:
            if self._server_config is not None and not self._closed and lib.is_initial(header):
                if len(data) < lib.smallest_max_datagram_size:
                    self._dropped("small_initial", addr)
                    return
                connection = self._accept_initial(header, addr)
                if connection is None:
                    return
            else:
                self._unroutable(data, header, addr)
                return
        if contained(connection, "on a datagram", connection.datagram_received, data, addr):
            self._received_in_batch[connection] = None

    def _unroutable(self, data: bytes, header: PacketHeader, addr: Address) -> None:
        """A datagram for no connection of ours: a peer's stateless reset of one of our
        connections, or a packet of a connection we forgot (answered with a reset)."""
        if not self._lib.is_short_header(header):
            self._dropped("unroutable", addr, "long header for no connection")
            return  # a long header is never a reset, and we never answer one
        token = reset_token_of(data)
        if token is None:
            self._dropped("unroutable", addr, "short header too small to answer")
            return
        for connection in list(self._by_remote.get(addr, ())):
            if connection.reset_by(token):
                connection.stateless_reset_received()
                return
        if self._closed or not self._reset_limiter.take(self._loop.time()):
            self._dropped("unroutable", addr, "stateless reset over its rate")
            return
        reset = stateless_reset(self._reset_key.token(header.destination_cid), len(data))
        if reset is not None:
            self.counters["quic_resets_sent"] += 1
            self._sendto(reset, addr)

    def _dropped(self, cause: str, addr: Address, detail: str = "") -> None:
        self._refusals.dropped(cause, addr, self._loop.time(), detail)

    # accepting

    def _accept_initial(self, header: PacketHeader, addr: Address) -> QuicEndpointConnection | None:
        """A client Initial for no connection: accept, ask for a Retry or drop (see
        connet_quic.admission)."""
        now = self._loop.time()
        decision = self._admission.initial(addr, header.destination_cid, header.token or b"", now)
        if decision.verdict is Verdict.ACCEPT:
            return self._new_accepted(addr, decision.original_dcid, decision.retry_scid, decision.ticket)
        if decision.verdict is Verdict.RETRY:
            retry_scid = os.urandom(self._lib.connection_id_length)
            token = self._admission.tokens.issue(addr, header.destination_cid, retry_scid, now)
            packet = retry_packet(header.version, header.source_cid, retry_scid, header.destination_cid, token)
            if packet is None:
                self._dropped("unroutable", addr, f"Initial of version 0x{header.version:x}: no Retry for it")
                return None
            self._refusals.retried(decision.cause, addr, now)
            self._sendto(packet, addr)
            return None
        self._dropped(decision.cause, addr)
        return None

    def _new_accepted(
        self, addr: Address, original_dcid: bytes, retry_scid: bytes | None, ticket: Ticket | None
    ) -> QuicEndpointConnection:
        quic = self._lib.new_connection(
            self._server_config,
            max_streams=self._options.max_streams,
            reset_token=self._reset_key.token,
            original_destination_connection_id=original_dcid,
            retry_source_connection_id=retry_scid,
        )
        connection = QuicEndpointConnection(
            self._wiring,
            quic,
            is_dialer=False,
            remote=addr,
            handshake_deadline=self._loop.time() + self._options.handshake_timeout,
        )
        self._add_connection(connection)
        assert ticket is not None
        self._pending_accepts[connection] = ticket
        # as aioquic's server: route both the CID the client sends to (its own choice, or
        # the one our Retry gave it) and our own
        connection.add_connection_id(retry_scid if retry_scid is not None else original_dcid)
        connection.add_connection_id(self._lib.host_cid(quic))
        return connection

    # the connections' callbacks (ConnectionWiring) and bookkeeping

    def _add_connection(self, connection: QuicEndpointConnection) -> None:
        self._connections.add(connection)
        self._by_remote.setdefault(connection.address, set()).add(connection)

    def _route(self, cid: bytes, connection: QuicEndpointConnection) -> None:
        self._by_cid[cid] = connection

    def _unroute(self, cid: bytes, connection: QuicEndpointConnection) -> None:
        if self._by_cid.get(cid) is connection:
            del self._by_cid[cid]

    def _no_longer_pending(self, connection: QuicEndpointConnection) -> None:
        ticket = self._pending_accepts.pop(connection, None)
        if ticket is not None:
            self._admission.finished(ticket)

    def _handshake_finished(self, connection: QuicEndpointConnection) -> None:
        self._no_longer_pending(connection)
        if connection.alpn not in self._alpns:
            connection.close(CloseCode.PROTOCOL_ERROR, "unsupported ALPN")
            return
        self._accepted.put(connection)

    def _connection_closed(self, connection: QuicEndpointConnection) -> None:
        if connection in self._pending_accepts:
            self.counters["quic_handshakes_failed"] += 1
            self._failed_since_release += 1
        self._no_longer_pending(connection)
        if not self._pending_accepts and self._failed_since_release >= _memory.AFTER_FAILED_HANDSHAKES:
            # a flood of failed handshakes is over (for now): give their memory back, outside
            # of this connection's close
            self._failed_since_release = 0
            _memory.release_freed_memory_soon(self._loop)

    def _connection_terminated(self, connection: QuicEndpointConnection) -> None:
        for cid in connection.connection_ids:
            if self._by_cid.get(cid) is connection:
                del self._by_cid[cid]
        self._connections.discard(connection)
        self._no_longer_pending(connection)
        peers = self._by_remote.get(connection.address)
        if peers is not None:
            peers.discard(connection)
            if not peers:
                del self._by_remote[connection.address]
                self._pipes.close_unused(connection.address)
