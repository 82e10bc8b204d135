"""The Airflow UI page: served to a logged-in user, refused to an anonymous one.

Runs Airflow's real api-server app (``airflow.api_fastapi.app.create_app``) with the repository's ``plugins/``
folder and SimpleAuthManager (pre-written passwords file) in a subprocess, so the plugin is discovered exactly as
the api-server does it and no Airflow state leaks into other tests. The token comes from ``POST /auth/token``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys
from fastapi.testclient import TestClient
from airflow.api_fastapi.app import create_app

c = TestClient(create_app())
out = {}
r = c.post("/auth/token", json={"username": "viewer", "password": "v1ew-pw"})
out["token_status"] = r.status_code
tok = r.json().get("access_token", "")
bad = c.post("/auth/token", json={"username": "viewer", "password": "wrong"})
out["bad_password_status"] = bad.status_code
H = {"Authorization": "Bearer " + tok}
for name, path in [("table", "/faers-signals/"), ("report", "/faers-signals/report"),
                   ("json", "/faers-signals/signals.json?kind=all&min_a=3&sort=a&order=desc"),
                   ("pts", "/faers-signals/?kind=pts&substance=esketamine&sort=ror_lo&order=desc")]:
    anon = c.get(path)
    forged = c.get(path, headers={"Authorization": "Bearer eyJhbGciOiJIUzUxMiJ9.e30.xxxx"})
    ok = c.get(path, headers=H)
    cookie = c.get(path, cookies={"_token": tok})
    c.cookies.clear()
    out[name] = {"anon": anon.status_code, "forged": forged.status_code, "ok": ok.status_code,
                 "cookie": cookie.status_code, "body": ok.text, "csp": ok.headers.get("content-security-policy")}
evil = c.get("/faers-signals/", params={"substance": "<script>alert(1)</script>", "sort": "pt"}, headers=H)
out["evil"] = [evil.status_code, evil.text]
o = c.get("/faers-signals/%2e%2e/%2e%2e/curated/reports.parquet", headers=H)
out["outside"] = [o.status_code, o.content[:4].decode("latin-1")]
o = c.get("/faers-signals/../../curated/reports.parquet", headers=H)  # normalised by the client to /curated/...
out["outside_norm"] = [o.status_code, o.content[:4].decode("latin-1")]
out["manifest_path"] = c.get("/faers-signals/manifest.json", headers=H).status_code
plugins = c.get("/api/v2/plugins", headers=H)
out["plugins_status"] = plugins.status_code
out["plugins"] = plugins.json().get("plugins", []) if plugins.status_code == 200 else []
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def served(built, tmp_path_factory):
    root, _, result = built
    home = tmp_path_factory.mktemp("airflow-home")
    pw = home / "passwords.json"
    pw.write_text(json.dumps({"admin": "adm1n-pw", "viewer": "v1ew-pw"}))
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(pw),
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
           "AIRFLOW__API_AUTH__JWT_SECRET": "report-plugin-test-secret",
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"), "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"), "FAERS_DATA_DIR": str(root),
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, cwd=home,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=home, capture_output=True, text=True,
                          timeout=300)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line, f"plugin app did not run:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(line[len("RESULT"):]), result


@pytest.mark.airflow
def test_logged_in_user_gets_table_anonymous_refused(served):
    out, result = served
    assert out["token_status"] == 201 and out["bad_password_status"] == 401
    for name in ("table", "report", "json", "pts"):
        r = out[name]
        assert r["anon"] in (401, 403), name
        assert r["forged"] in (401, 403), name
        assert r["ok"] == 200, name
        assert r["cookie"] == 200, name  # the browser: the UI's _token cookie
    table = out["table"]["body"]
    assert result["run_id"] in table and "<table" in table and "dissociation" in table
    assert "sort=ror_lo" in table and "SYNTHETIC DATA" in table
    assert "default-src 'none'" in out["report"]["csp"]
    assert '<section id="methods">' in out["report"]["body"]
    js = json.loads(out["json"]["body"])
    assert js["run_id"] == result["run_id"] and js["rows"]
    a = [r["a"] for r in js["rows"]]
    assert a == sorted(a, reverse=True) and min(a) >= 3
    assert "esketamine" in out["pts"]["body"] and "ketamine_family" not in out["pts"]["body"].split("<tbody>")[1]


@pytest.mark.airflow
def test_query_text_is_escaped_in_the_page(served):
    out, _ = served
    status, body = out["evil"]
    assert status == 200 and "<script" not in body.lower()
    assert "substance=%3Cscript%3Ealert%281%29%3C%2Fscript%3E&amp;min_a=0" in body  # the sort links keep the filter


@pytest.mark.airflow
def test_nothing_else_of_the_data_dir_is_served(served):
    out, _ = served
    assert out["outside"][0] == 404 and out["manifest_path"] == 404
    # "/curated/..." is outside the plugin (Airflow's UI answers with its own page), never the Parquet bytes
    assert out["outside_norm"][1] != "PAR1"


@pytest.mark.airflow
def test_plugin_registered_with_nav_view(served):
    out, _ = served
    assert out["plugins_status"] == 200
    [p] = [p for p in out["plugins"] if p["name"] == "faers_signals"]
    assert p["fastapi_apps"][0]["url_prefix"] == "/faers-signals"
    [view] = p["external_views"]
    assert view["destination"] == "nav" and view["href"] == "faers-signals/" and view["url_route"] == "faers-signals"
