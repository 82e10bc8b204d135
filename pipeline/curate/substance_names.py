"""Which ketamine-family substance a drug name means: a deterministic reader of FAERS drug text.

A name is folded (accents dropped, Cyrillic and Greek letters transliterated, upper case, dashes and ``±`` made
ASCII), then read for two kinds of mention:

* **stems** ``KETAMIN`` / ``CETAMIN`` (Portuguese) inside a word. The letters glued before the stem and the text
  just before that word must form a known stereo descriptor (``ES``, ``S-``, ``(S)``, ``S(+)-``, ``(+)-``,
  ``DEXTRO``; ``AR``, ``R-``, ``(R)-(-)-``, ``LEVO``; ``NOR``; racemic ``R,S-``, ``(RS)``, ``(±)``, ``DL``,
  ``RAC``/``RACEMIC``) or be empty; anything else (``HYDROXYNOR``, ``DESCHLORO``, ``2R,6R-HYDROXYNOR``) is another
  molecule and not a family member. Letters glued after the stem may only be a language ending or a salt
  (``KETAMINA``, ``KETAMINUM``, ``KETAMINEHCL``, ``ESKETAMINHYDROCHLORID``). A descriptor may also follow the
  word: ``KETAMINE S``, ``KETAMINE (S)``, ``KETAMINE RACEMIC`` (but not ``KETAMINE S.C.``).
* **brands** from the config's table, matched as whole words on a punctuation-free copy of the text, longest
  first (``KETANEST S`` and ``KETANEST-S`` before ``KETANEST``).

Each mention has a rank: 2 = stereo-specific or metabolite (esketamine, arketamine, norketamine: stem or brand),
1 = explicitly racemic (a racemic descriptor or a racemic brand such as KETALAR), 0 = plain ``KETAMINE`` that does
not say which form. Within one name only the highest rank counts, so ``SPRAVATO (KETAMINE)`` is esketamine and
never also racemic ketamine. :func:`resolve` applies the same rule between a drug row's ``prod_ai`` and its
``drugname``: the more specific side wins, on a tie FDA's coded ``prod_ai`` wins, and every disagreement is
returned so it can be listed for review.

Why rank and not "prod_ai first" alone: FDA codes ``prod_ai`` from the product name and sometimes writes the
racemate's name for a stereo-specific product (drugname ``SPRAVATO``, prod_ai ``KETAMINE``); counting that row as
racemic ketamine would move esketamine reports into the ketamine background.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Mapping

from pipeline.vocabulary import SUBSTANCES

GENERIC, RACEMIC, SPECIFIC = 0, 1, 2

# --- folding ------------------------------------------------------------------------------------------------
_TRANSLIT = str.maketrans({
    # Cyrillic
    "А": "A", "Б": "B", "В": "V", "Г": "G", "Д": "D", "Е": "E", "Ж": "ZH", "З": "Z", "И": "I", "Й": "I",
    "К": "K", "Л": "L", "М": "M", "Н": "N", "О": "O", "П": "P", "Р": "R", "С": "S", "Т": "T", "У": "U", "Ф": "F",
    "Х": "KH", "Ц": "TS", "Ч": "CH", "Ш": "SH", "Щ": "SHCH", "Ъ": "", "Ы": "Y", "Ь": "", "Э": "E", "Ю": "YU",
    "Я": "YA",
    # Greek (modern readings)
    "Α": "A", "Β": "V", "Γ": "G", "Δ": "D", "Ε": "E", "Ζ": "Z", "Η": "I", "Θ": "TH", "Ι": "I", "Κ": "K",
    "Λ": "L", "Μ": "M", "Ν": "N", "Ξ": "X", "Ο": "O", "Π": "P", "Ρ": "R", "Σ": "S", "Τ": "T", "Υ": "Y", "Φ": "F",
    "Χ": "CH", "Ψ": "PS", "Ω": "O",
    # punctuation that means the same as its ASCII form
    "‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-", "―": "-", "−": "-", "±": "+/-",
    "®": " ", "™": " ", "©": " ", "’": "'", "‘": "'", "`": "'", "´": "'",
})


def fold(text: str | None) -> str:
    """Upper-case ASCII-ish form of a drug name: no accents, transliterated, single spaces, no trademark signs."""
    if not text:
        return ""
    t = unicodedata.normalize("NFKD", str(text))
    t = "".join(ch for ch in t if not unicodedata.combining(ch)).upper().translate(_TRANSLIT)
    t = re.sub(r"'S(?![A-Z])", "", t)          # possessive: KETAMINE'S is not KETAMINE S
    return " ".join(t.replace("'", " ").split())


def loose(folded: str) -> str:
    """Letters, digits and ``+`` only, single-spaced: the form brands are matched on."""
    return " ".join(re.sub(r"[^A-Z0-9+]+", " ", folded).split())


# --- stems and descriptors ------------------------------------------------------------------------------------
_WORD = re.compile(r"[A-Z]*(?:KETAMIN|CETAMIN)[A-Z]*")
_STEM = re.compile(r"KETAMIN|CETAMIN")
#: letters allowed glued after the stem: a language ending, then optionally a salt
_POST = re.compile(r"(?:E|A|UM|I)?(?:HCL|HCI|HYDROCHLORIDE?|HYDROCHLORIDUM|CHLORHYDRATE|CLORHIDRATO)?")

_PLUS = r"(?:\(\s*\+\s*\)|\+)"
_MINUS = r"\(\s*-\s*\)"
_B = r"(?<![A-Z0-9])"               # a descriptor is not glued to a preceding letter or digit
# FAERS text has "?" where a non-ASCII character was lost (5?FLUOROURACIL): a separator here, never a sign
_SEP = r"[\s\-_.?]*$"
_RAC_CORE = (r"\(\s*(?:R\s*[,/?]?\s*S|S\s*[,/?]\s*R|\+\s*/?\s*-|D\s*[,/]?\s*L|RAC(?:EMIC|EMATE)?)\s*\)"
             r"|R\s*[,/?]\s*S|S\s*[,/?]\s*R|RS|DL|D\s*,\s*L|\+\s*/\s*-|RAC(?:EMIC|EMATE|EMATO|EMICO|EMIQUE|EMISCHES)?")
_BEFORE = (
    ("ketamine", RACEMIC, re.compile(rf"{_B}(?:{_RAC_CORE}){_SEP}")),
    ("esketamine", SPECIFIC, re.compile(
        rf"{_B}(?:ES|DEXTRO|\(?\s*S\s*{_PLUS}?\s*\)?(?:\s*-?\s*\(\s*\+\s*\))?){_SEP}")),
    ("arketamine", SPECIFIC, re.compile(
        rf"{_B}(?:AR|LEVO|\(?\s*R\s*(?:{_MINUS})?\s*\)?(?:\s*-?\s*{_MINUS})?){_SEP}")),
    # a bare sign counts only when glued to the name: FAERS writes "A (+) B" for a combination product
    ("esketamine", SPECIFIC, re.compile(rf"{_B}\(\s*\+\s*\)-?$")),
    ("arketamine", SPECIFIC, re.compile(rf"{_B}{_MINUS}-?$")),
    ("norketamine", SPECIFIC, re.compile(rf"{_B}NOR{_SEP}")),
)
#: a substituent written as its own word before the name makes another molecule (HYDROXY-NORKETAMINE)
_SUBSTITUENT = re.compile(r"(?<![A-Z])(?:HYDROXY|DEHYDRO|DIHYDRO|DESCHLORO|DECHLORO|CHLORO|FLUORO|BROMO|IODO|"
                          r"METHYL|ETHYL|METHOXY|ETHOXY|AMINO|NITRO|OXO|DESMETHYL|DEMETHYL)[\s\-]*$")
_TSEP = r"^[\s\-_]*"
_TEND = r"(?![A-Z0-9])(?!\s*[./]\s*[A-Z])"   # KETAMINE S.C. / S/C (subcutaneous) is not a descriptor
_AFTER = (
    ("ketamine", RACEMIC, re.compile(rf"{_TSEP}(?:{_RAC_CORE}){_TEND}")),
    ("esketamine", SPECIFIC, re.compile(rf"{_TSEP}(?:\(\s*S\s*{_PLUS}?\s*\)|S\s*{_PLUS}?){_TEND}")),
    ("arketamine", SPECIFIC, re.compile(rf"{_TSEP}(?:\(\s*R\s*(?:{_MINUS})?\s*\)|R){_TEND}")),
)


@dataclass(frozen=True)
class Mention:
    """One family substance named in a text: ``via`` is ``"name"`` (a stem) or ``"brand"``."""

    substance: str
    rank: int
    via: str
    text: str


def _stem_mention(folded: str, m: re.Match) -> Mention | None:
    word = m.group(0)
    stem = _STEM.search(word)
    pre, post = word[:stem.start()], word[stem.end():]
    if not _POST.fullmatch(post):
        return None                                   # KETAMINOL, KETAMINES...: not a name we can read
    head = folded[:m.start()] + pre
    for substance, rank, rx in _BEFORE:
        d = rx.search(head)
        if d:
            if _SUBSTITUENT.search(head[:d.start()]):
                return None
            return Mention(substance, rank, "name", (head[d.start():] + word[len(pre):]).strip())
    if pre or _SUBSTITUENT.search(head):
        return None                                   # HYDROXYNORKETAMINE, DESCHLOROKETAMINE: other molecules
    tail = folded[m.end():]
    for substance, rank, rx in _AFTER:
        d = rx.match(tail)
        if d:
            return Mention(substance, rank, "name", (word + tail[:d.end()]).strip())
    return Mention("ketamine", GENERIC, "name", word)


class NameReader:
    """Reads family mentions from drug names; ``brands`` maps a brand (any spelling) to its substance."""

    def __init__(self, brands: Mapping[str, str] | Iterable[tuple[str, str]] = ()):
        pairs = brands.items() if isinstance(brands, Mapping) else brands
        self.brand_of: dict[str, str] = {}
        for name, substance in pairs:
            if substance not in SUBSTANCES:
                raise ValueError(f"brand {name!r}: unknown substance {substance!r}")
            key = loose(fold(name))
            if key:
                self.brand_of[key] = substance
        alts = sorted(self.brand_of, key=lambda b: (-len(b), b))
        self.brand_rx = (re.compile(r"(?<![A-Z0-9])(?:" + "|".join(re.escape(b) for b in alts) + r")(?![A-Z])")
                         if alts else None)
        # an ASCII text holding none of these cannot name the family (skips folding millions of other names)
        needles = ("KETAMIN", "CETAMIN", *sorted({b.split(" ")[0] for b in self.brand_of}))
        self._needle_rx = re.compile("|".join(map(re.escape, needles)))  # on upper(): IGNORECASE is 8x slower

    def may_name(self, text: str | None) -> bool:
        """False when ``text`` certainly names no family substance (a cheap substring test on ASCII text)."""
        if not text:
            return False
        return not text.isascii() or self._needle_rx.search(text.upper()) is not None

    def mentions(self, text: str | None) -> list[Mention]:
        """Every family mention in ``text`` (unresolved, in text order: stems first, then brands)."""
        if not self.may_name(text):
            return []
        folded = fold(text)
        out = [x for x in (_stem_mention(folded, m) for m in _WORD.finditer(folded)) if x is not None]
        if self.brand_rx is not None:
            for m in self.brand_rx.finditer(loose(folded)):
                sub = self.brand_of[m.group(0)]
                out.append(Mention(sub, SPECIFIC if sub != "ketamine" else RACEMIC, "brand", m.group(0)))
        return out

    def read(self, text: str | None) -> dict[str, Mention]:
        """The substances ``text`` names after the specificity rule: substance -> its best mention."""
        return best(self.mentions(text))

    def substances(self, text: str | None) -> tuple[str, ...]:
        """The family substances ``text`` names (in :data:`SUBSTANCES` order); ``()`` for a non-family name."""
        return tuple(self.read(text))


def best(mentions: Iterable[Mention]) -> dict[str, Mention]:
    """Keep the mentions of the highest rank (one per substance, a name before a brand); SUBSTANCES order."""
    mentions = list(mentions)
    if not mentions:
        return {}
    top = max(m.rank for m in mentions)
    kept: dict[str, Mention] = {}
    for m in sorted((m for m in mentions if m.rank == top), key=lambda m: m.via != "name"):
        kept.setdefault(m.substance, m)
    return {s: kept[s] for s in SUBSTANCES if s in kept}


def canonical_mention(substance: str, via: str = "name") -> Mention:
    """A mention for a family substance reached through an alias or FDA's own pairing (rank by substance)."""
    return Mention(substance, GENERIC if substance == "ketamine" else SPECIFIC, via, substance.upper())


@dataclass(frozen=True)
class Resolution:
    """What a drug row counts as: ``chosen`` substances and the side they came from; ``reason`` when the two
    sides disagreed (``None`` when they agree or only one side names the family)."""

    chosen: dict[str, Mention]
    side: str                       # "prod_ai", "drugname" or "" (no family substance)
    reason: str | None


def _names(d: Mapping[str, Mention]) -> str:
    return "+".join(d) or "none"


def resolve(from_prod_ai: Mapping[str, Mention], from_drugname: Mapping[str, Mention], *,
            prod_ai_blank: bool) -> Resolution:
    """Row rule between the two fields (each already :func:`best`-resolved).

    * only one side names the family: that side, no conflict; except a non-blank ``prod_ai`` naming no family
      substance against a drugname that does: ``prod_ai`` is kept (FDA coded another ingredient) and the row is
      listed;
    * both name the same substances: agreed;
    * they differ: the side with the higher rank wins (stereo-specific or metabolite > explicitly racemic >
      plain ketamine); on a tie ``prod_ai`` wins; the row is listed either way.
    """
    p, d = dict(from_prod_ai), dict(from_drugname)
    if not d:
        return Resolution(p, "prod_ai" if p else "", None)
    if not p:
        if prod_ai_blank:
            return Resolution(d, "drugname", None)
        return Resolution({}, "", f"drugname names {_names(d)}, prod_ai names no family substance: prod_ai kept")
    if set(p) == set(d):
        return Resolution(p, "prod_ai", None)
    rp, rd = max(m.rank for m in p.values()), max(m.rank for m in d.values())
    if rd > rp:
        return Resolution(d, "drugname", f"drugname ({_names(d)}) is more specific than prod_ai ({_names(p)})")
    if rp > rd:
        return Resolution(p, "prod_ai", f"prod_ai ({_names(p)}) is more specific than drugname ({_names(d)})")
    return Resolution(p, "prod_ai", f"prod_ai ({_names(p)}) and drugname ({_names(d)}) are equally specific: "
                                    f"prod_ai kept")


__all__ = ["GENERIC", "RACEMIC", "SPECIFIC", "Mention", "NameReader", "Resolution", "best", "canonical_mention",
           "fold", "loose", "resolve"]
