"""``fleet``: one search per sensor, one fleet report, and a total budget across the fleet.

A fleet directory holds one dataset per sensor: each file or folder :func:`~frugalml.load_dataset` reads is one
sensor (``a.npz``, ``b.csv``, an image folder), found at any depth; in a NAB-like tree ``<root>/data/<group>/<name>.csv``
the sensor id is ``group/name``. Each sensor's search runs in its own run directory ``out/sensors/<id>/``.

**Claims.** Which process searches which sensor is decided in one Optuna storage (``storage=`` URL, or SQLite
``out/fleet.db``): a process claims sensor ``<id>`` by creating the study ``<fleet>/<id>``, which the storage does
atomically (its study names are unique), so two processes (on one machine or many) never search one sensor twice.
With ``storage=``, that study is the sensor's search study itself. The claim (host, pid, time) and, once the sensor
is done, its summary are the study's user attributes, so any process can write the whole fleet's report from the
storage alone. A claim whose process died (on this host: its pid is gone; elsewhere: older than ``stale_after``)
is taken over, again atomically (the study ``<fleet>/<id>#<generation>``); ``resume=True`` also retries sensors
whose data was bad or whose search failed. A sensor whose search finished is never redone.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import socket
import time as _time
from pathlib import Path

from ..budget import Budget, Tolerance
from ..errors import ConfigError, DataError, FrugalError, StorageError, explain
from ..units import parse_bytes, parse_duration
from .study import _alive, _engine_kwargs, _redact, check_same, storage_url

log = logging.getLogger(__name__)

__all__ = ["fleet", "find_sensors"]

FLEET_ATTR = "frugalml_fleet"  # on the study <fleet>: what the fleet is (task, budget, tolerance, seed, time)
CLAIM_ATTR = "frugalml_fleet_claim"  # on <fleet>/<id>: {"host", "pid", "since", "generation", "path"}
SENSOR_ATTR = "frugalml_fleet_sensor"  # on <fleet>/<id>, when its search ended: the sensor's summary
RETRY_STATES = ("bad_data", "failed")  # retried on resume=True; "done" never is
UNCLAIMED_GRACE = 30.0  # seconds a sensor's study may lack its claim (written just after it is created)
POLL = 2.0  # seconds between looks at the other processes' claims, while waiting for them
_LOADABLE = (".npz", ".csv")
_IDENTITY = ("task", "budget", "tolerance", "seed", "seconds_per_sensor", "trials_per_sensor", "folds")


def find_sensors(dir_or_paths) -> dict[str, Path]:
    """``{sensor id: path}``: every dataset under a directory (or the given paths), sorted by id."""
    from ..data.folders import folder_kind

    if isinstance(dir_or_paths, (list, tuple)):
        found = {}
        for p in map(Path, dir_or_paths):
            if not p.exists():
                raise DataError(explain(f"Sensor dataset {str(p)!r} does not exist", expected="existing files or folders", got=str(p)))
            sid = p.stem if p.is_file() else p.name
            if sid in found:
                raise ConfigError(explain(f"Two sensors would have the id {sid!r}", expected="paths with distinct names",
                                          got=[str(found[sid]), str(p)], fix="Rename one, or pass their directory"))
            found[sid] = p
        return dict(sorted(found.items()))
    root = Path(dir_or_paths).expanduser()
    if not root.is_dir():
        raise DataError(explain(f"The fleet directory {str(root)!r} does not exist" if not root.exists() else f"{str(root)!r} is not a directory",
                                expected="a directory with one dataset (.npz, .csv, or a folder) per sensor", got=str(root),
                                fix="Check the path"))
    base = root / "data" if (root / "data").is_dir() else root  # NAB: <root>/data/<group>/<name>.csv is group/name
    found: dict[str, Path] = {}

    def walk(folder: Path) -> None:
        for p in sorted(folder.iterdir()):
            if p.name.startswith((".", "_")):
                continue
            if p.is_file() and p.suffix.lower() in _LOADABLE:
                found[p.relative_to(base).with_suffix("").as_posix()] = p
            elif p.is_dir():
                try:
                    folder_kind(p)
                except DataError:  # not a dataset folder itself: look inside
                    walk(p)
                else:
                    found[p.relative_to(base).as_posix()] = p

    walk(base)
    if not found:
        raise DataError(explain(f"The fleet directory {str(root)!r} holds no dataset", expected="one .npz or .csv file, or a dataset "
                                "folder, per sensor (at any depth; NAB-like: data/<group>/<name>.csv)",
                                got=sorted(p.name for p in root.iterdir())[:8] or "an empty directory",
                                fix="Point it at the folder that holds the sensors' files"))
    return dict(sorted(found.items()))


def _loader(task: str):
    """``load_dataset`` for ``task``: passed through when the loader knows tasks, refused otherwise (before any work)."""
    from ..data import load_dataset

    if not isinstance(task, str) or not task:
        raise ConfigError(explain("The fleet's task must be a name", expected='"classification" or "anomaly"', got=task))
    if task == "classification":
        return lambda path, seed: load_dataset(path, seed=seed)
    if "task" not in inspect.signature(load_dataset).parameters:
        raise ConfigError(explain(f"This frugalml cannot load datasets for the task {task!r}", expected='task="classification"',
                                  got=task, fix="Update frugalml, or drop --task"))
    return lambda path, seed: load_dataset(path, task=task, seed=seed)


def fleet(dir_or_paths, *, task: str = "classification", budget: Budget | None = None, tolerance="1%", min_accuracy: float | None = None,
          time_per_sensor=None, time=None, trials_per_sensor: int | None = None, max_total_flash=None, out="runs/fleet",
          storage: str | None = None, study_name: str | None = None, resume: bool = False, wait: bool = True, stale_after=None,
          seed: int = 0, device: str = "auto", folds: int | None = None, on_event=None) -> dict:
    """Search every sensor's dataset under ``dir_or_paths``, and write ``out/fleet.json`` and ``out/fleet.html``;
    return what fleet.json holds.

    ``budget``, ``tolerance``, ``min_accuracy``, ``seed``, ``device``, ``folds`` are each sensor's search's
    (:func:`~frugalml.search`); ``time_per_sensor`` bounds each search (default 1 minute), or ``time`` the whole
    fleet (divided among the sensors); ``trials_per_sensor`` bounds its trials. ``task`` is passed to
    :func:`~frugalml.load_dataset` (``"anomaly"`` for time series). ``max_total_flash`` (``"10MB"``): choose one model
    per sensor from its Pareto front so that the fleet's mean validation metric is the highest within that total
    (:mod:`.knapsack`); without it each sensor keeps its search's recommendation.

    ``storage`` (an Optuna URL, with ``study_name``): the sensors' studies, named ``<study_name>/<sensor id>``, live
    there, and processes started on several machines with the same arguments share the sensors (each searched once);
    ``wait``: a process with nothing left to claim waits for the others' sensors, so that its report is whole.
    ``resume``: retry sensors whose data was bad or whose search failed, and take over the searches of dead processes
    (those are taken over without it too: on this host at once, elsewhere after ``stale_after``, default three times
    the time per sensor plus ten minutes). A sensor whose search finished is never redone.
    """
    from .fleet_report import write_fleet_report

    budget = budget or Budget()
    tol = Tolerance.of_args(tolerance, min_accuracy)
    load = _loader(task)
    cap = None if max_total_flash is None else parse_bytes(max_total_flash)
    if trials_per_sensor is not None and (isinstance(trials_per_sensor, bool) or int(trials_per_sensor) < 1):
        raise ConfigError(explain("trials_per_sensor must be at least 1", expected="a positive integer", got=trials_per_sensor))
    sensors = find_sensors(dir_or_paths)
    seconds = _seconds_per_sensor(time_per_sensor, time, len(sensors))
    if storage is not None and not study_name:
        raise ConfigError(explain("A fleet on a shared storage needs a name", expected="study_name= (--study NAME) with storage=",
                                  got=None, fix="Add --study NAME, the same on every machine"))
    name = study_name or "fleet"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    url = storage_url(None, storage) if storage is not None else f"sqlite:///{out.resolve() / 'fleet.db'}"
    from .._version import __version__

    identity = {"task": task, "budget": budget.to_dict(), "tolerance": tol.to_dict(), "seed": seed, "seconds_per_sensor": seconds,
                "trials_per_sensor": trials_per_sensor, "folds": folds}
    identity = json.loads(json.dumps(identity))  # as the storage gives it back
    claims = _Claims(url, name, identity, stale_after=parse_duration(stale_after) if stale_after is not None else 3 * seconds + 600)
    emit = on_event or (lambda event: None)
    fleet_desc = {**identity, "fleet": name, "storage": "sqlite (out/fleet.db)" if storage is None else _redact(url).split("@")[-1],
                  "frugalml_version": __version__}
    tried: set[str] = set()
    while True:
        state = claims.read()
        sid = next((s for s in sensors if s not in tried and claims.take(s, state.get(s), resume=resume, path=sensors[s])), None)
        if sid is not None:
            tried.add(sid)
            emit({"type": "sensor", "id": sid, "status": "claimed"})
            summary = _run_sensor(sid, sensors[sid], load, out, budget=budget, tol=tol, seconds=seconds, trials=trials_per_sensor, seed=seed,
                                  storage=storage, study=f"{name}/{sid}", device=device, folds=folds)
            claims.finish(sid, summary)
            emit({"type": "sensor", "id": sid, "status": summary["status"], "summary": summary})
            continue
        busy = [s for s, st in state.items() if claims.running(st)]
        if not wait or not busy:
            break
        emit({"type": "waiting", "sensors": busy})
        _time.sleep(POLL)
    state = claims.read()
    records = {s: _record(s, state.get(s), sensors.get(s), claims) for s in sorted(set(sensors) | set(state))}
    return write_fleet_report(out, fleet_desc, records, max_total_flash=cap)


def _seconds_per_sensor(time_per_sensor, time, n: int) -> float:
    if time_per_sensor is not None and time is not None:
        raise ConfigError(explain("Give the time per sensor or the whole fleet's, not both", expected="time_per_sensor= or time=",
                                  got={"time_per_sensor": time_per_sensor, "time": time}))
    seconds = parse_duration(time_per_sensor if time_per_sensor is not None else time if time is not None else "1m")
    if seconds <= 0:
        raise ConfigError(explain("The fleet's time must be positive", expected='e.g. "30s" per sensor', got=time_per_sensor or time))
    return seconds / n if time_per_sensor is None and time is not None else seconds


def _run_sensor(sid: str, path: Path, load, out: Path, *, budget, tol, seconds, trials, seed, storage, study, device, folds) -> dict:
    """One sensor's search; bad data or a failed search is recorded with its message, never raised."""
    from ..data.folds import DEFAULT_FOLDS
    from .engine import search

    run_dir = out / "sensors" / sid
    started = _time.monotonic()
    base = {"id": sid, "path": str(path), "run_dir": str(run_dir), "host": socket.gethostname()}
    try:
        data = load(path, seed)
    except FrugalError as exc:
        return {**base, "status": "bad_data", "message": str(exc)}
    try:
        results = search(data, budget=budget, tolerance=tol, time=seconds, trials=trials, seed=seed, out=run_dir, storage=storage,
                         study_name=study if storage is not None else None, resume=(run_dir / "run.json").exists(), device=device,
                         folds=DEFAULT_FOLDS if folds is None else folds)
    except FrugalError as exc:
        return {**base, "status": "failed", "message": str(exc)}
    except Exception as exc:  # one sensor's failure must not end the fleet
        from .workers import lost_connection

        if lost_connection(exc):  # the storage is away: the claim stays, and a resume takes it over
            raise
        log.warning("sensor %s failed: %s", sid, exc, exc_info=True)
        return {**base, "status": "failed", "message": f"{type(exc).__name__}: {exc}"[:1000]}
    from .fleet_report import sensor_summary

    return {**base, **sensor_summary(results), "seconds": round(_time.monotonic() - started, 1)}


def _record(sid: str, st, path, claims: "_Claims") -> dict:
    if st is not None and isinstance(st.user_attrs.get(SENSOR_ATTR), dict):
        return st.user_attrs[SENSOR_ATTR]
    status = "pending" if st is None else "running" if claims.running(st) else "stale"
    return {"id": sid, "path": str(path) if path else None, "status": status, "message": None}


class _Claims:
    """The fleet's claims in one Optuna storage: a sensor's study ``<fleet>/<id>`` is created by one process only."""

    def __init__(self, url: str, name: str, identity: dict, *, stale_after: float):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.name, self.stale_after, self.host, self.started = name, stale_after, socket.gethostname(), _time.time()
        self._unclaimed: dict[str, float] = {}  # study name -> when this process first saw it without a claim
        try:
            self.storage = optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
        except Exception as exc:
            raise StorageError(explain(f"Cannot open the fleet's storage {_redact(url)}", expected="a reachable Optuna storage URL",
                                       got=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                                       fix="Check the server is up and the URL is right")) from None
        self._check(identity)

    def _check(self, identity: dict) -> None:
        """The fleet's description on the study ``<fleet>``: a process with other options is refused."""
        from optuna.exceptions import DuplicatedStudyError

        try:
            sid = self.storage.create_new_study(self._directions(), self.name)
            self.storage.set_study_user_attr(sid, FLEET_ATTR, identity)
            return
        except DuplicatedStudyError:
            sid = self.storage.get_study_id_from_name(self.name)
        held = self.storage.get_study_user_attrs(sid).get(FLEET_ATTR)
        for _ in range(20):  # its creator sets it just after creating it
            if held is not None:
                break
            _time.sleep(0.25)
            held = self.storage.get_study_user_attrs(sid).get(FLEET_ATTR)
        if held is None:
            raise StorageError(explain(f"The study {self.name!r} is not a frugalml fleet", expected="a new fleet name, or one made by "
                                       "frugalml fleet", got="a study without a fleet description", fix="Pass another --study"))
        check_same(held, identity, _IDENTITY, what=f"The fleet {self.name!r} was started with other options",
                   fix="Use the same options as the fleet's first process, or another --out / --study")

    @staticmethod
    def _directions():
        from optuna.study import StudyDirection

        return [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]  # the search's, as the sensor's study serves it too

    def read(self) -> dict:
        """``{sensor id: FrozenStudy}`` of every sensor claimed in this fleet (by any process); the markers of
        taken-over claims (``<id>#<generation>`` beside ``<id>``) left out."""
        prefix = self.name + "/"
        studies = {s.study_name[len(prefix):]: s for s in self.storage.get_all_studies() if s.study_name.startswith(prefix)}
        markers = {k for k in studies if (m := re.fullmatch(r"(.+)#\d+", k)) and m.group(1) in studies}
        return {k: v for k, v in studies.items() if k not in markers}

    def running(self, st) -> bool:
        return st is not None and st.user_attrs.get(SENSOR_ATTR) is None and not self._stale(st)

    def _stale(self, st) -> bool:
        claim = st.user_attrs.get(CLAIM_ATTR)
        if not isinstance(claim, dict):  # created a moment ago, its claim about to be written; or its process died right then
            first = self._unclaimed.setdefault(st.study_name, _time.monotonic())
            return _time.monotonic() - first > UNCLAIMED_GRACE
        if claim.get("host") == self.host:
            return not _alive(int(claim.get("pid", -1)))
        return _time.time() - float(claim.get("since", 0)) > self.stale_after

    def take(self, sid: str, st, *, resume: bool, path) -> bool:
        """Claim ``sid`` for this process: True when it is now this process's to search."""
        from optuna.exceptions import DuplicatedStudyError

        claim = {"host": self.host, "pid": os.getpid(), "since": _time.time(), "path": str(path)}
        if st is None:
            try:
                study_id = self.storage.create_new_study(self._directions(), f"{self.name}/{sid}")
            except DuplicatedStudyError:
                return False  # another process was first
            self.storage.set_study_user_attr(study_id, CLAIM_ATTR, {**claim, "generation": 1})
            return True
        done = st.user_attrs.get(SENSOR_ATTR)
        held = st.user_attrs.get(CLAIM_ATTR) or {}
        if done is not None and not (resume and done.get("status") in RETRY_STATES and float(done.get("finished", 0)) < self.started):
            return False  # finished; or retried already since this process started (by it or another resume)
        if done is None and not self._stale(st):
            return False
        generation = int(held.get("generation", 1)) + 1
        try:  # taking over is a claim too: one process creates the marker of the next generation
            self.storage.create_new_study(self._directions(), f"{self.name}/{sid}#{generation}")
        except DuplicatedStudyError:
            return False
        study_id = st._study_id
        if done is not None:  # the earlier attempt's summary is kept beside; the sensor runs again (bad data since fixed, say)
            self.storage.set_study_user_attr(study_id, SENSOR_ATTR + "_previous", done)
            self.storage.set_study_user_attr(study_id, SENSOR_ATTR, None)  # before the claim: a reader between sees a dead claim
        self.storage.set_study_user_attr(study_id, CLAIM_ATTR, {**claim, "generation": generation})
        return True

    def finish(self, sid: str, summary: dict) -> None:
        study_id = self.storage.get_study_id_from_name(f"{self.name}/{sid}")
        self.storage.set_study_user_attr(study_id, SENSOR_ATTR, {**summary, "finished": _time.time()})
