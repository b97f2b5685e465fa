"""An in-memory implementation of the transport seam, for fast engine unit tests.

::

    network = MemoryNetwork()
    hooks = plugins.load_hooks(extra_plugins=[memory_transport_plugin(network)])
    transport = hooks.transport("memory")            # or network.transport()
    server = await transport.bind(HostPort("", 0), identity=identity, alpns=["connet-control/1"])
    client = await transport.bind(HostPort("", 0), identity=None, alpns=[])
    conn = await client.dial(server.local_address, alpn="connet-control/1",
                             trust=Trust(server_name="connet-peer", pinned_der=der))

How it models QUIC (and where it does not):

- Addresses: a host of ``""``, ``0.0.0.0``, ``::``, ``localhost`` or ``::1`` means the
  network's ``default_host`` (``127.0.0.1``); other hosts are kept, so a test can give
  endpoints distinct IPs. Port 0 allocates a free port on that host. Binding a taken
  address raises TransportError.
- Dialing needs a live endpoint at the address that was bound with the ALPN; otherwise
  DialError at once (no handshake timeout is waited out). The listener's certificate is
  checked like TLS would: ``Trust.pinned_der`` must equal it exactly; with ``cafile`` it
  must be one of, or directly issued by one of, those CAs; there is no default trust store
  (DialError). ``server_name``, when given, must be in the certificate's subject
  alternative names; validity dates are checked.
- A stream becomes visible to the peer's ``accept_stream`` with its first write,
  ``write_eof`` or ``reset`` — as in QUIC, where opening a stream sends nothing. A
  protocol in which the opener waits for the acceptor to speak first deadlocks here just
  as it would over QUIC.
- ``write`` queues the bytes in the peer's receive buffer, then waits while that buffer
  holds more than ``options.stream_send_buffer`` unread bytes (backpressure).
  ``open_stream`` waits while the peer's ``options.max_streams`` of this side's streams
  are still open (MAX_STREAMS).
- ``reset(code)`` discards unread data: the peer's reads raise ``StreamReset(code)`` and
  its writes too (STOP_SENDING). ``close(code, reason)`` closes both sides: the peer's
  operations raise ``ConnectionLost(code, reason, by_peer=True)``; data, FIN and resets
  that already arrived stay readable first.
- ``partition(a, b)`` cuts the path between two endpoint addresses: nothing crosses it in
  either direction (reads, accepts and streams see nothing new; a ``close`` does not reach
  the peer). Each side of a connection across the cut closes itself with
  ``CloseCode.TIMEOUT`` (``by_peer=False``) after its endpoint's ``options.idle_timeout``,
  as a QUIC idle timeout would; new dials across it fail with DialError after the dial
  timeout (``timeout`` or ``options.handshake_timeout``). ``heal(a, b)`` restores the path
  before that: held data is delivered, timers are cancelled, and a side whose peer already
  timed out learns of it. Simplification: data that arrived before the cut but was not yet
  read is held too. ``partition``/``heal`` must be called from the running event loop.
- RTT is a fixed small number (``default_rtt``; ``set_rtt(a, b, seconds)`` changes it for one
  pair); byte counters count stream payload only. Keepalives are not modelled: an idle
  connection that is not partitioned never times out.

No tasks are created: every wait is on a future that the state change resolves.

The package has one job per module, and its imports point one way (``streams`` uses
``signals``; ``network`` uses ``signals``, ``streams`` and ``trust``; ``plugin`` uses
``network``):

- ``signals``: ``_Signal``, the wake-up every wait above is built on
- ``streams``: a connection's two sides and their streams (pipes, backpressure,
  MAX_STREAMS, reset, close, idle timeout under a partition)
- ``network``: endpoints, the transport and the network that binds and dials them and
  controls paths (partition, heal, RTT)
- ``trust``: the TLS-like certificate checks of a dial, and ``make_test_certificate``
- ``plugin``: the hook implementations that install a network's transport
"""

from connet_core.testing.network import MemoryEndpoint, MemoryNetwork, MemoryTransport
from connet_core.testing.plugin import MemoryTransportPlugin, memory_transport_plugin
from connet_core.testing.streams import MemoryConnection, MemoryStream
from connet_core.testing.trust import make_test_certificate

__all__ = [
    "MemoryConnection",
    "MemoryEndpoint",
    "MemoryNetwork",
    "MemoryStream",
    "MemoryTransport",
    "MemoryTransportPlugin",
    "make_test_certificate",
    "memory_transport_plugin",
]
