"""Recording consent: all-party jurisdictions need everyone, one refusal (or silence) means no
recording; one-party needs one; withdrawal flips the decision; every step is audited."""

from __future__ import annotations

from pathlib import Path

import pytest

from callward.errors import ConfigError, PolicyError
from callward.privacy import Pseudonymizer
from callward.privacy.consent import ConsentRegistry
from callward.records.audit import AuditLog

NOW = 1_800_000_000.0
A, B = "tel:+447700900111", "sip:+447700900222@ims.example"


@pytest.fixture
def reg(tmp_path: Path):
    audit = AuditLog(tmp_path / "audit.db")
    r = ConsentRegistry(tmp_path / "consent.db", Pseudonymizer(b"k" * 32), audit)
    yield r
    r.close()
    audit.close()


def test_all_party_one_refusal_means_no_recording(reg: ConsentRegistry) -> None:
    reg.record(A, "US-CA", given=True, evidence="ivr:prompt-7:dtmf-1", actor="ivr", now=NOW - 60)
    reg.record(B, "US-CA", given=False, evidence="ivr:prompt-7:dtmf-2", actor="ivr", now=NOW - 30)
    d = reg.decide("call-1", [A, B], "US-CA", NOW)
    assert not d.allowed and not d.announcement
    assert d.missing == (reg.pseudo.pseudonym(B),)
    # silence is refusal too
    d = reg.decide("call-2", [A, "tel:+447700900333"], "US-CA", NOW)
    assert not d.allowed
    reg.record(B, "US-CA", given=True, evidence="form:F-9", actor="crm", now=NOW)
    d = reg.decide("call-3", [A, B], "US-CA", NOW + 1)
    assert d.allowed and d.announcement  # California: announcement required


def test_one_party_and_withdrawal(reg: ConsentRegistry) -> None:
    reg.record(A, "US-NY", given=True, evidence="contract:C-1", actor="crm", now=NOW - 10)
    assert reg.decide("c1", [A, B], "US-NY", NOW).allowed
    reg.record(A, "US-NY", given=False, evidence="app:settings", actor="app", now=NOW + 5)
    assert reg.decide("c1", [A, B], "US-NY", NOW).allowed  # as of NOW it held
    assert not reg.decide("c1", [A, B], "US-NY", NOW + 6).allowed
    assert [e.given for e in reg.history(A)] == [True, False]


def test_decisions_and_changes_are_in_the_audit_chain(reg: ConsentRegistry) -> None:
    reg.record(A, "GDPR", given=True, evidence="web:consent-v3", actor="portal", now=NOW)
    reg.decide("c9", [A, B], "GDPR", NOW)
    entries = reg.audit.entries()
    assert [e.action for e in entries] == ["consent", "recording"]
    assert entries[0].subject == reg.pseudo.pseudonym(A)
    assert entries[1].records == ("c9",) and "refused" in entries[1].reason
    assert reg.audit.verify() == []
    blob = (Path(reg.audit.path)).read_bytes()
    assert (
        b"447700900111" not in blob
        and b"447700900111"
        not in Path(reg._db.execute("PRAGMA database_list").fetchone()[2]).read_bytes()
    )


def test_bad_input_is_refused(reg: ConsentRegistry) -> None:
    with pytest.raises(ConfigError, match="unknown jurisdiction"):
        reg.record(A, "US-XX", given=True, evidence="e", actor="a", now=NOW)
    with pytest.raises(PolicyError, match="evidence"):
        reg.record(A, "GDPR", given=True, evidence=" ", actor="a", now=NOW)
    assert not reg.decide("c", [], "GDPR", NOW).allowed
