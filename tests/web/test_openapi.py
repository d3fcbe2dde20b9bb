"""The OpenAPI document is valid and the API honours it, checked by schemathesis (a property
tester that generates requests from the schema, valid and invalid): no request may get a 5xx,
and every response must match the documented status codes, content types and schemas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="why: schemathesis not installed")
from hypothesis import HealthCheck, settings  # noqa: E402
from tests.web.conftest import make_cdr  # noqa: E402

from callward.config import CallwardConfig  # noqa: E402
from callward.records.service import open_records  # noqa: E402
from callward.web import create_app  # noqa: E402
from callward.web.settings import Principal, Role, WebSettings  # noqa: E402


def _app(tmp: Path):  # type: ignore[no-untyped-def]
    rec = open_records(tmp)
    rec.store.write([make_cdr(i, mos=[4.2, 3.4, 2.9, None][i % 4]) for i in range(12)])
    settings = WebSettings(
        tokens={"t0ken": Principal(actor="schemathesis", role=Role.INVESTIGATOR)}
    )
    return create_app(CallwardConfig(), rec, settings), rec


_TMP = Path(__import__("tempfile").mkdtemp(prefix="callward-web-openapi-"))
APP, _REC = _app(_TMP)
# A schema-valid request may still be refused for a reason a schema cannot express: a cursor
# that no page ever handed out (400), an unknown call id (404), a token we do not know (401).
CONFIG = schemathesis.config.SchemathesisConfig.from_dict(
    {
        "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", 400, 401, 403, 404]}},
        "auth": {"openapi": {"HTTPBearer": {"bearer": "t0ken"}}},
        # any bytes are a schema-valid upload; only real captures can be analysed (422)
        "operations": [
            {
                "include-path": "/api/v1/quality/analyze",
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": ["2xx", 401, 413, 422]}
                },
            }
        ],
    }
)
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", APP, config=CONFIG)


@pytest.fixture(scope="module", autouse=True)
def _close() -> Iterator[None]:
    yield
    _REC.close()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi(case) -> None:  # type: ignore[no-untyped-def]
    # schemathesis also replays each case without and with a wrong token (ignored_auth check)
    case.call_and_validate()


def test_generated_requests_were_authenticated() -> None:
    """Guard against a vacuous run: the cases above must have reached audited CDR reads."""
    actors = {e.actor for e in _REC.audit.entries()}
    assert "schemathesis" in actors
