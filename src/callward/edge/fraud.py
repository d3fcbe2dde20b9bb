"""Toll-fraud limits per account (sans-IO, injected clock).

A compromised account is used the same way every time: many simultaneous calls, a burst of
call attempts, and destinations that cost money (international and premium-rate numbers).
:class:`FraudGuard` checks each authenticated call attempt against its tenant's
:class:`CallPolicy`:

- international / premium-rate destinations need the tenant's permission (``403`` otherwise);
- a per-account concurrent-call cap, a call-attempts-per-second bucket (CPS spike) and an
  hourly velocity limit on international/premium calls: crossing any of them **blocks the
  account** for ``block_seconds`` and raises a :class:`~callward.events.SecurityAlert`.

Destinations are classified after E.164 normalisation (:func:`normalize_number`): ``tel:`` and
SIP user parts alike, visual separators removed, ``00``/``011`` international prefixes turned
into ``+``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from callward.edge.admission import Rate, TokenBucket, Verdict, VerdictKind
from callward.edge.bounded_table import BoundedTable
from callward.events import SecurityAlert
from callward.sip.e164 import normalize_number

__all__ = [
    "CallPolicy",
    "Destination",
    "FraudGuard",
    "FraudPolicy",
    "classify",
    "normalize_number",
]

# E.164 prefixes of premium-rate and high-cost ranges that toll fraud favours: NANP 900/976,
# ITU international premium rate (+979) and international networks (+881/882/883), UK 09/0871,
# FR 089, DE 0900, and satellite services. A deployment extends this list.
PREMIUM_PREFIXES: tuple[str, ...] = (
    "+1900", "+1976", "+979", "+881", "+882", "+883", "+8816", "+8817", "+449", "+44871",
    "+3389", "+49900", "+39899", "+34803", "+34806", "+34807", "+870",
)  # fmt: skip


class Destination(enum.Enum):
    LOCAL = "local"  # an extension or a national number
    INTERNATIONAL = "international"
    PREMIUM = "premium"


def classify(e164: str, *, country_code: str, premium: tuple[str, ...]) -> Destination:
    if not e164.startswith("+"):
        return Destination.LOCAL
    if any(e164.startswith(p) for p in premium):
        return Destination.PREMIUM
    if e164.startswith("+" + country_code):
        return Destination.LOCAL
    return Destination.INTERNATIONAL


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """One tenant's calling rules."""

    international: bool = False
    premium: bool = False
    max_concurrent: int = 8  # per account
    cps: Rate = field(default_factory=lambda: Rate(1.0, 5.0))  # call attempts per account
    costly_per_hour: int = 20  # international + premium calls per account and hour
    country_code: str = "1"
    national_prefix: str = ""


@dataclass(frozen=True, slots=True)
class FraudPolicy:
    default: CallPolicy = CallPolicy()
    tenants: tuple[tuple[str, CallPolicy], ...] = ()
    premium_prefixes: tuple[str, ...] = PREMIUM_PREFIXES
    block_seconds: float = 900.0
    max_call_seconds: float = 4 * 3600.0  # a call never ended is forgotten after this
    max_accounts: int = 65536
    max_calls: int = 262144
    _by_tenant: dict[str, CallPolicy] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_tenant.update(self.tenants)

    def for_tenant(self, tenant: str) -> CallPolicy:
        return self._by_tenant.get(tenant, self.default)


@dataclass(slots=True)
class _Account:
    bucket: TokenBucket
    active: set[str] = field(default_factory=set)
    costly: list[float] = field(default_factory=list)  # times of recent costly calls


class FraudGuard:
    def __init__(self, policy: FraudPolicy | None = None, *, node: str = "edge") -> None:
        self.policy = policy if policy is not None else FraudPolicy()
        self.node = node
        p = self.policy
        self._accounts: BoundedTable[str, _Account] = BoundedTable(p.max_accounts)
        self._calls: BoundedTable[str, tuple[str, float]] = BoundedTable(p.max_calls)
        self._blocked: BoundedTable[str, float] = BoundedTable(p.max_accounts)
        self._alerts: list[SecurityAlert] = []
        self._seq = 0
        self._adapted: dict[tuple[str, str], CallPolicy] = {}

    def call_attempt(
        self,
        account: str,
        tenant: str,
        dest_user: str,
        call_id: str,
        now: float,
        *,
        country_code: str | None = None,
    ) -> Verdict:
        """An authenticated out-of-dialog INVITE from ``account`` to ``dest_user``.

        ``country_code`` is the tenant's home country (from its configured region); without it
        the policy's own ``country_code`` decides what counts as international."""
        p = self.policy
        rules = p.for_tenant(tenant)
        if country_code is not None and country_code != rules.country_code:
            key = (tenant, country_code)
            adapted = self._adapted.get(key)
            if adapted is None:  # once per (tenant, country), not per call
                adapted = replace(rules, country_code=country_code)
                if len(self._adapted) < 4096:
                    self._adapted[key] = adapted
            rules = adapted
        until = self._blocked.peek(account)
        if until is not None:
            if now < until:
                return Verdict(VerdictKind.REJECT, 403, "Account Blocked", rule="fraud-blocked")
            self._blocked.pop(account)
        e164 = normalize_number(
            dest_user, country_code=rules.country_code, national_prefix=rules.national_prefix
        )
        kind = classify(e164, country_code=rules.country_code, premium=p.premium_prefixes)
        if kind is Destination.PREMIUM and not rules.premium:
            return Verdict(
                VerdictKind.REJECT, 403, "Premium Destination Not Allowed", rule="premium-denied"
            )
        if kind is Destination.INTERNATIONAL and not rules.international:
            return Verdict(
                VerdictKind.REJECT,
                403,
                "International Calls Not Allowed",
                rule="international-denied",
            )
        acct = self._accounts.get(account)
        if acct is None:
            acct = _Account(TokenBucket(rules.cps.burst, now))
            self._accounts.put(account, acct)
        self._forget_stale(acct, now)
        if len(acct.active) >= rules.max_concurrent:
            return self._block(account, now, "concurrent-calls", f"{len(acct.active)} active")
        if not acct.bucket.take(rules.cps, now):
            return self._block(account, now, "cps-spike", "call attempts over limit")
        if kind is not Destination.LOCAL:
            acct.costly = [t for t in acct.costly if now - t < 3600.0]
            if len(acct.costly) >= rules.costly_per_hour:
                return self._block(
                    account, now, "costly-velocity", f"{len(acct.costly)} costly calls in 1h"
                )
            acct.costly.append(now)
        acct.active.add(call_id)
        self._calls.put(call_id, (account, now))
        return Verdict(VerdictKind.ADMIT)

    def call_ended(self, call_id: str) -> None:
        entry = self._calls.pop(call_id)
        if entry is not None:
            acct = self._accounts.peek(entry[0])
            if acct is not None:
                acct.active.discard(call_id)

    def blocked(self, account: str, now: float) -> bool:
        until = self._blocked.peek(account)
        return until is not None and now < until

    def take_alerts(self) -> list[SecurityAlert]:
        out, self._alerts = self._alerts, []
        return out

    def _forget_stale(self, acct: _Account, now: float) -> None:
        limit = self.policy.max_call_seconds
        for cid in list(acct.active):
            entry = self._calls.peek(cid)
            if entry is None or now - entry[1] > limit:
                acct.active.discard(cid)
                self._calls.pop(cid)

    def _block(self, account: str, now: float, rule: str, detail: str) -> Verdict:
        self._blocked.put(account, now + self.policy.block_seconds)
        self._seq += 1
        self._alerts.append(
            SecurityAlert(
                ts=now, node=self.node, seq=self._seq, rule=rule, source=account, detail=detail
            )
        )
        if len(self._alerts) > 10_000:
            del self._alerts[:5_000]
        return Verdict(VerdictKind.REJECT, 403, "Account Blocked", rule=rule)
