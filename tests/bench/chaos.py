"""Chaos: checksummed traffic while every daemon is killed and restarted, and floods come.

    python tests/bench/chaos.py                  # 10 minutes
    python tests/bench/chaos.py --minutes 2 --seed 7

Two deployments on loopback, all real ``connet`` processes:
- split: ``connet control`` + ``connet relay``, a destination and a source that may go
  direct (``any``), and a pair that must use the relay (``relay``);
- combined: ``connet server`` (control + relay) with a pair on ``any``.
Every daemon keeps its ports and store across restarts, as under a service manager.

Workers move traffic through the three sources the whole time: uploads (the service
answers the SHA-256 of what it read) and downloads (the service sends a known payload and
closes). A scheduler picks a fault every ``--every`` seconds (jittered): SIGKILL or SIGTERM
of one daemon and its restart, or a burst of handshake-shaped garbage at the control and
relay ports from 16 loopback addresses (bounded: 2000 datagrams/s for 5 s). Each transfer
ends as:
- ok: every byte arrived and the checksum matches;
- cut and reported: the program saw a reset, a refusal or a timeout (what a fault may do);
- corrupted: the program saw a clean end with wrong or missing bytes. Must be 0.
After each fault the time to recover is how long until a transfer through every affected
source succeeds again. Prints the transfers table and one row per fault.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/

from support.cluster import TOKENS, ServerInfo, relay_config, write_server_config  # noqa: E402
from support.daemons import CONNET, Daemon, Daemons  # noqa: E402
from support.services import _serve  # noqa: E402

PAYLOAD_SIZES = (256 << 10, 1 << 20, 4 << 20)
STALL = 20.0  # seconds without progress before a transfer counts as cut (timeout)


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Tally:
    ok: int = 0
    reported: int = 0
    corrupted: int = 0
    moved: int = 0
    corruptions: list[str] = field(default_factory=list)


@dataclass
class Pair:
    """A destination and a source of one name; the source listens on a fixed port."""

    label: str
    name: str
    route: str
    source_port: int
    deployment: str


class Chaos:
    def __init__(self, work: Path, seed: int) -> None:
        self.work = work
        self.rng = random.Random(seed)
        self.daemons = Daemons(work)
        self.certs = work / "certs"
        subprocess.run([*CONNET, "cert", "--out", str(self.certs), "--host", "localhost", "--host", "127.0.0.1"],
                       check=True, capture_output=True)
        self.ports = {name: free_port(socket.SOCK_DGRAM) for name in ("control", "relay", "server", "server-relay")}
        self.procs: dict[str, Daemon] = {}
        self.starters: dict[str, callable] = {}
        self.tally = {kind: Tally() for kind in ("upload", "download")}
        self.faults: list[tuple[str, float | None]] = []
        self.payloads = {size: os.urandom(size) for size in PAYLOAD_SIZES}
        self.digests = {size: hashlib.sha256(p).hexdigest() for size, p in self.payloads.items()}
        self.pairs = [Pair("split any", "web", "any", free_port(socket.SOCK_STREAM), "control"),
                      Pair("split relay", "relayed", "relay", free_port(socket.SOCK_STREAM), "control"),
                      Pair("server any", "web", "any", free_port(socket.SOCK_STREAM), "server")]

    # ---- the daemons ------------------------------------------------------------------

    def _control_info(self) -> ServerInfo:
        return ServerInfo(self.procs.get("control"), self.ports["control"], self.work / "control.toml", self.certs)

    def _start_control(self) -> Daemon:
        tokens = ", ".join(f'"{t}"' for t in TOKENS)
        config = self.work / "control.toml"
        config.write_text(
            f'[control]\naddr = "127.0.0.1:{self.ports["control"]}"\ncert-file = "{self.certs / "server.pem"}"\n'
            f'key-file = "{self.certs / "server-key.pem"}"\nclient-tokens = [{tokens}]\n'
            f'relay-tokens = ["relay-token"]\nstore-dir = "{self.work / "control-store"}"\n')
        return self.daemons.start("control", ["control", "--config", str(config)])

    def _start_relay(self) -> Daemon:
        config = relay_config(self.work / "relay.toml", self._control_info(), addr=f"127.0.0.1:{self.ports['relay']}",
                              store_dir=self.work / "relay-store")
        return self.daemons.start("relay", ["relay", "--config", str(config)])

    def _start_server(self) -> Daemon:
        config = write_server_config(self.work / "server.toml", self.certs, addr=f"127.0.0.1:{self.ports['server']}",
                                     store_dir=self.work / "server-store")
        text = config.read_text().replace('relay-addr = "127.0.0.1:0"', f'relay-addr = "127.0.0.1:{self.ports["server-relay"]}"')
        config.write_text(text)
        return self.daemons.start("server", ["server", "--config", str(config)])

    def _client_args(self, pair: Pair, token: str) -> list[str]:
        port = self.ports[pair.deployment]
        return ["--token", token, "--server-addr", f"127.0.0.1:{port}", "--server-cas", str(self.certs / "ca.pem"),
                "--direct-addr", "127.0.0.1:0"]

    def _start_destination(self, pair: Pair, service_port: int) -> Daemon:
        return self.daemons.start(f"dst {pair.label}", [*self._client_args(pair, TOKENS[0]), "--dst-name", pair.name,
                                                        "--dst-addr", f"127.0.0.1:{service_port}", "--dst-route", pair.route])

    def _start_source(self, pair: Pair) -> Daemon:
        return self.daemons.start(f"src {pair.label}", [*self._client_args(pair, TOKENS[1]), "--src-name", pair.name,
                                                        "--src-addr", f"127.0.0.1:{pair.source_port}", "--src-route", pair.route])

    def start(self, name: str) -> None:
        self.procs[name] = self.starters[name]()

    def affected(self, name: str) -> list[Pair]:
        if name in ("control", "relay"):
            return [p for p in self.pairs if p.deployment == "control"]
        if name == "server":
            return [p for p in self.pairs if p.deployment == "server"]
        return [p for p in self.pairs if name.endswith(p.label)]

    # ---- traffic ------------------------------------------------------------------------

    async def transfer(self, pair: Pair, kind: str, size: int) -> str:
        """One upload or download; 'ok', 'reported' or 'corrupted'."""
        try:
            async with asyncio.timeout(STALL):
                reader, writer = await asyncio.open_connection("127.0.0.1", pair.source_port)
            try:
                if kind == "upload":
                    writer.write(b"U")
                    payload = self.payloads[size]
                    for offset in range(0, size, 256 << 10):
                        writer.write(payload[offset:offset + (256 << 10)])
                        async with asyncio.timeout(STALL):
                            await writer.drain()
                    writer.write_eof()
                    async with asyncio.timeout(STALL):
                        answer = (await reader.read()).decode(errors="replace")
                    good = answer == self.digests[size]
                else:
                    writer.write(b"D" + size.to_bytes(4, "big"))
                    writer.write_eof()
                    digest, got = hashlib.sha256(), 0
                    while True:
                        async with asyncio.timeout(STALL):
                            data = await reader.read(1 << 20)
                        if not data:
                            break
                        digest.update(data)
                        got += len(data)
                    good = digest.hexdigest() == self.digests[size]
                    answer = f"{got} bytes"
            finally:
                writer.close()
        except (OSError, TimeoutError):
            return "reported"
        if good:
            self.tally[kind].ok += 1
            self.tally[kind].moved += size
            return "ok"
        # a clean end with the wrong bytes: the program could not know it was cut
        self.tally[kind].corrupted += 1
        self.tally[kind].corruptions.append(f"{pair.label} {kind} of {size}: clean end, {answer[:20]!r}")
        return "corrupted"

    async def worker(self, pair: Pair, deadline: float) -> None:
        while time.monotonic() < deadline:
            kind = self.rng.choice(("upload", "download"))
            outcome = await self.transfer(pair, kind, self.rng.choice(PAYLOAD_SIZES))
            if outcome == "reported":
                self.tally[kind].reported += 1
                await asyncio.sleep(0.2)  # pacing after a refusal, so a down tunnel is not spun on

    async def recovered(self, pairs: list[Pair], began: float, limit: float = 60.0) -> float | None:
        for pair in pairs:
            while await self.transfer(pair, "download", PAYLOAD_SIZES[0]) != "ok":
                if time.monotonic() - began > limit:
                    return None
                await asyncio.sleep(0.1)  # retry pacing while the tunnel comes back
        return time.monotonic() - began

    # ---- faults -------------------------------------------------------------------------

    async def flood(self, seconds: float = 5.0, rate: int = 2000) -> None:
        targets = [self.ports[name] for name in ("control", "relay", "server", "server-relay")]
        socks = []
        for i in range(16):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((f"127.0.0.{i + 2}", 0))
            sock.setblocking(False)
            socks.append(sock)
        try:
            end = time.monotonic() + seconds
            sent = 0
            while time.monotonic() < end:
                for _ in range(rate // 50):
                    # a long-header Initial's first bytes (version 1), then random: handshake-shaped
                    datagram = bytes([0xC0 | self.rng.randrange(16)]) + b"\x00\x00\x00\x01" + os.urandom(1195)
                    try:
                        socks[sent % len(socks)].sendto(datagram, ("127.0.0.1", targets[sent % len(targets)]))
                    except BlockingIOError:
                        pass  # the socket buffer is full: the flood is best effort
                    sent += 1
                await asyncio.sleep(0.02)  # the rate: rate/50 datagrams every 20 ms
        finally:
            for sock in socks:
                sock.close()

    async def fault(self) -> None:
        name = self.rng.choice([*self.procs, "flood"])
        began = time.monotonic()
        if name == "flood":
            await self.flood()
            label, pairs = "flood burst (control and relay ports)", self.pairs
        else:
            how = self.rng.choice((signal.SIGKILL, signal.SIGTERM))
            daemon = self.procs[name]
            daemon.proc.send_signal(how)
            try:
                daemon.proc.wait(15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                label = f"{name}: {how.name} ignored for 15 s, killed"
            else:
                label = f"{name}: {how.name}"
            self.start(name)
            pairs = self.affected(name)
            began = time.monotonic()
        took = await self.recovered(pairs, began)
        self.faults.append((label, took))
        print(f"  {time.strftime('%H:%M:%S')} {label}: recovered in "
              + (f"{took:.1f} s" if took is not None else "-- (not within 60 s)"), flush=True)

    # ---- the run ------------------------------------------------------------------------

    async def run(self, minutes: float, every: float) -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                kind = await reader.readexactly(1)
                if kind == b"U":
                    digest = hashlib.sha256()
                    while data := await reader.read(1 << 20):
                        digest.update(data)
                    writer.write(digest.hexdigest().encode())
                else:
                    size = int.from_bytes(await reader.readexactly(4), "big")
                    writer.write(self.payloads[size])
                await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass  # the tunnel was cut: the far side sees it
            finally:
                writer.close()

        async with _serve(serve) as service_port:
            self.starters = {"control": self._start_control, "relay": self._start_relay, "server": self._start_server}
            for pair in self.pairs:
                self.starters[f"dst {pair.label}"] = lambda p=pair: self._start_destination(p, service_port)
                self.starters[f"src {pair.label}"] = lambda p=pair: self._start_source(p)
            for name in self.starters:
                self.start(name)
            ready = await self.recovered(self.pairs, time.monotonic())
            if ready is None:
                raise SystemExit("the tunnels did not come up:\n" + self.daemons.dump()[-3000:])
            deadline = time.monotonic() + minutes * 60
            async with asyncio.TaskGroup() as tg:
                for pair in self.pairs:
                    for _ in range(2):
                        tg.create_task(self.worker(pair, deadline))
                while time.monotonic() + every < deadline:
                    await asyncio.sleep(every * self.rng.uniform(0.5, 1.5))  # the fault schedule
                    await self.fault()

    def table(self) -> str:
        lines = [f"{'transfers':<10} {'ok':>6} {'cut and reported':>17} {'corrupted':>10} {'GiB moved':>10}"]
        for kind, t in self.tally.items():
            lines.append(f"{kind:<10} {t.ok:>6} {t.reported:>17} {t.corrupted:>10} {t.moved / (1 << 30):>10.2f}")
        lines += ["", f"{'fault':<48} time to recover"]
        for label, took in self.faults:
            lines.append(f"{label:<48} {'not within 60 s' if took is None else f'{took:.1f} s'}")
        for t in self.tally.values():
            lines += t.corruptions[:10]
        return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=20.0, help="seconds between faults, on average")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="connet-chaos-") as tmp:
        chaos = Chaos(Path(tmp), args.seed)
        try:
            await chaos.run(args.minutes, args.every)
        finally:
            chaos.daemons.close()
        print()
        print(chaos.table())
    return 1 if any(t.corrupted for t in chaos.tally.values()) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
