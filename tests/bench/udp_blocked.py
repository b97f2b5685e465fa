"""The relay over TCP beside the relay over UDP: what a client whose UDP is blocked pays.

    python tests/bench/udp_blocked.py [--transport qh3] [--bytes 67108864] [--loss 0 1]

For each loss rate (``--loss``, percent, dropped by nftables on the relay's UDP and TCP ports
in both directions, in a network namespace of its own: this kernel has no netem) and each row,
runs ``connet server`` (control + relay) and two clients on loopback, route ``relay``:

- ``udp``: both clients reach the relay over UDP (QUIC);
- ``tcp``: the source has ``udp = "never"``: its QUIC runs inside TLS-over-TCP to control and
  the relay (the destination stays on UDP);

and prints one table: upload throughput through the tunnel (MB/s), the round trip of a
100-byte echo on a kept-open tunneled connection (p50, p99 in ms), and the CPU seconds per
GiB moved of the source, the server and the destination. Loss on the TCP leg is repaired by
TCP below QUIC (head-of-line blocking: every stream waits for the retransmission) while QUIC's
own congestion controller also backs off: that is the "double congestion control" cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_support import cpu_seconds, echo_latency, sink_server, upload  # noqa: E402
from support.daemons import CONNET, Daemons  # noqa: E402

GIB = 1 << 30
TOKENS = ("token-dst", "token-src")


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def echo_service() -> int:
    """A blocking echo server in threads (cheap: the measured processes are connet's)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                return  # the prober hung up first

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


def add_loss(percent: int, relay_udp: int, relay_tcp: int) -> None:
    """Drop ``percent``% of the relay's packets both ways (UDP and TCP ports alike)."""
    if percent <= 0:
        return
    rule = f"numgen random mod 100 < {percent} drop"
    ports = f"{{ {relay_udp}, {relay_tcp} }}"
    ruleset = (
        "table inet benchloss {\n chain output {\n  type filter hook output priority 0;\n"
        f"  udp dport {ports} {rule}\n  udp sport {ports} {rule}\n"
        f"  tcp dport {ports} {rule}\n  tcp sport {ports} {rule}\n }}\n}}\n"
    )
    subprocess.run(["nft", "-f", "-"], input=ruleset, text=True, check=True)


async def row(transport: str, carrier: str, total: int, loss: int, requests: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="connet-bench-tcp-"))
    daemons = Daemons(work)
    try:
        certs = work / "certs"
        subprocess.run([*CONNET, "cert", "--out", str(certs), "--host", "127.0.0.1"], check=True, capture_output=True)
        relay_udp, relay_tcp = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
        (work / "server.toml").write_text(
            f'transport = "{transport}"\n[server]\naddr = "127.0.0.1:0"\ntcp-addr = "127.0.0.1:0"\n'
            f'relay-addr = "127.0.0.1:{relay_udp}"\nrelay-tcp-addr = "127.0.0.1:{relay_tcp}"\n'
            f'relay-hostname = "127.0.0.1"\ncert-file = "{certs / "server.pem"}"\n'
            f'key-file = "{certs / "server-key.pem"}"\ntokens = ["{TOKENS[0]}", "{TOKENS[1]}"]\n'
        )
        server = daemons.start("server", ["server", "--config", str(work / "server.toml"), "--log-level", "info"])
        _, control_udp = server.listening("control", "udp")
        _, control_tcp = server.listening("control", "tcp")
        add_loss(loss, relay_udp, relay_tcp)
        echo_port = echo_service()
        async with sink_server() as sink:
            common = (f'transport = "{transport}"\nlog-level = "info"\n[client]\n'
                      f'server-addr = "127.0.0.1:{control_udp}"\nserver-cas = "{certs / "ca.pem"}"\n'
                      f'server-tcp-addr = "127.0.0.1:{control_tcp}"\ndirect-addr = "127.0.0.1:0"\n')
            (work / "dst.toml").write_text(
                common + f'token = "{TOKENS[0]}"\n'
                f'[client.destinations.sink]\naddr = "127.0.0.1:{sink.port}"\nroute = "relay"\n'
                f'[client.destinations.echo]\naddr = "127.0.0.1:{echo_port}"\nroute = "relay"\n'
            )
            sink_src, echo_src = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
            (work / "src.toml").write_text(
                common + f'token = "{TOKENS[1]}"\nudp = "{"never" if carrier == "tcp" else "auto"}"\n'
                f'[client.sources.sink]\naddr = "127.0.0.1:{sink_src}"\nroute = "relay"\n'
                f'[client.sources.echo]\naddr = "127.0.0.1:{echo_src}"\nroute = "relay"\n'
            )
            dst = daemons.start("dst", ["--config", str(work / "dst.toml")])
            src = daemons.start("src", ["--config", str(work / "src.toml")])
            for name in ("sink", "echo"):
                src.wait_for(rf"relay \S+ connected", 30)
            await wait_echo(echo_src)
            procs = {"source": src.proc.pid, "server": server.proc.pid, "destination": dst.proc.pid}
            cpu_before = {name: cpu_seconds(pid) for name, pid in procs.items()}
            started = time.perf_counter()
            counted = await upload(sink_src, total)
            elapsed = time.perf_counter() - started
            cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in procs.items()}
            if counted != total:
                raise AssertionError(f"the sink counted {counted} of {total} bytes")
            p50, p99 = await echo_latency(echo_src, requests)
        return {"carrier": carrier, "loss": loss, "mbps": total / elapsed / 1e6, "p50": p50 * 1e3, "p99": p99 * 1e3,
                **{f"cpu_{name}": seconds / (total / GIB) for name, seconds in cpu.items()}}
    finally:
        daemons.close()
        shutil.rmtree(work, ignore_errors=True)


async def wait_echo(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"x")
            got = await asyncio.wait_for(reader.read(1), 5)
            writer.close()
            if got == b"x":
                return
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("no tunnel to the echo service")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transport", default="qh3")
    parser.add_argument("--bytes", type=int, default=64 << 20)
    parser.add_argument("--loss", type=int, nargs="*", default=[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.inner and any(args.loss):
        # a network namespace of our own: the loss rules touch nobody else's loopback
        os.execvp("unshare", ["unshare", "--net", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\"",
                              sys.executable, *sys.argv, "--inner"])
    results = []
    for loss in args.loss:
        for carrier in ("udp", "tcp"):
            if loss:
                subprocess.run(["nft", "delete", "table", "inet", "benchloss"], capture_output=True)
            results.append(asyncio.run(row(args.transport, carrier, args.bytes, loss, args.requests)))
    print(f"\nrelay over UDP vs over TCP (the source's legs), transport {args.transport}, "
          f"{args.bytes >> 20} MiB upload, echo {args.requests} x 100 B")
    print(f"{'loss':>5} {'source legs':>12} {'MB/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'CPU-s/GiB src':>14} {'server':>8} {'dst':>8}")
    for r in results:
        print(f"{r['loss']:>4}% {r['carrier']:>12} {r['mbps']:>8.1f} {r['p50']:>8.2f} {r['p99']:>8.2f} "
              f"{r['cpu_source']:>14.1f} {r['cpu_server']:>8.1f} {r['cpu_destination']:>8.1f}")


if __name__ == "__main__":
    main()
