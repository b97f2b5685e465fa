"""The NAT lab: real network namespaces, nftables NAT routers and real ``connet`` processes.

Topology (every address is a documentation range and nothing is
routed outside the lab's namespaces — there is no default route anywhere but host -> router):

    [host S] --lan-- [router S] --wan--+                       +--wan-- [router D] --lan-- [host D]
                                       +---- [inet bridge] ----+
                                                  |
                                             [server ns]  connet server: control + relay

* ``PREFIX-inet`` holds the bridge ``br0`` of the "internet" 203.0.113.0/24, and a bridge-family
  nftables counter of every UDP byte between two addresses that are not the server's (the
  clients' public addresses): the bytes that went *directly* between the sites.
* ``PREFIX-srv`` is 203.0.113.10 and runs ``connet server``; an nftables counter on the relay's
  UDP port (both directions) is the proof of what went *through the relay*.
* a site is a router namespace (``wan`` on the bridge, ``lan`` to its host) doing the preset's
  NAT with nftables + conntrack (UDP timeouts 30 s), and a host namespace behind it; the
  ``none`` preset puts the host itself on the bridge with a public address; ``same-lan`` puts
  two hosts behind one ``easy`` router (its LAN is a bridge, counted like the internet's).

Veths are created directly inside their namespaces (``ip link add X netns A type veth peer
name Y netns B``), so interface names only need to be unique per namespace (``wan``, ``lan``,
``eth0``) and nothing ever appears in the root namespace; deleting the namespaces removes
everything. Namespace names carry the full pid (``cnl<pid>x<seq>-...``) so a sweep can tell a
crashed run's leftovers from a live concurrent run's.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Iterable, Sequence

from natlab import portmap_lab
from support.daemons import CONNET, Daemon

PRESETS: tuple[str, ...] = ("none", "easy", "fullcone", "hard")
NETPROBE = Path(__file__).with_name("netprobe.py")

INET_CIDR = "203.0.113.0/24"
SERVER_IP = "203.0.113.10"
CONTROL_PORT = 19190
RELAY_PORT = 19191
CONTROL_TCP_PORT = 443  # control and relay over TLS-over-TCP, for the udp-blocked preset
RELAY_TCP_PORT = 8443
UDP_BLOCKED = "udp-blocked"  # easy NAT whose router drops all UDP both ways (not in the grid's PRESETS)
DIRECT_PORT = 19192
ECHO_PORT = 7000
SOURCE_PORT = 7001
ENDPOINT = "echo"
TOKENS = ("token-dst", "token-src")
CONNTRACK_UDP_TIMEOUT = 30
NS_PATTERN = re.compile(r"^cnl(\d+)x\d+-")

# What the grid requires per (source preset, destination preset); easy x hard and hard x easy
# meet by birthday probing (~98% per attempt, docs/natlab.md), hard x hard has only the relay.
EXPECTED: dict[tuple[str, str], str] = {
    **{("none", d): "direct" for d in PRESETS},
    ("easy", "none"): "direct", ("easy", "easy"): "direct", ("easy", "fullcone"): "direct",
    ("easy", "hard"): "direct",
    **{("fullcone", d): "direct" for d in PRESETS},
    ("hard", "none"): "direct", ("hard", "easy"): "direct", ("hard", "fullcone"): "direct",
    ("hard", "hard"): "relay",
}

_seq = count()
_live: set["Lab"] = set()
_live_lock = threading.Lock()


class LabError(RuntimeError):
    """A lab command failed (namespace, link, nftables): a lab problem, not the product's."""


def sh(*cmd: str, ns: str | None = None, stdin: str | None = None, check: bool = True, timeout: float = 30) -> str:
    """Run a command (inside namespace ``ns``); its stdout. Raises LabError with stderr."""
    argv = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


# ---- prerequisites and stale state -------------------------------------------------------

def missing_prerequisite() -> str | None:
    """Why the lab cannot run on this machine, or None if it can."""
    if sys.platform != "linux":
        return "the NAT lab needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the NAT lab needs root (ip netns, nftables)"
    for tool in ("ip", "nft", "conntrack", "sysctl"):
        if shutil.which(tool) is None:
            return f"the NAT lab needs {tool!r} on PATH (apt: iproute2, nftables, conntrack, procps)"
    probe = f"cnl{os.getpid()}x{next(_seq)}-probe"
    try:
        sh("ip", "netns", "add", probe)
    except LabError as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        sh("nft", "list", "ruleset", ns=probe)
        sh("sysctl", "-w", f"net.netfilter.nf_conntrack_udp_timeout={CONNTRACK_UDP_TIMEOUT}", ns=probe)
    except LabError as exc:
        return f"nftables/conntrack unusable in a namespace: {exc}"
    finally:
        sh("ip", "netns", "del", probe, check=False)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_namespace(ns: str) -> None:
    """Kill whatever still runs in ``ns`` (by pid, only processes inside it), then delete it."""
    pids = sh("ip", "netns", "pids", ns, check=False).split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass  # exited meanwhile
    sh("ip", "netns", "del", ns, check=False)


def sweep_stale() -> list[str]:
    """Delete namespaces left by lab runs whose process is gone (a crashed or killed run)."""
    removed = []
    for line in sh("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        match = NS_PATTERN.match(name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            _delete_namespace(name)
            removed.append(name)
    return removed


@atexit.register
def _close_live_labs() -> None:
    """Last resort when the interpreter exits without the fixture finalizer (e.g. ^C twice)."""
    with _live_lock:
        labs = list(_live)
    for lab in labs:
        lab.close()


# ---- processes inside namespaces ---------------------------------------------------------

class NsProcess(Daemon):
    """A process inside a namespace whose output is read line by line (``Daemon``'s waiting)."""

    def __init__(self, name: str, ns: str, argv: Sequence[str], *, cwd: Path | None = None) -> None:
        # not Daemon.__init__: that one prefixes the connet command; the reading is the same
        self.name = name
        self.ns = ns
        self.args = ["ip", "netns", "exec", ns, *argv]
        self.lines: list[str] = []
        self.times: list[float] = []
        self._cond = threading.Condition()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=cwd, text=True, bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, name=f"log-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # as Daemon._read, plus the arrival time of every line (the benchmark times events)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self.times.append(time.monotonic())
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def first_time(self, pattern: str) -> float | None:
        """When the first line matching ``pattern`` arrived (monotonic), or None."""
        regex = re.compile(pattern)
        with self._cond:
            return next((t for t, line in zip(self.times, self.lines) if regex.search(line)), None)

    def count(self, pattern: str, start: int = 0) -> int:
        regex = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.lines[start:] if regex.search(line))


# ---- the lab -----------------------------------------------------------------------------

@dataclass
class Host:
    ns: str
    addr: str  # its own address (public for ``none``, else on the LAN)


@dataclass
class Site:
    preset: str
    public_ip: str
    router: str | None  # namespace; None for ``none``
    hosts: list[Host] = field(default_factory=list)


@dataclass
class Client:
    role: str  # "source" | "destination"
    host: Host
    daemon: NsProcess
    config: Path


def _nat_ruleset(preset: str) -> str:
    """The router's nftables, exactly the documented presets (docs/natlab.md) (``wan`` is the outside interface)."""
    filt = (
        "table ip filter {\n"
        " chain input {\n  type filter hook input priority 0;\n  iifname \"wan\" ct state new drop\n }\n"
        " chain forward {\n  type filter hook forward priority 0;\n"
        + ("  ct status dnat accept\n" if preset == "fullcone" else "")
        + "  iifname \"wan\" ct state new drop\n }\n}\n"
    )
    if preset == UDP_BLOCKED:  # as easy, and no UDP crosses the router either way
        filt = filt.replace("type filter hook forward priority 0;\n", "type filter hook forward priority 0;\n  meta l4proto udp drop\n")
    if preset in ("easy", "same-lan", UDP_BLOCKED):
        nat = (
            "table ip nat {\n"
            " chain prerouting {\n  type nat hook prerouting priority dstnat;\n }\n"
            " chain postrouting {\n  type nat hook postrouting priority srcnat;\n  oifname \"wan\" masquerade\n }\n}\n"
        )
    elif preset == "hard":
        nat = (
            "table ip nat {\n"
            " chain prerouting {\n  type nat hook prerouting priority dstnat;\n }\n"
            " chain postrouting {\n  type nat hook postrouting priority srcnat;\n"
            "  oifname \"wan\" masquerade fully-random\n }\n}\n"
        )
    elif preset == "fullcone":
        nat = (
            "table ip nat {\n"
            " map fullcone {\n  type inet_service : ipv4_addr . inet_service;\n  flags dynamic,timeout;\n  timeout 300s;\n }\n"
            " chain prerouting {\n  type nat hook prerouting priority dstnat;\n"
            "  iifname \"wan\" meta l4proto udp dnat ip to udp dport map @fullcone\n }\n"
            " chain postrouting {\n  type nat hook postrouting priority srcnat;\n"
            "  oifname \"wan\" meta l4proto udp update @fullcone { udp sport timeout 300s : ip saddr . udp sport }\n"
            "  oifname \"wan\" masquerade\n }\n}\n"
        )
    else:
        raise ValueError(f"unknown NAT preset {preset!r}")
    return nat + filt


def _p2p_counter(exclude: str | None, cidr: str | None = None) -> str:
    """A bridge-family counter of UDP bytes between two clients (not involving the server)."""
    match = f"ip saddr != {exclude} ip daddr != {exclude}" if exclude else f"ip saddr {cidr} ip daddr {cidr}"
    return (
        "table bridge natlab {\n counter p2p {}\n chain forward {\n  type filter hook forward priority 0;\n"
        f"  {match} meta l4proto udp counter name p2p\n }}\n}}\n"
    )


RELAY_COUNTERS = (
    "table inet natlab {\n counter relay_in {}\n counter relay_out {}\n"
    f" chain input {{\n  type filter hook input priority 0;\n  udp dport {RELAY_PORT} counter name relay_in\n"
    f"  tcp dport {RELAY_TCP_PORT} counter name relay_in\n }}\n"
    f" chain output {{\n  type filter hook output priority 0;\n  udp sport {RELAY_PORT} counter name relay_out\n"
    f"  tcp sport {RELAY_TCP_PORT} counter name relay_out\n }}\n}}\n"
)


def _counter_bytes(ns: str, family: str, table: str, name: str) -> int:
    data = json.loads(sh("nft", "-j", "list", "counter", family, table, name, ns=ns))
    for item in data["nftables"]:
        if "counter" in item:
            return int(item["counter"]["bytes"])
    raise LabError(f"no counter {family} {table} {name} in {ns}")


@dataclass(frozen=True)
class Counters:
    relay: int  # bytes to + from the relay's UDP port, seen in the server namespace
    p2p: int  # UDP bytes between the clients, seen on the internet bridge and same-lan LAN

    def __sub__(self, other: "Counters") -> "Counters":
        return Counters(self.relay - other.relay, self.p2p - other.p2p)


class Lab:
    """One test's namespaces and processes; ``close`` removes all of it (idempotent)."""

    def __init__(self, workdir: Path, certs: Path, *, log_level: str = "debug") -> None:
        self.prefix = f"cnl{os.getpid()}x{next(_seq)}"
        self.workdir = workdir
        self.certs = certs
        self.log_level = log_level
        self.namespaces: list[str] = []
        self.processes: list[NsProcess] = []
        self.sites: list[Site] = []
        self.server: NsProcess | None = None
        self._next_public = 20
        self._closed = False
        with _live_lock:
            _live.add(self)
        try:
            self._build_core()
        except BaseException:
            self.close()
            raise

    # -- topology

    def _ns(self, role: str) -> str:
        ns = f"{self.prefix}-{role}"
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        return ns

    def _plug_into_internet(self, ns: str, ifname: str, ip: str) -> None:
        port = f"p{len(self.namespaces)}"
        sh("ip", "link", "add", ifname, "netns", ns, "type", "veth", "peer", "name", port, "netns", self.inet)
        sh("ip", "link", "set", port, "master", "br0", "up", ns=self.inet)
        sh("ip", "addr", "add", f"{ip}/24", "dev", ifname, ns=ns)
        sh("ip", "link", "set", ifname, "up", ns=ns)

    def _build_core(self) -> None:
        self.inet = self._ns("inet")
        sh("ip", "link", "add", "br0", "type", "bridge", ns=self.inet)
        sh("ip", "link", "set", "br0", "up", ns=self.inet)
        sh("nft", "-f", "-", ns=self.inet, stdin=_p2p_counter(SERVER_IP))
        self.srv = self._ns("srv")
        self._plug_into_internet(self.srv, "eth0", SERVER_IP)
        sh("nft", "-f", "-", ns=self.srv, stdin=RELAY_COUNTERS)

    def _public_ip(self) -> str:
        ip = f"203.0.113.{self._next_public}"
        self._next_public += 1
        return ip

    def add_site(self, preset: str, lan: str, *, hosts: int = 1) -> Site:
        """A client site of ``preset``; ``lan`` is the /24 prefix like "198.51.100"."""
        index = len(self.sites)
        public = self._public_ip()
        if preset == "none":
            ns = self._ns(f"h{index}")
            self._plug_into_internet(ns, "eth0", public)
            site = Site(preset, public, None, [Host(ns, public)])
            self.sites.append(site)
            return site
        router = self._ns(f"r{index}")
        self._plug_into_internet(router, "wan", public)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1",
           f"net.netfilter.nf_conntrack_udp_timeout={CONNTRACK_UDP_TIMEOUT}",
           f"net.netfilter.nf_conntrack_udp_timeout_stream={CONNTRACK_UDP_TIMEOUT}", ns=router)
        mapping = portmap_lab.is_mapping(preset)  # a router with miniupnpd (natlab/portmap_lab.py)
        sh("nft", "-f", "-", ns=router, stdin=portmap_lab.ruleset(preset, lan) if mapping else _nat_ruleset(preset))
        if hosts > 1:
            # the LAN is a bridge in the router; a counter there sees host-to-host traffic
            sh("ip", "link", "add", "lan", "type", "bridge", ns=router)
            sh("nft", "-f", "-", ns=router, stdin=_p2p_counter(None, f"{lan}.0/24"))
        site = Site(preset, public, router)
        for h in range(hosts):
            ns = self._ns(f"h{index}{h}")
            addr = f"{lan}.{h + 2}"
            inside = "lan" if hosts == 1 else f"lan{h}"
            sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", inside, "netns", router)
            if hosts > 1:
                sh("ip", "link", "set", inside, "master", "lan", ns=router)
            sh("ip", "link", "set", inside, "up", ns=router)
            sh("ip", "addr", "add", f"{addr}/24", "dev", "eth0", ns=ns)
            sh("ip", "link", "set", "eth0", "up", ns=ns)
            sh("ip", "route", "add", "default", "via", f"{lan}.1", ns=ns)
            site.hosts.append(Host(ns, addr))
        sh("ip", "addr", "add", f"{lan}.1/24", "dev", "lan", ns=router)
        sh("ip", "link", "set", "lan", "up", ns=router)
        self.sites.append(site)
        if mapping:
            portmap_lab.start_router_daemon(self, site, lan)
        return site

    # -- processes

    def spawn(self, name: str, ns: str, argv: Sequence[str]) -> NsProcess:
        process = NsProcess(name, ns, argv, cwd=self.workdir)
        self.processes.append(process)
        return process

    def start_server(self) -> NsProcess:
        config = self.workdir / "server.toml"
        tokens = ", ".join(f'"{t}"' for t in TOKENS)
        config.write_text(
            f'log-level = "{self.log_level}"\n'
            "[server]\n"
            f'addr = "{SERVER_IP}:{CONTROL_PORT}"\n'
            f'relay-addr = "{SERVER_IP}:{RELAY_PORT}"\n'
            f'tcp-addr = "{SERVER_IP}:{CONTROL_TCP_PORT}"\n'
            f'relay-tcp-addr = "{SERVER_IP}:{RELAY_TCP_PORT}"\n'
            f'relay-hostname = "{SERVER_IP}"\n'
            f'cert-file = "{self.certs / "server.pem"}"\n'
            f'key-file = "{self.certs / "server-key.pem"}"\n'
            f"tokens = [{tokens}]\n"
        )
        self.server = self.spawn("server", self.srv, [*CONNET, "server", "--config", str(config)])
        self.server.listening("control", "udp")
        self.server.listening("relay", "udp")
        return self.server

    def start_echo(self, host: Host) -> NsProcess:
        echo = self.spawn(f"echo@{host.ns}", host.ns, [sys.executable, str(NETPROBE), "echo", "--port", str(ECHO_PORT)])
        echo.listening("echo", "tcp")
        return echo

    def start_client(self, role: str, host: Host, route: str = "any", extra: str = "") -> Client:
        """A destination (in front of the echo service) or a source (on 127.0.0.1:SOURCE_PORT);
        ``extra``: more [client] lines (TOML)."""
        token = TOKENS[0] if role == "destination" else TOKENS[1]
        table = "destinations" if role == "destination" else "sources"
        addr = f"127.0.0.1:{ECHO_PORT}" if role == "destination" else f"127.0.0.1:{SOURCE_PORT}"
        config = self.workdir / f"{role}.toml"
        config.write_text(
            f'log-level = "{self.log_level}"\n'
            "[client]\n"
            f'token = "{token}"\n'
            f'server-addr = "{SERVER_IP}:{CONTROL_PORT}"\n'
            f'server-cas = "{self.certs / "ca.pem"}"\n'
            f'direct-addr = "0.0.0.0:{DIRECT_PORT}"\n'
            + extra +
            f"[client.{table}.{ENDPOINT}]\n"
            f'addr = "{addr}"\n'
            f'route = "{route}"\n'
        )
        daemon = self.spawn(role, host.ns, [*CONNET, "--config", str(config)])
        return Client(role, host, daemon, config)

    # -- traffic and evidence

    def counters(self) -> Counters:
        relay = _counter_bytes(self.srv, "inet", "natlab", "relay_in") + _counter_bytes(self.srv, "inet", "natlab", "relay_out")
        p2p = _counter_bytes(self.inet, "bridge", "natlab", "p2p")
        for site in self.sites:
            if site.router is not None and len(site.hosts) > 1:
                p2p += _counter_bytes(site.router, "bridge", "natlab", "p2p")
        return Counters(relay, p2p)

    def _netprobe(self, host: Host, args: Iterable[str], timeout: float) -> dict:
        out = sh(sys.executable, str(NETPROBE), *args, ns=host.ns, timeout=timeout)
        return json.loads(out.strip().splitlines()[-1])

    def send(self, host: Host, nbytes: int, timeout: float = 120.0) -> dict:
        """One connection to the source port from inside ``host``: N random bytes, echo checked."""
        return self._netprobe(host, ["send", "--port", str(SOURCE_PORT), "--bytes", str(nbytes),
                                     "--timeout", str(timeout)], timeout + 15)

    def probe(self, host: Host, deadline: float = 15.0) -> dict:
        """Small exchanges until one works (the first ones may be refused while no path is up)."""
        return self._netprobe(host, ["probe", "--port", str(SOURCE_PORT), "--deadline", str(deadline)], deadline + 15)

    def add_loss(self, router: str, percent: int) -> None:
        """Drop ``percent``% of what the router forwards (both directions), counted in ``loss``."""
        sh("nft", "add", "counter", "ip", "filter", "loss", ns=router)
        sh("nft", "insert", "rule", "ip", "filter", "forward", "numgen", "random", "mod", "100", "<",
           str(percent), "counter", "name", "loss", "drop", ns=router)

    def lost_packets(self, router: str) -> int:
        data = json.loads(sh("nft", "-j", "list", "counter", "ip", "filter", "loss", ns=router))
        return next(int(i["counter"]["packets"]) for i in data["nftables"] if "counter" in i)

    def flush_conntrack(self, router: str) -> None:
        sh("conntrack", "-F", ns=router)

    def evidence(self) -> str:
        """Everything needed to diagnose a cell: logs, conntrack tables, nftables with counters."""
        parts = []
        for process in self.processes:
            parts.append(f"--- log {process.name} ({process.ns}) exit={process.proc.poll()} ---\n{process.log()}")
        routers = [site.router for site in self.sites if site.router is not None]
        for ns in (self.inet, self.srv, *routers):
            ruleset = sh("nft", "list", "ruleset", ns=ns, check=False)
            parts.append(f"--- nft list ruleset ({ns}) ---\n{ruleset}")
        for ns in routers:
            table = sh("conntrack", "-L", ns=ns, check=False)
            parts.append(f"--- conntrack -L ({ns}) ---\n{table}")
        return "\n".join(parts)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for process in self.processes:
            try:
                process.kill()
            except OSError as exc:  # already reaped: nothing left to stop
                sys.stderr.write(f"natlab: cannot kill {process.name}: {exc}\n")
        for ns in reversed(self.namespaces):
            _delete_namespace(ns)
        with _live_lock:
            _live.discard(self)


# ---- a pair of clients, the unit of most tests -------------------------------------------

@dataclass
class Pair:
    lab: Lab
    source: Client
    destination: Client
    started: float  # monotonic time both clients were launched

    @property
    def src_host(self) -> Host:
        return self.source.host

    def wait_direct(self, timeout: float = 20.0) -> float:
        """Seconds from launch until the source logs its direct path to the destination."""
        self.source.daemon.wait_for(r"peer \S+ connected direct via", timeout)
        return time.monotonic() - self.started

    def wait_relay(self, timeout: float = 20.0) -> None:
        for client in (self.source, self.destination):
            client.daemon.wait_for(r"relay \S+ connected", timeout)


def build_pair(lab: Lab, src_preset: str, dst_preset: str, *, src_route: str = "any",
               dst_route: str = "any") -> Pair:
    """Server, two sites (or one ``same-lan`` router with two hosts), echo, both clients."""
    lab.start_server()
    if src_preset == "same-lan" or dst_preset == "same-lan":
        site = lab.add_site("same-lan", "198.51.100", hosts=2)
        src_host, dst_host = site.hosts
    else:
        src_host = lab.add_site(src_preset, "198.51.100").hosts[0]
        dst_host = lab.add_site(dst_preset, "192.0.2").hosts[0]
    lab.start_echo(dst_host)
    started = time.monotonic()
    destination = lab.start_client("destination", dst_host, dst_route)
    source = lab.start_client("source", src_host, src_route)
    source.daemon.listening("source", "tcp")
    return Pair(lab, source, destination, started)
