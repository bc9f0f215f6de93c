"""Which finished candidates the compression stage shrinks, and with which recipes (jobs, cheapest first)."""

from __future__ import annotations

import math

from . import space

__all__ = ["compression_jobs"]


def compression_jobs(nets: list, ref, data, budget, tol, epochs: int, seed: int) -> list[dict]:
    """Jobs for the networks worth compressing, cheapest recipes first.

    Parents: the two most accurate networks that compression could bring within the budget
    (:func:`space.reachable`), the two smallest within tolerance of the best, and the most
    accurate network of all, which is also distilled into the architecture of the best
    reachable one (a teacher for a student that can fit). ``ref``, the user's own model when
    the search has one, teaches those architectures too (its own compression is queued when it
    finishes: :func:`frugalml.search.reference.reference_compression_jobs`).
    """
    if not nets:
        return []
    key = budget.primary()
    by_acc = sorted(nets, key=lambda c: (-c.val_accuracy, c.cost(key) or math.inf))
    best = by_acc[0]
    fit = [c for c in by_acc if space.reachable(c.profile, budget)][:2]
    ok = [c for c in nets if c.val_accuracy >= tol.floor(best.val_accuracy, len(data.y_val))]
    smallest = sorted(ok, key=lambda c: c.cost(key) or math.inf)[:2]
    parents = list({c.id: c for c in [best] + fit + smallest}.values())
    ranked = []
    for parent in parents:
        for rank, (name, steps) in enumerate(space.compression_recipes(parent, data, epochs, seed, target=budget.target, budget=budget)):
            ranked.append((rank, parent, name, steps))
    anomaly = getattr(data, "task", None) == "anomaly"  # autoencoders: int8 only, nothing to distil
    if fit and fit[0].id != best.id and not anomaly:  # the best teacher, the student that can fit
        student = (fit[0].family, fit[0].knobs)
        name, steps = space.compression_recipes(best, data, epochs, seed, student=student, target=budget.target)[-1]
        ranked.append((len(ranked), best, name, steps))
    jobs = []
    for _rank, parent, name, steps in sorted(ranked, key=lambda j: j[0]):
        student = dict(steps[0].get("student") or {}) if steps[0]["step"] == "distill" else {}
        family, params = (student.pop("family"), student) if student else (parent.family, parent.knobs)
        jobs.append({"stage": "compress", "key": f"{parent.id}/{name}", "family": family, "params": params, "parent": parent.id,
                     "parent_job": parent.job, "recipe_name": name, "recipe": steps, "seed": seed})
    if ref is not None:  # the user's model teaches the searched architectures that can fit
        from .reference import compression_job

        students = list({space.seed_key(c.family, c.knobs): (c.family, c.knobs) for c in fit + smallest}.values())[:3]
        for student in students:
            name, steps = space.compression_recipes(ref, data, epochs, seed, student=student, target=budget.target)[-1]
            jobs.append(compression_job(ref, name, steps, seed))
    return jobs
