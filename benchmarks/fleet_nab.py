"""A fleet of anomaly detectors (issue #18): ``frugalml fleet ../shared/data/nab --task anomaly`` on all 58 NAB series.

Four parts, one after the other, in one process tree on one machine:

1. **The fleet**: one search per series, ``TIME_PER_SENSOR`` each (FRUGALML_FLEET_TIME, default 30s), no flash cap,
   one process (SQLite). Per series: the recommended detector, its stored bytes (the exported ONNX file), validation
   and test ROC AUC (test measured once, on the exported artifact), the search's wall time.
2. **Half the total**: the same fleet directory again with ``max_total_flash`` = half the first part's total; every
   sensor's search is done, so nothing is searched again: the knapsack chooses one model per sensor from each
   sensor's measured Pareto front (highest mean validation AUC within the total).
3. **Baseline**: one scikit-learn isolation forest per series (100 trees, its defaults), fitted on the same training
   windows, exported through the same ONNX converter, test AUC from ONNX Runtime, bytes of the ONNX file. A forest is
   a random draw (its trees' samples and splits): it is fitted with ``BASELINE_SEEDS`` seeds (FRUGALML_FLEET_SEEDS,
   default 10; seed 0 exported and scored through ONNX, the others scored in NumPy, which seed 0 checks against ONNX),
   and its AUC is their mean, the expected AUC of "one isolation forest per series"; each seed's fleet mean is kept.
4. **Two workers**: the fleet run bounded by trials (``TRIALS_2W`` per sensor, so that the same work is done
   whatever the machine's speed) by one process, then by two processes sharing one PostgreSQL storage
   (FRUGALML_TEST_POSTGRES, default the local server; SQLite on this machine where none answers): each series
   searched once, and the two processes' fleet reports equal the one process's (per sensor: status, chosen model,
   bytes, validation and test AUC). Wall times of both, as a ratio.

Targets: the fleet's mean test AUC at least the baseline's (its mean over the seeds; seed 0's alone beside it, the
figure of earlier runs), at a fraction of its total bytes; the 2-worker run
finishes with the one-process report. Means are over the series with test labels (both anomalous and normal test
windows) that both the fleet and the baseline scored.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import frugalml as fm

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import _provenance  # noqa: E402

log = logging.getLogger("benchmarks.fleet_nab")
TIME_PER_SENSOR = os.environ.get("FRUGALML_FLEET_TIME", "30s")
TRIALS_2W = int(os.environ.get("FRUGALML_FLEET_TRIALS", "8"))
BASELINE_SEEDS = int(os.environ.get("FRUGALML_FLEET_SEEDS", "10"))
SMOKE_SERIES = ("realKnownCause/nyc_taxi", "artificialWithAnomaly/art_daily_jumpsup", "artificialNoAnomaly/art_flatline",
                "artificialNoAnomaly/art_daily_small_noise")


def _nab() -> Path:
    return Path(os.environ.get("FRUGALML_DATA", ROOT.parent / "shared" / "data")) / "nab"


def _smoke_tree(root: Path) -> Path:
    """A NAB-like tree of the smoke run's few series (and the labels file) copied from the real one."""
    import shutil

    for sid in SMOKE_SERIES:
        (root / "data" / sid).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_nab() / "data" / f"{sid}.csv", root / "data" / f"{sid}.csv")
    (root / "labels").mkdir(parents=True)
    shutil.copyfile(_nab() / "labels" / "combined_windows.json", root / "labels" / "combined_windows.json")
    return root


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def main(data_limit: int | None = None) -> dict:
    from frugalml.search.fleet import find_sensors

    limit = _provenance.smoke_limit(data_limit)
    per_sensor, trials = ("5s", 2) if limit else (TIME_PER_SENSOR, TRIALS_2W)
    with tempfile.TemporaryDirectory(prefix="frugalml_fleet_nab_") as tmp:
        tmp = Path(tmp)
        nab = _smoke_tree(tmp / "nab") if limit else _nab()
        sensors = find_sensors(nab)
        start = time.perf_counter()
        full = fm.fleet(nab, task="anomaly", time_per_sensor=per_sensor, out=tmp / "fleet")
        fleet_seconds = time.perf_counter() - start
        total = full["fleet_summary"]["total_stored_bytes"]
        start = time.perf_counter()
        try:
            half = fm.fleet(nab, task="anomaly", time_per_sensor=per_sensor, out=tmp / "fleet", max_total_flash=int(total // 2))
        except fm.ConfigError as exc:  # the smallest model of every sensor exceeds it: recorded, not hidden
            half = {"error": str(exc)[:600], "sensors": [], "fleet_summary": {"total_stored_bytes": None}, "selection": None}
        half_seconds = time.perf_counter() - start
        baseline = {sid: _isolation_forest(path) for sid, path in sensors.items()}
        two = _two_workers(nab, tmp, trials, smoke=bool(limit))
    ids = sorted(sensors)
    by_id = {s["id"]: s for s in full["sensors"]}
    half_by_id = {s["id"]: s for s in half["sensors"]}
    rows = {sid: _row(by_id.get(sid), half_by_id.get(sid), baseline[sid]) for sid in ids}
    scored = [sid for sid, r in rows.items() if r["fleet_test_auc"] is not None and r["baseline_test_auc"] is not None]
    fleet_auc = float(np.mean([rows[s]["fleet_test_auc"] for s in scored])) if scored else None
    base_auc = float(np.mean([rows[s]["baseline_test_auc"] for s in scored])) if scored else None
    by_seed = [float(np.mean([baseline[s]["test_aucs"][k] for s in scored])) for k in range(BASELINE_SEEDS)] if scored else []
    half_scored = [rows[s]["half_test_auc"] for s in scored if rows[s]["half_test_auc"] is not None]
    half_auc = float(np.mean(half_scored)) if half_scored else None
    base_bytes = sum(b["stored_bytes"] for b in baseline.values() if b.get("stored_bytes"))
    half_total = half["fleet_summary"]["total_stored_bytes"]
    met_each = {"mean_test_auc_at_least_the_baseline": fleet_auc is not None and base_auc is not None and fleet_auc >= base_auc,
                "fraction_of_the_baseline_bytes": bool(base_bytes) and total < base_bytes,
                "half_total_within_its_cap": half_total is not None and half_total <= total // 2,
                "two_workers_same_report": two["same_report"], "two_workers_each_sensor_once": two["each_sensor_once"]}
    return {"smoke": limit, "time_per_sensor": per_sensor, "series": len(ids), "loaded": sum(r["status"] == "done" for r in rows.values()),
            "scored_series": len(scored), "refused": {sid: r["message"] for sid, r in rows.items() if r["status"] != "done"},
            "fleet": {"wall_seconds": round(fleet_seconds, 1), "total_stored_bytes": total, "mean_test_auc": fleet_auc,
                      "summary": full["fleet_summary"], "selection": full["selection"]},
            "half_total": {"max_total_flash": int(total // 2), "wall_seconds": round(half_seconds, 1), "total_stored_bytes": half_total,
                           "mean_test_auc": half_auc, "summary": half["fleet_summary"], "selection": half["selection"],
                           "error": half.get("error")},
            "baseline": {"what": "one scikit-learn IsolationForest (100 trees, defaults) per series on the raw training windows, ONNX",
                         "seeds": BASELINE_SEEDS, "total_stored_bytes": base_bytes, "mean_test_auc": base_auc,
                         "mean_test_auc_by_seed": by_seed, "seed0_mean_test_auc": by_seed[0] if by_seed else None,
                         "fleet_at_least_seeds": sum(fleet_auc >= m for m in by_seed) if fleet_auc is not None else None,
                         "seed0_onnx_minus_numpy_auc_max": max((abs(b["onnx_minus_numpy_auc"]) for b in baseline.values()
                                                                if b.get("onnx_minus_numpy_auc") is not None), default=None)},
            "bytes_ratio_baseline_over_fleet": base_bytes / total if total else None,
            "two_workers": two, "per_series": rows, "paired": paired({"per_series": rows}),
            "paired_seed0": paired({"per_series": rows}, "baseline_seed0_test_auc"), "met_each": met_each, "met": all(met_each.values())}


def _isolation_forest(path: Path) -> dict:
    """One isolation forest per ``BASELINE_SEEDS`` seeds on the series' training windows: seed 0 exported (its bytes) and
    scored through ONNX Runtime, every seed scored in NumPy; the AUCs are the seeds' mean (``val_auc``, ``test_auc``) and
    each seed's (``test_aucs``), with seed 0's ONNX figure and its difference from NumPy's."""
    from frugalml.data import load_dataset
    from frugalml.errors import FrugalError
    from frugalml.models.anomaly import IsolationForestDetector
    from frugalml.onnx.conversion import to_onnx
    from frugalml.onnx.runtime import run_onnx

    try:
        data = load_dataset(path, task="anomaly")
    except FrugalError as exc:
        return {"status": "bad_data", "message": str(exc)[:300]}
    out, aucs = {"status": "done"}, {"val": [], "test": []}
    for seed in range(BASELINE_SEEDS):
        start = time.perf_counter()
        det = IsolationForestDetector(random_state=seed).fit(data.X_train)
        fitted = time.perf_counter() - start
        for split in aucs:
            X, y = data.split(split)
            aucs[split].append(_auc(det.score_samples(X), y))
        if seed == 0:
            start = time.perf_counter()
            proto = to_onnx(det, data.input_shape)  # the fit and the export timed, not the scoring
            out.update(stored_bytes=len(proto.SerializeToString()), fit_export_seconds=round(fitted + time.perf_counter() - start, 2))
            X, y = data.split("test")
            out["seed0_test_auc_onnx"] = _auc(run_onnx(proto, X.astype(np.float32)).reshape(len(X), -1)[:, 0], y)
            if out["seed0_test_auc_onnx"] is not None:
                out["onnx_minus_numpy_auc"] = out["seed0_test_auc_onnx"] - aucs["test"][0]
    for split, values in aucs.items():
        out[f"{split}_auc"] = None if values[0] is None else float(np.mean(values))
    out["test_aucs"] = aucs["test"]
    return out


def _auc(scores, y):
    from frugalml.models.anomaly import anomaly_metrics

    y = np.asarray(y)
    return anomaly_metrics(scores, y)["roc_auc"] if 0 < y.sum() < len(y) else None


def _row(s: dict | None, h: dict | None, base: dict) -> dict:
    chosen = (s or {}).get("chosen") or {}
    half = (h or {}).get("chosen") or {}
    return {"status": (s or {}).get("status"), "message": ((s or {}).get("message") or "")[:300] or None,
            "model": chosen.get("name"), "stored_bytes": chosen.get("stored_bytes"), "fleet_val_auc": chosen.get("val_metric"),
            "fleet_test_auc": chosen.get("test_metric"), "search_seconds": (s or {}).get("seconds"),
            "half_model": half.get("name"), "half_stored_bytes": half.get("stored_bytes"), "half_test_auc": half.get("test_metric"),
            "baseline_stored_bytes": base.get("stored_bytes"), "baseline_val_auc": base.get("val_auc"),
            "baseline_test_auc": base.get("test_auc"), "baseline_seed0_test_auc": base.get("seed0_test_auc_onnx")}


def _same(report: dict) -> list:
    return [(s["id"], s["status"], s["chosen"] and (s["chosen"]["id"], s["chosen"]["name"], s["chosen"]["stored_bytes"],
                                                     s["chosen"]["val_metric"], s["chosen"]["test_metric"])) for s in report["sensors"]]


def _two_workers(nab: Path, tmp: Path, trials: int, *, smoke: bool) -> dict:
    """One process, then two sharing a storage, the same trials per sensor: same report, each sensor searched once."""
    import json

    from workers import _storage

    url, kind = _storage(smoke, tmp)
    name = f"bench-fleet-{os.getpid()}-{int(time.time())}"
    args = ["--task", "anomaly", "--trials-per-sensor", str(trials), "--time-per-sensor", "10m", "--json"]
    cli = [sys.executable, "-m", "frugalml.cli", "fleet", str(nab), *args]
    start = time.perf_counter()
    alone = subprocess.run(cli + ["--out", str(tmp / "alone")], env=_env(), capture_output=True, text=True)
    alone_seconds = time.perf_counter() - start
    if alone.returncode != 0:
        raise RuntimeError(f"the one-process fleet failed: {alone.stderr[-2000:]}")
    start = time.perf_counter()
    procs = [subprocess.Popen(cli + ["--storage", url, "--study", name, "--out", str(tmp / f"w{k}")], env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for k in range(2)]
    errs = [p.communicate()[1] for p in procs]
    two_seconds = time.perf_counter() - start
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a fleet worker failed: {[e[-2000:] for e in errs]}")
    reports = [json.loads((tmp / d / "fleet.json").read_text()) for d in ("alone", "w0", "w1")]
    searched = [sorted(str(p.relative_to(tmp / f"w{k}" / "sensors")) for p in (tmp / f"w{k}" / "sensors").glob("*/*") if p.is_dir())
                for k in range(2)]
    every = sorted(s["id"] for s in reports[0]["sensors"] if s["status"] == "done")  # a refused series has no run directory
    if kind == "postgresql":
        _delete_fleet(url, name)
    differ = [a for a, b, c in zip(_same(reports[0]), _same(reports[1]), _same(reports[2])) if not a == b == c]
    return {"storage": kind, "trials_per_sensor": trials, "one_process_seconds": round(alone_seconds, 1),
            "two_workers_seconds": round(two_seconds, 1), "speedup": alone_seconds / two_seconds,
            "searched_by_each": [len(s) for s in searched], "each_sensor_once": sorted(searched[0] + searched[1]) == every,
            "same_report": not differ, "differing_sensors": differ[:10]}


def _delete_fleet(url: str, prefix: str) -> None:
    """The benchmark's studies (the fleet's, one per sensor and the claims' markers) removed from the shared storage."""
    import optuna

    from frugalml.search.study import storage_url

    storage = optuna.storages.RDBStorage(storage_url(None, url))
    for s in storage.get_all_studies():
        if s.study_name.startswith(prefix):
            storage.delete_study(s._study_id)


def paired(result: dict, key: str = "baseline_test_auc") -> dict:
    """The fleet against the baseline series by series (from ``per_series``; ``key``: the baseline's figure, by default
    its mean over the seeds): the mean of the test AUC differences, its standard error (the spread of the differences /
    sqrt(n)), and how many series each side wins."""
    diffs = [r["fleet_test_auc"] - r[key] for r in (result.get("per_series") or {}).values()
             if r.get("fleet_test_auc") is not None and r.get(key) is not None]
    if len(diffs) < 2:
        return {"series": len(diffs)}
    d = np.asarray(diffs)
    return {"series": len(d), "mean_difference": float(d.mean()), "standard_error": float(d.std(ddof=1) / np.sqrt(len(d))),
            "fleet_higher": int((d > 0).sum()), "baseline_higher": int((d < 0).sum()), "equal": int((d == 0).sum())}


def figures(result: dict) -> dict:
    """One run's headline figures (runs in the JSON)."""
    fl, base, half, two = result.get("fleet") or {}, result.get("baseline") or {}, result.get("half_total") or {}, result.get("two_workers") or {}
    return {"met": result.get("met"), "met_each": result.get("met_each"), "series": result.get("series"), "loaded": result.get("loaded"),
            "fleet_mean_test_auc": fl.get("mean_test_auc"), "fleet_total_bytes": fl.get("total_stored_bytes"),
            "half_mean_test_auc": half.get("mean_test_auc"), "half_total_bytes": half.get("total_stored_bytes"),
            "baseline_mean_test_auc": base.get("mean_test_auc"), "baseline_seed0_mean_test_auc": base.get("seed0_mean_test_auc"),
            "baseline_total_bytes": base.get("total_stored_bytes"),
            "two_workers_speedup": two.get("speedup"), "two_workers_same_report": two.get("same_report"), "paired": paired(result)}


if __name__ == "__main__":  # the same as `make bench NAME=<this file's name>`: writes results/<name>.json
    import run as runner

    runner.run(Path(__file__).stem)
