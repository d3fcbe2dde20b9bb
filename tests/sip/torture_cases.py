"""Our own SIP torture messages, one per RFC 4475 category (written for callward, not copied).

Each case is (name, bytes). ``VALID`` must parse in strict mode; ``INVALID`` must raise
SipParseError (with ``status`` the status_hint an edge answers with).
"""

from __future__ import annotations


def m(text: str) -> bytes:
    """Write messages readably: '\\n' becomes CRLF; a literal '<LF>' marks a bare LF."""
    return text.replace("\n", "\r\n").replace("<LF>", "\n").encode("utf-8")


_BASE = (
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKtorture1\n"
    "Max-Forwards: 70\n"
    "From: <sip:caller@example.net>;tag=8814\n"
    "To: <sip:callee@example.com>\n"
    "Call-ID: torture.1@192.0.2.1\n"
)


def req(start: str, extra: str = "", cseq: str = "1 OPTIONS", body: str = "") -> bytes:
    clen = f"Content-Length: {len(body.encode())}\n" if body is not None else ""
    return m(f"{start}\n{_BASE}CSeq: {cseq}\n{extra}{clen}\n{body}")


VALID: list[tuple[str, bytes]] = [
    (
        # §3.1.1.1 "wsinv"-like: compact forms, odd case, LWS around colons, folding, multi-Via.
        "tortuous-whitespace",
        m(
            "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\n"
            "TO :\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\n"
            'from   : "J Rosenberg \\\\\\"" <sip:jdrosen@example.com>\n  ;\n  tag = 98asjd8\n'
            "MaX-fOrWaRdS: 0068\n"
            "Call-ID: wsinv.ndaksdj@192.0.2.1\n"
            "Content-Length   : 0\n"
            "cseq: 0009\n  INVITE\n"
            "Via  : SIP  /   2.0\n /UDP\n    192.0.2.2;rport;branch=390skdjuw\n"
            "s :\n"
            "NewFangledHeader:   newfangled value\n continued newfangled value\n"
            "UnknownHeaderWithUnusualValue: ;;,,;;,;\n"
            "v:  SIP/2.0/TCP     spindle.example.com   ;\n  branch  =   z9hG4bK9ikj8  ,\n"
            " SIP  /    2.0   / UDP  192.168.255.111   ; branch=\n z9hG4bK30239\n"
            'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =\n'
            "      newvalue ;\n  secondparam ; q = 0.33\n\n"
        ),
    ),
    (
        "wide-token-method",
        m(
            "!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)"
            "&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com"
            " SIP/2.0\n"
            "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~\n"
            # RFC 4475 §3.1.1.2 escapes BEL, NUL and DEL here; strict mode refuses control
            # characters even escaped (see "escaped-controls-in-display-name" below).
            'To: "BEL:\\b NUL:\\0 DEL:\\d" <sip:1_unusual.URI~(to-be!sure)&isn\'t+it$/crazy'
            "?,/;;*@example.com>\n"
            "From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%="
            '"работающий"'
            ";tag=_token~1'+`*%!-.\n"
            "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\n"
            "CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~\n"
            "Max-Forwards: 255\n"
            "extensionHeader-!.%*+_`'~:﻿大停電\n"
            "Content-Length: 0\n\n"
        ),
    ),
    (
        "escaped-user-and-params",
        req(
            "INVITE sip:sips%3Auser%40example.com@example.net;fooparam=%40bar SIP/2.0",
            "Contact: <sip:cal%6Cer@192.0.2.1:5060;%6C%72;n%6Fme=v%6Cue>\n",
            "1 INVITE",
        ),
    ),
    (
        "escaped-null-in-user",
        req(
            "REGISTER sip:example.com SIP/2.0",
            "Contact: <sip:%00@192.0.2.1>\n",
            "1 REGISTER",
        ),
    ),
    (
        "semicolon-in-user",
        req("OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0"),
    ),
    (
        "display-name-lws-before-angle",
        m(
            "OPTIONS sip:user@example.com SIP/2.0\n"
            "To: sip:user@example.com\n"
            "From: caller<sip:caller@example.com>;tag=323\n"
            "Max-Forwards: 70\n"
            "Call-ID: lwsdisp.1234abcd@funky.example.com\n"
            "CSeq: 60 OPTIONS\n"
            "Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw\n"
            "l: 0\n\n"
        ),
    ),
    (
        "many-vias-and-long-values",
        req(
            "INVITE sip:user@example.com SIP/2.0",
            "".join(
                f"Via: SIP/2.0/TCP sip{i}.example.com:5060;branch=z9hG4bK{i:04d}\n"
                for i in range(40)
            )
            + "X-Long: "
            + "x" * 4000
            + "\n"
            + 'Contact: "First, Last" <sip:a@b.example.com>, <sip:c@d.example.com>;q=0.5\n',
            "1 INVITE",
        ),
    ),
    (
        "extra-bytes-after-content-length",
        req(
            "INVITE sip:user@example.com SIP/2.0",
            "Content-Type: application/sdp\n",
            "1 INVITE",
            body="v=0\r\n",
        ).replace(b"Content-Length: 5", b"Content-Length: 3"),
    ),
    (
        "unknown-transports-in-via",
        m(
            "OPTIONS sip:user@example.com SIP/2.0\n"
            "To: sip:user@example.com\n"
            "From: <sip:caller@example.com>;tag=323\n"
            "Max-Forwards: 70\n"
            "Call-ID: transports.kijh4akdnaqjkwendsasfdj\n"
            "Accept: application/sdp\n"
            "CSeq: 60 OPTIONS\n"
            "Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw\n"
            "Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf\n"
            "Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj\n"
            "Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en\n"
            "Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee\n"
            "l: 0\n\n"
        ),
    ),
    (
        "multipart-body",
        req(
            "MESSAGE sip:kumiko@example.org SIP/2.0",
            "Content-Type: multipart/mixed;boundary=7a9cbec02ceef655\n",
            "1 MESSAGE",
            body=(
                "--7a9cbec02ceef655\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
                "--7a9cbec02ceef655\r\nContent-Type: application/octet-stream\r\n\r\n\x01\x02\r\n"
                "--7a9cbec02ceef655--\r\n"
            ),
        ),
    ),
    (
        "unusual-reason-phrase",
        m(
            "SIP/2.0 200 = 2**3 * 5**2 но ста "
            "девяносто "
            "девять\n"
            "Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923\n"
            "Call-ID: unreason.1234ksdfak3j2erwedfsASdf\n"
            "CSeq: 35 INVITE\n"
            "From: sip:user@example.com;tag=11141343\n"
            "To: sip:user@example.edu;tag=2229\n"
            "Content-Length: 0\n\n"
        ),
    ),
    (
        "empty-reason-phrase",
        m(
            "SIP/2.0 100 \n"
            "Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe\n"
            "Call-ID: noreason.asndj203insdf99223ndf\n"
            "CSeq: 35 INVITE\n"
            "From: <sip:user@example.com>;tag=39ansfi3\n"
            "To: <sip:user@example.edu>;tag=902jndnke3\n"
            "Content-Length: 0\n\n"
        ),
    ),
    (
        "ipv6-everywhere",
        req(
            "OPTIONS sip:[2001:db8::10]:5070 SIP/2.0",
            "Contact: <sip:caller@[2001:db8::9:1]:5060;transport=tcp>\n",
        ).replace(
            b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKtorture1",
            b"Via: SIP/2.0/UDP [2001:db8::9:1]:5060;branch=z9hG4bKas3-111;received=[2001:db8::9:255]",
        ),
    ),
    (
        "no-content-length-on-datagram",
        m("OPTIONS sip:user@example.com SIP/2.0\n" + _BASE + "CSeq: 1 OPTIONS\n\n"),
    ),
    ("unknown-uri-scheme", req("OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0")),
    (
        "tel-request-uri",
        req("INVITE tel:+1-201-555-0123;phone-context=example.com SIP/2.0", "", "1 INVITE"),
    ),
    ("unknown-method", req("NEWMETHOD sip:user@example.com SIP/2.0", "", "8 NEWMETHOD")),
    (
        "odd-case-names",
        m(
            "OPTIONS sip:user@example.com SIP/2.0\n"
            "vIa: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\n"
            "FROM: <sip:a@example.com>;tag=1\n"
            "to: <sip:b@example.com>\n"
            "CALL-ID: casey@x\n"
            "cSeQ: 2 OPTIONS\n\n"
        ),
    ),
    (
        "sip-uri-with-password-and-headers",
        req(
            "INVITE sip:user:pa55w0rd@example.com;transport=tcp?Subject=hi%20there&Priority=urgent SIP/2.0",
            "",
            "1 INVITE",
        ),
    ),
    ("leading-crlf-keepalive-prefix", b"\r\n\r\n" + req("OPTIONS sip:u@example.com SIP/2.0")),
    (
        "max-forwards-zero-and-large-expires",
        req("REGISTER sip:example.com SIP/2.0", "Expires: 4294967295\n", "1 REGISTER").replace(
            b"Max-Forwards: 70", b"Max-Forwards: 0"
        ),
    ),
    (
        "escaped-quotes-in-display-name",
        req(
            "OPTIONS sip:u@example.com SIP/2.0",
            'Contact: "Joe \\"the\\" Plumber" <sip:joe@example.com>\n',
        ),
    ),
    (
        "digest-authorization",
        req(
            "REGISTER sip:example.com SIP/2.0",
            'Authorization: Digest username="bob", realm="example.com", nonce="ea9c", '
            'uri="sip:example.com", response="dfe56131d1958046689d83306477ecc", qop=auth, '
            'nc=00000001, cnonce="0a4f113b", algorithm=SHA-256, opaque=""\n',
            "1 REGISTER",
        ),
    ),
]


INVALID: list[tuple[str, bytes, int]] = [
    (
        "missing-call-id",
        req("OPTIONS sip:u@example.com SIP/2.0").replace(b"Call-ID: torture.1@192.0.2.1\r\n", b""),
        400,
    ),
    (
        "content-length-larger-than-body",
        req("INVITE sip:u@example.com SIP/2.0", "", "1 INVITE", body="v=0\r\n").replace(
            b"Content-Length: 5", b"Content-Length: 9999"
        ),
        400,
    ),
    (
        "negative-content-length",
        req("OPTIONS sip:u@example.com SIP/2.0").replace(
            b"Content-Length: 0", b"Content-Length: -999"
        ),
        400,
    ),
    (
        "cseq-overflow",
        req("OPTIONS sip:u@example.com SIP/2.0", "", "36893488147419103232 OPTIONS"),
        400,
    ),
    (
        "max-forwards-too-large",
        req("OPTIONS sip:u@example.com SIP/2.0").replace(b"Max-Forwards: 70", b"Max-Forwards: 300"),
        400,
    ),
    (
        "unterminated-quote-in-display-name",
        req("OPTIONS sip:u@example.com SIP/2.0").replace(
            b"From: <sip:", b'From: "Mr J. User <sip:'
        ),
        400,
    ),
    (
        "request-uri-in-angle-brackets",
        req("INVITE <sip:user@example.com> SIP/2.0", "", "1 INVITE"),
        400,
    ),
    (
        "space-inside-request-uri",
        req("INVITE sip:user@example.com; lr SIP/2.0", "", "1 INVITE"),
        400,
    ),
    (
        "multiple-spaces-in-request-line",
        req("INVITE  sip:user@example.com  SIP/2.0", "", "1 INVITE"),
        400,
    ),
    ("trailing-space-in-request-line", req("OPTIONS sip:user@example.com SIP/2.0 "), 400),
    (
        "unescaped-space-in-uri",
        req(
            "INVITE sip:user@example.com SIP/2.0", "Contact: <sip:us er@example.com>\n", "1 INVITE"
        ),
        400,
    ),
    (
        "display-name-without-angle-brackets",
        req("OPTIONS sip:u@example.com SIP/2.0").replace(
            b"To: <sip:callee@example.com>", b'To: "Bob" sip:callee@example.com'
        ),
        400,
    ),
    ("version-7", req("OPTIONS sip:u@example.com SIP/7.0"), 505),
    ("cseq-method-mismatch", req("INVITE sip:u@example.com SIP/2.0", "", "1 OPTIONS"), 400),
    (
        "header-without-colon",
        req("OPTIONS sip:u@example.com SIP/2.0", "Subject no colon here\n"),
        400,
    ),
    ("nul-in-header-name", req("OPTIONS sip:u@example.com SIP/2.0", "Sub\x00ject: ab\n"), 400),
    ("duplicate-call-id", req("OPTIONS sip:u@example.com SIP/2.0", "Call-ID: another@x\n"), 400),
    # RFC 3261 §25.1 TEXT-UTF8: no C0 control but HTAB, no DEL, in any header value, even
    # escaped inside a quoted display name (RFC 4475 §3.1.1.2 sends these; we refuse them).
    (
        "escaped-controls-in-display-name",
        req("OPTIONS sip:u@example.com SIP/2.0").replace(
            b"To: <sip:", b'To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:'
        ),
        400,
    ),
    ("nul-in-header-value", req("OPTIONS sip:u@example.com SIP/2.0", "Subject: a\x00b\n"), 400),
    ("esc-in-unknown-header", req("OPTIONS sip:u@example.com SIP/2.0", "X-A: \x1b[2J\n"), 400),
    ("bel-at-end-of-value", req("OPTIONS sip:u@example.com SIP/2.0", "X-A: ring\x07\n"), 400),
    ("del-in-value", req("OPTIONS sip:u@example.com SIP/2.0", "Subject: a\x7fb\n"), 400),
    (
        "esc-in-display-name",
        req("OPTIONS sip:u@example.com SIP/2.0").replace(
            b"From: <sip:", b'From: "\x1b[31mBank" <sip:'
        ),
        400,
    ),
    (
        "vertical-tab-in-via",
        req("OPTIONS sip:u@example.com SIP/2.0").replace(b"SIP/2.0/UDP ", b"SIP/2.0/UDP\x0b"),
        400,
    ),
    (
        "bare-cr-inside-value",
        req("OPTIONS sip:u@example.com SIP/2.0", "Subject: a\rX-Injected: 1\n"),
        400,
    ),
    (
        "display-name-with-separators",
        req("OPTIONS sip:u@example.com SIP/2.0").replace(
            b"From: <sip:", b"From: bank@evil;x <sip:"
        ),
        400,
    ),
    (
        "two-quoted-display-names",
        req("OPTIONS sip:u@example.com SIP/2.0").replace(b"From: <sip:", b'From: "a" "b" <sip:'),
        400,
    ),
    (
        "duplicate-expires",
        req("OPTIONS sip:u@example.com SIP/2.0", "Expires: 1\nExpires: 9\n"),
        400,
    ),
    (
        "duplicate-identical-content-length",
        req("OPTIONS sip:u@example.com SIP/2.0", "Content-Length: 0\n"),
        400,
    ),
    (
        "duplicate-user-agent",
        req("OPTIONS sip:u@example.com SIP/2.0", "User-Agent: a\nUser-Agent: b\n"),
        400,
    ),
    (
        "duplicate-event-compact",
        req("OPTIONS sip:u@example.com SIP/2.0", "Event: reg\no: presence\n"),
        400,
    ),
    (
        "conflicting-content-length",
        req("OPTIONS sip:u@example.com SIP/2.0", "Content-Length: 10\n"),
        400,
    ),
    (
        "not-utf8-header",
        req("OPTIONS sip:u@example.com SIP/2.0", "Subject: caf\xe9\n").replace(
            "é".encode(), b"\xe9"
        ),
        400,
    ),
    ("status-700", m("SIP/2.0 700 Nope\n" + _BASE + "CSeq: 1 OPTIONS\n\n"), 400),
    ("status-099", m("SIP/2.0 099 Nope\n" + _BASE + "CSeq: 1 OPTIONS\n\n"), 400),
    ("garbage-uri-scheme", req("OPTIONS 1nvalid-scheme:x SIP/2.0"), 400),
    ("empty", b"", 400),
    ("only-crlf", b"\r\n\r\n\r\n", 400),
    (
        "no-end-of-headers",
        b"OPTIONS sip:u@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n",
        400,
    ),
    (
        "via-without-host",
        req("OPTIONS sip:u@example.com SIP/2.0").replace(
            b"Via: SIP/2.0/UDP 192.0.2.1:5060;", b"Via: SIP/2.0/UDP ;"
        ),
        400,
    ),
    ("port-out-of-range", req("OPTIONS sip:u@example.com:70000 SIP/2.0"), 400),
    (
        "bare-lf-line-endings-strict",
        req("OPTIONS sip:u@example.com SIP/2.0").replace(b"\r\n", b"\n"),
        400,
    ),
    ("bad-header-name", req("OPTIONS sip:u@example.com SIP/2.0", "Bad Name: x\n"), 400),
    (
        "continuation-before-first-header",
        m("OPTIONS sip:u@example.com SIP/2.0\n  folded\n" + _BASE + "CSeq: 1 OPTIONS\n\n"),
        400,
    ),
    (
        "invalid-expires",
        req("REGISTER sip:example.com SIP/2.0", "Expires: soon\n", "1 REGISTER"),
        0,
    ),
]
