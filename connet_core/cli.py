"""The ``connet`` command: a client by default, ``server``, ``control``, ``relay``, ``tui``,
``cert``, ``check`` and ``version`` as subcommands. docs/configuration.md describes the keys
and flags; the daemons' flags are derived from the configuration schema (config/flags.py).

Every failure a user can cause is one line on stderr, ``connet: error: ...``, and exit code 2;
never a traceback. Heavy modules (the runner, the engines, Textual) are imported only by the
command that needs them, so ``connet --help`` and ``connet check`` stay quick.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import click

from connet_core.config import (
    COMMANDS,
    Config,
    check_files,
    load_config,
    sections_present,
)
from connet_core.check_summary import summarize
from connet_core.config.flags import (
    DAEMON_SECTIONS,
    FlagSpec,
    daemon_flags,
    endpoint_flag_specs,
    endpoint_flags,
    file_only_tables,
    flag_values,
    with_plugin_keys,
)
from connet_core.config.schema import SCHEMA
from connet_core.errors import ConfigError, PluginError
from connet_core.model import HostPort

F = TypeVar("F", bound=Callable[..., object])

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
TUI_EXTRA_HINT = "connet tui needs the dashboard extra: pip install 'connet[tui]'"

# option name (as click passes it) -> config key it sets; the flag is named in errors
COMMON_FLAG_KEYS = {"log_level": "log-level", "log_format": "log-format", "transport": "transport"}
CLIENT_FLAG_KEYS = {
    "token": "client.token",
    "token_file": "client.token-file",
    "server_addr": "client.server-addr",
    "server_cas": "client.server-cas",
    "server_name": "client.server-name",
    "server_tcp_addr": "client.server-tcp-addr",
    "udp": "client.udp",
    "direct_addr": "client.direct-addr",
    "status_addr": "client.status-addr",
    "metadata": "client.metadata",
    "handshake_idle_timeout": "client.handshake-idle-timeout",
    "port_mapping": "client.port-mapping",
}


def common_options(func: F) -> F:
    """``--config`` (repeatable), ``--log-level``, ``--log-format``, ``--transport``."""
    options = [
        click.option(
            "--config",
            "config_files",
            multiple=True,
            type=click.Path(path_type=Path),
            metavar="FILE",
            help="TOML configuration; repeat to layer files (a later file wins per key).",
        ),
        click.option("--log-level", metavar="LEVEL", help="debug | info | warn | error  [default: info]"),
        click.option("--log-format", metavar="FORMAT", help="text | json  [default: text]"),
        click.option(
            "--transport",
            metavar="NAME",
            help="QUIC transport: auto (qh3 when it imports, else aioquic), qh3, aioquic, or one a plugin adds  [default: auto]",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def common_flags(log_level: str | None, log_format: str | None, transport: str | None) -> dict[str, object]:
    given = {"log_level": log_level, "log_format": log_format, "transport": transport}
    return {COMMON_FLAG_KEYS[name]: value for name, value in given.items() if value is not None}


def run_daemon(command: str, files: Sequence[Path], flags: dict[str, object]) -> int:
    """Load and check the configuration, set up logging, run until stopped."""
    config = load_config(command, files, flags)
    check_files(config)
    from connet_core.logs import setup_logging

    setup_logging(config.common.log_level, config.common.log_format)
    from connet_core import runner  # imports the engines: only when something is run

    return runner.run(config)


def _reject_client_options_with(ctx: click.Context) -> None:
    """Options before a subcommand belong to the client: refuse them, rather than ignore."""
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name or "")
        if source is not None and source is not click.core.ParameterSource.DEFAULT and param.name != "help":
            flag = param.opts[0] if param.opts else param.name
            sub = ctx.command.get_command(ctx, ctx.invoked_subcommand or "")  # type: ignore[attr-defined]
            takes = {p.name for p in sub.params} if sub is not None else set()
            if param.name in ("config_files", *COMMON_FLAG_KEYS) and param.name in takes:
                raise click.UsageError(
                    f"{flag} goes after the command: connet {ctx.invoked_subcommand} {flag} ..."
                )
            kind = "" if param.name in ("config_files", *COMMON_FLAG_KEYS) else " is a client option; it"
            raise click.UsageError(f"{flag}{kind} does not apply to '{ctx.invoked_subcommand}'")


class _PluginCommands(click.Group):
    """The built-in commands, then those plugins add (``connet_cli_commands``). Plugins are
    loaded only when a name is not built in, or for the command list (``--help``), so the
    built-in commands start as quickly as before."""

    _loaded: dict[str, click.Command] | None = None

    def _plugin_commands(self) -> dict[str, click.Command]:
        if self._loaded is None:
            from connet_core.plugins import load_hooks

            self._loaded = {}
            for command in load_hooks().cli_commands():
                if command.name in self.commands or command.name in self._loaded:
                    raise PluginError(f"a plugin adds a command {command.name!r}, which exists already")
                self._loaded[str(command.name)] = command
        return self._loaded

    _daemons: dict[str, click.Command] = {}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in DAEMON_SECTIONS:
            return self._daemon_with_plugin_flags(cmd_name)
        return super().get_command(ctx, cmd_name) or self._plugin_commands().get(cmd_name)

    def _daemon_with_plugin_flags(self, name: str) -> click.Command:
        """``connet server|control|relay`` with a flag for each key plugins put in that
        section too (the plugins' declarations are read only when such a command runs)."""
        if name not in self._daemons:
            schema, docs = with_plugin_keys()
            self._daemons[name] = _make_daemon_command(name, _DAEMON_SUMMARIES[name], schema, docs)
        return self._daemons[name]

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *sorted(self._plugin_commands())]


def _endpoint_options(func: F) -> F:
    """--dst-KEY and --src-KEY for every key of a destination's and a source's table."""
    for spec in reversed(endpoint_flag_specs()):
        func = click.option(spec.flag, spec.dest, metavar=spec.metavar, help=spec.help)(func)
    return func


@click.group(
    cls=_PluginCommands,
    invoke_without_command=True,
    context_settings=CONTEXT_SETTINGS,
    epilog="Configuration keys, defaults and CONNET_* variables: see docs/configuration.md. "
    "'connet COMMAND --help' shows a command's options. "
    "Shell completion: eval \"$(_CONNET_COMPLETE=bash_source connet)\" (zsh_source, fish_source).",
)
@click.version_option(package_name="connet", prog_name="connet")
@common_options
@click.option("--token", metavar="TOKEN", help="Token for the control server (or --token-file).")
@click.option("--token-file", type=click.Path(), metavar="FILE", help="File whose first line is the token.")
@click.option("--server-addr", metavar="HOST:PORT[,HOST:PORT...]",
              help="Control server address; several, comma-separated, for several control instances.  "
              "[default: localhost:19190]")
@click.option(
    "--server-cas",
    type=click.Path(),
    metavar="FILE",
    help="PEM CA(s) of the control server certificate.  [default: the system trust store (certifi)]",
)
@click.option(
    "--server-name",
    metavar="HOST",
    help="Name checked in the control server certificate.  [default: the host of --server-addr]",
)
@click.option("--server-tcp-addr", metavar="HOST:PORT[,HOST:PORT...]",
              help="Control server over TLS-over-TCP, where UDP is blocked (one for all, or one per --server-addr).")
@click.option("--udp", metavar="auto|never", help="auto: TCP after 3 s without UDP; never: TCP only.  [default: auto]")
@click.option(
    "--direct-addr", metavar="HOST:PORT", help="UDP address for direct peer connections and control.  [default: :19192]"
)
@click.option("--status-addr", metavar="HOST:PORT", help="HTTP status endpoint.  [default: disabled]")
@click.option("--metadata", metavar="TEXT", help="A short label shown in status, here and at control.")
@click.option("--handshake-idle-timeout", metavar="DURATION", help="QUIC handshake timeout (like 5s, 1m).  [default: 5s]")
@click.option(
    "--port-mapping/--no-port-mapping", default=None,
    help="Ask the router (PCP, NAT-PMP, UPnP) to map the direct-addr port.  [default: on]",
)
@click.option("--dst-name", metavar="NAME", help="Name of one destination to expose (with --dst-addr).")
@click.option("--src-name", metavar="NAME", help="Name of one source (with --src-addr).")
@_endpoint_options
@click.pass_context
def cli(
    ctx: click.Context,
    config_files: tuple[Path, ...],
    log_level: str | None,
    log_format: str | None,
    transport: str | None,
    token: str | None,
    token_file: Path | None,
    server_addr: str | None,
    server_cas: Path | None,
    server_name: str | None,
    server_tcp_addr: str | None,
    udp: str | None,
    direct_addr: str | None,
    status_addr: str | None,
    metadata: str | None,
    handshake_idle_timeout: str | None,
    port_mapping: bool | None,
    dst_name: str | None,
    src_name: str | None,
    **endpoint_keys: str | None,
) -> int | None:
    """Run a connet client: expose destinations and serve sources (peer-to-peer over QUIC).

    \b
    connet --config client.toml
    connet --token T --server-addr host:19190 --dst-name web --dst-addr localhost:8080
    """
    if ctx.invoked_subcommand is not None:
        _reject_client_options_with(ctx)
        return None
    flags = common_flags(log_level, log_format, transport)
    given = {
        "token": token,
        "token_file": token_file,
        "server_addr": server_addr,
        "server_cas": server_cas,
        "server_name": server_name,
        "server_tcp_addr": server_tcp_addr,
        "udp": udp,
        "direct_addr": direct_addr,
        "status_addr": status_addr,
        "metadata": metadata,
        "handshake_idle_timeout": handshake_idle_timeout,
        "port_mapping": port_mapping,
    }
    flags.update({CLIENT_FLAG_KEYS[name]: value for name, value in given.items() if value is not None})
    for kind, name in (("destinations", dst_name), ("sources", src_name)):
        flags.update(endpoint_flags(kind, name, {f.key: endpoint_keys[f.dest] for f in endpoint_flag_specs()
                                                 if f.kind == kind}))
    return run_daemon("client", config_files, flags)


def _flag_option(spec: FlagSpec) -> Callable[[F], F]:
    return click.option(
        spec.flag,
        spec.dest,
        multiple=spec.repeated,
        metavar=spec.metavar,
        type=click.Choice(spec.choices) if spec.choices else None,
        help=spec.help,
    )


_DAEMON_SUMMARIES: dict[str, str] = {}


def _daemon_command(command: str, summary: str) -> None:
    """``connet server|control|relay``: registered with connet's own flags (the command list
    needs no plugin); :class:`_PluginCommands` builds it again with the plugins' keys when run."""
    _DAEMON_SUMMARIES[command] = summary
    cli.add_command(_make_daemon_command(command, summary), name=command)


def _make_daemon_command(command: str, summary: str, schema: Mapping[str, Any] = SCHEMA,
                         docs: Mapping[str, str] | None = None) -> click.Command:
    """The common options and one flag per key of the section."""
    specs = daemon_flags(command, schema, docs)

    def callback(
        config_files: tuple[Path, ...],
        log_level: str | None,
        log_format: str | None,
        transport: str | None,
        **values: object,
    ) -> int:
        flags: dict[object, object] = dict(common_flags(log_level, log_format, transport))
        flags.update(flag_values(specs, values))
        return run_daemon(command, config_files, flags)  # type: ignore[arg-type]

    callback.__doc__ = summary
    short = summary.split("\n", 1)[0]
    decorated = callback
    for spec in reversed(specs):
        decorated = _flag_option(spec)(decorated)
    decorated = common_options(decorated)  # listed first in --help
    tables = ", ".join(file_only_tables(command, schema))
    epilog = (
        f"Every key of [{command}] has a flag; flags win over CONNET_* variables and --config files. "
        f"Repeat a flag to give a list. {tables} hold per-token rules: set them in a --config file."
        if tables
        else f"Every key of [{command}] has a flag; flags win over CONNET_* variables and --config files."
    )
    return click.command(name=command, context_settings=CONTEXT_SETTINGS, short_help=short, epilog=epilog)(decorated)


_daemon_command(
    "server",
    "Run control and relay servers in one process ([server]).\n\n"
    "\b\nconnet server --config server.toml\n"
    "connet server --tokens a --tokens b --cert-file server.pem --key-file server-key.pem",
)
_daemon_command(
    "control",
    "Run a control server alone; relays register with it ([control]).\n\n"
    "\b\nconnet control --config control.toml",
)
_daemon_command(
    "relay",
    "Run a relay server, registered with a control server ([relay]).\n\n"
    "\b\nconnet relay --config relay.toml",
)


@cli.command(context_settings=CONTEXT_SETTINGS)
@common_options
@click.option(
    "--as",
    "kind",
    type=click.Choice(COMMANDS),
    help="Check the configuration as this command.  [default: every section present]",
)
def check(
    config_files: tuple[Path, ...],
    log_level: str | None,
    log_format: str | None,
    transport: str | None,
    kind: str | None,
) -> int:
    """Validate a configuration and the files it names, then exit.

    Without --as, each of the sections [client], [server], [control] and [relay] present in
    the files (or the CONNET_* environment) is checked as its command. Prints "ok: ..." and
    exits 0, or one error line and exits 2.

    \b
    connet check --config server.toml
    connet check --as client --config base.toml --config site.toml
    """
    flags = common_flags(log_level, log_format, transport)
    kinds = [kind] if kind else sections_present(config_files)
    if not kinds:
        raise ConfigError(
            "nothing to check: no [client], [server], [control] or [relay] section; name one with --as"
        )
    summaries = []
    for command in kinds:
        config = load_config(command, config_files, flags)
        check_files(config)
        summaries.append(summarize(config))
    click.echo("ok: " + "; ".join(summaries))
    return 0


@cli.command(context_settings=CONTEXT_SETTINGS, short_help="Make a test CA and server certificate (tests only).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("certs"),
    show_default=True,
    help="Directory to write the files to (created if missing).",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="HOST",
    help="Name or address the server certificate is valid for; repeatable.  [default: localhost, 127.0.0.1, ::1]",
)
def cert(
    out_dir: Path,
    hosts: tuple[str, ...],
) -> int:
    """Make a test CA and a server certificate it signed (for tests only).

    \b
    connet cert --out certs --host localhost --host 127.0.0.1
    For production, make certificates with your CA, or with openssl or minica.
    """
    from connet_core.certs import write_test_certificates

    names = list(hosts or ("localhost", "127.0.0.1", "::1"))
    paths = write_test_certificates(out_dir, names)
    uses = {
        "ca": "CA certificate: server-cas of clients, control-cas of relays",
        "ca-key": "CA key: not needed to run; keep it private",
        "cert": "server certificate: cert-file of [server] or [control]",
        "key": "server key: key-file of [server] or [control]",
    }
    click.echo(f"wrote a test CA and a server certificate for {', '.join(names)}:")
    width = max(len(str(path)) for path in paths.values())
    for role, path in paths.items():
        click.echo(f"  {str(path):<{width}}  {uses.get(role, role)}")
    click.echo("These are for tests only: clients trust the server through the CA file.")
    return 0


@cli.command(context_settings=CONTEXT_SETTINGS)
def version() -> int:
    """Print connet's version, Python's, the QUIC libraries' and the transport auto picks."""
    from connet_core.versions import version_lines

    for line in version_lines():
        click.echo(line)
    return 0


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--config",
    "config_files",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="A daemon's TOML file: the dashboard polls its status-addr. Repeat for more daemons; "
    "each file is read on its own (not layered) and may be partial.",
)
@click.argument("urls", nargs=-1, metavar="[STATUS-URL]...")
def tui(config_files: tuple[Path, ...], urls: tuple[str, ...]) -> int:
    """Live dashboard over status endpoints (needs connet[tui]).

    Polls the URLs given, and the status-addr of the [client], [server], [control] or
    [relay] section of each --config file: one set of rows per daemon.

    \b
    connet tui http://127.0.0.1:19180/ http://127.0.0.1:19181/
    connet tui --config client.toml --config server.toml
    """
    from connet_core.status_targets import status_urls

    all_urls = list(urls)
    all_urls += [url for url in status_urls(config_files) if url not in all_urls]
    if not all_urls:
        raise click.UsageError("give at least one STATUS-URL, or a --config whose section has a status-addr")
    try:
        from connet_tui import app
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] == "textual":
            click.echo(TUI_EXTRA_HINT, err=True)
            return 1
        raise
    result = app.run(all_urls)
    return result if isinstance(result, int) else 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> None:
    """Console script entry point: exit with the command's code; errors are one line."""
    try:
        result = cli.main(args=list(argv) if argv is not None else None, prog_name="connet", standalone_mode=False)
    except (ConfigError, PluginError) as exc:
        click.echo(f"connet: error: {_one_line(str(exc))}", err=True)
        sys.exit(2)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"connet: error: {_one_line(exc.format_message())}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"connet: error: {_one_line(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
