"""The phone's local data across runs: its one :class:`~callward.ua.cache.CoherentCache`
(DNS/NAPTR answers, STUN/ICE results, preferences, presence, emergency numbers) kept sealed in
the encrypted keystore (record ``device-cache``, AES-GCM: the names of the servers it talks to
and the numbers it cached are personal data), and RFC 3263 server location through it.

::

    data = DeviceData.open(keystore)               # the snapshot of the last run, if any
    data.enter_network(network_id(resolver_host))  # which network we are on now
    targets = await data.locate("sip:acme.test", resolver)   # cached per TTL and network
    data.save()
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from callward.errors import ConfigError, DnsError, SipParseError
from callward.sip.dns import AsyncResolver, ServerLocator, Target
from callward.sip.uri import SipURI, parse_uri
from callward.ua.cache import CoherentCache
from callward.ua.device_cache import DeviceDnsCache

if TYPE_CHECKING:
    from callward.ua.keystore import Keystore

__all__ = ["DeviceData", "network_id"]

RECORD = "device-cache"


def network_id(toward: str, *, salt: bytes = b"callward-network") -> str:
    """Which network we are on, as a keyed digest of the local address the OS picks to reach
    ``toward`` (the resolver): it changes with the interface (Wi-Fi, cellular, VPN). A UDP
    ``connect`` sends nothing. Never an address in the clear."""
    family = socket.AF_INET6 if ":" in toward else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((toward, 53))
            local = s.getsockname()[0]
    except OSError:
        local = "offline"
    return hashlib.blake2b(local.encode(), key=salt, digest_size=12).hexdigest()


class DeviceData:
    def __init__(
        self,
        keystore: Keystore | None = None,
        *,
        clock: Callable[[], float] = time.time,
        cache: CoherentCache | None = None,
    ) -> None:
        self.keystore = keystore
        self.clock = clock  # wall clock: the snapshot outlives the process
        self.cache = cache or CoherentCache()
        self.dns = DeviceDnsCache(self.cache)
        if keystore is not None:
            self.cache.restore(keystore.get_json(RECORD))

    @classmethod
    def open(cls, keystore: Keystore | None) -> DeviceData:
        return cls(keystore)

    def enter_network(self, network: str) -> None:
        self.cache.network_changed(network, self.clock())

    async def locate(self, where: str, resolver: AsyncResolver) -> list[Target]:
        """RFC 3263 targets for ``where`` (``sip:host``, ``sips:host`` or a bare host name),
        answers from the cache while their TTL lasts. DnsError when nothing resolves."""
        text = where if where.startswith(("sip:", "sips:")) else f"sip:{where}"
        try:
            uri = parse_uri(text)
        except SipParseError:
            raise ConfigError(f"{where[:80]!r}: expected a SIP URI or a host name") from None
        if not isinstance(uri, SipURI):
            raise ConfigError(f"{where[:80]!r}: expected a sip: or sips: URI")
        locator = ServerLocator(cache=self.dns, clock=self.clock, transports=("UDP", "TCP", "TLS"))
        targets = await locator.resolve_async(uri, resolver)
        if not targets:
            raise DnsError(f"no SIP server found for {uri.host[:80]}")
        return targets

    async def proxy(self, where: str, transport: str, resolver: AsyncResolver) -> tuple[str, int]:
        """The first RFC 3263 target for ``where`` over ``transport`` (udp, tcp, tls...)."""
        targets = await self.locate(where, resolver)
        for t in targets:
            if t.transport == transport.upper():
                return t.host, t.port
        raise DnsError(f"no {transport.upper()} target for {where[:80]}")

    def save(self) -> None:
        if self.keystore is not None:
            self.keystore.put_json(RECORD, self.cache.snapshot())
