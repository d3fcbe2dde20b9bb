"""usage/budget.py: an idle phone's bytes-per-hour budget split between registration refresh
and keep-alives, priced by the same planner the idle benchmarks check against the wire."""

from __future__ import annotations

import pytest

from callward.errors import ConfigError
from callward.nat.keepalive import KeepAliveSizer
from callward.ua.registration_agent import keepalive_policy
from callward.usage.budget import MAX_KEEPALIVE_S, idle_budget
from callward.usage.keepalive import plan_keepalive


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls", "wss"])
def test_5kb_per_hour_fits_and_is_spent_as_planned(transport: str) -> None:
    plan = idle_budget(5000, transport)
    assert plan.fits and plan.register_expires == 3600
    assert plan.planned_bytes_per_hour == pytest.approx(5000)
    # the refresh at 82.5 % of 3600 s, four messages, priced per transport
    carrier = {"wss": "tls"}.get(transport, transport)
    refresh = plan_keepalive("register", 2970, transport=carrier).bytes_per_hour
    assert plan.register_bytes_per_hour == pytest.approx(refresh)
    # the keep-alive sizer given the cap never goes below the interval the budget allows
    policy = keepalive_policy(transport, bytes_per_hour_cap=plan.keepalive_cap)
    assert KeepAliveSizer(policy).interval >= plan.keepalive_floor_s - 1e-6
    per = policy.bytes_per_keepalive * 3600 / plan.keepalive_floor_s
    assert plan.register_bytes_per_hour + per == pytest.approx(5000)


def test_a_budget_below_the_refresh_does_not_fit_and_names_push() -> None:
    plan = idle_budget(2000, "tcp")
    assert not plan.fits
    assert plan.keepalive_floor_s == MAX_KEEPALIVE_S
    assert plan.push_bytes_per_hour == plan.register_bytes_per_hour < 3000
    assert plan.as_dict()["fits"] is False


@pytest.mark.parametrize(("budget", "transport"), [(50, "udp"), (5000, "sctp"), (1e9, "tcp")])
def test_bad_budgets(budget: float, transport: str) -> None:
    with pytest.raises(ConfigError):
        idle_budget(budget, transport)
