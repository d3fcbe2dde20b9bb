"""Envelope-encrypted key backups that hold everything a restore needs.

Format ``callward-key-backup/2``: a fresh AES-256 backup DEK encrypts a JSON payload with every
subject key (unwrapped from the KMS at backup time), the shred ledger and the pseudonym key; the
backup DEK is wrapped by a separate backup KEK kept offline. Because the subject keys travel in
the envelope and not wrapped by the master key, a restore needs only the backup file and the
backup KEK: it works into an empty ``var/`` with a brand-new master key (file or HSM), which
re-wraps every subject key on import.

The shred ledger makes restores safe: a key erased after it was backed up is never resurrected,
whether the ledger is the target store's or the backup's.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from callward.errors import PolicyError
from callward.privacy.shred import KeyStore

__all__ = ["BackupPayload", "backup_keys", "read_backup", "restore_keys"]

FORMAT = "callward-key-backup/2"
_NONCE = 12
_MAX_BACKUP = 2 * 1024 * 1024 * 1024


@dataclass(frozen=True)
class BackupPayload:
    keys: list[tuple[str, bytes, float]]
    ledger: dict[str, float]
    pseudonym_key: bytes | None


def backup_keys(
    keys: KeyStore,
    path: Path,
    backup_kek: bytes,
    kek_id: str = "backup-1",
    pseudonym_key: bytes | None = None,
) -> int:
    """Write the backup; returns the number of subject keys in it."""
    rows = [
        [pn, base64.b64encode(dek).decode(), created] for pn, dek, created in keys.export_deks()
    ]
    body = {
        "keys": rows,
        "ledger": keys.shredded(),
        "pseudonym_key": base64.b64encode(pseudonym_key).decode() if pseudonym_key else None,
    }
    payload = json.dumps(body).encode()
    dek = AESGCM.generate_key(bit_length=256)
    n1, n2 = os.urandom(_NONCE), os.urandom(_NONCE)
    aad = f"{FORMAT}/{kek_id}".encode()
    doc = {
        "format": FORMAT,
        "kek_id": kek_id,
        "wrapped_dek": base64.b64encode(n1 + AESGCM(backup_kek).encrypt(n1, dek, aad)).decode(),
        "ciphertext": base64.b64encode(n2 + AESGCM(dek).encrypt(n2, payload, aad)).decode(),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(doc))
    os.replace(tmp, path)
    return len(rows)


def read_backup(path: Path, backup_kek: bytes) -> BackupPayload:
    """Decrypt and check a backup; PolicyError on a wrong key, a tampered or foreign file."""
    try:
        if path.stat().st_size > _MAX_BACKUP:
            raise PolicyError(f"{path}: larger than {_MAX_BACKUP} bytes; not a key backup")
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise PolicyError(f"{path}: not a {FORMAT} key backup")
        aad = f"{FORMAT}/{doc['kek_id']}".encode()
        wd = base64.b64decode(doc["wrapped_dek"])
        ct = base64.b64decode(doc["ciphertext"])
        dek = AESGCM(backup_kek).decrypt(wd[:_NONCE], wd[_NONCE:], aad)
        body = json.loads(AESGCM(dek).decrypt(ct[:_NONCE], ct[_NONCE:], aad))
        rows = [(str(pn), base64.b64decode(k), float(c)) for pn, k, c in body["keys"]]
        ledger = {str(k): float(v) for k, v in body["ledger"].items()}
        pk = body.get("pseudonym_key")
        return BackupPayload(rows, ledger, base64.b64decode(pk) if pk else None)
    except InvalidTag:
        raise PolicyError(f"{path}: backup cannot be decrypted (wrong key or tampered)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PolicyError(f"{path}: unreadable key backup: {type(exc).__name__}") from None


def restore_keys(keys: KeyStore, path: Path, backup_kek: bytes) -> int:
    """Restore subject keys (re-wrapped under the store's current KEK); erased subjects stay
    erased. Returns the number of keys inserted."""
    payload = read_backup(path, backup_kek)
    keys.merge_ledger(payload.ledger)
    return keys.import_deks(payload.keys)
