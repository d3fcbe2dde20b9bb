"""Crypto-shredding across hot, WAL, cold and backup copies; key backup restore drill."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from callward.errors import PolicyError
from callward.privacy import (
    FieldCipher,
    KeyStore,
    Pseudonymizer,
    backup_keys,
    restore_keys,
    verify_no_plaintext,
)
from callward.records.cold import ColdCdrStore, move_aged
from callward.records.rows import ERASED, CdrQuery, RecordCodec
from callward.records.store_sqlite import SqliteCdrStore
from callward.records.synthetic import synthetic_cdrs

MASTER = bytes(range(32))
PN_KEY = b"pseudonym-key-for-tests"


def _setup(tmp: Path, encrypt: bool = True):
    keys = KeyStore(tmp / "keys.db", MASTER)
    codec = RecordCodec(FieldCipher(keys, Pseudonymizer(PN_KEY)), encrypt=encrypt)
    hot = SqliteCdrStore(tmp / "cdr.db", codec, batch_size=64)
    cold = ColdCdrStore(tmp / "cold", codec)
    cdrs = list(synthetic_cdrs(400, spacing_s=900.0, subjects=12))
    hot.write(cdrs)
    move_aged(hot, cold, cdrs[250].start_ts)  # both tiers hold the subject
    subject = cdrs[0].caller.split(":")[1].split("@")[0]  # +447700...
    return keys, codec, hot, cold, cdrs, subject


def _scan_targets(tmp: Path) -> list[Path]:
    return [tmp / "cdr.db", tmp / "cold", tmp / "backup"]


def test_verifier_finds_plaintext_when_encryption_is_skipped(tmp_path: Path) -> None:
    keys, _, hot, _cold, _, subject = _setup(tmp_path, encrypt=False)
    hot.backup_to(tmp_path / "backup" / "cdr-backup.db")
    findings = verify_no_plaintext(_scan_targets(tmp_path), subject)
    where = {Path(f.path).name for f in findings}
    assert "cdr.db-wal" in where or "cdr.db" in where
    assert any(f.path.endswith(".parquet") for f in findings)
    assert "cdr-backup.db" in where
    # shredding cannot help data that was never encrypted: still found
    FieldCipher(keys, Pseudonymizer(PN_KEY)).shred_subject(subject, "erasure request")
    assert verify_no_plaintext(_scan_targets(tmp_path), subject)


def test_shredding_erases_hot_cold_and_backup(tmp_path: Path) -> None:
    keys, codec, hot, cold, cdrs, subject = _setup(tmp_path)
    hot.backup_to(tmp_path / "backup" / "cdr-backup.db")
    mine = {c.call_id for c in cdrs if subject in c.caller + c.callee}
    assert {c.call_id for c in hot.query(CdrQuery(subject=subject))} | {
        c.call_id for c in cold.query(CdrQuery(subject=subject))
    } == mine
    before = hot.query(CdrQuery(subject=subject))[0]
    assert subject in before.caller + before.callee  # readable before
    pn = codec.pseudonym(subject).hex()
    wrapped = keys._db.execute("SELECT wrapped FROM subject_keys WHERE pn=?", (pn,)).fetchone()[0]

    codec.cipher.shred_subject(subject, "GDPR Art. 17 request #42")

    backup = SqliteCdrStore(tmp_path / "backup" / "cdr-backup.db", codec)
    for store in (hot, cold, backup):
        got = store.query(CdrQuery(subject=subject))
        assert got, store.name
        for c in got:
            assert subject not in c.caller + c.callee
            assert ERASED in (c.caller, c.callee) and "subject-erased" in c.flags
    other = next(c for c in cdrs if subject not in c.caller + c.callee)
    (still,) = hot.query(CdrQuery(call_ids=(other.call_id,))) or cold.query(
        CdrQuery(call_ids=(other.call_id,))
    )
    assert still.caller == other.caller  # other subjects unaffected
    assert verify_no_plaintext(_scan_targets(tmp_path), subject) == []
    key_file = (tmp_path / "keys.db").read_bytes()
    assert wrapped not in key_file and not keys.has_key(pn)


def test_key_backup_restore_drill(tmp_path: Path) -> None:
    keys, codec, _hot, _, _cdrs, subject = _setup(tmp_path)
    backup_kek = AESGCM.generate_key(bit_length=256)
    n = backup_keys(keys, tmp_path / "keys-1.backup", backup_kek)
    assert n == 12
    assert b"447700" not in (tmp_path / "keys-1.backup").read_bytes()
    codec.cipher.shred_subject(subject, "erasure")
    backup_keys(keys, tmp_path / "keys-2.backup", backup_kek)
    keys.close()

    # Disaster: the key store is lost. Restore the newest backup into a fresh store.
    (tmp_path / "keys.db").unlink()
    fresh = KeyStore(tmp_path / "keys.db", MASTER)
    assert restore_keys(fresh, tmp_path / "keys-2.backup", backup_kek) == 11
    codec2 = RecordCodec(FieldCipher(fresh, Pseudonymizer(PN_KEY)))
    hot2 = SqliteCdrStore(tmp_path / "cdr.db", codec2)
    readable = [c for c in hot2.query(CdrQuery()) if "subject-erased" not in c.flags]
    assert readable and all(c.caller.startswith("sip:+447700") for c in readable)
    assert all(ERASED in (c.caller, c.callee) for c in hot2.query(CdrQuery(subject=subject)))
    # An older backup (taken before the erasure) must not resurrect the erased key.
    restore_keys(fresh, tmp_path / "keys-1.backup", backup_kek)
    assert all(ERASED in (c.caller, c.callee) for c in hot2.query(CdrQuery(subject=subject)))


def test_backup_with_wrong_key_or_tampering_is_refused(tmp_path: Path) -> None:
    keys, *_ = _setup(tmp_path)
    kek = AESGCM.generate_key(bit_length=256)
    path = tmp_path / "k.backup"
    backup_keys(keys, path, kek)
    with pytest.raises(PolicyError):
        restore_keys(keys, path, AESGCM.generate_key(bit_length=256))
    doc = json.loads(path.read_text())
    ct = bytearray(base64.b64decode(doc["ciphertext"]))
    ct[40] ^= 1
    doc["ciphertext"] = base64.b64encode(bytes(ct)).decode()
    path.write_text(json.dumps(doc))
    with pytest.raises(PolicyError):
        restore_keys(keys, path, kek)
    shutil.copy(path, tmp_path / "garbage.backup")
    (tmp_path / "garbage.backup").write_text("{not json")
    with pytest.raises(PolicyError):
        restore_keys(keys, tmp_path / "garbage.backup", kek)


def test_wrong_master_key_cannot_unwrap(tmp_path: Path) -> None:
    keys, _codec, _hot, *_ = _setup(tmp_path)
    keys.close()
    other = KeyStore(tmp_path / "keys.db", bytes(32))
    codec2 = RecordCodec(FieldCipher(other, Pseudonymizer(PN_KEY)))
    with pytest.raises(PolicyError):
        SqliteCdrStore(tmp_path / "cdr.db", codec2).query(CdrQuery(limit=1))


def test_key_files_are_private(tmp_path: Path) -> None:
    import stat

    from callward.privacy import load_or_create_key

    key = load_or_create_key(tmp_path / "keys" / "master.key")
    assert len(key) == 32 and load_or_create_key(tmp_path / "keys" / "master.key") == key
    KeyStore(tmp_path / "keys.db", key).close()
    for p in (tmp_path / "keys" / "master.key", tmp_path / "keys.db"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
