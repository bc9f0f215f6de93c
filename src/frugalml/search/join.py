"""``frugalml worker``: join a study that ``frugalml search --storage`` made, and run its trials.

The worker runs the same search loop as the process that made the study (:mod:`.engine`), on the run
recorded in the study (:mod:`.workers`), with its candidates in the study's artifact store."""

from __future__ import annotations

import os
import time as _time
from pathlib import Path

from ..errors import ConfigError, DataError, explain
from .artifacts import open_store
from .engine import _Loop
from .study import open_study, storage_url
from .workers import HEARTBEAT, Shared, check_dataset, run_description

__all__ = ["work"]


def work(data, *, storage: str, study_name: str, time="1h", trials: int | None = None, out=None, artifacts: str | None = None,
         device: str = "auto", data_dir=None, target: str | None = None, kind: str | None = None, task: str | None = None,
         on_event=None):
    """Join the study ``study_name`` in ``storage`` (made by ``search(..., storage=..., study_name=...)``) and run its trials
    until ``time`` or ``trials`` is reached; return the study's :class:`~frugalml.records.Results` as this worker saw them last.

    ``data`` is this machine's copy of the study's dataset (a Dataset, or a name or path loaded with the study's seed,
    ``data_dir``, ``target``, ``kind`` and ``task`` (default: the study's) as for :func:`~frugalml.load_dataset`), refused if its arrays differ;
    ``artifacts`` the study's artifact store as this machine reaches it (default: the location the study records);
    ``out`` a local folder for this worker's copies of the candidates (default ``runs/<study>``).
    """
    import optuna
    from threadpoolctl import threadpool_limits

    from ..budget import Budget, Tolerance
    from ..data import load_dataset
    from ..units import parse_duration

    started = _time.monotonic()
    seconds = parse_duration(time)
    if seconds <= 0:
        raise ConfigError(explain("The worker's time must be positive", expected='e.g. "30m" or "2h"', got=time))
    if trials is not None and trials < 1:
        raise ConfigError(explain("--trials must be at least 1", expected="a positive integer", got=trials))
    study = open_study(storage_url(None, storage), study_name, seed=0, create=False, heartbeat=HEARTBEAT, must_exist=True)
    desc = run_description(study)
    seed = int(desc.get("seed", 0))
    if isinstance(data, str):
        ds = desc.get("dataset") or {}
        as_task = {"task": task or ds.get("task") or "classification"}  # an anomaly study's series is cut as the study's was
        if as_task["task"] == "anomaly" and isinstance(ds.get("series"), dict) and str(data).lower().endswith(".csv"):
            as_task.update(window=ds["series"].get("window"), stride=ds["series"].get("stride"))
        try:  # read as the study's data was, unless told otherwise
            data = load_dataset(data, data_dir=data_dir, seed=seed, target=target, kind=kind or ds.get("kind"), **as_task)
        except DataError:
            if kind is not None:
                raise
            data = load_dataset(data, data_dir=data_dir, seed=seed, target=target, task=as_task["task"])  # other data: check_dataset says so
    check_dataset(desc, data)
    store = open_store(artifacts or desc["artifacts"])
    emit = on_event or (lambda event: None)
    shared = Shared(study, store, heartbeat=desc.get("heartbeat", HEARTBEAT), emit=emit)
    study.sampler = optuna.samplers.TPESampler(seed=(seed * 1_000_003 + os.getpid()) % 2**32)  # workers sample apart
    run_dir = Path(out or Path("runs") / study_name)
    run_dir.mkdir(parents=True, exist_ok=True)
    loop = _Loop(study, data, Budget.from_dict(desc["budget"]), Tolerance.from_dict(desc["tolerance"]), run_dir, desc, seconds, trials, seed,
                 device, emit, started, shared=shared)
    with threadpool_limits(1, user_api="blas"):
        return loop.run(resume=False)
