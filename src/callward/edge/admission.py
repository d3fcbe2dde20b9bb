"""Auth-aware admission control for the edge: who may spend our capacity, and how much.

Sans-IO policy with an injected clock (``now``): the edge asks, the admission answers with a
:class:`Verdict` and collects :class:`~callward.events.SecurityAlert` events for the caller to
drain (:meth:`Admission.take_alerts`). Nothing here reads a clock, logs or touches a socket.

What it accounts, and why it is split that way:

- **Unauthenticated** requests (no credentials yet, or credentials not verified) spend a
  per-source bucket and one bucket shared by *all* unauthenticated sources, per method class
  (INVITE, REGISTER, OPTIONS, other). A flood of them, from one source or many, can only use
  that share: it never reaches the buckets of authenticated traffic.
- **Authenticated** requests (credentials verified by the edge, or a trusted peer) spend
  per-account and per-tenant buckets, plus a generous per-source bucket that exists for NATed
  sites. Going over it is answered ``503`` with a jittered ``Retry-After`` (RFC 3261 §21.5.4):
  a re-registration storm after an outage is smoothed, never banned (Kamailio's pike bans such
  sites; that is the gap this closes).
- **In-dialog** requests (To tag present) are shed last: under overload (:meth:`set_load`) new
  work is refused first.
- **Only requests** are accounted: responses coming back from upstream never spend a token.

Failed authentication locks out per account and per source with exponential backoff; bans
expire. A source that authenticated successfully recently (a phone's NAT) is not banned for a
neighbour's wrong password; an account stays usable from the sources it authenticated from
while the lockout holds for everyone else, so an attacker cannot lock a user out of their own
phone. Locked-out attempts are answered exactly like a wrong password (no oracle).

State is bounded: every table is an LRU of fixed capacity (least recently *used* entry evicted
one at a time, never wiped wholesale). Ban tables get their own capacity so bucket churn from
spoofed sources cannot evict a ban.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from callward.edge.bounded_table import BoundedTable
from callward.edge.scanner import ScannerDetector, ScannerPolicy
from callward.events import SecurityAlert

__all__ = [
    "Admission",
    "AdmissionPolicy",
    "MethodRates",
    "Rate",
    "RequestInfo",
    "TokenBucket",
    "Verdict",
    "VerdictKind",
    "method_class",
]


@dataclass(frozen=True, slots=True)
class Rate:
    """Sustained ``per_second`` with bursts of ``burst`` requests; ``per_second == 0`` = off."""

    per_second: float
    burst: float

    def __post_init__(self) -> None:
        if self.per_second < 0 or self.burst < 1:
            raise ValueError(f"invalid rate {self.per_second}/s burst {self.burst}")


class TokenBucket:
    """Classic token bucket on an injected clock."""

    __slots__ = ("last", "tokens")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = burst
        self.last = now

    def take(self, rate: Rate, now: float, cost: float = 1.0) -> bool:
        if rate.per_second <= 0:
            return True
        elapsed = now - self.last
        if elapsed > 0:
            self.tokens = min(rate.burst, self.tokens + elapsed * rate.per_second)
            self.last = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def wait(self, rate: Rate, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are available (after a failed take)."""
        if rate.per_second <= 0:
            return 0.0
        return max(0.0, (cost - self.tokens) / rate.per_second)


METHOD_CLASSES = ("INVITE", "REGISTER", "OPTIONS", "other")


def method_class(method: str) -> str:
    return method if method in ("INVITE", "REGISTER", "OPTIONS") else "other"


@dataclass(frozen=True, slots=True)
class MethodRates:
    invite: Rate
    register: Rate
    options: Rate
    other: Rate

    def of(self, mclass: str) -> Rate:
        if mclass == "INVITE":
            return self.invite
        if mclass == "REGISTER":
            return self.register
        if mclass == "OPTIONS":
            return self.options
        return self.other


def _rates(invite: float, register: float, options: float, other: float, k: float) -> MethodRates:
    return MethodRates(
        Rate(invite, max(1.0, invite * k)),
        Rate(register, max(1.0, register * k)),
        Rate(options, max(1.0, options * k)),
        Rate(other, max(1.0, other * k)),
    )


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """Limits; the defaults are on and sized so that a phone, a PBX behind one address and a
    NATed office all pass, while floods and guessing do not."""

    # requests/s (INVITE, REGISTER, OPTIONS, other) and the burst factor
    unauth_source: MethodRates = field(default_factory=lambda: _rates(100, 200, 100, 200, 2))
    unauth_total: MethodRates = field(default_factory=lambda: _rates(2000, 4000, 1000, 2000, 2))
    auth_source: MethodRates = field(default_factory=lambda: _rates(2000, 2000, 1000, 4000, 2))
    account: MethodRates = field(default_factory=lambda: _rates(50, 50, 50, 200, 2))
    tenant: MethodRates = field(default_factory=lambda: _rates(5000, 5000, 2000, 10000, 2))
    in_dialog_source: Rate = Rate(1000, 2000)
    # Over-limit answers per source: beyond this the source is ignored until it slows down
    # (answering a flood 1:1 would amplify it).
    reject_replies: Rate = Rate(20, 40)
    retry_after: tuple[int, int] = (5, 30)  # 503 Retry-After: uniform jitter in this range
    # failed-auth lockout (RFC 3261 §22 does not say; OWASP-style exponential backoff)
    account_failures: int = 5  # failures in ``failure_window`` before the account locks
    source_failures: int = 10  # failures before the source is banned
    failure_window: float = 300.0
    lockout_base: float = 30.0  # first lockout; doubles per repeat strike
    lockout_max: float = 3600.0
    strike_memory: float = 3600.0  # strikes are forgotten after this long without a new one
    proven_ttl: float = 3600.0  # a source that authenticated stays "proven" this long
    # overload: above ``shed_new_at`` (0..1 of capacity) new work is refused, in-dialog kept
    shed_new_at: float = 0.9
    # table capacities (bounded state)
    max_sources: int = 65536
    max_accounts: int = 65536
    max_bans: int = 65536
    scanner: ScannerPolicy = field(default_factory=ScannerPolicy)


class VerdictKind(enum.Enum):
    ADMIT = "admit"
    REJECT = "reject"  # answer with ``status``/``reason`` (and Retry-After when set)
    AUTH_FAIL = "auth-fail"  # answer exactly as a wrong password would be answered
    DROP = "drop"  # say nothing (banned source, or over the reply budget)


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: VerdictKind
    status: int = 0
    reason: str = ""
    retry_after: int | None = None
    rule: str = ""  # bounded label for metrics ("unauth-source", "banned", ...)

    @property
    def admitted(self) -> bool:
        return self.kind is VerdictKind.ADMIT


ADMIT = Verdict(VerdictKind.ADMIT)


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What admission needs to know about one request (the edge fills it after parsing)."""

    source: str  # source host (address); personal data: never leaves this module in clear
    method: str
    tenant: str = "default"
    account: str | None = None  # the claimed or authenticated user (digest username / AOR user)
    authenticated: bool = False  # credentials verified (or a trusted/mTLS peer)
    in_dialog: bool = False  # To tag present
    user_agent: str = ""
    target: str = ""  # Request-URI user (or host) the request aims at: scan detection
    call_id: str = ""  # a challenge is answered on the same Call-ID (scan detection)
    contact: str = ""


@dataclass(slots=True)
class _Failures:
    count: int = 0
    first: float = 0.0
    strikes: int = 0
    last_strike: float = 0.0


class Admission:
    """The edge's admission controller; one per edge core."""

    def __init__(
        self,
        policy: AdmissionPolicy | None = None,
        *,
        node: str = "edge",
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy if policy is not None else AdmissionPolicy()
        self.node = node
        self._rng = rng if rng is not None else random.Random()
        p = self.policy
        self._buckets: BoundedTable[tuple[str, str, str], TokenBucket] = BoundedTable(
            p.max_sources + p.max_accounts
        )
        self._totals: dict[str, TokenBucket] = {}
        self._tenant_buckets: BoundedTable[tuple[str, str], TokenBucket] = BoundedTable(4096)
        self._replies: BoundedTable[str, TokenBucket] = BoundedTable(p.max_sources)
        self._src_fail: BoundedTable[str, _Failures] = BoundedTable(p.max_sources)
        self._acct_fail: BoundedTable[str, _Failures] = BoundedTable(p.max_accounts)
        self._src_ban: BoundedTable[str, float] = BoundedTable(p.max_bans)
        self._acct_lock: BoundedTable[str, float] = BoundedTable(p.max_bans)
        self._proven: BoundedTable[str, float] = BoundedTable(p.max_sources)
        # account -> sources it authenticated from (the user's own phones keep working)
        self._acct_sources: BoundedTable[str, tuple[str, ...]] = BoundedTable(p.max_accounts)
        self.scanner = ScannerDetector(p.scanner)
        self._load = 0.0
        self._alerts: list[SecurityAlert] = []
        self._seq = 0
        self.counts: dict[str, int] = {}  # verdict rule -> count (bounded label set)

    # ------------------------------------------------------------------ public API
    def screen(self, source: str, now: float) -> bool:
        """Before parsing: False when the source is banned (drop without a word)."""
        until = self._src_ban.peek(source)
        if until is None:
            return True
        if now >= until:
            self._src_ban.pop(source)
            return True
        self._count("banned")
        return False

    def set_load(self, fraction: float) -> None:
        """Current load (0 idle .. 1 at capacity), e.g. live transactions / their cap."""
        self._load = max(0.0, fraction)

    def admit(self, req: RequestInfo, now: float) -> Verdict:
        """Decide on one parsed request, once. The edge verifies credentials first when the
        request carries them (after checking :meth:`locked`) and passes ``authenticated``."""
        p = self.policy
        if not self.screen(req.source, now):
            return self._verdict(VerdictKind.DROP, rule="banned")
        mclass = method_class(req.method)
        if req.in_dialog:
            b = self._bucket(("d", req.source, ""), p.in_dialog_source.burst, now)
            if b.take(p.in_dialog_source, now):
                return ADMIT
            return self._over(req.source, now, "in-dialog-source", b.wait(p.in_dialog_source))
        if self._load >= p.shed_new_at and req.method != "ACK":
            return self._over(req.source, now, "overload", 0.0)
        if req.authenticated:
            if req.call_id:
                # credentials on the Call-ID we challenged: a client, not a scanner (whether
                # or not they verify: wrong ones are the lockout's business)
                self.scanner.answered(req.source, req.call_id)
            return self._admit_authenticated(req, mclass, now)
        return self._admit_unauthenticated(req, mclass, now)

    def locked(self, account: str, source: str, now: float) -> bool:
        """True when credentials for ``account`` from ``source`` must be refused without being
        checked (answered like a wrong password). The account's own proven sources pass."""
        until = self._acct_lock.peek(account)
        if until is None:
            return False
        if now >= until:
            self._acct_lock.pop(account)
            return False
        return source not in (self._acct_sources.peek(account) or ())

    def auth_failed(self, source: str, account: str | None, now: float) -> None:
        """Credentials were presented and were wrong (or the user is unknown: same thing)."""
        p = self.policy
        self._count("auth-failed")
        if account is not None:
            f = self._failures(self._acct_fail, account, now)
            if f.count >= p.account_failures:
                until = self._strike(f, now)
                self._acct_lock.put(account, until)
                self._alert(now, "account-lockout", source, f"locked {until - now:.0f}s")
        f = self._failures(self._src_fail, source, now)
        proven = self._is_proven(source, now)
        limit = p.source_failures * (4 if proven else 1)
        if f.count >= limit:
            until = self._strike(f, now)
            self._src_ban.put(source, until)
            self._alert(now, "password-guessing", source, f"banned {until - now:.0f}s")

    def auth_succeeded(self, source: str, account: str, now: float, call_id: str = "") -> None:
        p = self.policy
        self._proven.put(source, now + p.proven_ttl)
        self.scanner.forgive(source)
        known = self._acct_sources.peek(account) or ()
        if source not in known:
            self._acct_sources.put(account, (source, *known[:3]))
        f = self._acct_fail.peek(account)
        if f is not None:
            f.count = 0
        if call_id:
            self.scanner.answered(source, call_id)

    def ban(self, source: str, seconds: float, now: float, rule: str, detail: str = "") -> None:
        """Temporary block of a source (scanner detected)."""
        current = self._src_ban.peek(source) or 0.0
        self._src_ban.put(source, max(current, now + seconds))
        self._alert(now, rule, source, f"{detail}; blocked {seconds:.0f}s".lstrip("; "))

    def take_alerts(self) -> list[SecurityAlert]:
        out, self._alerts = self._alerts, []
        return out

    @property
    def banned_sources(self) -> int:
        return len(self._src_ban)

    # ------------------------------------------------------------------ internals
    def _admit_unauthenticated(self, req: RequestInfo, mclass: str, now: float) -> Verdict:
        p = self.policy
        hit = self.scanner.observe(
            req.source, req.method, req.user_agent, req.target, now, req.contact
        )
        if hit is not None:
            rule, detail = hit
            self.ban(req.source, p.scanner.block_seconds, now, rule, detail)
            return self._verdict(VerdictKind.DROP, rule=rule)
        rate = p.unauth_source.of(mclass)
        b = self._bucket(("u", req.source, mclass), rate.burst, now)
        if not b.take(rate, now):
            return self._over(req.source, now, "unauth-source", b.wait(rate))
        total_rate = p.unauth_total.of(mclass)
        total = self._totals.get(mclass)
        if total is None:
            total = self._totals[mclass] = TokenBucket(total_rate.burst, now)
        if not total.take(total_rate, now):
            return self._over(req.source, now, "unauth-total", total.wait(total_rate))
        # A source that authenticated recently (a NAT full of phones) is not watched for
        # unanswered challenges: its retries are the smoothing working, not a scan.
        if (
            req.call_id
            and req.method in ("REGISTER", "INVITE")
            and not self._is_proven(req.source, now)
        ):
            self.scanner.challenged(req.source, req.call_id, req.target or req.account or "", now)
        return ADMIT

    def _admit_authenticated(self, req: RequestInfo, mclass: str, now: float) -> Verdict:
        p = self.policy
        checks: list[tuple[tuple[str, str, str], Rate, str]] = [
            (("s", req.source, mclass), p.auth_source.of(mclass), "auth-source"),
        ]
        if req.account is not None:
            checks.append((("a", req.account, mclass), p.account.of(mclass), "account"))
        for key, rate, rule in checks:
            b = self._bucket(key, rate.burst, now)
            if not b.take(rate, now):
                return self._over(req.source, now, rule, b.wait(rate))
        trate = p.tenant.of(mclass)
        tb = self._tenant_buckets.get((req.tenant, mclass))
        if tb is None:
            tb = TokenBucket(trate.burst, now)
            self._tenant_buckets.put((req.tenant, mclass), tb)
        if not tb.take(trate, now):
            return self._over(req.source, now, "tenant", tb.wait(trate))
        return ADMIT

    def _over(self, source: str, now: float, rule: str, wait: float) -> Verdict:
        """Over a limit: 503 + jittered Retry-After while the source's reply budget lasts,
        then silence. Never a ban: bans come from failed auth and scanner detection only."""
        p = self.policy
        rb = self._replies.get(source)
        if rb is None:
            rb = TokenBucket(p.reject_replies.burst, now)
            self._replies.put(source, rb)
        if not rb.take(p.reject_replies, now):
            return self._verdict(VerdictKind.DROP, rule=rule)
        lo, hi = p.retry_after
        retry = max(int(wait + 0.999), self._rng.randint(lo, hi))
        return self._verdict(
            VerdictKind.REJECT, 503, "Service Unavailable", retry_after=retry, rule=rule
        )

    def _bucket(self, key: tuple[str, str, str], burst: float, now: float) -> TokenBucket:
        b = self._buckets.get(key)
        if b is None:
            b = TokenBucket(burst, now)
            self._buckets.put(key, b)
        return b

    def _failures(self, table: BoundedTable[str, _Failures], key: str, now: float) -> _Failures:
        p = self.policy
        f = table.get(key)
        if f is None:
            f = _Failures(first=now)
            table.put(key, f)
        if now - f.first > p.failure_window:
            f.count, f.first = 0, now
        if f.strikes and now - f.last_strike > p.strike_memory:
            f.strikes = 0
        f.count += 1
        return f

    def _strike(self, f: _Failures, now: float) -> float:
        """Exponential backoff: base, 2x base, 4x base ... capped; returns the ban deadline."""
        p = self.policy
        seconds = min(p.lockout_max, p.lockout_base * float(2 ** min(f.strikes, 20)))
        f.strikes += 1
        f.last_strike = now
        f.count = 0
        f.first = now
        return now + seconds

    def _is_proven(self, source: str, now: float) -> bool:
        until = self._proven.peek(source)
        return until is not None and now < until

    def _verdict(
        self,
        kind: VerdictKind,
        status: int = 0,
        reason: str = "",
        *,
        retry_after: int | None = None,
        rule: str = "",
    ) -> Verdict:
        self._count(rule)
        return Verdict(kind, status, reason, retry_after, rule)

    def _count(self, rule: str) -> None:
        self.counts[rule] = self.counts.get(rule, 0) + 1

    def _alert(self, now: float, rule: str, source: str, detail: str) -> None:
        self._seq += 1
        self._alerts.append(
            SecurityAlert(
                ts=now, node=self.node, seq=self._seq, rule=rule, source=source, detail=detail
            )
        )
        if len(self._alerts) > 10_000:  # bounded if nobody drains: keep the newest
            del self._alerts[:5_000]
