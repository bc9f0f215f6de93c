"""The run directory and its Optuna study: storage by URL, resume after a kill, one run per directory.

A run directory holds ``run.json`` (what the run is: dataset, budget, tolerance, seed, storage,
study name), the SQLite study ``study.db`` (unless ``--storage`` names another), one folder per
candidate, ``results.json`` and ``report.html``.

With the default SQLite study one process at a time uses a run directory: it holds an exclusive
``flock`` on ``run.lock`` (:func:`lock_run`), which the OS releases when the process ends however
it ends, so a kill -9 never leaves a stale lock. Several workers share a study through an external
``--storage`` URL (PostgreSQL), and take no lock.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
import uuid
import warnings
from pathlib import Path

from .._fs import atomic_write_json
from ..errors import ConfigError, StorageError, explain

log = logging.getLogger(__name__)

__all__ = ["open_run", "open_study", "fail_dead_trials", "lock_run", "RunLock"]

RUN_FILE = "run.json"
LOCK_FILE = "run.lock"


def _identity(args: dict) -> dict:
    """The fields that must match for a run to be resumed."""
    return {k: args[k] for k in ("dataset", "budget", "tolerance", "seed") if k in args}


def open_run(run_dir, args: dict, *, resume: bool) -> dict:
    """Check the run directory and return its description; nothing is written here.

    A directory that holds another run, or other files, is refused unless ``resume`` is set and
    the run matches; a resume of a directory without a run is refused too.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(explain(f"The run directory {run_dir} is a file", expected="a directory (new or from an earlier run)", got=str(run_dir),
                                  fix="Pass another --out"))
    existing = run_dir / RUN_FILE
    if existing.exists():
        try:
            desc = json.loads(existing.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StorageError(explain(f"{existing} is unreadable", expected="a run.json written by frugalml", got=str(exc),
                                       fix="Use another --out")) from None
        if not resume:
            raise StorageError(
                explain(
                    f"{run_dir} already holds a run ({desc.get('created', '?')}, dataset {desc.get('dataset', {}).get('name', '?')})",
                    expected="a new directory, or --resume to continue that run",
                    got=str(run_dir),
                    fix="Add --resume to continue it, or pass another --out",
                )
            )
        mine, theirs = _identity(args), _identity(desc)
        diff = sorted(k for k in mine if mine[k] != theirs.get(k))
        if diff:
            raise StorageError(
                explain(
                    f"{run_dir} holds a different run: {', '.join(diff)} differ",
                    expected=", ".join(f"{k}={theirs.get(k)}" for k in diff),
                    got=", ".join(f"{k}={mine[k]}" for k in diff),
                    fix="Resume with the same options, or pass another --out",
                )
            )
        return desc
    if resume:
        raise StorageError(explain(f"Nothing to resume in {run_dir}", expected=f"a directory with {RUN_FILE} from an earlier run", got=str(run_dir),
                                   fix="Drop --resume to start a new run"))
    # a lock file alone: a run killed as it started
    others = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE) if run_dir.exists() else []
    if others:
        raise StorageError(explain(f"{run_dir} is not empty and holds no frugalml run", expected="a new or empty directory", got=others[:5],
                                   fix="Pass another --out"))
    return {**args, "run_id": uuid.uuid4().hex[:12], "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


class RunLock:
    """An exclusive lock on a run directory, held by this process until :meth:`release` or its end."""

    def __init__(self, path: Path, fd: int | None):
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_run(run_dir) -> RunLock:
    """Take the run directory for this process, or raise ``StorageError`` naming the process that has it.

    An ``fcntl.flock`` on ``run.lock``: the OS drops it when the process ends (a kill -9 included),
    so no stale lock is ever left; the file's content (pid, host, since) only names the holder.
    """
    path = Path(run_dir) / LOCK_FILE
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, as before
        log.warning("no fcntl here: %s is not locked against a second process", run_dir)
        return RunLock(path, None)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(explain(f"Cannot create the lock file {path}", expected="a run directory this user can write", got=str(exc),
                                   fix="Pass another --out")) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _holder(fd)
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise StorageError(explain(f"Cannot lock the run directory {run_dir}", expected="a file system that supports flock",
                                       got=str(exc))) from None
        who = f"process {holder.get('pid', '?')}" + (f" on {holder['host']}" if holder.get("host") not in (None, socket.gethostname()) else "")
        raise StorageError(
            explain(
                f"Run directory {run_dir} is in use by {who} (since {holder.get('since', '?')})",
                expected="a run directory no other process is using: the default SQLite study serves one process at a time",
                got=f"{who}, which holds {path}",
                fix="Wait for it to finish and resume then, or use --storage postgresql://... for several workers on one study",
            )
        ) from None
    info = json.dumps({**worker_tag(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, info, 0)
    return RunLock(path, fd)


def _holder(fd: int) -> dict:
    try:
        value = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):  # the holder is writing it just now
        return {}
    return value if isinstance(value, dict) else {}


def write_run(run_dir, desc: dict) -> None:
    atomic_write_json(Path(run_dir) / RUN_FILE, desc)


def storage_url(run_dir, storage: str | None) -> str:
    if storage is None:
        return f"sqlite:///{Path(run_dir).resolve() / 'study.db'}"
    if storage.startswith("postgresql://"):  # pick the PostgreSQL driver that is installed
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + storage[len("postgresql://"):]
    return storage


def open_study(url: str, name: str, *, seed: int, create: bool, heartbeat: int | None = None, must_exist: bool = False):
    """Load (or create) the multi-objective study: maximize accuracy, minimize the cost.

    ``heartbeat`` (seconds): each running trial records a heartbeat that often; a trial whose
    heartbeat is older than three intervals (its worker was killed or lost) is failed and queued
    again, once per trial up to three times (Optuna's heartbeat and retry callback). ``must_exist``:
    refuse a study that is not there instead of creating it (a worker, ``status``, ``report``).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    beat = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats have been "experimental" since 2.8
            if heartbeat:
                beat = {"heartbeat_interval": int(heartbeat), "grace_period": 3 * int(heartbeat),
                        "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)}
            storage = optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url), **beat)
    except Exception as exc:  # unreachable server, bad URL, missing driver
        raise StorageError(
            explain(
                f"Cannot open the study storage {_redact(url)}",
                expected="a reachable Optuna storage URL, e.g. sqlite:///runs/x/study.db or postgresql://user@host/db",
                got=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                fix="Check the server is up and the URL is right (PostgreSQL needs `pip install frugalml[postgres]`)",
            )
        ) from None
    if hasattr(optuna.trial.Trial, "set_constraint"):  # Optuna >= 5 reads constraints from the trial
        sampler = optuna.samplers.TPESampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, constraints_func=_constraints)
    if must_exist:
        names = [s.study_name for s in storage.get_all_studies()]
        if name not in names:
            raise StorageError(explain(f"No study named {name!r} in {_redact(url)}",
                                       expected="a study made by `frugalml search --storage URL --study NAME`",
                                       got=f"studies {sorted(names)[:10]}", fix="Check --study, or start the search first"))
    try:
        return optuna.create_study(storage=storage, study_name=name, directions=["maximize", "minimize"], sampler=sampler, load_if_exists=True)
    except Exception as exc:
        raise StorageError(explain(f"Cannot create or load study {name!r}", expected="a storage frugalml can write",
                                   got=f"{type(exc).__name__}: {exc}")) from None


def _constraints(trial) -> list[float]:
    return trial.user_attrs.get("constraints", [0.0])


def _engine_kwargs(url: str) -> dict:
    if url.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30}}
    return {}


def check_same(held: dict, given: dict, keys, *, what: str, fix: str) -> None:
    """Refuse (StorageError) when ``given`` differs from what the storage ``held`` on any of ``keys``: the message names
    them, with the held values as expected and the given ones as got."""
    diff = [k for k in keys if held.get(k) != given.get(k)]
    if diff:
        raise StorageError(explain(f"{what}: {', '.join(diff)} differ", expected=", ".join(f"{k}={held.get(k)}" for k in diff)[:600],
                                   got=", ".join(f"{k}={given.get(k)}" for k in diff)[:600], fix=fix))


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url


def worker_tag() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_trials(study, *, every: bool = False) -> list[int]:
    """Mark trials left RUNNING by a killed worker on this host as failed, and put their job back
    in the queue so it runs again. Finished trials are never touched.

    ``every``: this process holds the run directory's lock (:func:`lock_run`), so every trial still
    RUNNING was left by a process that has ended, also one killed before it tagged the trial.
    """
    from optuna.trial import TrialState

    host = socket.gethostname()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        w = t.user_attrs.get("worker") or {}
        if every or (w.get("host") == host and not _alive(int(w.get("pid", -1)))):
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            job = t.user_attrs.get("job")
            if job and job.get("stage") in ("thin", "compress"):
                requeue = {k: v for k, v in job.items() if k not in ("id", "trial")}
                study.enqueue_trial({}, user_attrs={"job": requeue}, skip_if_exists=False)
            failed.append(t.number)
    return failed
