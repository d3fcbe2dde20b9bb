"""1,000 phones and one edge outage: does re-registration storm? (issue 12, "Proven").

A discrete-event simulation with an injected clock: each phone is a real
:class:`callward.ua.registration.RegistrationManager` with digest credentials; the registrar is
:class:`callward.sip.auth.DigestVerifier` (the edge's verifier) behind a network with loss, round
trip time and outage windows. A lost or refused-by-outage REGISTER surfaces as the 408 the
transaction layer synthesizes after Timer F (64*T1 = 32 s).

The storm case: the edge crashes at ``outage_start`` (every flow breaks at once, as when all TCP
connections to it drop) and comes back at ``outage_end``. We compare the manager's full-jitter
backoff with the same backoff without jitter, and report the REGISTER rate the edge sees after
it comes back and how long the phones take to be registered again.

    python benchmarks/registration_storm.py [--phones 1000] [--plot docs/registration_storm.png]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from callward.sip.auth import DigestAlgorithm, DigestVerifier, ha1
from callward.sip.message import Headers, Request, Response, make_response
from callward.ua.call import LocalEndpoint
from callward.ua.credentials import DigestCredentials
from callward.ua.registration import RegistrationManager, RetryPolicy

REALM = "sim.example"
TIMER_F = 32.0


class SimRegistrar:
    """Digest-checking registrar: 401 without (valid) credentials, else 200 with the binding."""

    def __init__(self, granted: int = 600, nonce_ttl: float = 3600.0) -> None:
        self.granted = granted
        self.verifier = DigestVerifier(
            REALM, b"s" * 32, self._ha1, algorithms=(DigestAlgorithm.MD5,), qop=("auth",),
            nonce_ttl=nonce_ttl,
        )  # fmt: skip
        self.requests = 0
        self.challenges = 0
        self.unavailable: float | None = None  # Retry-After while overloaded

    @staticmethod
    def _ha1(user: str, realm: str, alg: DigestAlgorithm) -> str | None:
        return ha1(alg, user, realm, f"pw-{user}")

    def handle(self, req: Request, now: float) -> Response:
        self.requests += 1
        if self.unavailable is not None:
            extra = [("Retry-After", str(int(self.unavailable)))]
            return make_response(req, 503, to_tag="sim", extra=extra)
        result = self.verifier.verify(req, now)
        if not result.ok:
            self.challenges += 1
            stale = result.outcome.value == "stale"
            return self.verifier.challenge_response(req, now, stale=stale, to_tag="sim")
        expires = int(req.headers.get("Expires") or self.granted)
        granted = min(expires, self.granted)
        contact = req.headers.get("Contact", "").split(";expires=", 1)[0]
        extra = [("Contact", f"{contact};expires={granted}")]
        return make_response(req, 200, to_tag="sim", extra=extra)


@dataclass
class Network:
    rtt: float = 0.08
    loss: float = 0.0  # per direction
    outages: list[tuple[float, float]] = field(default_factory=list)

    def up(self, t: float) -> bool:
        return not any(a <= t < b for a, b in self.outages)


@dataclass
class SimResult:
    attempts: list[tuple[float, int]]  # (time, phone) of every REGISTER sent
    up_at: dict[int, list[float]]  # per phone: times its flow came up
    managers: list[RegistrationManager]
    registrar: SimRegistrar

    def registered(self, now: float) -> int:
        return sum(1 for m in self.managers if m.registered(now))

    def recovery(self, after: float) -> list[float]:
        """Per phone, seconds from ``after`` to its first successful registration after it."""
        out = []
        for times in self.up_at.values():
            later = [t for t in times if t >= after]
            if later:
                out.append(later[0] - after)
        return sorted(out)

    def peak_rate(self, start: float, end: float, bucket: float = 1.0) -> int:
        counts = Counter(int((t - start) // bucket) for t, _ in self.attempts if start <= t < end)
        return max(counts.values(), default=0)


def simulate(
    phones: int,
    duration: float,
    *,
    network: Network | None = None,
    retry: RetryPolicy | None = None,
    seed: int = 1,
    expires: int = 600,
    crash_at: float | None = None,
    hook: Callable[[float, list[RegistrationManager]], None] | None = None,
) -> SimResult:
    """Run ``phones`` managers for ``duration`` simulated seconds against one registrar.
    ``crash_at`` breaks every flow at that instant (the edge dropped all connections)."""
    net = network or Network()
    rng = random.Random(seed)
    registrar = SimRegistrar()
    edge = ("192.0.2.10", 5060)
    managers: list[RegistrationManager] = []
    heap: list[tuple[float, int, str, int, object]] = []
    seq = itertools.count()
    timer_gen: dict[int, int] = {}
    attempts: list[tuple[float, int]] = []
    up_at: dict[int, list[float]] = {i: [] for i in range(phones)}

    for i in range(phones):
        local = LocalEndpoint(f"u{i}", REALM, f"10.{i // 250}.{i % 250}.2", 5060)
        m = RegistrationManager(
            local, [edge], domain=REALM, expires=expires,
            credentials=DigestCredentials(f"u{i}", f"pw-u{i}"), retry=retry,
            rng=random.Random(rng.random()),
        )  # fmt: skip
        managers.append(m)
        heapq.heappush(heap, (rng.uniform(0, 60), next(seq), "start", i, None))
    if crash_at is not None:
        heapq.heappush(heap, (crash_at, next(seq), "crash", -1, None))

    def flush(i: int, now: float) -> None:
        m = managers[i]
        for out in m.requests_to_send():
            attempts.append((now, i))
            lost = rng.random() < net.loss or rng.random() < net.loss
            if net.up(now) and not lost:
                resp = registrar.handle(out.request, now + net.rtt / 2)
                heapq.heappush(heap, (now + net.rtt, next(seq), "resp", i, (out, resp)))
            else:
                timeout = Response(Headers(), status=408, reason="Request Timeout")
                heapq.heappush(heap, (now + TIMER_F, next(seq), "resp", i, (out, timeout)))
        while (ev := m.next_event()) is not None:
            if type(ev).__name__ == "FlowUp":
                up_at[i].append(now)
        deadline = m.get_timer()
        if deadline is not None:
            timer_gen[i] = timer_gen.get(i, 0) + 1
            heapq.heappush(heap, (deadline, next(seq), "timer", i, timer_gen[i]))

    while heap:
        t, _, kind, i, payload = heapq.heappop(heap)
        if t > duration:
            break
        if kind == "crash":
            for j, m in enumerate(managers):
                m.flow_failed(0, t)
                flush(j, t)
            continue
        m = managers[i]
        if kind == "start":
            m.start(t)
        elif kind == "timer":
            if payload != timer_gen.get(i):
                continue
            m.handle_timer(t)
        elif kind == "resp":
            out, resp = payload  # type: ignore[misc]
            m.receive_response(out.flow, resp, t, request=out.request)
        if hook is not None:
            hook(t, managers)
        flush(i, t)
    return SimResult(attempts, up_at, managers, registrar)


def storm(phones: int, *, jitter: bool, seed: int = 7) -> dict[str, float]:
    start, end = 1000.0, 2800.0  # a 30 min outage
    result = simulate(
        phones,
        end + 2400.0,
        network=Network(outages=[(start, end)]),
        retry=RetryPolicy(jitter=jitter),
        seed=seed,
        crash_at=start,
    )
    rec = result.recovery(end)
    n = len(rec)
    return {
        "phones": phones,
        "jitter": jitter,
        "registered_at_end": result.registered(end + 2400.0),
        "peak_register_per_s_after_outage": result.peak_rate(end, end + 2400.0),
        "recovery_p50_s": round(rec[n // 2], 1) if n else -1,
        "recovery_p95_s": round(rec[int(n * 0.95)], 1) if n else -1,
        "recovery_max_s": round(rec[-1], 1) if n else -1,
        "registers_total": len(result.attempts),
        "_recovery": rec,  # type: ignore[dict-item]
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phones", type=int, default=1000)
    ap.add_argument("--plot", default="")
    args = ap.parse_args()
    runs = [storm(args.phones, jitter=True), storm(args.phones, jitter=False)]
    for r in runs:
        print(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 3.5))
        bins = list(range(0, 1900, 30))
        for r in runs:
            label = "full jitter (callward)" if r["jitter"] else "same backoff, no jitter"
            ax.hist(r["_recovery"], bins=bins, alpha=0.6, label=label, histtype="stepfilled")
        ax.set_yscale("log")
        ax.set_xlabel("seconds after the edge came back until re-registered")
        ax.set_ylabel("phones per 30 s (log)")
        ax.set_title(f"{args.phones} phones after a 30 min edge outage")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=90)


if __name__ == "__main__":
    main()
