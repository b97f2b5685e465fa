"""The tokens plugin's settings: the token lists and per-token rules of ``[server]`` and
``[control]`` (docs/configuration.md), declared as keys in those sections, and the checks
that go beyond their types (a list is required, no token twice, one rule per token)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from connet_core.config_limits import token_problem
from connet_core.files import FileRefused
from connet_core.model import PrincipalKind, Role
from connet_core.plugin_settings import PluginKey, SettingProblem
from connet_core.token_files import read_tokens_file

_CIDRS = (("allow-cidrs", "cidrs"), ("deny-cidrs", "cidrs"))
_RULE = (*_CIDRS, ("name-matches", "regex"), ("role-matches", "string", tuple(r.value for r in Role)))


@dataclass(frozen=True, slots=True)
class Group:
    """One kind of principal's keys in one section: its list (inline or a file) and the
    per-token rules matched to it by position (``ip_rules``: CIDRs only; ``rules``: CIDRs,
    name and role)."""

    section: str
    tokens: str
    file: str
    ip_rules: str
    rules: str | None
    required: bool
    what: str  # "client" or "relay", for --help

    def keys(self) -> list[PluginKey]:
        s, w = self.section, self.what
        out = [
            PluginKey(self.tokens, "strings", doc=f"A {w} token; repeat for more (or --{self.file}).", section=s,
                      alternative=self.file),
            PluginKey(self.file, "path", doc=f"File of {w} tokens, one per line, # comments; re-read when it changes.",
                      section=s, alternative=self.tokens),
            PluginKey(self.ip_rules, "tables", doc=f"Per-{w}-token CIDR rules, by position.", section=s,
                      fields=_CIDRS, needs=(self.tokens, self.file)),
        ]
        if self.rules is not None:
            out.append(PluginKey(self.rules, "tables", doc=f"Per-{w}-token CIDR, name and role rules, by position.",
                                 section=s, fields=_RULE, needs=(self.tokens, self.file)))
        return out

    def rule_key(self, settings: Mapping[str, object]) -> str | None:
        return next((k for k in (self.ip_rules, self.rules) if k is not None and settings.get(k) is not None), None)

    def rule_list(self, settings: Mapping[str, object]) -> list[Mapping[str, object]] | None:
        key = self.rule_key(settings)
        return None if key is None else list(settings[key])  # type: ignore[call-overload]


SERVER = Group("server", "tokens", "tokens-file", "token-ip-restriction", "token-restriction", True, "client")
CONTROL_CLIENTS = Group("control", "client-tokens", "client-tokens-file", "client-token-ip-restriction",
                        "client-token-restriction", True, "client")
CONTROL_RELAYS = Group("control", "relay-tokens", "relay-tokens-file", "relay-token-ip-restriction", None, False,
                       "relay")
GROUPS = (SERVER, CONTROL_CLIENTS, CONTROL_RELAYS)


def declared_keys() -> list[PluginKey]:
    return [key for group in GROUPS for key in group.keys()]


def group_for(settings: Mapping[str, object], kind: PrincipalKind) -> Group | None:
    """The keys that say who ``kind`` may be under the running command (whose section's keys
    are the ones in ``settings``); None: this plugin authenticates no such principal here
    (the relay built into connet server needs no token)."""
    if SERVER.tokens in settings or SERVER.file in settings:
        return SERVER if kind is PrincipalKind.CLIENT else None
    if kind is PrincipalKind.CLIENT:
        group = CONTROL_CLIENTS
    else:
        group = CONTROL_RELAYS
    return group if group.tokens in settings or group.file in settings else None


def check(section: str, settings: Mapping[str, object], files: bool) -> None:
    """Raise SettingProblem for the first thing wrong with ``section``'s token settings."""
    for group in GROUPS:
        if group.section == section:
            _check_group(group, settings, files)


def _check_group(group: Group, settings: Mapping[str, object], files: bool) -> None:
    tokens, file = settings.get(group.tokens), settings.get(group.file)
    if tokens is None and file is None:
        if group.required:
            env = f"CONNET_{group.section.upper()}__{group.tokens.upper().replace('-', '_')}"
            raise SettingProblem(None, f"{group.tokens} or {group.file} is required (in [{group.section}], {env} or "
                                       "a flag)")
        return
    if group.rules is not None and settings.get(group.ip_rules) is not None and settings.get(group.rules) is not None:
        raise SettingProblem(group.rules, f"give {group.ip_rules} or {group.rules}, not both")
    rules = group.rule_list(settings)
    if tokens is not None:
        seen: set[str] = set()
        for index, token in enumerate(tokens, 1):  # type: ignore[arg-type]
            if token in seen:  # positional rules would be ambiguous; never echo the token
                raise SettingProblem(group.tokens, f"item {index} repeats an earlier token")
            problem = token_problem(token)
            if problem is not None:
                raise SettingProblem(group.tokens, f"item {index}: {problem}")
            seen.add(token)
        if rules is not None and len(rules) != len(seen):
            raise SettingProblem(group.rule_key(settings), (
                f"{len(rules)} per-token restriction(s) for {len(seen)} token(s) in "
                f"{group.section}.{group.tokens}: give one per token, in the same order"))
    elif files:
        _check_file(group, Path(file), rules, group.rule_key(settings))  # type: ignore[arg-type]


def _check_file(group: Group, path: Path, rules: list | None, rule_key: str | None) -> None:
    try:
        tokens = read_tokens_file(path)
    except FileRefused as exc:
        raise SettingProblem(group.file, str(exc)) from None
    except ValueError as exc:  # a token too long to be presented
        raise SettingProblem(group.file, f"{path}: {exc}") from None
    if not tokens:
        raise SettingProblem(group.file, f"{path} holds no tokens")
    if len(set(tokens)) != len(tokens):
        raise SettingProblem(group.file, f"{path} repeats a token")
    if rules is not None and len(rules) != len(tokens):
        raise SettingProblem(rule_key, (
            f"{len(rules)} per-token restriction(s) for {len(tokens)} token(s) in {path}: "
            "give one per token, in the same order"))
