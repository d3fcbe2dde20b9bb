"""callward.privacy: redaction, pseudonyms and crypto-shredding building blocks.

Public API::

    Pseudonymizer(key).pseudonym("+4915112345678")      # keyed HMAC pseudonym (hex, 128 bit)
    RedactProcessor()                                    # structlog processor masking PII
    KeyStore(path, master_key) / FieldCipher(keys, pseudonymizer)   # per-subject AES-GCM
    verify_no_plaintext(paths, "+4915112345678")         # [] when no plaintext copy remains
"""

from callward.privacy.key_backup import backup_keys, restore_keys
from callward.privacy.pseudonym import Pseudonymizer, normalize_subject
from callward.privacy.redact import RedactProcessor, redact_text
from callward.privacy.shred import (
    FieldCipher,
    KeyStore,
    PlaintextFinding,
    load_or_create_key,
    verify_no_plaintext,
)

__all__ = [
    "FieldCipher",
    "KeyStore",
    "PlaintextFinding",
    "Pseudonymizer",
    "RedactProcessor",
    "backup_keys",
    "load_or_create_key",
    "normalize_subject",
    "redact_text",
    "restore_keys",
    "verify_no_plaintext",
]
