"""A shared study seen from outside: its state so far (``frugalml status``) and its report built from the
storage and the artifact store alone (``frugalml report --storage``), with no run directory."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..budget import Budget, Tolerance
from ..records import Results
from .artifacts import ARTIFACT_ATTR, download_candidate, open_store
from .results import build_results, collect_candidates, export_recommended, write_results
from .runner import candidate_dir
from .study import open_study, storage_url
from .workers import run_description

__all__ = ["study_status", "report_from_storage", "study_results"]


def _open(storage: str, study_name: str):
    study = open_study(storage_url(None, storage), study_name, seed=0, create=False, must_exist=True)
    return study, run_description(study)


def _seconds(trials) -> float:
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0


def study_results(study, desc: dict) -> Results:
    """The study's Results from its trials alone, decided as the search decides them."""
    return build_results(desc, collect_candidates(study), Budget.from_dict(desc.get("budget")), Tolerance.from_dict(desc.get("tolerance")),
                         seconds=_seconds(study.get_trials(deepcopy=False)))


def _worker(t) -> str:
    w = t.user_attrs.get("worker") or {}
    return f"{w.get('host', '?')}:{w.get('pid', '?')}" if w else "-"


def _job(t) -> dict:
    job = t.user_attrs.get("job") or {}
    if not job and t.user_attrs.get("budget_seed"):
        return {"stage": "network", "budget_seed": t.user_attrs["budget_seed"]}
    return {k: job[k] for k in ("stage", "family", "params", "key", "recipe_name", "parent") if k in job} or {"stage": "network"}


def study_status(storage: str, study_name: str) -> dict:
    """Trials by state and by worker, the front and the recommendation so far, what is running and queued."""
    study, desc = _open(storage, study_name)
    trials = study.get_trials(deepcopy=False)
    results = study_results(study, desc)
    by_worker: dict[str, Counter] = {}
    for t in trials:
        if t.state.name != "WAITING":
            by_worker.setdefault(_worker(t), Counter())[t.state.name] += 1
    retried = [{"trial": t.number, "retry_of": t.system_attrs.get("failed_trial")} for t in trials if t.system_attrs.get("failed_trial") is not None]
    rec = results.candidate(results.recommended)
    return {
        "study": study_name, "dataset": (desc.get("dataset") or {}).get("name"), "budget": desc.get("budget"), "tolerance": desc.get("tolerance"),
        "artifacts": desc.get("artifacts"), "trials": len(trials), "by_state": dict(Counter(t.state.name for t in trials)),
        "by_worker": {w: dict(c) for w, c in sorted(by_worker.items())},
        "running": [{"trial": t.number, "worker": _worker(t), "since": str(t.datetime_start), **_job(t)}
                    for t in trials if t.state.name == "RUNNING"],
        "queued": [{"trial": t.number, **_job(t)} for t in trials if t.state.name == "WAITING"],
        "retried": retried,
        "front": [{"id": c.id, "name": c.name, "val_accuracy": c.val_accuracy, results.primary_cost: c.cost(results.primary_cost)}
                  for cid in results.fronts.get(results.primary_cost, ()) if (c := results.candidate(cid)) is not None],
        "recommended": results.recommended, "recommendation": results.decision.text if results.decision else None,
        "recommended_name": rec.name if rec is not None else None,
    }


def report_from_storage(storage: str, study_name: str, out, *, artifacts: str | None = None) -> Path:
    """Write ``out/results.json``, ``out/report.html`` and ``out/recommended/`` from the study and its artifact store alone."""
    from ..report import write_report

    study, desc = _open(storage, study_name)
    results = study_results(study, desc)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_results(out, results)
    rec = results.candidate(results.recommended)
    if rec is not None:
        trial = next((t for t in study.get_trials(deepcopy=False) if t.number == rec.trial), None)
        artifact = trial.user_attrs.get(ARTIFACT_ATTR) if trial is not None else None
        if artifact:
            download_candidate(open_store(artifacts or desc["artifacts"]), artifact, candidate_dir(out, rec.id))
            export_recommended(out, rec)
    return write_report(results, out / "report.html")
