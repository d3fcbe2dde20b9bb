"""The IMSI/IMEI/MSISDN trust-boundary validator on real header shapes (TS 24.229, RFC 3325,
RFC 7254, RFC 7315) and fuzzed input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from callward.privacy.trust_boundary import Exposure, find_exposures, strip_exposures

IMSI = "262011234567890"
MSISDN = "+4915112345678"
HEADERS = [
    ("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1"),
    ("From", f'"Alice" <sip:{MSISDN}@ims.mnc001.mcc262.3gppnetwork.org;user=phone>;tag=a1'),
    ("To", "<sip:+4930123456@example.net;user=phone>"),
    ("P-Asserted-Identity", f"<tel:{MSISDN}>"),
    ("P-Access-Network-Info", "3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=2620100A2B3C4D5E"),
    ("Contact", f'<sip:{IMSI}@10.0.0.7:5060>;+sip.instance="<urn:gsma:imei:35209900-176148-1>"'),
    ("Call-Info", f"<http://ims.example/photo?msisdn={MSISDN}>;purpose=icon"),
    ("X-Subscriber", f"imsi={IMSI}"),
    ("Authorization", f'Digest username="{IMSI}@ims.mnc001.mcc262.3gppnetwork.org"'),
    ("Max-Forwards", "70"),
]


def test_finds_every_exposure_kind() -> None:
    found = set(find_exposures(HEADERS))
    assert Exposure("from", "msisdn") in found
    assert Exposure("p-asserted-identity", "msisdn") in found
    assert Exposure("p-access-network-info", "location") in found
    assert Exposure("contact", "imei") in found and Exposure("contact", "imsi") in found
    assert Exposure("x-subscriber", "imsi") in found
    assert Exposure("authorization", "imsi") in found
    assert not [e for e in found if e.header in ("via", "max-forwards")]


def test_strip_leaves_nothing_exposed_but_the_destination() -> None:
    out = strip_exposures(HEADERS)
    names = [n.lower() for n, _ in out]
    assert "p-asserted-identity" not in names and "p-access-network-info" not in names
    assert "x-subscriber" not in names
    blob = "\r\n".join(f"{n}: {v}" for n, v in out)
    for secret in (IMSI, MSISDN[1:], "35209900-176148"):
        assert secret not in blob, secret
    remaining = {e.header for e in find_exposures(out)}
    assert remaining <= {"to"}  # the callee's number is what the peer must route
    assert dict(out)["Max-Forwards"] == "70" and "tag=a1" in dict(out)["From"]


@given(st.lists(st.tuples(st.text(max_size=30), st.text(max_size=300)), max_size=20))
def test_fuzzed_headers_never_crash_and_stripping_is_idempotent(headers) -> None:
    once = strip_exposures(headers)
    assert strip_exposures(once) == once
    find_exposures(headers)
