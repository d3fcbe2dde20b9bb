"""Keep-alive and refresh costs against arithmetic from the RFC header sizes."""

from __future__ import annotations

import pytest

from callward.errors import ConfigError
from callward.usage import SipSizes, exchange_bytes, plan_idle, plan_keepalive


def test_crlf_over_tcp_and_tls() -> None:
    # RFC 5626 §4.4.1: CRLFCRLF ping, CRLF pong; IPv4 20 + TCP 32 (timestamps); the pong ACKs
    # the ping and the client's delayed ACK of the pong is a bare segment.
    assert exchange_bytes("crlf", "tcp") == (52 + 4) + (52 + 2) + 52
    # TLS 1.3 record: 5 B header + 1 B inner type + 16 B AEAD tag around each
    assert exchange_bytes("crlf", "tls") == (52 + 22 + 4) + (52 + 22 + 2) + 52
    assert exchange_bytes("crlf", "tcp", ip_version=6) == (72 + 4) + (72 + 2) + 72
    with pytest.raises(ConfigError, match="STUN"):
        exchange_bytes("crlf", "udp")


def test_stun_over_udp() -> None:
    # RFC 5389: 20 B request; response 20 B + XOR-MAPPED-ADDRESS (4 + 8 IPv4 / 4 + 20 IPv6);
    # each with FINGERPRINT (4 + 4)
    assert exchange_bytes("stun", "udp") == (28 + 28) + (28 + 40)
    assert exchange_bytes("stun", "udp", ip_version=6) == (48 + 28) + (48 + 52)
    with pytest.raises(ConfigError):
        exchange_bytes("stun", "tcp")


def test_register_refresh_is_four_messages_without_nonce_reuse() -> None:
    sz = SipSizes(register=400, challenge=450, register_auth=700, register_ok=350)
    assert exchange_bytes("register", "udp", sizes=sz) == 400 + 450 + 700 + 350 + 4 * 28
    assert exchange_bytes("register", "udp", sizes=sz, reuse_nonce=True) == 700 + 350 + 56
    # over TLS: 4 records and two bare ACKs
    assert exchange_bytes("register", "tls", sizes=sz) == 1900 + 4 * (52 + 22) + 2 * 52


def test_plans_per_hour() -> None:
    p = plan_keepalive("crlf", 120)
    assert p.transport == "tcp" and p.bytes_per_hour == pytest.approx(162 * 30)
    push = plan_idle("push", keepalive=None, transport="udp", register_s=3600)
    assert push.bytes_per_hour == exchange_bytes("register", "udp")
    tcp = plan_idle("tcp", keepalive=("crlf", 300), transport="tcp", register_s=3600)
    assert tcp.bytes_per_hour == pytest.approx(162 * 12 + exchange_bytes("register", "tcp"))
    with pytest.raises(ConfigError):
        plan_keepalive("carrier", 60)
    with pytest.raises(ConfigError):
        plan_keepalive("stun", 1)
