"""The phone's DNS/NAPTR, STUN and ICE caches on its one CoherentCache: TTLs, per-network keys,
network change, serve-stale during a partition (RFC 8767) and not after the heal, snapshots.
Injected clock; a resolver that counts questions and fails while the link is cut."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from callward.errors import DnsError
from callward.nat.network_cache import CandidatePair, NetworkKey
from callward.sip import SipURI, parse_uri
from callward.sip.dns import DnsAnswer, NaptrRecord, ServerLocator, SrvRecord, Target
from callward.ua.cache import CoherentCache, Freshness
from callward.ua.device_cache import (
    DeviceDnsCache,
    DeviceNetworkCache,
    answer_from_json,
    answer_to_json,
)

ZONE: dict[tuple[str, str], tuple[tuple[Any, ...], float]] = {
    ("acme.test", "NAPTR"): (
        (NaptrRecord(10, 10, "s", "SIP+D2U", "", "_sip._udp.acme.test"),),
        300,
    ),
    ("_sip._udp.acme.test", "SRV"): ((SrvRecord(0, 0, 5062, "edge.acme.test"),), 300),
    ("edge.acme.test", "A"): (("192.0.2.10",), 120),
}
TARGET = [Target("UDP", "192.0.2.10", 5062)]


class Link:
    """A resolver reached over the radio: counts questions, fails while ``up`` is False,
    and answers per network (``answers``: what this network's resolver says)."""

    def __init__(self) -> None:
        self.up = True
        self.asked = 0
        self.address = "192.0.2.10"

    def query(self, name: str, rdtype: str) -> DnsAnswer:
        self.asked += 1
        if not self.up:
            raise DnsError("timeout")
        if (name, rdtype) == ("edge.acme.test", "A"):
            return DnsAnswer((self.address,), 120)
        if (name, rdtype) == ("edge.acme.test", "AAAA"):
            return DnsAnswer((), 300)  # NODATA, negative TTL 300 s
        if (name, rdtype) in ZONE:
            records, ttl = ZONE[(name, rdtype)]
            return DnsAnswer(records, ttl)
        return DnsAnswer((), 60, nxdomain=True)


def _uri() -> SipURI:
    uri = parse_uri("sip:acme.test")
    assert isinstance(uri, SipURI)
    return uri


def test_dns_through_the_coherent_cache_under_network_change_and_partition() -> None:
    clock = [1000.0]
    cache = CoherentCache()
    cache.network_changed(NetworkKey("wlan0", "office").digest(), clock[0])
    dns = DeviceDnsCache(cache)
    loc = ServerLocator(cache=dns, clock=lambda: clock[0], rng=random.Random(1),
                        transports=("UDP",))  # fmt: skip
    link = Link()
    assert loc.resolve(_uri(), link) == TARGET and link.asked == 4  # NAPTR, SRV, A, AAAA
    clock[0] += 100
    assert loc.resolve(_uri(), link) == TARGET and link.asked == 4  # all cached
    clock[0] += 30  # the A record (120 s) is past its TTL, the others (300 s) are not
    assert loc.resolve(_uri(), link) == TARGET and link.asked == 5

    # handover to cellular: the carrier's resolver answers differently (split horizon);
    # nothing learned at the office is used here
    cache.network_changed(NetworkKey("rmnet0", "carrier").digest(), clock[0])
    link.address = "198.51.100.7"
    assert loc.resolve(_uri(), link) == [Target("UDP", "198.51.100.7", 5062)]
    assert link.asked == 9
    # back at the office within the TTLs: the office answers are still there
    cache.network_changed(NetworkKey("wlan0", "office").digest(), clock[0])
    link.address = "192.0.2.10"
    assert loc.resolve(_uri(), link) == TARGET and link.asked == 9

    # partition: the resolver is unreachable; past their TTL the answers are served stale
    # for up to an hour (RFC 8767), flagged in the counter
    link.up = False
    cache.link_down(clock[0])
    clock[0] += 400
    assert loc.resolve(_uri(), link) == TARGET and link.asked == 9
    assert dns.stale_served == 4
    clock[0] += 3600  # beyond serve-stale: nothing usable, the lookups fail
    try:
        loc.resolve(_uri(), link)
        raise AssertionError("resolved with nothing usable")
    except DnsError:
        pass
    # heal: expired answers are never served again once the resolver is back
    link.up = True
    link.address = "192.0.2.99"
    cache.link_up(clock[0])
    asked = link.asked
    assert loc.resolve(_uri(), link) == [Target("UDP", "192.0.2.99", 5062)]
    assert link.asked == asked + 4


def test_negative_answers_cached_for_their_ttl() -> None:
    clock = [0.0]
    cache = CoherentCache()
    dns = DeviceDnsCache(cache)
    loc = ServerLocator(cache=dns, clock=lambda: clock[0], transports=("UDP",))
    link = Link()
    uri = parse_uri("sip:nowhere.test")
    assert isinstance(uri, SipURI)
    for _ in range(2):
        try:
            loc.resolve(uri, link)
        except DnsError:
            pass
    first = link.asked
    clock[0] += 61  # negative TTL 60 s (RFC 2308 §5)
    try:
        loc.resolve(uri, link)
    except DnsError:
        pass
    assert link.asked == 2 * first


def test_snapshot_restores_local_entries_and_revalidates_server_ones() -> None:
    clock = [50.0]
    cache = CoherentCache()
    cache.network_changed("net-a", clock[0])
    loc = ServerLocator(cache=DeviceDnsCache(cache), clock=lambda: clock[0], transports=("UDP",))
    link = Link()
    loc.resolve(_uri(), link)
    cache.on_response("emergency", 200, clock[0], body={"numbers": ["112"]}, etag='"e1"')
    assert cache.state("emergency", clock[0]) == Freshness.FRESH
    snap = cache.snapshot()

    again = CoherentCache()  # the next run of the phone
    again.restore(snap)
    assert again.network == "net-a"
    loc2 = ServerLocator(cache=DeviceDnsCache(again), clock=lambda: clock[0], transports=("UDP",))
    asked = link.asked
    assert loc2.resolve(_uri(), link) == TARGET and link.asked == asked  # DNS from the snapshot
    # a server entry from a previous run is revalidated before it is trusted
    assert again.state("emergency", clock[0]) == Freshness.REVALIDATE
    assert again.conditional_headers("emergency") == {"If-None-Match": '"e1"'}
    # ... but an emergency route is usable whatever happens when cut off
    again.link_down(clock[0])
    assert again.get("emergency", clock[0] + 10 * 86400)[0] == {"numbers": ["112"]}
    # garbage snapshots are ignored
    junk = CoherentCache()
    junk.restore({"v": 1, "entries": [["k", 1, 2], None, ["dns:x:y|A", {}, "", "t", {}, 1]]})
    junk.restore("nope")
    assert len(junk.entries) == 0


def test_stun_and_ice_caches_per_network() -> None:
    clock = [0.0]
    cache = CoherentCache()
    office, cell = NetworkKey("wlan0", "office"), NetworkKey("rmnet0", "carrier")
    stun: DeviceNetworkCache[tuple[str, int]] = DeviceNetworkCache(cache, "stun", 300.0)
    ice: DeviceNetworkCache[CandidatePair] = DeviceNetworkCache(cache, "ice", 86400.0)
    cache.network_changed(office.digest(), clock[0])
    stun.put(office, ("203.0.113.1", 40000), clock[0])
    ice.put(office, CandidatePair("relay", ("198.51.100.2", 3478), "turn-eu"), clock[0])
    assert stun.get(office, clock[0] + 1) == ("203.0.113.1", 40000)
    cache.network_changed(cell.digest(), clock[0])
    assert stun.get(office, clock[0]) is None  # learned elsewhere: not on cellular
    cache.network_changed(office.digest(), clock[0])
    pair = ice.get(office, clock[0] + 3600)
    assert pair == CandidatePair("relay", ("198.51.100.2", 3478), "turn-eu")
    # a NAT mapping is never served stale, even cut off
    cache.link_down(clock[0])
    assert stun.get(office, clock[0] + 301) is None
    # no address, SSID or gateway in the cache keys (privacy)
    assert not any("office" in k or "203.0.113" in k for k in cache.entries)


def test_bounded() -> None:
    cache = CoherentCache(max_entries=50)
    dns = DeviceDnsCache(cache)
    for i in range(200):
        dns.put(f"h{i}.test", "A", DnsAnswer(("192.0.2.1",), 60), 0.0)
    assert len(cache.entries) == 50 and dns.get("h199.test", "A", 1.0) is not None
    assert dns.get("h0.test", "A", 1.0) is None


@given(st.recursive(st.none() | st.integers() | st.text(max_size=5) | st.floats(),
                    lambda c: st.lists(c, max_size=7) | st.dictionaries(st.text(max_size=8), c,
                                                                        max_size=4)))  # fmt: skip
def test_answer_from_json_fuzz(data: Any) -> None:
    got = answer_from_json(data if isinstance(data, dict) else {"records": data, "ttl": 1,
                                                                 "nxdomain": False})  # fmt: skip
    assert got is None or isinstance(got, DnsAnswer)


def test_answer_round_trip() -> None:
    for records, _ in ZONE.values():
        answer = DnsAnswer(records, 42.0)
        assert answer_from_json(answer_to_json(answer)) == answer
