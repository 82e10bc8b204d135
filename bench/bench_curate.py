"""Benchmark: curate 8 real-scale quarters (~3.6 M DEMO rows) in under 60 s and 6 GB peak RSS.

``python -m bench curate`` (harness, ``make bench``) or ``python -m bench.bench_curate [--quarters 8]
[--reports 450000] [--data-dir DIR] [--regen]``.

Input: raw Parquet written **directly** with numpy/pyarrow in the exact ``raw_schema`` of each table (generating
3.6 M reports through ``pipeline sample`` + ``pipeline ingest`` takes many minutes and measures those stages, which
have their own benchmarks). ``--data-dir`` pointing at an already ingested data directory curates that instead.
The generator runs in a subprocess, so the reported peak RSS is curation's alone. Shape per report, as in
real quarters: ~4.2 DRUG, ~3.3 REAC, ~2.5 INDI, ~0.8 OUTC, ~1.5 THER rows; each quarter 75 % new cases and 25 %
follow-up versions of earlier cases, 2 % identical re-ships of the previous quarter, ~1,000 deleted caseids; Zipf
drug names (60 k distinct, 12 % without prod_ai) and PTs (20 k distinct, some upper case); ketamine, esketamine
(SPRAVATO) and look-alikes injected at low rates. Cached under ``--data-dir`` (default ``/tmp/bench_curate``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

TARGET_S = 60.0
TARGET_GB = 6.0


# ------------------------------------------------------------------------------------------------------------
# generator (numpy + pyarrow, one quarter at a time)
# ------------------------------------------------------------------------------------------------------------

def _gen(root: str, n_quarters: int, reports: int, seed: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.layout import DataDir
    from pipeline.quarters import Quarter, quarter_span
    from pipeline.schemas import raw_schema

    rng = np.random.default_rng(seed)
    dd = DataDir.of(root)
    quarters = quarter_span(Quarter(2022, 1), Quarter(2022, 1))
    while len(quarters) < n_quarters:
        quarters.append(quarters[-1].next())

    def pick(vocab: pa.Array, idx) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(idx, pa.int32()), vocab).cast(pa.string())

    def empty(n):
        return pa.nulls(n, pa.string()).fill_null("")

    def zipf_idx(n, size):
        x = rng.zipf(1.3, n) - 1
        return np.where(x < size, x, rng.integers(0, size, n))

    # vocabularies
    n_ingr, n_names, n_pts = 5000, 60000, 20000
    ingr = np.array([f"INGREDIENT{i:05d}" for i in range(n_ingr)], dtype=object)
    name_ingr = rng.integers(0, n_ingr, n_names)
    second = np.where(rng.random(n_names) < 0.1, rng.integers(0, n_ingr, n_names), -1)
    style = rng.integers(0, 5, n_names)
    names, prod = [], []
    for i in range(n_names):
        base = ingr[name_ingr[i]]
        names.append([f"BRAND{i:05d}", base, f"{base} HYDROCHLORIDE", f"{base}.", base.lower() + " "][style[i]])
        prod.append(base + ("" if second[i] < 0 else "\\" + ingr[second[i]]))
    special = [("KETAMINE", "KETAMINE"), ("KETALAR", ""), ("KETAMINE HYDROCHLORIDE.", "KETAMINE HYDROCHLORIDE"),
               ("SPRAVATO", "ESKETAMINE HYDROCHLORIDE"), ("SPRAVATO", ""), ("KETOROLAC", "KETOROLAC TROMETHAMINE"),
               ("KETOPROFEN", "KETOPROFEN")]
    names += [s[0] for s in special]
    prod += [s[1] for s in special]
    name_vocab, prod_vocab = pa.array(names), pa.array(prod)
    pt_names = [f"Preferred term {i}" for i in range(n_pts)] + ["Dissociation", "Sedation", "Hypertension",
                                                                "Tachycardia", "Blood pressure increased"]
    pt_vocab = pa.array(pt_names + [p.upper() for p in pt_names])
    countries = pa.array(["US"] * 12 + ["GB", "FR", "DE", "JP", "CA", "IT", "ES", "BR", "CN", "IN", ""])
    firms = pa.array([f"FIRM{i}" for i in range(50)] + [""])

    next_case = 20_000_000
    history_c = np.empty(0, np.int64)   # caseids shipped so far
    history_v = np.empty(0, np.int64)   # their latest version
    prev = None
    for qi, q in enumerate(quarters):
        n_follow = int(reports * 0.25) if len(history_c) else 0
        n_reship = int(reports * 0.02) if prev is not None else 0
        n_new = reports - n_follow - n_reship
        new_c = np.arange(next_case, next_case + n_new, dtype=np.int64)
        next_case += n_new
        if n_follow:
            pick_i = rng.choice(len(history_c), n_follow, replace=False)
            fol_c, fol_v = history_c[pick_i], history_v[pick_i] + 1 + (rng.random(n_follow) < 0.1) * 8
            history_v[pick_i] = fol_v
        else:
            fol_c = fol_v = np.empty(0, np.int64)
        caseid = np.concatenate([new_c, fol_c])
        version = np.concatenate([np.ones(n_new, np.int64), fol_v])
        history_c = np.concatenate([history_c, new_c])
        history_v = np.concatenate([history_v, np.ones(n_new, np.int64)])
        pid = caseid * np.where(version < 10, 10, 100) + version
        n = len(caseid)
        days = rng.integers(0, 90, n)
        fda = np.datetime64(f"{q.year}-{3 * q.q - 2:02d}-01") + days.astype("timedelta64[D]")
        ev_days = rng.integers(0, 5 * 365, n)
        ev = np.datetime64("2017-01-01") + ev_days.astype("timedelta64[D]")
        fda_txt = pc.strftime(pa.array(fda.astype("datetime64[s]")), "%Y%m%d")
        ev_txt = pc.if_else(pa.array(rng.random(n) < 0.3), "", pc.strftime(pa.array(ev.astype("datetime64[s]")),
                                                                          "%Y%m%d"))
        age = rng.integers(1, 90, n)
        age_txt = pc.if_else(pa.array(rng.random(n) < 0.2), "", pc.cast(pa.array(age), pa.string()))
        sex = pick(pa.array(["F", "M", "", "UNK"]), rng.choice(4, n, p=[0.55, 0.38, 0.06, 0.01]))
        firm_i = rng.integers(0, 51, n)
        mfr = pc.if_else(pa.array(firm_i == 50), "",
                         pc.binary_join_element_wise("US-", pc.cast(pa.array(caseid), pa.string()), ""))
        demo = {
            "primaryid": pc.cast(pa.array(pid), pa.string()), "caseid": pc.cast(pa.array(caseid), pa.string()),
            "caseversion": pc.cast(pa.array(version), pa.string()),
            "i_f_code": pc.if_else(pa.array(version > 1), "F", "I"), "event_dt": ev_txt, "fda_dt": fda_txt,
            "init_fda_dt": fda_txt, "mfr_num": mfr, "mfr_sndr": pick(firms, firm_i), "age": age_txt,
            "age_cod": pc.if_else(pc.equal(age_txt, ""), "", "YR"), "sex": sex,
            "occp_cod": pick(pa.array(["MD", "PH", "HP", "CN", "OT", ""]), rng.integers(0, 6, n)),
            "reporter_country": pick(countries, rng.integers(0, len(countries), n)),
        }
        typed = {"primaryid_int": pa.array(pid), "caseid_int": pa.array(caseid),
                 "caseversion_int": pa.array(version), "fda_dt_date": pa.array(fda.astype("datetime64[D]")),
                 "init_fda_dt_date": pa.array(fda.astype("datetime64[D]")),
                 "event_dt_date": pc.if_else(pc.equal(ev_txt, ""), pa.scalar(None, pa.date32()),
                                             pa.array(ev.astype("datetime64[D]"))),
                 "event_dt_precision": pc.if_else(pc.equal(ev_txt, ""), pa.scalar(None, pa.string()), "day")}

        def table(name, cols, typed_cols, nrows):
            schema = raw_schema(name)
            arrays = []
            for f in schema:
                if f.name in cols:
                    arrays.append(cols[f.name])
                elif f.name in typed_cols:
                    arrays.append(typed_cols[f.name].cast(f.type))
                elif f.name == "quarter":
                    arrays.append(pa.array([str(q)] * nrows) if nrows < 10 else pick(pa.array([str(q)]),
                                                                                      np.zeros(nrows, np.int32)))
                elif f.name == "era":
                    arrays.append(pick(pa.array([q.era]), np.zeros(nrows, np.int32)))
                elif f.name == "source_file":
                    arrays.append(pick(pa.array([f"ASCII/{name}{q.yyqq}.txt"]), np.zeros(nrows, np.int32)))
                elif f.name == "source_line":
                    arrays.append(pa.array(np.arange(2, nrows + 2, dtype=np.int64)))
                elif pa.types.is_string(f.type) and not f.nullable:
                    arrays.append(empty(nrows))
                else:
                    arrays.append(pa.nulls(nrows, f.type))
            return pa.Table.from_arrays(arrays, schema=schema)

        def children(per_report: float, min_zero: float):
            k = rng.poisson(per_report, n)
            k = np.where((k == 0) & (rng.random(n) > min_zero), 1, k)
            owner = np.repeat(np.arange(n), k)
            seq = np.arange(len(owner)) - np.repeat(np.cumsum(k) - k, k) + 1
            return owner, seq

        def child_keys(owner):
            return ({"primaryid": pc.take(demo["primaryid"], pa.array(owner)),
                     "caseid": pc.take(demo["caseid"], pa.array(owner))},
                    {"primaryid_int": pa.array(pid[owner]), "caseid_int": pa.array(caseid[owner])})

        tables = {"DEMO": table("DEMO", demo, typed, n)}
        owner, seq = children(4.2, 0.01)
        m = len(owner)
        name_i = zipf_idx(m, n_names)
        special_draw = rng.random(m)
        for j, rate in enumerate([0.0006, 0.0003, 0.0003, 0.0006, 0.0002, 0.0005, 0.0005]):
            lo = sum([0.0006, 0.0003, 0.0003, 0.0006, 0.0002, 0.0005, 0.0005][:j])
            name_i = np.where((special_draw >= lo) & (special_draw < lo + rate), n_names + j, name_i)
        no_prod = rng.random(m) < 0.12
        drug_prod = pc.if_else(pa.array(no_prod), "", pick(prod_vocab, name_i))
        role = np.where(seq == 1, 0, rng.choice([1, 2, 3], m, p=[0.35, 0.64, 0.01]))
        keys, tkeys = child_keys(owner)
        tables["DRUG"] = table("DRUG", {**keys, "drug_seq": pc.cast(pa.array(seq), pa.string()),
                                        "role_cod": pick(pa.array(["PS", "SS", "C", "I"]), role),
                                        "drugname": pick(name_vocab, name_i), "prod_ai": drug_prod},
                               {**tkeys, "drug_seq_int": pa.array(seq)}, m)
        # THER: about a third of the drug rows carry therapy dates (full, year-month or blank start), as in FAERS
        t_rows = np.flatnonzero(rng.random(m) < 0.35)
        full = np.char.replace((np.datetime64("2019-01-01") + rng.integers(0, 1500, len(t_rows))
                                .astype("timedelta64[D]")).astype(str), "-", "")
        form = rng.random(len(t_rows))
        start = np.where(form < 0.6, full, np.where(form < 0.8, full.astype("<U6"), ""))
        keys, tkeys = child_keys(owner[t_rows])
        tables["THER"] = table("THER", {**keys, "dsg_drug_seq": pc.cast(pa.array(seq[t_rows]), pa.string()),
                                        "start_dt": pa.array(start, pa.string())},
                               {**tkeys, "dsg_drug_seq_int": pa.array(seq[t_rows])}, len(t_rows))
        owner, seq = children(3.3, 0.01)
        pt_i = zipf_idx(len(owner), len(pt_names))
        pt_i = np.where(rng.random(len(owner)) < 0.05, pt_i + len(pt_names), pt_i)
        keys, tkeys = child_keys(owner)
        tables["REAC"] = table("REAC", {**keys, "pt": pick(pt_vocab, pt_i)}, tkeys, len(owner))
        owner, seq = children(0.8, 1.0)
        keys, tkeys = child_keys(owner)
        tables["OUTC"] = table("OUTC", {**keys, "outc_cod": pick(pa.array(["OT", "HO", "DE", "LT"]),
                                                                 rng.integers(0, 4, len(owner)))},
                               tkeys, len(owner))
        owner, seq = children(2.5, 1.0)
        keys, tkeys = child_keys(owner)
        tables["INDI"] = table("INDI", {**keys, "indi_drug_seq": pc.cast(pa.array(seq), pa.string()),
                                        "indi_pt": pick(pt_vocab, zipf_idx(len(owner), len(pt_names)))},
                               {**tkeys, "indi_drug_seq_int": pa.array(seq)}, len(owner))
        if n_reship:  # identical re-ship of part of the previous quarter (exact duplicates after the union)
            for name, t in prev.items():
                ids = t.column("primaryid_int")
                chosen = prev_reship
                mask = pc.is_in(ids, pa.array(chosen))
                part = t.filter(mask)
                idx = part.schema.get_field_index("quarter")
                part = part.set_column(idx, part.schema.field(idx),
                                       pick(pa.array([str(q)]), np.zeros(len(part), np.int32)))
                tables[name] = pa.concat_tables([tables[name], part])
        prev_reship = rng.choice(pid, int(reports * 0.02), replace=False)
        prev = {k: v for k, v in tables.items() if k in ("DEMO", "DRUG", "REAC", "OUTC", "INDI", "THER")}
        dele = rng.choice(history_c, 1000, replace=False)
        tables["DELETED"] = table("DELETED", {"caseid": pc.cast(pa.array(dele), pa.string())},
                                  {"caseid_int": pa.array(dele)}, len(dele))
        for name, t in tables.items():
            idx = t.schema.get_field_index("source_line")  # renumber after appending re-ships
            t = t.set_column(idx, t.schema.field(idx), pa.array(np.arange(2, len(t) + 2, dtype=np.int64)))
            path = dd.raw_part(name, q)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(t, path, compression="zstd")
        rec = dd.ingest_record(q)
        rec.parent.mkdir(parents=True, exist_ok=True)
        rec.write_text(json.dumps({"quarter": str(q), "era": q.era, "zip": f"bench_{q}.zip",
                                   "zip_sha256": None, "generator": "bench.bench_curate"}))
        print(f"   generated {q}: {len(tables['DEMO']):,} DEMO, {len(tables['DRUG']):,} DRUG, "
              f"{len(tables['REAC']):,} REAC rows", flush=True)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="bench_curate")
    ap.add_argument("--quarters", type=int, default=8)
    ap.add_argument("--reports", type=int, default=450_000, help="DEMO rows per quarter")
    ap.add_argument("--data-dir", default="/tmp/bench_curate")
    ap.add_argument("--regen", action="store_true", help="regenerate the raw tables")
    ap.add_argument("--seed", type=int, default=3)
    args, _ = ap.parse_known_args(argv or [])

    from pipeline.curate import curate
    from pipeline.layout import DataDir
    from pipeline.settings import load_config

    dd = DataDir.of(args.data_dir)
    stamp = dd.root / "bench_params.json"
    params = {"quarters": args.quarters, "reports": args.reports, "seed": args.seed}
    if args.regen or not stamp.exists() or json.loads(stamp.read_text()) != params:
        import shutil

        shutil.rmtree(dd.root, ignore_errors=True)
        t0 = time.perf_counter()
        ctx = mp.get_context("spawn")  # keep the generator's memory out of this process's peak RSS
        p = ctx.Process(target=_gen, args=(str(dd.root), args.quarters, args.reports, args.seed))
        p.start()
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"generator failed with exit code {p.exitcode}")
        stamp.write_text(json.dumps(params))
        print(f"   generated raw tables in {time.perf_counter() - t0:.1f}s under {dd.root}", flush=True)

    import os
    import resource

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    summary = curate(dd, load_config(), progress=True, force=True)
    seconds = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    load = os.getloadavg()[0]

    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    f = {s["name"]: s for s in summary["funnel"]}
    result = {
        "quarters": args.quarters, "demo_rows": f["raw DEMO rows"]["reports_in"],
        "kept_cases": summary["kept_cases"], "analysis_population": summary["analysis_population"],
        "ketamine_family": summary["substance_reports"]["ketamine_family"],
        "rows": summary["rows"], "dup_groups": summary["duplicates"].get("groups"),
        "curate_s": round(seconds, 2), "cpu_s": round(cpu_s, 2), "load_avg_1min": round(load, 2),
        "stage_s": summary["timings_s"], "duplicate_rule_s": summary["duplicates"].get("seconds"), "peak_rss_gb": round(peak_gb, 2),
        "target_s": TARGET_S, "target_gb": TARGET_GB, "ok": seconds < TARGET_S and peak_gb < TARGET_GB,
    }
    print(f"curate: {result['demo_rows']:,} DEMO rows of {args.quarters} quarters -> {result['kept_cases']:,} cases "
          f"({result['analysis_population']:,} in analysis) in {seconds:.1f}s (CPU {cpu_s:.1f}s, load {load:.1f}), peak RSS {peak_gb:.2f} GB "
          f"-> {'OK' if result['ok'] else 'OVER TARGET'} (targets < {TARGET_S:.0f}s, < {TARGET_GB:.0f} GB)",
          flush=True)
    return result


if __name__ == "__main__":
    import sys

    print(json.dumps(main(sys.argv[1:]), indent=2))
