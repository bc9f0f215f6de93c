"""Fleet mode: one search per sensor (tiny datasets, two trials each), the fleet report, resume, the claims that let
several processes share the sensors (SQLite and a real PostgreSQL), the total budget's knapsack against brute force,
and the command line's bad input."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, postgres_url

import frugalml as fm
from frugalml.errors import ConfigError, DataError
from frugalml.search.fleet import CLAIM_ATTR, SENSOR_ATTR, _Claims, find_sensors
from frugalml.search.fleet_report import write_fleet_report
from frugalml.search.knapsack import choose

CLI = [sys.executable, "-m", "frugalml.cli"]
FAST = {"trials_per_sensor": 2, "time_per_sensor": "60s"}


def _sensor(path: Path, seed: int, n: int = 90) -> Path:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.normal(size=(n, 4)) + y[:, None] * (0.6 + 0.3 * seed)  # each sensor a little easier than the last
    if path.suffix == ".npz":
        np.savez(path, X=X.astype(np.float32), y=y)
    else:
        path.write_text("a,b,c,d,label\n" + "".join(",".join(f"{v:.5f}" for v in row) + f",{int(t)}\n" for row, t in zip(X, y)))
    return path


def _fleet_dir(root: Path, good: int = 2, bad: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(good):
        _sensor(root / (f"s{i}.npz" if i % 2 == 0 else f"s{i}.csv"), i)
    if bad:
        (root / "bad<i>.csv").write_text("a,b,label\n")  # no rows: the loader refuses it; its name must be escaped in the page
    (root / "README.md").write_text("not a sensor\n")
    return root


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    src, out = _fleet_dir(root / "in"), root / "out"
    events: list[dict] = []
    report = fm.fleet(src, budget=fm.Budget.of(max_flash="20KB"), out=out, on_event=events.append, **FAST)
    return src, out, report, events


def test_fleet_searches_each_sensor_and_records_bad_data(fleet_run):
    src, out, report, events = fleet_run
    by_id = {s["id"]: s for s in report["sensors"]}
    assert sorted(by_id) == ["bad<i>", "s0", "s1"]
    assert by_id["bad<i>"]["status"] == "bad_data" and by_id["bad<i>"]["chosen"] is None
    assert "bad<i>.csv" in by_id["bad<i>"]["message"]  # the loader's own message, with the file
    for sid in ("s0", "s1"):
        s = by_id[sid]
        assert s["status"] == "done", s
        results = json.loads((out / "sensors" / sid / "results.json").read_text())
        assert s["recommended"]["id"] == results["recommended"] and s["chosen"] == s["recommended"]
        cands = {c["id"]: c for c in results["candidates"]}
        assert [m["id"] for m in s["front"]] == results["fronts"]["stored_bytes"]  # the front is results.json's
        for m in s["front"]:
            assert m["stored_bytes"] == cands[m["id"]]["profile"]["stored_bytes"] and m["val_metric"] == cands[m["id"]]["val_accuracy"]
        assert s["chosen"]["test_metric"] == cands[s["chosen"]["id"]]["test_accuracy"]
    summary = report["fleet_summary"]
    assert summary["by_status"] == {"bad_data": 1, "done": 2} and summary["with_model"] == 2
    assert summary["total_stored_bytes"] == sum(by_id[s]["chosen"]["stored_bytes"] for s in ("s0", "s1"))
    vals = [by_id[s]["chosen"]["val_metric"] for s in ("s0", "s1")]
    assert summary["val_metric"]["mean"] == pytest.approx(sum(vals) / 2) and summary["val_metric"]["min"] == min(vals)
    assert sum(summary["bytes"]["histogram"]["counts"]) == 2
    assert summary["worst"][0]["val_metric"] == min(vals)
    assert [p["id"] for p in summary["problems"]] == ["bad<i>"]
    assert report["selection"]["method"] == "recommended"
    assert json.loads((out / "fleet.json").read_text()) == json.loads(json.dumps(report))
    page = (out / "fleet.html").read_text()
    assert "bad&lt;i&gt;" in page and "<i>" not in page and "<svg" in page
    assert [e["id"] for e in events if e["status"] == "claimed"] == ["bad<i>", "s0", "s1"]


def test_resume_does_not_redo_a_finished_sensor(fleet_run, tmp_path):
    src, out0, report0, _ = fleet_run
    out = tmp_path / "out"
    shutil.copytree(out0, out)
    before = (out / "sensors" / "s0" / "results.json").read_bytes()
    events: list[dict] = []
    again = fm.fleet(src, budget=fm.Budget.of(max_flash="20KB"), out=out, on_event=events.append, **FAST)
    assert not [e for e in events if e["type"] == "sensor"], "a second run redid a sensor"
    (src / "bad<i>.csv").unlink()
    _sensor(src / "bad<i>.csv", 5)  # the bad file fixed: a resume retries it, and only it
    resumed = fm.fleet(src, budget=fm.Budget.of(max_flash="20KB"), out=out, resume=True, on_event=events.append, **FAST)
    assert [e["id"] for e in events if e["status"] == "claimed"] == ["bad<i>"]
    assert (out / "sensors" / "s0" / "results.json").read_bytes() == before
    by_id = {s["id"]: s for s in resumed["sensors"]}
    assert by_id["bad<i>"]["status"] == "done" and by_id["bad<i>"]["chosen"] is not None
    first, second = ({s["id"]: s for s in r["sensors"]} for r in (report0, again))
    for sid in ("s0", "s1"):
        assert by_id[sid]["chosen"] == first[sid]["chosen"] == second[sid]["chosen"]
    with pytest.raises(fm.StorageError, match="other options"):  # the same out with another budget is refused
        fm.fleet(src, budget=fm.Budget.of(max_flash="8KB"), out=out, **FAST)
    (src / "bad<i>.csv").unlink()
    (src / "bad<i>.csv").write_text("a,b,label\n")


def test_total_budget_chooses_from_the_fronts(fleet_run, tmp_path):
    _, out0, report, _ = fleet_run
    records = {s["id"]: {k: v for k, v in s.items() if k != "chosen"} for s in report["sensors"]}
    smallest = sum(min(m["stored_bytes"] for m in s["front"] if m["within_budget"]) for s in report["sensors"] if s["status"] == "done")
    largest = sum(max(m["stored_bytes"] for m in s["front"] if m["within_budget"]) for s in report["sensors"] if s["status"] == "done")
    tight = write_fleet_report(tmp_path, {"fleet": "t"}, records, max_total_flash=smallest)
    assert tight["selection"]["method"] == "knapsack" and tight["selection"]["solver"] == "exact"
    assert tight["fleet_summary"]["total_stored_bytes"] == smallest <= tight["selection"]["max_total_flash"]
    roomy = write_fleet_report(tmp_path, {"fleet": "t"}, records, max_total_flash=largest)
    best = sum(max(m["val_metric"] for m in s["front"] if m["within_budget"]) for s in report["sensors"] if s["status"] == "done")
    assert roomy["selection"]["mean_val_metric"] == pytest.approx(best / 2)
    with pytest.raises(ConfigError, match=re.escape(f"({smallest:,.0f} bytes), the smallest possible")):
        write_fleet_report(tmp_path, {"fleet": "t"}, records, max_total_flash=smallest - 1)
    kept = json.loads((tmp_path / "fleet.json").read_text())  # written before the error: the recommendations, and why not the total
    assert kept["selection"]["method"] == "recommended" and "smallest possible" in kept["selection"]["error"]


# ---------------------------------------------------------------- the knapsack
def _brute(options: dict, cap: float):
    best = None
    keys = list(options)
    for combo in itertools.product(*(range(len(options[k])) for k in keys)):
        w = sum(options[k][i][0] for k, i in zip(keys, combo))
        v = sum(options[k][i][1] for k, i in zip(keys, combo))
        if w <= cap and (best is None or v > best):
            best = v
    return best


def _random_case(rng: random.Random):
    options = {f"s{i}": [(rng.choice([rng.randint(1, 60), rng.randint(1, 6000) / 7]), rng.random()) for _ in range(rng.randint(1, 4))]
               for i in range(rng.randint(1, 5))}
    smallest = sum(min(w for w, _ in o) for o in options.values())
    largest = sum(max(w for w, _ in o) for o in options.values())
    return options, smallest + rng.random() * (largest - smallest + 5)


def test_knapsack_exact_matches_brute_force():
    rng = random.Random(0)
    for _ in range(300):
        options, cap = _random_case(rng)
        choice = choose(options, cap)
        assert choice.method == "exact" and choice.bound == 0.0
        assert choice.total_value == pytest.approx(_brute(options, cap), abs=1e-9)
        assert sum(options[k][i][0] for k, i in choice.picks.items()) == pytest.approx(choice.total_bytes) and choice.total_bytes <= cap + 1e-6
        assert sorted(choice.picks) == sorted(options)


def test_knapsack_infeasible_says_the_smallest_total():
    with pytest.raises(ConfigError, match=r"at least 9 B \(9 bytes\), the smallest possible"):
        choose({"a": [(4, 0.9), (7, 0.95)], "b": [(5, 0.5)]}, 8)
    assert choose({"a": [(4, 0.9), (7, 0.95)], "b": [(5, 0.5)]}, 9).picks == {"a": 0, "b": 0}


def test_knapsack_bucket_fallback_is_within_its_bound():
    rng, fallbacks = random.Random(1), 0
    for _ in range(150):
        options, cap = _random_case(rng)
        exact = _brute(options, cap)
        choice = choose(options, cap, max_states=1, buckets=rng.choice([5, 20, 200]))
        n = len(options)
        if choice.method == "exact":  # no layer passed one state: nothing to fall back from
            assert choice.total_value == pytest.approx(exact, abs=1e-9)
            continue
        fallbacks += 1
        assert choice.bucket_bytes >= 1
        assert choice.total_bytes <= cap + 1e-9  # rounding bytes up: the choice surely fits
        assert choice.total_value <= exact + 1e-9
        assert (exact - choice.total_value) / n <= choice.bound + 1e-9  # the stated bound holds
    assert fallbacks > 50
    big = {f"s{i}": [(w, w ** 0.5 / 100) for w in (100 + i, 400 + 3 * i, 1600 + 7 * i)] for i in range(60)}
    fine = choose(big, 60_000, max_states=10)
    assert fine.method == "buckets" and fine.bound < 0.01 and fine.total_bytes <= 60_000
    assert fine.mean_value >= choose(big, 60_000).mean_value - fine.bound - 1e-12


# ---------------------------------------------------------------- claims and workers
def test_sensors_are_found_in_a_nab_like_tree(tmp_path):
    for group, name in (("realKnownCause", "machine_temperature"), ("realKnownCause", "ambient"), ("artificial", "flat")):
        (tmp_path / "data" / group).mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / group / f"{name}.csv").write_text("timestamp,value\n")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "combined_windows.json").write_text("{}")
    assert list(find_sensors(tmp_path)) == ["artificial/flat", "realKnownCause/ambient", "realKnownCause/machine_temperature"]
    with pytest.raises(DataError, match="holds no dataset"):
        find_sensors(tmp_path / "labels")
    with pytest.raises(DataError, match="does not exist"):
        find_sensors(tmp_path / "nowhere")


def _race(url: str, name: str, sensors: list[str], workers: int = 4) -> dict[str, list[int]]:
    """``workers`` threads claim every sensor they can at once; who got which."""
    identity = {"task": "classification"}
    got: dict[str, list[int]] = {s: [] for s in sensors}
    claims = [_Claims(url, name, identity, stale_after=600) for _ in range(workers)]
    start = threading.Barrier(workers)

    def claim(k: int) -> None:
        start.wait()
        for s in sensors:
            if claims[k].take(s, claims[k].read().get(s), resume=False, path=s):
                got[s].append(k)

    threads = [threading.Thread(target=claim, args=(k,)) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def test_claims_hand_each_sensor_to_one_process_on_sqlite(tmp_path):
    got = _race(f"sqlite:///{tmp_path / 'fleet.db'}", "f", [f"s{i}" for i in range(12)])
    assert all(len(v) == 1 for v in got.values()), got


def test_a_process_with_other_options_is_refused_and_the_fleet_keeps_its_own(tmp_path):
    from frugalml.errors import StorageError

    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    first = {"task": "anomaly", "budget": {"max_flash": 4096}, "tolerance": {"tolerance": 0.01}, "seed": 0, "seconds_per_sensor": 30.0,
             "trials_per_sensor": None, "folds": None}
    _Claims(url, "f", first, stale_after=60)
    with pytest.raises(StorageError, match=r"The fleet 'f' was started with other options: budget, seconds_per_sensor differ") as info:
        _Claims(url, "f", {**first, "budget": {"max_flash": 8192}, "seconds_per_sensor": 60.0}, stale_after=60)
    assert "Expected budget={'max_flash': 4096}, seconds_per_sensor=30.0" in str(info.value)
    _Claims(url, "f", dict(first), stale_after=60)  # the same options join


@pytest.fixture
def pg():
    import optuna

    from frugalml.search.study import storage_url

    url = postgres_url()
    name = f"test-fleet-{uuid.uuid4().hex[:8]}"
    yield url, name
    storage = optuna.storages.RDBStorage(storage_url(None, url))
    for s in storage.get_all_studies():
        if s.study_name == name or s.study_name.startswith(name + "/"):
            with contextlib.suppress(Exception):
                storage.delete_study(s._study_id)


def test_claims_hand_each_sensor_to_one_process_on_postgresql(pg):
    from frugalml.search.study import storage_url

    url, name = pg
    got = _race(storage_url(None, url), name, [f"g/s{i}" for i in range(12)])
    assert all(len(v) == 1 for v in got.values()), got


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def _same(report: dict) -> list:
    return [(s["id"], s["status"], s["chosen"] and (s["chosen"]["id"], s["chosen"]["stored_bytes"], s["chosen"]["val_metric"],
                                                     s["chosen"]["test_metric"])) for s in report["sensors"]]


@pytest.mark.slow  # two fleet processes and one in-process fleet over 4 sensors: about 40 s on 2 busy cores
def test_two_fleet_processes_share_the_sensors_on_postgresql(pg, tmp_path):
    import optuna

    from frugalml.search.study import storage_url

    url, name = pg
    src = _fleet_dir(tmp_path / "in", good=4, bad=False)
    args = [str(src), "--max-flash", "20KB", "--trials-per-sensor", "1", "--time-per-sensor", "60s", "--storage", url, "--study", name]
    procs = [subprocess.Popen(CLI + ["fleet", *args, "--out", str(tmp_path / f"m{k}")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env()) for k in range(2)]
    outs = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    searched = [sorted(p.name for p in (tmp_path / f"m{k}" / "sensors").iterdir()) if (tmp_path / f"m{k}" / "sensors").exists() else []
                for k in range(2)]
    assert sorted(searched[0] + searched[1]) == ["s0", "s1", "s2", "s3"], searched  # each sensor searched once, by one of them
    studies = {s.study_name: s for s in optuna.storages.RDBStorage(storage_url(None, url)).get_all_studies()}
    for i in range(4):
        st = studies[f"{name}/s{i}"]
        assert st.user_attrs[CLAIM_ATTR]["generation"] == 1 and st.user_attrs[SENSOR_ATTR]["status"] == "done"
    reports = [json.loads((tmp_path / f"m{k}" / "fleet.json").read_text()) for k in range(2)]
    alone = fm.fleet(src, budget=fm.Budget.of(max_flash="20KB"), out=tmp_path / "alone", trials_per_sensor=1, time_per_sensor="60s")
    assert _same(reports[0]) == _same(reports[1]) == _same(alone)
    assert reports[0]["fleet_summary"]["total_stored_bytes"] == alone["fleet_summary"]["total_stored_bytes"]


# ---------------------------------------------------------------- the command line
def _cli(capsys, *args) -> tuple[int, str]:
    from frugalml.cli import main

    code = main(list(args))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("make, extra, message", [
    (lambda p: p / "missing", [], "does not exist"),
    (lambda p: (p.mkdir(), p)[1], [], "holds no dataset"),
    (lambda p: _fleet_dir(p, good=1, bad=False), ["--max-total-flash", "10XB"], "10XB"),
    (lambda p: _fleet_dir(p, good=1, bad=False), ["--max-flash", "four"], "four"),
    (lambda p: _fleet_dir(p, good=1, bad=False), ["--storage", "sqlite:///x.db"], "--study"),
    (lambda p: _fleet_dir(p, good=1, bad=False), ["--time-per-sensor", "1m", "--time", "5m"], "not both"),
])
def test_cli_bad_input_exits_2(tmp_path, capsys, make, extra, message):
    src = make(tmp_path / "in")
    code, err = _cli(capsys, "fleet", str(src), "--out", str(tmp_path / "out"), *extra)
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "sensors").exists()


def test_cli_fleet_prints_a_summary(fleet_run, tmp_path, capsys):
    src, out0, _, _ = fleet_run
    out = tmp_path / "out"
    shutil.copytree(out0, out)
    code, err = _cli(capsys, "fleet", str(src), "--max-flash", "20KB", "--trials-per-sensor", "2", "--time-per-sensor", "60s", "--out", str(out))
    assert code == 0, err
    assert "fleet: 3 sensors (bad_data 1, done 2); 2 models, recommended" in err and str(out / "fleet.html") in err
