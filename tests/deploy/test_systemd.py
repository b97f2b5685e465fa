"""The systemd units of packaging/systemd: systemd-analyze verify accepts them, they carry
the hardening they promise, and each one's ExecStart= line, run as written with the unit's
Environment= (systemd is not PID 1 here), starts a daemon that binds its sockets."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.conftest import require
from deploy.units import PROGRAM, UNIT_DIR, UNITS, environment, exec_start, parse_unit, values
from support.cluster import RELAY_TOKEN, TOKENS
from support.daemons import CONNET, Daemons

HARDENING = {
    "DynamicUser": "yes",
    "CapabilityBoundingSet": "",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictSUIDSGID": "yes",
}


def test_every_unit_is_hardened_and_keeps_its_store_in_its_state_directory() -> None:
    assert sorted(p.name for p in UNIT_DIR.glob("*.service")) == sorted(UNITS)
    for name in UNITS:
        unit = parse_unit(UNIT_DIR / name)
        for key, expected in HARDENING.items():
            assert values(unit, "Service", key) == [expected], f"{name}: {key}"
        command = exec_start(unit, {"i": "web", "S": "/var/lib"})
        assert command[0] == PROGRAM, name
        if name.startswith("connet-client"):
            assert values(unit, "Service", "StateDirectory") == [], "a client stores nothing"
            continue
        daemon = name.removeprefix("connet-").removesuffix(".service")
        assert values(unit, "Service", "StateDirectory") == [f"connet-{daemon}"]
        env = environment(unit, {"S": "/var/lib"})
        assert env[f"CONNET_{daemon.upper()}__STORE_DIR"] == f"/var/lib/connet-{daemon}"


def test_systemd_analyze_verify_accepts_every_unit(tmp_path: Path) -> None:
    require(None if shutil.which("systemd-analyze") else "systemd-analyze is not installed (apt-get install systemd)")
    # verify checks that ExecStart's program exists: point it at this environment's connet,
    # the one change to the units as shipped
    connet = Path(sys.executable).parent / "connet"
    require(None if connet.exists() else f"no connet script next to {sys.executable}")
    for name in UNITS:
        (tmp_path / name).write_text((UNIT_DIR / name).read_text().replace(PROGRAM, str(connet)))
    for name in [*UNITS, "connet-client@web.service"]:
        result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True,
                                timeout=60)
        # verify exits 0 on an unknown key or a bad value and only warns: any output is a defect
        assert (result.returncode, result.stdout + result.stderr) == (0, ""), name


def _start_unit(daemons: Daemons, name: str, config: Path, state: Path, instance: str = "") -> object:
    """Run the unit's ExecStart= as written, with its Environment=; only the program (this
    checkout's connet) and the config path (a temporary file) are swapped."""
    unit = parse_unit(UNIT_DIR / name)
    specifiers = {"i": instance, "S": str(state)}
    command = exec_start(unit, specifiers)
    assert command[0] == PROGRAM
    shipped = f"/etc/connet/{instance or name.removeprefix('connet-').removesuffix('.service')}.toml"
    assert shipped in command, f"{name}: ExecStart does not read {shipped}"
    args = [str(config) if arg == shipped else arg for arg in command[1:]]
    return daemons.start(name, args, env=environment(unit, specifiers), command=CONNET)


def test_each_units_exec_start_runs_the_daemon(daemons: Daemons, certs: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"  # stands for /var/lib: StateDirectory= would create it
    tokens = ", ".join(f'"{t}"' for t in TOKENS)
    identity = f'cert-file = "{certs / "server.pem"}"\nkey-file = "{certs / "server-key.pem"}"\n'

    server_toml = tmp_path / "server.toml"
    server_toml.write_text(f'[server]\naddr = "127.0.0.1:0"\nrelay-addr = "127.0.0.1:0"\n{identity}tokens = [{tokens}]\n')
    server = _start_unit(daemons, "connet-server.service", server_toml, state)
    control_port = int(server.wait_for(r"listening control udp 127\.0\.0\.1:(\d+)").group(1))
    server.wait_for(r"listening relay udp")

    control_toml = tmp_path / "control.toml"
    control_toml.write_text(f'[control]\naddr = "127.0.0.1:0"\n{identity}client-tokens = [{tokens}]\n'
                            f'relay-tokens = ["{RELAY_TOKEN}"]\n')
    control = _start_unit(daemons, "connet-control.service", control_toml, state)
    control_only_port = int(control.wait_for(r"listening control udp 127\.0\.0\.1:(\d+)").group(1))

    relay_toml = tmp_path / "relay.toml"
    relay_toml.write_text(f'[relay]\ntoken = "{RELAY_TOKEN}"\naddr = "127.0.0.1:0"\nhostname = "127.0.0.1"\n'
                          f'control-addr = "127.0.0.1:{control_only_port}"\ncontrol-cas = "{certs / "ca.pem"}"\n')
    relay = _start_unit(daemons, "connet-relay.service", relay_toml, state)
    relay.wait_for(r"listening relay udp")

    client_toml = tmp_path / "web.toml"
    client_toml.write_text(f'[client]\ntoken = "{TOKENS[0]}"\nserver-addr = "127.0.0.1:{control_port}"\n'
                           f'server-cas = "{certs / "ca.pem"}"\ndirect-addr = "127.0.0.1:0"\n'
                           '[client.destinations.web]\naddr = "127.0.0.1:9"\n')
    client = _start_unit(daemons, "connet-client@.service", client_toml, state, instance="web")
    client.wait_for(r"listening direct udp")

    # the units log JSON, and the stores landed in the state directories (Environment= applied)
    assert server.lines[0].startswith("{"), server.lines[0]
    for daemon in ("server", "control", "relay"):
        assert any((state / f"connet-{daemon}").iterdir()), daemon
