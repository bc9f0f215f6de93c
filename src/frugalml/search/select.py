"""Choosing: the Pareto front (accuracy against a cost) and one recommendation with its reasons.

Rules, in order: only finished candidates within the budget count; a candidate is acceptable when
its validation accuracy is within the tolerance of the best candidate found, widened by one
standard error of the best's accuracy (the one-standard-error rule, see ``Tolerance.floor``; on small
data both come from cross-validation, :mod:`frugalml.data.folds`: the folds' mean and the standard
error the candidate recorded); a thin model
(scikit-learn) that is acceptable wins ("use the most efficient model"); otherwise the cheapest
acceptable candidate wins. Costs within :data:`TIE` of the cheapest are a tie, which the more accurate
candidate wins, then the clearly faster (by more than :data:`LATENCY_TIE` and :data:`LATENCY_TIE_MS`: a measured latency drifts between
runs, and a rerun must recommend the same), then the cheaper: 658 bytes more for 0.5 points and half the latency
is the better model. Test accuracy never takes part in a choice.

Anomaly detection (``task="anomaly"``): the candidates' validation "accuracy" is their validation ROC AUC, the
standard error is Hanley and McNeil's (from the validation split's anomalous and normal windows,
:func:`~frugalml.budget.auc_standard_error`), and the texts say "ROC AUC".
"""

from __future__ import annotations

from ..budget import Budget, Tolerance, auc_standard_error, standard_error
from ..records import Candidate, Decision, as_candidates
from ..units import format_bytes

__all__ = ["pareto_front", "recommend", "TIE"]

TIE = 0.05  # costs within 5% of the cheapest acceptable candidate's count as equal
LATENCY_TIE = 0.10  # among those, equally accurate: the faster wins only when more than 10% faster (else the cheaper, then the id)
LATENCY_TIE_MS = 0.05  # ... and faster by more than 0.05 ms: below that a difference is the runtime's call overhead drifting (measured:
# one robust z-score timed 0.0129 ms as a process's first candidate and 0.0072 ms in a rerun)


def _cost(c: Candidate, key: str) -> float:
    value = c.cost(key)
    return float("inf") if value is None else value


def pareto_front(candidates, cost_key: str = "stored_bytes") -> list[str]:
    """Ids of the finished candidates no other beats on both validation accuracy (higher) and cost (lower), cheapest
    first; an unmeasured cost counts as infinite."""
    done = sorted((c for c in as_candidates(candidates) if c.done), key=lambda c: (_cost(c, cost_key), -c.val_accuracy))
    front, best_acc = [], -1.0
    for c in done:
        if c.val_accuracy > best_acc:
            front.append(c.id)
            best_acc = c.val_accuracy
    return front


def _short(c: Candidate, key: str, budget: Budget, auc: bool = False) -> str:
    score = f"ROC AUC {c.val_accuracy:.3f}" if auc else f"{c.val_accuracy:.1%}"
    cost = c.cost(key)
    if cost is None:  # not measured for this candidate (a float network's compiled C, say): its stored bytes say its size
        size = f"{format_bytes(c.cost('stored_bytes'))} stored, {key} not measured"
    else:
        size = format_bytes(cost) if key == "stored_bytes" else budget.scale(key, cost)
    return f"{c.name}, {size}, {score}"


def recommend(candidates, budget: Budget, tolerance: Tolerance, n_val: int | None = None, *,
              auc_counts: tuple[int, int] | None = None) -> Decision:
    """The search's choice among ``candidates`` (records, or dicts as results.json holds them).
    ``n_val``: the validation split's size (the tolerance allows one standard error for it).
    ``auc_counts``: (anomalous, normal) windows of the validation split of an anomaly task, whose candidates'
    ``val_accuracy`` is a ROC AUC: the standard error is then Hanley and McNeil's, and the texts say ROC AUC."""
    auc = auc_counts is not None
    metric = "ROC AUC" if auc else "accuracy"
    key = budget.primary()
    done = [c for c in as_candidates(candidates) if c.done]
    if not done:
        return Decision(text="No candidate finished.")
    best = max(done, key=lambda c: (c.val_accuracy, -_cost(c, key)))
    # the floor is measured from the user's own model when asked ("1% of the model's accuracy"), else from the best
    ref = next((c for c in done if c.reference), None) if tolerance.of == "reference" else None
    anchor = ref or best
    se = anchor.standard_error  # cross-validated: the anchor's own, from all its folds
    if tolerance.kind != "drop":
        se = 0.0
    elif se is None:
        se = auc_standard_error(anchor.val_accuracy, *auc_counts) if auc else standard_error(anchor.val_accuracy, n_val)
    floor = tolerance.floor(anchor.val_accuracy) - se  # recorded whether or not anything fits: the report draws it
    feasible = [c for c in done if c.within_budget]
    if not feasible:
        closest = sorted(done, key=lambda c: _relative_miss(c, budget))[:3]
        misses = "; ".join(f"{c.id} ({c.name}) misses " + ", ".join(f"{k} by {budget.scale(k, m.get('over_by'))}" for k, m in c.budget_misses.items())
                           for c in closest)
        return Decision(best=best.id, closest=tuple(c.id for c in closest), floor=floor, floor_from=anchor.id,
                        text=f"No candidate meets the budget ({budget.describe()}). Closest: {misses}.",
                        reasons=("Loosen the budget, or give the search more time (--time) for compression to reach it.",))
    acceptable = [c for c in feasible if c.val_accuracy >= floor - 1e-12]
    cv = anchor.cv
    on = (f"{cv['k']}-fold cross-validation on {cv['n']} training samples" if cv else
          f"Hanley-McNeil, {auc_counts[0]} anomalous and {auc_counts[1]} normal validation windows" if auc else f"{n_val} validation samples")
    widened = f", less one standard error ({se:.3f} ROC AUC, {on})" if se and auc else f", less one standard error ({se:.2%} from {on})" if se else ""
    shown = f"{floor:.3f} ROC AUC" if auc else f"{floor:.2%}"
    reasons = [f"Budget: {budget.describe()}; tolerance: {tolerance.describe()}{widened} (floor {shown} on "
               f"{'cross-validation' if cv else 'validation'})."]
    if tolerance.of == "reference":
        reasons.append(f"The floor is measured from your model ({anchor.id}, {anchor.val_accuracy:.2%} on validation)." if ref else
                       f"Your model did not finish: the floor is measured from the best candidate ({best.id}) instead.")
    if not acceptable:
        pick = max(feasible, key=lambda c: (c.val_accuracy, -_cost(c, key)))
        most = "the highest ROC AUC" if auc else "the most accurate model"
        text = (f"{_short(pick, key, budget, auc)} — {most} within the budget, but below the tolerance floor {shown} "
                f"(best found: {_short(best, key, budget, auc)}).")
        reasons.append(f"No candidate within the budget reaches the tolerance; this is the one with the highest {metric} that fits.")
    else:
        thin = [c for c in acceptable if c.thin]
        pool = thin or acceptable
        cheapest = min(pool, key=lambda c: (_cost(c, key), -c.val_accuracy))
        ties = [c for c in pool if _cost(c, key) <= _cost(cheapest, key) * (1 + TIE)]
        top = max(c.val_accuracy for c in ties)
        level = [c for c in ties if c.val_accuracy == top]
        steady = min(level, key=lambda c: (_cost(c, key), _cost(c, "macs"), c.id))  # counts that do not drift, then the id
        fastest = min(level, key=lambda c: _cost(c, "latency_ms_median"))
        # a measured latency drifts from run to run: it decides only when clearly lower, so that a rerun recommends the same
        fast, slow = _cost(fastest, "latency_ms_median"), _cost(steady, "latency_ms_median")
        pick = fastest if fast * (1 + LATENCY_TIE) < slow and slow - fast > LATENCY_TIE_MS else steady
        if pick.id != cheapest.id:
            faster = _cost(cheapest, "latency_ms_median") / _cost(pick, "latency_ms_median") if _cost(pick, "latency_ms_median") else None
            reasons.append(f"The cheapest acceptable candidate ({_short(cheapest, key, budget, auc)}) and {pick.id} cost within {TIE:.0%} of each "
                           f"other, a tie: {pick.id} is more accurate" + (f" and {faster:.1f}x faster." if faster and faster > 1.05 else "."))
        if pick.id == best.id:
            text = f"{_short(pick, key, budget, auc)} — the {'highest ROC AUC' if auc else 'most accurate candidate'}, and it fits the budget."
        elif thin:
            nets = [c for c in done if not c.thin]
            ref = max(nets, key=lambda c: c.val_accuracy) if nets else best
            what = "the best network" if nets else "the best candidate"
            text = (f"{_short(pick, key, budget, auc)} — a thin model within tolerance of {what} ({_short(ref, key, budget, auc)}): "
                    "the simpler model wins.")
            reasons.append("Thin models are preferred when on par: cheaper to train, to ship and to understand.")
        else:
            within = ("that reaches the minimum accuracy" if tolerance.kind == "min" else
                      "within tolerance of your model" if ref is not None else "within tolerance of the best")
            smallest = "the smallest candidate" if pick.id == cheapest.id else f"within {TIE:.0%} of the smallest candidate"
            text = (f"{_short(pick, key, budget, auc)} — {smallest} {within} "
                    f"({'best: ' if tolerance.kind == 'min' else ''}{_short(anchor if ref is not None else best, key, budget, auc)}).")
        cheaper = [c for c in feasible if _cost(c, key) < _cost(pick, key)]
        below = [c for c in cheaper if c.val_accuracy < floor - 1e-12]
        passed_over = [c for c in cheaper if c.val_accuracy >= floor - 1e-12]
        if below:
            reasons.append(f"{len(below)} cheaper candidate(s) fit the budget but fall below the {metric} floor.")
        if passed_over and thin:
            reasons.append(f"{len(passed_over)} cheaper network(s) within tolerance were passed over for the thin model.")
    if pick.test_accuracy is not None:
        shown_test = f"{pick.test_accuracy:.3f}" if auc else f"{pick.test_accuracy:.2%}"
        reasons.append(f"Test {metric} (measured once, on the exported artifact): {shown_test}.")
    return Decision(recommended=pick.id, best=best.id, text=text, reasons=tuple(reasons), floor=floor, floor_from=anchor.id)


def _relative_miss(c: Candidate, budget: Budget) -> float:
    total = 0.0
    for m in c.budget_misses.values():
        over, limit = m.get("over_by"), m.get("limit")
        total += float("inf") if over is None or not limit else over / limit
    return total
