"""QUIC over TLS-over-TCP for clients whose UDP is blocked (docs/udp-blocked.md): real
``connet server`` and clients on loopback, per QUIC library. Only the blocked client's legs
move to TCP; its peer stays on UDP; the bytes arrive intact (checksums). The NAT lab
(tests/natlab, preset ``udp-blocked``) shows the same behind a router that drops all UDP."""

from __future__ import annotations

import os
import socket

from support.cluster import TOKENS, start_destination
from support.daemons import Daemons
from support.services import echo_server, exchange, sha256, wait_tunnel

from e2e.test_status import LOCAL, check_schema, fetch_json, status_url


def _server(daemons: Daemons, certs) -> tuple:
    config = daemons.workdir / "server.toml"
    config.write_text(
        "[server]\n"
        'addr = "127.0.0.1:0"\n'
        'tcp-addr = "127.0.0.1:0"\n'
        'relay-addr = "127.0.0.1:0"\n'
        'relay-tcp-addr = "127.0.0.1:0"\n'
        'relay-hostname = "127.0.0.1"\n'
        f'status-addr = "{LOCAL}"\n'
        f'cert-file = "{certs / "server.pem"}"\n'
        f'key-file = "{certs / "server-key.pem"}"\n'
        f'tokens = ["{TOKENS[0]}", "{TOKENS[1]}"]\n'
    )
    daemon = daemons.start("server", ["server", "--config", str(config), "--log-level", "debug"])
    _, udp_port = daemon.listening("control", "udp")
    _, tcp_port = daemon.listening("control", "tcp")
    daemon.listening("relay", "tcp")
    return daemon, udp_port, tcp_port


def _unused_udp_port() -> int:
    """A UDP port nothing listens on (bound, then released): dials to it fail as blocked UDP does."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _source(daemons: Daemons, certs, *, server_udp: int, server_tcp: int, udp: str):
    args = ["--token", TOKENS[1], "--server-addr", f"127.0.0.1:{server_udp}", "--server-cas", str(certs / "ca.pem"),
            "--server-name", "127.0.0.1", "--server-tcp-addr", f"127.0.0.1:{server_tcp}", "--udp", udp,
            "--direct-addr", "127.0.0.1:0", "--log-level", "debug", "--status-addr", LOCAL,
            "--src-name", "web", "--src-addr", "127.0.0.1:0", "--src-route", "relay"]
    daemon = daemons.start("src", args)
    _, port = daemon.listening("source", "tcp")
    return daemon, port


def _relay_paths(report: dict) -> list[dict]:
    return [p for e in report["endpoints"] for peer in e["peers"] for p in peer["paths"] if p["kind"] == "relay"]


async def _through(daemons, certs, udp: str, server_udp_for_source=None) -> tuple[dict, dict, dict]:
    server, udp_port, tcp_port = _server(daemons, certs)
    from support.cluster import ServerInfo

    info = ServerInfo(server, udp_port, daemons.workdir / "server.toml", certs)
    payload = os.urandom(4 * 1024 * 1024)
    async with echo_server() as echo_port:
        dst = start_destination(daemons, info, echo_port, route="relay", status_addr=LOCAL)
        src, source_port = _source(daemons, certs, server_udp=server_udp_for_source or udp_port,
                                   server_tcp=tcp_port, udp=udp)
        await wait_tunnel(source_port, timeout=30)
        received = await exchange(source_port, payload)
        assert sha256(received) == sha256(payload)
        reports = {d.name: fetch_json(status_url(d)) for d in (server, dst, src)}
    for name, schema in (("server", "server.json"), ("dst", "client.json"), ("src", "client.json")):
        check_schema(reports[name], schema)
    return reports["server"], reports["dst"], reports["src"]


async def test_udp_never_moves_only_the_blocked_clients_legs(daemons, certs, transport) -> None:
    server, dst, src = await _through(daemons, certs, "never")
    assert src["control"]["carrier"] == "tcp"
    assert [p["carrier"] for p in _relay_paths(src)] == ["tcp"]
    # its peer is unaffected: UDP to control and to the relay
    assert dst["control"]["carrier"] == "udp"
    assert [p["carrier"] for p in _relay_paths(dst)] == ["udp"]
    # the relay sees one client of each
    assert sorted(c["carrier"] for c in server["relay"]["clients"]) == ["tcp", "udp"]
    assert server["control"]["tcp_addr"] and server["relay"]["tcp_addr"]


async def test_udp_auto_falls_back(daemons, certs, transport) -> None:
    """Control's UDP port does not answer (as if blocked): the control leg falls back to TCP
    after UDP_FALLBACK_AFTER, and the relay leg that follows goes to TCP at once (UDP just
    failed: no second wait); the peer keeps UDP."""
    _, dst, src = await _through(daemons, certs, "auto", server_udp_for_source=_unused_udp_port())
    assert src["control"]["carrier"] == "tcp"
    assert [p["carrier"] for p in _relay_paths(src)] == ["tcp"]
    assert dst["control"]["carrier"] == "udp"


async def test_a_stand_alone_relay_over_tcp(daemons, certs) -> None:
    """``connet control`` and ``connet relay`` as separate processes, each with tcp-addr:
    the relay registers its TCP port and control advertises it to clients."""
    from support.cluster import RELAY_TOKEN, ServerInfo

    control_config = daemons.workdir / "control.toml"
    control_config.write_text(
        '[control]\naddr = "127.0.0.1:0"\ntcp-addr = "127.0.0.1:0"\n'
        f'cert-file = "{certs / "server.pem"}"\nkey-file = "{certs / "server-key.pem"}"\n'
        f'client-tokens = ["{TOKENS[0]}", "{TOKENS[1]}"]\nrelay-tokens = ["{RELAY_TOKEN}"]\n'
    )
    control = daemons.start("control", ["control", "--config", str(control_config), "--log-level", "debug"])
    _, udp_port = control.listening("control", "udp")
    _, tcp_port = control.listening("control", "tcp")
    relay_config = daemons.workdir / "relay.toml"
    relay_config.write_text(
        f'[relay]\ntoken = "{RELAY_TOKEN}"\naddr = "127.0.0.1:0"\ntcp-addr = "127.0.0.1:0"\nhostname = "127.0.0.1"\n'
        f'control-addr = "127.0.0.1:{udp_port}"\ncontrol-cas = "{certs / "ca.pem"}"\nstatus-addr = "{LOCAL}"\n'
    )
    relay = daemons.start("relay", ["relay", "--config", str(relay_config), "--log-level", "debug"])
    _, relay_tcp = relay.listening("relay", "tcp")
    relay.wait_for("registered with control server")
    info = ServerInfo(control, udp_port, control_config, certs)
    payload = os.urandom(1024 * 1024)
    async with echo_server() as echo_port:
        start_destination(daemons, info, echo_port, route="relay")
        src, source_port = _source(daemons, certs, server_udp=udp_port, server_tcp=tcp_port, udp="never")
        await wait_tunnel(source_port, timeout=30)
        assert sha256(await exchange(source_port, payload)) == sha256(payload)
        report = fetch_json(status_url(src))
        relay_report = fetch_json(status_url(relay))
    assert [p["carrier"] for p in _relay_paths(report)] == ["tcp"]
    assert relay_report["tcp_addr"].endswith(f":{relay_tcp}")
    assert sorted(c["carrier"] for c in relay_report["clients"]) == ["tcp", "udp"]
    check_schema(relay_report, "relay.json")
