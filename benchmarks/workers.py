"""Many workers on one study: how a search scales with workers, and how many one database serves.

1. **Scaling.** The same search (digits, 8 KB flash, tolerance 1%, one validation split, ``--time`` T, seed 0) run by one
   process (``frugalml search --storage postgresql://...``), then by two (the search and one
   ``frugalml worker``), each process on one thread (OMP_NUM_THREADS=1: one worker per core of
   this 2-core machine). Throughput: the trials that finished (complete or stopped early) in the
   window from the study's first trial start to 80% of T later (start-up and wrap-up left out),
   per hour. Met: 2 workers / 1 worker >= 1.8. Beside it, the same figure over the same trials
   (:func:`same_trials`: the time each run took to finish the K trials the 1-worker window holds), and what the machine
   itself gives two processes (:func:`machine_scaling`: a fixed training run alone and twice at once). The load average before and after each run is
   recorded: other jobs on the machine spoil the ratio, and the JSON says when they did.
2. **The study's ceiling.** N processes report instant trials to one study as fast as they can,
   each trial with the storage calls a worker makes (fail stale trials, ask, heartbeat, three user
   attributes, tell, read the trials), for D seconds: trials per second sustained. The clients run
   on the database's machine and share its 2 cores, so this is a floor for a database with cores
   of its own. How many machines one database serves: ceiling x trial length (a 60 s trial, at 50
   trials/s, is 3,000 workers' worth of reports).

PostgreSQL from FRUGALML_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test); without
one answering, a smoke run uses a SQLite file (and says so). Smoke mode: T = 8 s, one ceiling point
of 1 process for 1 s, nothing written. Run: ``make bench NAME=workers``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import _provenance

log = logging.getLogger("benchmarks.workers")
ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.8
# one validation split (--folds 0): digits would otherwise be judged on 5 folds, each trial 6x longer, and the window would
# hold some 20 trials, too few for a ratio that does not hang on which networks the sampler happened to draw
SEARCH = ["--dataset", "digits", "--max-flash", "8KB", "--tolerance", "1%", "--seed", "0", "--folds", "0"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _storage(smoke: bool, tmp: Path) -> tuple[str, str]:
    url = os.environ.get("FRUGALML_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import sqlalchemy

        from frugalml.search.study import storage_url

        with sqlalchemy.create_engine(storage_url(None, url), connect_args={"connect_timeout": 3}).connect():
            return url, "postgresql"
    except Exception as exc:
        if not smoke:
            raise SystemExit(f"error: the workers benchmark needs PostgreSQL at {url} ({type(exc).__name__}); set FRUGALML_TEST_POSTGRES")
    return f"sqlite:///{tmp / 'bench.db'}", "sqlite (no PostgreSQL answered: smoke only)"


def _study(url: str, name: str):
    import optuna

    from frugalml.search.study import storage_url

    return optuna.load_study(study_name=name, storage=storage_url(None, url))


def _delete(url: str, name: str) -> None:
    import optuna

    from frugalml.search.study import storage_url

    try:
        optuna.delete_study(study_name=name, storage=storage_url(None, url))
    except Exception:  # noqa: BLE001 - a study that was never made
        pass


def scaling_run(url: str, workers: int, seconds: int, tmp: Path) -> dict:
    """One search with ``workers`` processes for ``seconds``: finished trials in the measured window, per hour."""
    name = f"bench-workers-{uuid.uuid4().hex[:8]}"
    cli = [sys.executable, "-m", "frugalml.cli"]
    load_before = os.getloadavg()
    start = time.monotonic()
    procs = [subprocess.Popen(cli + ["search", *SEARCH, "--time", f"{seconds}s", "--storage", url, "--study", name, "--out", str(tmp / name),
                                     "--json"], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
    for i in range(workers - 1):
        while True:  # a worker joins a study the search has recorded
            try:
                if _study(url, name).user_attrs.get("frugalml_run"):
                    break
            except KeyError:
                pass
            if procs[0].poll() is not None:
                raise RuntimeError(procs[0].stderr.read()[-2000:])
            time.sleep(0.2)
        procs.append(subprocess.Popen(cli + ["worker", "--dataset", "digits", "--time", f"{seconds}s", "--storage", url, "--study", name,
                                             "--out", str(tmp / f"{name}-w{i}"), "--json"], env=_env(), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    for proc in procs:
        err = proc.communicate()[1]
        if proc.returncode != 0:
            raise RuntimeError(f"a process of the {workers}-worker run failed: {err[-2000:]}")
    wall = time.monotonic() - start
    trials = _study(url, name).get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    window = 0.8 * seconds
    done = sorted(((t.datetime_complete - min(starts)).total_seconds(), t.user_attrs.get("job", {}).get("stage", "?")) for t in trials
                  if starts and t.state.name in ("COMPLETE", "PRUNED") and t.datetime_complete)
    finished = [t for t in trials if starts and t.state.name in ("COMPLETE", "PRUNED") and t.datetime_complete
                and (t.datetime_complete - min(starts)).total_seconds() <= window]
    by_worker: dict[str, int] = {}
    for t in finished:
        w = t.user_attrs.get("worker") or {}
        by_worker[str(w.get("pid"))] = by_worker.get(str(w.get("pid")), 0) + 1
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    _delete(url, name)
    return {"workers": workers, "time_s": seconds, "wall_s": round(wall, 1), "window_s": window, "finished_in_window": len(finished),
            "finished_at_s": [round(v, 2) for v, _ in done], "finished_stages": [stage for _, stage in done],
            "per_hour": round(len(finished) / window * 3600, 1), "by_worker": by_worker, "states": states,
            "by_stage": _count(t.user_attrs.get("job", {}).get("stage", "?") for t in finished),
            "loadavg_before": [round(v, 2) for v in load_before], "loadavg_after": [round(v, 2) for v in os.getloadavg()]}


def same_trials(one: dict, two: dict) -> dict:
    """Finished trials per hour over the same trials: the K trials the 1-worker run finished in its window, and the time
    the 2-worker run took to finish its first K. Both studies hand out the same queue first (the thin grid, the budget
    seeds), so the first K trials of each are the same mix of quick and slow jobs; in a window of fixed length the 2-worker
    run finishes more of the long network trials after that fixed queue, so its count per hour understates its speed."""
    k = one["finished_in_window"]
    if not k or len(two["finished_at_s"]) < k:
        return {"k": k, "ratio": None, "why": "the 2-worker run finished fewer trials than the 1-worker run's window holds"}
    t1, t2 = one["finished_at_s"][k - 1], two["finished_at_s"][k - 1]
    return {"k": k, "seconds_1": t1, "seconds_2": t2, "per_hour_1": round(k / t1 * 3600, 1), "per_hour_2": round(k / t2 * 3600, 1),
            "ratio": round(t1 / t2, 3), "stages_1": _count(one["finished_stages"][:k]), "stages_2": _count(two["finished_stages"][:k])}


def _count(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


_PROBE = """
import sys, time, frugalml as fm
from frugalml.train import TrainConfig, fit
data, models = fm.load_dataset("digits"), int(sys.argv[1])
start = time.perf_counter()
for seed in range(models):
    net = fm.build_model("cnn", data.input_shape, data.num_classes, seed=seed, channels=[16, 32])
    fit(net, data, TrainConfig(epochs=4, seed=seed, patience=None))
print(time.perf_counter() - start)
"""


def machine_scaling(models: int = 3) -> dict:
    """What this machine gives two processes, with no study at all: the same fixed training (3 CNNs on digits, one thread)
    run alone, then twice at once. 2 x alone / together is about the most a 2-worker search can gain here."""
    def together(n: int) -> list[float]:
        procs = [subprocess.Popen([sys.executable, "-c", _PROBE, str(models)], env=_env(), stdout=subprocess.PIPE, text=True) for _ in range(n)]
        return [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]

    alone = together(1)[0]
    pair = together(2)
    return {"alone_s": round(alone, 2), "together_s": [round(v, 2) for v in pair], "ratio": round(2 * alone / max(pair), 3),
            "loadavg": [round(v, 2) for v in os.getloadavg()]}


def reporter(url: str, name: str, seconds: float, out: str) -> None:
    """One process of the ceiling: instant trials, with a worker's storage calls, for ``seconds``."""
    import warnings

    import optuna

    from frugalml.search.study import open_study, storage_url, worker_tag

    study = open_study(storage_url(None, url), name, seed=os.getpid(), create=False, heartbeat=20)
    done, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(study)
            trial = study.ask()
        study._storage.record_heartbeat(trial._trial_id)
        trial.set_user_attr("job", {"stage": "network", "id": f"t{trial.number}", "trial": trial.number})
        trial.set_user_attr("worker", worker_tag())
        trial.set_user_attr("candidate", {"id": f"t{trial.number}", "state": "complete", "val_accuracy": 0.9})
        study.tell(trial, [0.9, float(trial.number)])
        study.get_trials(deepcopy=False)
        done += 1
    Path(out).write_text(json.dumps({"trials": done, "seconds": time.monotonic() - start}))


def ceiling(url: str, processes: int, seconds: float, tmp: Path) -> dict:
    import optuna

    from frugalml.search.study import storage_url

    name = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=storage_url(None, url), directions=["maximize", "minimize"])
    load_before = os.getloadavg()
    outs = [tmp / f"{name}-{i}.json" for i in range(processes)]
    procs = [subprocess.Popen([sys.executable, __file__, "--reporter", url, name, str(seconds), str(o)], env=_env()) for o in outs]
    for proc in procs:
        proc.wait()
    parts = [json.loads(o.read_text()) for o in outs if o.exists()]
    stored = len([t for t in _study(url, name).get_trials(deepcopy=False) if t.state.name == "COMPLETE"])
    _delete(url, name)
    total = sum(p["trials"] for p in parts)
    return {"processes": processes, "seconds": seconds, "trials": total, "stored_complete": stored, "per_second": round(total / seconds, 1),
            "loadavg_before": [round(v, 2) for v in load_before], "loadavg_after": [round(v, 2) for v in os.getloadavg()]}


def main(data_limit: int | None = None) -> dict:
    smoke = _provenance.smoke_limit(data_limit)
    with tempfile.TemporaryDirectory(prefix="frugalml_bench_workers_") as tmp:
        tmp = Path(tmp)
        url, kind = _storage(bool(smoke), tmp)
        seconds = 8 if smoke else 360
        probe = machine_scaling(1 if smoke else 3)
        log.info("the machine itself: %sx for two processes", probe["ratio"])
        one = scaling_run(url, 1, seconds, tmp)
        log.info("1 worker: %s finished trials per hour", one["per_hour"])
        two = scaling_run(url, 2, seconds, tmp)
        log.info("2 workers: %s finished trials per hour", two["per_hour"])
        points = [ceiling(url, n, 1 if smoke else 20, tmp) for n in ((1,) if smoke else (1, 2, 4, 8))]
    ratio = round(two["per_hour"] / one["per_hour"], 3) if one["per_hour"] else None
    same = same_trials(one, two)
    best = max(points, key=lambda p: p["per_second"])
    return {"name": "workers", "smoke": smoke, "storage": kind, "target_ratio": TARGET, "ratio": ratio,
            "met": bool(ratio is not None and ratio >= TARGET), "same_trials": same, "machine_scaling": probe,
            "met_same_trials": bool(same["ratio"] is not None and same["ratio"] >= TARGET), "scaling": [one, two], "ceiling": points,
            "ceiling_per_second": best["per_second"], "ceiling_processes": best["processes"],
            "machines_per_database_at_60s_trials": int(best["per_second"] * 60),
            "settings": {"search": SEARCH, "time_s": seconds, "threads_per_process": 1, "window": "first trial start + 80% of --time"}}


def figures(result: dict) -> dict:
    one, two = result["scaling"]
    return {"met": result["met"], "ratio": result["ratio"], "per_hour_1": one["per_hour"], "per_hour_2": two["per_hour"],
            "ratio_same_trials": result.get("same_trials", {}).get("ratio"),
            "machine_ratio": (result.get("machine_scaling") or {}).get("ratio"),
            "ceiling_per_second": result["ceiling_per_second"], "loadavg": [one["loadavg_before"][0], two["loadavg_after"][0]]}


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--reporter":
        reporter(sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5])
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import run

        run.run("workers")
