"""Keyed pseudonyms: reference HMAC from the standard library, normalization of URI forms."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import PolicyError
from callward.privacy.pseudonym import Pseudonymizer, normalize_subject

KEY = bytes(range(32))


def test_matches_reference_hmac_sha256_truncated() -> None:
    ref = hmac.new(KEY, b"+4915112345678", hashlib.sha256).hexdigest()[:32]
    assert Pseudonymizer(KEY).pseudonym("+4915112345678") == ref


@pytest.mark.parametrize(
    "form",
    [
        "+4915112345678",
        "tel:+49-151-1234-5678",
        "sip:+4915112345678@ims.example;user=phone",
        "<sips:+49(151)12345678@Op.Example>",
    ],
)
def test_uri_forms_are_one_subject(form: str) -> None:
    assert normalize_subject(form) == "+4915112345678"


def test_sip_user_and_key_dependence() -> None:
    assert normalize_subject("sip:Alice@Example.COM;transport=tcp") == "alice@example.com"
    assert Pseudonymizer(KEY).pseudonym("x@y") != Pseudonymizer(KEY[::-1]).pseudonym("x@y")
    with pytest.raises(PolicyError):
        Pseudonymizer(b"short")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600))
def test_never_crashes_with_foreign_errors(text: str) -> None:
    try:
        Pseudonymizer(KEY).pseudonym(text)
    except PolicyError:
        pass
