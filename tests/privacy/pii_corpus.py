"""A labelled PII corpus for measuring redaction: logs, SIP messages and JSON documents with the
personal identifiers each contains (and non-personal tokens that must survive).

Numbers come from an independent reference, libphonenumber's example numbers
(``phonenumbers``) for every supported region, in E.164, international and national formats;
IP addresses from :mod:`ipaddress`; IMEIs carry a valid Luhn check digit (3GPP TS 23.003 §6.2.1).
Deterministic (seeded) so figures are reproducible.
"""

from __future__ import annotations

import ipaddress
import json
import random
import string
from dataclasses import dataclass, field

import phonenumbers

NAMES = [
    "Alice Smith", "Bob Jones", "Chloé Dubois", "Dmitri Ivanov", "Émile Zola", "Fatima Khan",
    "Giulia Rossi", "Hiro Tanaka", "Ingrid Johansson", "José García", "Kwame Mensah",
    "Li Wei", "María José Pérez", "Nguyen Van An", "Olga Kowalska", "Priya Patel",
    "Renée O'Connor", "Sven-Erik Larsson", "Tomás Ó Briain", "Zoë van der Berg",
]  # fmt: skip
FORMATS = [
    phonenumbers.PhoneNumberFormat.E164,
    phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    phonenumbers.PhoneNumberFormat.NATIONAL,
]


@dataclass
class Sample:
    text: str
    pii: list[tuple[str, str]] = field(default_factory=list)  # (kind, value as written)
    keep: list[str] = field(default_factory=list)  # non-personal tokens that must survive
    source: str = ""


def _luhn(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return body + str((10 - total % 10) % 10)


def numbers() -> list[str]:
    out = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
            n = phonenumbers.example_number_for_type(region, kind)
            if n is None:
                continue
            for fmt in FORMATS:
                text = phonenumbers.format_number(n, fmt)
                if sum(c.isdigit() for c in text) >= 7:
                    out.append(text)
    return sorted(set(out))


def build(seed: int = 13, n: int = 600) -> list[Sample]:
    rng = random.Random(seed)
    nums = numbers()
    out: list[Sample] = []

    def num() -> str:
        return rng.choice(nums)

    def ipv4() -> str:
        return str(ipaddress.IPv4Address(rng.randrange(0x01000000, 0xDF000000)))

    def ipv6() -> str:
        return str(ipaddress.IPv6Address((0x2001_0DB8 << 96) | rng.getrandbits(96)))

    def cid() -> str:
        return "".join(rng.choice("0123456789abcdef") for _ in range(20))

    def imsi() -> str:
        return rng.choice(["262", "234", "310", "208", "404"]) + "".join(
            rng.choice(string.digits) for _ in range(12))  # fmt: skip

    def imei() -> str:
        return _luhn("35" + "".join(rng.choice(string.digits) for _ in range(12)))

    def token() -> str:
        alpha = string.ascii_letters + string.digits
        return "eyJhbGciOiJFUzI1NiJ9." + "".join(rng.choice(alpha) for _ in range(40)) + "." + \
            "".join(rng.choice(alpha + "-_") for _ in range(43))  # fmt: skip

    def apikey() -> str:
        return "".join(rng.choice("0123456789abcdef") for _ in range(40))

    for i in range(n):
        kind = i % 8
        c = cid()
        if kind == 0:  # log line with numbers in national/international formats
            a, b = num(), num()
            s = Sample(f"2026-12-02T12:30:{i % 60:02d}Z INFO call from {a} to {b} took 125 ms "
                       f"status 486 call_id={c}", [("number", a), ("number", b)],
                       ["2026-12-02T12:30", "125 ms", "status 486", c], "log")  # fmt: skip
        elif kind == 1:  # SIP INVITE with display names, PAI, Contact, digest user
            name, a, ip, user = rng.choice(NAMES), num(), ipv4(), f"user{rng.randrange(10**5)}"
            e164 = "+" + "".join(ch for ch in a if ch.isdigit()) if a.startswith("+") else a
            text = (
                f"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:5060;branch=z9hG4bK{c}\r\n"
                f'From: "{name}" <sip:{user}@ims.example>;tag=9fxced76sl\r\n'
                f"To: Bob <sip:bob@example.com>\r\nCall-ID: {c}\r\nCSeq: 314159 INVITE\r\n"
                f"P-Asserted-Identity: <tel:{e164.replace(' ', '')}>\r\n"
                f"Contact: <sip:{user}@{ip}:5060>\r\n"
                f'Authorization: Digest username="{user}", realm="ims.example", nonce="abc", '
                f'uri="sip:bob@example.com", response="0123"\r\nContent-Length: 0\r\n\r\n'
            )
            s = Sample(text, [("name", name), ("ip", ip), ("user", user), ("uri", "bob@example.com"),
                              ("number", e164.replace(" ", ""))],
                       ["INVITE", "SIP/2.0", "CSeq: 314159 INVITE", c, "Content-Length: 0"],
                       "sip")  # fmt: skip
        elif kind == 2:  # JSON event with known personal fields
            name, a, im, ie = rng.choice(NAMES), num(), imsi(), imei()
            doc = {"event": "registered", "name": name, "msisdn": a, "imsi": im, "imei": ie,
                   "ip": ipv6(), "call_id": c, "duration_s": 62, "codec": "opus/48000"}  # fmt: skip
            s = Sample(json.dumps(doc, ensure_ascii=False),
                       [("name", name), ("number", a), ("imsi", im), ("imei", ie),
                        ("ip", doc["ip"])],
                       ['"duration_s": 62', "opus/48000", c, "registered"], "json")  # fmt: skip
        elif kind == 3:  # support ticket text with labelled values
            conf = (
                f"{rng.randrange(100, 999)} {rng.randrange(1000, 9999)} {rng.randrange(1000, 9999)}"
            )
            pin = str(rng.randrange(1000, 9999))
            name = rng.choice(NAMES)
            s = Sample(f"Customer name: {name} could not join conference ID {conf}, PIN {pin}# "
                       f"from {ipv4()} at 09:15", [("name", name.split()[0]), ("conference", conf),
                                                    ("pin", pin)],
                       ["could not join", "at 09:15"], "ticket")  # fmt: skip
            ip = s.text.split("from ")[1].split(" ")[0]
            s.pii.append(("ip", ip))
        elif kind == 4:  # secrets in headers and config dumps
            t, k = token(), apikey()
            s = Sample(f"GET /api/v1/calls HTTP/1.1\r\nAuthorization: Bearer {t}\r\n"
                       f"X-Api-Key: {k}\r\nHost: callward.example\r\n",
                       [("token", t), ("key", k)], ["GET /api/v1/calls HTTP/1.1"], "http")  # fmt: skip
        elif kind == 5:  # IMSI/IMEI in signalling logs, dashed IMEI
            im, ie = imsi(), imei()
            dashed = f"{ie[:2]}-{ie[2:8]}-{ie[8:14]}-{ie[14]}"
            s = Sample(f"attach imsi={im} imei {dashed} cell 262-01-4711 rat=LTE cause=0",
                       [("imsi", im), ("imei", dashed)], ["rat=LTE", "cause=0"], "log")  # fmt: skip
        elif kind == 6:  # e-mail, unquoted display name, IPv6 with port
            name = rng.choice(NAMES)
            mail = name.split()[0].lower().encode("ascii", "ignore").decode() + f".{i}@example.org"
            ip6 = ipv6()
            s = Sample(f"To: {name} <sip:{mail}>\r\nReply-To: {mail}\r\nVia: SIP/2.0/TCP [{ip6}]:5061",
                       [("name", name), ("email", mail), ("ip", ip6)], ["SIP/2.0/TCP"], "sip")  # fmt: skip
        else:  # private key material in a log
            body = "".join(
                rng.choice(string.ascii_letters + string.digits + "+/") for _ in range(64)
            )
            pem = f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----"
            s = Sample(f"loaded tls config {pem}\nlistening on port 5061", [("key", body)],
                       ["listening on port 5061"], "log")  # fmt: skip
        out.append(s)
    # every libphonenumber example number of every region, in every format, once
    for i, a in enumerate(nums):
        out.append(Sample(f"[edge-1] reg refresh for {a}; expires=3600 seq={i}", [("number", a)],
                          ["expires=3600", f"seq={i}"], "log-number"))  # fmt: skip
    return out


#: non-personal values that look like identifiers: the false-positive probe
HARD_NEGATIVES = [
    "version 1.2.3",
    "build 2026.12.02",
    "date 2026-12-02",
    "date 02.12.2026",
    "at 12:30:45",
    "duration 00:01:23",
    "took 125 ms",
    "mos 4.38",
    "jitter 12.5 ms",
    "loss 0.25 %",
    "port 5060",
    "ssrc 305419896",
    "rtp ts 4294967295",
    "bytes 1048576",
    "seq 65535",
    "status 486 Busy Here",
    "CSeq: 314159 INVITE",
    "Max-Forwards: 70",
    "pt 111 opus/48000/2",
    "call_id a84b4c76e66710f3",
    "sha256 9f86d081884c7d659a2feaa0c55ad015",
    "bitrate 24000 bit/s",
    "ptime 20",
    "Expires: 3600",
]


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def leaked(kind: str, value: str, redacted: str) -> bool:
    """Whether ``value`` survives redaction: the text itself or, for numbers, its last seven
    digits anywhere in the digits of the output."""
    if value in redacted:
        return True
    if kind in ("number", "imsi", "imei", "conference"):
        tail = _digits(value)[-7:]
        return len(tail) >= 7 and tail in _digits(redacted)
    return False
