"""The OpenAPI document is valid and the API honours it, checked by schemathesis (a property
tester that generates requests from the schema, valid and invalid): no request may get a 5xx,
and every response must match the documented status codes, content types and schemas."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="why: schemathesis not installed")
from hypothesis import HealthCheck, settings  # noqa: E402
from tests.web.conftest import make_cdr  # noqa: E402

from callward.config import CallwardConfig  # noqa: E402
from callward.records.service import Records, open_records  # noqa: E402
from callward.web import create_app  # noqa: E402
from callward.web.settings import Principal, Role, WebSettings  # noqa: E402

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
# schemathesis needs the schema at import time (its pytest fixture loader does not run on
# pytest 9), so the app is built here; the module fixture below removes its files afterwards.
_TMP = tempfile.TemporaryDirectory(prefix="callward-web-openapi-")
_REC: Records = open_records(Path(_TMP.name) / "var")
_REC.store.write([make_cdr(i, mos=[4.2, 3.4, 2.9, None][i % 4]) for i in range(12)])
_APP = create_app(
    CallwardConfig(),
    _REC,
    WebSettings(tokens={"t0ken": Principal(actor="schemathesis", role=Role.INVESTIGATOR)}),
)
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", _APP, config=CONFIG)


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    _REC.close()
    _TMP.cleanup()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi(case) -> None:  # type: ignore[no-untyped-def]
    # schemathesis also replays each case without and with a wrong token (ignored_auth check)
    case.call_and_validate()


def test_generated_requests_were_authenticated() -> None:
    """Guard against a vacuous run: the cases above must have reached audited CDR reads."""
    actors = {e.actor for e in _REC.audit.entries()}
    assert "schemathesis" in actors
