"""Path MTU on a small-MTU link (RFC 3261 §18.1.1), in network namespaces this test builds
(``benchmarks/netns_lab.py``: every veth at MTU 1000, the phone behind a masquerade NAT). The
phone probes the path MTU from the kernel (1000), registers over UDP, then places a call whose
INVITE is larger than MTU - 200: it goes over TCP through the NAT and the call is answered.
tshark on the phone's link confirms that no UDP datagram above 1000 bytes, and no IP fragment,
left the phone. Skips (with the reason) without root, iproute2, nftables or tshark."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from callward.config import CallwardConfig, EdgeConfig
from callward.ua.phone import Phone
from callward.ua.registration_agent import RegistrationAgent
from netns_lab import NamespaceLoop, NatLab, unavailable
from peers import stop

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

REALM = "callward.local"
EDGE_PORT = 25130
MTU = 1000
PAD_LINES = 3


@pytest.fixture
def lab() -> Iterator[NatLab]:
    why = unavailable() or (None if shutil.which("tshark") else "tshark not installed")
    if why is not None:
        pytest.skip(f"why: {why}")
    nat = NatLab(tag="251", mtu=MTU)
    nat.setup()
    try:
        yield nat
    finally:
        nat.teardown()


@pytest.fixture
async def edge(lab: NatLab, tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    edge_mod = pytest.importorskip("callward.edge.app")
    subs_mod = pytest.importorskip("callward.edge.subscribers")
    db = tmp_path / "subs.sqlite"
    cfg = CallwardConfig(
        edge=EdgeConfig(
            listen=[f"udp:{lab.public}:{EDGE_PORT}", f"tcp:{lab.public}:{EDGE_PORT}"],
            realm=REALM, domains=[REALM], subscribers=f"sqlite:{db}", auth_secret="k" * 32,
            max_backlog=5.0,  # a loaded CI host must not shed our one INVITE
        )
    )  # fmt: skip
    subscribers = subs_mod.SqliteSubscribers(db)
    for user in ("alice", "bob"):
        subscribers.put(subs_mod.Subscriber.from_password(user, REALM, f"pw-{user}"))
    node = edge_mod.EdgeNode(cfg, subscribers=subscribers)
    await node.start()
    try:
        yield lab.public, EDGE_PORT
    finally:
        with contextlib.suppress(Exception):
            await node.stop()


def _capture(lab: NatLab, pcap: Path) -> subprocess.Popen[bytes]:
    iface = f"cw{lab.tag}wp1"  # the phone's Wi-Fi link
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.phone_ns, "tshark", "-q", "-i", iface, "-w", str(pcap)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 15
    while b"Capturing on" not in proc.stderr.read1(4096):  # type: ignore[attr-defined]
        assert time.monotonic() < deadline and proc.poll() is None, "tshark did not start"
    return proc


async def test_small_mtu_link_large_invite_over_tcp_no_datagram_above_mtu(
    lab: NatLab, edge: tuple[str, int], tmp_path: Path
) -> None:
    pcap = tmp_path / "phone.pcapng"
    tshark = _capture(lab, pcap)
    ns = NamespaceLoop(lab.phone_ns)
    # bob on TCP: the edge relays the large INVITE onward over TCP too (§18.1.1).
    bob = await Phone.start(
        "bob", host=lab.public, transport="tcp", password="pw-bob", auto_answer=True
    )

    sizes: list[int] = []

    async def alice_calls() -> tuple[int | None, int, bool, int]:
        alice = await Phone.start("alice", host=lab.wifi_addr, password="pw-alice")
        try:
            mtu = alice.probe_mtu(edge)
            alice.nat_contact = True
            reg = await RegistrationAgent.start(
                alice, [edge], domain=REALM, expires=300, instance=f"urn:uuid:{uuid.uuid4()}"
            )
            await reg.wait_registered(5)
            # An offer padded so the INVITE is 800-1300 bytes: UDP if the MTU were unknown
            # (1300), TCP because the probed MTU says 1000 - 200.
            big = alice.make_offer() + b"".join(
                b"a=x-pad%d:%s\r\n" % (i, b"p" * 60) for i in range(PAD_LINES)
            )
            call = await alice.call(f"sip:bob@{REALM}", sdp=big, dest=edge)
            status = call.status
            assert call.leg.invite is not None
            sizes.append(len(bytes(call.leg.invite)))
            if status == 200:
                await call.hangup()
            return mtu, status, alice._side_tcp is not None, alice.mtu_refused
        finally:
            await alice.close()

    try:
        b_reg = await RegistrationAgent.start(bob, [edge], domain=REALM, expires=300)
        await b_reg.wait_registered(5)
        mtu, status, used_tcp, refused = await ns.run(alice_calls(), timeout=40)
        assert mtu == MTU, "the kernel's path MTU toward the edge: the veth's"
        assert status == 200 and used_tcp, "the large INVITE went over TCP and was answered"
        assert refused == 0
        assert MTU - 200 < sizes[0] <= 1300, f"INVITE of {sizes[0]} B: TCP only by the MTU rule"
    finally:
        await bob.close()
        ns.close()
        await asyncio.sleep(0.5)
        stop(tshark, sig=2)
    fields = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y", "ip", "-T", "fields", "-e", "ip.len", "-e", "ip.proto",
         "-e", "ip.flags.mf", "-e", "ip.frag_offset"],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")  # fmt: skip
    rows = [r.split("\t") for r in fields if r.strip()]
    udp = [int(r[0]) for r in rows if r[1] == "17"]
    tcp = [int(r[0]) for r in rows if r[1] == "6"]
    assert udp and tcp, "REGISTER over UDP, a TCP connection for the INVITE"
    assert max(udp) <= MTU, f"a UDP datagram of {max(udp)} bytes left a {MTU}-byte link"
    assert all(r[2] in ("0", "False", "") and r[3] in ("0", "") for r in rows), "no fragments"
