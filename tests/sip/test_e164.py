"""The one E.164 normaliser (sip/e164.py) in both modes, against libphonenumber's example
numbers for every region it knows (the independent reference)."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callward.edge.identity import normalize_number as identity_normalize
from callward.sip.e164 import normalize_number, region_dialling, to_e164


def _examples() -> list[tuple[str, str, str]]:
    out = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        num = phonenumbers.example_number(region)
        if num is None:
            continue
        national = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.NATIONAL)
        e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
        out.append((region, national, e164))
    return out


EXAMPLES = _examples()


def test_both_modes_agree_with_libphonenumber_on_international_form() -> None:
    assert len(EXAMPLES) > 200
    for region, _, e164 in EXAMPLES:
        intl = "00" + e164[1:]
        assert to_e164(e164, region, validate=True) == e164
        assert to_e164(intl, region) == e164, region  # non-validating: 00 -> +
        assert identity_normalize(e164, region) == e164  # the edge's name for the same thing


# Brazil's national form omits its trunk prefix: only the validating mode reads it (docstring)
@pytest.mark.parametrize("region", ["FR", "DE", "GB", "US", "IT", "ES", "NL", "SE", "IN", "JP"])
def test_national_form_in_both_modes(region: str) -> None:
    for reg, national, e164 in EXAMPLES:
        if reg != region:
            continue
        assert to_e164(national, region, validate=True) == e164
        assert to_e164(national, region) == e164, (national, region)


def test_modes_differ_on_invalid_numbers() -> None:
    # a well-formed number that no plan allocates: kept by the syntax mode (fraud classes
    # must still see it), refused by the validating mode (an identity must be real)
    assert to_e164("+99912345678") == "+99912345678"
    assert to_e164("+99912345678", "FR", validate=True) is None
    assert to_e164("alice") is None and to_e164("12") is None
    assert normalize_number("alice") == "alice"  # the dial-string form keeps non-numbers
    assert region_dialling("FR") == ("33", "0") and region_dialling("ZZ") == ("", "")


@given(st.text(alphabet="+0123456789 -().;ab", max_size=24), st.sampled_from(["FR", "US", "DE"]))
def test_fuzz_consistent(text: str, region: str) -> None:
    lax = to_e164(text, region)
    strict = to_e164(text, region, validate=True)
    for out in (lax, strict):
        assert out is None or (out.startswith("+") and out[1:].isdigit())
    if lax is not None:
        assert to_e164(lax, region) == lax  # idempotent
