"""Container health check: GET the status endpoint of the running connet daemon, if it has one.

The image's HEALTHCHECK runs this with the image's Python. It reads the daemon's command line
and environment from /proc (the configuration may come from --config files, CONNET_*
variables or flags), loads the configuration exactly as the daemon did, and:

- exits 0 when the configuration names no status endpoint (or port 0, whose real port only
  the daemon's log knows): the container runtime already watches the process itself;
- exits 0 when ``GET /`` on the endpoint answers 200 with a JSON object that has a ``role``;
- exits 1 otherwise, with one line saying why (the runtime keeps it in the health log).

    python healthcheck.py [PID]      # default: the first process running connet
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

TIMEOUT = 4.0  # below the image's HEALTHCHECK --timeout, so this line is what the log shows


def _cmdline(pid: str) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]


def _find_daemon() -> str:
    """PID 1 without --init; with --init (tini, catatonit) connet is one of its children."""
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        try:
            argv = _cmdline(pid)
        except OSError:
            continue  # gone meanwhile
        if any(Path(arg).name == "connet" or arg == "connet_core.cli" for arg in argv[:3]):
            return pid
    raise SystemExit("unhealthy: no connet process found")


def _arguments(argv: list[str]) -> list[str]:
    """What follows the program: ``python /path/connet ARGS`` or ``python -m connet_core.cli ARGS``."""
    for index, arg in enumerate(argv):
        if Path(arg).name == "connet" or arg == "connet_core.cli":
            return argv[index + 1 :]
    return []


def _daemon_settings(args: list[str]) -> tuple[str, list[str], dict[str, object]]:
    """(command, config files, flags) exactly as ``connet ARGS`` reads them: the CLI itself
    parses ``args``, with its last step (load the configuration and run) replaced."""
    import connet_core.cli as cli

    captured: list[tuple[str, list[str], dict[str, object]]] = []

    def capture(command: str, files: list[str], flags: dict[str, object]) -> int:
        captured.append((command, list(files), dict(flags)))
        return 0

    cli.run_daemon = capture
    cli.cli.main(args=args, prog_name="connet", standalone_mode=False)
    if not captured:
        raise ValueError(f"'connet {' '.join(args)}' runs no daemon")
    return captured[0]


def status_url(pid: str) -> str | None:
    from connet_core.config import load_config

    command, files, flags = _daemon_settings(_arguments(_cmdline(pid)))
    environ = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
        if "=" in item
    )
    os.chdir(os.readlink(f"/proc/{pid}/cwd"))  # relative paths are the daemon's
    config = load_config(command, files, flags, environ)
    section = getattr(config, command)
    addr = getattr(section, "status_addr", None) or getattr(getattr(section, "control", None), "status_addr", None)
    if addr is None or addr.port == 0:
        return None
    host = addr.host or "127.0.0.1"  # an every-interface bind answers on loopback
    return f"http://[{host}]:{addr.port}/" if ":" in host else f"http://{host}:{addr.port}/"


def main(argv: list[str]) -> int:
    pid = argv[1] if len(argv) > 1 else _find_daemon()
    try:
        url = status_url(pid)
    except Exception as exc:  # noqa: BLE001 - any failure is one "unhealthy" line, not a traceback
        print(f"unhealthy: cannot read the daemon's configuration: {exc}")
        return 1
    if url is None:
        print("healthy: no status endpoint configured")
        return 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            body = json.load(response)
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}")
        return 1
    if not isinstance(body, dict) or "role" not in body:
        print(f"unhealthy: {url}: the answer is not connet's status JSON")
        return 1
    print(f"healthy: {url} answered as {body['role']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
