"""The status endpoint's admission table (sans-I/O): bounded per address and overall, the
oldest connection still waiting for its head evicted first, answered ones never."""

from __future__ import annotations

from connet_core.status_admission import Admission


def test_one_address_crowds_out_only_itself() -> None:
    table = Admission(total=10, per_address=3)
    for key in ("a1", "a2", "a3"):
        assert table.admit(key, "127.0.0.1") == (True, [])
    assert table.admit("b1", "127.0.0.2") == (True, [])
    assert table.admit("a4", "127.0.0.1") == (True, ["a1"])  # its own oldest, not b1
    assert table.admit("a5", "127.0.0.1") == (True, ["a2"])
    assert len(table) == 4


def test_overall_the_oldest_silent_connection_goes_first() -> None:
    table = Admission(total=3, per_address=3)
    assert table.admit("a", "10.0.0.1")[0] and table.admit("b", "10.0.0.2")[0] and table.admit("c", "10.0.0.3")[0]
    table.head_received("a")  # being answered: never evicted
    assert table.admit("d", "10.0.0.4") == (True, ["b"])
    assert len(table) == 3


def test_answered_connections_are_never_evicted_and_a_full_table_refuses() -> None:
    table = Admission(total=2, per_address=1)
    assert table.admit("a", "h")[0]
    table.head_received("a")
    assert table.admit("a2", "h") == (False, [])  # per address: nothing silent to evict
    assert table.admit("b", "i")[0]
    table.head_received("b")
    assert table.admit("c", "j") == (False, [])  # overall: nothing silent to evict
    table.release("a")
    assert table.admit("c", "j") == (True, [])
    table.release("nobody")  # unknown keys are ignored
    table.release("b")
    table.release("c")
    assert len(table) == 0 and not table._per_address
