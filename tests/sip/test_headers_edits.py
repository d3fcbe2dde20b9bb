"""Headers editing methods (append/prepend/remove/set/pop_first_value) against a reference.

The edits update the already-canonical items and the name index incrementally; the reference
below does each edit the plain way (list surgery, then ``Headers(items)``, which canonicalizes
every name and rebuilds the index from scratch, as the methods did before), with the list
splitting done by ``split_list`` (§7.3.1). Both the items and the index must agree, on
accelerator-parsed headers too (the C parser fills ``_items``/``_index`` itself).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from callward.sip.headers import canonical_name, split_list
from callward.sip.message import Headers
from callward.sip.parser import parse_message

NAMES = ["Via", "v", "VIA", "Route", "Contact", "m", "X-Foo", "x-foo", "To", "Record-Route"]
names = st.sampled_from(NAMES)
values = st.text(alphabet=' ,"<>ab;=\\', max_size=14)
item_lists = st.lists(st.tuples(names, values), max_size=8)


def _same(got: Headers, want: Headers) -> None:
    assert got.items() == want.items()
    assert got._index == want._index


def _ref_positions(items: list[tuple[str, str]], name: str) -> list[int]:
    key = canonical_name(name).lower()
    return [i for i, (n, _) in enumerate(items) if n.lower() == key]


def _check_all(h: Headers, name: str, value: str) -> None:
    items = list(h.items())
    cname = canonical_name(name)
    pos = _ref_positions(items, name)

    _same(h.append(name, value), Headers([*items, (cname, value)]))

    at = pos[0] if pos else 0
    _same(h.prepend(name, value), Headers([*items[:at], (cname, value), *items[at:]]))

    _same(h.remove(name), Headers([it for i, it in enumerate(items) if i not in pos]))

    if pos:
        want = [
            (cname, value) if i == pos[0] else it for i, it in enumerate(items) if i not in pos[1:]
        ]
    else:
        want = [*items, (cname, value)]
    _same(h.set(name, value), Headers(want))

    first, rest = h.pop_first_value(name)
    if not pos:
        assert first is None
        _same(rest, h)
    else:
        n, line = items[pos[0]]
        parts = split_list(line)
        want = list(items)
        if len(parts) <= 1:
            del want[pos[0]]
        else:
            want[pos[0]] = (n, ", ".join(parts[1:]))
        assert first == (parts[0] if parts else None)
        _same(rest, Headers(want))
    # The original is untouched (edits share index lists; none may be mutated).
    _same(h, Headers(items))


@settings(max_examples=400, deadline=None)
@given(item_lists, names, values)
def test_edits_match_rebuild_from_scratch(items, name, value) -> None:
    _check_all(Headers(items), name, value)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["append", "prepend", "remove", "set", "pop"]), max_size=10))
def test_chained_edits_keep_index_consistent(ops) -> None:
    h = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b"), ("To", "<sip:x@y>")])
    for i, op in enumerate(ops):
        name = NAMES[i % len(NAMES)]
        if op == "pop":
            _, h = h.pop_first_value(name)
        elif op == "remove":
            h = h.remove(name)
        else:
            h = getattr(h, op)(name, f"v{i}")
        _same(h, Headers(list(h.items())))


def test_edits_on_accelerator_parsed_message() -> None:
    raw = (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1,"
        b" SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-0\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: <sip:alice@example.com>;tag=1\r\n"
        b"To: <sip:bob@example.com>\r\n"
        b"Call-ID: abc@192.0.2.1\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Contact: <sip:alice@192.0.2.1>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    h = parse_message(raw).headers
    for name in ("Via", "v", "Max-Forwards", "Contact", "Route", "X-New"):
        _check_all(h, name, "SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK-9")
    first, rest = h.pop_first_value("Via")
    assert first == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1"
    assert rest.values("Via") == ["SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-0"]
