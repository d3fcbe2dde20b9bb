"""The NATS JetStream :class:`~callward.events.EventBus` (publish side), where services may
import it: the edge and the relay publish through it when ``storage.nats_url`` is set (the
runtime builds it), and the CDR consumer in ``callward.records.bus`` reads the same subjects.

Subjects are ``<prefix>.<tenant>.<kind>`` with prefix ``callward.events`` (design.md). Each
message carries the ``Nats-Msg-Id`` header ``call_id/leg/node/seq``: JetStream drops a
re-publish of the same event inside its duplicate window.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import nats

from callward.errors import TransportError
from callward.events import Event, event_to_dict

__all__ = ["DEFAULT_PREFIX", "JetStreamPublisher", "msg_id", "subject_for"]

DEFAULT_PREFIX = "callward.events"
_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


def subject_for(event: Event, prefix: str = DEFAULT_PREFIX) -> str:
    """``<prefix>.<tenant>.<kind>``; the tenant is folded into one valid subject token."""
    tenant = _TOKEN.sub("_", event.tenant) or "_"
    return f"{prefix}.{tenant}.{event.kind}"


def msg_id(event: Event) -> str:
    return f"{getattr(event, 'call_id', '')}/{getattr(event, 'leg', '')}/{event.node}/{event.seq}"


@dataclass
class JetStreamPublisher:
    """An :class:`callward.events.EventBus` that publishes to JetStream (publish side only;
    consumers use :class:`CdrConsumer`)."""

    js: Any
    prefix: str = DEFAULT_PREFIX

    async def publish(self, event: Event) -> None:
        payload = json.dumps(event_to_dict(event), separators=(",", ":")).encode()
        try:
            await self.js.publish(
                subject_for(event, self.prefix), payload, headers={"Nats-Msg-Id": msg_id(event)}
            )
        except nats.errors.Error as exc:
            raise TransportError(f"JetStream publish failed: {exc}") from None

    def subscribe(self, handler: Any) -> None:
        raise TransportError("JetStreamPublisher publishes only; consume with CdrConsumer")
