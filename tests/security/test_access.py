"""Who may connect and what they may announce: CIDR rules, per-token name/role rules, name
hijacking, wrong tokens, revoked tokens and the tokens-file reload rules (docs/configuration.md)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from connet_core.errors import ConnectionLost
from connet_core.model import HostPort
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.messages import ALPN_CONTROL, Authenticate, Authenticated
from connet_core.protocol.streams import MessageStream
from secsupport import (
    TOKEN_A,
    TOKEN_B,
    TOKEN_C,
    TOKEN_D,
    WRONG_TOKEN,
    ControlSession,
    Identity,
    bind_endpoint,
    control_trust,
    lines_matching,
    log_time,
    start_custom_server,
    toml_list,
)
from support.cluster import TOKENS, start_destination, start_source
from support.services import echo_server, exchange, sha256, wait_tunnel


def client_args(server, token: str) -> list[str]:
    return server.client_args(token)


# ---- [server.ip-restriction] ------------------------------------------------------------------


@pytest.mark.parametrize("deny, refused", [("127.0.0.0/8", True), ("10.0.0.0/8", False)], ids=["deny-loopback", "control-deny-other"])
async def test_ip_restriction_refuses_before_the_token(daemons, certs, deny: str, refused: bool) -> None:
    """deny 127.0.0.0/8: a client from 127.0.0.1 is closed FORBIDDEN before any token is read
    (even a wrong token gets FORBIDDEN, not AUTH_FAILED). Control: deny another net, it connects."""
    server = start_custom_server(daemons, certs, f"tokens = {toml_list([TOKEN_A])}\n"
                                 f"[server.ip-restriction]\ndeny-cidrs = [\"{deny}\"]\n")
    endpoint = await bind_endpoint()
    try:
        conn = await endpoint.dial(HostPort("127.0.0.1", server.control_port), alpn=ALPN_CONTROL,
                                   trust=control_trust(server), timeout=10)
        if refused:
            # we send nothing at all: the refusal cannot depend on a token
            closed = await asyncio.wait_for(conn.wait_closed(), 10)
            assert closed.code == CloseCode.FORBIDDEN
            server.daemon.wait_for(r"client 127\.0\.0\.1:\d+ refused: client ip-restriction: 127\.0\.0\.1 matches deny-cidrs 127\.0\.0\.0/8")
        else:
            messages = MessageStream(await conn.open_stream())
            await messages.send(Authenticate(token=TOKEN_A))
            await messages.recv(Authenticated, timeout=10)
            conn.close()
    finally:
        await endpoint.close()
    # a real client: one clear line, FORBIDDEN even with a wrong token (the token was never read)
    client = daemons.start("client", [*client_args(server, WRONG_TOKEN if refused else TOKEN_A),
                                      "--dst-name", "web", "--dst-addr", "127.0.0.1:9"])
    if refused:
        client.wait_for(r"control server 127\.0\.0\.1:\d+ refused this client \(forbidden\); retrying")
        assert "unknown token" not in server.daemon.log()
        assert "Traceback" not in client.log() + server.daemon.log()
    else:
        client.wait_for("connected to control server")


# ---- [[server.token-restriction]]: names, roles, per-token CIDRs ----------------------------------

RULES = (
    # A: only the destination "web"
    '[[server.token-restriction]]\nname-matches = "web"\nrole-matches = "destination"\n'
    # B: only names b-*
    '[[server.token-restriction]]\nname-matches = "b-.*"\n'
    # C: only sources, any name
    '[[server.token-restriction]]\nrole-matches = "source"\n'
    # D: only from 10.0.0.0/8
    '[[server.token-restriction]]\nallow-cidrs = ["10.0.0.0/8"]\n'
)


@pytest.fixture
def restricted(daemons, certs):
    return start_custom_server(daemons, certs, f"tokens = {toml_list([TOKEN_A, TOKEN_B, TOKEN_C, TOKEN_D])}\n" + RULES)


async def test_name_hijack_is_refused_and_the_certificate_never_reaches_the_source(daemons, restricted) -> None:
    """Victim destination "web" (token A, name-matches web); attacker token B (names b-.*)
    announces destination "web": AnnounceRefused(FORBIDDEN), a log line, and the source of
    "web" never receives the attacker's certificate. Control: B's allowed name "b-web" is
    handed to a source of "b-web"."""
    server = restricted
    async with echo_server() as echo_port:
        victim = start_destination(daemons, server, echo_port, token=TOKEN_A)
        victim.wait_for("announced|connected to control server")
        endpoint = await bind_endpoint()
        sessions = []
        try:
            src = await ControlSession.open(endpoint, server, TOKEN_C)
            sessions.append(src)
            src_id = Identity.new()
            await src.announce("web", "source", src_id)
            await src.announce("b-web", "source", src_id)
            await src.wait(lambda: src.latest_peers("web"))  # the victim is there
            victim_certs = src.peer_certificates("web")

            attacker = await ControlSession.open(endpoint, server, TOKEN_B)
            sessions.append(attacker)
            evil = Identity.new()
            await attacker.announce("web", "destination", evil)
            refusal = await attacker.wait(lambda: attacker.refused)
            assert (refusal[0].name, refusal[0].role, refusal[0].code) == ("web", "destination", CloseCode.FORBIDDEN)
            server.daemon.wait_for(r"may not announce destination 'web': token#1: name 'web' does not match name-matches 'b-\.\*'")

            # positive control on the same session: an allowed name reaches the source
            await attacker.announce("b-web", "destination", evil)
            await src.wait(lambda: evil.der in src.peer_certificates("b-web"))

            # barrier: a second legitimate destination of "web" announced after the refusal;
            # once the source sees it, every update the hijack could have caused was delivered
            second = await ControlSession.open(endpoint, server, TOKEN_A)
            sessions.append(second)
            second_id = Identity.new()
            await second.announce("web", "destination", second_id)
            await src.wait(lambda: second_id.der in src.peer_certificates("web"))
            assert evil.der not in src.peer_certificates("web")
            assert victim_certs <= src.peer_certificates("web")
        finally:
            for s in sessions:
                await s.close()
            await endpoint.close()

        # the same refusal seen by a real client process: one clear line
        hijacker = start_destination(daemons, server, echo_port, name="hijacker", token=TOKEN_B)
        hijacker.wait_for(r"control refused destination 'web': forbidden")
        # and the victim's tunnel still works (a real source with token C)
        _, source_port = start_source(daemons, server, token=TOKEN_C)
        await wait_tunnel(source_port)
        payload = os.urandom(256 * 1024)
        assert sha256(await exchange(source_port, payload)) == sha256(payload)


@pytest.mark.parametrize(
    "token, name, role, allowed, reason",
    [
        (TOKEN_C, "web", "destination", False, r"role destination is not role-matches source"),
        (TOKEN_A, "web", "source", False, r"role source is not role-matches destination"),
        (TOKEN_A, "web2", "destination", False, r"name 'web2' does not match name-matches 'web'"),
        (TOKEN_C, "anything", "source", True, None),
        (TOKEN_A, "web", "destination", True, None),
    ],
    ids=["source-token-as-destination", "destination-token-as-source", "name-not-full-match", "control-source", "control-destination"],
)
async def test_role_and_name_rules(daemons, restricted, token, name, role, allowed, reason) -> None:
    endpoint = await bind_endpoint()
    try:
        session = await ControlSession.open(endpoint, restricted, token)
        await session.announce(name, role, Identity.new())
        if allowed:
            # an accepted announcement is answered with its relays (and grants)
            await session.wait(lambda: any(u.name == name for u in session.relays))
            assert not session.refused
        else:
            refused = await session.wait(lambda: session.refused)
            assert refused[0].code == CloseCode.FORBIDDEN
            restricted.daemon.wait_for(f"may not announce {role} '{name}': .*{reason}")
            assert not any(u.name == name for u in session.relays), "a refused name got relay grants"
        await session.close()
    finally:
        await endpoint.close()


async def test_per_token_cidr_refuses_at_connect(daemons, restricted) -> None:
    """Token D may only connect from 10.0.0.0/8: from loopback its session is closed FORBIDDEN
    right after the token is read. Control: token C from loopback is welcomed."""
    endpoint = await bind_endpoint()
    try:
        with pytest.raises(ConnectionLost) as lost:
            await ControlSession.open(endpoint, restricted, TOKEN_D)
        assert lost.value.code == CloseCode.FORBIDDEN
        restricted.daemon.wait_for(r"\(token#3\) refused: token#3 token restriction: 127\.0\.0\.1 matches no allow-cidrs")
        session = await ControlSession.open(endpoint, restricted, TOKEN_C)
        await session.close()
    finally:
        await endpoint.close()


async def test_without_name_rules_any_token_may_announce_any_name(daemons, server) -> None:
    """Documented behaviour: with no per-token rules, every valid token may announce any name,
    so a second destination of "web" is matched to the sources of "web" like the first."""
    endpoint = await bind_endpoint()
    try:
        src = await ControlSession.open(endpoint, server, TOKENS[1])
        await src.announce("web", "source", Identity.new())
        first, second = Identity.new(), Identity.new()
        s1 = await ControlSession.open(endpoint, server, TOKENS[0])
        await s1.announce("web", "destination", first)
        s2 = await ControlSession.open(endpoint, server, TOKENS[2])
        await s2.announce("web", "destination", second)
        await src.wait(lambda: {first.der, second.der} <= src.peer_certificates("web"))
        for s in (src, s1, s2):
            await s.close()
    finally:
        await endpoint.close()


# ---- tokens ---------------------------------------------------------------------------------


async def test_wrong_token_one_line_per_attempt_and_backoff(daemons, server) -> None:
    """A wrong token: one clear error line per attempt, no traceback, and attempts back off
    (seconds apart), not a spin. Control: the right token connects at once."""
    bad = daemons.start("bad", [*server.client_args(WRONG_TOKEN), "--dst-name", "web", "--dst-addr", "127.0.0.1:9"])
    refusal = r"refused the token \(auth-failed\); retrying"
    bad.wait_for(refusal)
    first = bad.mark()
    bad.wait_for(refusal, timeout=15, start=first)
    second = bad.mark()
    bad.wait_for(refusal, timeout=20, start=second)
    times = [log_time(line) for line in lines_matching(bad, refusal)]
    assert len(times) == 3, times
    gaps = [b - a for a, b in zip(times, times[1:])]
    # Backoff(5 s) after an auth failure: a handful of attempts in ~10 s, never a spin.
    # (The delay does not grow: client._control_loop makes a fresh Backoff(5.0, 60.0) on each
    # failure; a steady ~5 s is still "a handful", so this asserts the floor only.)
    assert min(gaps) >= 3.0, f"attempts not backed off: gaps {gaps}"
    # the server logs its refusal after sending it: wait for its third line, do not race it
    server.daemon.wait_for(r"refused: unknown token", timeout=10, count=3)
    assert len(lines_matching(server.daemon, r"refused: unknown token")) == len(lines_matching(bad, refusal))
    assert "Traceback" not in bad.log() + server.daemon.log()
    good = start_destination(daemons, server, 9, name="good")
    good.wait_for("connected to control server", timeout=10)


async def test_tokens_never_logged_at_debug(daemons, certs, tmp_path) -> None:
    """Server, destination and source at debug level, text and JSON, plus a wrong-token client:
    no token string appears in any log line (the autouse fixture checks every other test too)."""
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text(f"{TOKEN_A}\n{TOKEN_B}\n")
    server = start_custom_server(daemons, certs, f'tokens-file = "{tokens_file}"\n')
    async with echo_server() as echo_port:
        dst = daemons.start("dst", [*server.client_args(TOKEN_A), "--log-format", "json",
                                    "--dst-name", "web", "--dst-addr", f"127.0.0.1:{echo_port}"])
        _, source_port = start_source(daemons, server, token=TOKEN_B)
        bad = daemons.start("bad", [*server.client_args(WRONG_TOKEN), "--src-name", "web", "--src-addr", "127.0.0.1:0"])
        await wait_tunnel(source_port)
        bad.wait_for("refused the token")
        dst.wait_for('"event":"listening"')
    assert any(" DEBUG " in d.log() for d in daemons.started), "nothing ran at debug level"
    for daemon in daemons.started:
        text = daemon.log()
        for token in (TOKEN_A, TOKEN_B, WRONG_TOKEN):
            assert token not in text, f"{daemon.name} logged a token"


async def test_tokens_file_removed_token_loses_its_session(daemons, certs, tmp_path) -> None:
    """Removing a token from tokens-file closes that client's session within ~2 s and it cannot
    reconnect; the client whose token stays is untouched (the control)."""
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text(f"{TOKEN_A}\n{TOKEN_B}\n")
    server = start_custom_server(daemons, certs, f'tokens-file = "{tokens_file}"\n')
    keep = start_destination(daemons, server, 9, name="keep", token=TOKEN_A)
    gone = start_destination(daemons, server, 9, name="gone", endpoint="other", token=TOKEN_B)
    keep.wait_for("connected to control server")
    gone.wait_for("connected to control server")
    keep_mark, gone_mark, server_mark = keep.mark(), gone.mark(), server.daemon.mark()

    replacement = tmp_path / "tokens.new"
    replacement.write_text(f"{TOKEN_A}\n")
    os.replace(replacement, tokens_file)
    changed = time.monotonic()
    gone.wait_for(r"refused the token \(auth-failed\)", timeout=5, start=gone_mark)
    assert time.monotonic() - changed < 2.5, "the revoked session outlived the recheck"
    server.daemon.wait_for("token revoked, closing its session", start=server_mark)
    # it tries again and is refused: the removed token authenticates nothing
    server.daemon.wait_for("refused: unknown token", timeout=15, start=server_mark)
    assert len(lines_matching(gone, "connected to control server", gone_mark)) == 0
    assert len(lines_matching(keep, "lost the control server|refused", keep_mark)) == 0
    assert len(lines_matching(server.daemon, "token revoked", server_mark)) == 1


async def test_tokens_file_with_a_different_count_is_refused_under_per_token_rules(daemons, certs, tmp_path) -> None:
    """With per-token rules, a new tokens file with another number of tokens is refused with
    an error line and the old set stays in force: the new token is unknown, the old ones work."""
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text(f"{TOKEN_A}\n{TOKEN_B}\n")
    rules = '[[server.token-restriction]]\nrole-matches = "destination"\n' \
            '[[server.token-restriction]]\nrole-matches = "source"\n'
    server = start_custom_server(daemons, certs, f'tokens-file = "{tokens_file}"\n' + rules)
    holder = start_destination(daemons, server, 9, name="holder", token=TOKEN_A)  # keeps the recheck running
    holder.wait_for("connected to control server")
    mark = server.daemon.mark()
    replacement = tmp_path / "tokens.new"
    replacement.write_text(f"{TOKEN_C}\n{TOKEN_A}\n{TOKEN_B}\n")
    os.replace(replacement, tokens_file)
    server.daemon.wait_for(r"has 3 tokens but 2 per-token restrictions are configured: refusing the new file",
                           timeout=5, start=mark)
    endpoint = await bind_endpoint()
    try:
        with pytest.raises(ConnectionLost) as lost:
            await ControlSession.open(endpoint, server, TOKEN_C)
        assert lost.value.code == CloseCode.AUTH_FAILED
        session = await ControlSession.open(endpoint, server, TOKEN_B)  # the old set: B is still token #1
        await session.announce("web", "source", Identity.new())
        await session.wait(lambda: any(u.name == "web" for u in session.relays))
        assert not session.refused
        await session.close()
    finally:
        await endpoint.close()
    assert not lines_matching(holder, "lost the control server|refused")
