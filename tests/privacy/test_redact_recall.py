"""Redaction recall and precision on the labelled corpus (tests/privacy/pii_corpus.py):
recall >= 99% over every listed kind and no leak of any listed kind; the non-personal tokens
(timestamps, methods, status codes, call ids, codecs) must survive."""

from __future__ import annotations

from collections import Counter

from tests.privacy.pii_corpus import HARD_NEGATIVES, build, leaked

from callward.privacy.redact import redact_text

FREE_TEXT_NAMES = ["Meet Alice Smith at noon", "Bob Jones called back"]


def measure() -> dict[str, object]:
    corpus = build()
    total: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    keep_total = keep_lost = 0
    examples: list[str] = []
    for s in corpus:
        out = redact_text(s.text)
        for kind, value in s.pii:
            total[kind] += 1
            if leaked(kind, value, out):
                missed[kind] += 1
                if len(examples) < 5:
                    examples.append(f"{kind}: {value!r} in {out[:200]!r}")
        for tok in s.keep:
            keep_total += 1
            keep_lost += tok not in out
    n, m = sum(total.values()), sum(missed.values())
    false_pos = [t for t in HARD_NEGATIVES if redact_text(t) != t]
    return {
        "items": n, "samples": len(corpus), "recall": (n - m) / n,
        "per_kind": {k: (total[k] - missed[k], total[k]) for k in sorted(total)},
        "keep_survival": (keep_total - keep_lost) / keep_total, "examples": examples,
        "hard_negatives_masked": false_pos,
    }  # fmt: skip


def test_recall_at_least_99_percent_and_no_kind_leaks() -> None:
    r = measure()
    print(r)
    assert r["items"] > 3000
    assert r["recall"] >= 0.99, r["examples"]
    for kind, (found, total) in r["per_kind"].items():
        if kind != "number":
            assert found == total, (kind, r["examples"])
    # the only numbers that pass: national numbers written as one run of <= 8 digits with no
    # separator (small numbering plans), indistinguishable from counters without context
    missed = [e.split("'")[1] for e in r["examples"]]
    assert all(m.isdigit() and len(m) <= 8 for m in missed), missed


def test_non_personal_tokens_survive() -> None:
    r = measure()
    assert r["keep_survival"] >= 0.99, r
    # known false positives, documented in docs/privacy.md: 9-15 digit runs (an SSRC, an RTP
    # timestamp) cannot be told apart from an MSISDN; 32+ hex digits look like a key
    assert r["hard_negatives_masked"] == [
        "ssrc 305419896",
        "rtp ts 4294967295",
        "sha256 9f86d081884c7d659a2feaa0c55ad015",
    ], r["hard_negatives_masked"]


def test_free_text_names_are_caught() -> None:
    # privacy/names.py (gazetteer + patterns); its own recall figure: tests/privacy/test_names.py
    assert [redact_text(t) for t in FREE_TEXT_NAMES] == [
        "Meet [name] at noon",
        "[name] called back",
    ]
