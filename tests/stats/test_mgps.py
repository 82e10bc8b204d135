"""MGPS: openEBGM likelihood unit values, gradient, lossless grouping, recovery, warnings, posterior."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, optimize, special, stats

from pipeline.stats import disproportionality, fit_mgps, posterior
from pipeline.stats.mgps import MgpsFit, MgpsPoints, _Data, _negll_grad, fit_points, group_points, neg_loglik

THETA = (0.125874, 0.13587, 1.24578, 3.01587, 0.05)
DAT_N = np.array([0] * 5 + [1] * 4 + [2] * 6 + [3] * 2)
DAT_E = np.arange(1, 18, dtype=float)
SQ_N = np.array([0] * 3 + [1] * 2 + [2] * 3 + [3] * 2)
SQ_E = np.arange(1, 11, dtype=float)
SQ_W = np.full(10, 0.1)


def test_openebgm_likelihood_unit_values():
    """openEBGM's likelihood unit values (testC_Likelihoods.R), abs 1e-8."""
    assert neg_loglik(THETA, DAT_N, DAT_E, likelihood="zero-inclusive") == pytest.approx(28.7087780397, abs=1e-8)
    assert neg_loglik(THETA, SQ_N, SQ_E, SQ_W, likelihood="zero-inclusive") == pytest.approx(1.4930241935,
                                                                                             abs=1e-8)
    k = DAT_N >= 2
    assert neg_loglik(THETA, DAT_N[k], DAT_E[k], likelihood="openebgm", n_star=2) == pytest.approx(
        15.4920073199, abs=1e-8)
    k = SQ_N >= 2
    assert neg_loglik(THETA, SQ_N[k], SQ_E[k], SQ_W[k], likelihood="openebgm", n_star=2) == pytest.approx(
        0.7683384817, abs=1e-8)


def _nb(n, e, a, b):
    return stats.nbinom.pmf(n, a, b / (b + e))


def test_conditional_likelihood_against_direct_formula():
    a1, b1, a2, b2, p = THETA
    for n_star in (1, 2):
        k = DAT_N >= n_star
        n, e = DAT_N[k], DAT_E[k]
        num = p * _nb(n, e, a1, b1) + (1 - p) * _nb(n, e, a2, b2)
        den = 1 - p * stats.nbinom.cdf(n_star - 1, a1, b1 / (b1 + e)) - (1 - p) * stats.nbinom.cdf(
            n_star - 1, a2, b2 / (b2 + e))
        want = -np.sum(np.log(num / den))
        assert neg_loglik(THETA, n, e, likelihood="conditional", n_star=n_star) == pytest.approx(want, rel=1e-12)
        # and the per-component truncation of the default option
        per = (p * _nb(n, e, a1, b1) / (1 - stats.nbinom.cdf(n_star - 1, a1, b1 / (b1 + e)))
               + (1 - p) * _nb(n, e, a2, b2) / (1 - stats.nbinom.cdf(n_star - 1, a2, b2 / (b2 + e))))
        assert neg_loglik(THETA, n, e, likelihood="openebgm", n_star=n_star) == pytest.approx(
            -np.sum(np.log(per)), rel=1e-12)


@pytest.mark.parametrize("likelihood, n_star", [("openebgm", 1), ("openebgm", 2), ("conditional", 1),
                                                ("conditional", 3), ("zero-inclusive", 0)])
def test_analytic_gradient(likelihood, n_star):
    k = DAT_N >= n_star
    d = _Data(DAT_N[k], DAT_E[k], np.ones(k.sum()), n_star)
    t = np.array(THETA)
    _, g = _negll_grad(t, d, likelihood)
    num = optimize.approx_fprime(t, lambda x: _negll_grad(x, d, likelihood)[0], 1e-7 * t)
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-5)


def test_lossless_grouping_on_caers(caers_counts):
    """1,723 points for (N, n_drug·n_event); grouped −logL equals the row-level one; zero cells via margins."""
    df = caers_counts.to_pandas()
    pts = group_points(caers_counts, "openebgm")
    assert len(pts) == 1723 and pts.w.sum() == 17_189
    e = df["n_drug"].to_numpy() * df["n_event"].to_numpy() / 3356
    theta = (0.2, 0.1, 2.0, 4.0, 1 / 3)
    grouped = neg_loglik(theta, pts.n, pts.e, pts.w)
    assert grouped == pytest.approx(neg_loglik(theta, df["a"].to_numpy(), e), rel=1e-11)
    z = group_points(caers_counts, "zero-inclusive")
    assert z.w.sum() == 2874 * 1328 == 3_816_672 and z.n_zero_cells == 3_816_672 - 17_189
    # brute force: every drug margin × every event margin, minus the non-zero pairs
    dm = df.drop_duplicates("drug")["n_drug"].to_numpy()
    em = df.drop_duplicates("event")["n_event"].to_numpy()
    e_all = np.multiply.outer(dm, em).ravel() / 3356
    nz = neg_loglik(theta, df["a"].to_numpy(), e, likelihood="zero-inclusive")
    zero_all = neg_loglik(theta, np.zeros(e_all.size), e_all, likelihood="zero-inclusive")
    zero_nz = neg_loglik(theta, np.zeros(e.size), e, likelihood="zero-inclusive")
    assert neg_loglik(theta, z.n, z.e, z.w, likelihood="zero-inclusive") == pytest.approx(
        nz + zero_all - zero_nz, rel=1e-10)


def test_caers_fit_converges_consistently(caers_counts):
    fit = fit_mgps(caers_counts)
    assert fit.converged and fit.likelihood == "openebgm" and fit.n_points == 1723
    d = fit.as_dict()
    for key in ("theta", "neg_loglik", "n_star", "likelihood", "n_points", "starts", "spread",
                "optimiser_messages", "warnings", "converged"):
        assert key in d
    assert len(d["starts"]) >= 4 and d["spread"]["n_converged"] >= 2
    import json

    json.dumps(d, allow_nan=False)  # manifests stay strict JSON
    # the accepted θ is at least as good as every start
    assert fit.neg_loglik <= min(s["neg_loglik"] for s in d["starts"]) + 1e-6


# --- recovery on tables simulated from the model ---------------------------------------------------------

TRUE = (0.5, 0.1, 3.0, 3.0, 0.2)


def grouped(n, e):
    g = pd.DataFrame({"n": n, "e": e}).groupby(["n", "e"]).size().reset_index()
    return MgpsPoints(g["n"].to_numpy(), g["e"].to_numpy(), g[0].to_numpy(np.float64), len(n), 0)


def simulate(theta, m, likelihood, seed):
    rng = np.random.default_rng(seed)
    a1, b1, a2, b2, p = theta
    e = np.exp(np.round(rng.normal(0.0, 1.2, m), 2))  # E on a grid, as margins make it: grouping pays
    comp = rng.random(m) < p
    shape = np.where(comp, a1, a2)
    rate = np.where(comp, b1, b2)

    def draw(idx):
        return rng.poisson(rng.gamma(shape[idx], 1.0 / rate[idx]) * e[idx])

    n = draw(np.arange(m))
    if likelihood == "openebgm":  # the model of the per-component truncation: each component truncated at 1
        zero = np.flatnonzero(n == 0)
        while zero.size:
            n[zero] = draw(zero)
            zero = zero[n[zero] == 0]
    elif likelihood == "conditional":
        keep = n >= 1
        n, e = n[keep], e[keep]
    return n, e


@pytest.mark.parametrize("likelihood", ["openebgm", "conditional", "zero-inclusive"])
def test_recovers_known_hyperparameters(likelihood):
    n, e = simulate(TRUE, 25_000, likelihood, seed=1)
    n_star = 0 if likelihood == "zero-inclusive" else 1
    fit = fit_points(grouped(n, e), likelihood, n_star)
    assert fit.converged, fit.warnings
    # the optimum is at least as good as the truth (compare fits by likelihood, not θ: the surface is flat)
    assert fit.neg_loglik <= neg_loglik(TRUE, n, e, likelihood=likelihood, n_star=max(n_star, 1) if
                                        likelihood != "zero-inclusive" else 0) + 1e-6
    t = np.array(fit.theta)
    if t[0] / t[1] < t[2] / t[3]:  # label switching: component 1 = the high-mean one, as in TRUE
        t = np.array([t[2], t[3], t[0], t[1], 1 - t[4]])
    assert t[4] == pytest.approx(TRUE[4], abs=0.08)
    assert t[0] / t[1] == pytest.approx(TRUE[0] / TRUE[1], rel=0.3)
    assert t[2] / t[3] == pytest.approx(TRUE[2] / TRUE[3], rel=0.15)
    # posterior EBGMs close to those under the true prior
    grid_n, grid_e = np.array([1, 2, 5, 10, 1, 3]), np.array([0.1, 0.5, 1.0, 2.0, 3.0, 0.05])
    np.testing.assert_allclose(posterior(fit.theta, grid_n, grid_e)["ebgm"],
                               posterior(TRUE, grid_n, grid_e)["ebgm"], rtol=0.15)


def test_no_overdispersion_warns():
    """Peer defect 8: a table with RR ≡ 1 must raise a boundary / no-over-dispersion warning."""
    rng = np.random.default_rng(5)
    e = np.exp(np.round(rng.normal(0, 1.2, 20_000), 2))
    n = rng.poisson(e)
    for likelihood in ("openebgm", "conditional"):
        k = n >= 1
        fit = fit_points(grouped(n[k], e[k]), likelihood, 1)
        assert any(w.startswith("boundary") for w in fit.warnings), fit.warnings
        assert fit.as_dict()["warnings"] == fit.warnings


def test_too_few_points_is_not_converged():
    fit = fit_points(MgpsPoints(np.array([1, 2]), np.array([0.5, 1.0]), np.ones(2), 2, 0))
    assert not fit.converged and np.isnan(fit.theta).all() and fit.warnings
    import json

    d = json.loads(json.dumps(fit.as_dict(), allow_nan=False))
    assert d["theta"]["alpha1"] is None and np.isnan(MgpsFit.from_dict(d).theta).all()


# --- posterior ----------------------------------------------------------------------------------------------

def _posterior_direct(theta, n, e):
    """EBGM and quantiles by direct numerical integration / root finding of the posterior mixture."""
    a1, b1, a2, b2, p = theta
    w1 = p * _nb(n, e, a1, b1)
    w2 = (1 - p) * _nb(n, e, a2, b2)
    q = w1 / (w1 + w2)
    s1, r1, s2, r2 = a1 + n, b1 + e, a2 + n, b2 + e

    def dens(x):
        return q * stats.gamma.pdf(x, s1, scale=1 / r1) + (1 - q) * stats.gamma.pdf(x, s2, scale=1 / r2)

    elog = integrate.quad(lambda x: np.log(x) * dens(x), 0, np.inf, limit=500, epsabs=1e-13, epsrel=1e-12)[0]

    def cdf(x):
        return q * special.gammainc(s1, r1 * x) + (1 - q) * special.gammainc(s2, r2 * x)

    qs = [optimize.brentq(lambda x: cdf(x) - pr, 1e-12, 1e6, xtol=1e-300, rtol=1e-15) for pr in (0.05, 0.95)]
    return np.exp(elog), qs[0], qs[1]


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("n, e", [(0, 0.3), (1, 0.01), (3, 0.2), (25, 0.171), (10, 5.0), (200, 98.4)])
def test_posterior_against_direct_integration(n, e):
    theta = (0.2041, 0.05816, 1.415, 1.838, 0.0969)
    post = posterior(theta, np.array([n]), np.array([e]))
    gm, q05, q95 = _posterior_direct(theta, n, e)
    assert post["ebgm"][0] == pytest.approx(gm, rel=1e-8)
    assert post["eb05"][0] == pytest.approx(q05, rel=1e-8)
    assert post["eb95"][0] == pytest.approx(q95, rel=1e-8)


def test_posterior_vectorised_quantiles_solve_the_cdf_equation():
    theta = (3.2559613, 0.39998968, 2.02375365, 1.90613502, 0.0653075)
    rng = np.random.default_rng(2)
    n = rng.integers(0, 60, 3000)
    e = np.exp(rng.normal(0, 2, 3000))
    post = posterior(theta, n, e)
    a1, b1, a2, b2, _ = theta
    for key, pr in (("eb05", 0.05), ("eb95", 0.95)):
        x = post[key]
        for eps in (1 - 2e-8, 1 + 2e-8):  # the root is bracketed within 2e-8 relative
            cdf = post["qn"] * special.gammainc(a1 + n, (b1 + e) * x * eps) + (1 - post["qn"]) * special.gammainc(
                a2 + n, (b2 + e) * x * eps)
            assert np.all((cdf - pr) * (1 if eps > 1 else -1) >= -1e-15)
    assert np.all(post["eb05"] < post["ebgm"]) and np.all(post["ebgm"] < post["eb95"])


def test_fit_reuse_on_other_tables(caers_counts):
    """Fit θ on the whole background, score another table with the same θ (what the report layer does)."""
    fit = fit_mgps(caers_counts)
    sub = caers_counts.to_pandas().query("drug == 'PREVAGEN'")
    rows, used = disproportionality(sub, mgps_fit=fit)
    assert used is fit
    e = sub["n_drug"].to_numpy() * sub["n_event"].to_numpy() / 3356
    np.testing.assert_array_equal(rows["ebgm"].to_numpy(), fit.posterior(sub["a"].to_numpy(), e)["ebgm"])
    assert MgpsFit.from_dict(fit.as_dict()).theta == fit.theta


def test_ebgm_published_whenever_theta_is_finite(caers_counts):
    """Start disagreement or an optimiser message is a warning: EBGM is still computed from the best likelihood.
    Only a prior that could not be fitted at all (NaN θ) leaves EBGM blank."""
    fit = fit_mgps(caers_counts)
    warned = MgpsFit(theta=fit.theta, loglik=fit.loglik, converged=False, agreement=False)
    rows, _ = disproportionality(caers_counts, mgps_fit=warned)
    assert rows[["ebgm", "eb05", "eb95"]].notna().all().all()
    none = MgpsFit(theta=(np.nan,) * 5, loglik=np.nan, converged=False)
    rows, _ = disproportionality(caers_counts, mgps_fit=none)
    assert rows[["ebgm", "eb05", "eb95"]].isna().all().all() and not rows["signal_ebgm"].any()
    assert rows["prr"].notna().all()


def test_each_likelihood_runs_on_caers(caers_counts):
    thetas = {}
    for lik in ("conditional", "zero-inclusive"):
        fit = fit_mgps(caers_counts, likelihood=lik)
        assert fit.likelihood == lik and np.isfinite(fit.loglik)
        thetas[lik] = fit.theta
    assert thetas["conditional"] != thetas["zero-inclusive"]


def test_staged_fit_matches_direct_fit(monkeypatch):
    """Above EXPLORE_MAX_POINTS the starts run on binned points and the best is refined on the exact ones: the
    result must equal a fit whose starts all run on the exact points."""
    import pipeline.stats.mgps as mgps

    rng = np.random.default_rng(8)
    m = 24_000
    e = np.exp(rng.normal(0, 1.2, m))  # continuous E: no two points share a key
    comp = rng.random(m) < TRUE[4]
    lam = np.where(comp, rng.gamma(TRUE[0], 1 / TRUE[1], m), rng.gamma(TRUE[2], 1 / TRUE[3], m))
    n = rng.poisson(lam * e)
    k = n >= 1
    pts = MgpsPoints(n[k], e[k], np.ones(k.sum()), int(k.sum()), 0)
    monkeypatch.setattr(mgps, "EXPLORE_MAX_POINTS", 1000)
    staged = fit_points(pts, "conditional", 1)
    assert staged.spread["staged"] and "binned" in staged.messages[0]
    monkeypatch.setattr(mgps, "EXPLORE_MAX_POINTS", 10**9)
    direct = fit_points(pts, "conditional", 1)
    assert not direct.spread["staged"]
    assert staged.converged and direct.converged
    assert staged.neg_loglik == pytest.approx(direct.neg_loglik, abs=1e-3)
    grid_n, grid_e = np.array([1, 2, 5, 10, 1, 3]), np.array([0.1, 0.5, 1.0, 2.0, 3.0, 0.05])
    np.testing.assert_allclose(posterior(staged.theta, grid_n, grid_e)["ebgm"],
                               posterior(direct.theta, grid_n, grid_e)["ebgm"], rtol=1e-3)


# --- mean-shape parametrisation, boundary fits, agreement -------------------------------------------------

def test_nb_logpmf_matches_scipy_and_tends_to_poisson():
    from pipeline.stats.mgps import nb_logpmf

    n = np.array([0, 1, 2, 5, 17, 60, 400])
    e = np.array([0.01, 0.3, 1.0, 2.5, 10.0, 55.0, 380.0])
    for alpha in (1e-3, 0.2, 3.0, 19.9, 20.1, 500.0):
        mu = 1.7
        want = stats.nbinom.logpmf(n, alpha, (alpha / mu) / (alpha / mu + e))
        np.testing.assert_allclose(nb_logpmf(n, alpha, mu, e), want, rtol=1e-11, atol=1e-11)
    pois = stats.poisson.logpmf(n, 1.7 * e)
    np.testing.assert_allclose(nb_logpmf(n, np.inf, 1.7, e), pois, rtol=1e-13)
    # on the way to the point mass: error ~ (n − m)²/(2α), never the cancellation of lgamma(α + n) − lgamma(α)
    for alpha in (1e8, 1e12, 1e15):
        got = nb_logpmf(n, alpha, 1.7, e)
        assert np.all(np.abs(got - pois) <= 1e-9 + ((n - 1.7 * e) ** 2 + n) / alpha)


@pytest.mark.parametrize("likelihood, n_star", [("openebgm", 1), ("openebgm", 2), ("conditional", 1),
                                                ("conditional", 3), ("zero-inclusive", 0)])
@pytest.mark.parametrize("x", [(-2.0, 0.3, 0.2, -0.5, 0.05), (0.5, 1.0, 25.0, 0.01, 0.3),
                               (-1.0, 2.0, 30.0, 0.0, 0.0), (-1.0, 2.0, 30.0, 0.0, 1.0)])
def test_gradient_in_mean_shape_space(likelihood, n_star, x):
    """Analytic gradient in x = (log α1, log μ1, log α2, log μ2, P), including a point-mass component (α2 = e^25,
    e^30) and P exactly 0 or 1 (one-sided differences there)."""
    from pipeline.stats.mgps import _negll_x

    k = DAT_N >= n_star
    d = _Data(DAT_N[k], DAT_E[k], np.ones(k.sum()), n_star)
    x = np.array(x)
    _, g = _negll_x(x, d, likelihood)
    # one-sided at P = 0 or 1, where the curvature in P is large: a smaller step
    h = np.array([1e-6, 1e-6, 1e-6, 1e-6, 1e-7 if 0 < x[4] < 1 else 1e-10])
    num = np.empty(5)
    for i in range(5):
        up, dn = x.copy(), x.copy()
        up[i] += h[i] if not (i == 4 and x[4] >= 1) else 0.0
        dn[i] -= h[i] if not (i == 4 and x[4] <= 0) else 0.0
        num[i] = (_negll_x(up, d, likelihood)[0] - _negll_x(dn, d, likelihood)[0]) / (up[i] - dn[i])
    np.testing.assert_allclose(g, num, rtol=2e-5, atol=2e-6)


def test_point_mass_boundary_fit_is_a_valid_answer():
    """Data from a prior whose second component IS a point mass at λ = 1 (95 % of pairs): the fit may sit on
    that boundary; either way it is published, every summary is finite and −log L is at least as good as the
    generating prior's."""
    truth = (0.5, 0.1, 1e12, 1e12, 0.05)
    n, e = simulate(truth, 30_000, "openebgm", seed=1)
    fit = fit_points(grouped(n, e), "openebgm", 1)
    assert fit.published and fit.agreement
    assert fit.neg_loglik <= neg_loglik(truth, n, e) + 1e-6
    post = posterior(fit.theta, n, e)
    for k in ("ebgm", "eb05", "eb95"):
        assert np.isfinite(post[k]).all()
    assert np.all(post["eb05"] <= post["eb95"])


def test_quiet_background_publishes_at_the_boundary():
    """RR ≡ 1 (no over-dispersion): the optimum is a point mass at λ ≈ 1, which is recorded as the boundary and
    in the warnings; EBGM/EB05 are finite for every pair, never blank."""
    rng = np.random.default_rng(5)
    e = np.exp(np.round(rng.normal(0, 1.2, 20_000), 2))
    n = rng.poisson(e)
    k = n >= 1
    fit = fit_points(grouped(n[k], e[k]), "openebgm", 1)
    assert fit.published and fit.boundary and any("point mass" in b for b in fit.boundary)
    d = fit.as_dict()
    assert d["boundary"] == fit.boundary and d["published"]
    post = posterior(fit.theta, n[k], e[k])
    assert np.isfinite(post["ebgm"]).all() and np.isfinite(post["eb05"]).all()
    # the point mass sits at λ ≈ 1, so every EBGM is close to 1
    assert np.all(np.abs(np.log(post["ebgm"])) < 0.2)


def test_agreement_is_judged_by_likelihood_and_posterior_summaries(caers_counts):
    fit = fit_mgps(caers_counts)
    assert fit.agreement is True
    compared = [s for s in fit.starts if s.get("ebgm_max_rel_diff") is not None]
    assert compared and any(s["agrees"] for s in compared)
    for s in compared:
        assert abs(s["delta_neg_loglik"]) <= 0.01
    d = fit.as_dict()
    assert d["spread"]["n_agreeing"] >= 1 and "EBGM" in d["agreement_rule"]


def test_caers_neg_loglik_at_or_below_openebgm(caers_counts):
    """openEBGM's optimum on caers is 4162.455710379538 (−log L); ours must not be worse."""
    assert fit_mgps(caers_counts).neg_loglik <= 4162.455710379538


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
def test_ebgm_can_lie_outside_eb05_eb95():
    """EBGM = exp(E[ln λ]) of a two-gamma posterior is no quantile: a small, far component moves it above EB95.
    Checked by independent numerical integration, so EBGM in [EB05, EB95] can only be a warning."""
    theta = (2.0, 0.002, 500.0, 500.0, 8e-8)
    n, e = 3, 0.01
    post = posterior(theta, np.array([n]), np.array([e]))
    gm, q05, q95 = _posterior_direct(theta, n, e)
    assert 0.01 < post["qn"][0] < 0.05
    assert post["ebgm"][0] == pytest.approx(gm, rel=1e-8) and post["eb95"][0] == pytest.approx(q95, rel=1e-8)
    assert gm > q95 and post["ebgm"][0] > post["eb95"][0]


@pytest.mark.parametrize("likelihood", ["openebgm", "conditional", "zero-inclusive"])
def test_gradient_stays_finite_where_one_component_is_astronomically_better(likelihood):
    """At P = 0 with cells that component 1 explains e^1000 times better than the point mass of component 2, the
    slope in P is huge: it must stay a finite number (its weighted sum overflowed to inf before, and the optimiser
    then stopped a start early) and point towards P > 0, without a floating-point warning."""
    import warnings

    from pipeline.stats.mgps import _negll_x

    n = np.full(1000, 500.0)
    d = _Data(n, np.ones_like(n), np.full(n.size, 1e3), 0 if likelihood == "zero-inclusive" else 1)
    x = np.array([0.0, np.log(400.0), 30.0, 0.0, 0.0])  # component 1: mean 400; component 2: λ = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, g = _negll_x(x, d, likelihood)
    assert np.isfinite(value) and np.all(np.isfinite(g))
    assert g[4] < -1e250  # −log L falls steeply as P leaves 0
