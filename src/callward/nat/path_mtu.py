"""Path MTU toward a peer, as the kernel knows it (RFC 1191 / RFC 8201 path MTU discovery).

A UDP socket connected to the peer reports ``IP_MTU`` (``IPV6_MTU``): the route's MTU, lowered
by any ICMP "fragmentation needed" / "packet too big" the host has seen for that destination.
The phone sets :attr:`~callward.ua.sip_adapter.SipAdapter.mtu` from it, so no SIP datagram above
it ever leaves and large requests move to TCP (RFC 3261 §18.1.1)."""

from __future__ import annotations

import socket

__all__ = ["probe_path_mtu"]

# Linux values (<linux/in.h>, <linux/in6.h>); Python exposes IP_MTU only on some builds.
_IP_MTU = getattr(socket, "IP_MTU", 14)
_IPV6_MTU = getattr(socket, "IPV6_MTU", 24)


def probe_path_mtu(dest: tuple[str, int], *, local: str | None = None) -> int | None:
    """The kernel's path MTU from ``local`` (any address when None) to ``dest``; None when the
    platform cannot tell or there is no route."""
    family = socket.AF_INET6 if ":" in dest[0] else socket.AF_INET
    level, option = (
        (socket.IPPROTO_IPV6, _IPV6_MTU)
        if family == socket.AF_INET6
        else (socket.IPPROTO_IP, _IP_MTU)
    )
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            if local is not None:
                sock.bind((local, 0))
            sock.connect(dest)
            mtu = sock.getsockopt(level, option)
    except OSError:
        return None
    return mtu if 68 <= mtu <= 65535 else None
