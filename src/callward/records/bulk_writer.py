"""A writer *process* for bulk SQLite ingest, so encoding and committing run on two cores.

Why a process: a writer thread was measured slower than one thread (the sqlite3 module holds the
GIL while binding every parameter, so the threads convoy); a second interpreter has its own GIL.
Batches of encoded rows (identifiers already sealed: the child never sees plaintext or keys) are
pickled over a pipe — about half a microsecond per row — and committed by the child with the
same SQL as :class:`~callward.records.store_sqlite.SqliteCdrStore`. At most two batches are in
flight, so memory stays bounded and ``write`` returns only after everything is committed.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections import deque
from typing import Any

from callward.errors import StoreError

__all__ = ["BulkWriter"]


# The child runs this with ``python -I -c``: it imports only the standard library (fast start,
# no re-import of the parent's ``__main__`` or of callward, no fork of a threaded parent).
_CHILD = """
import pickle, sqlite3, sys
path, sql = sys.argv[1], sys.argv[2]
inp, out = sys.stdin.buffer, sys.stdout.buffer
db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
for pragma in ("synchronous=NORMAL", "secure_delete=FAST", "cache_size=-65536"):
    db.execute("PRAGMA " + pragma)
while True:
    try:
        batch = pickle.load(inp)
    except EOFError:
        break
    if batch is None:
        break
    try:
        db.execute("BEGIN IMMEDIATE")
        reply = ("ok", db.executemany(sql, batch).rowcount)
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        reply = ("error", str(exc))
    pickle.dump(reply, out)
    out.flush()
db.close()
"""


class BulkWriter:
    """Child process committing row batches to one SQLite file (a plain subprocess rather than
    multiprocessing: see ``_CHILD``)."""

    def __init__(self, path: str, sql: str, in_flight: int = 2) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _CHILD, path, sql],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._in, self._out = self._proc.stdin, self._proc.stdout
        self._pending: deque[int] = deque()
        self._in_flight = in_flight
        self.committed = 0

    def submit(self, batch: list[tuple[Any, ...]]) -> None:
        while len(self._pending) >= self._in_flight:
            self._reap()
        try:
            pickle.dump(batch, self._in, protocol=pickle.HIGHEST_PROTOCOL)
            self._in.flush()
        except (BrokenPipeError, OSError):
            raise StoreError("SQLite writer process died") from None
        self._pending.append(len(batch))

    def _reap(self) -> None:
        try:
            status, value = pickle.load(self._out)
        except (EOFError, OSError, pickle.UnpicklingError):
            raise StoreError("SQLite writer process died") from None
        self._pending.popleft()
        if status != "ok":
            raise StoreError(f"SQLite bulk write failed: {value}")
        self.committed += int(value)

    def drain(self) -> int:
        while self._pending:
            self._reap()
        done, self.committed = self.committed, 0
        return done

    def close(self) -> None:
        try:
            self.drain()
            pickle.dump(None, self._in)
            self._in.close()
        except (StoreError, OSError):
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._out.close()
