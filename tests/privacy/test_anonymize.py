"""k-anonymous aggregate exports: every released group has >= k calls, identifiers never
appear, small cohorts are suppressed, and the export is an audited access."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from callward.cli import app
from callward.errors import PolicyError
from callward.privacy.anonymize import k_anonymous
from callward.records.service import open_records
from callward.records.synthetic import synthetic_cdrs

T0 = 1_800_000_000.0


def test_groups_have_k_members_and_generalise() -> None:
    cdrs = list(synthetic_cdrs(300, start=T0, spacing_s=120.0, subjects=40))
    rows, rep = k_anonymous(cdrs, 10)
    assert rows and all(r.calls >= 10 for r in rows)
    assert rep["calls"] == 300 and sum(r.calls for r in rows) + rep["suppressed_calls"] == 300
    rows20, rep20 = k_anonymous(cdrs, 50)
    assert rep20["level"] >= rep["level"] and all(r.calls >= 50 for r in rows20)


def test_a_lone_call_is_never_released() -> None:
    lone = dataclasses.replace(next(iter(synthetic_cdrs(1, start=T0 + 86400 * 30, seed=9))),
                               call_id="lone", callee="tel:+81312345678")  # fmt: skip
    cdrs = [*synthetic_cdrs(40, start=T0, spacing_s=60.0), lone]
    rows, rep = k_anonymous(cdrs, 5)
    assert rep["suppressed_calls"] >= 1 and all(r.calls >= 5 for r in rows)
    assert not [r for r in rows if r.prefix.startswith("+81")]


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 30), st.integers(1, 200), st.integers(0, 10**6))
def test_property_every_released_group_has_k(k: int, n: int, seed: int) -> None:
    rows, rep = k_anonymous(list(synthetic_cdrs(n, start=T0, spacing_s=700.0, seed=seed)), k)
    assert all(r.calls >= k for r in rows)
    assert sum(r.calls for r in rows) + rep["suppressed_calls"] == n


def test_bad_k() -> None:
    with pytest.raises(PolicyError):
        k_anonymous([], 1)


def test_cli_export_is_audited_and_has_no_identifiers(tmp_path: Path) -> None:
    d = tmp_path / "var"
    rec = open_records(d)
    cdrs = list(synthetic_cdrs(200, start=T0, spacing_s=300.0, subjects=30))
    rec.store.write(cdrs)
    rec.close()
    r = CliRunner().invoke(app, ["privacy", "aggregate-export", "--k", "5", "--json", "--actor",
                                 "analyst", "--reason", "capacity planning", "--ticket", "A-1",
                                 "--data-dir", str(d)])  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert all(row["calls"] >= 5 for row in out["rows"])
    for c in cdrs[:50]:
        for ident in (c.caller, c.callee, c.call_id):
            assert ident not in r.stdout
    rec = open_records(d)
    (entry,) = rec.audit.entries()
    assert entry.action == "export" and entry.actor == "analyst"
    rec.close()
