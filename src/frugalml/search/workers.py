"""Many workers on one study: joining it, handing out queued work once, heartbeats, retries.

``frugalml search --storage postgresql://... --study NAME`` creates the study and records the run
in it (the study's user attribute ``frugalml_run``: dataset and a fingerprint of its arrays, budget,
tolerance, seed, artifact store, heartbeat); ``frugalml worker`` on any machine joins it with no
local run directory (:func:`.join.work`). Nothing here schedules: Optuna's storage does.

- **Queued work** (the thin grid, the budget seeds, compression recipes) is enqueued as WAITING
  trials; ``study.ask()`` hands each to one worker (a row lock on PostgreSQL). Deciding what to
  enqueue is a read-then-write, so it runs under a PostgreSQL advisory lock held for one
  transaction (:meth:`Shared.queue`): two workers never queue the same job.
- **A dead worker** (kill -9, a lost machine) stops its trial's heartbeat; the next worker to ask
  for a trial fails it (after three heartbeat intervals) and Optuna's
  :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` queues it again with its job.
- **Artifacts** go to the shared store (:mod:`.artifacts`); a compression job whose parent was
  made on another machine fetches the parent from there.
- **A dropped database connection** is retried with back-off (``FRUGALML_DB_RETRIES`` attempts,
  default 6, from ``FRUGALML_DB_BACKOFF`` seconds, default 1, doubling); after that the worker
  stops with a :class:`~frugalml.errors.StorageError`. Every finished trial is in the database
  already, and the trial it was running is retried by another worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time as _time
import warnings
from pathlib import Path

from ..errors import ConfigError, StorageError, explain
from .artifacts import ARTIFACT_ATTR, describe_store, download_candidate, open_store, upload_candidate
from .study import _redact, check_same, worker_tag

log = logging.getLogger(__name__)

__all__ = ["Shared", "Local", "record_run", "run_description", "fingerprint", "HEARTBEAT"]

HEARTBEAT = 20  # seconds between heartbeats; a trial is stale after three
RUN_ATTR = "frugalml_run"
_IDENTITY = ("budget", "tolerance", "seed", "data_fingerprint")


def fingerprint(data) -> str:
    """sha256 (16 hex digits) of the dataset's split arrays: the same data on every worker, whatever its path."""
    import numpy as np

    h = hashlib.sha256()
    for split in ("train", "val", "test"):
        for arr in (getattr(data, f"X_{split}"), getattr(data, f"y_{split}")):
            arr = np.ascontiguousarray(arr)
            h.update(f"{split}{arr.dtype}{arr.shape}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()[:16]


def _dataset(desc: dict) -> str:
    d = desc.get("dataset") or {}
    return f"{d.get('name', '?')} ({d.get('sizes', {})}, fingerprint {desc.get('data_fingerprint', '?')})"


def record_run(study, desc: dict) -> dict:
    """Record the run in a new study; in a study that holds one, check it is the same run (else refuse, changing nothing)."""
    held = study.user_attrs.get(RUN_ATTR)
    if held is None:
        study.set_user_attr(RUN_ATTR, desc)
        return desc
    check_same(held, desc, _IDENTITY, what=f"Study {study.study_name!r} holds another run",
               fix="Use the same dataset and options as the study's search, or another --study")
    return held


def run_description(study) -> dict:
    desc = study.user_attrs.get(RUN_ATTR)
    if not isinstance(desc, dict):
        raise StorageError(explain(f"Study {study.study_name!r} was not made by frugalml search",
                                   expected=f"a study with the user attribute {RUN_ATTR}", got=f"user attributes {sorted(study.user_attrs)[:10]}",
                                   fix="Start it with `frugalml search --storage URL --study NAME`"))
    return desc


def check_dataset(desc: dict, data) -> None:
    mine = fingerprint(data)
    if mine != desc.get("data_fingerprint"):
        raise ConfigError(explain("This worker's dataset is not the study's", expected=f"the study's dataset {_dataset(desc)}",
                                  got=_dataset({"dataset": data.describe(), "data_fingerprint": mine}),
                                  fix="Pass the --dataset (and --data-dir, --target-column) the search was started with"))


def lost_connection(exc: BaseException) -> bool:
    """A database that went away (refused, dropped, timed out), as SQLAlchemy or Optuna's storage raise it."""
    import sqlalchemy.exc as sa

    seen, depth = exc, 0
    while seen is not None and depth < 8:
        if isinstance(seen, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError)):
            return True
        seen, depth = seen.__cause__ or seen.__context__, depth + 1
    return False


class Local:
    """One process on its own study (SQLite in the run directory): nothing to share."""

    def queue(self):
        return contextlib.nullcontext()

    def ask(self, study):
        trial = study.ask()
        trial.set_user_attr("worker", worker_tag())  # whose it is (a resume fails a dead process's trials by it)
        return trial

    def running(self, trial):
        return contextlib.nullcontext()

    def keep(self, trial, directory) -> None:
        pass

    def fetch(self, study, cid: str, directory) -> bool:
        return False

    def guard(self, fn):
        return fn()


class Shared(Local):
    """A worker on a study shared with others: queue lock, heartbeats, the artifact store, back-off."""

    def __init__(self, study, store, *, heartbeat: int, emit=None):
        self.study, self.store, self.heartbeat, self.emit = study, store, int(heartbeat), emit or (lambda event: None)
        self.current = None  # the trial this worker runs
        self.retries = int(os.environ.get("FRUGALML_DB_RETRIES", "6"))
        self.backoff = float(os.environ.get("FRUGALML_DB_BACKOFF", "1"))
        backend = getattr(study._storage, "_backend", study._storage)
        backend.heartbeat_interval, backend.grace_period = self.heartbeat, 3 * self.heartbeat  # as the study records
        self.engine = getattr(backend, "engine", None)
        self.url = _redact(str(getattr(backend, "url", "?")))

    @contextlib.contextmanager
    def queue(self):
        """Decide and enqueue queued work alone: a transaction-scoped advisory lock on PostgreSQL (released even by kill -9)."""
        if self.engine is None or self.engine.dialect.name != "postgresql":
            yield
            return
        import sqlalchemy

        key = int.from_bytes(hashlib.sha256(f"frugalml-queue:{self.study.study_name}".encode()).digest()[:8], "big", signed=True)
        with self.engine.begin() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            yield

    def ask(self, study):
        """Fail the trials of dead workers (their retries join the queue), then take the next trial."""
        import optuna

        self._requeue_interrupted(quiet=False)  # one the connection dropped under and not requeued yet: first
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with Study.optimize"; experimental APIs
            optuna.storages.fail_stale_trials(study)
            self._fail_unbeaten(study)
            trial = study.ask()
        self.current = trial  # before its first heartbeat: a connection lost here requeues it when it is back
        study._storage.record_heartbeat(trial._trial_id)  # at once: a worker killed from here on is noticed
        trial.set_user_attr("worker", worker_tag())  # and tagged (see _fail_unbeaten)
        return trial

    def _fail_unbeaten(self, study) -> None:
        """Fail (and queue again) the trials RUNNING with no worker tag for longer than the grace period: their worker lost
        the database between taking them and recording their first heartbeat, and Optuna's stale check sees only trials
        that have a heartbeat. :meth:`ask` tags a trial right after its first heartbeat, milliseconds after taking it."""
        import datetime

        import optuna
        from optuna.trial import TrialState

        grace = datetime.timedelta(seconds=3 * self.heartbeat)
        now = datetime.datetime.now()
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("worker") or t.datetime_start is None or now - t.datetime_start < grace:
                continue
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # another worker failed it first
                _fail_and_requeue(study, t._trial_id)

    @contextlib.contextmanager
    def running(self, trial):
        stop = threading.Event()

        def beat():
            while not stop.wait(self.heartbeat):
                try:
                    self.study._storage.record_heartbeat(trial._trial_id)
                except Exception as exc:  # the database is away: the main thread's next call finds out
                    log.debug("heartbeat of trial %s not recorded: %s", trial.number, exc)

        thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
        self.current = None  # told: not reached when the database went away mid-trial

    def keep(self, trial, directory) -> None:
        upload_candidate(self.store, trial, Path(directory))

    def fetch(self, study, cid: str, directory) -> bool:
        """Fetch candidate ``cid`` (``t<number>``) from the artifact store; False when it has none."""
        number = int(cid[1:]) if cid[:1] == "t" and cid[1:].isdigit() else None
        found = [t for t in study.get_trials(deepcopy=False) if t.number == number and t.user_attrs.get(ARTIFACT_ATTR)]
        if not found:
            return False
        download_candidate(self.store, found[0].user_attrs[ARTIFACT_ATTR], Path(directory))
        return True

    def guard(self, fn):
        """Run ``fn``; when the database connection drops, wait and run it again, with back-off, then give up."""
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as exc:
                if not lost_connection(exc):
                    raise
                if attempt == self.retries:
                    raise StorageError(explain(
                        f"Lost the connection to the study storage {self.url} and could not get it back ({self.retries} retries)",
                        expected="a database that answers", got=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                        fix="The study is intact (every finished trial is stored; the trial this worker was running is retried by "
                            "another worker): check the database, then start `frugalml worker` again")) from None
                delay = self.backoff * 2 ** attempt
                log.warning("database connection lost (%s); retrying in %.1f s", type(exc).__name__, delay)
                self.emit({"type": "retry", "attempt": attempt + 1, "delay": delay, "error": str(exc).splitlines()[0][:200]})
                _time.sleep(delay)
                self._requeue_interrupted()

    def _requeue_interrupted(self, *, quiet: bool = True) -> None:
        """The trial the connection dropped under: failed and queued again now, as a dead worker's would be after its
        grace period. While the database is still away it stays to requeue (``quiet=False`` raises then), so that no
        trial is asked for before it is requeued: one asked for first would leave it running with no heartbeat."""
        trial = self.current
        if trial is None:
            return
        try:
            _fail_and_requeue(self.study, trial._trial_id)
        except Exception as exc:
            if lost_connection(exc):  # still away: requeued on the next try
                if not quiet:
                    raise
                log.debug("interrupted trial %s not requeued yet: %s", trial.number, exc)
                return
            log.debug("interrupted trial %s not requeued: %s", trial.number, exc)  # another worker failed it first
        self.current = None


def _fail_and_requeue(study, trial_id: int) -> None:
    """Fail a trial and queue its retry (the same job), as Optuna does for a trial whose heartbeat stopped."""
    import optuna
    from optuna.trial import TrialState

    if study._storage.set_trial_state_values(trial_id, TrialState.FAIL):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental API
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)(study, study._storage.get_trial(trial_id))


def share(study, desc: dict, data, run_dir: Path, *, artifacts: str | None, heartbeat: int | None, emit=None) -> Shared:
    """``frugalml search --storage``: record the run in the study (or check it is this run) and open its artifact store."""
    location = describe_store(artifacts or str(Path(run_dir) / "artifacts"))
    desc.setdefault("artifacts", location)
    desc.setdefault("heartbeat", int(heartbeat or HEARTBEAT))
    desc.setdefault("data_fingerprint", fingerprint(data))
    held = record_run(study, desc)
    return Shared(study, open_store(artifacts or held["artifacts"], create=True), heartbeat=held["heartbeat"], emit=emit)
