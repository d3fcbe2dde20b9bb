"""SDES a=crypto, DTLS a=fingerprint/a=setup, ZRTP hash pass-through, and the policy."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from callward.errors import SdpError
from callward.sdp import (
    Fingerprint,
    SecurityMode,
    SecurityPolicy,
    Setup,
    answer_setup,
    choose_security,
    generate_crypto,
    parse_crypto,
    parse_fingerprint,
    parse_sdp,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "sdp"


def _sdp(name: str) -> str:
    return (VECTORS / name).read_text()


@pytest.mark.parametrize(
    ("suite", "key_len", "salt_len"),
    # RFC 4568 §6.2 (128-bit key, 112-bit salt); RFC 7714 §14.2 (GCM: 96-bit salt);
    # RFC 6188 §7.1 (AES-256 CM).
    [("AES_CM_128_HMAC_SHA1_80", 16, 14), ("AES_CM_128_HMAC_SHA1_32", 16, 14),
     ("AEAD_AES_128_GCM", 16, 12), ("AEAD_AES_256_GCM", 32, 12),
     ("AES_256_CM_HMAC_SHA1_80", 32, 14)],
)  # fmt: skip
def test_generate_crypto_lengths(suite: str, key_len: int, salt_len: int) -> None:
    c = generate_crypto(1, suite, rng=lambda n: bytes(range(n)))
    inline = c.value.split()[2].removeprefix("inline:")
    raw = base64.b64decode(inline)  # independent decode
    assert len(raw) == key_len + salt_len
    assert c.master_key == raw[:key_len] and c.master_salt == raw[key_len:]
    assert parse_crypto(c.value) == c


def test_parse_crypto_lifetime_mki_and_params() -> None:
    key = base64.b64encode(b"k" * 30).decode()
    c = parse_crypto(f"7 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^20|1:4 KDR=1 -FOO")
    assert c.tag == 7 and c.keys[0].lifetime == "2^20" and c.keys[0].mki == "1:4"
    assert c.session_params == ("KDR=1", "-FOO")
    assert c.keys[0].key_salt == b"k" * 30


@pytest.mark.parametrize(
    "value",
    [
        "1 AES_CM_128_HMAC_SHA1_80",
        "x AES_CM_128_HMAC_SHA1_80 inline:AAAA",
        "1 AES_CM_128_HMAC_SHA1_80 uri:AAAA",
        "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA",  # 3 bytes, not 30
        "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!",
    ],
)
def test_parse_crypto_rejects(value: str) -> None:
    with pytest.raises(SdpError):
        parse_crypto(value)


def test_fingerprint_matches_cryptography() -> None:
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "callward-test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    digest = cert.fingerprint(hashes.SHA256())
    fp = Fingerprint.of_digest("sha-256", digest)
    text = fp.attribute_value
    # RFC 8122 §5: upper-case hex octets separated by colons.
    assert text == "sha-256 " + ":".join(f"{b:02X}" for b in digest)
    assert parse_fingerprint(text.lower()) == fp


def test_fingerprint_length_checked() -> None:
    short = ":".join(["AB"] * 20)  # a sha-1 length
    assert parse_fingerprint(f"sha-1 {short}").hash_function == "sha-1"
    with pytest.raises(SdpError):
        parse_fingerprint(f"sha-256 {short}")
    with pytest.raises(SdpError):
        Fingerprint("md5", hashlib.md5(b"x").hexdigest())


@pytest.mark.parametrize(
    ("offered", "answered"),
    # RFC 5763 §5 / RFC 4145 §4: actpass -> active (RFC 8842 prefers active), active ->
    # passive, passive -> active, absent means the offerer is active.
    [(Setup.ACTPASS, Setup.ACTIVE), (Setup.ACTIVE, Setup.PASSIVE),
     (Setup.PASSIVE, Setup.ACTIVE), (None, Setup.PASSIVE), (Setup.HOLDCONN, Setup.HOLDCONN)],
)  # fmt: skip
def test_answer_setup(offered: Setup | None, answered: Setup) -> None:
    assert answer_setup(offered) is answered


# --- choose_security --------------------------------------------------------------------------


def test_sdes_offer_chooses_first_usable_crypto() -> None:
    choice = choose_security(parse_sdp(_sdp("baresip_sdes.sdp")), SecurityPolicy())
    assert choice.mode is SecurityMode.SDES_SRTP
    assert choice.remote_crypto is not None and choice.remote_crypto.tag == 1
    only80 = SecurityPolicy(sdes_suites=("AES_CM_128_HMAC_SHA1_80",))
    choice = choose_security(parse_sdp(_sdp("baresip_sdes.sdp")), only80)
    assert choice.remote_crypto is not None and choice.remote_crypto.tag == 2


def test_dtls_offer() -> None:
    choice = choose_security(parse_sdp(_sdp("webrtc_dtls.sdp")), SecurityPolicy())
    assert choice.mode is SecurityMode.DTLS_SRTP
    assert choice.remote_setup is Setup.ACTPASS
    assert choice.remote_fingerprints[0].hash_function == "sha-256"


def test_zrtp_passthrough_untouched() -> None:
    text = _sdp("zrtp.sdp")
    choice = choose_security(parse_sdp(text), SecurityPolicy())
    assert choice.mode is SecurityMode.ZRTP
    line = next(ln for ln in text.splitlines() if ln.startswith("a=zrtp-hash:"))
    assert choice.zrtp_hashes == (line.removeprefix("a=zrtp-hash:"),)


def test_plain_rtp_needs_explicit_policy_and_trusted_leg() -> None:
    offer = parse_sdp(_sdp("sipp_uac.sdp"))
    for policy in (SecurityPolicy(), SecurityPolicy(allow_plain_rtp=True)):
        with pytest.raises(SdpError) as info:
            choose_security(offer, policy)
        assert info.value.status_hint == 488 and info.value.warn_code == 302
    with pytest.raises(SdpError, match="trusted"):
        choose_security(offer, SecurityPolicy(allow_plain_rtp=True))
    trusted = SecurityPolicy(allow_plain_rtp=True, trusted_leg=True)
    assert choose_security(offer, trusted).mode is SecurityMode.PLAIN


def test_weakening_session_params_are_refused() -> None:
    key = base64.b64encode(b"k" * 30).decode()
    text = _sdp("sipp_uac.sdp").replace("RTP/AVP", "RTP/SAVP") + (
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key} UNENCRYPTED_SRTP\r\n"
    )
    with pytest.raises(SdpError, match="no acceptable SRTP crypto suite"):
        choose_security(parse_sdp(text), SecurityPolicy())


def test_savp_without_crypto_and_dtls_without_fingerprint() -> None:
    savp = _sdp("sipp_uac.sdp").replace("RTP/AVP", "RTP/SAVP")
    with pytest.raises(SdpError, match="without a=crypto"):
        choose_security(parse_sdp(savp), SecurityPolicy())
    no_fp = "\r\n".join(
        ln for ln in _sdp("webrtc_dtls.sdp").splitlines() if not ln.startswith("a=fingerprint")
    )
    with pytest.raises(SdpError, match="fingerprint"):
        choose_security(parse_sdp(no_fp), SecurityPolicy())


def test_policy_without_dtls_refuses_dtls_offer() -> None:
    sdes_only = SecurityPolicy(preference=(SecurityMode.SDES_SRTP,))
    with pytest.raises(SdpError) as info:
        choose_security(parse_sdp(_sdp("webrtc_dtls.sdp")), sdes_only)
    assert info.value.status_hint == 488
