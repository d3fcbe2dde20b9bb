"""callward.relay: the asyncio media relay (latching, SRTP<->SRTP re-keying, trusted plain
legs, RTP timeout, per-leg stats, DSCP EF, recording/intercept taps) and DTMF interworking."""

from callward.relay.leg import (
    DSCP_EF,
    LegConfig,
    LegCounters,
    open_media_pair,
    open_media_socket,
    read_dscp,
)
from callward.relay.session import MediaRelay, RelaySession
from callward.relay.taps import CollectingTap, MediaTap, TappedPacket

__all__ = [
    "DSCP_EF",
    "CollectingTap",
    "LegConfig",
    "LegCounters",
    "MediaRelay",
    "MediaTap",
    "RelaySession",
    "TappedPacket",
    "open_media_pair",
    "open_media_socket",
    "read_dscp",
]
