"""Drug rows -> ingredients, the ketamine-family classification and ``matched_by``.

Deterministic, no fuzzy matching. Family names are read by :mod:`pipeline.curate.substance_names`. Per drug row:

* ``prod_ai`` (FDA's active ingredient text, 2014Q3+) first: split on ``\\``, `` OR ``, `` AND OR ``; each
  component is read for a family substance (-> ``prod_ai``, or ``brand``); any other
  component becomes an ingredient after salt stripping and the alias table's synonyms (-> ``prod_ai``);
* else ``drugname``, per component: a family name (-> ``drugname``), brand table (-> ``brand``), a known
  ingredient (any salt-stripped prod_ai component seen in the data, -> ``drugname``), the reviewed alias table
  (-> ``alias``), then the same on a parenthesised part (``INEXIUM (ESOMEPRAZOLE MAGNESIUM)``), then FDA's own
  pairing of that drugname with one prod_ai elsewhere in the data (>= 90 % of >= 2 rows, -> ``drugname``);
  otherwise the salt-stripped name is kept as an ``unmapped`` ingredient (background) and listed in
  ``unmapped_drugs``.

The family substance of a row with both fields is then settled between them
(:func:`~pipeline.curate.substance_names.resolve`: the more specific name wins, a tie keeps ``prod_ai``), and every
row where they disagree is listed in the temp table ``name_conflicts``.

Names are normalised in DuckDB (upper-case, whitespace collapsed, trailing ``.``/``,``/``;`` removed) and the
Python mapping runs once per DISTINCT normalised text, then is joined back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from pipeline.curate.substance_names import Mention, NameReader, best, canonical_mention, resolve
from pipeline.settings import Config

_NONE: dict = {}  # shared "names no family substance" (never mutated)
_SPLIT = re.compile(r"\s*\\\s*|\s+AND OR\s+|\s+OR\s+")
_PAREN = re.compile(r"^(?P<base>[^(]*?)\s*\((?P<inner>[^()]*)\)\s*$")

#: SQL normalising a text column: upper, single spaces, no trailing . , ; (and no surrounding spaces).
def norm_sql(col: str) -> str:
    return (f"regexp_replace(regexp_replace(upper(trim({col})), '\\s+', ' ', 'g'), '[\\s.,;]+$', '')")


def normalise(text: str) -> str:
    """Python twin of :func:`norm_sql` (tests, config keys)."""
    return re.sub(r"[\s.,;]+$", "", " ".join(text.upper().split()))


@dataclass
class Matcher:
    """Name -> [(ingredient, substance|None, matched_by)] with the name reader, config brands, salts, aliases."""

    config: Config
    vocabulary: frozenset[str] = frozenset()
    #: normalised drugname -> normalised prod_ai, learned from FDA's own (drugname, prod_ai) pairs in the data
    learned: dict[str, str] | None = None

    def __post_init__(self):
        c = self.config
        self.reader = NameReader(c.brands)
        self.ingredient_of = dict(c.ingredients)
        self.substance_of_ingredient = {v: k for k, v in c.ingredients}
        self._read: dict[str, dict[str, Mention]] = {}
        self.salts = frozenset(c.salt_suffixes)
        self.aliases = dict(c.aliases)

    # --- pieces -----------------------------------------------------------------------------------------
    def read(self, text: str) -> dict[str, Mention]:
        """Family substances ``text`` names (specificity rule applied), cached per text that may name one."""
        if not self.reader.may_name(text):
            return _NONE
        out = self._read.get(text)
        if out is None:
            out = self._read[text] = self.reader.read(text)
        return out

    def substances_in(self, text: str) -> list[str]:
        return list(self.read(text))

    def strip_salts(self, name: str) -> str:
        tokens = name.split(" ")
        while len(tokens) > 1 and tokens[-1] in self.salts and tokens[-2] not in self.salts:
            tokens.pop()
        return " ".join(tokens)

    def _ketamine(self, comp: str, via_name: str) -> list[tuple[str, str, str]]:
        return [(self.ingredient_of[s], s, via_name if m.via == "name" else "brand")
                for s, m in self.read(comp).items()]

    def _alias(self, name: str) -> list[str] | None:
        for key in (name, self.strip_salts(name)):
            if key in self.aliases:
                return [self.strip_salts(x) for x in self.aliases[key].split("\\") if x]
        return None

    def _with_substance(self, ingredient: str, matched_by: str) -> tuple[str, str | None, str]:
        # an alias or vocabulary hit may itself be a ketamine-family ingredient
        subs = self.substances_in(ingredient)
        if subs:
            return (self.ingredient_of[subs[0]], subs[0], matched_by)
        return (ingredient, self.substance_of_ingredient.get(ingredient), matched_by)

    # --- entry points -------------------------------------------------------------------------------------
    def components(self, text: str) -> list[str]:
        return [c for c in (x.strip(" .,;") for x in _SPLIT.split(text)) if c]

    def prod_ai_ingredient(self, comp: str) -> list[tuple[str, str | None, str]]:
        hit = self._ketamine(comp, "prod_ai")
        if hit:
            return hit
        stripped = self.strip_salts(comp)
        targets = self._alias(stripped) or [stripped]
        return [self._with_substance(t, "prod_ai") for t in targets]

    def map_prod_ai(self, text: str) -> list[tuple[str, str | None, str]]:
        out = []
        for comp in self.components(text):
            for item in self.prod_ai_ingredient(comp):
                if item not in out:
                    out.append(item)
        return out

    def _drugname_component(self, comp: str) -> list[tuple[str, str | None, str]]:
        hit = self._ketamine(comp, "drugname")
        if hit:
            return hit
        candidates = [comp]
        m = _PAREN.match(comp)
        if m:
            candidates += [x for x in (m.group("inner").strip(), m.group("base").strip()) if x]
        for cand in candidates:
            stripped = self.strip_salts(cand)
            if stripped in self.vocabulary:
                return [self._with_substance(stripped, "drugname")]
            alias = self._alias(cand)
            if alias:
                return [self._with_substance(a, "alias") for a in alias]
        if self.learned and comp in self.learned:
            return [(i, s, "drugname") for i, s, _ in self.map_prod_ai(self.learned[comp])]
        return [(self.strip_salts(comp), None, "unmapped")]

    def map_drugname(self, text: str) -> list[tuple[str, str | None, str]]:
        out = []
        for comp in self.components(text):
            for item in self._drugname_component(comp):
                if item not in out:
                    out.append(item)
        return out

    def _side(self, text: str, items) -> dict[str, Mention]:
        # what one field names: its own text, plus family ingredients reached through an alias or FDA's pairing
        got = self.read(text)
        extra = [canonical_mention(s, how) for _, s, how in items if s and s not in got]
        return best([*got.values(), *extra]) if extra else got

    def resolve_row(self, drugname: str, prod_ai: str, items):
        """Settle one row's family substance between its normalised ``drugname`` and ``prod_ai``.

        ``items`` = the row's mapping (of ``prod_ai``, or of ``drugname`` when ``prod_ai`` is blank). Returns the
        items with the family part replaced by the chosen substances, the
        :class:`~pipeline.curate.substance_names.Resolution`, and what each side named.
        """
        if prod_ai:
            p, d = self._side(prod_ai, items), self.read(drugname)
        else:
            p, d = {}, self._side(drugname, items)
        res = resolve(p, d, prod_ai_blank=not prod_ai)
        family = [(self.ingredient_of[s], s, m.via if m.via in ("brand", "alias") else res.side)
                  for s, m in res.chosen.items()]
        return [it for it in items if it[1] is None] + family, res, p, d


#: One row per distinct raw (drugname, prod_ai) pair whose fields disagree on the family substance.
CONFLICT_PAIR_SCHEMA = pa.schema([("drugname", pa.string()), ("prod_ai", pa.string()),
                                  ("substance_from_drugname", pa.string()), ("substance_from_prod_ai", pa.string()),
                                  ("chosen", pa.string()), ("chosen_from", pa.string()), ("reason", pa.string())])


def _conflict_rows(con: duckdb.DuckDBPyConnection, pairs: pa.Table, counted: str = "true") -> None:
    """Temp table ``name_conflicts``: every kept drug row (of the reports ``counted`` selects) whose
    (drugname, prod_ai) pair is in ``pairs``."""
    from pipeline.curate.versions import child_rows

    con.register("conflict_pairs", pairs)
    rows = child_rows("DRUG", "k.primaryid, k.quarter, c.drug_seq_int AS drug_seq, "
                              "upper(trim(c.role_cod)) AS role_cod, c.drugname, c.prod_ai")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE name_conflicts AS
        SELECT r.report_id, r.primaryid, r.quarter, r.drug_seq, r.role_cod, r.drugname, r.prod_ai,
               p.substance_from_drugname, p.substance_from_prod_ai, p.chosen, p.chosen_from, p.reason
        FROM ({rows}) r JOIN conflict_pairs p
          ON p.drugname IS NOT DISTINCT FROM r.drugname AND p.prod_ai IS NOT DISTINCT FROM r.prod_ai
        WHERE {counted.replace("report_id", "r.report_id") if pairs.num_rows else "false"}""")
    con.unregister("conflict_pairs")


PAIR_SCHEMA = pa.schema([("drugname", pa.string()), ("prod_ai", pa.string()), ("pair_id", pa.int32()),
                         ("ing_id", pa.int32()), ("rank", pa.int8())])


def learn_pairs(pairs: list[tuple[str, str, int]], min_share: float = 0.9, min_rows: int = 2) -> dict[str, str]:
    """Normalised drugname -> normalised prod_ai where FDA paired that name with one prod_ai in >= 90 % of >= 2
    rows (FAERS-B rows carry both), so a legacy row naming XOLAIR gets OMALIZUMAB like its FAERS-B twins.
    ``pairs`` = (normalised drugname, normalised non-blank prod_ai, rows)."""
    counts: dict[str, dict[str, int]] = {}
    for name, prod, n in pairs:
        by = counts.setdefault(name, {})
        by[prod] = by.get(prod, 0) + n
    learned = {}
    for name, by in counts.items():
        total = sum(by.values())
        best = min(by.items(), key=lambda kv: (-kv[1], kv[0]))
        if total >= min_rows and best[1] >= min_share * total:
            learned[name] = best[0]
    return learned


def build_report_ingredients(con: duckdb.DuckDBPyConnection, config: Config, counted: str = "true") -> dict:
    """Create temp tables ``report_ingredients``, ``unmapped_drugs``, ``name_conflicts`` and ``family_pairs``;
    return counts.

    Needs the temp table ``kept`` (see :mod:`pipeline.curate.versions`). One GROUP BY gives the distinct raw
    (drugname, prod_ai) pairs; Python maps each distinct normalised text once; one join attaches the result.
    Every kept row is mapped and teaches the vocabulary; ``counted`` (SQL on ``report_id``) selects the reports
    that the counts, ``unmapped_drugs`` and ``name_conflicts`` describe (the final versions, when ``kept`` also
    holds superseded ones).
    """
    from pipeline.curate.versions import child_rows

    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE kdrug AS
        SELECT report_id, upper(trim(c.role_cod)) AS role_cod, c.drugname, c.prod_ai
        FROM ({child_rows('DRUG', 'c.role_cod, c.drugname, c.prod_ai')}) c""")
    raw_pairs = con.execute(f"SELECT drugname, prod_ai, count(*), count(*) FILTER (WHERE {counted}) FROM kdrug "
                            f"GROUP BY ALL").fetchall()
    norm_cache: dict[str, str] = {}

    def norm(text: str) -> str:
        out = norm_cache.get(text)
        if out is None:
            out = norm_cache[text] = normalise(text)
        return out

    matcher = Matcher(config)
    pairs = [(name, prod, norm(name), norm(prod), n) for name, prod, n, _ in raw_pairs]
    n_counted = [nc for *_, nc in raw_pairs]
    mapped_prod = {p: matcher.map_prod_ai(p) for p in sorted({p for *_, p, _ in pairs if p})}
    # known ingredients = everything prod_ai maps to, plus alias targets and the substance ingredients
    vocab = {i for items in mapped_prod.values() for i, _, _ in items}
    vocab |= {matcher.strip_salts(x) for _, v in config.aliases for x in v.split("\\")}
    vocab |= set(matcher.ingredient_of.values())
    matcher.vocabulary = frozenset(vocab)
    matcher.learned = learn_pairs([(nn, pn, n) for _, _, nn, pn, n in pairs if nn and pn])
    mapped_names = {nn: matcher.map_drugname(nn) for nn in sorted({nn for _, _, nn, pn, _ in pairs if nn and not pn})}
    # integer ids keep the big joins and aggregations off strings
    order = ("prod_ai", "drugname", "brand", "alias", "unmapped")
    ing_ids: dict[tuple[str, str | None], int] = {}
    cols: dict[str, list] = {f.name: [] for f in PAIR_SCHEMA}
    conflicts: dict[str, list] = {f.name: [] for f in CONFLICT_PAIR_SCHEMA}
    n_rows = n_unmapped = n_blank = 0
    for pair_id, ((name, prod, nn, pn, _), n) in enumerate(zip(pairs, n_counted)):
        n_rows += n
        items = mapped_prod[pn] if pn else mapped_names.get(nn, [])
        if matcher.read(nn) or any([s for _, s, _ in items]):  # rows naming no family substance need no rule
            items, res, p, d = matcher.resolve_row(nn, pn, items)
            if res.reason and n:
                for key, value in (("drugname", name), ("prod_ai", prod), ("substance_from_drugname", "+".join(d)),
                                   ("substance_from_prod_ai", "+".join(p)), ("chosen", "+".join(res.chosen)),
                                   ("chosen_from", res.side), ("reason", res.reason)):
                    conflicts[key].append(value or None if key.startswith(("substance", "chosen")) else value)
        if not items:
            n_blank += n
        elif not pn and any(m == "unmapped" for _, _, m in items):
            n_unmapped += n
        for ingredient, substance, matched_by in items:
            cols["drugname"].append(name)
            cols["prod_ai"].append(prod)
            cols["pair_id"].append(pair_id)
            cols["ing_id"].append(ing_ids.setdefault((ingredient, substance), len(ing_ids)))
            cols["rank"].append(order.index(matched_by))
    con.register("pair_map", pa.table(cols, schema=PAIR_SCHEMA))
    con.register("pair_names", pa.table({"pair_id": pa.array(range(len(pairs)), pa.int32()),
                                         "name_norm": pa.array([p[2] for p in pairs], pa.string())}))
    ings = sorted(ing_ids.items(), key=lambda kv: kv[1])
    con.register("ing_names", pa.table({"ing_id": pa.array([i for _, i in ings], pa.int32()),
                                        "ingredient": pa.array([k[0] for k, _ in ings], pa.string()),
                                        "substance": pa.array([k[1] for k, _ in ings], pa.string())}))
    con.register("match_names", pa.table({"rank": pa.array(range(len(order)), pa.int8()),
                                          "matched_by": pa.array(order, pa.string())}))
    roles = ", ".join("'" + r + "'" for r in config.exposure_roles)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE kdrug_mapped AS
        SELECT d.report_id, d.role_cod, m.pair_id, m.ing_id, m.rank
        FROM kdrug d JOIN pair_map m ON m.drugname = d.drugname AND m.prod_ai = d.prod_ai""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE report_ingredients AS
        SELECT k.report_id, i.ingredient, i.substance, k.role_cod, n.matched_by, k.role_cod IN ({roles}) AS is_exposure
        FROM (SELECT report_id, ing_id, role_cod, min(rank) AS rank FROM kdrug_mapped GROUP BY ALL) k
        JOIN ing_names i USING (ing_id) JOIN match_names n USING (rank)""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE unmapped_drugs AS
        SELECT p.name_norm AS drugname, count(*)::BIGINT AS n_rows, count(DISTINCT k.report_id)::BIGINT AS n_reports
        FROM kdrug_mapped k JOIN pair_names p USING (pair_id)
        WHERE k.rank = {order.index("unmapped")} AND {counted.replace("report_id", "k.report_id")}
        GROUP BY 1 ORDER BY n_reports DESC, n_rows DESC, drugname LIMIT {int(config.top_unmapped)}""")
    _conflict_rows(con, pa.table(conflicts, schema=CONFLICT_PAIR_SCHEMA), counted)
    # the family substance of each raw (drugname, prod_ai) pair, for the drug-row level tables of extras.py
    con.execute("""
        CREATE OR REPLACE TEMP TABLE family_pairs AS
        SELECT DISTINCT m.drugname, m.prod_ai, i.substance FROM pair_map m JOIN ing_names i USING (ing_id)
        WHERE i.substance IS NOT NULL""")
    by = dict(con.execute(f"SELECT n.matched_by, count(*) FROM kdrug_mapped JOIN match_names n USING (rank) "
                          f"WHERE {counted} GROUP BY 1").fetchall())
    con.execute("DROP TABLE kdrug")
    con.execute("DROP TABLE kdrug_mapped")
    for view in ("pair_map", "pair_names", "ing_names", "match_names"):
        con.unregister(view)
    return {"drug_rows": n_rows, "drug_rows_unmapped": n_unmapped, "drug_rows_blank": n_blank,
            "unmapped_share": (n_unmapped / n_rows) if n_rows else 0.0,
            "distinct_raw_pairs": sum(1 for n in n_counted if n), "distinct_prod_ai": len(mapped_prod),
            "distinct_drugnames_without_prod_ai": len(mapped_names), "learned_drugnames": len(matcher.learned),
            "name_conflicts": {"distinct_pairs": len(conflicts["reason"]),
                               "rows": con.execute("SELECT count(*) FROM name_conflicts").fetchone()[0]},
            "mapped_rows_by": {k: by.get(k, 0) for k in ("prod_ai", "drugname", "brand", "alias", "unmapped")}}
