"""Key management: restore drill from an empty var/, master-key rotation without downtime,
and the PKCS#11 backend on a real SoftHSM2 token."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callward.cli import app
from callward.config import PrivacyConfig
from callward.errors import PolicyError
from callward.privacy.kms import KeyRing, LocalKek, load_file_ring
from callward.privacy.shred import KeyStore
from callward.records.rows import ERASED, CdrQuery
from callward.records.service import open_records
from callward.records.synthetic import synthetic_cdrs

SUBJECT = "+447700900555"
SOFTHSM_LIB = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "4321"


def _fill(d: Path) -> list:
    rec = open_records(d)
    cdrs = list(synthetic_cdrs(40, spacing_s=60.0, subjects=6))
    cdrs[0] = dataclasses.replace(cdrs[0], caller=f"tel:{SUBJECT}")
    cdrs[1] = dataclasses.replace(cdrs[1], callee=f"sip:{SUBJECT}@ims.example")
    rec.store.write(cdrs)
    rec.store.checkpoint()
    rec.close()
    return cdrs


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_restore_drill_from_an_empty_data_directory(tmp_path: Path) -> None:
    var = tmp_path / "var"
    cdrs = _fill(var)
    kek = tmp_path / "backup.kek"
    kek.write_bytes(os.urandom(32))
    r = run("privacy", "backup-keys", "--out", str(tmp_path / "keys.bak"), "--backup-key",
            str(kek), "--data-dir", str(var))  # fmt: skip
    assert r.exit_code == 0, r.output
    assert SUBJECT[1:].encode() not in (tmp_path / "keys.bak").read_bytes()
    db_backup = tmp_path / "cdr-backup.db"
    rec = open_records(var)
    rec.store.backup_to(db_backup)
    rec.close()
    # Disaster: the whole var/ is gone (keys, master key, pseudonym key, databases).
    shutil.rmtree(var)
    var.mkdir()
    r = run("privacy", "restore-keys", str(tmp_path / "keys.bak"), "--backup-key", str(kek),
            "--data-dir", str(var))  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "7 key(s) restored" in r.stdout  # 6 synthetic subjects + SUBJECT
    shutil.copy(db_backup, var / "cdr.db")
    rec = open_records(var)
    try:
        got = {c.call_id: c for c in rec.store.query(CdrQuery())}
        assert len(got) == 40 and all(got[c.call_id].caller == c.caller for c in cdrs)
        # lookups by subject work: the pseudonym key came back too
        assert {c.call_id for c in rec.store.query(CdrQuery(subject=SUBJECT))} == {
            cdrs[0].call_id, cdrs[1].call_id}  # fmt: skip
    finally:
        rec.close()
    # restoring again into a directory with another pseudonym key is refused (exit 2)
    other = tmp_path / "other"
    open_records(other).close()
    r = run("privacy", "restore-keys", str(tmp_path / "keys.bak"), "--backup-key", str(kek),
            "--data-dir", str(other))  # fmt: skip
    assert r.exit_code == 2 and "different pseudonym key" in r.stderr


def test_erased_subject_stays_erased_after_restore(tmp_path: Path) -> None:
    var = tmp_path / "var"
    _fill(var)
    kek = tmp_path / "backup.kek"
    kek.write_bytes(os.urandom(32))
    run("privacy", "backup-keys", "--out", str(tmp_path / "old.bak"), "--backup-key", str(kek),
        "--data-dir", str(var))  # fmt: skip
    r = run("privacy", "shred", "--subject", SUBJECT, "--reason", "Art. 17", "--ticket", "E",
            "--actor", "dpo", "--data-dir", str(var))  # fmt: skip
    assert r.exit_code == 0, r.output
    r = run("privacy", "restore-keys", str(tmp_path / "old.bak"), "--backup-key", str(kek),
            "--data-dir", str(var))  # fmt: skip
    assert r.exit_code == 0 and "0 key(s) restored" in r.stdout
    rec = open_records(var)
    assert all(ERASED in (c.caller, c.callee) for c in rec.store.query(CdrQuery(subject=SUBJECT)))
    rec.close()


def test_rotation_rewraps_while_readers_keep_reading(tmp_path: Path) -> None:
    var = tmp_path / "var"
    cdrs = _fill(var)
    rec = open_records(var)
    before = rec.keys.count("master")
    assert before == 7
    from callward.privacy.kms import rotate_file_ring

    kid = rotate_file_ring(var / "keys")
    rec.keys.ring = load_file_ring(var / "keys")  # the running service reloads its ring
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                rec.keys._cache.clear()  # force unwraps from the table during the rewrap
                got = rec.store.query(CdrQuery(limit=40))
                assert all(not c.caller.startswith("[") for c in got)
            except BaseException as exc:
                errors.append(exc)
                return

    t = threading.Thread(target=reader)
    t.start()
    try:
        assert rec.keys.rewrap(batch=1) == 7
    finally:
        stop.set()
        t.join(10)
    assert errors == [] and rec.keys.count(kid) == 7 and rec.keys.count("master") == 0
    rec.close()
    r = run("privacy", "rotate-master", "--json", "--data-dir", str(var))
    assert r.exit_code == 0, r.output
    assert sorted(p.stem for p in (var / "keys").glob("master*.key")) != [kid]
    assert len(list((var / "keys").glob("master*.key"))) == 1  # old ones zeroed and removed
    rec = open_records(var)
    assert {c.call_id: c.caller for c in rec.store.query(CdrQuery())} == {
        c.call_id: c.caller for c in cdrs}  # fmt: skip
    rec.close()


def test_a_retired_kek_cannot_unwrap(tmp_path: Path) -> None:
    old, new = LocalKek(os.urandom(32), "a"), LocalKek(os.urandom(32), "b")
    ks = KeyStore(tmp_path / "k.db", KeyRing.single(old))
    ks.aead("00" * 16, create=True)
    ks.close()
    ks = KeyStore(tmp_path / "k.db", KeyRing.single(new))
    with pytest.raises(PolicyError, match="cannot unwrap"):
        ks.aead("00" * 16, create=False)


# --- PKCS#11 on SoftHSM2 -------------------------------------------------------------------


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not (shutil.which("softhsm2-util") and Path(SOFTHSM_LIB).exists()):
        pytest.skip("why: softhsm2 not installed")
    pytest.importorskip("pkcs11")
    d = tmp_path_factory.mktemp("softhsm")
    (d / "tokens").mkdir()
    conf = d / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\n")
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "callward-test",
                    "--pin", PIN, "--so-pin", "12345678"], check=True, capture_output=True,
                   timeout=30)  # fmt: skip
    yield "callward-test"
    if old is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = old


def test_pkcs11_kek_wraps_on_the_token_and_the_key_never_leaves(softhsm: str) -> None:
    import pkcs11

    from callward.privacy.kms import Pkcs11Kek

    kek = Pkcs11Kek(SOFTHSM_LIB, softhsm, PIN, "unit-kek")
    blob = kek.wrap(b"k" * 32, b"aad")
    assert kek.unwrap(blob, b"aad") == b"k" * 32
    with pytest.raises(PolicyError):
        kek.unwrap(blob, b"other aad")
    with pytest.raises(pkcs11.PKCS11Error):
        kek._key[pkcs11.Attribute.VALUE]  # sensitive, non-extractable
    # the same key is found again by label (a second process / restart)
    again = Pkcs11Kek(SOFTHSM_LIB, softhsm, PIN, "unit-kek", create=False)
    assert again.unwrap(blob, b"aad") == b"k" * 32


def test_records_run_on_the_hsm_and_migrate_from_file_keys(softhsm: str, tmp_path: Path) -> None:
    var = tmp_path / "var"
    cdrs = _fill(var)  # file KMS first
    cfg = tmp_path / "callward.yaml"
    cfg.write_text(f"privacy:\n  kms: pkcs11\n  pkcs11_lib: {SOFTHSM_LIB}\n"
                   f"  pkcs11_token: {softhsm}\n  pkcs11_key_label: records-kek\n")  # fmt: skip
    os.environ["CALLWARD_PKCS11_PIN"] = PIN
    try:
        from callward.privacy.kms import Pkcs11Kek, load_file_ring

        hsm = Pkcs11Kek(SOFTHSM_LIB, softhsm, PIN, "records-kek")
        file_ring = load_file_ring(var / "keys")
        ks = KeyStore(var / "keys.db", KeyRing(hsm, {"master": file_ring.current}))
        assert ks.rewrap() == 7  # migration file -> HSM, online
        ks.close()
        # pseudonym key moves under the HSM too (wrapped file), then the plain files go
        (var / "keys" / "pseudonym.key.wrapped").write_bytes(
            hsm.kek_id.encode() + b"\n" + hsm.wrap((var / "keys/pseudonym.key").read_bytes(),
                                                    b"callward-pseudonym-key"))  # fmt: skip
        for f in ("master.key", "pseudonym.key"):
            (var / "keys" / f).unlink()
        from callward.config import load_config

        c = load_config(cfg)
        assert c.privacy == PrivacyConfig(
            kms="pkcs11",
            pkcs11_lib=SOFTHSM_LIB,
            pkcs11_token=softhsm,
            pkcs11_key_label="records-kek",
        )
        rec = open_records(var, privacy=c.privacy)
        try:
            assert {x.call_id: x.caller for x in rec.store.query(CdrQuery())} == {
                x.call_id: x.caller for x in cdrs}  # fmt: skip
            assert len(rec.store.query(CdrQuery(subject=SUBJECT))) == 2
        finally:
            rec.close()
        assert not (var / "keys" / "master.key").exists()
        r = run("privacy", "pseudonym", SUBJECT, "--config", str(cfg), "--data-dir", str(var))
        assert r.exit_code == 0, r.output
        os.environ.pop("CALLWARD_PKCS11_PIN")
        r = run("privacy", "pseudonym", SUBJECT, "--config", str(cfg), "--data-dir", str(var))
        assert r.exit_code == 2 and "CALLWARD_PKCS11_PIN" in r.stderr
    finally:
        os.environ.pop("CALLWARD_PKCS11_PIN", None)
