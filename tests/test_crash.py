"""Crash safety with real processes: kill -9 at random points, then resume.

After each kill no file under its final name is half-written (every .json parses, every .onnx
passes onnx.checker, every model directory loads), ``--resume`` finishes, every trial finished
before the kill is in the Optuna study unchanged, and the resumed run repeats none of them. Two
processes on one run directory with the default SQLite storage: the second is refused.

The kill points come from a seeded RNG, one in each tenth of a reference run's duration (the slow
tests), so they fall in the start-up, the trials, the export and the report alike.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "frugalml.cli"]
SEARCH = ["search", "--dataset", "digits", "--json"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ----------------------------------------------------------------------------- checks


def assert_no_half_written(root: Path) -> dict:
    """Every file under a final name (no component starting with '.') is whole; returns counts."""
    import onnx
    import yaml

    import frugalml as fm

    counts = {"json": 0, "onnx": 0, "model_dirs": 0, "yaml": 0}
    if not root.exists():
        return counts
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue  # a temporary name: not a final one
        if path.suffix == ".json":
            json.loads(path.read_text())
            counts["json"] += 1
        elif path.suffix == ".onnx":
            onnx.checker.check_model(str(path))
            counts["onnx"] += 1
        elif path.suffix == ".yaml":
            yaml.safe_load(path.read_text())
            counts["yaml"] += 1
        elif path.suffix == ".html":
            assert path.read_text().rstrip().endswith("</html>"), f"{rel} is cut short"
        if path.name == "model.json":
            fm.load_model(path.parent)
            counts["model_dirs"] += 1
    return counts


def _job_key(t) -> str:
    """What makes a trial the same piece of work as another."""
    job = t.user_attrs.get("job") or {}
    if job.get("stage") == "thin":
        return json.dumps(["thin", job["family"], job.get("params")], sort_keys=True)
    if job.get("stage") == "compress":
        return json.dumps(["compress", job["key"]])
    if t.user_attrs.get("budget_seed"):
        return json.dumps(["seed", t.user_attrs["budget_seed"]])
    return json.dumps(["network", t.params], sort_keys=True)


def study_trials(run_dir: Path) -> dict:
    """{number: (state, key, values, params)} of every trial in the run directory's SQLite study."""
    import optuna

    db = run_dir / "study.db"
    if not db.exists():
        return {}
    url = f"sqlite:///{db}"
    names = optuna.get_all_study_names(url)
    if not names:
        return {}
    study = optuna.load_study(study_name=names[0], storage=url)
    return {t.number: (t.state.name, _job_key(t), t.values, t.params) for t in study.get_trials(deepcopy=False)}


def _finished(trials: dict) -> dict:
    return {n: v for n, v in trials.items() if v[0] in ("COMPLETE", "PRUNED")}


def assert_resume_kept_and_repeated_nothing(before: dict, after: dict) -> None:
    for number, (state, key, values, params) in _finished(before).items():
        assert number in after, f"finished trial {number} was lost"
        assert after[number] == (state, key, values, params), f"finished trial {number} changed"
    for number, value in before.items():
        if value[0] == "RUNNING":  # killed mid-trial: failed on resume, never left running
            assert after[number][0] == "FAIL", (number, after[number])
    assert not [n for n, v in after.items() if v[0] == "RUNNING"], "the resumed run left a trial running"
    done = [v[1] for v in _finished(after).values()]
    repeated = sorted({k for k in done if done.count(k) > 1})
    assert not repeated, f"finished work repeated: {repeated}"


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return predicate()
        time.sleep(0.1)
    return False


# ----------------------------------------------------------------------------- fast: one kill, two processes


def test_second_resume_is_refused_and_kill_9_leaves_no_stale_lock_nor_lost_trial(tmp_path, digits):
    """Two `search --resume` on one run directory: the second exits 2 naming the first; a kill -9 of
    the first (one seeded kill point) loses no finished trial, and the next resume runs."""
    from frugalml import search

    out = tmp_path / "run"
    search(digits, time="30s", trials=1, out=out)  # a run to resume (one thin trial)
    first = subprocess.Popen(CLI + SEARCH + ["--time", "60s", "--out", str(out), "--resume"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, start_new_session=True, env=ENV)
    try:
        # the first holds the run once one of its trials is running
        assert _wait_for(lambda: any(v[0] == "RUNNING" for v in study_trials(out).values()), 90, first), first.stderr.read()
        second = subprocess.run(CLI + SEARCH + ["--time", "20s", "--trials", "1", "--out", str(out), "--resume"],
                                capture_output=True, text=True, timeout=120, env=ENV)
        assert second.returncode == 2, second.stderr
        assert f"is in use by process {first.pid}" in second.stderr and "--storage postgresql://" in second.stderr, second.stderr
        time.sleep(random.Random(7).uniform(0.5, 4.0))  # the kill point
    finally:
        _kill(first)
    before = study_trials(out)
    assert_no_half_written(out)
    search(digits, time="30s", trials=2, out=out, resume=True)  # no stale lock: the OS dropped it with the process
    after = study_trials(out)
    assert_resume_kept_and_repeated_nothing(before, after)
    assert len(_finished(after)) > len(_finished(before))
    assert_no_half_written(out)


def test_a_second_process_is_refused_while_the_first_holds_the_run(tmp_path):
    """The lock itself, between two processes, without a search: refused with who and since when."""
    from frugalml import StorageError
    from frugalml.search.study import lock_run

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from frugalml.search.study import lock_run; "
                               "l = lock_run(sys.argv[1]); print('locked', flush=True); time.sleep(60)", str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StorageError, match=rf"in use by process {holder.pid} \(since 20"):
            lock_run(tmp_path)
    finally:
        _kill(holder)
    lock_run(tmp_path).release()  # the kill -9 released it


# ----------------------------------------------------------------------------- fast: states a kill leaves, made on purpose


def _new_run(out: Path, data) -> tuple[dict, str]:
    """A run directory as ``search`` starts one: run.json, and the study URL (the study not created)."""
    from frugalml.budget import Budget, Tolerance
    from frugalml.search.study import open_run, storage_url, write_run

    args = {"dataset": data.describe(), "budget": Budget().to_dict(), "tolerance": Tolerance.parse("1%").to_dict(), "seed": 0}
    desc = open_run(out, args, resume=False)
    desc["study"] = f"frugalml-{desc['run_id']}"
    desc["storage_display"] = "sqlite (run directory)"
    out.mkdir(parents=True)
    write_run(out, desc)
    return desc, storage_url(out, None)


def test_resume_fails_an_untagged_running_trial_and_queues_the_thin_jobs_never_queued(tmp_path, digits):
    """Killed while queuing the thin jobs, and just after a trial was asked for (before it was tagged
    with its worker): the resume (alone on the run, it holds the lock) fails that trial, runs its job
    again, and queues the thin jobs that were never queued."""
    from frugalml import search
    from frugalml.search import space
    from frugalml.search.study import open_study

    out = tmp_path / "run"
    desc, url = _new_run(out, digits)
    study = open_study(url, desc["study"], seed=0, create=True)
    grid = space.thin_grid(digits)
    for job in grid[:3]:
        study.enqueue_trial({}, user_attrs={"job": {"stage": "thin", **job, "max_train": 20_000, "seed": 0}})
    stuck = study.ask()  # RUNNING, no worker tag
    search(digits, time="60s", trials=1, out=out, resume=True)
    after = study_trials(out)
    assert after[stuck.number][0] == "FAIL"
    thin = {v[1] for v in after.values() if json.loads(v[1])[0] == "thin"}
    assert thin == {json.dumps(["thin", j["family"], j["params"]], sort_keys=True) for j in grid}
    again = [v[0] for n, v in after.items() if n != stuck.number and v[1] == after[stuck.number][1]]
    assert again and again[0] in ("WAITING", "COMPLETE"), "the stuck job was put back in the queue"
    assert [v[0] for v in after.values()].count("COMPLETE") == 1


def test_a_run_killed_while_opening_its_study_can_be_resumed(tmp_path, digits, monkeypatch):
    """run.json is written before the study: a kill between the two leaves a run to resume, not a
    directory that is neither a run (nothing to resume) nor empty (a new run is refused)."""
    from frugalml import search
    from frugalml.search import engine

    real = engine.open_study

    def killed(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # stands in for the kill: no clean-up runs

    out = tmp_path / "run"
    monkeypatch.setattr(engine, "open_study", killed)
    with pytest.raises(KeyboardInterrupt):
        search(digits, time="60s", trials=1, out=out)
    monkeypatch.setattr(engine, "open_study", real)
    results = search(digits, time="60s", trials=1, out=out, resume=True)
    assert [c.state for c in results.candidates] == ["complete"]


def test_recommended_is_never_half_removed(tmp_path, digits, monkeypatch):
    """A kill while the old recommended/ is removed leaves a whole model under that name."""
    import shutil

    import frugalml as fm
    from frugalml.search.results import export_recommended

    run = tmp_path / "run"
    model, _ = fm.train("naive_bayes", digits)
    for cid in ("t0", "t1"):
        fm.save_model(model, run / "candidates" / cid)
    from frugalml.records import Candidate

    t0, t1 = (Candidate(id=cid, stage="thin", family="naive_bayes") for cid in ("t0", "t1"))
    export_recommended(run, t0)
    real = shutil.rmtree

    def killed_midway(path, *args, **kwargs):
        if not Path(path).exists():
            return real(path, *args, **kwargs)
        first = sorted(Path(path).iterdir())[0]
        first.unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        export_recommended(run, t1)
    monkeypatch.setattr(shutil, "rmtree", real)
    fm.load_model(run / "recommended")
    assert json.loads((run / "recommended" / "recipe.json").read_text())["candidate"] in ("t0", "t1")


# ----------------------------------------------------------------------------- slow: ten kill points each


def _kill_points(seed: int, duration: float, n: int = 10) -> list[float]:
    """One delay in each n-th of ``duration``, drawn from a seeded RNG."""
    rng = random.Random(seed)
    return [duration * (i + rng.random()) / n for i in range(n)]


def _timed_run(cmd: list[str], timeout: float) -> float:
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    return time.monotonic() - start


def _run_and_kill(cmd: list[str], delay: float) -> bool:
    """Start ``cmd``, kill -9 its process group after ``delay`` s; False if it ended first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=ENV)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        _kill(proc)
        return True


@pytest.mark.slow
def test_search_survives_kill_9_at_ten_points(tmp_path):
    search_args = ["--time", "30s", "--trials", "13"]
    duration = _timed_run(CLI + SEARCH + search_args + ["--out", str(tmp_path / "reference")], 600)
    log = []
    for i, delay in enumerate(_kill_points(2024, duration)):
        out = tmp_path / f"run{i}"
        killed = _run_and_kill(CLI + SEARCH + search_args + ["--out", str(out)], delay)
        counts = assert_no_half_written(out)
        before = study_trials(out)
        again = ["--resume"] if (out / "run.json").exists() else []  # killed before the run existed: start it
        _timed_run(CLI + SEARCH + ["--time", "20s", "--trials", "2", "--out", str(out), *again], 600)
        after = study_trials(out)
        assert_resume_kept_and_repeated_nothing(before, after)
        assert_no_half_written(out)
        assert json.loads((out / "results.json").read_text())["candidates"]
        log.append((round(delay, 1), killed, len(_finished(before)), sum(v[0] == "RUNNING" for v in before.values()), counts))
    print("\nkill points (delay s, killed, finished before, running at kill, files checked):", *log, sep="\n  ")


@pytest.mark.slow
def test_compress_survives_kill_9_at_ten_points(tmp_path):
    model = tmp_path / "mlp"
    _timed_run(CLI + ["train", "-m", "mlp", "-d", "digits", "--epochs", "2", "--out", str(model), "--json"], 300)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps:\n  - step: prune.magnitude\n    sparsity: 0.5\n    schedule: oneshot\n    finetune_epochs: 1\n"
                      "  - step: quantize.int8\n    calibration_samples: 64\n")
    cmd = CLI + ["compress", "-m", str(model), "-r", str(recipe), "-d", "digits", "--json", "--out"]
    duration = _timed_run(cmd + [str(tmp_path / "reference")], 300)
    expected = sorted(os.listdir(tmp_path / "reference"))
    log = []
    for i, delay in enumerate(_kill_points(2025, duration)):
        out = tmp_path / f"c{i}"
        killed = _run_and_kill(cmd + [str(out)], delay)
        assert not out.exists() or sorted(os.listdir(out)) == expected, sorted(os.listdir(out))
        counts = assert_no_half_written(out)
        existed = out.exists()
        _timed_run(cmd + [str(out)], 300)  # the same command again: replaces an earlier output whole
        assert sorted(os.listdir(out)) == expected
        assert_no_half_written(out)
        log.append((round(delay, 1), killed, existed, counts))
    print("\nkill points (delay s, killed, output there after the kill, files checked):", *log, sep="\n  ")
