"""``onset.parquet``: time to onset per (substance, PT group).

For each report counted in ``a``: onset days = DEMO ``event_dt`` - the earliest THER ``start_dt`` among the THER
rows linked (``dsg_drug_seq`` = ``drug_seq``) to that report's drug rows of the substance in the exposure roles,
both full, valid YYYYMMDD dates; a negative onset is excluded and counted. Median and quartiles (numpy's default
linear quantiles) of the kept onsets; Weibull shape and scale by maximum likelihood on onset + 1 day, with a 95 %
Wald interval for the shape on the log scale from the observed information.

Reading of the shape (Cornelius VR, Sauzet O, Evans SJW, Drug Saf 2012;35:599-610; Sauzet O et al., Drug Saf
2013;36:995-1006): upper limit < 1 = early failure (hazard falls with time on drug), lower limit > 1 = wear-out
(hazard rises), an interval holding 1 = constant (random) hazard.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import optimize, special

from pipeline.analyses.base import Base, sql_list
from pipeline.vocabulary import FAMILY

COLUMNS = ["substance", "pt_group", "n_reports", "n_with_onset", "n_negative_excluded", "median_days", "q1_days",
           "q3_days", "weibull_shape", "weibull_shape_lo", "weibull_shape_hi", "weibull_scale", "shape_reading"]


def weibull_mle(x, confidence_level: float = 0.95) -> tuple[float, float, float, float]:
    """Two-parameter Weibull (shape k, scale λ) by maximum likelihood; Wald interval for k on the log scale.

    The profile score in k, 1/k + mean(log x) - Σ x^k log x / Σ x^k = 0, is monotone and solved by Brent's
    method; λ = (mean x^k)^(1/k). The interval uses the inverse observed information of (k, λ) at the maximum.

    Parameters
    ----------
    x : array_like of float > 0
    confidence_level : float

    Returns
    -------
    shape, shape_lo, shape_hi, scale : float (NaN when fewer than two distinct values)

    References
    ----------
    Cohen AC. Maximum likelihood estimation in the Weibull distribution based on complete and on censored samples.
    Technometrics 1965;7:579-588.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2 or np.unique(x).size < 2 or np.any(x <= 0):
        return (math.nan,) * 4
    lx = np.log(x)
    m = lx.mean()

    def score(log_k):
        k = math.exp(log_k)
        w = k * (lx - lx.max())  # x^k scaled by max(x)^k: no overflow
        p = np.exp(w)
        return 1.0 / k + m - float((p * lx).sum() / p.sum())

    lo, hi = -10.0, 10.0
    log_k = optimize.brentq(score, lo, hi, xtol=1e-14, rtol=1e-14, maxiter=500)
    k = math.exp(log_k)
    # λ = (mean x^k)^(1/k), computed on the log scale
    log_lam = (special.logsumexp(k * lx) - math.log(x.size)) / k
    lam = math.exp(log_lam)
    n = x.size
    L = lx - log_lam
    z = np.exp(k * L)
    h_kk = -n / k ** 2 - float((z * L * L).sum())
    h_ll = n * k / lam ** 2 - (k / lam ** 2) * float(z.sum()) - (k ** 2 / lam ** 2) * float(z.sum())
    h_kl = -n / lam + (k / lam) * float((z * L).sum()) + float(z.sum()) / lam
    info = -np.array([[h_kk, h_kl], [h_kl, h_ll]])
    try:
        var_k = float(np.linalg.inv(info)[0, 0])
    except np.linalg.LinAlgError:
        var_k = math.nan
    zq = float(special.ndtri(0.5 + confidence_level / 2.0))
    se_log = math.sqrt(var_k) / k if var_k > 0 else math.nan
    return k, k * math.exp(-zq * se_log), k * math.exp(zq * se_log), lam


def reading(lo: float, hi: float) -> str | None:
    if math.isnan(lo) or math.isnan(hi):
        return None
    if hi < 1:
        return "early failure (hazard falls with time)"
    if lo > 1:
        return "wear-out (hazard rises with time)"
    return "random (constant hazard; interval holds 1)"


def onset_days(con, base: Base) -> pd.DataFrame:
    """One row per (drug, pt_group event, report in a) with ``onset`` days (NaN when a date is missing), ordered by
    drug, event and report."""
    if not base.has("report_substance_drugs", "report_therapies"):
        return pd.DataFrame(columns=["drug", "event", "report_id", "onset"])
    groups = [base.group_prefix + g for g in base.groups]
    return con.execute(f"""
        WITH a AS (SELECT x.drug, e.event, x.report_id FROM an_x x JOIN an_fev e USING (report_id)
                   WHERE e.event IN ({sql_list(groups)})),
             st AS (SELECT x.drug, x.report_id, min(t.start_date) AS start_date
                    FROM (SELECT DISTINCT drug, report_id FROM a) x
                    JOIN {base.read('report_substance_drugs')} s
                      ON s.report_id = x.report_id AND (x.drug = '{FAMILY}' OR s.substance = x.drug)
                         AND s.role_cod IN ({sql_list(base.roles)})
                    JOIN {base.read('report_therapies')} t ON t.report_id = s.report_id AND t.drug_seq = s.drug_seq
                    GROUP BY 1, 2)
        SELECT a.drug, a.event, a.report_id, date_diff('day', st.start_date, r.event_date)::DOUBLE AS onset
        FROM a JOIN an_rpt r USING (report_id) LEFT JOIN st USING (drug, report_id)
        ORDER BY a.drug, a.event, a.report_id""").df()  # in a fixed order: the Weibull fit's sums then are too


def onset(con, base: Base, config) -> tuple[pd.DataFrame, dict]:
    """The table and, per (substance, group), the kept onsets (for the plot)."""
    days = onset_days(con, base)
    rows, kept = [], {}
    for drug in base.drugs:
        for g in base.groups:
            sel = days[(days["drug"] == drug) & (days["event"] == base.group_prefix + g)] if len(days) else days
            o = sel["onset"].to_numpy(dtype=np.float64) if len(sel) else np.array([])
            valid = o[~np.isnan(o)]
            neg = int((valid < 0).sum())
            good = valid[valid >= 0]
            if good.size:
                q1, med, q3 = (float(v) for v in np.quantile(good, [0.25, 0.5, 0.75]))
            else:
                q1 = med = q3 = math.nan
            if good.size >= config.analyses.onset_min_reports:
                k, lo, hi, lam = weibull_mle(good + 1.0, base.confidence_level)
            else:
                k = lo = hi = lam = math.nan
            a = int(len(sel)) if len(days) else 0
            if a == 0:
                continue
            rows.append({"substance": drug, "pt_group": g, "n_reports": a, "n_with_onset": int(good.size),
                         "n_negative_excluded": neg, "median_days": med, "q1_days": q1, "q3_days": q3,
                         "weibull_shape": k, "weibull_shape_lo": lo, "weibull_shape_hi": hi, "weibull_scale": lam,
                         "shape_reading": reading(lo, hi)})
            kept[(drug, g)] = good
    return pd.DataFrame(rows, columns=COLUMNS), kept
