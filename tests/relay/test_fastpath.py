"""The C accelerator (``relay/_fastpath.c``) against the reference packet path.

Two relays run side by side on real loopback sockets, one with the accelerator and one
without (the reference, :meth:`MediaCore.receive_datagram` alone), over the same script of
datagrams and the same clock: steady SRTP and RTP, a reordered and a duplicated packet, a
replay, a forged auth tag, RTCP, a DTMF payload type, a sequence jump (RFC 3550 A.1's two-
packet resync), a packet from another address, a sequence-number wrap. After every wake-up
both relays must hold the same counters, receiver statistics (jitter to the last bit),
SRTP packet counts and last-forwarded header, and the callee must have received the same
bytes from both. The accelerated relay must have forwarded most packets itself.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from callward.relay import fastpath
from callward.relay.leg import LegConfig
from callward.relay.media_core import MediaCore
from callward.relay.ng_daemon import pump
from callward.rtp.packet import RtpPacket
from callward.rtp.rtcp import ReceiverReport, serialize_rtcp
from callward.rtp.srtp import SrtpContext, SrtpKeying

pytestmark = pytest.mark.skipif(
    not fastpath.available(),
    reason="why: the C accelerator is not built (no compiler) or CALLWARD_PURE_PYTHON=1",
)

K_A = SrtpKeying.generate()  # caller -> relay
K_A_OUT = SrtpKeying.generate()  # relay -> caller
K_B = SrtpKeying.generate()  # callee -> relay
K_B_OUT = SrtpKeying.generate()  # relay -> callee


def udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


class Rig:
    """One relay call (two RTP sockets, rtcp-mux) between a caller and a callee socket."""

    def __init__(self, *, accel: bool, srtp_a: bool, srtp_b: bool) -> None:
        self.caller, self.callee, self.other = udp(), udp(), udp()
        self.ra, self.rb = udp(), udp()
        self.ports = (self.ra.getsockname()[1], self.rb.getsockname()[1])
        self.sockets = {self.ports[0]: self.ra, self.ports[1]: self.rb}
        a = LegConfig("a", bind_port=0, remote=self.caller.getsockname(),
                      srtp_rx=K_A if srtp_a else None, srtp_tx=K_A_OUT if srtp_a else None,
                      trusted=not srtp_a)  # fmt: skip
        b = LegConfig("b", bind_port=0, remote=self.callee.getsockname(),
                      srtp_rx=K_B if srtp_b else None, srtp_tx=K_B_OUT if srtp_b else None,
                      trusted=not srtp_b)  # fmt: skip
        self.core = MediaCore("c1", a, b, 0.0, stats_interval_s=3600.0, rtp_timeout_s=3600.0)
        self.accel = accel

    def wake(self, leg: int, now: float) -> None:
        if not self.accel:
            self.core.fast = None
        pump(self.core, leg, False, (self.ra, self.rb)[leg], self.ports, self.sockets, now)

    def snapshot(self) -> dict[str, Any]:
        """The whole state (the accelerator's written back), then armed again as the daemon
        does after the reference path ran."""
        out = state(self.core)
        if self.accel:
            fastpath.arm(self.core, 0)
        return out

    def received(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.callee.recv(4096))
            except BlockingIOError:
                return out

    def close(self) -> None:
        for s in (self.caller, self.callee, self.other, self.ra, self.rb):
            s.close()


def state(core: MediaCore) -> dict[str, Any]:
    core.fast_sync()
    out: dict[str, Any] = {"sent_at": list(core.sent_at), "last_rtp": list(core.last_rtp)}
    for i in (0, 1):
        c = core.counters[i]
        d = {f.name: getattr(c, f.name) for f in dataclasses.fields(c) if f.name != "stats"}
        d["stats"] = {k: (vars(v) | {}) for k, v in c.stats.items()}
        out[f"counters{i}"] = d
        out[f"leg{i}"] = core.leg_stats(i)
        leg = core.legs[i]
        out[f"srtp{i}"] = (leg.rx.packets if leg.rx else None, leg.tx.packets if leg.tx else None)
        out[f"latch{i}"] = leg.latched_ssrc
    return out


class Counting:
    """The accelerator module, counting the packets its drain() forwarded itself."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.FastLeg = real.FastLeg
        self.forwarded = 0

    def drain(self, fd_in: int, fd_out: int, fl: Any, now: float, budget: int) -> Any:
        before = fl.packets_in
        slow = self.real.drain(fd_in, fd_out, fl, now, budget)
        self.forwarded += fl.packets_in - before
        return slow


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> Counting:
    proxy = Counting(fastpath.ACCEL)
    monkeypatch.setattr(fastpath, "ACCEL", proxy)
    return proxy


def script() -> Iterator[tuple[str, list[tuple[int, int, int]]]]:
    """(sender, [(seq, timestamp, payload type)]) per wake-up; sender 'other' is a second
    address sending the caller's stream."""
    seq = 65500  # wraps past 65535 on the way
    for burst in range(12):
        yield "caller", [((seq + k) & 0xFFFF, (seq + k) * 160, 0) for k in range(3 + burst % 4)]
        seq += 3 + burst % 4
    yield "caller", [(seq + 1, (seq + 1) * 160, 0), (seq, seq * 160, 0)]  # reordered
    seq += 2
    yield "caller", [(seq, seq * 160, 0), (seq, seq * 160, 0)]  # duplicate (SRTP: replay)
    seq += 1
    yield "caller", [(seq, seq * 160, 101), (seq + 1, (seq + 1) * 160, 0)]  # DTMF PT, then voice
    seq += 2
    yield "rtcp", []
    yield "caller", [(seq + k, (seq + k) * 160, 0) for k in range(5)]
    seq += 5
    yield "caller", [(seq + 4000, seq * 160, 0), (seq + 4001, (seq + 1) * 160, 0)]  # A.1 resync
    seq += 4002
    yield "forged", [(seq, seq * 160, 0)]
    yield "caller", [(seq + k, (seq + k) * 160, 0) for k in range(4)]
    seq += 4
    yield "other", [(seq + k, (seq + k) * 160, 0) for k in range(2)]  # latch moves (or not)
    seq += 2
    yield "caller", [(seq + k, (seq + k) * 160, 0) for k in range(6)]


@pytest.mark.parametrize(("srtp_a", "srtp_b"), [(True, True), (False, False), (True, False)])
def test_accelerated_relay_equals_the_reference(
    srtp_a: bool, srtp_b: bool, counting: Counting
) -> None:
    rigs = [Rig(accel=False, srtp_a=srtp_a, srtp_b=srtp_b),
            Rig(accel=True, srtp_a=srtp_a, srtp_b=srtp_b)]  # fmt: skip
    ctx = SrtpContext(K_A, inbound=False)
    wires: dict[tuple[int, int, int], bytes] = {}  # a duplicate is the same bytes again

    def wire_for(seq: int, ts: int, pt: int) -> bytes:
        if (seq, ts, pt) not in wires:
            plain = bytes(RtpPacket(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, 0x1111, b"\xd5" * 160))
            wires[(seq, ts, pt)] = ctx.protect(plain) if srtp_a else plain
        return wires[(seq, ts, pt)]

    try:
        now = 100.0
        for step, (sender, packets) in enumerate(script()):
            for p in sorted(packets):  # the sender protects in sequence order
                wire_for(*p)
            rr = serialize_rtcp([ReceiverReport(0x1111, ())])
            rtcp = ctx.protect_rtcp(rr) if srtp_a else rr
            for rig in rigs:
                dest = ("127.0.0.1", rig.ports[0])
                if sender == "rtcp":
                    rig.caller.sendto(rtcp, dest)
                for p in packets:
                    wire = wire_for(*p)
                    if sender == "forged":
                        wire = wire[:-1] + bytes([wire[-1] ^ 1])
                    src = rig.other if sender == "other" else rig.caller
                    src.sendto(wire, dest)
            now += 0.0173 * (1 + step % 3)  # uneven arrival times: jitter is not zero
            for rig in rigs:
                rig.wake(0, now)
            ref, acc = (r.snapshot() for r in rigs)
            assert acc == ref, f"step {step} ({sender})"
            assert rigs[1].received() == rigs[0].received(), f"step {step} ({sender})"
        # the accelerator did the steady-state work
        total = rigs[1].core.counters[0].packets_in - rigs[1].core.counters[0].rtcp_in
        assert total >= 70 and counting.forwarded >= total // 2, (counting.forwarded, total)
    finally:
        for rig in rigs:
            rig.close()


def test_rekey_and_new_remote_disarm_the_leg(counting: Counting) -> None:
    rig = Rig(accel=True, srtp_a=True, srtp_b=True)
    ctx = SrtpContext(K_A, inbound=False)
    try:
        for seq in range(6):
            rig.caller.sendto(ctx.protect(bytes(RtpPacket(0, seq, seq * 160, 7, b"\xd5" * 160))),
                              ("127.0.0.1", rig.ports[0]))  # fmt: skip
            rig.wake(0, 1.0 + seq * 0.02)
        assert rig.core.fast is not None and rig.core.fast[0].armed
        new_b = dataclasses.replace(rig.core.legs[1].config, remote=rig.other.getsockname())
        rig.core.update_leg(1, new_b)  # the callee moved (re-INVITE): its address changed
        assert not rig.core.fast[0].armed
        assert rig.core.counters[0].packets_in == 6
        rig.caller.sendto(ctx.protect(bytes(RtpPacket(0, 6, 960, 7, b"\xd5" * 160))),
                          ("127.0.0.1", rig.ports[0]))  # fmt: skip
        rig.wake(0, 2.0)
        assert rig.core.fast[0].armed
        assert len(rig.received()) == 6  # the new packet went to the new address
        assert rig.other.recv(4096)
        before = counting.forwarded
        for seq in range(7, 12):
            rig.caller.sendto(ctx.protect(bytes(RtpPacket(0, seq, seq * 160, 7, b"\xd5" * 160))),
                              ("127.0.0.1", rig.ports[0]))  # fmt: skip
        rig.wake(0, 3.0)
        assert (
            counting.forwarded - before == 5 and len([rig.other.recv(4096) for _ in range(5)]) == 5
        )
        assert rig.core.leg_stats(0).packets == 12 and rig.core.leg_stats(1).packets_out == 12
    finally:
        rig.close()
