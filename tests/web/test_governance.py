"""DPO and LI-officer views: each role sees only its own views (403 otherwise), the LI view
lists warrants for li-officers only, and the governance view shows holds, consent counts, data
flow, DPIA findings and the audit status."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.web.conftest import ALICE, T0

from callward.config import CallwardConfig, PrivacyConfig
from callward.privacy.consent import ConsentRegistry
from callward.privacy.intercept import LI_ROLE, WarrantRegistry
from callward.records.audit import AuditLog
from callward.web.settings import Principal, Role, WebSettings

ROOT = Path(__file__).resolve().parents[2]
TOKENS = {
    "v": Principal(actor="viewer", role=Role.VIEWER),
    "i": Principal(actor="investigator", role=Role.INVESTIGATOR),
    "d": Principal(actor="dpo@op", role=Role.DPO),
    "l": Principal(actor="li-1", role=Role.LI_OFFICER),
}


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def gov_client(make_client, records):
    records.holds.place(actor="legal", reason="litigation", ticket="L-1", days=30, now=T0,
                        tenant="default")  # fmt: skip
    consent = ConsentRegistry(records.data_dir / "consent.db",
                              records.codec.cipher.pseudonymizer, records.audit)  # fmt: skip
    consent.record(ALICE, "GDPR", given=True, evidence="web:v3", actor="portal", now=T0)
    consent.close()
    li_audit = AuditLog(records.data_dir / "li" / "audit.db")
    reg = WarrantRegistry(records.data_dir / "li" / "warrants.db",
                          records.codec.cipher.pseudonymizer, li_audit)  # fmt: skip
    reg.provision(actor="li-1", role=LI_ROLE, liid="LIID-42", targets=[ALICE], iri=True,
                  cc=False, valid_from=T0, valid_to=T0 + 86400 * 365, authority="Court")  # fmt: skip
    reg.activate("LIID-42", actor="li-2", role=LI_ROLE)
    reg.close()
    li_audit.close()
    cfg = CallwardConfig(privacy=PrivacyConfig(
        deployment=ROOT / "docs" / "examples" / "deployment-3-regions.yaml"))  # fmt: skip
    return make_client(WebSettings(tokens=TOKENS), cfg)


@pytest.mark.parametrize("path", ["/api/v1/governance", "/governance"])
def test_governance_is_dpo_only(gov_client, path: str) -> None:
    for tok in ("v", "i", "l"):
        assert gov_client.get(path, headers=_h(tok)).status_code == 403
    assert gov_client.get(path).status_code == 401
    assert gov_client.get(path, headers=_h("d")).status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/li/warrants", "/li"])
def test_li_views_are_li_officer_only(gov_client, path: str) -> None:
    for tok in ("v", "i", "d"):
        r = gov_client.get(path, headers=_h(tok))
        assert r.status_code == 403 and "LIID-42" not in r.text
    r = gov_client.get(path, headers=_h("l"))
    assert r.status_code == 200 and "LIID-42" in r.text


def test_governance_content(gov_client) -> None:
    d = gov_client.get("/api/v1/governance", headers=_h("d")).json()
    assert [h["ticket"] for h in d["holds"]] == ["L-1"]
    assert d["consent"] == {"GDPR": {"given": 1, "withdrawn": 0}}
    assert d["audit"]["intact"] and d["audit"]["entries"] >= 2
    assert d["dataflow"]["unsafeguarded"] == [] and len(d["dataflow"]["nodes"]) == 4
    assert {f["register"] for f in d["findings"]} <= {"dpa", "dpia", "transfer"}
    body = gov_client.get("/governance", headers=_h("d")).text
    assert "relay-us" in body and "L-1" in body and "LIID" not in body
    assert ALICE not in body and ALICE[1:] not in str(d)
    li = gov_client.get("/api/v1/li/warrants", headers=_h("l")).json()
    (w,) = li["warrants"]
    assert w["active"] and w["provisioned_by"] == "li-1" and li["trail"]["intact"]
    assert ALICE[1:] not in str(li)  # targets are pseudonyms
