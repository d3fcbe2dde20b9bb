"""Retention rule sets fail closed: unknown jurisdictions, data classes or gaps are ConfigErrors
(CLI exit 2 with one line), never "keep forever"."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from callward.cli import app
from callward.errors import ConfigError
from callward.privacy.retention_policy import (
    DATA_CLASSES,
    Stage,
    _parse_ruleset,
    load_policy,
    load_ruleset,
)

SETS = ["builtin:GDPR", "builtin:CCPA", "builtin:LOCAL-TEL"]


def test_shipped_rule_sets_cover_every_data_class() -> None:
    for src in SETS:
        rs = load_ruleset(src)
        assert set(rs.rules) == set(DATA_CLASSES), rs.jurisdiction


def test_gdpr_cdr_schedule_matches_the_yaml() -> None:
    s = load_policy(SETS).schedule("", "cdr")
    assert (s.redact_at, s.aggregate_at, s.purge_at) == (180, 365, 1095)
    assert s.stage_for(10) is Stage.FULL and s.stage_for(180) is Stage.FULL
    assert s.stage_for(181) is Stage.REDACTED and s.stage_for(400) is Stage.AGGREGATED
    assert s.stage_for(1096) is Stage.PURGED


def test_skipped_stage_takes_the_next_deadline_and_keep_min_wins() -> None:
    pol = load_policy(SETS, {"t": ["GDPR", "LOCAL-TEL"]})
    hep = pol.schedule("t", "hep_archive")  # GDPR purge 30 d, LOCAL-TEL keep 90 d
    assert (hep.redact_at, hep.aggregate_at, hep.purge_at) == (90, 90, 90)
    assert any("keep_min 90 d" in c for c in hep.conflicts)


@pytest.mark.parametrize(
    ("tenants", "default", "needle"),
    [
        ({}, ["GDRP"], "unknown jurisdiction 'GDRP'"),
        ({"acme": ["GDPR", "XX"]}, ["GDPR"], "unknown jurisdiction 'XX'"),
        ({"acme": []}, ["GDPR"], "no jurisdiction"),
    ],
)
def test_unknown_jurisdiction_is_a_config_error(tenants, default, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_policy(SETS, tenants, default)


def test_unknown_data_class_and_gaps_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown data class"):
        load_policy(SETS).schedule("", "cdrs")
    partial = tmp_path / "partial.yaml"
    partial.write_text(yaml.safe_dump({"jurisdiction": "P", "rules": {
        "cdr": {"purge_after": 30, "basis": "x"}}}))  # fmt: skip
    with pytest.raises(ConfigError, match="no retention rule for data class 'log'"):
        load_policy([*SETS, str(partial)], {"t": ["P"]})
    bad = tmp_path / "bad.yaml"
    for body, msg in [
        ({"cdr": {"redact_after": 10, "basis": "x"}}, "purge_after is required"),
        ({"cdr": {"purge_after": 10, "redact_after": 20, "basis": "x"}}, "redact_after <="),
        ({"cdr": {"purge_after": 10}}, "legal basis"),
        ({"calls": {"purge_after": 10, "basis": "x"}}, "unknown data class"),
        ({"cdr": {"purge_after": "ten", "basis": "x"}}, "number of days"),
        ({"cdr": {"purge_after": 10, "basis": "x", "keep": 1}}, "unknown key 'keep'"),
    ]:
        bad.write_text(yaml.safe_dump({"jurisdiction": "B", "rules": body}))
        with pytest.raises(ConfigError, match=msg):
            load_ruleset(bad)
    with pytest.raises(ConfigError, match="unknown; built-in"):
        load_ruleset("builtin:GDRP")


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=5),
    max_leaves=20,
))  # fmt: skip
def test_fuzzed_rule_sets_give_config_errors_only(data) -> None:
    try:
        _parse_ruleset(data, "fuzz")
    except ConfigError as exc:
        assert "\n" not in str(exc)


def test_cli_fails_closed_with_exit_2_and_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "callward.yaml"
    cfg.write_text("records:\n  default_jurisdictions: [GDRP]\n")
    runner = CliRunner()
    for args in (["cdr", "purge", "--dry-run"], ["privacy", "retention", "plan"],
                 ["privacy", "retention", "rules"]):  # fmt: skip
        r = runner.invoke(app, [*args, "--config", str(cfg), "--data-dir", str(tmp_path / "v")])
        assert r.exit_code == 2, (args, r.output)
        assert "unknown jurisdiction 'GDRP'" in r.stderr and len(r.stderr.splitlines()) == 1


def test_cli_rules_shows_the_effective_schedule(tmp_path: Path) -> None:
    cfg = tmp_path / "callward.yaml"
    cfg.write_text("records:\n  jurisdictions: {acme: [GDPR, LOCAL-TEL]}\n")
    r = CliRunner().invoke(app, ["privacy", "retention", "rules", "--tenant", "acme", "--config",
                                 str(cfg), "--data-dir", str(tmp_path / "v")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "GDPR, LOCAL-TEL" in r.stdout and "conflict: cdr: GDPR redacted at 180 d" in r.stdout
