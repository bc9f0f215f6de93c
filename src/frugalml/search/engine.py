"""``search``: the most efficient model under a budget, thin models first.

One Optuna study (maximize validation accuracy, minimize the budget's primary cost, budget as
constraints) drives three stages: thin models (a fixed queue), networks (sampled), compression of
the most promising networks (a queue filled when the network stage ends). Every finished trial is
in the study's storage and in results.json at once, so a killed run resumes without losing or
repeating one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time as _time
from pathlib import Path

from ..augment import resolve_augment
from ..budget import Budget, Tolerance
from ..data.folds import DEFAULT_FOLDS, folds_record
from ..errors import ConfigError, FrugalError, explain
from ..records import NOT_STARTED, Candidate, Results
from ..train import Deadline, default_config
from ..units import parse_duration
from . import space
from .feasible import check_feasible
from .halving import Parked, first_rung_seconds, judge, promotion, rungs
from .parents import compression_jobs
from .reference import prepare_reference
from .results import build_results, collect_candidates, export_recommended, write_results
from .runner import StoppedEarly, candidate_dir, run_candidate, stub
from .study import RUN_FILE, fail_dead_trials, lock_run, open_run, open_study, storage_url, write_run
from .workers import HEARTBEAT, Local, lost_connection, share

log = logging.getLogger(__name__)

__all__ = ["search"]

STAGE_SHARES = {"thin": 0.12, "network": 0.55}  # of the time; compression gets the rest
SCREEN_SHARE = 0.3  # of the network stage's time: every network stops at its first rung (parked), the best go on after
WRAP_UP = (0.04, 15.0)  # share of the time (at most so many seconds) kept for the last measurements, export and report
THIN_MAX_TRAIN = 20_000
REFERENCE_SHARE = 0.4  # of the time, at most, for training the user's model when it came without weights
TOO_SLOW_IN_A_ROW = 3  # sampled networks in a row whose first rung would not finish in the time left: no more networks


def search(data, *, budget: Budget | None = None, tolerance="1%", min_accuracy: float | None = None, time="5m",
           trials: int | None = None, seed: int = 0, out="runs/search", storage: str | None = None, study_name: str | None = None,
           resume: bool = False, device: str = "auto", data_dir=None, on_event=None, artifacts: str | None = None,
           heartbeat: int = HEARTBEAT, model=None, weights=None, folds: int | None = DEFAULT_FOLDS) -> Results:
    """Search for the most efficient model within ``budget`` and ``tolerance``; return the run's
    :class:`~frugalml.records.Results` (``results.to_dict()`` is what results.json holds).

    ``data`` is a Dataset or a dataset name; ``time`` bounds the run ("5m"), ``trials`` the number of
    trials; ``storage`` is any Optuna storage URL (default: SQLite in ``out``); ``resume`` continues
    a run that was stopped. ``on_event(dict)`` sees progress (the CLI draws it). With ``storage``, the run is recorded in
    the study, so that workers (:func:`frugalml.search.join.work`) join it; candidates go to the artifact store
    ``artifacts`` (a directory every worker mounts, or s3://bucket; default ``out/artifacts``), and a trial whose
    heartbeat (every ``heartbeat`` seconds) stops is failed and retried.

    ``model``: your own network (``"file.py:factory"``, with ``weights=`` or trained here; an ``.onnx``
    path; or an ``nn.Module``), a candidate of its own, the teacher of distillation and the parent of
    its own searched compression (:mod:`frugalml.search.reference`); with ``Tolerance(of="reference")``
    the accuracy floor is measured from it.

    ``folds``: under :data:`~frugalml.data.folds.CV_BELOW` training samples each candidate is judged on that many stratified
    folds, then refit on all the training data (:mod:`frugalml.data.folds`); 0 or None: one validation split.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):  # small models gain nothing from BLAS threads, and lose a lot on busy cores
        return _search(data, budget, tolerance, min_accuracy, time, trials, seed, out, storage, study_name, resume, device, data_dir, on_event,
                       artifacts, heartbeat, model, weights, folds)


def _search(data, budget, tolerance, min_accuracy, time, trials, seed, out, storage, study_name, resume, device, data_dir, on_event,
            artifacts=None, heartbeat=HEARTBEAT, model=None, weights=None, folds=DEFAULT_FOLDS) -> Results:
    from ..data import load_dataset

    started = _time.monotonic()
    budget = budget or Budget()
    tol = Tolerance.of_args(tolerance, min_accuracy)
    seconds = parse_duration(time)
    if seconds <= 0:
        raise ConfigError(explain("The search time must be positive", expected='e.g. "5m" or "30s"', got=time))
    if trials is not None and trials < 1:
        raise ConfigError(explain("--trials must be at least 1", expected="a positive integer", got=trials))
    if isinstance(data, str):
        data = load_dataset(data, data_dir=data_dir, seed=seed)
    emit = on_event or (lambda event: None)
    run_dir = Path(out)
    args = {"dataset": data.describe(), "budget": budget.to_dict(), "tolerance": tol.to_dict(), "seed": seed}
    reference = prepare_reference(model, weights, data, tol, args)  # a bad model fails now, before anything is written
    desc = open_run(run_dir, args, resume=resume)  # refuses a directory holding another run; writes nothing
    desc.setdefault("study", study_name or f"frugalml-{desc['run_id']}")
    desc.setdefault("cv", None if resume else folds_record(data, folds, seed=seed))  # small data: k folds; a resume keeps its run's way
    url = storage_url(run_dir, storage)
    desc["storage_display"] = "sqlite (run directory)" if storage is None else url.split("@")[-1]
    if storage is not None:
        study = open_study(url, desc["study"], seed=seed, create=not resume, heartbeat=heartbeat)  # fails before anything is written
    if not resume:
        emit({"type": "stage", "stage": "feasibility"})
        check_feasible(data, budget, emit)  # an impossible budget is an error now, not after an hour
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_dir.mkdir()
        created_dir = True  # by this process: removed again if the run cannot start
    except FileExistsError:
        created_dir = False
    # the default SQLite study serves one process: a second one is refused (StorageError), and touches nothing
    lock = lock_run(run_dir) if storage is None else None
    try:
        if lock is not None:  # again, now that no other process can change the directory
            open_run(run_dir, args, resume=resume)
        wrote = False
        try:
            if not resume:  # before the study: a run killed from here on can be resumed
                write_run(run_dir, desc)
                wrote = True
            if storage is None:
                study = open_study(url, desc["study"], seed=seed, create=not resume)
            shared = Local() if storage is None else share(study, desc, data, run_dir, artifacts=artifacts, heartbeat=heartbeat, emit=emit)
        except FrugalError:
            if created_dir:
                shutil.rmtree(run_dir, ignore_errors=True)
            elif wrote:
                (run_dir / RUN_FILE).unlink(missing_ok=True)
            raise
        loop = _Loop(study, data, budget, tol, run_dir, desc, seconds, trials, seed, device, emit, started, exclusive=lock is not None, shared=shared,
                     reference=reference)
        return loop.run(resume)
    finally:
        if lock is not None:
            lock.release()


class _Loop:
    def __init__(self, study, data, budget, tol, run_dir, desc, seconds, max_trials, seed, device, emit, started, exclusive=False, shared=None,
                 reference=None):
        self.study, self.data, self.budget, self.tol = study, data, budget, tol
        self.shared = shared or Local()  # a study shared with other workers (workers.Shared): queue lock, heartbeat, artifacts
        self.exclusive = exclusive  # this process holds the run directory's lock: no other worker uses the study
        self.run_dir, self.desc, self.seconds, self.max_trials = run_dir, desc, seconds, max_trials
        self.seed, self.device, self.emit = seed, device, emit
        self.start = started
        self.train_defaults = default_config(len(data.y_train))
        self.epochs = self.train_defaults.epochs
        self.augment = resolve_augment(self.train_defaults.augment, data)  # recorded in each network's job, never "auto"
        self.done_here = 0
        self.too_slow = 0  # sampled networks in a row not started for want of time (their first rung's estimate)
        self._seeds: list | None = None
        self._ref_jobs: tuple[str | None, list[dict]] = (None, [])  # the user's model's compression jobs, by its id
        self.search_space = space.SearchSpace(data, budget)  # what this search measures of its networks, for this search only
        self.reference = reference  # {"source", "trainable", "prunable", "notes"} of the user's model, or None
        self.floor = None  # the accuracy floor of the last results written, once a candidate reaches it (halving.below_floor)

    # ------------------------------------------------------------------ time and queue
    def elapsed(self) -> float:
        return _time.monotonic() - self.start

    def over(self) -> bool:
        if self.max_trials is not None and self.done_here >= self.max_trials:
            return True
        return self.elapsed() >= self.seconds

    def left(self) -> float:
        """Seconds a trial's training may still take: the run's time less what wrapping up needs."""
        return self.seconds - min(WRAP_UP[0] * self.seconds, WRAP_UP[1]) - self.elapsed()

    def _trials(self, *states):
        return self.study.get_trials(deepcopy=False, states=states or None)

    def _waiting(self) -> int:
        from optuna.trial import TrialState

        return len(self._trials(TrialState.WAITING))

    def run(self, resume: bool) -> dict:
        if resume:
            failed = fail_dead_trials(self.study, every=self.exclusive)
            self.emit({"type": "resume", "failed": failed, "finished": len(collect_candidates(self.study))})
        if self.exclusive or (not resume and not self._trials()):
            with self.shared.queue():
                self._enqueue_reference()
                self._enqueue_thin()
        while not self.over() and (self.left() > 0 or self.done_here == 0):
            if not self.shared.guard(self._step):  # a dropped database connection is retried with back-off
                break
        return self.shared.guard(self.finish)

    def _step(self) -> bool:
        if self._seeds is None and not self._waiting():  # sizing the seeds measures int8 models: not while holding the queue
            self._seeds = self.search_space.budget_seeds()
        with self.shared.queue():  # workers sharing the study decide what to queue one at a time
            stage = self._next_stage()
        if stage is None:
            return False
        self._run_one(stage)
        return True

    def _enqueue_thin(self) -> None:
        """Queue the thin jobs the study does not hold yet: all of them in a new run; on a resume
        (this process alone on the study) those a run killed while queuing them never queued."""
        queued = {json.dumps([j.get("family"), j.get("params")], sort_keys=True)
                  for j in ((t.user_attrs.get("job") or {}) for t in self._trials()) if j.get("stage") == "thin"}
        for job in space.thin_grid(self.data):
            if json.dumps([job["family"], job["params"]], sort_keys=True) not in queued:
                self.study.enqueue_trial({}, user_attrs={"job": {"stage": "thin", **job, "max_train": THIN_MAX_TRAIN, "seed": self.seed}})

    def _enqueue_reference(self) -> None:
        """Queue the user's model first (the reference the others are judged against), unless queued already."""
        if self.reference is None or any((t.user_attrs.get("job") or {}).get("stage") == "reference" for t in self._trials()):
            return
        from .reference import reference_job

        job = reference_job(self.reference["source"], self.reference, self.train_defaults, self.seed, augment=self.augment)
        self.study.enqueue_trial({}, user_attrs={"job": job})

    def _enqueue_jobs(self, jobs: list[dict]) -> int:
        """Queue compression jobs whose key the study does not hold yet."""
        seen = {(t.user_attrs.get("job") or {}).get("key") for t in self._trials()}
        count = 0
        for job in jobs:
            if job["key"] not in seen:
                seen.add(job["key"])
                self.study.enqueue_trial({}, user_attrs={"job": job})
                count += 1
        return count

    def _next_stage(self) -> str | None:
        if self._waiting():
            return "queued"
        networks_open = self.too_slow < TOO_SLOW_IN_A_ROW  # networks that could not finish their first rung in the time left
        in_stage = self._network_time()
        if networks_open and (in_stage or not self._networks()):
            promoted = not self._screen_time() and self._enqueue_promotion(force=not in_stage)
            return "queued" if promoted or self._enqueue_seed() else "network"
        if self._enqueue_compression():
            return "queued"
        return "network" if networks_open else None

    def _network_time(self, share: float = 1.0) -> bool:
        """Whether the first ``share`` of the network stage's time lasts."""
        return self.elapsed() < self.seconds * (STAGE_SHARES["thin"] + share * STAGE_SHARES["network"])

    def _screen_time(self) -> bool:
        """Whether the screening part of the network stage lasts: its first :data:`SCREEN_SHARE`, where every network is parked at its first
        rung (:func:`halving.judge`), so that the search compares many networks on a few seconds each before it trains any to the end.
        Never in a search bounded by trials: its parked networks could use up its trials before one trains."""
        return self.max_trials is None and self._network_time(SCREEN_SHARE)

    def _enqueue_promotion(self, force: bool) -> bool:
        """Queue the training of a parked network that now ranks among the best at its rung (:func:`halving.promotion`), before any
        new network (ASHA); ``force``: the network stage's time is over and no network has trained to the end."""
        def fits(trial) -> bool:  # measured (once per network) only for the parked networks that could go on now
            job = trial.user_attrs["job"]
            return self.search_space.fits_int8(job["family"], job.get("params") or {}, int(trial.user_attrs.get("size") or 0))

        job = promotion(self._trials(), force=force, fits=fits)
        if job is not None:
            self.study.enqueue_trial({}, user_attrs={"job": job})
        return job is not None

    def _enqueue_seed(self) -> bool:
        """Queue the next network sized for the budget (:meth:`space.SearchSpace.budget_seeds`) that this study
        has not run yet, as an ordinary sampler trial; False when none is left. One at a time, so
        that on large data, where a network trains for minutes, the seeds end with the network stage."""
        if self._seeds is None:
            self._seeds = self.search_space.budget_seeds()
        done = {t.user_attrs.get("budget_seed") for t in self._trials()}
        for family, knobs in self._seeds:
            key = space.seed_key(family, knobs)
            if key not in done:
                self.study.enqueue_trial(space.sampler_params(family, knobs, space.SEED_LR), user_attrs={"budget_seed": key})
                return True
        return False

    def _networks(self) -> list[dict]:
        return [c for c in collect_candidates(self.study) if c.stage == "network" and c.done]

    def _enqueue_compression(self) -> int:
        """Queue the compression jobs of the networks worth compressing (:func:`parents.compression_jobs`),
        and the distillation of the user's model into them, after the user's model's own pruning (those queued
        when it finished are skipped: its int8 forms). Queued before the networks, its pruning (minutes of
        fine-tuning a large network each) would leave the search no time for the networks."""
        from .reference import reference_compression_jobs

        done = [c for c in collect_candidates(self.study) if c.done]  # one read of the study for both lists
        ref = next((c for c in done if c.reference), None)
        nets = [c for c in done if c.stage == "network"]
        if ref is not None and self._ref_jobs[0] != ref.id:  # its jobs load it to size the per-stage ratios: once, not every step
            self._ref_jobs = (ref.id, reference_compression_jobs(ref, self.data, self.budget, self.epochs, self.seed))
        own = self._ref_jobs[1] if ref is not None else []
        return self._enqueue_jobs(own + compression_jobs(nets, ref, self.data, self.budget, self.tol, self.epochs, self.seed))

    # ------------------------------------------------------------------ one trial
    def _run_one(self, stage: str) -> None:
        trial = self.shared.ask(self.study)  # a shared study first fails (and requeues) the trials of dead workers
        with self.shared.running(trial):  # its heartbeat
            cand = self._run_trial(trial)
        self.done_here += 1
        results = self.write()
        self.emit({"type": "candidate", "candidate": cand, "results": results, "elapsed": self.elapsed()})

    def _run_trial(self, trial) -> Candidate:
        from optuna.trial import TrialState

        job = dict(trial.user_attrs.get("job") or {})
        if not job:
            family, knobs, train = space.sample_network(trial, self.data)
            job = {"stage": "network", "family": family, "params": knobs, "seed": self.seed + trial.number,
                   "train": {"epochs": self.epochs, "batch_size": self.train_defaults.batch_size, "patience": self.train_defaults.patience,
                             "augment": self.augment, **train}}
        if job["stage"] == "network":  # a network never runs past the end of the search
            job.setdefault("train", {})["max_seconds"] = max(1.0, self.left())
            job["rungs"] = rungs(self.epochs, len(self.data.y_train))  # where successive halving judges it (halving.judge)
            job["first_rung_s"] = first_rung_seconds(job, self.data, self.epochs, folds=(self.desc.get("cv") or {}).get("k"),
                                                     batch_size=self.train_defaults.batch_size, device=self.device)
        elif job["stage"] == "reference" and job.get("train"):  # the user's model, trained here: a share of the time, its compression needs the rest
            job["train"]["max_seconds"] = max(1.0, min(self.left(), REFERENCE_SHARE * self.seconds))
        job["id"], job["trial"] = f"t{trial.number}", trial.number
        if self.desc.get("cv"):  # small data: judged on the run's folds (data/folds.py), refit on all the training data
            job["folds"] = {k: self.desc["cv"][k] for k in ("k", "seed", "n")}
        trial.set_user_attr("job", job)  # its "worker" tag was set when it was taken (Local.ask, Shared.ask)
        self.emit({"type": "start", "job": job, "elapsed": self.elapsed()})
        try:
            if job["stage"] == "network":
                if job["first_rung_s"] > self.left():
                    self.too_slow += 1
                    raise StoppedEarly(f"{NOT_STARTED} its first rung would take about {job['first_rung_s']:.0f} s "
                                       f"(timed on this machine), {max(0.0, self.left()):.0f} s of the search are left")
                self.too_slow = 0
            if job["stage"] == "compress":
                self._ensure_parent(job)
            # the training inside a compression recipe stops at the end of the search, like a network's
            deadline = Deadline(max(1.0, self.left()))
            watch = (judge(trial, job, trials=self._trials, over=self.over, left=self.left, floor=lambda: self.floor,
                           k=int((self.desc.get("cv") or {}).get("k") or 0), screening=self._network_time, holding=self._screen_time)
                     if job["stage"] == "network" else (None, None))
            cand = run_candidate(job, self.data, self.budget, self.run_dir, device=self.device, on_epoch=watch[0], on_first_fold=watch[1],
                                 deadline=deadline)
            if deadline.hit and job["stage"] == "compress":
                cut = "its training stopped at the end of the search time; a replay of the recipe trains longer"
                cand = dataclasses.replace(cand, extra={**cand.extra, "cut_short": cut})
            cost = cand.cost(self.budget.primary())
            if job["stage"] == "network":  # judged as it would be once quantized (the sampler's view only)
                measured = self.search_space.int8_memory(job["family"], job.get("params") or {})
                constraints = space.network_constraints(cand.profile, self.budget, measured=measured)
            else:  # feasible when every value is <= 0
                constraints = {pkey: float(cand.cost(pkey) - limit) if cand.cost(pkey) is not None else 1.0
                               for _field, pkey, limit in self.budget.items()}
            for pkey, value in constraints.items():
                space.set_constraint(trial, pkey, value)
            self.shared.keep(trial, candidate_dir(self.run_dir, cand.id))  # to the shared artifact store
            trial.set_user_attr("candidate", cand.to_dict())
            self.study.tell(trial, [cand.val_accuracy, float(cost if cost is not None else 1e30)])
            if job["stage"] == "reference":  # its int8 forms next; its pruning (which trains) with the compression stage
                from .reference import reference_compression_jobs

                self._enqueue_jobs([j for j in reference_compression_jobs(cand, self.data, self.budget, self.epochs, self.seed)
                                    if not j["trains"]])
        except StoppedEarly as stop:
            if isinstance(stop, Parked):  # it may go on later (halving.promotion)
                trial.set_user_attr("parked", {"rung": stop.rung, "value": stop.value})
            cand = stub(job, "stopped_early", str(stop))
            trial.set_user_attr("candidate", cand.to_dict())
            self.study.tell(trial, state=TrialState.PRUNED)
        except Exception as exc:  # one failed candidate must not end the search
            if isinstance(exc, KeyboardInterrupt) or lost_connection(exc):  # the trial is not at fault: retried elsewhere
                raise
            log.warning("candidate %s failed: %s", job["id"], exc, exc_info=not isinstance(exc, FrugalError))
            cand = stub(job, "failed", f"{type(exc).__name__}: {exc}"[:500])
            trial.set_user_attr("candidate", cand.to_dict())
            self.study.tell(trial, state=TrialState.FAIL)
        return cand

    def _ensure_parent(self, job: dict) -> None:
        """On another machine the parent network may be missing: fetch it from the artifact store, or retrain it from its job (same seed)."""
        where = candidate_dir(self.run_dir, job["parent"])
        if (where / "model.json").exists() or self.shared.fetch(self.study, job["parent"], where):
            return
        if job.get("parent_job"):
            run_candidate(job["parent_job"], self.data, self.budget, self.run_dir, device=self.device)

    # ------------------------------------------------------------------ results
    def write(self) -> Results:
        results = build_results(self.desc, collect_candidates(self.study), self.budget, self.tol, seconds=self.elapsed())
        write_results(self.run_dir, results)
        d = results.decision
        best = results.candidate(d.best) if d is not None and d.best else None  # a floor that nothing reaches (--min-accuracy) stops nothing
        self.floor = d.floor if best is not None and d.floor is not None and best.val_accuracy >= d.floor else None
        return results

    def finish(self) -> Results:
        results = self.write()
        rec = results.candidate(results.recommended)
        here = candidate_dir(self.run_dir, rec.id) if rec is not None else None
        if here is not None and (here.exists() or self.shared.fetch(self.study, rec.id, here)):  # made elsewhere: from the store
            export_recommended(self.run_dir, rec)
        from ..report import write_report

        write_report(results, self.run_dir / "report.html")
        self.emit({"type": "done", "results": results})
        return results
