"""The trust-boundary hook (edge.hooks.BoundaryFilter) with the privacy area's filter: what the
edge sends to a peer in ``edge.untrusted`` carries no IMSI, IMEI or MSISDN beyond the
destination it must reach, and the call still completes."""

from __future__ import annotations

from callward.edge.flow import Peer
from callward.privacy.boundary_filter import TrustBoundaryFilter
from callward.privacy.trust_boundary import find_exposures

TRUNK = Peer("udp", "127.0.0.1", 5080)
MSISDN = "+447700900123"
IMSI = "234150999999999"
CALLEE = "+442079460000"
IDENTITY = (
    ("P-Asserted-Identity", f"<sip:{MSISDN}@callward.local;user=phone>"),
    ("P-Access-Network-Info", "3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=2341500A2B3C4D5E"),
    ("X-Subscriber-IMSI", f"imsi={IMSI}"),
    ("Contact", f'<sip:{MSISDN}@10.9.8.7:5060>;+sip.instance="<urn:gsma:imei:35209900-176148-1>"'),
)


def _core(h, mode: str):
    core, _, _ = h.make_core(
        routes=((CALLEE, f"sip:{CALLEE}@127.0.0.1:5080"),), untrusted=("127.0.0.1:5080",)
    )
    core.hooks.boundary = TrustBoundaryFilter(mode, b"s" * 32)
    return core


def _invite(h, call_id: str) -> bytes:
    return h.build("INVITE", f"sip:{CALLEE}@callward.local", call_id=call_id,
                   from_=f"<sip:{MSISDN}@callward.local;user=phone>",
                   to=f"<sip:{CALLEE}@callward.local>", extra=IDENTITY)  # fmt: skip


def test_invite_to_an_untrusted_trunk_is_stripped_and_the_call_completes(h) -> None:
    core = _core(h, "strip")
    net = h.Net(core)
    out = net.send(_invite(h, "b-1"))
    ((dest, inv),) = h.requests(out, "INVITE")
    assert dest.port == 5080
    text = bytes(inv).decode()
    for secret in (MSISDN[1:], IMSI, "35209900", "2341500A2B3C4D5E"):
        assert secret not in text, secret
    assert "P-Asserted-Identity" not in text and "X-Subscriber-IMSI" not in text
    assert CALLEE in str(inv.uri) and inv.from_.tag == "fa"  # destination and dialog kept
    assert {e.header for e in find_exposures(inv.headers)} <= {"to"}
    assert core.hooks.boundary.exposures["msisdn"] >= 2  # type: ignore[union-attr]
    (ok,) = h.responses(net.send(h.reply(inv, 200), TRUNK))
    assert ok.status == 200 and ok.from_.tag == "fa"  # relayed back to the caller


def test_pseudonymise_gives_the_trunk_a_stable_token_not_the_number(h) -> None:
    net = h.Net(_core(h, "pseudonymise"))
    users = []
    for cid in ("p-1", "p-2"):
        ((_, inv),) = h.requests(net.send(_invite(h, cid)), "INVITE")
        assert MSISDN[1:] not in bytes(inv).decode()
        users.append(inv.from_.uri.user)
    assert users[0] == users[1] and users[0].startswith("pn")


def test_responses_to_an_untrusted_caller_lose_the_callee_identity(h) -> None:
    core, _, _ = h.make_core(routes=(("bob", "sip:bob@127.0.0.1:5092"),),
                               untrusted=("127.0.0.1:5080",))  # fmt: skip
    core.hooks.boundary = TrustBoundaryFilter("strip")
    net = h.Net(core)
    out = net.send(h.build("INVITE", "sip:bob@callward.local", src=TRUNK, call_id="in-1"), TRUNK)
    ((_, inv),) = h.requests(out, "INVITE")
    pai = ("P-Asserted-Identity", f"<tel:{MSISDN}>")
    out = net.send(h.reply(inv, 200, extra=(pai, ("X-Line", MSISDN))), h.BOB)
    (ok,) = h.responses(out, 200)
    assert MSISDN[1:] not in bytes(ok).decode()


def test_off_and_no_hook_leave_headers_alone(h) -> None:
    net = h.Net(_core(h, "off"))
    ((_, inv),) = h.requests(net.send(_invite(h, "o-1")), "INVITE")
    assert "X-Subscriber-IMSI" in bytes(inv).decode()


def test_the_sealed_contact_does_not_decode_to_the_inside(h) -> None:
    import base64

    net = h.Net(_core(h, "off"))  # topology hiding alone, no header filter
    ((_, inv),) = h.requests(net.send(_invite(h, "t-1")), "INVITE")
    (sealed,) = inv.contacts
    token = str(sealed.uri.user)
    raw = base64.urlsafe_b64decode(token[1:] + "=" * (-len(token[1:]) % 4))
    assert b"10.9.8.7" not in raw and MSISDN[1:].encode() not in raw  # encrypted, not encoded
