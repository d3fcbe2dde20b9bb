"""Recording consent: a registry per subject and jurisdiction, and the decision whether a call
may be recorded.

Jurisdictions differ on *whose* consent a recording needs: one-party rules (e.g. US federal law,
18 U.S.C. §2511(2)(d); most US states) are met when one party to the call consents; all-party
rules (e.g. California Penal Code §632, GDPR Art. 6(1)(a) where consent is the basis) need every
party. Some rules also require an announcement ("this call may be recorded") before recording.

Consent is recorded per subject (keyed pseudonym, never the number) with a timestamp, an
evidence reference (IVR prompt id, signed form, ticket) and the actor; withdrawal is a new entry,
the latest entry wins. Every change and every recording decision goes into the hash-chained
audit trail (``consent``/``recording`` actions), so a DPO can show why a call was or was not
recorded. A party with no entry has *not* consented: silence is refusal (fail closed).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from callward.errors import ConfigError, PolicyError, StoreError
from callward.privacy.pseudonym import Pseudonymizer
from callward.privacy.retention_policy import Stage
from callward.records.retention import RetainedItem

__all__ = [
    "BUILTIN_CONSENT_RULES",
    "ConsentMode",
    "ConsentRegistry",
    "ConsentRetention",
    "ConsentRule",
    "RecordingDecision",
]

_MAX_EVIDENCE = 500


class ConsentMode(StrEnum):
    ONE_PARTY = "one-party"
    ALL_PARTY = "all-party"


@dataclass(frozen=True, slots=True)
class ConsentRule:
    jurisdiction: str
    mode: ConsentMode
    announcement: bool
    basis: str


BUILTIN_CONSENT_RULES: Mapping[str, ConsentRule] = {
    r.jurisdiction: r
    for r in (
        ConsentRule("US-FED", ConsentMode.ONE_PARTY, False, "18 U.S.C. §2511(2)(d)"),
        ConsentRule("US-NY", ConsentMode.ONE_PARTY, False, "N.Y. Penal Law §250.00"),
        ConsentRule("US-CA", ConsentMode.ALL_PARTY, True, "Cal. Penal Code §632"),
        ConsentRule("GDPR", ConsentMode.ALL_PARTY, True, "GDPR Art. 6(1)(a), Art. 7"),
        ConsentRule("UK", ConsentMode.ONE_PARTY, True, "RIPA 2000 / IPA 2016; UK GDPR notice"),
    )
}


@dataclass(frozen=True, slots=True)
class RecordingDecision:
    call_id: str
    allowed: bool
    announcement: bool  # play/mark "this call is recorded" before recording starts
    jurisdiction: str
    reason: str
    missing: tuple[str, ...] = ()  # pseudonyms of parties without valid consent


@dataclass(frozen=True, slots=True)
class ConsentEntry:
    subject: str  # pseudonym
    jurisdiction: str
    given: bool
    ts: float
    evidence: str
    actor: str


class ConsentRegistry:
    """Consent entries in SQLite (``var/consent.db``); audited through ``audit`` (an
    :class:`~callward.records.audit.AuditLog`, duck-typed to keep layers simple)."""

    def __init__(
        self,
        path: Path | str,
        pseudonymizer: Pseudonymizer,
        audit: Any,
        rules: Mapping[str, ConsentRule] = BUILTIN_CONSENT_RULES,
    ) -> None:
        self.pseudo = pseudonymizer
        self.audit = audit
        self.rules = dict(rules)
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS consent (id INTEGER PRIMARY KEY, subject TEXT NOT NULL,"
                " jurisdiction TEXT NOT NULL, given INTEGER NOT NULL, ts REAL NOT NULL,"
                " evidence TEXT NOT NULL, actor TEXT NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS consent_subj ON consent(subject, ts)")
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: consent registry unavailable: {exc}") from None

    def rule(self, jurisdiction: str) -> ConsentRule:
        rule = self.rules.get(jurisdiction)
        if rule is None:
            known = ", ".join(sorted(self.rules))
            raise ConfigError(f"recording consent: unknown jurisdiction {jurisdiction!r} ({known})")
        return rule

    def record(
        self,
        subject: str,
        jurisdiction: str,
        *,
        given: bool,
        evidence: str,
        actor: str,
        now: float,
    ) -> ConsentEntry:
        """Consent given (``given=True``) or withdrawn/refused, with evidence; audited."""
        self.rule(jurisdiction)
        if not evidence.strip() or len(evidence) > _MAX_EVIDENCE:
            raise PolicyError(f"consent: evidence reference needed (1-{_MAX_EVIDENCE} chars)")
        pn = self.pseudo.pseudonym(subject)
        entry = ConsentEntry(pn, jurisdiction, given, now, evidence, actor)
        self.audit.record(
            actor, "consent", "consent given" if given else "consent withdrawn", evidence[:200],
            subject=pn, detail=json.dumps({"jurisdiction": jurisdiction, "given": given}),
        )  # fmt: skip
        self._db.execute(
            "INSERT INTO consent (subject, jurisdiction, given, ts, evidence, actor)"
            " VALUES (?,?,?,?,?,?)",
            (pn, jurisdiction, int(given), now, evidence, actor),
        )
        return entry

    def state(self, subject_pn: str, jurisdiction: str, now: float) -> bool | None:
        """Latest decision of a subject at ``now`` (None = never asked)."""
        row = self._db.execute(
            "SELECT given FROM consent WHERE subject=? AND jurisdiction=? AND ts<=?"
            " ORDER BY ts DESC, id DESC LIMIT 1",
            (subject_pn, jurisdiction, now),
        ).fetchone()
        return None if row is None else bool(row[0])

    def history(self, subject: str) -> list[ConsentEntry]:
        pn = self.pseudo.pseudonym(subject)
        rows = self._db.execute(
            "SELECT subject, jurisdiction, given, ts, evidence, actor FROM consent"
            " WHERE subject=? ORDER BY ts, id",
            (pn,),
        ).fetchall()
        return [ConsentEntry(r[0], r[1], bool(r[2]), r[3], r[4], r[5]) for r in rows]

    def decide(
        self,
        call_id: str,
        parties: Iterable[str],
        jurisdiction: str,
        now: float,
        actor: str = "consent-policy",
    ) -> RecordingDecision:
        """May this call be recorded now? One-party: at least one party consents; all-party:
        every party consents (one refusal or silence = no recording). Audited either way."""
        rule = self.rule(jurisdiction)
        pns = sorted({self.pseudo.pseudonym(p) for p in parties if p})
        states = {pn: self.state(pn, jurisdiction, now) for pn in pns}
        yes = [pn for pn, s in states.items() if s]
        missing = tuple(pn for pn, s in states.items() if not s)
        if not pns:
            allowed, why = False, "no identified party"
        elif rule.mode is ConsentMode.ALL_PARTY:
            allowed = not missing
            why = "every party consented" if allowed else f"{len(missing)} party(ies) did not"
        else:
            allowed = bool(yes)
            why = "a party consented" if allowed else "no party consented"
        decision = RecordingDecision(
            call_id, allowed, allowed and rule.announcement, jurisdiction,
            f"{rule.mode.value} ({rule.basis}): {why}", missing,
        )  # fmt: skip
        self.audit.record(
            actor, "recording", "recording allowed" if allowed else "recording refused",
            "consent-policy", [call_id],
            detail=json.dumps({"jurisdiction": jurisdiction, "mode": rule.mode.value,
                               "missing": list(missing), "announcement": decision.announcement}),
        )  # fmt: skip
        return decision

    def close(self) -> None:
        self._db.close()


class ConsentRetention:
    """The consent registry under the retention engine (data class ``consent``).

    Consent *in force* (a subject's latest entry for a jurisdiction, given) is never aged: it
    is what recording decisions rest on. Evidence that stopped counting is aged from the moment
    it stopped: a superseded entry from the time of the entry that replaced it, a withdrawal
    (or refusal) that is the latest entry from its own time. Past the ``consent`` purge period
    of the rule set (the time the controller must be able to demonstrate consent, GDPR
    Art. 7(1)) the entries are deleted (``secure_delete`` + ``VACUUM``); legal holds on the
    subject keep them. A withdrawal is never deleted while an older entry of the same subject
    and jurisdiction stays (a held one): removing it would bring an old consent back in force.
    """

    name = "consent"
    data_class = "consent"
    supports = frozenset({Stage.PURGED})

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        try:
            return sqlite3.connect(str(self.path), timeout=5)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path.name}: consent registry: {exc}") from None

    def _entries(self, db: sqlite3.Connection) -> list[tuple[int, str, str, int, float]]:
        return db.execute(
            "SELECT id, subject, jurisdiction, given, ts FROM consent"
            " ORDER BY subject, jurisdiction, ts, id"
        ).fetchall()

    def items(self, older_than: float) -> Iterable[RetainedItem]:
        if not self.path.exists():
            return []
        db = self._connect()
        try:
            rows = self._entries(db)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path.name}: consent registry: {exc}") from None
        finally:
            db.close()
        out: list[RetainedItem] = []
        for i, (eid, pn, jur, given, ts) in enumerate(rows):
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            if nxt is not None and (nxt[1], nxt[2]) == (pn, jur):
                ended = float(nxt[4])  # superseded by the next entry
            elif not given:
                ended = float(ts)  # withdrawn or refused, the latest word
            else:
                continue  # consent in force
            if ended < older_than:
                out.append(RetainedItem(self.name, eid, f"consent:{pn[:16]}/{jur}", "", ended,
                                        Stage.FULL, (pn,)))  # fmt: skip
        return out

    def apply(self, stage: Stage, items: Sequence[RetainedItem]) -> int:
        gone = {int(i.key) for i in items}
        if not gone or not self.path.exists():
            return 0
        db = self._connect()
        try:
            rows = self._entries(db)
            latest: dict[tuple[str, str], int] = {}
            kept_older: set[tuple[str, str]] = set()
            for eid, pn, jur, _, _ in rows:
                prev = latest.get((pn, jur))
                if prev is not None and prev not in gone:
                    kept_older.add((pn, jur))
                latest[(pn, jur)] = eid
            for pair, eid in latest.items():
                if pair in kept_older:
                    gone.discard(eid)  # keep the withdrawal while an older entry stays
            db.execute("PRAGMA secure_delete=ON")
            n = sum(db.execute("DELETE FROM consent WHERE id = ?", (eid,)).rowcount
                    for eid in sorted(gone))  # fmt: skip
            db.commit()
            if n:
                db.execute("VACUUM")
            return n
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path.name}: consent retention: {exc}") from None
        finally:
            db.close()
