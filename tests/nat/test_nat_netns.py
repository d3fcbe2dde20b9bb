"""A phone behind a real NAT (network namespaces + nftables masquerade, built here by
``benchmarks/netns_lab.py``) registers through a callward edge, is called by a phone on the
public side, and carries audio both ways over ICE (RFC 8445) — DTLS-SRTP over the pair — via
its STUN server-reflexive mapping, and (plain RTP) via a coturn relay. Then Wi-Fi is lost mid-call: the phone moves to the cellular
uplink (new address, new NAT); the phone notices from the route to its edge
(``nat/route_watch.py``), re-registers, and re-INVITEs with an ICE restart; audio flows
again over the new mapping and the call ends cleanly. Skips (with the reason) without root,
iproute2, nftables or coturn."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from callward.config import CallwardConfig, EdgeConfig
from callward.nat.network_cache import CandidatePair, NetworkCache, NetworkKey
from callward.nat.route_watch import RouteWatch
from callward.nat.turn_choice import TurnServer
from callward.ua.call_handle import Call
from callward.ua.ice_media import IceAudio
from callward.ua.ice_session import IceAgent, measure_rtt
from callward.ua.phone import Phone
from callward.ua.registration_agent import RegistrationAgent
from netns_lab import NamespaceLoop, NatLab, unavailable
from peers import CALLWARD_CLI, stop

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

REALM = "callward.local"
TURN_PORT, EDGE_PORT = 25110, 25120  # mobile12's block; bound on the lab's own address
WIFI = NetworkKey("wlan0", "192.168.25.1")
CELL = NetworkKey("rmnet0", "100.64.25.1")


@pytest.fixture
def lab() -> Iterator[NatLab]:
    why = unavailable()
    if why is not None:
        pytest.skip(f"why: {why}")
    nat = NatLab()
    nat.setup()
    try:
        yield nat
    finally:
        nat.teardown()


@pytest.fixture
def coturn(lab: NatLab, tmp_path: Path) -> Iterator[TurnServer]:
    turnserver = shutil.which("turnserver")
    if turnserver is None:
        pytest.skip("why: coturn (turnserver) not installed")
    proc = subprocess.Popen(
        [turnserver, "-n", f"--listening-ip={lab.public}", f"--listening-port={TURN_PORT}",
         "--realm=test", "--lt-cred-mech", "--user=u:p", "--no-tls", "--no-dtls", "--no-cli",
         "--min-port=25400", "--max-port=25499", f"--log-file={tmp_path / 'turn.log'}",
         "--simple-log", f"--pidfile={tmp_path / 'turn.pid'}",
         f"--userdb={tmp_path / 'turn.db'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server = TurnServer(lab.public, TURN_PORT, "u", "p", region="eu")
    try:
        deadline = time.monotonic() + 10
        while asyncio.run(measure_rtt((server.host, server.port), timeout=0.2)) is None:
            assert time.monotonic() < deadline, "coturn did not start"
        yield server
    finally:
        stop(proc)


@pytest.fixture
async def edge(lab: NatLab, tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    edge_mod = pytest.importorskip("callward.edge.app")
    subs_mod = pytest.importorskip("callward.edge.subscribers")
    db = tmp_path / "subs.sqlite"
    cfg = CallwardConfig(
        edge=EdgeConfig(
            listen=[f"udp:{lab.public}:{EDGE_PORT}", f"tcp:{lab.public}:{EDGE_PORT}"], realm=REALM, domains=[REALM],
            subscribers=f"sqlite:{db}", auth_secret="k" * 32,
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


@pytest.fixture
async def phone_ns(lab: NatLab) -> AsyncIterator[NamespaceLoop]:
    ns = NamespaceLoop(lab.phone_ns)
    yield ns
    ns.close()


class Side:
    """One phone with its registration, ICE agent and audio, all on one event loop."""

    phone: Phone
    reg: RegistrationAgent
    agent: IceAgent
    audio: IceAudio
    call: Call
    watch: RouteWatch

    async def start(
        self, user: str, host: str, edge: tuple[str, int], agent: dict[str, Any],
        transport: str = "udp", security: str = "rtp",
    ) -> None:  # fmt: skip
        self.phone = await Phone.start(user, host=host, transport=transport, password=f"pw-{user}")
        self.phone.media_security = security
        self.phone.nat_contact = True  # Contact = where the edge sees us (behind the NAT)
        self.reg = await RegistrationAgent.start(
            self.phone, [edge], domain=REALM, expires=300, instance=f"urn:uuid:{uuid.uuid4()}"
        )
        await self.reg.wait_registered(5)
        await asyncio.wait_for(self.reg.settled.wait(), 5)
        self.agent = IceAgent(pair_cache=NetworkCache(ttl=3600), **agent)
        await self.agent.gather(fast=False)
        self.phone.ice = self.agent
        self.audio = IceAudio(self.agent)

    async def answer(self) -> None:
        self.call = await self.phone.next_call(30)
        await self.call.ring()
        await self.call.answer()
        await self.call.wait_confirmed(5)

    async def connect(self) -> CandidatePair:
        assert self.call.leg.remote_sdp is not None
        pair = await self.agent.connect_sdp(self.call.leg.remote_sdp)
        self.audio.start()
        return pair

    async def secure(self) -> str:
        """DTLS-SRTP over the ICE pair, in the role the SDP gave us."""
        stream = self.call.negotiated()
        assert stream is not None
        done = await self.audio.secure_dtls(stream, self.phone.dtls_certificate)
        return done.profile.value

    async def talk(self, packets: int) -> tuple[int, int]:
        before = self.audio.packets_received
        sent = await self.audio.send_audio(packets)
        await asyncio.sleep(0.3)
        return sent, self.audio.packets_received - before

    def local_types(self) -> set[str]:
        return {c.type for c in self.agent._require().local_candidates}

    async def close(self) -> None:
        with contextlib.suppress(AttributeError):
            await self.audio.close()
        with contextlib.suppress(AttributeError):
            await self.agent.close()
        with contextlib.suppress(AttributeError):
            await self.phone.close()


def _remote_host(agent: IceAgent) -> str:
    assert agent.selected is not None
    return agent.selected.remote[0]


async def test_behind_nat_via_stun_then_wifi_to_cellular_mid_call(
    lab: NatLab, coturn: TurnServer, edge: tuple[str, int], phone_ns: NamespaceLoop
) -> None:
    stun = (coturn.host, coturn.port)
    alice, bob = Side(), Side()  # alice behind the NAT (phone namespace), bob public
    try:
        await phone_ns.run(
            alice.start(
                "alice",
                lab.wifi_addr,
                edge,
                {"controlling": False, "network": WIFI, "stun_server": stun},
                security="dtls",
            )
        )
        await bob.start("bob", lab.public, edge, {"controlling": True, "network": WIFI},
                        security="dtls")  # fmt: skip
        srflx = [c for c in alice.agent._require().local_candidates if c.type == "srflx"]
        assert [c.host for c in srflx] == [lab.wifi_nat], "STUN saw the NAT's public address"
        assert alice.local_types() == {"host", "srflx"}
        assert alice.phone.local.host == lab.wifi_nat, "alice's Contact: her NAT mapping"

        bob.call = bob.phone.dial(f"sip:alice@{REALM}", dest=edge)
        await phone_ns.run(alice.answer())
        assert await bob.call.wait_final() == 200
        b_pair, _ = await asyncio.gather(bob.connect(), phone_ns.run(alice.connect()))
        assert b_pair.remote[0] == lab.wifi_nat, "bob reaches alice at her NAT mapping"
        profiles = await asyncio.gather(bob.secure(), phone_ns.run(alice.secure()))
        assert profiles[0] == profiles[1], "DTLS-SRTP over the ICE pair: same SRTP profile"
        (a_sent, a_got), (b_sent, b_got) = await asyncio.gather(
            phone_ns.run(alice.talk(25)), bob.talk(25)
        )
        assert a_sent == b_sent == 25
        assert a_got >= 23 and b_got >= 23, (a_got, b_got)

        # Wi-Fi lost mid-call: the phone notices (the route to the edge now leaves from a new
        # address), regathers ICE and hands over: re-register + re-INVITE with ICE restart.
        bob.call.media_changed.clear()
        old_ufrag = alice.agent.credentials[0]

        async def watch() -> asyncio.Future[list[int]]:
            moved: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()

            async def on_change(new: str) -> None:
                alice.agent.network = CELL
                await alice.agent.gather(fast=False)
                moved.set_result(await alice.phone.handover(new))

            alice.watch = RouteWatch(edge, alice.phone.local_addr[0], on_change, interval=0.2)
            alice.watch.start()
            return moved

        moved = await phone_ns.run(watch())
        lab.to_cellular()
        lost = time.monotonic()

        async def wait_moved() -> list[int]:
            statuses = await asyncio.wait_for(moved, 20)
            await alice.watch.stop()
            return statuses

        assert await phone_ns.run(wait_moved()) == [200]
        assert alice.agent.credentials[0] != old_ufrag, "an ICE restart: new credentials"
        await asyncio.wait_for(bob.call.media_changed.wait(), 5)
        b_pair, _ = await asyncio.gather(bob.connect(), phone_ns.run(alice.connect()))
        assert b_pair.remote[0] == lab.cell_nat, "bob now reaches alice via the cellular NAT"
        # The DTLS association (and its SRTP keys) outlives the ICE restart: still SRTP only.
        (a_sent, a_got), (b_sent, b_got) = await asyncio.gather(
            phone_ns.run(alice.talk(25)), bob.talk(25)
        )
        assert a_got >= 23 and b_got >= 23, (a_got, b_got)
        # Wi-Fi lost -> detected, re-registered, re-INVITEd, ICE restarted, then 0.8 s of SRTP
        # talk: bounded (1.03-1.07 s measured, load average 6.5 on 2 cores).
        took = time.monotonic() - lost
        assert took < 8.0, f"handover took {took:.1f} s"
        assert alice.phone.local_addr[0] == lab.cell_addr
        assert bob.audio._rx is not None and alice.audio._rx is not None

        async def registered_again() -> bool:
            for _ in range(50):
                if alice.reg.registered():
                    return True
                await asyncio.sleep(0.1)
            return False

        assert await phone_ns.run(registered_again()), "re-registered from the new address"
        assert await phone_ns.run(alice.call.hangup()) == 200, "alice's BYE reaches bob"
        assert await bob.call.wait_ended(5) == "bye"
    finally:
        await phone_ns.run(alice.close())
        await bob.close()


async def test_behind_nat_via_turn_relay(
    lab: NatLab, coturn: TurnServer, edge: tuple[str, int], phone_ns: NamespaceLoop
) -> None:
    alice, bob = Side(), Side()
    try:
        await phone_ns.run(alice.start("alice", lab.wifi_addr, edge, {
            "controlling": False, "network": WIFI, "turn_servers": [coturn],
            "relay_only": True}))  # fmt: skip
        await bob.start("bob", lab.public, edge, {"controlling": True, "network": WIFI})
        assert alice.local_types() == {"relay"}
        relay = alice.agent.default_address()
        assert relay[0] == lab.public and 25400 <= relay[1] <= 25499, relay

        bob.call = bob.phone.dial(f"sip:alice@{REALM}", dest=edge)
        await phone_ns.run(alice.answer())
        assert await bob.call.wait_final() == 200
        stream = bob.call.negotiated()
        assert stream is not None and (stream.remote_address, stream.remote_port) == relay
        b_pair, a_pair = await asyncio.gather(bob.connect(), phone_ns.run(alice.connect()))
        assert a_pair.local_type == "relay" and a_pair.turn_server == coturn.name
        assert b_pair.remote == relay, "bob's media goes to the TURN relay"
        (a_sent, a_got), (b_sent, b_got) = await asyncio.gather(
            phone_ns.run(alice.talk(25)), bob.talk(25)
        )
        assert a_sent == b_sent == 25
        assert a_got >= 23 and b_got >= 23, (a_got, b_got)
        assert await bob.call.hangup() == 200, "bob's BYE reaches alice behind the NAT"
    finally:
        await phone_ns.run(alice.close())
        await bob.close()


async def test_cli_phone_calls_with_ice_from_behind_nat(
    lab: NatLab, coturn: TurnServer, edge: tuple[str, int]
) -> None:
    """``callward phone call --ice --stun`` run inside the phone namespace (``ip netns exec``)
    calls bob on the public side through the edge; media flows both ways over ICE."""
    bob = Side()
    cmd = ["ip", "netns", "exec", lab.phone_ns, *CALLWARD_CLI, "phone", "call",
           f"sip:bob@{REALM}", "--proxy", f"{edge[0]}:{edge[1]}", "--register", "--domain",
           REALM, "--user", "alice", "--ice", "--stun", f"{coturn.host}:{coturn.port}",
           "--seconds", "1.5", "--srtp", "none", "--timeout", "12", "--json"]  # fmt: skip
    env = {**os.environ, "CALLWARD_PHONE_PASSWORD": "pw-alice"}
    try:
        # bob on TCP: an offer with ICE candidates makes an INVITE above 1300 bytes, which the
        # CLI phone and the edge send over TCP (RFC 3261 §18.1.1).
        await bob.start("bob", lab.public, edge, {"controlling": False, "network": WIFI}, "tcp")
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
        try:
            await bob.answer()
            pair = await bob.connect()
            _, got = await bob.talk(60)
            out, err = await asyncio.wait_for(proc.communicate(), 40)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, err.decode()[-500:]
        result = json.loads(out)
        assert result["status"] == 200 and result["bye_status"] == 200, result
        assert pair.remote[0] == lab.wifi_nat, "bob reaches the CLI phone at its NAT mapping"
        assert result["rtp"]["packets_received"] >= 55, result
        assert got >= 70, f"bob received {got} of the CLI phone's 75 packets"
        assert await bob.call.wait_ended(5) == "bye"
    finally:
        await bob.close()


async def test_cli_to_cli_with_ice_through_the_nat(
    lab: NatLab, coturn: TurnServer, edge: tuple[str, int]
) -> None:
    """Both ends are ``callward phone`` processes: ``answer --ice`` on the public side (TCP,
    registered), ``call --ice --turn --relay-only`` behind the NAT: media through coturn."""
    env = {**os.environ, "CALLWARD_PHONE_PASSWORD": "pw-bob"}
    answer = [*CALLWARD_CLI, "phone", "answer", "--listen", f"{lab.public}:25160", "--transport",
              "tcp", "--user", "bob", "--register", "--proxy", f"{edge[0]}:{edge[1]}",
              "--domain", REALM, "--ice", "--srtp", "none", "--calls", "1", "--timeout", "30",
              "--json"]  # fmt: skip
    call = ["ip", "netns", "exec", lab.phone_ns, *CALLWARD_CLI, "phone", "call",
            f"sip:bob@{REALM}", "--proxy", f"{edge[0]}:{edge[1]}", "--register", "--domain",
            REALM, "--user", "alice", "--ice", "--turn", f"u:p@{coturn.host}:{coturn.port}",
            "--relay-only", "--seconds", "2", "--srtp", "none", "--timeout", "20", "--json"]  # fmt: skip
    bob = await asyncio.create_subprocess_exec(
        *answer, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:
        assert bob.stderr is not None
        line = b""
        while b"answering on" not in line:
            line = await asyncio.wait_for(bob.stderr.readline(), 20)
            assert line, "the answering phone exited"
        alice = await asyncio.create_subprocess_exec(
            *call, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "CALLWARD_PHONE_PASSWORD": "pw-alice"},
        )  # fmt: skip
        a_out, a_err = await asyncio.wait_for(alice.communicate(), 40)
        b_out, _ = await asyncio.wait_for(bob.communicate(), 20)
    finally:
        if bob.returncode is None:
            bob.kill()
            await bob.wait()
    assert alice.returncode == 0, a_err.decode()[-500:]
    caller, callee = json.loads(a_out), json.loads(b_out)
    assert caller["ice"] == {"local_candidate": "relay", "relayed": True}, caller
    assert caller["status"] == 200 and caller["bye_status"] == 200, caller
    (answered,) = callee["answered"]
    assert answered["end_reason"] == "bye", callee
    assert caller["rtp"]["packets_received"] >= 80, caller  # bob's 100 packets (2 s)
    assert answered["rtp"]["packets_received"] >= 80, callee  # alice's 100, through coturn
