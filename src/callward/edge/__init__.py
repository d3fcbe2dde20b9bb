"""callward.edge: the SIP proxy/registrar that phones register with and call through.

:class:`EdgeCore` is the sans-IO protocol logic (RFC 3261 §10 registrar, §16 stateful proxy,
RFC 5626 flows, RFC 4028 session timers, failover); :class:`~callward.edge.app.EdgeNode` runs it
on asyncio sockets with its stores (``callward edge`` on the command line).
"""

from callward.edge.flow import Peer
from callward.edge.location import Binding, LocationStore, MemoryLocation, RedisLocation
from callward.edge.proxy import EdgeCore
from callward.edge.registrar import Registrar, RegistrarPolicy
from callward.edge.settings import EdgeSettings
from callward.edge.subscribers import PostgresSubscribers, SqliteSubscribers, Subscriber

__all__ = [
    "Binding",
    "EdgeCore",
    "EdgeSettings",
    "LocationStore",
    "MemoryLocation",
    "Peer",
    "PostgresSubscribers",
    "RedisLocation",
    "Registrar",
    "RegistrarPolicy",
    "SqliteSubscribers",
    "Subscriber",
]
