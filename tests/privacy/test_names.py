"""Free-text name detection measured on a labelled set whose names come from a source
independent of the detector's gazetteer: Faker's per-locale name lists (12 locales) for the
positives, against the US Census lists the detector uses. Negatives are operator text with
capitalised non-names. Figures are published in docs/privacy.md; the thresholds below sit just
under the measured values so a regression fails."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from callward.privacy.names import find_names, redact_names
from callward.privacy.redact import redact_text

faker = pytest.importorskip("faker")

LOCALES = ["en_US", "en_GB", "en_IE", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL",
           "pt_BR", "sv_SE", "tr_TR"]  # fmt: skip
FULL = [
    "Customer {name} reported one-way audio on the last call",
    "ticket 4411: {name} cannot register since the upgrade",
    "note: spoke with {name} about the roaming bill",
    "{name} called back at 14:05, issue resolved",
    "escalated by {name} (NOC) to tier 2",
    '{{"event": "complaint", "text": "{name} says calls drop after 30 s"}}',
    "voicemail left for {name} regarding port-out",
    "Meet {name} at noon to review the DPIA",
    "SIM swap requested by {name}; ID checked in store",
    "complaint from {name} about billing",
]
CUED = [
    "please call {first} tomorrow about the outage",
    "message from {first}: the trunk is down again",
    "thanks {first}, the SIM swap is done",
    "ask {first} whether the port is open",
]
NEGATIVES = [
    "Call Center queue depth 14 at 09:00",
    "Media Relay restarted after OOM",
    "New York POP",
    "Session Timer expired for call 8f3a",
    "United Kingdom numbering plan loaded",
    "Monday Morning maintenance window",
    "Open Source Software licence review",
    "Status: Service Unavailable (503)",
    "Retry-After header honoured",
    "Voice Over LTE enabled",
    "Quality Report: MOS 4.1, Jitter Buffer 40 ms",
    "Data Protection Impact Assessment signed",
    "Legal Hold placed on tenant acme",
    "Lawful Interception Warrant activated",
    "Border Gateway Protocol session up",
    "Transport Layer Security handshake failed",
    "Access Network Info stripped at the boundary",
    "Global Title translation table",
    "Home Subscriber Server unreachable",
    "Mobile Country Code 234",
    "Public Safety Answering Point",
    "Emergency Call Routing test passed",
    "Packet Loss Concealment active",
    "Real Time Protocol stream latched",
    "Media Gateway Control Function",
    "Interconnect Border",
    "Hold Music played for 40 s",
    "Daylight Saving Time change",
    "Easter Monday tariff",
    "Christmas Day routing plan",
    "Black Friday peak: 1,200 calls/s",
    "Grand Central exchange",
    "Cloud Region Frankfurt",
    "Availability Zone West",
    "Kubernetes Pod restarted",
    "Prometheus Alert fired",
    "Grafana Dashboard updated",
    "Virtual Private Network tunnel",
    "Wireless Access Point moved",
    "Customer Care escalation matrix",
    # capitalised non-names in the middle of a sentence
    "failover to Media Gateway completed",
    "routed via Session Border Controller",
    "moved to Cloud Region Frankfurt",
    "restarted Kubernetes Pod",
    "paged through Pager Duty",
    "logged in Grafana Dashboard",
    "ticket opened in Service Now",
    "synced with Active Directory",
    "exported from Google Sheets",
    "called the Help Desk",
    "notified by Prometheus Alertmanager",
    "signed in with Microsoft Teams",
    "hosted at Amazon Web Services",
    "tested with Wire Shark",
]


def corpus(seed: int = 13, per_locale: int = 40) -> tuple[list[tuple[str, list[str], str]], int]:
    rng = random.Random(seed)
    out: list[tuple[str, list[str], str]] = []  # (text, name tokens, locale)
    for loc in LOCALES:
        fk = faker.Faker(loc)
        fk.seed_instance(seed)
        for i in range(per_locale):
            first, last = fk.first_name(), fk.last_name()
            if i % 4 == 3:
                t = rng.choice(CUED)
                out.append((t.format(first=first), [first], loc))
            else:
                t = rng.choice(FULL)
                out.append((t.format(name=f"{first} {last}"), [first, last], loc))
    return out, len(NEGATIVES)


def _tokens(name_parts: list[str]) -> list[str]:
    return [t for p in name_parts for t in re.split(r"[\s\-]+", p) if len(t) > 1]


def measure() -> dict[str, object]:
    samples, _ = corpus()
    found = Counter[str]()
    total = Counter[str]()
    masked_spans = true_spans = 0
    misses: list[str] = []
    for text, parts, loc in samples:
        out = redact_names(text)
        total[loc] += 1
        if all(tok not in out for tok in _tokens(parts)):
            found[loc] += 1
        elif len(misses) < 12:
            misses.append(" ".join(parts))
        spans = find_names(text)
        masked_spans += len(spans)
        starts = [text.index(p) for p in parts]
        true_spans += sum(any(s <= st < e for st in starts) for s, e in spans)
    false_neg = sum(len(find_names(t)) for t in NEGATIVES)
    return {
        "recall": sum(found.values()) / sum(total.values()),
        "per_locale": {loc: round(found[loc] / total[loc], 3) for loc in LOCALES},
        "precision": true_spans / (masked_spans + false_neg),
        "negatives_masked": [t for t in NEGATIVES if find_names(t)],
        "items": sum(total.values()), "misses": misses,
    }  # fmt: skip


def test_recall_and_precision_on_independent_names() -> None:
    r = measure()
    print(r)
    assert r["items"] == 480
    assert r["recall"] >= 0.74, r  # measured 0.752 (docs/privacy.md)
    assert r["precision"] >= 0.95, r  # measured 0.968
    assert r["per_locale"]["en_US"] >= 0.95 and r["per_locale"]["en_GB"] >= 0.95, r
    assert len(r["negatives_masked"]) <= 14, r  # measured 12 of 68 hard negatives


def test_redact_text_masks_free_text_names_and_keeps_the_rest() -> None:
    out = redact_text("Meet Alice Smith at noon; Bob Jones called back from +447700900123")
    assert out == "Meet [name] at noon; [name] called back from [msisdn]"
    assert redact_text("call Alice tomorrow") == "call [name] tomorrow"
    assert redact_text("Media Relay restarted at 09:00") == "Media Relay restarted at 09:00"
