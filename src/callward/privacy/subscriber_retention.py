"""Subscriber data under retention, erasure and plaintext verification: the edge's subscriber
table (SQLite or PostgreSQL), the identity directory (AOR <-> MSISDN) and every PostgreSQL table
callward writes.

A subscriber row's age counts from its ``last_seen`` (bumped when a REGISTER saves bindings)
or, for a subscriber never seen, its ``created`` time (:mod:`callward.edge.subscribers`). When
that age passes the ``subscriber`` purge period of the tenant's rule set, the row is deleted;
a legal hold on the subject (or on the tenant) keeps it. There is no redacted form: a subscriber
row without its username is useless, so the first stage change is the purge.

PostgreSQL cannot be scanned as files, so :func:`postgres_plaintext` searches each table's rows
as text (``t::text`` shows text columns as written and ``bytea`` as ``\\x<hex>``) for every
form of the subject. Sealed CDR fields are ciphertext and never match.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callward.errors import PolicyError, StoreError
from callward.privacy.pseudonym import Pseudonymizer, normalize_subject
from callward.privacy.retention_policy import Stage
from callward.privacy.shred import subject_needles
from callward.records.retention import RetainedItem

__all__ = [
    "DirectoryRows",
    "SubscriberRows",
    "postgres_plaintext",
    "subject_of",
]

PG_SUBSCRIBER_TABLE = "callward_subscribers"


def subject_of(text: str) -> str:
    """The normalized subject of a username or AOR ('' when it names none)."""
    try:
        return normalize_subject(text)
    except PolicyError:
        return ""


def _forms(needles: dict[str, bytes]) -> set[str]:
    return {nd.decode("utf-8", "ignore") for k, nd in needles.items() if k.endswith("/utf-8")}


def _pg_error(exc: Exception, what: str) -> StoreError:
    return StoreError(f"{what}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")


@dataclass
class SubscriberRows:
    """The subscriber table as a retained and erasable store: ``spec`` is the edge's
    ``edge.subscribers`` (``sqlite:PATH`` / a path, or ``postgresql://...``)."""

    spec: str
    pseudonymizer: Pseudonymizer
    table: str = ""
    name: str = "subscriber"
    data_class: str = "subscriber"
    supports: frozenset[Stage] = frozenset({Stage.PURGED})
    linked: list[Any] = field(default_factory=list)  # erasables that follow a purged row
    pg: bool = field(init=False)
    path: Path | None = field(init=False)

    def __post_init__(self) -> None:
        self.pg = self.spec.startswith(("postgresql://", "postgres://"))
        self.table = self.table or (PG_SUBSCRIBER_TABLE if self.pg else "subscribers")
        if not self.table.isidentifier():
            raise StoreError(f"invalid table name {self.table!r}")
        self.path = None if self.pg else Path(self.spec.removeprefix("sqlite:"))

    # --- one small query runner over sqlite3 and psycopg ---------------------------------------
    def _run(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._many(sql, [args], read=True)

    def _many(self, sql: str, arg_sets: list[Sequence[Any]], read: bool = False) -> list[Any]:
        """Run ``sql`` once per argument set in one connection: the rows of a read, or one
        deleted-row count per set (SQLite then VACUUMs so no free page keeps a username)."""
        if self.pg:
            import psycopg

            try:
                with psycopg.connect(self.spec, autocommit=True, connect_timeout=5) as db:
                    out: list[Any] = []
                    for args in arg_sets:
                        cur = db.execute(sql.replace("?", "%s"), list(args))
                        out += list(cur.fetchall()) if read else [cur.rowcount]
                    return out
            except psycopg.Error as exc:
                raise _pg_error(exc, "subscriber store (PostgreSQL)") from None
        assert self.path is not None
        if not self.path.exists():
            return []
        try:
            lite = sqlite3.connect(str(self.path), timeout=5)
            try:
                if read:
                    return lite.execute(sql, tuple(arg_sets[0])).fetchall()
                lite.execute("PRAGMA secure_delete=ON")
                counts = [lite.execute(sql, tuple(a)).rowcount for a in arg_sets]
                lite.commit()
                if any(counts):
                    lite.execute("VACUUM")
                return counts
            finally:
                lite.close()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path.name}: subscriber store: {exc}") from None

    def _aged(self) -> bool:
        """Whether the table has the age columns (an edge of this version opened it)."""
        if self.pg:
            rows = self._run(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?"
                " AND table_schema = current_schema()",
                (self.table,),
            )
        else:
            rows = [(r[1],) for r in self._run(f"PRAGMA table_info({self.table})")]
        return {"created", "last_seen"} <= {str(r[0]) for r in rows}

    def _pn(self, username: str) -> str:
        subj = subject_of(username)
        return self.pseudonymizer.pseudonym(subj) if subj else ""

    def items(self, older_than: float) -> Iterable[RetainedItem]:
        if not self._aged():
            return  # age unknown until the edge migrates the table: never purged on a guess
        rows = self._run(
            f"SELECT username, realm, tenant, COALESCE(last_seen, created) FROM {self.table}"
            " WHERE COALESCE(last_seen, created) < ?",
            (older_than,),
        )
        for user, realm, tenant, ts in rows:
            pn = self._pn(str(user))
            yield RetainedItem(
                self.name, (user, realm), f"subscriber:{pn[:16]}", str(tenant or ""),
                float(ts), Stage.FULL, (pn,) if pn else (),
            )  # fmt: skip

    def apply(self, stage: Stage, items: Sequence[RetainedItem]) -> int:
        """Purge the rows; the subscriber's rows in linked stores (the identity directory)
        go with them."""
        n = self._delete([i.key for i in items])
        for item in items:
            user = str(item.key[0])
            if self.linked and subject_of(user):
                needles = subject_needles(user)
                for store in self.linked:
                    store.erase(self._pn(user), needles)
        return n

    def _delete(self, keys: list[tuple[str, str]]) -> int:
        if not keys:
            return 0
        q = f"DELETE FROM {self.table} WHERE username = ? AND realm = ?"
        return sum(self._many(q, list(keys)))

    def _matching(self, pn: str, needles: dict[str, bytes]) -> list[tuple[str, str]]:
        forms = _forms(needles)
        rows = self._run(f"SELECT username, realm FROM {self.table}")
        return [
            (str(u), str(r)) for u, r in rows
            if subject_of(str(u)) in forms or subject_of(f"{u}@{r}") in forms
            or (pn and self._pn(str(u)) == pn)
        ]  # fmt: skip

    def erase(self, pn: str, needles: dict[str, bytes]) -> int:
        return self._delete(self._matching(pn, needles))

    def plaintext(self, needles: dict[str, bytes]) -> list[str]:
        """``<table>:<pseudonym>`` of each row naming the subject (PostgreSQL; SQLite files are
        scanned as bytes by ``privacy verify``)."""
        return [f"{self.table}:{self._pn(u)[:16]}" for u, _ in self._matching("", needles)]


@dataclass
class DirectoryRows:
    """The identity directory (``identity.directory``, SQLite WAL): rows whose MSISDN or AOR
    names the subject are deleted on erasure; the change log keeps only the OAuth subject and
    the kind of change. Directory rows follow the subscriber's life (no age of their own)."""

    path: Path
    pseudonymizer: Pseudonymizer
    name: str = "identity-directory"

    def erase(self, pn: str, needles: dict[str, bytes]) -> int:
        if not self.path.exists():
            return 0
        forms = _forms(needles)
        try:
            db = sqlite3.connect(str(self.path), timeout=5)
            try:
                db.execute("PRAGMA secure_delete=ON")
                rows = db.execute("SELECT subject, aor, msisdn FROM identity").fetchall()
                gone = [
                    (s,) for s, aor, msisdn in rows
                    if (msisdn and subject_of(msisdn) in forms) or subject_of(aor) in forms
                    or subject_of(str(aor).split("@", 1)[0]) in forms
                ]  # fmt: skip
                db.executemany("DELETE FROM identity WHERE subject = ?", gone)
                db.commit()
                if gone:  # the WAL still holds the old pages: fold it in and rebuild the file
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    db.execute("VACUUM")
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                return len(gone)
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path.name}: identity directory erasure: {exc}") from None


def postgres_plaintext(url: str, schemas: Iterable[str], needles: dict[str, bytes]) -> list[str]:
    """``<schema>.<table>`` (with a row count) of every table in ``schemas`` holding any UTF-8
    form of the subject as text or bytes."""
    import psycopg

    texts = sorted({nd.decode("utf-8", "ignore") for k, nd in needles.items()
                    if k.endswith("/utf-8")})  # fmt: skip
    pats = texts + [t.encode().hex() for t in texts]
    out: list[str] = []
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as db:
            tables = db.execute(  # tables and partitioned parents (a parent scans its partitions)
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
                " ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')"
                " AND NOT c.relispartition AND n.nspname = ANY(%s) ORDER BY 1, 2",
                (list(schemas),),
            ).fetchall()
            for schema, table in tables:
                q = (
                    f'SELECT count(*) FROM "{schema}"."{table}" t WHERE EXISTS (SELECT 1 FROM'
                    " unnest(%s::text[]) p WHERE strpos(lower(t::text), lower(p)) > 0)"
                )
                row = db.execute(q, (pats,)).fetchone()
                n = int(row[0]) if row else 0
                if n:
                    out.append(f"{schema}.{table} ({n} row match{'es' if n > 1 else ''})")
    except psycopg.Error as exc:
        raise _pg_error(exc, "PostgreSQL plaintext scan") from None
    return out
