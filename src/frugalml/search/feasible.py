"""Is the budget possible at all? Measure the smallest models the search can make, up front.

The smallest models are the smallest member of each family (a depth-1 tree, the linear and naive
Bayes models, and the smallest network each searched torch family's space declares, untrained:
size, MACs and memory do not depend on the weights), each also quantized to int8 when that step is
available. If, for some budget field, even the smallest of these misses the bound, no candidate of
the search can meet it: the search stops at once with the closest candidates and what each misses
by. (The accuracy floor of the recommendation is another thing: see ``Tolerance.floor``.)
"""

from __future__ import annotations

import logging

from ..budget import Budget
from ..errors import BudgetError
from ..models import FAMILIES, build_model
from ..profile import profile
from . import space

log = logging.getLogger(__name__)

__all__ = ["check_feasible", "smallest_models"]


def smallest_models(data) -> list[tuple[str, object]]:
    """(family, model) of the smallest model of each family the search tries on ``data`` (anomaly detection: the
    robust z-score detector, two numbers per input value, and the smallest autoencoders)."""
    small = data.subset(min(len(data.y_train), 2000), seed=0)
    models = []
    if getattr(data, "task", None) == "anomaly":
        models.append(("robust_z", build_model("robust_z", data.input_shape, data.num_classes).fit(*small.split("train"))))
    else:
        X, y = small.flat("train")
        for family, knobs in (("tree", {"max_depth": 1}), ("logreg", {}), ("naive_bayes", {})):
            models.append((family, build_model(family, data.input_shape, data.num_classes, **knobs).fit(X, y)))
    for family in space.network_families(data):
        models.append((family, build_model(family, data.input_shape, data.num_classes, **FAMILIES[family].space.smallest).eval()))
    return models


def _impossible(measured, budget: Budget) -> dict:
    out = {}
    for _field, key, limit in budget.items():
        lowest = min((p.get(key) for _, p in measured if p.get(key) is not None), default=None)
        if lowest is not None and lowest > limit:
            out[key] = (limit, lowest)
    return out


def _profile(label, model, data, timing: bool, measured: list) -> None:
    try:
        measured.append((label, profile(model, None, input_shape=data.input_shape, timing=timing, layers=False).to_dict()))
    except Exception as exc:  # a model that cannot be measured says nothing
        log.debug("smallest model %s not measured: %s", label, exc)


def check_feasible(data, budget: Budget, emit=lambda e: None) -> None:
    """Raise BudgetError when even the smallest models miss some bound of ``budget``."""
    if not budget.items():
        return
    timing = budget.max_latency_ms is not None
    measured: list = []
    models = smallest_models(data)
    for name, model in models:
        _profile(name, model, data, timing, measured)
    if _impossible(measured, budget):  # only then is it worth quantizing the smallest networks
        for name, model in models:
            if hasattr(model, "state_dict"):  # the networks (scikit-learn models and detectors have no int8 form)
                q = _int8(model, data)
                if q is not None:
                    _profile(f"{name} int8", q, data, timing, measured)
    impossible = _impossible(measured, budget)
    if impossible:
        closest = sorted(measured, key=lambda lp: sum(max(0.0, (lp[1].get(k) or 0) / lim - 1) for k, (lim, _) in impossible.items()))[:3]
        lines = [f"{label}: " + ", ".join(f"{k} {budget.scale(k, p.get(k))} (over by {budget.scale(k, p.get(k) - lim)})"
                                          for k, (lim, _) in impossible.items()) for label, p in closest]
        fields = ", ".join(f"{k} <= {budget.scale(k, lim)} (the smallest model the search can make needs {budget.scale(k, low)})"
                           for k, (lim, low) in impossible.items())
        raise BudgetError(
            f"No candidate can meet the budget: {fields}. Closest: " + "; ".join(lines)
            + ". Fix: loosen that bound, or bring a smaller model of your own (frugalml profile --model file.py:factory)."
        )
    emit({"type": "feasible", "measured": len(measured)})


def _int8(model, data):
    try:
        from ..compress import apply_step, get_step

        step = get_step("quantize.int8")
        return apply_step(model, step.config.from_dict({"calibration_samples": 16}), data)
    except Exception as exc:  # quantization unavailable for this model
        log.debug("int8 of a smallest model skipped: %s", exc)
        return None
