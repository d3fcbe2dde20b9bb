"""Emergency calls: numbers recognised per region (3GPP TS 22.101 §10.1), routes resolved when
the plan is prepared (no DNS at call time), and a call to 999 in GB reaching the emergency
route as ``urn:service:sos`` with the RFC 6442 location reference while the registration is
down; an ordinary call from the same phone carries no location, and no log shows it."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from callward.errors import ConfigError
from callward.ua.emergency import emergency_number, prepare_plan
from callward.ua.phone import Phone
from callward.ua.registration_agent import RegistrationAgent
from peers import free_port

pytestmark = pytest.mark.timeout(60)
LOCATION = "https://lis.example/loc/7f3a9c"


@pytest.mark.parametrize(
    ("target", "region", "expected"),
    [
        ("112", "US", "112"), ("911", "GB", "911"), ("999", "GB", "999"), ("999", "US", None),
        ("tel:000", "AU", "000"), ("sip:112@callward.local", "EU", "112"),
        ("sip:alice@callward.local", "GB", None), ("urn:service:sos.police", "US", "sos"),
        ("https://example.org/112", "US", None), ("+441632960112", "GB", None),
    ],
)  # fmt: skip
def test_numbers_per_region(target: str, region: str, expected: str | None) -> None:
    assert emergency_number(target, region) == expected


async def test_plan_resolved_in_advance_and_private() -> None:
    asked: list[str] = []

    async def resolver(host: str, port: int) -> list[tuple[str, int]]:
        asked.append(host)
        if host == "down.example":
            raise OSError("NXDOMAIN")
        return [("192.0.2.10", port)]

    plan = await prepare_plan(
        "gb", ["down.example:5060", "sos.example:5060"], location=LOCATION, resolver=resolver
    )
    assert plan.routes == (("192.0.2.10", 5060),) and asked == ["down.example", "sos.example"]
    assert LOCATION not in repr(plan) and "192.0.2.10" not in repr(plan)
    assert ("Geolocation", f"<{LOCATION}>") in plan.headers()
    with pytest.raises(ConfigError):
        await prepare_plan("GB", ["down.example:5060"], resolver=resolver)
    with pytest.raises(ConfigError):
        await prepare_plan("XX", ["sos.example:5060"], resolver=resolver)
    with pytest.raises(ConfigError):
        await prepare_plan("GB", ["sos.example:5060"], location="http://x", resolver=resolver)


async def test_999_goes_out_while_registration_is_down(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    psap = await Phone.start("psap", auto_answer=True)
    bob = await Phone.start("bob", auto_answer=True)
    alice = await Phone.start("alice", password="pw-alice")
    psap_port = psap.local_addr[1]

    async def dns(host: str, port: int) -> list[tuple[str, int]]:
        return [("127.0.0.1", port)]

    try:
        alice.emergency = await prepare_plan(
            "GB", [f"psap.example:{psap_port}"], location=LOCATION, resolver=dns
        )
        # Registration down: the registrar does not exist.
        await RegistrationAgent.start(alice, [("127.0.0.1", free_port())], domain="x.example")
        call = await alice.call("999")
        assert call.status == 200
        assert alice.registration is not None and not alice.registration.registered()
        (sos,) = psap.calls.values()
        invite: Any = sos.leg.invite
        assert str(invite.uri) == "urn:service:sos"
        assert invite.headers.get("Geolocation") == f"<{LOCATION}>"
        assert invite.headers.get("Geolocation-Routing") == "yes"
        assert invite.headers.get("Resource-Priority") == "esnet.1"
        await call.hangup()
        ordinary = await alice.call(f"sip:bob@127.0.0.1:{bob.local_addr[1]}")
        assert ordinary.status == 200
        (plain,) = bob.calls.values()
        assert plain.leg.invite is not None
        assert plain.leg.invite.headers.get("Geolocation") is None, "location only to the PSAP"
        await ordinary.hangup()
    finally:
        await alice.close()
        await psap.close()
        await bob.close()
    assert LOCATION not in caplog.text
