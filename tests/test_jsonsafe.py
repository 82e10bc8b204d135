import datetime as dt
import json
import math
from pathlib import Path

import numpy as np

from pipeline.atomic import write_json
from pipeline.jsonsafe import jsonable


def test_missing_is_null_and_infinite_stays_visible():
    out = jsonable({"nan": float("nan"), "np_nan": np.float64("nan"), "inf": math.inf, "ninf": -np.inf,
                    "one": np.float32(1.5), "n": np.int64(3), "flag": np.bool_(True)})
    assert out == {"nan": None, "np_nan": None, "inf": "inf", "ninf": "-inf", "one": 1.5, "n": 3, "flag": True}
    assert type(out["n"]) is int and type(out["flag"]) is bool


def test_containers_keys_dates_paths():
    out = jsonable({1: (np.int32(2), {3}), "d": dt.date(2024, 1, 2), "p": Path("/x/y"), "o": object})
    assert out["1"] == [2, [3]]
    assert out["d"] == "2024-01-02" and out["p"] == "/x/y" and isinstance(out["o"], str)
    assert jsonable(np.array([1.0, np.nan])) == [1.0, None]


def test_write_json_writes_strict_json(tmp_path):
    p = write_json({"eb05": np.float64("nan"), "ror_hi": np.inf}, tmp_path / "m.json")
    text = p.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"eb05": None, "ror_hi": "inf"}
