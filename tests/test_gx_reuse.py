"""Raw validation reuses one GX context per process: same results as a fresh context, and a suite rebuilt after
GX holds it for stale never collides with an earlier asset name."""

from __future__ import annotations

import pytest

from pipeline import quality
from pipeline.layout import DataDir
from pipeline.quality.gx import drop_shared_cores, shared_cores


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    from pipeline.ingest import ingest
    from pipeline.quarters import parse_range
    from pipeline.sources import fetch
    from pipeline.synthetic import write_mirror

    root = tmp_path_factory.mktemp("gx")
    write_mirror(root / "mirror", parse_range("2012Q3,2019Q1"), reports_per_quarter=300, seed=3, progress=False)
    dd = DataDir.of(root / "data")
    fetch(str(root / "mirror"), dd, progress=False)
    ingest(dd, progress=False, validate=False)
    return dd


def _brief(summary: dict) -> list:
    return sorted((c["table"], c["expectation"], c["success"], c.get("unexpected_count")) for c in summary["checks"])


def test_reused_context_gives_the_results_of_a_fresh_one(raw, monkeypatch):
    monkeypatch.setenv("FAERS_GX_REUSE", "0")
    fresh = {q: _brief(quality.validate_raw_quarter(raw, q, data_docs=False, raise_on_critical=False))
             for q in ("2012Q3", "2019Q1")}
    monkeypatch.setenv("FAERS_GX_REUSE", "1")
    drop_shared_cores()
    for _ in range(2):  # twice: the second pass runs entirely on definitions built by the first
        for q in ("2012Q3", "2019Q1"):
            assert _brief(quality.validate_raw_quarter(raw, q, data_docs=False, raise_on_critical=False)) == fresh[q]
    [core] = shared_cores()
    built = core.built["definitions"]
    # a rebuild (what run() does when GX calls a reused suite stale) gets a new, unused asset name
    suite = quality.load_suite("raw_outc_laers")
    core.definition(suite, "raw_outc", fresh=True)
    core.definition(suite, "raw_outc", fresh=True)
    assert core.built["definitions"] == built + 2


def test_frames_for_gx_have_wide_numbers_and_arrow_text():
    """Narrow integers and float32 reach GX as int64/float64 (its between-check is vectorised only for those);
    values, nulls and text are unchanged."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from pipeline.quality.gx import to_pandas

    t = pa.table({"year": pa.array([2004, 2026], pa.int32()), "n": pa.array([1, None], pa.int16()),
                  "w": pa.array([1.5, None], pa.float32()), "h": pa.array([2**64 - 1, 0], pa.uint64()),
                  "pt": ["Nausea", None]})
    df = to_pandas(t, ["year", "n", "w", "h", "pt", "absent"])
    assert df["year"].dtype == np.int64 and df["year"].tolist() == [2004, 2026]
    assert df["n"].dtype == np.float64 and df["n"].isna().tolist() == [False, True]
    assert df["w"].dtype == np.float64 and df["w"].iloc[0] == 1.5
    assert df["h"].dtype == np.uint64 and df["h"].iloc[0] == 2**64 - 1
    assert isinstance(df["pt"].dtype, pd.ArrowDtype) and df["absent"].isna().all()


def test_a_validated_frame_is_not_kept_alive_by_the_reused_context():
    # GX's execution engine keeps the last batch of every asset; at the whole history that was one frame per
    # table and suite alive until the process ended
    import gc
    import weakref

    import pandas as pd

    from pipeline.quality.gx import GxRun

    suite = {"name": "keep_alive_probe", "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x"}}]}
    gxr = GxRun(None)
    gone = []
    for asset in ("probe_a", "probe_b"):
        df = pd.DataFrame({"x": range(1000)})
        assert gxr.run(suite, df, asset=asset, params={}, run_name="probe").success
        gone.append(weakref.ref(df))
        del df
    gc.collect()
    assert [r() is None for r in gone] == [True, True]
