"""The SIP AOR <-> MSISDN <-> OAuth subject store and its change log."""

from __future__ import annotations

from pathlib import Path

import pytest

from callward.edge.directory import Identity, SqliteDirectory
from callward.errors import StoreError


def test_mapping_changes_and_versions(tmp_path: Path) -> None:
    path = tmp_path / "identity.sqlite"
    d = SqliteDirectory(path, clock=lambda: 100.0)
    v1 = d.put(Identity("sub-a", "alice@callward.local", "+14155550100", "acme"))
    assert d.by_msisdn("+14155550100") == d.by_subject("sub-a") == d.by_aor("alice@callward.local")
    # a second process (the web) sees a change made by the first (the operator) at once
    other = SqliteDirectory(path)
    v2 = d.renumber("sub-a", "+14155550199")
    assert other.by_msisdn("+14155550100") is None
    assert other.by_subject("sub-a").msisdn == "+14155550199"  # type: ignore[union-attr]
    v3 = d.revoke("sub-a")
    assert other.by_subject("sub-a").revoked  # type: ignore[union-attr]
    assert other.reachable_msisdns() == []
    assert [c.kind for c in other.changes_since(v1)] == ["renumbered", "revoked"]
    assert v1 < v2 < v3 == other.version()
    other.close()
    d.close()


def test_unique_numbers_and_validation() -> None:
    d = SqliteDirectory(":memory:")
    d.put(Identity("sub-a", "alice@x", "+100"))
    with pytest.raises(StoreError, match="taken"):
        d.put(Identity("sub-b", "bob@x", "+100"))
    with pytest.raises(StoreError, match="no subject"):
        d.revoke("nobody")
    with pytest.raises(StoreError):
        Identity("sub-c", "carol@x", "0049 123")
    with pytest.raises(StoreError):
        d.renumber("sub-a", "12345")
    assert d.by_subject("sub-a").msisdn == "+100"  # type: ignore[union-attr]
    assert d.version() == 1
