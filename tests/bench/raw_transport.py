"""The raw transport ceiling: plugins/connet_quic with no proxy, in two processes.

    python raw_transport.py --transport qh3 --bytes 134217728 --streams 8

runs a receiver process (``--receiver``) that drains every stream this process opens, and
sends from this process over ``--streams`` streams in chunks of ``connet_core.forward.CHUNK``
(what connet reads at once), with the same TransportOptions and library windows a connet
client uses. Prints one JSON line: MB/s and CPU seconds per GiB of each side.

``--sender-role client`` (the default): the receiver listens and the sender dials, as a
source sends on a connection it dialed. ``--sender-role server``: the receiver dials the
sender, as a source sends on a connection its peer dialed. The two differ where the library
searches the path MTU only as a client (qh3 2.1.0: a server sends 1200-byte datagrams).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_support import CHUNK, cpu_seconds  # noqa: E402

import connet_quic  # noqa: E402
from connet_core.certs import make_identity  # noqa: E402
from connet_core.errors import ConnectionLost  # noqa: E402
from connet_core.model import HostPort  # noqa: E402
from connet_core.transport import TransportOptions, Trust  # noqa: E402

ALPN = "connet-bench/1"


async def receiver(transport_name: str, der_path: Path, options: TransportOptions, dial_port: int | None) -> None:
    """Listens (and writes its certificate to ``der_path``), or dials ``dial_port`` (pinning
    the certificate in ``der_path``); then drains every stream the sender opens."""
    transport = connet_quic.connet_transport(transport_name)
    if dial_port is None:
        identity, der, _ = make_identity("bench-receiver")
        der_path.write_bytes(der)
        endpoint = await transport.bind(HostPort("127.0.0.1", 0), identity=identity, alpns=[ALPN], options=options)
        print("listening", endpoint.local_address.port, flush=True)
        connection = await endpoint.accept()
    else:
        endpoint = await transport.bind(HostPort("127.0.0.1", 0), identity=None, alpns=[], options=options)
        connection = await endpoint.dial(HostPort("127.0.0.1", dial_port), alpn=ALPN,
                                         trust=Trust(pinned_der=der_path.read_bytes()))

    async def drain(stream) -> None:
        count = 0
        while data := await stream.read(CHUNK):
            count += len(data)
        await stream.write(count.to_bytes(8, "big"))
        await stream.write_eof()

    async with asyncio.TaskGroup() as tg:
        try:
            while True:
                stream = await connection.accept_stream()
                tg.create_task(drain(stream))
        except ConnectionLost:
            return  # the sender closed: done (it also kills this process)


async def sender(transport_name: str, total: int, streams: int, options: TransportOptions, role: str) -> dict:
    transport = connet_quic.connet_transport(transport_name)
    with tempfile.TemporaryDirectory() as tmp:
        der_path = Path(tmp) / "listener.der"
        command = [sys.executable, __file__, "--receiver", "--transport", transport_name, "--der", str(der_path),
                   "--max-datagram-size", str(options.max_datagram_size),
                   "--probe-datagram-size", str(options.probe_datagram_size)]
        if role == "server":
            identity, der, _ = make_identity("bench-sender")
            der_path.write_bytes(der)
            endpoint = await transport.bind(HostPort("127.0.0.1", 0), identity=identity, alpns=[ALPN], options=options)
            proc = subprocess.Popen([*command, "--dial", str(endpoint.local_address.port)])
        else:
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            if role == "server":
                connection = await asyncio.wait_for(endpoint.accept(), 30)
            else:
                assert proc.stdout is not None
                port = int(proc.stdout.readline().split()[1])
                endpoint = await transport.bind(HostPort("127.0.0.1", 0), identity=None, alpns=[], options=options)
                connection = await endpoint.dial(
                    HostPort("127.0.0.1", port), alpn=ALPN, trust=Trust(pinned_der=der_path.read_bytes())
                )
            payload = memoryview(os.urandom(CHUNK))
            each = total // streams

            async def send_one() -> int:
                stream = await connection.open_stream()
                left = each
                while left > 0:
                    n = min(left, CHUNK)
                    await stream.write(payload[:n])
                    left -= n
                await stream.write_eof()
                reply = b""
                while chunk := await stream.read(8):
                    reply += chunk
                return int.from_bytes(reply, "big")

            me = os.getpid()
            cpu_before = (cpu_seconds(me), cpu_seconds(proc.pid))
            started = time.perf_counter()
            counts = await asyncio.gather(*(send_one() for _ in range(streams)))
            elapsed = time.perf_counter() - started
            cpu_after = (cpu_seconds(me), cpu_seconds(proc.pid))
            wire = connection.stats().bytes_sent
            assert counts == [each] * streams, f"receiver counted {counts}"
            connection.close()
            await endpoint.close()
            gib = each * streams / 2**30
            return {
                "mbps": each * streams / elapsed / 1e6,
                "sender_cpu_per_gib": (cpu_after[0] - cpu_before[0]) / gib,
                "receiver_cpu_per_gib": (cpu_after[1] - cpu_before[1]) / gib,
                # UDP payload bytes sent per payload byte: headers, ACKs and retransmissions
                "wire_per_payload": wire / (each * streams),
            }
        finally:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", default="aioquic")
    parser.add_argument("--bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--max-datagram-size", type=int, default=TransportOptions().max_datagram_size)
    parser.add_argument("--probe-datagram-size", type=int, default=TransportOptions().probe_datagram_size,
                        help="path MTU probe size (0: no probe, datagrams stay at --max-datagram-size)")
    parser.add_argument("--sender-role", choices=["client", "server"], default="client",
                        help="whether the sender dialed the connection (client) or the receiver did (server)")
    parser.add_argument("--receiver", action="store_true")
    parser.add_argument("--der", type=Path)
    parser.add_argument("--dial", type=int, default=None, help="receiver: dial this port instead of listening")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    options = TransportOptions(max_datagram_size=args.max_datagram_size, probe_datagram_size=args.probe_datagram_size)
    if args.receiver:
        asyncio.run(receiver(args.transport, args.der, options, args.dial))
    else:
        print(json.dumps(asyncio.run(sender(args.transport, args.bytes, args.streams, options, args.sender_role))))


if __name__ == "__main__":
    main()
