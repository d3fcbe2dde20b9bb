"""Person names in free text ("call Alice Smith tomorrow"): a gazetteer plus patterns, for the
redaction layer (:func:`callward.privacy.redact.redact_text`).

No statistical NER model can be installed from the package registries this project uses
(spaCy installs, its English models do not), so names are found with:

* **Gazetteer**: the US Census Bureau 1990 name lists (public-domain data, shipped by the MIT
  ``names`` package): 5,163 given names and 88,799 surnames, matched case- and
  accent-insensitively.
* **Patterns** over runs of capitalised words (Latin letters, accents allowed):
  1. a title (Mr, Mrs, Ms, Dr, Prof...) followed by capitalised words;
  2. a known given name followed by one or two capitalised words (an optional middle
     initial between), none of them a common word;
  3. a capitalised word that is not a common word followed by a known surname
     (catches foreign given names: "Jürgen Müller", "Siobhán Kelly");
  4. a known given name alone right after a cue word (call, called, from, with, ask, tell,
     dear, hi, hello, thanks...), e.g. "call Alice tomorrow".

What it misses (measured in ``tests/privacy/test_names.py``, figure in docs/privacy.md):
given names alone without a cue, names written in lower case or all capitals, non-Latin
scripts, names whose given name and surname are both outside the census lists, and names
that are also common words ("Will", "Rose") where the common-word list wins. What it wrongly
masks: capitalised phrases whose words are census names ("Price Check" is safe; "Virginia
Beach" is masked).
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from importlib import resources

__all__ = ["find_names", "redact_names"]

_WORD = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*\.?")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_TITLES = _words("mr mrs ms mx miss dr prof sir dame madam herr frau mme mlle sr sra")
_CUES = _words(
    "call called calling ring rang phone phoned text texted ask asked tell told from with for "
    "contact dear hi hello hey thanks thank cc by meet met"
)
# Surname shapes common across Europe (patronymic and toponymic suffixes, Gaelic prefixes):
# evidence for a surname when the census lists do not have it.
_SURNAME_SHAPE = re.compile(
    r"(?i)^(?:mc|mac|o['’]|fitz)\w{3,}|\w{2,}(?:son|sen|sson|ski|ska|cki|cka|wicz|czyk|escu|"
    r"oglu|oğlu|ova|ová|opoulos|akis|idis|ini|elli|etti|ucci|ez|es|eau|aux|ier|mann|berg|"
    r"stein|feld|hoff|ovic|ović|enko|chuk)$"
)
# Capitalised words that start sentences, name things in logs, or are census names that are
# far more often ordinary words in an operator's text.
_COMMON = _words("""
a about after all also an and any april are as at august back bad be been before best big
bill black blue both brown but by call called caller can card care case cell center centre
change charge check city clear close code cold come content could court cross day days dear
december do does done down during each early east end entry error even every fail failed
fall february few field file find first for free friday from front full general get given
glad global gold good grand great green hall hand happy hard has have head hello help her
here hey hi high hill his hold home hope hot house how if in info into is it its
january july june just key kind king know land last late left life light like line link
list little live local long low made main major make many march mark may media member
message miss mobile monday more morning most much must my name national network never new
next night no none north not note november now number october of off office ok on one only
open or other our out over page park party pass path peer per phone plan please point port
post price primary private public queue quick read ready real record red relay remote
report rest right ring road room rose round rule run sale saturday say see send server
service session set she ship short show side sign simple since small so some south star
start state station still stone stop street success summer sunday support sure system take
team tell test than thank thanks that the their them then there these they this those
thursday time to today total tower town trunk tuesday two under union unit united up upper
us user valid very video voice wall want was we wednesday well west what when where which
white who why will win winter with wood work world would year yes you young your meet met
ask asked tell told contact email ring phoned texted please call calling hello regards
cheers kind best team customer client agent operator admin noc sip invite register bye ack
options cancel refer notify subscribe publish update prack info open source software
""")


def _fold(word: str) -> str:
    """Upper case without accents (the census lists are ASCII capitals)."""
    nfkd = unicodedata.normalize("NFKD", word)
    return "".join(c for c in nfkd if not unicodedata.combining(c)).upper().replace("’", "'")


@cache
def _lists() -> tuple[frozenset[str], frozenset[str]]:
    base = resources.files("names")

    def read(name: str) -> frozenset[str]:
        text = base.joinpath(name).read_text(encoding="ascii")
        return frozenset(line.split(None, 1)[0] for line in text.splitlines() if line.strip())

    first = read("dist.male.first") | read("dist.female.first")
    return first, read("dist.all.last")


# lower-case words after which capitalised words usually name a thing, not a person
_COMMON_VERBS_BEFORE_THINGS = _words(
    "via the a an to into on at in using restarted deployed upgraded moved routed connected "
    "alert alerts fired dashboard region zone pod cluster node"
)


def _common(word: str) -> bool:
    return word.rstrip(".").lower() in _COMMON


def _cap(word: str) -> bool:
    """Capitalised like a name: an upper-case letter, then a lower-case one ("McElduff",
    "Jean-Luc"), or O'/D' and a capital ("O'Brien"); "SIPp" and "NOC" are not."""
    w = word.rstrip(".")
    if len(w) < 2 or not w[0].isupper():
        return False
    return w[1].islower() or (len(w) > 3 and w[1] in "'’" and w[2].isupper() and w[3].islower())


def _runs(text: str) -> list[list[re.Match[str]]]:
    """Runs of capitalised words separated by single spaces (a middle initial "J." may sit
    between them); each run remembers its words' matches."""
    runs: list[list[re.Match[str]]] = []
    cur: list[re.Match[str]] = []
    prev_end = -2
    for m in _WORD.finditer(text):
        w = m.group(0)
        initial = len(w) == 2 and w[0].isupper() and w[1] == "."
        joined = m.start() == prev_end + 1 and text[prev_end] == " "
        if (_cap(w) or (initial and cur)) and (joined or not cur):
            cur.append(m)
        else:
            if cur:
                runs.append(cur)
            cur = [m] if _cap(w) else []
        prev_end = m.end()
        if w.endswith(".") and not initial and cur:
            runs.append(cur)  # a sentence ends: the next capital starts a new run
            cur = []
    if cur:
        runs.append(cur)
    return runs


def _is_name(words: list[str], first: frozenset[str], last: frozenset[str]) -> bool:
    head, tail = words[0], words[-1]
    if _common(head):
        return False
    if _fold(head) in first:
        return True  # "Jacob Hall", "Stephanie Price": a given name, then any capitalised word
    if any(_common(w) for w in words[1:]):
        return False
    return _fold(tail) in last or bool(_SURNAME_SHAPE.match(tail.rstrip(".")))


def find_names(text: str) -> list[tuple[int, int]]:
    """Spans ``(start, end)`` of person names in ``text`` (non-overlapping, in order)."""
    first, last = _lists()
    spans: list[tuple[int, int]] = []
    for run in _runs(text):
        words = [m.group(0) for m in run if len(m.group(0)) > 2 or not m.group(0).endswith(".")]
        ms = [m for m in run if m.group(0) in words]
        before = text[: run[0].start()].rstrip().rsplit(None, 1)
        prev = before[-1].lower().strip(",:;") if before else ""
        if prev.rstrip(".") in _TITLES and ms:
            spans.append((ms[0].start(), ms[-1].end()))  # "Dr Patel", "Mrs Jane Doe"
            continue
        # a leading common word ("Call", "Meet", "Customer") is not part of the name
        mid = bool(prev) and prev[0].islower() and prev not in _COMMON_VERBS_BEFORE_THINGS
        while len(ms) > 1 and _common(ms[0].group(0)):
            prev = ms[0].group(0).lower()
            mid = False
            ms = ms[1:]
        words = [m.group(0).rstrip(".") for m in ms]
        if 2 <= len(ms) <= 3 and mid and not any(_common(w) for w in words):
            # mid-sentence after a lower-case word ("escalated by Piaras Lenaghan"): two or three
            # capitalised words none of which is a common word
            spans.append((ms[0].start(), ms[-1].end() - ms[-1].group(0).endswith(".")))
        elif 2 <= len(ms) <= 4 and _is_name(words, first, last):
            spans.append((ms[0].start(), ms[-1].end() - ms[-1].group(0).endswith(".")))
        elif len(ms) == 1 and prev in _CUES and _fold(words[0]) in first and not _common(words[0]):
            spans.append((ms[0].start(), ms[0].start() + len(words[0])))
    return spans


def redact_names(text: str) -> str:
    """``text`` with each name found replaced by ``[name]``."""
    spans = find_names(text)
    for s, e in reversed(spans):
        text = text[:s] + "[name]" + text[e:]
    return text
