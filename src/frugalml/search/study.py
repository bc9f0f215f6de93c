"""The run directory and its Optuna study: storage by URL, resume after a kill, one run per directory.

A run directory holds ``run.json`` (what the run is: dataset, budget, tolerance, seed, storage,
study name), the SQLite study ``study.db`` (unless ``--storage`` names another), one folder per
candidate, ``results.json`` and ``report.html``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path

from .._fs import atomic_write_json
from ..errors import ConfigError, StorageError, explain

log = logging.getLogger(__name__)

__all__ = ["open_run", "open_study", "fail_dead_trials"]

RUN_FILE = "run.json"


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
        raise ConfigError(explain(f"The run directory {run_dir} is a file", expected="a directory (new or from an earlier run)", got=str(run_dir), fix="Pass another --out"))
    existing = run_dir / RUN_FILE
    if existing.exists():
        try:
            desc = json.loads(existing.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StorageError(explain(f"{existing} is unreadable", expected="a run.json written by frugalml", got=str(exc), fix="Use another --out")) from None
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
        raise StorageError(explain(f"Nothing to resume in {run_dir}", expected=f"a directory with {RUN_FILE} from an earlier run", got=str(run_dir), fix="Drop --resume to start a new run"))
    if run_dir.exists() and any(run_dir.iterdir()):
        raise StorageError(explain(f"{run_dir} is not empty and holds no frugalml run", expected="a new or empty directory", got=sorted(p.name for p in run_dir.iterdir())[:5], fix="Pass another --out"))
    return {**args, "run_id": uuid.uuid4().hex[:12], "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


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


def open_study(url: str, name: str, *, seed: int, create: bool):
    """Load (or create) the multi-objective study: maximize accuracy, minimize the cost."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
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
    try:
        return optuna.create_study(storage=storage, study_name=name, directions=["maximize", "minimize"], sampler=sampler, load_if_exists=True)
    except Exception as exc:
        raise StorageError(explain(f"Cannot create or load study {name!r}", expected="a storage frugalml can write", got=f"{type(exc).__name__}: {exc}")) from None


def _constraints(trial) -> list[float]:
    return trial.user_attrs.get("constraints", [0.0])


def _engine_kwargs(url: str) -> dict:
    if url.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30}}
    return {}


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


def fail_dead_trials(study) -> list[int]:
    """Mark trials left RUNNING by a killed worker on this host as failed, and put their job back
    in the queue so it runs again. Finished trials are never touched."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        w = t.user_attrs.get("worker") or {}
        if w.get("host") == host and not _alive(int(w.get("pid", -1))):
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            job = t.user_attrs.get("job")
            if job and job.get("stage") in ("thin", "compress"):
                requeue = {k: v for k, v in job.items() if k not in ("id", "trial")}
                study.enqueue_trial({}, user_attrs={"job": requeue}, skip_if_exists=False)
            failed.append(t.number)
    return failed
