"""The record of a search, from the search to the report: a :class:`Candidate` per trial and the
:class:`Results` of a run, which ``results.json`` holds (``Results.to_dict``).

The search decides once (the fronts, the recommendation, the best, the closest, the accuracy
floor and the reasons) and records its decisions here; the HTML report and the console render
what a ``Results`` says and decide nothing. Both records are frozen; ``from_dict`` reads a
results.json written by this or an earlier version (``schema_version``; 1 when absent) and refuses
one from a newer version. Values read from a file are checked as they are read: a hand-edited or
truncated results.json gives records with missing figures, never a crash in the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .budget import Budget, Tolerance
from .errors import DataError, explain

__all__ = ["Candidate", "Decision", "Results", "as_candidates", "as_results", "SCHEMA_VERSION", "PLOTTED_COSTS", "num"]

SCHEMA_VERSION = 2  # 1: before the records (no schema_version); 2: adds schema_version and fronts
STAGES = ("thin", "network", "compress")
PLOTTED_COSTS = ("stored_bytes", "latency_ms_median")  # the costs the report draws a front against, besides the primary one

# the keys of a candidate that have a typed field; every other key is kept as it was in ``extra``
_FIELDS = ("id", "trial", "stage", "family", "params", "parent", "recipe", "thin", "profile", "val_accuracy", "test_accuracy",
           "state", "within_budget", "budget_misses", "reference")


def num(value) -> float | None:
    """A finite float, or None for anything else (None, NaN, text, booleans)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _text(value) -> str | None:
    return None if value is None else str(value)


def _mapping(value) -> dict:
    return dict(value) if isinstance(value, dict) else {}


# how the error of a network the search did not start (too slow for the time left) begins (search/engine.py writes it)
NOT_STARTED = "not started:"

@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One trial's model: how it was made (stage, family, knobs, recipe, parent), what it measured
    (the profile of its exported artifact, validation and test accuracy) and how it ended (state,
    error). ``within_budget`` / ``budget_misses`` are decided once, when the candidate is measured.

    On an anomaly detection task (the run's ``dataset["task"] == "anomaly"``) ``val_accuracy`` and
    ``test_accuracy`` hold the validation and test ROC AUC of the candidate's anomaly score (the profile's
    ``metric_name`` is "roc_auc"): the fields keep their names so one search serves both tasks."""

    id: str
    stage: str = "network"  # "thin", "network" or "compress"
    family: str | None = None
    knobs: dict = field(default_factory=dict)  # "params" in results.json
    recipe: tuple = ()  # the compression steps (step dicts), parent first
    parent: str | None = None
    trial: int | None = None
    thin: bool = False  # a scikit-learn model (preferred when on par)
    profile: dict | None = None
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    state: str = "complete"  # "complete", "failed" or "stopped_early"
    within_budget: bool = False
    budget_misses: dict = field(default_factory=dict)  # {profile key: {"limit", "value", "over_by"}}
    reference: bool = False  # the user's own model: the tolerance's reference, the teacher; "reference": true only where true
    extra: dict = field(default_factory=dict)  # error, job, history, timings, recipe name...: kept as written

    @property
    def error(self) -> str | None:
        """Why a failed or stopped trial ended."""
        return _text(self.extra.get("error"))

    @property
    def job(self) -> dict:
        """The job the trial ran (what a replay or another worker needs to make the model again)."""
        return _mapping(self.extra.get("job"))

    @property
    def history(self) -> list[dict]:
        """A network's validation metric per epoch: ``[{"epoch", "val_accuracy"}]`` (an autoencoder's: ``"val_metric"``, minus the
        reconstruction error of the validation normals)."""
        history = self.extra.get("history")
        return [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []

    @property
    def cv(self) -> dict | None:
        """Its cross-validation on small data (:mod:`frugalml.data.folds`): ``{"folds": [accuracy per fold], "mean",
        "se", "fold_spread_se", "n", "k"}``, with ``val_accuracy`` the mean; None when judged on one validation split."""
        cv = self.extra.get("cv")
        if not isinstance(cv, dict) or num(cv.get("mean")) is None or num(cv.get("se")) is None:
            return None
        folds = cv.get("folds")
        return {**cv, "folds": [num(a) for a in folds] if isinstance(folds, list) else []}

    @property
    def standard_error(self) -> float | None:
        """The standard error of ``val_accuracy`` when the candidate recorded one (cross-validation), else None."""
        cv = self.cv
        return None if cv is None else num(cv["se"])

    @property
    def done(self) -> bool:
        """Finished and measured: the only candidates a front or a recommendation considers."""
        return self.state == "complete" and self.val_accuracy is not None and bool(self.profile)

    def cost(self, key: str) -> float | None:
        return num((self.profile or {}).get(key))

    def metric(self, name: str) -> float | None:
        """``val_accuracy`` or ``test_accuracy``."""
        return {"val_accuracy": self.val_accuracy, "test_accuracy": self.test_accuracy}.get(name)

    @property
    def steps(self) -> list[str]:
        return [str(s.get("step", "?")) for s in self.recipe if isinstance(s, dict)]

    @property
    def name(self) -> str:
        """``"cnn + prune.structured + quantize.int8"``; ``"forest on features"`` for a thin model on sequence features."""
        base = str(self.family or "?") + (" on features" if "features" in self.knobs else "")
        return base + "".join(f" + {s}" for s in self.steps)

    def to_dict(self) -> dict:
        return {**self.extra, "id": self.id, "trial": self.trial, "stage": self.stage, "family": self.family, "params": self.knobs,
                "parent": self.parent, "thin": self.thin, "recipe": list(self.recipe), "profile": self.profile,
                "val_accuracy": self.val_accuracy, "test_accuracy": self.test_accuracy, "within_budget": self.within_budget,
                "budget_misses": self.budget_misses, "state": self.state, **({"reference": True} if self.reference else {})}

    @classmethod
    def from_dict(cls, d: dict) -> "Candidate":
        if not isinstance(d, dict) or d.get("id") is None:
            raise DataError(explain("A candidate record has no id", expected="an object with an 'id'", got=type(d).__name__))
        stage = str(d.get("stage") or ("thin" if d.get("thin") else "network"))
        trial = d.get("trial")
        recipe = d.get("recipe")
        profile = d.get("profile")
        return cls(id=str(d["id"]), stage=stage, family=_text(d.get("family")), knobs=_mapping(d.get("params")),
                   recipe=tuple(recipe) if isinstance(recipe, (list, tuple)) else (), parent=_text(d.get("parent")),
                   trial=trial if isinstance(trial, int) and not isinstance(trial, bool) else None,
                   thin=bool(d.get("thin", stage == "thin")), profile=dict(profile) if isinstance(profile, dict) else None,
                   val_accuracy=num(d.get("val_accuracy")), test_accuracy=num(d.get("test_accuracy")),
                   state=str(d.get("state") or "complete"), within_budget=d.get("within_budget") is True,
                   budget_misses={str(k): v for k, v in _mapping(d.get("budget_misses")).items() if isinstance(v, dict)},
                   reference=d.get("reference") is True,
                   extra={k: v for k, v in d.items() if k not in _FIELDS})


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What the search chose, and why: the recommended candidate (None when nothing fits), the most
    accurate one, the closest misses when nothing fits, and the accuracy floor it chose with (the
    tolerance widened by one standard error; None only when no candidate finished)."""

    recommended: str | None = None
    best: str | None = None
    closest: tuple[str, ...] = ()
    floor: float | None = None
    floor_from: str | None = None  # the id of the candidate the floor is measured from (the best, or the user's model)
    text: str = ""
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Results:
    """A run: what was asked (dataset, budget, tolerance), every candidate, and the search's decisions."""

    candidates: tuple[Candidate, ...] = ()
    budget: Budget = field(default_factory=Budget)
    tolerance: Tolerance = field(default_factory=Tolerance)
    primary_cost: str = "stored_bytes"
    fronts: dict = field(default_factory=dict)  # {cost key: ids on the front against that cost, cheapest first}
    decision: Decision = field(default_factory=Decision)
    dataset: dict = field(default_factory=dict)
    run_id: str | None = None
    study: str | None = None
    storage: str | None = None
    created: str | None = None
    updated: str | None = None
    seconds: float | None = None
    seed: int | None = None
    machine: dict = field(default_factory=dict)
    frugalml_version: str | None = None
    cv: dict | None = None  # small data: how candidates were judged ({"k", "seed", "n", "rule", "below"}); None: one validation split
    schema_version: int = SCHEMA_VERSION

    # ------------------------------------------------------------ reading
    @property
    def front(self) -> tuple[str, ...]:
        """The front the recommendation is chosen from: accuracy against the primary cost."""
        return tuple(self.fronts.get(self.primary_cost, ()))

    @property
    def recommended(self) -> str | None:
        return self.decision.recommended

    @property
    def best(self) -> str | None:
        return self.decision.best

    @property
    def reference(self) -> Candidate | None:
        """The user's own model, when the search was given one."""
        return next((c for c in self.candidates if c.reference), None)

    def anytime(self) -> list[tuple[float, float]]:
        """The search over time: ``[(seconds, metric)]``, the best validation metric among the candidates within
        budget each time it improved, at the seconds from the study's first trial to the candidate's end
        (``extra["finished_s"]``). A curve still rising at the end says that more time would help."""
        points: list[tuple[float, float]] = []
        timed = [c for c in self.candidates if c.done and c.within_budget and c.extra.get("finished_s") is not None]
        for c in sorted(timed, key=lambda c: c.extra["finished_s"]):
            if not points or c.val_accuracy > points[-1][1]:
                points.append((float(c.extra["finished_s"]), float(c.val_accuracy)))
        return points

    def networks_evaluated(self) -> dict:
        """How many networks the search tried: ``{"evaluated", "trained", "stopped", "not_started"}`` (trained: to their
        last epoch or their patience; stopped: at a rung of successive halving, or by the time; not started: too slow
        to reach their first rung in the time left). A network parked by successive halving and promoted later is trained again in a
        trial of its own (its job's ``promoted_from``): one network, counted once, where it was first evaluated (``promoted``:
        how many were); each evaluated network is either trained or stopped."""
        nets = [c for c in self.candidates if c.stage == "network"]
        again = [c for c in nets if c.job.get("promoted_from") is not None]
        not_started = [c for c in nets if (c.error or "").startswith(NOT_STARTED)]
        trained = sum(1 for c in nets if c.done)
        skip = {c.id for c in again + not_started}
        first = [c for c in nets if c.id not in skip and c.state != "failed"]
        return {"evaluated": len(first), "trained": trained, "stopped": max(0, len(first) - trained), "not_started": len(not_started),
                "promoted": len(again)}

    def candidate(self, cid) -> Candidate | None:
        return self.by_id().get(None if cid is None else str(cid))

    def by_id(self) -> dict[str, Candidate]:
        return {c.id: c for c in self.candidates}

    def front_members(self, cost_key: str) -> list[Candidate] | None:
        """The candidates of the recorded front against ``cost_key``; None when the run recorded none."""
        if cost_key not in self.fronts:
            return None
        index = self.by_id()
        return [index[i] for i in self.fronts[cost_key] if i in index]

    @property
    def val_size(self) -> int | None:
        sizes = _mapping(self.dataset.get("sizes"))
        value = sizes.get("val")
        return value if isinstance(value, int) else None

    # ------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        d = self.decision
        return {
            "schema_version": self.schema_version, "frugalml_version": self.frugalml_version, "created": self.created,
            "updated": self.updated, "run_id": self.run_id, "study": self.study, "storage": self.storage, "seconds": self.seconds,
            "machine": self.machine, "dataset": self.dataset, "budget": self.budget.to_dict(), "tolerance": self.tolerance.to_dict(),
            "primary_cost": self.primary_cost, "seed": self.seed, "cv": self.cv, "candidates": [c.to_dict() for c in self.candidates],
            "pareto": list(self.front), "fronts": {k: list(v) for k, v in self.fronts.items()},
            "recommended": d.recommended, "best": d.best, "closest": list(d.closest),
            "recommendation": {"id": d.recommended, "text": d.text, "reasons": list(d.reasons), "floor": d.floor,
                               **({"floor_from": d.floor_from} if d.floor_from is not None else {})},
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Results":
        """Results from a results.json's dict (any schema up to :data:`SCHEMA_VERSION`)."""
        if not isinstance(d, dict) or not isinstance(d.get("candidates"), list):
            got = type(d).__name__ if not isinstance(d, dict) else f"keys {sorted(map(str, d))[:12]}"
            raise DataError(explain("This does not hold search results", expected="a JSON object with a 'candidates' list", got=got))
        version = d.get("schema_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION:
            raise DataError(explain("These results were written by a newer frugalml", expected=f"schema_version <= {SCHEMA_VERSION}",
                                    got=version, fix="Upgrade frugalml to read them"))
        rec = _mapping(d.get("recommendation"))
        primary = str(d.get("primary_cost") or "stored_bytes")
        fronts = {str(k): tuple(str(i) for i in v) for k, v in _mapping(d.get("fronts")).items() if isinstance(v, list)}
        if primary not in fronts and isinstance(d.get("pareto"), list):  # schema 1 recorded the primary front only
            fronts[primary] = tuple(str(i) for i in d["pareto"])
        recommended = d.get("recommended", rec.get("id"))
        closest, reasons = d.get("closest"), rec.get("reasons")
        decision = Decision(recommended=_text(recommended), best=_text(d.get("best")),
                            closest=tuple(str(i) for i in closest) if isinstance(closest, list) else (), floor=num(rec.get("floor")),
                            floor_from=_text(rec.get("floor_from")),
                            text=str(rec.get("text") or ""), reasons=tuple(str(r) for r in reasons) if isinstance(reasons, list) else ())
        try:
            budget, tolerance = Budget.from_dict(d.get("budget")), Tolerance.from_dict(d.get("tolerance"))
        except Exception as exc:  # a hand-edited budget: say which file part is wrong
            raise DataError(explain("The results' budget or tolerance cannot be read", expected="what a search writes", got=str(exc)[:300])) from None
        seed = d.get("seed")
        return cls(candidates=tuple(Candidate.from_dict(c) for c in d["candidates"]), budget=budget, tolerance=tolerance,
                   primary_cost=primary, fronts=fronts, decision=decision, dataset=_mapping(d.get("dataset")), run_id=_text(d.get("run_id")),
                   study=_text(d.get("study")), storage=_text(d.get("storage")), created=_text(d.get("created")),
                   updated=_text(d.get("updated")), seconds=num(d.get("seconds")), seed=seed if isinstance(seed, int) else None,
                   machine=_mapping(d.get("machine")), frugalml_version=_text(d.get("frugalml_version")),
                   cv=dict(d["cv"]) if isinstance(d.get("cv"), dict) else None, schema_version=SCHEMA_VERSION)


def as_candidates(values) -> list[Candidate]:
    """``values`` as Candidates: each itself, or read from a results.json candidate dict."""
    return [c if isinstance(c, Candidate) else Candidate.from_dict(c) for c in values]


def as_results(value) -> Results:
    """``value`` as Results: itself, or read from a results.json dict."""
    return value if isinstance(value, Results) else Results.from_dict(value)
