"""Recording consent: all-party jurisdictions need everyone, one refusal (or silence) means no
recording; one-party needs one; withdrawal flips the decision; every step is audited."""

from __future__ import annotations

import json
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


def test_consent_evidence_is_aged_by_retention_but_consent_in_force_and_holds_stay(
    tmp_path: Path,
) -> None:
    """GDPR keeps consent evidence 2190 d after it stopped counting; `privacy retention run`
    purges older withdrawn/superseded entries, never the consent in force, never a held one."""
    from typer.testing import CliRunner

    from callward.cli import app
    from callward.privacy.consent import ConsentRetention
    from callward.records import open_records
    from callward.records.retention import DAY, RetainedItem

    data = tmp_path / "var"
    records = open_records(data)
    reg = ConsentRegistry(data / "consent.db", records.codec.cipher.pseudonymizer, records.audit)
    c, d = "tel:+447700900333", "tel:+447700900444"
    ago = {k: NOW - v * DAY for k, v in {"4000": 4000, "3000": 3000, "2500": 2500,
                                         "2300": 2300, "100": 100}.items()}  # fmt: skip
    reg.record(A, "GDPR", given=True, evidence="form:A-old", actor="crm", now=ago["3000"])
    reg.record(A, "GDPR", given=False, evidence="form:A-withdrawn", actor="crm", now=ago["2500"])
    reg.record(B, "GDPR", given=True, evidence="form:B-in-force", actor="crm", now=ago["4000"])
    reg.record(c, "GDPR", given=True, evidence="form:C-1", actor="crm", now=ago["3000"])
    reg.record(c, "GDPR", given=False, evidence="form:C-2", actor="crm", now=ago["100"])
    reg.record(d, "GDPR", given=False, evidence="form:D-refused", actor="crm", now=ago["2300"])
    pn = reg.pseudo.pseudonym
    records.holds.place(actor="legal", reason="claim", ticket="L-7", days=30, now=NOW - DAY,
                        subject_pn=pn(d))  # fmt: skip
    reg.close()
    records.close()
    cfg = tmp_path / "callward.yaml"
    cfg.write_text(f"edge:\n  subscribers: sqlite:{tmp_path / 'subs.sqlite'}\n")
    r = CliRunner().invoke(app, ["privacy", "retention", "run", "--now", str(NOW), "--json",
                                 "--config", str(cfg), "--data-dir", str(data)])  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = [x for x in json.loads(r.stdout)["reasons"] if x["store"] == "consent"]
    assert {(x["action"], x["count"]) for x in rows} == {("purge", 2), ("held", 1)}
    assert "GDPR Art. 7(1)" in rows[0]["reason"]
    records = open_records(data)
    reg = ConsentRegistry(data / "consent.db", records.codec.cipher.pseudonymizer, records.audit)
    try:
        assert reg.history(A) == []  # withdrawn 2500 d ago: evidence gone, consent still absent
        assert reg.state(pn(B), "GDPR", NOW)  # in force for 4000 d: never aged
        assert [e.evidence for e in reg.history(c)] == ["form:C-1", "form:C-2"]
        assert [e.evidence for e in reg.history(d)] == ["form:D-refused"]  # held
        assert b"form:A-" not in (data / "consent.db").read_bytes()
        # a withdrawal is never removed while an older entry of the subject stays: that
        # would put the old consent back in force
        (wid,) = [
            k for (k,) in reg._db.execute("SELECT id FROM consent WHERE evidence = 'form:C-2'")
        ]
        item = RetainedItem("consent", wid, "x", "", ago["100"], subjects=(pn(c),))
        assert ConsentRetention(data / "consent.db").apply(item.stage.PURGED, [item]) == 0
        assert reg.state(pn(c), "GDPR", NOW) is False
    finally:
        reg.close()
        records.close()
