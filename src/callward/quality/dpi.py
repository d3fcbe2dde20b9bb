"""DPI sampling policy for live monitoring: which calls to inspect, and how little to keep.

Header-only inspection: quality needs RTP headers (sequence, timestamp, SSRC, PT, marker),
never the voice payload, so ``header_only`` cuts every packet to at most the configured
header bytes (12 = the RFC 3550 §5.1 fixed header) before anything is stored.

Sampling is per call and deterministic (a hash of the Call-ID against the tenant's rate), so
every node sampling the same call decides the same way and both legs are kept together.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from callward.config import QualityConfig

__all__ = ["SamplingPolicy", "rtp_header_length"]


def rtp_header_length(packet: bytes) -> int:
    """Length of the RTP header incl. CSRCs and extension (RFC 3550 §5.1, §5.3.1), capped."""
    if len(packet) < 12:
        return len(packet)
    n = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10 and len(packet) >= n + 4:
        n += 4 + 4 * int.from_bytes(packet[n + 2 : n + 4], "big")
    return min(n, len(packet))


@dataclass(frozen=True, slots=True)
class SamplingPolicy:
    cfg: QualityConfig

    def rate(self, tenant: str) -> float:
        t = self.cfg.tenants.get(tenant)
        return t.sample_rate if t and t.sample_rate is not None else self.cfg.sample_rate

    def should_inspect(self, call_id: str, tenant: str = "default") -> bool:
        r = self.rate(tenant)
        if r <= 0:
            return False
        if r >= 1:
            return True
        h = hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).digest()
        return int.from_bytes(h[:8], "big") / 2**64 < r

    def header_only(self, packet: bytes) -> bytes:
        """The packet cut to its RTP header, never more than ``header_bytes``."""
        return packet[: min(rtp_header_length(packet), self.cfg.header_bytes)]
