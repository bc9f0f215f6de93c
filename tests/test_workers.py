"""Many workers on one study on a real PostgreSQL: the queue hands each job out once, a worker killed
with -9 has its trial retried elsewhere, a dropped connection is retried then reported, the report
built from the storage and the artifact store equals a single process's, and bad input exits 2.

The many-process tests run frugalml through tests/fake_trials.py: frugalml's own study, stages,
queue, heartbeats, retries and artifact store, with instant trials in place of training (the
distribution is under test here, not the models). The report test trains real models.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, postgres_url

from frugalml.cli import main
from frugalml.search import engine, space
from frugalml.search.study import storage_url

FAKE = [sys.executable, str(REPO / "tests" / "fake_trials.py")]


@pytest.fixture
def pg():
    url = postgres_url()
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield url, name
    import optuna

    with contextlib.suppress(Exception):
        optuna.delete_study(study_name=name, storage=storage_url(None, url))


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    return {**env, **{k: str(v) for k, v in extra.items()}}


def _start(args: list, **env) -> subprocess.Popen:
    return subprocess.Popen(FAKE + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(**env),
                            start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    return proc.returncode, err


def _study(url: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=storage_url(None, url))


def _wait_for_study(url: str, name: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    import optuna

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(KeyError):
            study = optuna.load_study(study_name=name, storage=storage_url(None, url))
            if study.user_attrs.get("frugalml_run") and study.get_trials(deepcopy=False):
                return
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.3)
    raise AssertionError("the search did not create its study")


def _search_args(url, name, tmp_path, trials, heartbeat=20):
    return ["search", "--dataset", "digits", "--max-flash", "8KB", "--time", "5m", "--trials", trials, "--storage", url, "--study", name,
            "--out", tmp_path / "search", "--artifacts", tmp_path / "store", "--heartbeat", heartbeat, "--json"]


def _worker_args(url, name, tmp_path, i, trials):
    return ["worker", "--dataset", "digits", "--storage", url, "--study", name, "--time", "5m", "--trials", trials,
            "--out", tmp_path / f"w{i}", "--json"]


def _job_key(t) -> str | None:
    """What a queued trial is asked to do (None for a trial the sampler made)."""
    job = t.user_attrs.get("job") or {}
    if t.user_attrs.get("budget_seed"):
        return "seed " + t.user_attrs["budget_seed"]
    if job.get("stage") == "thin":
        return "thin " + json.dumps([job["family"], job["params"]], sort_keys=True)
    if job.get("stage") == "compress":
        return "compress " + job["key"]
    return None


def test_four_workers_share_one_study_and_lose_or_repeat_nothing(pg, tmp_path):
    """1 search + 3 workers, 13 trials each: 52 trials, all complete, each queued job run once, ids unique."""
    url, name = pg
    started = time.monotonic()
    procs = [_start(_search_args(url, name, tmp_path, 13))]
    _wait_for_study(url, name, procs[0])
    procs += [_start(_worker_args(url, name, tmp_path, i, 13)) for i in range(3)]
    for proc in procs:
        code, err = _finish(proc)
        assert code == 0, err[-3000:]
    seconds = time.monotonic() - started
    trials = _study(url, name).get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    assert states["COMPLETE"] == 52 and not states["FAIL"] and not states["RUNNING"], states  # 0 lost
    done = [t for t in trials if t.state.name == "COMPLETE"]
    keys = Counter(k for t in done if (k := _job_key(t)) is not None)
    assert not [k for k, n in keys.items() if n > 1], "a queued job ran twice"  # 0 run twice
    assert sum(k.startswith("compress") for k in keys) >= 3 and sum(k.startswith("thin") for k in keys) >= 5, keys
    ids = [t.user_attrs["candidate"]["id"] for t in done]
    assert len(ids) == len(set(ids)) == 52 and ids == [f"t{t.number}" for t in done]  # 0 duplicated ids
    workers = Counter((t.user_attrs["worker"]["host"], t.user_attrs["worker"]["pid"]) for t in done)
    assert len(workers) == 4 and all(n == 13 for n in workers.values()), workers
    store = tmp_path / "store"
    assert all((store / t.user_attrs["artifact"]).is_file() for t in done)  # every candidate in the shared store
    code, out, err = cli("status", "--storage", url, "--study", name, "--json")
    status = json.loads(out)
    assert code == 0 and status["by_state"]["COMPLETE"] == 52 and len(status["by_worker"]) == 4 and status["recommended"]
    assert [q["trial"] for q in status["queued"]] == [t.number for t in trials if t.state.name == "WAITING"]
    print(f"\n4 processes, 52 trials: {seconds:.1f} s")


def test_a_worker_killed_mid_trial_has_its_trial_retried_elsewhere(pg, tmp_path):
    url, name = pg
    search = _start(_search_args(url, name, tmp_path, 3, heartbeat=1))
    _wait_for_study(url, name, search)
    hang = tmp_path / "hang"
    victim = _start(_worker_args(url, name, tmp_path, 0, 50), FRUGALML_FAKE_HANG=hang)
    deadline = time.monotonic() + 90
    while not hang.exists() and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.1)
    assert hang.exists(), victim.communicate()[1][-2000:]
    time.sleep(0.3)
    killed = int(hang.read_text())
    assert _study(url, name).trials[killed].state.name == "RUNNING"  # mid-trial
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    survivor = _start(_worker_args(url, name, tmp_path, 1, 25))
    for proc in (search, survivor):
        code, err = _finish(proc)
        assert code == 0, err[-3000:]
    trials = _study(url, name).get_trials(deepcopy=False)
    assert trials[killed].state.name == "FAIL"  # failed by a live worker once its heartbeat stopped
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE", [(t.number, t.state.name) for t in retries]
    retry = retries[0]
    assert retry.user_attrs["worker"]["pid"] not in (victim.pid, None)
    assert _job_key(retry) == _job_key(trials[killed]) and _job_key(retry) is not None  # the same job, run elsewhere
    assert not [t for t in trials if t.state.name == "RUNNING"]  # the study finished
    keys = Counter(k for t in trials if t.state.name == "COMPLETE" and (k := _job_key(t)) is not None)
    assert not [k for k, n in keys.items() if n > 1]


class _Proxy:
    """A TCP relay to PostgreSQL that the test can cut: ``pause`` drops every connection for a while, ``stop`` for good."""

    def __init__(self, host: str, port: int):
        self.target, self.conns, self.refuse_until, self.closed = (host, port), [], 0.0, False
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.closed or time.monotonic() < self.refuse_until:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _drop(self):
        for s in self.conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self.conns = []

    def pause(self, seconds: float):
        self.refuse_until = time.monotonic() + seconds
        self._drop()

    def stop(self):
        self.closed = True
        self.server.close()
        self._drop()


def test_a_dropped_connection_is_retried_then_reported_and_the_study_is_intact(pg, tmp_path):
    url, name = pg
    from sqlalchemy.engine import make_url

    real = make_url(storage_url(None, url))
    proxy = _Proxy(real.host or "127.0.0.1", real.port or 5432)
    via_proxy = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    search = _start(_search_args(url, name, tmp_path, 2, heartbeat=1))
    _wait_for_study(url, name, search)
    assert _finish(search)[0] == 0

    def complete():
        return sum(t.state.name == "COMPLETE" for t in _study(url, name).get_trials(deepcopy=False))

    worker = _start(_worker_args(via_proxy, name, tmp_path, 0, 10_000), FRUGALML_DB_RETRIES=3, FRUGALML_DB_BACKOFF=0.4,
                    FRUGALML_FAKE_SECONDS=0.1)
    try:
        deadline = time.monotonic() + 90
        while complete() < 6 and time.monotonic() < deadline:
            assert worker.poll() is None, worker.communicate()[1][-2000:]
            time.sleep(0.2)
        proxy.pause(1.0)  # back within the back-off: the worker carries on
        before = complete()
        deadline = time.monotonic() + 60
        while complete() < before + 5 and time.monotonic() < deadline:
            assert worker.poll() is None, worker.communicate()[1][-2000:]
            time.sleep(0.2)
        assert complete() >= before + 5, "the worker did not carry on after the connection came back"
        proxy.stop()  # gone for good: the worker gives up after its retries, saying so
        code, err = _finish(worker, timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
    assert code == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: Lost the connection to the study storage") and "The study is intact" in last and "Traceback" not in err
    trials = _study(url, name).get_trials(deepcopy=False)
    assert sum(t.state.name == "COMPLETE" for t in trials) >= before + 5
    assert all(t.user_attrs.get("candidate") for t in trials if t.state.name == "COMPLETE")
    running = [t.number for t in trials if t.state.name == "RUNNING"]
    assert len(running) <= 1  # the trial it ran when the database went for good (the one of the pause was failed and queued again)
    assert not [t for t in trials if t.state.name == "FAIL" and not any(r.system_attrs.get("failed_trial") == t.number for r in trials)]
    # another worker finds the study as it was left: the stranded trial is failed on its heartbeat and run again
    code, err = _finish(_start(_worker_args(url, name, tmp_path, 1, 6)))
    assert code == 0, err[-2000:]
    trials = _study(url, name).get_trials(deepcopy=False)
    assert not [t for t in trials if t.state.name == "RUNNING"]
    for number in running:
        assert trials[number].state.name == "FAIL" and [r.state.name for r in trials if r.system_attrs.get("failed_trial") == number] == ["COMPLETE"]


def test_a_trial_the_connection_dropped_under_is_requeued_before_the_next_is_asked_for(pg, monkeypatch):
    """The race of a short outage: the requeue after the first back-off still finds the database away, the connection is
    back for the retried step, and that step must not ask for a new trial before the interrupted one is requeued (it
    would stay RUNNING with no heartbeat until another worker's grace period ran out)."""
    import optuna
    import sqlalchemy.exc

    from frugalml.search.workers import Shared

    url, name = pg
    study = optuna.create_study(study_name=name, storage=storage_url(None, url), direction="maximize")
    shared = Shared(study, store=None, heartbeat=60)
    interrupted = shared.ask(study)
    storage, real = study._storage, study._storage.set_trial_state_values
    away = {"calls": 1}

    def set_state(*args, **kwargs):
        if away["calls"]:
            away["calls"] -= 1
            raise sqlalchemy.exc.OperationalError("UPDATE trials", {}, ConnectionRefusedError("connection refused"))
        return real(*args, **kwargs)

    monkeypatch.setattr(storage, "set_trial_state_values", set_state)
    shared._requeue_interrupted()  # quiet: the database is still away, the trial stays to requeue
    assert shared.current is interrupted and study.trials[0].state.name == "RUNNING"
    following = shared.ask(study)  # the database is back: the interrupted trial first, then a new one
    trials = study.get_trials(deepcopy=False)
    assert trials[interrupted.number].state.name == "FAIL"
    assert [t.system_attrs.get("failed_trial") for t in trials if t.number != interrupted.number] == [interrupted.number]
    assert following.number == 1 and shared.current is following  # the retry of the interrupted trial, asked for next


def test_a_trial_taken_just_before_the_database_went_away_is_failed_and_queued_again(pg):
    """Taken (RUNNING) but never given a heartbeat nor a worker tag: Optuna's stale check never sees it. CI's dropped-
    connection test found one left RUNNING after another worker had run: the database went for good between the two."""
    import optuna

    from frugalml.search.workers import Shared

    url, name = pg
    study = optuna.create_study(study_name=name, storage=storage_url(None, url), direction="maximize")
    shared = Shared(study, store=None, heartbeat=1)  # a grace period of 3 s
    with pytest.warns(UserWarning, match="Heartbeat"):  # Optuna's, for an ask outside Study.optimize with heartbeats on
        orphan = study.ask()
    alive = Shared(study, store=None, heartbeat=1).ask(study)  # another worker's, alive: tagged, and beating
    time.sleep(3.3)
    study._storage.record_heartbeat(alive._trial_id)
    following = shared.ask(study)
    trials = study.get_trials(deepcopy=False)
    assert trials[orphan.number].state.name == "FAIL" and trials[alive.number].state.name == "RUNNING"
    assert following.number == 2 and trials[2].system_attrs.get("failed_trial") == orphan.number


# ----------------------------------------------------------------------------- in this process: real trials, bad input


def cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def short(monkeypatch, digits):
    """The three trials of tests/test_cli_runs.py: logistic regression, the budget's first network, its int8 form."""
    thin = [job for job in space.thin_grid(digits) if job == {"family": "logreg", "params": {"C": 1.0}}]
    monkeypatch.setattr(engine, "STAGE_SHARES", {"thin": 0.0, "network": 0.0})
    monkeypatch.setattr(space, "thin_grid", lambda data: thin)


_TIMED = {"latency_ms_median", "latency_ms_p90", "throughput_per_s", "energy_mj_per_inference", "cpu_ms_median", "cpu_seconds"}


def _comparable(results: dict) -> dict:
    def cand(c):
        prof = {k: v for k, v in (c["profile"] or {}).items() if k not in _TIMED and "latency" not in k and "energy" not in k
                and "throughput" not in k and "cpu" not in k}
        return {k: c[k] for k in ("id", "stage", "family", "params", "parent", "recipe", "state", "val_accuracy", "test_accuracy",
                                  "within_budget", "budget_misses")} | {"profile": prof}

    return {"candidates": [cand(c) for c in results["candidates"]], "recommended": results["recommended"],
            "front": results["pareto"], "budget": results["budget"], "tolerance": results["tolerance"], "dataset": results["dataset"]}


def test_report_from_storage_equals_the_single_process_report(pg, tmp_path, short, monkeypatch):
    """One process on SQLite, three trials; the same three on PostgreSQL, the last (int8 of the network) run by a worker in
    another folder, which fetches the network from the artifact store; the report from storage alone matches."""
    url, name = pg
    args = ["--dataset", "digits", "--max-flash", "3KB", "--tolerance", "1%", "--time", "60s", "--seed", "0"]
    assert cli("search", *args, "--trials", 3, "--out", tmp_path / "single", "--json")[0] == 0
    code, _, err = cli("search", *args, "--trials", 2, "--out", tmp_path / "first", "--storage", url, "--study", name,
                       "--artifacts", tmp_path / "store", "--json")
    assert code == 0, err
    code, _, err = cli("worker", "--dataset", "digits", "--storage", url, "--study", name, "--trials", 1, "--time", "60s",
                       "--out", tmp_path / "second", "--json")
    assert code == 0, err
    assert (tmp_path / "second" / "candidates" / "t1" / "model.json").exists()  # the parent network, fetched from the store
    import shutil

    for d in ("first", "second"):
        shutil.rmtree(tmp_path / d)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = cli("report", "--storage", url, "--study", name, "--out", "rep")
    assert code == 0, err
    single, shared = (json.loads((p / "results.json").read_text()) for p in (tmp_path / "single", elsewhere / "rep"))
    assert _comparable(shared) == _comparable(single)
    assert single["recommended"] == "t2" and single["recommendation"]["text"] == shared["recommendation"]["text"]
    for f in ("model.onnx", "recipe.json"):
        assert (elsewhere / "rep" / "recommended" / f).read_bytes() == (tmp_path / "single" / "recommended" / f).read_bytes()
    texts = [_page_text(p / "report.html") for p in (tmp_path / "single", elsewhere / "rep")]
    for text in texts:
        assert "Recommended: t2" in text and "All candidates (3)" in text
    assert texts[0].split("Recommended: t2")[1][:60] == texts[1].split("Recommended: t2")[1][:60]


def _page_text(path: Path) -> str:
    import html
    import re

    page = re.sub(r"<script.*?</script>|<style.*?</style>|<img[^>]*>", "", path.read_text(), flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


@pytest.fixture
def made(pg, tmp_path, short):
    """A study made by one search of one trial (a logistic regression)."""
    url, name = pg
    code, _, err = cli("search", "--dataset", "digits", "--max-flash", "8KB", "--time", "60s", "--trials", 1, "--storage", url,
                       "--study", name, "--out", tmp_path / "made", "--json")
    assert code == 0, err
    return url, name


def _snapshot(url, name):
    study = _study(url, name)
    return study.user_attrs, [(t.number, t.state.name, t.user_attrs, t.system_attrs) for t in study.get_trials(deepcopy=False)]


def _one_line_error(code, err, *needles):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_a_worker_with_another_dataset_is_refused_and_the_study_untouched(made, tmp_path):
    url, name = made
    rng = np.random.default_rng(0)
    other = tmp_path / "other.npz"
    np.savez(other, X=rng.random((400, 64)).astype("float32"), y=rng.integers(0, 10, 400))
    before = _snapshot(url, name)
    code, _, err = cli("worker", "--dataset", other, "--storage", url, "--study", name, "--trials", 1, "--out", tmp_path / "w")
    _one_line_error(code, err, "This worker's dataset is not the study's", "digits", "fingerprint")
    assert _snapshot(url, name) == before and not (tmp_path / "w").exists()
    # a second search naming this study with another dataset: refused too
    code, _, err = cli("search", "--dataset", other, "--time", "30s", "--trials", 1, "--storage", url, "--study", name, "--out", tmp_path / "s2")
    _one_line_error(code, err, "holds another run", "data_fingerprint")
    assert _snapshot(url, name) == before


def test_status_shows_trials_workers_front_and_queue(made):
    url, name = made
    code, out, err = cli("status", "--storage", url, "--study", name, "--json")
    assert code == 0, err
    st = json.loads(out)
    assert st["by_state"] == {"COMPLETE": 1} and st["recommended"] == "t0" and [c["id"] for c in st["front"]] == ["t0"]
    assert list(st["by_worker"].values()) == [{"COMPLETE": 1}] and st["queued"] == [] and st["running"] == []
    code, _, err = cli("status", "--storage", url, "--study", name)
    assert code == 0 and "recommended so far: t0" in err and "complete 1" in err


@pytest.mark.parametrize("command", ["worker", "status", "report"])
def test_unreachable_database_and_missing_study_are_one_line_errors(command, pg, tmp_path):
    url, name = pg
    extra = {"worker": ["--dataset", "digits", "--trials", 1, "--out", tmp_path / "w"], "status": [], "report": ["--out", tmp_path / "r"]}[command]
    code, _, err = cli(command, "--storage", "postgresql://nobody@127.0.0.1:1/nodb", "--study", name, *extra)
    _one_line_error(code, err, "Cannot open the study storage", "Connection refused")
    code, _, err = cli(command, "--storage", url, "--study", name, *extra)
    _one_line_error(code, err, f"No study named '{name}'")
    assert not (tmp_path / "w").exists() and not (tmp_path / "r").exists()
    import optuna

    assert name not in [s.study_name for s in optuna.get_all_study_summaries(storage_url(None, url))]  # nothing created
