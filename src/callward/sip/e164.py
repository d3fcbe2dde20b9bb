"""Telephone numbers in E.164 form (ITU-T E.164, RFC 3966 visual separators).

The one normalisation of callward, in two modes:

* **non-validating** (:func:`normalize_number`, and :func:`to_e164` with ``validate=False``):
  syntax only: separators dropped, ``00``/``011`` become ``+``, a national number gets the
  country code. For what must never be fooled by a number libphonenumber does not know yet:
  toll-fraud destination classes (edge/fraud.py), STIR/SHAKEN orig/dest matching
  (sip/stir_shaken.py, RFC 8224 §8.3);
* **validating** (:func:`to_e164` with ``validate=True``): the number must be valid for its
  region in libphonenumber's data (``phonenumbers``), else None. For identities: the asserted
  caller (edge/identity.py, RFC 3325), the directory's MSISDNs, request targets.

``region`` (ISO 3166, e.g. ``FR``) gives the country code and national prefix from
libphonenumber's metadata; without it, ``country_code`` and ``national_prefix`` are used. The
syntax mode reads a national number when it starts with the trunk prefix (``0`` in FR, DE,
GB...), in NANP, and in plans without one (IT, ES: six digits or more); a national number
written without its trunk prefix (Brazil's ``(11) 2345-6789``) needs the validating mode.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["canonical_tn", "normalize_number", "region_dialling", "to_e164"]

_DIAL_CHARS = frozenset("+0123456789-.() ")


@lru_cache(maxsize=512)
def region_dialling(region: str) -> tuple[str, str]:
    """(country code, national prefix) of an ISO region from libphonenumber's metadata;
    ("", "") for a region it does not know."""
    import phonenumbers

    region = region.upper()
    cc = phonenumbers.country_code_for_region(region)
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if not cc or meta is None:
        return "", ""
    return str(cc), meta.national_prefix or ""


@lru_cache(maxsize=4096)
def to_e164(
    user: str,
    region: str | None = None,
    *,
    validate: bool = False,
    country_code: str = "1",
    national_prefix: str = "",
) -> str | None:
    """``+CC...`` for a dialable user part, None when it is not a number (``alice``, fewer
    than 3 digits) or, with ``validate``, not a valid number of ``region``."""
    text = user.split(";", 1)[0]
    if not text or not set(text) <= _DIAL_CHARS or sum(c.isdigit() for c in text) < 3:
        return None
    if validate:
        import phonenumbers

        try:
            num = phonenumbers.parse(text, None if text.startswith("+") else (region or "").upper())
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_valid_number(num):
            return None
        return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    if region is not None:
        country_code, national_prefix = region_dialling(region)
        if not country_code:
            return None
    out = normalize_number(text, country_code=country_code, national_prefix=national_prefix)
    if not out.startswith("+") and not national_prefix and country_code != "1" and len(out) >= 6:
        out = "+" + country_code + out  # no trunk prefix (IT, ES, ...): national = CC + number
    return out if out.startswith("+") and out[1:].isdigit() and 4 <= len(out) <= 16 else None


_SEPARATORS = re.compile(r"[\s\-.()]")
_DIGITS = re.compile(r"\+?[0-9]+\Z")


def normalize_number(user: str, *, country_code: str = "1", national_prefix: str = "") -> str:
    """E.164 form (``+CC...``) of a dialled string when it is a number, else it unchanged.

    ``00``/``011`` become ``+``; a national number (leading ``national_prefix``, or NANP's 10
    digits) gets ``+country_code``. Short numbers (extensions) stay as dialled."""
    text = _SEPARATORS.sub("", user.split(";", 1)[0])
    if not _DIGITS.match(text):
        return user
    if text.startswith("+"):
        return text
    if text.startswith("00"):
        return "+" + text[2:]
    if country_code == "1" and text.startswith("011"):
        return "+" + text[3:]
    if national_prefix and text.startswith(national_prefix) and len(text) > 6:
        return "+" + country_code + text[len(national_prefix) :]
    if country_code == "1" and len(text) == 11 and text.startswith("1"):
        return "+" + text
    if country_code == "1" and len(text) == 10:
        return "+1" + text
    return text


def canonical_tn(user: str, *, country_code: str = "1", national_prefix: str = "") -> str:
    """RFC 8224 §8.3 canonical telephone number: E.164 digits without the leading ``+``
    (``""`` when ``user`` is not a number)."""
    e164 = normalize_number(user, country_code=country_code, national_prefix=national_prefix)
    if not e164.startswith("+") or not e164[1:].isdigit():
        return ""
    return e164[1:]
