"""Dashboard sessions shared by two ``callward web`` processes (workers): a session made in one
works in the other; a re-authentication or privilege change in one kills the old id in both;
sign-out in one signs out everywhere. Once with the default SQLite store (same data_dir), once
with Redis on 127.0.0.1:6379 (skipped when no Redis answers). Plus the race: two workers
regenerating the same id, exactly one wins."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from callward.web.sessions import SessionStore, SqliteSessions
from callward.web.settings import Principal, Role
from peers import CALLWARD_CLI, free_port, stop

PORTS = (26000, 26999)  # identity14's block (notes/COORD.md)
SETTINGS = """
sessions: {store}
tokens:
  viewer-token: {{actor: "alice@support", role: viewer}}
  investigator-token: {{actor: "ivan@legal", role: investigator}}
"""


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def workers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[list[str]]:
    store = request.param
    if store.startswith("redis") and not _redis_up():
        pytest.skip("no Redis on 127.0.0.1:6379")
    (tmp_path / "web.yaml").write_text(SETTINGS.format(store=store))
    (tmp_path / "callward.yaml").write_text(f"storage: {{data_dir: {tmp_path / 'var'}}}\n")
    procs, urls = [], []
    try:
        for i in range(2):
            port = free_port(PORTS)
            log = tmp_path / f"web{i}.log"
            with log.open("w") as fh:
                procs.append(subprocess.Popen(
                    [*CALLWARD_CLI, "web", "--port", str(port), "--config",
                     str(tmp_path / "callward.yaml"), "--settings", str(tmp_path / "web.yaml")],
                    stdout=fh, stderr=subprocess.STDOUT,
                ))  # fmt: skip
            urls.append(f"http://127.0.0.1:{port}")
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(urls[-1] + "/api/v1/health", timeout=1).status_code < 500:
                        break
                except httpx.HTTPError:
                    pass
                assert procs[-1].poll() is None, log.read_text()[-500:]
                assert time.monotonic() < deadline, log.read_text()[-500:]
                time.sleep(0.2)
        yield urls
    finally:
        for p in procs:
            stop(p)


def _sign_in(url: str, token: str, cookie: str | None = None) -> str:
    cookies = {"callward_session": cookie} if cookie else None
    r = httpx.post(url + "/api/v1/session", json={"token": token}, cookies=cookies)
    assert r.status_code == 204, r.text
    return str(r.cookies["callward_session"])


def _status(url: str, sid: str) -> int:
    return httpx.get(url + "/api/v1/audit/verify", cookies={"callward_session": sid}).status_code


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "workers",
    ["sqlite", pytest.param("redis://127.0.0.1:6379/15", marks=pytest.mark.services)],
    indirect=True,
)
def test_sessions_shared_between_two_web_processes(workers: list[str]) -> None:
    a, b = workers
    first = _sign_in(a, "viewer-token")
    assert _status(b, first) == 200  # made in A, honoured by B
    # privilege change in B (sign in with the investigator token, old cookie presented)
    elevated = _sign_in(b, "investigator-token", cookie=first)
    assert elevated != first
    assert _status(a, first) == 401 and _status(b, first) == 401  # dead everywhere
    page = httpx.get(a + "/", cookies={"callward_session": elevated})
    assert "ivan@legal (investigator)" in page.text
    # re-authentication in A: new id again, the elevated one is revoked in B
    again = _sign_in(a, "investigator-token", cookie=elevated)
    assert _status(b, elevated) == 401 and _status(b, again) == 200
    # sign-out in B ends the session in A too
    r = httpx.delete(b + "/api/v1/session", cookies={"callward_session": again})
    assert r.status_code in (200, 204)
    assert _status(a, again) == 401
    # a session id chosen by an attacker is never accepted (fixation)
    assert _status(a, "attacker-chosen-id") == 401


def test_regeneration_race_one_winner(tmp_path: Path) -> None:
    """Two stores over the same SQLite file (two workers) regenerate one id at once."""
    path = tmp_path / "s.sqlite"
    stores = [SessionStore(time.time, backend=SqliteSessions(path)) for _ in range(2)]
    sid = stores[0].create(Principal(actor="a", role=Role.VIEWER))
    results: list[str | None] = [None, None]
    go = threading.Barrier(2)

    def run(i: int) -> None:
        go.wait()
        results[i] = stores[i].regenerate(sid, Principal(actor="a", role=Role.INVESTIGATOR))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and stores[1].get(sid) is None
    assert stores[1].get(winners[0]) == Principal(actor="a", role=Role.INVESTIGATOR)
    assert len(stores[0]) == 1
    for s in stores:
        s.close()
