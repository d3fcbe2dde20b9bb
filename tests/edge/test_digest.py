"""Digest helpers against the published RFC 7616 §3.9.1 / RFC 2617 §3.5 examples."""

from __future__ import annotations

from callward.edge.digest import compute_response, ha1, make_challenge, make_nonce, verify
from callward.sip.headers import parse_auth

RFC7616 = dict(
    username="Mufasa",
    realm="http-auth@example.org",
    password="Circle of Life",
    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    uri="/dir/index.html",
)


def test_rfc7616_md5_and_sha256_vectors() -> None:
    v = RFC7616
    for alg, expected in (
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ):
        got = compute_response(
            algorithm=alg,
            ha1_hex=ha1(v["username"], v["realm"], v["password"], alg),
            nonce=v["nonce"],
            method="GET",
            uri=v["uri"],
            qop="auth",
            nc="00000001",
            cnonce=v["cnonce"],
        )
        assert got == expected


def test_rfc2617_md5_vector() -> None:
    got = compute_response(
        algorithm="MD5",
        ha1_hex=ha1("Mufasa", "testrealm@host.com", "Circle Of Life"),
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        method="GET",
        uri="/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert got == "6629fae49393a05397450978507c4ef1"


def _creds(nonce: str, response: str, alg: str = "MD5") -> str:
    return (
        f'Digest username="u", realm="r", nonce="{nonce}", uri="sip:r", '
        f'response="{response}", algorithm={alg}, qop=auth, nc=00000001, cnonce="c"'
    )


def _answer(nonce: str, alg: str = "MD5", password: str = "pw") -> str:
    return compute_response(
        algorithm=alg,
        ha1_hex=ha1("u", "r", password, alg),
        nonce=nonce,
        method="REGISTER",
        uri="sip:r",
        qop="auth",
        nc="00000001",
        cnonce="c",
    )


def test_stateless_nonce_ok_stale_forged() -> None:
    secret = b"s" * 32
    stored = {"MD5": ha1("u", "r", "pw"), "SHA-256": ha1("u", "r", "pw", "SHA-256")}
    nonce = make_nonce(secret, "r", 1000.0)
    kw = dict(method="REGISTER", body=b"", realm="r", secret=secret, nonce_ttl=60, ha1_for=stored)
    assert verify(parse_auth(_creds(nonce, _answer(nonce))), now=1010.0, **kw).ok
    sha = _creds(nonce, _answer(nonce, "SHA-256"), "SHA-256")
    assert verify(parse_auth(sha), now=1010.0, **kw).ok
    stale = verify(parse_auth(_creds(nonce, _answer(nonce))), now=1100.0, **kw)
    assert not stale.ok and stale.stale
    wrong = verify(parse_auth(_creds(nonce, _answer(nonce, password="x"))), now=1010.0, **kw)
    assert not wrong.ok and not wrong.stale
    forged = nonce[:-1] + ("0" if nonce[-1] != "0" else "1")
    bad = verify(parse_auth(_creds(forged, _answer(forged))), now=1010.0, **kw)
    assert not bad.ok and bad.reason == "nonce"
    # another node with another secret cannot vouch for this nonce
    other = verify(parse_auth(_creds(nonce, _answer(nonce))), now=1010.0, **{**kw, "secret": b"t"})
    assert not other.ok


def test_challenge_lists_one_per_algorithm_in_order() -> None:
    chals = make_challenge(b"s", "r", 5.0, ("SHA-256", "MD5"))  # operator order kept
    text = [str(c) for c in chals]
    assert "algorithm=SHA-256" in text[0] and "algorithm=MD5" in text[1]
    assert parse_auth(text[0]).get("qop") == "auth"
