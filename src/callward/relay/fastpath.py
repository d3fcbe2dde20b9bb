"""Steady-state forwarding by the optional C accelerator (``relay/_fastpath.c``), kept exactly
equal to the reference packet path (:meth:`MediaCore.receive_datagram`).

A leg is *armed* when the reference path has brought it to a steady state that the
accelerator can continue on its own: latched address and SSRC, RFC 3550 A.1 probation over,
the main payload type known, no taps, no overlay (recording announcement), no DTMF
transform, and a destination on the other leg.
:func:`arm` copies the reference state (receiver statistics, SRTP contexts as libsrtp
pointers from pylibsrtp's cffi binding, addresses) into the leg's ``FastLeg``; the
accelerator's ``drain(fd_in, fd_out, leg, now, budget)`` reads the leg's socket with
recvmmsg, forwards every packet it can decide and returns the first one it cannot, with the
rest of its batch, for the reference path (disarming the leg). :func:`sync` writes the
accelerator's state back into the core and disarms; :class:`MediaCore` calls it before
anything reads or changes a leg, so there is one state.

Without a C compiler at install time, or with ``CALLWARD_PURE_PYTHON=1``, :data:`ACCEL` is
None and the reference path runs alone. ``tests/relay/test_fastpath.py`` drives both over the
same packets and compares every counter, statistic and byte sent.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from callward.relay.media_core import MediaCore
    from callward.rtp.srtp import SrtpContext

__all__ = ["ACCEL", "arm", "available", "sync"]

_API = 1


def _load() -> Any:
    if os.environ.get("CALLWARD_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from callward.relay import _fastpath  # type: ignore[attr-defined]
    except ImportError:
        return None
    if getattr(_fastpath, "API_VERSION", None) != _API:
        return None  # built from another version of _fastpath.c: reinstall to rebuild
    return _fastpath


#: the C module, or None (pure Python: the reference path alone)
ACCEL: Any = _load()
_FNS: tuple[int, int] | None = None


def available() -> bool:
    return ACCEL is not None


def _srtp_functions() -> tuple[int, int]:
    """Addresses of libsrtp's srtp_unprotect and srtp_protect inside pylibsrtp's binding."""
    global _FNS
    if _FNS is None:
        from pylibsrtp._binding import ffi, lib

        _FNS = (
            int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_unprotect"))),
            int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect"))),
        )
    return _FNS


def _srtp_pointer(ctx: SrtpContext) -> int:
    from pylibsrtp._binding import ffi

    return int(ffi.cast("uintptr_t", ctx._session._srtp[0]))


def arm(core: MediaCore, i: int) -> bool:
    """Hand leg ``i``'s steady state to its FastLeg; False when the leg is not steady."""
    fast = core.fast
    if fast is None or core.ended or core.taps or core.overlay is not None:
        return False
    if core.transform[i] is not None:
        return False
    fl = fast[i]
    if fl.armed:
        return True
    src, dst = core.legs[i], core.legs[1 - i]
    ssrc, peer, dest = src.latched_ssrc, src.latched, dst.destination
    counters = core.counters[i]
    pt = counters.payload_type
    if ssrc is None or peer is None or dest is None or pt is None or 64 <= pt <= 95:
        return False
    st = counters.stats.get(ssrc)
    if st is None or not st._started or st.probation or pt not in counters.pt_counts:
        return False
    try:
        fl.set_addresses(peer, dest)
    except (ValueError, TypeError):
        return False  # a host name in SDP: the reference path resolves nothing either
    unprotect, protect = _srtp_functions()
    fl.rx_ctx = 0 if src.rx is None else _srtp_pointer(src.rx)
    fl.rx_fn = unprotect
    fl.tx_ctx = 0 if dst.tx is None else _srtp_pointer(dst.tx)
    fl.tx_fn = protect
    fl.ssrc, fl.pt = ssrc, pt
    fl.max_seq, fl.cycles, fl.received = st.max_seq, st.cycles, st.received
    fl.jitter, fl.last_arrival, fl.last_ts = st.jitter, st._last_arrival, st._last_ts
    fl.have_transit, fl.clock_rate = int(st._have_transit), float(st.clock_rate)
    fl.armed = 1
    return True


def sync(core: MediaCore) -> None:
    """Write both FastLegs' state back into the core (reference objects) and disarm them."""
    fast = core.fast
    if fast is None:
        return
    for i, fl in enumerate(fast):
        fl.armed = 0
        if not fl.packets_in and not fl.malformed:
            continue
        c, oc = core.counters[i], core.counters[1 - i]
        st = c.stats.get(fl.ssrc)
        if st is not None:
            st.max_seq, st.cycles, st.received = fl.max_seq, fl.cycles, fl.received
            st.jitter, st._last_arrival, st._last_ts = fl.jitter, fl.last_arrival, fl.last_ts
            st._have_transit = bool(fl.have_transit)
        if fl.packets_in:
            c.packets_in += fl.packets_in
            c.bytes_in += fl.bytes_in
            c.last_rx = max(c.last_rx, fl.last_rx)
            c.pt_counts[fl.pt] = c.pt_counts.get(fl.pt, 0) + fl.packets_in
            c.payload_type = fl.pt
        c.malformed += fl.malformed
        oc.packets_out += fl.packets_out
        oc.bytes_out += fl.bytes_out
        oc.no_destination += fl.no_destination
        if fl.forwarded:
            core.sent_at[1 - i] = fl.last_sent
            core.last_rtp[1 - i] = fl.last_header()
        src, dst = core.legs[i], core.legs[1 - i]
        if src.rx is not None:
            src.rx.packets += fl.srtp_in
        if dst.tx is not None:
            dst.tx.packets += fl.srtp_out
        fl.packets_in = fl.bytes_in = fl.packets_out = fl.bytes_out = 0
        fl.malformed = fl.no_destination = fl.srtp_in = fl.srtp_out = 0
        fl.forwarded = 0
