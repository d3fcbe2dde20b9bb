"""A temporary records directory (SQLite CDR store, keys, audit trail) filled through the
records API, and a TestClient over the web app built on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from callward.config import CallwardConfig
from callward.records.schema import Cdr, Leg, Lineage
from callward.records.service import Records, open_records
from callward.web import create_app
from callward.web.settings import Principal, Role, WebSettings

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
# Ofcom drama range numbers (+44 7700 900xxx): never a real subscriber.
ALICE = "+447700900101"
BOB = "+447700900202"
CAROL = "sip:+447700900303@ims.example;user=phone"


def make_cdr(
    i: int,
    *,
    start: float | None = None,
    caller: str = ALICE,
    callee: str = BOB,
    mos: float | None = 4.1,
    packets: int = 3000,
    lost: int = 30,
    jitter: float = 12.5,
    tenant: str = "default",
) -> Cdr:
    t0 = T0 + 60.0 * i if start is None else start
    answered = mos is not None
    legs = (
        Leg("a", ("edge-1",), t0, t0 + 2 if answered else None, t0 + 62, 200 if answered else 486,
            "bye", ("PCMU/8000",), 0, packets, lost, jitter, mos),
        Leg("b", ("relay-1",), t0 + 0.1, t0 + 2 if answered else None, t0 + 62,
            200 if answered else 486, "bye", ("PCMU/8000",), 1, packets, 0, jitter / 2,
            None if mos is None else min(4.4, mos + 0.2)),
    )  # fmt: skip
    return Cdr(
        call_id=f"call-{i:04d}",
        tenant=tenant,
        caller=caller,
        callee=callee,
        start_ts=t0,
        answer_ts=t0 + 2 if answered else None,
        end_ts=t0 + 62,
        status=200 if answered else 486,
        disposition="answered" if answered else "busy",
        legs=legs,
        codecs=("PCMU/8000",),
        packets=packets if answered else 0,
        lost=lost if answered else 0,
        jitter_ms=jitter,
        mos_min=mos,
        lineage=Lineage(("edge-1", "relay-1"), 8, (2,), ("assembled:v2",)),
    )


@pytest.fixture
def records(tmp_path: Path) -> Iterator[Records]:
    rec = open_records(tmp_path / "var")
    yield rec
    rec.close()


TOKENS = {
    "viewer-token": Principal(actor="alice@support", role=Role.VIEWER),
    "investigator-token": Principal(actor="ivan@legal", role=Role.INVESTIGATOR),
}


@pytest.fixture
def make_client(records: Records) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(
        settings: WebSettings | None = None, config: CallwardConfig | None = None
    ) -> TestClient:
        app = create_app(config or CallwardConfig(), records, settings, clock=lambda: T0 + 1e6)
        # /metrics answers the management address (loopback) only: the client is local
        c = TestClient(app, client=("127.0.0.1", 50000))
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()
