"""Token refreshes of many phones across an IdP outage: the phones' own refresh core
(:class:`callward.ua.token_refresh.TokenCore`, default policy: refresh from 80 % of the
lifetime, exponential backoff 1 s .. 30 s with jitter) against a naive peer in the same run
(retry every second, no jitter, as a client without backoff does).

Discrete-event simulation on an injected clock (the core is sans-IO, so this is the code the
phone runs, minus the sockets): ``--phones`` phones hold 1 h tokens whose refresh falls due,
uniformly, while the IdP is down for ``--outage`` seconds (their tokens stay alive: refresh
starts at 80 % of the lifetime, 12 minutes before the end); every request during the outage fails
(transient), every request after it succeeds in ``--rtt`` seconds. Reported: requests that hit
the IdP during the outage, the peak requests in any one second after it comes back, and when
the last phone holds a fresh token. Run: ``.venv/bin/python benchmarks/refresh_storm.py``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
from collections import Counter

from callward.ua.token_refresh import RefreshPolicy, TokenCore, TokenGrant, TokenState

LIFETIME = 3600.0


def simulate(phones: int, outage: float, rtt: float, naive: bool, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    policy = RefreshPolicy()
    down_from = 0.0
    down_until = down_from + outage
    events: list[tuple[float, int]] = []
    cores: list[TokenCore] = []
    for i in range(phones):
        core = TokenCore(policy, rand=rng.random)
        # every phone's refresh falls due during the outage (uniformly): the worst case
        due = rng.uniform(down_from, down_until)
        core.load(TokenGrant(f"a{i}", LIFETIME, 0.0, f"r{i}"))
        received = due - ((core.refresh_at() or 0.0) - 0.0)
        core.load(TokenGrant(f"a{i}", LIFETIME, received, f"r{i}"))
        cores.append(core)
        at = core.get_timer()
        assert at is not None
        heapq.heappush(events, (at, i))
    per_second: Counter[int] = Counter()
    during = 0
    done_at = 0.0
    pending = set(range(phones))
    while events and pending:
        now, i = heapq.heappop(events)
        core = cores[i]
        if core.begin_refresh(now) is None:
            at = core.get_timer()
            if at is not None and at > now:
                heapq.heappush(events, (at, i))
            continue
        per_second[int(now)] += 1
        if now < down_until:
            during += 1
            core.refresh_failed(now, permanent=False, reason="down")
            if naive:  # the peer: one second, no jitter, no growth
                core._retry_at = now + 1.0
            nxt = core.get_timer()
            assert nxt is not None
            heapq.heappush(events, (nxt, i))
        else:
            core.refresh_succeeded(TokenGrant(f"a{i}'", LIFETIME, now + rtt, f"r{i}'"))
            if core.state is TokenState.VALID and i in pending and now >= down_from:
                pending.discard(i)
                done_at = max(done_at, now + rtt)
    after = [n for s, n in per_second.items() if s >= int(down_until)]
    return {
        "requests_during_outage": during,
        "peak_per_second_after": max(after) if after else 0,
        "all_fresh_after_s": round(done_at - down_until, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phones", type=int, default=10_000)
    ap.add_argument("--outage", type=float, default=300.0)
    ap.add_argument("--rtt", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=14)
    a = ap.parse_args()
    ours = simulate(a.phones, a.outage, a.rtt, naive=False, seed=a.seed)
    peer = simulate(a.phones, a.outage, a.rtt, naive=True, seed=a.seed)
    print(json.dumps({"callward": ours, "naive_1s_retry": peer}, indent=2))
    print(f"{a.phones} phones, {a.outage:g} s IdP outage: requests during the outage "
          f"{ours['requests_during_outage']} vs {peer['requests_during_outage']} "
          f"({peer['requests_during_outage'] / max(1, ours['requests_during_outage']):.1f}x less); "
          f"peak after recovery {ours['peak_per_second_after']}/s vs "
          f"{peer['peak_per_second_after']}/s; all refreshed {ours['all_fresh_after_s']} s vs "
          f"{peer['all_fresh_after_s']} s after the IdP is back")  # fmt: skip


if __name__ == "__main__":
    main()
