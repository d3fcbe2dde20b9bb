"""Telephone numbers in E.164 form (ITU-T E.164, RFC 3966 visual separators).

One normalisation for everything that compares numbers: toll-fraud destination classes
(edge/fraud.py) and STIR/SHAKEN orig/dest matching (sip/stir_shaken.py, RFC 8224 §8.3).
"""

from __future__ import annotations

import re

__all__ = ["canonical_tn", "normalize_number"]

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
