"""SRTP via libsrtp, cross-checked with an independent RFC 3711 / RFC 7714 implementation built
here from `cryptography` primitives (KDF §4.3.1, AES-CM §4.1.1, HMAC-SHA1 §4.2.1, GCM §7-9),
which is itself checked against the RFC 3711 Appendix B.2/B.3 test vectors."""

from __future__ import annotations

import base64
import hmac
import struct
from hashlib import sha1

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import MediaError
from callward.rtp.packet import RtpPacket, parse_rtp
from callward.rtp.rtcp import ReceiverReport, ReportBlock, parse_rtcp, serialize_rtcp
from callward.rtp.srtp import SrtpContext, SrtpError, SrtpKeying, SrtpProfile

# ---- independent reference (RFC 3711) ------------------------------------------------------


def aes_cm(key: bytes, iv16: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.CTR(iv16)).encryptor()
    return enc.update(data) + enc.finalize()


def kdf(master_key: bytes, master_salt: bytes, label: int, length: int, index: int = 0) -> bytes:
    # RFC 3711 §4.3.1 with kdr = 0: key_id = label || r(=0), x = key_id XOR master_salt
    # (aligned on the least significant bits), IV = x * 2^16. A 96-bit GCM salt (RFC 7714 §11)
    # is right-padded with zeros to the 112 bits the AES-CM PRF expects.
    salt = master_salt.ljust(14, b"\0") if len(master_salt) == 12 else master_salt
    key_id = (label << 48) | 0
    x = int.from_bytes(salt, "big") ^ key_id
    return aes_cm(master_key, (x << 16).to_bytes(16, "big"), bytes(length))


def ref_unprotect_rtp_cm(master: SrtpKeying, srtp: bytes, tag_len: int, roc: int = 0) -> bytes:
    ke = kdf(master.master_key, master.master_salt, 0, 16)
    ka = kdf(master.master_key, master.master_salt, 1, 20)
    ks = kdf(master.master_key, master.master_salt, 2, 14)
    body, tag = srtp[:-tag_len], srtp[-tag_len:]
    expect = hmac.new(ka, body + roc.to_bytes(4, "big"), sha1).digest()[:tag_len]
    assert tag == expect, "auth tag mismatch"
    hdr_len = parse_rtp(body).header_size
    seq, ssrc = struct.unpack_from("!H", body, 2)[0], struct.unpack_from("!I", body, 8)[0]
    index = (roc << 16) | seq
    iv = (int.from_bytes(ks, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
    return body[:hdr_len] + aes_cm(ke, iv.to_bytes(16, "big"), body[hdr_len:])


def ref_unprotect_rtcp_cm(master: SrtpKeying, srtcp: bytes) -> bytes:
    ke = kdf(master.master_key, master.master_salt, 3, 16)
    ka = kdf(master.master_key, master.master_salt, 4, 20)
    ks = kdf(master.master_key, master.master_salt, 5, 14)
    body, tag = srtcp[:-10], srtcp[-10:]
    assert tag == hmac.new(ka, body, sha1).digest()[:10]
    e_index = int.from_bytes(body[-4:], "big")
    assert e_index >> 31 == 1  # E flag: encrypted
    index = e_index & 0x7FFFFFFF
    ssrc = struct.unpack_from("!I", body, 4)[0]
    iv = (int.from_bytes(ks, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
    return body[:8] + aes_cm(ke, iv.to_bytes(16, "big"), body[8:-4])


def ref_unprotect_rtp_gcm(master: SrtpKeying, srtp: bytes, roc: int = 0) -> bytes:
    ke = kdf(master.master_key, master.master_salt, 0, 16)
    ks = kdf(master.master_key, master.master_salt, 2, 12)
    hdr_len = parse_rtp(srtp[:-16] if len(srtp) >= 28 else srtp).header_size
    ssrc = struct.unpack_from("!I", srtp, 8)[0]
    seq = struct.unpack_from("!H", srtp, 2)[0]
    # RFC 7714 §8.1: IV = (00 00 || SSRC || ROC || SEQ) XOR salt
    iv = bytes(a ^ b for a, b in zip(struct.pack("!HIIH", 0, ssrc, roc, seq), ks, strict=True))
    return srtp[:hdr_len] + AESGCM(ke).decrypt(iv, srtp[hdr_len:], srtp[:hdr_len])


def test_reference_kdf_matches_rfc3711_b3() -> None:
    mk = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139")
    ms = bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")
    assert kdf(mk, ms, 0, 16) == bytes.fromhex("C61E7A93744F39EE10734AFE3FF7A087")
    assert kdf(mk, ms, 2, 14) == bytes.fromhex("30CBBC08863D8C85D49DB34A9AE1")
    assert kdf(mk, ms, 1, 20) == bytes.fromhex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")


def test_reference_aes_cm_matches_rfc3711_b2() -> None:
    key = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
    salt = bytes.fromhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD")
    iv = (int.from_bytes(salt, "big") << 16).to_bytes(16, "big")
    assert aes_cm(key, iv, bytes(16)) == bytes.fromhex("E03EAD0935C95E80E166B16DD92B4EB4")


# ---- our module vs the reference ----------------------------------------------------------

RFC_KEYING = SrtpKeying(
    SrtpProfile.AES_CM_128_HMAC_SHA1_80,
    bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139"),
    bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6"),
)


def rtp(seq: int, payload: bytes = b"\x55" * 160, ssrc: int = 0xDECAFBAD) -> bytes:
    return bytes(RtpPacket(0, seq, seq * 160, ssrc, payload))


@pytest.mark.parametrize("profile, tag", [("AES_CM_128_HMAC_SHA1_80", 10),
                                          ("AES_CM_128_HMAC_SHA1_32", 4)])  # fmt: skip
def test_libsrtp_output_decrypts_with_reference(profile: str, tag: int) -> None:
    keying = SrtpKeying(SrtpProfile(profile), RFC_KEYING.master_key, RFC_KEYING.master_salt)
    tx = SrtpContext(keying, inbound=False)
    for seq in (1, 2, 700):
        plain = rtp(seq, bytes(range(100)))
        wire = tx.protect(plain)
        assert len(wire) == len(plain) + tag
        assert wire[12:-tag] != plain[12:]  # encrypted
        assert ref_unprotect_rtp_cm(keying, wire, tag) == plain


def test_srtcp_decrypts_with_reference() -> None:
    tx = SrtpContext(RFC_KEYING, inbound=False)
    plain = serialize_rtcp([ReceiverReport(0x1234, (ReportBlock(5, 1, 2, 3, 4, 5, 6),))])
    wire = tx.protect_rtcp(plain)
    assert ref_unprotect_rtcp_cm(RFC_KEYING, wire) == plain


def test_gcm_decrypts_with_reference() -> None:
    keying = SrtpKeying(SrtpProfile.AEAD_AES_128_GCM, bytes(range(16)), bytes(range(50, 62)))
    tx = SrtpContext(keying, inbound=False)
    plain = rtp(42, b"hello gcm" * 10)
    wire = tx.protect(plain)
    assert len(wire) == len(plain) + 16
    assert ref_unprotect_rtp_gcm(keying, wire) == plain


@pytest.mark.parametrize("profile", list(SrtpProfile))
def test_roundtrip_two_independent_sessions(profile: SrtpProfile) -> None:
    keying = SrtpKeying.generate(profile)
    # the receiver only sees the SDES text, as over signalling
    rx_keying = SrtpKeying.from_sdes(profile.value, keying.inline + "|2^31")
    tx = SrtpContext(keying, inbound=False)
    rx = SrtpContext(rx_keying, inbound=True)
    for seq in range(65530, 65536):
        assert rx.unprotect(tx.protect(rtp(seq))) == rtp(seq)
    for seq in range(0, 5):  # rollover counter advances (RFC 3711 §3.3.1)
        assert rx.unprotect(tx.protect(rtp(seq))) == rtp(seq)
    rr = serialize_rtcp([ReceiverReport(9)])
    assert parse_rtcp(rx.unprotect_rtcp(tx.protect_rtcp(rr))) == (ReceiverReport(9),)


def test_replay_and_tamper_are_media_errors() -> None:
    tx = SrtpContext(RFC_KEYING, inbound=False)
    rx = SrtpContext(RFC_KEYING, inbound=True)
    wire = tx.protect(rtp(10))
    rx.unprotect(wire)
    with pytest.raises(SrtpError) as err:
        rx.unprotect(wire)
    assert err.value.reason == "replay"
    bad = bytearray(tx.protect(rtp(11)))
    bad[20] ^= 1
    with pytest.raises(SrtpError) as err2:
        rx.unprotect(bytes(bad))
    assert err2.value.reason == "auth"
    assert isinstance(err2.value, MediaError) and rx.rejected == 2


def test_wrong_key_fails_auth() -> None:
    tx = SrtpContext(SrtpKeying.generate(), inbound=False)
    rx = SrtpContext(SrtpKeying.generate(), inbound=True)
    with pytest.raises(SrtpError, match="authentication"):
        rx.unprotect(tx.protect(rtp(1)))


def test_rekey() -> None:
    k1, k2 = SrtpKeying.generate(), SrtpKeying.generate()
    tx, rx = SrtpContext(k1, inbound=False), SrtpContext(k1, inbound=True)
    assert rx.unprotect(tx.protect(rtp(1))) == rtp(1)
    tx.rekey(k2)
    with pytest.raises(SrtpError):
        rx.unprotect(tx.protect(rtp(2)))
    rx.rekey(k2)
    assert rx.unprotect(tx.protect(rtp(3))) == rtp(3)


@pytest.mark.parametrize(
    "suite, params",
    [
        ("AES_CM_128_HMAC_SHA1_80", "inline:" + base64.b64encode(bytes(29)).decode()),
        ("AES_CM_128_HMAC_SHA1_80", "inline:!!notbase64!!"),
        ("AES_CM_128_HMAC_SHA1_80", "inline:" + base64.b64encode(bytes(30)).decode() + "|1:4"),
        ("AES_CM_128_HMAC_SHA1_80", "uri:https://example.invalid/key"),
        ("F8_128_HMAC_SHA1_80", "inline:" + base64.b64encode(bytes(30)).decode()),
        ("AEAD_AES_128_GCM", "inline:" + base64.b64encode(bytes(30)).decode()),
    ],
)
def test_bad_sdes(suite: str, params: str) -> None:
    with pytest.raises(MediaError):
        SrtpKeying.from_sdes(suite, params)


def test_sdes_rfc4568_example_shape() -> None:
    # RFC 4568 §6.1 example key-params: 40 base64 chars = 30 bytes, lifetime 2^20, no MKI
    k = SrtpKeying.from_sdes(
        "AES_CM_128_HMAC_SHA1_80", "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20"
    )
    assert len(k.master_key) == 16 and len(k.master_salt) == 14
    assert k.inline == "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_unprotect_garbage_never_crashes(data: bytes) -> None:
    rx = SrtpContext(RFC_KEYING, inbound=True)
    for fn in (rx.unprotect, rx.unprotect_rtcp):
        try:
            fn(data)
        except MediaError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=120))
def test_sdes_parse_never_crashes(suite: str, params: str) -> None:
    try:
        k = SrtpKeying.from_sdes(suite, params)
    except MediaError:
        return
    assert SrtpKeying.from_sdes(k.profile.value, k.inline) == k
