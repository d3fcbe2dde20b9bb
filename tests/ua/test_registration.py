"""The registration manager with an injected clock: digest reuse, refresh timing and
coalescing, full-jitter backoff, Retry-After, Min-Expires, two-flow failover, offline
buffering, address change, unregister; flaky networks simulated with the edge's digest verifier
(benchmarks/registration_storm.py) as the registrar."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import ConfigError, LocalProtocolError
from callward.sip.message import Headers, Request, Response, make_response
from callward.sip.parser import parse_message
from callward.ua.call import LocalEndpoint
from callward.ua.credentials import DigestCredentials
from callward.ua.registration import (
    FlowDown,
    FlowState,
    FlowUp,
    OutgoingRegister,
    RegistrationManager,
    RetryPolicy,
    Unregistered,
)
from registration_storm import Network, SimRegistrar, simulate

LOCAL = LocalEndpoint("u7", "sim.example", "10.0.0.2", 5060)
EDGE_A, EDGE_B = ("192.0.2.1", 5060), ("192.0.2.2", 5060)


def _mgr(edges=(EDGE_A,), **kw) -> RegistrationManager:  # type: ignore[no-untyped-def]
    kw.setdefault("credentials", DigestCredentials("u7", "pw-u7"))
    kw.setdefault("rng", random.Random(3))
    return RegistrationManager(LOCAL, list(edges), domain="sim.example", **kw)


def _one(m: RegistrationManager) -> OutgoingRegister:
    (out,) = m.requests_to_send()
    # What leaves is a valid SIP request: round-trip it through the strict parser.
    parsed = parse_message(bytes(out.request))
    assert isinstance(parsed, Request) and parsed.method == "REGISTER"
    return out


def _timeout() -> Response:
    return Response(Headers(), status=408, reason="Request Timeout")


def _events(m: RegistrationManager) -> list[object]:
    out = []
    while (ev := m.next_event()) is not None:
        out.append(ev)
    return out


def test_refresh_reuses_the_challenge_so_it_costs_two_messages_not_four() -> None:
    reg = SimRegistrar(granted=600)
    m = _mgr()
    m.start(0.0)
    first = _one(m)
    assert "Authorization" not in first.request.headers
    challenge = reg.handle(first.request, 0.0)
    assert challenge.status == 401
    m.receive_response(0, challenge, 0.1, request=first.request)
    second = _one(m)
    assert "nc=00000001" in (second.request.headers.get("Authorization") or "")
    ok = reg.handle(second.request, 0.2)
    assert ok.status == 200
    m.receive_response(0, ok, 0.2, request=second.request)
    assert isinstance(_events(m)[0], FlowUp) and m.state() is FlowState.REGISTERED
    # The refresh is due at 75-90 % of the 600 s granted.
    due = m.get_timer()
    assert due is not None and 0.2 + 450 <= due <= 0.2 + 540
    m.handle_timer(due)
    refresh = _one(m)
    assert "nc=00000002" in (refresh.request.headers.get("Authorization") or "")
    assert refresh.request.cseq.seq == second.request.cseq.seq + 1  # §10.2.4: same Call-ID
    assert refresh.request.call_id == first.request.call_id
    resp = reg.handle(refresh.request, due)
    assert resp.status == 200, "the verifier accepts the reused nonce with the next nc"
    m.receive_response(0, resp, due + 0.1, request=refresh.request)
    assert reg.requests == 3 and reg.challenges == 1
    (up,) = _events(m)
    assert isinstance(up, FlowUp) and up.refreshed


def test_stale_nonce_falls_back_to_one_fresh_challenge_and_wrong_password_stops() -> None:
    reg = SimRegistrar(granted=600, nonce_ttl=100.0)
    m = _mgr()
    m.start(0.0)
    for _ in range(2):
        out = _one(m)
        m.receive_response(0, reg.handle(out.request, 1.0), 1.0, request=out.request)
    assert m.state() is FlowState.REGISTERED
    due = m.get_timer()
    assert due is not None
    m.handle_timer(due)  # the nonce has expired by now (ttl 100 s)
    out = _one(m)
    stale = reg.handle(out.request, due)
    assert stale.status == 401 and "stale=true" in (stale.headers.get("WWW-Authenticate") or "")
    m.receive_response(0, stale, due, request=out.request)
    out = _one(m)
    assert reg.handle(out.request, due).status == 200

    bad = _mgr(credentials=DigestCredentials("u7", "wrong"))
    bad.start(0.0)
    for _ in range(2):
        out = _one(bad)
        bad.receive_response(0, reg.handle(out.request, 1.0), 1.0, request=out.request)
    assert bad.requests_to_send() == [], "a refused answer is not retried in a loop"
    assert bad.state() is FlowState.BACKOFF


def test_refresh_while_in_flight_is_coalesced() -> None:
    m = _mgr(credentials=None)
    m.start(0.0)
    out = _one(m)
    assert m.refresh(1.0) is False and m.refresh(2.0) is False
    assert m.requests_to_send() == [] and m.coalesced == 2
    m.receive_response(0, make_response(out.request, 200), 3.0, request=out.request)
    assert m.refresh(4.0) is True
    _one(m)


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None)
def test_backoff_is_full_jitter_within_the_exponential_window(seed: int) -> None:
    retry = RetryPolicy(base_all_down=30, cap=1800)
    m = _mgr(credentials=None, retry=retry, rng=random.Random(seed))
    m.start(0.0)
    now = 0.0
    for n in range(1, 9):
        out = _one(m)
        now += 32.0
        m.receive_response(0, _timeout(), now, request=out.request)
        (down,) = _events(m)
        assert isinstance(down, FlowDown)
        assert 0.0 <= down.retry_in <= min(1800.0, 30.0 * 2 ** (n - 1))
        due = m.get_timer()
        assert due == pytest.approx(now + down.retry_in)
        now = due
        m.handle_timer(now)


def test_retry_after_is_honoured_and_min_expires_is_adopted() -> None:
    m = _mgr(credentials=None)
    m.start(0.0)
    out = _one(m)
    busy = make_response(out.request, 503, extra=[("Retry-After", "120 (maintenance)")])
    m.receive_response(0, busy, 1.0, request=out.request)
    (down,) = _events(m)
    assert isinstance(down, FlowDown) and down.retry_in >= 120.0
    m.handle_timer(1.0 + down.retry_in)
    out = _one(m)
    brief = make_response(out.request, 423, extra=[("Min-Expires", "1800")])
    m.receive_response(0, brief, 200.0, request=out.request)
    out = _one(m)
    assert out.request.headers.get("Expires") == "1800" and m.expires == 1800
    # A hostile Retry-After cannot park the phone for a day.
    m2 = _mgr(credentials=None, retry=RetryPolicy(max_retry_after=600))
    m2.start(0.0)
    out = _one(m2)
    m2.receive_response(
        0, make_response(out.request, 503, extra=[("Retry-After", "86400")]), 0.0,
        request=out.request,
    )  # fmt: skip
    (down,) = _events(m2)
    assert isinstance(down, FlowDown) and 600 <= down.retry_in <= 600 + 600 * 0.5 + 1


def test_two_flows_to_two_edges_fail_over_and_back() -> None:
    m = _mgr((EDGE_A, EDGE_B), credentials=None, instance="urn:uuid:00000000-0000-4000-8000-1")
    m.start(0.0)
    outs = m.requests_to_send()
    assert [o.dest for o in outs] == [EDGE_A, EDGE_B]
    contacts = [o.request.headers.get("Contact") or "" for o in outs]
    assert "reg-id=1" in contacts[0] and "reg-id=2" in contacts[1]
    assert all('+sip.instance="<urn:uuid:' in c for c in contacts)
    assert outs[0].request.call_id != outs[1].request.call_id
    assert all("outbound" in (o.request.headers.get("Supported") or "") for o in outs)
    for o in outs:
        m.receive_response(o.flow, make_response(o.request, 200), 1.0, request=o.request)
    assert m.active_flow(2.0) == 0
    m.flow_failed(0, 10.0)  # edge A's connection died
    assert m.active_flow(10.0) == 1, "calls fail over to the flow on edge B"
    (down,) = [e for e in _events(m) if isinstance(e, FlowDown)]
    assert down.retry_in <= 90.0, "RFC 5626 §4.5 base is 90 s while another flow is up"
    due = m.get_timer()
    assert due is not None
    m.handle_timer(due)
    (again,) = m.requests_to_send()
    assert again.dest == EDGE_A
    m.receive_response(0, make_response(again.request, 200), due, request=again.request)
    assert m.active_flow(due + 1) == 0


def test_offline_buffers_and_online_resumes_with_jitter() -> None:
    m = _mgr((EDGE_A, EDGE_B), credentials=None, retry=RetryPolicy(resume_spread=10.0))
    m.set_online(False, 0.0)
    m.start(0.0)
    assert m.requests_to_send() == [] and m.get_timer() is None
    assert m.refresh(1.0) is False and m.coalesced == 2
    m.set_online(True, 100.0)
    assert m.requests_to_send() == []
    due = m.get_timer()
    assert due is not None and 100.0 <= due < 110.0
    m.handle_timer(110.0)
    assert len(m.requests_to_send()) == 2


def test_address_change_reregisters_from_the_new_contact_and_stop_unregisters() -> None:
    m = _mgr(credentials=None)
    m.start(0.0)
    out = _one(m)
    m.receive_response(0, make_response(out.request, 200), 0.1, request=out.request)
    moved = LocalEndpoint("u7", "sim.example", "198.51.100.9", 40000)
    m.address_changed(moved, 50.0)
    out = _one(m)
    assert "198.51.100.9:40000" in (out.request.headers.get("Contact") or "")
    late = make_response(out.request, 200)
    m.receive_response(0, late, 50.1, request=out.request)
    m.stop(60.0)
    bye = _one(m)
    assert bye.request.headers.get("Expires") == "0"
    assert ";expires=0" in (bye.request.headers.get("Contact") or "")
    assert not m.stopped
    m.receive_response(0, make_response(bye.request, 200), 60.1, request=bye.request)
    assert m.stopped and any(isinstance(e, Unregistered) for e in _events(m))
    assert m.get_timer() is None


def test_invalid_configuration_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        RegistrationManager(LOCAL, [], domain="x")
    with pytest.raises(ConfigError):
        RetryPolicy(refresh_low=0.9, refresh_high=0.5)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_flaky_network_recovers_within_bounds(seed: int) -> None:
    """15 % loss each way (28 % of round trips fail) and two outages: outside the outages
    the phones are registered >= 95 % of the time, every phone is registered again within
    the backoff cap (+ lost attempts) after each outage, and the REGISTER load stays bounded."""
    retry = RetryPolicy(base_all_down=5, base_some_up=15, cap=120)
    outages = [(300.0, 900.0), (1500.0, 1560.0)]
    net = Network(loss=0.15, outages=outages)
    bound = 120 + 3 * (32 + 120)
    samples: list[float] = []
    next_sample = [0.0]

    def settled(t: float) -> bool:
        return t > 60 + bound and not any(a <= t < b + bound for a, b in outages)

    def hook(t: float, managers: list[RegistrationManager]) -> None:
        while next_sample[0] <= t:
            if settled(next_sample[0]):
                up = sum(1 for m in managers if m.registered(next_sample[0]))
                samples.append(up / len(managers))
            next_sample[0] += 5.0

    result = simulate(40, 2400.0, network=net, retry=retry, seed=seed, expires=300, hook=hook)
    assert sum(samples) / len(samples) >= 0.95
    # The first outage outlives every binding (600 s > 300 s): all must come back in bounds.
    # Each lost attempt costs Timer F (32 s) plus a wait of at most the cap (120 s).
    rec = result.recovery(outages[0][1])
    assert len(rec) == 40
    assert rec[int(len(rec) * 0.95)] < 120 + (32 + 120), "p95: back after <= 1 lost attempt"
    assert max(rec) < 120 + 3 * (32 + 120), "everyone: back after <= 3 lost attempts"
    # At most ~one REGISTER per 10 s per phone on average, loss and outages included.
    assert len(result.attempts) / 40 < 2400 / 10


def test_thousand_phones_after_an_outage_do_not_storm() -> None:
    """The edge drops every flow at once and is down for 10 min: with full jitter the edge
    sees a trickle after it comes back; the same backoff without jitter sends every phone
    at the same second (so this test can tell the two apart)."""
    start, end = 200.0, 800.0

    def run(jitter: bool, horizon: float) -> tuple[int, list[float], int]:
        r = simulate(
            1000, end + horizon, network=Network(outages=[(start, end)]),
            retry=RetryPolicy(jitter=jitter), seed=11, expires=3600, crash_at=start,
        )  # fmt: skip
        return r.peak_rate(end, end + horizon), r.recovery(end), r.registered(end + horizon)

    peak, rec, registered = run(True, 1900.0)
    naive_peak, naive_rec, _ = run(False, 600.0)
    assert registered == 1000
    assert naive_peak >= 900, "without jitter the phones come back in lockstep"
    assert peak <= 30, f"{peak} REGISTER/s is a storm"
    assert max(rec) <= 1800 + 64, "full jitter is capped at RFC 5626's 1800 s"
    spread = rec[int(len(rec) * 0.95)] - rec[int(len(rec) * 0.05)]
    assert spread > 600 and max(naive_rec) - min(naive_rec) < 1.0
