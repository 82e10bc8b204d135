"""bench/statements.py: the statement watch reports DuckDB statements with the pipeline lines that issued them and
leaves their results alone."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from bench import statements
from pipeline import duck


def test_watch_reports_slow_statements_with_their_pipeline_callers(monkeypatch):
    from pipeline.stats.counting_sql import count_pairs_in

    monkeypatch.setattr(duck, "_open", duck._open)  # restored after the test
    out = io.StringIO()
    statements.watch(0.0, out)
    con = duck.open_connection()
    try:
        con.execute("CREATE TABLE ex AS SELECT range AS report_id, 'd' || (range % 3) AS drug FROM range(30)")
        con.execute("CREATE TABLE ev AS SELECT range AS report_id, 'e' || (range % 2) AS event FROM range(30)")
        got = count_pairs_in(con, "ex", "ev", n_total=30).to_pandas()
    finally:
        duck.close(con)
    # results pass through unchanged: 10 reports per drug, 15 per event, 5 per pair
    assert len(got) == 6 and set(got["a"]) == {5} and set(got["n_drug"]) == {10} and set(got["n_event"]) == {15}
    lines = out.getvalue().splitlines()
    assert any("stats/counting_sql.py:" in ln and "CREATE TEMP TABLE" in ln for ln in lines)
    assert all(ln.startswith("[sql ") for ln in lines)
    # the test's own statements have no pipeline caller
    assert any(ln.split("] ", 1)[1].startswith("? :: CREATE TABLE ex") for ln in lines)

    quiet = io.StringIO()
    statements.watch(3600.0, quiet)
    con = duck.open_connection()
    try:
        assert con.execute("SELECT 42").fetchall() == [(42,)]
    finally:
        duck.close(con)
    assert quiet.getvalue() == ""


def test_main_runs_a_pipeline_command_watched(tmp_path, monkeypatch, capsys):
    """With strata the command counts in DuckDB, so its statements are reported."""
    monkeypatch.setattr(duck, "_open", duck._open)
    rows = pd.DataFrame({"report_id": [1, 1, 2, 3, 4], "drug": ["k", "k", "k", "x", "x"],
                         "event": ["e1", "e2", "e1", "e2", "e1"], "sex": ["F", "F", "M", "F", "M"]})
    rows.to_csv(tmp_path / "rows.csv", index=False)
    code = statements.main(["--min-s", "0", "--", "--quiet", "disproportionality", "--input",
                            str(tmp_path / "rows.csv"), "--out", str(tmp_path / "out.parquet"), "--strata", "sex"])
    assert code == 0 and (tmp_path / "out.parquet").exists()
    assert "stats/counting" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        statements.main(["--min-s", "0"])
