"""iperf3 through a connet tunnel, through OpenSSH's ``ssh -L``, and straight: one run.

    python tests/bench/iperf3_tunnels.py                 # 3 rounds of 10 s each
    python tests/bench/iperf3_tunnels.py --seconds 5 --rounds 2 --routes direct,relay

A real program through each tunnel, the way a user would measure it: ``iperf3 -c`` to an
``iperf3 -s`` on loopback, (1) straight, (2) through ``ssh -N -L`` to an sshd this script
starts on loopback (OpenSSH from the distribution, its default cipher, a throwaway key), and
(3) through connet (``connet server`` + destination + source on the default transport).
The three take turns each round. Besides Mbit/s, the CPU-seconds per GiB of the tunnel's
processes on both sides (ssh + every sshd process; the source + destination clients, plus
the relay for a relayed tunnel), read from /proc around each run: the 2 shared cores make
throughput a measure of the machine, CPU per byte a measure of the tunnel. Needs ``iperf3``
and ``sshd``/``ssh`` (Debian: iperf3, openssh-server, openssh-client). Nothing leaves
127.0.0.1. Also run as the ``iperf3`` section of ``tests/bench/run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/bench
from bench_support import Cluster, cpu_seconds  # noqa: E402

GiB = 1 << 30


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not come up on 127.0.0.1:{port} (exit {proc.poll()})")
        time.sleep(0.05)  # polling a port another program opens: there is no event to wait on


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (sshd forks a process per session)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        for member in descendants(pid):
            with contextlib.suppress(OSError):
                total += cpu_seconds(member)
    return total


@contextlib.contextmanager
def iperf3_server() -> Iterator[int]:
    port = free_tcp_port()
    proc = subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc, "iperf3 -s")
        yield port
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def ssh_tunnel(target_port: int) -> Iterator[tuple[int, list[int]]]:
    """sshd on loopback and ``ssh -N -L`` to ``target_port``: (local port, [ssh pid, sshd pid])."""
    with tempfile.TemporaryDirectory(prefix="connet-bench-ssh-") as tmp:
        work = Path(tmp)
        for name in ("host", "user"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / name)], check=True)
        (work / "authorized_keys").write_text((work / "user.pub").read_text())
        sshd_port, local_port = free_tcp_port(), free_tcp_port()
        (work / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nPort {sshd_port}\nHostKey {work / 'host'}\n"
            f"AuthorizedKeysFile {work / 'authorized_keys'}\nPidFile none\nStrictModes no\nUsePAM no\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            "AllowTcpForwarding yes\n")
        Path("/run/sshd").mkdir(exist_ok=True)  # its privilege separation directory
        sshd = subprocess.Popen([shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(work / "sshd_config")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ssh = None
        try:
            wait_port(sshd_port, sshd, "sshd")
            ssh = subprocess.Popen(
                ["ssh", "-N", "-i", str(work / "user"), "-p", str(sshd_port), "-o", "BatchMode=yes",
                 "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={os.devnull}",
                 "-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:{local_port}:127.0.0.1:{target_port}",
                 f"{os.environ.get('USER', 'root')}@127.0.0.1"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(local_port, ssh, "ssh -L")
            yield local_port, [ssh.pid, sshd.pid]
        finally:
            for proc in (ssh, sshd):
                if proc is not None:
                    proc.kill()
                    proc.wait()


def iperf3_client(port: int, seconds: float) -> tuple[float, int]:
    """(Mbit/s the receiver saw, bytes it received) of one ``iperf3 -c`` run."""
    done = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"],
                          capture_output=True, text=True, timeout=seconds + 60)
    result = json.loads(done.stdout)
    if "error" in result:
        raise SystemExit(f"iperf3 through 127.0.0.1:{port}: {result['error']}")
    received = result["end"]["sum_received"]
    return received["bits_per_second"] / 1e6, int(received["bytes"])


def measure(port: int, pids: list[int], seconds: float) -> tuple[float, float | None]:
    """(Mbit/s, CPU-s/GiB of ``pids`` and their children, None without pids)."""
    before = tree_cpu(pids)
    mbits, moved = iperf3_client(port, seconds)
    return mbits, ((tree_cpu(pids) - before) / (moved / GiB) if pids else None)


async def bench_iperf3(report, seconds: float = 10.0, rounds: int = 3, routes: tuple[str, ...] = ("direct",)) -> None:
    """Rows for ``tests/bench/run.py``'s report (``report.add(name, unit, value)``)."""
    with iperf3_server() as target, ssh_tunnel(target) as (ssh_port, ssh_pids), contextlib.ExitStack() as stack:
        clusters = {}
        for route in routes:
            cluster = stack.enter_context(Cluster(transport="auto", route=route, target_port=target))
            await cluster.ready()
            clusters[route] = cluster
        transport = clusters[routes[0]].transport_in_use()
        # (name, port, the tunnel's processes, what they are)
        kinds = [("straight", target, [], ""), ("ssh -L", ssh_port, ssh_pids, "ssh + sshd")] + [
            (f"connet {transport} {route}", c.source_port, [p.pid for p in c.path_processes().values()],
             " + ".join(c.path_processes())) for route, c in clusters.items()]
        for round_ in range(rounds):
            per_cpu_second = {}
            for name, port, pids, processes in kinds[round_ % len(kinds):] + kinds[:round_ % len(kinds)]:
                mbits, cpu = await asyncio.to_thread(measure, port, pids, seconds)
                report.add(f"iperf3 {name}", "Mbit/s", mbits)
                if cpu is not None:
                    report.add(f"cpu s/GiB: iperf3 {name}: {processes}", "s/GiB", cpu)
                    per_cpu_second[name] = 1 / cpu
            for route in routes:
                report.add(f"iperf3 bytes per CPU-second: connet {transport} {route} / ssh -L (per round)", "x",
                           per_cpu_second[f"connet {transport} {route}"] / per_cpu_second["ssh -L"])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--routes", default="direct")
    args = parser.parse_args()
    from run import Report  # the same table as the full benchmark

    report = Report()
    await bench_iperf3(report, args.seconds, args.rounds, tuple(args.routes.split(",")))
    report.print()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
