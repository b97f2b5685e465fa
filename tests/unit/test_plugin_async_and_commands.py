"""Async authentication hooks (awaited with a time limit) and commands plugins add to connet."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import subprocess
import sys

import pytest

from connet_core import hookimpl, plugins
from connet_core.errors import PluginError
from connet_core.model import Principal, PrincipalKind, Veto
from support.plugin_dist import plugin_on_path

CLIENT = PrincipalKind.CLIENT
AUTH = {"tokens": {"tokens": ("known",)}}  # the tokens plugin's [server] tokens


class Directory:
    """An async plugin: answers after a while, or never."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    @hookimpl
    async def connet_authenticate(self, kind, token):
        self.started.set()
        if token == "hang":
            await asyncio.Event().wait()
        await asyncio.sleep(0)
        if token == "veto":
            return Veto("not in the directory")
        return Principal(kind, label="directory") if token == "dir" else None

    @hookimpl
    async def connet_authorize(self, name):
        await asyncio.sleep(0)
        return "not today" if name == "closed" else None


async def test_async_hooks_are_awaited_and_combined_like_sync_ones():
    hooks = plugins.load_hooks(extra_plugins=[Directory()], plugin_settings=AUTH)
    assert await hooks.authenticate_async(CLIENT, "dir") == Principal(CLIENT, label="directory")
    assert await hooks.authenticate_async(CLIENT, "known") == Principal(CLIENT, "token#0")
    assert await hooks.authenticate_async(CLIENT, "veto") == Veto("not in the directory", "Directory")
    here = ipaddress.ip_address("127.0.0.1")
    assert await hooks.authorize_async(Principal(CLIENT), here, "closed") == "not today"
    assert await hooks.admit_address_async(CLIENT, here) is None


async def test_a_hanging_hook_times_out_as_that_plugins_failure():
    hooks = plugins.load_hooks(extra_plugins=[Directory()], plugin_settings=AUTH)
    hooks.hook_timeout = 0.2
    with pytest.raises(PluginError, match=r"plugin 'Directory' failed in connet_authenticate: timed out after 0.2s"):
        await hooks.authenticate_async(CLIENT, "hang")
    assert hooks.errors[("Directory", "connet_authenticate")] == 1


async def test_a_cancelled_caller_is_cancelled_not_a_plugin_error():
    directory = Directory()
    hooks = plugins.load_hooks(extra_plugins=[directory], plugin_settings=AUTH)
    task = asyncio.ensure_future(hooks.authenticate_async(CLIENT, "hang"))
    await directory.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not hooks.errors


async def test_the_plugins_own_timeout_error_is_not_called_a_time_limit():
    class Impatient:
        @hookimpl
        async def connet_authenticate(self):
            raise TimeoutError("ldap did not answer")

    hooks = plugins.load_hooks(extra_plugins=[Impatient()], plugin_settings=AUTH)
    with pytest.raises(PluginError, match="raised TimeoutError: ldap did not answer"):
        await hooks.authenticate_async(CLIENT, "x")


COMMANDS = """
    import click
    from connet_core import hookimpl

    @click.command("hello")
    @click.option("--name", default="world")
    def hello(name):
        click.echo(f"hello {name}")

    @hookimpl
    def connet_cli_commands():
        return [hello]
"""

CLASHING = """
    import click
    from connet_core import hookimpl

    @hookimpl
    def connet_cli_commands():
        return [click.Command("check")]
"""


def connet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "connet_core.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_a_plugin_adds_a_command_to_connet(tmp_path):
    env = plugin_on_path(tmp_path, "greeter", "greeter_plugin", COMMANDS)
    result = connet(env, "hello", "--name", "connet")
    assert (result.returncode, result.stdout) == (0, "hello connet\n"), result.stderr
    listed = connet(env, "--help")
    assert "hello" in listed.stdout
    # the built-in commands do not need the plugins loaded, and still work
    assert connet(env, "version").returncode == 0


def test_a_plugin_command_that_clashes_is_one_line_and_exit_2(tmp_path):
    env = plugin_on_path(tmp_path, "clash", "clash_plugin", CLASHING)
    result = connet(env, "--help")
    assert result.returncode == 2
    assert result.stderr.strip() == "connet: error: a plugin adds a command 'check', which exists already"


def test_the_facade_lists_plugin_commands():
    import click

    class Adds:
        @hookimpl
        def connet_cli_commands(self):
            return [click.Command("extra")]

    installed = {c.name for c in plugins.load_hooks(plugin_settings=AUTH).cli_commands()}  # the example plugins', if installed
    assert installed <= {"signed-tokens"}
    hooks = plugins.load_hooks(extra_plugins=[Adds()], plugin_settings=AUTH)
    assert {c.name for c in hooks.cli_commands()} == installed | {"extra"}


def test_a_command_that_is_not_one_is_the_plugins_error():
    class Wrong:
        @hookimpl
        def connet_cli_commands(self):
            return ["extra"]

    with pytest.raises(PluginError, match="expected a list of click commands"):
        plugins.load_hooks(extra_plugins=[Wrong()], plugin_settings=AUTH).cli_commands()
