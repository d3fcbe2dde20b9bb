"""The slowloris admission rules of sip/connection_guard.py, without sockets: per-address caps,
pending connections become established, the oldest pending one is evicted at the global bound,
and the counts always return to zero (hypothesis drives random open/establish/close orders)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from callward.sip.connection_guard import ConnectionGuard


def test_per_ip_pending_cap_then_established_connections_do_not_count_as_pending() -> None:
    g = ConnectionGuard(max_per_ip=5, max_pending_per_ip=2, max_pending=100)
    assert g.admit("a1", "10.0.0.1").refused is None
    assert g.admit("a2", "10.0.0.1").refused is None
    assert g.admit("a3", "10.0.0.1").refused == "ip-pending-limit"
    assert g.admit("b1", "10.0.0.2").refused is None  # another address is not affected
    g.established("a1")
    g.established("a2")
    assert g.admit("a3", "10.0.0.1").refused is None
    assert g.admit("a4", "10.0.0.1").refused is None
    g.established("a3")
    g.established("a4")
    assert g.admit("a5", "10.0.0.1").refused is None
    assert g.admit("a6", "10.0.0.1").refused == "ip-connection-limit"
    assert g.count("10.0.0.1") == 5


def test_oldest_pending_is_evicted_at_the_global_bound() -> None:
    g = ConnectionGuard(max_per_ip=100, max_pending_per_ip=100, max_pending=3)
    for i in range(3):
        assert g.admit(f"c{i}", f"10.0.0.{i}").evict == ()
    g.established("c0")  # established connections are never evicted
    assert g.admit("c3", "10.0.0.3").evict == ()
    adm = g.admit("c4", "10.0.0.4")
    assert adm.refused is None and adm.evict == ("c1",)
    assert g.pending == 3 and not g.is_pending("c1") and g.count("10.0.0.1") == 0
    assert g.evicted == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["open", "est", "close"]), st.integers(0, 20), st.integers(0, 3)),
        max_size=120,
    )
)
def test_counts_stay_consistent_and_return_to_zero(ops: list[tuple[str, int, int]]) -> None:
    g = ConnectionGuard(max_per_ip=4, max_pending_per_ip=2, max_pending=5)
    live: dict[int, str] = {}
    for op, key, ip_n in ops:
        ip = f"10.0.0.{ip_n}"
        if op == "open" and key not in live:
            adm = g.admit(key, ip)
            for old in adm.evict:
                live.pop(old, None)  # type: ignore[call-overload]
            if adm.refused is None:
                live[key] = ip
        elif op == "est":
            g.established(key)
        elif op == "close":
            g.release(key)
            live.pop(key, None)
        assert g.pending <= 5
        for n in range(4):
            assert g.count(f"10.0.0.{n}") == sum(1 for v in live.values() if v == f"10.0.0.{n}")
            assert g.count(f"10.0.0.{n}") <= 4
    for key in list(live):
        g.release(key)
    assert g.pending == 0 and all(g.count(f"10.0.0.{n}") == 0 for n in range(4))
