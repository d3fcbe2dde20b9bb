"""Toll-fraud limits (edge/fraud.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callward.edge.admission import Rate, VerdictKind
from callward.edge.fraud import (
    CallPolicy,
    Destination,
    FraudGuard,
    FraudPolicy,
    classify,
)
from callward.sip.e164 import normalize_number


@pytest.mark.parametrize(
    ("dialled", "cc", "nat", "e164"),
    [
        ("+1 (900) 555-1234", "1", "", "+19005551234"),
        ("0119005551234", "1", "", "+9005551234"),
        ("011-44-20-7946-0000", "1", "", "+442079460000"),
        ("0044 20 7946 0000", "44", "0", "+442079460000"),
        ("020 7946 0000", "44", "0", "+442079460000"),
        ("2125550100", "1", "", "+12125550100"),
        ("12125550100", "1", "", "+12125550100"),
        ("+19005551234;phone-context=x", "1", "", "+19005551234"),
        ("1001", "1", "", "1001"),
        ("alice", "1", "", "alice"),
    ],
)
def test_normalize_number(dialled: str, cc: str, nat: str, e164: str) -> None:
    assert normalize_number(dialled, country_code=cc, national_prefix=nat) == e164


def test_classify() -> None:
    pp = FraudPolicy().premium_prefixes
    assert classify("+19005551234", country_code="1", premium=pp) is Destination.PREMIUM
    assert classify("+12125550100", country_code="1", premium=pp) is Destination.LOCAL
    assert classify("+442079460000", country_code="1", premium=pp) is Destination.INTERNATIONAL
    assert classify("+8816123456", country_code="1", premium=pp) is Destination.PREMIUM
    assert classify("1001", country_code="1", premium=pp) is Destination.LOCAL


def test_premium_and_international_need_tenant_permission() -> None:
    g = FraudGuard(FraudPolicy(tenants=(("acme", CallPolicy(international=True, premium=True)),)))
    v = g.call_attempt("alice", "default", "+19005551234", "c1", 0.0)
    assert (v.kind, v.status, v.rule) == (VerdictKind.REJECT, 403, "premium-denied")
    assert g.call_attempt("alice", "default", "011442079460000", "c2", 0.0).rule == (
        "international-denied"
    )
    assert g.call_attempt("alice", "default", "2125550100", "c3", 0.0).admitted
    assert g.call_attempt("bob", "acme", "+19005551234", "c4", 0.0).admitted
    assert g.call_attempt("bob", "acme", "0044 20 7946 0000", "c5", 0.0).admitted


def test_home_country_comes_from_the_tenant_region() -> None:
    """A UK tenant's call to a UK mobile is national; the same call from a US tenant is not."""
    g = FraudGuard()
    uk = g.call_attempt("alice", "default", "+447700900456", "c1", 0.0, country_code="44")
    assert uk.admitted
    us = g.call_attempt("carol", "default", "+447700900456", "c2", 0.0)
    assert (us.status, us.rule) == (403, "international-denied")


def test_concurrent_call_cap_blocks_account_and_alerts() -> None:
    g = FraudGuard(FraudPolicy(default=CallPolicy(max_concurrent=3, cps=Rate(100, 100))))
    for i in range(3):
        assert g.call_attempt("alice", "t", "1001", f"c{i}", float(i)).admitted
    g.call_ended("c0")
    assert g.call_attempt("alice", "t", "1001", "c3", 4.0).admitted
    v = g.call_attempt("alice", "t", "1001", "c4", 5.0)
    assert (v.status, v.rule) == (403, "concurrent-calls")
    assert g.blocked("alice", 6.0)
    assert g.call_attempt("alice", "t", "1001", "c5", 6.0).rule == "fraud-blocked"
    (alert,) = g.take_alerts()
    assert alert.rule == "concurrent-calls"
    assert not g.blocked("alice", 5.0 + g.policy.block_seconds + 1)


def test_cps_spike_blocks_account() -> None:
    g = FraudGuard(FraudPolicy(default=CallPolicy(max_concurrent=1000, cps=Rate(1, 5))))
    verdicts = [g.call_attempt("a", "t", "1001", f"c{i}", 0.0) for i in range(6)]
    assert [v.admitted for v in verdicts] == [True] * 5 + [False]
    assert verdicts[-1].rule == "cps-spike"


def test_costly_velocity_limit() -> None:
    rules = CallPolicy(
        international=True, max_concurrent=1000, cps=Rate(100, 100), costly_per_hour=3
    )
    g = FraudGuard(FraudPolicy(default=rules))
    for i in range(3):
        assert g.call_attempt("a", "t", "+442079460000", f"c{i}", i * 60.0).admitted
    assert g.call_attempt("a", "t", "1001", "local", 200.0).admitted  # local calls don't count
    assert g.call_attempt("a", "t", "+442079460000", "c9", 300.0).rule == "costly-velocity"


def test_stale_calls_are_forgotten_and_state_is_bounded() -> None:
    g = FraudGuard(
        FraudPolicy(
            default=CallPolicy(max_concurrent=2, cps=Rate(1000, 1000)),
            max_calls=100,
            max_accounts=50,
        )
    )
    assert g.call_attempt("a", "t", "1", "x", 0.0).admitted
    assert g.call_attempt("a", "t", "1", "y", 0.0).admitted
    assert g.call_attempt("a", "t", "1", "z", 5 * 3600.0).admitted  # x, y never ended
    for i in range(10_000):
        g.call_attempt(f"u{i}", "t", "1", f"k{i}", 1.0)
    assert len(g._accounts) <= 50 and len(g._calls) <= 100


@given(st.text(max_size=40), st.sampled_from(["1", "44", "33"]))
def test_normalize_never_raises_and_is_idempotent(text: str, cc: str) -> None:
    once = normalize_number(text, country_code=cc, national_prefix="0")
    assert normalize_number(once, country_code=cc, national_prefix="0") == once
