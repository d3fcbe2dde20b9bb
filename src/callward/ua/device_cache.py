"""The phone's DNS, STUN and ICE caches as views of its one :class:`~callward.ua.cache.
CoherentCache`, so they share its rules: TTLs, per-network keys, serve-stale only while cut
off, a bound, and one encrypted snapshot in the keystore.

* :class:`DeviceDnsCache` is a :class:`~callward.sip.dns.DnsCache` for the RFC 3263
  :class:`~callward.sip.dns.ServerLocator` (``ServerLocator(cache=DeviceDnsCache(c))``):
  positive and negative answers kept for their TTL (RFC 1035 §3.2.1, RFC 2308 §5) on the
  network they were learned on (a split-horizon resolver at the office answers differently
  from the carrier's); while the link is down an expired answer is served for up to an hour
  (RFC 8767 §5).
* :class:`DeviceNetworkCache` is a :class:`~callward.nat.network_cache.NetworkCache` for the
  ICE agent (:mod:`callward.ua.ice_session`): the STUN mapped address and the last good
  candidate pair per network, under the ``stun`` / ``ice`` policies.

The keys hold only keyed digests of the network; DNS names are of our own servers.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, cast

from callward.errors import CallwardError
from callward.nat.network_cache import CandidatePair, NetworkCache, NetworkKey
from callward.sip.dns import DnsAnswer, DnsCache, NaptrRecord, Record, SrvRecord
from callward.ua.cache import CoherentCache

__all__ = ["DeviceDnsCache", "DeviceNetworkCache", "answer_from_json", "answer_to_json"]

T = TypeVar("T")
Address = tuple[str, int]


def answer_to_json(answer: DnsAnswer) -> dict[str, Any]:
    records: list[Any] = []
    for r in answer.records:
        if isinstance(r, NaptrRecord):
            records.append(["NAPTR", r.order, r.preference, r.flags, r.service, r.regexp,
                            r.replacement])  # fmt: skip
        elif isinstance(r, SrvRecord):
            records.append(["SRV", r.priority, r.weight, r.port, r.target])
        else:
            records.append(["ADDR", r])
    return {"records": records, "ttl": answer.ttl, "nxdomain": answer.nxdomain}


def answer_from_json(data: dict[str, Any]) -> DnsAnswer | None:
    """The answer kept by :func:`answer_to_json`; None for anything malformed (a tampered or
    old snapshot is a miss, never an exception)."""
    out: list[Record] = []
    try:
        for r in data["records"]:
            match r:
                case ["NAPTR", int(o), int(p), str(f), str(s), str(x), str(rep)]:
                    out.append(NaptrRecord(o, p, f, s, x, rep))
                case ["SRV", int(pr), int(w), int(port), str(t)]:
                    out.append(SrvRecord(pr, w, port, t))
                case ["ADDR", str(a)]:
                    out.append(a)
                case _:
                    return None
        return DnsAnswer(tuple(out), float(data["ttl"]), bool(data["nxdomain"]))
    except (KeyError, TypeError, ValueError):
        return None


class DeviceDnsCache(DnsCache):
    def __init__(self, cache: CoherentCache, *, max_ttl: float = 86_400.0) -> None:
        super().__init__(capacity=cache.max_entries, max_ttl=max_ttl)
        self.coherent = cache
        self.stale_served = 0

    def __len__(self) -> int:
        return sum(1 for k in self.coherent.entries if k.startswith("dns:"))

    @staticmethod
    def _name(name: str, rdtype: str) -> str:
        return f"{name.lower().rstrip('.')}|{rdtype}"

    def get(self, name: str, rdtype: str, now: float) -> DnsAnswer | None:
        c = self.coherent
        data = c.get_local("dns", self._name(name, rdtype), now)
        if data is None:
            return None
        answer = answer_from_json(data)
        if answer is None:
            c.forget_local("dns", self._name(name, rdtype))
            return None
        entry = c.entries.get(c.local_key("dns", self._name(name, rdtype)))
        if entry is not None and entry.ttl is not None and now - entry.validated_at >= entry.ttl:
            self.stale_served += 1  # cut off: RFC 8767 serve-stale
        return answer

    def put(self, name: str, rdtype: str, answer: DnsAnswer, now: float) -> None:
        ttl = min(answer.ttl, self.max_ttl)
        self.coherent.put_local("dns", self._name(name, rdtype), answer_to_json(answer), now, ttl)


class DeviceNetworkCache(NetworkCache[T], Generic[T]):
    """``kind`` is ``"stun"`` (values: addresses) or ``"ice"`` (values: candidate pairs)."""

    def __init__(self, cache: CoherentCache, kind: str, ttl: float) -> None:
        super().__init__(ttl, max_entries=cache.max_entries)
        if kind not in ("stun", "ice"):
            raise ValueError(f"kind {kind!r}: expected stun or ice")
        self.coherent = cache
        self.kind = kind

    def get(self, key: NetworkKey, now: float) -> T | None:
        data = self.coherent.get_local(self.kind, key.digest(), now)
        value = None if data is None else self._decode(data)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        return cast(T, value)

    def put(self, key: NetworkKey, value: T, now: float, ttl: float | None = None) -> None:
        self.coherent.put_local(self.kind, key.digest(), self._encode(value), now,
                                self.ttl if ttl is None else ttl)  # fmt: skip

    def invalidate(self, key: NetworkKey) -> None:
        self.coherent.forget_local(self.kind, key.digest())

    def __len__(self) -> int:
        prefix = f"{self.kind}:{self.coherent.network}:"
        return sum(1 for k in self.coherent.entries if k.startswith(prefix))

    def _encode(self, value: Any) -> dict[str, Any]:
        if isinstance(value, CandidatePair):
            return {"type": value.local_type, "remote": list(value.remote),
                    "turn": value.turn_server}  # fmt: skip
        host, port = value
        return {"addr": [str(host), int(port)]}

    def _decode(self, data: dict[str, Any]) -> Any:
        try:
            if self.kind == "ice":
                host, port = data["remote"]
                return CandidatePair(str(data["type"]), (str(host), int(port)), data.get("turn"))
            host, port = data["addr"]
            return (str(host), int(port))
        except (KeyError, TypeError, ValueError, CallwardError):
            return None
