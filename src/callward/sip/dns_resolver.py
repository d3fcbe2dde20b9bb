"""dnspython adapter for :mod:`callward.sip.dns` (the only I/O in this package besides transport).

Translates dnspython answers into :class:`~callward.sip.dns.DnsAnswer` (records + TTL, negative
answers with the RFC 2308 §5 TTL taken from the SOA in the authority section) and dnspython's
exceptions into :class:`~callward.errors.DnsError` at this boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.message
import dns.rdatatype
import dns.resolver

from callward.errors import DnsError
from callward.sip.dns import DnsAnswer, NaptrRecord, Record, SrvRecord

__all__ = ["DnsPythonResolver"]


def _text(name: Any) -> str:
    return str(name.to_text(omit_final_dot=True)) if hasattr(name, "to_text") else str(name)


def _negative_ttl(response: dns.message.Message | None) -> float:
    """RFC 2308 §5: min(SOA TTL, SOA MINIMUM) from the authority section; 0 without SOA."""
    if response is None:
        return 0.0
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            for soa in rrset:
                return float(min(rrset.ttl, soa.minimum))
    return 0.0


def _convert(rdtype: str, rdata: Any) -> Record | None:
    if rdtype in ("A", "AAAA"):
        return str(rdata.address)
    if rdtype == "SRV":
        return SrvRecord(
            int(rdata.priority), int(rdata.weight), int(rdata.port), _text(rdata.target)
        )
    if rdtype == "NAPTR":
        return NaptrRecord(
            int(rdata.order),
            int(rdata.preference),
            rdata.flags.decode("ascii", "replace"),
            rdata.service.decode("ascii", "replace"),
            rdata.regexp.decode("ascii", "replace"),
            _text(rdata.replacement),
        )
    return None


class DnsPythonResolver:
    """Implements :class:`callward.sip.dns.AsyncResolver` on dnspython's async resolver.

    ``nameservers``/``port`` override the system configuration (tests point it at a local
    server; production normally leaves them None and uses /etc/resolv.conf)."""

    def __init__(
        self,
        *,
        nameservers: Sequence[str] | None = None,
        port: int = 53,
        timeout: float = 2.0,
        resolver: dns.asyncresolver.Resolver | None = None,
    ) -> None:
        if resolver is None:
            resolver = dns.asyncresolver.Resolver(configure=nameservers is None)
            if nameservers is not None:
                resolver.nameservers = list(nameservers)
            resolver.port = port
        resolver.lifetime = timeout
        self._resolver = resolver

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        try:
            answer = await self._resolver.resolve(
                name, rdtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN as exc:
            responses = exc.responses()  # type: ignore[no-untyped-call]
            response = next(iter(responses.values()), None) if responses else None
            return DnsAnswer((), _negative_ttl(response), nxdomain=True)
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            raise DnsError(f"{rdtype} lookup failed: {type(exc).__name__}") from exc
        if answer.rrset is None:  # NODATA
            return DnsAnswer((), _negative_ttl(answer.response))
        records = tuple(r for r in (_convert(rdtype, rd) for rd in answer.rrset) if r is not None)
        return DnsAnswer(records, float(answer.rrset.ttl))
