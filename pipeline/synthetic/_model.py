"""In-memory model of the synthetic FAERS database: contents, cases, shipments, deleted lists, truth.

Three levels, all numpy arrays:

* **content** - what a report says (patient, event date, drugs, PTs, outcomes ...). Cross-manufacturer
  duplicate cases share one content.
* **case** - a caseid with its reporter (mfr_sndr, mfr_num, occupation ...) and a content.
* **shipment** - one DEMO row: (case, version) shipped in a quarter. Follow-up versions land in later
  quarters; re-ships copy an older shipment into a later quarter (same primaryid).

Superseded versions (not the case's highest version) lack the content's last PT when it has more than one:
a pipeline that lets child rows of old versions leak into the kept case over-counts.

One module (longer than the others): the three levels index into each other's arrays.
"""

from __future__ import annotations

import numpy as np

from pipeline.quarters import Quarter
from pipeline.synthetic import _catalog as cat

EPOCH = np.datetime64("1970-01-01", "D")


def qstart(q: Quarter) -> int:
    return int((np.datetime64(f"{q.year}-{3 * (q.q - 1) + 1:02d}-01", "D") - EPOCH).astype(int))


def _choice(rng, n, p):
    return rng.choice(len(p), size=n, p=p).astype(np.int32) if n else np.zeros(0, np.int32)


def age_value(age_years: np.ndarray, cod: np.ndarray) -> np.ndarray:
    """The integer written in DEMO ``age`` for the unit ``cod`` (index into AGE_COD; 0 = blank -> 0)."""
    a0 = np.nan_to_num(age_years, nan=0.0)
    val = np.select([cod == 2, cod == 3, cod == 4], [a0 * 365.25, a0 * 12, np.maximum(a0 / 10, 1)], a0)
    return np.where(cod == 0, 0, val.astype(np.int64))


def _offsets(counts: np.ndarray) -> np.ndarray:
    off = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    return off


def expand(ids: np.ndarray, off: np.ndarray, cnt: np.ndarray):
    """For parent ids, the (row -> parent position, flat child index, position within parent) arrays."""
    n = cnt[ids].astype(np.int64)
    total = int(n.sum())
    rep = np.repeat(np.arange(len(ids), dtype=np.int64), n)
    starts = np.repeat(off[ids], n)
    first = np.repeat(np.cumsum(n) - n, n)
    pos = np.arange(total, dtype=np.int64) - first
    return rep, starts + pos, pos


class Model:
    """Plans the whole mirror. ``Model(quarters, n, seed).truth()`` is what a correct pipeline must find."""

    P_FOLLOWUP_CAP = 0.35
    P_RESHIP = 0.015
    #: exact duplicate DEMO rows (same line twice). Off by default: the raw GX suite treats a repeated DEMO
    #: primaryid within a quarter as critical. Child tables always carry a few exact duplicate rows.
    P_DEMO_DUP = 0.0
    P_CLONE = 0.004
    P_DELETE = 0.003

    #: with ``duplicate_variants``: share of new cases that are another company's report of an earlier patient
    P_CLONE_VARIANTS = 0.06

    def __init__(self, quarters: list[Quarter], reports_per_quarter, seed: int,
                 demo_duplicates: float | None = None, duplicate_variants: bool = False, caseid_floor: int = 0):
        self.caseid_floor = int(caseid_floor)
        if demo_duplicates is not None:
            self.P_DEMO_DUP = float(demo_duplicates)
        self.duplicate_variants = bool(duplicate_variants)
        if self.duplicate_variants:
            self.P_CLONE = self.P_CLONE_VARIANTS
        self.quarters = sorted(quarters)
        # an int, or {quarter label: DEMO rows} (real FDA volumes vary 30-fold across the history)
        if isinstance(reports_per_quarter, dict):
            self.N_q = [int(reports_per_quarter[str(q)]) for q in self.quarters]
        else:
            self.N_q = [int(reports_per_quarter)] * len(self.quarters)
        self.N = max(self.N_q)
        self.seed = int(seed)
        self.rng = np.random.default_rng([self.seed, 0x5EED])
        self.products = cat.Products()
        self.pts = cat.Pts()
        self._assoc_flat = self._association()
        self._build()

    def _association(self) -> np.ndarray:
        """Per-ingredient tilted background PT distributions (``cat.BACKGROUND_ASSOCIATION``), as one flat array
        of row-offset CDFs: row ``i`` (ingredient id; the last row = untilted) holds ``i + cdf_i``, so one
        ``searchsorted(flat, row + u)`` samples every draw at once. Depends on the seed only (own stream)."""
        A = cat.BACKGROUND_ASSOCIATION
        rng = np.random.default_rng([self.seed, 0xA550C])
        P, p = self.products, self.pts.bg_weight
        n_ing, n_pt = len(P.ingredient_names), self.pts.n_bg
        elevated = rng.random((n_ing, n_pt)) < A["p_elevated"]
        m = np.where(elevated, rng.gamma(A["elevated"]["shape"], 1 / A["elevated"]["rate"], (n_ing, n_pt)),
                     rng.gamma(A["usual"]["shape"], 1 / A["usual"]["rate"], (n_ing, n_pt)))
        m[np.unique(P.ingredient[P.substance >= 0])] = 1.0  # the ketamine family: no background tilt
        w = np.vstack([m, np.ones((1, n_pt))]) * p
        cdf = np.cumsum(w, axis=1)
        cdf /= cdf[:, -1:]
        cdf[:, -1] = 1.0
        return (cdf + np.arange(n_ing + 1)[:, None]).ravel()

    def _background_pts(self, base_c: np.ndarray, d_content: np.ndarray, d_prod: np.ndarray,
                        d_role: np.ndarray) -> np.ndarray:
        """One background PT per slot (content ``base_c``), drawn conditionally on a responsible suspect drug."""
        rng, P = self.rng, self.products
        n_pt = self.pts.n_bg
        n_rows = len(P.ingredient_names)
        susp = np.flatnonzero(d_role <= 1)  # drug rows are grouped by content, PS first
        s_content = d_content[susp]
        s_ing = np.where(P.substance[d_prod[susp]] >= 0, n_rows, P.ingredient[d_prod[susp]]).astype(np.int64)
        n_c = int(base_c.max()) + 1 if len(base_c) else 0
        k = np.bincount(s_content, minlength=n_c)[:n_c] if n_c else np.zeros(0, np.int64)
        off = _offsets(k)
        ps_first = np.zeros(n_c, bool)
        if n_c:
            first = off[:-1][k > 0]
            ps_first[k > 0] = d_role[susp[first]] == 0
        ks = k[base_c]
        u = rng.random(len(base_c))
        use_ps = (rng.random(len(base_c)) < cat.BACKGROUND_ASSOCIATION["p_responsible_ps"]) & ps_first[base_c]
        j = np.where(use_ps, 0, np.floor(u * ks).astype(np.int64))
        row = np.where(ks > 0, s_ing[np.minimum(off[base_c] + j, max(len(s_ing) - 1, 0))] if len(s_ing) else
                       n_rows, n_rows)
        v = rng.random(len(base_c))
        idx = np.searchsorted(self._assoc_flat, row + v, side="right") - row * n_pt
        return np.clip(idx, 0, n_pt - 1)

    # ----------------------------------------------------------------------------------------
    def _new_contents(self, qi: int, n: int, fda_first: np.ndarray):
        """n new contents for cases first received around ``fda_first`` (days). Returns dict of arrays."""
        rng, P = self.rng, self.products
        q = self.quarters[qi]
        c: dict[str, np.ndarray] = {}
        # event date before the first receipt; precision 57/14/10/19 % (real 2020Q3)
        c["ev_day"] = (fda_first - np.minimum(rng.exponential(150, n), 3000)).astype(np.int64)
        c["ev_prec"] = _choice(rng, n, np.array([0.19, 0.10, 0.14, 0.57]))
        ages = np.where(rng.random(n) < 0.08, rng.uniform(0, 18, n), np.clip(rng.normal(56, 18, n), 18, 99))
        cod = _choice(rng, n, np.array([0.15, 0.80, 0.02, 0.01, 0.02]))
        cod = np.where((cod == 3) & (ages >= 3), 1, cod)           # months only for small children
        cod = np.where((cod == 4) & (ages < 20), 1, cod)           # decades only for adults
        c["age_years"] = np.where(cod == 0, np.nan, ages)
        c["age_cod"] = cod
        sv, sp = cat.probs(cat.SEX)
        c["sex"] = _choice(rng, n, sp)
        c["country"] = _choice(rng, n, cat.COUNTRY_WEIGHT / cat.COUNTRY_WEIGHT.sum())
        c["wt"] = np.where(rng.random(n) < 0.35, rng.integers(40, 120, n), 0)

        # ---- drugs: 1 + geometric, first row PS; ketamine-family injection; traps
        nd = np.minimum(rng.geometric(0.24, n), 30)
        nd[rng.random(n) < 0.003] = 0
        u = rng.random(n)
        esk_rate = 0.004 if q >= Quarter(2019, 1) else 0.0004
        rates = [esk_rate, 0.003, 0.004, 0.0003 if q >= Quarter(2018, 1) else 0.0, 0.00012]
        # kind: 0 none, 1 esketamine suspect, 2 ketamine suspect, 3 ketamine concomitant, 4 arketamine, 5 nor
        edges = np.cumsum(rates)
        kind = np.where(u < edges[-1], np.searchsorted(edges, u, side="right") + 1, 0).astype(np.int8)
        as_ps = rng.random(n) < np.select([kind == 1, kind == 2, kind == 4, kind == 5], [0.75, 0.4, 0.6, 0.5], 0.0)
        appended = (kind > 0) & ~as_ps
        nd = np.where((kind > 0) & (nd == 0), 1, nd)
        trap = rng.random(n) < 0.006
        nd_tot = nd + appended + trap
        off = _offsets(nd_tot)
        total = int(off[-1])
        d_content = np.repeat(np.arange(n, dtype=np.int64), nd_tot)
        d_pos = np.arange(total, dtype=np.int64) - np.repeat(off[:-1], nd_tot)
        bg_ids, bg_p = P.ids("bg")
        d_prod = bg_ids[_choice(rng, total, bg_p)]
        rv = rng.random(total)
        d_role = np.where(rv < 0.42, 1, np.where(rv < 0.985, 2, 3)).astype(np.int8)
        d_role[d_pos == 0] = 0
        # injected family rows
        sub_pick = {1: ("esketamine", cat.ESKETAMINE_EARLY if q < Quarter(2019, 1) else None),
                    2: ("ketamine", None), 3: ("ketamine", None), 4: ("arketamine", None),
                    5: ("norketamine", None)}
        trap_row = off[1:][trap] - 1
        fam_row = np.where(as_ps, off[:-1], off[1:] - 1 - trap)
        for k, (name, only) in sub_pick.items():
            sel = np.flatnonzero(kind == k)
            if not len(sel):
                continue
            ids, p = P.ids(name, only)
            rows = fam_row[sel]
            d_prod[rows] = ids[_choice(rng, len(rows), p)]
            if k == 3:
                d_role[rows] = 2
            else:
                # a second PS is not allowed: appended suspects are SS
                d_role[rows] = np.where(as_ps[sel], 0, 1)
        if len(trap_row):
            ids, p = P.ids("trap")
            d_prod[trap_row] = ids[_choice(rng, len(trap_row), p)]
            d_role[trap_row] = np.where(rng.random(len(trap_row)) < 0.5, 1, 2)
        routes = _choice(rng, total, cat.probs(cat.ROUTES)[1])
        nasal = cat.probs(cat.ROUTES)[0].index("Nasal")
        iv = cat.probs(cat.ROUTES)[0].index("Intravenous (not otherwise specified)")
        psub = P.substance[d_prod]
        routes = np.where(psub == 1, nasal, np.where(psub == 0, iv, routes)).astype(np.int8)
        drug = {
            "content": d_content, "prod": d_prod.astype(np.int32), "role": d_role, "route": routes,
            "form": _choice(rng, total, cat.probs(cat.FORMS)[1]).astype(np.int8),
            "unit": _choice(rng, total, cat.probs(cat.UNITS)[1]).astype(np.int8),
            "freq": _choice(rng, total, cat.probs(cat.FREQS)[1]).astype(np.int8),
            "dechal": _choice(rng, total, cat.probs(cat.DECHAL)[1]).astype(np.int8),
            "rechal": _choice(rng, total, cat.probs(cat.RECHAL)[1]).astype(np.int8),
            "amt": np.where(rng.random(total) < 0.5, rng.choice([1, 2, 5, 10, 20, 25, 40, 50, 56, 84, 100, 200,
                                                                  250, 500, 1000], total), 0).astype(np.int32),
            "dose_kind": _choice(rng, total, np.array([0.4, 0.25, 0.35])).astype(np.int8),
            "ther": (rng.random(total) < 0.35),
            "ther_start": (fda_first[d_content] - rng.integers(0, 2000, total)).astype(np.int64),
            "ther_len": np.where(rng.random(total) < 0.5, rng.integers(1, 400, total), -1).astype(np.int64),
            "ther_prec": _choice(rng, total, np.array([0.55, 0.25, 0.20])).astype(np.int8),
            "indi": (rng.random(total) < 0.6),
            "indi_pt": np.zeros(total, np.int32),
        }
        # indications (indexes into self.indi_names)
        ivals, ip = self._indi_bg
        drug["indi_pt"] = np.asarray(ivals)[_choice(rng, total, ip)]
        for s, key in ((0, "ketamine"), (1, "esketamine"), (2, "arketamine"), (3, "norketamine")):
            sel = np.flatnonzero(psub == s)
            if not len(sel):
                continue
            if s == 0:
                conc = d_role[sel] == 2
                for kk, ss in (("ketamine", sel[~conc]), ("ketamine_c", sel[conc])):
                    vals, pp = self._indi_sub[kk]
                    drug["indi_pt"][ss] = np.asarray(vals)[_choice(rng, len(ss), pp)]
                    drug["indi"][ss] = True
            else:
                vals, pp = self._indi_sub[key]
                drug["indi_pt"][sel] = np.asarray(vals)[_choice(rng, len(sel), pp)]
                drug["indi"][sel] = True

        # ---- exposures (PS/SS) per content for the injected effects
        suspect = d_role <= 1
        expo = np.zeros((n, 4), dtype=bool)
        fam = (psub >= 0) & suspect
        expo[d_content[fam], psub[fam]] = True

        # ---- PTs: background Zipf-like, tilted by a responsible suspect ingredient's multipliers
        # (cat.BACKGROUND_ASSOCIATION), then focus PTs at base rate x multiplier
        npt = np.minimum(rng.geometric(0.3, n), 25)
        npt[rng.random(n) < 0.005] = 0
        base_c = np.repeat(np.arange(n, dtype=np.int64), npt)
        base_p = self._background_pts(base_c, d_content, d_prod, d_role)
        fnames = list(cat.FOCUS_BASE)
        prob = np.tile(np.array([cat.FOCUS_BASE[f] for f in fnames]), (n, 1))
        for s, sname in enumerate(cat.SUBSTANCES):
            mult = np.array([cat.MULTIPLIERS[sname].get(f, 1.0) for f in fnames])
            rows = np.flatnonzero(expo[:, s])
            if len(rows):
                prob[rows] = np.maximum(prob[rows], np.minimum(cat.FOCUS_CAP, prob[rows] * mult))
        hit = rng.random(prob.shape) < prob
        hit[npt == 0] = False  # reports without PTs stay without
        fc, fk = np.nonzero(hit)
        foc_p = self.pts.focus[fk]
        allc = np.concatenate([base_c, fc.astype(np.int64)])
        allp = np.concatenate([base_p, foc_p]).astype(np.int64)
        stage = np.concatenate([np.zeros(len(base_c), np.int8), np.ones(len(fc), np.int8)])
        seq = np.arange(len(allc))
        order = np.lexsort((seq, stage, allc))
        allc, allp = allc[order], allp[order]
        key = allc * len(self.pts.names) + allp
        _, first = np.unique(key, return_index=True)
        keep = np.sort(first)
        pt = {"content": allc[keep], "pt": allp[keep].astype(np.int32)}

        # ---- OUTC (0-2 distinct codes), RPSR (5 %)
        no = _choice(rng, n, np.array([0.30, 0.55, 0.15]))
        oc = np.repeat(np.arange(n, dtype=np.int64), no)
        ocode = _choice(rng, len(oc), cat.probs(cat.OUTC)[1])
        dup = np.r_[False, (oc[1:] == oc[:-1]) & (ocode[1:] == ocode[:-1])]
        outc = {"content": oc[~dup], "code": ocode[~dup].astype(np.int8)}
        has_r = np.flatnonzero(rng.random(n) < 0.05)
        rpsr = {"content": has_r.astype(np.int64), "code": _choice(rng, len(has_r), cat.probs(cat.RPSR)[1])}
        return c, drug, pt, outc, rpsr, expo

    # ----------------------------------------------------------------------------------------
    def _build(self) -> None:
        rng, N, Q = self.rng, self.N, self.quarters
        nq = len(Q)
        ind_names = sorted({p for p, _ in cat.INDICATIONS_BG} | {p for v in cat.INDICATIONS_SUB.values() for p, _ in v})
        self.indi_names = ind_names
        iidx = {p: i for i, p in enumerate(ind_names)}
        bv, bp = cat.probs(cat.INDICATIONS_BG)
        self._indi_bg = ([iidx[p] for p in bv], bp)
        self._indi_sub = {k: ([iidx[p] for p in cat.probs(v)[0]], cat.probs(v)[1])
                          for k, v in cat.INDICATIONS_SUB.items()}

        content_batches, case_batches, ship_batches = [], [], []
        n_content = 0
        n_case = 0
        sched: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(nq)]
        next_caseid = self.caseid_floor  # above another mirror's caseids when mirrors are written in segments
        ships_so_far = []  # list of dicts for re-ship candidates
        self.demo_dups: list[np.ndarray] = []
        special = None
        for qi, q in enumerate(Q):
            N = self.N_q[qi]
            q0 = qstart(q)
            qlen = qstart(q.next()) - q0
            # ---- follow-ups scheduled for this quarter
            if sched[qi]:
                f_case = np.concatenate([a for a, _ in sched[qi]])
                f_ver = np.concatenate([b for _, b in sched[qi]])
            else:
                f_case = np.zeros(0, np.int64)
                f_ver = np.zeros(0, np.int64)
            cap = int(self.P_FOLLOWUP_CAP * N)
            if len(f_case) > cap:
                keep = np.sort(rng.choice(len(f_case), cap, replace=False))
                if special is not None:  # the 9 -> 24 case always survives
                    keep = np.union1d(keep, np.flatnonzero(f_case == special))
                f_case, f_ver = f_case[keep], f_ver[keep]
            # ---- re-ships of earlier shipments (same schema family)
            n_re = int(round(self.P_RESHIP * N)) if qi else 0
            re_idx = np.zeros(0, np.int64)
            if n_re and ships_so_far:
                prev = {k: np.concatenate([s[k] for s in ships_so_far]) for k in ("gid", "case", "laers", "orig")}
                cand = np.flatnonzero((prev["laers"] == (q.era == "laers")) & (prev["orig"] == prev["gid"])
                                      & ~np.isin(prev["case"], f_case))
                if len(cand):
                    re_idx = prev["gid"][np.sort(rng.choice(cand, min(n_re, len(cand)), replace=False))]
            n_dup = int(round(self.P_DEMO_DUP * N))
            n_new = max(N - len(f_case) - len(re_idx) - n_dup, 1)
            # ---- new cases: contents + clones (cross-manufacturer duplicates)
            n_clone_src = int(self.P_CLONE * n_new / 1.3)
            clones_per = np.where(rng.random(n_clone_src) < 0.3, 2, 1)
            n_clone = int(clones_per.sum())
            while n_new - n_clone < max(n_clone_src, 1) and n_clone_src:
                n_clone_src -= 1
                clones_per = clones_per[:n_clone_src]
                n_clone = int(clones_per.sum())
            n_cont = n_new - n_clone
            fda_new = q0 + rng.integers(0, qlen, n_new)
            v0 = np.where(rng.random(n_new) < 0.88, 1, rng.integers(2, 5, n_new))
            init_fda = np.where(v0 == 1, fda_new, fda_new - rng.integers(200, 2000, n_new))
            c, drug, pt, outc, rpsr, expo = self._new_contents(qi, n_cont, init_fda[:n_cont])
            # clone sources: full event date, age, sex M/F, a named country; half of them exposed if possible
            elig = np.flatnonzero((c["ev_prec"] == 3) & (c["age_cod"] == 1) & (c["sex"] <= 1)
                                  & (c["country"] < len(cat.COUNTRY_CODES) - 1)
                                  & np.isin(np.arange(n_cont), drug["content"])
                                  & np.isin(np.arange(n_cont), pt["content"]))
            srcs = np.zeros(0, np.int64)
            if n_clone_src and len(elig):
                exposed = elig[expo[elig].any(axis=1)]
                k_exp = min(len(exposed), max(1, n_clone_src // 4)) if len(exposed) else 0
                pick_e = rng.choice(exposed, k_exp, replace=False) if k_exp else np.zeros(0, np.int64)
                rest = np.setdiff1d(elig, pick_e)
                pick_r = rng.choice(rest, min(len(rest), n_clone_src - k_exp), replace=False)
                srcs = np.concatenate([pick_e, pick_r]).astype(np.int64)
                clones_per = clones_per[:len(srcs)]
            clone_content = np.repeat(srcs, clones_per)
            n_clone = len(clone_content)
            n_new = n_cont + n_clone
            fda_new, v0, init_fda = fda_new[:n_new], v0[:n_new], init_fda[:n_new]
            case_content = np.concatenate([np.arange(n_cont, dtype=np.int64), clone_content]) + n_content
            # clones: same content, reported within days of the source by another manufacturer, version 1
            is_clone = np.r_[np.zeros(n_cont, bool), np.ones(n_clone, bool)]
            v0[is_clone] = 1
            src_pos = np.r_[np.zeros(n_cont, np.int64), clone_content]
            fda_new[is_clone] = np.minimum(fda_new[src_pos[is_clone]] + rng.integers(1, 25, n_clone), q0 + qlen - 1)
            init_fda[is_clone] = fda_new[is_clone]
            v0[srcs] = 1
            init_fda[srcs] = fda_new[srcs]
            # caseids: increasing with time, small random gaps
            i = q.index - Quarter(2004, 1).index
            base = 4_000_000 + i * 125_000 if q.era == "laers" else 8_300_000 + (i - 35) * 300_000
            start = max(base, next_caseid)
            caseid = start + np.cumsum(rng.integers(1, 4, n_new))
            # shuffle so that clones are not adjacent to their source by caseid
            caseid = caseid[rng.permutation(n_new)]
            next_caseid = int(caseid.max()) + 1
            mfr = _choice(rng, n_new, cat.MFR_WEIGHT / cat.MFR_WEIGHT.sum())
            if n_clone:  # clones come from another manufacturer than the source
                src_m = mfr[src_pos[is_clone]]
                alt = (src_m + 1 + rng.integers(0, len(cat.MFR) - 1, n_clone)) % len(cat.MFR)
                mfr[is_clone] = alt
                # a second clone of the same source must differ from the first clone too
                cc = np.flatnonzero(is_clone)
                for a, b in zip(cc[:-1], cc[1:]):
                    if src_pos[a] == src_pos[b] and mfr[a] == mfr[b]:
                        mfr[b] = (mfr[b] + 1) % len(cat.MFR)
                        if mfr[b] == mfr[src_pos[b]]:
                            mfr[b] = (mfr[b] + 1) % len(cat.MFR)
            rv, rp = cat.probs(cat.REPT)
            rng.integers(0, 10**6, n_new)  # the former control-number draw: kept, so every later draw is unchanged
            cases = {
                "caseid": caseid.astype(np.int64), "content": case_content, "mfr": mfr.astype(np.int16),
                # a company's control number is unique to its case (random ones collided at millions of cases)
                "mfr_seq": caseid.astype(np.int64), "occp": _choice(rng, n_new, cat.probs(cat.OCCP_FAERS)[1]),
                "rept": _choice(rng, n_new, rp), "lit": rng.random(n_new) < 0.02, "init_fda": init_fda,
                "birth": np.full(n_new, qi, np.int32), "clone": is_clone,
                "src_case": np.where(is_clone, src_pos + n_case, -1),
            }
            # ---- follow-up schedule (none for duplicate-group members)
            n_extra = np.where(rng.random(n_new) < 0.7, 0, np.minimum(rng.geometric(0.55, n_new), 6))
            n_extra[is_clone] = 0
            n_extra[srcs] = 0
            if special is None and q.era != "laers" and qi + 1 < nq:
                # the string-sort trap: versions 9 and 24 of one case in two quarters
                j = 0 if 0 not in srcs else int(np.setdiff1d(np.arange(n_cont), srcs)[0])
                v0[j] = 9
                n_extra[j] = 0
                special = n_case + j
                sched[qi + 1].append((np.array([special], np.int64), np.array([24], np.int64)))
            ec = np.repeat(np.arange(n_new, dtype=np.int64), n_extra)
            if len(ec):
                gaps = rng.geometric(0.6, len(ec))
                inc = np.where(rng.random(len(ec)) < 0.03, rng.integers(8, 30, len(ec)), rng.geometric(0.6, len(ec)))
                first = np.r_[True, ec[1:] != ec[:-1]]
                grp = np.cumsum(first) - 1
                gstart = np.flatnonzero(first)
                cg = np.cumsum(gaps)
                ci = np.cumsum(inc)
                qq = qi + cg - np.r_[0, cg][gstart][grp]
                vv = v0[ec] + ci - np.r_[0, ci][gstart][grp]
                ok = qq < nq
                for t in np.unique(qq[ok]):
                    m = ok & (qq == t)
                    sched[int(t)].append((ec[m] + n_case, vv[m].astype(np.int64)))
            # ---- this quarter's shipments
            s_case = np.concatenate([np.arange(n_new, dtype=np.int64) + n_case, f_case])
            s_ver = np.concatenate([v0.astype(np.int64), f_ver])
            s_fda = np.concatenate([fda_new, q0 + rng.integers(0, qlen, len(f_case))]).astype(np.int64)
            gid0 = sum(len(s["gid"]) for s in ships_so_far)
            ships = {
                "case": s_case, "ver": s_ver, "fda": s_fda,
                "mfr_lag": rng.integers(0, 20, len(s_case)), "qi": np.full(len(s_case), qi, np.int32),
                "laers": np.full(len(s_case), q.era == "laers"),
            }
            ships["gid"] = np.arange(len(s_case), dtype=np.int64) + gid0
            ships["orig"] = ships["gid"].copy()
            if len(re_idx):
                prev_all = {k: np.concatenate([s[k] for s in ships_so_far]) for k in ("case", "ver", "fda", "mfr_lag")}
                ships = {
                    "case": np.concatenate([ships["case"], prev_all["case"][re_idx]]),
                    "ver": np.concatenate([ships["ver"], prev_all["ver"][re_idx]]),
                    "fda": np.concatenate([ships["fda"], prev_all["fda"][re_idx]]),
                    "mfr_lag": np.concatenate([ships["mfr_lag"], prev_all["mfr_lag"][re_idx]]),
                    "qi": np.full(len(s_case) + len(re_idx), qi, np.int32),
                    "laers": np.full(len(s_case) + len(re_idx), q.era == "laers"),
                    "gid": np.arange(len(s_case) + len(re_idx), dtype=np.int64) + gid0,
                    "orig": np.concatenate([ships["gid"], re_idx]),
                }
            ships_so_far.append(ships)
            # exact duplicate DEMO rows: positions (within this quarter's shipments) written twice
            self.demo_dups.append(np.sort(rng.choice(len(ships["gid"]), min(n_dup, len(ships["gid"])),
                                                     replace=False)))
            content_batches.append((c, drug, pt, outc, rpsr))
            case_batches.append(cases)
            n_content += n_cont
            n_case += n_new
        self.special_case = special
        self._concat(content_batches, case_batches, ships_so_far)
        self._plan_deleted()
        if self.duplicate_variants:
            self._vary_clones()

    # ----------------------------------------------------------------------------------------
    def _vary_clones(self) -> None:
        """Give every clone its own content: a copy of its source's as another company would report it.

        Per clone, independently: age missing (35 %) or given in days (10 %) or a year off (10 %); sex missing
        (25 %); event date blank (15 %), to the month (15 %) or year (5 %) only, else off by 1-5 days (20 %); country
        not specified (10 %); weight dropped (50 %); one PT dropped (25 %, when it has several) and one added (25 %);
        each drug row under another product name of the same ingredient (50 %); a concomitant row dropped (10 %).
        The source keeps its content, so the members of a group differ from each other in different ways.
        """
        rng = np.random.default_rng([self.seed, 0xD0B1E])
        C = self.case
        clones = np.flatnonzero(C["clone"])
        n = len(clones)
        if not n:
            return
        src = C["content"][clones]
        new = self.n_content + np.arange(n, dtype=np.int64)
        ct = {k: v[src].copy() for k, v in self.content.items()}
        u = lambda: rng.random(n)  # noqa: E731
        drop_age = u() < 0.35
        days = ~drop_age & (u() < 0.10 / 0.65) & (ct["age_cod"] > 0)
        off_year = ~drop_age & ~days & (u() < 0.10 / 0.55) & (ct["age_cod"] == 1)
        ct["age_years"] = np.where(drop_age, np.nan, ct["age_years"] + np.where(off_year, rng.choice([-1, 1], n), 0))
        ct["age_cod"] = np.where(drop_age, 0, np.where(days, 2, ct["age_cod"]))
        ct["sex"] = np.where(u() < 0.25, 2, ct["sex"])
        r = u()
        prec = ct["ev_prec"]
        ct["ev_prec"] = np.select([r < 0.15, r < 0.30, r < 0.35], [0, np.minimum(prec, 2), np.minimum(prec, 1)], prec)
        shift = (r >= 0.35) & (u() < 0.2)
        ct["ev_day"] = ct["ev_day"] + np.where(shift, rng.integers(1, 6, n) * rng.choice([-1, 1], n), 0)
        ct["country"] = np.where(u() < 0.10, len(cat.COUNTRY_CODES) - 1, ct["country"])
        ct["wt"] = np.where(u() < 0.5, 0, ct["wt"])
        # children: copies of the source's rows, then varied
        kids = {}
        for name in ("drug", "pt", "outc", "rpsr"):
            off, cnt, table = getattr(self, name + "_off"), getattr(self, name + "_cnt"), getattr(self, name)
            rep, flat, _ = expand(src, off, cnt)
            rows = {k: v[flat].copy() for k, v in table.items()}
            rows["content"] = new[rep]
            kids[name] = (rows, rep)
        d, drep = kids["drug"]
        P = self.products
        for i in np.flatnonzero(rng.random(len(d["prod"])) < 0.5):
            same = np.flatnonzero((P.ingredient == P.ingredient[d["prod"][i]]) & (P.substance == P.substance[d["prod"][i]]))
            d["prod"][i] = rng.choice(same)
        conc = np.flatnonzero(d["role"] == 2)
        drop_c = np.zeros(n, bool)
        drop_c[rng.random(n) < 0.10] = True
        keep = np.ones(len(d["prod"]), bool)
        first_conc = conc[np.r_[True, drep[conc][1:] != drep[conc][:-1]]] if len(conc) else conc
        keep[first_conc[drop_c[drep[first_conc]]]] = False
        kids["drug"] = ({k: v[keep] for k, v in d.items()}, drep[keep])
        pt, prep = kids["pt"]
        npt = np.bincount(prep, minlength=n)
        keep = np.ones(len(pt["pt"]), bool)
        last = np.cumsum(npt) - 1
        drop_pt = (rng.random(n) < 0.25) & (npt > 1)
        keep[last[drop_pt]] = False
        add = np.flatnonzero(rng.random(n) < 0.25)
        extra = rng.integers(0, len(self.pts.names), len(add))
        pt = {k: v[keep] for k, v in pt.items()}
        prep = prep[keep]
        have = set(zip(prep.tolist(), pt["pt"].tolist()))
        ok = np.array([(int(a), int(e)) not in have for a, e in zip(add, extra)], bool)
        add, extra = add[ok], extra[ok]
        pt = {"content": np.concatenate([pt["content"], new[add]]),
              "pt": np.concatenate([pt["pt"], extra.astype(pt["pt"].dtype)])}
        order = np.argsort(pt["content"], kind="stable")
        kids["pt"] = ({k: v[order] for k, v in pt.items()}, None)
        # append contents and rows (rows of the new contents come after all others: offsets stay sorted)
        for k in self.content:
            self.content[k] = np.concatenate([self.content[k], ct[k].astype(self.content[k].dtype)])
        self.n_content += n
        for name, (rows, _) in kids.items():
            table = getattr(self, name)
            merged = {k: np.concatenate([table[k], rows[k].astype(table[k].dtype)]) for k in table}
            cnt = np.bincount(merged["content"], minlength=self.n_content)
            setattr(self, name, merged)
            setattr(self, name + "_cnt", cnt)
            setattr(self, name + "_off", _offsets(cnt))
        C["content"] = C["content"].copy()
        C["content"][clones] = new

    # ----------------------------------------------------------------------------------------
    def _concat(self, content_batches, case_batches, ship_batches) -> None:
        cont: dict[str, np.ndarray] = {}
        kids = {"drug": [], "pt": [], "outc": [], "rpsr": []}
        shift = 0
        for c, drug, pt, outc, rpsr in content_batches:
            for k, v in c.items():
                cont.setdefault(k, []).append(v)
            for name, d in (("drug", drug), ("pt", pt), ("outc", outc), ("rpsr", rpsr)):
                d = dict(d)
                d["content"] = d["content"] + shift
                kids[name].append(d)
            shift += len(c["ev_day"])
        self.content = {k: np.concatenate(v) for k, v in cont.items()}
        self.n_content = shift
        for name, parts in kids.items():
            table = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            cnt = np.bincount(table["content"], minlength=shift)
            setattr(self, name, table)
            setattr(self, name + "_cnt", cnt)
            setattr(self, name + "_off", _offsets(cnt))
        self.case = {k: np.concatenate([b[k] for b in case_batches]) for k in case_batches[0]}
        self.ship = {k: np.concatenate([b[k] for b in ship_batches]) for k in ship_batches[0]}
        ncase = len(self.case["caseid"])
        # highest version per case; first shipment per case (for i_f_code and LAERS foll_seq)
        self.case_max_ver = np.zeros(ncase, np.int64)
        np.maximum.at(self.case_max_ver, self.ship["case"], self.ship["ver"])
        self.case_last_q = np.full(ncase, -1, np.int64)
        np.maximum.at(self.case_last_q, self.ship["case"], self.ship["qi"])
        self.case_min_ver = np.full(ncase, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(self.case_min_ver, self.ship["case"], self.ship["ver"])
        # LAERS ISR for every shipment (primaryid in the legacy era)
        self.ship["isr"] = 4_200_000 + self.ship["orig"] * 3 + 1
        self.ship["superseded"] = self.ship["ver"] < self.case_max_ver[self.ship["case"]]

    def primaryid(self, gid: np.ndarray) -> np.ndarray:
        """FAERS primaryid = caseid || caseversion as decimal strings (as an integer)."""
        cid = self.case["caseid"][self.ship["case"][gid]]
        v = self.ship["ver"][gid]
        digits = np.floor(np.log10(np.maximum(v, 1))).astype(np.int64) + 1
        return cid * (10 ** digits) + v

    # ----------------------------------------------------------------------------------------
    def _plan_deleted(self) -> None:
        """Deleted-case lists from 2019Q1 on (+ the one-off AllDeletedCases.txt of 2019Q1)."""
        rng = self.rng
        self.deleted: dict[int, np.ndarray] = {}
        self.deleted_all: np.ndarray | None = None
        ncase = len(self.case["caseid"])
        first_q = np.full(ncase, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(first_q, self.ship["case"], self.ship["qi"])
        protected = np.zeros(ncase, bool)
        if self.special_case is not None:
            protected[self.special_case] = True
        prev_list = np.zeros(0, np.int64)
        unknown_base = 3_000_000
        for qi, q in enumerate(self.quarters):
            if q < Quarter(2019, 1):
                continue
            cand = np.flatnonzero((self.case_last_q <= qi) & ~protected)
            k = min(len(cand), max(1, int(round(self.P_DELETE * self.N_q[qi]))))
            chosen = self.case["caseid"][rng.choice(cand, k, replace=False)] if k else np.zeros(0, np.int64)
            extra_dup = chosen[rng.random(len(chosen)) < 0.05]
            overlap = prev_list[:1]
            unknown = unknown_base + rng.integers(0, 900_000, 2)
            lst = np.concatenate([chosen, extra_dup, overlap, unknown]).astype(np.int64)
            lst = lst[rng.permutation(len(lst))]
            self.deleted[qi] = lst
            prev_list = chosen
            if q == Quarter(2019, 1):
                older = np.flatnonzero((self.case_last_q < qi) & ~protected)
                k2 = min(len(older), max(1, int(round(0.002 * len(older)))))
                back = self.case["caseid"][rng.choice(older, k2, replace=False)] if k2 else np.zeros(0, np.int64)
                # not a superset of the quarter's own list: a few of its caseids are missing
                part = chosen[: max(0, len(chosen) - max(1, len(chosen) // 10))]
                legacy_unknown = 1_000_000 + rng.integers(0, 2_000_000, 5)
                self.deleted_all = np.unique(np.concatenate([back, part, legacy_unknown]).astype(np.int64))

    def deleted_caseids(self) -> np.ndarray:
        parts = list(self.deleted.values()) + ([self.deleted_all] if self.deleted_all is not None else [])
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    # ----------------------------------------------------------------------------------------
    def truth(self) -> dict:
        """What a correct pipeline must find (computed from the model, not from the files)."""
        C, S = self.case, self.ship
        ncase = len(C["caseid"])
        # kept version per case: the original shipment carrying the highest version
        is_orig = S["orig"] == S["gid"]
        top = is_orig & ~S["superseded"]
        kept_ship = np.full(ncase, -1, np.int64)
        kept_ship[S["case"][top]] = S["gid"][top]
        shipped = kept_ship >= 0
        deleted_ids = self.deleted_caseids()
        deleted = np.isin(C["caseid"], deleted_ids)
        kept = shipped & ~deleted
        content = C["content"]
        has_drug = self.drug_cnt[content] > 0
        has_pt = self.pt_cnt[content] > 0
        cand = kept & has_drug & has_pt
        # duplicate groups: identical non-blank (event_dt, age, sex, country), drug set and PT set
        ct = self.content
        eligible = cand & (ct["ev_prec"][content] == 3) & (ct["age_cod"][content] > 0) \
            & (ct["sex"][content] <= 1) & (ct["country"][content] < len(cat.COUNTRY_CODES) - 1)
        # the kept row's quarter decides how the country is written (absent in LAERS before 2008Q1,
        # names before 2021Q4, codes after): rows only match when the written text matches
        kq = S["qi"][np.maximum(kept_ship, 0)]
        qs = self.quarters
        written = np.array([not (q.era == "laers" and q < cat.LAERS_COUNTRY_FROM) for q in qs])[kq]
        as_name = np.array([cat.country_names(q) for q in qs])[kq].astype(np.uint64)
        eligible &= written
        h = self._content_hash()
        idx = np.flatnonzero(eligible)
        keys = h[content[idx]] ^ (as_name[idx] * np.uint64(0x51ED27))
        order = np.argsort(keys, kind="stable")
        ks = keys[order]
        starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
        sizes = np.diff(np.r_[starts, len(ks)])
        groups = []
        excluded = np.zeros(ncase, bool)
        fda_kept = np.where(kept_ship >= 0, S["fda"][np.maximum(kept_ship, 0)], -1)
        for st, sz in zip(starts[sizes > 1], sizes[sizes > 1]):
            members = idx[order[st:st + sz]]
            best = max(members, key=lambda m: (fda_kept[m], C["caseid"][m]))
            excluded[members[members != best]] = True
            groups.append(sorted(int(C["caseid"][m]) for m in members))
        groups.sort()
        analysis = cand & ~excluded
        # every group of one patient (source + its clones) among the countable cases, however its members differ
        root = np.where(C["src_case"] >= 0, C["src_case"], np.arange(ncase))
        multi = np.bincount(root, minlength=ncase) > 1
        members = np.flatnonzero(cand & multi[root])
        patient_groups = {}
        for m in members:
            patient_groups.setdefault(int(root[m]), []).append(int(C["caseid"][m]))
        patient_groups = sorted(sorted(g) for g in patient_groups.values() if len(g) > 1)

        # substances (PS+SS) and PTs in the analysis population
        a_cases = np.flatnonzero(analysis)
        a_content = content[a_cases]
        rep, flat, _ = expand(a_content, self.drug_off, self.drug_cnt)
        sub = self.products.substance[self.drug["prod"][flat]]
        susp = self.drug["role"][flat] <= 1
        expo = np.zeros((len(a_cases), 4), bool)
        m = (sub >= 0) & susp
        expo[rep[m], sub[m]] = True
        prep, pflat, _ = expand(a_content, self.pt_off, self.pt_cnt)
        ptid = self.pt["pt"][pflat]
        names = self.pts.names
        group_of = {g: np.isin(np.arange(len(names)), [self.pts.index[p] for p in pts if p in self.pts.index])
                    for g, pts in cat.PT_GROUPS.items()}
        has_group = {g: np.bincount(prep[mask[ptid]], minlength=len(a_cases)) > 0 for g, mask in group_of.items()}

        def block(rows: np.ndarray) -> dict:
            sel = rows[prep]
            counts = np.bincount(ptid[sel], minlength=len(names))
            return {"reports": int(rows.sum()),
                    "pairs": {names[i]: int(counts[i]) for i in np.flatnonzero(counts)},
                    "pt_groups": {g: int((has_group[g] & rows).sum()) for g in cat.PT_GROUPS}}

        substances = {s: block(expo[:, i]) for i, s in enumerate(cat.SUBSTANCES)}
        substances["ketamine_family"] = block(expo.any(axis=1))
        n_total = len(a_cases)
        pt_totals = np.bincount(ptid, minlength=len(names))
        events = {p: int(pt_totals[self.pts.index[p]]) for p in cat.FOCUS_BASE}
        group_totals = {g: int(has_group[g].sum()) for g in cat.PT_GROUPS}
        prr = {}
        for s, b in substances.items():
            prr[s] = {}
            for g in cat.PT_GROUPS:
                a = b["pt_groups"][g]
                n_drug = b["reports"]
                c = group_totals[g] - a
                rest = n_total - n_drug
                prr[s][g] = round((a / n_drug) / (c / rest), 3) if a and n_drug and c and rest else None
            for p in ("Dissociation", "Sedation"):
                a = b["pairs"].get(p, 0)
                c = events[p] - a
                rest = n_total - b["reports"]
                prr[s][p] = round((a / b["reports"]) / (c / rest), 3) if a and c and rest else None
        # ketamine concomitant only (must not count under PS+SS)
        conc = (sub == 0) & (self.drug["role"][flat] == 2)
        conc_cases = np.zeros(len(a_cases), bool)
        conc_cases[rep[conc]] = True
        ship_pids = self._all_primaryids()
        return {
            "cases": {
                "demo_rows_total": None,  # filled by the writer (data lines incl. duplicates)
                "shipments": int(len(S["gid"])),
                "distinct_primaryids": int(len(np.unique(ship_pids))),
                "distinct_caseids": int(shipped.sum()),
                "deleted_caseids": int(len(deleted_ids)),
                "deleted_caseids_in_mirror": int((shipped & deleted).sum()),
                "kept_cases": int(kept.sum()),
                "kept_cases_with_drug_and_pt": int(cand.sum()),
                "duplicate_groups": groups,
                "duplicate_excluded": int(excluded.sum()),
                "analysis_population": int(n_total),
                "version_9_24_caseid": int(C["caseid"][self.special_case]) if self.special_case is not None else None,
                **({"patient_groups": patient_groups} if self.duplicate_variants else {}),
            },
            "substances": substances,
            "ketamine_concomitant_only_reports": int((conc_cases & ~expo[:, 0]).sum()),
            "events": events,
            "pt_group_totals": group_totals,
            "prr": prr,
        }

    def _content_hash(self) -> np.ndarray:
        """Order-free hash of (event_dt, age, sex, country, {(ingredient, role)}, {pt}) per content."""
        ct = self.content
        mix = np.uint64(0x9E3779B97F4A7C15)

        def h64(x: np.ndarray) -> np.ndarray:
            z = (x.astype(np.uint64) + mix)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            return z ^ (z >> np.uint64(31))

        with np.errstate(over="ignore"):
            n = self.n_content
            dkey = self.products.ingredient[self.drug["prod"]].astype(np.int64) * 8 + self.drug["role"]
            pair = np.unique(self.drug["content"] * 100_000 + dkey)
            dh = np.zeros(n, np.uint64)
            np.add.at(dh, pair // 100_000, h64(pair % 100_000 + 1))
            ph = np.zeros(n, np.uint64)
            np.add.at(ph, self.pt["content"], h64(self.pt["pt"].astype(np.int64) + 7_000_000))
            age = age_value(ct["age_years"], ct["age_cod"])
            demo = h64(ct["ev_day"] * 4 + ct["ev_prec"]) ^ h64(age * 8 + ct["age_cod"] + 10**7) \
                ^ h64(ct["sex"].astype(np.int64) + 2 * 10**7) ^ h64(ct["country"].astype(np.int64) + 3 * 10**7)
            return demo ^ h64(dh) ^ (h64(ph) * np.uint64(3))

    def _all_primaryids(self) -> np.ndarray:
        S = self.ship
        laers = S["laers"]
        pid = self.primaryid(S["gid"])
        # LAERS primaryid is the ISR (negative here to keep the two id spaces apart when counting)
        return np.where(laers, -S["isr"], pid)
