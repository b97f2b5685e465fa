"""The endpoint's UDP socket, read and written in batches.

asyncio's datagram transport makes one system call and one callback per datagram, which
for QUIC at tens of MB/s is about a third of a process's CPU. Here instead:

- **Reads** are drained in batches when the socket is readable (up to ``READ_BATCH``
  system calls), and the endpoint hears ``batch_done`` after each batch, so a connection
  answers a whole batch with one call into its library (one ACK for many packets).
- **GRO** (Linux ``UDP_GRO``): the kernel hands back runs of same-sized datagrams from one
  sender as one buffer, with the segment size in a control message; ``deliver`` gets the
  buffer and the segment size (a library that takes such runs whole saves a call per
  datagram, see :func:`segments`).
- **GSO** (Linux ``UDP_SEGMENT``): a run of datagrams to one address, all of one size but
  the last, leaves in one ``sendmsg`` and the kernel (or the NIC) cuts it. A kernel or route
  that refuses it (EINVAL, EIO, EOPNOTSUPP) turns GSO off for this socket; the run is then
  sent one datagram at a time.
- **Never fragmented**: DF is set and the kernel's path MTU cache ignored
  (``IP_PMTUDISC_PROBE``), so a datagram the path cannot carry is lost, as a path MTU probe
  needs; a send larger than the interface MTU fails (EMSGSIZE) and counts as lost.
- **A full send buffer** queues datagrams (up to ``SEND_QUEUE_LIMIT`` bytes, then drops them,
  as a full router would: QUIC treats that as loss) and sends them when writable again.

Errors a peer's ICMP causes (refused, unreachable) say nothing about the other peers: they
are logged at debug and the socket goes on.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import socket
import struct
import sys
from typing import Any, Callable, Iterable

logger = logging.getLogger("connet.quic")

# <linux/udp.h>; Python's socket module does not name them
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
# <linux/in.h>, <linux/in6.h>: set DF, never fragment, ignore the kernel's cached path MTU
IP_MTU_DISCOVER = 10
IPV6_MTU_DISCOVER = 23
PMTUDISC_PROBE = 3
GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS in the kernel
GSO_MAX_BYTES = 65000  # below the 65507-byte UDP payload limit, with room for headers

READ_BATCH = 64  # datagrams (or GRO buffers) per readable event before yielding to the loop
RECEIVE_BUFFER = 65536  # a GRO buffer is at most 64 KiB
SEND_QUEUE_LIMIT = 4 * 1024 * 1024
# errors about one destination (often an ICMP error reported on a later call)
_PEER_ERRORS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN,
     errno.EACCES, errno.EPERM, errno.EADDRNOTAVAIL, errno.EMSGSIZE}
)
_GSO_REFUSED = frozenset({errno.EINVAL, errno.EIO, errno.EOPNOTSUPP, errno.ENOPROTOOPT})

Deliver = Callable[[bytes, int, Any], None]  # buffer, segment size (== len for one datagram), address

# what size_buffers asks for per direction: the default (~208 KiB) overflows when a burst from
# many streams arrives while the loop is busy, and every datagram the kernel drops is a loss
# the congestion controller pays for (qh3's recovery from it is slow, see _qh3.py)
UDP_SOCKET_BUFFER = 4 * 1024 * 1024
# SO_RCVBUFFORCE / SO_SNDBUFFORCE (<asm-generic/socket.h>): like SO_RCVBUF, past the sysctl
# cap, for a process with CAP_NET_ADMIN
_FORCE = {socket.SO_RCVBUF: 33, socket.SO_SNDBUF: 32}
_SYSCTL = {socket.SO_RCVBUF: "net.core.rmem_max", socket.SO_SNDBUF: "net.core.wmem_max"}
_warned_small_buffers = False


def size_buffers(sock: socket.socket, wanted: int = UDP_SOCKET_BUFFER) -> dict[str, int]:
    """Ask for ``wanted`` bytes of receive and send buffer, then read back what the kernel
    granted: it silently caps the request at ``net.core.rmem_max`` / ``wmem_max`` (unless this
    process may force it past them). The first socket of a process that gets less logs one
    warning naming the sysctls and the values to set. Returns ``{sysctl: bytes granted}``."""
    global _warned_small_buffers
    granted: dict[str, int] = {}
    for option, sysctl in _SYSCTL.items():
        got = _set_buffer(sock, option, wanted)
        if got < wanted and sys.platform == "linux":
            got = max(got, _set_buffer(sock, _FORCE[option], wanted, read_back=option))
        granted[sysctl] = got
    short = {name: got for name, got in granted.items() if got < wanted}
    if short and not _warned_small_buffers:
        _warned_small_buffers = True
        logger.warning(
            "UDP socket buffers smaller than asked (%s; asked %d): bursts will be lost and "
            "throughput suffers; raise the limits, e.g. sysctl -w %s",
            ", ".join(f"{name} allows {got}" for name, got in short.items()), wanted,
            " ".join(f"{name}={wanted}" for name in short),
            extra={"event": "udp-buffers", **{name.rsplit(".", 1)[1]: got for name, got in short.items()}},
        )
    return granted


def _set_buffer(sock: socket.socket, option: int, wanted: int, read_back: int | None = None) -> int:
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, wanted)
    except OSError:  # no permission for the FORCE options, or an option the OS lacks
        pass
    got = sock.getsockopt(socket.SOL_SOCKET, read_back or option)
    # Linux doubles what it grants (the other half is its bookkeeping) and reports that
    return got // 2 if sys.platform == "linux" else got


def segments(buffer: bytes, segment: int) -> list[bytes]:
    """The datagrams of a GRO buffer."""
    if segment >= len(buffer):
        return [buffer]
    return [buffer[start:start + segment] for start in range(0, len(buffer), segment)]


class BatchedUdpSocket:
    """Owns a bound, non-blocking UDP socket; see the module docstring."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        *,
        deliver: Deliver,
        batch_done: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._deliver = deliver
        self._batch_done = batch_done
        self._queue: collections.deque[tuple[list[bytes], Any, int]] = collections.deque()  # run, addr, bytes
        self._queued_bytes = 0
        self._writer_armed = False
        self._drained: asyncio.Future[None] | None = None  # close() waits on it
        self._closed = False
        self._buffer = bytearray(RECEIVE_BUFFER)
        self._view = memoryview(self._buffer)
        linux = sys.platform.startswith("linux")
        if linux:
            self._never_fragment()
        self.gso = linux and self._enable(UDP_SEGMENT, None)
        self.gro = linux and self._enable(UDP_GRO, 1)
        self._ancillary_size = socket.CMSG_SPACE(4) if self.gro else 0
        loop.add_reader(sock.fileno(), self._read_ready)

    def _never_fragment(self) -> None:
        """A datagram too large for the path must be lost, not fragmented: that is what
        makes a path MTU probe mean something (RFC 8899), and fragments rarely survive NATs."""
        options = [(socket.IPPROTO_IP, IP_MTU_DISCOVER)]  # also what IPv4-mapped traffic of a dual-stack socket uses
        if self._sock.family == socket.AF_INET6:
            options.append((socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER))
        for level, option in options:
            try:
                self._sock.setsockopt(level, option, PMTUDISC_PROBE)
            except OSError as exc:
                logger.debug("cannot turn fragmentation off (%d/%d): %s", level, option, exc)

    def _enable(self, option: int, value: int | None) -> bool:
        """GSO needs no option set (it is per sendmsg): probe that the kernel knows it."""
        try:
            if value is None:
                self._sock.getsockopt(SOL_UDP, option)
            else:
                self._sock.setsockopt(SOL_UDP, option, value)
        except OSError:
            return False
        return True

    # reading

    def _read_ready(self) -> None:
        sock = self._sock
        view = self._view
        deliver = self._deliver
        try:
            for _ in range(READ_BATCH):
                try:
                    if self.gro:
                        size, ancillary, _flags, addr = sock.recvmsg_into([self._buffer], self._ancillary_size)
                    else:
                        size, addr = sock.recvfrom_into(self._buffer)
                        ancillary = ()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if exc.errno in _PEER_ERRORS:
                        logger.debug("UDP receive error: %s", exc)
                        continue
                    raise
                segment = size
                for level, kind, value in ancillary:
                    if level == SOL_UDP and kind == UDP_GRO:
                        segment = min(struct.unpack("=i", value[:4])[0] or size, size)
                deliver(bytes(view[:size]), segment, addr)
        finally:
            self._batch_done()

    # writing

    def send(self, datagrams: Iterable[bytes], addr: Any) -> None:
        """Send datagrams to one address, GSO runs where the sizes allow."""
        if self._closed:
            return
        run: list[bytes] = []
        run_bytes = 0
        for data in datagrams:
            if run and (
                not self.gso
                or len(data) > len(run[0])
                or len(run[-1]) != len(run[0])  # only the last of a run may be shorter
                or len(run) >= GSO_MAX_SEGMENTS
                or run_bytes + len(data) > GSO_MAX_BYTES
            ):
                self._send_or_queue(run, run_bytes, addr)
                run, run_bytes = [], 0
            run.append(data)
            run_bytes += len(data)
        if run:
            self._send_or_queue(run, run_bytes, addr)

    def _send_or_queue(self, run: list[bytes], size: int, addr: Any) -> None:
        if self._queue:
            self._enqueue(run, size, addr)
            return
        try:
            self._send_now(run, addr)
        except (BlockingIOError, InterruptedError):
            self._enqueue(run, size, addr)

    def _send_now(self, run: list[bytes], addr: Any) -> None:
        """One system call for a run (the kernel gathers its datagrams: no join);
        BlockingIOError is left to the caller."""
        try:
            if len(run) > 1:
                self._sock.sendmsg(run, [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", len(run[0])))], 0, addr)
            else:
                self._sock.sendto(run[0], addr)
        except (BlockingIOError, InterruptedError):
            raise
        except OSError as exc:
            if len(run) > 1 and exc.errno in _GSO_REFUSED:
                logger.debug("UDP GSO refused (%s): sending datagrams one at a time", exc)
                self.gso = False
                for data in run:
                    self._send_or_queue([data], len(data), addr)
            elif exc.errno in _PEER_ERRORS:
                logger.debug("UDP send to %s failed: %s", addr, exc)
            else:
                raise

    def _enqueue(self, run: list[bytes], size: int, addr: Any) -> None:
        if self._queued_bytes + size > SEND_QUEUE_LIMIT:
            logger.debug("UDP send queue full: %d datagrams to %s dropped", len(run), addr)
            return
        self._queue.append((run, addr, size))
        self._queued_bytes += size
        if not self._writer_armed:
            self._writer_armed = True
            self._loop.add_writer(self._sock.fileno(), self._write_ready)

    def _write_ready(self) -> None:
        while self._queue:
            run, addr, size = self._queue[0]
            try:
                self._send_now(run, addr)
            except (BlockingIOError, InterruptedError):
                return
            self._queue.popleft()
            self._queued_bytes -= size
        self._disarm_writer()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _disarm_writer(self) -> None:
        if self._writer_armed:
            self._writer_armed = False
            self._loop.remove_writer(self._sock.fileno())

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    # closing

    async def close(self, *, flush: bool, flush_timeout: float = 1.0) -> None:
        """Stop reading; with ``flush``, first wait (bounded) until queued datagrams left."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._sock.fileno())
        if flush and self._queue:
            self._drained = self._loop.create_future()
            try:
                await asyncio.wait_for(self._drained, flush_timeout)
            except TimeoutError:
                logger.debug("UDP socket closed with %d bytes unsent", self._queued_bytes)
        self._disarm_writer()
        self._queue.clear()
        self._queued_bytes = 0
        self._sock.close()
